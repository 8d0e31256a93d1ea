"""`controlplane audit list|verify`: query the audit log and verify its hash chain."""

from __future__ import annotations

import argparse
import json
from typing import Any

from controlplane.cli.client import Api, query_params
from controlplane.cli.output import Subcommands, add_command, emit, short_time, stdout, table
from controlplane.settings import Settings

__all__ = ["add_audit_commands"]


def cmd_audit_list(args: argparse.Namespace, settings: Settings) -> None:
    """Query the audit log."""
    params = query_params(
        flag=args.flag, environment=args.env, actor=args.actor, action=args.action, since=args.since, limit=args.limit
    )
    records = Api.from_args(args).call("GET", "/audit", params=params)
    rows = [
        (
            r["id"],
            short_time(r["occurred_at"]),
            r["actor"],
            r["action"],
            r["target"],
            r["environment"],
            r["reason"],
            _change(r["before"], r["after"]),
        )
        for r in records
    ]
    columns = ["id", "when", "actor", "action", "target", "env", "reason", "change"]
    emit(args, records, lambda _: table("audit log (newest first)", columns, rows))


def _change(before: Any, after: Any) -> str:
    """A one-line summary of what changed; `--json` has the full before and after."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return ", ".join(f"{k}: {_brief(before.get(k))} -> {_brief(after.get(k))}" for k in keys)
    return f"{_brief(before)} -> {_brief(after)}"


def _brief(value: Any) -> str:
    """A value as JSON, cut to 40 characters."""
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> None:
    """Verify the audit chain; exit 1 and name the first broken record when it does not verify."""
    result = Api.from_args(args).call("GET", "/audit/verify")
    if args.json:
        print(json.dumps(result, indent=2))
    elif result["ok"]:
        stdout.print(f"audit chain ok: {result['records']} records verified")
        # Keep the head somewhere else: records cut off the end can only be caught by comparing it later.
        stdout.print(f"head: record {result['head_id']} digest {result['head_digest']}")
    else:
        stdout.print(f"audit chain BROKEN at record {result['first_broken_id']}: {result['reason']}")
    if not result["ok"]:
        raise SystemExit(1)


def add_audit_commands(commands: Subcommands) -> None:
    """Add `audit list|verify` to the command line."""
    audit = commands.add_parser("audit", help="audit log").add_subparsers(dest="audit_command", required=True)
    listing = add_command(audit, "list", cmd_audit_list, "query the audit log")
    listing.add_argument("--flag", help="only records about this flag")
    listing.add_argument("--env", help="only records in this environment")
    listing.add_argument("--actor", help="only changes by this actor (a token's name)")
    listing.add_argument("--action", help="only this action, e.g. rollout.advance")
    listing.add_argument("--since", help="ISO 8601 time")
    listing.add_argument("--limit", type=int, default=50, help="at most this many records (default 50)")
    add_command(audit, "verify", cmd_audit_verify, "verify the audit hash chain")
