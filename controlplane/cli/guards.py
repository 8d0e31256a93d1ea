"""`controlplane guards simulate`: what a definition's stage guards would do, by Monte Carlo through the rule
engine (``alerting.simulation``), read from the definition file locally: no server needed.
`controlplane guards replay`: what a rule would have done over the traffic the server stored (``guarding.replay``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.table import Table

from controlplane.cli.client import Api, CommandError
from controlplane.cli.output import Subcommands, add_command, emit, short_time, table
from controlplane.settings import Settings

if TYPE_CHECKING:
    from controlplane.alerting.simulation import GuardOutcome, StageOutcome
    from controlplane.definitions.schemas import FlagDefinition, PipelineDefinition
    from controlplane.rollouts.stages import Stage

__all__ = ["add_guard_commands"]

_T = TypeVar("_T")


def cmd_guards_simulate(args: argparse.Namespace, settings: Settings) -> None:
    """Simulate the guards of a definition's stages in one environment and show what they would do."""
    from controlplane.alerting.simulation import Scenario, Traffic, guard_for, simulate
    from controlplane.definitions.document import DefinitionError
    from controlplane.definitions.loader import load_definition

    path = Path(args.definition)
    try:
        definition = load_definition(path, environments=settings.environments)
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from error
    except DefinitionError as error:
        raise CommandError(f"invalid definition: {error}") from error
    flag, stages = _plan(definition, args)
    numbers = [args.stage] if args.stage is not None else list(range(1, len(stages) + 1))
    # Stages with the same guards behave the same (a stage's percentage and bake change nothing simulated here).
    groups: dict[tuple[str, ...], list[int]] = {}
    for number in numbers:
        if stages[number - 1].guards:
            groups.setdefault(stages[number - 1].guards, []).append(number)
    if not groups:
        raise CommandError(f"stage {args.stage} in {args.env} has no guards" if args.stage else "no stage has guards")
    rules = {rule.name: rule for rule in definition.rules}
    events = {event.name: event for event in definition.events}
    rates = _numbers(args.rate, "--rate", float)
    shares = _numbers(args.healthy, "--healthy", _share)
    onsets = tuple(_numbers(args.onset, "--onset", float))
    if not rates or not shares:
        raise CommandError("give at least one --rate and one --healthy share")
    try:
        regressed = _share(args.regressed)
        scenarios: list[Scenario] = []
        for names in groups:
            guards = tuple(
                guard_for(
                    rules[name],
                    events.get(rules[name].event),
                    canary_variant=flag.rollout_variant or "on",
                    baseline_variant=flag.off_variant,
                )
                for name in names
            )
            for rate in rates:
                for healthy in shares:
                    traffic = Traffic(
                        rate=rate,
                        healthy=healthy,
                        regressed=regressed,
                        baseline_rate=args.baseline_rate,
                        healthy_mean=args.healthy_mean,
                        regressed_mean=args.regressed_mean,
                        sigma=args.sigma,
                        warm_up=args.warm_up,
                    )
                    scenarios.append(Scenario(guards, traffic, onsets, args.stage_seconds, args.interval))
        outcomes = simulate(scenarios, trials=args.trials, seed=args.seed, workers=args.workers or os.cpu_count() or 1)
    except ValueError as error:  # SimulationError among them: what cannot be simulated, in words
        raise CommandError(f"cannot simulate: {error}") from error
    report: dict[str, Any] = {
        "definition": str(path),
        "pipeline": definition.name,
        "flag": flag.key,
        "environment": args.env,
        "trials": args.trials,
        "seed": args.seed,
        "stage_seconds": args.stage_seconds,
        "interval": args.interval,
        "unguarded_stages": [number for number in numbers if not stages[number - 1].guards],
        "groups": [],
    }
    per_group = len(rates) * len(shares)
    for position, (names, members) in enumerate(groups.items()):
        report["groups"].append(
            {
                "stages": members,
                "percentages": [stages[number - 1].percentage for number in members],
                "guards": [
                    {
                        "name": name,
                        "kind": rules[name].kind.value,
                        "mode": rules[name].mode.value,
                        "condition": rules[name].condition(),
                    }
                    for name in names
                ],
                "results": [_result_json(item) for item in outcomes[position * per_group : (position + 1) * per_group]],
            }
        )
    emit(args, report, _render)


