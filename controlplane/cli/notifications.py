"""`controlplane notifications list`: the notification log."""

from __future__ import annotations

import argparse

from controlplane.cli.client import Api, query_params
from controlplane.cli.output import Subcommands, add_command, emit, short_time, table
from controlplane.settings import Settings

__all__ = ["add_notification_commands"]


def cmd_notifications_list(args: argparse.Namespace, settings: Settings) -> None:
    """Show the notification log: what was sent to whom, what is retrying, failed or silenced."""
    params = query_params(status=args.status, receiver=args.receiver, rule=args.rule, limit=args.limit)
    notifications = Api.from_args(args).call("GET", "/notifications", params=params)
    rows = [
        (
            n["id"],
            short_time(n["created_at"]),
            n["receiver"],
            n["kind"],
            n["severity"],
            n["status"],
            n["attempts"],
            ", ".join(f"{a['rule']}@{a['environment']}" for a in n["payload"].get("alerts", [])),
            n["last_error"],
        )
        for n in notifications
    ]
    columns = ["id", "created", "receiver", "kind", "severity", "status", "attempts", "alerts", "last error"]
    emit(args, notifications, lambda _: table("notifications (newest first)", columns, rows))


def add_notification_commands(commands: Subcommands) -> None:
    """Add `notifications list` to the command line."""
    notifications = commands.add_parser("notifications", help="notification log").add_subparsers(
        dest="notifications_command", required=True
    )
    listing = add_command(notifications, "list", cmd_notifications_list, "show the notification log")
    listing.add_argument(
        "--status",
        choices=["pending", "sending", "sent", "failed", "silenced"],
        help="only notifications in this status",
    )
    listing.add_argument("--receiver", help="only notifications to this receiver")
    listing.add_argument("--rule", help="only notifications about this rule")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
