"""sparkflow webserver and sparkflow standalone (scheduler + webserver in one command)."""

from __future__ import annotations

import ipaddress
import logging
import sys
import threading

import click

from sparkflow.cli.env import CliEnv
from sparkflow.exceptions import UserError
from sparkflow.logs import MaskingFormatter, configure_sparkflow_log
from sparkflow.metastore import queries
from sparkflow.scheduler.daemon import SchedulerDaemon
from sparkflow.web.app import create_app

host_option = click.option("--host", "-H", default="127.0.0.1", show_default=True,
                           help="Address to listen on (loopback by default; put a TLS proxy in front otherwise).")
port_option = click.option("--port", "-p", type=click.IntRange(1, 65535), default=8080, show_default=True)


def _serve(env: CliEnv, host: str, port: int, before_serve: str) -> None:
    import uvicorn

    app = create_app(env.settings, env.metastore)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    url_host = f"[{host}]" if ":" in host else host
    click.echo(f"{before_serve}sparkflow webserver on http://{url_host}:{port}/ (API: /api/v1, docs: /api/v1/ui)")
    if not queries.list_users(env.metastore.db):
        click.echo("No user can log in yet: create one with `sparkflow users create --username admin "
                   "--role admin` (it asks for the password)", err=True)
    else:
        click.echo("Log in with a user from `sparkflow users list`; API tokens: `sparkflow users token USERNAME`")
    server.run()


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise UserError(f"--host {host!r} is not an IP address; use e.g. 127.0.0.1 or 0.0.0.0") from None


@click.command("webserver")
@host_option
@port_option
@click.pass_obj
def webserver(env: CliEnv, host: str, port: int) -> None:
    """Serve the web UI and the REST API (uvicorn) until Ctrl-C / SIGTERM."""
    _check_host(host)
    configure_sparkflow_log(env.settings.resolved_log_folder)
    _serve(env, host, port, "")


@click.command("standalone")
@host_option
@port_option
@click.pass_obj
def standalone(env: CliEnv, host: str, port: int) -> None:
    """Run the scheduler and the webserver together (one machine). Ctrl-C stops both."""
    _check_host(host)
    settings = env.settings
    configure_sparkflow_log(settings.resolved_log_folder)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter("[%(asctime)s] %(levelname)s - %(message)s"))
    logging.getLogger("sparkflow.scheduler").addHandler(handler)
    daemon = SchedulerDaemon(settings, env.metastore, dag_processor=not settings.standalone_dag_processor)
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False}, name="scheduler", daemon=True)
    thread.start()
    try:
        _serve(env, host, port, f"sparkflow scheduler running (DAG folder {settings.resolved_dags_folder})\n")
    finally:
        daemon.stop_requested.set()
        thread.join(timeout=30)
