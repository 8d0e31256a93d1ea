"""`controlplane completion bash|zsh|tcsh`: the shell completion script of the whole command line, from shtab."""

from __future__ import annotations

import argparse

import shtab

from controlplane.cli.output import Subcommands
from controlplane.settings import Settings

__all__ = ["SHELLS", "add_completion_command"]

#: The shells shtab writes scripts for, from the parser alone (no Python runs at each <TAB>); not tcsh, whose
#: script completes only the first word (no options, no subcommands).
SHELLS = tuple(shell for shell in shtab.SUPPORTED_SHELLS if shell != "tcsh")


def add_completion_command(commands: Subcommands, root: argparse.ArgumentParser) -> None:
    """Add `completion SHELL`, which prints the completion script of `root` (every command, option and choice)."""
    # Told how to install the script, not only that it exists: shells differ, and that is what people look up.
    how = (
        "bash: `controlplane completion bash > ~/.local/share/bash-completion/completions/controlplane`; "
        'zsh: `controlplane completion zsh > "${fpath[1]}/_controlplane"`, then restart the shell'
    )
    completion = commands.add_parser(
        "completion", help="print the shell completion script", description=f"Print the shell completion script. {how}"
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell to complete in")

    def cmd_completion(args: argparse.Namespace, settings: Settings) -> None:
        print(shtab.complete(root, shell=args.shell), end="")

    completion.set_defaults(handler=cmd_completion)
