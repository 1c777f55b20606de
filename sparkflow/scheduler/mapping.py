"""Expanding a mapped task once its upstream is done: how many instances it gets, read from lengths alone (the
upstream's pushed list or dict, or the instance count of a mapped upstream), never by running user code.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sparkflow.definitions.dag import DAG
from sparkflow.definitions.xcom_arg import MappingTypeError, XComArg
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord, TIKey
from sparkflow.state import TaskState

log = logging.getLogger("sparkflow.scheduler")


class _NothingToMap(Exception):
    pass


def expand_mapped_task(ms: Metastore, dag: DAG, run: DagRunRecord, task_id: str, actor: str, max_map_length: int,
                       now: datetime) -> bool:
    """Give the mapped task its instances in this run, or fail it with the reason (an input that is not a list
    or dict, or more than ``max_map_length`` items). False when another scheduler did it first."""
    task = dag.task_dict[task_id]
    key = TIKey(run.dag_id, run.run_id, task_id)

    def source_length(arg: XComArg) -> int:
        upstream = arg.operator
        if upstream.is_mapped:
            return queries.count_mapped(ms.db, run.dag_id, run.run_id, upstream.task_id)
        record = queries.get_xcom(ms.db, run.dag_id, run.run_id, upstream.task_id, arg.key)
        if record is None:
            raise _NothingToMap(f"upstream task '{upstream.task_id}' pushed no XCom '{arg.key}' to map over; "
                                "it must return a list or dict")
        if isinstance(record.value, (list, dict)):
            return len(record.value)
        raise MappingTypeError(arg, record.value)

    try:
        length = task.map_length(source_length)  # type: ignore[attr-defined]
    except (_NothingToMap, TypeError) as exc:
        return _fail(ms, key, actor, now, f"mapped task '{task_id}' cannot be expanded: {exc}")
    if length > max_map_length:
        return _fail(ms, key, actor, now,
                     f"mapped task '{task_id}' would have {length} instances, more than max_map_length "
                     f"{max_map_length}; map over fewer items or raise SPARKFLOW_MAX_MAP_LENGTH")
    expanded = ms.store.expand_mapped_task(key, length, actor, now=now)
    if expanded:
        log.info("%s expanded into %d instance(s)", key, length)
    return expanded


def _fail(ms: Metastore, key: TIKey, actor: str, now: datetime, reason: str) -> bool:
    log.warning("%s: %s", key, reason)
    return ms.store.set_task_state(key, TaskState.NONE, TaskState.FAILED, actor, detail=reason, now=now,
                                   error=reason) is not None
