"""`controlplane cleanup ...`: list policies and runs, run a policy, purge a window, following a run to its end.

A run executes in the control plane, not in the CLI: the CLI asks for it, then polls it, drawing a progress bar
in a terminal and a summary at the end. Interrupting the CLI leaves the run going; `cleanup show ID` follows it.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from controlplane.cli.client import Api, CommandError
from controlplane.cli.output import Subcommands, add_command, emit, short_time, stderr, table
from controlplane.settings import Settings

__all__ = ["add_cleanup_commands"]

_FINISHED = ("succeeded", "failed")
#: How often a followed run is read again.
POLL_SECONDS = 0.5


def _size(count: int) -> str:
    """A byte count in B, KB, MB or GB (powers of 1000)."""
    amount = float(count)
    for unit in ("B", "KB", "MB"):
        if amount < 1000:
            return f"{count} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} GB"


def _counts(run: dict[str, Any]) -> str:
    """How far a run got, in one line beside its progress bar."""
    skipped = sum(run["skipped"].values())
    verb = "would delete" if run["dry_run"] else "deleted"
    done = run["matched"] if run["dry_run"] else run["deleted"]
    return (
        f"pages {run['pages']} · scanned {run['scanned']} · matched {run['matched']} · {verb} {done} · "
        f"skipped {skipped} · failed {run['failed']}"
    )


def _summary(run: dict[str, Any]) -> Table:
    """A run's outcome, one row per fact."""
    what = run["policy"] or f"purge of {run['bucket']}"
    title = f"cleanup run {run['id']} ({what}{', dry run' if run['dry_run'] else ''}): {run['status']}"
    rows: list[tuple[str, Any]] = [
        ("bucket", f"{run['bucket']}/{run['prefix']}"),
        ("selection", run["selection"]),
        ("scanned", run["scanned"]),
        ("matched", f"{run['matched']} ({_size(run['matched_bytes'])})"),
    ]
    if run["dry_run"]:
        rows.append(("would delete", f"{run['matched']} ({_size(run['matched_bytes'])}); nothing was deleted"))
    else:
        rows += [
            ("deleted", f"{run['deleted']} ({_size(run['bytes_freed'])} freed)"),
            ("already gone", run["already_gone"]),
        ]
    rows += [(f"skipped: {reason}", count) for reason, count in sorted(run["skipped"].items())]
    rows += [(f"matched: {reason}", count) for reason, count in sorted(run["matched_by_reason"].items())]
    rows += [
        ("failed", run["failed"]),
        ("duration", f"{run['duration_seconds']:.1f} s over {run['pages']} pages, {run['attempts']} attempt(s)"),
    ]
    if run["error"]:
        rows.append(("error", run["error"]))
    rows += [("detail", line) for line in run["details"][:10]]
    return table(title, ["", ""], rows)


def _follow(api: Api, run: dict[str, Any], *, show_progress: bool, poll: float = POLL_SECONDS) -> dict[str, Any]:
    """Poll a run until it finishes; a progress line in a terminal meanwhile."""
    path = f"/cleanup/runs/{run['id']}"
    if not show_progress:
        while run["status"] not in _FINISHED:
            time.sleep(poll)
            run = api.call("GET", path)
        return run
    # The listing's length is unknown until its last page: the bar pulses, the counts say how far it got.
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[counts]}"),
    )
    with Progress(*columns, TimeElapsedColumn(), console=stderr, transient=True) as progress:
        task = progress.add_task(f"run {run['id']} {run['status']}", total=None, counts=_counts(run))
        while run["status"] not in _FINISHED:
            time.sleep(poll)
            run = api.call("GET", path)
            progress.update(task, description=f"run {run['id']} {run['status']}", counts=_counts(run))
    return run


def _finish(args: argparse.Namespace, api: Api, run: dict[str, Any]) -> None:
    """Follow a run to its end (unless --no-wait) and show it; a failed run is a CommandError."""
    if args.no_wait:
        emit(
            args,
            run,
            lambda data: f"cleanup run {data['id']} {data['status']}: `controlplane cleanup show {data['id']}`",
        )
        return
    try:
        run = _follow(api, run, show_progress=stderr.is_terminal and not args.json)
    except KeyboardInterrupt:
        stderr.print(f"\nstopped following; run {run['id']} goes on: `controlplane cleanup show {run['id']} --wait`")
        raise SystemExit(130) from None
    emit(args, run, _summary)
    if run["status"] == "failed":
        raise CommandError(f"cleanup run {run['id']} failed: {run['error'] or 'see its details'}")


