"""The load generator: open-loop pacing on a fake clock, the route mix, the run over a mocked pipeline, faults, and
the simulated AI assistant's events checked by ingest's own validation against definitions/ai-assistant.yaml."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest

from controlplane.catalog.events import Catalog
from controlplane.definitions.loader import load_definition
from controlplane.settings import Settings
from controlplane.telemetry.aggregation import aggregate
from controlplane.telemetry.schemas import EventBatch
from controlplane_client.emitter import Event
from pipeline.images import CheckedImage, check_upload
from pipeline.loadgen import AiAssistantConfig, FaultsUnavailable, LoadConfig, LoadStats, Mix, Route, run_load
from pipeline.loadgen import set_faults as set_pipeline_faults
from pipeline.loadgen.__main__ import _parser as cli_parser
from pipeline.loadgen.__main__ import config_from_arguments
from pipeline.loadgen.ai_assistant import AiRun, agent_mode, agent_variant, plan_run, simulate_run
from pipeline.loadgen.pacing import due_times, merge_schedules, pace, request_count
from pipeline.loadgen.traffic import random_image
from pipeline.vision import LocalAnalyzer

DEFINITION = Path(__file__).resolve().parents[2] / "definitions" / "ai-assistant.yaml"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


class FakeTime:
    """A monotonic clock that moves only when slept on; thread-safe enough for one pacer."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --- pacing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "duration", "count"), [(20, 1, 20), (20, 1.5, 30), (3, 1, 3), (2.5, 2, 5), (0.5, 1, 1), (7, 0.1, 1)]
)
def test_a_run_sends_the_requests_due_before_its_end(rate: float, duration: float, count: int) -> None:
    assert request_count(rate, duration) == count
    assert list(due_times(rate, duration)) == [index / rate for index in range(count)]


def test_pace_dispatches_each_request_when_it_is_due_and_waits_out_the_run() -> None:
    time = FakeTime()
    dispatched: list[tuple[float, float, int]] = []
    schedule = ((due, index) for index, due in enumerate(due_times(10, 2)))
    elapsed = pace(
        schedule,
        lambda due, item: dispatched.append((time.now - 100.0, due, item)),
        duration=2,
        clock=time.clock,
        sleep=time.sleep,
        stop=threading.Event(),
    )
    assert [item for _, _, item in dispatched] == list(range(20))
    assert [at for at, _, _ in dispatched] == pytest.approx([index / 10 for index in range(20)])
    assert elapsed == pytest.approx(2.0)
    assert sum(time.sleeps) == pytest.approx(2.0)


def test_a_slow_dispatch_delays_but_never_thins_the_schedule() -> None:
    # Dispatch takes 0.25 s at 10/s: each request goes as soon as it can, none is skipped, the end stays fixed.
    time = FakeTime()
    dispatched: list[float] = []

    def slow(due: float, item: int) -> None:
        dispatched.append(time.now - 100.0)
        time.now += 0.25

    elapsed = pace(
        ((due, index) for index, due in enumerate(due_times(10, 1))),
        slow,
        duration=1,
        clock=time.clock,
        sleep=time.sleep,
        stop=threading.Event(),
    )
    assert len(dispatched) == 10
    assert dispatched[:3] == pytest.approx([0.0, 0.25, 0.5])
    assert elapsed == pytest.approx(2.5)


def test_pace_ticks_about_every_second_and_a_stop_ends_the_run() -> None:
    time = FakeTime()
    stop = threading.Event()
    ticks: list[float] = []
    dispatched: list[float] = []

    def tick(elapsed: float) -> None:
        ticks.append(elapsed)
        if len(ticks) == 2:
            stop.set()

    elapsed = pace(
        ((due, due) for due in due_times(4, 10)),
        lambda due, item: dispatched.append(due),
        duration=10,
        clock=time.clock,
        sleep=time.sleep,
        stop=stop,
        tick=tick,
    )
    assert ticks == pytest.approx([1.0, 2.0])
    assert dispatched == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    assert elapsed == pytest.approx(2.0)


def test_schedules_merge_in_time_order() -> None:
    merged = list(merge_schedules([(0.0, "a"), (0.5, "b")], [(0.0, "x"), (0.25, "y"), (1.0, "z")]))
    assert merged == [(0.0, "a"), (0.0, "x"), (0.25, "y"), (0.5, "b"), (1.0, "z")]


