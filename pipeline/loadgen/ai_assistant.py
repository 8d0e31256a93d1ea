"""The AI reply assistant, simulated: its runs per tenant and queue, as definitions/ai-assistant.yaml declares them.

Each run is one ``ai_run`` event (outcome ``ok``, ``fallback`` to a human, or ``error``; labels ``mode``,
``queue`` and ``tenant``; value ``latency`` in seconds; total ``tokens``) and one ``http_request`` event of the
assistant's API (route ``reply`` or ``suggest``, its status class, its duration). Both carry the variant of
``ai.reply.streaming.enabled`` the agent is served.

What the simulation assumes (it evaluates no flag): an agent's streaming variant and mode are fixed by a hash of
its id; the mode follows the definition's pilot rule (tenants acme and globex on the support queue get
``COPILOTO``), other agents are spread over the three modes.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from controlplane_client.emitter import Event

__all__ = [
    "BASELINE_FALLBACK_RATE",
    "MODES",
    "PIPELINE",
    "AiAssistantConfig",
    "AiRun",
    "EventSink",
    "agent_mode",
    "agent_variant",
    "plan_run",
    "simulate_run",
]

PIPELINE = "ai-assistant"
MODES = ("HUMANO", "COPILOTO", "AUTONOMO")
#: The definition's pilot rule for ai.mode (dev): these tenants on this queue are served COPILOTO.
PILOT_TENANTS = frozenset({"acme", "globex"})
PILOT_QUEUE = "support"
#: Fallback and error shares of healthy runs, and the median latency per mode (seconds).
BASELINE_FALLBACK_RATE = 0.05
BASELINE_ERROR_RATE = 0.005
_MEDIAN_LATENCY = {"HUMANO": 0.8, "COPILOTO": 1.8, "AUTONOMO": 3.0}
_LATENCY_SIGMA = 0.35
_TOKENS = {"ok": (300, 1500), "fallback": (50, 400)}


class EventSink(Protocol):
    """Where simulated events go: a ``controlplane_client.emitter.Emitter`` or a test's list."""

    def emit(self, event: Event) -> None:
        """Take one event without waiting."""
        ...


@dataclass(frozen=True, slots=True)
class AiAssistantConfig:
    """The simulated assistant: where its events go, its tenants and queues, its pace and its faults.

    ``fallback_rate`` and ``extra_latency_seconds`` are the injectable faults; ``fault_variant`` limits them to the
    agents served that streaming variant (None: every agent; others keep the baseline).
    """

    controlplane_url: str
    ingest_token: str
    tenants: tuple[str, ...] = ("acme", "globex", "initech")
    queues: tuple[str, ...] = ("support", "billing", "sales")
    rate: float | None = None
    """Runs per second; None: the pipeline's request rate."""
    environment: str = "production"
    agents_per_tenant: int = 5
    streaming_share: float = 0.5
    """Share of agents served `on` of ai.reply.streaming.enabled."""
    fallback_rate: float = BASELINE_FALLBACK_RATE
    error_rate: float = BASELINE_ERROR_RATE
    extra_latency_seconds: float = 0.0
    fault_variant: str | None = None
    spool_dir: Path | None = None
    """The emitter's spool; None: a temporary directory, removed at the end."""

    def __post_init__(self) -> None:
        if not self.tenants or not self.queues:
            raise ValueError("the AI assistant needs at least one tenant and one queue")
        if self.agents_per_tenant < 1:
            raise ValueError("agents_per_tenant must be at least 1")
        for name in ("streaming_share", "fallback_rate", "error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if self.fallback_rate + self.error_rate > 1.0:
            raise ValueError("fallback_rate + error_rate must not exceed 1")
        if self.extra_latency_seconds < 0:
            raise ValueError("extra_latency_seconds must not be negative")


@dataclass(frozen=True, slots=True)
class AiRun:
    """One planned run: which tenant's agent, on which queue."""

    tenant: str
    queue: str
    agent: str


def _fraction(text: str) -> float:
    """A stable number in [0, 1) for ``text`` (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def agent_variant(agent: str, streaming_share: float) -> str:
    """The streaming variant the agent is served: `on` for a stable ``streaming_share`` of agents."""
    return "on" if _fraction(f"streaming:{agent}") < streaming_share else "off"


def agent_mode(tenant: str, queue: str, agent: str) -> str:
    """The agent's mode: COPILOTO under the pilot rule, else spread 20/60/20 over HUMANO/COPILOTO/AUTONOMO."""
    if tenant in PILOT_TENANTS and queue == PILOT_QUEUE:
        return "COPILOTO"
    share = _fraction(f"mode:{agent}")
    return "HUMANO" if share < 0.2 else "COPILOTO" if share < 0.8 else "AUTONOMO"


def plan_run(rng: random.Random, config: AiAssistantConfig) -> AiRun:
    """Draw a run's tenant, queue and agent."""
    tenant = rng.choice(config.tenants)
    return AiRun(tenant, rng.choice(config.queues), f"{tenant}-agent-{rng.randrange(config.agents_per_tenant)}")


def simulate_run(rng: random.Random, config: AiAssistantConfig, run: AiRun, now: Callable[[], datetime]) -> list[Event]:
    """The run's two events: ``ai_run`` (outcome, mode, queue, latency, tokens) and the API's ``http_request``."""
    variant = agent_variant(run.agent, config.streaming_share)
    mode = agent_mode(run.tenant, run.queue, run.agent)
    faulty = config.fault_variant is None or config.fault_variant == variant
    fallback_rate = config.fallback_rate if faulty else BASELINE_FALLBACK_RATE
    draw = rng.random()
    outcome = "error" if draw < config.error_rate else "fallback" if draw < config.error_rate + fallback_rate else "ok"
    tenant_factor = 0.8 + 0.5 * _fraction(f"tenant:{run.tenant}")
    latency = _MEDIAN_LATENCY[mode] * tenant_factor * math.exp(rng.gauss(0.0, _LATENCY_SIGMA))
    if faulty:
        latency += config.extra_latency_seconds
    totals = {"tokens": float(rng.randint(*_TOKENS[outcome]))} if outcome in _TOKENS else {}
    at = now()
    return [
        Event(
            type="ai_run",
            time=at,
            environment=config.environment,
            variant=variant,
            outcome=outcome,
            labels={"mode": mode, "queue": run.queue, "tenant": run.tenant},
            value=round(latency, 4),
            totals=totals,
        ),
        Event(
            type="http_request",
            time=at,
            environment=config.environment,
            variant=variant,
            labels={"route": "reply" if mode == "AUTONOMO" else "suggest", "status_class": _status_class(outcome)},
            value=round(latency, 4),
        ),
    ]


def _status_class(outcome: str) -> str:
    return "5xx" if outcome == "error" else "2xx"
