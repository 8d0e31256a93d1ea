"""Real Prometheus and Alertmanager processes for tests (the Debian binaries), one context manager each.

    with running_alertmanager({"route": {...}, "receivers": [...]}) as alertmanager, running_prometheus(
        {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
         "scrape_configs": [scrape_job("app", "127.0.0.1:8080")],
         "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.address]}]}]}},
        rule_files={"rules.yml": rendered_text},
    ) as prometheus:
        prometheus.wait_for_targets()
        prometheus.wait_until(lambda: prometheus.query("up") or None, what="a first scrape")

Each process gets a free loopback port, its own working directory (config, rule files, storage, log) and the flags
of reference/observability.md section 3: Prometheus with ``--rules.alert.resend-delay=1s`` and the lifecycle API
(``reload``), Alertmanager with clustering off (``--cluster.listen-address=``). Both are ready (``/-/ready``)
before the block starts; on the way out they are terminated (killed after a grace period) and waited for, and
when the block raised, their logs are printed so the failure report shows what they said. Waiting is polling
against a deadline, never a fixed sleep.

Callers check ``find_binary`` first and call ``tests.conftest.missing_service`` when it is None, so CI fails
rather than skips without them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from tests.processes import stop

__all__ = [
    "ALERTMANAGER",
    "PROMETHEUS",
    "AlertmanagerProcess",
    "PrometheusProcess",
    "ServiceProcess",
    "find_binary",
    "free_port",
    "running_alertmanager",
    "running_prometheus",
    "scrape_job",
]

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"  # Debian's name for the alertmanager binary
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
_BIND_ATTEMPTS = 3  # a free port can be taken between choosing it and the process binding it

T = TypeVar("T")


def find_binary(name: str) -> str | None:
    """The path of an executable on PATH, or None."""
    return shutil.which(name)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it soon after; a lost race is retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape_job(
    name: str, target: str, *, metrics_path: str = "/metrics", interval: str = "1s", **extra: Any
) -> dict[str, Any]:
    """A scrape config for one ``host:port`` target; ``extra`` adds e.g. ``authorization`` or ``scheme``."""
    return {
        "job_name": name,
        "scrape_interval": interval,
        "metrics_path": metrics_path,
        "static_configs": [{"targets": [target]}],
        **extra,
    }


def wait_until(
    check: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.1, what: str = "the condition"
) -> T:
    """Poll ``check`` until it returns something other than None (or False); that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g}s (last: {value!r})")
        time.sleep(interval)  # polling a real process against the deadline above


@dataclass
class ServiceProcess:
    """A started binary: its URL, its working directory and its log."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    log_path: Path

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``host:port``, as scrape targets and ``alertmanagers`` static configs want it."""
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def print_log(self) -> None:
        """Print the log, framed, to stdout (pytest shows it with a failure)."""
        print(f"----- {self.name} log ({self.log_path}) -----\n{self.log()}----- end of {self.name} log -----")

    def get(self, path: str, **params: Any) -> httpx.Response:
        """GET a path of the process's HTTP API."""
        return httpx.get(f"{self.url}{path}", params=params, timeout=5.0)

    def api(self, path: str, **params: Any) -> Any:
        """GET a JSON API path and return its ``data`` (Prometheus v1) or whole body (Alertmanager v2)."""
        response = self.get(path, **params)
        response.raise_for_status()
        body = response.json()
        if isinstance(body, dict) and body.get("status") == "success" and "data" in body:
            return body["data"]
        return body

    def wait_until(
        self, check: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.1, what: str = "it"
    ) -> T:
        """``wait_until``, failing early (with the log) if the process died meanwhile."""

        def alive_check() -> T | None:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} while waiting for {what}")
            return check()

        return wait_until(alive_check, timeout=timeout, interval=interval, what=f"{what} ({self.name})")


@dataclass
class PrometheusProcess(ServiceProcess):
    """A running Prometheus: queries, targets, rules, alerts, and reloading rule files."""

    config_path: Path = Path()
    config: Mapping[str, Any] | None = None

    def query(self, promql: str, at: datetime | None = None) -> list[dict[str, Any]]:
        """An instant query's result list (raises on an API error)."""
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        data = self.api("/api/v1/query", **params)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [data["result"]]
        return result

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets, each with ``health``, ``lastError``, ``scrapeUrl``..."""
        active: list[dict[str, Any]] = self.api("/api/v1/targets", state="active")["activeTargets"]
        return active

    def wait_for_targets(self, *, count: int | None = None, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until every active target (at least ``count`` of them) has been scraped successfully."""
        if count is None:  # every static target of the config
            jobs = (self.config or {}).get("scrape_configs", [])
            count = sum(len(static.get("targets", [])) for job in jobs for static in job.get("static_configs", []))
        expected = count

        def all_up() -> list[dict[str, Any]] | None:
            targets = self.targets()
            if len(targets) >= max(expected, 1) and all(target["health"] == "up" for target in targets):
                return targets
            return None

        return self.wait_until(all_up, timeout=timeout, what="every scrape target up")

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups."""
        groups: list[dict[str, Any]] = self.api("/api/v1/rules")["groups"]
        return groups

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts."""
        alerts: list[dict[str, Any]] = self.api("/api/v1/alerts")["alerts"]
        return alerts

    def write_rule_file(self, name: str, content: str | Mapping[str, Any]) -> Path:
        """Write (or replace) a rule file in the working directory; it is loaded if the config lists it."""
        path = self.directory / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(dict(content), sort_keys=False))
        return path

    def reload(self) -> None:
        """Re-read the config and rule files (``POST /-/reload``); raises if Prometheus refused them."""
        response = httpx.post(f"{self.url}/-/reload", timeout=10.0)
        if response.status_code != 200:
            raise RuntimeError(f"Prometheus refused to reload ({response.status_code}): {response.text}")