def cmd_cleanup_run(args: argparse.Namespace, settings: Settings) -> None:
    """Run a policy now and follow it."""
    api = Api.from_args(args)
    run = api.call(
        "POST", f"/cleanup/policies/{args.policy}/runs", json={"dry_run": args.dry_run, "reason": args.reason or ""}
    )
    _finish(args, api, run)


def cmd_cleanup_purge(args: argparse.Namespace, settings: Settings) -> None:
    """Purge what was uploaded in a window and follow it."""
    api = Api.from_args(args)
    body = {
        "bucket": args.bucket,
        "prefix": args.prefix,
        "from": args.start,
        "to": args.end,
        "reason": args.reason,
        "dry_run": args.dry_run,
    }
    if args.incident:
        body["incident"] = args.incident
    _finish(args, api, api.call("POST", "/cleanup/purges", json=body))


def cmd_cleanup_show(args: argparse.Namespace, settings: Settings) -> None:
    """Show one run (following it to its end with --wait)."""
    api = Api.from_args(args)
    run = api.call("GET", f"/cleanup/runs/{args.id}")
    if args.wait:
        args.no_wait = False
        _finish(args, api, run)
        return
    emit(args, run, _summary)


def cmd_cleanup_runs(args: argparse.Namespace, settings: Settings) -> None:
    """List runs, newest first."""
    params: dict[str, Any] = {"limit": args.limit}
    if args.policy:
        params["policy"] = args.policy
    runs = Api.from_args(args).call("GET", "/cleanup/runs", params=params)
    rows = [
        (
            r["id"],
            r["policy"] or "(purge)",
            r["kind"],
            r["status"] + (" (dry run)" if r["dry_run"] else ""),
            short_time(r["started_at"] or r["created_at"]),
            r["scanned"],
            r["deleted"],
            sum(r["skipped"].values()),
            r["failed"],
            r["requested_by"],
        )
        for r in runs
    ]
    columns = ["id", "policy", "kind", "status", "started", "scanned", "deleted", "skipped", "failed", "by"]
    emit(args, runs, lambda _: table("cleanup runs (newest first)", columns, rows))


def cmd_cleanup_policies(args: argparse.Namespace, settings: Settings) -> None:
    """List policies with their schedule and health."""
    policies = Api.from_args(args).call("GET", "/cleanup/policies")
    rows = [
        (
            p["name"],
            f"{p['bucket']}/{p['prefix']}",
            p["schedule"] or "(by hand)",
            short_time(p["next_run_at"]),
            short_time(p["last_success_at"]) or "never",
            (p["last_run"] or {}).get("status", ""),
            "OVERDUE" if p["overdue"] else "",
        )
        for p in policies
    ]
    columns = ["policy", "bucket/prefix", "schedule", "next run", "last success", "last run", ""]
    emit(args, policies, lambda _: table("cleanup policies", columns, rows))


def add_cleanup_commands(commands: Subcommands) -> None:
    """Add `cleanup ...` to the command line."""
    cleanup = commands.add_parser("cleanup", help="bucket cleanup").add_subparsers(
        dest="cleanup_command", required=True
    )
    add_command(cleanup, "policies", cmd_cleanup_policies, "list cleanup policies, their schedule and health")
    run = add_command(cleanup, "run", cmd_cleanup_run, "run a cleanup policy now and follow it")
    run.add_argument("policy", help="the policy's name (see `cleanup policies`)")
    run.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    run.add_argument("--reason", help="why (kept in the audit log)")
    run.add_argument("--no-wait", action="store_true", help="start it and return")
    purge = add_command(cleanup, "purge", cmd_cleanup_purge, "delete what was uploaded to a bucket in [--from, --to)")
    purge.add_argument("--bucket", required=True, help="the bucket to delete from")
    purge.add_argument("--from", dest="start", required=True, help="ISO 8601 time with offset, inclusive")
    purge.add_argument("--to", dest="end", required=True, help="ISO 8601 time with offset, exclusive")
    purge.add_argument("--reason", required=True, help="why (the purge is an audit record)")
    purge.add_argument("--prefix", default="", help="only objects under this prefix")
    purge.add_argument(
        "--incident", help="the rollback incident this purge finishes (as a `purge-not-queued` answer gives it)"
    )
    purge.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    purge.add_argument("--no-wait", action="store_true", help="start it and return")
    show = add_command(cleanup, "show", cmd_cleanup_show, "show one cleanup run")
    show.add_argument("id", type=int, help="the run's id (see `cleanup runs`)")
    show.add_argument("--wait", action="store_true", help="follow it until it finishes")
    runs = add_command(cleanup, "runs", cmd_cleanup_runs, "list cleanup runs, newest first")
    runs.add_argument("--policy", help="only runs of this policy")
    runs.add_argument("--limit", type=int, default=20, help="at most this many runs (default 20)")
