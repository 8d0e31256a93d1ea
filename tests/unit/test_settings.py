"""Settings: read from the environment, refused when unusable, and documented in the README table."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from controlplane.settings import Settings, SettingsError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_read_every_type_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CONTROLPLANE_DATABASE_URL": "postgresql+psycopg://db/cp",
            "CONTROLPLANE_PORT": "9000",
            "CONTROLPLANE_ENVIRONMENTS": "qa, production",
            "CONTROLPLANE_ROLLOUT_TICK_SECONDS": "2.5",
            "CONTROLPLANE_SCHEDULER_ENABLED": "false",
            "CONTROLPLANE_DEFINITIONS_DIR": "/etc/cp",
        }
    )
    assert settings.database_url == "postgresql+psycopg://db/cp"
    assert settings.port == 9000
    assert settings.environments == ("qa", "production")
    assert settings.rollout_tick_seconds == 2.5
    assert settings.scheduler_enabled is False
    assert settings.definitions_dir == Path("/etc/cp")
    assert not settings.is_sqlite


def test_connections_serve_1000_requests_or_10_seconds_by_default_and_0_means_no_limit() -> None:
    assert Settings.from_env({}).http_max_requests_per_connection == 1000
    assert Settings.from_env({}).http_connection_max_age_seconds == 10.0
    variable = "CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION"
    assert Settings.from_env({variable: "0"}).http_max_requests_per_connection == 0
    assert Settings.from_env({variable: "1"}).http_max_requests_per_connection == 1
    age = "CONTROLPLANE_HTTP_CONNECTION_MAX_AGE_SECONDS"
    assert Settings.from_env({age: "0"}).http_connection_max_age_seconds == 0.0
    assert Settings.from_env({age: "0.5"}).http_connection_max_age_seconds == 0.5


def test_settings_default_to_the_embedded_sqlite_store() -> None:
    settings = Settings.from_env({})
    assert settings.is_sqlite
    assert settings.environments == ("dev", "qa", "staging", "production")
    assert settings.max_body_bytes == 32 * 1024


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CONTROLPLANE_PORT", "eighty", "CONTROLPLANE_PORT"),
        ("CONTROLPLANE_SCHEDULER_ENABLED", "maybe", "CONTROLPLANE_SCHEDULER_ENABLED"),
        ("CONTROLPLANE_RATE_LIMIT_PER_MINUTE", "0", "must be positive"),
        ("CONTROLPLANE_DATABASE_TIMEOUT_SECONDS", "0", "CONTROLPLANE_DATABASE_TIMEOUT_SECONDS must be positive"),
        ("CONTROLPLANE_ENVIRONMENTS", "qa,qa", "twice"),
        ("CONTROLPLANE_LOG_FORMAT", "yaml", "CONTROLPLANE_LOG_FORMAT must be one of text, json"),
        ("CONTROLPLANE_LOG_LEVEL", "verbose", "CONTROLPLANE_LOG_LEVEL must be one of debug, info, warning, error"),
        ("CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION", "-1", "MAX_REQUESTS_PER_CONNECTION must be 0 .* got -1"),
        ("CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION", "ten", "CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION"),
        ("CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION", "2.5", "CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION"),
        ("CONTROLPLANE_HTTP_CONNECTION_MAX_AGE_SECONDS", "-1", "MAX_AGE_SECONDS must be 0 .* got -1"),
        ("CONTROLPLANE_HTTP_CONNECTION_MAX_AGE_SECONDS", "inf", "MAX_AGE_SECONDS must be 0 .* got inf"),
        ("CONTROLPLANE_HTTP_CONNECTION_MAX_AGE_SECONDS", "soon", "CONTROLPLANE_HTTP_CONNECTION_MAX_AGE_SECONDS"),
    ],
)
def test_unusable_settings_are_refused_naming_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({variable: value})


def test_readme_settings_table_lists_every_setting_with_its_default() -> None:
    documented = dict(re.findall(r"^\| `(CONTROLPLANE_[A-Z_]+)` \| ([^|]+) \|", README.read_text(), re.MULTILINE))
    defaults = Settings()
    for spec in fields(Settings):
        variable = "CONTROLPLANE_" + spec.name.upper()
        assert variable in documented, f"{variable} is missing from the README settings table"
        if spec.name == "replica_id":
            continue
        value = getattr(defaults, spec.name)
        shown = (
            ",".join(value)
            if isinstance(value, tuple)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        assert documented[variable].strip().strip("`") == shown, variable
