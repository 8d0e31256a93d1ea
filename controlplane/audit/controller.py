"""HTTP routes of the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.params import QueryParameter

from controlplane.api.dependencies import DbSession
from controlplane.audit import service
from controlplane.audit.models import AuditRecord
from controlplane.audit.schemas import AuditRecordRead, AuditVerification
from controlplane.auth.roles import Role

__all__ = ["AuditController", "to_read"]


def to_read(record: AuditRecord) -> AuditRecordRead:
    """The wire form of a record."""
    return msgspec.convert(record, AuditRecordRead, from_attributes=True)


class AuditController(Controller):
    """Read and verify the audit log (`viewer`)."""

    path = "/audit"
    tags = ["audit"]
    opt = {"role": Role.VIEWER}

    @get("/", sync_to_thread=True, summary="Query the audit log")
    def list_records(
        self,
        session: DbSession,
        flag: Annotated[str | None, QueryParameter(name="flag", required=False)] = None,
        environment: Annotated[str | None, QueryParameter(name="environment", required=False)] = None,
        actor: Annotated[str | None, QueryParameter(name="actor", required=False)] = None,
        action: Annotated[str | None, QueryParameter(name="action", required=False)] = None,
        since: Annotated[datetime | None, QueryParameter(name="since", required=False)] = None,
        until: Annotated[datetime | None, QueryParameter(name="until", required=False)] = None,
        before_id: Annotated[int | None, QueryParameter(name="before_id", required=False, ge=1)] = None,
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=1000)] = 100,
    ) -> list[AuditRecordRead]:
        """Records matching every filter, newest first; page with `before_id`."""
        records = service.list_audit_records(
            session,
            target=flag,
            environment=environment,
            actor=actor,
            action=action,
            since=since,
            until=until,
            before_id=before_id,
            limit=limit,
        )
        return [to_read(record) for record in records]

    @get("/verify", sync_to_thread=True, summary="Verify the hash chain")
    def verify(self, session: DbSession) -> AuditVerification:
        """Walk the chain and name the first record that does not verify."""
        count, broken = service.verify_audit_chain(session)
        if broken is None:
            return AuditVerification(ok=True, records=count)
        return AuditVerification(ok=False, records=count, first_broken_id=broken.record_id, reason=broken.reason)
