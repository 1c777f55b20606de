"""TriggerDagRunOperator: start a run of another DAG, optionally wait for it (Airflow's semantics).

The run is created through the task's ``ti`` handle (the runtime writes it to the metastore from the target's
serialized DAG); this module never touches storage.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context, utcnow
from sparkflow.exceptions import SkipTask, TaskFailure

XCOM_RUN_ID = "trigger_run_id"
XCOM_LOGICAL_DATE_ISO = "trigger_logical_date_iso"


class DagRunAlreadyExists(TaskFailure):
    """The triggered DAG already has a run with that run id or logical date (and reset_dag_run is off)."""


class TriggerDagRunOperator(BaseOperator):
    """Creates a manual run of ``trigger_dag_id`` with ``conf`` at ``logical_date`` (default: now) and run id
    ``trigger_run_id`` (default: ``manual__<logical date>``). A clash with an existing run fails the task, skips
    it (``skip_when_already_exists``) or clears that run to run again (``reset_dag_run``). With
    ``wait_for_completion`` it checks the run every ``poke_interval`` seconds until it reaches one of
    ``allowed_states`` (success) or ``failed_states`` (failure). Pushes XComs ``trigger_run_id`` and
    ``trigger_logical_date_iso``."""

    template_fields = ("trigger_dag_id", "trigger_run_id", "logical_date", "conf")
    ui_color = "#ffefeb"

    def __init__(
        self,
        *,
        trigger_dag_id: str,
        trigger_run_id: str | None = None,
        conf: dict[str, Any] | None = None,
        logical_date: str | datetime | None = None,
        execution_date: str | datetime | None = None,
        reset_dag_run: bool = False,
        wait_for_completion: bool = False,
        poke_interval: float = 60,
        allowed_states: Iterable[str] | None = None,
        failed_states: Iterable[str] | None = None,
        skip_when_already_exists: bool = False,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.trigger_dag_id = trigger_dag_id
        self.trigger_run_id = trigger_run_id
        self.conf = conf
        self.logical_date = logical_date if logical_date is not None else execution_date
        self.reset_dag_run = reset_dag_run
        self.wait_for_completion = wait_for_completion
        self.poke_interval = float(poke_interval)
        self.allowed_states = [str(s) for s in (allowed_states or ["success"])]
        self.failed_states = [str(s) for s in (failed_states if failed_states is not None else ["failed"])]
        self.skip_when_already_exists = skip_when_already_exists
        self.deferrable = deferrable  # no triggerer: waiting happens in the task's slot either way
        if not isinstance(trigger_dag_id, str) or not trigger_dag_id:
            raise self._error(f"trigger_dag_id must be a DAG id, got {trigger_dag_id!r}")
        if conf is not None and not isinstance(conf, dict):
            raise self._error(f"conf must be a dict (the triggered run's conf), got {type(conf).__name__}")
        overlap = set(self.allowed_states) & set(self.failed_states)
        if overlap:
            raise self._error(f"states {sorted(overlap)} are both allowed and failed; keep each in one list")

    def _logical_date(self) -> datetime:
        value = self.logical_date
        if value is None:
            return utcnow()
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise TaskFailure(f"task '{self.task_id}': logical_date {value!r} is not an ISO datetime like "
                                  "2024-01-01T00:00:00+00:00") from None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    def execute(self, context: Context) -> Any:
        ti = context["ti"]
        logical_date = self._logical_date()
        run_id = self.trigger_run_id or f"manual__{logical_date.isoformat()}"  # Airflow's manual run id
        triggered = ti.trigger_dag_run(self.trigger_dag_id, run_id, logical_date, self.conf, self.reset_dag_run)
        if triggered.reset:
            self.log.info("Cleared DAG '%s' run '%s' to run again", self.trigger_dag_id, triggered.run_id)
        elif not triggered.created:
            message = (f"DAG '{self.trigger_dag_id}' already has a run at {triggered.logical_date.isoformat()} "
                       f"with run id '{triggered.run_id}'")
            if self.skip_when_already_exists:
                raise SkipTask(message + "; skip_when_already_exists is set")
            raise DagRunAlreadyExists(message + "; set reset_dag_run=True to run it again, or give another "
                                      "trigger_run_id / logical_date")
        else:
            self.log.info("Triggered DAG '%s' run '%s'", self.trigger_dag_id, triggered.run_id)
        ti.xcom_push(XCOM_LOGICAL_DATE_ISO, triggered.logical_date.isoformat())
        ti.xcom_push(XCOM_RUN_ID, triggered.run_id)
        if self.wait_for_completion:
            self._wait(ti, triggered.run_id)
        return None

    def _wait(self, ti: Any, run_id: str) -> None:
        while True:
            state = ti.dag_run_state(self.trigger_dag_id, run_id)
            if state in self.failed_states:
                raise TaskFailure(f"DAG '{self.trigger_dag_id}' run '{run_id}' ended {state}, one of failed_states "
                                  f"{self.failed_states}")
            if state in self.allowed_states:
                self.log.info("DAG '%s' run '%s' finished with allowed state %s", self.trigger_dag_id, run_id, state)
                return
            self.log.info("Waiting for DAG '%s' run '%s' (%s) to reach %s ...", self.trigger_dag_id, run_id, state,
                          self.allowed_states)
            time.sleep(self.poke_interval)
