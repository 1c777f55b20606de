"""Sensors: tasks that wait for a condition, poking it every ``poke_interval`` seconds until ``timeout``.

``mode="poke"`` holds its worker slot and sleeps between pokes; ``mode="reschedule"`` ends each poke as
``up_for_reschedule`` and gives the slot back until the next poke is due (the scheduler hands it back then). A
reschedule continues the same try, so it never uses a retry. A timeout fails the task without retries, or skips
it with ``soft_fail=True`` (Airflow's semantics).

Sensors read what they need through the context (``ti``, connections), never through the metastore.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import time as time_of_day
from typing import Any

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context, lookup_connection, utcnow
from sparkflow.exceptions import (
    FailTaskNoRetry,
    NotFound,
    RescheduleTask,
    SensorTimeout,
    SkipTask,
)
from sparkflow.operators.python import call_python, check_callable, determine_kwargs

MODES = ("poke", "reschedule")


@dataclass(frozen=True)
class PokeReturnValue:
    """Return it from poke() to finish with an XCom value (Airflow's PokeReturnValue)."""

    is_done: bool
    xcom_value: Any = None

    def __bool__(self) -> bool:
        return self.is_done


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class BaseSensorOperator(BaseOperator):
    """Subclasses implement :meth:`poke` returning True (or a PokeReturnValue) once the condition holds."""

    ui_color = "#e6f1f2"

    def __init__(
        self,
        *,
        poke_interval: timedelta | float = 60,
        timeout: timedelta | float = 60 * 60 * 24 * 7,
        soft_fail: bool = False,
        mode: str = "poke",
        exponential_backoff: bool = False,
        max_wait: timedelta | float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.poke_interval = _seconds(poke_interval)
        self.timeout = _seconds(timeout)
        self.soft_fail = soft_fail
        self.mode = mode
        self.exponential_backoff = exponential_backoff
        self.max_wait = _seconds(max_wait) if max_wait is not None else None
        if mode not in MODES:
            raise self._error(f"mode {mode!r} is not supported; use 'poke' or 'reschedule'")
        if self.poke_interval < 0 or self.timeout < 0:
            raise self._error(
                f"poke_interval ({self.poke_interval:g}s) and timeout ({self.timeout:g}s) must not be negative"
            )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        raise NotImplementedError(f"{type(self).__name__} must implement poke(context)")

    def next_poke_interval(self, pokes: int) -> float:
        """Seconds to wait after the ``pokes``-th unsuccessful poke: constant, or doubling with
        exponential_backoff (bounded by max_wait, else by timeout)."""
        if not self.exponential_backoff:
            return self.poke_interval
        delay = self.poke_interval * 2 ** min(max(pokes - 1, 0), 30)
        bound = self.max_wait if self.max_wait is not None else self.timeout
        return max(min(delay, bound), 0.0)

    def _pokes_so_far(self, elapsed: float) -> int:
        """Reschedule mode keeps no counter: infer the pokes from the time the try has been sensing."""
        if not self.exponential_backoff or self.poke_interval <= 0:
            return max(int(elapsed // max(self.poke_interval, 1e-9)), 0) + 1
        pokes, waited = 1, 0.0
        while waited + self.next_poke_interval(pokes) <= elapsed and pokes < 64:
            waited += self.next_poke_interval(pokes)
            pokes += 1
        return pokes

    def _timed_out(self, elapsed: float) -> None:
        message = (f"sensor '{self.task_id}' did not see its condition within its timeout of {self.timeout:g}s "
                   f"(sensing for {elapsed:.1f}s)")
        if self.soft_fail:
            raise SkipTask(message + "; soft_fail skips it")
        raise SensorTimeout(message)

    def execute(self, context: Context) -> Any:
        if self.mode == "reschedule":
            return self._execute_reschedule(context)
        started = time.monotonic()
        pokes = 0
        while True:
            pokes += 1
            result = self._poke(context)
            if result:
                return result.xcom_value if isinstance(result, PokeReturnValue) else None
            elapsed = time.monotonic() - started
            if elapsed >= self.timeout:
                self._timed_out(elapsed)
            wait = min(self.next_poke_interval(pokes), max(self.timeout - elapsed, 0.0))
            self.log.info("Condition not met yet; poking again in %.1fs", wait)
            time.sleep(wait)

    def _execute_reschedule(self, context: Context) -> Any:
        elapsed = context["ti"].try_elapsed_seconds()
        result = self._poke(context)
        if result:
            return result.xcom_value if isinstance(result, PokeReturnValue) else None
        if elapsed >= self.timeout:
            self._timed_out(elapsed)
        wait = min(self.next_poke_interval(self._pokes_so_far(elapsed)), max(self.timeout - elapsed, 0.0))
        self.log.info("Condition not met yet; giving the slot back, next poke in %.1fs", wait)
        raise RescheduleTask(wait)

    def _poke(self, context: Context) -> bool | PokeReturnValue:
        self.log.info("Poking %s", self._poke_description())
        try:
            return self.poke(context)
        except (SkipTask, FailTaskNoRetry, RescheduleTask):
            raise
        except Exception:
            if self.soft_fail:
                raise SkipTask(f"sensor '{self.task_id}' failed while poking and soft_fail is set") from None
            raise

    def _poke_description(self) -> str:
        return type(self).__name__


class PythonSensor(BaseSensorOperator):
    """Done when ``python_callable`` returns a truthy value (or a PokeReturnValue that is done)."""

    template_fields = ("templates_dict", "op_args", "op_kwargs")

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Iterable[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        templates_dict: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        check_callable(python_callable, kwargs.get("task_id"))
        super().__init__(**kwargs)
        self.python_callable = python_callable
        self.op_args = list(op_args or [])
        self.op_kwargs = dict(op_kwargs or {})
        self.templates_dict = templates_dict

    def poke(self, context: Context) -> bool | PokeReturnValue:
        result = call_python(self.python_callable, self.op_args, self.op_kwargs, self.templates_dict, context)
        return result if isinstance(result, PokeReturnValue) else bool(result)

    def _poke_description(self) -> str:
        return f"callable {getattr(self.python_callable, '__name__', self.python_callable)!r}"


class FileSensor(BaseSensorOperator):
    """Done when ``filepath`` (a glob, relative to the ``path`` extra of the fs connection) matches a file, or a
    directory holding files. ``recursive`` lets ``**`` match across directories."""

    template_fields = ("filepath",)

    def __init__(self, *, filepath: str, fs_conn_id: str = "fs_default", recursive: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filepath = filepath
        self.fs_conn_id = fs_conn_id
        self.recursive = recursive

    def _base_path(self) -> str:
        try:
            conn = lookup_connection(self.fs_conn_id)
        except NotFound:
            if self.fs_conn_id == "fs_default":
                return ""  # no fs_default defined: paths are taken as they are
            raise
        return str(conn.extra_dejson.get("path") or "")

    def full_path(self) -> str:
        return os.path.join(self._base_path(), self.filepath)

    def poke(self, context: Context) -> bool:
        for path in glob.glob(self.full_path(), recursive=self.recursive):
            if os.path.isfile(path):
                self.log.info("Found file %s", path)
                return True
            for _root, _dirs, files in os.walk(path):
                if files:
                    self.log.info("Found directory %s with files", path)
                    return True
        return False

    def _poke_description(self) -> str:
        return f"for file {self.full_path()}"


class ExternalTaskSensor(BaseSensorOperator):
    """Waits for a task (``external_task_id``), several (``external_task_ids``) or a whole run (neither) of
    another DAG at the same logical date, shifted by ``execution_delta`` or computed by ``execution_date_fn``.
    Done when all are in ``allowed_states``; fails at once when any is in ``failed_states``."""

    template_fields = ("external_dag_id", "external_task_id", "external_task_ids")

    def __init__(
        self,
        *,
        external_dag_id: str,
        external_task_id: str | None = None,
        external_task_ids: Sequence[str] | None = None,
        allowed_states: Iterable[str] | None = None,
        failed_states: Iterable[str] | None = None,
        execution_delta: timedelta | None = None,
        execution_date_fn: Callable[..., datetime] | None = None,
        check_existence: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if external_task_id is not None and external_task_ids is not None:
            raise self._error("pass external_task_id or external_task_ids, not both")
        if execution_delta is not None and execution_date_fn is not None:
            raise self._error("pass execution_delta or execution_date_fn, not both")
        self.external_dag_id = external_dag_id
        self.external_task_id = external_task_id
        self.external_task_ids = list(external_task_ids) if external_task_ids is not None else None
        self.allowed_states = [str(s) for s in (allowed_states or ["success"])]
        self.failed_states = [str(s) for s in (failed_states or [])]
        overlap = set(self.allowed_states) & set(self.failed_states)
        if overlap:
            raise self._error(f"states {sorted(overlap)} are both allowed and failed; keep each in one list")
        self.execution_delta = execution_delta
        self.execution_date_fn = execution_date_fn
        self.check_existence = check_existence

    def _task_ids(self) -> list[str] | None:
        if self.external_task_ids is not None:
            return self.external_task_ids
        return [self.external_task_id] if self.external_task_id is not None else None

    def target_date(self, context: Context) -> datetime:
        logical: datetime = context["logical_date"]
        if self.execution_delta is not None:
            return logical - self.execution_delta
        if self.execution_date_fn is not None:
            kwargs = determine_kwargs(self.execution_date_fn, (logical,), context)
            return self.execution_date_fn(logical, **kwargs)
        return logical

    def poke(self, context: Context) -> bool:
        when = self.target_date(context)
        task_ids = self._task_ids()
        states = context["ti"].get_external_states(self.external_dag_id, when, task_ids)
        what = f"DAG '{self.external_dag_id}'" + (f" tasks {task_ids}" if task_ids else " run")
        failed = [s for s in states if s in self.failed_states]
        if failed:
            message = f"{what} at {when.isoformat()} ended {failed[0]}, one of failed_states {self.failed_states}"
            if self.soft_fail:
                raise SkipTask(message)
            raise FailTaskNoRetry(message)
        expected = len(task_ids) if task_ids else max(len(states), 1)
        done = sum(s in self.allowed_states for s in states)
        self.log.info("%s at %s: %s of %s in %s", what, when.isoformat(), done, expected, self.allowed_states)
        return done >= expected and len(states) >= expected

    def _poke_description(self) -> str:
        return f"DAG '{self.external_dag_id}'"


class ExternalTaskMarker(BaseOperator):
    """Marks that ``external_task_id`` of ``external_dag_id`` at ``logical_date`` (a template, default this run's
    logical date) depends on this task: clearing this task with its downstream also clears that task and its
    downstream, following further markers up to ``recursion_depth`` DAGs deep (Airflow's recursive clear).
    Running it does nothing."""

    template_fields = ("external_dag_id", "external_task_id", "logical_date")
    ui_color = "#4db7db"

    def __init__(self, *, external_dag_id: str, external_task_id: str,
                 logical_date: str | datetime | None = "{{ logical_date.isoformat() }}",
                 execution_date: str | datetime | None = None, recursion_depth: int = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.external_dag_id = external_dag_id
        self.external_task_id = external_task_id
        chosen = execution_date if execution_date is not None else logical_date
        self.logical_date = chosen.isoformat() if isinstance(chosen, datetime) else chosen
        if not isinstance(self.logical_date, str):
            raise self._error(f"logical_date must be a datetime or a template string, got {chosen!r}")
        if not isinstance(recursion_depth, int) or recursion_depth <= 0:
            raise self._error(f"recursion_depth should be a positive integer, got {recursion_depth!r}")
        self.recursion_depth = recursion_depth

    def execute(self, context: Context) -> Any:
        return None


class DateTimeSensor(BaseSensorOperator):
    """Done once the wall clock reaches ``target_time`` (a datetime or a templated ISO string)."""

    template_fields = ("target_time",)

    def __init__(self, *, target_time: str | datetime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(target_time, (str, datetime)):
            raise self._error(f"target_time must be a datetime or an ISO string, got {type(target_time).__name__}")
        self.target_time = target_time

    def target(self) -> datetime:
        value = self.target_time
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise FailTaskNoRetry(
                    f"sensor '{self.task_id}': target_time {value!r} is not an ISO datetime like "
                    "2024-01-01T06:00:00+00:00"
                ) from None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    def poke(self, context: Context) -> bool:
        return utcnow() >= self.target()

    def _poke_description(self) -> str:
        return f"until {self.target_time}"


class TimeDeltaSensor(BaseSensorOperator):
    """Done once ``delta`` has passed after the end of the run's data interval."""

    def __init__(self, *, delta: timedelta, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(delta, timedelta):
            raise self._error(f"delta must be a timedelta, got {type(delta).__name__}")
        self.delta = delta

    def poke(self, context: Context) -> bool:
        end: datetime = context["data_interval_end"]
        return utcnow() >= end + self.delta


class TimeSensor(BaseSensorOperator):
    """Done once the time of day (in the DAG's time zone: its start_date's, else UTC) is past ``target_time``."""

    def __init__(self, *, target_time: time_of_day, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(target_time, time_of_day):
            raise self._error(f"target_time must be a datetime.time, got {type(target_time).__name__}")
        self.target_time = target_time

    def _zone(self) -> tzinfo:
        start = self.dag.start_date if self.dag is not None else None
        return start.tzinfo if start is not None and start.tzinfo is not None else UTC

    def poke(self, context: Context) -> bool:
        return utcnow().astimezone(self._zone()).time().replace(tzinfo=None) > self.target_time

    def _poke_description(self) -> str:
        return f"until {self.target_time.isoformat()}"


class _InsteadOfDeferring:
    """Airflow's deferrable sensors wait in the triggerer without a worker slot. sparkflow has no triggerer: they
    run in reschedule mode unless a mode is given, which frees the slot between pokes the same way."""

    def __init__(self, *, mode: str = "reschedule", deferrable: bool = True, start_from_trigger: bool = False,
                 end_from_trigger: bool = False, trigger_kwargs: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(mode=mode, **kwargs)  # type: ignore[call-arg]


class TimeSensorAsync(_InsteadOfDeferring, TimeSensor):
    pass


class TimeDeltaSensorAsync(_InsteadOfDeferring, TimeDeltaSensor):
    pass


class DateTimeSensorAsync(_InsteadOfDeferring, DateTimeSensor):
    pass


class DecoratedSensorOperator(PythonSensor):
    """The operator behind ``@task.sensor``: the function is the poke (True, or a PokeReturnValue whose
    xcom_value becomes the task's XCom)."""


__all__ = [
    "BaseSensorOperator",
    "DateTimeSensor",
    "DateTimeSensorAsync",
    "DecoratedSensorOperator",
    "ExternalTaskMarker",
    "ExternalTaskSensor",
    "FileSensor",
    "PokeReturnValue",
    "PythonSensor",
    "TimeDeltaSensor",
    "TimeDeltaSensorAsync",
    "TimeSensor",
    "TimeSensorAsync",
]
