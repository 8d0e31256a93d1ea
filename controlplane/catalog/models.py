"""Tables of the catalog: what each applied pipeline declares, its event types and alert rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.db import Base, JSONDocument, UTCDateTime

__all__ = ["PipelineCatalog"]


class PipelineCatalog(Base):
    """What a pipeline's definition declares for telemetry: its event types and alert rules (stored JSON)."""

    __tablename__ = "pipeline_catalogs"

    pipeline: Mapped[str] = mapped_column(String(128), primary_key=True)
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    source: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
