"""`controlplane tokens ...`: create a token straight in the database, list and revoke tokens over the API."""

from __future__ import annotations

import argparse

from controlplane.cli.client import Api, CommandError, query_params
from controlplane.cli.output import Subcommands, add_command, emit, table
from controlplane.cli.server import local_actor, open_engine
from controlplane.settings import Settings

__all__ = ["add_token_commands"]


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> None:
    """Create a token straight in the database; print only the token."""
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
    print(created.token)


def cmd_tokens_list(args: argparse.Namespace, settings: Settings) -> None:
    """List tokens (never their secrets)."""
    tokens = Api.from_env().call("GET", "/tokens")
    rows = [(t["name"], t["role"], t["prefix"], t["environment"], t["created_at"], t["revoked_at"]) for t in tokens]
    emit(args, tokens, lambda _: table("tokens", ["name", "role", "prefix", "env", "created", "revoked"], rows))


def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> None:
    """Revoke a token by name."""
    revoked = Api.from_env().call("DELETE", f"/tokens/{args.name}", params=query_params(reason=args.reason))
    emit(args, revoked, lambda t: f"revoked {t['name']} at {t['revoked_at']}")


def add_token_commands(commands: Subcommands) -> None:
    """Add `tokens create|list|revoke` to the command line."""
    tokens = commands.add_parser("tokens", help="API tokens").add_subparsers(dest="tokens_command", required=True)
    create = add_command(tokens, "create", cmd_tokens_create, "create a token in the database and print it")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=["viewer", "operator", "admin", "ingest", "evaluate"])
    create.add_argument("--env", help="environment an evaluate token is scoped to")
    add_command(tokens, "list", cmd_tokens_list, "list tokens")
    revoke = add_command(tokens, "revoke", cmd_tokens_revoke, "revoke a token")
    revoke.add_argument("name")
    revoke.add_argument("--reason")
