"""Task semantics on top of the planner: pools, depends_on_past, clear and mark (audited), lost task processes and
queued tasks a dead scheduler never started."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sparkflow.cli import main
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.loader import collect_dags
from sparkflow.exceptions import DagDefinitionError
from sparkflow.executors.base import ExecutorEvent, Workload
from sparkflow.executors.factory import make_executor
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.runtime.task_runner import run_try
from sparkflow.scheduler import interventions
from sparkflow.scheduler.loop import SchedulerLoop
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.state import RunState, TaskState
from tests.helpers import NOW, Clock, run_dag, states


class HoldingExecutor:
    """Accepts workloads and never runs them: lets a test look at what the loop queued."""

    name = "holding"

    def __init__(self, slots: int = 100) -> None:
        self.slots = slots
        self.queued: list[Workload] = []

    def start(self) -> None: ...
    def open_slots(self) -> int: return self.slots - len(self.queued)
    def queue(self, workload: Workload) -> None: self.queued.append(workload)
    def sync(self) -> list[ExecutorEvent]: return []
    def running(self) -> set[TIKey]: return {w.key for w in self.queued}
    def in_flight(self) -> bool: return bool(self.queued)
    def wait(self, timeout: float) -> None: ...
    def cleanup_stuck_queued_tasks(self, keys: set[TIKey]) -> None:
        self.queued = [w for w in self.queued if w.key not in keys]
    def end(self, kill: bool = False, grace: float | None = None) -> None: ...


def load(path: Path, metastore) -> dict:
    bag = collect_dags(path.parent, only_file=path)
    assert not bag.import_errors, bag.import_errors
    metastore.dags.sync_dags(bag.dags.values(), [], [str(path)])
    return bag.dags


def test_pool_slots_limit_what_is_queued(settings, metastore, write_dag, capsys) -> None:
    path = write_dag("pooled", """
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator

        with DAG("pooled", start_date=datetime(2024, 1, 1)) as dag:
            for i in range(4):
                EmptyOperator(task_id=f"t{i}", pool="spark", priority_weight=i)
            EmptyOperator(task_id="big", pool="spark", pool_slots=2)
            EmptyOperator(task_id="free")
    """)
    dags = load(path, metastore)
    trigger_dag(metastore, dags["pooled"], NOW)
    executor = HoldingExecutor()
    loop = SchedulerLoop(metastore, executor, dags.get, clock=Clock(NOW))
    loop.tick()
    assert [w.key.task_id for w in executor.queued] == ["free"]  # pool 'spark' does not exist yet: tasks wait
    assert main(["pools", "set", "spark", "1", "--description", "one Spark app at a time"]) == 0
    loop.tick()
    assert [w.key.task_id for w in executor.queued] == ["free", "t3"]  # highest priority first, one slot
    loop.tick()
    assert len(executor.queued) == 2
    assert main(["pools", "set", "spark", "3"]) == 0
    loop.tick()
    assert [w.key.task_id for w in executor.queued] == ["free", "t3", "t2", "t1"]  # big needs 2, only 0 open
    capsys.readouterr()
    assert main(["pools", "list", "-o", "json"]) == 0
    pools = {p["pool"]: p for p in json.loads(capsys.readouterr().out)}
    assert pools["spark"]["queued_slots"] == 3 and pools["spark"]["open_slots"] == 0
    assert pools["default_pool"]["slots"] == 128 and pools["default_pool"]["queued_slots"] == 1
    assert main(["pools", "set", "spark", "many"]) == 2
    assert "SLOTS 'many' is not a whole number" in capsys.readouterr().err
    assert main(["pools", "delete", "default_pool"]) == 2
    assert main(["pools", "delete", "spark"]) == 0 and main(["pools", "delete", "spark"]) == 2


def test_depends_on_past_waits_for_the_previous_run(settings, metastore, write_dag, tmp_path) -> None:
    flag = tmp_path / "fail"
    flag.write_text("")
    path = write_dag("dop", f"""
        from datetime import datetime
        from sparkflow import DAG, BashOperator

        with DAG("dop", start_date=datetime(2024, 1, 1), schedule="@daily") as dag:
            BashOperator(task_id="load", bash_command="test ! -e {flag}", depends_on_past=True)
    """)
    dags = load(path, metastore)
    dag = dags["dop"]
    clock = Clock(NOW)
    first = trigger_dag(metastore, dag, NOW, logical_date=NOW - timedelta(days=1))
    second = trigger_dag(metastore, dag, NOW, logical_date=NOW)
    loop = SchedulerLoop(metastore, make_executor(settings, metastore, dags.get, "sequential", clock=clock),
                         dags.get, clock=clock)
    for _ in range(10):
        loop.tick()
    assert states(metastore, first) == {"load": "failed"}
    assert states(metastore, second) == {"load": "none"}  # waits: the previous run's instance failed
    flag.unlink()
    interventions.mark(metastore, TIKey("dop", first.run_id, "load"), TaskState.SUCCESS)
    for _ in range(10):
        loop.tick()
    assert states(metastore, second) == {"load": "success"}


def test_clear_resets_failed_tasks_keeps_tries_and_is_audited(settings, metastore, write_dag, tmp_path,
                                                              capsys) -> None:
    flag = tmp_path / "fail"
    flag.write_text("")
    path = write_dag("clr", f"""
        from datetime import datetime
        from sparkflow import DAG, BashOperator, EmptyOperator

        with DAG("clr", start_date=datetime(2024, 1, 1)) as dag:
            extract = EmptyOperator(task_id="extract")
            load = BashOperator(task_id="load", bash_command="test ! -e {flag}", retries=1, retry_delay=1)
            report = EmptyOperator(task_id="report")
            extract >> load >> report
    """)
    run = run_dag(settings, metastore, path, "clr")
    assert states(metastore, run) == {"extract": "success", "load": "failed", "report": "upstream_failed"}
    assert main(["tasks", "clear", "clr", "-t", "^load$", "--downstream"]) == 2  # no terminal: needs --yes
    assert "Pass --yes to confirm" in capsys.readouterr().err
    assert main(["tasks", "clear", "clr", "-t", "(", "--yes"]) == 2
    assert "-t/--task-regex '(' is not a valid regular expression" in capsys.readouterr().err
    assert main(["tasks", "clear", "clr", "-t", "^load$", "--downstream", "--yes"]) == 0
    assert states(metastore, run) == {"extract": "success", "load": "none", "report": "none"}
    assert queries.get_run(metastore.db, "clr", run.run_id).state is RunState.QUEUED
    load_ti = queries.get_task_instance(metastore.db, TIKey("clr", run.run_id, "load"))
    assert load_ti.try_number == 2 and load_ti.max_tries == 3  # both tries kept; retries available again
    events = [e for e in queries.state_events(metastore.db, "clr", run.run_id) if e.event == "clear"]
    assert {(e.task_id, e.old_state, e.new_state) for e in events} == {
        ("load", "failed", "none"), ("report", "upstream_failed", "none"), (None, "failed", "queued"),
    }
    flag.unlink()
    bag = collect_dags(path.parent, only_file=path)
    clock = Clock(NOW)
    loop = SchedulerLoop(metastore, make_executor(settings, metastore, bag.dags.get, "sequential", clock=clock),
                         bag.dags.get, clock=clock)
    for _ in range(10):
        loop.tick()
    assert queries.get_run(metastore.db, "clr", run.run_id).state is RunState.SUCCESS
    tries = queries.task_tries(metastore.db, TIKey("clr", run.run_id, "load"))
    assert [t.try_number for t in tries] == [1, 2, 3] and tries[-1].state is TaskState.SUCCESS


def test_mark_failed_kills_the_running_task_process_group(settings, metastore, write_dag, capsys) -> None:
    path = write_dag("marked", """
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator

        with DAG("marked", start_date=datetime(2024, 1, 1)) as dag:
            EmptyOperator(task_id="long")
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["marked"], NOW)
    key = TIKey("marked", run.run_id, "long")
    store = metastore.store
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        assert store.set_task_state(key, TaskState.NONE, TaskState.SCHEDULED, "test")
        assert store.set_task_state(key, TaskState.SCHEDULED, TaskState.QUEUED, "test", try_number=1)
        assert store.set_task_state(key, TaskState.QUEUED, TaskState.RUNNING, "test", pid=proc.pid,
                                    hostname=socket.gethostname())
        assert main(["tasks", "mark", "marked", run.run_id, "long", "--state", "failed"]) == 0
        assert proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    out = capsys.readouterr().out
    assert "Marked long" in out and f"process group {proc.pid}" in out
    ti = queries.get_task_instance(metastore.db, key)
    assert ti.state is TaskState.FAILED
    (try_row,) = queries.task_tries(metastore.db, key)
    assert try_row.state is TaskState.FAILED
    marks = [e for e in queries.state_events(metastore.db, "marked", run.run_id) if e.event == "mark"]
    assert [(m.old_state, m.new_state, m.actor) for m in marks] == [("running", "failed", "cli")]
    assert main(["tasks", "mark", "marked", run.run_id, "long", "--state", "failed"]) == 2
    assert "already 'failed'" in capsys.readouterr().err


