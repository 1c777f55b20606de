"""Warming the fork server's caches, so that every worker forked afterwards inherits them warm.

All run outside a try's critical path: import_try_modules in the server as it starts, warm_up in the server once
it is idle after its first try, touch in a spare worker before it is handed a try (see runtime/forkserver.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from sparkflow.definitions.dag import DAG
from sparkflow.exceptions import SparkflowError
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import TIKey
from sparkflow.metastore.store import Store
from sparkflow.operators.python import PythonOperator
from sparkflow.runtime.task_runner import run_try
from sparkflow.settings import Settings
from sparkflow.state import TaskState

log = logging.getLogger("sparkflow.runtime")


def _warm_up_noop(**_: Any) -> None:
    pass


class _OneTransaction(Database):
    """A Database whose reads and writes all run in one given transaction (which warm_up rolls back)."""

    def __init__(self, db: Database, conn: Connection) -> None:  # shares db's engine; opens nothing itself
        self.url, self.dialect, self.engine = db.url, db.dialect, db.engine
        self._conn = conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        yield self._conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        yield self._conn


def import_try_modules() -> None:
    """Import what a try imports on first use (pendulum for its context, Jinja for its templates), so that the
    workers forked before warm_up() has run do not each import them on their first try. Unlike warm_up(), it
    takes no lock, so it need not wait until the first try is over."""
    import jinja2
    import pendulum

    pendulum.instance(datetime.now(UTC))  # loads the UTC zone
    jinja2.Environment().from_string("{{ ds }}").render(ds="")  # compiles the default lexer (cached per syntax)


def warm_up(settings: Settings, metastore: Metastore) -> bool:
    """Run one no-op try through the real runner here, inside a transaction that is rolled back.

    Why: SQLAlchemy compiles each statement shape once per engine and caches it. A fresh child would compile
    the ~10 statements of a try itself, a large part of a no-op task's time in the child; run once here,
    they are compiled in the cache every child inherits, and so are the modules a try imports on first use
    (pendulum for its context, Jinja for its template). Nothing of it is kept: the rows go with the rollback,
    the log goes to a temporary folder. Best effort: a failure only means children compile for themselves.
    """
    with contextlib.ExitStack() as stack:
        try:
            conn = stack.enter_context(metastore.db.engine.connect())
            conn = conn.execution_options(sparkflow_write=True)  # BEGIN IMMEDIATE on SQLite: waits its turn
            transaction = conn.begin()
            stack.callback(transaction.rollback)
            db = _OneTransaction(metastore.db, conn)
            warm = Metastore(db, Store(db), metastore.secrets)
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="sparkflow-warm-up-"))
            warm_settings = dataclasses.replace(settings, log_folder=Path(folder), heartbeat_interval=3600.0)
            now = datetime.now(UTC)
            dag = DAG("sparkflow_fork_server_warm_up", start_date=now, schedule=None)
            # A template to render: Jinja is imported and its lexer compiled here too.
            PythonOperator(task_id="noop", python_callable=_warm_up_noop, op_kwargs={"day": "{{ ds }}"}, dag=dag)
            run = warm.store.create_dag_run(dag, "warm_up", "manual", now, dag.infer_manual_data_interval(now),
                                            actor="fork_server", now=now)
            key = TIKey(dag.dag_id, run.run_id, "noop")
            warm.store.set_task_state(key, TaskState.NONE, TaskState.SCHEDULED, "fork_server")
            warm.store.set_task_state(key, TaskState.SCHEDULED, TaskState.QUEUED, "fork_server", try_number=1)
            ok = run_try(warm_settings, warm, key, 1, dag=dag).state is TaskState.SUCCESS
        except Exception:  # noqa: BLE001 - best effort, see above
            log.debug("fork server warm-up failed; task processes compile their SQL themselves", exc_info=True)
            ok = False
    metastore.db.dispose()  # fork with no open connection: each child opens its own
    return ok


def touch(metastore: Metastore) -> None:
    """Connect (keeping the connection pooled) and read through the runner's query path once, in a spare child
    before it has a task. Why: a forked child pays for every page of the server's memory it first writes to
    (copy-on-write; Python's reference counts write to every object it touches), and the runner's first
    transaction touches many. Paid here,
    while the previous task runs, it is off a chain's critical path. Read only (no lock taken): keys that do
    not exist."""
    nobody = TIKey("", "", "")
    with contextlib.suppress(SparkflowError):
        queries.get_task_instance(metastore.db, nobody)
    with contextlib.suppress(SparkflowError):
        queries.get_run(metastore.db, "", "")
