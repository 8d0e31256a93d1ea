"""The in-process provider without a server: environment overrides, types, staleness, the cache's conditional fetch,
and evaluations on the prepared path (a flag's details built once per snapshot and kind)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

from controlplane_client.provider import SNAPSHOT_PATH, ControlPlaneProvider, override_variable
from controlplane_client.provider.snapshot import FlagConfig, Snapshot
from controlplane_client.provider.wire import Condition, ConditionOperator, TargetingRule
from tests.conftest import FakeClock

URL = "http://controlplane.test"
FLAG = "enable-reference-images"
ETAG = '"production-7"'


def _flag(key: str, type_: str, variants: dict[str, Any], default: str) -> FlagConfig:
    off = next(name for name in variants if name != default) if len(variants) > 1 else default
    return FlagConfig(
        key=key,
        type=type_,
        variants=variants,
        off_variant=off,
        default_variant=default,
        enabled=True,
        rules=[],
        rollout=None,
        revision=3,
    )


SNAPSHOT = Snapshot(
    environment="production",
    revision=7,
    flags=[
        _flag(FLAG, "boolean", {"on": True, "off": False}, "on"),
        _flag("reply.tone", "string", {"calm": "calm", "brisk": "brisk"}, "calm"),
        _flag("max-images", "number", {"few": 3, "many": 10}, "few"),
        _flag("upload-ratio", "number", {"half": 0.5, "all": 1.0}, "half"),
        _flag("gallery-layout", "object", {"grid": {"columns": 3}, "list": {"columns": 1}}, "grid"),
    ],
)


class FakeControlPlane:
    """Serves SNAPSHOT (304 on a matching If-None-Match) and refuses the stream, recording every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == SNAPSHOT_PATH:
            if request.headers.get("If-None-Match") == ETAG:
                return httpx.Response(304, headers={"ETag": ETAG})
            return httpx.Response(200, content=msgspec.json.encode(SNAPSHOT), headers={"ETag": ETAG})
        # No stream: the provider keeps the snapshot it fetched and waits `reconnect_delay` (a minute) to retry.
        return httpx.Response(503)


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


MakeProvider = Callable[..., ControlPlaneProvider]


@pytest.fixture
def server() -> FakeControlPlane:
    """The fake control plane behind the provider's transport."""
    return FakeControlPlane()


@pytest.fixture
def make_provider(server: FakeControlPlane) -> MakeProvider:
    """A provider on the fake control plane; keyword arguments override the defaults."""

    def make(environ: Mapping[str, str] | None = None, **options: Any) -> ControlPlaneProvider:
        settings: dict[str, Any] = {
            "environment": "production",
            "environ": environ or {},
            "transport": httpx.MockTransport(server),
            "reconnect_delay": 60.0,
        } | options
        return ControlPlaneProvider(URL, "evaluate-token", **settings)

    return make


@pytest.fixture
def connect() -> Iterator[Callable[[ControlPlaneProvider], OpenFeatureClient]]:
    """Register a provider on a domain of its own and return that domain's client; clear every provider after."""

    def register(provider: ControlPlaneProvider) -> OpenFeatureClient:
        domain = f"provider-test-{uuid.uuid4().hex[:8]}"
        api.set_provider_and_wait(provider, domain)
        return api.get_client(domain)

    yield register
    api.clear_providers()


# --- overrides ----------------------------------------------------------------------------------------------------


def test_enable_reference_images_false_forces_the_flag_off_with_reason_static(
    make_provider: MakeProvider, connect: Callable[[ControlPlaneProvider], OpenFeatureClient]
) -> None:
    served = connect(make_provider())
    forced = connect(make_provider(environ={"ENABLE_REFERENCE_IMAGES": "false"}))

    assert served.get_boolean_details(FLAG, False).value is True
    details = forced.get_boolean_details(FLAG, True, EvaluationContext(targeting_key="user-1"))

    assert details.value is False
    assert details.reason == Reason.STATIC
    assert details.variant == "override"
    assert details.flag_metadata == {"override": "ENABLE_REFERENCE_IMAGES"}
    assert details.error_code is None


@pytest.mark.parametrize(
    ("key", "variable"),
    [
        ("enable-reference-images", "ENABLE_REFERENCE_IMAGES"),
        ("reply.tone", "REPLY_TONE"),
        ("ai.reply-assistant.v2", "AI_REPLY_ASSISTANT_V2"),
    ],
)
def test_the_override_variable_is_the_key_upper_cased_with_dashes_and_dots_as_underscores(
    key: str, variable: str
) -> None:
    assert override_variable(key) == variable


