"""BaseOperator: Airflow's task arguments, dependencies (``>>``, ``<<``, lists, ``chain``) and templating.

Airflow applies ``default_args`` with a metaclass. We wrap each subclass's ``__init__`` once in
``__init_subclass__`` instead: same behaviour (a DAG's default_args fill any constructor argument the caller did
not pass), plain Python, and the place where the definition line of the task is captured for error messages.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from sparkflow.definitions import setup_teardown
from sparkflow.definitions.assets import outlet_assets
from sparkflow.definitions.context import Context
from sparkflow.definitions.dag import current_dag
from sparkflow.definitions.dependencies import DependencyMixin
from sparkflow.definitions.edgemodifier import EdgeModifier
from sparkflow.definitions.location import Location, caller_location
from sparkflow.definitions.taskgroup import TaskGroup, current_task_group
from sparkflow.definitions.templating import RenderError, TemplateEnvironment, render_value
from sparkflow.definitions.trigger_rule import TriggerRule
from sparkflow.definitions.xcom_arg import SourceLength, XComArg, find_xcom_args, resolve_xcom_args
from sparkflow.exceptions import DagDefinitionError

if TYPE_CHECKING:
    from sparkflow.definitions.dag import DAG

# True while an operator is built for one mapped task instance (MappedOperator.unmap): it joins no DAG.
_unmapping: ContextVar[bool] = ContextVar("sparkflow_unmapping", default=False)
TASK_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
DEFAULT_POOL = "default_pool"
DEFAULT_QUEUE = "default"
MAX_RETRY_DELAY = timedelta(hours=24)  # Airflow's default [core] max_task_retry_delay
Callback = Callable[[Context], Any]


_ACCEPTED_NAMES: dict[type, frozenset[str]] = {}


def _accepted_names(cls: type) -> frozenset[str]:
    """The constructor arguments of cls and its bases (default_args fill only these). Cached per class: every
    task made, and every serialized task read back, asks, and inspect.signature costs ~0.3 ms a class."""
    cached = _ACCEPTED_NAMES.get(cls)
    if cached is not None:
        return cached
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        init = getattr(init, "__wrapped__", init)
        for param in inspect.signature(init).parameters.values():
            if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and param.name != "self":
                names.add(param.name)
    _ACCEPTED_NAMES[cls] = frozenset(names)
    return _ACCEPTED_NAMES[cls]


def _apply_defaults(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def wrapper(self: BaseOperator, *args: Any, **kwargs: Any) -> None:
        outermost = not self._in_init
        group: TaskGroup | None = None
        if outermost:
            self._in_init = True
            self._location = caller_location()
            dag = kwargs.get("dag") or current_dag()
            group = kwargs.pop("task_group", None) or current_task_group()
            if group is not None and dag is not None and group.dag is not dag:
                group = None  # a task given another DAG explicitly does not join the open group
            if group is not None and isinstance(kwargs.get("task_id"), str):
                kwargs["task_id"] = group.child_id(kwargs["task_id"])  # Airflow's "group.task" ids
            defaults = dict(getattr(dag, "default_args", None) or {})
            defaults.update(group.default_args if group is not None else {})
            defaults.update(kwargs.pop("default_args", None) or {})
            accepted = _accepted_names(type(self))
            for key, value in defaults.items():
                if key in accepted and key not in kwargs:
                    kwargs[key] = value
            if dag is not None and "dag" not in kwargs:
                kwargs["dag"] = dag
        try:
            init(self, *args, **kwargs)
        finally:
            if outermost:
                self._in_init = False
        if outermost:
            if group is not None:
                group.add(self)
            self._after_init()

    return wrapper


class BaseOperator(DependencyMixin):
    """Base of every task. Subclasses implement :meth:`execute`."""

    template_fields: ClassVar[Sequence[str]] = ()
    template_ext: ClassVar[Sequence[str]] = ()
    ui_color: ClassVar[str] = "#fff"
    _location: Location | None = None
    _in_init = False  # inside the outermost __init__ (_apply_defaults: a subclass's __init__ calls its base's)
    task_group: TaskGroup | None = None  # set when the task is made inside a TaskGroup
    is_setup = False  # as_setup() / @setup
    is_teardown = False  # as_teardown() / @teardown
    on_failure_fail_dagrun = False  # a teardown whose failure fails the run

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not hasattr(init, "__wrapped__"):
            cls.__init__ = _apply_defaults(init)  # type: ignore[method-assign]

    def __init__(
        self,
        *,
        task_id: str,
        owner: str = "airflow",
        email: str | Sequence[str] | None = None,
        email_on_failure: bool = False,
        email_on_retry: bool = False,
        retries: int | None = 0,
        retry_delay: timedelta | float = timedelta(seconds=300),
        retry_exponential_backoff: bool = False,
        max_retry_delay: timedelta | float | None = None,
        execution_timeout: timedelta | float | None = None,
        trigger_rule: str = TriggerRule.ALL_SUCCESS,
        depends_on_past: bool = False,
        wait_for_downstream: bool = False,
        pool: str | None = None,
        pool_slots: int = 1,
        max_active_tis_per_dag: int | None = None,
        max_active_tis_per_dagrun: int | None = None,
        priority_weight: int = 1,
        weight_rule: str = "downstream",
        queue: str = DEFAULT_QUEUE,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        params: dict[str, Any] | None = None,
        do_xcom_push: bool = True,
        multiple_outputs: bool = False,
        on_execute_callback: Callback | None = None,
        on_success_callback: Callback | None = None,
        on_failure_callback: Callback | None = None,
        on_retry_callback: Callback | None = None,
        doc_md: str | None = None,
        doc: str | None = None,
        outlets: Sequence[Any] | None = None,
        inlets: Sequence[Any] | None = None,
        dag: DAG | None = None,
    ) -> None:
        self._target_dag = dag  # for error messages raised before the task has joined its DAG
        self.task_id = task_id
        self.owner = owner
        self.email = email
        self.email_on_failure = email_on_failure
        self.email_on_retry = email_on_retry
        self.retries = int(retries or 0)
        self.retry_delay = _as_timedelta(retry_delay)
        self.retry_exponential_backoff = retry_exponential_backoff
        self.max_retry_delay = _as_timedelta(max_retry_delay) if max_retry_delay is not None else None
        self.execution_timeout = _as_timedelta(execution_timeout) if execution_timeout is not None else None
        self.depends_on_past = depends_on_past
        self.wait_for_downstream = wait_for_downstream
        self.pool = pool or DEFAULT_POOL
        self.pool_slots = pool_slots
        # At most this many instances of the task queued or running at once, over all runs / in one run (each
        # instance of a mapped task counts).
        self.max_active_tis_per_dag = max_active_tis_per_dag
        self.max_active_tis_per_dagrun = max_active_tis_per_dagrun
        self.priority_weight = priority_weight
        self.weight_rule = weight_rule
        self.queue = queue
        self.start_date = start_date
        self.end_date = end_date
        self.params = dict(params or {})
        self.do_xcom_push = do_xcom_push
        self.multiple_outputs = multiple_outputs
        self.on_execute_callback = on_execute_callback
        self.on_success_callback = on_success_callback
        self.on_failure_callback = on_failure_callback
        self.on_retry_callback = on_retry_callback
        self.doc_md = doc_md or doc
        self.outlets = outlet_assets(outlets, f"task '{task_id}'")  # assets this task updates when it succeeds
        self.inlets = list(inlets or [])
        self.upstream_task_ids: set[str] = set()
        self.downstream_task_ids: set[str] = set()
        self.dag: DAG | None = None

        if not task_id or not set(task_id) <= TASK_ID_CHARS or len(task_id) > 250:
            raise self._error(f"task_id {task_id!r} is invalid; use letters, digits, '_', '.', '-'")
        try:
            self.trigger_rule = TriggerRule.parse(str(trigger_rule))
        except ValueError as exc:
            raise self._error(str(exc)) from None
        if self.retries < 0:
            raise self._error(f"retries must be >= 0, got {retries}")
        if dag is not None:
            dag.add_task(self)

    # -- construction helpers -------------------------------------------------------------------------------
    def _error(self, message: str) -> DagDefinitionError:
        dag = getattr(self, "dag", None) or getattr(self, "_target_dag", None)
        dag_id = dag.dag_id if dag is not None else None
        where = f"DAG '{dag_id}' " if dag_id else ""
        return DagDefinitionError(
            f"{where}task '{getattr(self, 'task_id', '?')}': {message}",
            dag_id=dag_id,
            task_id=getattr(self, "task_id", None),
            lineno=self._location.lineno if self._location else None,
        )

    def _after_init(self) -> None:
        """Tasks whose template fields hold another task's output depend on that task (TaskFlow)."""
        if self.dag is None and _unmapping.get():
            return  # built for one mapped instance at run time: its mapped task already holds the dependencies
        for name in self.template_fields:
            for arg in find_xcom_args(getattr(self, name, None)):
                self.set_upstream(arg.operators())

    @property
    def location(self) -> Location | None:
        return self._location

    @property
    def task_type(self) -> str:
        """The operator's class name (Airflow's ``task_type``); a serialized task keeps its original one."""
        return type(self).__name__

    @property
    def is_mapped(self) -> bool:
        """A task in a mapped task group is mapped with it (a classic operator too, as in Airflow)."""
        return self.mapped_group is not None

    def map_length(self, source_length: SourceLength) -> int:
        """How many instances a task of a mapped task group gets in a run: as many as the group."""
        group = self.mapped_group
        if group is None:
            raise TypeError(f"task '{self.task_id}' is not mapped")
        return int(group.expand_input.length(source_length))

    @property
    def mapped_group(self) -> TaskGroup | None:
        """The mapped task group this task is expanded with (None: not in one)."""
        if self.task_group is None:
            return None
        return next((g for g in self.task_group.lineage() if g.expand_input is not None), None)

    @property
    def mapped_group_id(self) -> str | None:
        group = self.mapped_group
        return group.group_id if group is not None else None

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Airflow's dynamic task mapping: ``Op.partial(task_id=..., fixed=...).expand(mapped=[...])``."""
        return _mapping.OperatorPartial(cls, kwargs)

    # -- setup and teardown (definitions/setup_teardown.py) -------------------------------------------------
    def as_setup(self) -> BaseOperator:
        self.is_setup = True
        return self

    def as_teardown(self, setups: Any = None, on_failure_fail_dagrun: bool | None = None) -> BaseOperator:
        self.is_teardown = True
        self.trigger_rule = TriggerRule.ALL_DONE_SETUP_SUCCESS
        if on_failure_fail_dagrun is not None:
            self.on_failure_fail_dagrun = on_failure_fail_dagrun
        for setup in setup_teardown.as_tasks(setups) if setups is not None else []:
            setup.as_setup()
            setup.set_downstream(self)
        return self

    def __enter__(self) -> BaseOperator:
        if not (self.is_setup or self.is_teardown):
            raise self._error("only a setup or teardown task can be used with `with`; call as_setup() or "
                              "as_teardown(setups=...) first")
        setup_teardown.enter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        setup_teardown.leave(self)

    @property
    def output(self) -> XComArg:
        """This task's return value, to pass to another task (Airflow's ``task.output``)."""
        return XComArg(self)

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"sparkflow.task.{type(self).__name__}")

    # -- dependencies ---------------------------------------------------------------------------------------
    def _link(self, others: Any, upstream: bool, edge_modifier: EdgeModifier | None = None) -> None:
        for other in _as_list(others):
            if isinstance(other, EdgeModifier):  # a >> Label(...) >> b: the label links a and b
                if upstream:
                    other.set_downstream(self)
                else:
                    other.set_upstream(self)
                continue
            if isinstance(other, XComArg):
                self._link(other.operators(), upstream, edge_modifier)
                continue
            if isinstance(other, TaskGroup):  # upstream group: its leaves; downstream group: its roots
                self._link(other.leaves if upstream else other.roots, upstream, edge_modifier)
                continue
            if isinstance(other, str):
                if self.dag is None:
                    raise self._error(f"cannot refer to task {other!r} by id before the task is in a DAG")
                self.dag.add_string_edge(self, other, upstream=upstream)
                continue
            if not isinstance(other, BaseOperator):
                raise self._error(f"cannot set a dependency on {other!r}; expected a task or a list of tasks")
            if other.dag is None and self.dag is not None:
                self.dag.add_task(other)
            elif self.dag is None and other.dag is not None:
                other.dag.add_task(self)
            if self.dag is not other.dag:
                raise self._error(
                    f"cannot link to task '{other.task_id}' of another DAG "
                    f"'{other.dag.dag_id if other.dag else None}'"
                )
            up, down = (other, self) if upstream else (self, other)
            up.downstream_task_ids.add(down.task_id)
            down.upstream_task_ids.add(up.task_id)
            if edge_modifier is not None and edge_modifier.label is not None and self.dag is not None:
                self.dag.set_edge_info(up.task_id, down.task_id, {"label": edge_modifier.label})

    def set_upstream(self, other: Any, edge_modifier: EdgeModifier | None = None) -> None:
        self._link(other, upstream=True, edge_modifier=edge_modifier)

    def set_downstream(self, other: Any, edge_modifier: EdgeModifier | None = None) -> None:
        self._link(other, upstream=False, edge_modifier=edge_modifier)

    @property
    def upstream_list(self) -> list[BaseOperator]:
        assert self.dag is not None
        return [self.dag.task_dict[t] for t in sorted(self.upstream_task_ids)]

    @property
    def downstream_list(self) -> list[BaseOperator]:
        assert self.dag is not None
        return [self.dag.task_dict[t] for t in sorted(self.downstream_task_ids)]

    # -- execution -----------------------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement execute(context)")

    def on_kill(self) -> None:
        """Stop whatever the task started (a subprocess, a remote application). Called on timeout or kill."""

    @classmethod
    def warm_imports(cls) -> None:
        """Import the modules execute() imports on first use, ahead of any try, in a process that forks task
        processes (the fork server), so no try pays for them. Imports only: no thread, connection or file."""

    def pre_execute(self, context: Context) -> None:
        """Hook run just before execute()."""

    def post_execute(self, context: Context, result: Any = None) -> None:
        """Hook run just after a successful execute()."""

    def render_template_fields(self, context: Context, env: TemplateEnvironment) -> None:
        """Render every template field in place, resolving TaskFlow outputs (XComArg) on the way."""
        for name in self.template_fields:
            value = getattr(self, name, None)
            if value is None:
                continue
            try:
                value = self.render_template(value, context, env)
            except RenderError as exc:
                raise self._error(f"template field '{name}' failed to render: {exc}") from exc
            setattr(self, name, value)

    def get_template_env(self) -> TemplateEnvironment:
        """The Jinja environment this task renders with: its DAG's (Airflow's ``get_template_env``)."""
        return self.dag.get_template_env() if self.dag is not None else TemplateEnvironment()

    def render_template(
        self, content: Any, context: Context, jinja_env: Any = None, seen_oids: set[int] | None = None
    ) -> Any:
        """Render ``content`` as a template field would be (Airflow's public method, used in callables as
        ``context["task"].render_template(...)``): strings, nested containers, TaskFlow outputs, and strings
        ending in one of ``template_ext`` read as template files. ``jinja_env`` may be a ``jinja2.Environment``;
        ``seen_oids`` is accepted for Airflow's signature."""
        if jinja_env is None:
            env = self.get_template_env()
        elif isinstance(jinja_env, TemplateEnvironment):
            env = jinja_env
        else:
            env = TemplateEnvironment.wrapping(jinja_env)
        return render_value(resolve_xcom_args(content, context), context, env, self.template_ext)

    def retry_delay_for(self, try_number: int) -> timedelta:
        """Delay before the retry that follows failed try ``try_number`` (1-based)."""
        if not self.retry_exponential_backoff:
            return self.retry_delay
        cap = self.max_retry_delay or MAX_RETRY_DELAY
        # Double per try in float seconds, capped before building a timedelta (2**40 days would overflow).
        seconds = self.retry_delay.total_seconds() * 2.0 ** min(max(try_number - 1, 0), 64)
        return timedelta(seconds=min(seconds, cap.total_seconds()))

    def __repr__(self) -> str:
        return f"<Task({type(self).__name__}): {self.task_id}>"


