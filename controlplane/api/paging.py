"""Paging query parameters shared by every listing route: newest first, ``limit`` rows older than ``before_id``."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

__all__ = ["MAX_ROW_ID", "BeforeId", "PageLimit"]

#: The largest id a row can have on both databases (PostgreSQL INTEGER); larger ids are refused with 422.
MAX_ROW_ID = 2**31 - 1

BeforeId = Annotated[int | None, QueryParameter(name="before_id", required=False, ge=1, le=MAX_ROW_ID)]
PageLimit = Annotated[int, QueryParameter(name="limit", ge=1, le=1000)]
