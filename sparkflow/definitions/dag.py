"""DAG: a named set of tasks with dependencies and a schedule; context manager and ``@dag`` decorator."""

from __future__ import annotations

import functools
import inspect
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sparkflow.definitions.assets import AssetOrTimeSchedule, BaseAsset, as_condition, is_asset_schedule
from sparkflow.definitions.location import Location, caller_location
from sparkflow.definitions.schedule import DataInterval, NullTimetable, Timetable, ensure_aware, make_timetable
from sparkflow.definitions.templating import TemplateEnvironment
from sparkflow.exceptions import DagDefinitionError, NotFound

if TYPE_CHECKING:
    from sparkflow.definitions.baseoperator import BaseOperator
    from sparkflow.definitions.taskgroup import TaskGroup

DAG_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")

# The DAGs whose `with` blocks are open; operators created inside one join it.
_dag_stack: list[DAG] = []
# While the loader imports a DAG file, every DAG constructed is recorded here (Airflow 2.4+ auto-registration),
# so DAGs built by @dag factories or inside functions are found without a module-level variable.
_created_dags: list[list[DAG]] = []


def collect_created_dags() -> list[DAG]:
    """Start recording constructed DAGs; the loader pops the list when the file is imported."""
    bucket: list[DAG] = []
    _created_dags.append(bucket)
    return bucket


def stop_collecting(bucket: list[DAG]) -> None:
    _created_dags.remove(bucket)


def current_dag() -> DAG | None:
    return _dag_stack[-1] if _dag_stack else None


