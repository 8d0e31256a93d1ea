"""The `controlplane` command.

Bootstrap commands (`serve`, `db upgrade`, `tokens create`) talk to the database named by the settings.
Everything else talks to the HTTP API at ``CONTROLPLANE_URL`` with ``CONTROLPLANE_TOKEN``, so it is authorised
and audited like any other client. Tables by default, ``--json`` for scripts; errors go to stderr as
``error <status> <problem type>: <detail>`` and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from controlplane.settings import Settings, SettingsError

__all__ = ["main"]

DEFAULT_URL = "http://127.0.0.1:8080"
# Piped output keeps whole lines (rich would otherwise wrap tables at 80 columns).
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class CommandError(Exception):
    """A failure to report in one line and exit 1."""


# --- bootstrap commands: the database -------------------------------------------------------------------------


def _engine(settings: Settings) -> Any:
    from controlplane.db import create_db_engine

    return create_db_engine(settings.database_url)


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> None:
    """Migrate the database to the newest schema."""
    from controlplane.migrate import upgrade_to_head

    upgrade_to_head(_engine(settings))
    stderr.print(f"database at the newest migration: {settings.database_url}")


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> None:
    """Create a token straight in the database; print only the token."""
    from sqlalchemy.orm import sessionmaker

    from controlplane.auth import service as auth_service
    from controlplane.auth.roles import Role
    from controlplane.auth.schemas import TokenCreate
    from controlplane.db import session_scope, utcnow
    from controlplane.errors import DomainError

    factory = sessionmaker(_engine(settings), expire_on_commit=False)
    request = TokenCreate(name=args.name, role=Role(args.role), environment=args.env)
    try:
        with session_scope(factory) as session:
            created = auth_service.create_token(
                session, request=request, actor=_local_actor(), environments=settings.environments, now=utcnow()
            )
    except DomainError as error:
        raise CommandError(f"{error.slug}: {error.detail}") from error
    print(created.token)


def _local_actor() -> str:
    """Who runs a bootstrap command, for the audit log."""
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}"


def bootstrap(settings: Settings, engine: Any) -> str | None:
    """Migrate, apply the definitions folder, and create an admin token if none is active; return that token."""
    from sqlalchemy.orm import sessionmaker

    from controlplane.auth import service as auth_service
    from controlplane.auth.roles import Role
    from controlplane.auth.schemas import TokenCreate
    from controlplane.db import session_scope, utcnow
    from controlplane.definitions.loader import DefinitionError, load_definition
    from controlplane.definitions.service import apply_definition
    from controlplane.migrate import upgrade_to_head

    upgrade_to_head(engine)
    factory = sessionmaker(engine, expire_on_commit=False)
    paths = sorted(settings.definitions_dir.glob("*.yaml")) if settings.definitions_dir.is_dir() else []
    try:
        # Every file is read before any is applied, and all are applied in one transaction: all or nothing.
        definitions = [load_definition(path, environments=settings.environments) for path in paths]
    except DefinitionError as error:
        raise CommandError(f"invalid definition, nothing applied: {error}") from error
    with session_scope(factory) as session:
        reports = [
            apply_definition(
                session, definition=definition, actor="bootstrap", environments=settings.environments, now=utcnow()
            )
            for definition in definitions
        ]
    for path, report in zip(paths, reports, strict=True):
        stderr.print(f"definitions: {path} {'applied changes' if report.changed else 'unchanged'}")
    with session_scope(factory) as session:
        if auth_service.has_token_with_role(session, Role.ADMIN):
            return None
        # A unique name: an earlier, revoked "admin" token keeps its name in the audit log.
        name = "admin-" + utcnow().strftime("%Y%m%dT%H%M%SZ")
        created = auth_service.create_token(
            session,
            request=TokenCreate(name=name, role=Role.ADMIN),
            actor="bootstrap",
            environments=settings.environments,
            now=utcnow(),
        )
    stderr.print(f"\nAdmin token `{name}` (shown once; store it now):")
    return created.token


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    """Migrate, apply the shipped definitions, make sure an admin token exists, then serve HTTP."""
    import uvicorn

    from controlplane.app import create_app
    from controlplane.notifications.config import NotificationConfigError, load_notification_config

    try:
        # Checked before anything else: a bad notifications file must stop the start, not silence on-call.
        load_notification_config(settings.notifications_file)
    except NotificationConfigError as error:
        raise CommandError(f"notifications file: {error}") from error
    engine = _engine(settings)
    token = bootstrap(settings, engine)
    if token is not None:
        print(token, flush=True)
        stderr.print(f"\nexport CONTROLPLANE_TOKEN={token}\n")
    host = args.host or settings.host
    port = args.port or settings.port
    stderr.print(f"serving on http://{host}:{port} (API docs at /schema)")
    uvicorn.run(create_app(settings, engine=engine, freeze_heap=True), host=host, port=port, log_level="info")


# --- API commands ---------------------------------------------------------------------------------------------


class Api:
    """A thin client of the control plane's HTTP API."""

    def __init__(self, url: str, token: str | None) -> None:
        if not token:
            raise CommandError("set CONTROLPLANE_TOKEN to an API token (see `controlplane tokens create`)")
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the JSON body, or raise CommandError with the problem's type and detail."""
        try:
            with httpx.Client(base_url=self._url, headers=self._headers, timeout=30) as client:
                response = client.request(method, "/api/v1" + path, **kwargs)
        except httpx.HTTPError as error:
            raise CommandError(f"cannot reach the control plane at {self._url}: {error}") from error
        if response.is_success:
            return response.json()
        try:
            problem = response.json()
            slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
            detail = problem.get("detail", response.text)
            extra = {k: v for k, v in problem.items() if k not in ("type", "title", "status", "detail", "instance")}
        except ValueError:
            slug, detail, extra = "http-error", response.text, {}
        suffix = f" {json.dumps(extra)}" if extra else ""
        raise CommandError(f"{response.status_code} {slug}: {detail}{suffix}")


