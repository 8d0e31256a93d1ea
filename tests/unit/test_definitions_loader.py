"""Unit tests for the pipeline definition loader: the shipped files load, and every refusal names field and line."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from controlplane.definitions.document import DefinitionError
from controlplane.definitions.loader import load_definition, parse_definition, parse_duration, to_stages
from controlplane.definitions.schemas import (
    PipelineDefinition,
    PlanEnvironmentSpec,
    StageSpec,
    promotion_order,
)
from controlplane.flags.schemas import FlagKind, FlagType
from controlplane.rollouts.stages import RollbackPolicy, Stage

ENVIRONMENTS = ("dev", "qa", "staging", "production")
DEFINITIONS = Path(__file__).resolve().parents[2] / "definitions"

# Line numbers in the tests below refer to this text; keep it stable.
VALID = textwrap.dedent(
    """\
    pipeline: demo
    description: A demo pipeline
    flags:
      - key: demo-flag
        type: boolean
        variants: {"on": true, "off": false}
        off_variant: "off"
        rollout_variant: "on"
        environments:
          dev: {enabled: true, rules: [{name: staff, when: [{attribute: team, op: in, values: [a]}], variant: "on"}]}
        plan:
          rollback_policy: previous_stage
          environments:
            - environment: qa
              stages: [{percentage: 100, bake: 30m}]
            - environment: production
              stages:
                - {percentage: 10, bake: 1h, min_samples: 500, guards: [error-rate], auto_advance: true}
                - {percentage: 50, bake: 2h}
                - {percentage: 100, bake: 24h}
    events:
      - name: demo_request
        outcomes: [ok, error]
    rules:
      - {name: error-rate, kind: ratio, event: demo_request, numerator: {outcome: [error]}, op: ">", threshold: 0.03}
    """
)


def parse(text: str) -> PipelineDefinition:
    return parse_definition(text, source="demo.yaml", environments=ENVIRONMENTS)


def edited(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


def refusal(text: str) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    return caught.value


# --- the shipped definitions ---------------------------------------------------------------------------------


def test_reference_images_definition_loads_off_everywhere_with_a_qa_staging_production_plan() -> None:
    definition = load_definition(DEFINITIONS / "reference-images.yaml", environments=ENVIRONMENTS)

    assert definition.name == "reference-images"
    assert definition.source.endswith("reference-images.yaml")
    (flag,) = definition.flags
    assert flag.key == "enable-reference-images"
    assert flag.type is FlagType.BOOLEAN
    assert flag.kind is FlagKind.RELEASE
    assert dict(flag.variants) == {"on": True, "off": False}
    assert (flag.off_variant, flag.rollout_variant) == ("off", "on")
    assert flag.initial_states == ()
    assert flag.plan is not None
    assert flag.plan.rollback_policy is RollbackPolicy.OFF
    assert promotion_order(flag) == ["qa", "staging", "production"]
    percentages = [[stage.percentage for stage in step.stages] for step in flag.plan.environments]
    assert percentages == [[100], [100], [10, 50, 100]]
    guards = {guard for step in flag.plan.environments for stage in step.stages for guard in stage.guards}
    assert guards == {"upload-failure-rate", "vision-error-streak", "upload-latency"}
    # The streak guard fires by chance too often at production volume: it guards qa and staging only.
    by_environment = [[set(stage.guards) for stage in step.stages] for step in flag.plan.environments]
    assert by_environment == [
        [{"upload-failure-rate", "vision-error-streak"}],
        [{"upload-failure-rate", "vision-error-streak", "upload-latency"}],
        [{"upload-failure-rate", "upload-latency"}] * 3,
    ]


def test_ai_assistant_definition_loads_every_flag_with_a_plan_and_mode_targeting() -> None:
    definition = load_definition(DEFINITIONS / "ai-assistant.yaml", environments=ENVIRONMENTS)

    assert definition.name == "ai-assistant"
    flags = {flag.key: flag for flag in definition.flags}
    assert set(flags) == {"ai.reply.streaming.enabled", "ai.rag.vector_store.enabled", "ai.auto_mode", "ai.mode"}
    for flag in definition.flags:
        assert flag.plan is not None, flag.key
        assert promotion_order(flag) == ["qa", "staging", "production"]
        production = flag.plan.environments[-1]
        assert [stage.percentage for stage in production.stages] == [10, 50, 100]
    mode = flags["ai.mode"]
    assert mode.type is FlagType.STRING
    assert set(mode.variants) == {"HUMANO", "COPILOTO", "AUTONOMO"}
    assert (mode.off_variant, mode.rollout_variant, mode.bucket_by) == ("HUMANO", "COPILOTO", "agent_id")
    states = {state.environment: state for state in mode.initial_states}
    assert set(states) == {"dev", "qa"}
    for state in states.values():
        (rule,) = state.rules
        assert rule.variant == "COPILOTO"
        assert {condition.attribute for condition in rule.when} == {"tenant", "queue"}


# --- what a valid file becomes -------------------------------------------------------------------------------


def test_valid_definition_becomes_a_typed_pipeline_definition() -> None:
    definition = parse(VALID)

    assert (definition.name, definition.description, definition.source) == ("demo", "A demo pipeline", "demo.yaml")
    (flag,) = definition.flags
    assert flag.bucket_by == "targetingKey"
    assert flag.rollout_when == ()
    (dev,) = flag.initial_states
    assert (dev.environment, dev.enabled) == ("dev", True)
    assert dev.default_variant == "off"  # left out: the off variant, as for a newly created flag
    assert dev.rules[0].name == "staff"
    assert flag.plan is not None
    assert flag.plan.rollback_policy is RollbackPolicy.PREVIOUS_STAGE
    production = flag.plan.environments[1]
    assert production.environment == "production"
    assert production.stages[0] == Stage(
        10, bake=timedelta(hours=1), min_samples=500, guards=("error-rate",), auto_advance=True
    )


def test_definition_result_is_read_only() -> None:
    (flag,) = parse(VALID).flags

    with pytest.raises(AttributeError):
        flag.key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        flag.variants["maybe"] = True  # type: ignore[index]


def test_bare_on_and_off_are_strings_not_booleans() -> None:
    text = edited('{"on": true, "off": false}', "{on: true, off: false}")
    text = text.replace('off_variant: "off"', "off_variant: off").replace(
        'rollout_variant: "on"', "rollout_variant: on"
    )

    (flag,) = parse(text).flags

    assert dict(flag.variants) == {"on": True, "off": False}
    assert (flag.off_variant, flag.rollout_variant) == ("off", "on")


def test_bake_may_be_an_integer_number_of_seconds() -> None:
    (flag,) = parse(edited("bake: 30m", "bake: 90")).flags

    assert flag.plan is not None
    assert flag.plan.environments[0].stages[0].bake == timedelta(seconds=90)


def test_promotion_order_follows_the_plan_and_is_empty_without_one() -> None:
    reordered = edited("environment: qa", "environment: staging")
    no_plan = VALID.split("    plan:\n")[0]

    (with_plan,) = parse(reordered).flags
    (without_plan,) = parse(no_plan).flags

    assert promotion_order(with_plan) == ["staging", "production"]
    assert promotion_order(without_plan) == []


def test_to_stages_converts_stage_specs_into_rollout_stages() -> None:
    spec = PlanEnvironmentSpec(
        environment="production",
        stages=[StageSpec(percentage=25, bake="2h30m", min_samples=7, guards=["g"]), StageSpec(percentage=100)],
    )

    assert to_stages(spec) == (
        Stage(25, bake=timedelta(hours=2, minutes=30), min_samples=7, guards=("g",)),
        Stage(100),
    )


# --- bake durations ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("2h30m", timedelta(hours=2, minutes=30)),
        ("1d", timedelta(days=1)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("90m", timedelta(minutes=90)),
        ("0s", timedelta(0)),
        (0, timedelta(0)),
        (3600, timedelta(hours=1)),
    ],
)
def test_parse_duration_reads_seconds_and_unit_strings(written: str | int, expected: timedelta) -> None:
    assert parse_duration(written) == expected


@pytest.mark.parametrize(
    "written", ["", "30", "1 h", "1H", "30min", "1.5h", "h", "30m2h", "1h1h", "-1h", "1w", -1, True]
)
def test_parse_duration_refuses_anything_else(written: str | int) -> None:
    with pytest.raises(ValueError, match="bake"):
        parse_duration(written)


def test_parse_duration_refuses_a_bake_too_long_for_timedelta() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("9999999999d")


# --- refusals: each names the file, the line and the field path ----------------------------------------------


def test_unknown_field_is_refused_on_its_own_line() -> None:
    error = refusal(edited("    type: boolean\n", "    type: boolean\n    colour: red\n"))

    assert (error.path, error.line) == ("flags[0].colour", 6)
    assert "unknown field `colour`" in error.reason


def test_unknown_field_deep_in_a_plan_is_refused() -> None:
    error = refusal(edited("{percentage: 50, bake: 2h}", "{percentage: 50, bake: 2h, pace: fast}"))

    assert (error.path, error.line) == ("flags[0].plan.environments[1].stages[1].pace", 19)


def test_wrong_type_is_refused_on_the_field() -> None:
    error = refusal(edited("{percentage: 50, bake: 2h}", "{percentage: 50, bake: 2h, min_samples: lots}"))

    assert (error.path, error.line) == ("flags[0].plan.environments[1].stages[1].min_samples", 19)
    assert "Expected `int`, got `str`" in error.reason


def test_unknown_enum_value_is_refused_on_the_field() -> None:
    error = refusal(edited("type: boolean", "type: toggle"))

    assert (error.path, error.line) == ("flags[0].type", 5)


def test_percentage_above_100_is_refused_on_the_field() -> None:
    error = refusal(edited("{percentage: 50, bake: 2h}", "{percentage: 150, bake: 2h}"))

    assert (error.path, error.line) == ("flags[0].plan.environments[1].stages[1].percentage", 19)


def test_missing_required_field_points_at_the_mapping_that_lacks_it() -> None:
    error = refusal(edited('    off_variant: "off"\n', ""))

    assert (error.path, error.line) == ("flags[0].off_variant", 4)
    assert "required field `off_variant` is missing" in error.reason


def test_missing_required_field_of_a_nested_mapping_points_at_that_mapping() -> None:
    error = refusal(edited("          stages: [{percentage: 100, bake: 30m}]\n", ""))

    assert (error.path, error.line) == ("flags[0].plan.environments[0].stages", 14)


def test_wrong_type_inside_an_initial_state_names_its_environment() -> None:
    text = edited("      dev: {enabled: true,", "      qa: {enabled: true}\n      dev: {enabled: maybe,")

    error = refusal(text)

    assert (error.path, error.line) == ("flags[0].environments.dev.enabled", 11)


def test_condition_without_values_is_refused_on_the_condition() -> None:
    error = refusal(edited("op: in, values: [a]", "op: in"))

    assert (error.path, error.line) == ("flags[0].environments.dev.rules[0].when[0]", 10)
    assert "needs a non-empty `values` list" in error.reason


def test_unknown_plan_environment_is_refused() -> None:
    error = refusal(edited("environment: production", "environment: prod"))

    assert (error.path, error.line) == ("flags[0].plan.environments[1].environment", 16)
    assert "unknown environment `prod`" in error.reason
    assert "`dev`, `qa`, `staging`, `production`" in error.reason


def test_unknown_initial_state_environment_is_refused() -> None:
    error = refusal(edited("      dev: {", "      sandbox: {"))

    assert (error.path, error.line) == ("flags[0].environments.sandbox", 10)
    assert "unknown environment `sandbox`" in error.reason


def test_plan_environment_listed_twice_is_refused() -> None:
    error = refusal(edited("environment: production", "environment: qa"))

    assert (error.path, error.line) == ("flags[0].plan.environments[1].environment", 16)
    assert "already in this plan at environments[0]" in error.reason


def test_unknown_off_variant_is_refused() -> None:
    error = refusal(edited('off_variant: "off"', 'off_variant: "none"'))

    assert (error.path, error.line) == ("flags[0].off_variant", 7)
    assert "unknown variant `none`" in error.reason


def test_unknown_rollout_variant_is_refused() -> None:
    error = refusal(edited('rollout_variant: "on"', 'rollout_variant: "maybe"'))

    assert (error.path, error.line) == ("flags[0].rollout_variant", 8)
    assert "unknown variant `maybe`; this flag declares `on`, `off`" in error.reason


def test_unknown_rule_variant_is_refused() -> None:
    error = refusal(edited('variant: "on"}]}', 'variant: "maybe"}]}'))

    assert (error.path, error.line) == ("flags[0].environments.dev.rules[0].variant", 10)


def test_unknown_default_variant_is_refused() -> None:
    error = refusal(edited("dev: {enabled: true,", 'dev: {enabled: true, default_variant: "maybe",'))

    assert (error.path, error.line) == ("flags[0].environments.dev.default_variant", 10)


def test_rollout_variant_is_required_with_a_plan() -> None:
    error = refusal(edited('    rollout_variant: "on"\n', ""))

    assert (error.path, error.line) == ("flags[0].rollout_variant", 4)
    assert "needs a `rollout_variant`" in error.reason


def test_rollout_variant_equal_to_off_variant_is_refused() -> None:
    error = refusal(edited('rollout_variant: "on"', 'rollout_variant: "off"'))

    assert (error.path, error.line) == ("flags[0].rollout_variant", 8)


def test_duplicate_flag_key_is_refused_on_the_second_flag() -> None:
    second = "  - key: demo-flag\n    type: boolean\n    variants: {a: true}\n    off_variant: a\n"

    error = refusal(VALID.replace("events:\n", second + "events:\n"))

    assert (error.path, error.line) == ("flags[1].key", 21)
    assert "already declared at flags[0]" in error.reason


def test_stages_not_increasing_are_refused_on_the_first_stage_out_of_order() -> None:
    error = refusal(edited("{percentage: 50, bake: 2h}", "{percentage: 5, bake: 2h}"))

    assert (error.path, error.line) == ("flags[0].plan.environments[1].stages[1].percentage", 19)
    assert "strictly increase" in error.reason


def test_last_stage_below_100_is_refused_on_the_last_stage() -> None:
    error = refusal(edited("{percentage: 100, bake: 24h}", "{percentage: 90, bake: 24h}"))

    assert (error.path, error.line) == ("flags[0].plan.environments[1].stages[2].percentage", 20)
    assert "last stage must be 100%" in error.reason


def test_empty_stage_list_is_refused() -> None:
    error = refusal(edited("stages: [{percentage: 100, bake: 30m}]", "stages: []"))

    assert (error.path, error.line) == ("flags[0].plan.environments[0].stages", 15)
    assert "at least one stage" in error.reason


def test_bad_bake_string_is_refused_on_the_bake_field() -> None:
    error = refusal(edited("{percentage: 50, bake: 2h}", "{percentage: 50, bake: 2 hours}"))

    assert (error.path, error.line) == ("flags[0].plan.environments[1].stages[1].bake", 19)
    assert "`2 hours` is not a duration" in error.reason


def test_negative_bake_seconds_are_refused_on_the_bake_field() -> None:
    error = refusal(edited("bake: 30m", "bake: -5"))

    assert (error.path, error.line) == ("flags[0].plan.environments[0].stages[0].bake", 15)


def test_yaml_syntax_error_reports_the_line_pyyaml_found() -> None:
    error = refusal(edited('variants: {"on": true, "off": false}', 'variants: {"on": true, "off": false'))

    assert error.path == ""
    assert error.line == 7
    assert error.reason.startswith("invalid YAML")


def test_yaml_bad_indentation_is_a_syntax_error_on_its_line() -> None:
    error = refusal(edited("    type: boolean", "   type: boolean"))

    assert error.line == 5
    assert error.reason.startswith("invalid YAML")


def test_python_tags_are_refused_as_unsafe_yaml() -> None:
    error = refusal(edited("description: A demo pipeline", "description: !!python/object/apply:os.getcwd []"))

    assert error.line == 2
    assert "could not determine a constructor" in error.reason


def test_duplicate_yaml_key_is_refused_instead_of_keeping_the_last() -> None:
    error = refusal(edited('    off_variant: "off"\n', '    off_variant: "off"\n    off_variant: "on"\n'))

    assert (error.path, error.line) == ("flags[0].off_variant", 8)
    assert "first on line 7" in error.reason


def test_boolean_variant_value_for_a_string_flag_says_quote_it() -> None:
    error = refusal(edited("type: boolean", "type: string"))

    assert (error.path, error.line) == ("flags[0].variants.on", 6)
    assert "must be a string, got bool" in error.reason
    assert "quote it" in error.reason


def test_quoted_true_for_a_boolean_flag_is_refused() -> None:
    error = refusal(edited('{"on": true, "off": false}', '{"on": "true", "off": false}'))

    assert (error.path, error.line) == ("flags[0].variants.on", 6)
    assert "must be a boolean, got str" in error.reason


def test_yes_is_a_string_so_a_boolean_flag_refuses_it() -> None:
    error = refusal(edited('{"on": true, "off": false}', '{"on": yes, "off": no}'))

    assert (error.path, error.line) == ("flags[0].variants.on", 6)
    assert "write true or false" in error.reason


def test_boolean_off_variant_says_quote_it() -> None:
    error = refusal(edited('off_variant: "off"', "off_variant: false"))

    assert (error.path, error.line) == ("flags[0].off_variant", 7)
    assert "quote it" in error.reason


def test_boolean_variant_name_says_quote_it() -> None:
    error = refusal(edited('{"on": true, "off": false}', '{"on": true, "off": false, true: true}'))

    assert (error.path, error.line) == ("flags[0].variants.true", 6)
    assert "quote it" in error.reason


def test_pipeline_name_must_be_lowercase_dashed_words() -> None:
    error = refusal(edited("pipeline: demo", "pipeline: Demo_Pipeline"))

    assert (error.path, error.line) == ("pipeline", 1)
    assert "lowercase" in error.reason


def test_empty_file_is_refused() -> None:
    error = refusal("# nothing here\n")

    assert (error.path, error.line) == ("", 1)


def test_top_level_list_is_refused() -> None:
    error = refusal("- pipeline: demo\n")

    assert (error.path, error.line) == ("", 1)
    assert "Expected `object`" in error.reason


def test_error_message_names_file_line_and_path(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(edited("environment: production", "environment: prod"), encoding="utf-8")

    with pytest.raises(DefinitionError) as caught:
        load_definition(path, environments=ENVIRONMENTS)

    assert caught.value.source == str(path)
    assert str(caught.value).startswith(f"{path}:16: flags[0].plan.environments[1].environment: unknown environment")


# --- progress deadlines -------------------------------------------------------------------------------------------


def test_a_stage_may_declare_its_progress_deadline() -> None:
    (flag,) = parse(edited("{percentage: 50, bake: 2h}", "{percentage: 50, bake: 2h, progress_deadline: 3h30m}")).flags

    assert flag.plan is not None
    stages = flag.plan.environments[1].stages
    assert stages[1].deadline == timedelta(hours=3, minutes=30)
    assert stages[0].deadline is None, "undeclared: the default, bake + max(10m, bake / 4)"


def test_a_progress_deadline_within_the_bake_is_refused_on_its_field() -> None:
    error = refusal(edited("{percentage: 50, bake: 2h}", "{percentage: 50, bake: 2h, progress_deadline: 90m}"))

    assert (error.path, error.line) == ("flags[0].plan.environments[1].stages[1].progress_deadline", 19)
    assert "progress_deadline (90m) must be longer than the stage's bake (2h)" in error.reason


def test_a_progress_deadline_that_is_not_a_duration_is_refused_on_its_field() -> None:
    error = refusal(edited("{percentage: 50, bake: 2h}", "{percentage: 50, bake: 2h, progress_deadline: soon}"))

    assert (error.path, error.line) == ("flags[0].plan.environments[1].stages[1].progress_deadline", 19)
    assert "progress_deadline `soon` is not a duration" in error.reason
