"""HTTP route of guarding's backtest (`viewer`): replay a rule over stored traffic (``guarding.replay``). The
Alertmanager webhook is ``guarding.webhook``."""

from __future__ import annotations

from functools import partial

import anyio.to_thread
from litestar import Controller, post
from litestar.params import JSONBody

from controlplane.api.dependencies import ProcessSettings, Work
from controlplane.api.openapi import problems
from controlplane.api.roles import Role
from controlplane.catalog.rules import Rule
from controlplane.guarding.replay import replay_guard, rule_from_definition
from controlplane.guarding.schemas import ReplayReport, ReplayRequest

__all__ = ["GuardController"]


class GuardController(Controller):
    """Stage guards: what a rule would have done over stored traffic."""

    path = "/guards"
    tags = ["guarding"]
    opt = {"role": Role.VIEWER}

    @post("/replay", status_code=200, summary="Replay a rule over stored traffic", responses=problems(404))
    async def replay(self, data: JSONBody[ReplayRequest], uow: Work, settings: ProcessSettings) -> ReplayReport:
        """Evaluate an applied rule, or one from a definition file's text, every `interval_seconds` from `from` to
        `to` on the stored telemetry windows; writes nothing. Each evaluation and each transition is reported."""
        rule: Rule | None = None
        if data.definition is not None:
            # Parsed in a worker thread before the read: a large file holds neither the loop nor a connection.
            rule = await anyio.to_thread.run_sync(
                partial(
                    rule_from_definition,
                    data.definition,
                    source=data.source,
                    name=data.rule,
                    environments=settings.environments,
                )
            )
        return await uow.read(
            partial(
                replay_guard,
                request=data,
                rule=rule,
                environments=settings.environments,
                window_size=settings.telemetry_window,
            )
        )
