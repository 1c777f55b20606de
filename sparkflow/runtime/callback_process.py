"""Callbacks of serialized DAGs, run in a process of their own: the scheduler plans from serialized DAGs and runs
no user code, so when a run ends (a DAG's on_success_callback / on_failure_callback) or a task's process died
(its on_failure_callback / on_retry_callback, Airflow's zombie callbacks) it starts this module, which imports the
one DAG file (time-limited) and calls the callback, as Airflow's DAG processor does.

    python -m sparkflow.runtime.callback_process '{"dag_id": ..., "run_id": ..., "reason": ...}'
    python -m sparkflow.runtime.callback_process '{"dag_id": ..., "run_id": ..., "task_id": ..., "state": ...,
                                                   "reason": ...}'
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.custom_timetable import add_import_folders
from sparkflow.logs import configure_sparkflow_log
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import open_metastore
from sparkflow.metastore.records import TIKey
from sparkflow.runtime.lost_try import LostTry, call_lost_try_callback
from sparkflow.runtime.task_runner import load_task_dag, utcnow
from sparkflow.settings import load_settings
from sparkflow.state import TaskState

log = logging.getLogger("sparkflow.scheduler")


class CallbackProcesses:
    """Starts a callback process per request (only when a callback is due: never per scheduler iteration) and
    reaps the ones that ended."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def __call__(self, request: Mapping[str, Any]) -> None:
        self.reap()
        self.running.append(subprocess.Popen(
            [sys.executable, "-m", "sparkflow.runtime.callback_process", json.dumps(dict(request))],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True))

    def reap(self) -> None:
        self.running = [p for p in self.running if p.poll() is None]


def run_callback(request: Mapping[str, Any]) -> int:
    settings = load_settings()
    add_import_folders(settings.import_folders, airflow_finders())
    configure_sparkflow_log(settings.resolved_log_folder)
    metastore = open_metastore(settings)
    dag = load_task_dag(metastore, request["dag_id"], settings.dagbag_import_timeout)
    if "task_id" in request:
        key = TIKey(request["dag_id"], request["run_id"], request["task_id"], request.get("map_index", -1))
        ti = queries.get_task_instance(metastore.db, key)
        call_lost_try_callback(metastore, dag, LostTry(ti, TaskState(request["state"]), request["reason"]),
                               settings.resolved_log_folder, utcnow)
        return 0
    run = queries.get_run(metastore.db, request["dag_id"], request["run_id"])
    callback = dag.on_success_callback if run.state.value == "success" else dag.on_failure_callback
    if callback is not None:
        try:
            callback({"dag": dag, "dag_run": run, "run_id": run.run_id, "reason": request["reason"]})
        except Exception:
            log.exception("DAG '%s' %s callback raised", dag.dag_id, run.state.value)
    return 0


if __name__ == "__main__":
    sys.exit(run_callback(json.loads(sys.argv[1])))
