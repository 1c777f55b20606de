"""``>>`` and ``<<`` for everything that can be wired into a DAG: tasks, task groups, TaskFlow outputs."""

from __future__ import annotations

from typing import Any


class DependencyMixin:
    """Airflow's bit-shift composition, written once in terms of ``set_upstream``/``set_downstream``.

    ``a >> b`` returns ``b`` so chains read left to right; ``[a, b] >> c`` (the list is on the left, so Python asks
    ``c.__rrshift__``) returns ``c``.
    """

    def set_upstream(self, other: Any, edge_modifier: Any = None) -> None:
        raise NotImplementedError

    def set_downstream(self, other: Any, edge_modifier: Any = None) -> None:
        raise NotImplementedError

    def __rshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return other

    def __lshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: Any) -> Any:
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return self
