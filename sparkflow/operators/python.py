"""PythonOperator, BranchPythonOperator, ShortCircuitOperator and the TaskFlow ``@task`` decorator."""

from __future__ import annotations

import functools
import importlib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import XCOM_RETURN_KEY, Context
from sparkflow.definitions.dag import current_dag
from sparkflow.definitions.mappedoperator import DictOfListsExpandInput, OperatorPartial
from sparkflow.definitions.taskgroup import current_task_group
from sparkflow.definitions.xcom_arg import XComArg
from sparkflow.exceptions import DagDefinitionError, TaskFailure
from sparkflow.operators.bash import BashOperator
from sparkflow.operators.branch import follow_branch


def determine_kwargs(func: Callable[..., Any], args: tuple[Any, ...], context: Mapping[str, Any]) -> dict[str, Any]:
    """Context entries the callable asks for: all of them with ``**kwargs``, else those named as parameters."""
    signature = inspect.signature(func)
    params = list(signature.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(context)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    taken = {p.name for p in positional[: len(args)]}
    return {p.name: context[p.name] for p in params if p.name in context and p.name not in taken}


def check_callable(python_callable: Any, task_id: str | None) -> None:
    if not callable(python_callable):
        raise DagDefinitionError(f"task '{task_id}': python_callable must be callable, got {python_callable!r}")


def call_python(
    python_callable: Callable[..., Any], op_args: list[Any], op_kwargs: Mapping[str, Any],
    templates_dict: dict[str, Any] | None, context: Mapping[str, Any],
) -> Any:
    """Call with op_args, op_kwargs and the context entries the callable's signature asks for (Airflow's rule)."""
    context = {**context, "templates_dict": templates_dict}
    kwargs = {**determine_kwargs(python_callable, tuple(op_args), context), **op_kwargs}
    return python_callable(*op_args, **kwargs)


class PythonOperator(BaseOperator):
    template_fields = ("templates_dict", "op_args", "op_kwargs")
    ui_color = "#ffefeb"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Iterable[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: dict[str, Any] | None = None,
        templates_exts: list[str] | None = None,
        show_return_value_in_logs: bool = True,
        **kwargs: Any,
    ) -> None:
        check_callable(python_callable, kwargs.get("task_id"))
        super().__init__(**kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = templates_dict
        self.templates_exts = templates_exts
        if templates_exts:  # Airflow: strings ending in these, anywhere in the template fields, are template files
            self.template_ext = list(templates_exts)  # type: ignore[misc]
        self.show_return_value_in_logs = show_return_value_in_logs

    def execute(self, context: Context) -> Any:
        result = call_python(self.python_callable, self.op_args, self.op_kwargs, self.templates_dict, context)
        if self.show_return_value_in_logs:
            self.log.info("Done. Returned value was: %s", result)
        return result


class BranchPythonOperator(PythonOperator):
    """The callable returns the task_id (or list of task_ids) to follow; other direct downstream tasks are skipped."""

    ui_color = "#ffe6cc"

    def execute(self, context: Context) -> Any:
        chosen = super().execute(context)
        follow_branch(self, context, chosen)
        return chosen


class ShortCircuitOperator(PythonOperator):
    """A falsy result skips downstream tasks: all of them (default), or only the direct ones when
    ``ignore_downstream_trigger_rules=False`` (then trigger rules decide further down)."""

    ui_color = "#ffe6cc"

    def __init__(self, *, ignore_downstream_trigger_rules: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules

    def execute(self, context: Context) -> Any:
        result = super().execute(context)
        if result:
            self.log.info("Condition is truthy; downstream tasks proceed")
            return result
        assert self.dag is not None
        targets = (
            self.dag.downstream_of(self.task_id)
            if self.ignore_downstream_trigger_rules
            else set(self.downstream_task_ids)
        )
        self.log.info("Condition is falsy; skipping %s", sorted(targets))
        if targets:
            context["ti"].skip(sorted(targets))
        return result


# -- TaskFlow ---------------------------------------------------------------------------------------------------


class DecoratedPythonOperator(PythonOperator):
    """The operator behind ``@task``: pushes a dict's items as separate XComs when ``multiple_outputs``."""

    def execute(self, context: Context) -> Any:
        result = super().execute(context)
        if self.multiple_outputs:
            if not isinstance(result, Mapping):
                raise TaskFailure(
                    f"task '{self.task_id}' has multiple_outputs=True but returned {type(result).__name__}; "
                    "return a dict with string keys"
                )
            for key, value in result.items():
                if not isinstance(key, str):
                    raise TaskFailure(f"task '{self.task_id}': multiple_outputs keys must be strings, got {key!r}")
                if key != XCOM_RETURN_KEY:
                    context["ti"].xcom_push(key, value)
        return result


class _TaskDecorator:
    """What ``@task`` returns: calling it inside a DAG creates a task and returns its output (an XComArg)."""

    def __init__(self, func: Callable[..., Any], operator_class: type[Any], kwargs: dict[str, Any]):
        self.function = func
        self.operator_class = operator_class
        self.kwargs = kwargs
        functools.update_wrapper(self, func)

    def override(self, **kwargs: Any) -> _TaskDecorator:
        return _TaskDecorator(self.function, self.operator_class, {**self.kwargs, **kwargs})

    def _unique_task_id(self, task_id: str) -> str:
        dag = self.kwargs.get("dag") or current_dag()
        group = self.kwargs.get("task_group") or current_task_group()
        full = group.child_id if group is not None and group.dag is dag else str  # the id the task will get
        if dag is None or full(task_id) not in dag.task_dict:
            return task_id
        n = 1
        while full(f"{task_id}__{n}") in dag.task_dict:
            n += 1
        return f"{task_id}__{n}"

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        options = dict(self.kwargs)
        multiple_outputs = options.pop("multiple_outputs", None)
        if multiple_outputs is None:
            multiple_outputs = _returns_mapping(self.function)
        task_id = self._unique_task_id(options.pop("task_id", None) or self.function.__name__)
        return dict(task_id=task_id, python_callable=self.function, op_args=args, op_kwargs=kwargs,
                    multiple_outputs=bool(multiple_outputs), **options)

    def __call__(self, *args: Any, **kwargs: Any) -> XComArg:
        group = current_task_group()
        if group is not None and any(g.expand_input is not None for g in group.lineage()):
            # Inside a mapped task group every task is mapped with the group (as many instances as it has).
            partial = OperatorPartial(self.operator_class, self._arguments(args, kwargs), mapped_field="op_kwargs")
            return XComArg(partial.build(DictOfListsExpandInput({})))
        return XComArg(self.operator_class(**self._arguments(args, kwargs)))

    # -- dynamic task mapping ---------------------------------------------------------------------------------
    def partial(self, **kwargs: Any) -> _TaskPartial:
        return _TaskPartial(self, kwargs)

    def expand(self, **mapped: Any) -> XComArg:
        return self.partial().expand(**mapped)

    def expand_kwargs(self, kwargs: Any) -> XComArg:
        return self.partial().expand_kwargs(kwargs)


class _SetupTeardownDecorator(_TaskDecorator):
    """``@setup`` / ``@teardown``: a TaskFlow task made a setup or a teardown when it is called."""

    def __init__(self, func: Callable[..., Any], kwargs: dict[str, Any], role: str,
                 on_failure_fail_dagrun: bool = False) -> None:
        super().__init__(func, DecoratedPythonOperator, kwargs)
        self.role = role
        self.on_failure_fail_dagrun = on_failure_fail_dagrun

    def override(self, **kwargs: Any) -> _TaskDecorator:
        return _SetupTeardownDecorator(self.function, {**self.kwargs, **kwargs}, self.role,
                                       self.on_failure_fail_dagrun)

    def __call__(self, *args: Any, **kwargs: Any) -> XComArg:
        output = super().__call__(*args, **kwargs)
        if self.role == "setup":
            return output.as_setup()
        return output.as_teardown(on_failure_fail_dagrun=self.on_failure_fail_dagrun)


def setup(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """``@setup``: the task creates what the work needs (a cluster, a temp table)."""
    if python_callable is not None and callable(python_callable):
        return _SetupTeardownDecorator(python_callable, kwargs, "setup")
    return lambda func: _SetupTeardownDecorator(func, kwargs, "setup")


def teardown(python_callable: Callable[..., Any] | None = None, *, on_failure_fail_dagrun: bool = False,
             **kwargs: Any) -> Any:
    """``@teardown``: runs once the work is done, even when it failed; set its setups with
    ``.as_teardown(setups=...)`` or ``setup_task >> teardown_task``."""
    if python_callable is not None and callable(python_callable):
        return _SetupTeardownDecorator(python_callable, kwargs, "teardown", on_failure_fail_dagrun)
    return lambda func: _SetupTeardownDecorator(func, kwargs, "teardown", on_failure_fail_dagrun)


class _TaskPartial:
    """``@task`` function ``.partial(fixed=...)``: mapped values go to the function's keyword arguments."""

    def __init__(self, decorator: _TaskDecorator, fixed: dict[str, Any]) -> None:
        self.decorator = decorator
        self.fixed = fixed

    def _partial(self) -> OperatorPartial:
        arguments = self.decorator._arguments((), self.fixed)
        return OperatorPartial(self.decorator.operator_class, arguments, mapped_field="op_kwargs")

    def expand(self, **mapped: Any) -> XComArg:
        return XComArg(self._partial().expand(**mapped))

    def expand_kwargs(self, kwargs: Any) -> XComArg:
        return XComArg(self._partial().expand_kwargs(kwargs))


def _returns_mapping(func: Callable[..., Any]) -> bool:
    """Airflow infers multiple_outputs from a dict/Mapping return annotation, also written as a string."""
    try:
        annotation = typing.get_type_hints(func).get("return")
    except Exception:  # unresolvable string annotations: fall back to reading them
        annotation = inspect.signature(func).return_annotation
    if isinstance(annotation, str):
        return annotation.replace("typing.", "").startswith(("dict", "Dict", "Mapping", "collections.abc.Mapping"))
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _decorate(operator_class: type[Any]) -> Callable[..., Any]:
    def decorator(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        if python_callable is not None and callable(python_callable):
            return _TaskDecorator(python_callable, operator_class, kwargs)
        return lambda func: _TaskDecorator(func, operator_class, kwargs)

    return decorator


class _BranchDecorated(DecoratedPythonOperator, BranchPythonOperator):
    pass


class _ShortCircuitDecorated(DecoratedPythonOperator, ShortCircuitOperator):
    pass


class _BashDecorated(BashOperator):
    """``@task.bash``: the function returns the bash command (rendered as a template), run as by BashOperator."""

    template_fields = (*BashOperator.template_fields, "op_args", "op_kwargs")  # type: ignore[assignment]

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Iterable[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(bash_command="", **kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})

    def execute(self, context: Context) -> Any:
        kwargs = {**determine_kwargs(self.python_callable, tuple(self.op_args), context), **self.op_kwargs}
        command = self.python_callable(*self.op_args, **kwargs)
        if not isinstance(command, str) or not command.strip():
            raise TaskFailure(
                f"task '{self.task_id}': a @task.bash function must return a non-empty bash command string, "
                f"got {command!r}"
            )
        self.bash_command = self.render_template(command, context)  # a .sh path is read as a template file
        return super().execute(context)


# Decorators whose operators live in modules that build on this one: their module is imported on first use (as
# sparkflow's top-level names are), so this module stays below them.
_VENV = "sparkflow.operators.python_virtualenv"
_LAZY_DECORATORS = {
    "sensor": "sparkflow.operators.sensors:DecoratedSensorOperator",
    "virtualenv": f"{_VENV}:DecoratedVirtualenvOperator",
    "external_python": f"{_VENV}:DecoratedExternalPythonOperator",
    "branch_virtualenv": f"{_VENV}:DecoratedBranchVirtualenvOperator",
    "branch_external_python": f"{_VENV}:DecoratedBranchExternalPythonOperator",
    "pyspark": "sparkflow.operators.pyspark:PySparkDecoratedOperator",
}


class _TaskNamespace:
    """``@task``, ``@task(...)``, ``@task.python``, ``@task.branch``, ``@task.short_circuit``, ``@task.bash``,
    and the variants of :data:`_LAZY_DECORATORS`."""

    def __init__(self) -> None:
        self.python = _decorate(DecoratedPythonOperator)
        self.branch = _decorate(_BranchDecorated)
        self.short_circuit = _decorate(_ShortCircuitDecorated)
        self.bash = _decorate(_BashDecorated)

    def __call__(self, python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        return self.python(python_callable, **kwargs)

    def __getattr__(self, name: str) -> Any:
        target = _LAZY_DECORATORS.get(name)
        if target is None:
            raise AttributeError(
                f"@task.{name} does not exist; known: @task, "
                + ", ".join(f"@task.{v}" for v in ["python", "branch", "short_circuit", "bash", *_LAZY_DECORATORS])
            )
        module, _, attr = target.partition(":")
        decorator = _decorate(getattr(importlib.import_module(module), attr))
        setattr(self, name, decorator)
        return decorator


task = _TaskNamespace()
