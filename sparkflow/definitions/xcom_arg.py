"""XComArg: the output of a TaskFlow task used as another task's argument (creates the dependency)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sparkflow.definitions.context import XCOM_RETURN_KEY, Context
from sparkflow.definitions.dependencies import DependencyMixin

if TYPE_CHECKING:
    from sparkflow.definitions.baseoperator import BaseOperator


class XComArg(DependencyMixin):
    def __init__(self, operator: BaseOperator, key: str = XCOM_RETURN_KEY) -> None:
        self.operator = operator
        self.key = key

    def __getitem__(self, key: str) -> XComArg:
        """``out["total"]`` of a ``multiple_outputs`` task: the XCom pushed under that key."""
        return XComArg(self.operator, key)

    def resolve(self, context: Context) -> Any:
        return context["ti"].xcom_pull(task_ids=self.operator.task_id, key=self.key)

    # Dependencies between TaskFlow outputs behave like the tasks themselves (>> and << from DependencyMixin).
    def set_upstream(self, other: Any) -> None:
        self.operator.set_upstream(other)

    def set_downstream(self, other: Any) -> None:
        self.operator.set_downstream(other)

    @property
    def task_id(self) -> str:
        return self.operator.task_id

    def __repr__(self) -> str:
        return f"XComArg({self.operator.task_id!r}, key={self.key!r})"


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
