"""The small shared runtime every service stands on: bus, telemetry, settings, artifact store."""
