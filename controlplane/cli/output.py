"""What the commands print: the consoles, tables, `--json` output, and the subcommand that offers `--json`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from rich.console import Console
from rich.table import Table

from controlplane.settings import Settings

__all__ = ["Handler", "Subcommands", "add_command", "emit", "plain", "short_time", "stderr", "stdout", "table"]

#: What runs a command: its parsed arguments and the settings.
Handler: TypeAlias = Callable[[argparse.Namespace, Settings], None]
#: What `add_subparsers()` returns: the group a command is added to (a string: argparse's class is not generic).
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# Piped output keeps whole lines (rich would otherwise wrap tables at 80 columns). No markup: what is printed is the
# server's words, and rich read their brackets as styles, so an audit reason's "[advance to stage 2/3]" vanished
# from tables and a "[/]" in a detail raised instead of printing.
stdout = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


def add_command(parent: Subcommands, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    """Add a subcommand run by `handler`, with the `--json` option every command has."""
    sub = parent.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(handler=handler)
    sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return sub


def emit(args: argparse.Namespace, data: Any, render: Callable[[Any], Table | str]) -> None:
    """Print `data` as JSON with `--json`, else as `render` shows it."""
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        stdout.print(render(data))


def plain(value: Any) -> str:
    """A value as an operator reads it, never in a Python form: None as `none`, booleans as yes/no, lists
    comma-separated, mappings as `name=value`."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(plain(item) for item in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{name}={plain(item)}" for name, item in value.items()) if value else "none"
    return str(value)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A titled table; None shows as an empty cell, any other value as `plain` words."""
    result = Table(title=title, title_justify="left")
    for column in columns:
        result.add_column(column)
    for row in rows:
        result.add_row(*("" if value is None else plain(value) for value in row))
    return result


def short_time(value: str | None) -> str | None:
    """An ISO 8601 time to the second, with a space for the T (None and "" stay as they are)."""
    return value[:19].replace("T", " ") if value else value