@pytest.mark.parametrize(
    ("variable", "raw", "resolve", "expected"),
    [
        ("ENABLE_REFERENCE_IMAGES", "true", lambda c: c.get_boolean_details(FLAG, False), True),
        ("ENABLE_REFERENCE_IMAGES", " FALSE ", lambda c: c.get_boolean_details(FLAG, True), False),
        ("ENABLE_REFERENCE_IMAGES", "0", lambda c: c.get_boolean_details(FLAG, True), False),
        ("ENABLE_REFERENCE_IMAGES", "1", lambda c: c.get_boolean_details(FLAG, False), True),
        ("REPLY_TONE", "Brisk, please", lambda c: c.get_string_details("reply.tone", ""), "Brisk, please"),
        ("MAX_IMAGES", "12", lambda c: c.get_integer_details("max-images", 0), 12),
        ("UPLOAD_RATIO", "0.25", lambda c: c.get_float_details("upload-ratio", 0.0), 0.25),
        ("MAX_IMAGES", "12", lambda c: c.get_float_details("max-images", 0.0), 12.0),
        ("GALLERY_LAYOUT", '{"columns": 4}', lambda c: c.get_object_details("gallery-layout", {}), {"columns": 4}),
    ],
)
def test_an_override_is_parsed_as_the_flags_type(
    make_provider: MakeProvider,
    connect: Callable[[ControlPlaneProvider], OpenFeatureClient],
    variable: str,
    raw: str,
    resolve: Callable[[OpenFeatureClient], Any],
    expected: Any,
) -> None:
    client = connect(make_provider(environ={variable: raw}))

    details = resolve(client)

    assert details.error_code is None, details.error_message
    assert details.value == expected
    assert type(details.value) is type(expected)
    assert (details.reason, details.variant) == (Reason.STATIC, "override")


@pytest.mark.usefixtures("connect")  # clears the providers afterwards
def test_an_override_applies_when_the_server_was_never_reached(make_provider: MakeProvider) -> None:
    provider = make_provider(environ={"ENABLE_REFERENCE_IMAGES": "false"}, transport=httpx.MockTransport(_unreachable))

    domain = f"provider-test-{uuid.uuid4().hex[:8]}"

    # No snapshot and no cache: initialize fails (spec 2.4.2.1), but not fatally, so the SDK still asks the provider.
    with pytest.raises(ProviderNotReadyError):
        api.set_provider_and_wait(provider, domain)
    client = api.get_client(domain)

    assert client.get_provider_status() == ProviderStatus.ERROR
    forced = client.get_boolean_details(FLAG, True)
    assert (forced.value, forced.reason, forced.variant) == (False, Reason.STATIC, "override")
    waiting = client.get_string_details("reply.tone", "code default")
    assert (waiting.value, waiting.error_code) == ("code default", ErrorCode.PROVIDER_NOT_READY)


