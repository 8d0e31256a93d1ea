"""The dashboard of one pipeline, from its definition alone: its flags' traffic and firing guards, the curated rows
its ``dashboard:`` section declares (see ``definitions.dashboard``), then a panel per event type of its catalog
(rate by outcome and variant; quantiles of the value where one is declared).

A definition without a ``dashboard:`` section gets the same board without curated rows, titled by its description.
"""

from __future__ import annotations

from controlplane.catalog.events import EventType
from controlplane.catalog.rules import Rule, RuleKind
from controlplane.definitions.schemas import PanelSpec, PipelineDefinition, TargetSpec
from controlplane.render.panels import (
    ALERT_STATE,
    ENVIRONMENT,
    FIRING,
    ROLLOUT_PERCENTAGE,
    Board,
    Timeseries,
    timeseries,
)
from controlplane.render.pipeline_queries import PipelineQueries
from controlplane.render.promql_text import matcher, per_minute, quantile, selector, sum_rate

__all__ = ["pipeline_board"]

#: Grafana unit of an event value's base unit (catalog.events.UNITS).
_VALUE_UNITS = {"seconds": "s", "bytes": "bytes", "ratio": "percentunit", "tokens": "short", "items": "short"}
#: The rule kinds a panel draws as PromQL: a share of events, or a mean of their values.
_DRAWN = (RuleKind.RATIO, RuleKind.MEAN)


def pipeline_board(definition: PipelineDefinition) -> Board:
    """The pipeline's dashboard: guards, its declared rows, and its event catalog."""
    pipeline = PipelineQueries(definition)
    layout = definition.dashboard
    title = layout.title if layout is not None else definition.description or pipeline.name
    board = (
        Board(pipeline.name, title, definition.description + ".", [pipeline.name])
        .environment(pipeline.environments_query())
        .rollbacks(pipeline.flags)
    )
    for variable in layout.variables if layout is not None else ():
        board.textbox(variable.name, variable.label, variable.description, variable.default)
    _guards(board, pipeline)
    for row in layout.rows if layout is not None else ():
        board.row(row.title).add(*(_panel(pipeline, panel) for panel in row.panels))
    _catalog(board, pipeline)
    return board


def _guards(board: Board, pipeline: PipelineQueries) -> None:
    """The pipeline's flags: traffic on the rollout variant, and which of its alert rules fire."""
    flags = matcher("flag", pipeline.flags)
    board.row("Rollout and guards").add(
        timeseries(
            "Traffic on the rollout variant",
            f"Share of traffic each environment serves the rollout variant of this pipeline's flags "
            f"({', '.join(pipeline.flags)}), 0-100%, per segment for a plan run per segment. Drops to 0 on a rollback.",
            "percent",
            [
                (
                    f"max by (flag, environment, segment) ({selector(ROLLOUT_PERCENTAGE, flags, ENVIRONMENT)})",
                    "{{flag}} in {{environment}} {{segment}}",
                )
            ],
            stepped=True,
            maximum=100,
        ),
        timeseries(
            "Firing alert rules",
            f"Alert rules of {pipeline.name} that fire (1 while firing; guards among them roll their flag back). "
            "From controlplane_alert_state, which the control plane evaluates over 10 s windows.",
            "none",
            [
                (
                    f"max by (rule, environment) "
                    f"({selector(ALERT_STATE, matcher('pipeline', [pipeline.name]), FIRING, ENVIRONMENT)})"
                    " > 0",
                    "{{rule}} in {{environment}}",
                )
            ],
            stepped=True,
            maximum=1,
        ),
    )


def _catalog(board: Board, pipeline: PipelineQueries) -> None:
    """A panel per event type: its rate by outcome and variant; the quantiles of its value where it has one."""
    board.row("Events in the catalog")
    for event in pipeline.definition.events:
        by = ["outcome", "variant"] if event.outcomes else ["variant"]
        served = f" (the variant of `{event.flag}` served)" if event.flag else ""
        board.add(
            timeseries(
                f"{event.name}: events per second",
                f"{event.description} Counter {event.counter_name}_total, per second, by {' and '.join(by)}{served}.",
                "ops",
                [(sum_rate(pipeline.counter(event), by), " ".join(f"{{{{{label}}}}}" for label in by))],
            )
        )
        if event.value is not None:
            bucket = pipeline.histogram(event, "bucket")
            board.add(
                timeseries(
                    f"{event.name}: {event.value.name} p50 and p95",
                    f"{event.description} Quantiles of the {event.value.name} ({event.value.unit}) from histogram "
                    f"{event.histogram_name}, by variant; estimated from the bucket bounds.",
                    _VALUE_UNITS.get(event.value.unit, "short"),
                    [
                        (quantile(0.5, bucket, ["variant"]), "p50 {{variant}}"),
                        (quantile(0.95, bucket, ["variant"]), "p95 {{variant}}"),
                    ],
                )
            )


# --- the declared rows ------------------------------------------------------------------------------------------


def _panel(pipeline: PipelineQueries, spec: PanelSpec) -> Timeseries:
    """One declared panel: a guard's, or a time series of its targets."""
    if spec.guard is not None:
        guard = pipeline.rule(spec.guard, _DRAWN)
        return pipeline.against_guard(spec.title, spec.what, guard, unit=spec.unit or "percentunit")
    event = pipeline.event(spec.event) if spec.event is not None else None
    rule = pipeline.rule(spec.rule) if spec.rule is not None else None
    return timeseries(
        spec.title,
        _description(spec.description, event, rule),
        spec.unit,
        [(_expr(pipeline, target, event, rule), target.legend) for target in spec.targets],
        width=spec.width,
        line=float(rule.threshold) if spec.threshold_line and rule is not None else None,
        maximum=spec.maximum,
    )


def _expr(pipeline: PipelineQueries, target: TargetSpec, event: EventType | None, rule: Rule | None) -> str:
    """A declared target's PromQL, each name checked against the definition (the loader has, for files)."""
    if target.measure == "rule":
        if rule is None or rule.kind not in _DRAWN:
            raise ValueError(f"a panel of {pipeline.name} draws a rule, and names no ratio or mean rule")
        expr = pipeline.measure(rule, target.by)
    elif event is None:
        raise ValueError(f"a panel of {pipeline.name} measures `{target.measure}` and names no event")
    elif target.measure == "share":
        expr = pipeline.share(event, target.part, target.where, target.by)
    elif target.measure == "quantile":
        assert target.q is not None  # checked by the loader
        expr = quantile(target.q, pipeline.histogram(event, "bucket", target.where), target.by)
    else:
        series = (
            pipeline.total(event, target.total, target.where)
            if target.total is not None
            else pipeline.counter(event, target.where)
        )
        expr = per_minute(series, target.by) if target.measure == "per_minute" else sum_rate(series, target.by)
    return expr + "".join(f" * {factor}" for factor in target.times)


def _description(text: str, event: EventType | None, rule: Rule | None) -> str:
    """A declared description with the names of what its panel reads filled in (``{counter}``, ``{rule}``...)."""
    names: dict[str, object] = {}
    if event is not None:
        names |= {
            "counter": f"{event.counter_name}_total",
            "histogram": event.histogram_name,
            "flag": event.flag,
            "totals": {total: f"{event.total_name(total)}_total" for total in event.totals},
        }
    if rule is not None:
        names |= {"rule": rule.name, "condition": rule.condition()}
    try:
        return text.format_map(names)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"a panel description names {exc}, which its panel does not read: {text!r}") from exc
