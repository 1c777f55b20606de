"""sparkflow users create|list|delete|set-role|set-password|deactivate|activate|token|token-list|token-revoke:
web users and their API tokens."""

from __future__ import annotations

from datetime import timedelta

import click

from sparkflow.cli.env import CliEnv
from sparkflow.cli.output import emit, output_option
from sparkflow.exceptions import UserError
from sparkflow.metastore import queries, user_store
from sparkflow.metastore.user_store import USER_ROLES
from sparkflow.web.auth import hash_password, new_api_token

MIN_PASSWORD = 8


@click.group("users")
def users() -> None:
    """Web users (admin, op, viewer) and API tokens."""


def _check_password(username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password of '{username}' is too short ({len(password)} characters); use at least "
                        f"{MIN_PASSWORD}")


@users.command("create")
@click.option("--username", "-u", required=True)
@click.option("--password", "-p", prompt=True, hide_input=True, confirmation_prompt=True,
              help="At least 8 characters (asked for when left out).")
@click.option("--role", "-r", type=click.Choice(USER_ROLES), default="viewer", show_default=True,
              help="admin: everything; op: trigger, clear, mark, pause, edit connections; viewer: read only.")
@click.pass_obj
def create(env: CliEnv, username: str, password: str, role: str) -> None:
    """Create a web user; the password is stored as a scrypt hash."""
    _check_password(username, password)
    env.metastore.users.create_user(username, hash_password(password), role)
    click.echo(f"Created user '{username}' with role {role}")


@users.command("list")
@output_option
@click.pass_obj
def list_cmd(env: CliEnv, output: str) -> None:
    rows = [{"username": u.username, "role": u.role, "active": u.active, "created_at": u.created_at}
            for u in queries.list_users(env.metastore.db)]
    emit(rows, output)


@users.command("delete")
@click.option("--username", "-u", required=True)
@click.pass_obj
def delete_cmd(env: CliEnv, username: str) -> None:
    """Delete a user; its sessions and API tokens stop working at once."""
    env.metastore.users.delete_user(username)
    click.echo(f"Deleted user '{username}' with its sessions and API tokens")


@users.command("set-role")
@click.option("--username", "-u", required=True)
@click.option("--role", "-r", type=click.Choice(USER_ROLES), required=True)
@click.pass_obj
def set_role_cmd(env: CliEnv, username: str, role: str) -> None:
    """Change a user's role (takes effect with its next request)."""
    env.metastore.users.set_role(username, role)
    click.echo(f"User '{username}' now has role {role}")


@users.command("set-password")
@click.option("--username", "-u", required=True)
@click.option("--password", "-p", prompt=True, hide_input=True, confirmation_prompt=True,
              help="At least 8 characters (asked for when left out).")
@click.pass_obj
def set_password_cmd(env: CliEnv, username: str, password: str) -> None:
    """Change a user's password; its web sessions end (API tokens stay: revoke them with token-revoke)."""
    _check_password(username, password)
    env.metastore.users.set_password_hash(username, hash_password(password))
    click.echo(f"Changed the password of '{username}'; its sessions have ended")


@users.command("deactivate")
@click.option("--username", "-u", required=True)
@click.pass_obj
def deactivate_cmd(env: CliEnv, username: str) -> None:
    """Stop a user from logging in; its sessions end and its API tokens are refused until `users activate`."""
    env.metastore.users.set_active(username, False)
    click.echo(f"Deactivated user '{username}'")


@users.command("activate")
@click.option("--username", "-u", required=True)
@click.pass_obj
def activate_cmd(env: CliEnv, username: str) -> None:
    """Let a deactivated user log in again."""
    env.metastore.users.set_active(username, True)
    click.echo(f"Activated user '{username}'")


@users.command("token")
@click.argument("username")
@click.option("--expires-in", "expires_in", type=click.IntRange(min=1), default=None,
              help="Days until the token stops working (default: until revoked).")
@click.pass_obj
def token(env: CliEnv, username: str, expires_in: int | None) -> None:
    """Create an API token for USERNAME and print it once (send it as 'Authorization: Bearer <token>')."""
    value, digest = new_api_token()
    expires = user_store.utcnow() + timedelta(days=expires_in) if expires_in else None
    env.metastore.users.add_api_token(username, digest, expires_at=expires)
    click.echo(value)


@users.command("token-list")
@click.argument("username", required=False)
@output_option
@click.pass_obj
def token_list(env: CliEnv, username: str | None, output: str) -> None:
    """API tokens (of USERNAME, or of everyone): id, user, created, expires, last used. Never the token."""
    rows = [{"id": r.id, "username": r.username, "created_at": r.created_at, "expires_at": r.expires_at,
             "last_used_at": r.last_used_at} for r in env.metastore.users.list_tokens(username)]
    emit(rows, output)


@users.command("token-revoke")
@click.argument("token_id", type=int)
@click.pass_obj
def token_revoke(env: CliEnv, token_id: int) -> None:
    """Revoke the API token with this id (see token-list); it stops working at once."""
    env.metastore.users.revoke_token(token_id)
    click.echo(f"Revoked API token {token_id}")
