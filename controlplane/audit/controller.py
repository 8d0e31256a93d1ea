"""HTTP routes of the audit log."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.params import QueryParameter

from controlplane.api.dependencies import Work
from controlplane.api.paging import BeforeId, PageLimit
from controlplane.api.roles import Role
from controlplane.audit import service
from controlplane.audit.models import AuditRecord
from controlplane.audit.schemas import AuditRecordRead, AuditVerification
from controlplane.errors import InvalidInput

__all__ = ["AuditController", "to_read"]


def to_read(record: AuditRecord) -> AuditRecordRead:
    """The wire form of a record."""
    return msgspec.convert(record, AuditRecordRead, from_attributes=True)


class AuditController(Controller):
    """Read and verify the audit log (`viewer`)."""

    path = "/audit"
    tags = ["audit"]
    opt = {"role": Role.VIEWER}

    @get("/", summary="Query the audit log")
    async def list_records(
        self,
        uow: Work,
        flag: Annotated[str | None, QueryParameter(name="flag", required=False)] = None,
        environment: Annotated[str | None, QueryParameter(name="environment", required=False)] = None,
        actor: Annotated[str | None, QueryParameter(name="actor", required=False)] = None,
        action: Annotated[str | None, QueryParameter(name="action", required=False)] = None,
        since: Annotated[datetime | None, QueryParameter(name="since", required=False)] = None,
        until: Annotated[datetime | None, QueryParameter(name="until", required=False)] = None,
        before_id: BeforeId = None,
        limit: PageLimit = 100,
    ) -> list[AuditRecordRead]:
        """Records matching every filter, newest first; page with `before_id`."""
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise InvalidInput(
                    "invalid-query", f"`{name}` needs a time zone, e.g. 2026-11-01T12:00:00Z", field=name
                )
        query = partial(
            service.list_audit_records,
            target=flag,
            environment=environment,
            actor=actor,
            action=action,
            since=since,
            until=until,
            before_id=before_id,
            limit=limit,
        )
        return await uow.read(lambda session: [to_read(record) for record in query(session)])

    @get("/verify", summary="Verify the hash chain")
    async def verify(self, uow: Work) -> AuditVerification:
        """Walk the chain and name the first record that does not verify."""
        report = await uow.read(service.verify_audit_chain)
        head = report.head
        return AuditVerification(
            ok=report.broken is None,
            records=report.records,
            head_id=head.id if head else None,
            head_digest=head.digest if head else None,
            first_broken_id=report.broken.record_id if report.broken else None,
            reason=report.broken.reason if report.broken else None,
        )
