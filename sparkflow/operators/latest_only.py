"""LatestOnlyOperator: downstream tasks run only in the most recent scheduled run (Airflow's semantics)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sparkflow.definitions.context import Context, utcnow
from sparkflow.definitions.schedule import DataInterval
from sparkflow.operators.branch import BaseBranchOperator

# "No limit" for finding the interval after a run's: a cron's next fire time, not whether it has passed.
_FAR_FUTURE = datetime.max.replace(tzinfo=UTC) - timedelta(days=400)


class LatestOnlyOperator(BaseBranchOperator):
    """Skips its direct downstream tasks unless now lies in the interval after this run's, i.e. this is the
    latest run the schedule has made; a manually triggered run, or a DAG without a periodic schedule, always
    proceeds."""

    ui_color = "#e9ffdb"

    def choose_branch(self, context: Context) -> Any:
        everything = sorted(self.downstream_task_ids)
        run = context["dag_run"]
        if getattr(run, "external_trigger", False) or getattr(run, "run_type", "") == "manual":
            self.log.info("Externally triggered DAG run: allowing execution to proceed.")
            return everything
        dag = context["dag"]
        start, end = context["data_interval_start"], context["data_interval_end"]
        following = dag.timetable.next_interval(DataInterval(start, end), dag.start_date, _FAR_FUTURE, True)
        if following is None:
            self.log.info("No next schedule after this run's: allowing execution to proceed.")
            return everything
        now = utcnow()
        self.log.info("Checking latest only with left_window: %s right_window: %s now: %s",
                      following.start, following.end, now)
        if not following.start < now <= following.end:
            self.log.info("Not latest execution, skipping downstream.")
            return []
        self.log.info("Latest, allowing execution to proceed.")
        return everything
