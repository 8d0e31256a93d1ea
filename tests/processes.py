"""Stopping a process a test started."""

from __future__ import annotations

import subprocess
from typing import Any


def stop(process: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; always reaped. Its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
