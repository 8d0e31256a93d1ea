"""The QA canary scenarios, run against a running pipeline over HTTP and checked on the run's ``meta.json``.

``python -m pipeline.scenarios --pipeline-url URL [--user-id U] [--expect-flag on|off] [--json]``

Four scenarios: (a) no reference, (b) a character reference, (c) a product reference, (d) both. Each uploads its
references (real images drawn with Pillow), runs preflight with their ids, generates the assets and reads
``GET /runs/{run_id}``, which ``check_scenario`` (pure) checks. With ``--expect-flag off`` the user's flag is
expected off: every upload must be refused (403) and preflight must ignore the ids it is sent. Exit 1 when any
scenario fails.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import httpx
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from pipeline.generator import VARIATIONS_PER_RUN

__all__ = [
    "SCENARIOS",
    "Expected",
    "Reference",
    "Scenario",
    "ScenarioResult",
    "check_scenario",
    "expected_trail",
    "main",
    "reference_image",
    "run_scenario",
    "run_scenarios",
]

_FLAG_OFF_SLUG = "reference-images-disabled"


@dataclass(frozen=True, slots=True)
class Scenario:
    """One canary scenario: its name and the roles of the references it uploads, in order."""

    name: str
    roles: tuple[str, ...]


SCENARIOS = (
    Scenario("a-no-reference", ()),
    Scenario("b-character", ("character",)),
    Scenario("c-product", ("product",)),
    Scenario("d-character-and-product", ("character", "product")),
)


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference sent to preflight: its asset id and the role it was uploaded with."""

    asset_id: str
    role: str


