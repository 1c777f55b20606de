"""sparkflow worker: a Celery worker that runs the task instances the scheduler sends (SPARKFLOW_EXECUTOR=celery)."""

from __future__ import annotations

import os
import re
import warnings

import click

from sparkflow.cli.env import CliEnv
from sparkflow.exceptions import ConfigError, UserError
from sparkflow.executors.celery import make_celery_app, start_task_processes
from sparkflow.logs import configure_sparkflow_log


@click.command("worker")
@click.option("--queues", "-q", default=None,
              help="Comma-separated Celery queues to consume (default: the 'celery_default_queue' setting). A task's "
                   "`queue` argument routes it.")
@click.option("--concurrency", "-c", type=int, default=None,
              help="Task processes run at once (default: the 'celery_worker_concurrency' setting).")
@click.option("--hostname", "-H", default=None, help="Worker name (default: sparkflow-<pid>@<host>).")
@click.option("--loglevel", "-l", default="INFO", show_default=True, help="Celery's log level.")
@click.pass_obj
def worker(env: CliEnv, queues: str | None, concurrency: int | None, hostname: str | None, loglevel: str) -> int:
    """Run a Celery worker: take task-instance keys from the broker and run each try with the task runner in a warm,
    reused task process (as the local executor does), acknowledging a message only once the try's outcome is
    recorded. Stops on SIGTERM after running tasks end
    (warm shutdown). Task logs go to the 'log_folder' setting, which must be shared with the scheduler, the web
    server and CLI users."""
    settings = env.settings
    if concurrency is not None and concurrency < 1:
        raise UserError(f"--concurrency {concurrency} must be at least 1")
    env.metastore  # noqa: B018 -- fail now, in one line, if the metastore is unreachable or not initialised
    configure_sparkflow_log(settings.resolved_log_folder)
    try:
        from celery.utils.nodenames import host_format  # optional dependency, like Celery itself

        app = make_celery_app(settings)
    except ImportError as exc:
        raise ConfigError(f"`sparkflow worker` needs Celery and redis ({exc}); pip install 'sparkflow[celery]'") \
            from None
    names = [q.strip() for q in (queues or settings.celery_default_queue).split(",") if q.strip()]
    if not names:
        raise UserError(f"--queues {queues!r} names no queue; pass e.g. -q default,spark")
    # Warm task processes do the work (sparkflow.executors.celery), so threads are enough to wait for them. Started
    # now, while this process has one thread: their fork server is forked from it, with every import made here.
    slots = concurrency or settings.celery_worker_concurrency
    name = host_format(hostname or f"sparkflow-{os.getpid()}@%h")
    start_task_processes(slots, name)
    argv = [
        "worker", "--pool", "threads", "--concurrency", str(slots), "--queues", ",".join(names), "--hostname", name,
        "--loglevel", loglevel, "--without-gossip", "--without-mingle", "--prefetch-multiplier", "1",
    ]
    click.echo(f"sparkflow worker: queues {','.join(names)}, broker {_mask(settings.celery_broker_url)}, "
               f"metastore {settings.display_db_url}, logs {settings.resolved_log_folder}", err=True)
    warnings.filterwarnings("ignore", message="You're running the worker with superuser privileges")
    app.worker_main(argv=argv)
    return 0


def _mask(url: str) -> str:
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
