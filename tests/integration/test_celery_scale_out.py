"""CeleryExecutor scale-out for real: PostgreSQL metastore, Redis broker, `sparkflow worker` and `sparkflow scheduler`
processes. Two schedulers and two workers run a 200-task DAG with every task run exactly once; a worker killed with
SIGKILL mid-task loses nothing: the task is retried on the other worker and the run succeeds; a task marked failed
where no signal from the marker reaches it ends at its own next heartbeat."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from sparkflow.metastore import queries
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import TIKey
from sparkflow.state import RunState, TaskState
from tests.helpers import process_alive
from tests.integration.deployment import Deployment, wait_for

pytestmark = [pytest.mark.celery, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def deployment(tmp_path: Path, pg_server, redis_server):  # type: ignore[no-untyped-def]
    deploy = Deployment(tmp_path, pg_server, redis_server)
    result = deploy.cli("db", "init")
    assert result.returncode == 0, result.stderr
    yield deploy
    deploy.stop()


def run_state(db: Database, dag_id: str, run_id: str) -> RunState:
    return queries.get_run(db, dag_id, run_id).state


def test_two_schedulers_and_two_workers_run_200_tasks_exactly_once(deployment: Deployment, tmp_path: Path) -> None:
    out = tmp_path / "ran.txt"
    (deployment.dags / "wide.py").write_text(textwrap.dedent(f"""
        from datetime import datetime
        from sparkflow import DAG, BashOperator

        with DAG("wide", start_date=datetime(2024, 1, 1), schedule=None, max_active_tasks=64) as dag:
            def counted(task_id):
                return BashOperator(task_id=task_id, bash_command=f"echo {{task_id}} $SPARKFLOW_WORKER >> {out}")

            counted("start") >> [counted(f"t{{i:03d}}") for i in range(198)] >> counted("end")
    """))
    deployment.start_worker("w1", concurrency=4)
    deployment.start_worker("w2", concurrency=4)
    schedulers = [deployment.start_scheduler("s1"), deployment.start_scheduler("s2")]
    result = deployment.cli("trigger", "wide", "--run-id", "wide_run")
    assert result.returncode == 0, result.stderr
    db = Database(deployment.env["SPARKFLOW_DB_URL"])
    try:
        wait_for(lambda: run_state(db, "wide", "wide_run") not in (RunState.QUEUED, RunState.RUNNING), 240,
                 "the 200-task run", list(deployment.logs.values()))
        assert run_state(db, "wide", "wide_run") is RunState.SUCCESS, deployment.all_logs()
        lines = [line.split() for line in out.read_text().splitlines()]
        ran = Counter(task_id for task_id, _ in lines)
        assert len(ran) == 200 and set(ran.values()) == {1}, [t for t, n in ran.items() if n > 1]
        assert {worker.split("@")[0] for _, worker in lines} == {"w1", "w2"}  # both workers took tasks
        tis = queries.task_instances(db, "wide", "wide_run")
        assert {ti.state for ti in tis} == {TaskState.SUCCESS} and {ti.try_number for ti in tis} == {1}
        assert {ti.executor for ti in tis} == {"celery"}
        queued = [e for e in queries.state_events(db, "wide", "wide_run") if e.task_id and e.new_state == "queued"]
        assert len(queued) == 200  # no task was queued twice, by either scheduler
        assert all(proc.poll() is None for proc in schedulers), deployment.all_logs()  # both ran throughout
        for name in ("s1", "s2"):
            assert "Traceback" not in deployment.logs[name].read_text(), deployment.logs[name].read_text()
    finally:
        db.dispose()


def test_worker_killed_mid_task_is_retried_on_the_other_worker(deployment: Deployment, tmp_path: Path) -> None:
    out = tmp_path / "tries.txt"
    (deployment.dags / "victim.py").write_text(textwrap.dedent(f"""
        from datetime import datetime
        from sparkflow import DAG, BashOperator

        with DAG("victim", start_date=datetime(2024, 1, 1), schedule=None) as dag:
            BashOperator(
                task_id="long", retries=1, retry_delay=0,
                bash_command="echo start {{{{ ti.try_number }}}} $SPARKFLOW_WORKER >> {out}; "
                             "sleep {{{{ 60 if ti.try_number == 1 else 1 }}}}; "
                             "echo end {{{{ ti.try_number }}}} $SPARKFLOW_WORKER >> {out}",
            )
    """))
    workers = {"w1": deployment.start_worker("w1", concurrency=1), "w2": deployment.start_worker("w2", concurrency=1)}
    deployment.start_scheduler("s1")
    assert deployment.cli("trigger", "victim", "--run-id", "victim_run").returncode == 0
    db = Database(deployment.env["SPARKFLOW_DB_URL"])
    key = TIKey("victim", "victim_run", "long")
    try:
        wait_for(lambda: out.exists() and "start 1" in out.read_text(), 60, "the first try to start",
                 list(deployment.logs.values()))
        ti = queries.get_task_instance(db, key)
        assert ti.state is TaskState.RUNNING and ti.pid
        # The task process descends from the worker that runs it (via its fork server): kill -9 that worker.
        pids = {proc.pid: name for name, proc in workers.items()}
        ancestor = ti.pid
        while ancestor not in pids and ancestor > 1:
            ancestor = int(Path(f"/proc/{ancestor}/stat").read_text().rsplit(")", 1)[1].split()[1])
        victim = pids[ancestor]
        survivor = next(name for name in workers if name != victim)
        os.kill(ancestor, signal.SIGKILL)
        workers[victim].wait(timeout=10)

        wait_for(lambda: run_state(db, "victim", "victim_run") not in (RunState.QUEUED, RunState.RUNNING), 90,
                 "the run to finish after the retry", list(deployment.logs.values()))
        assert run_state(db, "victim", "victim_run") is RunState.SUCCESS, deployment.all_logs()
        lines = out.read_text().split("\n")
        assert lines[0].startswith(f"start 1 {victim}@")
        assert [line.split("@")[0] for line in lines[1:] if line] == [f"start 2 {survivor}", f"end 2 {survivor}"]
        tries = queries.task_tries(db, key)
        assert [t.state for t in tries] == [TaskState.UP_FOR_RETRY, TaskState.SUCCESS], tries
        assert tries[0].end_date <= tries[1].start_date  # never both at once
        first_log = deployment.cli("logs", "victim", "victim_run", "long", "--try", "1")
        assert first_log.returncode == 0 and "SIGTERM" in first_log.stdout, first_log.stdout  # worker-written log
        states = json.loads(deployment.cli("tasks", "states", "victim", "victim_run", "-o", "json").stdout)
        assert states[0]["state"] == "success" and states[0]["try_number"] == 2
    finally:
        db.dispose()


def test_a_task_marked_failed_from_another_host_ends_at_its_own_next_heartbeat(
    deployment: Deployment, tmp_path: Path
) -> None:
    """`tasks mark` signals task processes on its own host only; a task on a worker elsewhere ends itself when
    its heartbeat finds the new state, with what it started. The other host is simulated by rewriting the
    hostname the try recorded (one machine here), so that the mark cannot signal it."""
    sleeper = tmp_path / "sleep.pid"
    (deployment.dags / "remote.py").write_text(textwrap.dedent(f"""
        from datetime import datetime
        from sparkflow import DAG, BashOperator

        with DAG("remote", start_date=datetime(2024, 1, 1), schedule=None) as dag:
            BashOperator(task_id="long", bash_command="sleep 120 & echo $! > {sleeper}; wait")
    """))
    deployment.start_worker("w1", concurrency=1)
    deployment.start_scheduler("s1")
    assert deployment.cli("trigger", "remote", "--run-id", "remote_run").returncode == 0
    db = Database(deployment.env["SPARKFLOW_DB_URL"])
    key = TIKey("remote", "remote_run", "long")
    try:
        wait_for(lambda: sleeper.exists() and sleeper.read_text().strip() != "", 60, "the task to start",
                 list(deployment.logs.values()))
        sleep_pid = int(sleeper.read_text())
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE task_instance SET hostname = 'elsewhere.example' WHERE dag_id = 'remote'"))
        result = deployment.cli("tasks", "mark", "remote", "remote_run", "long", "--state", "failed")
        assert result.returncode == 0, result.stderr
        assert "no signal was sent from here: it runs on host elsewhere.example" in result.stderr, result.stderr
        wait_for(lambda: not process_alive(sleep_pid), 20, "the task's sleep to end", list(deployment.logs.values()))
        wait_for(lambda: run_state(db, "remote", "remote_run") is RunState.FAILED, 30, "the run to fail")
        assert queries.get_task_instance(db, key).state is TaskState.FAILED
        log = deployment.cli("logs", "remote", "remote_run", "long").stdout
        assert "This task instance was set to failed (try 1) from outside while it ran; ending this try" in log, log
    finally:
        db.dispose()


def test_a_worker_runs_tries_in_warm_processes_reused_and_replaced_by_the_local_executors_rules(
    tmp_path: Path, pg_server, redis_server  # type: ignore[no-untyped-def]
) -> None:
    """One worker slot, so the tries of a chain follow each other through the same warm processes: a process
    runs several tries (the pid each try recorded), is replaced after a try that left a thread running, and
    after max_tasks_per_child tries."""
    deployment = Deployment(tmp_path, pg_server, redis_server, SPARKFLOW_MAX_TASKS_PER_CHILD="4")
    try:
        assert deployment.cli("db", "init").returncode == 0
        (deployment.dags / "warm.py").write_text(textwrap.dedent("""
            import threading
            import time
            from datetime import datetime
            from sparkflow import DAG, PythonOperator, chain

            def noop():
                pass

            def leak():
                threading.Thread(target=time.sleep, args=(1,)).start()

            with DAG("warm", start_date=datetime(2024, 1, 1), schedule=None) as dag:
                chain(*[PythonOperator(task_id=name, python_callable=leak if name == "leak" else noop)
                        for name in ("a", "b", "leak", "c", "d", "e", "f", "g")])
        """))
        deployment.start_worker("w1", concurrency=1)
        deployment.start_scheduler("s1")
        assert deployment.cli("trigger", "warm", "--run-id", "warm_run").returncode == 0
        db = Database(deployment.env["SPARKFLOW_DB_URL"])
        try:
            wait_for(lambda: run_state(db, "warm", "warm_run") not in (RunState.QUEUED, RunState.RUNNING), 120,
                     "the chain", list(deployment.logs.values()))
            assert run_state(db, "warm", "warm_run") is RunState.SUCCESS, deployment.all_logs()
            pids = {ti.task_id: ti.pid for ti in queries.task_instances(db, "warm", "warm_run")}
            assert pids["a"] == pids["b"] == pids["leak"], pids  # one warm process, three tries
            assert pids["c"] == pids["d"] == pids["e"] == pids["f"] != pids["leak"], pids  # replaced: a thread left
            assert pids["g"] != pids["f"], pids  # replaced: max_tasks_per_child=4
            log = deployment.cli("logs", "warm", "warm_run", "leak").stdout
            assert "this task process is not reused: the task left 1 thread(s) running" in log, log
        finally:
            db.dispose()
    finally:
        deployment.stop()


def test_a_killed_try_on_a_worker_gets_a_fresh_process_and_the_next_tries_run_warm_again(
    tmp_path: Path, pg_server, redis_server  # type: ignore[no-untyped-def]
) -> None:
    """One worker slot: a try killed with SIGKILL inside its warm process is reported (the task is retried), its
    process is replaced by a fresh fork of the same fork server, and that one runs the next tries, warm again; a
    helper module edited meanwhile is seen by the retry (a replaced process holds no stale code either)."""
    out = tmp_path / "pids.txt"
    deployment = Deployment(tmp_path, pg_server, redis_server)
    try:
        assert deployment.cli("db", "init").returncode == 0
        (deployment.dags / "helper_value.py").write_text("VALUE = 'old'\n")
        (deployment.dags / "killed.py").write_text(textwrap.dedent(f"""
            import os
            import signal
            from datetime import datetime
            from pathlib import Path
            import helper_value
            from sparkflow import DAG, PythonOperator, chain

            def record(ti):
                with open({str(out)!r}, "a") as fh:
                    fh.write(f"{{ti.task_id}} {{ti.try_number}} {{os.getpid()}} {{os.getppid()}} "
                             f"{{helper_value.VALUE}}\\n")
                if ti.task_id == "victim" and ti.try_number == 1:
                    Path({str(deployment.dags / "helper_value.py")!r}).write_text("VALUE = 'new'\\n")
                    os.kill(os.getpid(), signal.SIGKILL)

            with DAG("killed", start_date=datetime(2024, 1, 1), schedule=None) as dag:
                chain(*[PythonOperator(task_id=name, python_callable=record, retries=1, retry_delay=0)
                        for name in ("a", "victim", "c", "d")])
        """))
        deployment.start_worker("w1", concurrency=1)
        deployment.start_scheduler("s1")
        assert deployment.cli("trigger", "killed", "--run-id", "killed_run").returncode == 0
        db = Database(deployment.env["SPARKFLOW_DB_URL"])
        try:
            wait_for(lambda: run_state(db, "killed", "killed_run") not in (RunState.QUEUED, RunState.RUNNING), 120,
                     "the chain", list(deployment.logs.values()))
            assert run_state(db, "killed", "killed_run") is RunState.SUCCESS, deployment.all_logs()
            rows = [line.split() for line in out.read_text().splitlines()]
            assert [(task, int(try_number)) for task, try_number, *_ in rows] == [
                ("a", 1), ("victim", 1), ("victim", 2), ("c", 1), ("d", 1)], rows
            pid = {(task, int(n)): int(p) for task, n, p, _, _ in rows}
            after = {pid[("victim", 2)], pid[("c", 1)], pid[("d", 1)]}
            assert pid[("victim", 1)] not in after  # killed: replaced, never handed another try
            # Warm again: a process runs several tries (not asserted try by try: the scheduler may hand the next
            # try over before the fork server has heard that the last one's process is free).
            assert len(after) < 3 or pid[("a", 1)] == pid[("victim", 1)], pid
            assert len({parent for *_, parent, _ in rows}) == 1  # all forked by the worker's one fork server
            assert [value for *_, value in rows] == ["old", "old", "new", "new", "new"]
            tries = queries.task_tries(db, TIKey("killed", "killed_run", "victim"))
            assert [t.state for t in tries] == [TaskState.UP_FOR_RETRY, TaskState.SUCCESS], tries
            first_log = deployment.cli("logs", "killed", "killed_run", "victim", "--try", "1").stdout
            assert "task process was killed by SIGKILL on worker w1@" in first_log, first_log
            assert deployment.procs["w1"].poll() is None  # the worker itself carried on
        finally:
            db.dispose()
    finally:
        deployment.stop()


def test_kill_9_of_the_scheduler_with_tasks_in_flight_on_celery_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, pg_server, redis_server  # type: ignore[no-untyped-def]
) -> None:
    """Two runs in flight (tasks waiting in the broker, running on workers, finished with results nobody read yet)
    when the scheduler is killed with SIGKILL: a new scheduler finishes both runs, every task ran exactly once."""
    out = tmp_path / "ran.txt"
    # A queued task whose message was lost with the scheduler is adopted after heartbeat_timeout: keep it short.
    deployment = Deployment(tmp_path, pg_server, redis_server, SPARKFLOW_HEARTBEAT_TIMEOUT="10")
    try:
        assert deployment.cli("db", "init").returncode == 0
        (deployment.dags / "inflight.py").write_text(textwrap.dedent(f"""
            from datetime import datetime
            from sparkflow import DAG, BashOperator

            with DAG("inflight", start_date=datetime(2024, 1, 1), schedule=None, max_active_runs=2) as dag:
                def step(task_id, pause):
                    command = f"sleep {{pause}}; echo {{{{{{{{ run_id }}}}}}}} {{task_id}} >> {out}"
                    return BashOperator(task_id=task_id, bash_command=command)

                step("start", 0) >> [step(f"m{{i:02d}}", 0.5) for i in range(12)] >> step("end", 0)
        """))
        deployment.start_worker("w1", concurrency=2)
        deployment.start_worker("w2", concurrency=2)
        scheduler = deployment.start_scheduler("s1")
        for run_id in ("r1", "r2"):
            assert deployment.cli("trigger", "inflight", "--run-id", run_id).returncode == 0
        db = Database(deployment.env["SPARKFLOW_DB_URL"])
        try:
            def lines() -> list[str]:
                return out.read_text().splitlines() if out.exists() else []

            wait_for(lambda: len(lines()) >= 6, 120, "tasks under way", list(deployment.logs.values()))
            scheduler.kill()
            scheduler.wait(timeout=10)
            killed_at = len(lines())
            assert killed_at < 28, "both runs finished before the kill: the test proves nothing"
            deployment.start_scheduler("s2")
            for run_id in ("r1", "r2"):
                wait_for(lambda run_id=run_id: run_state(db, "inflight", run_id) not in (RunState.QUEUED,
                                                                                        RunState.RUNNING),
                         180, f"run {run_id} to finish", list(deployment.logs.values()))
                assert run_state(db, "inflight", run_id) is RunState.SUCCESS, deployment.all_logs()
            ran = Counter(lines())
            expected = {f"{run_id} {task}" for run_id in ("r1", "r2")
                        for task in ["start", "end", *[f"m{i:02d}" for i in range(12)]]}
            assert set(ran) == expected and set(ran.values()) == {1}, [t for t, n in ran.items() if n > 1]
            for run_id in ("r1", "r2"):
                tis = queries.task_instances(db, "inflight", run_id)
                assert {ti.state for ti in tis} == {TaskState.SUCCESS}
            assert "Traceback" not in deployment.logs["s2"].read_text(), deployment.logs["s2"].read_text()
        finally:
            db.dispose()
    finally:
        deployment.stop()


def test_task_queued_timeout_fails_a_task_no_worker_takes_and_its_messages_never_run(
    tmp_path: Path, pg_server, redis_server  # type: ignore[no-untyped-def]
) -> None:
    """Issue 21 item 16, Airflow's task_queued_timeout on Celery: no worker consumes the task's queue, so after the
    timeout the scheduler revokes the message and fails the try (retried while tries are left), separately from
    heartbeat_timeout. A worker that comes up later gets the stale messages and runs nothing of them (one slot,
    one queue: a task of a later run, behind them in the queue, runs after them)."""
    deployment = Deployment(tmp_path, pg_server, redis_server, SPARKFLOW_TASK_QUEUED_TIMEOUT="3")
    try:
        assert deployment.cli("db", "init").returncode == 0
        marker, later = tmp_path / "stuck_ran.txt", tmp_path / "later_ran.txt"
        (deployment.dags / "stuck.py").write_text(textwrap.dedent(f"""
            from datetime import datetime, timedelta
            from sparkflow import DAG, BashOperator

            with DAG("stuck", start_date=datetime(2024, 1, 1), schedule=None) as dag:
                BashOperator(task_id="waits", bash_command="echo ran >> {marker}", retries=1,
                             retry_delay=timedelta(seconds=0))
            with DAG("later", start_date=datetime(2024, 1, 1), schedule=None) as later_dag:
                BashOperator(task_id="runs", bash_command="echo ran >> {later}")
        """))
        deployment.start_scheduler("s1")
        assert deployment.cli("trigger", "stuck", "--run-id", "r1").returncode == 0
        db = Database(deployment.env["SPARKFLOW_DB_URL"])
        try:
            wait_for(lambda: run_state(db, "stuck", "r1") is RunState.FAILED, 120, "the stuck run to fail",
                     list(deployment.logs.values()))
            ti = queries.get_task_instance(db, TIKey("stuck", "r1", "waits"))
            assert (ti.state, ti.try_number) == (TaskState.FAILED, 2)  # both tries timed out in the queue
            assert ti.error == ("queued for more than task_queued_timeout=3s without starting (is a worker free, "
                                "and consuming Celery queue 'default'?)"), ti.error
            deployment.start_worker("w1", concurrency=1)
            assert deployment.cli("trigger", "later", "--run-id", "r1").returncode == 0
            wait_for(lambda: run_state(db, "later", "r1") is RunState.SUCCESS, 120, "the later run",
                     list(deployment.logs.values()))
            assert later.read_text() == "ran\n" and not marker.exists()
        finally:
            db.dispose()
    finally:
        deployment.stop()
