"""Benchmark: machine instructions ingest's CPU work takes per batch of 1,000 events, counted by valgrind.

Events/s and milliseconds move with whatever else the machine runs (on a shared 2-vCPU machine the same code has
measured 1.5x apart within an hour); the number of instructions a batch takes does not. This counts, for
`bench.ingest`'s own payload (the same 1,000 events, 200 KB of JSON), the steps of `POST /api/v1/events` that run
in the server before SQL:

- `decode`: `decode_batch`, JSON into the wire types (msgspec);
- `aggregate`: `aggregate`, every event validated against the catalog and added into its window's series;
- `digest`: `batch_digest`, the batch's canonical digest (a retry re-serialised counts once).

Each step runs in a child process under `valgrind --tool=callgrind` twice, 10 and 40 times; the difference of the
two totals over 30 is the step's instructions per batch (start-up and imports cancel out). The catalog is the
reference-images definition's, loaded once here and handed to the children, so they touch no database. Compare
two checkouts by running this in each: the figures are the same from run to run, whatever the load. (The SHA-256
of `digest` counts more instructions under valgrind than it runs natively: valgrind hides the processor's SHA
instructions, so OpenSSL takes its portable path.)

    .venv/bin/python -m bench.ingest_instructions [--steps decode,aggregate,digest]
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from controlplane.settings import Settings
from controlplane.telemetry.aggregation import aggregate, decode_batch
from controlplane.telemetry.digest import batch_digest

# Only what a counted child needs is imported at the top: under valgrind every import costs seconds.

STEPS = ("decode", "aggregate", "digest")
FEW, MANY = 10, 40
COLLECTED = re.compile(r"Collected\s*:\s*([\d,]+)")


def child(step: str, rounds: int, inputs: Path) -> None:
    """Run ``step`` ``rounds`` times on the payload and catalog in ``inputs`` (in the process valgrind counts)."""
    payload, catalog = pickle.loads(inputs.read_bytes())  # noqa: S301 - written by this script, just now
    settings = Settings()
    batch = decode_batch(payload)
    now = datetime.now(UTC)

    def run_aggregate() -> object:
        return aggregate(
            batch,
            catalog,
            environments=settings.environments,
            now=now,
            max_age=settings.event_max_age,
            max_future=settings.event_max_future,
            window=settings.telemetry_window,
            tail_events={"vision_analysis"},
        )

    steps: dict[str, Callable[[], object]] = {
        "decode": lambda: decode_batch(payload),
        "aggregate": run_aggregate,
        "digest": lambda: batch_digest(batch),
    }
    work = steps[step]
    for _ in range(rounds):
        work()


def instructions(valgrind: str, step: str, rounds: int, inputs: Path) -> int:
    """Instructions a child running ``step`` ``rounds`` times executed in all, start-up included."""
    done = subprocess.run(  # noqa: S603 - valgrind and this interpreter, our arguments
        [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.ingest_instructions",
            "--child",
            step,
            str(rounds),
            str(inputs),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
        env=os.environ | {"PYTHONHASHSEED": "0"},  # the same string hashes, so the same dictionary probes, each run
    )
    found = COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"valgrind printed no instruction count: {done.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--child", nargs=3, metavar=("STEP", "ROUNDS", "INPUTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, rounds, inputs = args.child
        child(step, int(rounds), Path(inputs))
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    from sqlalchemy.orm import sessionmaker

    from bench.ingest import body, prepare
    from controlplane.catalog.service import load_catalog
    from controlplane.db import create_db_engine, session_scope

    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/catalog.db"
        prepare(url)
        engine = create_db_engine(url)
        with session_scope(sessionmaker(engine)) as session:
            catalog = load_catalog(session)
        engine.dispose()
        inputs = Path(folder) / "inputs.pickle"
        payload = body("instructions-batch-0001")
        events = len(decode_batch(payload).events)
        inputs.write_bytes(pickle.dumps((payload, catalog)))
        print("step | million instructions per batch | instructions per event")
        total = 0.0
        for step in args.steps.split(","):
            per_batch = (instructions(valgrind, step, MANY, inputs) - instructions(valgrind, step, FEW, inputs)) / (
                MANY - FEW
            )
            total += per_batch
            print(f"{step} | {per_batch / 1e6:.2f} | {per_batch / events:,.0f}", flush=True)
        print(f"all | {total / 1e6:.2f} | {total / events:,.0f}")


if __name__ == "__main__":
    main()
