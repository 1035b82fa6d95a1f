"""Telemetry: trace context carried through Kafka headers, metrics and logs."""
