"""Benchmark: objects/s for a cleanup run against a per-object delete loop, on gcp-storage-emulator.

gcp-storage-emulator runs in this process (in memory, on a free loopback port) with one bucket whose soft delete
is off. Each run starts from the same set: N objects under `refs/`, each with `signed_url_expires_at` two days in
the past, so every one is expired. Two methods delete them:

- `run_cleanup`: `controlplane.cleanup.runner.run_cleanup` over `GcsStorage` with
  `ExpiredSignedUrls(grace=1 h, missing_metadata=KeepObject())`: list page by page, decide, delete in batches of
  up to 100 with generation preconditions.
- `per-object loop`: the obvious script, `for blob in bucket.list_blobs(prefix=...): if expired(blob.metadata):
  blob.delete()`.

Only the delete run is timed (uploads are not). After each run the prefix must be empty, or the run is reported as
broken. Rounds alternate which method goes first. The emulator rewrites its whole store on every write
(/work/shared/reference/gcs.md §3), so keep N modest: these figures say nothing about real GCS latency.

    .venv/bin/python -m bench.cleanup [--objects 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.rollout_race import print_results
from controlplane.cleanup.runner import run_cleanup
from controlplane.cleanup.selection import EXPIRY_METADATA_KEY, ExpiredSignedUrls, KeepObject
from controlplane.cleanup.storage import GcsStorage
from controlplane.clock import system_clock
from tests.gcs_emulator import fresh_bucket, running_emulator, storage_client

BUCKET = "bench-cleanup"
PREFIX = "refs/"
GRACE = timedelta(hours=1)


def bench_client(host: str) -> Any:
    """A real google-cloud-storage client pointed at the emulator, with an empty bucket whose soft delete is off."""
    os.environ["STORAGE_EMULATOR_HOST"] = host
    client = storage_client("bench-project")
    fresh_bucket(client, BUCKET)
    return client


def upload_set(client: Any, count: int) -> None:
    """The same `count` objects every time, each with a signed URL that expired two days ago."""
    expired_at = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    bucket = client.bucket(BUCKET)
    for index in range(count):
        blob = bucket.blob(f"{PREFIX}{index:06d}.png")
        blob.metadata = {EXPIRY_METADATA_KEY: expired_at}
        blob.upload_from_string(b"0123456789", content_type="image/png")


def remaining(client: Any) -> int:
    return sum(1 for _ in client.list_blobs(BUCKET, prefix=PREFIX))


def with_cleanup_run(client: Any) -> int:
    """The runner: list, decide, delete in batches. Returns how many it deleted."""
    policy = ExpiredSignedUrls(grace=GRACE, missing_metadata=KeepObject())
    report = run_cleanup(GcsStorage(client, BUCKET), policy, prefix=PREFIX, clock=system_clock)
    if report.failed or not report.completed:
        print(f"run_cleanup: failed {report.failed}, completed {report.completed}: {report.details[:3]}")
    return report.deleted


def with_per_object_loop(client: Any) -> int:
    """The obvious script: one listing, one DELETE per expired object."""
    now = datetime.now(UTC)

    def expired(metadata: dict[str, str] | None) -> bool:
        raw = (metadata or {}).get(EXPIRY_METADATA_KEY)
        return raw is not None and datetime.fromisoformat(raw) + GRACE < now

    deleted = 0
    for blob in client.bucket(BUCKET).list_blobs(prefix=PREFIX):
        if expired(blob.metadata):
            blob.delete()
            deleted += 1
    return deleted


METHODS: dict[str, Callable[[Any], int]] = {"run_cleanup": with_cleanup_run, "per-object loop": with_per_object_loop}


def measure(client: Any, name: str, count: int, round_number: int) -> dict[str, object]:
    upload_set(client, count)
    if (listed := remaining(client)) != count:
        raise SystemExit(f"set-up: {listed} objects under {PREFIX}, expected {count}")
    started = time.perf_counter()
    deleted = METHODS[name](client)
    seconds = time.perf_counter() - started
    left = remaining(client)
    return {
        "round": round_number,
        "method": name,
        "objects": count,
        "seconds": round(seconds, 3),
        "objects_per_s": round(count / seconds, 1),
        "deleted": deleted,
        "all_gone": "yes" if left == 0 else f"no ({left} left: broken)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=300, help="objects per run (the emulator is O(store) per write)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs both methods, order alternating")
    args = parser.parse_args()
    results: list[dict[str, object]] = []
    with running_emulator() as host:
        client = bench_client(host)
        names = list(METHODS)
        for round_number in range(1, args.rounds + 1):
            order = names if round_number % 2 else names[::-1]
            for name in order:
                results.append(measure(client, name, args.objects, round_number))
    print_results(results)
    summary = {
        name: max(float(str(row["objects_per_s"])) for row in results if row["method"] == name) for name in METHODS
    }
    broken = [row for row in results if row["all_gone"] != "yes" or row["deleted"] != args.objects]
    print(
        "best objects/s: "
        + ", ".join(f"{name} {rate:,.1f}" for name, rate in summary.items())
        + f"; ratio run_cleanup/per-object {summary['run_cleanup'] / summary['per-object loop']:.2f}"
        + ("" if not broken else f"; BROKEN runs: {len(broken)}")
    )


if __name__ == "__main__":
    main()
