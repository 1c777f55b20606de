"""sparkflow users create|list|token: web users and their API tokens."""

from __future__ import annotations

import click

from sparkflow.cli.env import CliEnv
from sparkflow.cli.output import emit, output_option
from sparkflow.exceptions import UserError
from sparkflow.metastore import queries
from sparkflow.metastore.user_store import USER_ROLES
from sparkflow.web.auth import hash_password, new_api_token

MIN_PASSWORD = 8


@click.group("users")
def users() -> None:
    """Web users (admin, op, viewer) and API tokens."""


@users.command("create")
@click.option("--username", "-u", required=True)
@click.option("--password", "-p", prompt=True, hide_input=True, confirmation_prompt=True,
              help="At least 8 characters (asked for when left out).")
@click.option("--role", "-r", type=click.Choice(USER_ROLES), default="viewer", show_default=True,
              help="admin: everything; op: trigger, clear, mark, pause, edit connections; viewer: read only.")
@click.pass_obj
def create(env: CliEnv, username: str, password: str, role: str) -> None:
    """Create a web user; the password is stored as a scrypt hash."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password of '{username}' is too short ({len(password)} characters); use at least "
                        f"{MIN_PASSWORD}")
    env.metastore.users.create_user(username, hash_password(password), role)
    click.echo(f"Created user '{username}' with role {role}")


@users.command("list")
@output_option
@click.pass_obj
def list_cmd(env: CliEnv, output: str) -> None:
    rows = [{"username": u.username, "role": u.role, "active": u.active, "created_at": u.created_at}
            for u in queries.list_users(env.metastore.db)]
    emit(rows, output)


@users.command("token")
@click.argument("username")
@click.pass_obj
def token(env: CliEnv, username: str) -> None:
    """Create an API token for USERNAME and print it once (send it as 'Authorization: Bearer <token>')."""
    value, digest = new_api_token()
    env.metastore.users.add_api_token(username, digest)
    click.echo(value)
