"""Build the Airflow-shaped template/execution context of one task try, and the ``ti`` handle behind it."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sparkflow.connections import Connection
from sparkflow.definitions.assets import OutletEventAccessors
from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import (
    XCOM_RETURN_KEY,
    Context,
    TriggeredRun,
    conn_accessor,
    macros,
    task_environment,
    var_namespace,
)
from sparkflow.definitions.dag import DAG
from sparkflow.files import private_dir
from sparkflow.logs import task_log_path
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord, TIKey
from sparkflow.metastore.xcom_store import xcom_text
from sparkflow.runtime.triggering import trigger_dag_run

log = logging.getLogger("sparkflow.task")


class RuntimeTaskInstance:
    """``context["ti"]``: XCom, skips and external ids of one task try, written through the store."""

    def __init__(
        self, metastore: Metastore, ti: TaskInstanceRecord, run: DagRunRecord, dag: DAG, log_folder: Path,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._ms = metastore
        self._clock = clock or (lambda: datetime.now(UTC))
        self._log_folder = log_folder
        self._record = ti
        self._run = run
        self.dag_id = ti.dag_id
        self.run_id = ti.run_id
        self.task_id = ti.task_id
        self.try_number = ti.try_number
        self.max_tries = ti.max_tries
        self.task = dag.task_dict.get(ti.task_id)
        self._dag = dag
        self.map_index = ti.map_index
        self.return_value: str | None = None  # the try's return value (JSON), stored with its outcome

    @property
    def state(self) -> str:
        return queries.get_task_instance(self._ms.db, self._record.key).state.value

    def xcom_push(self, key: str, value: Any) -> None:
        self._ms.xcoms.set_xcom(self._record, key, value)

    def push_return_value(self, value: Any) -> None:
        """The ``return_value`` XCom: checked now (a value that is not JSON fails the try, as any push does) and
        stored by record_outcome with the try's outcome, not in a transaction of its own."""
        self.return_value = xcom_text(self.task_id, XCOM_RETURN_KEY, value)

    def xcom_pull(
        self,
        task_ids: str | list[str] | None = None,
        key: str = XCOM_RETURN_KEY,
        dag_id: str | None = None,
        run_id: str | None = None,
        default: Any = None,
        map_indexes: int | list[int] | None = None,
    ) -> Any:
        """Airflow's xcom_pull. A mapped task's output is the lazy list of its instances' values in map_index
        order, unless ``map_indexes`` picks instances."""
        dag_id = dag_id or self.dag_id
        run_id = run_id or self.run_id
        if task_ids is None:
            matches = [x for x in queries.list_xcoms(self._ms.db, dag_id, run_id) if x.key == key]
            return matches[-1].value if matches else default
        if isinstance(task_ids, str):
            return self._pull_one(dag_id, run_id, task_ids, key, default, map_indexes)
        return [self._pull_one(dag_id, run_id, task_id, key, default, map_indexes) for task_id in task_ids]

    def _pull_one(self, dag_id: str, run_id: str, task_id: str, key: str, default: Any,
                  map_indexes: int | list[int] | None) -> Any:
        if isinstance(map_indexes, list):
            return [self._pull_one(dag_id, run_id, task_id, key, default, i) for i in map_indexes]
        if map_indexes is None:
            task = self._dag.task_dict.get(task_id) if dag_id == self.dag_id else None
            if task is not None and task.is_mapped:
                db = self._ms.db
                return LazyXComSequence(lambda: queries.mapped_xcom_values(db, dag_id, run_id, task_id, key))
            map_indexes = -1
        if self.return_value is not None and (dag_id, run_id, task_id, key, map_indexes) == (
                self.dag_id, self.run_id, self.task_id, XCOM_RETURN_KEY, self.map_index):
            return json.loads(self.return_value)  # this try's own, not stored until its outcome is
        record = queries.get_xcom(self._ms.db, dag_id, run_id, task_id, key, map_indexes)
        return record.value if record is not None else default

    def skip(self, task_ids: list[str]) -> None:
        moved = self._ms.store.skip_tasks(self._run, task_ids, "task_runner", f"skipped by '{self.task_id}'")
        log.info("Marked skipped: %s", ", ".join(moved) or "(none: already decided)")

    def record_external_ids(self, **ids: str | None) -> None:
        self._ms.store.record_external_ids(self._record.key, self.try_number, **ids)
        for name, value in ids.items():
            if value:
                log.info("Recorded %s = %s", name, value)

    def record_spark_progress(self, progress: dict[str, Any]) -> None:
        self._ms.store.record_spark_progress(self._record.key, self.try_number, progress)

    def record_spark_metrics(self, metrics: dict[str, Any]) -> None:
        self._ms.store.record_spark_metrics(self._record.key, self.try_number, metrics)

    def artifact_dir(self, name: str) -> Path:
        return _artifact_dir(self._log_folder, self._record.key, self.try_number, name)

    def previous_try_ids(self) -> dict[str, str | None]:
        earlier = [t for t in queries.task_tries(self._ms.db, self._record.key) if t.try_number < self.try_number]
        if not earlier:
            return {}
        last = earlier[-1]
        return {"spark_app_id": last.spark_app_id, "spark_driver_id": last.spark_driver_id,
                "spark_ui_url": last.spark_ui_url}

    def get_external_states(
        self, dag_id: str, logical_date: datetime, task_ids: list[str] | None = None
    ) -> list[str]:
        return queries.external_states(self._ms.db, dag_id, logical_date, task_ids)

    def trigger_dag_run(
        self, dag_id: str, run_id: str, logical_date: datetime, conf: dict[str, Any] | None, reset_dag_run: bool
    ) -> TriggeredRun:
        actor = f"task {self.dag_id}.{self.task_id}"
        return trigger_dag_run(self._ms, dag_id, run_id, logical_date, conf, reset_dag_run, actor, self._clock())

    def dag_run_state(self, dag_id: str, run_id: str) -> str:
        return queries.get_run(self._ms.db, dag_id, run_id).state.value

    def try_elapsed_seconds(self) -> float:
        started = self._record.start_date
        return 0.0 if started is None else max((self._clock() - started).total_seconds(), 0.0)


