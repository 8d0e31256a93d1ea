"""`controlplane flags list|show`: flags and what each environment serves; `flags set-variant`, `flags undo` and
`flags incidents`: the incident action that serves one variant to everyone, and its undo."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from controlplane.cli.client import Api
from controlplane.cli.output import Subcommands, add_command, emit, short_time, stdout, table
from controlplane.settings import Settings

__all__ = ["add_flag_commands"]


def _serving(state: dict[str, Any]) -> str:
    """What one environment of a flag serves: off, on, or its rollout's percentage; under an incident action in
    force, the variant it serves to everyone and the incident."""
    incident = state.get("incident")
    if incident:
        return f"{incident['variant']} to everyone (incident {incident['id']})"
    if not state["enabled"]:
        return "off"
    rollout = state.get("rollout")
    return f"{rollout['percentage']:g}%" if rollout else "on"


def _incident_lines(environments: list[dict[str, Any]]) -> list[str]:
    """One line per incident action in force among ``environments``: what, where, since when, by whom, why, undo."""
    places: dict[int, list[str]] = {}
    incidents: dict[int, dict[str, Any]] = {}
    for state in environments:
        if state.get("incident"):
            incidents[state["incident"]["id"]] = state["incident"]
            places.setdefault(state["incident"]["id"], []).append(state["environment"])
    return [
        f"INCIDENT {number} in force in {', '.join(places[number])}: `{item['variant']}` to everyone since "
        f"{short_time(item['since'])}, by {item['actor']}: {item['reason']}; undo: {item['undo']}"
        for number, item in incidents.items()
    ]


def cmd_flags_list(args: argparse.Namespace, settings: Settings) -> None:
    """List flags and whether each environment is on."""
    flags = Api.from_args(args).call("GET", "/flags")
    rows = []
    for flag in flags:
        states = " ".join(f"{e['environment']}:{_serving(e)}" for e in flag["environments"])
        rows.append((flag["key"], flag["type"], flag["kind"], flag["revision"], states))
    emit(args, flags, lambda _: table("flags", ["key", "type", "kind", "rev", "environments"], rows))


def cmd_flags_show(args: argparse.Namespace, settings: Settings) -> None:
    """Show one flag in every environment."""
    flag = Api.from_args(args).call("GET", f"/flags/{args.key}")

    def render(data: Any) -> Table | str:
        rows = [
            (e["environment"], e["enabled"], e["default_variant"], len(e["rules"]), _serving(e), e["revision"])
            for e in data["environments"]
        ]
        # Variant values as JSON (true, "blue", 3): they are what the flag serves, not words about it.
        variants = ", ".join(f"{name}={json.dumps(value)}" for name, value in data["variants"].items())
        title = f"{data['key']} ({data['type']}, {data['kind']}, rev {data['revision']}) variants: {variants}"
        shown = table(title, ["env", "enabled", "default", "rules", "serving", "rev"], rows)
        incidents = _incident_lines(data["environments"])
        if not incidents:
            return shown
        stdout.print(shown)
        return "\n".join(incidents)

    emit(args, flag, render)


def _state_words(state: dict[str, Any] | None) -> str:
    """A recorded serving state in one line: on/off, default, rules, rollout percentage."""
    if not state:
        return ""
    rollout = state.get("rollout")
    parts = [
        "on" if state["enabled"] else "off",
        f"default {state['default_variant']}",
        f"{len(state['rules'])} rules",
    ]
    if rollout:
        parts.append(f"rollout {rollout['variant']} {rollout['percentage']:g}%")
    return ", ".join(parts)


def _incident_table(incident: dict[str, Any]) -> Table:
    undone = incident.get("undo") is not None
    title = (
        f"incident {incident['id']}: {incident['flag']} -> {incident['variant']} to everyone, "
        f"by {incident['actor']}: {incident['reason']}"
    )
    if undone:
        title += f" (undone by {incident['undone_by']}: {incident['undo_reason']})"
    undo = {item["environment"]: item for item in incident.get("undo") or []}
    rows = []
    for item in incident["environments"]:
        done = undo.get(item["environment"])
        rows.append(
            (
                item["environment"],
                _state_words(item["before"]),
                _state_words(item["after"]),
                _paused_words(item),
                ("restored" + (" (forced)" if done["changed_since"] else "")) if done else "-",
                (done["rollout"] or "-") if done else "-",
            )
        )
    return table(title, ["env", "before", "during", "rollout", "undo", "rollout after undo"], rows)


def _paused_words(item: dict[str, Any]) -> str:
    """The incident table's rollout cell: paused or not, and which segments of a plan run per segment."""
    if not item["rollout_paused"]:
        return "-"
    segments = item.get("paused_segments") or []
    return f"paused: {', '.join(segments)}" if segments else "paused"


