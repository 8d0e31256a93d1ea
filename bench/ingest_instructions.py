"""Benchmark: machine instructions ingest's CPU work takes per batch of 1,000 events, counted by valgrind.

Events/s and milliseconds move with whatever else the machine runs (on a shared 2-vCPU machine the same code has
measured 1.5x apart within an hour); the number of instructions a batch takes does not. This counts, for
`bench.ingest`'s own payload (the same 1,000 events, 200 KB of JSON), the steps of `POST /api/v1/events` that run
in the server before SQL:

- `decode`: `decode_batch`, JSON into the wire types (msgspec);
- `aggregate`: `aggregate`, every event validated against the catalog and added into its window's series;
- `digest`: `batch_digest`, the batch's canonical digest (a retry re-serialised counts once).

Each step runs in a child process under `valgrind --tool=callgrind` twice, 10 and 40 times; the difference of the
two totals over 30 is the step's instructions per batch (start-up and imports cancel out). The child freezes its
heap first, as the server does. The catalog is the reference-images definition's, loaded once here and handed to
the children, so they touch no database. `--source` counts another checkout's code on this checkout's payload:
the figures are the same from run to run, whatever the load, so two checkouts compare on a busy machine. (The
SHA-256 of `digest` counts more instructions under valgrind than it runs natively: valgrind hides the processor's
SHA instructions, so OpenSSL takes its portable path.)

    .venv/bin/python -m bench.ingest_instructions [--steps decode,aggregate,digest] [--source ../other-checkout]
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
from pathlib import Path

from controlplane.telemetry.aggregation import decode_batch

STEPS = ("decode", "aggregate", "digest")
FEW, MANY = 10, 40
COLLECTED = re.compile(r"Collected\s*:\s*([\d,]+)")

#: The counted child: imports only ingest's modules from the checkout on its path (every import costs seconds under
#: valgrind), freezes the heap as `create_app(freeze_heap=True)` does in the server (the collector then never walks
#: what start-up made, whatever was imported), and runs one step. argv: step, rounds, inputs file.
CHILD = """
import gc, pickle, sys
from datetime import UTC, datetime
from controlplane.settings import Settings
from controlplane.telemetry.aggregation import aggregate, decode_batch
from controlplane.telemetry.digest import batch_digest

step, rounds, inputs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(inputs, "rb") as file:
    payload, catalog = pickle.load(file)
settings = Settings()
batch = decode_batch(payload)
now = datetime.now(UTC)
steps = {
    "decode": lambda: decode_batch(payload),
    "aggregate": lambda: aggregate(
        batch,
        catalog,
        environments=settings.environments,
        now=now,
        max_age=settings.event_max_age,
        max_future=settings.event_max_future,
        window=settings.telemetry_window,
        tail_events={"vision_analysis": ()},
    ),
    "digest": lambda: batch_digest(batch),
}
work = steps[step]
gc.collect()
gc.freeze()
for _ in range(rounds):
    work()
"""


def instructions(valgrind: str, source: Path, step: str, rounds: int, inputs: Path) -> int:
    """Instructions a child running ``step`` ``rounds`` times, with the code of ``source``, executed in all."""
    done = subprocess.run(  # noqa: S603 - valgrind and this interpreter, our arguments
        [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            CHILD,
            step,
            str(rounds),
            str(inputs),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=source,
        # The checkout's code first; the same string hashes, so the same dictionary probes, every run.
        env=os.environ | {"PYTHONPATH": str(source), "PYTHONHASHSEED": "0"},
    )
    found = COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"valgrind printed no instruction count: {done.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the checkout whose code is counted (default: this one); the payload and catalog are this one's",
    )
    args = parser.parse_args()
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    from bench.ingest import body, reference_catalog

    source = args.source.resolve()
    print(f"code of {source}")
    catalog = reference_catalog()
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "inputs.pickle"
        payload = body("instructions-batch-0001")
        events = len(decode_batch(payload).events)
        inputs.write_bytes(pickle.dumps((payload, catalog)))
        print("step | million instructions per batch | instructions per event")
        total = 0.0
        for step in args.steps.split(","):
            per_batch = (
                instructions(valgrind, source, step, MANY, inputs) - instructions(valgrind, source, step, FEW, inputs)
            ) / (MANY - FEW)
            total += per_batch
            print(f"{step} | {per_batch / 1e6:.2f} | {per_batch / events:,.0f}", flush=True)
        print(f"all | {total / 1e6:.2f} | {total / events:,.0f}")


if __name__ == "__main__":
    main()
