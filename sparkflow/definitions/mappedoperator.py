"""Dynamic task mapping, with Airflow's names and semantics.

``Op.partial(task_id=..., **fixed).expand(**mapped)`` and ``.expand_kwargs(list_of_dicts)`` make one
:class:`MappedOperator` in the DAG; at run time, once its upstream is done, the scheduler expands it into one task
instance per item (``map_index`` 0..n-1; the cross product of several mapped arguments, the last varying fastest).
Each instance's task process rebuilds the real operator for its index with :meth:`MappedOperator.unmap`.

The number of instances is computed from lengths only (literals, the length of an upstream's pushed list or dict,
the instance count of a mapped upstream), so the scheduler never runs user code to decide it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sparkflow.definitions.baseoperator import BaseOperator, _accepted_names, _unmapping
from sparkflow.definitions.context import Context
from sparkflow.definitions.dag import current_dag
from sparkflow.definitions.expand_input import DictOfListsExpandInput, ExpandInput, ListOfDictsExpandInput
from sparkflow.definitions.taskgroup import current_task_group
from sparkflow.definitions.xcom_arg import SourceLength, XComArg, find_xcom_args
from sparkflow.exceptions import DagDefinitionError

_BASE_NAMES = frozenset(_accepted_names(BaseOperator))
# Arguments a mapped task cannot take per instance: they decide how the task is scheduled as a whole.
_NOT_MAPPABLE = frozenset({"task_id", "dag", "task_group", "default_args", "trigger_rule", "depends_on_past",
                           "pool", "queue", "priority_weight", "max_active_tis_per_dag", "retries"})


class MappedOperator(BaseOperator):
    """One mapped task of a DAG: scheduled like any task (its trigger rule, retries, pool, ... are those of the
    partial arguments), expanded into instances at run time."""

    def __init__(
        self, *, operator_class: type[BaseOperator], partial_kwargs: dict[str, Any], expand_input: ExpandInput,
        mapped_field: str | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.operator_class = operator_class
        self.partial_kwargs = partial_kwargs
        self.expand_input = expand_input
        self.mapped_field = mapped_field  # the dict argument the mapped values go into (@task: op_kwargs)

    def _after_init(self) -> None:
        values = [self.expand_input.value, *self.partial_kwargs.values()]
        group = self.mapped_group
        if group is not None:
            values.append(group.expand_input.value)
        for arg in find_xcom_args(values):
            self.set_upstream(arg.operators())

    @property
    def is_mapped(self) -> bool:
        return True

    @property
    def task_type(self) -> str:
        return self.operator_class.__name__

    def map_length(self, source_length: SourceLength) -> int:
        """How many instances this task has in a run (a task in a mapped group: as many as the group)."""
        group = self.mapped_group
        if group is not None:
            return int(group.expand_input.length(source_length))
        return self.expand_input.length(source_length)

    def unmap(self, context: Context, map_index: int) -> BaseOperator:
        """The real operator of instance ``map_index``, its mapped arguments resolved (run time only)."""
        mapped = self.expand_input.resolve(context, map_index) if self.expand_input.value else {}
        kwargs = dict(self.partial_kwargs)
        if self.mapped_field is not None:
            kwargs[self.mapped_field] = {**(kwargs.get(self.mapped_field) or {}), **mapped}
        else:
            kwargs.update(mapped)
        token = _unmapping.set(True)
        try:
            operator = self.operator_class(task_id=self.task_id, **kwargs)
        finally:
            _unmapping.reset(token)
        operator.dag = self.dag
        operator.task_group = self.task_group
        operator.upstream_task_ids = set(self.upstream_task_ids)
        operator.downstream_task_ids = set(self.downstream_task_ids)
        return operator

    def __repr__(self) -> str:
        return f"<Mapped({self.operator_class.__name__}): {self.task_id}>"


class OperatorPartial:
    """What ``Op.partial(...)`` returns: the fixed arguments, waiting for ``.expand()`` or ``.expand_kwargs()``."""

    def __init__(self, operator_class: type[BaseOperator], kwargs: dict[str, Any],
                 mapped_field: str | None = None) -> None:
        self.operator_class = operator_class
        self.mapped_field = mapped_field
        self.kwargs = dict(kwargs)
        task_id = self.kwargs.get("task_id")
        if not isinstance(task_id, str):
            raise DagDefinitionError(f"{operator_class.__name__}.partial(): task_id is required, got {task_id!r}")
        # default_args are applied here, so the operator each instance rebuilds (unmap) gets them too.
        dag = self.kwargs.get("dag") or current_dag()
        group = self.kwargs.get("task_group") or current_task_group()
        defaults = dict(getattr(dag, "default_args", None) or {})
        defaults.update(group.default_args if group is not None else {})
        defaults.update(self.kwargs.pop("default_args", None) or {})
        self._accepted = _accepted_names(operator_class)
        for key, value in defaults.items():
            if key in self._accepted and key not in self.kwargs:
                self.kwargs[key] = value
        self._check_names(self.kwargs, "partial")

    def _check_names(self, names: Mapping[str, Any], where: str) -> None:
        if self.mapped_field is not None:
            return  # @task: any name goes to the function
        unknown = sorted(set(names) - self._accepted - {"dag", "task_group"})
        if unknown:
            raise self._error(f"{where}() got unexpected argument(s) {unknown}; "
                              f"{self.operator_class.__name__} accepts {sorted(self._accepted - {'task_id'})}")

    def _error(self, message: str) -> DagDefinitionError:
        return DagDefinitionError(f"task '{self.kwargs.get('task_id')}': {message}",
                                  task_id=self.kwargs.get("task_id"))

    def expand(self, **mapped: Any) -> MappedOperator:
        if not mapped:
            raise self._error("expand() needs at least one mapped argument")
        self._check_names(mapped, "expand")
        if self.mapped_field is None:
            for name in sorted(set(mapped) & _NOT_MAPPABLE):
                raise self._error(f"argument '{name}' cannot be mapped; pass it to partial()")
            both = sorted(set(mapped) & set(self.kwargs))
            if both:
                raise self._error(f"argument(s) {both} given to both partial() and expand(); give each once")
        for name, value in mapped.items():
            if not isinstance(value, (XComArg, list, tuple, dict)):
                raise self._error(f"expand() argument '{name}' must be a list, dict or task output, got "
                                  f"{type(value).__name__} {value!r:.60}")
        return self.build(DictOfListsExpandInput(mapped))

    def expand_kwargs(self, kwargs: Any) -> MappedOperator:
        if not isinstance(kwargs, (XComArg, list, tuple)):
            raise self._error(f"expand_kwargs() needs a list of dicts or a task output, got {type(kwargs).__name__}")
        if isinstance(kwargs, (list, tuple)):
            for item in kwargs:
                if isinstance(item, Mapping):
                    self._check_names(item, "expand_kwargs")
                elif not isinstance(item, XComArg):
                    raise self._error(f"expand_kwargs() items must be dicts, got {type(item).__name__}")
        return self.build(ListOfDictsExpandInput(kwargs))

    def build(self, expand_input: ExpandInput) -> MappedOperator:
        base = {k: v for k, v in self.kwargs.items() if k in _BASE_NAMES or k in ("dag", "task_group")}
        partial = {k: v for k, v in self.kwargs.items() if k not in ("dag", "task_group", "task_id")}
        return MappedOperator(operator_class=self.operator_class, partial_kwargs=partial, expand_input=expand_input,
                              mapped_field=self.mapped_field, **base)


__all__ = ["MappedOperator", "OperatorPartial"]
