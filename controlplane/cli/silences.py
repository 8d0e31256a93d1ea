"""`controlplane silences add|list|expire`: silence notifications of matching alerts for a while."""

from __future__ import annotations

import argparse
from typing import Any

from controlplane.cli.client import Api, CommandError, query_params
from controlplane.cli.output import Subcommands, add_command, emit, short_time, table
from controlplane.settings import Settings

__all__ = ["add_silence_commands"]


def cmd_silences_add(args: argparse.Namespace, settings: Settings) -> None:
    """Silence notifications of matching alerts for a while (alert states are not changed)."""
    matchers = query_params(
        rule=args.rule, environment=args.environment, pipeline=args.pipeline, flag=args.flag, severity=args.severity
    )
    if not matchers:
        raise CommandError("name what to silence: one or more of --rule, --environment, --pipeline, --flag, --severity")
    body = {"matchers": matchers, "duration_seconds": _duration_seconds(args.duration), "comment": args.comment}
    silence = Api.from_args(args).call("POST", "/silences", json=body)
    emit(args, silence, lambda s: f"silence {s['id']} ({s['state']}) until {s['ends_at']}: {_matchers(s)}")


def _duration_seconds(text: str) -> float:
    """`--duration` in seconds: plain seconds or d/h/m/s units, longer than zero."""
    from controlplane.definitions.loader import parse_duration

    try:
        seconds = parse_duration(int(text) if text.isdigit() else text).total_seconds()
    except ValueError as error:
        raise CommandError(f"--duration `{text}`: write seconds or d/h/m/s units, e.g. 30m, 2h, 1d") from error
    if seconds <= 0:
        raise CommandError("--duration must be longer than zero")
    return seconds


def _matchers(silence: dict[str, Any]) -> str:
    """A silence's matchers as `name=value` words."""
    return " ".join(f"{name}={value}" for name, value in sorted(silence["matchers"].items()))


def cmd_silences_list(args: argparse.Namespace, settings: Settings) -> None:
    """List silences not yet over (with --all, expired ones too)."""
    silences = Api.from_args(args).call("GET", "/silences", params=query_params(all="true" if args.all else None))
    rows = [
        (
            s["id"],
            s["state"],
            _matchers(s),
            short_time(s["starts_at"]),
            short_time(s["ends_at"]),
            s["created_by"],
            s["comment"],
        )
        for s in silences
    ]
    columns = ["id", "state", "matchers", "starts", "ends", "by", "comment"]
    emit(args, silences, lambda _: table("silences (newest first)", columns, rows))


def cmd_silences_expire(args: argparse.Namespace, settings: Settings) -> None:
    """End a silence now."""
    silence = Api.from_args(args).call("DELETE", f"/silences/{args.id}")
    emit(args, silence, lambda s: f"silence {s['id']} expired at {s['ends_at']}: {_matchers(s)}")


def add_silence_commands(commands: Subcommands) -> None:
    """Add `silences add|list|expire` to the command line."""
    silences = commands.add_parser("silences", help="silences").add_subparsers(dest="silences_command", required=True)
    add = add_command(silences, "add", cmd_silences_add, "silence notifications of matching alerts for a while")
    add.add_argument("--rule", help="silence alerts of this rule")
    add.add_argument("--environment", "--env", dest="environment", help="silence alerts in this environment")
    add.add_argument("--pipeline", help="silence alerts of this pipeline")
    add.add_argument("--flag", help="silence alerts of rules guarding this flag")
    add.add_argument("--severity", choices=["page", "ticket", "info"], help="silence alerts of this severity")
    add.add_argument("--duration", required=True, help="how long: seconds or d/h/m/s units (30m, 2h, 1d)")
    add.add_argument("--comment", required=True, help="why")
    silence_list = add_command(silences, "list", cmd_silences_list, "list silences not yet over")
    silence_list.add_argument("--all", action="store_true", help="include expired silences")
    expire = add_command(silences, "expire", cmd_silences_expire, "end a silence now")
    expire.add_argument("id", type=int, help="the silence's id (see `silences list`)")
