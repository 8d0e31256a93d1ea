"""The /metrics exporter: every domain's state as Prometheus metrics, read from the database at scrape time."""
