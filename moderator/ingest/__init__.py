"""Ingest: turn raw Kafka records into validated posts or dead letters."""
