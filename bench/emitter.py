"""Benchmark: the emitter's overhead per event on the request path, i.e. one `Emitter.emit()` call.

An `Emitter` runs as in a pipeline process: its background thread batches (500 events), encodes and posts to a sink
(`httpx.MockTransport` answering 200 after decoding the JSON, so no network), in the same process and under the
same GIL as the caller. The events are built beforehand (building an `Event` is the caller's cost, not the
emitter's). The caller emits them in chunks of `--chunk` calls, each chunk timed with `perf_counter_ns`; a chunk's
ns per call is one sample, so p50 is the steady cost and p99 shows the chunks where the caller lost the GIL to the
sending thread. After each run the sink must have received every event, or the run is reported as broken.

Reference rows time the same chunks on a bare `deque.append` and on `queue.Queue.put_nowait` (no thread behind),
the floor and the obvious alternative.

A second case paces the calls (`--paced-chunk` calls, then a `--pause-ms` pause, ~90,000 events/s by default) as
a service's requests arrive, so the thread ships between chunks; the first emits as fast as it can, faster than the
thread can ship, so the queue fills and batches spill to the spool (still delivered: the `consistent` column).

    .venv/bin/python -m bench.emitter [--events 200000] [--chunk 1000] [--rounds 5] [--threads 1] [--pause-ms 1]
"""

from __future__ import annotations

import argparse
import gzip
import queue
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec

from bench.rollout_race import percentile, print_results
from controlplane_client.emitter import Emitter, EmitterSettings, Event


class Sink:
    """A control plane that decodes each batch and counts its events."""

    def __init__(self) -> None:
        self.events = 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.content
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        batch = msgspec.json.decode(body)
        with self.lock:
            self.events += len(batch["events"])
        return httpx.Response(200, json={"batch_id": batch["batch_id"], "accepted": len(batch["events"])})


def events(count: int) -> list[Event]:
    """Vision checks and upload requests as the reference-image pipeline emits them."""
    now = datetime.now(UTC)
    made: list[Event] = []
    for index in range(count):
        at = now + timedelta(microseconds=index)
        variant = "on" if index % 10 == 0 else "off"
        if index % 2:
            made.append(Event("vision_analysis", at, "production", variant, outcome="ok", value=0.3))
        else:
            labels = {"route": "upload_reference_image", "status_class": "2xx"}
            made.append(Event("http_request", at, "production", variant, labels=labels, value=0.05))
    return made


def timed_chunks(
    call: Callable[[Event], object], sent: list[Event], chunk: int, threads: int, pause: float = 0.0
) -> list[float]:
    """ns per call of each chunk, over ``threads`` callers splitting the events between them; ``pause`` s after each."""
    samples: list[float] = []
    lock = threading.Lock()

    def caller(part: list[Event]) -> None:
        mine: list[float] = []
        for start in range(0, len(part) - chunk + 1, chunk):
            block = part[start : start + chunk]
            began = time.perf_counter_ns()
            for item in block:
                call(item)
            mine.append((time.perf_counter_ns() - began) / len(block))
            if pause:
                time.sleep(pause)  # pacing, as requests arrive: not part of a timed chunk
        with lock:
            samples.extend(mine)

    parts = [sent[index::threads] for index in range(threads)]
    workers = [threading.Thread(target=caller, args=(part,)) for part in parts]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return samples


def row(case: str, samples: list[float], events_total: int, extra: dict[str, object]) -> dict[str, object]:
    return {
        "case": case,
        "events": events_total,
        "ns/event mean": round(sum(samples) / len(samples), 1),
        "p50 ns": round(percentile(samples, 0.5), 1),
        "p99 ns": round(percentile(samples, 0.99), 1),
        "max ns": round(max(samples), 1),
        **extra,
    }


def run_emitter(sent: list[Event], chunk: int, threads: int, pause: float) -> dict[str, object]:
    """One run through a fresh emitter; checks the sink received every event."""
    sink = Sink()
    with tempfile.TemporaryDirectory() as folder:
        emitter = Emitter(
            "http://control-plane.bench",
            "bench-token",
            pipeline="reference-images",
            spool_dir=Path(folder) / "spool",
            settings=EmitterSettings(max_queue_events=100_000),
            transport=httpx.MockTransport(sink),
        )
        began = time.perf_counter()
        samples = timed_chunks(emitter.emit, sent, chunk, threads, pause)
        emitting = time.perf_counter() - began
        emitter.close(timeout=60)
    stats = emitter.stats()
    emitted = stats.queued
    # Faster than the thread can ship, the queue fills and spills to the spool: delivered all the same.
    consistent = sink.events == emitted == stats.sent and stats.dropped == 0
    pacing = (
        f"paced: {chunk} calls, then {pause * 1000:g} ms pause" if pause else f"as fast as possible, chunks of {chunk}"
    )
    return row(
        f"Emitter.emit, {threads} thread{'s' if threads > 1 else ''}, {pacing}",
        samples,
        emitted,
        {
            "emit calls/s": round(emitted / emitting),
            "spooled": stats.spooled,
            "delivered": sink.events,
            "consistent": consistent,
        },
    )


def run_reference(case: str, call: Callable[[Event], object], sent: list[Event], chunk: int) -> dict[str, object]:
    samples = timed_chunks(call, sent, chunk, 1)
    return row(
        case, samples, len(samples) * chunk, {"emit calls/s": "", "spooled": "", "delivered": "", "consistent": ""}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events emitted per run")
    parser.add_argument("--chunk", type=int, default=1000, help="calls per timed sample")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each case; the best (lowest p50) is kept")
    parser.add_argument("--threads", type=int, default=1, help="threads calling emit at once")
    parser.add_argument("--paced-chunk", type=int, default=100, help="calls per timed sample when paced")
    parser.add_argument("--pause-ms", type=float, default=1.0, help="pause after each paced chunk (0: no paced case)")
    arguments = parser.parse_args()
    sent = events(arguments.events)
    best: dict[str, dict[str, object]] = {}

    def keep(result: dict[str, object]) -> None:
        case = str(result["case"])
        if case not in best or float(str(result["p50 ns"])) < float(str(best[case]["p50 ns"])):
            best[case] = result

    for _ in range(arguments.rounds):
        keep(run_emitter(sent, arguments.chunk, arguments.threads, 0.0))
        if arguments.pause_ms:
            keep(run_emitter(sent, arguments.paced_chunk, arguments.threads, arguments.pause_ms / 1000))
        plain: deque[Event] = deque()
        keep(run_reference("deque.append (floor)", plain.append, sent, arguments.chunk))
        keep(run_reference("queue.Queue.put_nowait", queue.Queue[Event]().put_nowait, sent, arguments.chunk))
    print_results(list(best.values()), events=arguments.events, chunk=arguments.chunk, rounds=arguments.rounds)


if __name__ == "__main__":
    main()
