"""The audit hash chain detects tampering done behind the API's back, straight in the database."""

from __future__ import annotations

import gc
import warnings
from dataclasses import replace
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from controlplane.audit.chain import digest_of
from controlplane.audit.models import AuditRecord
from controlplane.audit.service import record_content, verify_audit_chain

API = "/api/v1"
FLAG = "enable-reference-images"


def verify(client: TestClient[Litestar], headers: dict[str, str]) -> dict[str, Any]:
    response = client.get(f"{API}/audit/verify", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def record_ids(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.scalars(select(AuditRecord.id).order_by(AuditRecord.id)))


@pytest.fixture
def history(applied: None, client: TestClient[Litestar], admin_headers: dict[str, str]) -> list[int]:
    """A chain of a dozen or so records made through the API; their ids, oldest first."""
    base = f"{API}/flags/{FLAG}/environments/qa/rollout"
    for operation, body in (
        ("start", {}),
        ("pause", {"reason": "a look at the dashboards"}),
        ("resume", {}),
        ("advance", {"reason": "qa is healthy"}),
    ):
        revision = client.get(base, headers=admin_headers).json()["revision"]
        response = client.post(
            f"{base}/{operation}", headers=admin_headers, json={**body, "expected_revision": revision}
        )
        assert response.status_code == 200, response.text
    flag = client.get(f"{API}/flags/{FLAG}", headers=admin_headers).json()
    response = client.patch(
        f"{API}/flags/{FLAG}",
        headers={**admin_headers, "If-Match": str(flag["revision"])},
        params={"reason": "new owner"},
        json={"owner": "team-vision"},
    )
    assert response.status_code == 200, response.text
    assert verify(client, admin_headers)["ok"] is True
    return record_ids(client.app.state.engine)


def test_an_untouched_chain_verifies_in_the_service_with_every_record_counted(
    history: list[int],
    session_factory: sessionmaker[Session],
    client: TestClient[Litestar],
    admin_headers: dict[str, str],
) -> None:
    with session_factory() as session:
        report = verify_audit_chain(session)
        stored = session.scalar(select(func.count()).select_from(AuditRecord))
        last = session.scalars(select(AuditRecord).order_by(AuditRecord.id.desc())).first()

    assert report.broken is None
    assert report.records == stored == len(history)
    assert report.records >= 10
    assert last is not None
    assert verify(client, admin_headers) == {
        "ok": True,
        "records": report.records,
        "head_id": last.id,
        "head_digest": last.digest,
        "first_broken_id": None,
        "reason": None,
    }


def test_an_empty_chain_verifies_with_no_records(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        report = verify_audit_chain(session)
    assert (report.records, report.head, report.broken) == (0, None, None)


def test_altering_a_records_reason_is_reported_at_that_record(
    history: list[int], engine: Engine, client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    target = history[len(history) // 2]
    with engine.begin() as connection:
        changed = connection.execute(
            text("UPDATE audit_records SET reason = :reason WHERE id = :id"), {"reason": "nothing to see", "id": target}
        )
        assert changed.rowcount == 1

    result = verify(client, admin_headers)

    assert result["ok"] is False
    assert result["first_broken_id"] == target
    assert "altered" in result["reason"]
    assert result["records"] == history.index(target) + 1


def test_altering_a_records_after_document_is_reported_at_that_record(
    history: list[int], engine: Engine, client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    with engine.connect() as connection:
        target = connection.scalar(
            select(AuditRecord.id)
            .where(AuditRecord.action == "rollout.advance", AuditRecord.environment == "qa")
            .order_by(AuditRecord.id.desc())
        )
    assert target in history
    with engine.begin() as connection:
        connection.execute(
            update(AuditRecord).where(AuditRecord.id == target).values(after={"state": "rolled_back", "percentage": 0})
        )

    result = verify(client, admin_headers)

    assert result["ok"] is False
    assert result["first_broken_id"] == target
    assert "altered" in result["reason"]


def test_deleting_a_middle_record_is_reported_at_the_record_after_it(
    history: list[int], engine: Engine, client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    position = len(history) // 2
    removed, following = history[position], history[position + 1]
    with engine.begin() as connection:
        assert connection.execute(delete(AuditRecord).where(AuditRecord.id == removed)).rowcount == 1

    result = verify(client, admin_headers)

    assert result["ok"] is False
    assert result["first_broken_id"] == following
    assert "removed" in result["reason"]


def test_rewriting_a_record_together_with_its_digest_is_reported_at_the_record_after_it(
    history: list[int],
    session_factory: sessionmaker[Session],
    client: TestClient[Litestar],
    admin_headers: dict[str, str],
) -> None:
    # A careful forger recomputes the altered record's own digest; the next record's link still gives it away.
    position = len(history) // 2
    target, following = history[position], history[position + 1]
    with session_factory.begin() as session:
        record = session.get_one(AuditRecord, target)
        record.reason = "rewritten"
        record.digest = digest_of(replace(record_content(record), digest=""))

    result = verify(client, admin_headers)

    assert result["ok"] is False
    assert result["first_broken_id"] == following
    assert "previous_digest" in result["reason"]


def test_verifying_a_broken_chain_closes_its_cursor(
    history: list[int], engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    with engine.begin() as connection:
        connection.execute(update(AuditRecord).where(AuditRecord.id == history[1]).values(reason="forged"))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with session_factory() as session:
            report = verify_audit_chain(session)
        gc.collect()

    assert report.broken is not None
    assert (report.broken.record_id, report.records) == (history[1], 2)
    leaks = [str(warning.message) for warning in caught if issubclass(warning.category, ResourceWarning)]
    assert leaks == []


def test_cutting_records_off_the_end_leaves_a_valid_chain_but_moves_the_head(
    history: list[int], engine: Engine, client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    # The chain alone cannot see a truncated tail; the head an operator kept from an earlier verify can.
    before = verify(client, admin_headers)
    with engine.begin() as connection:
        connection.execute(delete(AuditRecord).where(AuditRecord.id >= history[-2]))
    after = verify(client, admin_headers)
    assert after["ok"] is True
    assert after["records"] == before["records"] - 2
    assert (after["head_id"], after["head_digest"]) != (before["head_id"], before["head_digest"])
