"""Build the Airflow-shaped template/execution context of one task try, and the ``ti`` handle behind it."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pendulum

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import (
    XCOM_RETURN_KEY,
    Context,
    conn_accessor,
    macros,
    var_namespace,
)
from sparkflow.definitions.dag import DAG
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord

log = logging.getLogger("sparkflow.task")


class RuntimeTaskInstance:
    """``context["ti"]``: XCom, skips and external ids of one task try, written through the store."""

    def __init__(self, metastore: Metastore, ti: TaskInstanceRecord, run: DagRunRecord, dag: DAG) -> None:
        self._ms = metastore
        self._record = ti
        self._run = run
        self.dag_id = ti.dag_id
        self.run_id = ti.run_id
        self.task_id = ti.task_id
        self.try_number = ti.try_number
        self.max_tries = ti.max_tries
        self.task = dag.task_dict.get(ti.task_id)
        self.map_index = -1

    @property
    def state(self) -> str:
        return queries.get_task_instance(self._ms.db, self._record.key).state.value

    def xcom_push(self, key: str, value: Any) -> None:
        self._ms.store.set_xcom(self._record, key, value)

    def xcom_pull(
        self,
        task_ids: str | list[str] | None = None,
        key: str = XCOM_RETURN_KEY,
        dag_id: str | None = None,
        run_id: str | None = None,
        default: Any = None,
    ) -> Any:
        dag_id = dag_id or self.dag_id
        run_id = run_id or self.run_id
        if task_ids is None:
            matches = [x for x in queries.list_xcoms(self._ms.db, dag_id, run_id) if x.key == key]
            return matches[-1].value if matches else default
        if isinstance(task_ids, str):
            record = queries.get_xcom(self._ms.db, dag_id, run_id, task_ids, key)
            return record.value if record is not None else default
        values = []
        for task_id in task_ids:
            record = queries.get_xcom(self._ms.db, dag_id, run_id, task_id, key)
            values.append(record.value if record is not None else default)
        return values

    def skip(self, task_ids: list[str]) -> None:
        moved = self._ms.store.skip_tasks(self._run, task_ids, "task_runner", f"skipped by '{self.task_id}'")
        log.info("Marked skipped: %s", ", ".join(moved) or "(none: already decided)")

    def record_external_ids(self, **ids: str | None) -> None:
        self._ms.store.record_external_ids(self._record.key, self.try_number, **ids)
        for name, value in ids.items():
            if value:
                log.info("Recorded %s = %s", name, value)


def build_context(
    dag: DAG, task: BaseOperator, run: DagRunRecord, ti: Any, test_mode: bool = False
) -> Context:
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
        "data_interval_start": _pendulum(run.data_interval_start) or logical_date,
        "data_interval_end": _pendulum(run.data_interval_end) or logical_date,
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
        **dag.user_defined_macros,
    }
    return context


def _pendulum(value: datetime | None) -> pendulum.DateTime | None:
    return pendulum.instance(value) if value is not None else None


class InMemoryTaskInstance:
    """The ``ti`` of `sparkflow tasks test`: nothing is recorded, XComs live in memory for the one task."""

    def __init__(self, dag: DAG, task_id: str, run_id: str) -> None:
        self.dag_id = dag.dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.try_number = 1
        self.max_tries = 0
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = XCOM_RETURN_KEY, dag_id: Any = None,
                  run_id: Any = None, default: Any = None) -> Any:
        if task_ids in (None, self.task_id):
            return self.xcoms.get(key, default)
        return default if isinstance(task_ids, str) else [default for _ in task_ids]

    def skip(self, task_ids: list[str]) -> None:
        log.info("Would mark skipped (test mode, nothing recorded): %s", ", ".join(task_ids))

    def record_external_ids(self, **ids: str | None) -> None:
        for name, value in ids.items():
            if value:
                log.info("Found %s = %s (test mode, not recorded)", name, value)

