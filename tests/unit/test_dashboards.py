"""The generated Grafana dashboards: grafana/dashboard-linter's habits re-implemented in Python, the panels built
from the definitions, and the committed dashboards/ equal to a fresh render."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controlplane.catalog.events import EventType, LabelSpec
from controlplane.definitions.loader import load_definition
from controlplane.definitions.schemas import PipelineDefinition
from controlplane.metrics import ControlPlaneMetrics
from controlplane.render.dashboard_queries import dashboard_queries
from controlplane.render.dashboards import render_dashboards
from controlplane.render.panels import ALERT_STATE, ROLLOUT_PERCENTAGE, ROLLOUT_STAGE, ROLLOUT_STATE
from controlplane.render.promql_names import vector_selectors
from controlplane.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASOURCE_UIDS = ("${datasource}", "$datasource")
RATE_FUNCTIONS = ("rate", "irate", "increase")
COUNTER_SUFFIXES = ("_total", "_bucket", "_sum", "_count")
#: Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts), the families these dashboards may use.
VALID_UNITS = frozenset(
    # Misc
    {"none", "string", "short", "percent", "percentunit", "humidity", "dB", "hex0x", "hex", "sci", "locale", "pixel"}
    # Data (IEC, metric)
    | {"bits", "bytes", "kbytes", "mbytes", "gbytes", "tbytes", "pbytes"}
    | {"decbits", "decbytes", "deckbytes", "decmbytes", "decgbytes", "dectbytes", "decpbytes"}
    # Data rate
    | {"pps", "bps", "Bps", "KBs", "Kbits", "MBs", "Mbits", "GBs", "Gbits", "TBs", "Tbits", "PBs", "Pbits"}
    # Time
    | {"hertz", "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations", "dthms", "dtdhms"}
    | {"timeticks", "clockms", "clocks"}
    # Throughput
    | {"cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "wpm"}
    # Currency (a few)
    | {"currencyUSD", "currencyEUR", "currencyGBP"}
    # Boolean
    | {"bool", "bool_yes_no", "bool_on_off"}
)


def load_definitions() -> list[PipelineDefinition]:
    environments = Settings().environments
    return [
        load_definition(path, environments=environments) for path in sorted((REPO_ROOT / "definitions").glob("*.yaml"))
    ]


@pytest.fixture(scope="module")
def definitions() -> list[PipelineDefinition]:
    return load_definitions()


@pytest.fixture(scope="module")
def rendered(definitions: list[PipelineDefinition]) -> dict[str, str]:
    return render_dashboards(definitions)


@pytest.fixture(scope="module")
def dashboards(rendered: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {path: json.loads(text) for path, text in rendered.items()}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels a collapsed row holds."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels") or ()


def data_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (panel for panel in panels(dashboard) if panel["type"] != "row")


def every_panel(dashboards: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, dashboard in dashboards.items():
        for panel in data_panels(dashboard):
            yield f"{path}: {panel.get('title')!r}", panel


def variables(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    variables: list[dict[str, Any]] = dashboard["templating"]["list"]
    return variables


# --- the files ------------------------------------------------------------------------------------------------------


def test_the_committed_dashboards_equal_a_fresh_render(rendered: dict[str, str]) -> None:
    committed = {
        path.relative_to(REPO_ROOT).as_posix(): path.read_text(encoding="utf-8")
        for path in (REPO_ROOT / "dashboards").glob("*.json")
    }

    assert sorted(committed) == sorted(rendered), "run `controlplane render` and commit dashboards/"
    for path, text in rendered.items():
        assert committed[path] == text, f"{path} is stale: run `controlplane render` and commit dashboards/"


def test_rendering_is_stable_json_with_sorted_keys_and_a_final_newline(
    rendered: dict[str, str], definitions: list[PipelineDefinition]
) -> None:
    assert sorted(rendered) == [
        "dashboards/ai-assistant.json",
        "dashboards/controlplane-health.json",
        "dashboards/controlplane-rollout-overview.json",
        "dashboards/reference-images.json",
    ]
    assert render_dashboards(list(reversed(definitions))) == rendered
    for text in rendered.values():
        assert text.endswith("}\n")
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def test_every_dashboard_has_a_uid_matching_its_file_and_is_not_editable(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for path, dashboard in dashboards.items():
        assert f"dashboards/{dashboard['uid']}.json" == path
        assert dashboard["title"] and dashboard["description"]
        assert dashboard["editable"] is False, path  # generated: edits belong in the definitions
        assert "generated" in dashboard["tags"]


# --- template-datasource-rule, panel-datasource-rule ------------------------------------------------------------


def test_each_dashboard_has_exactly_one_datasource_variable_named_datasource(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for path, dashboard in dashboards.items():
        sources = [variable for variable in variables(dashboard) if variable["type"] == "datasource"]

        assert len(sources) == 1, path
        assert (sources[0]["name"], sources[0]["label"], sources[0]["query"]) == (
            "datasource",
            "Data source",
            "prometheus",
        ), path


def test_every_panel_target_annotation_and_variable_uses_the_templated_datasource(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for where, panel in every_panel(dashboards):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] in DATASOURCE_UIDS, where
    for path, dashboard in dashboards.items():
        for annotation in dashboard.get("annotations", {}).get("list", []):
            assert annotation["datasource"]["uid"] in DATASOURCE_UIDS, path
        for variable in variables(dashboard):
            if variable["type"] == "query":
                assert variable["datasource"]["uid"] in DATASOURCE_UIDS, (path, variable["name"])


# --- panel-title-description-rule, panel-units-rule, panel-no-targets-rule, legends ---------------------------------


def test_every_panel_has_a_title_and_a_description(dashboards: dict[str, dict[str, Any]]) -> None:
    for path, dashboard in dashboards.items():
        for panel in panels(dashboard):
            assert panel.get("title", "").strip(), (path, panel)
            if panel["type"] != "row":
                assert panel.get("description", "").strip(), (path, panel["title"])


def test_every_panel_has_a_valid_unit(dashboards: dict[str, dict[str, Any]]) -> None:
    for where, panel in every_panel(dashboards):
        unit = panel["fieldConfig"]["defaults"].get("unit")

        assert unit in VALID_UNITS, f"{where}: unit {unit!r}"
        for override in panel["fieldConfig"].get("overrides", []):
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in VALID_UNITS, where


def test_no_panel_is_without_targets(dashboards: dict[str, dict[str, Any]]) -> None:
    for where, panel in every_panel(dashboards):
        assert panel.get("targets"), where
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], where
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"]), where


def test_legends_are_shown(dashboards: dict[str, dict[str, Any]]) -> None:
    # grafana-foundation-sdk 0.0.21 builds panels with showLegend false unless told otherwise.
    for where, panel in every_panel(dashboards):
        if panel["type"] in ("timeseries", "state-timeline"):
            assert panel["options"]["legend"]["showLegend"] is True, where
            assert all(target.get("legendFormat") for target in panel["targets"]), where


def test_panels_have_unique_ids_and_do_not_overlap_on_the_grid(dashboards: dict[str, dict[str, Any]]) -> None:
    for path, dashboard in dashboards.items():
        placed = list(panels(dashboard))
        assert len({panel["id"] for panel in placed}) == len(placed), path
        taken: set[tuple[int, int]] = set()
        for panel in placed:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, (path, panel["title"])
            cells = {
                (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & taken, f"{path}: {panel['title']!r} overlaps another panel"
            taken |= cells


# --- target-counter-agg-rule, target-rate-interval-rule, environment filtering --------------------------------------


def every_selector(dashboards: dict[str, dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    for path, dashboard in dashboards.items():
        for query in dashboard_queries(dashboard):
            for selector in vector_selectors(query.expr):
                yield f"{path}: {query.where}: {query.expr}", selector


def test_every_counter_is_wrapped_in_rate_or_increase(dashboards: dict[str, dict[str, Any]]) -> None:
    counters = [(where, s) for where, s in every_selector(dashboards) if s.metric.endswith(COUNTER_SUFFIXES)]

    assert len(counters) > 40
    for where, selector in counters:
        assert selector.call in RATE_FUNCTIONS and selector.range is not None, f"{where}: {selector.metric}"


def test_rate_and_increase_use_the_rate_interval(dashboards: dict[str, dict[str, Any]]) -> None:
    for where, selector in every_selector(dashboards):
        if selector.call in RATE_FUNCTIONS:
            assert selector.range == "$__rate_interval", where


def environment_labelled_metrics(definitions: list[PipelineDefinition]) -> set[str]:
    """Metrics exported with an `environment` label: every event metric, the state gauges and the rollbacks."""
    names = {ROLLOUT_STAGE, ROLLOUT_PERCENTAGE, ROLLOUT_STATE, ALERT_STATE, "controlplane_rollbacks_total"}
    for definition in definitions:
        for event in definition.events:
            names.add(f"{event.counter_name}_total")
            names.update(f"{event.total_name(total)}_total" for total in event.totals)
            if event.histogram_name:
                names.update(f"{event.histogram_name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def test_every_query_of_a_metric_with_an_environment_label_filters_on_the_variable(
    dashboards: dict[str, dict[str, Any]], definitions: list[PipelineDefinition]
) -> None:
    labelled = environment_labelled_metrics(definitions)
    rollbacks = next(iter(ControlPlaneMetrics().rollbacks.describe())).name + "_total"
    assert rollbacks in labelled

    checked = 0
    for where, selector in every_selector(dashboards):
        if selector.metric in labelled and "variable 'environment'" not in where:
            matcher = selector.matcher("environment")
            assert matcher is not None and (matcher.op, matcher.value) == ("=~", "$environment"), where
            checked += 1
    assert checked > 50


def test_the_environment_variable_lists_label_values_and_reloads_on_time_change(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    for path, dashboard in dashboards.items():
        (environment,) = [variable for variable in variables(dashboard) if variable["name"] == "environment"]

        assert environment["type"] == "query", path
        assert environment["query"].startswith("label_values(") and environment["query"].endswith(", environment)")
        assert environment["refresh"] == 2, path  # 2 = on time range change
        assert environment["multi"] and environment["includeAll"] and environment["allValue"] == ".*", path


# --- built from the definitions ------------------------------------------------------------------------------------


def panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    (found,) = [candidate for candidate in data_panels(dashboard) if candidate["title"] == title]
    return found


def thresholds(found: dict[str, Any]) -> list[float | None]:
    return [step["value"] for step in found["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def test_guard_lines_come_from_the_rules_of_the_definition(definitions: list[PipelineDefinition]) -> None:
    images = next(definition for definition in definitions if definition.name == "reference-images")
    moved = replace(
        images,
        rules=tuple(
            replace(rule, threshold="0.05") if rule.name == "upload-error-rate" else rule for rule in images.rules
        ),
    )

    before = json.loads(render_dashboards([images])["dashboards/reference-images.json"])
    after = json.loads(render_dashboards([moved])["dashboards/reference-images.json"])

    shipped = panel(before, "Upload endpoint error rate")
    assert thresholds(shipped) == [None, 0.03]
    assert shipped["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "dashed"
    assert "> 0.03 over 5m" in shipped["description"]
    assert 'route="upload_reference_image", status_class=~"4xx|5xx"' in shipped["targets"][0]["expr"]
    assert thresholds(panel(after, "Upload endpoint error rate")) == [None, 0.05]


def test_every_event_of_the_catalog_gets_its_panels(definitions: list[PipelineDefinition]) -> None:
    images = next(definition for definition in definitions if definition.name == "reference-images")
    crop = EventType(
        pipeline=images.name,
        name="image_crop",
        flag="enable-reference-images",
        variants=("on", "off"),
        description="A crop of a reference image.",
        outcomes=("ok", "error"),
        labels={"shape": LabelSpec(("square", "wide"))},
    )

    dashboard = json.loads(
        render_dashboards([replace(images, events=(*images.events, crop))])["dashboards/reference-images.json"]
    )

    rate = panel(dashboard, "image_crop: events per second")
    assert "image_crop_events_total{" in rate["targets"][0]["expr"]
    assert "A crop of a reference image." in rate["description"]
    assert not [p for p in data_panels(dashboard) if p["title"].startswith("image_crop: ") and "p95" in p["title"]]
    for event in images.events:
        assert panel(dashboard, f"{event.name}: events per second")
        if event.value is not None:
            quantiles = panel(dashboard, f"{event.name}: {event.value.name} p50 and p95")
            assert f"{event.histogram_name}_bucket" in quantiles["targets"][1]["expr"]


def test_a_pipeline_without_curated_panels_gets_the_generic_dashboard(definitions: list[PipelineDefinition]) -> None:
    images = next(definition for definition in definitions if definition.name == "reference-images")
    # Without the `dashboard:` section its definition file would declare: no curated rows.
    other = replace(
        images, name="thumbnails", description="Thumbnails", events=images.events[:1], rules=(), dashboard=None
    )

    rendered = render_dashboards([other])

    dashboard = json.loads(rendered["dashboards/thumbnails.json"])
    titles = [p["title"] for p in data_panels(dashboard)]
    assert titles == [
        "Traffic on the rollout variant",
        "Firing alert rules",
        "reference_image_upload: events per second",
        "reference_image_upload: size p50 and p95",
    ]
    assert 'pipeline="thumbnails"' in panel(dashboard, "Firing alert rules")["targets"][0]["expr"]


def test_the_curated_rows_come_from_the_definition_whatever_its_name(definitions: list[PipelineDefinition]) -> None:
    images = next(definition for definition in definitions if definition.name == "reference-images")

    original = json.loads(render_dashboards([images])["dashboards/reference-images.json"])
    renamed = json.loads(render_dashboards([replace(images, name="thumbnails")])["dashboards/thumbnails.json"])

    assert [p["title"] for p in panels(renamed)] == [p["title"] for p in panels(original)]
    uploads = panel(renamed, "Uploads: approved, rejected, failed")["targets"][0]["expr"]
    assert 'pipeline="thumbnails"' in uploads and "reference_image_upload_events_total{" in uploads


DASHBOARD_MODULES = ("dashboards", "boards", "panels", "pipeline_board", "pipeline_queries", "dashboard_queries")


def test_the_dashboard_code_names_no_pipeline_event_rule_or_flag(definitions: list[PipelineDefinition]) -> None:
    declared = set()
    for definition in definitions:
        declared |= {definition.name, *(e.name for e in definition.events), *(r.name for r in definition.rules)}
        declared |= {flag.key for flag in definition.flags}

    for module in DASHBOARD_MODULES:
        code = (REPO_ROOT / "controlplane" / "render" / f"{module}.py").read_text(encoding="utf-8")
        named = sorted(name for name in declared if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", code))
        assert not named, f"controlplane/render/{module}.py names {named}: they belong in definitions/"


def test_a_curated_dashboard_refuses_a_definition_missing_what_it_draws(
    definitions: list[PipelineDefinition],
) -> None:
    images = next(definition for definition in definitions if definition.name == "reference-images")
    without_rule = replace(images, rules=tuple(rule for rule in images.rules if rule.name != "upload-error-rate"))
    narrowed = replace(
        images,
        events=tuple(
            replace(event, outcomes=("ok",)) if event.name == "image_assets_generation" else event
            for event in images.events
        ),
    )

    with pytest.raises(ValueError, match="upload-error-rate"):
        render_dashboards([without_rule])
    with pytest.raises(ValueError, match="image_assets_generation"):
        render_dashboards([narrowed])


def test_the_cost_panel_multiplies_the_token_counter_by_the_price_variable(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    dashboard = dashboards["dashboards/ai-assistant.json"]
    (price,) = [variable for variable in variables(dashboard) if variable["name"] == "price_per_token"]
    cost = panel(dashboard, "Estimated token cost")

    assert price["type"] == "textbox" and float(price["query"]) > 0
    assert cost["fieldConfig"]["defaults"]["unit"] == "currencyUSD"
    assert "rate(ai_run_tokens_total{" in cost["targets"][0]["expr"]
    assert cost["targets"][0]["expr"].endswith("* 3600 * $price_per_token")
    assert "price_per_token" in cost["description"]


def test_rollbacks_are_annotations_from_the_rollback_counter(dashboards: dict[str, dict[str, Any]]) -> None:
    overview = dashboards["dashboards/controlplane-rollout-overview.json"]
    (rollbacks,) = overview["annotations"]["list"]

    assert rollbacks["enable"] is True and rollbacks["datasource"]["type"] == "prometheus"
    assert "increase(controlplane_rollbacks_total{" in rollbacks["target"]["expr"]
    assert rollbacks["titleFormat"] and rollbacks["tagKeys"] == "flag,environment,trigger"
