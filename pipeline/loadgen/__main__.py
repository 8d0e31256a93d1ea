"""`python -m pipeline.loadgen`: drive a running pipeline at a fixed rate and print what happened."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from pipeline.loadgen.ai_assistant import BASELINE_FALLBACK_RATE, AiAssistantConfig
from pipeline.loadgen.runner import FaultsUnavailable, LoadConfig, LoadStats, run_load
from pipeline.loadgen.traffic import Mix

__all__ = ["config_from_arguments", "main", "summary_table"]


def _names(text: str) -> tuple[str, ...]:
    return tuple(name for name in (part.strip() for part in text.split(",")) if name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline-url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="pipeline requests per second")
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--users", type=int, default=10, help="users user-0..N-1 (the flag's targeting keys)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mix", type=Mix.parse, default=Mix(), help="weights, e.g. upload=4,preflight=3,generate=2")
    parser.add_argument("--workers", type=int, default=16, help="threads sending requests")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    faults = parser.add_argument_group("faults (PUT /faults at the start; the pipeline needs PIPELINE_FAULTS_ENABLED)")
    faults.add_argument("--vision-error-rate", type=float)
    faults.add_argument("--upload-failure-rate", type=float)
    faults.add_argument("--vision-latency", type=float, help="seconds added to each Vision call")
    ai = parser.add_argument_group("the AI assistant (events straight to the control plane)")
    ai.add_argument("--ai-assistant", action="store_true", help="also simulate the AI assistant's runs")
    ai.add_argument("--controlplane-url", default=os.environ.get("CONTROLPLANE_URL"))
    ai.add_argument("--ingest-token", default=os.environ.get("AI_ASSISTANT_INGEST_TOKEN"), help="an ingest token")
    ai.add_argument("--tenants", type=_names, default=("acme", "globex", "initech"))
    ai.add_argument("--queues", type=_names, default=("support", "billing", "sales"))
    ai.add_argument("--ai-rate", type=float, help="assistant runs per second (default: --rate)")
    ai.add_argument("--ai-environment", default="production")
    ai.add_argument("--ai-streaming-share", type=float, default=0.5, help="share of agents on streaming `on`")
    ai.add_argument("--ai-fallback-rate", type=float, default=BASELINE_FALLBACK_RATE)
    ai.add_argument("--ai-latency", type=float, default=0.0, help="seconds added to each run (fault)")
    ai.add_argument("--ai-fault-variant", choices=("on", "off"), help="inject the AI faults into this cohort only")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def config_from_arguments(args: argparse.Namespace) -> LoadConfig:
    """The run the arguments describe; ``ValueError`` for a combination that cannot run."""
    given = {
        "vision_error_rate": args.vision_error_rate,
        "upload_failure_rate": args.upload_failure_rate,
        "vision_latency_seconds": args.vision_latency,
    }
    injected = any(value is not None for value in given.values())
    faults = {name: value or 0.0 for name, value in given.items()} if injected else None
    ai = None
    if args.ai_assistant:
        if not args.controlplane_url or not args.ingest_token:
            raise ValueError("--ai-assistant needs --controlplane-url and --ingest-token")
        ai = AiAssistantConfig(
            controlplane_url=args.controlplane_url,
            ingest_token=args.ingest_token,
            tenants=args.tenants,
            queues=args.queues,
            rate=args.ai_rate,
            environment=args.ai_environment,
            streaming_share=args.ai_streaming_share,
            fallback_rate=args.ai_fallback_rate,
            extra_latency_seconds=args.ai_latency,
            fault_variant=args.ai_fault_variant,
        )
    return LoadConfig(
        pipeline_url=args.pipeline_url,
        rate=args.rate,
        duration=args.duration,
        users=args.users,
        seed=args.seed,
        mix=args.mix,
        workers=args.workers,
        timeout=args.timeout,
        faults=faults,
        ai_assistant=ai,
    )


def summary_table(stats: LoadStats) -> Table:
    """Requests by route and status, then the totals."""
    table = Table(
        title=f"{stats.sent} requests in {stats.elapsed:.1f} s ({stats.achieved_rate:.1f}/s), "
        f"{stats.dropped} dropped, {stats.errors} without answer"
    )
    table.add_column("Route")
    table.add_column("Status")
    table.add_column("Count", justify="right")
    for route, statuses in sorted(stats.by_status.items()):
        for status, count in sorted(statuses.items()):
            table.add_row(route, status, str(count))
    for outcome, count in sorted(stats.ai_by_outcome.items()):
        table.add_row("ai_run (simulated)", outcome, str(count))
    return table


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> int:
    """Run the load; 0 when it ran (whatever the pipeline answered), 2 on bad arguments or unusable faults."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_arguments(args)
    except ValueError as error:
        parser.error(str(error))
    console = console or Console()
    stop = threading.Event()
    try:
        stats = run_load(config, stop=stop)
    except FaultsUnavailable as error:
        console.print(f"[red]{error}[/red]")
        return 2
    except KeyboardInterrupt:
        stop.set()
        return 130
    if args.json:
        sys.stdout.write(json.dumps(stats.as_dict(), indent=2) + "\n")
    else:
        console.print(summary_table(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