class LazyXComSequence(Sequence[Any]):
    """The outputs of a mapped task's instances in map_index order, read from the metastore on first use
    (Airflow's LazyXComSequence)."""

    def __init__(self, load: Callable[[], list[Any]]) -> None:
        self._load = load
        self._values: list[Any] | None = None

    def _all(self) -> list[Any]:
        if self._values is None:
            self._values = self._load()
        return self._values

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, index: Any) -> Any:
        return self._all()[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LazyXComSequence({self._all()!r})"


@contextmanager
def metastore_environment(metastore: Metastore, context: Context | None = None) -> Iterator[None]:
    """Connections and variables from the metastore for a running task (``context``) or for DAG-file parsing
    (``context`` None: a DAG file may call ``Variable.get`` or ``BaseHook.get_connection`` at the top level)."""

    def connections(conn_id: str) -> Connection:
        return queries.resolve_connection(metastore.db, conn_id, metastore.secrets)

    def variables(key: str) -> str | None:
        return queries.get_variable(metastore.db, key, metastore.secrets)

    def write_variable(key: str, value: str | None, description: str | None = None) -> None:
        if value is None:
            metastore.variables.delete_variable(key)
        else:
            metastore.variables.set_variable(key, value, description)

    with task_environment(context, connections, variables, write_variable):
        yield


def build_context(
    dag: DAG, task: BaseOperator, run: DagRunRecord, ti: Any, test_mode: bool = False
) -> Context:
    import pendulum  # here: most commands never build a context (a fork server imports it as it starts)

    logical_date = pendulum.instance(run.logical_date)
    ds = logical_date.strftime("%Y-%m-%d")
    params = {**dag.params, **task.params, **run.conf}  # run conf overrides params, as in Airflow by default
    context: Context = {
        "dag": dag,
        "task": task,
        "ti": ti,
        "task_instance": ti,
        "dag_run": run,
        "run_id": run.run_id,
        "logical_date": logical_date,
        "execution_date": logical_date,
        "data_interval_start": pendulum.instance(run.data_interval_start) if run.data_interval_start else logical_date,
        "data_interval_end": pendulum.instance(run.data_interval_end) if run.data_interval_end else logical_date,
        "ds": ds,
        "ds_nodash": ds.replace("-", ""),
        "ts": logical_date.isoformat(),
        "ts_nodash": logical_date.strftime("%Y%m%dT%H%M%S"),
        "ts_nodash_with_tz": logical_date.isoformat().replace("-", "").replace(":", ""),
        "params": params,
        "macros": macros,
        "conn": conn_accessor,
        "var": var_namespace,
        "test_mode": test_mode,
        "try_number": getattr(ti, "try_number", 1),
        "task_instance_key_str": f"{dag.dag_id}__{task.task_id}__{ds.replace('-', '')}",
        "outlet_events": OutletEventAccessors(),
        **dag.user_defined_macros,
    }
    return context


def _artifact_dir(log_folder: Path, key: TIKey, try_number: int, name: str) -> Path:
    """Next to the try's log: ``.../task_id=T/attempt=N.<name>/``."""
    log_path = task_log_path(log_folder, key.dag_id, key.run_id, key.task_id, try_number, key.map_index)
    path = log_path.with_name(f"{log_path.stem}.{name}")
    return private_dir(path)


class InMemoryTaskInstance:
    """The ``ti`` of `sparkflow tasks test`: nothing is recorded, XComs live in memory for the one task."""

    def __init__(self, dag: DAG, task_id: str, run_id: str, map_index: int = -1) -> None:
        self.spark_progress: dict[str, Any] | None = None
        self.spark_metrics: dict[str, Any] | None = None
        self.dag_id = dag.dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.try_number = 1
        self.max_tries = 0
        self.map_index = map_index
        self.xcoms: dict[str, Any] = {}
        self._started = time.monotonic()

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def push_return_value(self, value: Any) -> None:
        self.xcom_push(XCOM_RETURN_KEY, value)

    def xcom_pull(self, task_ids: Any = None, key: str = XCOM_RETURN_KEY, dag_id: Any = None,
                  run_id: Any = None, default: Any = None, map_indexes: Any = None) -> Any:
        if task_ids in (None, self.task_id):
            return self.xcoms.get(key, default)
        return default if isinstance(task_ids, str) else [default for _ in task_ids]

    def get_external_states(
        self, dag_id: str, logical_date: datetime, task_ids: list[str] | None = None
    ) -> list[str]:
        log.info("Would read the states of DAG '%s' at %s (test mode: none recorded)", dag_id, logical_date)
        return []

    def trigger_dag_run(
        self, dag_id: str, run_id: str, logical_date: datetime, conf: dict[str, Any] | None, reset_dag_run: bool
    ) -> TriggeredRun:
        log.info("Would trigger DAG '%s' run '%s' (test mode, nothing recorded)", dag_id, run_id)
        return TriggeredRun(run_id, logical_date, created=True)

    def dag_run_state(self, dag_id: str, run_id: str) -> str:
        log.info("Would read the state of DAG '%s' run '%s' (test mode: taken as success)", dag_id, run_id)
        return "success"

    def try_elapsed_seconds(self) -> float:
        return time.monotonic() - self._started

    def skip(self, task_ids: list[str]) -> None:
        log.info("Would mark skipped (test mode, nothing recorded): %s", ", ".join(task_ids))

    def record_external_ids(self, **ids: str | None) -> None:
        for name, value in ids.items():
            if value:
                log.info("Found %s = %s (test mode, not recorded)", name, value)

    def record_spark_progress(self, progress: dict[str, Any]) -> None:
        self.spark_progress = progress

    def record_spark_metrics(self, metrics: dict[str, Any]) -> None:
        self.spark_metrics = metrics

    def artifact_dir(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"sparkflow-test-{name}-"))

    def previous_try_ids(self) -> dict[str, str | None]:
        return {}



def call_callbacks(callback: Callable[[Context], Any] | list[Callable[[Context], Any]] | None, context: Context,
                   what: str) -> None:
    """Call a task's callback (or list of them) with ``context``; one that raises is logged, nothing more: a
    broken callback must not change the task's outcome."""
    if callback is None:
        return
    for func in callback if isinstance(callback, list) else [callback]:
        try:
            func(context)
        except Exception:
            log.exception("%s raised; the task outcome is unchanged", what)
