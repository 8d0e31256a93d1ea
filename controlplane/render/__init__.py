"""Rendering artefacts from the pipeline definitions: Grafana dashboards and Prometheus rule files."""
