"""`controlplane rollout start|advance|pause|resume|rollback|status|history`: show, follow or change a flag's
rollout in one environment."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from controlplane.cli.client import Api
from controlplane.cli.output import Subcommands, add_command, emit, short_time, stderr, table
from controlplane.cli.pushes import ChangeSignal
from controlplane.cli.rollout_watch import Pacing, RolloutExit, exit_for, follow_rollout
from controlplane.settings import Settings

__all__ = ["EXIT_CODES", "add_rollout_commands"]

_OPERATIONS = ("start", "advance", "pause", "resume", "rollback")

#: The exit codes of `rollout status`, as `--help` and the README state them.
EXIT_CODES = (
    f"exit codes: {RolloutExit.COMPLETED} completed; {RolloutExit.ROLLED_BACK} rolled back (to off, or one stage back "
    f"while watched); {RolloutExit.PAUSED} paused; {RolloutExit.UNFINISHED} not finished (running: baking or holding "
    f"at its gates, or not started); {RolloutExit.ERROR} error. Without --watch they say the state now; with --watch, "
    "the final state, or the state when --timeout ran out."
)

#: How often `--watch` reads the status when not told otherwise.
WATCH_INTERVAL_SECONDS = 2.0


def _status_table(status: dict[str, Any]) -> Table:
    """A rollout's status, one row per fact."""
    previous = status["previous_environment"]
    before = "- (first in the promotion order)"
    if previous is not None:
        before = f"{previous} ({(status['previous_environment_state'] or 'pending').replace('_', ' ')})"
    rows = [
        ("state", status["state"].replace("_", " ")),
        ("stage", f"{status['stage_index'] + 1}/{status['stage_count']}"),
        ("percentage", f"{status['percentage']:g}%"),
        ("environment enabled", "yes" if status["enabled"] else "no"),
        ("revision", status["revision"]),
        ("stage started", short_time(status["stage_started_at"]) or "-"),
        ("bake remaining", f"{status['bake_remaining_seconds']:.0f}s"),
        ("next auto-advance", short_time(status["next_auto_advance_at"]) or "-"),
        ("progress deadline", _deadline(status)),
        ("gates", f"{status['gates'].replace('_', ' ')}: {status['gates_detail']}"),
        ("previous environment", before),
        ("started by", status["started_by"] or "-"),
        ("forced", status["forced_reason"] or "-"),
    ]
    where = status["environment"] + (f" ({status['segment']})" if status.get("segment") else "")
    for segment in status.get("segments") or []:
        # A plan run per segment: one row per segment, each at its own stage.
        rows.append(
            (
                f"segment {segment['segment']}",
                f"{segment['state'].replace('_', ' ')}, stage {segment['stage_index'] + 1}/{segment['stage_count']}, "
                f"{segment['percentage']:g}% (serving {segment['serving_percentage']:g}%), "
                f"gates {segment['gates'].replace('_', ' ')}",
            )
        )
    if status.get("incident"):
        runs = ", ".join(str(run) for run in status.get("purge_runs") or []) or "-"
        rows.append(("incident", f"{status['incident']}: purge runs {runs} (`controlplane cleanup show ID`)"))
    return table(f"rollout of {status['flag']} in {where}", ["", ""], rows)


def _deadline(status: dict[str, Any]) -> str:
    deadline_at = status.get("progress_deadline_at")
    if not deadline_at:
        return "-"
    if not status.get("progress_deadline_passed"):
        return short_time(deadline_at) or "-"
    told = status.get("progress_deadline_notified_at")
    return f"passed at {short_time(deadline_at)}" + (f" (told at {short_time(told)})" if told else " (not told yet)")


def _base(args: argparse.Namespace) -> str:
    return f"/flags/{args.flag}/environments/{args.env}/rollout"


def _segment_query(args: argparse.Namespace) -> dict[str, str] | None:
    """The status route's query naming ``--segment``, if given."""
    segment = getattr(args, "segment", None)
    return {"segment": segment} if segment else None


def cmd_rollout(args: argparse.Namespace, settings: Settings) -> None:
    """Change a rollout: start, advance, pause, resume or roll back."""
    api = Api.from_args(args)
    base = _base(args)
    revision = args.revision
    if revision is None and args.operation in ("start", "advance", "resume"):
        # Act on the state as it is now; the server still refuses if it moves before this request lands.
        # Pause and rollback send no revision unless given one: stopping a rollout never waits on a stale view.
        revision = api.call("GET", base, params=_segment_query(args))["revision"]
    body: dict[str, Any] = {"expected_revision": revision, "reason": args.reason}
    if args.segment:
        body["segment"] = args.segment
    if getattr(args, "force", False):
        body["force"] = True
    if args.operation == "rollback" and args.policy:
        body["policy"] = args.policy
    if args.operation == "rollback" and args.purge_uploads_since:
        body["purge_uploads_since"] = args.purge_uploads_since
    status = api.call("POST", f"{base}/{args.operation}", json=body)
    emit(args, status, _status_table)


