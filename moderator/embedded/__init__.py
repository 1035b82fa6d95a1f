"""Real servers started on loopback for the demo and tests: Tansu (Kafka API) and redis-server."""
