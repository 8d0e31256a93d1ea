"""Which request ends a keep-alive connection, and where the limit comes from (the protocol itself is served for real
in tests/integration/test_connection_recycling.py)."""

from __future__ import annotations

import pytest
from uvicorn.importer import import_from_string

from controlplane.api.connections import (
    PROTOCOL_IMPORT_STRING,
    RecyclingHttpToolsProtocol,
    ends_connection,
    limit_from_environment,
)
from controlplane.settings import SettingsError


def test_the_request_numbered_as_the_limit_ends_the_connection_and_none_before_it() -> None:
    assert [served for served in range(1, 8) if ends_connection(served, 3)] == [3, 4, 5, 6, 7]
    assert ends_connection(1, 1)
    assert not ends_connection(99, 100)


def test_a_limit_of_0_never_ends_a_connection() -> None:
    assert not any(ends_connection(served, 0) for served in (1, 100, 10**9))


def test_the_limit_is_read_from_the_environment_through_settings() -> None:
    assert limit_from_environment({}) == 100
    assert limit_from_environment({"CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION": "7"}) == 7
    with pytest.raises(SettingsError, match="CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION"):
        limit_from_environment({"CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION": "-3"})


def test_a_limit_given_in_code_must_not_be_negative() -> None:
    assert RecyclingHttpToolsProtocol.limited_to(5).max_requests == 5
    assert issubclass(RecyclingHttpToolsProtocol.limited_to(0), RecyclingHttpToolsProtocol)
    with pytest.raises(ValueError, match="max_requests"):
        RecyclingHttpToolsProtocol.limited_to(-1)


def test_uvicorn_finds_the_protocol_by_its_import_string() -> None:
    assert import_from_string(PROTOCOL_IMPORT_STRING) is RecyclingHttpToolsProtocol