@dataclass
class AlertmanagerProcess(ServiceProcess):
    """A running Alertmanager: its alerts and silences through API v2."""

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert it holds (``GET /api/v2/alerts``)."""
        alerts: list[dict[str, Any]] = self.api("/api/v2/alerts")
        return alerts

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Post alerts as Prometheus would (``POST /api/v2/alerts``)."""
        httpx.post(f"{self.url}/api/v2/alerts", json=list(alerts), timeout=5.0).raise_for_status()


def _dump(path: Path, content: str | Mapping[str, Any]) -> Path:
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(dict(content), sort_keys=False))
    return path


@contextmanager
def _workdir(directory: Path | None, prefix: str) -> Iterator[Path]:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        yield directory
        return
    made = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _start(
    name: str, argv: Callable[[int], list[str]], directory: Path, start_timeout: float
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start a binary on a free port and wait for ``/-/ready``; retried on a port lost to another process."""
    log_path = directory / f"{name}.log"
    for attempt in range(1, _BIND_ATTEMPTS + 1):
        port = free_port()
        with log_path.open("ab") as log:
            log.write(f"=== {' '.join(argv(port))}\n".encode())
            log.flush()
            process = subprocess.Popen(argv(port), stdout=log, stderr=subprocess.STDOUT, cwd=directory)
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                text = log_path.read_text(errors="replace")
                if "address already in use" in text.rsplit("=== ", 1)[-1] and attempt < _BIND_ATTEMPTS:
                    break  # the port was taken in between: another one
                raise RuntimeError(f"{name} exited with {process.returncode} before it was ready:\n{text}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1.0).status_code == 200:
                    return process, port, log_path
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                _stop(process)
                raise RuntimeError(
                    f"{name} was not ready within {start_timeout:g}s:\n{log_path.read_text(errors='replace')}"
                )
            time.sleep(0.05)  # polling the starting process against the deadline above
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill after the grace period; always reaped."""
    stop(process, STOP_TIMEOUT_SECONDS)


@contextmanager
def _supervised(service: ServiceProcess) -> Iterator[None]:
    try:
        yield
    except BaseException:
        service.print_log()
        raise
    finally:
        _stop(service.process)


@contextmanager
def running_prometheus(
    config: Mapping[str, Any],
    *,
    rule_files: Mapping[str, str | Mapping[str, Any]] | None = None,
    directory: Path | None = None,
    flags: Sequence[str] = (),
    binary: str = PROMETHEUS,
    start_timeout: float = START_TIMEOUT_SECONDS,
) -> Iterator[PrometheusProcess]:
    """Run Prometheus with ``config`` (a prometheus.yml as a dict) and ``rule_files`` (name -> YAML text or dict).

    The rule files are written beside the config and appended to its ``rule_files``. ``flags`` are added to (or
    override, being later) the defaults.
    """
    with _workdir(directory, "prometheus-") as workdir:
        written = [_dump(workdir / name, content) for name, content in (rule_files or {}).items()]
        full = dict(config)
        full["rule_files"] = [*full.get("rule_files", []), *(str(path) for path in written)]
        config_path = _dump(workdir / "prometheus.yml", full)
        storage = workdir / "data"

        def argv(port: int) -> list[str]:
            return [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                # A firing alert is re-sent after 1s, not 1m: the first send is lost before Alertmanager is found.
                "--rules.alert.resend-delay=1s",
                "--web.enable-lifecycle",
                *flags,
            ]

        process, port, log_path = _start("prometheus", argv, workdir, start_timeout)
        prometheus = PrometheusProcess(
            name="prometheus",
            process=process,
            port=port,
            directory=workdir,
            log_path=log_path,
            config_path=config_path,
            config=full,
        )
        with _supervised(prometheus):
            yield prometheus


@contextmanager
def running_alertmanager(
    config: Mapping[str, Any],
    *,
    directory: Path | None = None,
    flags: Sequence[str] = (),
    binary: str = ALERTMANAGER,
    start_timeout: float = START_TIMEOUT_SECONDS,
) -> Iterator[AlertmanagerProcess]:
    """Run Alertmanager with ``config`` (an alertmanager.yml as a dict), clustering off."""
    with _workdir(directory, "alertmanager-") as workdir:
        config_path = _dump(workdir / "alertmanager.yml", config)
        storage = workdir / "data"

        def argv(port: int) -> list[str]:
            return [
                binary,
                f"--config.file={config_path}",
                f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # no gossip port: one instance, nothing else to bind
                *flags,
            ]

        process, port, log_path = _start("alertmanager", argv, workdir, start_timeout)
        alertmanager = AlertmanagerProcess(
            name="alertmanager", process=process, port=port, directory=workdir, log_path=log_path
        )
        with _supervised(alertmanager):
            yield alertmanager


if __name__ == "__main__":  # pragma: no cover - a manual smoke run: python -m tests.prometheus_stack
    if find_binary(PROMETHEUS) is None or find_binary(ALERTMANAGER) is None:
        sys.exit("prometheus and prometheus-alertmanager are needed")
    with running_alertmanager({"route": {"receiver": "none"}, "receivers": [{"name": "none"}]}) as am:
        settings = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}}
        with running_prometheus(
            {
                **settings,
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am.address]}]}]},
            },
            rule_files={"always.yml": {"groups": [{"name": "g", "rules": [{"alert": "Always", "expr": "vector(1)"}]}]}},
        ) as prom:
            found = am.wait_until(lambda: am.alerts() or None, what="the alert in Alertmanager")
            print(prom.url, am.url, [alert["labels"]["alertname"] for alert in found])