def test_an_override_that_does_not_parse_is_a_parse_error_served_as_the_code_default_and_logged_once(
    make_provider: MakeProvider,
    connect: Callable[[ControlPlaneProvider], OpenFeatureClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = connect(make_provider(environ={"ENABLE_REFERENCE_IMAGES": "maybe"}))
    caplog.set_level(logging.WARNING, logger="controlplane_client.provider")

    first = client.get_boolean_details(FLAG, False)
    second = client.get_boolean_details(FLAG, False)

    # Not silently ignored: whoever set the variable meant to force the flag, so the evaluation says it failed.
    for details in (first, second):
        assert (details.value, details.reason, details.error_code) == (False, Reason.ERROR, ErrorCode.PARSE_ERROR)
        assert details.error_message is not None
        assert "ENABLE_REFERENCE_IMAGES='maybe'" in details.error_message
    warnings = [record for record in caplog.records if "ENABLE_REFERENCE_IMAGES" in record.getMessage()]
    assert len(warnings) == 1


def test_overrides_are_ignored_when_turned_off(
    make_provider: MakeProvider, connect: Callable[[ControlPlaneProvider], OpenFeatureClient]
) -> None:
    client = connect(make_provider(environ={"ENABLE_REFERENCE_IMAGES": "false"}, use_environment_overrides=False))

    details = client.get_boolean_details(FLAG, False)

    assert (details.value, details.variant, details.reason) == (True, "on", Reason.STATIC)


def test_an_empty_override_variable_means_no_override(
    make_provider: MakeProvider, connect: Callable[[ControlPlaneProvider], OpenFeatureClient]
) -> None:
    client = connect(make_provider(environ={"ENABLE_REFERENCE_IMAGES": ""}))

    assert client.get_boolean_details(FLAG, False).variant == "on"


# --- types --------------------------------------------------------------------------------------------------------


def test_asking_a_flag_as_another_type_is_a_type_mismatch_and_a_missing_key_is_flag_not_found(
    make_provider: MakeProvider, connect: Callable[[ControlPlaneProvider], OpenFeatureClient]
) -> None:
    client = connect(make_provider(environ={"ENABLE_REFERENCE_IMAGES": "false"}))

    mismatches = [
        client.get_string_details(FLAG, "code default"),  # an override does not change the flag's type
        client.get_integer_details("reply.tone", 7),
        client.get_boolean_details("max-images", True),
        client.get_integer_details("upload-ratio", 7),  # 0.5 is not an integer
        client.get_object_details("reply.tone", {"code": "default"}),
    ]
    missing = client.get_boolean_details("no-such-flag", True)

    for details in mismatches:
        assert (details.reason, details.error_code) == (Reason.ERROR, ErrorCode.TYPE_MISMATCH), details
    assert [details.value for details in mismatches] == ["code default", 7, True, 7, {"code": "default"}]
    assert (missing.value, missing.reason, missing.error_code) == (True, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)
    assert missing.error_message == "flag `no-such-flag` is not defined in this environment"


def test_a_boolean_is_never_a_number(make_provider: MakeProvider) -> None:
    provider = make_provider()
    provider.initialize(EvaluationContext())
    try:
        as_integer = provider.resolve_integer_details(FLAG, 0)
        as_float = provider.resolve_float_details(FLAG, 0.0)
    finally:
        provider.shutdown()

    assert as_integer.error_code == ErrorCode.TYPE_MISMATCH
    assert as_float.error_code == ErrorCode.TYPE_MISMATCH


def test_an_integer_flag_asked_as_a_float_is_converted(
    make_provider: MakeProvider, connect: Callable[[ControlPlaneProvider], OpenFeatureClient]
) -> None:
    client = connect(make_provider())

    as_float = client.get_float_details("max-images", 0.0)
    as_integer = client.get_integer_details("max-images", 0)

    assert (as_float.value, type(as_float.value), as_float.variant) == (3.0, float, "few")
    assert (as_integer.value, type(as_integer.value)) == (3, int)


# --- the prepared path: a flag's details built once per snapshot and kind ----------------------------------------


def _serving(snapshot: Snapshot) -> httpx.MockTransport:
    """A control plane that serves ``snapshot`` and refuses the stream."""

    def control_plane(request: httpx.Request) -> httpx.Response:
        if request.url.path == SNAPSHOT_PATH:
            return httpx.Response(200, content=msgspec.json.encode(snapshot), headers={"ETag": '"production-1"'})
        return httpx.Response(503)

    return httpx.MockTransport(control_plane)


def _with_rule(flag: FlagConfig, attribute: str, op: ConditionOperator, value: Any, variant: str) -> FlagConfig:
    condition = Condition(
        attribute=attribute, op=op, **({"values": [value]} if op is ConditionOperator.IN else {"value": value})
    )
    return msgspec.structs.replace(flag, rules=[TargetingRule(name="picked", when=[condition], variant=variant)])


def test_an_override_holds_on_every_evaluation_beside_flags_on_the_prepared_path(make_provider: MakeProvider) -> None:
    provider = make_provider(environ={"REPLY_TONE": "brisk"})
    provider.initialize(EvaluationContext())
    try:
        # The first evaluation of a key goes the long way (and prepares the flag); the later ones do not.
        for _ in range(3):
            forced = provider.resolve_string_details("reply.tone", "", EvaluationContext("user-1"))
            served = provider.resolve_boolean_details(FLAG, False, EvaluationContext("user-1"))
            assert (forced.value, forced.variant) == ("brisk", "override")
            assert (served.value, served.variant, served.reason) == (True, "on", Reason.STATIC)
    finally:
        provider.shutdown()


def test_the_targeting_key_wins_over_an_attribute_of_that_name_and_stands_in_for_it(
    make_provider: MakeProvider,
) -> None:
    vip = _with_rule(SNAPSHOT.flags[0], "targetingKey", ConditionOperator.IN, "user-1", "on")
    vip = msgspec.structs.replace(vip, default_variant="off", off_variant="off")
    provider = make_provider(transport=_serving(Snapshot(environment="production", revision=1, flags=[vip])))
    provider.initialize(EvaluationContext())
    try:
        for _ in range(2):  # the first round prepares the flag
            served = [
                provider.resolve_boolean_details(FLAG, False, context)
                for context in (
                    EvaluationContext("user-1", {"targetingKey": "user-2"}),
                    EvaluationContext(None, {"targetingKey": "user-1"}),
                    EvaluationContext("user-2", {"targetingKey": "user-1"}),
                    EvaluationContext(),
                    None,
                )
            ]
            assert [(details.value, details.reason) for details in served] == [
                (True, Reason.TARGETING_MATCH),
                (True, Reason.TARGETING_MATCH),
                (False, Reason.DEFAULT),
                (False, Reason.DEFAULT),
                (False, Reason.DEFAULT),
            ]
    finally:
        provider.shutdown()


def test_a_number_flag_with_a_fractional_variant_is_a_mismatch_as_an_integer_only_where_it_serves_it(
    make_provider: MakeProvider,
) -> None:
    mixed = _with_rule(SNAPSHOT.flags[2], "plan", ConditionOperator.EQUALS, "half", "half")
    mixed = msgspec.structs.replace(mixed, variants={"few": 3, "half": 0.5})
    provider = make_provider(transport=_serving(Snapshot(environment="production", revision=1, flags=[mixed])))
    provider.initialize(EvaluationContext())
    half = EvaluationContext("user-1", {"plan": "half"})
    try:
        for _ in range(2):
            assert provider.resolve_integer_details("max-images", -1, EvaluationContext("user-1")).value == 3
            mismatch = provider.resolve_integer_details("max-images", -1, half)
            assert (mismatch.value, mismatch.error_code) == (-1, ErrorCode.TYPE_MISMATCH)
            assert provider.resolve_float_details("max-images", -1.0, half).value == 0.5
    finally:
        provider.shutdown()


# --- staleness ----------------------------------------------------------------------------------------------------


def test_resolutions_carry_reason_stale_once_stale_after_passes_without_contact(
    make_provider: MakeProvider, connect: Callable[[ControlPlaneProvider], OpenFeatureClient]
) -> None:
    clock = FakeClock()
    client = connect(make_provider(clock=clock, stale_after=timedelta(seconds=30), environ={"REPLY_TONE": "brisk"}))
    assert client.get_boolean_details(FLAG, False).reason == Reason.STATIC

    clock.advance(timedelta(seconds=30))
    assert client.get_boolean_details(FLAG, False).reason == Reason.STATIC
    clock.advance(timedelta(seconds=1))
    stale = client.get_boolean_details(FLAG, False)

    assert (stale.value, stale.variant, stale.reason) == (True, "on", Reason.STALE)
    assert stale.flag_metadata == {"evaluated_reason": "STATIC"}
    assert stale.error_code is None
    # An override is local and authoritative: never stale.
    assert client.get_string_details("reply.tone", "").reason == Reason.STATIC


# --- cache --------------------------------------------------------------------------------------------------------


def test_a_cached_snapshot_is_revalidated_with_if_none_match_and_kept_on_304(
    make_provider: MakeProvider,
    server: FakeControlPlane,
    connect: Callable[[ControlPlaneProvider], OpenFeatureClient],
    tmp_path: Path,
) -> None:
    cache = tmp_path / "flags" / "production.json"
    connect(make_provider(cache_path=cache))
    written = msgspec.json.decode(cache.read_bytes())
    assert written["etag"] == ETAG
    assert written["snapshot"]["revision"] == 7
    server.requests.clear()

    client = connect(make_provider(cache_path=cache))

    fetches = [request for request in server.requests if request.url.path == SNAPSHOT_PATH]
    assert [request.headers.get("If-None-Match") for request in fetches] == [ETAG]
    assert fetches[0].headers["X-Environment"] == "production"
    assert fetches[0].headers["Authorization"] == "Bearer evaluate-token"
    details = client.get_boolean_details(FLAG, False)
    assert (details.value, details.reason) == (True, Reason.STATIC)
    assert not list(tmp_path.glob("flags/.production.json.*")), "a temporary file was left behind"


# --- following changes --------------------------------------------------------------------------------------------


def _notice(revision: int) -> bytes:
    """One SSE message as the server sends it, followed by a keep-alive comment."""
    data = msgspec.json.encode({"type": "refetchEvaluation", "environment": "production", "revision": revision})
    return b"id: %d\r\ndata: %s\r\n\r\n: keep-alive\r\n\r\n" % (revision, data)


def test_a_newer_revision_on_the_stream_refetches_and_names_only_the_changed_flags(tmp_path: Path) -> None:
    newer = Snapshot(
        environment="production",
        revision=8,
        flags=[
            *(flag for flag in SNAPSHOT.flags if flag.key not in {"max-images", "gallery-layout"}),
            msgspec.structs.replace(SNAPSHOT.flags[2], default_variant="many", revision=8),
            _flag("new-flag", "boolean", {"on": True, "off": False}, "off"),
        ],
    )
    served = [SNAPSHOT]
    fetches: list[str | None] = []
    evaluated = threading.Event()

    def control_plane(request: httpx.Request) -> httpx.Response:
        if request.url.path == SNAPSHOT_PATH:
            fetches.append(request.headers.get("If-None-Match"))
            etag = f'"production-{served[-1].revision}"'
            return httpx.Response(200, content=msgspec.json.encode(served[-1]), headers={"ETag": etag})
        # One stale notice (the revision already held) and one new one, then the stream ends; not before the
        # old snapshot's value was served (and its details built).
        evaluated.wait(5.0)
        served.append(newer)
        body = b"".join(_notice(revision) for revision in (7, 8))
        return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

    cache = tmp_path / "production.json"
    provider = ControlPlaneProvider(
        URL, "t", environ={}, transport=httpx.MockTransport(control_plane), reconnect_delay=60.0, cache_path=cache
    )
    emitted: list[tuple[ProviderEvent, ProviderEventDetails]] = []
    changed = threading.Event()

    def on_emit(_: object, event: ProviderEvent, details: ProviderEventDetails) -> None:
        emitted.append((event, details))
        changed.set()

    provider.attach(on_emit)
    provider.initialize(EvaluationContext())
    try:
        before = [provider.resolve_integer_details("max-images", 0, EvaluationContext()).value for _ in range(2)]
        evaluated.set()
        assert changed.wait(5.0), "no event within 5 s"
        assert provider.resolve_integer_details("max-images", 0, EvaluationContext()).value == 10
    finally:
        provider.shutdown()

    assert before == [3, 3]
    assert fetches == [None, '"production-7"']
    assert [event for event, _ in emitted] == [ProviderEvent.PROVIDER_CONFIGURATION_CHANGED]
    assert emitted[0][1].flags_changed == ["gallery-layout", "max-images", "new-flag"]
    assert msgspec.json.decode(cache.read_bytes())["etag"] == '"production-8"'


def test_a_refused_token_at_start_is_fatal(make_provider: MakeProvider) -> None:
    provider = make_provider(transport=httpx.MockTransport(lambda request: httpx.Response(401)))
    domain = f"provider-test-{uuid.uuid4().hex[:8]}"

    try:
        # Spec 2.4.2.1: bad credentials cannot be fixed by retrying, hence PROVIDER_FATAL.
        with pytest.raises(ProviderFatalError):
            api.set_provider_and_wait(provider, domain)
        assert api.get_client(domain).get_provider_status() == ProviderStatus.FATAL
    finally:
        api.clear_providers()


def test_a_provider_that_started_without_a_server_becomes_ready_when_the_server_appears(
    server: FakeControlPlane, make_provider: MakeProvider
) -> None:
    reachable = threading.Event()

    def control_plane(request: httpx.Request) -> httpx.Response:
        if not reachable.is_set():
            raise httpx.ConnectError("connection refused", request=request)
        return server(request)

    provider = make_provider(transport=httpx.MockTransport(control_plane), reconnect_delay=0.02)
    domain = f"provider-test-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(ProviderNotReadyError):
            api.set_provider_and_wait(provider, domain)
        client = api.get_client(domain)
        assert client.get_boolean_details(FLAG, False).error_code == ErrorCode.PROVIDER_NOT_READY

        reachable.set()

        deadline = time.monotonic() + 5.0
        while client.get_provider_status() != ProviderStatus.READY:
            assert time.monotonic() < deadline, "the provider never announced READY"
            time.sleep(0.01)
        details = client.get_boolean_details(FLAG, False)
        assert (details.value, details.variant, details.error_code) == (True, "on", None)
    finally:
        api.clear_providers()
