"""Bytewax dataflows, their sources (engine, JSONL, Kafka) and sinks (ClickHouse, Prometheus)."""
