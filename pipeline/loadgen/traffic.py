"""The pipeline's side of the load: which request to send (the mix), small random images, and the sender.

The pacer thread plans each request (route, user, seed) from the run's seeded ``random.Random``, so a run's
plan is repeatable; a worker sends it. The sender remembers each user's recent uploads (preflight sends some of
them as references) and the runs preflighted but not yet generated (generation takes the oldest).
"""

from __future__ import annotations

import io
import random
import threading
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

import httpx
from PIL import Image, ImageDraw

__all__ = ["ROLES", "Mix", "PipelineTraffic", "Planned", "Route", "random_image"]

ROLES = ("character", "product")
#: References a user's preflight may pick from (the newest), and at most how many it sends.
_RECENT_PER_USER = 8
_MAX_REFERENCES_PER_PREFLIGHT = 2
_MAX_PENDING_RUNS = 1000


class Route(StrEnum):
    """The pipeline routes the load drives, named as the `http_request` event's `route` label."""

    UPLOAD = "upload_reference_image"
    PREFLIGHT = "run_preflight"
    GENERATE = "generate_assets"


@dataclass(frozen=True, slots=True)
class Mix:
    """Relative weights of the routes (any non-negative numbers, not all zero)."""

    upload: float = 0.4
    preflight: float = 0.35
    generate: float = 0.25

    def __post_init__(self) -> None:
        weights = (self.upload, self.preflight, self.generate)
        if any(weight < 0 for weight in weights) or sum(weights) <= 0:
            raise ValueError(f"mix weights must be >= 0 and not all 0, got {weights}")

    @classmethod
    def parse(cls, text: str) -> Mix:
        """Read ``upload=4,preflight=3,generate=2`` (routes left out weigh 0)."""
        weights: dict[str, float] = {}
        for part in filter(None, (piece.strip() for piece in text.split(","))):
            name, _, raw = part.partition("=")
            if name.strip() not in ("upload", "preflight", "generate"):
                raise ValueError(f"unknown route {name.strip()!r} in the mix; use upload, preflight, generate")
            try:
                weights[name.strip()] = float(raw)
            except ValueError as error:
                raise ValueError(f"mix weight {raw!r} of {name.strip()} is not a number") from error
        return cls(**{name: weights.get(name, 0.0) for name in ("upload", "preflight", "generate")})

    def choose(self, rng: random.Random) -> Route:
        """A route drawn with these weights."""
        routes = (Route.UPLOAD, Route.PREFLIGHT, Route.GENERATE)
        return rng.choices(routes, weights=(self.upload, self.preflight, self.generate))[0]


@dataclass(frozen=True, slots=True)
class Planned:
    """One request as the pacer planned it; ``seed`` drives whatever the sender draws for it."""

    route: Route
    user_id: str
    seed: int


def random_image(rng: random.Random) -> tuple[bytes, str]:
    """A small real image (PNG or JPEG, 64-160 px a side) of random blue-grey shapes, and its media type.

    The palette (g = b/2, r = b/3) has no skin tones, so the local Vision heuristic accepts it.
    """
    size = (rng.randint(64, 160), rng.randint(64, 160))

    def colour() -> tuple[int, int, int]:
        blue = rng.randrange(256)
        return blue // 3, blue // 2, blue

    image = Image.new("RGB", size, colour())
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 6)):
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        box = (x0, y0, x0 + rng.randint(8, size[0]), y0 + rng.randint(8, size[1]))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour())
    out = io.BytesIO()
    if rng.random() < 0.5:
        image.save(out, "PNG")
        return out.getvalue(), "image/png"
    image.save(out, "JPEG", quality=85)
    return out.getvalue(), "image/jpeg"


class PipelineTraffic:
    """Sends planned requests to the pipeline through ``client`` (thread-safe: many workers share it)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._recent: dict[str, deque[str]] = {}
        self._pending: deque[str] = deque(maxlen=_MAX_PENDING_RUNS)
        # What each user's app knows of the flag: learned from preflight answers (and from a 403 on upload).
        self._flag_on: dict[str, bool] = {}

    def send(self, planned: Planned) -> tuple[Route, int]:
        """Send one request; the route actually sent and its status (raises ``httpx.HTTPError`` on no answer).

        A generation with no preflighted run waiting is sent as a preflight instead. So is an upload by a user whose
        flag is off or not known yet: like the product's UI, the load offers the upload only to users the flag serves
        `on` (else a canary at 10% would answer 90% of uploads 403, and the upload error-rate guard would measure the
        load generator, not the canary).
        """
        rng = random.Random(planned.seed)
        if planned.route is Route.UPLOAD:
            with self._lock:
                offered = self._flag_on.get(planned.user_id, False)
            if offered:
                return Route.UPLOAD, self._upload(rng, planned.user_id)
            return Route.PREFLIGHT, self._preflight(rng, planned.user_id)
        if planned.route is Route.GENERATE:
            with self._lock:
                run_id = self._pending.popleft() if self._pending else None
            if run_id is not None:
                return Route.GENERATE, self._client.post(f"/runs/{run_id}/generate_assets").status_code
        return Route.PREFLIGHT, self._preflight(rng, planned.user_id)

    def _upload(self, rng: random.Random, user_id: str) -> int:
        data, media_type = random_image(rng)
        role = rng.choice(ROLES)
        extension = "png" if media_type == "image/png" else "jpg"
        response = self._client.post(
            "/upload/reference-image",
            files={"file": (f"load.{extension}", data, media_type)},
            data={"role": role, "user_id": user_id},
        )
        if response.status_code == 201:
            with self._lock:
                recent = self._recent.setdefault(user_id, deque(maxlen=_RECENT_PER_USER))
                recent.append(str(response.json()["asset_id"]))
        elif response.status_code == 403:
            with self._lock:
                self._flag_on[user_id] = False  # turned off meanwhile (a rollback): the UI hides the upload again
        return response.status_code

    def _preflight(self, rng: random.Random, user_id: str) -> int:
        with self._lock:
            recent = list(self._recent.get(user_id, ()))
        count = rng.randint(0, min(_MAX_REFERENCES_PER_PREFLIGHT, len(recent)))
        ids = rng.sample(recent, count)
        body = {"user_id": user_id, "prompt": f"load test {rng.randrange(10_000)}", "reference_image_ids": ids}
        response = self._client.post("/run_preflight", json=body)
        if response.status_code == 200:
            state = response.json()
            with self._lock:
                self._pending.append(str(state["run_id"]))
                self._flag_on[user_id] = bool(state.get("flag", {}).get("enabled", False))
        return response.status_code