def test_running_task_whose_process_is_gone_is_retried_with_the_reason_in_its_log(settings, metastore,
                                                                                  write_dag, tmp_path) -> None:
    path = write_dag("lost", """
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator

        with DAG("lost", start_date=datetime(2024, 1, 1)) as dag:
            EmptyOperator(task_id="victim", retries=1)
            EmptyOperator(task_id="alive")
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["lost"], NOW)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer exists (SIGKILLed, OOM-killed: the same to us)
    store = metastore.store
    for task_id, pid, host in (("victim", dead.pid, socket.gethostname()), ("alive", 4242, "other-host")):
        key = TIKey("lost", run.run_id, task_id)
        store.set_task_state(key, TaskState.NONE, TaskState.SCHEDULED, "test")
        store.set_task_state(key, TaskState.SCHEDULED, TaskState.QUEUED, "test", try_number=1)
        store.set_task_state(key, TaskState.QUEUED, TaskState.RUNNING, "test", now=NOW, hostname=host, pid=pid,
                             log_path=str(tmp_path / f"{task_id}.log"))
    store.set_run_state(queries.get_run(metastore.db, "lost", run.run_id), RunState.RUNNING, "test")
    loop = SchedulerLoop(metastore, HoldingExecutor(), dags.get, clock=Clock(NOW + timedelta(seconds=1)))
    loop.tick()
    # On this host a dead pid is seen at once; on another host only the heartbeat tells.
    assert states(metastore, run) == {"victim": "up_for_retry", "alive": "running"}
    text = (tmp_path / "victim.log").read_text()
    assert f"pid {dead.pid}" in text and "is gone" in text and "marked the task up_for_retry" in text
    loop.clock = Clock(NOW + timedelta(seconds=61))
    loop.tick()
    assert states(metastore, run)["alive"] == "failed"
    assert "no heartbeat for 0:01:00" in (tmp_path / "alive.log").read_text()


def test_queued_task_nobody_started_is_scheduled_again_and_runs_once(settings, metastore, write_dag,
                                                                     tmp_path) -> None:
    out = tmp_path / "ran.txt"
    path = write_dag("orphan", f"""
        from datetime import datetime
        from sparkflow import DAG, BashOperator

        with DAG("orphan", start_date=datetime(2024, 1, 1)) as dag:
            BashOperator(task_id="once", bash_command="echo ran >> {out}")
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["orphan"], NOW)
    clock = Clock(NOW)
    crashed = SchedulerLoop(metastore, HoldingExecutor(), dags.get, clock=clock)
    crashed.tick()
    crashed.tick()
    assert states(metastore, run) == {"once": "queued"}  # queued, then the scheduler "died" before launching it
    fresh = SchedulerLoop(metastore, make_executor(settings, metastore, dags.get, "sequential", clock=clock),
                          dags.get, clock=clock)
    assert fresh.adopt_orphans(clock.now) == 1
    for _ in range(5):
        fresh.tick()
    assert queries.get_run(metastore.db, "orphan", run.run_id).state is RunState.SUCCESS
    assert out.read_text() == "ran\n"
    # The old scheduler's workload (try 1) can no longer start: the try moved on.
    assert run_try(settings, metastore, TIKey("orphan", run.run_id, "once"), 1).state is TaskState.SUCCESS
    assert out.read_text() == "ran\n"


