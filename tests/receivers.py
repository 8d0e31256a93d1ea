"""A real HTTP receiver on loopback that records what it is sent (PagerDuty, Slack, webhooks) and answers as
scripted, so delivery and retries are tested over real HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    """One scripted answer."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"status":"success","message":"Event processed"}'


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ScriptedReceiver:
    """Records every POST; answers each path with its next scripted answer (Slack's 200 `ok`, else 202, when none)."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, path: str, *answers: Answer) -> None:
        """Answer the next requests on ``path`` with ``answers``, in order."""
        with self.lock:
            self.scripts.setdefault(path, []).extend(answers)

    def bodies(self, path: str) -> list[Any]:
        """The JSON bodies received on ``path``, in order."""
        with self.lock:
            return [item.body for item in self.requests if item.path == path]

    def next_answer(self, path: str) -> Answer:
        """The answer for the next request on ``path``."""
        with self.lock:
            script = self.scripts.get(path)
            if script:
                return script.pop(0)
        return Answer(200, body=b"ok") if path == "/slack" else Answer(202)


@contextmanager
def scripted_receiver() -> Iterator[ScriptedReceiver]:
    """A ScriptedReceiver served on 127.0.0.1 and a free port for the block."""
    scripted = ScriptedReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            with scripted.lock:
                scripted.requests.append(Received(self.path, dict(self.headers.items()), json.loads(raw)))
            answer = scripted.next_answer(self.path)
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scripted.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield scripted
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
