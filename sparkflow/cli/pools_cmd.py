"""sparkflow pools set|list|delete."""

from __future__ import annotations

import click

from sparkflow.cli.env import CliEnv
from sparkflow.cli.output import emit, output_option
from sparkflow.exceptions import UserError
from sparkflow.metastore import queries


@click.group("pools")
def pools() -> None:
    """Pools: named limits on how many task instances run at once (default_pool has 128 slots)."""


@pools.command("set")
@click.argument("name")
@click.argument("slots")
@click.option("--description", "-d", help="What the pool is for.")
@click.pass_obj
def set_cmd(env: CliEnv, name: str, slots: str, description: str | None) -> None:
    """Create pool NAME with SLOTS slots, or resize it."""
    try:
        count = int(slots)
    except ValueError:
        raise UserError(f"pool '{name}': SLOTS {slots!r} is not a whole number; use e.g. 4") from None
    env.metastore.pools.set_pool(name, count, description)
    click.echo(f"Pool {name}: {count} slot(s)")


@pools.command("list")
@output_option
@click.pass_obj
def list_cmd(env: CliEnv, output: str) -> None:
    """Pools with their slots in use (running, queued) and open."""
    rows = [
        {"pool": p.pool, "slots": p.slots, "running_slots": p.running, "queued_slots": p.queued,
         "occupied_slots": p.occupied, "open_slots": p.open, "description": p.description}
        for p in queries.list_pools(env.metastore.db)
    ]
    emit(rows, output, ["pool", "slots", "running_slots", "queued_slots", "open_slots", "description"])


@pools.command("delete")
@click.argument("name")
@click.pass_obj
def delete_cmd(env: CliEnv, name: str) -> None:
    """Delete pool NAME (tasks still naming it wait until it exists again)."""
    env.metastore.pools.delete_pool(name)
    click.echo(f"Pool {name} deleted")
