"""One frozen Settings object, read once from ``CONTROLPLANE_*`` environment variables.

Every field is documented in the README's settings table; ``tests/unit/test_settings.py`` proves the table and
this class agree, so neither drifts.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path

__all__ = ["Settings", "SettingsError"]

PREFIX = "CONTROLPLANE_"
#: What a browser sends as `Origin`: scheme, host and optional port, no path; `*` alone or within a part.
_ORIGIN = re.compile(r"\*|https?://[A-Za-z0-9.*\[\]:-]+")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """An environment variable holds a value the control plane cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration of one control-plane process."""

    database_url: str = "sqlite:///controlplane.db"
    """SQLAlchemy URL; SQLite file in the working directory by default, `postgresql+psycopg://...` in production."""
    database_timeout_seconds: float = 5.0
    """How long a request's database work may take; past it the request answers 503 `database-unavailable` (the
    work is left to finish, and PostgreSQL cancels its statements after the same time)."""
    database_connect_timeout_seconds: float = 3.0
    """How long opening a PostgreSQL connection, or waiting for a free one in the pool, may take."""
    host: str = "127.0.0.1"
    """Address the HTTP server binds to."""
    port: int = 8080
    """Port the HTTP server binds to."""
    http_max_requests_per_connection: int = 1000
    """Requests served on one HTTP/1.1 keep-alive connection before the server answers with `connection: close`
    (the client reconnects, and processes sharing a listening socket even out); 0: no limit."""
    http_connection_max_age_seconds: float = 10.0
    """Age of an HTTP/1.1 keep-alive connection past which its next request is answered with `connection: close`,
    however few requests it carried (clients sending a batch now and then reconnect too); 0: no limit."""
    environments: tuple[str, ...] = ("dev", "qa", "staging", "production")
    """Known environments, comma-separated."""
    definitions_dir: Path = Path("definitions")
    """Folder whose `*.yaml` pipeline definitions `serve` applies at start-up (skipped when absent)."""
    rate_limit_per_minute: int = 600
    """Management API requests allowed per token (or per client address without one) per minute, per replica."""
    rate_limit_per_address_per_minute: int = 6000
    """Management API requests allowed per client address per minute, per replica, whatever token they carry."""
    evaluation_rate_limit_per_second: int = 5000
    """Evaluation requests (OFREP, snapshot, stream) allowed per token per second, per replica."""
    token_cache_seconds: float = 5.0
    """How long a replica trusts a token lookup; a revocation reaches other replicas within this time."""
    stream_credential_keys: tuple[str, ...] = ()
    """Secrets that sign the stream credentials in OFREP's advertised stream URL, comma-separated: the first signs,
    every one verifies (rotation). Every replica needs the same list; empty: each process draws its own at start,
    which serves one replica only."""
    stream_credential_seconds: float = 600.0
    """Longest life of a stream credential; one is minted per half of it, so a credential lives half to all of it."""
    cors_allowed_origins: tuple[str, ...] = ()
    """Browser origins (`https://app.example.com`; `*` matches within a part) allowed to call OFREP and the stream
    from another origin, comma-separated; empty: none. Never the management API, never with cookies."""
    configuration_poll_seconds: float = 0.25
    """How often each replica checks the configuration revision (the only signal on SQLite; a safety net on PG)."""
    max_body_bytes: int = 32 * 1024
    """Largest management request body accepted; larger ones get 413."""
    rollout_tick_seconds: float = 15.0
    """How often the leader checks running rollouts for stages whose bake time has passed."""
    leader_lease_seconds: float = 30.0
    """How long a scheduler leader's lease lasts without renewal; fail-over takes at most this long."""
    scheduler_enabled: bool = True
    """Run scheduled jobs in this process (leader election still decides whether they do work)."""
    ingest_max_events: int = 5000
    """Most events accepted in one ingest batch; larger batches get 413."""
    ingest_max_bytes: int = 1024 * 1024
    """Largest ingest batch body in bytes, compressed and once decompressed; larger ones get 413."""
    ingest_rate_limit_per_second: int = 1000
    """Ingest batches allowed per token per second, per replica."""
    event_max_age_seconds: float = 86400.0
    """Oldest event time ingest accepts (seconds before now); older events are refused with 422."""
    event_max_future_seconds: float = 300.0
    """How far in the future (clock skew) an event time may be; later ones are refused with 422."""
    telemetry_window_seconds: float = 10.0
    """Width of the aggregation windows events are counted in."""
    telemetry_retention_seconds: float = 3 * 86400.0
    """How long aggregation windows are kept; at least one day (the longest rule window) plus a window."""
    alert_history_retention_seconds: float = 30 * 86400.0
    """How long alert state changes and finished notifications are kept (each alert's newest change, and every
    notification de-duplication still reads, are kept however old); the audit log is not subject to it."""
    retention_job_seconds: float = 300.0
    """How often the leader deletes windows past retention, batch ids past any retry and old alert history."""
    catalog_cache_seconds: float = 2.0
    """How long a replica trusts its copy of the event catalog (a definition applied elsewhere arrives within it)."""
    alert_evaluation_seconds: float = 2.0
    """How often the leader evaluates every alert rule (and rolls guarded flags back)."""
    alert_trigger_enabled: bool = True
    """Evaluate the rules that read a committed ingest batch's event types at once (on the leader, told through
    PostgreSQL NOTIFY by other replicas), besides the periodic evaluation."""
    alert_trigger_min_seconds: float = 0.1
    """Shortest time between the starts of two evaluations triggered by ingest: at most one per this many seconds
    (triggers meanwhile join one queued run), whatever the rate of batches."""
    prometheus_url: str = ""
    """Base URL of the Prometheus that `source: prometheus` rules query (`http://host:9090`); empty: none, and
    those rules lack data, saying so."""
    prometheus_query_timeout_seconds: float = 2.0
    """How long one Prometheus query may take; an evaluation waits at most 1.5 times this for all of them."""
    notifications_file: Path = Path("notifications.yaml")
    """YAML file of notification receivers and routes (skipped when absent: states are kept, nobody is told)."""
    notification_delivery_seconds: float = 1.0
    """How often the leader sends queued notifications."""
    notification_max_attempts: int = 16
    """Attempts per notification before it is marked failed (backoff with jitter between them)."""
    cleanup_tick_seconds: float = 30.0
    """How often the leader starts cleanup runs that are due (by their cron) or queued, and resumes stalled ones."""
    cleanup_stale_seconds: float = 600.0
    """A running cleanup whose runner has not reported a page for this long is taken over and resumed."""
    cleanup_purge_max_days: float = 31.0
    """The longest upload window one purge may delete (a wider one is refused as a likely typo)."""
    gcs_project: str = ""
    """Google Cloud project of the storage client that cleanup uses (empty: the client's default; the client
    honours `STORAGE_EMULATOR_HOST`)."""
    replica_id: str = field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}")
    """Name of this replica in the leader lease; host name and process id by default."""
    log_format: str = "text"
    """How `serve` writes its log on stderr: `text` (one human line per record) or `json` (one object per line,
    uvicorn's and APScheduler's records included)."""
    log_level: str = "info"
    """The least severe log records written: `debug` (every job run too), `info`, `warning` or `error`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from the environment; unset variables keep their defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in fields(cls):
            raw = env.get(PREFIX + spec.name.upper())
            if raw is None or raw == "":
                continue
            values[spec.name] = _parse(spec.name, str(spec.type), raw)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse combinations that cannot work."""
        if not self.environments:
            raise SettingsError("CONTROLPLANE_ENVIRONMENTS must name at least one environment")
        if len(set(self.environments)) != len(self.environments):
            raise SettingsError("CONTROLPLANE_ENVIRONMENTS lists an environment twice")
        for name, value in (
            ("RATE_LIMIT_PER_MINUTE", self.rate_limit_per_minute),
            ("DATABASE_TIMEOUT_SECONDS", self.database_timeout_seconds),
            ("DATABASE_CONNECT_TIMEOUT_SECONDS", self.database_connect_timeout_seconds),
            ("RATE_LIMIT_PER_ADDRESS_PER_MINUTE", self.rate_limit_per_address_per_minute),
            ("EVALUATION_RATE_LIMIT_PER_SECOND", self.evaluation_rate_limit_per_second),
            ("CONFIGURATION_POLL_SECONDS", self.configuration_poll_seconds),
            ("MAX_BODY_BYTES", self.max_body_bytes),
            ("ROLLOUT_TICK_SECONDS", self.rollout_tick_seconds),
            ("LEADER_LEASE_SECONDS", self.leader_lease_seconds),
            ("INGEST_MAX_EVENTS", self.ingest_max_events),
            ("INGEST_MAX_BYTES", self.ingest_max_bytes),
            ("INGEST_RATE_LIMIT_PER_SECOND", self.ingest_rate_limit_per_second),
            ("EVENT_MAX_AGE_SECONDS", self.event_max_age_seconds),
            ("EVENT_MAX_FUTURE_SECONDS", self.event_max_future_seconds),
            ("TELEMETRY_WINDOW_SECONDS", self.telemetry_window_seconds),
            ("RETENTION_JOB_SECONDS", self.retention_job_seconds),
            ("ALERT_HISTORY_RETENTION_SECONDS", self.alert_history_retention_seconds),
            ("CATALOG_CACHE_SECONDS", self.catalog_cache_seconds),
            ("ALERT_EVALUATION_SECONDS", self.alert_evaluation_seconds),
            ("ALERT_TRIGGER_MIN_SECONDS", self.alert_trigger_min_seconds),
            ("PROMETHEUS_QUERY_TIMEOUT_SECONDS", self.prometheus_query_timeout_seconds),
            ("NOTIFICATION_DELIVERY_SECONDS", self.notification_delivery_seconds),
            ("CLEANUP_TICK_SECONDS", self.cleanup_tick_seconds),
            ("CLEANUP_STALE_SECONDS", self.cleanup_stale_seconds),
            ("CLEANUP_PURGE_MAX_DAYS", self.cleanup_purge_max_days),
            ("NOTIFICATION_MAX_ATTEMPTS", self.notification_max_attempts),
            ("STREAM_CREDENTIAL_SECONDS", self.stream_credential_seconds),
        ):
            if value <= 0:
                raise SettingsError(f"CONTROLPLANE_{name} must be positive, got {value}")
        if self.http_max_requests_per_connection < 0:
            raise SettingsError(
                "CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION must be 0 (no limit) or positive, got "
                f"{self.http_max_requests_per_connection}"
            )
        if not self.http_connection_max_age_seconds >= 0 or math.isinf(self.http_connection_max_age_seconds):
            raise SettingsError(
                "CONTROLPLANE_HTTP_CONNECTION_MAX_AGE_SECONDS must be 0 (no limit) or a positive number of seconds, "
                f"got {self.http_connection_max_age_seconds}"
            )
        if self.prometheus_url and not self.prometheus_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"CONTROLPLANE_PROMETHEUS_URL must be an http:// or https:// base URL, got {self.prometheus_url!r}"
            )
        if self.stream_credential_seconds < 2:
            raise SettingsError(
                f"CONTROLPLANE_STREAM_CREDENTIAL_SECONDS must be at least 2, got {self.stream_credential_seconds}"
            )
        for key in self.stream_credential_keys:
            if len(key) < 32:
                raise SettingsError(
                    "CONTROLPLANE_STREAM_CREDENTIAL_KEYS: every key must be at least 32 characters (for example "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
        for origin in self.cors_allowed_origins:
            if not _ORIGIN.fullmatch(origin):
                raise SettingsError(
                    f"CONTROLPLANE_CORS_ALLOWED_ORIGINS: {origin!r} is not an origin (scheme://host[:port], no path)"
                )
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(
                f"CONTROLPLANE_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}"
            )
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(
                f"CONTROLPLANE_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        if self.telemetry_retention_seconds < 86400 + self.telemetry_window_seconds:
            raise SettingsError(
                "CONTROLPLANE_TELEMETRY_RETENTION_SECONDS must cover the longest rule window (one day) plus one "
                f"aggregation window, got {self.telemetry_retention_seconds}"
            )

    @property
    def event_max_age(self) -> timedelta:
        """The oldest event time ingest accepts, before now."""
        return timedelta(seconds=self.event_max_age_seconds)

    @property
    def event_max_future(self) -> timedelta:
        """How far ahead of now an event time may be."""
        return timedelta(seconds=self.event_max_future_seconds)

    @property
    def telemetry_window(self) -> timedelta:
        """The width of an aggregation window."""
        return timedelta(seconds=self.telemetry_window_seconds)

    @property
    def telemetry_retention(self) -> timedelta:
        """How long aggregation windows are kept."""
        return timedelta(seconds=self.telemetry_retention_seconds)

    @property
    def alert_history_retention(self) -> timedelta:
        """How long alert state changes are kept."""
        return timedelta(seconds=self.alert_history_retention_seconds)

    @property
    def is_sqlite(self) -> bool:
        """True when the store is the embedded SQLite default."""
        return self.database_url.startswith("sqlite")


def _parse(name: str, type_name: str, raw: str) -> object:
    variable = PREFIX + name.upper()
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "bool":
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes", "on")
        if type_name == "Path":
            return Path(raw)
        if type_name.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as error:
        raise SettingsError(f"{variable}: cannot read {raw!r} as {type_name}") from error
    return raw
