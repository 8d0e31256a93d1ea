"""Live pages: one watcher per replica pushes each open page's live part to its browsers over server-sent events.

The watcher asks the database one cheap question per poll, whatever the number of browsers, and only while some page
is open: has anything changed (``views.read_change_marker``: the newest audit record, alert transition and
notification, and the alert tick's last evaluation)? When it has, or when this replica has just committed a change
(``wake``), each open page's live part is rendered once and handed to every stream showing that page. A browser
that connects gets the current render at once (its page may be older than the last change). Streams are bounded
(``max_streams``; one more is refused with 503) and each holds one pending render at most: a slow browser gets the
newest, never a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass, field

__all__ = ["KEEPALIVE_SECONDS", "LivePages", "Stream", "TooManyStreams"]

logger = logging.getLogger(__name__)

#: How often a quiet stream sends a comment line, so proxies keep it open and the browser notices a dead one.
KEEPALIVE_SECONDS = 15.0


class TooManyStreams(Exception):
    """Every stream this replica allows is taken."""


@dataclass(eq=False, slots=True)
class Stream:
    """One browser's stream: the newest render it has not sent yet."""

    topic: str
    pending: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(maxsize=1))
    sent: str | None = None

    def offer(self, html: str) -> None:
        """Hand over a render unless it is what this stream sent last; replaces one not yet sent."""
        if html == self.sent:
            return
        with contextlib.suppress(asyncio.QueueEmpty):
            self.pending.get_nowait()
        self.pending.put_nowait(html)

    async def next(self, timeout: float) -> str | None:
        """The next render to send, or None after ``timeout`` seconds without one."""
        try:
            html = await asyncio.wait_for(self.pending.get(), timeout=timeout)
        except TimeoutError:
            return None
        self.sent = html
        return html


class LivePages:
    """Watches for changes and renders each open page's live part once per change for all its streams."""

    def __init__(
        self,
        *,
        marker: Callable[[], Awaitable[Hashable]],
        render: Callable[[str], Awaitable[str]],
        poll_seconds: float = 2.0,
        max_streams: int = 200,
    ) -> None:
        self._marker = marker
        self._render = render
        self._poll_seconds = poll_seconds
        self._max_streams = max_streams
        self._streams: dict[str, set[Stream]] = {}
        self._last_marker: Hashable | None = None
        self._joined: set[str] = set()  # topics with a stream that has not had its first render
        self._wake = asyncio.Event()
        self._stopped = False
        self._failing = False

    @property
    def stream_count(self) -> int:
        """Streams open on this replica."""
        return sum(len(streams) for streams in self._streams.values())

    def has_room(self) -> bool:
        """True while another stream may open."""
        return self.stream_count < self._max_streams

    @contextlib.contextmanager
    def stream(self, topic: str) -> Iterator[Stream]:
        """A stream of ``topic``'s renders while the block runs; TooManyStreams when all are taken."""
        if not self.has_room():
            raise TooManyStreams(f"this replica serves at most {self._max_streams} live pages at once")
        stream = Stream(topic)
        self._streams.setdefault(topic, set()).add(stream)
        self._joined.add(topic)
        self.wake()
        try:
            yield stream
        finally:
            streams = self._streams.get(topic, set())
            streams.discard(stream)
            if not streams:
                self._streams.pop(topic, None)

    def wake(self) -> None:
        """Check for changes now (after a commit on this replica) rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Poll and push until stopped."""
        while not self._stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)
            self._wake.clear()
            if self._stopped:
                break
            if not self._streams:
                self._last_marker = None  # nobody watches: no query, and the next viewer starts afresh
                continue
            try:
                await self.push_changes()
            except Exception as error:
                if not self._failing:  # once per run of failures: a database outage would log every poll
                    logger.warning("live pages could not be refreshed (%s); retrying", type(error).__name__)
                    self._failing = True
            else:
                if self._failing:
                    logger.warning("live pages are refreshed again")
                self._failing = False

    async def push_changes(self) -> None:
        """Render and hand out every open page when something changed, and pages just opened in any case."""
        marker = await self._marker()
        changed = marker != self._last_marker
        self._last_marker = marker
        topics = list(self._streams) if changed else [topic for topic in self._joined if topic in self._streams]
        self._joined.clear()
        for topic in topics:
            html = await self._render(topic)
            for stream in list(self._streams.get(topic, ())):
                stream.offer(html)

    def stop(self) -> None:
        """Make :meth:`run` return."""
        self._stopped = True
        self._wake.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the watcher for the block's duration (the app's lifespan)."""
        self._stopped = False
        task = asyncio.create_task(self.run(), name="live-pages")
        try:
            yield
        finally:
            self.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task
