"""Grafana dashboards rendered from the pipeline definitions with Grafana Labs' grafana-foundation-sdk.

    render_dashboards(definitions) -> {"dashboards/<name>.json": JSON text}

- ``rollout-overview`` and ``control-plane-health``: the control plane's own boards (``boards``).
- one dashboard per pipeline, named after it (``pipeline_board``): its guards, the curated rows its definition's
  ``dashboard:`` section declares, then a panel per event type of its catalog.

Built of the panel language in ``panels`` and PromQL from ``pipeline_queries``/``promql_text``; read back by
``dashboard_queries``. The lint habits of grafana/dashboard-linter hold (tests/unit/test_dashboards.py):
a ``datasource`` variable used by every panel, an ``environment`` variable refreshed on time change and applied to
every metric that has that label, counters only inside ``rate``/``increase`` over ``$__rate_interval``, a title,
description and unit on every panel, legends shown.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.definitions.schemas import PipelineDefinition
from controlplane.render.boards import control_plane_health, rollout_overview
from controlplane.render.pipeline_board import pipeline_board

__all__ = ["render_dashboards"]


def render_dashboards(definitions: Sequence[PipelineDefinition]) -> dict[str, str]:
    """Every dashboard as ``{"dashboards/<uid>.json": JSON text}``: stable (sorted keys, indent 2, final newline)."""
    boards = [rollout_overview(definitions), control_plane_health(definitions)]
    boards += [pipeline_board(definition) for definition in sorted(definitions, key=lambda d: d.name)]
    rendered: dict[str, str] = {}
    for board in boards:
        path = f"dashboards/{board.uid}.json"
        if path in rendered:
            raise ValueError(f"two dashboards would be written to {path}")
        rendered[path] = board.encode()
    return dict(sorted(rendered.items()))
