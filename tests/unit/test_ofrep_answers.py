"""The OFREP answers a configuration keeps per outcome: one per resolution, the OFREP body with its headers."""

from __future__ import annotations

import msgspec
from openfeature.flag_evaluation import Reason

from controlplane.evaluation.feed import EnvironmentConfiguration
from controlplane_client.provider.engine import Resolution


def configuration() -> EnvironmentConfiguration:
    return EnvironmentConfiguration(environment="production", revision=3, flags={}, snapshot_json=b"{}")


def test_an_outcome_is_answered_by_one_answer_with_the_ofrep_body_and_its_headers() -> None:
    config = configuration()
    on = Resolution(key="f", value=True, variant="on", reason=Reason.TARGETING_MATCH, metadata={"rule": "tenants"})

    answer = config.success_answer(on)

    assert config.success_answer(on) is answer
    assert msgspec.json.decode(answer.body) == {
        "key": "f",
        "value": True,
        "variant": "on",
        "reason": "TARGETING_MATCH",
        "metadata": {"rule": "tenants"},
    }
    assert answer.status_code == 200
    assert dict(answer.headers.headers) == {
        b"content-type": b"application/json",
        b"content-length": b"%d" % len(answer.body),
    }


def test_another_outcome_gets_its_own_answer() -> None:
    config = configuration()
    on = Resolution(key="f", value=True, variant="on", reason=Reason.TARGETING_MATCH)
    off = Resolution(key="f", value=False, variant="off", reason=Reason.DEFAULT)

    assert msgspec.json.decode(config.success_answer(on).body)["value"] is True
    assert msgspec.json.decode(config.success_answer(off).body)["value"] is False
    assert config.success_answer(on) is not config.success_answer(off)
