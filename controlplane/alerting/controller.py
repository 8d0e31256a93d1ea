"""HTTP routes of alerting: alert states and history (`viewer`). The Alertmanager webhook is guarding's."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter
from sqlalchemy.orm import Session

from controlplane.alerting import service
from controlplane.alerting.models import AlertStateRow
from controlplane.alerting.schemas import AlertRead, AlertTransitionRead
from controlplane.api.dependencies import Work
from controlplane.api.paging import PageLimit
from controlplane.api.roles import Role
from controlplane.catalog.rules import AlertState, Rule
from controlplane.catalog.service import load_rules
from controlplane.errors import InvalidInput

__all__ = ["AlertController"]


def _alerts(session: Session, state: str | None) -> list[AlertRead]:
    rules: dict[str, Rule] = {rule.name: rule for rule in load_rules(session)}
    reads = []
    for row in service.list_alert_states(session, state=state):
        rule = rules.get(row.rule)
        if rule is None:
            continue  # a rule removed from its definition: its old state means nothing now
        reads.append(_read(row, rule))
    return reads


def _read(row: AlertStateRow, rule: Rule) -> AlertRead:
    return AlertRead(
        rule=row.rule,
        pipeline=row.pipeline,
        environment=row.environment,
        state=row.state,
        since=row.since,
        value=row.value,
        samples=row.samples,
        detail=row.detail,
        condition=rule.condition(),
        severity=rule.severity.value,
        flag=rule.flag,
        active_since=row.active_since,
        last_breach_at=row.last_breach_at,
    )


class AlertController(Controller):
    """Alert states and their history."""

    path = "/alerts"
    tags = ["alerting"]
    opt = {"role": Role.VIEWER}

    @get("/", summary="Alert states")
    async def list_alerts(
        self, uow: Work, only: Annotated[str | None, QueryParameter(name="state", required=False)] = None
    ) -> list[AlertRead]:
        """Every rule's state in every environment, firing first; `?state=firing` filters."""
        if only is not None and only not in {item.value for item in AlertState}:
            raise InvalidInput(
                "invalid-query", f"state must be one of {', '.join(s.value for s in AlertState)}", field="state"
            )
        return await uow.read(partial(_alerts, state=only))

    @get("/history", summary="Alert state changes")
    async def history(
        self,
        uow: Work,
        rule: Annotated[str | None, QueryParameter(name="rule", required=False)] = None,
        environment: Annotated[str | None, QueryParameter(name="environment", required=False)] = None,
        limit: PageLimit = 100,
    ) -> list[AlertTransitionRead]:
        """State changes with the measured value, threshold and window, newest first."""

        def read(session: Session) -> list[AlertTransitionRead]:
            rows = service.list_transitions(session, rule=rule, environment=environment, limit=limit)
            return [
                AlertTransitionRead(
                    id=row.id,
                    rule=row.rule,
                    pipeline=row.pipeline,
                    environment=row.environment,
                    from_state=row.from_state,
                    to_state=row.to_state,
                    at=row.at,
                    value=row.value,
                    op=row.op,
                    threshold=row.threshold,
                    window_seconds=row.window_seconds,
                    samples=row.samples,
                    condition=row.condition,
                    detail=row.detail,
                )
                for row in rows
            ]

        return await uow.read(read)
