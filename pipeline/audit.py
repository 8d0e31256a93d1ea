"""`python -m pipeline audit --from T --to T [--json]`: the runs a time window touched, and which to look at again.

For every run whose ``meta.json`` says it was created in ``[from, to)``: who, the variant served, the references it
resolved and used (``reference_images``, ``image_assets.references_used`` and the ``delivery_audit_trail``), its
grades (the run's and each variation's), and the references the review rejected (a variation's note naming the
reference as too small or blending into the background). A run is flagged when it used a reference that was
rejected (by the review, in this run or another run of the window) or purged: no longer in the bucket while the URL
the run was given for it had not expired (the expiry cleanup only deletes objects whose last URL has expired, so
such an object was deleted on purpose, by a rollback's purge). Without a bucket (``--no-bucket``) nothing is
checked for purges.

Exit 0 with the listing; exit 2 on a bad time or an empty window.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.runs import RUN_ID_PATTERN

__all__ = ["AuditedRun", "audit_table", "audit_window", "main", "parse_instant"]

#: A variation's review note about a reference it rejected: "<role> <asset id> too small: ..." or "... blends ...".
_REJECTED_NOTE = re.compile(r"^\w+ ([0-9a-f]{32}) (?:too small|blends into the background)")


@dataclass(frozen=True, slots=True)
class AuditedRun:
    """One run of the window as the audit reports it."""

    run_id: str
    created_at: str
    user_id: str
    variant: str
    references: list[str]
    grade: str | None
    variation_grades: list[str]
    rejected_references: list[str]
    purged_references: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant with its UTC offset (``Z`` accepted); ValueError for anything else."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as error:
        raise ValueError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-01T12:00:00+00:00)") from error
    if parsed.utcoffset() is None:
        raise ValueError(f"{text!r} has no UTC offset: add one (e.g. +00:00 or Z), a local time is ambiguous")
    return parsed


def _runs_in(root: Path, start: datetime, end: datetime) -> list[dict[str, Any]]:
    found = []
    for meta in sorted(root.glob("*/meta.json")) if root.is_dir() else []:
        if not RUN_ID_PATTERN.fullmatch(meta.parent.name):
            continue
        state: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
        created = datetime.fromisoformat(state["created_at"])
        if start <= created < end:
            found.append(state)
    return sorted(found, key=lambda state: (state["created_at"], state["run_id"]))


def _used(state: dict[str, Any]) -> list[str]:
    ids = [reference["asset_id"] for reference in state.get("reference_images") or []]
    assets = state.get("image_assets") or {}
    ids += list(assets.get("references_used") or [])
    for entry in state.get("delivery_audit_trail") or []:
        ids += list(entry.get("reference_images") or entry.get("references_used") or [])
    return list(dict.fromkeys(ids))


def _rejected(state: dict[str, Any]) -> list[str]:
    rejected = []
    for variation in (state.get("image_assets") or {}).get("variations") or []:
        for note in variation.get("notes") or []:
            match = _REJECTED_NOTE.match(note)
            if match:
                rejected.append(match.group(1))
    return list(dict.fromkeys(rejected))


def audit_window(
    runs_dir: Path,
    start: datetime,
    end: datetime,
    *,
    still_stored: Callable[[str], bool] | None,
    now: datetime,
) -> list[AuditedRun]:
    """The runs created in ``[start, end)``, each with what it used and why it is flagged; ``still_stored`` tells
    whether an object is in the bucket (None: purges are not checked)."""
    states = _runs_in(runs_dir, start, end)
    rejected_anywhere = {asset for state in states for asset in _rejected(state)}
    audited = []
    for state in states:
        used = _used(state)
        purged = []
        if still_stored is not None:
            for reference in state.get("reference_images") or []:
                valid_until = datetime.fromisoformat(reference["signed_url_expires_at"])
                if now < valid_until and not still_stored(reference["object_name"]):
                    purged.append(reference["asset_id"])
        flagged = [f"used rejected reference {asset}" for asset in used if asset in rejected_anywhere]
        flagged += [f"used purged reference {asset}" for asset in purged]
        assets = state.get("image_assets") or {}
        audited.append(
            AuditedRun(
                run_id=state["run_id"],
                created_at=state["created_at"],
                user_id=state.get("user_id", ""),
                variant=(state.get("flag") or {}).get("variant", ""),
                references=used,
                grade=assets.get("status"),
                variation_grades=[variation["status"] for variation in assets.get("variations") or []],
                rejected_references=_rejected(state),
                purged_references=purged,
                flagged=flagged,
            )
        )
    return audited


def audit_table(runs: Sequence[AuditedRun]) -> str:
    """The runs as `pipeline audit` prints them: one row each, then how many runs and how many flagged."""
    header = ("run", "created", "user", "variant", "references", "grade", "variations", "rejected", "flagged")
    rows = [header] + [
        (
            run.run_id,
            run.created_at,
            run.user_id,
            run.variant,
            ",".join(run.references) or "-",
            run.grade or "not generated",
            ",".join(run.variation_grades) or "-",
            ",".join(run.rejected_references) or "-",
            "; ".join(run.flagged) or "-",
        )
        for run in runs
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    flagged = sum(1 for run in runs if run.flagged)
    return "\n".join([*lines, f"{len(runs)} runs, {flagged} flagged"])


def main(argv: Sequence[str] | None = None, *, still_stored: Callable[[str], bool] | None = None) -> int:
    """Run `pipeline audit`; return the exit code. ``still_stored`` replaces the bucket (tests)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline audit", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="start", required=True, help="ISO 8601 time with offset, inclusive")
    parser.add_argument("--to", dest="end", required=True, help="ISO 8601 time with offset, exclusive")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--runs-dir", type=Path, help="where the runs are (default: PIPELINE_RUNS_DIR or ./runs)")
    parser.add_argument("--no-bucket", action="store_true", help="do not check the bucket for purged references")
    args = parser.parse_args(argv)
    try:
        start, end = parse_instant(args.start), parse_instant(args.end)
    except ValueError as error:
        parser.error(str(error))  # exit 2
    if start >= end:
        parser.error(f"--from {args.start} is not before --to {args.end}")
    from pipeline.settings import PipelineSettings

    settings = PipelineSettings.from_env()
    runs_dir = args.runs_dir or settings.runs_dir
    if still_stored is None and not args.no_bucket:
        from pipeline.storage import new_client

        bucket = new_client(settings.gcs_project).bucket(settings.bucket)

        def still_stored(name: str) -> bool:
            found: bool = bucket.blob(name).exists()
            return found

    runs = audit_window(runs_dir, start, end, still_stored=still_stored, now=datetime.now(UTC))
    if args.json:
        document = {"from": start.isoformat(), "to": end.isoformat(), "runs": [asdict(run) for run in runs]}
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write(audit_table(runs) + "\n")
    return 0
