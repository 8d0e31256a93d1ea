"""Per-subject caps (alerting.subjects): each subject's selected events count in time order up to the cap, none
after; a window where the allowance runs out is split by largest remainder; events without a subject, events the
rule does not select and windows outside the rule's window are untouched; the summed and the per-window reads are
capped alike. Pure functions, a fixed clock, hypothesis for the properties."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.alerting.rules import Series, assess, measure, window_cutoff
from controlplane.alerting.subjects import SubjectCount, cap_summed, cap_windows, capped, dropped
from controlplane.catalog.rules import Comparison, Rule, RuleKind, Selector

NOW = datetime(2026, 12, 4, 12, 0, 5, tzinfo=UTC)
SIZE = timedelta(seconds=10)
SINCE = window_cutoff(NOW, timedelta(minutes=5), SIZE)
ALICE, BOB, CAROL = "a" * 32, "b" * 32, "c" * 32
UPLOAD_5XX = {"route": "upload", "status_class": "5xx"}
UPLOAD_2XX = {"route": "upload", "status_class": "2xx"}
OTHER_5XX = {"route": "other", "status_class": "5xx"}

RATIO = Rule(
    name="upload-failure-rate",
    pipeline="images",
    kind=RuleKind.RATIO,
    event="http_request",
    op=Comparison.GT,
    threshold="0.03",
    min_samples=50,
    where=Selector({"route": frozenset({"upload"})}),
    numerator=Selector({"status_class": frozenset({"5xx"})}),
    per_subject_cap=10,
)

#: (window number from the rule's cutoff, subject or None, variant, labels, events)
Sent = tuple[int, str | None, str, dict[str, str], int]


def start(number: int) -> datetime:
    return SINCE + number * SIZE


def stored(sent: list[Sent]) -> tuple[list[Series], list[SubjectCount]]:
    """What ingest stores of ``sent``: one series per window, variant and labels, and the subject counts."""
    windows: Counter[tuple[int, str, tuple[tuple[str, str], ...]]] = Counter()
    subjects: Counter[tuple[int, str, str, tuple[tuple[str, str], ...]]] = Counter()
    for number, subject, variant, labels, count in sent:
        key = tuple(sorted(labels.items()))
        windows[(number, variant, key)] += count
        if subject is not None:
            subjects[(number, subject, variant, key)] += count
    return (
        [Series(start(n), "", variant, dict(key), count) for (n, variant, key), count in sorted(windows.items())],
        [
            SubjectCount(start(n), subject, "", variant, dict(key), count)
            for (n, subject, variant, key), count in sorted(subjects.items())
        ],
    )


def summed(windows: list[Series]) -> list[Series]:
    """The windows summed per variant and labels, starting at the rule's cutoff, as fetch_series reads them."""
    totals: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for item in windows:
        if SINCE <= item.start <= NOW:
            totals[(item.variant, tuple(sorted(item.labels.items())))] += item.count
    return [Series(SINCE, "", variant, dict(key), count) for (variant, key), count in sorted(totals.items())]


def selected(series: Sequence[Series], rule: Rule = RATIO) -> int:
    return sum(item.count for item in series if rule.where.admits(item.outcome, item.variant, item.labels))


def test_one_subjects_200_failures_count_10_times_and_the_ratio_is_the_users_again() -> None:
    # 600 healthy uploads from 300 users (2 each), and one client's 200 failing uploads spread over 5 minutes.
    sent: list[Sent] = [(n % 30, f"{n:032x}", "on", UPLOAD_2XX, 2) for n in range(300)]
    sent += [(n % 30, ALICE, "on", UPLOAD_5XX, 1) for n in range(200)]
    windows, subjects = stored(sent)

    plain = measure(RATIO, summed(windows), (), NOW, window_size=SIZE)
    capped_summed, capped_windows = capped(RATIO, summed(windows), windows, subjects, NOW, window_size=SIZE)
    measured = measure(RATIO, capped_summed, (), NOW, window_size=SIZE)

    assert plain.value == 200 / 800
    assert measured.value == float(Fraction(10, 610)) and measured.samples == 610
    assert measure(RATIO, capped_windows, (), NOW, window_size=SIZE).value == measured.value


