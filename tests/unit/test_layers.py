"""The layer contracts in pyproject.toml hold for the tree, and a back-import planted by hand breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("controlplane", "controlplane_client", "pipeline", "migrations")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(into: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")
    return into


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # Run on the copy alone: its folder first on the path, so the installed tree is not what is analysed.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": str(LINT_IMPORTS.parent)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"lint-imports is not installed beside {sys.executable} (the test extra installs it)")
    return _copy_tree(tmp_path_factory.mktemp("tree"))


def _plant(tree: Path, module: str, line: str) -> Path:
    """A copy of ``tree`` with ``line`` appended to ``module``."""
    planted = _copy_tree(Path(tempfile.mkdtemp(dir=tree.parent, prefix="planted-")))
    path = planted / module
    path.write_text(path.read_text() + f"\n{line}\n")
    return planted


def test_the_tree_keeps_every_layer_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # A domain reaching up into the workflow that drives it.
        (
            "controlplane/rollouts/stages.py",
            "import controlplane.guarding.rollback  # noqa",
            "controlplane.rollouts is not allowed to import controlplane.guarding",
        ),
        # The kit reaching into a domain.
        (
            "controlplane/db.py",
            "import controlplane.flags.models  # noqa",
            "is not allowed to import controlplane.flags",
        ),
        # Two independent siblings.
        (
            "controlplane/alerting/rules.py",
            "import controlplane.cleanup.selection  # noqa",
            "controlplane.alerting is not allowed to import controlplane.cleanup",
        ),
        # A client package reaching into the server.
        (
            "controlplane_client/retry.py",
            "import controlplane.settings  # noqa",
            "controlplane_client is not allowed to import controlplane",
        ),
        # Two kit modules that may import each other one way only: a cycle.
        ("controlplane/db.py", "import controlplane.api.health  # noqa", "No cycles are allowed in controlplane."),
        # The pipeline reaching past the client packages.
        (
            "pipeline/settings.py",
            "import controlplane.errors  # noqa",
            "pipeline is not allowed to import controlplane",
        ),
    ],
)
def test_a_planted_back_import_breaks_a_contract(tree: Path, module: str, line: str, broken: str) -> None:
    result = _lint(_plant(tree, module, line))
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in " ".join(result.stdout.split()), result.stdout