def test_task_queued_timeout_takes_a_never_started_task_back_and_fails_it(settings, metastore, write_dag) -> None:
    """Airflow's task_queued_timeout: the executor held it queued too long (the Celery test has no worker)."""
    path = write_dag("stuck", """
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator

        with DAG("stuck", start_date=datetime(2024, 1, 1)) as dag:
            EmptyOperator(task_id="waits", retries=1)
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["stuck"], NOW)
    clock = Clock(NOW)
    executor = HoldingExecutor()
    loop = SchedulerLoop(metastore, executor, dags.get, clock=clock, task_queued_timeout=300)
    loop.tick()
    assert states(metastore, run) == {"waits": "queued"} and len(executor.queued) == 1
    clock.now = NOW + timedelta(seconds=299)
    loop.tick()
    assert states(metastore, run) == {"waits": "queued"}  # not yet
    clock.now = NOW + timedelta(seconds=299 + 75)  # the next look, a quarter of the timeout later
    loop.tick()
    assert states(metastore, run) == {"waits": "up_for_retry"} and executor.queued == []  # taken back, a try used
    ti = queries.get_task_instance(metastore.db, TIKey("stuck", run.run_id, "waits"))
    assert ti.error == ("queued for more than task_queued_timeout=300s without starting (is a worker free, and "
                        "consuming the executor?)")


class _NoSlots:
    """An executor with no free slot: the loop plans but never starts anything."""

    name = "none"

    def start(self) -> None: ...
    def open_slots(self) -> int: return 0
    def queue(self, workload) -> None: raise AssertionError("nothing may be queued")  # type: ignore[no-untyped-def]
    def sync(self) -> list: return []  # type: ignore[type-arg]
    def running(self) -> set: return set()  # type: ignore[type-arg]
    def in_flight(self) -> bool: return False
    def wait(self, timeout: float) -> None: ...
    def cleanup_stuck_queued_tasks(self, keys: set[TIKey]) -> None: ...
    def end(self, kill: bool = False, grace: float | None = None) -> None: ...


def test_the_loop_sees_a_change_made_from_outside_between_two_iterations(settings, metastore, write_dag) -> None:
    """The loop keeps each run's task instances between iterations and reads only what the audit events say
    changed (SQLite); a mark from the CLI between two iterations is planned on in the next one."""
    path = write_dag("outside", """
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator
        with DAG("outside", start_date=datetime(2024, 1, 1)) as dag:
            EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
    """)
    dag = collect_dags(path.parent, only_file=path).dags["outside"]
    metastore.dags.sync_dags([dag], [], [str(path)])
    run = trigger_dag(metastore, dag, datetime.now(UTC))
    loop = SchedulerLoop(metastore, _NoSlots(), {"outside": dag}.get)  # type: ignore[arg-type]
    loop.tick(run_filter=[run.id])
    loop.tick(run_filter=[run.id])
    key = TIKey("outside", run.run_id, "a")
    assert queries.get_task_instance(metastore.db, key).state is TaskState.SCHEDULED
    metastore.store.mark_task_state(key, TaskState.FAILED, "cli")
    loop.tick(run_filter=[run.id])
    assert queries.get_task_instance(metastore.db, key._replace(task_id="b")).state is TaskState.UPSTREAM_FAILED


def test_a_run_past_its_dagrun_timeout_fails_its_unfinished_tasks_are_skipped_and_the_running_one_killed(
        settings, metastore, write_dag, tmp_path) -> None:
    """Airflow's dagrun_timeout: measured from the run's start; the run fails, every unfinished task (queued,
    running, up_for_retry, not yet started) is skipped in one audited transaction, a running task's process
    group gets SIGTERM with the reason in its log, finished tasks keep their state, and the DAG's failure
    callback gets reason "timed_out"."""
    reasons = tmp_path / "reasons.txt"
    path = write_dag("bounded", f"""
        from datetime import datetime, timedelta
        from sparkflow import DAG, EmptyOperator

        def on_failure(context):
            with open({str(reasons)!r}, "a") as fh:
                fh.write(context["reason"] + "\\n")

        with DAG("bounded", start_date=datetime(2024, 1, 1), dagrun_timeout=timedelta(minutes=10),
                 on_failure_callback=on_failure) as dag:
            for task_id in ("done", "long", "waiting", "queued"):
                EmptyOperator(task_id=task_id, retries=1)
            dag.get_task("long") >> EmptyOperator(task_id="after")
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["bounded"], NOW)
    store = metastore.store
    store.set_run_state(queries.get_run(metastore.db, "bounded", run.run_id), RunState.RUNNING, "test", now=NOW)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    log_path = tmp_path / "long.log"
    path_to = {
        "done": [TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCESS],
        "long": [TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING],
        "waiting": [TaskState.SCHEDULED, TaskState.QUEUED, TaskState.RUNNING, TaskState.UP_FOR_RETRY],
        "queued": [TaskState.SCHEDULED, TaskState.QUEUED],
    }
    try:
        for task_id, moves in path_to.items():
            key, old = TIKey("bounded", run.run_id, task_id), TaskState.NONE
            for new in moves:
                extra = {"try_number": 1} if new is TaskState.QUEUED else {}
                if task_id == "long" and new is TaskState.RUNNING:
                    extra = {"pid": proc.pid, "hostname": socket.gethostname(), "log_path": str(log_path)}
                if new is TaskState.UP_FOR_RETRY:
                    extra = {"next_try_at": NOW + timedelta(hours=1)}
                assert store.set_task_state(key, old, new, "test", now=NOW, **extra), (task_id, new)
                old = new
        executor = HoldingExecutor()
        executor.queued.append(Workload(TIKey("bounded", run.run_id, "queued"), 1))  # what this executor holds
        loop = SchedulerLoop(metastore, executor, dags.get, heartbeat_timeout=3600,
                             clock=Clock(NOW + timedelta(minutes=10)))
        result = loop.tick()
        assert not result.finished_runs and proc.poll() is None  # ten minutes is not past the timeout yet
        loop.clock = Clock(NOW + timedelta(minutes=10, seconds=1))
        result = loop.tick()
        assert [r.run_id for r in result.finished_runs] == [run.run_id] and result.changed
        assert proc.wait(timeout=10) == -signal.SIGTERM
        assert loop.callbacks.drain(timeout=30)  # the DAG's callback runs off the loop
    finally:
        proc.kill()
        proc.wait()
    final = queries.get_run(metastore.db, "bounded", run.run_id)
    assert final.state is RunState.FAILED and final.end_date == NOW + timedelta(minutes=10, seconds=1)
    assert states(metastore, run) == {"done": "success", "long": "skipped", "waiting": "skipped",
                                      "queued": "skipped", "after": "skipped"}
    (long_try,) = queries.task_tries(metastore.db, TIKey("bounded", run.run_id, "long"))
    assert long_try.state is TaskState.SKIPPED and long_try.end_date is not None
    reason = "the run exceeded its DAG's dagrun_timeout of 0:10:00"
    timeouts = [(e.task_id, e.old_state, e.new_state, e.actor, e.detail)
                for e in queries.state_events(metastore.db, "bounded", run.run_id) if e.event == "timeout"]
    assert timeouts == [(None, "running", "failed", "scheduler", reason)] + [
        (task_id, old, "skipped", "scheduler", reason)
        for task_id, old in (("long", "running"), ("waiting", "up_for_retry"), ("queued", "queued"), ("after", "none"))
    ]
    assert f"{reason}; the scheduler skipped the task (process group {proc.pid} sent SIGTERM)" in log_path.read_text()
    assert reasons.read_text() == "timed_out\n"
    assert not loop.tick().finished_runs and loop.callbacks.drain(timeout=30)
    assert reasons.read_text() == "timed_out\n"  # once


