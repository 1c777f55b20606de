"""Airflow's arguments translated to sparkflow's, so sparkflow's own DAG and BaseOperator stay clean.

The ``airflow.*`` aliases hand out the classes here: ``DAG`` (a subclass of sparkflow's DAG), ``BaseOperator``
and every operator (sparkflow's own class with :class:`AirflowArguments` in front: the same behaviour, only the
constructor arguments are translated). What translation does:

- renamed Airflow 2 arguments: ``schedule_interval`` and ``timetable`` -> ``schedule``, ``concurrency`` ->
  ``max_active_tasks``, ``task_concurrency`` -> ``max_active_tis_per_dag``, trigger rules ``dummy`` -> ``always`` and
  ``none_failed_or_skipped`` -> ``none_failed_min_one_success``;
- harmless ones are dropped quietly: ``provide_context`` (the context is always provided);
- Airflow arguments sparkflow cannot honour (``sla``, ``executor_config``, ``access_control`` ...) are dropped with
  an :class:`UnsupportedArgumentWarning` naming the argument; the loader turns those into one line per DAG file;
- anything else unknown is passed on, so a typo still fails the DAG file as it would in Airflow;
- ``Param`` objects in ``params`` become their default value.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from sparkflow.definitions.baseoperator import BaseOperator as _BaseOperator
from sparkflow.definitions.dag import DAG as _DAG
from sparkflow.definitions.dag import dag as _dag
from sparkflow.definitions.location import caller_location
from sparkflow.definitions.taskgroup import TaskGroup as _TaskGroup
from sparkflow.definitions.taskgroup import task_group as _task_group
from sparkflow.exceptions import DagDefinitionError, UnsupportedArgumentWarning
from sparkflow.operators.python import task as _task

# Airflow DAG arguments with no effect in sparkflow.
UNSUPPORTED_DAG_ARGS = frozenset({
    "sla_miss_callback", "access_control", "jinja_environment_kwargs", "orientation", "default_view",
    "dag_display_name", "auto_register", "fail_stop", "fail_fast", "max_consecutive_failed_dag_runs",
    "template_undefined", "full_filepath", "on_skipped_callback", "deadline", "disable_bundle_versioning",
    "has_on_success_callback", "has_on_failure_callback", "timezone",
})
# Airflow task arguments with no effect in sparkflow.
UNSUPPORTED_TASK_ARGS = frozenset({
    "sla", "executor_config", "resources", "run_as_user", "on_skipped_callback", "task_display_name",
    "map_index_template",
    "executor", "doc_json", "doc_yaml", "doc_rst", "wait_for_past_depends_before_skipping",
    "ignore_first_depends_on_past", "allow_nested_operators", "logger_name", "pre_execute", "post_execute",
})
# Accepted and dropped without a word: they change nothing in sparkflow.
HARMLESS_TASK_ARGS = frozenset({"provide_context"})
TRIGGER_RULE_ALIASES = {"dummy": "always", "none_failed_or_skipped": "none_failed_min_one_success"}
_UNSET: Any = object()


def warn_unsupported(argument: str, owner: str) -> None:
    """Warn (once per DAG file, via the loader) that ``argument`` of ``owner`` is ignored."""
    location = caller_location()
    warnings.warn(UnsupportedArgumentWarning(argument, owner, location.lineno if location else None), stacklevel=3)


def resolve_params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Airflow ``Param(default, ...)`` values become their default (sparkflow params are plain values)."""
    if params is None:
        return None
    return {key: getattr(value, "value", value) if _is_param(value) else value for key, value in params.items()}


def _is_param(value: Any) -> bool:
    return getattr(type(value), "__airflow_param__", False) is True


def translate_task_kwargs(kwargs: dict[str, Any], owner: str) -> dict[str, Any]:
    """Airflow task arguments -> sparkflow's (see the module docstring)."""
    out = dict(kwargs)
    for name in HARMLESS_TASK_ARGS & out.keys():
        del out[name]
    task_concurrency = out.pop("task_concurrency", None)  # Airflow 2's name of max_active_tis_per_dag
    if task_concurrency is not None:
        out.setdefault("max_active_tis_per_dag", task_concurrency)
    for name in sorted(UNSUPPORTED_TASK_ARGS & out.keys()):
        del out[name]
        warn_unsupported(name, owner)
    rule = out.get("trigger_rule")
    if isinstance(rule, str) and str(rule) in TRIGGER_RULE_ALIASES:
        out["trigger_rule"] = TRIGGER_RULE_ALIASES[str(rule)]
    if "params" in out:
        out["params"] = resolve_params(out["params"])
    if isinstance(out.get("default_args"), Mapping):
        out["default_args"] = translate_default_args(out["default_args"], owner)
    return out


