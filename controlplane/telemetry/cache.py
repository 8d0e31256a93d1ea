"""Each replica's copy of the event catalog, re-read from the database at most every few seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from controlplane.catalog.events import Catalog
from controlplane.catalog.service import load_catalog, load_rules, tail_events
from controlplane.db import UNAVAILABLE, session_scope

__all__ = ["CatalogCache", "CatalogView"]


@dataclass(frozen=True, slots=True)
class CatalogView:
    """The catalog and which (pipeline, event) pairs keep an ordered tail for streak rules, each with the attributes
    whose values keep one of their own (streak rules scoped to one segment)."""

    catalog: Catalog
    tails: Mapping[tuple[str, str], frozenset[str]]


class CatalogCache:
    """The catalog as of at most ``ttl`` seconds ago; a definition applied on this replica invalidates it at once."""

    def __init__(
        self, reader: sessionmaker[Session], *, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._reader = reader
        self._ttl = ttl
        self._clock = clock
        self._view: CatalogView | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def view(self) -> CatalogView:
        """The current catalog view, reloading it when stale."""
        with self._lock:
            if self._view is not None and self._clock() - self._loaded_at < self._ttl:
                return self._view
        with session_scope(self._reader) as session:
            view = CatalogView(load_catalog(session), tail_events(load_rules(session)))
        with self._lock:
            self._view, self._loaded_at = view, self._clock()
        return view

    def catalog(self) -> Catalog:
        """The current catalog."""
        return self.view().catalog

    def catalog_or_last(self) -> Catalog:
        """The current catalog or, while the database cannot be read, the one last loaded: a scrape of /metrics
        must not fail with the database (the counters are this replica's own)."""
        try:
            return self.catalog()
        except UNAVAILABLE:
            return self.loaded()

    def loaded(self) -> Catalog:
        """The catalog last loaded, never reading the database (for the event loop); empty before any load."""
        with self._lock:
            view = self._view
        return view.catalog if view is not None else Catalog()

    def invalidate(self) -> None:
        """Mark the cached copy stale: the next ``view`` goes to the database (``loaded`` still answers)."""
        with self._lock:
            self._loaded_at = float("-inf")
