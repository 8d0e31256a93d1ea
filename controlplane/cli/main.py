"""The `controlplane` command line: one parser wiring each domain's commands, and `main` that runs one.

Bootstrap commands (`serve`, `db upgrade`, `tokens create --database`) talk to the database named by the settings.
Everything else talks to the HTTP API at ``--url`` (else ``CONTROLPLANE_URL``) with ``--token`` (else
``CONTROLPLANE_TOKEN``), so it is authorised and audited like any other client. Tables by default, ``--json`` for
scripts; errors go to stderr as ``error <status> <problem type>: <detail>`` and exit 1 (`rollout status` exits by the
rollout's state: see its ``--help``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import httpx
from sqlalchemy.exc import SQLAlchemyError

from controlplane.cli.alerts import add_alert_commands
from controlplane.cli.audit import add_audit_commands
from controlplane.cli.cleanup import add_cleanup_commands
from controlplane.cli.client import DEFAULT_URL, CommandError
from controlplane.cli.completion import add_completion_command
from controlplane.cli.definitions import add_definition_commands
from controlplane.cli.flags import add_flag_commands
from controlplane.cli.guards import add_guard_commands
from controlplane.cli.notifications import add_notification_commands
from controlplane.cli.output import stderr
from controlplane.cli.render import add_render_commands
from controlplane.cli.rollout_watch import Pacing
from controlplane.cli.rollouts import add_rollout_commands
from controlplane.cli.server import add_server_commands
from controlplane.cli.silences import add_silence_commands
from controlplane.cli.tokens import add_token_commands
from controlplane.settings import Settings, SettingsError

__all__ = ["build_parser", "main"]


def build_parser(*, pacing: Pacing | None = None) -> argparse.ArgumentParser:
    """The command line; `rollout status --watch` keeps time by `pacing` (default: the real clock)."""
    parser = argparse.ArgumentParser(prog="controlplane", description="The `controlplane` command.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_installed_version()}")
    parser.add_argument(
        "--url",
        help=f"the control plane's base URL (default: CONTROLPLANE_URL, else {DEFAULT_URL}); wins over the variable",
    )
    parser.add_argument(
        "--token",
        # On the command line a token shows in `ps` and shell history: the variable is the safer habit.
        help="the API token (default: CONTROLPLANE_TOKEN, which keeps it out of `ps` and shell history); wins over "
        "the variable",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="on an unexpected failure, print the traceback, not only one line"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    # The order here is the order `controlplane --help` lists them in.
    add_server_commands(commands)
    add_token_commands(commands)
    add_definition_commands(commands)
    add_flag_commands(commands)
    add_rollout_commands(commands, pacing or Pacing(follows_pushes=True))
    add_audit_commands(commands)
    add_alert_commands(commands)
    add_silence_commands(commands)
    add_notification_commands(commands)
    add_cleanup_commands(commands)
    add_render_commands(commands)
    add_guard_commands(commands)
    add_completion_command(commands, parser)
    return parser


def _installed_version() -> str:
    """The version of the installed package (its metadata: the one pyproject.toml gave it)."""
    try:
        return version("controlplane")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None, *, pacing: Pacing | None = None) -> None:
    """Run the command line (`pacing`: the clock and wait of `rollout status --watch`, for tests)."""
    args = build_parser(pacing=pacing).parse_args(argv)
    try:
        settings = Settings.from_env()
        args.handler(args, settings)
    except (CommandError, SettingsError) as error:
        stderr.print(f"error {error}")
        raise SystemExit(1) from error
    except httpx.HTTPError as error:
        # No traceback for what an operator can fix: say what was unreachable, in one line.
        reason = f"{type(error).__name__}: {error}"
        stderr.print(f"error cannot reach the control plane ({reason}); is --url or CONTROLPLANE_URL right?")
        raise SystemExit(1) from error
    except SQLAlchemyError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        stderr.print(f"error the database refused or did not answer: {first}")
        raise SystemExit(1) from error
    except OSError as error:
        stderr.print(f"error {error}")
        raise SystemExit(1) from error
    except KeyboardInterrupt:
        stderr.print("error interrupted")
        raise SystemExit(130) from None
    except Exception as error:
        if args.traceback:
            raise
        # A failure nobody foresaw still reads as one line; --traceback shows where it came from.
        first = str(error).splitlines()[0] if str(error) else ""
        stderr.print(f"error unexpected {type(error).__name__}: {first} (run with --traceback for where)")
        raise SystemExit(1) from error
