"""`controlplane definitions apply`: send a definition file to the control plane and show what changed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from controlplane.cli.client import Api, CommandError
from controlplane.cli.output import Subcommands, add_command, emit, table
from controlplane.settings import Settings

__all__ = ["add_definition_commands"]


def cmd_definitions_apply(args: argparse.Namespace, settings: Settings) -> None:
    """Send a definition file to the control plane and show what changed."""
    path = Path(args.file)
    try:
        content = path.read_text()
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from error
    body = {"content": content, "source": path.name, "dry_run": args.dry_run}
    report = Api.from_args(args).call("POST", "/definitions/apply", json=body)

    def render(data: Any) -> Table:
        rows = [
            (c["flag"], c["environment"] or "", c["action"], ", ".join(c["fields"]), c["note"] or "")
            for c in data["changes"]
        ]
        verb = "would change" if data["dry_run"] else "changed"
        title = f"{data['pipeline']} ({data['source']}): {verb if data['changed'] else 'nothing to change'}"
        return table(title, ["flag", "env", "action", "fields", "note"], rows)

    emit(args, report, render)


def add_definition_commands(commands: Subcommands) -> None:
    """Add `definitions apply` to the command line."""
    definitions = commands.add_parser("definitions", help="pipeline definitions").add_subparsers(
        dest="definitions_command", required=True
    )
    apply = add_command(definitions, "apply", cmd_definitions_apply, "create or update what a definition file declares")
    apply.add_argument("file", help="the definition file (YAML) to send")
    apply.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
