"""Rules measured by Prometheus: a thin adapter over ``GET /api/v1/query`` and a pure reading of its answers.

    PrometheusClient.query(promql, at) -> QueryAnswer        the only I/O: one instant query, with a timeout
    read_answer(status, body) -> QueryAnswer                 pure: the API's JSON (or its absence) in plain data
    measure_answers(rule, value, samples)                    pure: answers -> Measurement, for ``rules.step``
    read_prometheus_rules(rules, environments, now, source)  every query of a tick at once, within one budget

Per environment, a rule's queries have ``{environment}`` (inside a quoted label value) replaced by the
environment's name, and are evaluated as instant queries at the evaluation time. The value query must answer one
number. No series, NaN (as 0/0 gives), more than one series, a range vector, an API error, a timeout or an
unreachable server are each ``insufficient_data`` with the reason in the alert's detail: never a pass, never a
rollback. The optional samples query counts what the value is measured over; below ``min_samples`` (no series
counts as 0) is insufficient data too. Thresholds compare exactly: the decimal Prometheus wrote (Go's shortest
round-trip form) against the decimal the rule was written with, so 0.03 never fires a ``> 0.03`` rule. ``+Inf``
is above every threshold and ``-Inf`` below (no value is stored for either).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any, Protocol

import httpx

from controlplane.alerting.rules import Measurement
from controlplane.catalog.rules import Rule, RuleSource

__all__ = [
    "NOT_CONFIGURED",
    "PrometheusClient",
    "PrometheusSource",
    "QueryAnswer",
    "QueryReadings",
    "QuerySeries",
    "measure_answers",
    "prometheus_source",
    "read_answer",
    "read_prometheus_rules",
]

logger = logging.getLogger(__name__)

#: The detail of every Prometheus rule when the control plane has no Prometheus to ask.
NOT_CONFIGURED = "no Prometheus is configured (set CONTROLPLANE_PROMETHEUS_URL): nothing was measured"
#: Series named in a "more than one series" detail before the rest are counted.
_SHOWN_SERIES = 3


@dataclass(frozen=True, slots=True)
class QuerySeries:
    """One element of an instant query's answer: its labels and its value as Prometheus wrote it (``"0.03"``)."""

    labels: Mapping[str, str]
    value: str


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """What one instant query answered: its series (a scalar is one series without labels), or why there are none."""

    series: tuple[QuerySeries, ...] = ()
    error: str | None = None


class PrometheusSource(Protocol):
    """Anything that answers instant queries: the HTTP client, or a fake in tests."""

    @property
    def timeout(self) -> float:
        """Seconds one query may take."""
        ...

    def query(self, promql: str, at: datetime) -> QueryAnswer:
        """Evaluate ``promql`` as an instant query at ``at``; never raises."""
        ...


def _labels(metric: Any) -> dict[str, str]:
    return {str(key): str(value) for key, value in metric.items()} if isinstance(metric, dict) else {}