# --- the mix -----------------------------------------------------------------------------------------------------


def test_routes_are_drawn_with_the_mix_weights() -> None:
    rng = random.Random(5)
    drawn = Counter(Mix(upload=5, preflight=3, generate=2).choose(rng) for _ in range(20_000))
    assert drawn[Route.UPLOAD] / 20_000 == pytest.approx(0.5, abs=0.015)
    assert drawn[Route.PREFLIGHT] / 20_000 == pytest.approx(0.3, abs=0.015)
    assert drawn[Route.GENERATE] / 20_000 == pytest.approx(0.2, abs=0.015)
    only = Mix(upload=0, preflight=1, generate=0)
    assert {only.choose(rng) for _ in range(100)} == {Route.PREFLIGHT}


def test_a_mix_is_read_from_the_command_line_and_checked() -> None:
    assert Mix.parse("upload=4, generate=1") == Mix(upload=4, preflight=0, generate=1)
    with pytest.raises(ValueError, match="unknown route 'delete'"):
        Mix.parse("delete=1")
    with pytest.raises(ValueError, match="not all 0"):
        Mix.parse("upload=0")
    with pytest.raises(ValueError, match=">= 0"):
        Mix(upload=-1)


def test_the_random_images_are_small_real_images_vision_accepts() -> None:
    rng = random.Random(1)
    for _ in range(25):
        data, media_type = random_image(rng)
        checked = check_upload(data)
        assert isinstance(checked, CheckedImage) and checked.content_type == media_type
        assert len(data) < 64 * 1024
        assert LocalAnalyzer().analyze(data, media_type).accepted


# --- a run over a mocked pipeline --------------------------------------------------------------------------------


class FakePipeline:
    """Answers like the pipeline: 201 uploads, 200 preflights and generations, 200 PUT /faults; records requests."""

    def __init__(self, *, upload_status: int = 201, faults_status: int = 200) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, bytes]] = []
        self.upload_status = upload_status
        self.faults_status = faults_status
        self.release = threading.Event()
        self.release.set()
        self.counter = 0
        self.flag_on = True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.release.wait(timeout=10)
        body = request.read()
        with self.lock:
            self.requests.append((request.method, request.url.path, body))
            self.counter += 1
            number = self.counter
        if request.url.path == "/faults":
            return httpx.Response(self.faults_status, content=body)
        if request.url.path == "/upload/reference-image":
            return httpx.Response(self.upload_status, json={"asset_id": f"{number:032x}"})
        if request.url.path == "/run_preflight":
            return httpx.Response(200, json={"run_id": f"{number:032x}", "flag": {"enabled": self.flag_on}})
        return httpx.Response(200, json={})

    def paths(self) -> Counter[str]:
        return Counter(path if not path.startswith("/runs/") else "/runs/generate" for _, path, _ in self.requests)


def run(config: LoadConfig, pipeline: FakePipeline, **kwargs: object) -> tuple[LoadStats, FakeTime]:
    time = FakeTime()
    stats = run_load(config, clock=time.clock, sleep=time.sleep, transport=httpx.MockTransport(pipeline), **kwargs)  # type: ignore[arg-type]
    return stats, time


def test_a_run_sends_rate_times_duration_requests_in_the_mix() -> None:
    pipeline = FakePipeline()
    progress: list[LoadStats] = []
    config = LoadConfig(pipeline_url="http://pipeline", rate=50, duration=4, users=3, seed=9, workers=4)
    stats, _ = run(config, pipeline, on_progress=progress.append)
    assert stats.sent == stats.completed == 200 and stats.dropped == 0 and stats.errors == 0
    assert stats.elapsed == pytest.approx(4.0) and stats.achieved_rate == pytest.approx(50.0)
    assert sum(stats.by_route.values()) == 200
    assert stats.by_status["upload_reference_image"] == {"201": stats.by_route["upload_reference_image"]}
    assert stats.status_count(200) == stats.by_route["run_preflight"] + stats.by_route["generate_assets"]
    # Default mix 0.4/0.35/0.25, less the generations that found no run waiting and went as preflights.
    assert 60 <= stats.by_route["upload_reference_image"] <= 100
    assert [snapshot.elapsed for snapshot in progress[:-1]] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert progress[-1] == stats
    users = set()
    for _, path, body in pipeline.requests:
        if path == "/run_preflight":
            users.add(json.loads(body)["user_id"])
    assert users <= {"user-0", "user-1", "user-2"} and len(users) > 1


