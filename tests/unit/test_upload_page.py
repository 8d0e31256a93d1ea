"""The upload page as served: its configuration from the settings, inlined safely, and its security policy."""

from __future__ import annotations

import json
import re

from litestar.testing import TestClient

from pipeline.app import Parts, create_pipeline_app
from pipeline.flag import StaticGate
from pipeline.generator import LocalGenerator
from pipeline.settings import PipelineSettings
from pipeline.upload_page import STATIC_DIR, page_config, render_page
from pipeline.vision import LocalAnalyzer


def inlined_config(html: str) -> dict[str, str]:
    found = re.search(r'<script type="application/json" id="flag-config">(.*?)</script>', html, re.DOTALL)
    assert found, html
    config: dict[str, str] = json.loads(found.group(1))
    return config


def test_the_browser_settings_are_read_and_the_control_plane_url_defaults_to_the_services() -> None:
    read = PipelineSettings.from_env(
        {
            "CONTROLPLANE_URL": "http://cp.internal:8080",
            "PIPELINE_BROWSER_EVALUATE_TOKEN": "cpt_web",
            "PIPELINE_BROWSER_CONTROLPLANE_URL": "https://flags.example.com/",
        }
    )
    defaulted = PipelineSettings.from_env({"CONTROLPLANE_URL": "http://cp.internal:8080"})

    assert page_config(read) == {
        "controlPlaneUrl": "https://flags.example.com",
        "token": "cpt_web",
        "flagKey": "enable-reference-images",
    }
    assert page_config(defaulted)["controlPlaneUrl"] == "http://cp.internal:8080"
    assert page_config(defaulted)["token"] == ""


def test_no_configured_value_can_close_the_script_element_it_is_inlined_in() -> None:
    hostile = {"controlPlaneUrl": "http://x</script><script>alert(1)</script>", "token": "a&b", "flagKey": "k"}

    html = render_page(hostile)

    assert "</script><script>" not in html
    assert inlined_config(html) == hostile


def test_the_page_is_served_with_its_configuration_a_policy_naming_the_control_plane_and_its_assets() -> None:
    settings = PipelineSettings(
        browser_evaluate_token="cpt_web",
        browser_controlplane_url="http://127.0.0.1:8080",
        flags_enabled=False,
        telemetry_enabled=False,
    )
    parts = Parts(gate=StaticGate(True), analyzer=LocalAnalyzer(), generator=LocalGenerator(), store=None)

    with TestClient(create_pipeline_app(settings, parts)) as client:
        page = client.get("/")
        bundle = client.get("/static/vendor/openfeature-web.js")
        script = client.get("/static/upload.js")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert inlined_config(page.text)["token"] == "cpt_web"
    policy = page.headers["content-security-policy"]
    assert "connect-src 'self' http://127.0.0.1:8080;" in policy
    assert "script-src 'self';" in policy
    assert bundle.status_code == 200
    assert bundle.content == (STATIC_DIR / "vendor" / "openfeature-web.js").read_bytes()
    assert "OFREPWebProvider" in bundle.text
    assert script.status_code == 200
    assert 'from "./vendor/openfeature-web.js"' in script.text
