"""Server pushes for `rollout status --watch`: the operator's page's live stream of one rollout, as a wake-up.

The page's stream (`/ui/live/flags/{key}/environments/{environment}`) sends a message whenever anything the page
shows changes: a stage, a pause, a gate, a guard, an audit record. The watch does not parse it; each message only
wakes it to read the status route at once instead of at its next interval. The interval stays as the safety net: a
server without the page, a dropped stream or a proxy that buffers it leaves the watch polling as before.
"""

from __future__ import annotations

import threading
from contextlib import suppress

import httpx

__all__ = ["ChangeSignal"]


class ChangeSignal:
    """Set by each message on a server-sent event stream, read by ``wait``."""

    def __init__(self, url: str, headers: dict[str, str], path: str) -> None:
        self._url, self._headers, self._path = url, headers, path
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="rollout-pushes", daemon=True)

    def start(self) -> ChangeSignal:
        """Open the stream in the background; the watch goes on polling whether or not it opens."""
        self._thread.start()
        return self

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a push; True when one came (and is consumed), False at the end of the time."""
        pushed = self._changed.wait(seconds)
        self._changed.clear()
        return pushed

    def close(self) -> None:
        """Stop listening (the stream is dropped when the thread next wakes, or with the process)."""
        self._stop.set()

    def _listen(self) -> None:
        # Any failure ends the listening quietly: the watch's own readings report an unreachable server once.
        with suppress(httpx.HTTPError), httpx.Client(base_url=self._url, headers=self._headers) as client:
            timeout = httpx.Timeout(10.0, read=None)  # the stream is quiet between changes, with keep-alives
            with client.stream("GET", self._path, headers={"Accept": "text/event-stream"}, timeout=timeout) as answer:
                if answer.status_code != 200:
                    return
                for line in answer.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(("data:", "event:")):  # comments (`:` keep-alives) wake nothing
                        self._changed.set()