def test_uploads_are_offered_only_to_users_the_flag_serves_on() -> None:
    pipeline = FakePipeline()
    pipeline.flag_on = False
    config = LoadConfig(pipeline_url="http://pipeline", rate=50, duration=2, users=3, seed=9, workers=2)
    stats, _ = run(config, pipeline)
    # Like the product's UI: users whose flag is off (or not known yet) are never offered the upload.
    assert stats.by_route.get("upload_reference_image", 0) == 0
    assert pipeline.paths()["/upload/reference-image"] == 0
    assert stats.sent == 100


def test_preflights_send_the_users_recent_uploads_and_generations_take_preflighted_runs() -> None:
    pipeline = FakePipeline()
    config = LoadConfig(pipeline_url="http://pipeline", rate=20, duration=5, users=1, seed=2, workers=1)
    run(config, pipeline)
    uploaded: set[str] = set()
    preflighted: list[str] = []
    referenced = 0
    for number, (_, path, body) in enumerate(pipeline.requests, start=1):
        if path == "/upload/reference-image":
            assert b'name="role"' in body and b'name="user_id"' in body and b"user-0" in body
            uploaded.add(f"{number:032x}")
        elif path == "/run_preflight":
            ids = json.loads(body)["reference_image_ids"]
            assert set(ids) <= uploaded and len(ids) <= 2
            referenced += bool(ids)
            preflighted.append(f"{number:032x}")
        else:
            assert path.split("/")[2] in preflighted
    assert referenced > 0


def test_the_same_seed_plans_the_same_run() -> None:
    first, second = FakePipeline(), FakePipeline()
    config = LoadConfig(pipeline_url="http://pipeline", rate=30, duration=2, users=5, seed=4, workers=1)
    run(config, first)
    run(config, second)
    assert [(method, path) for method, path, _ in first.requests] == [(m, p) for m, p, _ in second.requests]


def test_faults_are_set_first() -> None:
    pipeline = FakePipeline()
    faults = {"vision_error_rate": 0.5, "upload_failure_rate": 0.1, "vision_latency_seconds": 2.0}
    run(LoadConfig(pipeline_url="http://pipeline", rate=5, duration=1, faults=faults), pipeline)
    method, path, body = pipeline.requests[0]
    assert (method, path, json.loads(body)) == ("PUT", "/faults", faults)


def test_a_pipeline_without_fault_injection_is_refused_before_any_load() -> None:
    pipeline = FakePipeline(faults_status=404)
    with pytest.raises(FaultsUnavailable, match="PIPELINE_FAULTS_ENABLED=true"):
        run(LoadConfig(pipeline_url="http://pipeline", rate=5, duration=1, faults={"vision_error_rate": 1.0}), pipeline)
    assert pipeline.paths() == Counter({"/faults": 1})


def test_set_faults_sends_all_three_and_returns_what_the_pipeline_holds() -> None:
    pipeline = FakePipeline()
    with httpx.Client(transport=httpx.MockTransport(pipeline)) as client:
        held = set_pipeline_faults("http://pipeline/", vision_latency_seconds=1.5, client=client)
    assert held == {"vision_error_rate": 0.0, "upload_failure_rate": 0.0, "vision_latency_seconds": 1.5}


def test_a_slow_pipeline_does_not_slow_the_schedule_and_a_full_backlog_drops() -> None:
    pipeline = FakePipeline()
    pipeline.release.clear()  # every request hangs until the schedule is over
    time = FakeTime()

    def sleep(seconds: float) -> None:
        time.sleep(seconds)
        if time.now >= 102.0:
            pipeline.release.set()

    config = LoadConfig(pipeline_url="http://pipeline", rate=10, duration=2, workers=2, max_backlog=3)
    stats = run_load(config, clock=time.clock, sleep=sleep, transport=httpx.MockTransport(pipeline))
    # 20 due: 2 in the workers' hands and 3 waiting, the other 15 dropped; the schedule kept its 2 seconds.
    assert (stats.sent, stats.dropped, stats.completed) == (5, 15, 5)
    assert stats.elapsed == pytest.approx(2.0)


