"""tuneline services: one package per service, plus the shared runtime in `services.core`."""
