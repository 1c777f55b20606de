"""XComArg: the output of a TaskFlow task used as another task's argument (creates the dependency).

``arg.map(fn)`` and ``arg.zip(other, ...)`` (Airflow 2.4+) transform a list output lazily in the consuming task's
process; their length is known from their sources' lengths alone, so the scheduler can expand a mapped task over
them without running user code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sparkflow.definitions.context import XCOM_RETURN_KEY, Context
from sparkflow.definitions.dependencies import DependencyMixin

if TYPE_CHECKING:
    from sparkflow.definitions.baseoperator import BaseOperator

NOTSET: Any = object()  # zip(): no fillvalue given (stop at the shortest input)
SourceLength = Callable[["XComArg"], int]  # the length of a plain XComArg's pushed value, read by the scheduler


class XComArg(DependencyMixin):
    def __init__(self, operator: BaseOperator, key: str = XCOM_RETURN_KEY) -> None:
        self.operator = operator
        self.key = key

    def __getitem__(self, key: str) -> XComArg:
        """``out["total"]`` of a ``multiple_outputs`` task: the XCom pushed under that key."""
        return XComArg(self.operator, key)

    def resolve(self, context: Context) -> Any:
        ti = context["ti"]
        if _same_mapped_group(self.operator, context.get("task")):
            # Inside a mapped task group, instance i reads the output of instance i of its upstream (Airflow).
            return ti.xcom_pull(task_ids=self.operator.task_id, key=self.key, map_indexes=ti.map_index)
        return ti.xcom_pull(task_ids=self.operator.task_id, key=self.key)

    def operators(self) -> list[BaseOperator]:
        """The tasks this value comes from (its upstream dependencies)."""
        return [self.operator]

    def length(self, source_length: SourceLength) -> int:
        """How many items mapping over this value gives."""
        return source_length(self)

    def as_setup(self) -> XComArg:
        self.operator.as_setup()
        return self

    def as_teardown(self, setups: Any = None, on_failure_fail_dagrun: bool | None = None) -> XComArg:
        self.operator.as_teardown(setups=setups, on_failure_fail_dagrun=on_failure_fail_dagrun)
        return self

    def __enter__(self) -> XComArg:
        self.operator.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.operator.__exit__(*exc)

    def map(self, func: Callable[[Any], Any]) -> MapXComArg:
        """Apply ``func`` to every item, lazily, where the value is consumed (Airflow's ``XComArg.map``)."""
        return MapXComArg(self, [func])

    def zip(self, *others: XComArg, fillvalue: Any = NOTSET) -> ZipXComArg:
        """Tuples of the i-th items; stops at the shortest input unless ``fillvalue`` is given."""
        return ZipXComArg([self, *others], fillvalue)

    # Dependencies between TaskFlow outputs behave like the tasks themselves (>> and << from DependencyMixin).
    def set_upstream(self, other: Any, edge_modifier: Any = None) -> None:
        for op in self.operators():
            op.set_upstream(other, edge_modifier=edge_modifier)

    def set_downstream(self, other: Any, edge_modifier: Any = None) -> None:
        for op in self.operators():
            op.set_downstream(other, edge_modifier=edge_modifier)

    @property
    def task_id(self) -> str:
        return self.operator.task_id

    def __repr__(self) -> str:
        return f"XComArg({self.operator.task_id!r}, key={self.key!r})"

    def __str__(self) -> str:
        """Airflow's: the template that pulls the value, so ``f"echo {task.output}"`` in a template field works."""
        pulled = [f"task_ids='{self.operator.task_id}'"]
        if self.operator.dag is not None:
            pulled.append(f"dag_id='{self.operator.dag.dag_id}'")
        pulled.append(f"key='{self.key}'")
        return "{{ task_instance.xcom_pull(" + ", ".join(pulled) + ") }}"


class MapXComArg(XComArg):
    def __init__(self, arg: XComArg, callables: list[Callable[[Any], Any]]) -> None:
        super().__init__(arg.operator, arg.key)
        self.arg = arg
        self.callables = callables

    def resolve(self, context: Context) -> Any:
        return MappedSequence(as_sequence(self.arg.resolve(context), self.arg), self.callables)

    def operators(self) -> list[BaseOperator]:
        return self.arg.operators()

    def length(self, source_length: SourceLength) -> int:
        return self.arg.length(source_length)

    def map(self, func: Callable[[Any], Any]) -> MapXComArg:
        return MapXComArg(self.arg, [*self.callables, func])

    def __repr__(self) -> str:
        return f"{self.arg!r}.map({', '.join(getattr(f, '__name__', '?') for f in self.callables)})"


class ZipXComArg(XComArg):
    def __init__(self, args: list[XComArg], fillvalue: Any = NOTSET) -> None:
        super().__init__(args[0].operator, args[0].key)
        self.args = args
        self.fillvalue = fillvalue

    def resolve(self, context: Context) -> Any:
        values = [as_sequence(arg.resolve(context), arg) for arg in self.args]
        return ZippedSequence(values, self.fillvalue)

    def operators(self) -> list[BaseOperator]:
        return [op for arg in self.args for op in arg.operators()]

    def length(self, source_length: SourceLength) -> int:
        lengths = [arg.length(source_length) for arg in self.args]
        return min(lengths) if self.fillvalue is NOTSET else max(lengths)

    def __repr__(self) -> str:
        return f"zip({', '.join(map(repr, self.args))})"


def as_sequence(value: Any, what: Any) -> Sequence[Any]:
    """A mapped-over value as a sequence: a list as is, a dict as its (key, value) pairs (Airflow's rule)."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return value
    raise MappingTypeError(what, value)


class MappingTypeError(TypeError):
    def __init__(self, what: Any, value: Any) -> None:
        super().__init__(f"cannot map over {what!r}: it is a {type(value).__name__}, not a list or dict "
                         f"(value {value!r:.80})")


class MappedSequence(Sequence[Any]):
    """``arg.map(fn)``: each item passed through the callables when it is read."""

    def __init__(self, items: Sequence[Any], callables: list[Callable[[Any], Any]]) -> None:
        self._items = items
        self._callables = callables

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        value = self._items[index]
        for func in self._callables:
            value = func(value)
        return value

    def __repr__(self) -> str:
        return f"MappedSequence(len={len(self)})"


class ZippedSequence(Sequence[Any]):
    def __init__(self, values: list[Sequence[Any]], fillvalue: Any) -> None:
        self._values = values
        self._fillvalue = fillvalue
        lengths = [len(v) for v in values]
        self._len = min(lengths) if fillvalue is NOTSET else max(lengths)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(index)
        return tuple(v[index] if index < len(v) else self._fillvalue for v in self._values)


def _same_mapped_group(upstream: BaseOperator, task: Any) -> bool:
    group = getattr(task, "mapped_group", None)
    return group is not None and group is getattr(upstream, "mapped_group", None)


def find_xcom_args(value: Any) -> Iterator[XComArg]:
    if isinstance(value, XComArg):
        yield value
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from find_xcom_args(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from find_xcom_args(item)


def resolve_xcom_args(value: Any, context: Context) -> Any:
    if isinstance(value, XComArg):
        return value.resolve(context)
    if isinstance(value, (list, tuple, set)):
        return type(value)(resolve_xcom_args(v, context) for v in value)
    if isinstance(value, dict):
        return {k: resolve_xcom_args(v, context) for k, v in value.items()}
    return value
