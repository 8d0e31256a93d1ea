"""`controlplane tokens ...`: create, list and revoke tokens over the API with the caller's admin token; only
`tokens create --database` (the bootstrap, before any admin token exists) writes to the database itself."""

from __future__ import annotations

import argparse

from controlplane.cli.client import Api, CommandError, query_params
from controlplane.cli.output import Subcommands, add_command, emit, stderr, table
from controlplane.cli.server import local_actor, open_engine
from controlplane.settings import Settings

__all__ = ["add_token_commands"]


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> None:
    """Create a token and print only the token: over the API, or with ``--database`` straight in the database."""
    if not args.database:
        body = {"name": args.name, "role": args.role, "environment": args.env}
        created = Api.from_args(args).call("POST", "/tokens", json={key: value for key, value in body.items() if value})
        print(created["token"])
        return
    from sqlalchemy.orm import sessionmaker

    from controlplane.api.roles import Role
    from controlplane.auth import service as auth_service
    from controlplane.auth.schemas import TokenCreate
    from controlplane.db import session_scope, utcnow
    from controlplane.errors import DomainError

    factory = sessionmaker(open_engine(settings), expire_on_commit=False)
    request = TokenCreate(name=args.name, role=Role(args.role), environment=args.env)
    try:
        with session_scope(factory) as session:
            created = auth_service.create_token(
                session, request=request, actor=local_actor(), environments=settings.environments, now=utcnow()
            )
    except DomainError as error:
        raise CommandError(f"{error.slug}: {error.detail}") from error
    where = open_engine(settings).url.render_as_string(hide_password=True)
    stderr.print(f"written straight to the database {where} (bootstrap), audited as {local_actor()}")
    print(created.token)


def cmd_tokens_list(args: argparse.Namespace, settings: Settings) -> None:
    """List tokens (never their secrets)."""
    tokens = Api.from_args(args).call("GET", "/tokens")
    rows = [(t["name"], t["role"], t["prefix"], t["environment"], t["created_at"], t["revoked_at"]) for t in tokens]
    emit(args, tokens, lambda _: table("tokens", ["name", "role", "prefix", "env", "created", "revoked"], rows))


def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> None:
    """Revoke a token by name."""
    revoked = Api.from_args(args).call("DELETE", f"/tokens/{args.name}", params=query_params(reason=args.reason))
    emit(args, revoked, lambda t: f"revoked {t['name']} at {t['revoked_at']}")


def add_token_commands(commands: Subcommands) -> None:
    """Add `tokens create|list|revoke` to the command line."""
    tokens = commands.add_parser("tokens", help="API tokens").add_subparsers(dest="tokens_command", required=True)
    create = add_command(tokens, "create", cmd_tokens_create, "create a token and print it (only the token)")
    create.add_argument("--name", required=True, help="the token's name: unique, the audit log's actor")
    create.add_argument(
        "--role",
        required=True,
        choices=["viewer", "operator", "admin", "ingest", "evaluate"],
        help="what the token may do",
    )
    create.add_argument("--env", help="environment an evaluate token is scoped to")
    create.add_argument(
        "--database",
        action="store_true",
        help="bootstrap: write the token straight to CONTROLPLANE_DATABASE_URL instead of through the API (for the "
        "first admin token, or when no server runs)",
    )
    add_command(tokens, "list", cmd_tokens_list, "list tokens")
    revoke = add_command(tokens, "revoke", cmd_tokens_revoke, "revoke a token")
    revoke.add_argument("name", help="the token's name")
    revoke.add_argument("--reason", help="why, for the audit log")
