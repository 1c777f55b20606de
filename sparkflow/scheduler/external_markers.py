"""Airflow's recursive clear: clearing an ExternalTaskMarker also clears the task it names in another DAG (at the
logical date its template gives) and that task's downstream, following further markers there, at most the
marker's ``recursion_depth`` DAGs deep. The other DAGs come from their serialized copies in the metastore."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.serialization import SerializedOperator, deserialize_dag
from sparkflow.exceptions import UserError
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord
from sparkflow.runtime.context import build_context
from sparkflow.state import TASK_ACTIVE

MARKER_TYPE = "ExternalTaskMarker"
DEFAULT_RECURSION_DEPTH = 10


@dataclass(frozen=True)
class MarkerTarget:
    dag_id: str
    task_id: str
    logical_date: datetime
    recursion_depth: int


@dataclass
class ExternalClear:
    """What following markers adds to a clear: per other DAG, its runs and task ids; and the active ones skipped."""

    items: list[tuple[DAG, DagRunRecord, list[str]]] = field(default_factory=list)
    active: list[TaskInstanceRecord] = field(default_factory=list)


def is_marker(task: BaseOperator) -> bool:
    return task.task_type == MARKER_TYPE


def marker_target(dag: DAG, task: BaseOperator, run: DagRunRecord) -> MarkerTarget:
    """The marker's templates rendered for ``run`` (a serialized marker keeps them as written)."""
    raw = dict(task.template_values) if isinstance(task, SerializedOperator) else {
        name: getattr(task, name, None) for name in ("external_dag_id", "external_task_id", "logical_date")}
    context = build_context(dag, task, run, None)
    rendered = {name: task.render_template(value, context) for name, value in raw.items()}
    date = rendered.get("logical_date") or run.logical_date.isoformat()
    try:
        when = date if isinstance(date, datetime) else datetime.fromisoformat(str(date))
    except ValueError:
        raise UserError(f"DAG '{dag.dag_id}' ExternalTaskMarker '{task.task_id}': logical_date {date!r} is not an "
                        "ISO datetime") from None
    depth = getattr(task, "recursion_depth", None) or getattr(task, "extra", {}).get("recursion_depth")
    return MarkerTarget(str(rendered["external_dag_id"]), str(rendered["external_task_id"]),
                        when if when.tzinfo is not None else when.replace(tzinfo=UTC),
                        int(depth or DEFAULT_RECURSION_DEPTH))


def serialized_dag_lookup(metastore: Metastore) -> Callable[[str], DAG | None]:
    cache: dict[str, DAG | None] = {}

    def lookup(dag_id: str) -> DAG | None:
        if dag_id not in cache:
            found = queries.serialized_dags(metastore.db, [dag_id])
            cache[dag_id] = deserialize_dag(json.loads(found[0].data), found[0].dag_hash) if found else None
        return cache[dag_id]

    return lookup


def follow_markers(
    metastore: Metastore, dag: DAG, chosen: list[tuple[DagRunRecord, list[str]]],
    lookup: Callable[[str], DAG | None] | None = None,
) -> ExternalClear:
    """The task instances of other DAGs that clearing ``chosen`` (runs of ``dag`` and task ids) also clears."""
    lookup = lookup or serialized_dag_lookup(metastore)
    result = ExternalClear()
    seen: set[tuple[str, str, str]] = set()

    def visit(current: DAG, run: DagRunRecord, task_ids: list[str], level: int, max_depth: int) -> None:
        for task_id in task_ids:
            task = current.task_dict.get(task_id)
            if task is None or not is_marker(task):
                continue
            target = marker_target(current, task, run)
            if level == 0:  # as in Airflow, the first marker's depth bounds the whole chain
                max_depth = target.recursion_depth
            elif level + 1 > max_depth:
                raise UserError(
                    f"Maximum recursion depth {max_depth} reached for ExternalTaskMarker {task_id}. "
                    "Attempted to clear too many tasks or there may be a cyclic dependency.")
            other = lookup(target.dag_id)
            if other is None or target.task_id not in other.task_dict:
                raise UserError(
                    f"DAG '{current.dag_id}' ExternalTaskMarker '{task_id}' names task '{target.task_id}' of DAG "
                    f"'{target.dag_id}', which is not known; fix the marker or parse that DAG's file")
            wanted = {target.task_id} | other.downstream_of(target.task_id)
            for other_run in queries.runs_at(metastore.db, target.dag_id, target.logical_date):
                ids = []
                for ti in queries.task_instances(metastore.db, target.dag_id, other_run.run_id):
                    if ti.task_id not in wanted or (target.dag_id, other_run.run_id, ti.task_id) in seen:
                        continue
                    seen.add((target.dag_id, other_run.run_id, ti.task_id))
                    if ti.state in TASK_ACTIVE:
                        result.active.append(ti)
                    else:
                        ids.append(ti.task_id)
                if ids:
                    result.items.append((other, other_run, sorted(ids)))
                    visit(other, other_run, sorted(ids), level + 1, max_depth)

    seen.update((run.dag_id, run.run_id, task_id) for run, task_ids in chosen for task_id in task_ids)
    for run, task_ids in chosen:
        visit(dag, run, task_ids, 0, DEFAULT_RECURSION_DEPTH)
    return result
