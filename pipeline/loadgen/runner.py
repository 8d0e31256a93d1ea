"""``run_load``: drive a pipeline (and, optionally, the simulated AI assistant) at a fixed rate for a while.

Open loop: the pacer plans and dispatches each request when it is due and never waits for an answer; a pool of
worker threads sends them. When every worker is busy and the backlog is full, a due request is dropped (counted),
so an overloaded pipeline shows up as drops and latency rather than as a slower schedule. AI assistant runs are
simulated on the pacer thread and handed to an emitter (which never blocks).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from controlplane_client.emitter import Emitter
from pipeline.loadgen.ai_assistant import PIPELINE as AI_PIPELINE
from pipeline.loadgen.ai_assistant import AiAssistantConfig, AiRun, EventSink, plan_run, simulate_run
from pipeline.loadgen.pacing import due_times, merge_schedules, pace
from pipeline.loadgen.traffic import Mix, PipelineTraffic, Planned

__all__ = ["FaultsUnavailable", "LoadConfig", "LoadStats", "run_load", "set_faults"]

#: The status recorded for a request that got no answer (connection refused, timeout).
NO_ANSWER = "error"


class FaultsUnavailable(RuntimeError):
    """The pipeline refused ``PUT /faults``: it was not started with ``PIPELINE_FAULTS_ENABLED=true``."""


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """One load run: the pipeline, the rate (requests per second), for how long, by whom, and what to inject.

    ``faults`` (``vision_error_rate``, ``upload_failure_rate``, ``vision_latency_seconds``) are set on the pipeline
    at the start when given (None leaves the pipeline's faults as they are).
    """

    pipeline_url: str
    rate: float
    duration: float
    users: int = 10
    seed: int = 0
    mix: Mix = field(default_factory=Mix)
    workers: int = 16
    max_backlog: int = 256
    timeout: float = 30.0
    faults: dict[str, float] | None = None
    ai_assistant: AiAssistantConfig | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.duration <= 0:
            raise ValueError(f"rate and duration must be positive, got {self.rate}/s for {self.duration} s")
        if self.users < 1 or self.workers < 1 or self.max_backlog < 0:
            raise ValueError("users and workers must be at least 1, max_backlog not negative")


@dataclass(frozen=True, slots=True)
class LoadStats:
    """What a run did so far: pipeline requests by route and status, drops, AI runs by outcome, pace achieved."""

    sent: int = 0
    completed: int = 0
    by_route: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, dict[str, int]] = field(default_factory=dict)
    """Route -> status code (or ``error``: no answer) -> count, for completed requests."""
    errors: int = 0
    """Requests that got no answer."""
    dropped: int = 0
    """Due requests not sent: the workers' backlog was full."""
    ai_runs: int = 0
    ai_by_outcome: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    achieved_rate: float = 0.0
    """Pipeline requests sent per second of the run."""

    def status_count(self, status: int | str) -> int:
        """Completed requests with this status, over every route."""
        return sum(statuses.get(str(status), 0) for statuses in self.by_status.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "sent": self.sent,
            "completed": self.completed,
            "by_route": dict(self.by_route),
            "by_status": {route: dict(statuses) for route, statuses in self.by_status.items()},
            "errors": self.errors,
            "dropped": self.dropped,
            "ai_runs": self.ai_runs,
            "ai_by_outcome": dict(self.ai_by_outcome),
            "elapsed": round(self.elapsed, 3),
            "achieved_rate": round(self.achieved_rate, 3),
        }


class _Recorder:
    """The counts behind ``LoadStats``, updated from the pacer and the workers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = self.completed = self.errors = self.dropped = self.ai_runs = self.in_flight = 0
        self.by_route: Counter[str] = Counter()
        self.by_status: dict[str, Counter[str]] = {}
        self.ai_by_outcome: Counter[str] = Counter()

    def try_dispatch(self, max_backlog: int, workers: int) -> bool:
        """Count a due request as sent, or as dropped when the backlog is full."""
        with self._lock:
            if self.in_flight >= workers + max_backlog:
                self.dropped += 1
                return False
            self.sent += 1
            self.in_flight += 1
            return True

    def done(self, route: str, status: str) -> None:
        with self._lock:
            self.in_flight -= 1
            self.completed += 1
            self.by_route[route] += 1
            self.by_status.setdefault(route, Counter())[status] += 1
            if status == NO_ANSWER:
                self.errors += 1

    def abandon(self) -> None:
        """A request counted as sent was cancelled before it started (the run was stopped): a drop after all."""
        with self._lock:
            self.in_flight -= 1
            self.sent -= 1
            self.dropped += 1

    def ai(self, outcome: str) -> None:
        with self._lock:
            self.ai_runs += 1
            self.ai_by_outcome[outcome] += 1

    def snapshot(self, elapsed: float) -> LoadStats:
        with self._lock:
            return LoadStats(
                sent=self.sent,
                completed=self.completed,
                by_route=dict(self.by_route),
                by_status={route: dict(statuses) for route, statuses in self.by_status.items()},
                errors=self.errors,
                dropped=self.dropped,
                ai_runs=self.ai_runs,
                ai_by_outcome=dict(self.ai_by_outcome),
                elapsed=elapsed,
                achieved_rate=self.sent / elapsed if elapsed > 0 else 0.0,
            )


def set_faults(
    pipeline_url: str,
    *,
    vision_error_rate: float = 0.0,
    upload_failure_rate: float = 0.0,
    vision_latency_seconds: float = 0.0,
    client: httpx.Client | None = None,
    timeout: float = 10.0,
) -> dict[str, float]:
    """Replace the faults in force on a running pipeline (``PUT /faults``); return what it now injects.

    Raises ``FaultsUnavailable`` when the pipeline has fault injection off, ``httpx.HTTPStatusError`` when it
    refuses the values (422: a rate outside [0, 1], a latency outside [0, 30]).
    """
    body = {
        "vision_error_rate": vision_error_rate,
        "upload_failure_rate": upload_failure_rate,
        "vision_latency_seconds": vision_latency_seconds,
    }
    url = f"{pipeline_url.rstrip('/')}/faults"
    if client is not None:
        response = client.put(url, json=body)
    else:
        with httpx.Client(timeout=timeout) as own:
            response = own.put(url, json=body)
    if response.status_code == 404:
        raise FaultsUnavailable(
            f"{pipeline_url} does not take faults: start it with PIPELINE_FAULTS_ENABLED=true ({response.text[:200]})"
        )
    response.raise_for_status()
    settings: dict[str, float] = response.json()
    return settings


def _ai_emitter(config: AiAssistantConfig, spool: Path) -> Emitter:
    return Emitter(
        config.controlplane_url,
        config.ingest_token,
        pipeline=AI_PIPELINE,
        spool_dir=spool,
        emitter_id="loadgen-ai-assistant",
    )


def run_load(
    config: LoadConfig,
    *,
    stop: threading.Event | None = None,
    on_progress: Callable[[LoadStats], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    transport: httpx.BaseTransport | None = None,
    ai_sink: EventSink | None = None,
) -> LoadStats:
    """Run the load described by ``config`` until its duration is over or ``stop`` is set; return the counts.

    ``clock``/``sleep`` pace the run (default: real time, a sleep that ``stop`` cuts short); ``now`` stamps AI
    events; ``transport`` replaces the HTTP transport (tests); ``ai_sink`` receives the AI assistant's events
    instead of an emitter built from ``config.ai_assistant`` (the caller then owns it). ``on_progress`` gets a
    snapshot about every second and once at the end.
    """
    stop = stop if stop is not None else threading.Event()
    pause: Callable[[float], object] = sleep if sleep is not None else stop.wait
    rng = random.Random(config.seed)
    recorder = _Recorder()
    ai = config.ai_assistant
    limits = httpx.Limits(max_connections=config.workers, max_keepalive_connections=config.workers)
    client = httpx.Client(base_url=config.pipeline_url, timeout=config.timeout, transport=transport, limits=limits)
    spool: Path | None = None
    emitter: Emitter | None = None
    try:
        if config.faults is not None:
            set_faults(config.pipeline_url, client=client, **config.faults)
        sink = ai_sink
        if ai is not None and sink is None:
            spool = ai.spool_dir or Path(tempfile.mkdtemp(prefix="loadgen-ai-spool-"))
            sink = emitter = _ai_emitter(ai, spool)
        traffic = PipelineTraffic(client)

        def plan_requests() -> Any:
            for due in due_times(config.rate, config.duration):
                route = config.mix.choose(rng)
                yield due, Planned(route, f"user-{rng.randrange(config.users)}", rng.getrandbits(32))

        def plan_ai() -> Any:
            if ai is None:
                return
            for due in due_times(ai.rate or config.rate, config.duration):
                yield due, plan_run(rng, ai)

        def work(planned: Planned) -> None:
            route, status = planned.route.value, NO_ANSWER
            try:
                sent_route, code = traffic.send(planned)
                route, status = sent_route.value, str(code)
            except httpx.HTTPError:
                pass  # no answer: counted as `error` on the route planned
            finally:
                recorder.done(route, status)

        with ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="loadgen") as pool:

            def dispatch(due: float, item: Planned | AiRun) -> None:
                if isinstance(item, Planned):
                    if recorder.try_dispatch(config.max_backlog, config.workers):
                        future = pool.submit(work, item)
                        future.add_done_callback(lambda done: recorder.abandon() if done.cancelled() else None)
                    return
                assert ai is not None and sink is not None
                events = simulate_run(rng, ai, item, now)
                for event in events:
                    sink.emit(event)
                recorder.ai(events[0].outcome or "")

            def tick(elapsed: float) -> None:
                if on_progress is not None:
                    on_progress(recorder.snapshot(elapsed))

            elapsed = pace(
                merge_schedules(plan_requests(), plan_ai()),
                dispatch,
                duration=config.duration,
                clock=clock,
                sleep=pause,
                stop=stop,
                tick=tick,
            )
            # Stopped: what has not started is abandoned; otherwise every request sent is waited for.
            pool.shutdown(wait=True, cancel_futures=stop.is_set())
        stats = recorder.snapshot(elapsed)
    finally:
        client.close()
        if emitter is not None:
            emitter.close()
        if spool is not None and ai is not None and ai.spool_dir is None:
            shutil.rmtree(spool, ignore_errors=True)
    if on_progress is not None:
        on_progress(stats)
    return stats
