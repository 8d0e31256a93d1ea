"""Benchmark: the operator's page's live streams, with many browsers on one flag's page.

A real server (fresh SQLite file, `serve_in_thread`) with the shipped reference-images definition, its production
rollout started. N streams (`GET /ui/live/flags/.../production`, one viewer token, as N browsers) are opened and
each receives its first render. Then:
- idle: for `--idle` seconds nothing changes, first with no stream open, then with the N; the SQL statements the
  server runs are counted (a SQLAlchemy `before_cursor_execute` listener on the app's engine), in all and those of
  the change marker;
- changes: `--changes` times, a pause or resume through the API; the time from sending it to every stream having the
  render that shows it (median and slowest stream), and the statements each change cost.

    .venv/bin/python -m bench.ui_live [--streams 100] [--idle 10] [--changes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.auth import service as auth_service
from controlplane.auth.schemas import TokenCreate
from controlplane.db import create_db_engine, session_scope, utcnow
from controlplane.embedded import serve_in_thread
from controlplane.migrate import upgrade_to_head
from controlplane.settings import Settings

FLAG = "enable-reference-images"
ROOT = Path(__file__).resolve().parent.parent
ROLLOUT = f"/api/v1/flags/{FLAG}/environments"


class Statements:
    """Counts the SQL statements an engine runs, and those of the live pages' change marker."""

    def __init__(self) -> None:
        self.total = 0
        self.marker = 0

    def __call__(self, *args: Any) -> None:
        statement: str = args[2]
        self.total += 1
        if "max(audit_records.id)" in statement:
            self.marker += 1


async def updates(client: httpx.AsyncClient, path: str, token: str) -> AsyncIterator[str]:
    """The data of each `update` event of one stream."""
    async with client.stream("GET", path, headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status_code == 200, response.status_code
        data: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                data.append(line.removeprefix("data:").removeprefix(" "))
            elif line == "" and data:
                yield "\n".join(data)
                data = []


async def watch(client: httpx.AsyncClient, path: str, token: str, seen: asyncio.Queue[tuple[str, float]]) -> None:
    """Report each render's state and the time it arrived."""
    async for html in updates(client, path, token):
        state = html.split('data-testid="state">', 1)[1].split("<", 1)[0]
        await seen.put((state, time.perf_counter()))


async def run(base: str, tokens: dict[str, str], statements: Statements, args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=args.streams + 10)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        path = f"/ui/live/flags/{FLAG}/environments/production"
        baseline = statements.total
        await asyncio.sleep(args.idle)  # no stream open: the replica's own polling (the configuration feed)
        baseline = statements.total - baseline
        print(f"idle {args.idle:g} s, no stream open: {baseline} SQL statements (the configuration feed's poll)")
        queues: list[asyncio.Queue[tuple[str, float]]] = [asyncio.Queue() for _ in range(args.streams)]
        tasks = [asyncio.create_task(watch(client, path, tokens["viewer"], queue)) for queue in queues]
        for queue in queues:
            await asyncio.wait_for(queue.get(), timeout=30)
        print(f"{args.streams} streams open, each with its first render")

        before = (statements.total, statements.marker)
        await asyncio.sleep(args.idle)  # nothing changes: what does the server ask its database meanwhile?
        total, marker = statements.total - before[0], statements.marker - before[1]
        print(
            f"idle {args.idle:g} s, {args.streams} streams open: {total} SQL statements, {marker} of them the change "
            f"marker; beyond the baseline: {total - baseline}"
        )

        latencies: list[float] = []
        costs: list[int] = []
        for change in range(args.changes):
            operation, expected = ("pause", "paused") if change % 2 == 0 else ("resume", "running")
            revision = (await client.get(f"{ROLLOUT}/production/rollout", headers=admin)).json()["revision"]
            before_change = statements.total
            sent = time.perf_counter()
            response = await client.post(
                f"{ROLLOUT}/production/rollout/{operation}",
                headers=admin,
                json={"expected_revision": revision, "reason": "bench"},
            )
            assert response.status_code == 200, response.text
            arrivals = []
            for queue in queues:
                while True:
                    state, at = await asyncio.wait_for(queue.get(), timeout=30)
                    if state == expected:
                        arrivals.append(at - sent)
                        break
            latencies.append(max(arrivals))
            costs.append(statements.total - before_change)
        print(
            f"{args.changes} changes through the API: every stream had the new render after "
            f"median {statistics.median(latencies) * 1000:.0f} ms, slowest {max(latencies) * 1000:.0f} ms; "
            f"SQL statements per change (the write, its response and one render for all streams): "
            f"median {statistics.median(costs):.0f}"
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the figures
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        engine = create_db_engine(url)
        upgrade_to_head(engine)
        settings = Settings(database_url=url, scheduler_enabled=False, replica_id="bench")
        tokens = {}
        with session_scope(sessionmaker(engine, expire_on_commit=False)) as session:
            for role in (Role.ADMIN, Role.VIEWER):
                created = auth_service.create_token(
                    session,
                    request=TokenCreate(name=f"bench-{role.value}", role=role),
                    actor="bench",
                    environments=settings.environments,
                    now=utcnow(),
                )
                tokens[role.value] = created.token
        statements = Statements()
        with serve_in_thread(create_app(settings, engine=engine)) as base:
            admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=30)
            definition = (ROOT / "definitions" / "reference-images.yaml").read_text()
            assert admin.post("/api/v1/definitions/apply", json={"content": definition}).status_code == 200
            for environment, operations in (("qa", 2), ("staging", 2), ("production", 1)):
                for operation in ("start", "advance")[:operations]:
                    revision = admin.get(f"{ROLLOUT}/{environment}/rollout").json()["revision"]
                    body = {"expected_revision": revision, "reason": "bench", "force": True}
                    response = admin.post(f"{ROLLOUT}/{environment}/rollout/{operation}", json=body)
                    assert response.status_code == 200, response.text
            event.listen(engine, "before_cursor_execute", statements)
            asyncio.run(run(base, tokens, statements, args))
            admin.close()
        engine.dispose()


if __name__ == "__main__":
    main()
