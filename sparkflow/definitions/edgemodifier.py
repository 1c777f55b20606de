"""Edge labels, as Airflow's ``Label``: ``a >> Label("yes") >> b`` or ``a.set_downstream(b, edge_modifier=...)``
is a plain dependency a -> b for scheduling; the DAG keeps the label for the edge (``dag.get_edge_info``) and the web
graph shows it.
"""

from __future__ import annotations

from typing import Any

from sparkflow.definitions.dependencies import DependencyMixin


class EdgeModifier(DependencyMixin):
    def __init__(self, label: str | None = None) -> None:
        self.label = label
        self._upstream: list[Any] = []
        self._downstream: list[Any] = []

    def set_upstream(self, other: Any, edge_modifier: EdgeModifier | None = None) -> None:
        for up in _as_list(other):
            self._upstream.append(up)
            for down in self._downstream:
                up.set_downstream(down, edge_modifier=self)

    def set_downstream(self, other: Any, edge_modifier: EdgeModifier | None = None) -> None:
        for down in _as_list(other):
            self._downstream.append(down)
            for up in self._upstream:
                up.set_downstream(down, edge_modifier=self)

    def __repr__(self) -> str:
        return f"Label({self.label!r})"


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]


Label = EdgeModifier

__all__ = ["EdgeModifier", "Label"]
