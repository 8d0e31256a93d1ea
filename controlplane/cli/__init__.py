"""The `controlplane` command: `main` runs it (the console script); one module per domain adds its commands."""

from controlplane.cli.client import CommandError
from controlplane.cli.main import build_parser, main
from controlplane.cli.server import bootstrap

__all__ = ["CommandError", "bootstrap", "build_parser", "main"]