def test_dagrun_timeout_is_a_positive_duration_or_seconds() -> None:
    assert DAG("seconds", start_date=NOW, dagrun_timeout=90).dagrun_timeout == timedelta(seconds=90)
    for bad in ("2h", 0, timedelta(minutes=-5)):
        with pytest.raises(DagDefinitionError, match=r"DAG 'bad': dagrun_timeout must be a positive timedelta, "
                                                     r"e\.g\. timedelta\(hours=2\), got "):
            DAG("bad", start_date=NOW, dagrun_timeout=bad)


def test_a_task_whose_process_died_gets_its_failure_or_retry_callback_from_the_scheduler(
        settings, metastore, write_dag, tmp_path) -> None:
    """Killed -9 or OOM-killed, a try records nothing itself; the scheduler that finds it dead calls the task's
    on_retry_callback / on_failure_callback with the try's context and the reason as the exception (Airflow's
    zombie callbacks). A callback that raises does not stop the loop."""
    calls = tmp_path / "calls.jsonl"
    path = write_dag("zombies", f"""
        import json
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator

        def record(context):
            with open({str(calls)!r}, "a") as fh:
                fh.write(json.dumps([context["ti"].task_id, context["ti"].try_number, context["ds"],
                                     str(context["exception"])]) + "\\n")

        def broken(context):
            raise RuntimeError("the alerting service is down")

        with DAG("zombies", start_date=datetime(2024, 1, 1)) as dag:
            EmptyOperator(task_id="retried", retries=1, on_retry_callback=record, on_failure_callback=broken)
            EmptyOperator(task_id="failed", on_failure_callback=[broken, record])
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["zombies"], NOW)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer exists, as after kill -9
    store = metastore.store
    for task_id in ("retried", "failed"):
        key = TIKey("zombies", run.run_id, task_id)
        store.set_task_state(key, TaskState.NONE, TaskState.SCHEDULED, "test")
        store.set_task_state(key, TaskState.SCHEDULED, TaskState.QUEUED, "test", try_number=1)
        store.set_task_state(key, TaskState.QUEUED, TaskState.RUNNING, "test", now=NOW, hostname=socket.gethostname(),
                             pid=dead.pid)
    store.set_run_state(queries.get_run(metastore.db, "zombies", run.run_id), RunState.RUNNING, "test")
    loop = SchedulerLoop(metastore, HoldingExecutor(), dags.get, clock=Clock(NOW + timedelta(seconds=1)),
                         log_folder=settings.resolved_log_folder)
    loop.tick()
    assert states(metastore, run) == {"retried": "up_for_retry", "failed": "failed"}
    assert loop.callbacks.drain(timeout=30)  # the callbacks run off the loop
    reason = f"the task process (pid {dead.pid} on {socket.gethostname()}) is gone without recording an outcome"
    ds = run.logical_date.strftime("%Y-%m-%d")
    assert sorted(json.loads(line) for line in calls.read_text().splitlines()) == [
        ["failed", 1, ds, reason], ["retried", 1, ds, reason],
    ]
