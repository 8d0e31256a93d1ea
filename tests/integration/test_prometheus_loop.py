"""End to end through the real Debian Prometheus and Alertmanager: the shipped rules and Alertmanager example roll
a flag back.

Prometheus scrapes the control plane (scrape and evaluation every 1 s) and loads `alerts/*.rules.yml`; Alertmanager
runs the shipped example with its receivers pointed at loopback (`group_wait` 1 s); the control plane's own alert
evaluation is off. Upload errors above 3% make the rendered guard alert fire, Alertmanager delivers it to the
control plane's webhook, and the flag is rolled back, with the alert named in the audit log.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import missing_service, serve_with_admin
from tests.prometheus_loop import FLAG, loop_stack
from tests.prometheus_stack import ALERTMANAGER, PROMETHEUS, find_binary


@pytest.fixture(autouse=True)
def binaries() -> None:
    for binary in (PROMETHEUS, ALERTMANAGER):
        if find_binary(binary) is None:
            missing_service(f"`{binary}` (apt-get install prometheus prometheus-alertmanager)")


def test_upload_errors_above_3_percent_roll_the_flag_back_through_prometheus_and_alertmanager(
    database_url: str,
) -> None:
    with serve_with_admin(database_url) as (base_url, admin), loop_stack(base_url, admin) as stack:
        stack.start_rollout()

        elapsed = stack.break_uploads_until_rolled_back(error_share=0.1)

        print(f"first bad event -> rollback through Prometheus and Alertmanager: {elapsed:.1f} s")
        rollbacks = httpx.get(
            f"{base_url}/api/v1/audit",
            headers=admin,
            params={"flag": FLAG, "environment": "production", "action": "rollout.rollback"},
            timeout=10,
        ).json()
        assert len(rollbacks) == 1, rollbacks  # Alertmanager re-sends the group; the rollback happens once
        assert rollbacks[0]["reason"].startswith("Alertmanager alert Upload"), rollbacks[0]
        # The same alert paged on-call through the example's PagerDuty route (pointed at the stand-in).
        pages = stack.oncall.bodies("/v2/enqueue")
        assert any(page.get("event_action") == "trigger" for page in pages), pages