def read_answer(status: int, body: bytes) -> QueryAnswer:
    """Read the body of a ``/api/v1/query`` response (any status) into series, or the reason there are none."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict) or document.get("status") not in ("success", "error"):
        return QueryAnswer(error=f"Prometheus answered HTTP {status} without its API's JSON: {body[:200]!r}")
    if document["status"] == "error" or status >= 400:
        kind = document.get("errorType") or "error"
        return QueryAnswer(error=f"Prometheus refused the query (HTTP {status}, {kind}): {document.get('error', '')}")
    data = document.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    try:
        if kind == "vector" and isinstance(result, list):
            return QueryAnswer(
                series=tuple(QuerySeries(_labels(item["metric"]), str(item["value"][1])) for item in result)
            )
        if kind == "scalar" and isinstance(result, list):
            return QueryAnswer(series=(QuerySeries({}, str(result[1])),))
    except (KeyError, IndexError, TypeError):
        return QueryAnswer(error=f"Prometheus answered a {kind} this client cannot read: {body[:200]!r}")
    if kind == "matrix":
        return QueryAnswer(
            error="the query returns a range vector: an instant vector or a scalar is needed (wrap the range in a "
            "function such as rate() or max_over_time())"
        )
    return QueryAnswer(error=f"the query returns a {kind}: an instant vector or a scalar is needed")


def _number(text: str) -> Fraction | float:
    """The exact value of a number as Prometheus writes it: a Fraction, or a float for NaN and the infinities."""
    if text in ("NaN", "+Inf", "-Inf", "Inf"):
        return float(text)
    return Fraction(text)


def _describe(series: Sequence[QuerySeries]) -> str:
    shown = [
        "{" + ", ".join(f'{key}="{value}"' for key, value in sorted(item.labels.items())) + "}"
        for item in series[:_SHOWN_SERIES]
    ]
    more = f" and {len(series) - _SHOWN_SERIES} more" if len(series) > _SHOWN_SERIES else ""
    return ", ".join(shown) + more


def _one(answer: QueryAnswer, what: str) -> tuple[Fraction | float | None, str]:
    """The single number of an answer, or None with why there is not exactly one."""
    if answer.error is not None:
        return None, f"{what}: {answer.error}"
    if not answer.series:
        return None, f"{what} returned no series (no data yet, or its selectors match nothing)"
    if len(answer.series) > 1:
        return None, (
            f"{what} returned {len(answer.series)} series where one is needed ({_describe(answer.series)}): "
            "aggregate them, e.g. with sum()"
        )
    text = answer.series[0].value
    try:
        value = _number(text)
    except (ValueError, ZeroDivisionError):
        return None, f"{what} answered `{text}`, which is not a number"
    if isinstance(value, float) and math.isnan(value):
        return None, f"{what} answered NaN (e.g. 0/0: nothing to divide), not a number to compare"
    return value, text


def measure_answers(rule: Rule, value: QueryAnswer, samples: QueryAnswer | None = None) -> Measurement:
    """Measure a Prometheus rule in one environment from its queries' answers (``samples`` when it has one)."""
    counted = 0
    if samples is not None:
        number, words = _one(samples, "the samples query")
        if number is None and samples.error is None and not samples.series:
            number, words = Fraction(0), "0 (no series)"  # nothing counted yet: zero samples, said so
        if number is None:
            return _insufficient(0, words)
        if not isinstance(number, Fraction) or number < 0:
            return _insufficient(0, f"the samples query answered `{words}`: a count must be finite and not negative")
        # increase() extrapolates (49.7 for 50 events): the whole samples below it are what surely happened.
        counted = math.floor(number)
        if counted < rule.min_samples:
            return _insufficient(counted, f"{counted} samples, fewer than {rule.min_samples} needed")
    number, words = _one(value, "the query")
    if number is None:
        return _insufficient(counted, words)
    counts = f"; {counted} samples" if samples is not None else ""
    if isinstance(number, float):  # an infinity: above every finite threshold, or below every one
        return Measurement(
            value=None, samples=counted, sufficient=True, breached=number > 0, detail=f"query answered {words}{counts}"
        )
    return Measurement(
        value=float(number),
        samples=counted,
        sufficient=True,
        breached=rule.op.holds(number, rule.limit),
        detail=f"query answered {words}{counts}",
    )


def _insufficient(samples: int, detail: str) -> Measurement:
    return Measurement(value=None, samples=samples, sufficient=False, breached=False, detail=detail)