def _plan(definition: PipelineDefinition, args: argparse.Namespace) -> tuple[FlagDefinition, tuple[Stage, ...]]:
    """The flag whose plan reaches ``--env`` (``--flag``, or the only one), and its stages there."""
    found = [
        (flag, step.stages)
        for flag in definition.flags
        if flag.plan is not None and args.flag in (None, flag.key)
        for step in flag.plan.environments
        if step.environment == args.env
    ]
    if not found:
        raise CommandError(f"no flag of {definition.source} has a rollout plan in {args.env}")
    if len(found) > 1:
        raise CommandError(f"several flags have a plan in {args.env}: choose one with --flag")
    flag, stages = found[0]
    if args.stage is not None and not 1 <= args.stage <= len(stages):
        raise CommandError(f"{args.env} has stages 1..{len(stages)}, not {args.stage}")
    return flag, stages


def _result_json(outcome: StageOutcome) -> dict[str, Any]:
    """One scenario's figures: its traffic, each guard's, the stage's."""
    traffic = outcome.scenario.traffic
    guards = []
    for guard, figures in zip(outcome.scenario.guards, outcome.guards, strict=True):
        shown = _guard_json(figures)
        if figures.kind == "mean":
            shown["healthy_mean"], shown["regressed_mean"] = traffic.means_for(guard.rule)
        guards.append(shown)
    return {
        "rate": traffic.rate,
        "healthy": traffic.healthy,
        "regressed": traffic.regressed,
        "baseline_rate": traffic.baseline_rate,
        "warm_up_seconds": traffic.warm_up,
        "guards": guards,
        "stage": _guard_json(outcome.stage),
    }


def _guard_json(figures: GuardOutcome) -> dict[str, Any]:
    return {
        "guard": figures.guard,
        "kind": figures.kind,
        "shadow": figures.shadow,  # watched only: what it would have done; the stage's figures leave it out
        "healthy_rolled_back": figures.healthy_rolled_back,
        "chance_streaks_per_24h": figures.chance_streaks_per_24h,
        "regressions": [
            {
                "onset_seconds": detection.onset,
                "caught": detection.caught,
                "rolled_back_before_onset": detection.before_onset,
                "median_delay_seconds": detection.median_delay,
                "p90_delay_seconds": detection.p90_delay,
            }
            for detection in figures.detections
        ],
    }


def _render(report: dict[str, Any]) -> Table:
    """One table: a row per group of stages with the same guards, guard (then the stage as a whole, its enforced
    guards only), scenario and onset; a shadow guard's name says so."""
    columns = [
        "stages",
        "guard",
        "rate /5m",
        "healthy",
        "healthy rolled back",
        "regression",
        "caught",
        "before onset",
        "median delay",
        "p90 delay",
        "chance streaks /24h",
    ]
    rows: list[list[Any]] = []
    for group in report["groups"]:
        shares = "/".join(f"{percentage:g}" for percentage in group["percentages"])
        stages = f"{', '.join(str(number) for number in group['stages'])} ({shares}%)"
        for result in group["results"]:
            for figures in [*result["guards"], result["stage"]]:
                mean = figures["kind"] == "mean"
                healthy = f"mean {figures['healthy_mean']:g}" if mean else f"{result['healthy']:.1%}"
                regressed = f"mean {figures['regressed_mean']:g}" if mean else f"{result['regressed']:.1%}"
                streaks = figures["chance_streaks_per_24h"]
                rolled_back = f"{figures['healthy_rolled_back']:.1%}"
                name = f"{figures['guard']} (shadow)" if figures["shadow"] else figures["guard"]
                head = [stages, name, f"{result['rate']:g}", healthy, rolled_back]
                tail = ["" if streaks is None else f"{streaks:.3g}"]
                if not figures["regressions"]:
                    rows.append([*head, "", "", "", "", "", *tail])
                for detection in figures["regressions"]:
                    found = [
                        f"{regressed} from {detection['onset_seconds']:g} s",
                        f"{detection['caught']:.1%}",
                        f"{detection['rolled_back_before_onset']:.1%}",
                        _delay(detection["median_delay_seconds"]),
                        _delay(detection["p90_delay_seconds"]),
                    ]
                    rows.append([*head, *found, *tail])
    title = (
        f"{report['pipeline']}: guards of {report['flag']} in {report['environment']}, {report['trials']} trials of "
        f"{report['stage_seconds']:g} s per scenario, evaluated every {report['interval']:g} s, seed {report['seed']}"
    )
    return table(title, columns, rows)


def _delay(seconds: float | None) -> str:
    """A delay percentile; None is a percentile trial never rolled back within the stage."""
    return "not caught" if seconds is None else f"{seconds:g} s"