def cmd_rollout_status(args: argparse.Namespace, settings: Settings) -> None:
    """Show a rollout (with --watch, follow it) and exit by its state."""
    api = Api.from_args(args)
    if not args.watch:
        status = api.call("GET", _base(args), params=_segment_query(args))
        emit(args, status, _status_table)
        raise SystemExit(exit_for(status))

    def report(status: dict[str, Any], changes: list[str]) -> None:
        if args.json:
            # One object a line, flushed: a script reads each change as it happens.
            print(json.dumps({"changes": changes, "status": status}, sort_keys=True), flush=True)
        else:
            # Plain print: one line per change however long (a CI log greps it), and no markup read in details.
            stamp = datetime.now(UTC).strftime("%H:%M:%S")
            print(f"{stamp} {status['flag']} in {status['environment']}: {'; '.join(changes)}", flush=True)

    # Pushed, then read: the operator's page's live stream of this rollout wakes the watch on any change it shows (a
    # stage, a pause, a gate, a guard), and the status route is read then. The evaluation stream would not do: it
    # needs an `evaluate` token and announces only configuration revisions, which a pause or a gate does not make.
    # The interval stays as the fallback (no page on the server, a buffering proxy, a dropped stream).
    pacing: Pacing = args.pacing
    signal = None
    if pacing.follows_pushes:
        signal = ChangeSignal(api.url, api.headers, f"/ui/live/flags/{args.flag}/environments/{args.env}").start()
        pacing = replace(pacing, wait=signal.wait)
    try:
        end = follow_rollout(
            lambda: api.call("GET", _base(args), params=_segment_query(args)),
            timeout=args.timeout,
            interval=args.interval,
            pacing=pacing,
            report=report,
            warn=lambda message: stderr.print(message),
        )
    finally:
        if signal is not None:
            signal.close()
    if args.json:
        print(json.dumps({"exit": int(end.code), "reason": end.reason}), flush=True)
    else:
        print(f"{end.reason} (exit {end.code})", flush=True)
    raise SystemExit(end.code)


def cmd_rollout_history(args: argparse.Namespace, settings: Settings) -> None:
    """Show every rollout of a flag in an environment, newest first."""
    rollouts = Api.from_args(args).call("GET", f"/flags/{args.flag}/environments/{args.env}/rollouts")
    # A plan run per segment: a column saying which segment each row is a rollout of.
    segmented = any(r.get("segment") for r in rollouts)
    rows: list[tuple[Any, ...]] = [
        (
            r["id"],
            *((r.get("segment") or "-",) if segmented else ()),
            r["state"].replace("_", " "),
            r["stage_index"] + 1,
            f"{r['percentage']:g}%",
            r["started_by"] or "-",
            short_time(r["created_at"]),
            short_time(r["updated_at"]),
            short_time(r["ended_at"]) or "-",
            r["forced_reason"] or "-",
        )
        for r in rollouts
    ]
    # The stage it stands at (or stood at when it ended) and what it serves: 0% once rolled back to off.
    columns = ["id", *(["segment"] if segmented else []), "state", "stage", "serving", "started by", "created"]
    columns += ["updated", "ended", "forced"]
    emit(args, rollouts, lambda _: table(f"rollouts of {args.flag} in {args.env} (newest first)", columns, rows))


def _seconds(text: str) -> float:
    """A duration option: plain seconds or d/h/m/s units (90, 1.5, 30s, 10m, 2h), longer than zero."""
    from controlplane.definitions.loader import parse_duration

    try:
        seconds = float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text).total_seconds()
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"`{text}` is not a duration: write seconds or units, e.g. 90, 30s, 10m, 2h"
        ) from error
    if seconds <= 0:
        raise argparse.ArgumentTypeError("a duration must be longer than zero")
    return seconds


def _add_target(sub: argparse.ArgumentParser, *, segment: bool = True) -> None:
    sub.add_argument("flag", help="the flag's key")
    sub.add_argument("--env", required=True, help="the environment of the rollout")
    if segment:
        sub.add_argument(
            "--segment",
            metavar="ATTRIBUTE=VALUE",
            help="the segment of a plan run per segment, e.g. queue=support (required there for operations; status "
            "without it lists every segment)",
        )


def add_rollout_commands(commands: Subcommands, pacing: Pacing) -> None:
    """Add `rollout ...` to the command line; `status --watch` keeps time and waits by `pacing`."""
    rollout = commands.add_parser("rollout", help="rollouts").add_subparsers(dest="operation", required=True)
    for operation in _OPERATIONS:
        sub = add_command(rollout, operation, cmd_rollout, f"{operation} the rollout of a flag in an environment")
        _add_target(sub)
        sub.add_argument("--reason", help="why, for the audit log (required for advance, pause and rollback)")
        sub.add_argument("--revision", type=int, help="the revision you act on (default: the current one)")
        if operation in ("start", "advance"):
            sub.add_argument(
                "--force",
                action="store_true",
                help="go past the promotion order or holding guards (needs --reason; audited)",
            )
        if operation == "rollback":
            sub.add_argument(
                "--policy",
                choices=["off", "previous_stage"],
                help="where to: off (serve the off variant) or previous_stage (one stage back, paused); default: "
                "the plan's",
            )
            sub.add_argument(
                "--purge-uploads-since",
                metavar="TIME",
                help="also delete what the flag's pipeline uploaded from TIME (ISO 8601 with offset) until now, once "
                "the rollback is done; audited with it as one incident",
            )
    status = add_command(
        rollout, "status", cmd_rollout_status, "show (or --watch) the rollout of a flag and exit by its state"
    )
    status.epilog = EXIT_CODES
    status.set_defaults(pacing=pacing)
    _add_target(status)
    status.add_argument(
        "--watch",
        action="store_true",
        help="follow the rollout, a line per change (with --json, a JSON object per line, the last one the exit code "
        "and why), until it completes or rolls back (or --timeout)",
    )
    status.add_argument(
        "--timeout",
        type=_seconds,
        metavar="DURATION",
        help="with --watch: stop after this long (90, 30s, 10m, 2h) and exit by the state then (default: no limit)",
    )
    status.add_argument(
        "--interval",
        type=_seconds,
        default=WATCH_INTERVAL_SECONDS,
        metavar="DURATION",
        help=f"with --watch: seconds between readings (default {WATCH_INTERVAL_SECONDS:g})",
    )
    history = add_command(rollout, "history", cmd_rollout_history, "list every rollout of a flag in an environment")
    _add_target(history, segment=False)
