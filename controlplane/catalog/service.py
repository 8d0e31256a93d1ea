"""The stored catalog: each applied pipeline's event types and alert rules, written by the definitions and read by
ingest, the alert evaluator, the guards and /metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.catalog.events import Catalog, EventType, event_type_from_json, event_type_to_json
from controlplane.catalog.models import PipelineCatalog
from controlplane.catalog.rules import Rule, RuleKind, rule_from_json, rule_to_json
from controlplane.errors import Conflict

__all__ = ["CatalogChange", "load_catalog", "load_rules", "store_catalog", "tail_events", "tail_segment"]


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """What storing a pipeline's catalog changed."""

    action: str  # "catalog_created" | "catalog_updated" | "catalog_unchanged"
    fields: list[str]


def load_catalog(session: Session) -> Catalog:
    """Every applied pipeline's event types."""
    events: list[EventType] = []
    for row in session.scalars(select(PipelineCatalog)):
        events.extend(event_type_from_json(row.pipeline, item) for item in row.events)
    return Catalog.of(events)


def load_rules(session: Session) -> list[Rule]:
    """Every applied pipeline's alert rules, ordered by pipeline then declaration."""
    rules: list[Rule] = []
    for row in session.scalars(select(PipelineCatalog).order_by(PipelineCatalog.pipeline)):
        rules.extend(rule_from_json(row.pipeline, item) for item in row.rules)
    return rules


def tail_events(rules: Sequence[Rule]) -> dict[tuple[str, str], frozenset[str]]:
    """The (pipeline, event) pairs whose recent events streak rules read, each with the attributes (event labels)
    whose values keep a tail of their own: those of the streak rules scoped to one segment (``tail_segment``)."""
    found: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        if rule.kind is RuleKind.STREAK:
            attributes = found.setdefault((rule.pipeline, rule.event), set())
            if rule.segment is not None:
                attributes.add(rule.segment.attribute)
    return {pair: frozenset(attributes) for pair, attributes in found.items()}


def tail_segment(rule: Rule) -> str:
    """Which stored tail a streak rule reads: its segment's (``queue=sales``) when scoped to one segment, so a busy
    segment never pushes its events out, else the tail of every event (empty)."""
    return str(rule.segment) if rule.segment is not None else ""


def store_catalog(
    session: Session,
    *,
    pipeline: str,
    events: Sequence[EventType],
    rules: Sequence[Rule],
    source: str,
    now: datetime,
) -> CatalogChange:
    """Make the stored catalog of ``pipeline`` match its definition; rule names are unique across pipelines."""
    names = [rule.name for rule in rules]
    if names:
        for row in session.scalars(select(PipelineCatalog).where(PipelineCatalog.pipeline != pipeline)):
            taken = sorted(set(names) & {item["name"] for item in row.rules})
            if taken:
                raise Conflict(
                    "rule-name-taken",
                    f"rule names must be unique across pipelines: {', '.join(taken)} already belong to "
                    f"pipeline `{row.pipeline}`",
                    rules=taken,
                    pipeline=row.pipeline,
                )
    wanted_events = [event_type_to_json(event) for event in events]
    wanted_rules = [rule_to_json(rule) for rule in rules]
    stored = session.get(PipelineCatalog, pipeline)
    if stored is None:
        session.add(
            PipelineCatalog(pipeline=pipeline, events=wanted_events, rules=wanted_rules, source=source, updated_at=now)
        )
        return CatalogChange("catalog_created", ["events", "rules"])
    fields = [
        name
        for name, old, new in (("events", stored.events, wanted_events), ("rules", stored.rules, wanted_rules))
        if old != new
    ]
    if not fields:
        return CatalogChange("catalog_unchanged", [])
    stored.events, stored.rules, stored.source, stored.updated_at = wanted_events, wanted_rules, source, now
    return CatalogChange("catalog_updated", fields)
