"""One exception root for everything sparkflow raises on purpose.

``UserError`` and its children are mistakes a user can fix: the CLI prints their message on one line and exits 2.
Everything else that escapes is a bug and is logged with its traceback.
"""

from __future__ import annotations


class SparkflowError(Exception):
    """Root of every error sparkflow raises deliberately."""

    exit_code = 1


class UserError(SparkflowError):
    """Bad input: the message names the thing, the bad value and the fix."""

    exit_code = 2


class ConfigError(UserError):
    """A setting has a bad value."""


class NotFound(UserError):
    """A DAG, run, task, connection ... that does not exist."""


class DagDefinitionError(UserError):
    """A DAG file defines something invalid (cycle, duplicate task id, bad cron, unknown trigger rule ...).

    ``lineno`` is the line in the DAG file where the offending DAG or task was written, when known.
    """

    def __init__(
        self, message: str, *, dag_id: str | None = None, task_id: str | None = None, lineno: int | None = None
    ) -> None:
        super().__init__(message)
        self.dag_id = dag_id
        self.task_id = task_id
        self.lineno = lineno


class InvalidConnection(UserError):
    """A connection definition or URI is invalid."""


class InvalidTransition(SparkflowError):
    """A state change the state machine does not allow (a programming error, never a user mistake)."""


class TaskFailure(SparkflowError):
    """A task try failed; the runner decides between retry and failure."""


class AirflowException(TaskFailure):
    """Airflow's generic task failure; kept under this name so DAG code written for Airflow works."""


class SkipTask(SparkflowError):
    """Raised inside a task to end it as ``skipped`` (Airflow: AirflowSkipException)."""


class FailTaskNoRetry(TaskFailure):
    """Raised inside a task to fail it without using the remaining retries (Airflow: AirflowFailException)."""


class TaskTimeout(TaskFailure):
    """The try ran longer than its execution_timeout."""


class SensorTimeout(FailTaskNoRetry):
    """A sensor did not see its condition within ``timeout`` (Airflow: AirflowSensorTimeout); no retry."""


class RescheduleTask(SparkflowError):
    """Raised by a sensor in reschedule mode: end this poke as ``up_for_reschedule`` and poke again after
    ``delay`` seconds, continuing the same try (Airflow: AirflowRescheduleException)."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"reschedule in {delay:g}s")
        self.delay = delay


class SparkSubmitFailed(AirflowException):
    """A Spark application failed (spark-submit exited non-zero, the driver ended FAILED ...); the message carries
    what failed and the last output lines. An AirflowException, so DAG code's ``except AirflowException`` sees it,
    as with the provider."""


class SparkflowWarning(UserWarning):
    """Root of the warnings sparkflow emits; the DAG loader collects them per file instead of letting them raise."""


class UnsupportedArgumentWarning(SparkflowWarning):
    """A DAG file passed an (Airflow) argument sparkflow cannot honour; it is ignored, never silently."""

    def __init__(self, argument: str, owner: str, lineno: int | None = None) -> None:
        super().__init__(f"{owner}: argument '{argument}' is not supported by sparkflow and is ignored")
        self.argument = argument
        self.owner = owner
        self.lineno = lineno
