"""scheduler.callbacks: DAG callbacks (and a lost try's task callbacks) run off the scheduler loop, one at a time,
each waited for at most its time limit, so a hanging callback never stalls scheduling."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sparkflow.definitions.loader import collect_dags
from sparkflow.executors.factory import make_executor
from sparkflow.metastore import queries
from sparkflow.scheduler.callbacks import CallbackRunner
from sparkflow.scheduler.loop import SchedulerLoop
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.state import RunState
from tests.helpers import NOW, Clock


def test_submit_returns_at_once_and_a_hanging_callback_does_not_hold_up_the_next() -> None:
    runner = CallbackRunner(time_limit=0.2)
    release, calls = threading.Event(), []
    runner.submit("hangs", release.wait)
    runner.submit("raises", lambda: 1 / 0)  # logged, nothing more
    runner.submit("records", lambda: calls.append("ran"))
    assert runner.drain(timeout=30)
    assert calls == ["ran"] and not release.is_set()  # the first still waits: it was left to finish on its own
    release.set()


def test_a_hanging_dag_callback_does_not_stall_scheduling(settings, metastore, write_dag, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marks = tmp_path / "marks.txt"
    path = write_dag("hanging", f"""
        import time
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator

        def hang(context):
            with open({str(marks)!r}, "a") as fh:
                fh.write("callback starts\\n")
            time.sleep(60)
            with open({str(marks)!r}, "a") as fh:
                fh.write("callback ends\\n")

        with DAG("hanging", start_date=datetime(2024, 1, 1), on_success_callback=hang) as dag:
            EmptyOperator(task_id="a")

        with DAG("next", start_date=datetime(2024, 1, 1)) as other:
            EmptyOperator(task_id="b")
    """)
    bag = collect_dags(path.parent, only_file=path)
    metastore.dags.sync_dags(bag.dags.values(), [], [str(path)])
    executor = make_executor(settings, metastore, bag.dags.get, "sequential")
    loop = SchedulerLoop(metastore, executor, bag.dags.get, clock=Clock(NOW), log_folder=settings.resolved_log_folder,
                         callback_time_limit=120)
    first = trigger_dag(metastore, bag.dags["hanging"], NOW)
    while queries.get_run(metastore.db, "hanging", first.run_id).state is not RunState.SUCCESS:
        loop.tick()
    second = trigger_dag(metastore, bag.dags["next"], NOW)
    while queries.get_run(metastore.db, "next", second.run_id).state is not RunState.SUCCESS:
        loop.tick()  # the first run's callback still sleeps meanwhile
    assert not loop.callbacks.drain(timeout=0)  # it does
    deadline = time.monotonic() + 30
    while not marks.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marks.read_text() == "callback starts\n"
