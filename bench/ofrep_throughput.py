"""Benchmark: OFREP single-flag requests per second against the same server's empty `GET /healthz`.

The server runs as its own process (`uvicorn --factory bench.ofrep_throughput:create_bench_app`, one worker,
`--log-level warning`) on a fresh SQLite file, with the evaluation rate limit raised out of the way and the
management limits lifted. One boolean flag is set up through the API: enabled in production with a rule
`tenant in [acme, globex]` and a 10% rollout by targetingKey. `wrk` then loads each endpoint in turn over
loopback (a warm-up run each, then alternating measured runs): OFREP as
`POST /ofrep/v1/evaluate/flags/new-checkout` with a JSON context (1,000 users cycled, half in the rule) and an
environment-scoped evaluate token in `Authorization`; healthz as a plain GET. It prints requests/s per endpoint
(best of the measured runs), latency and the ratio OFREP / healthz, i.e. what evaluation costs on top of the
bare HTTP stack. Without `wrk` it falls back to an httpx load generator running in separate processes and
says so.

Scale-out: `--workers N` runs each server with N uvicorn worker processes; `--replicas M` runs M separate
servers on ports of their own, on one database (`--backend postgresql`: a throwaway database on 127.0.0.1:5432,
dropped afterwards), with one wrk per replica at once, the threads and connections split between them, and the
rates summed. Every server is probed until it serves the flag before the load starts.

    .venv/bin/python -m bench.ofrep_throughput [--duration 10] [--runs 2] [--threads 2] [--connections 32]
        [--workers 1] [--replicas 1] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from litestar import Litestar

from bench.evaluation import FLAG, configure_flag, prepare_database
from bench.rollout_race import database
from controlplane.api.connections import PROTOCOL_IMPORT_STRING
from controlplane.app import create_app
from controlplane.settings import Settings

OFREP_PATH = f"/ofrep/v1/evaluate/flags/{FLAG}"
HEALTH_PATH = "/healthz"
UNLIMITED = 1_000_000_000
USERS_IN_SCRIPT = 1000
WARMUP_SECONDS = 3
START_TIMEOUT_SECONDS = 20.0
PROBES_IN_A_ROW = 10
BACKENDS = ("sqlite", "postgresql")
TARGET_RATIO = 0.90

LUA_SCRIPT = """
local requests = {}
local count = %(users)d
local counter = 0

init = function(args)
  for i = 1, count do
    local tenant = "initech"
    if i %% 2 == 0 then tenant = "acme" end
    local body = string.format('{"context":{"targetingKey":"user-%%05d","tenant":"%%s"}}', i, tenant)
    requests[i] = wrk.format("POST", "%(path)s", {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer %(token)s",
    }, body)
  end
end

request = function()
  counter = counter %% count + 1
  return requests[counter]
end
"""


def create_bench_app() -> Litestar:
    """The uvicorn factory: the control plane as `CONTROLPLANE_*` variables configure it, scheduler off, heap frozen
    after start-up as `controlplane serve` does."""
    return create_app(Settings.from_env(), run_scheduler=False, freeze_heap=True)


@dataclass(frozen=True, slots=True)
class Run:
    """One load run against one endpoint."""

    endpoint: str
    requests_per_second: float
    latency: str
    errors: str
    #: Server CPU time (user + system, every server process) per request answered: unlike requests/s, barely moved
    #: by what else the machine runs.
    cpu_us_per_request: float | None = None


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (uvicorn's workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the parenthesised command: state, ppid, ..., utime (14th field), stime (15th).
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def server_environment(database_url: str) -> dict[str, str]:
    """Variables for the server process: the database, no scheduler, every rate limit out of the way."""
    environment = dict(os.environ)
    environment.update(
        {
            "CONTROLPLANE_DATABASE_URL": database_url,
            "CONTROLPLANE_SCHEDULER_ENABLED": "false",
            "CONTROLPLANE_EVALUATION_RATE_LIMIT_PER_SECOND": str(UNLIMITED),
            "CONTROLPLANE_RATE_LIMIT_PER_MINUTE": str(UNLIMITED),
            "CONTROLPLANE_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": str(UNLIMITED),
        }
    )
    return environment


def free_port() -> int:
    """A loopback port free right now.

    Not `uvicorn --fd` with a socket bound here: uvicorn wraps an inherited descriptor as AF_UNIX, so asyncio never
    sets TCP_NODELAY on its connections and Nagle's algorithm with delayed ACKs caps each connection near 40 ms
    per request (measured: 700 req/s instead of 3,000+). The small window between closing and uvicorn binding is
    acceptable here.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass(frozen=True, slots=True)