def test_requests_without_an_answer_are_counted_as_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    time = FakeTime()
    config = LoadConfig(pipeline_url="http://pipeline", rate=10, duration=1, mix=Mix(upload=1, preflight=0, generate=0))
    stats = run_load(config, clock=time.clock, sleep=time.sleep, transport=httpx.MockTransport(refuse))
    assert stats.errors == 10 and stats.by_status == {"upload_reference_image": {"error": 10}}


def test_a_stop_ends_the_run_early() -> None:
    stop = threading.Event()
    config = LoadConfig(pipeline_url="http://pipeline", rate=10, duration=60)
    stats, _ = run(config, FakePipeline(), stop=stop, on_progress=lambda snapshot: stop.set())
    # The 10 due in the first second were dispatched; any not yet started when the stop came are dropped.
    assert stats.sent + stats.dropped == 10 and stats.completed == stats.sent
    assert stats.elapsed == pytest.approx(1.0)


# --- the AI assistant --------------------------------------------------------------------------------------------

AI = AiAssistantConfig(
    controlplane_url="http://cp",
    ingest_token="t",
    tenants=("acme", "globex", "initech", "hooli"),
    queues=("support", "billing", "sales", "returns"),
)


def ingest_check(events: list[Event]) -> None:
    """Validate events as `POST /api/v1/events` does, against the catalog of the definition file (raises if refused)."""
    settings = Settings()
    definition = load_definition(DEFINITION, environments=settings.environments)
    body = msgspec.json.encode({"batch_id": "loadgen-test-0001", "pipeline": definition.name, "events": events})
    batch = msgspec.json.decode(body, type=EventBatch)
    aggregate(
        batch,
        Catalog.of(definition.events),
        environments=settings.environments,
        now=NOW,
        max_age=timedelta(hours=1),
        max_future=timedelta(minutes=5),
        window=timedelta(seconds=10),
    )


def simulate(config: AiAssistantConfig, runs: int, seed: int = 0) -> list[Event]:
    rng = random.Random(seed)
    events: list[Event] = []
    for _ in range(runs):
        events.extend(simulate_run(rng, config, plan_run(rng, config), lambda: NOW))
    return events


def test_the_assistant_events_are_accepted_by_ingest_for_its_definition() -> None:
    events = simulate(AI, 2000)
    ingest_check(events)
    runs = [event for event in events if event.type == "ai_run"]
    requests = [event for event in events if event.type == "http_request"]
    assert len(runs) == len(requests) == 2000
    assert {event.outcome for event in runs} == {"ok", "fallback", "error"}
    assert {event.labels["mode"] for event in runs} == {"HUMANO", "COPILOTO", "AUTONOMO"}
    assert {event.variant for event in events} == {"on", "off"}
    assert all(event.value is not None and event.value > 0 for event in events)
    assert all(("tokens" in event.totals) == (event.outcome != "error") for event in runs)
    assert {event.labels["status_class"] for event in requests} == {"2xx", "5xx"}


def test_faults_raise_the_fallback_rate_and_the_latency() -> None:
    healthy = [event for event in simulate(AI, 3000) if event.type == "ai_run"]
    faulty_config = AiAssistantConfig(
        controlplane_url="http://cp", ingest_token="t", fallback_rate=0.6, extra_latency_seconds=5.0
    )
    faulty_events = simulate(faulty_config, 3000)
    ingest_check(faulty_events)
    faulty = [event for event in faulty_events if event.type == "ai_run"]

    def share(events: list[Event]) -> float:
        return sum(event.outcome == "fallback" for event in events) / len(events)

    def mean(events: list[Event]) -> float:
        return sum(event.value or 0 for event in events) / len(events)

    assert share(healthy) == pytest.approx(0.05, abs=0.015)
    assert share(faulty) == pytest.approx(0.6, abs=0.03)
    assert mean(faulty) - mean(healthy) == pytest.approx(5.0, abs=0.3)
    assert mean(faulty) > 6  # past the ai-latency rule's threshold


