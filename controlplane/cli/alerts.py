"""`controlplane alerts list|history`: every rule's alert state now, and the state changes with what was measured."""

from __future__ import annotations

import argparse
from typing import Any

from controlplane.catalog.rules import AlertState
from controlplane.cli.client import Api, query_params
from controlplane.cli.output import Subcommands, add_command, emit, plain, short_time, table
from controlplane.settings import Settings

__all__ = ["add_alert_commands"]


def _value(value: float | None) -> str:
    """A measured value, or `-` when nothing was measured."""
    return "-" if value is None else f"{value:.6g}"


def cmd_alerts_list(args: argparse.Namespace, settings: Settings) -> None:
    """Show every rule's alert state in every environment, firing first."""
    alerts = Api.from_args(args).call("GET", "/alerts", params=query_params(state=args.state))
    # The route filters by state only; the environment and flag are narrowed here, the order kept.
    alerts = [
        alert for alert in alerts if args.env in (None, alert["environment"]) and args.flag in (None, alert["flag"])
    ]
    rows = [
        (
            a["rule"],
            a["environment"],
            a["state"],
            short_time(a["since"]),
            _value(a["value"]),
            a["samples"],
            a["condition"],
            a["severity"],
            a["flag"] or "-",
            a["detail"],
        )
        for a in alerts
    ]
    columns = ["rule", "env", "state", "since", "value", "samples", "condition", "severity", "flag", "detail"]
    emit(args, alerts, lambda _: table("alerts (firing first)", columns, rows))


def _measured(transition: dict[str, Any]) -> str:
    """What a state change measured, against what, over which window."""
    window = f"{transition['window_seconds']:g} s"
    return f"{_value(transition['value'])} {transition['op']} {transition['threshold']} over {window}"


def cmd_alerts_history(args: argparse.Namespace, settings: Settings) -> None:
    """Show alert state changes, newest first, with the measured value, threshold and window."""
    params = query_params(rule=args.rule, environment=args.env, limit=args.limit)
    transitions = Api.from_args(args).call("GET", "/alerts/history", params=params)
    rows = [
        (
            t["id"],
            short_time(t["at"]),
            t["rule"],
            t["environment"],
            f"{t['from_state']} -> {t['to_state']}",
            _measured(t),
            t["samples"],
            t["detail"],
        )
        for t in transitions
    ]
    columns = ["id", "at", "rule", "env", "change", "measured", "samples", "detail"]
    filters = query_params(rule=args.rule, env=args.env)
    title = "alert history (newest first)" + (f" of {plain(filters)}" if filters else "")
    emit(args, transitions, lambda _: table(title, columns, rows))


def add_alert_commands(commands: Subcommands) -> None:
    """Add `alerts list|history` to the command line."""
    alerts = commands.add_parser("alerts", help="alert states and their history").add_subparsers(
        dest="alerts_command", required=True
    )
    listing = add_command(alerts, "list", cmd_alerts_list, "show every rule's alert state, firing first")
    listing.add_argument(
        "--state", choices=[state.value for state in AlertState], help="only alerts in this state (e.g. firing)"
    )
    listing.add_argument("--env", help="only this environment")
    listing.add_argument("--flag", help="only rules guarding this flag")
    history = add_command(
        alerts, "history", cmd_alerts_history, "show alert state changes, newest first, with what was measured"
    )
    history.add_argument("--rule", help="only this rule")
    history.add_argument("--env", help="only this environment")
    history.add_argument("--limit", type=int, default=50, help="at most this many changes (default 50, at most 1000)")
