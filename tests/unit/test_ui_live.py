"""Live pages: one render per page and change whatever the number of browsers, one database question per poll,
bounded streams, and the newest render only for a slow browser."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import pytest

from controlplane.ui.live import LivePages, TooManyStreams


class Watched:
    """A change marker and a renderer that count their calls."""

    def __init__(self) -> None:
        self.version = 0
        self.marker_reads = 0
        self.renders: Counter[str] = Counter()

    async def marker(self) -> int:
        self.marker_reads += 1
        return self.version

    async def render(self, topic: str) -> str:
        self.renders[topic] += 1
        return f"{topic} v{self.version}"


def test_a_change_is_rendered_once_per_page_for_all_its_streams() -> None:
    async def scenario() -> None:
        watched = Watched()
        live = LivePages(marker=watched.marker, render=watched.render, max_streams=100)
        with contextlib.ExitStack() as opened:
            streams = [opened.enter_context(live.stream(topic)) for topic in ["overview"] * 50 + ["flag-a"] * 30]
            await live.push_changes()  # first look: every page joined, each rendered once
            assert watched.renders == Counter({"overview": 1, "flag-a": 1})
            assert all([await stream.next(0.1) for stream in streams])

            await live.push_changes()  # nothing changed: no render, nothing sent
            assert watched.renders == Counter({"overview": 1, "flag-a": 1})
            assert [await stream.next(0.01) for stream in streams] == [None] * 80

            watched.version = 1
            await live.push_changes()
            assert watched.renders == Counter({"overview": 2, "flag-a": 2})
            assert {await stream.next(0.1) for stream in streams} == {"overview v1", "flag-a v1"}
        assert watched.marker_reads == 3  # one question per poll, not per stream
        assert live.stream_count == 0

    asyncio.run(scenario())


def test_nobody_watching_asks_the_database_nothing() -> None:
    async def scenario() -> None:
        watched = Watched()
        live = LivePages(marker=watched.marker, render=watched.render, poll_seconds=3600)
        async with live.running():
            for _ in range(3):  # woken, as after a commit, with no page open: the loop runs and asks nothing
                live.wake()
                for _ in range(5):
                    await asyncio.sleep(0)  # yield to the watcher's loop; no time passes
        assert watched.marker_reads == 0

    asyncio.run(scenario())


def test_streams_are_bounded() -> None:
    async def scenario() -> None:
        watched = Watched()
        live = LivePages(marker=watched.marker, render=watched.render, max_streams=2)
        with live.stream("overview"), live.stream("overview"):
            assert not live.has_room()
            with pytest.raises(TooManyStreams), live.stream("overview"):
                pass
        assert live.has_room()

    asyncio.run(scenario())


def test_a_slow_browser_gets_the_newest_render_not_a_backlog() -> None:
    async def scenario() -> None:
        watched = Watched()
        live = LivePages(marker=watched.marker, render=watched.render)
        with live.stream("overview") as stream:
            for version in range(5):
                watched.version = version
                await live.push_changes()
            assert await stream.next(0.1) == "overview v4"
            assert await stream.next(0.01) is None

    asyncio.run(scenario())


def test_a_wake_pushes_a_change_before_the_next_poll() -> None:
    async def scenario() -> None:
        watched = Watched()
        live = LivePages(marker=watched.marker, render=watched.render, poll_seconds=3600)
        async with live.running():
            with live.stream("overview") as stream:
                assert await stream.next(5) == "overview v0"  # joining wakes the watcher
                watched.version = 1
                live.wake()
                assert await stream.next(5) == "overview v1"

    asyncio.run(scenario())
