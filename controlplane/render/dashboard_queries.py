"""Reading rendered dashboards back: every PromQL expression a dashboard runs, and where it runs it.

Used by the checks that the dashboards query what exists (tests/unit/test_dashboards.py lints them,
tests/integration/test_dashboard_queries.py parses them with promtool and finds every metric on /metrics).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DashboardQuery", "dashboard_queries"]


@dataclass(frozen=True, slots=True)
class DashboardQuery:
    """One PromQL expression a dashboard runs, and where: a panel target, an annotation or a variable."""

    where: str
    expr: str


def _panels(panels: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or ())  # panels kept inside a collapsed row


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[DashboardQuery]:
    """Every PromQL expression of a rendered dashboard (variables' ``label_values(<selector>, label)`` as selector)."""
    found = []
    for panel in _panels(dashboard.get("panels") or ()):
        for target in panel.get("targets") or ():
            found.append(DashboardQuery(f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]))
    for annotation in (dashboard.get("annotations") or {}).get("list") or ():
        expr = (annotation.get("target") or {}).get("expr") or annotation.get("expr")
        if expr:
            found.append(DashboardQuery(f"annotation {annotation.get('name')!r}", expr))
    for variable in (dashboard.get("templating") or {}).get("list") or ():
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, str) and query.startswith("label_values("):
            selector = query[len("label_values(") : query.rindex(",")]
            found.append(DashboardQuery(f"variable {variable.get('name')!r}", selector))
    return found
