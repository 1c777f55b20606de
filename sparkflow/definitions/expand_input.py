"""What a mapped task is expanded over: ``.expand(**lists)`` (a cross product) or ``.expand_kwargs(dicts)``, and
the arguments of a mapped task group. Lengths come from literals or from the scheduler's reading of upstream
outputs (``source_length``); items are resolved in the instance's own task process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparkflow.definitions.context import Context
from sparkflow.definitions.xcom_arg import MappingTypeError, SourceLength, XComArg, as_sequence, find_xcom_args

if TYPE_CHECKING:
    from sparkflow.definitions.baseoperator import BaseOperator
    from sparkflow.definitions.taskgroup import TaskGroup

MAX_MAP_LENGTH = 1024  # Airflow's [core] max_map_length: more instances than this fail the mapped task


@dataclass(frozen=True)
class DictOfListsExpandInput:
    """``.expand(a=[...], b=xcom)``: the cross product of the named values, the last name varying fastest."""

    value: Mapping[str, Any]

    def length(self, source_length: SourceLength) -> int:
        total = 1
        for item in self.value.values():
            total *= _length(item, source_length)
        return total

    def resolve(self, context: Context, map_index: int) -> dict[str, Any]:
        items = {name: _sequence(value, context, name) for name, value in self.value.items()}
        index = map_index
        chosen: dict[str, Any] = {}
        for name in reversed(list(items)):  # the last name varies fastest (itertools.product's order)
            seq = items[name]
            index, position = divmod(index, len(seq)) if len(seq) else (index, 0)
            chosen[name] = seq[position]
        return {name: chosen[name] for name in items}


@dataclass(frozen=True)
class ListOfDictsExpandInput:
    """``.expand_kwargs([{...}, {...}])`` or an upstream's list of dicts: one instance per dict."""

    value: Any  # a list of dicts, or an XComArg giving one

    def length(self, source_length: SourceLength) -> int:
        return _length(self.value, source_length)

    def resolve(self, context: Context, map_index: int) -> dict[str, Any]:
        item = _sequence(self.value, context, "expand_kwargs")[map_index]
        if isinstance(item, XComArg):
            item = item.resolve(context)
        if not isinstance(item, Mapping) or not all(isinstance(k, str) for k in item):
            raise TypeError(f"expand_kwargs() needs a list of dicts with string keys; item {map_index} is a "
                            f"{type(item).__name__}: {item!r:.80}")
        return {k: (v.resolve(context) if isinstance(v, XComArg) else v) for k, v in item.items()}


ExpandInput = DictOfListsExpandInput | ListOfDictsExpandInput


def _length(value: Any, source_length: SourceLength) -> int:
    if isinstance(value, XComArg):
        return value.length(source_length)
    if isinstance(value, (list, tuple, dict)):
        return len(value)
    raise MappingTypeError("a literal", value)


def _sequence(value: Any, context: Context, name: str) -> Sequence[Any]:
    if isinstance(value, XComArg):
        return as_sequence(value.resolve(context), value)
    return as_sequence(value, name)


class MappedArgument(XComArg):
    """A mapped task group's argument inside the group: instance i of a task reads item i of the group's input."""

    def __init__(self, group: TaskGroup, name: str) -> None:
        self.group = group
        self.name = name
        self.key = name

    def resolve(self, context: Context) -> Any:
        return self.group.expand_input.resolve(context, context["ti"].map_index)[self.name]

    def operators(self) -> list[BaseOperator]:
        return [op for arg in find_xcom_args(self.group.expand_input.value)
                for op in arg.operators()]

    def length(self, source_length: SourceLength) -> int:
        raise TypeError(f"cannot map over the mapped group argument '{self.name}' again")

    def __repr__(self) -> str:
        return f"MappedArgument({self.group.group_id!r}, {self.name!r})"

    __str__ = __repr__  # no XCom pull template: its value comes from the group's input, per instance