def _share(text: str) -> float:
    """A share written as a fraction (0.01) or a percentage (1%)."""
    text = text.strip()
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def _numbers(text: str, option: str, parse: Callable[[str], _T]) -> list[_T]:
    """A comma-separated option's values."""
    try:
        return [parse(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise CommandError(f"{option}: `{text}` is not a comma-separated list of numbers") from error


def cmd_guards_replay(args: argparse.Namespace, settings: Settings) -> None:
    """Replay an applied rule, or the rule of that name in a local definition file, over stored traffic."""
    body: dict[str, Any] = {
        "rule": args.rule,
        "environment": args.env,
        "from": args.start,
        "to": args.end,
        "interval_seconds": args.interval,
    }
    if args.file:
        path = Path(args.file)
        try:
            body |= {"definition": path.read_text(encoding="utf-8"), "source": path.name}
        except OSError as error:
            raise CommandError(f"cannot read {path}: {error.strerror}") from error
    emit(args, Api.from_args(args).call("POST", "/guards/replay", json=body), _render_replay)


def _render_replay(report: dict[str, Any]) -> Table:
    """The replay's transitions, one row each."""
    rows = [
        [
            short_time(item["at"]),
            item["change"],
            f"{item['from_state']} -> {item['to_state']}",
            "" if item["value"] is None else f"{item['value']:.6g}",
            item["samples"],
            item["detail"],
        ]
        for item in report["transitions"]
    ]
    title = (
        f"{report['rule']} ({report['source']}) in {report['environment']}: {report['condition']}; "
        f"{len(report['evaluations'])} evaluations every {report['interval_seconds']:g} s "
        f"from {short_time(report['from'])} to {short_time(report['to'])}"
    )
    return table(title, ["at", "change", "state", "value", "samples", "detail"], rows)


def add_guard_commands(commands: Subcommands) -> None:
    """Add `guards simulate` and `guards replay` to the command line."""
    guards = commands.add_parser("guards", help="stage guards").add_subparsers(dest="guards_command", required=True)
    simulate = add_command(
        guards, "simulate", cmd_guards_simulate, "simulate what a definition's stage guards would do (Monte Carlo)"
    )
    simulate.add_argument("definition", help="the definition file (read locally)")
    simulate.add_argument("--env", required=True, help="the environment whose stages to simulate")
    simulate.add_argument("--flag", help="the flag whose plan to read (default: the only one with a plan there)")
    simulate.add_argument("--stage", type=int, help="the stage number, from 1 (default: every stage)")
    simulate.add_argument("--rate", default="100", help="canary events per 5 minutes, comma-separated (default 100)")
    simulate.add_argument("--healthy", default="0.01", help="healthy share of bad events, comma-separated")
    simulate.add_argument("--regressed", default="0.06", help="share of bad canary events after the onset")
    simulate.add_argument("--onset", default="0,600", help="regression onsets, seconds from the stage start")
    simulate.add_argument("--baseline-rate", type=float, default=0.0, help="baseline cohort events per 5 minutes")
    simulate.add_argument(
        "--healthy-mean", type=float, help="mean guards: mean value while healthy (half the threshold)"
    )
    simulate.add_argument(
        "--regressed-mean", type=float, help="mean guards: mean value after the onset (twice the threshold)"
    )
    simulate.add_argument("--sigma", type=float, default=1.0, help="log-normal shape of values (mean guards)")
    simulate.add_argument(
        "--warm-up",
        type=float,
        default=0.0,
        help="seconds of healthy traffic before the stage starts (default 0: the guard's windows start empty)",
    )
    simulate.add_argument("--stage-seconds", type=float, default=3600.0, help="length of a trial (default 3600)")
    simulate.add_argument("--interval", type=float, default=2.0, help="seconds between evaluations (default 2)")
    simulate.add_argument("--trials", type=int, default=2000, help="trials per scenario and onset (default 2000)")
    simulate.add_argument(
        "--seed", type=int, default=1, help="random seed: the same seed gives the same figures (default 1)"
    )
    simulate.add_argument("--workers", type=int, help="processes (default: one per CPU)")

    replay = add_command(
        guards, "replay", cmd_guards_replay, "replay a rule over the traffic the server stored (a backtest)"
    )
    replay.add_argument("rule", help="the rule's name (an applied rule, or one in --file)")
    replay.add_argument("--env", required=True, help="the environment whose traffic to replay")
    replay.add_argument("--from", dest="start", required=True, help="the first evaluation, ISO 8601 with a zone")
    replay.add_argument("--to", dest="end", required=True, help="the last evaluation, ISO 8601 with a zone")
    replay.add_argument("--file", help="a definition file declaring the rule (read locally; default: the applied rule)")
    replay.add_argument("--interval", type=float, default=10.0, help="seconds between evaluations (default 10)")
