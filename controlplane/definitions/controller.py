"""HTTP route that applies a pipeline definition (`admin`)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio.to_thread
import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from controlplane.api.dependencies import Now, ProcessSettings, Work, from_state
from controlplane.api.openapi import problems
from controlplane.api.roles import Role
from controlplane.auth.dependencies import TokenPrincipal
from controlplane.definitions import service
from controlplane.definitions.document import DefinitionError
from controlplane.definitions.loader import parse_definition
from controlplane.definitions.schemas import PipelineDefinition
from controlplane.errors import InvalidInput
from controlplane.telemetry.cache import CatalogCache

__all__ = ["DefinitionController", "DefinitionUpload"]


class DefinitionUpload(msgspec.Struct, forbid_unknown_fields=True):
    """A definition file's text and name, as `controlplane definitions apply FILE` sends it."""

    content: Annotated[str, msgspec.Meta(min_length=1)]
    source: str = "upload"
    dry_run: bool = False


class DefinitionController(Controller):
    """Apply definitions."""

    path = "/definitions"
    tags = ["definitions"]
    opt = {"role": Role.ADMIN}
    dependencies = {"catalog_cache": from_state("catalog_cache")}

    @post("/apply", status_code=200, summary="Apply a pipeline definition", responses=problems(409))
    async def apply(
        self,
        uow: Work,
        data: JSONBody[DefinitionUpload],
        principal: TokenPrincipal,
        now: Now,
        settings: ProcessSettings,
        catalog_cache: NamedDependency[CatalogCache],
    ) -> service.ApplyReport:
        """Create or update what the definition declares; an invalid file changes nothing."""
        # Parsed in a worker thread before any transaction: a large file holds neither the loop nor a lock.
        definition = await anyio.to_thread.run_sync(_parse, data, settings.environments)
        report = await uow.write(
            partial(
                service.apply_definition,
                definition=definition,
                actor=principal.name,
                environments=settings.environments,
                now=now,
                dry_run=data.dry_run,
            )
        )
        # This replica validates the new events at once; others within their catalog cache time.
        catalog_cache.invalidate()
        return report


def _parse(data: DefinitionUpload, environments: tuple[str, ...]) -> PipelineDefinition:
    try:
        return parse_definition(data.content, source=data.source, environments=environments)
    except DefinitionError as error:
        raise InvalidInput(
            "invalid-definition", str(error), source=data.source, line=error.line, field=error.path
        ) from error