@dataclass(frozen=True, slots=True)
class Expected:
    """What a scenario's run must show.

    ``references`` are the ids sent to preflight; with the flag on they were uploaded and must be used, with it
    off they must be ignored (nothing was stored).
    """

    scenario: str
    user_id: str
    flag_on: bool
    references: tuple[Reference, ...] = ()
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """How one scenario went."""

    name: str
    run_id: str | None
    problems: tuple[str, ...] = ()
    references: tuple[Reference, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """No problem found."""
        return not self.problems


def expected_trail(*, flag_on: bool) -> list[str]:
    """The delivery audit trail's event names of a generated run, in order."""
    preflight = "preflight_reference_images_resolved" if flag_on else "preflight_reference_images_ignored"
    return ["run_started", preflight, "image_assets_generation_start", "image_assets_generation_complete"]


def _secret_paths(value: Any, path: str = "") -> Iterator[str]:
    """Where a ``signed_url`` key occurs in ``value`` (a URL is a credential: meta.json must hold none)."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "signed_url":
                yield here
            yield from _secret_paths(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _secret_paths(item, f"{path}[{index}]")


def _pairs(items: Any) -> list[tuple[Any, Any]]:
    """(asset_id, role) of each entry of a list of references; anything else as it is, for the message."""
    if not isinstance(items, list):
        return [(items, None)]
    return [(item.get("asset_id"), item.get("role")) if isinstance(item, dict) else (item, None) for item in items]


def _time(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return parsed if parsed.utcoffset() is not None else None


def _check_expiry(meta: dict[str, Any], used: bool, problems: list[str]) -> None:
    raw = meta.get("signed_url_expires_at")
    if not used:
        if raw is not None:
            problems.append(f"signed_url_expires_at is {raw!r} without references; expected None")
        return
    expires_at = _time(raw)
    if expires_at is None:
        problems.append(f"signed_url_expires_at is {raw!r}; expected an ISO time with its offset")
        return
    per_reference = [_time(item.get("signed_url_expires_at")) for item in meta.get("reference_images") or []]
    known = [moment for moment in per_reference if moment is not None]
    if len(known) != len(per_reference) or not known:
        problems.append("a reference image has no readable signed_url_expires_at")
    elif expires_at != min(known):
        problems.append(f"signed_url_expires_at {raw} is not the earliest reference expiry {min(known).isoformat()}")
    created_at = _time(meta.get("created_at"))
    if created_at is not None and expires_at <= created_at:
        problems.append(f"signed_url_expires_at {raw} is not after the run was created ({meta.get('created_at')})")


def _check_assets(meta: dict[str, Any], used: list[tuple[str, str]], problems: list[str]) -> None:
    assets = meta.get("image_assets")
    if not isinstance(assets, dict):
        problems.append(f"image_assets is {assets!r}; expected the generated assets")
        return
    if assets.get("status") != "pass":
        problems.append(f"image_assets.status is {assets.get('status')!r}; expected 'pass'")
    if assets.get("critical_errors"):
        problems.append(f"image_assets.critical_errors: {assets['critical_errors']}")
    ids = [asset_id for asset_id, _ in used]
    if assets.get("references_used") != ids:
        problems.append(f"image_assets.references_used is {assets.get('references_used')!r}; expected {ids}")
    variations = assets.get("variations")
    if not isinstance(variations, list) or len(variations) != VARIATIONS_PER_RUN:
        count = len(variations) if isinstance(variations, list) else variations
        problems.append(f"image_assets.variations: {count!r}; expected {VARIATIONS_PER_RUN} variations")
        return
    for position, variation in enumerate(variations):
        index = variation.get("index", position) if isinstance(variation, dict) else position
        if not isinstance(variation, dict):
            problems.append(f"variation {index} is {variation!r}")
            continue
        if variation.get("status") != "pass":
            notes = "; ".join(variation.get("notes") or [])
            problems.append(f"variation {index} status is {variation.get('status')!r}; expected 'pass' ({notes})")
        carried = _pairs(variation.get("reference_assets"))
        if carried != used:
            problems.append(f"variation {index} carries {carried}; expected {used}")


def check_scenario(expected: Expected, meta: dict[str, Any]) -> list[str]:
    """Check a run's meta.json against what its scenario expects; the problems found (empty: it passes)."""
    problems: list[str] = []
    if expected.run_id is not None and meta.get("run_id") != expected.run_id:
        problems.append(f"run_id is {meta.get('run_id')!r}; expected {expected.run_id}")
    if meta.get("user_id") != expected.user_id:
        problems.append(f"user_id is {meta.get('user_id')!r}; expected {expected.user_id}")
    flag: dict[str, Any] = meta["flag"] if isinstance(meta.get("flag"), dict) else {}
    if flag.get("enabled") is not expected.flag_on:
        problems.append(
            f"flag {flag.get('key')} is {'on' if flag.get('enabled') else 'off'} (variant {flag.get('variant')!r}) "
            f"for the run; expected {'on' if expected.flag_on else 'off'}"
        )
    sent = [(reference.asset_id, reference.role) for reference in expected.references]
    ids = [asset_id for asset_id, _ in sent]
    if meta.get("requested_reference_image_ids") != ids:
        problems.append(f"requested_reference_image_ids is {meta.get('requested_reference_image_ids')!r}; sent {ids}")
    used = sent if expected.flag_on else []
    if meta.get("reference_images_present") is not bool(used):
        problems.append(f"reference_images_present is {meta.get('reference_images_present')!r}; expected {bool(used)}")
    stored = _pairs(meta.get("reference_images"))
    if stored != used:
        problems.append(f"reference_images are {stored}; expected {used}")
    _check_assets(meta, used, problems)
    trail = meta.get("delivery_audit_trail")
    entries: list[Any] = trail if isinstance(trail, list) else []
    names = [entry.get("event") if isinstance(entry, dict) else entry for entry in entries]
    wanted = expected_trail(flag_on=expected.flag_on)
    if names != wanted:
        problems.append(f"delivery_audit_trail is {names}; expected {wanted}")
    elif not expected.flag_on:
        ignored = entries[1].get("ignored")
        if ignored != ids:
            problems.append(f"preflight ignored {ignored!r}; expected the ids sent, {ids}")
    _check_expiry(meta, bool(used), problems)
    problems.extend(f"meta.json holds a signed URL at {path}" for path in _secret_paths(meta))
    return problems


# --- images ------------------------------------------------------------------------------------------------------


def reference_image(role: str) -> bytes:
    """A real PNG for a role: a standing figure on a transparent ground (character) or a boxed product.

    Black, white and blue only: no skin tones for the Vision heuristic, and high contrast on any generated background,
    so every variation passes review.
    """
    if role == "character":
        image = Image.new("RGBA", (200, 300), (0, 0, 0, 0))
        draw = ImageDraw.Draw(image)
        draw.ellipse((60, 10, 140, 90), fill=(20, 40, 160, 255), outline=(255, 255, 255, 255), width=6)
        draw.rectangle((45, 95, 155, 210), fill=(10, 10, 10, 255), outline=(255, 255, 255, 255), width=6)
        draw.rectangle((55, 210, 95, 295), fill=(20, 40, 160, 255))
        draw.rectangle((105, 210, 145, 295), fill=(20, 40, 160, 255))
    else:
        image = Image.new("RGB", (240, 240), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        for row in range(6):
            for column in range(6):
                if (row + column) % 2:
                    draw.rectangle((column * 40, row * 40, column * 40 + 39, row * 40 + 39), fill=(0, 0, 0))
        draw.rectangle((70, 70, 170, 170), fill=(20, 60, 200), outline=(0, 0, 0), width=5)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


# --- running -----------------------------------------------------------------------------------------------------


def _answer(response: httpx.Response) -> str:
    """A response in a few words: its status and, for a problem, its slug and detail."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} {response.text[:120]!r}"
    if isinstance(body, dict) and "type" in body:
        return f"{response.status_code} {str(body['type']).rsplit('/', 1)[-1]}: {body.get('detail', '')}"
    return f"{response.status_code}"


def _upload(client: httpx.Client, role: str, user_id: str) -> httpx.Response:
    files = {"file": (f"qa-canary-{role}.png", reference_image(role), "image/png")}
    return client.post("/upload/reference-image", files=files, data={"role": role, "user_id": user_id})


def run_scenario(client: httpx.Client, scenario: Scenario, *, user_id: str, expect_flag_on: bool) -> ScenarioResult:
    """Run one scenario against the pipeline behind ``client`` and check what it left."""
    references: list[Reference] = []
    for role in scenario.roles:
        response = _upload(client, role, user_id)
        if expect_flag_on:
            if response.status_code != 201:
                hint = (
                    f" (the flag is off for {user_id}: check --expect-flag off)"
                    if _FLAG_OFF_SLUG in response.text
                    else ""
                )
                return ScenarioResult(scenario.name, None, (f"upload {role}: {_answer(response)}{hint}",))
            references.append(Reference(response.json()["asset_id"], role))
        else:
            if response.status_code != 403 or _FLAG_OFF_SLUG not in response.text:
                problem = f"upload {role}: {_answer(response)}; expected 403 {_FLAG_OFF_SLUG} with the flag off"
                return ScenarioResult(scenario.name, None, (problem,))
            # Nothing was stored: preflight is sent a fresh id of the right shape, which it must ignore.
            references.append(Reference(uuid.uuid4().hex, role))
    ids = [reference.asset_id for reference in references]
    prompt = f"QA canary {scenario.name}"
    response = client.post("/run_preflight", json={"user_id": user_id, "prompt": prompt, "reference_image_ids": ids})
    if response.status_code != 200:
        return ScenarioResult(scenario.name, None, (f"preflight: {_answer(response)}",), tuple(references))
    run_id = str(response.json()["run_id"])
    response = client.post(f"/runs/{run_id}/generate_assets")
    if response.status_code != 200:
        return ScenarioResult(scenario.name, run_id, (f"generate_assets: {_answer(response)}",), tuple(references))
    response = client.get(f"/runs/{run_id}")
    if response.status_code != 200:
        return ScenarioResult(scenario.name, run_id, (f"GET /runs/{run_id}: {_answer(response)}",), tuple(references))
    expected = Expected(scenario.name, user_id, expect_flag_on, tuple(references), run_id)
    return ScenarioResult(scenario.name, run_id, tuple(check_scenario(expected, response.json())), tuple(references))


def run_scenarios(
    client: httpx.Client, *, user_id: str, expect_flag_on: bool, scenarios: Sequence[Scenario] = SCENARIOS
) -> list[ScenarioResult]:
    """Run every scenario in order; a transport error fails its scenario, not the others."""
    results = []
    for scenario in scenarios:
        try:
            results.append(run_scenario(client, scenario, user_id=user_id, expect_flag_on=expect_flag_on))
        except httpx.HTTPError as error:
            results.append(ScenarioResult(scenario.name, None, (f"{type(error).__name__}: {error}",)))
    return results


def _table(results: Sequence[ScenarioResult], *, user_id: str, expect_flag_on: bool) -> Table:
    table = Table(title=f"QA canary scenarios for {user_id} (flag expected {'on' if expect_flag_on else 'off'})")
    for column in ("Scenario", "Result", "Run", "Reasons"):
        table.add_column(column, overflow="fold")
    for result in results:
        verdict = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
        table.add_row(result.name, verdict, result.run_id or "-", "\n".join(result.problems) or "-")
    return table


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.scenarios", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline-url", required=True, help="the running pipeline, e.g. http://127.0.0.1:8090")
    parser.add_argument("--user-id", default="qa-canary", help="the user (flag targeting key) the runs belong to")
    parser.add_argument(
        "--expect-flag",
        choices=("on", "off"),
        default="on",
        help="off: the user's flag is off, so uploads must be refused (403) and preflight must ignore references",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> int:
    """Run the scenarios, print the table (or JSON); 0 when every scenario passes, else 1."""
    args = _arguments(argv)
    expect_flag_on = args.expect_flag == "on"
    with httpx.Client(base_url=args.pipeline_url, timeout=args.timeout) as client:
        results = run_scenarios(client, user_id=args.user_id, expect_flag_on=expect_flag_on)
    passed = all(result.passed for result in results)
    if args.json:
        document = {
            "passed": passed,
            "user_id": args.user_id,
            "expect_flag": args.expect_flag,
            "scenarios": [{**asdict(result), "passed": result.passed} for result in results],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        (console or Console()).print(_table(results, user_id=args.user_id, expect_flag_on=expect_flag_on))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