class DAG:
    def __init__(
        self,
        dag_id: str,
        description: str | None = None,
        schedule: str | timedelta | Timetable | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        catchup: bool = False,
        default_args: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        max_active_runs: int = 16,
        max_active_tasks: int = 16,
        dagrun_timeout: timedelta | float | None = None,
        on_success_callback: Callable[..., Any] | None = None,
        on_failure_callback: Callable[..., Any] | None = None,
        doc_md: str | None = None,
        owner_links: dict[str, str] | None = None,
        render_template_as_native_obj: bool = False,
        template_searchpath: str | list[str] | None = None,
        user_defined_macros: dict[str, Any] | None = None,
        user_defined_filters: dict[str, Callable[..., Any]] | None = None,
        is_paused_upon_creation: bool | None = None,
        fileloc: str | None = None,
    ) -> None:
        self._location: Location | None = caller_location()
        self.dag_id = dag_id
        if not isinstance(dag_id, str) or not DAG_ID_PATTERN.match(dag_id):
            raise self._error(f"dag_id {dag_id!r} is invalid; use letters, digits, '_', '.', '-'")
        self.description = description
        self.default_args = dict(default_args or {})
        self.schedule = schedule
        start = start_date if start_date is not None else self.default_args.get("start_date")
        self.start_date = ensure_aware(start) if start is not None else None
        # A cron schedule runs in the time zone of start_date, as in Airflow (02:00 Amsterdam, not 02:00 UTC).
        tz = self.start_date.tzinfo if self.start_date is not None and self.start_date.tzinfo else UTC
        # Data-aware scheduling: a list of assets, an & / | condition, or AssetOrTimeSchedule (assets + timetable).
        self.asset_condition: BaseAsset | None = None
        if isinstance(schedule, AssetOrTimeSchedule):
            self.asset_condition, schedule = schedule.assets, schedule.timetable
        elif is_asset_schedule(schedule):
            self.asset_condition, schedule = as_condition(schedule), None
        try:
            self.timetable: Timetable = make_timetable(schedule, tz)
        except ValueError as exc:
            raise self._error(str(exc)) from None
        end = end_date if end_date is not None else self.default_args.get("end_date")
        self.end_date = ensure_aware(end) if end is not None else None
        self.catchup = catchup
        self.params = dict(params or {})
        self.tags = list(tags or [])
        for name, value in (("max_active_runs", max_active_runs), ("max_active_tasks", max_active_tasks)):
            if not isinstance(value, int) or value < 1:
                raise self._error(f"{name} must be a positive integer, got {value!r}")
        self.max_active_runs = max_active_runs
        self.max_active_tasks = max_active_tasks
        if isinstance(dagrun_timeout, (int, float)) and not isinstance(dagrun_timeout, bool):
            dagrun_timeout = timedelta(seconds=dagrun_timeout)  # seconds, as execution_timeout also accepts
        if dagrun_timeout is not None and (not isinstance(dagrun_timeout, timedelta) or dagrun_timeout <= timedelta(0)):
            raise self._error(f"dagrun_timeout must be a positive timedelta, e.g. timedelta(hours=2), got "
                              f"{dagrun_timeout!r}")
        self.dagrun_timeout: timedelta | None = dagrun_timeout
        self.on_success_callback = on_success_callback
        self.on_failure_callback = on_failure_callback
        self.doc_md = doc_md
        self.owner_links = owner_links or {}
        self.render_template_as_native_obj = render_template_as_native_obj
        if isinstance(template_searchpath, str):
            template_searchpath = [template_searchpath]
        self.template_searchpath = list(template_searchpath or [])
        self.user_defined_macros = dict(user_defined_macros or {})
        self.user_defined_filters = dict(user_defined_filters or {})
        self.is_paused_upon_creation = is_paused_upon_creation
        self.fileloc = fileloc or (self._location.filename if self._location else None)
        self.task_dict: dict[str, BaseOperator] = {}
        self.task_group_dict: dict[str, TaskGroup] = {}  # by full group id (definitions/taskgroup.py)
        # (task, other task id, other is upstream?, where) for dependencies given by task id, checked in validate()
        self._string_edges: list[tuple[BaseOperator, str, bool]] = []
        # Airflow's edge info: upstream task_id -> downstream task_id -> {"label": ...} (edge labels)
        self.edge_info: dict[str, dict[str, dict[str, str]]] = {}
        self._order: tuple[tuple[int, int], list[BaseOperator]] | None = None  # see topological_order
        if _created_dags:
            _created_dags[-1].append(self)

    # -- context manager ------------------------------------------------------------------------------------
    def __enter__(self) -> DAG:
        _dag_stack.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _dag_stack.pop()

    def _error(self, message: str, task: BaseOperator | None = None) -> DagDefinitionError:
        location = task.location if task is not None and task.location else self._location
        where = f"DAG '{self.dag_id}'" + (f" task '{task.task_id}'" if task is not None else "")
        return DagDefinitionError(
            f"{where}: {message}",
            dag_id=self.dag_id,
            task_id=task.task_id if task is not None else None,
            lineno=location.lineno if location else None,
        )

    # -- tasks ----------------------------------------------------------------------------------------------
    def add_task(self, task: BaseOperator) -> None:
        existing = self.task_dict.get(task.task_id)
        if existing is task:
            return
        if existing is not None:
            first = f" (first defined at line {existing.location.lineno})" if existing.location else ""
            raise self._error(f"duplicate task_id; each task_id must be unique in a DAG{first}", task)
        if task.dag is not None and task.dag is not self:
            raise self._error(f"task already belongs to DAG '{task.dag.dag_id}'", task)
        task.dag = self
        self.task_dict[task.task_id] = task

    @property
    def schedule_description(self) -> str:
        """The schedule as listings show it: the timetable's, with the asset condition first when there is one."""
        if self.asset_condition is None:
            return self.timetable.description
        timetable = "" if isinstance(self.timetable, NullTimetable) else f"; or {self.timetable.description}"
        return f"assets: {self.asset_condition.words()}{timetable}"

    def set_edge_info(self, upstream_task_id: str, downstream_task_id: str, info: dict[str, str]) -> None:
        self.edge_info.setdefault(upstream_task_id, {})[downstream_task_id] = dict(info)

    def get_edge_info(self, upstream_task_id: str, downstream_task_id: str) -> dict[str, str]:
        return self.edge_info.get(upstream_task_id, {}).get(downstream_task_id, {})

    def add_string_edge(self, task: BaseOperator, other_id: str, upstream: bool) -> None:
        self._string_edges.append((task, other_id, upstream))

    @property
    def tasks(self) -> list[BaseOperator]:
        return list(self.task_dict.values())

    @property
    def task_ids(self) -> list[str]:
        return list(self.task_dict)

    def get_template_env(self) -> TemplateEnvironment:
        """The Jinja environment of this DAG's tasks: template files next to the DAG file, then in
        ``template_searchpath``; the DAG's macros and filters; native types when asked (Airflow's name)."""
        searchpath = [os.path.dirname(self.fileloc)] if self.fileloc else []
        return TemplateEnvironment(self.render_template_as_native_obj, searchpath + self.template_searchpath,
                                   self.user_defined_macros, self.user_defined_filters)

    def get_task(self, task_id: str) -> BaseOperator:
        try:
            return self.task_dict[task_id]
        except KeyError:
            raise NotFound(
                f"DAG '{self.dag_id}' has no task '{task_id}'; known: {', '.join(sorted(self.task_dict))}"
            ) from None

    @property
    def roots(self) -> list[BaseOperator]:
        return [t for t in self.task_dict.values() if not t.upstream_task_ids]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [t for t in self.task_dict.values() if not t.downstream_task_ids]

    def validate(self) -> None:
        """Resolve dependencies given by task id and reject cycles. Called by the loader after import."""
        for task, other_id, upstream in self._string_edges:
            other = self.task_dict.get(other_id)
            if other is None:
                kind = "upstream" if upstream else "downstream"
                raise self._error(
                    f"{kind} '{other_id}' does not exist; known: {', '.join(sorted(self.task_dict))}", task
                )
            up, down = (other, task) if upstream else (task, other)
            up.downstream_task_ids.add(down.task_id)
            down.upstream_task_ids.add(up.task_id)
        self._string_edges.clear()
        self.topological_order()

    def topological_order(self) -> list[BaseOperator]:
        """Tasks with every upstream before its downstream; raises on a cycle, naming it.

        Kept until tasks or edges are added (the scheduler plans each run in this order every loop iteration).
        Edges are only ever
        added, so their count tells whether the order is still current."""
        shape = (len(self.task_dict), sum(len(t.upstream_task_ids) for t in self.task_dict.values()))
        if self._order is None or self._order[0] != shape:
            self._order = (shape, self._sorted_topologically())
        return list(self._order[1])

    def _sorted_topologically(self) -> list[BaseOperator]:
        indegree = {tid: len(t.upstream_task_ids) for tid, t in self.task_dict.items()}
        ready = sorted(tid for tid, n in indegree.items() if n == 0)
        order: list[str] = []
        while ready:
            tid = ready.pop(0)
            order.append(tid)
            for child in sorted(self.task_dict[tid].downstream_task_ids):
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(order) != len(self.task_dict):
            cycle = self._find_cycle({tid for tid, n in indegree.items() if n > 0})
            raise self._error(f"cycle detected: {' >> '.join(cycle)}", self.task_dict[cycle[0]])
        return [self.task_dict[tid] for tid in order]

    def _find_cycle(self, candidates: set[str]) -> list[str]:
        start = sorted(candidates)[0]
        path, seen = [start], {start}
        node = start
        while True:
            node = sorted(d for d in self.task_dict[node].downstream_task_ids if d in candidates)[0]
            if node in seen:
                return path[path.index(node):] + [node]
            path.append(node)
            seen.add(node)

    def downstream_of(self, task_id: str) -> set[str]:
        """Every task reachable downstream of task_id (not including it)."""
        found: set[str] = set()
        stack = list(self.task_dict[task_id].downstream_task_ids)
        while stack:
            tid = stack.pop()
            if tid not in found:
                found.add(tid)
                stack.extend(self.task_dict[tid].downstream_task_ids)
        return found

    # -- schedule -------------------------------------------------------------------------------------------
    def infer_manual_data_interval(self, run_after: datetime) -> DataInterval:
        # by keyword: Airflow's Timetable declares it keyword-only
        return self.timetable.infer_manual_data_interval(run_after=ensure_aware(run_after))

    def next_data_interval(self, last: DataInterval | None, now: datetime) -> DataInterval | None:
        interval = self.timetable.next_interval(last, self.start_date, ensure_aware(now), self.catchup)
        if interval is not None and self.end_date is not None and interval.start > self.end_date:
            return None
        return interval

    @property
    def location(self) -> Location | None:
        return self._location

    def __repr__(self) -> str:
        return f"<DAG: {self.dag_id}>"

    def __iter__(self) -> Iterator[BaseOperator]:
        return iter(self.task_dict.values())


def dag(dag_id: str | None = None, **dag_kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., DAG]]:
    """``@dag(...)`` builds a DAG from a function: its name is the dag_id, its arguments become params."""

    def decorator(func: Callable[..., Any]) -> Callable[..., DAG]:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def factory(*args: Any, **kwargs: Any) -> DAG:
            bound = signature.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            options = {k: v for k, v in dag_kwargs.items() if k != "params"}
            params = {**(dag_kwargs.get("params") or {}), **bound.arguments}
            the_dag = DAG(dag_id or func.__name__, params=params or None, **options)
            the_dag.doc_md = the_dag.doc_md or func.__doc__
            with the_dag:
                func(*bound.args, **bound.kwargs)
            return the_dag

        return factory

    return decorator


__all__ = ["DAG", "dag", "current_dag", "DataInterval"]
