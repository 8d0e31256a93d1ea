"""`controlplane render`: write alerts/ and dashboards/ from the definitions, or with --check only compare."""

from __future__ import annotations

import argparse
from pathlib import Path

from controlplane.cli.client import CommandError
from controlplane.cli.output import Subcommands, add_command, stderr, stdout
from controlplane.settings import Settings

__all__ = ["add_render_commands"]

#: What `render` may find in the folders it writes and delete when no definition renders it any more.
_RENDERED_SUFFIXES = (".yml", ".yaml", ".json")


def cmd_render(args: argparse.Namespace, settings: Settings) -> None:
    """Write alerts/ (rules, promtool tests, Alertmanager example) and dashboards/ from the definitions; --check
    only compares."""
    from controlplane.definitions.document import DefinitionError
    from controlplane.definitions.loader import load_definition
    from controlplane.render import render_all

    folder = Path(args.definitions) if args.definitions else settings.definitions_dir
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise CommandError(f"no definitions (*.yaml) in {folder}")
    try:
        definitions = [load_definition(path, environments=settings.environments) for path in paths]
    except DefinitionError as error:
        raise CommandError(f"invalid definition, nothing rendered: {error}") from error
    files = render_all(definitions)
    out = Path(args.out)
    changed = [path for path, text in files.items() if _current(out / path) != text]
    stale = _stale(out, files)
    if args.check:
        for path in changed:
            stderr.print(f"{'differs' if (out / path).exists() else 'missing'}: {out / path}")
        for path in stale:
            stderr.print(f"stale (no definition renders it): {out / path}")
        if changed or stale:
            stderr.print("run `controlplane render` and commit the result")
            raise SystemExit(1)
        stdout.print(f"{len(files)} rendered files are current in {out}")
        return
    for path in changed:
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(files[path], encoding="utf-8")
        stdout.print(f"wrote {target}")
    for path in stale:
        (out / path).unlink()
        stdout.print(f"removed {out / path} (no definition renders it)")
    stdout.print(f"{len(files)} files rendered, {len(changed)} changed, {len(stale)} removed")


def _current(path: Path) -> str | None:
    """The text of a file now, None when there is none."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _stale(out: Path, files: dict[str, str]) -> list[str]:
    """Files in the folders `render` writes that it did not render this time (a removed pipeline's, say)."""
    folders = {Path(path).parts[0] for path in files}
    found = [
        candidate.relative_to(out).as_posix()
        for folder in sorted(folders)
        for candidate in sorted((out / folder).rglob("*"))
        if candidate.is_file() and candidate.suffix in _RENDERED_SUFFIXES
    ]
    return [path for path in found if path not in files]


def add_render_commands(commands: Subcommands) -> None:
    """Add `render` to the command line."""
    render = add_command(
        commands, "render", cmd_render, "write alerts/ and dashboards/ from the definitions (--check: only compare)"
    )
    render.add_argument("--definitions", help="folder of *.yaml definitions (default: CONTROLPLANE_DEFINITIONS_DIR)")
    render.add_argument(
        "--out", default=".", help="folder to write alerts/ and dashboards/ in (default: the current one)"
    )
    render.add_argument("--check", action="store_true", help="write nothing; exit 1 listing files that differ")