def _as_timedelta(value: timedelta | float) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


BaseOperator.__init__ = _apply_defaults(BaseOperator.__init__)  # type: ignore[method-assign]


def warm_operator_classes() -> None:
    """Look up the constructor arguments of every operator class imported so far, once: processes forked from
    this one (parse workers) then make tasks without inspecting signatures again."""
    pending = list(BaseOperator.__subclasses__())
    while pending:
        cls = pending.pop()
        _accepted_names(cls)
        pending.extend(cls.__subclasses__())


def chain(*tasks: BaseOperator | Sequence[BaseOperator]) -> None:
    """``chain(a, [b, c], d)``: a >> [b, c] >> d. Two adjacent lists must have equal length (pairwise)."""
    for left, right in zip(tasks, tasks[1:], strict=False):
        if isinstance(left, Sequence) and isinstance(right, Sequence):
            if len(left) != len(right):
                raise DagDefinitionError(
                    f"chain(): adjacent lists must have the same length, got {len(left)} and {len(right)}"
                )
            for a, b in zip(left, right, strict=True):
                a >> b
        elif isinstance(left, Sequence):
            for a in left:
                a >> right
        else:
            left >> right


def cross_downstream(from_tasks: Iterable[BaseOperator], to_tasks: Iterable[BaseOperator]) -> None:
    to_list = list(to_tasks)
    for task in from_tasks:
        task >> to_list


# MappedOperator subclasses BaseOperator, so its module can only load once BaseOperator exists (imported last;
# `partial()` reaches it through the module at call time, whichever of the two modules is imported first).
from sparkflow.definitions import mappedoperator as _mapping  # noqa: E402
