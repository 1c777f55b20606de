"""Task groups, as in Airflow: ``with TaskGroup("extract"):`` and ``@task_group`` prefix the ids of the tasks made
inside them (``extract.load``, ``prefix_group_id=True`` by default), groups nest (``outer.inner.task``), and ``>>``
between a group and a task or another group links the group's leaves to what follows and what precedes to its
roots.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from sparkflow.definitions.dag import current_dag
from sparkflow.definitions.dependencies import DependencyMixin
from sparkflow.definitions.expand_input import DictOfListsExpandInput, MappedArgument
from sparkflow.definitions.location import Location, caller_location
from sparkflow.definitions.xcom_arg import XComArg
from sparkflow.exceptions import DagDefinitionError

if TYPE_CHECKING:
    from sparkflow.definitions.baseoperator import BaseOperator
    from sparkflow.definitions.dag import DAG

GROUP_ID_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")

# The task groups whose `with` blocks are open; tasks and groups created inside one join it.
_group_stack: list[TaskGroup] = []


def current_task_group() -> TaskGroup | None:
    return _group_stack[-1] if _group_stack else None


class TaskGroup(DependencyMixin):
    def __init__(
        self,
        group_id: str,
        prefix_group_id: bool = True,
        parent_group: TaskGroup | None = None,
        dag: DAG | None = None,
        default_args: dict[str, Any] | None = None,
        tooltip: str = "",
        ui_color: str = "CornflowerBlue",
        ui_fgcolor: str = "#000",
        add_suffix_on_collision: bool = False,
        group_display_name: str | None = None,
    ) -> None:
        self._location: Location | None = caller_location()
        parent = parent_group or current_task_group()
        self.dag: DAG | None = dag or (parent.dag if parent is not None else None) or current_dag()
        if parent is not None and parent.dag is not self.dag:
            parent = None
        self.parent_group = parent
        self.prefix_group_id = prefix_group_id
        self.default_args: dict[str, Any] = {**(parent.default_args if parent else {}), **(default_args or {})}
        self.tooltip = tooltip
        self.ui_color = ui_color
        self.ui_fgcolor = ui_fgcolor
        self.group_display_name = group_display_name or group_id
        self.children: dict[str, BaseOperator | TaskGroup] = {}
        # A mapped task group's input (``@task_group`` ``.expand()``): its tasks get one instance per item.
        self.expand_input: Any = None
        if not isinstance(group_id, str) or not GROUP_ID_PATTERN.match(group_id):
            raise self._error(f"group_id {group_id!r} is invalid; use letters, digits, '_', '-'")
        self._group_id = group_id
        if self.dag is None:
            raise self._error("a TaskGroup must be created inside a DAG (`with DAG(...)`) or be given dag=")
        used = self.dag.task_group_dict
        if self.group_id in used:
            if not add_suffix_on_collision:
                raise self._error("duplicate group_id; each group_id must be unique in a DAG")
            n = 1
            while self._suffixed(group_id, n) in used:
                n += 1
            self._group_id = f"{group_id}__{n}"
        used[self.group_id] = self
        if parent is not None:
            parent.children[self.group_id] = self

    def _suffixed(self, group_id: str, n: int) -> str:
        label = f"{group_id}__{n}"
        return self.parent_group.child_id(label) if self.parent_group is not None else label

    def _error(self, message: str) -> DagDefinitionError:
        dag = getattr(self, "dag", None)
        where = (f"DAG '{dag.dag_id}' " if dag is not None else "") + f"task group '{getattr(self, '_group_id', '?')}'"
        return DagDefinitionError(
            f"{where}: {message}", dag_id=dag.dag_id if dag is not None else None,
            lineno=self._location.lineno if self._location else None,
        )

    # -- ids ----------------------------------------------------------------------------------------------------
    @property
    def group_id(self) -> str:
        """The full id: the parent's prefix included when the parent prefixes (``outer.inner``)."""
        if self.parent_group is not None:
            return self.parent_group.child_id(self._group_id)
        return self._group_id

    @property
    def label(self) -> str:
        return self._group_id

    def child_id(self, label: str) -> str:
        """The id a task or group called ``label`` gets inside this group."""
        return f"{self.group_id}.{label}" if self.prefix_group_id else label

    def lineage(self) -> Iterator[TaskGroup]:
        """This group and its parents, innermost first."""
        group: TaskGroup | None = self
        while group is not None:
            yield group
            group = group.parent_group

    def add(self, task: BaseOperator) -> None:
        self.children[task.task_id] = task
        task.task_group = self

    # -- context manager ----------------------------------------------------------------------------------------
    def __enter__(self) -> TaskGroup:
        _group_stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _group_stack.pop()

    # -- dependencies -------------------------------------------------------------------------------------------
    def iter_tasks(self) -> Iterator[BaseOperator]:
        for child in self.children.values():
            if isinstance(child, TaskGroup):
                yield from child.iter_tasks()
            else:
                yield child

    @property
    def roots(self) -> list[BaseOperator]:
        """Tasks of the group (nested groups included) with no upstream inside the group."""
        tasks = list(self.iter_tasks())
        ids = {t.task_id for t in tasks}
        return [t for t in tasks if not (t.upstream_task_ids & ids)]

    @property
    def leaves(self) -> list[BaseOperator]:
        """Tasks of the group (nested groups included) with no downstream inside the group."""
        tasks = list(self.iter_tasks())
        ids = {t.task_id for t in tasks}
        return [t for t in tasks if not (t.downstream_task_ids & ids)]

    def set_downstream(self, other: Any, edge_modifier: Any = None) -> None:
        for leaf in self.leaves:
            leaf.set_downstream(other, edge_modifier=edge_modifier)

    def set_upstream(self, other: Any, edge_modifier: Any = None) -> None:
        for root in self.roots:
            root.set_upstream(other, edge_modifier=edge_modifier)

    def __repr__(self) -> str:
        return f"<TaskGroup: {self.group_id}>"


