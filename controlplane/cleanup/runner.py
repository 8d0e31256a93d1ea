"""One cleanup run: list page by page, decide, delete in batches, classify outcomes, count.

Storage, clock and sleep are injected. Memory stays flat: one page at a time. After each fully processed page
the run reports a resume token (the next page's token), so a run that crashes can be started again from there;
objects already deleted on earlier pages are simply no longer listed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import TypeVar

from controlplane.cleanup.selection import CleanupPolicy, ObjectInfo, decide_object
from controlplane.cleanup.storage import (
    MAX_BATCH_SIZE,
    DeleteOutcome,
    DeleteResult,
    ObjectRef,
    Storage,
    TransientStorageError,
)
from controlplane.clock import Clock
from controlplane_client.retry import backoff_delay

__all__ = ["CleanupReport", "RetryPolicy", "SkipReason", "run_cleanup"]

T = TypeVar("T")


class SkipReason:
    """Why a selected object was not deleted, though nothing failed."""

    HELD_OR_RETAINED = "held_or_retained"  # 403: a hold or a retention policy blocks the delete
    CHANGED_SINCE_LISTED = "changed_since_listed"  # 412: a newer generation than the one decided on


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for transient errors: ``base_delay * 2**attempt``, capped at ``max_delay``."""

    max_attempts: int = 5
    base_delay: timedelta = timedelta(milliseconds=500)
    max_delay: timedelta = timedelta(seconds=30)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        # No jitter: a jitter of 1 is the backoff's ceiling itself, base_delay doubled per attempt up to max_delay.
        base, cap = self.base_delay.total_seconds(), self.max_delay.total_seconds()
        return backoff_delay(attempt + 1, base=base, cap=cap, random=lambda: 1.0)


@dataclass
class CleanupReport:
    """What one run did. ``completed`` is false when listing gave up; ``resume_page_token`` says where to go on."""

    dry_run: bool
    scanned: int = 0
    matched: int = 0
    matched_bytes: int = 0
    deleted: int = 0
    already_gone: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    bytes_freed: int = 0
    matched_by_reason: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)
    pages: int = 0
    duration: timedelta = timedelta(0)
    completed: bool = False
    stopped: bool = False
    resume_page_token: str | None = None


MAX_DETAILS = 50


def run_cleanup(
    storage: Storage,
    policy: CleanupPolicy,
    *,
    prefix: str,
    clock: Clock,
    sleep: Callable[[float], None] = time.sleep,
    dry_run: bool = False,
    resume_page_token: str | None = None,
    continue_from: CleanupReport | None = None,
    on_page_done: Callable[[CleanupReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    retry: RetryPolicy | None = None,
) -> CleanupReport:
    """Run ``policy`` over ``prefix`` once; ``now`` is read once so every page is judged at the same instant.

    ``continue_from`` resumes an interrupted run: its counts go on from there, from its ``resume_page_token``.
    ``on_page_done`` sees the running totals after each page (to persist them; raising there stops the run).
    ``should_stop`` is asked between pages; when it says so the run stops with ``stopped`` set, resumable.
    """
    retry = retry or RetryPolicy()
    started = clock()
    if continue_from is not None:
        report = replace(continue_from, skipped=Counter(continue_from.skipped), details=list(continue_from.details))
        report.matched_by_reason = Counter(continue_from.matched_by_reason)
        report.dry_run, report.completed, report.stopped = dry_run, False, False
    else:
        report = CleanupReport(dry_run=dry_run, resume_page_token=resume_page_token)
    earlier = report.duration
    token = report.resume_page_token
    while True:
        if should_stop is not None and should_stop():
            report.stopped = True
            break
        try:
            page = _with_retries(partial(storage.list_page, prefix, token), retry, sleep)
        except TransientStorageError as error:
            _note(report, f"listing gave up after {retry.max_attempts} attempts: {error}")
            break
        report.pages += 1
        selected: list[ObjectInfo] = []
        for obj in page.objects:
            report.scanned += 1
            decision = decide_object(policy, obj, started)
            if decision.delete:
                report.matched += 1
                report.matched_bytes += obj.size
                report.matched_by_reason[decision.reason.value] += 1
                selected.append(obj)
        if not dry_run:
            for start in range(0, len(selected), MAX_BATCH_SIZE):
                _delete_batch(storage, selected[start : start + MAX_BATCH_SIZE], report, retry, sleep)
        token = page.next_page_token
        report.resume_page_token = token
        report.duration = earlier + (clock() - started)
        if token is None:
            report.completed = True
        if on_page_done is not None:
            on_page_done(report)
        if token is None:
            break
    report.duration = earlier + (clock() - started)
    return report


def _with_retries(call: Callable[[], T], retry: RetryPolicy, sleep: Callable[[float], None]) -> T:
    for attempt in range(retry.max_attempts):
        try:
            return call()
        except TransientStorageError:
            if attempt + 1 == retry.max_attempts:
                raise
            sleep(retry.delay(attempt))
    raise AssertionError("unreachable")


def _delete_batch(
    storage: Storage,
    objects: Sequence[ObjectInfo],
    report: CleanupReport,
    retry: RetryPolicy,
    sleep: Callable[[float], None],
) -> None:
    sizes = {(obj.name, obj.generation): obj.size for obj in objects}
    pending = [ObjectRef(obj.name, obj.generation) for obj in objects]
    for attempt in range(retry.max_attempts):
        if attempt:
            sleep(retry.delay(attempt - 1))
        results = storage.delete_batch(pending)
        pending = []
        last_attempt = attempt + 1 == retry.max_attempts
        for result in results:
            if result.outcome is DeleteOutcome.TRANSIENT and not last_attempt:
                pending.append(result.ref)
            else:
                _count(result, sizes[(result.ref.name, result.ref.generation)], report)
        if not pending:
            return


def _count(result: DeleteResult, size: int, report: CleanupReport) -> None:
    outcome = result.outcome
    if outcome is DeleteOutcome.DELETED:
        report.deleted += 1
        report.bytes_freed += size
    elif outcome is DeleteOutcome.NOT_FOUND:
        # Gone already (an earlier attempt or another actor): the goal is met, no bytes freed by us.
        report.already_gone += 1
    elif outcome is DeleteOutcome.FORBIDDEN:
        report.skipped[SkipReason.HELD_OR_RETAINED] += 1
        _note(report, f"{result.ref.name}: {SkipReason.HELD_OR_RETAINED}: {result.detail}")
    elif outcome is DeleteOutcome.PRECONDITION_FAILED:
        report.skipped[SkipReason.CHANGED_SINCE_LISTED] += 1
    else:
        report.failed += 1
        _note(report, f"{result.ref.name}: {outcome.value}: {result.detail}")


def _note(report: CleanupReport, line: str) -> None:
    # Bounded: a run over a million held objects must not grow its report without limit.
    if len(report.details) < MAX_DETAILS:
        report.details.append(line)
