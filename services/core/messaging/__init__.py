"""The bus and what travels on it: events (publish, consume, delivery rules), queries, the
route table and upload buckets, and the embedded nats-server."""
