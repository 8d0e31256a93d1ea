"""Paging query parameters shared by every listing route (newest first, ``limit`` rows older than ``before_id``),
and the bounds of a row id in a path."""

from __future__ import annotations

from typing import Annotated

from litestar.params import PathParameter, QueryParameter

__all__ = ["MAX_ROW_ID", "BeforeId", "PageLimit", "RowId"]

#: The largest id a row can have on both databases (PostgreSQL INTEGER); larger ids are refused with 422.
MAX_ROW_ID = 2**31 - 1

BeforeId = Annotated[int | None, QueryParameter(name="before_id", required=False, ge=1, le=MAX_ROW_ID)]
PageLimit = Annotated[int, QueryParameter(name="limit", ge=1, le=1000)]
#: A row id in a path (`/silences/{silence_id:int}`): one the database can store, or 422 before any query.
RowId = Annotated[int, PathParameter(ge=1, le=MAX_ROW_ID)]
