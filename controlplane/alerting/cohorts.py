"""Sequential cohort decisions for cohort rules that declare ``confidence:``: is the canary worse than the baseline,
and are the cohorts the sizes the rollout says?

**Canary against baseline: an always-valid two-sample test on the difference of shares.** The counts of both
cohorts are summed over the closed windows since the population started (the rollout's split last changed); with
``d_hat`` the canary's share of matching events minus the baseline's and ``V`` its variance, the normal-mixture
sequential probability ratio for a true difference ``theta`` (mSPRT: R. Johari, P. Koomen, L. Pekelis, D. Walsh,
2017, "Peeking at A/B tests: why it matters, and what to do about it", KDD; the normal mixture of S. R. Howard,
A. Ramdas, J. McAuliffe, J. Sekhon, 2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann.
Statist. 49) with mixing variance ``tau^2`` is

    Lambda_tau(theta) = sqrt(V / (V + tau^2)) exp(tau^2 (d_hat - theta)^2 / (2 V (V + tau^2)))

a nonnegative martingale under ``theta`` with mean 1, as is the average over several ``tau``: so by Ville's
inequality it ever reaches ``1 / alpha`` (``alpha = 1 - c``) with probability at most ``alpha``, at whatever looks
(asymptotically: ``V`` is estimated, as in the cited works). One ``tau`` is tight for effects of its size only (with
``tau`` at the alternative, a canary failing 20% against 2% took ten times the events it needs), so the test averages
``tau = k (delta_1 - delta)`` for k = 1, 2, 4, 8 and 16. The rule's threshold is the difference ``delta`` it must not
exceed and its alternative ``delta_1`` the difference it tests for: **breach** when ``d_hat > delta`` and the mixture
at ``theta = delta`` reaches ``1 / alpha``, **clear** when ``d_hat < delta_1`` and the mixture at ``theta = delta_1``
does (no regression of that size), **undecided** otherwise.

Each side is tested only once both cohorts expect at least 5 events of each kind under its hypothesis (below that
the normal approximation is far off), and with the variance its hypothesis implies (a score test, as Wilson's
interval is) when that is larger than the observed one, shares shrunk to ``(k + 1/2) / (n + 1)``: with few events
the observed share is often 0, whose variance would let a handful of clean events "prove" a canary fine (with the
observed variance alone, 6% of one-hour trials at the alternative cleared, against the 1% the confidence promises).

Why cumulative and not a CUSUM: a cohort comparison asks whether the flag made things worse, which holds from the
moment the split started, while a degradation of a dependency in the middle of a stage hits both cohorts alike
and is not the flag's doing. So the counts start when the rollout's split last changed (a new stage starts a new
test) and are never forgotten within it.

**Sample ratio mismatch: a sequential multinomial test** (M. Lindon, A. Malek, 2022, "Anytime-valid inference for
multinomial count data", NeurIPS). Under the rollout's split the canary's share of events is ``q``; the Bayes factor
of a Beta(K q, K (1 - q)) mixture against ``q``,

    BF = B(K q + n_c, K (1 - q) + n_b) / B(K q, K (1 - q)) / (q^n_c (1 - q)^n_b),     K = 100

is a nonnegative martingale with mean 1 under the split, so by Ville's inequality it ever reaches ``1 / alpha``
with probability at most ``alpha``: a **mismatch** then, and the comparison is untrustworthy whatever it shows
(users who get the flag behave differently, events are lost in one cohort, the bucketing is broken). Events of one
user are not independent, so a few very active users make the split of events drift more than chance: the check
then calls a mismatch that is really overdispersion. That is still a comparison not to trust.

Pure: no I/O, no clock. Floats: these are logarithms and square roots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controlplane.alerting.sequential import Evidence, Verdict

__all__ = [
    "CONCENTRATION",
    "CohortEvidence",
    "CohortTest",
    "Comparison",
    "Population",
    "compare",
    "expected_share",
    "mismatch_evidence",
    "mixture_evidence",
    "outlook",
    "stored_evidence",
]

CONCENTRATION = 100.0  # K of the Beta mixture of the sample-ratio check


@dataclass(frozen=True, slots=True)
class Population:
    """Whom the cohorts hold, as the flag serves them now: the canary's expected share of events (None: the flag
    has targeting rules or no rollout, so no split to expect) and since when it has served that split."""

    expected_share: float | None
    since: datetime
    revision: int

    @property
    def basis(self) -> str:
        """Names the split: a test summed under another split is not continued."""
        share = "none" if self.expected_share is None else repr(self.expected_share)
        return f"share {share} revision {self.revision} since {self.since.isoformat()}"


def expected_share(
    canary: str,
    baseline: str,
    *,
    enabled: bool,
    targeting: Sequence[Any],
    rollout: Mapping[str, Any] | None,
    default_variant: str,
    segment: tuple[str, str] | None = None,
) -> float | None:
    """The share of events the ``canary`` cohort should hold under a flag's state: the rollout's percentage when the
    flag serves nothing but a plain percentage split of the canary against the ``baseline`` (None otherwise:
    targeting rules or a conditional rollout send users to a variant whatever the split, so no share is expected).

    A rollout run per segment serves each segment its own percentage: a rule scoped to one segment (``segment``,
    its attribute and value, as the definitions loader derives it) expects that segment's; a rule over the whole
    environment expects none."""
    if not enabled or targeting or not rollout or rollout.get("when"):
        return None
    if rollout.get("variant") != canary or default_variant != baseline:
        return None
    segments = rollout.get("segments")
    if segments:
        if segment is None or segments.get("attribute") != segment[0]:
            return None
        percentage = (segments.get("percentages") or {}).get(segment[1])
        if percentage is None:
            return None
    else:
        percentage = rollout.get("percentage", 0.0)
    share = float(percentage) / 100
    return share if 0 < share < 1 else None


@dataclass(frozen=True, slots=True)
class CohortEvidence:
    """A cohort rule's counts since its population started, stored with the alert's state.

    ``through`` is the end of the last folded window; ``basis`` names the rule's hypotheses and the population
    (counts summed under another split are discarded, not reused).
    """

    canary_events: int
    canary_matching: int
    baseline_events: int
    baseline_matching: int
    through: datetime
    basis: str

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {
            "kind": "cohort",
            "canary": [self.canary_events, self.canary_matching],
            "baseline": [self.baseline_events, self.baseline_matching],
            "through": self.through.isoformat(),
            "basis": self.basis,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CohortEvidence:
        """Evidence read back from its stored form."""
        canary, baseline = data["canary"], data["baseline"]
        return cls(
            canary_events=int(canary[0]),
            canary_matching=int(canary[1]),
            baseline_events=int(baseline[0]),
            baseline_matching=int(baseline[1]),
            through=datetime.fromisoformat(data["through"]),
            basis=str(data["basis"]),
        )

    def plus(self, canary: tuple[int, int], baseline: tuple[int, int], through: datetime) -> CohortEvidence:
        """These counts with one more window's (events, matching) of each cohort added."""
        return CohortEvidence(
            canary_events=self.canary_events + canary[0],
            canary_matching=self.canary_matching + canary[1],
            baseline_events=self.baseline_events + baseline[0],
            baseline_matching=self.baseline_matching + baseline[1],
            through=through,
            basis=self.basis,
        )