def test_a_subjects_events_count_in_time_order_and_the_window_it_runs_out_in_is_split_by_largest_remainder() -> None:
    # 4 events a window for 5 windows: 4 + 4 count, then 2 of the third window's 4 (3 failing, 1 not), none after.
    sent: list[Sent] = []
    for number in range(5):
        sent += [(number, ALICE, "on", UPLOAD_5XX, 3), (number, ALICE, "on", UPLOAD_2XX, 1)]
    windows, subjects = stored(sent)

    after = cap_windows(RATIO, windows, subjects, NOW, window_size=SIZE)

    kept = {(item.start, item.labels["status_class"]): item.count for item in after}
    assert {key: count for key, count in kept.items() if key[0] < start(2)} == {
        (start(0), "2xx"): 1,
        (start(0), "5xx"): 3,
        (start(1), "2xx"): 1,
        (start(1), "5xx"): 3,
    }
    # 2 left of the third window's 4, split 3:1: quotas 1.5 and 0.5, floors 1 and 0; the last one is a tie of
    # remainders, decided by a stable hash (the same at every evaluation).
    third = {status: count for (at, status), count in kept.items() if at == start(2)}
    assert sum(third.values()) == 2 and third.get("5xx", 0) >= 1
    assert third == {status: count for (at, status), count in _kept_again(windows, subjects) if at == start(2)}
    assert not [key for key in kept if key[0] > start(2)]
    assert selected(after) == 10


def _kept_again(windows: list[Series], subjects: list[SubjectCount]) -> list[tuple[tuple[datetime, str], int]]:
    again = cap_windows(RATIO, list(reversed(windows)), list(reversed(subjects)), NOW, window_size=SIZE)
    return [((item.start, item.labels["status_class"]), item.count) for item in again]


def test_the_largest_remainder_goes_to_the_series_closest_to_its_next_event() -> None:
    # 7 of 10 left: quotas 4.9 (5xx, 7 events) and 2.1 (2xx, 3 events) -> 5 and 2.
    windows, subjects = stored([(0, ALICE, "on", UPLOAD_5XX, 7), (0, ALICE, "on", UPLOAD_2XX, 3)])

    after = cap_windows(replace(RATIO, per_subject_cap=7), windows, subjects, NOW, window_size=SIZE)

    assert {item.labels["status_class"]: item.count for item in after} == {"5xx": 5, "2xx": 2}


def test_events_without_a_subject_and_events_the_rule_does_not_select_are_untouched() -> None:
    sent: list[Sent] = [
        (0, None, "on", UPLOAD_5XX, 50),  # no subject: counted as before
        (0, ALICE, "on", OTHER_5XX, 40),  # not selected (route other): neither capped nor using the allowance
        (1, ALICE, "on", UPLOAD_5XX, 12),
    ]
    windows, subjects = stored(sent)

    after = cap_windows(RATIO, windows, subjects, NOW, window_size=SIZE)

    counts = {(item.start, item.labels["route"]): item.count for item in after}
    assert counts == {(start(0), "upload"): 50, (start(0), "other"): 40, (start(1), "upload"): 10}


def test_a_subject_within_its_cap_and_a_rule_without_one_read_the_series_as_they_are() -> None:
    windows, subjects = stored([(0, ALICE, "on", UPLOAD_5XX, 10), (3, BOB, "off", UPLOAD_2XX, 4)])
    uncapped = replace(RATIO, per_subject_cap=None)

    assert cap_windows(RATIO, windows, subjects, NOW, window_size=SIZE) is windows
    assert capped(uncapped, summed(windows), windows, subjects, NOW, window_size=SIZE)[1] is windows
    assert dropped(uncapped, subjects, SINCE, NOW) == {}


def test_the_allowance_counts_from_the_start_of_the_rules_window() -> None:
    # 8 events just before the window do not use the allowance up: the window's 10 all count.
    windows, subjects = stored([(-1, ALICE, "on", UPLOAD_5XX, 8), (0, ALICE, "on", UPLOAD_5XX, 10)])

    after = cap_windows(RATIO, windows, subjects, NOW, window_size=SIZE)

    assert {item.start: item.count for item in after} == {start(-1): 8, start(0): 10}