class Server:
    """A server process started here: where it answers, and its process id."""

    base_url: str
    pid: int


@contextmanager
def server_process(
    database_url: str,
    extra: dict[str, str] | None = None,
    factory: str = "bench.ofrep_throughput:create_bench_app",
    workers: int = 1,
) -> Iterator[str]:
    """Start uvicorn in a separate process on a free loopback port; yield its base URL."""
    with server(database_url, extra, factory, workers) as started:
        yield started.base_url


@contextmanager
def server(
    database_url: str,
    extra: dict[str, str] | None = None,
    factory: str = "bench.ofrep_throughput:create_bench_app",
    workers: int = 1,
) -> Iterator[Server]:
    """Start uvicorn in a separate process on a free loopback port; yield it."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        factory,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        # The HTTP protocol `controlplane serve` runs: keep-alive connections recycled by request count and age
        # (CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION, CONTROLPLANE_HTTP_CONNECTION_MAX_AGE_SECONDS), so workers
        # sharing the socket even out.
        "--http",
        PROTOCOL_IMPORT_STRING,
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        command, env=server_environment(database_url) | (extra or {}), cwd=Path(__file__).resolve().parent.parent
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server process exited with {process.returncode}")
            try:
                if httpx.get(base_url + HEALTH_PATH, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {START_TIMEOUT_SECONDS}s")
            time.sleep(0.1)
        yield Server(base_url, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _parse_wrk(endpoint: str, output: str) -> Run:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", output)
    # The latency distribution's own line: "99%" also ends a thread-stats percentage such as "74.99%".
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors:(.*)", output)
    errors = []
    if non_2xx:
        errors.append(f"non-2xx={non_2xx.group(1)}")
    if socket_errors:
        errors.append("socket errors:" + socket_errors.group(1).strip())
    return Run(
        endpoint=endpoint,
        requests_per_second=float(rate.group(1)),
        latency=(f"avg {latency.group(1)}" if latency else "?") + (f" p99 {p99.group(1)}" if p99 else ""),
        errors=", ".join(errors) or "none",
    )


def run_wrk(
    wrk: str, url: str, endpoint: str, script: Path | None, *, threads: int, connections: int, seconds: int
) -> Run:
    """One wrk run; the script (for POST bodies and headers) is optional."""
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    completed = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    return _parse_wrk(endpoint, completed.stdout)


# --- fallback load generator (only when wrk is missing) -------------------------------------------------------


async def _generate(url: str, token: str | None, connections: int, seconds: float) -> tuple[int, int]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    done = failed = 0
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30) as client:

        async def worker(offset: int) -> None:
            nonlocal done, failed
            user = offset
            while time.perf_counter() < deadline:
                user = (user + connections) % USERS_IN_SCRIPT
                if token is None:
                    response = await client.get(url)
                else:
                    tenant = "acme" if user % 2 == 0 else "initech"
                    context = {"targetingKey": f"user-{user:05d}", "tenant": tenant}
                    response = await client.post(url, json={"context": context})
                if response.status_code == 200:
                    done += 1
                else:
                    failed += 1

        await asyncio.gather(*(worker(index) for index in range(connections)))
    return done, failed


def run_httpx(url: str, endpoint: str, token: str | None, *, processes: int, connections: int, seconds: int) -> Run:
    """The fallback: ``processes`` generator processes sharing ``connections`` connections; summed rate."""
    per_process = max(1, connections // processes)
    command = [sys.executable, "-m", "bench.ofrep_throughput", "--generate", url, "--connections", str(per_process)]
    command += ["--duration", str(seconds)]
    environment = dict(os.environ, BENCH_TOKEN=token or "")
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment)  # noqa: S603
        for _ in range(processes)
    ]
    done = failed = 0
    for child in children:
        output, _ = child.communicate()
        ok, bad = (int(part) for part in output.split())
        done, failed = done + ok, failed + bad
    return Run(endpoint, done / seconds, "n/a (httpx)", f"non-200={failed}" if failed else "none")


def generator_main(url: str, connections: int, seconds: int) -> None:
    """Entry point of one fallback generator process: prints `<ok> <failed>`."""
    token = os.environ.get("BENCH_TOKEN") or None
    done, failed = asyncio.run(_generate(url, token, connections, seconds))
    print(done, failed)


# --- the benchmark -------------------------------------------------------------------------------------------


def wait_for_flag(bases: list[str], token: str) -> None:
    """Check one evaluation end to end on every server, until each answers it several times in a row: a replica (or
    a uvicorn worker) that did not take the write learns of it from the database within its poll."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    for base_url in bases:
        in_a_row = 0
        while in_a_row < PROBES_IN_A_ROW:
            probe = httpx.post(
                base_url + OFREP_PATH,
                json={"context": {"targetingKey": "user-00002", "tenant": "acme"}},
                headers={"Authorization": f"Bearer {token}"},
            )
            if probe.status_code == 200 and probe.json().get("reason") == "TARGETING_MATCH":
                in_a_row += 1
                continue
            in_a_row = 0
            if time.monotonic() > deadline:
                raise RuntimeError(f"OFREP probe failed on {base_url}: {probe.status_code} {probe.text}")
            time.sleep(0.1)


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` shares as even as can be (each at least 1)."""
    return [max(1, total // parts + (1 if index < total % parts else 0)) for index in range(parts)]


def summed(endpoint: str, runs: list[Run], cpu_seconds: float, seconds: int) -> Run:
    """One figure for concurrent runs against several servers: rates added, latencies and errors side by side, the
    servers' CPU time over the requests they answered."""
    rate = sum(run.requests_per_second for run in runs)
    return Run(
        endpoint=endpoint,
        requests_per_second=rate,
        latency=" | ".join(run.latency for run in runs),
        errors=" | ".join(run.errors for run in runs),
        cpu_us_per_request=cpu_seconds / (rate * seconds) * 1e6 if rate else None,
    )


def main() -> None:
    """Set up the servers, load both endpoints, print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--runs", type=int, default=2, help="measured runs per endpoint (alternating)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads in all (split across replicas)")
    parser.add_argument("--connections", type=int, default=32, help="connections in all (split across replicas)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes per server")
    parser.add_argument(
        "--replicas", type=int, default=1, help="separate server processes, each on its own port, on one database"
    )
    parser.add_argument("--backend", choices=BACKENDS, default="sqlite", help="the database the servers share")
    parser.add_argument("--force-httpx", action="store_true", help="use the httpx fallback even if wrk exists")
    parser.add_argument("--generate", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generator_main(args.generate, args.connections, args.duration)
        return
    if args.replicas < 1 or args.workers < 1:
        parser.error("--replicas and --workers must be at least 1")

    wrk = None if args.force_httpx else shutil.which("wrk")
    threads = split(args.threads, args.replicas)
    connections = split(args.connections, args.replicas)
    with database(args.backend) as database_url, tempfile.TemporaryDirectory() as folder, ExitStack() as servers:
        tokens = prepare_database(database_url)
        started = [servers.enter_context(server(database_url, workers=args.workers)) for _ in range(args.replicas)]
        bases = [one.base_url for one in started]

        def cpu_seconds() -> float:
            return sum(process_tree_cpu_seconds(one.pid) for one in started)

        with httpx.Client(base_url=bases[0], headers={"Authorization": f"Bearer {tokens.admin}"}) as admin:
            configure_flag(admin)
        wait_for_flag(bases, tokens.evaluate)
        script = Path(folder) / "ofrep.lua"
        script.write_text(LUA_SCRIPT % {"users": USERS_IN_SCRIPT, "path": OFREP_PATH, "token": tokens.evaluate})
        targets = [("GET /healthz", HEALTH_PATH, None), ("POST OFREP 1 flag", OFREP_PATH, script)]

        def load_one(index: int, endpoint: str, url: str, lua: Path | None, seconds: int) -> Run:
            if wrk is not None:
                return run_wrk(
                    wrk, url, endpoint, lua, threads=threads[index], connections=connections[index], seconds=seconds
                )
            token = None if lua is None else tokens.evaluate
            return run_httpx(
                url, endpoint, token, processes=threads[index], connections=connections[index], seconds=seconds
            )

        def load(endpoint: str, path: str, lua: Path | None, seconds: int) -> Run:
            # Every replica at once, each with its share of the threads and connections: their rates add up.
            before = cpu_seconds()
            with ThreadPoolExecutor(max_workers=len(bases)) as pool:
                futures = [
                    pool.submit(load_one, index, endpoint, base + path, lua, seconds)
                    for index, base in enumerate(bases)
                ]
                runs = [future.result() for future in futures]
            return summed(endpoint, runs, cpu_seconds() - before, seconds)

        for endpoint, path, lua in targets:
            load(endpoint, path, lua, WARMUP_SECONDS)
        runs: list[Run] = []
        for _ in range(args.runs):
            for endpoint, path, lua in targets:
                runs.append(load(endpoint, path, lua, args.duration))

    shares = ", ".join(f"-t{t} -c{c}" for t, c in zip(threads, connections, strict=True))
    together = " (one wrk per replica, at once; rates summed)" if args.replicas > 1 else ""
    tool = (
        f"wrk -d{args.duration}s, {shares}{together}"
        if wrk
        else (
            f"httpx fallback ({'--force-httpx' if args.force_httpx else 'wrk not found'}): {args.threads} processes, "
            f"{args.connections} connections; Python load generators saturate first, so the ratio understates "
            "the gap"
        )
    )
    layout = (
        f"{args.replicas} replica{'s' if args.replicas > 1 else ''} x {args.workers} "
        f"uvicorn worker{'s' if args.workers > 1 else ''}"
    )
    print(f"load generator: {tool}")
    print(f"server: {layout}, {args.backend}, rate limits lifted; {os.cpu_count()} CPUs")
    print(f"{'endpoint':20} {'run':>3} {'requests/s':>11} {'CPU us/req':>10}  {'latency':24} errors")
    for index, run in enumerate(runs):
        cpu = f"{run.cpu_us_per_request:>10,.0f}" if run.cpu_us_per_request is not None else f"{'?':>10}"
        print(
            f"{run.endpoint:20} {index // 2 + 1:>3} {run.requests_per_second:>11,.0f} {cpu}  {run.latency:24} "
            f"{run.errors}"
        )
    best = {
        endpoint: max(run.requests_per_second for run in runs if run.endpoint == endpoint) for endpoint, _, _ in targets
    }
    health, ofrep_rate = best["GET /healthz"], best["POST OFREP 1 flag"]
    print(f"best ({layout}, {args.backend}): healthz {health:,.0f} req/s, OFREP {ofrep_rate:,.0f} req/s")
    print(f"ratio OFREP / healthz = {ofrep_rate / health:.2f} (target >= {TARGET_RATIO:.2f})")
    cheapest = {
        endpoint: min(
            (run.cpu_us_per_request for run in runs if run.endpoint == endpoint and run.cpu_us_per_request),
            default=None,
        )
        for endpoint, _, _ in targets
    }
    health_cpu, ofrep_cpu = cheapest["GET /healthz"], cheapest["POST OFREP 1 flag"]
    if health_cpu and ofrep_cpu:
        # The same ratio from what each request costs the server, steadier than requests/s on a shared machine.
        print(
            f"server CPU per request (least of the runs): healthz {health_cpu:,.0f} us, OFREP {ofrep_cpu:,.0f} us; "
            f"ratio healthz / OFREP = {health_cpu / ofrep_cpu:.2f}"
        )


if __name__ == "__main__":
    main()