def stored_evidence(data: Mapping[str, Any]) -> Evidence | CohortEvidence:
    """A sequential statistic read back from its stored form: a cohort's counts, or a CUSUM's evidence."""
    return CohortEvidence.from_json(data) if data.get("kind") == "cohort" else Evidence.from_json(data)


@dataclass(frozen=True, slots=True)
class CohortTest:
    """The hypotheses of a sequential cohort rule: the difference it must not exceed and the one it tests for."""

    threshold: float
    alternative: float
    confidence: float

    def __post_init__(self) -> None:
        if not -1 < self.threshold < self.alternative < 1:
            raise ValueError(
                f"a sequential cohort rule needs -1 < threshold < alternative < 1, not {self.threshold}, "
                f"{self.alternative}"
            )
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1, not {self.confidence}")

    @property
    def basis(self) -> str:
        """Names the hypotheses."""
        return f"cohort {self.threshold!r} {self.alternative!r} {self.confidence!r}"


@dataclass(frozen=True, slots=True)
class Comparison:
    """What the counts show: the verdict, the estimated difference (None without events in a cohort), the log
    mixture ratios toward a breach and toward a clear (decided at ``limit``, ln(1 / (1 - c))), and the sample-ratio
    check (``mismatch``; ``ratio_evidence`` its log Bayes factor, None when no split is expected)."""

    verdict: Verdict
    difference: float | None
    breach_evidence: float
    clear_evidence: float
    limit: float
    mismatch: bool
    ratio_evidence: float | None


#: Multiples of (alternative - threshold) the mixture averages over: effects from the one tested for to 16 times it.
SCALES = (1.0, 2.0, 4.0, 8.0, 16.0)


def _shrunk(matching: int, events: int) -> float:
    return (matching + 0.5) / (events + 1)


def _within(share: float) -> float:
    return min(max(share, 1e-6), 1 - 1e-6)


def _variance(canary: float, baseline: float, evidence: CohortEvidence) -> float:
    """The variance of the difference of shares for these true shares and the evidence's cohort sizes."""
    return canary * (1 - canary) / evidence.canary_events + baseline * (1 - baseline) / evidence.baseline_events


#: Expected events of each kind a cohort needs before its share is taken as normal (the n p >= 5 rule: W. G.
#: Cochran, 1952, "The chi-square test of goodness of fit", Ann. Math. Statist. 23).
NORMAL_ENOUGH = 5.0


