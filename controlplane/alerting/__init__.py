"""Alerting: rules over telemetry windows, alert states, guards, automatic rollback and the Alertmanager webhook."""
