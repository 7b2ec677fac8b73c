"""MQTT -> TimescaleDB telemetry ingest (at-least-once delivery, idempotent writes)."""