def translate_default_args(default_args: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """default_args hold task arguments: the same translation, keys for other operators left alone."""
    return translate_task_kwargs(dict(default_args), f"{owner} default_args")


def translate_dag_kwargs(dag_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Airflow DAG arguments -> sparkflow's (see the module docstring)."""
    owner = f"DAG '{dag_id}'"
    out = dict(kwargs)
    schedule = out.pop("schedule", _UNSET)
    for old in ("schedule_interval", "timetable"):
        value = out.pop(old, _UNSET)
        if value is _UNSET:
            continue
        if schedule is not _UNSET:
            raise DagDefinitionError(
                f"{owner}: give only one of schedule, schedule_interval and timetable (got schedule and {old})",
                dag_id=dag_id,
            )
        schedule = value
    if schedule is not _UNSET:
        out["schedule"] = schedule
    concurrency = out.pop("concurrency", _UNSET)
    if concurrency is not _UNSET and concurrency:  # Airflow 2: a given concurrency wins over max_active_tasks
        out["max_active_tasks"] = concurrency
    for name in sorted(UNSUPPORTED_DAG_ARGS & out.keys()):
        del out[name]
        warn_unsupported(name, owner)
    if "params" in out:
        out["params"] = resolve_params(out["params"])
    if isinstance(out.get("default_args"), Mapping):
        out["default_args"] = translate_default_args(out["default_args"], owner)
    return out


class DAG(_DAG):
    """sparkflow's DAG, constructed from Airflow's arguments."""

    def __init__(self, dag_id: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(dag_id, *args, **translate_dag_kwargs(dag_id, kwargs))


def dag(dag_id: Any = None, **dag_kwargs: Any) -> Any:
    """Airflow's ``@dag`` / ``@dag(...)`` with Airflow's arguments."""
    if callable(dag_id):  # bare @dag
        return dag()(dag_id)

    def decorator(func: Callable[..., Any]) -> Any:
        name = dag_id or func.__name__
        return _dag(name, **translate_dag_kwargs(name, dag_kwargs))(func)

    return decorator


class TaskGroup(_TaskGroup):
    """sparkflow's TaskGroup; its ``default_args`` get the same translation as a DAG's."""

    def __init__(self, group_id: str, *args: Any, **kwargs: Any) -> None:
        if isinstance(kwargs.get("default_args"), Mapping):
            kwargs["default_args"] = translate_default_args(kwargs["default_args"], f"TaskGroup '{group_id}'")
        super().__init__(group_id, *args, **kwargs)


def task_group(python_callable: Callable[..., Any] | None = None, **group_kwargs: Any) -> Any:
    """Airflow's ``@task_group`` / ``@task_group(...)``, its ``default_args`` translated."""
    if python_callable is None:  # @task_group(...)
        return lambda func: task_group(func, **group_kwargs)
    if isinstance(group_kwargs.get("default_args"), Mapping):
        owner = f"@task_group {group_kwargs.get('group_id') or python_callable.__name__}"
        group_kwargs["default_args"] = translate_default_args(group_kwargs["default_args"], owner)
    return _task_group(python_callable, **group_kwargs)


class AirflowArguments:
    """Put in front of a sparkflow operator class: translates Airflow's constructor arguments, nothing else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        owner = f"task '{kwargs.get('task_id', '?')}'"
        super().__init__(*args, **translate_task_kwargs(kwargs, owner))  # type: ignore[call-arg]


class BaseOperator(AirflowArguments, _BaseOperator):
    """What Airflow DAG files subclass for their own operators."""


_wrapped: dict[type, type] = {}


def airflow_operator(cls: type) -> type:
    """sparkflow operator class -> the same class taking Airflow's arguments (same name, cached)."""
    if issubclass(cls, AirflowArguments) or not issubclass(cls, _BaseOperator):
        return cls
    if cls not in _wrapped:
        _wrapped[cls] = type(cls.__name__, (AirflowArguments, cls), {
            "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__,
        })
    return _wrapped[cls]


class _AirflowTaskDecorator:
    """``@task`` and its variants with Airflow's task arguments; unknown variants name themselves."""

    _VARIANTS = ("python", "branch", "short_circuit", "bash", "sensor", "virtualenv", "external_python",
                 "branch_virtualenv", "branch_external_python", "pyspark")

    def __call__(self, python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        return self._variant("python")(python_callable, **kwargs)

    def _variant(self, name: str) -> Callable[..., Any]:
        real = getattr(_task, name)

        def decorate(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
            if python_callable is None:  # @task(...): the task is named once the function is known
                return lambda func: decorate(func, **kwargs)
            owner = f"@task {kwargs.get('task_id') or getattr(python_callable, '__name__', python_callable)}"
            return real(python_callable, **translate_task_kwargs(kwargs, owner))

        return decorate

    def __getattr__(self, name: str) -> Any:
        if name in self._VARIANTS:
            return self._variant(name)
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"@task.{name} is not provided by sparkflow's Airflow compatibility layer; supported: "
            f"@task, {', '.join('@task.' + v for v in self._VARIANTS)}"
        )


task = _AirflowTaskDecorator()
