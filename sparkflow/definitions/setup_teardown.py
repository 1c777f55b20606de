"""Setup and teardown tasks, with Airflow's semantics: a teardown (trigger rule ``all_done_setup_success``) runs once
its upstream is done, even when the work failed or was skipped, unless none of its setups succeeded; its failure
does not fail the run unless ``on_failure_fail_dagrun=True``; clearing a work task clears its setups and
teardowns. ``with teardown.as_teardown(setups=setup):`` puts the tasks made in the block between them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparkflow.definitions.baseoperator import BaseOperator
    from sparkflow.definitions.dag import DAG

# The setup/teardown tasks whose `with` blocks are open, and the task ids their DAG had when each opened.
_open: list[tuple[BaseOperator, set[str]]] = []


def enter(task: BaseOperator) -> None:
    if task.dag is None:
        raise task._error("a setup or teardown task used with `with` must belong to a DAG")
    _open.append((task, set(task.dag.task_dict)))


def leave(task: BaseOperator) -> None:
    opened, before = _open.pop()
    assert opened is task and task.dag is not None
    dag = task.dag
    if task.is_teardown:
        teardowns = [task]
        setups = [dag.task_dict[u] for u in sorted(task.upstream_task_ids) if dag.task_dict[u].is_setup]
    else:
        setups = [task]
        teardowns = [dag.task_dict[d] for d in sorted(task.downstream_task_ids) if dag.task_dict[d].is_teardown]
    new = [t for tid, t in dag.task_dict.items() if tid not in before and t not in setups and t not in teardowns]
    ids = {t.task_id for t in new}
    for work in new:
        if not work.upstream_task_ids & ids:
            for setup in setups:
                setup.set_downstream(work)
        if not work.downstream_task_ids & ids:
            for teardown in teardowns:
                work.set_downstream(teardown)


def related_setups_and_teardowns(dag: DAG, task_ids: Iterable[str]) -> set[str]:
    """What clearing these tasks also clears (Airflow): the setups upstream of each, and their teardowns."""
    found: set[str] = set()
    stack = [u for tid in task_ids for u in dag.task_dict[tid].upstream_task_ids]
    seen: set[str] = set()
    while stack:
        tid = stack.pop()
        if tid in seen:
            continue
        seen.add(tid)
        task = dag.task_dict[tid]
        if task.is_setup:
            found.add(tid)
            found.update(d for d in task.downstream_task_ids if dag.task_dict[d].is_teardown)
        stack.extend(task.upstream_task_ids)
    for tid in task_ids:
        found.update(d for d in dag.task_dict[tid].downstream_task_ids if dag.task_dict[d].is_teardown)
    return found


def as_tasks(value: Any) -> list[BaseOperator]:
    """Tasks from a task, a TaskFlow output or a list of them."""
    items = value if isinstance(value, (list, tuple, set)) else [value]
    tasks: list[BaseOperator] = []
    for item in items:
        tasks.extend(item.operators() if hasattr(item, "operators") else [item])
    return tasks