def test_faults_can_be_limited_to_one_streaming_cohort() -> None:
    config = AiAssistantConfig(controlplane_url="http://cp", ingest_token="t", fallback_rate=0.9, fault_variant="on")
    runs = [event for event in simulate(config, 3000) if event.type == "ai_run"]
    by_variant = {
        variant: sum(e.outcome == "fallback" for e in runs if e.variant == variant)
        / sum(e.variant == variant for e in runs)
        for variant in ("on", "off")
    }
    assert by_variant["on"] == pytest.approx(0.9, abs=0.03)
    assert by_variant["off"] == pytest.approx(0.05, abs=0.02)


def test_an_agent_keeps_its_variant_and_mode_and_pilots_get_the_copilot() -> None:
    assert agent_variant("acme-agent-1", 0.5) == agent_variant("acme-agent-1", 0.5)
    assert agent_variant("acme-agent-1", 0.0) == "off" and agent_variant("acme-agent-1", 1.0) == "on"
    assert {agent_mode("acme", "support", f"acme-agent-{n}") for n in range(20)} == {"COPILOTO"}
    assert agent_mode("acme", "billing", "x") == agent_mode("acme", "billing", "x")
    assert plan_run(random.Random(0), AI) == plan_run(random.Random(0), AI)
    assert isinstance(plan_run(random.Random(0), AI), AiRun)


def test_the_assistant_config_refuses_impossible_rates() -> None:
    with pytest.raises(ValueError, match="fallback_rate"):
        AiAssistantConfig(controlplane_url="x", ingest_token="t", fallback_rate=1.5)
    with pytest.raises(ValueError, match="at least one tenant"):
        AiAssistantConfig(controlplane_url="x", ingest_token="t", tenants=())


def test_a_run_simulates_the_assistant_into_the_sink_at_its_own_rate() -> None:
    sink: list[Event] = []

    class Sink:
        def emit(self, event: Event) -> None:
            sink.append(event)

    ai = AiAssistantConfig(controlplane_url="http://cp", ingest_token="t", rate=30)
    config = LoadConfig(pipeline_url="http://pipeline", rate=5, duration=2, ai_assistant=ai)
    stats, _ = run(config, FakePipeline(), ai_sink=Sink(), now=lambda: NOW)
    assert stats.ai_runs == 60 and sum(stats.ai_by_outcome.values()) == 60
    assert len(sink) == 120 and stats.sent == 10
    ingest_check(sink)


# --- the command line --------------------------------------------------------------------------------------------


def test_the_command_line_builds_the_config() -> None:
    args = cli_parser().parse_args(
        [
            "--pipeline-url", "http://p", "--rate", "20", "--duration", "30", "--users", "40", "--seed", "7",
            "--vision-error-rate", "0.5", "--mix", "upload=1,preflight=1",
            "--ai-assistant", "--controlplane-url", "http://cp", "--ingest-token", "tok",
            "--tenants", "acme, globex", "--queues", "support", "--ai-fallback-rate", "0.5", "--ai-latency", "4",
        ]
    )  # fmt: skip
    config = config_from_arguments(args)
    assert (config.rate, config.duration, config.users, config.seed) == (20, 30, 40, 7)
    assert config.faults == {"vision_error_rate": 0.5, "upload_failure_rate": 0.0, "vision_latency_seconds": 0.0}
    assert config.mix == Mix(upload=1, preflight=1, generate=0)
    assert config.ai_assistant is not None
    assert config.ai_assistant.tenants == ("acme", "globex") and config.ai_assistant.queues == ("support",)
    assert (config.ai_assistant.fallback_rate, config.ai_assistant.extra_latency_seconds) == (0.5, 4.0)
    plain = config_from_arguments(
        cli_parser().parse_args(["--pipeline-url", "http://p", "--rate", "1", "--duration", "1"])
    )
    assert plain.faults is None and plain.ai_assistant is None


def test_the_assistant_needs_a_control_plane_and_a_token() -> None:
    args = cli_parser().parse_args(
        ["--pipeline-url", "http://p", "--rate", "1", "--duration", "1", "--ai-assistant", "--ingest-token", ""]
    )
    args.controlplane_url = None
    with pytest.raises(ValueError, match="--controlplane-url and --ingest-token"):
        config_from_arguments(args)