def task_group(
    python_callable: Callable[..., Any] | None = None, **group_kwargs: Any
) -> Any:
    """``@task_group`` / ``@task_group(group_id=..., ...)``: calling the function inside a DAG creates a group named
    after it (``name__1``, ``name__2`` on repeated calls) and returns what the function returned, or the group."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def factory(*args: Any, **kwargs: Any) -> Any:
            options = {"group_id": func.__name__, "add_suffix_on_collision": True, **group_kwargs}
            with TaskGroup(**options) as group:
                result = func(*args, **kwargs)
            return group if result is None else result

        def expand(fixed: dict[str, Any], mapped: dict[str, Any]) -> Any:
            """A mapped task group: its tasks get one instance per item of ``mapped`` (a cross product)."""
            for name, value in mapped.items():
                if not isinstance(value, (XComArg, list, tuple, dict)):
                    raise DagDefinitionError(f"task group '{func.__name__}': expand() argument '{name}' must be a "
                                             f"list, dict or task output, got {type(value).__name__}")
            options = {"group_id": func.__name__, "add_suffix_on_collision": True, **group_kwargs}
            with TaskGroup(**options) as group:
                group.expand_input = DictOfListsExpandInput(mapped)
                result = func(**fixed, **{name: MappedArgument(group, name) for name in mapped})
            return group if result is None else result

        factory.override = lambda **more: task_group(**{**group_kwargs, **more})(func)  # type: ignore[attr-defined]
        factory.expand = lambda **mapped: expand({}, mapped)  # type: ignore[attr-defined]
        factory.partial = lambda **fixed: _GroupPartial(lambda mapped: expand(fixed, mapped))  # type: ignore[attr-defined]
        return factory

    if python_callable is not None and callable(python_callable):
        return decorator(python_callable)
    return decorator


class _GroupPartial:
    def __init__(self, expand: Callable[[dict[str, Any]], Any]) -> None:
        self._expand = expand

    def expand(self, **mapped: Any) -> Any:
        return self._expand(mapped)


__all__ = ["TaskGroup", "current_task_group", "task_group"]