def cmd_flags_set_variant(args: argparse.Namespace, settings: Settings) -> None:
    """Serve one variant to everyone, everywhere the flag is on (or in the named environments)."""
    body = {
        "variant": args.variant,
        "reason": args.reason,
        "environments": args.env or [],
        "all_environments": args.all_environments,
    }
    incident = Api.from_args(args).call("POST", f"/flags/{args.key}/set-variant", json=body)

    def render(data: Any) -> str:
        lines = []
        for environment, why in data["skipped"].items():
            lines.append(f"left alone: {environment}: {why}")
        paused = [
            f"{item['environment']} ({', '.join(item['paused_segments'])})"
            if item.get("paused_segments")
            else item["environment"]
            for item in data["environments"]
            if item["rollout_paused"]
        ]
        if paused:
            lines.append(f"running rollouts paused (resumed by the undo): {', '.join(paused)}")
        lines.append(f"undo: controlplane flags undo {data['id']} --reason TEXT")
        stdout.print(_incident_table(data))
        return "\n".join(lines)

    emit(args, incident, render)


def cmd_flags_undo(args: argparse.Namespace, settings: Settings) -> None:
    """Put every environment of an incident back in its state recorded before it."""
    body = {"reason": args.reason, "force": args.force}
    incident = Api.from_args(args).call("POST", f"/incidents/{args.incident}/undo", json=body)
    emit(args, incident, _incident_table)


def cmd_flags_incidents(args: argparse.Namespace, settings: Settings) -> None:
    """List incident actions, newest first."""
    params = {"flag": args.flag} if args.flag else {}
    incidents = Api.from_args(args).call("GET", "/incidents", params=params)
    rows = [
        (
            item["id"],
            item["flag"],
            item["variant"],
            ", ".join(env["environment"] for env in item["environments"]),
            item["actor"],
            short_time(item["created_at"]),
            f"undone {short_time(item['undone_at'])} by {item['undone_by']}" if item["undone_at"] else "in force",
            item["reason"],
        )
        for item in incidents
    ]
    columns = ["id", "flag", "variant", "environments", "by", "at", "state", "reason"]
    emit(args, incidents, lambda _: table("incident actions", columns, rows))


def add_flag_commands(commands: Subcommands) -> None:
    """Add `flags list|show|set-variant|undo|incidents` to the command line."""
    flags = commands.add_parser("flags", help="flags").add_subparsers(dest="flags_command", required=True)
    add_command(flags, "list", cmd_flags_list, "list flags")
    show = add_command(flags, "show", cmd_flags_show, "show a flag in every environment")
    show.add_argument("key", help="the flag's key")
    set_variant = add_command(
        flags,
        "set-variant",
        cmd_flags_set_variant,
        "incident action: serve one variant to everyone (environment on, that default, no rules, rollout at 0%%); "
        "running rollouts there are paused; undo with `flags undo`",
    )
    set_variant.add_argument("key", help="the flag's key")
    set_variant.add_argument("variant", help="the variant to serve to everyone")
    where = set_variant.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--all-environments", action="store_true", help="every environment where the flag is switched on"
    )
    where.add_argument("--env", action="append", help="an environment (repeat for more); switched on if it was off")
    set_variant.add_argument("--reason", required=True, help="why, for the audit log and on-call")
    undo = add_command(
        flags,
        "undo",
        cmd_flags_undo,
        "undo an incident action: restore each environment's recorded state, resume the rollouts it paused",
    )
    undo.add_argument("incident", type=int, help="the incident's id (printed by set-variant; see `flags incidents`)")
    undo.add_argument("--reason", required=True, help="why, for the audit log and on-call")
    undo.add_argument(
        "--force", action="store_true", help="restore even environments someone changed since (overwrites that)"
    )
    incidents = add_command(flags, "incidents", cmd_flags_incidents, "list incident actions, newest first")
    incidents.add_argument("--flag", help="only this flag's")
