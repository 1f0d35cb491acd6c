"""Who may do what: the NATS access table, its rendering into nats-server and Helm, and the PKI."""
