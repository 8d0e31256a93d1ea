"""Event metrics on /metrics: a counter per catalog event type, a histogram per declared value, a counter per total.

Named from the definitions (``<event>_events_total``, ``<event>_<value>_<unit>``, ``<event>_<total>_total``) with
labels ``pipeline``, ``environment``, ``variant``, ``outcome`` (when declared) and the event's own labels. Counts are
this replica's since it started, added after each batch commits; Prometheus sums replicas and handles restarts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from controlplane.catalog.events import Catalog, EventType
from controlplane.telemetry.aggregation import Aggregates

__all__ = ["EventMetrics"]

#: prometheus_client's float formatting for label values (left unannotated there).
_go_float: Callable[[float], str] = floatToGoString


@dataclass(slots=True)
class _Series:
    count: int = 0
    value_sum: float = 0.0
    buckets: list[int] | None = None
    totals: dict[str, float] = field(default_factory=dict)


def _label_names(kind: EventType) -> list[str]:
    fixed = ["pipeline", "environment", "variant"] + (["outcome"] if kind.outcomes else [])
    return fixed + sorted(kind.labels)


class EventMetrics(Collector):
    """This replica's event counts, exposed in Prometheus form from the current catalog."""

    def __init__(self, catalog: Callable[[], Catalog]) -> None:
        self._catalog = catalog
        self._lock = threading.Lock()
        # (pipeline, event) -> label values (in _label_names order, without pipeline) -> series
        self._series: dict[tuple[str, str], dict[tuple[str, ...], _Series]] = {}

    def record(self, pipeline: str, aggregates: Aggregates, catalog: Catalog) -> None:
        """Add a committed batch's aggregates."""
        with self._lock:
            for (_, event, environment, variant, outcome, labels_key), added in aggregates.series.items():
                kind = catalog.get(pipeline, event)
                if kind is None:
                    continue
                labels = json.loads(labels_key)
                values = (
                    (environment, variant)
                    + ((outcome,) if kind.outcomes else ())
                    + tuple(labels.get(name, "") for name in sorted(kind.labels))
                )
                series = self._series.setdefault((pipeline, event), {}).get(values)
                if series is None:
                    series = self._series[(pipeline, event)][values] = _Series(
                        buckets=[0] * len(added.buckets) if added.buckets is not None else None
                    )
                series.count += added.count
                series.value_sum += added.value_sum
                if (
                    added.buckets is not None
                    and series.buckets is not None
                    and len(added.buckets) == len(series.buckets)
                ):
                    series.buckets = [a + b for a, b in zip(series.buckets, added.buckets, strict=True)]
                for name, amount in added.totals.items():
                    series.totals[name] = series.totals.get(name, 0.0) + amount

    def describe(self) -> list[Metric]:
        """Nothing up front: the families depend on the catalog at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One family per metric name, merging pipelines that declare the same event name."""
        catalog = self._catalog()
        families: dict[str, Metric] = {}  # every family, in first-declared order
        counters: dict[str, CounterMetricFamily] = {}
        histograms: dict[str, HistogramMetricFamily] = {}
        names: dict[str, list[str]] = {}
        kinds = sorted(catalog.events.values(), key=lambda kind: (kind.name, kind.pipeline))
        for kind in kinds:
            for metric_name in (kind.counter_name, kind.histogram_name, *(kind.total_name(t) for t in kind.totals)):
                if metric_name is None:
                    continue
                merged = names.setdefault(metric_name, [])
                for label in _label_names(kind):
                    if label not in merged:
                        merged.append(label)
        with self._lock:
            snapshot = {
                key: {values: _copy(series) for values, series in rows.items()} for key, rows in self._series.items()
            }
        for kind in kinds:
            own = _label_names(kind)
            rows = snapshot.get((kind.pipeline, kind.name), {})
            # A family shared by several pipelines gets a neutral help text, not the first pipeline's description.
            shared = sum(1 for other in kinds if other.name == kind.name) > 1
            about = f"{kind.name} events" if shared or not kind.description else kind.description.rstrip(".")
            counter = counters.get(kind.counter_name)
            if counter is None:
                counter = families[kind.counter_name] = counters[kind.counter_name] = CounterMetricFamily(
                    kind.counter_name, f"{about} (count, by outcome and labels).", labels=names[kind.counter_name]
                )
            for values, series in sorted(rows.items()):
                labelled = _spread(own, (kind.pipeline, *values), names[kind.counter_name])
                counter.add_metric(labelled, series.count)
            if kind.histogram_name is not None and kind.value is not None:
                histogram = histograms.get(kind.histogram_name)
                if histogram is None:
                    histogram = families[kind.histogram_name] = histograms[kind.histogram_name] = HistogramMetricFamily(
                        kind.histogram_name,
                        f"{about}: {kind.value.name} in {kind.value.unit}.",
                        labels=names[kind.histogram_name],
                    )
                for values, series in sorted(rows.items()):
                    if series.buckets is None:
                        continue
                    labelled = _spread(own, (kind.pipeline, *values), names[kind.histogram_name])
                    cumulative, running = [], 0
                    for bound, amount in zip((*kind.value.buckets, float("inf")), series.buckets, strict=True):
                        running += amount
                        cumulative.append((_bound(bound), float(running)))
                    histogram.add_metric(labelled, cumulative, series.value_sum)
            for total in kind.totals:
                name = kind.total_name(total)
                family = counters.get(name)
                if family is None:
                    family = families[name] = counters[name] = CounterMetricFamily(
                        name, f"{about}: {total} summed.", labels=names[name]
                    )
                for values, series in sorted(rows.items()):
                    family.add_metric(
                        _spread(own, (kind.pipeline, *values), names[name]), series.totals.get(total, 0.0)
                    )
        yield from families.values()


def _copy(series: _Series) -> _Series:
    return _Series(series.count, series.value_sum, list(series.buckets or []) or None, dict(series.totals))


def _spread(own: list[str], values: tuple[str, ...], merged: list[str]) -> list[str]:
    """Label values in the family's merged label order; labels this event type lacks are empty."""
    mine = dict(zip(own, values, strict=True))
    return [mine.get(label, "") for label in merged]


def _bound(bound: float) -> str:
    # The `le` text prometheus_client (and Go, and Prometheus 3's normalisation) write: 1e+07, not 10000000.0,
    # so a selector on `le` matches the control plane's own histograms and these alike.
    return _go_float(bound)
