"""`controlplane flags list|show`: flags and what each environment serves."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from controlplane.cli.client import Api
from controlplane.cli.output import Subcommands, add_command, emit, table
from controlplane.settings import Settings

__all__ = ["add_flag_commands"]


def _serving(state: dict[str, Any]) -> str:
    """What one environment of a flag serves: off, on, or its rollout's percentage."""
    if not state["enabled"]:
        return "off"
    rollout = state.get("rollout")
    return f"{rollout['percentage']:g}%" if rollout else "on"


def cmd_flags_list(args: argparse.Namespace, settings: Settings) -> None:
    """List flags and whether each environment is on."""
    flags = Api.from_args(args).call("GET", "/flags")
    rows = []
    for flag in flags:
        states = " ".join(f"{e['environment']}:{_serving(e)}" for e in flag["environments"])
        rows.append((flag["key"], flag["type"], flag["kind"], flag["revision"], states))
    emit(args, flags, lambda _: table("flags", ["key", "type", "kind", "rev", "environments"], rows))


def cmd_flags_show(args: argparse.Namespace, settings: Settings) -> None:
    """Show one flag in every environment."""
    flag = Api.from_args(args).call("GET", f"/flags/{args.key}")

    def render(data: Any) -> Table:
        rows = [
            (e["environment"], e["enabled"], e["default_variant"], len(e["rules"]), _serving(e), e["revision"])
            for e in data["environments"]
        ]
        # Variant values as JSON (true, "blue", 3): they are what the flag serves, not words about it.
        variants = ", ".join(f"{name}={json.dumps(value)}" for name, value in data["variants"].items())
        title = f"{data['key']} ({data['type']}, {data['kind']}, rev {data['revision']}) variants: {variants}"
        return table(title, ["env", "enabled", "default", "rules", "serving", "rev"], rows)

    emit(args, flag, render)


def add_flag_commands(commands: Subcommands) -> None:
    """Add `flags list|show` to the command line."""
    flags = commands.add_parser("flags", help="flags").add_subparsers(dest="flags_command", required=True)
    add_command(flags, "list", cmd_flags_list, "list flags")
    show = add_command(flags, "show", cmd_flags_show, "show a flag in every environment")
    show.add_argument("key", help="the flag's key")
