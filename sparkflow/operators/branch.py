"""Branching: a task chooses which of its direct downstream tasks run; the others are skipped (Airflow's
``BaseBranchOperator`` and ``skip_all_except``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context
from sparkflow.exceptions import TaskFailure


def follow_branch(task: BaseOperator, context: Context, chosen: str | Iterable[str] | None) -> None:
    """Skip ``task``'s direct downstream tasks except ``chosen`` (task ids, or a task group's id: its roots)."""
    follow = {chosen} if isinstance(chosen, str) else set(chosen or [])
    groups = task.dag.task_group_dict if task.dag is not None else {}
    for name in sorted(follow & groups.keys() - task.downstream_task_ids):
        follow |= {root.task_id for root in groups[name].roots}
    unknown = follow - task.downstream_task_ids - groups.keys()
    if unknown:
        raise TaskFailure(
            f"branch task '{task.task_id}' returned {sorted(unknown)}, which are not its direct downstream "
            f"tasks; choose from {sorted(task.downstream_task_ids)}"
        )
    to_skip = sorted(task.downstream_task_ids - follow)
    if to_skip:
        task.log.info("Following branch %s; skipping %s", sorted(follow & task.downstream_task_ids), to_skip)
        context["ti"].skip(to_skip)


class BaseBranchOperator(BaseOperator):
    """Subclasses implement :meth:`choose_branch`, returning the task id (or ids) to follow."""

    ui_color = "#ffe6cc"

    def choose_branch(self, context: Context) -> str | Iterable[str] | None:
        raise NotImplementedError(f"{type(self).__name__} must implement choose_branch(context)")

    def execute(self, context: Context) -> Any:
        chosen = self.choose_branch(context)
        follow_branch(self, context, chosen)
        return chosen
