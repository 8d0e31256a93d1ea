"""One frozen Settings object, read once from ``CONTROLPLANE_*`` environment variables.

Every field is documented in the README's settings table; ``tests/unit/test_settings.py`` proves the table and
this class agree, so neither drifts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

__all__ = ["Settings", "SettingsError"]

PREFIX = "CONTROLPLANE_"


class SettingsError(ValueError):
    """An environment variable holds a value the control plane cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration of one control-plane process."""

    database_url: str = "sqlite:///controlplane.db"
    """SQLAlchemy URL; SQLite file in the working directory by default, `postgresql+psycopg://...` in production."""
    host: str = "127.0.0.1"
    """Address the HTTP server binds to."""
    port: int = 8080
    """Port the HTTP server binds to."""
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
    replica_id: str = field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}")
    """Name of this replica in the leader lease; host name and process id by default."""

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
            ("RATE_LIMIT_PER_ADDRESS_PER_MINUTE", self.rate_limit_per_address_per_minute),
            ("EVALUATION_RATE_LIMIT_PER_SECOND", self.evaluation_rate_limit_per_second),
            ("CONFIGURATION_POLL_SECONDS", self.configuration_poll_seconds),
            ("MAX_BODY_BYTES", self.max_body_bytes),
            ("ROLLOUT_TICK_SECONDS", self.rollout_tick_seconds),
            ("LEADER_LEASE_SECONDS", self.leader_lease_seconds),
        ):
            if value <= 0:
                raise SettingsError(f"CONTROLPLANE_{name} must be positive, got {value}")

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