def _normal_enough(evidence: CohortEvidence, canary: float, baseline: float) -> bool:
    """Whether both cohorts are large enough, at these shares, for the normal approximation the test rests on: a
    canary of 7 events with 3 failures at a tested 4% is a 1-in-450 event that the normal curve puts at 1 in 10^5
    (measured: the only false breaches at the threshold came from such first windows)."""
    return (
        evidence.canary_events * min(canary, 1 - canary) >= NORMAL_ENOUGH
        and evidence.baseline_events * min(baseline, 1 - baseline) >= NORMAL_ENOUGH
    )


def mixture_evidence(gap: float, variance: float, spread: float) -> float:
    """ln of the normal-mixture ratio for an estimate ``gap`` away from the tested difference, averaged over
    ``tau = k * spread`` for k in SCALES (see the module docstring)."""
    terms = []
    for scale in SCALES:
        tau2 = (scale * spread) ** 2
        terms.append(
            0.5 * math.log(variance / (variance + tau2)) + tau2 * gap * gap / (2 * variance * (variance + tau2))
        )
    top = max(terms)
    return top + math.log(sum(math.exp(term - top) for term in terms) / len(terms))


def mismatch_evidence(canary: int, baseline: int, share: float) -> float:
    """ln of the Beta-mixture Bayes factor against the canary's expected ``share`` of events (0 < share < 1)."""
    a, b = CONCENTRATION * share, CONCENTRATION * (1 - share)
    mixture = _log_beta(a + canary, b + baseline) - _log_beta(a, b)
    return mixture - canary * math.log(share) - baseline * math.log1p(-share)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def compare(evidence: CohortEvidence, test: CohortTest, expected_share: float | None) -> Comparison:
    """Decide on the counts of ``evidence``: the two-sample test, and the sample-ratio check when a split is expected.

    A mismatch makes the verdict undecided: a comparison of cohorts that are not the ones the rollout made says
    nothing, neither a breach nor a clear.
    """
    limit = -math.log1p(-test.confidence)
    ratio: float | None = None
    mismatch = False
    if expected_share is not None and 0 < expected_share < 1:
        ratio = mismatch_evidence(evidence.canary_events, evidence.baseline_events, expected_share)
        mismatch = ratio >= limit
    if not evidence.canary_events or not evidence.baseline_events:
        return Comparison(Verdict.UNDECIDED, None, 0.0, 0.0, limit, mismatch, ratio)
    canary = evidence.canary_matching / evidence.canary_events
    baseline = evidence.baseline_matching / evidence.baseline_events
    difference = canary - baseline
    observed = _variance(
        _shrunk(evidence.canary_matching, evidence.canary_events),
        _shrunk(evidence.baseline_matching, evidence.baseline_events),
        evidence,
    )
    base = _shrunk(evidence.baseline_matching, evidence.baseline_events)
    spread = test.alternative - test.threshold
    breach = clear = 0.0
    tested = _within(base + test.threshold)
    if difference > test.threshold and _normal_enough(evidence, tested, base):
        variance = max(observed, _variance(tested, base, evidence))
        breach = mixture_evidence(difference - test.threshold, variance, spread)
    tested = _within(base + test.alternative)
    if difference < test.alternative and _normal_enough(evidence, tested, base):
        variance = max(observed, _variance(tested, base, evidence))
        clear = mixture_evidence(test.alternative - difference, variance, spread)
    if mismatch:
        found = Verdict.UNDECIDED
    elif breach >= limit:
        found = Verdict.BREACH
    elif clear >= limit:
        found = Verdict.CLEAR
    else:
        found = Verdict.UNDECIDED
    return Comparison(found, difference, max(breach, 0.0), max(clear, 0.0), limit, mismatch, ratio)


def outlook(evidence: CohortEvidence, test: CohortTest) -> tuple[Verdict, int] | None:
    """About how many more canary events (the baseline growing alike, both shares as now) an undecided comparison
    needs, and the decision it would reach; None when it has no events yet or would not decide within 1,000 times
    its events so far."""
    if not evidence.canary_events or not evidence.baseline_events:
        return None

    def scaled(times: int) -> CohortEvidence:
        return CohortEvidence(
            evidence.canary_events * times,
            evidence.canary_matching * times,
            evidence.baseline_events * times,
            evidence.baseline_matching * times,
            evidence.through,
            evidence.basis,
        )

    low, high = 1, 2
    while compare(scaled(high), test, None).verdict is Verdict.UNDECIDED:
        if high >= 1_000:
            return None
        low, high = high, min(high * 2, 1_000)
    while high - low > 1:  # the evidence grows with the counts at fixed shares: the first deciding multiple
        middle = (low + high) // 2
        if compare(scaled(middle), test, None).verdict is Verdict.UNDECIDED:
            low = middle
        else:
            high = middle
    return compare(scaled(high), test, None).verdict, evidence.canary_events * (high - 1)