class PrometheusClient:
    """The HTTP adapter: ``GET {base_url}/api/v1/query`` with a timeout; every failure becomes an answer's error."""

    def __init__(self, base_url: str, *, timeout: float, http: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = http or httpx.Client(timeout=timeout)
        self._owned = http is None

    def query(self, promql: str, at: datetime) -> QueryAnswer:
        """Evaluate ``promql`` as an instant query at ``at``; never raises."""
        params = {
            "query": promql,
            "time": f"{at.timestamp():.3f}",
            # Prometheus gives up on its side too, so an expensive query does not keep running after we stopped.
            "timeout": f"{self.timeout:g}s",
        }
        try:
            response = self._http.get(f"{self.base_url}/api/v1/query", params=params, timeout=self.timeout)
        except httpx.TimeoutException:
            return QueryAnswer(error=f"Prometheus at {self.base_url} did not answer within {self.timeout:g}s")
        except httpx.HTTPError as error:
            return QueryAnswer(
                error=f"Prometheus at {self.base_url} could not be reached: {type(error).__name__}: {error}"
            )
        return read_answer(response.status_code, response.content)

    def close(self) -> None:
        """Close the connection pool, when this client made it."""
        if self._owned:
            self._http.close()


def prometheus_source(url: str, timeout: float) -> PrometheusClient | None:
    """The client for ``CONTROLPLANE_PROMETHEUS_URL``, or None when it is empty (no Prometheus configured)."""
    return PrometheusClient(url, timeout=timeout) if url else None


#: (rule name, environment, value query, samples query): a reading counts only for the queries it was taken with.
ReadingKey = tuple[str, str, str, str]


@dataclass(frozen=True, slots=True)
class QueryReadings:
    """The measurements of every Prometheus rule, taken before the evaluation plans (no database session open)."""

    measurements: Mapping[ReadingKey, Measurement] = field(default_factory=dict)
    failures: int = 0
    seconds: float = 0.0

    def measurement(self, rule: Rule, environment: str) -> Measurement:
        """The rule's measurement in ``environment``; insufficient when it was not read with these queries."""
        found = self.measurements.get(_key(rule, environment))
        if found is not None:
            return found
        # A definition applied between reading and planning: measured from the next tick on.
        return _insufficient(0, "not queried yet: the rule was applied during this evaluation")


def _key(rule: Rule, environment: str) -> ReadingKey:
    return (rule.name, environment, rule.query, rule.samples_query)


def read_prometheus_rules(
    rules: Iterable[Rule],
    environments: Sequence[str],
    now: datetime,
    source: PrometheusSource | None,
    *,
    budget: float | None = None,
    max_workers: int = 8,
    monotonic: Callable[[], float] = time.monotonic,
) -> QueryReadings:
    """Query Prometheus for every Prometheus rule in every environment it covers, all at once.

    Queries run on a small thread pool, each with the source's timeout; the whole set waits at most ``budget``
    seconds (1.5 times the timeout by default). A query still unanswered then is insufficient data for this tick,
    so a slow Prometheus delays the evaluation by at most the budget, whatever the number of rules.
    """
    wanted = [
        (rule, environment)
        for rule in rules
        if rule.source is RuleSource.PROMETHEUS
        for environment in (rule.environments or environments)
    ]
    if not wanted:
        return QueryReadings()
    if source is None:
        return QueryReadings({_key(rule, env): _insufficient(0, NOT_CONFIGURED) for rule, env in wanted}, len(wanted))
    started = monotonic()
    texts = {rule.query_for(env) for rule, env in wanted} | {
        rule.samples_query_for(env) for rule, env in wanted if rule.samples_query
    }
    limit = budget if budget is not None else source.timeout * 1.5
    pool = ThreadPoolExecutor(max_workers=min(max_workers, len(texts)), thread_name_prefix="prometheus-query")
    try:
        # The same query text (two rules, or a shared samples query) is asked once.
        futures: dict[str, Future[QueryAnswer]] = {text: pool.submit(source.query, text, now) for text in sorted(texts)}
        wait(futures.values(), timeout=limit, return_when=ALL_COMPLETED)
    finally:
        # Never wait for a straggler: it ends by its own timeout, and its answer is no longer wanted.
        pool.shutdown(wait=False, cancel_futures=True)

    def answer(text: str) -> QueryAnswer:
        future = futures[text]
        if not future.done() or future.cancelled():
            return QueryAnswer(error=f"Prometheus did not answer within this evaluation's {limit:g}s budget")
        error = future.exception()
        if error is not None:  # a source must not raise; if one does, the rule lacks data and says why
            return QueryAnswer(error=f"querying Prometheus failed: {type(error).__name__}: {error}")
        return future.result()

    measurements: dict[ReadingKey, Measurement] = {}
    failed: list[str] = []
    for rule, environment in wanted:
        samples = answer(rule.samples_query_for(environment)) if rule.samples_query else None
        value = answer(rule.query_for(environment))
        measurement = measure_answers(rule, value, samples)
        if value.error is not None or (samples is not None and samples.error is not None):
            failed.append(f"{rule.name} in {environment}: {measurement.detail}")
        measurements[_key(rule, environment)] = measurement
    seconds = monotonic() - started
    if failed:
        logger.warning(
            "prometheus: %d of %d rule readings failed in %.2fs; %s", len(failed), len(wanted), seconds, failed[0]
        )
    return QueryReadings(measurements, len(failed), seconds)