def test_a_sequential_rule_folds_the_capped_windows_and_measures_the_capped_sums() -> None:
    rule = replace(RATIO, confidence="0.99")
    sent: list[Sent] = [(n % 30, f"{n:032x}", "on", UPLOAD_2XX, 3) for n in range(300)]
    sent += [(n % 30, ALICE, "on", UPLOAD_5XX, 2) for n in range(300)]
    windows, subjects = stored(sent)

    read_summed, read_windows = capped(rule, summed(windows), windows, subjects, NOW, window_size=SIZE)
    measurement, status = assess(rule, None, read_summed, (), NOW, window_size=SIZE, windows=read_windows)
    uncapped, breached = assess(rule, None, summed(windows), (), NOW, window_size=SIZE, windows=windows)

    assert measurement.value == float(Fraction(10, 910))
    assert "sequential: clear" in measurement.detail and status.state.value == "inactive"
    # Without the cap, the one client's 600 failures are 40% of the uploads: a breach at once.
    assert uncapped.value == 0.4 and breached.state.value == "firing"


def test_a_cohort_rule_caps_each_subject_across_both_variants() -> None:
    rule = replace(
        RATIO,
        kind=RuleKind.COHORT,
        threshold="0.02",
        canary_variant="on",
        baseline_variant="off",
        min_samples=1,
        per_subject_cap=5,
    )
    windows, subjects = stored([(0, CAROL, "off", UPLOAD_2XX, 4), (1, CAROL, "on", UPLOAD_5XX, 4)])

    after = cap_windows(rule, windows, subjects, NOW, window_size=SIZE)

    assert {item.variant: item.count for item in after} == {"off": 4, "on": 1}


# --- properties ---------------------------------------------------------------------------------------------------

LABELS = (UPLOAD_5XX, UPLOAD_2XX, OTHER_5XX)
sends = st.lists(
    st.tuples(
        st.integers(min_value=-2, max_value=31),  # some windows before the rule's and one after now
        st.sampled_from([None, ALICE, BOB, CAROL]),
        st.sampled_from(["on", "off"]),
        st.sampled_from(LABELS),
        st.integers(min_value=1, max_value=9),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(sent=sends, cap=st.integers(min_value=1, max_value=25))
def test_capped_counts_are_whole_never_above_the_cap_per_subject_and_leave_everything_else(
    sent: list[Sent], cap: int
) -> None:
    rule = replace(RATIO, per_subject_cap=cap)
    windows, subjects = stored(sent)

    read_summed, read_windows = capped(rule, summed(windows), windows, subjects, NOW, window_size=SIZE)

    def inside(item: Series | SubjectCount) -> bool:
        return SINCE <= item.start <= NOW and RATIO.where.admits(item.outcome, item.variant, item.labels)

    # Per subject: what counts is its selected events in the window, up to the cap.
    by_subject: Counter[str] = Counter()
    for row in subjects:
        if inside(row):
            by_subject[row.subject] += row.count
    anonymous_inside = sum(
        count
        for number, subject, _, labels, count in sent
        if subject is None and labels["route"] == "upload" and SINCE <= start(number) <= NOW
    )
    expected = anonymous_inside + sum(min(cap, total) for total in by_subject.values())
    assert selected([item for item in read_windows if SINCE <= item.start <= NOW]) == expected
    assert selected(list(read_summed)) == expected
    for subject in by_subject:
        alone = [row for row in subjects if row.subject == subject]
        drops = dropped(rule, alone, SINCE, NOW)
        assert by_subject[subject] - sum(drops.values()) == min(cap, by_subject[subject])
        if drops:  # in time order: everything after the window it ran out in is dropped whole
            first = min(at for at, _ in drops)
            for row in alone:
                if inside(row) and row.start > first:
                    identity = (row.variant, row.outcome, tuple(sorted(row.labels.items())))
                    assert drops[(row.start, identity)] == row.count

    # Whole counts, never more than stored, and nothing outside the window or the rule's selection touched.
    before = {(item.start, item.variant, tuple(sorted(item.labels.items()))): item.count for item in windows}
    after = {(item.start, item.variant, tuple(sorted(item.labels.items()))): item.count for item in read_windows}
    for key, count in after.items():
        assert isinstance(count, int) and 0 < count <= before[key]
    for item in windows:
        if not inside(item):
            assert after[(item.start, item.variant, tuple(sorted(item.labels.items())))] == item.count

    # The two reads agree: the capped windows summed are the capped sums.
    totals: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for item in read_windows:
        if SINCE <= item.start <= NOW:
            totals[(item.variant, tuple(sorted(item.labels.items())))] += item.count
    assert {(item.variant, tuple(sorted(item.labels.items()))): item.count for item in read_summed} == +totals
    assert list(cap_summed(rule, summed(windows), subjects, NOW, window_size=SIZE)) == list(read_summed)
