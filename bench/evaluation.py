"""Benchmark: in-process flag evaluations per second, our provider against flagd's, side by side in one process.

Our side: a real server (fresh SQLite file, `serve_in_thread`) where the boolean flag `new-checkout` is created
and, in production, enabled with a rule `tenant in [acme, globex]` -> on and a 10% rollout bucketed by
targetingKey, all through the API (POST /api/v1/flags, then PATCH the environment with If-Match). Our
`ControlPlaneProvider` downloads that environment's snapshot and evaluates in-process.

flagd's side: `openfeature-provider-flagd` 0.6.1 in in-process mode (`ResolverType.IN_PROCESS` with
`offline_flag_source_path`, i.e. the FILE resolver over `openfeature-flagd-core` 2.0.0) reading the equivalent
flag file, written to a temp folder: the same rule as JSON Logic `in`, then `fractional` on 10% / off 90%.

Both evaluate the same 20,000 users (half with a tenant in the rule, half with another tenant) at two levels:
- provider level: `provider.resolve_boolean_details(key, False, ctx)`, the provider object's own method
  (for flagd that is FlagdProvider -> InProcessResolver -> FlagdCore; `FlagdCore.resolve_boolean_value` alone
  is printed too, it is the figure flags.md §2 quotes);
- client level: `client.get_boolean_value(key, False, ctx)` through the OpenFeature SDK (hooks, provider
  lookup, status checks, details wrapping).
Rounds are interleaved (every case once per round) and the best round counts. Before timing, both providers'
split among non-rule users is printed (it must be ~10% on both for the comparison to be fair), and ours is
checked user by user against `bucketing.in_rollout` (any disagreement stops the run). Targets: at provider level
at most 1.0 us per evaluation and at least 10x flagd; through the client at least 2x flagd.

    .venv/bin/python -m bench.evaluation [--users 20000] [--rounds 11]

The helpers at the top (database, tokens, flag set-up) are shared by bench/ofrep_throughput.py and
bench/propagation.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.auth import service as auth_service
from controlplane.auth.schemas import TokenCreate
from controlplane.db import create_db_engine, session_scope, utcnow
from controlplane.embedded import serve_in_thread
from controlplane.migrate import upgrade_to_head
from controlplane.settings import Settings
from controlplane_client.provider.bucketing import in_rollout
from controlplane_client.provider.engine import evaluate_flag
from controlplane_client.provider.snapshot import Snapshot, compile_snapshot

FLAG = "new-checkout"
ENVIRONMENT = "production"
RULE_TENANTS = ("acme", "globex")
OTHER_TENANTS = ("initech", "umbrella")
ROLLOUT_PERCENT = 10.0
UNLIMITED = 1_000_000_000
# The targets: provider level at most this many microseconds per evaluation and this many times flagd's rate,
# client level (through the OpenFeature SDK, most of whose cost is the SDK's own) this many times flagd's.
PROVIDER_US = 1.0
PROVIDER_RATIO = 10
CLIENT_RATIO = 2


# --- shared set-up helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tokens:
    """An admin token for the management API and an evaluate token scoped to production."""

    admin: str
    evaluate: str


def prepare_database(url: str) -> Tokens:
    """Migrate a fresh database and create the two tokens."""
    engine = create_db_engine(url)
    try:
        upgrade_to_head(engine)
        environments = Settings().environments
        with session_scope(sessionmaker(engine, expire_on_commit=False)) as session:
            admin = auth_service.create_token(
                session,
                request=TokenCreate(name="bench-admin", role=Role.ADMIN),
                actor="bench",
                environments=environments,
                now=utcnow(),
            ).token
            evaluate = auth_service.create_token(
                session,
                request=TokenCreate(name="bench-evaluate", role=Role.EVALUATE, environment=ENVIRONMENT),
                actor="bench",
                environments=environments,
                now=utcnow(),
            ).token
    finally:
        engine.dispose()
    return Tokens(admin=admin, evaluate=evaluate)


def bench_settings(url: str) -> Settings:
    """Settings for an in-thread benchmark server: no scheduler, rate limits out of the way."""
    return Settings(
        database_url=url,
        scheduler_enabled=False,
        rate_limit_per_minute=UNLIMITED,
        rate_limit_per_address_per_minute=UNLIMITED,
        evaluation_rate_limit_per_second=UNLIMITED,
    )


@contextmanager
def control_plane(url: str) -> Iterator[tuple[str, Tokens]]:
    """A migrated database served by a real uvicorn server in a thread: yield (base URL, tokens)."""
    tokens = prepare_database(url)
    engine = create_db_engine(url)
    try:
        app = create_app(bench_settings(url), engine=engine, run_scheduler=False)
        with serve_in_thread(app) as base_url:
            yield base_url, tokens
    finally:
        engine.dispose()


def environment_path(key: str = FLAG, environment: str = ENVIRONMENT) -> str:
    """The management path of one flag in one environment."""
    return f"/api/v1/flags/{key}/environments/{environment}"


def create_boolean_flag(admin: httpx.Client, key: str = FLAG) -> None:
    """Create a boolean flag with variants on/off, off by default, rolling out `on`."""
    body = {
        "key": key,
        "type": "boolean",
        "variants": {"on": True, "off": False},
        "off_variant": "off",
        "rollout_variant": "on",
        "description": "benchmark flag",
    }
    admin.post("/api/v1/flags", json=body).raise_for_status()


def patch_environment(admin: httpx.Client, revision: int, changes: dict[str, Any], key: str = FLAG) -> int:
    """PATCH the flag in production with `If-Match: revision`; return the new revision."""
    response = admin.patch(environment_path(key), json=changes, headers={"If-Match": str(revision)})
    response.raise_for_status()
    return int(response.json()["revision"])


def configure_flag(admin: httpx.Client, key: str = FLAG, percentage: float = ROLLOUT_PERCENT) -> int:
    """Create the flag and enable it in production with the tenant rule and the rollout; return the revision."""
    create_boolean_flag(admin, key)
    revision = int(admin.get(environment_path(key)).json()["revision"])
    changes = {
        "enabled": True,
        "default_variant": "off",
        "rules": [
            {
                "name": "design-partners",
                "when": [{"attribute": "tenant", "op": "in", "values": list(RULE_TENANTS)}],
                "variant": "on",
            }
        ],
        "rollout": {"variant": "on", "percentage": percentage, "bucket_by": "targetingKey"},
    }
    return patch_environment(admin, revision, changes, key)


def flagd_document(key: str = FLAG, percentage: float = ROLLOUT_PERCENT) -> dict[str, Any]:
    """The equivalent flagd flag definition: the tenant rule, then a fractional split on targetingKey."""
    on_weight = round(percentage * 1000)
    return {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "flags": {
            key: {
                "state": "ENABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "off",
                "targeting": {
                    "if": [
                        {"in": [{"var": "tenant"}, list(RULE_TENANTS)]},
                        "on",
                        {"fractional": [["on", on_weight], ["off", 100_000 - on_weight]]},
                    ]
                },
            }
        },
    }


def user_contexts(count: int) -> list[EvaluationContext]:
    """``count`` users: even ones in a rule tenant, odd ones in another tenant."""
    contexts = []
    for index in range(count):
        tenants = RULE_TENANTS if index % 2 == 0 else OTHER_TENANTS
        tenant = tenants[(index // 2) % len(tenants)]
        contexts.append(EvaluationContext(targeting_key=f"user-{index:05d}", attributes={"tenant": tenant}))
    return contexts


def in_rule(context: EvaluationContext) -> bool:
    """True for users the tenant rule serves."""
    return context.attributes.get("tenant") in RULE_TENANTS


# --- the benchmark --------------------------------------------------------------------------------------------

Evaluate = Callable[[str, bool, EvaluationContext], Any]


@dataclass(slots=True)
class Case:
    """One way of evaluating the flag, timed over every user per round."""

    label: str
    level: str
    evaluate: Evaluate
    best: float = float("inf")


def time_round(evaluate: Evaluate, contexts: list[EvaluationContext]) -> float:
    """Seconds to evaluate the flag once for every context."""
    gc.collect()
    started = time.perf_counter()
    for context in contexts:
        evaluate(FLAG, False, context)
    return time.perf_counter() - started


def split_report(name: str, evaluate: Callable[[EvaluationContext], bool], contexts: list[EvaluationContext]) -> float:
    """Print and return the share of non-rule users served on; fail if a rule user is not served on."""
    outside = [context for context in contexts if not in_rule(context)]
    rule_on = sum(evaluate(context) for context in contexts if in_rule(context))
    share = sum(evaluate(context) for context in outside) / len(outside)
    inside = len(contexts) - len(outside)
    print(f"  {name:34} rule users on: {rule_on}/{inside}   non-rule users on: {share:6.2%} of {len(outside)}")
    if rule_on != inside:
        raise RuntimeError(f"{name}: the tenant rule did not serve every rule user")
    return share


def main() -> None:
    """Set both providers up, check the split, time every case, print the table."""
    # Imported here, not at the top: bench/ofrep_throughput.py and bench/propagation.py share this module's
    # helpers and need neither flagd nor (for the former) our provider.
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.contrib.tools.flagd.core import FlagdCore

    from controlplane_client.provider import ControlPlaneProvider

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    contexts = user_contexts(args.users)

    with tempfile.TemporaryDirectory() as folder, control_plane(f"sqlite:///{folder}/bench.db") as (base_url, tokens):
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {tokens.admin}"}) as admin:
            configure_flag(admin)
        flag_file = Path(folder) / "flags.json"
        flag_file.write_text(json.dumps(flagd_document()))

        ours = ControlPlaneProvider(base_url, tokens.evaluate, environment=ENVIRONMENT)
        flagd = FlagdProvider(resolver_type=ResolverType.IN_PROCESS, offline_flag_source_path=str(flag_file))
        api.set_provider_and_wait(ours, domain="controlplane")
        api.set_provider_and_wait(flagd, domain="flagd")
        ours_client = api.get_client(domain="controlplane")
        flagd_client = api.get_client(domain="flagd")
        flagd_core = FlagdCore()
        flagd_core.set_flags(flag_file.read_text())
        # The engine alone, on pre-built dict contexts: the floor any provider of ours adds its overhead to.
        snapshot = msgspec.json.decode(
            httpx.get(
                base_url + "/evaluation/v1/snapshot", headers={"Authorization": f"Bearer {tokens.evaluate}"}
            ).content,
            type=Snapshot,
        )
        compiled = compile_snapshot(snapshot)[FLAG]
        plain = {id(c): {"targetingKey": c.targeting_key, **c.attributes} for c in contexts}

        print(f"flag `{FLAG}`: rule tenant in {list(RULE_TENANTS)} -> on, then {ROLLOUT_PERCENT:g}% on by targetingKey")
        print(f"split check over {len(contexts):,} users:")
        ours_share = split_report(
            "controlplane provider",
            lambda c: bool(ours.resolve_boolean_details(FLAG, False, c).value),
            contexts,
        )
        flagd_share = split_report(
            "flagd in-process provider",
            lambda c: bool(flagd.resolve_boolean_details(FLAG, False, c).value),
            contexts,
        )
        split_report("controlplane client", lambda c: ours_client.get_boolean_value(FLAG, False, c), contexts)
        split_report("flagd client", lambda c: flagd_client.get_boolean_value(FLAG, False, c), contexts)
        mismatches = sum(
            ours.resolve_boolean_details(FLAG, False, c).value != in_rollout(FLAG, c.targeting_key, ROLLOUT_PERCENT)
            for c in contexts
            if not in_rule(c)
        )
        print(f"  controlplane provider vs bucketing.in_rollout: {mismatches} mismatches")
        if mismatches:
            raise RuntimeError("our provider disagrees with bucketing.in_rollout: its cohorts would not be sticky")
        for share in (ours_share, flagd_share):
            if abs(share - ROLLOUT_PERCENT / 100) > 0.015:
                raise RuntimeError(f"split {share:.2%} is not ~{ROLLOUT_PERCENT:g}%: the comparison would be unfair")

        cases = [
            Case("controlplane  provider.resolve_boolean_details", "provider", ours.resolve_boolean_details),
            Case("flagd 0.6.1   provider.resolve_boolean_details", "provider", flagd.resolve_boolean_details),
            Case("flagd-core    FlagdCore.resolve_boolean_value", "reference", flagd_core.resolve_boolean_value),
            Case(
                "controlplane  engine.evaluate_flag (dict ctx)",
                "reference",
                lambda _key, _default, c: evaluate_flag(compiled, plain[id(c)]),
            ),
            Case("controlplane  client.get_boolean_value", "client", ours_client.get_boolean_value),
            Case("flagd 0.6.1   client.get_boolean_value", "client", flagd_client.get_boolean_value),
        ]
        for _ in range(args.rounds):
            for case in cases:
                case.best = min(case.best, time_round(case.evaluate, contexts))
        api.shutdown()

    print()
    print(
        f"{len(contexts):,} users x {args.rounds} rounds, best round; Python {platform.python_version()}, "
        f"{platform.machine()}"
    )
    print(f"{'level':10} {'implementation':48} {'evals/s':>11} {'us/eval':>8}")
    rates = {}
    for case in cases:
        rate = len(contexts) / case.best
        rates[case.label] = rate
        print(f"{case.level:10} {case.label:48} {rate:>11,.0f} {case.best / len(contexts) * 1e6:>8.2f}")
    provider_ratio = rates[cases[0].label] / rates[cases[1].label]
    client_ratio = rates[cases[4].label] / rates[cases[5].label]
    provider_us = cases[0].best / len(contexts) * 1e6
    print()
    for level, ratio, target in (("provider", provider_ratio, PROVIDER_RATIO), ("client", client_ratio, CLIENT_RATIO)):
        verdict = "met" if ratio >= target else "MISSED"
        print(f"ours / flagd, {level + ' level:':16} {ratio:5.1f}x  (target >= {target}x: {verdict})")
    verdict = "met" if provider_us <= PROVIDER_US else "MISSED"
    print(f"ours, provider level:          {provider_us:5.2f} us/eval  (target <= {PROVIDER_US} us: {verdict})")


if __name__ == "__main__":
    main()
