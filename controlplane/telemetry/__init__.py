"""Telemetry: the event catalog, batch ingest, short aggregation windows and the event metrics on /metrics."""
