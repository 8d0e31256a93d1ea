"""HTTP routes of silences (read: `viewer`, create and expire: `operator`) and the notification log (`viewer`)."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import JSONBody, QueryParameter
from sqlalchemy.orm import Session

from controlplane.api.dependencies import Now, Work
from controlplane.api.openapi import problems
from controlplane.api.paging import BeforeId, PageLimit, RowId
from controlplane.api.roles import Role
from controlplane.auth.dependencies import TokenPrincipal
from controlplane.notifications import service
from controlplane.notifications.models import Notification, Silence
from controlplane.notifications.schemas import NotificationRead, NotificationStatus, SilenceCreate, SilenceRead

__all__ = ["NotificationController", "SilenceController", "to_notification_read", "to_silence_read"]


def to_silence_read(silence: Silence, now: datetime) -> SilenceRead:
    """The wire form of a silence, with its state at ``now``."""
    return SilenceRead(
        id=silence.id,
        matchers=dict(silence.matchers),
        starts_at=silence.starts_at,
        ends_at=silence.ends_at,
        state=service.silence_state(silence, now),
        created_by=silence.created_by,
        comment=silence.comment,
        created_at=silence.created_at,
    )


def to_notification_read(notification: Notification) -> NotificationRead:
    """The wire form of a notification."""
    return msgspec.convert(notification, NotificationRead, from_attributes=True)


class SilenceController(Controller):
    """Mute notifications of matching alerts for a while; alert states stay as they are."""

    path = "/silences"
    tags = ["silences"]
    opt = {"role": Role.VIEWER}

    @get("/", summary="List silences")
    async def list_silences(
        self,
        uow: Work,
        now: Now,
        include_expired: Annotated[bool, QueryParameter(name="all", required=False)] = False,
    ) -> list[SilenceRead]:
        """Silences not yet over (active or pending), newest first; `?all=true` adds expired ones."""

        def read(session: Session) -> list[SilenceRead]:
            silences = service.list_silences(session, now=now, include_expired=include_expired)
            return [to_silence_read(silence, now) for silence in silences]

        return await uow.read(read)

    @post("/", opt={"role": Role.OPERATOR}, summary="Create a silence")
    async def create_silence(
        self, uow: Work, data: JSONBody[SilenceCreate], principal: TokenPrincipal, now: Now
    ) -> SilenceRead:
        """Silence alerts whose fields equal every matcher, until `ends_at` or for `duration_seconds`; audited."""
        create = partial(service.create_silence, request=data, actor=principal.name, now=now)
        return await uow.write(lambda session: to_silence_read(create(session), now))

    @delete(
        "/{silence_id:int}",
        opt={"role": Role.OPERATOR},
        status_code=200,
        summary="Expire a silence",
        responses=problems(409),
    )
    async def expire_silence(self, uow: Work, silence_id: RowId, principal: TokenPrincipal, now: Now) -> SilenceRead:
        """End a silence now; the next notification of a matching alert is sent. Audited."""
        expire = partial(service.expire_silence, silence_id=silence_id, actor=principal.name, now=now)
        return await uow.write(lambda session: to_silence_read(expire(session), now))


class NotificationController(Controller):
    """The notification log: every message queued, sent, retried, failed or silenced."""

    path = "/notifications"
    tags = ["notifications"]
    opt = {"role": Role.VIEWER}

    @get("/", summary="Query the notification log")
    async def list_notifications(
        self,
        uow: Work,
        status: Annotated[NotificationStatus | None, QueryParameter(name="status", required=False)] = None,
        receiver: Annotated[str | None, QueryParameter(name="receiver", required=False)] = None,
        rule: Annotated[str | None, QueryParameter(name="rule", required=False)] = None,
        before_id: BeforeId = None,
        limit: PageLimit = 100,
    ) -> list[NotificationRead]:
        """Notifications matching every filter, newest first; page with `before_id`."""
        query = partial(
            service.list_notifications, status=status, receiver=receiver, rule=rule, before_id=before_id, limit=limit
        )
        return await uow.read(lambda session: [to_notification_read(row) for row in query(session)])