def _api(args: argparse.Namespace) -> Api:
    return Api(os.environ.get("CONTROLPLANE_URL", DEFAULT_URL), os.environ.get("CONTROLPLANE_TOKEN"))


def _emit(args: argparse.Namespace, data: Any, table: Callable[[Any], Table | str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        stdout.print(table(data))


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    return table


def cmd_tokens_list(args: argparse.Namespace, settings: Settings) -> None:
    """List tokens (never their secrets)."""
    tokens = _api(args).call("GET", "/tokens")
    rows = [(t["name"], t["role"], t["prefix"], t["environment"], t["created_at"], t["revoked_at"]) for t in tokens]
    _emit(args, tokens, lambda _: _table("tokens", ["name", "role", "prefix", "env", "created", "revoked"], rows))


def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> None:
    """Revoke a token by name."""
    revoked = _api(args).call("DELETE", f"/tokens/{args.name}", params=_params(reason=args.reason))
    _emit(args, revoked, lambda t: f"revoked {t['name']} at {t['revoked_at']}")


def cmd_definitions_apply(args: argparse.Namespace, settings: Settings) -> None:
    """Send a definition file to the control plane and show what changed."""
    path = Path(args.file)
    try:
        content = path.read_text()
    except OSError as error:
        raise CommandError(f"cannot read {path}: {error.strerror}") from error
    body = {"content": content, "source": path.name, "dry_run": args.dry_run}
    report = _api(args).call("POST", "/definitions/apply", json=body)

    def render(data: Any) -> Table:
        rows = [
            (c["flag"], c["environment"] or "", c["action"], ", ".join(c["fields"]), c["note"] or "")
            for c in data["changes"]
        ]
        verb = "would change" if data["dry_run"] else "changed"
        title = f"{data['pipeline']} ({data['source']}): {verb if data['changed'] else 'nothing to change'}"
        return _table(title, ["flag", "env", "action", "fields", "note"], rows)

    _emit(args, report, render)


def cmd_flags_list(args: argparse.Namespace, settings: Settings) -> None:
    """List flags and whether each environment is on."""
    flags = _api(args).call("GET", "/flags")
    rows = []
    for flag in flags:
        states = " ".join(f"{e['environment']}:{_serving(e)}" for e in flag["environments"])
        rows.append((flag["key"], flag["type"], flag["kind"], flag["revision"], states))
    _emit(args, flags, lambda _: _table("flags", ["key", "type", "kind", "rev", "environments"], rows))


def _serving(state: dict[str, Any]) -> str:
    if not state["enabled"]:
        return "off"
    rollout = state.get("rollout")
    return f"{rollout['percentage']:g}%" if rollout else "on"


def cmd_flags_show(args: argparse.Namespace, settings: Settings) -> None:
    """Show one flag in every environment."""
    flag = _api(args).call("GET", f"/flags/{args.key}")

    def render(data: Any) -> Table:
        rows = [
            (e["environment"], e["enabled"], e["default_variant"], len(e["rules"]), _serving(e), e["revision"])
            for e in data["environments"]
        ]
        title = f"{data['key']} ({data['type']}, {data['kind']}, rev {data['revision']}) variants={data['variants']}"
        return _table(title, ["env", "enabled", "default", "rules", "serving", "rev"], rows)

    _emit(args, flag, render)


def _status_table(status: dict[str, Any]) -> Table:
    stage = f"{status['stage_index'] + 1}/{status['stage_count']}"
    rows = [
        ("state", status["state"]),
        ("stage", stage),
        ("percentage", f"{status['percentage']:g}%"),
        ("environment enabled", status["enabled"]),
        ("revision", status["revision"]),
        ("stage started", status["stage_started_at"]),
        ("bake remaining", f"{status['bake_remaining_seconds']:.0f}s"),
        ("next auto-advance", status["next_auto_advance_at"] or "-"),
        ("gates", f"{status['gates']}: {status['gates_detail']}"),
        ("previous environment", f"{status['previous_environment']} ({status['previous_environment_state']})"),
        ("started by", status["started_by"]),
        ("forced", status["forced_reason"] or "-"),
    ]
    return _table(f"rollout of {status['flag']} in {status['environment']}", ["", ""], rows)


def cmd_rollout(args: argparse.Namespace, settings: Settings) -> None:
    """Show or change a rollout."""
    api = _api(args)
    base = f"/flags/{args.flag}/environments/{args.env}/rollout"
    if args.operation == "status":
        _emit(args, api.call("GET", base), _status_table)
        return
    revision = args.revision
    if revision is None and args.operation in ("start", "advance", "resume"):
        # Act on the state as it is now; the server still refuses if it moves before this request lands.
        # Pause and rollback send no revision unless given one: stopping a rollout never waits on a stale view.
        revision = api.call("GET", base)["revision"]
    body: dict[str, Any] = {"expected_revision": revision, "reason": args.reason}
    if getattr(args, "force", False):
        body["force"] = True
    if args.operation == "rollback" and args.policy:
        body["policy"] = args.policy
    status = api.call("POST", f"{base}/{args.operation}", json=body)
    _emit(args, status, _status_table)


def cmd_audit_list(args: argparse.Namespace, settings: Settings) -> None:
    """Query the audit log."""
    params = _params(
        flag=args.flag, environment=args.env, actor=args.actor, action=args.action, since=args.since, limit=args.limit
    )
    records = _api(args).call("GET", "/audit", params=params)
    rows = [
        (
            r["id"],
            r["occurred_at"][:19].replace("T", " "),
            r["actor"],
            r["action"],
            r["target"],
            r["environment"],
            r["reason"],
            _change(r["before"], r["after"]),
        )
        for r in records
    ]
    columns = ["id", "when", "actor", "action", "target", "env", "reason", "change"]
    _emit(args, records, lambda _: _table("audit log (newest first)", columns, rows))


def _change(before: Any, after: Any) -> str:
    """A one-line summary of what changed; `--json` has the full before and after."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return ", ".join(f"{k}: {_brief(before.get(k))} -> {_brief(after.get(k))}" for k in keys)
    return f"{_brief(before)} -> {_brief(after)}"


def _brief(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> None:
    """Verify the audit chain; exit 1 and name the first broken record when it does not verify."""
    result = _api(args).call("GET", "/audit/verify")
    if args.json:
        print(json.dumps(result, indent=2))
    elif result["ok"]:
        stdout.print(f"audit chain ok: {result['records']} records verified")
        # Keep the head somewhere else: records cut off the end can only be caught by comparing it later.
        stdout.print(f"head: record {result['head_id']} digest {result['head_digest']}")
    else:
        stdout.print(f"audit chain BROKEN at record {result['first_broken_id']}: {result['reason']}")
    if not result["ok"]:
        raise SystemExit(1)


def cmd_silences_add(args: argparse.Namespace, settings: Settings) -> None:
    """Silence notifications of matching alerts for a while (alert states are not changed)."""
    matchers = _params(
        rule=args.rule, environment=args.environment, pipeline=args.pipeline, flag=args.flag, severity=args.severity
    )
    if not matchers:
        raise CommandError("name what to silence: one or more of --rule, --environment, --pipeline, --flag, --severity")
    body = {"matchers": matchers, "duration_seconds": _duration_seconds(args.duration), "comment": args.comment}
    silence = _api(args).call("POST", "/silences", json=body)
    _emit(args, silence, lambda s: f"silence {s['id']} ({s['state']}) until {s['ends_at']}: {_matchers(s)}")


def _duration_seconds(text: str) -> float:
    from controlplane.definitions.loader import parse_duration

    try:
        seconds = parse_duration(int(text) if text.isdigit() else text).total_seconds()
    except ValueError as error:
        raise CommandError(f"--duration {text!r}: write seconds or d/h/m/s units, e.g. 30m, 2h, 1d") from error
    if seconds <= 0:
        raise CommandError("--duration must be longer than zero")
    return seconds


def _matchers(silence: dict[str, Any]) -> str:
    return " ".join(f"{name}={value}" for name, value in sorted(silence["matchers"].items()))


def _when(value: str | None) -> str | None:
    return value[:19].replace("T", " ") if value else value


def cmd_silences_list(args: argparse.Namespace, settings: Settings) -> None:
    """List silences not yet over (with --all, expired ones too)."""
    silences = _api(args).call("GET", "/silences", params=_params(all="true" if args.all else None))
    rows = [
        (s["id"], s["state"], _matchers(s), _when(s["starts_at"]), _when(s["ends_at"]), s["created_by"], s["comment"])
        for s in silences
    ]
    columns = ["id", "state", "matchers", "starts", "ends", "by", "comment"]
    _emit(args, silences, lambda _: _table("silences (newest first)", columns, rows))


def cmd_silences_expire(args: argparse.Namespace, settings: Settings) -> None:
    """End a silence now."""
    silence = _api(args).call("DELETE", f"/silences/{args.id}")
    _emit(args, silence, lambda s: f"silence {s['id']} expired at {s['ends_at']}: {_matchers(s)}")


def cmd_notifications_list(args: argparse.Namespace, settings: Settings) -> None:
    """Show the notification log: what was sent to whom, what is retrying, failed or silenced."""
    params = _params(status=args.status, receiver=args.receiver, rule=args.rule, limit=args.limit)
    notifications = _api(args).call("GET", "/notifications", params=params)
    rows = [
        (
            n["id"],
            _when(n["created_at"]),
            n["receiver"],
            n["kind"],
            n["severity"],
            n["status"],
            n["attempts"],
            ", ".join(f"{a['rule']}@{a['environment']}" for a in n["payload"].get("alerts", [])),
            n["last_error"],
        )
        for n in notifications
    ]
    columns = ["id", "created", "receiver", "kind", "severity", "status", "attempts", "alerts", "last error"]
    _emit(args, notifications, lambda _: _table("notifications (newest first)", columns, rows))


def _params(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


# --- rendering ------------------------------------------------------------------------------------------------

#: What `render` may find in the folders it writes and delete when no definition renders it any more.
_RENDERED_SUFFIXES = (".yml", ".yaml", ".json")


def cmd_render(args: argparse.Namespace, settings: Settings) -> None:
    """Write alerts/ (rules, promtool tests, Alertmanager example) and dashboards/ from the definitions; --check
    only compares."""
    from controlplane.definitions.loader import DefinitionError, load_definition
    from controlplane.render import render_all

    folder = Path(args.definitions) if args.definitions else settings.definitions_dir
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        raise CommandError(f"no definitions (*.yaml) in {folder}")
    try:
        definitions = [load_definition(path, environments=settings.environments) for path in paths]
    except DefinitionError as error:
        raise CommandError(f"invalid definition, nothing rendered: {error}") from error
    files = render_all(definitions)
    out = Path(args.out)
    changed = [path for path, text in files.items() if _current(out / path) != text]
    stale = _stale(out, files)
    if args.check:
        for path in changed:
            stderr.print(f"{'differs' if (out / path).exists() else 'missing'}: {out / path}")
        for path in stale:
            stderr.print(f"stale (no definition renders it): {out / path}")
        if changed or stale:
            stderr.print("run `controlplane render` and commit the result")
            raise SystemExit(1)
        stdout.print(f"{len(files)} rendered files are current in {out}")
        return
    for path in changed:
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(files[path], encoding="utf-8")
        stdout.print(f"wrote {target}")
    for path in stale:
        (out / path).unlink()
        stdout.print(f"removed {out / path} (no definition renders it)")
    stdout.print(f"{len(files)} files rendered, {len(changed)} changed, {len(stale)} removed")


def _current(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _stale(out: Path, files: dict[str, str]) -> list[str]:
    """Files in the folders `render` writes that it did not render this time (a removed pipeline's, say)."""
    folders = {Path(path).parts[0] for path in files}
    found = [
        candidate.relative_to(out).as_posix()
        for folder in sorted(folders)
        for candidate in sorted((out / folder).rglob("*"))
        if candidate.is_file() and candidate.suffix in _RENDERED_SUFFIXES
    ]
    return [path for path in found if path not in files]


# --- parser ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="controlplane", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(
        parent: Any, name: str, handler: Callable[[argparse.Namespace, Settings], None], help_text: str
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return sub

    serve = command(commands, "serve", cmd_serve, "migrate, apply definitions, print a first admin token, serve")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)

    db = commands.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    command(db, "upgrade", cmd_db_upgrade, "migrate the database to the newest schema")

    tokens = commands.add_parser("tokens", help="API tokens").add_subparsers(dest="tokens_command", required=True)
    create = command(tokens, "create", cmd_tokens_create, "create a token in the database and print it")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=["viewer", "operator", "admin", "ingest", "evaluate"])
    create.add_argument("--env", help="environment an evaluate token is scoped to")
    command(tokens, "list", cmd_tokens_list, "list tokens")
    revoke = command(tokens, "revoke", cmd_tokens_revoke, "revoke a token")
    revoke.add_argument("name")
    revoke.add_argument("--reason")

    definitions = commands.add_parser("definitions", help="pipeline definitions").add_subparsers(
        dest="definitions_command", required=True
    )
    apply = command(definitions, "apply", cmd_definitions_apply, "create or update what a definition file declares")
    apply.add_argument("file")
    apply.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")

    flags = commands.add_parser("flags", help="flags").add_subparsers(dest="flags_command", required=True)
    command(flags, "list", cmd_flags_list, "list flags")
    show = command(flags, "show", cmd_flags_show, "show a flag in every environment")
    show.add_argument("key")

    rollout = commands.add_parser("rollout", help="rollouts").add_subparsers(dest="operation", required=True)
    for operation in ("start", "advance", "pause", "resume", "rollback", "status"):
        sub = command(rollout, operation, cmd_rollout, f"{operation} the rollout of a flag in an environment")
        sub.add_argument("flag")
        sub.add_argument("--env", required=True)
        if operation != "status":
            sub.add_argument("--reason", help="why (required for advance, pause and rollback)")
            sub.add_argument("--revision", type=int, help="the revision you act on (default: the current one)")
        if operation in ("start", "advance"):
            sub.add_argument(
                "--force",
                action="store_true",
                help="go past the promotion order or holding guards (needs --reason; audited)",
            )
        if operation == "rollback":
            sub.add_argument("--policy", choices=["off", "previous_stage"])

    audit = commands.add_parser("audit", help="audit log").add_subparsers(dest="audit_command", required=True)
    listing = command(audit, "list", cmd_audit_list, "query the audit log")
    listing.add_argument("--flag")
    listing.add_argument("--env")
    listing.add_argument("--actor")
    listing.add_argument("--action")
    listing.add_argument("--since", help="ISO 8601 time")
    listing.add_argument("--limit", type=int, default=50)
    command(audit, "verify", cmd_audit_verify, "verify the audit hash chain")

    silences = commands.add_parser("silences", help="silences").add_subparsers(dest="silences_command", required=True)
    add = command(silences, "add", cmd_silences_add, "silence notifications of matching alerts for a while")
    add.add_argument("--rule")
    add.add_argument("--environment", "--env", dest="environment")
    add.add_argument("--pipeline")
    add.add_argument("--flag")
    add.add_argument("--severity", choices=["page", "ticket", "info"])
    add.add_argument("--duration", required=True, help="how long: seconds or d/h/m/s units (30m, 2h, 1d)")
    add.add_argument("--comment", required=True, help="why")
    silence_list = command(silences, "list", cmd_silences_list, "list silences not yet over")
    silence_list.add_argument("--all", action="store_true", help="include expired silences")
    expire = command(silences, "expire", cmd_silences_expire, "end a silence now")
    expire.add_argument("id", type=int)

    notifications = commands.add_parser("notifications", help="notification log").add_subparsers(
        dest="notifications_command", required=True
    )
    notification_list = command(notifications, "list", cmd_notifications_list, "show the notification log")
    notification_list.add_argument("--status", choices=["pending", "sending", "sent", "failed", "silenced"])
    notification_list.add_argument("--receiver")
    notification_list.add_argument("--rule")
    notification_list.add_argument("--limit", type=int, default=50)

    # Imported here: the cleanup commands use this module's client and table helpers.
    from controlplane.cleanup.commands import add_cleanup_commands

    add_cleanup_commands(commands, command)

    render = command(
        commands, "render", cmd_render, "write alerts/ and dashboards/ from the definitions (--check: only compare)"
    )
    render.add_argument("--definitions", help="folder of *.yaml definitions (default: CONTROLPLANE_DEFINITIONS_DIR)")
    render.add_argument(
        "--out", default=".", help="folder to write alerts/ and dashboards/ in (default: the current one)"
    )
    render.add_argument("--check", action="store_true", help="write nothing; exit 1 listing files that differ")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        args.handler(args, settings)
    except (CommandError, SettingsError) as error:
        stderr.print(f"error {error}")
        raise SystemExit(1) from error


if __name__ == "__main__":
    main()
