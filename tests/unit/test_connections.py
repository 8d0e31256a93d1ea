"""Which request ends a keep-alive connection, and where the limit comes from (the protocol itself is served for real
in tests/integration/test_connection_recycling.py)."""

from __future__ import annotations

import pytest
from uvicorn.importer import import_from_string

from controlplane.api.connections import (
    PROTOCOL_IMPORT_STRING,
    ConnectionLimits,
    RecyclingHttpToolsProtocol,
    ends_connection,
    limits_from_environment,
)
from controlplane.settings import SettingsError

BY_COUNT = ConnectionLimits(max_requests=3, max_age_seconds=0)
BY_AGE = ConnectionLimits(max_requests=0, max_age_seconds=10.0)


def test_the_request_numbered_as_the_limit_ends_the_connection_and_none_before_it() -> None:
    assert [served for served in range(1, 8) if ends_connection(served, 0.0, BY_COUNT)] == [3, 4, 5, 6, 7]
    assert ends_connection(1, 0.0, ConnectionLimits(1, 0))
    assert not ends_connection(99, 0.0, ConnectionLimits(100, 0))


def test_the_first_request_at_or_past_the_age_ends_the_connection_whatever_it_served() -> None:
    assert not ends_connection(1, 9.999, BY_AGE)
    assert ends_connection(1, 10.0, BY_AGE)
    assert ends_connection(2, 3600.0, BY_AGE)
    both = ConnectionLimits(max_requests=5, max_age_seconds=10.0)
    assert ends_connection(5, 0.1, both) and ends_connection(2, 10.0, both) and not ends_connection(4, 9.0, both)


def test_limits_of_0_never_end_a_connection() -> None:
    never = ConnectionLimits(0, 0)
    assert not any(ends_connection(served, age, never) for served, age in ((1, 0.0), (100, 60.0), (10**9, 1e9)))


def test_the_limits_are_read_from_the_environment_through_settings() -> None:
    assert limits_from_environment({}) == ConnectionLimits(1000, 10.0)
    assert limits_from_environment(
        {"CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION": "7", "CONTROLPLANE_HTTP_CONNECTION_MAX_AGE_SECONDS": "2.5"}
    ) == ConnectionLimits(7, 2.5)
    with pytest.raises(SettingsError, match="CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION"):
        limits_from_environment({"CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION": "-3"})
    with pytest.raises(SettingsError, match="CONTROLPLANE_HTTP_CONNECTION_MAX_AGE_SECONDS"):
        limits_from_environment({"CONTROLPLANE_HTTP_CONNECTION_MAX_AGE_SECONDS": "-1"})


def test_limits_given_in_code_must_not_be_negative() -> None:
    assert RecyclingHttpToolsProtocol.limited_to(BY_COUNT).limits == BY_COUNT
    assert issubclass(RecyclingHttpToolsProtocol.limited_to(BY_AGE), RecyclingHttpToolsProtocol)
    with pytest.raises(ValueError, match="connection limits"):
        ConnectionLimits(-1, 0)
    with pytest.raises(ValueError, match="connection limits"):
        ConnectionLimits(0, float("nan"))


def test_uvicorn_finds_the_protocol_by_its_import_string() -> None:
    assert import_from_string(PROTOCOL_IMPORT_STRING) is RecyclingHttpToolsProtocol
