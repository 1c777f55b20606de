"""The local executor's fork server: tasks run in warm worker processes apart from the scheduler (own process
group; reused, with what a task changed put back, or replaced), a crashing task is reported with its exit code
while the scheduler carries on, kill() takes the task's whole group; and the fast paths behind it (schema check
without alembic, the warm-up, one transaction per loop iteration)."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sparkflow.definitions.loader import collect_dags
from sparkflow.executors.base import Workload
from sparkflow.executors.factory import make_executor
from sparkflow.executors.local import LocalExecutor
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.runtime import forkserver
from sparkflow.runtime.task_runner import run_try
from sparkflow.runtime.warm_up import warm_up
from sparkflow.scheduler.loop import SchedulerLoop
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.state import RunState, TaskState
from tests.helpers import process_alive

ROOT = Path(__file__).resolve().parents[2]


def load(path: Path, metastore) -> dict:
    bag = collect_dags(path.parent, only_file=path)
    assert not bag.import_errors, bag.import_errors
    metastore.dags.sync_dags(bag.dags.values(), [], [str(path)])
    return bag.dags


def drive(settings, metastore, dags: dict, dag_id: str):
    run = trigger_dag(metastore, dags[dag_id], datetime.now(UTC))
    executor = make_executor(settings, metastore, dags.get, "local")
    loop = SchedulerLoop(metastore, executor, dags.get, heartbeat_timeout=30, log_folder=settings.resolved_log_folder)
    return loop.run_until_finished(run, idle_sleep=0.05), run


def launch_one(metastore, path: Path, dag_id: str, task_id: str) -> tuple[LocalExecutor, TIKey]:
    """Queue task_id of a new run of dag_id and hand it to a started local executor; the caller ends it."""
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags[dag_id], datetime.now(UTC))
    key = TIKey(dag_id, run.run_id, task_id)
    for old, new in ((TaskState.NONE, TaskState.SCHEDULED), (TaskState.SCHEDULED, TaskState.QUEUED)):
        assert metastore.store.set_task_state(key, old, new, "test", try_number=1)
    executor = LocalExecutor(2)
    executor.start()
    executor.queue(Workload(key, 1))
    executor.sync()
    return executor, key


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


PROCESS_DAG = """
    import os, sys, threading
    from datetime import datetime
    from sparkflow import DAG, PythonOperator

    def threads():  # but the worker's own thread that writes fds 1 and 2 into the try's log
        return [t for t in threading.enumerate() if t.name != "sparkflow-output-pump"]

    def record(name, mess):
        with open(os.path.join({out!r}, name), "w") as fh:
            fh.write(f"{{os.getpid()}} {{os.getpgid(0)}} {{os.getppid()}} {{os.environ.get('LEFT_BY_A', '-')}} "
                     f"{{os.getcwd()}} {{sys.path[0]}} {{len(threads())}}")
        print("hello from", name)
        if mess:  # what a careless task leaves behind: the next try must not see it
            os.environ["LEFT_BY_A"] = "yes"
            os.chdir("/")
            sys.path.insert(0, "/left/by/a")
            if mess == "thread":
                threading.Thread(target=threading.Event().wait, args=(30,), daemon=True).start()

    with DAG("procs", start_date=datetime(2024, 1, 1)) as dag:
        PythonOperator(task_id="a", python_callable=record, op_args=["a", {mess!r}])
        PythonOperator(task_id="b", python_callable=record, op_args=["b", ""])
"""


def run_one_after_the_other(settings, metastore, write_dag, out: Path, mess: str) -> tuple[dict, object]:
    """Run a, wait until its worker is free again (or gone), then run b: the server hands b to the worker freed
    last, so a reusable worker of a always runs b."""
    out.mkdir()
    dags = load(write_dag("procs", PROCESS_DAG.format(out=str(out), mess=mess)), metastore)
    run = trigger_dag(metastore, dags["procs"], datetime.now(UTC))
    executor = LocalExecutor(2)
    executor.start()
    try:
        for task_id in ("a", "b"):
            key = TIKey("procs", run.run_id, task_id)
            for old, new in ((TaskState.NONE, TaskState.SCHEDULED), (TaskState.SCHEDULED, TaskState.QUEUED)):
                assert metastore.store.set_task_state(key, old, new, "test", try_number=1)
            executor.queue(Workload(key, 1))
            executor.sync()
            wait_for(lambda k=key: (executor.sync(), k not in executor.running())[1])
    finally:
        executor.end()
    seen = {}
    for task_id in ("a", "b"):
        pid, pgid, ppid, left, cwd, path0, threads = (out / task_id).read_text().split()
        assert int(pid) != os.getpid() and int(ppid) != os.getpid()  # a child of the fork server, not ours
        assert pgid == pid  # leads its own process group (os.setsid): a kill takes what the task started
        ti = queries.get_task_instance(metastore.db, TIKey("procs", run.run_id, task_id))
        assert ti.pid == int(pid) and ti.state is TaskState.SUCCESS
        assert "hello from " + task_id in Path(ti.log_path).read_text()
        seen[task_id] = dict(pid=int(pid), left=left, cwd=cwd, path0=path0, threads=int(threads))
    return seen, run


def test_tries_run_in_a_reused_worker_process_that_puts_back_what_a_task_changed(
    settings, metastore, write_dag, tmp_path
) -> None:
    seen, _ = run_one_after_the_other(settings, metastore, write_dag, tmp_path / "out", mess="env")
    assert seen["a"]["pid"] == seen["b"]["pid"]  # the warm worker ran both tries, one after the other
    assert seen["b"]["left"] == "-" and seen["b"]["cwd"] == seen["a"]["cwd"] != "/"
    assert seen["b"]["path0"] != "/left/by/a" and seen["b"]["threads"] == 1


def test_a_worker_that_a_task_left_threads_in_is_replaced(settings, metastore, write_dag, tmp_path) -> None:
    seen, run = run_one_after_the_other(settings, metastore, write_dag, tmp_path / "out", mess="thread")
    assert seen["a"]["pid"] != seen["b"]["pid"]
    assert seen["b"]["left"] == "-" and seen["b"]["threads"] == 1
    log_a = Path(queries.get_task_instance(metastore.db, TIKey("procs", run.run_id, "a")).log_path).read_text()
    assert "this task process is not reused: the task left 1 thread(s) running" in log_a


def test_max_tasks_per_child_1_gives_every_try_a_fresh_process(
    settings, metastore, write_dag, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("SPARKFLOW_MAX_TASKS_PER_CHILD", "1")  # read by the fork server, as from the config file
    seen, _ = run_one_after_the_other(settings, metastore, write_dag, tmp_path / "out", mess="")
    assert seen["a"]["pid"] != seen["b"]["pid"]


def test_a_task_that_exits_is_reported_with_its_code_and_the_scheduler_survives(settings, metastore, write_dag) -> None:
    path = write_dag("crash", """
        import os
        from datetime import datetime
        from sparkflow import DAG, PythonOperator

        with DAG("crash", start_date=datetime(2024, 1, 1)) as dag:
            PythonOperator(task_id="boom", python_callable=lambda: os._exit(3))
            PythonOperator(task_id="fine", python_callable=lambda: "ok")
    """)
    dags = load(path, metastore)
    final, run = drive(settings, metastore, dags, "crash")
    assert final.state is RunState.FAILED  # and we are still here to look at it
    boom = queries.get_task_instance(metastore.db, TIKey("crash", run.run_id, "boom"))
    fine = queries.get_task_instance(metastore.db, TIKey("crash", run.run_id, "fine"))
    assert boom.state is TaskState.FAILED and boom.error == "task process exited with code 3"
    assert "task process exited with code 3; the scheduler marked the task failed" in Path(boom.log_path).read_text()
    assert fine.state is TaskState.SUCCESS


SLEEPY_DAG = """
    import subprocess, time
    from datetime import datetime
    from sparkflow import DAG, PythonOperator

    def nap():
        child = subprocess.Popen(["sleep", "60"])  # stays in the task's process group
        with open({child_pid!r}, "w") as fh:
            fh.write(str(child.pid))
        time.sleep(60)

    with DAG("sleepy", start_date=datetime(2024, 1, 1)) as dag:
        PythonOperator(task_id="nap", python_callable=nap)
"""


def launch_sleepy(metastore, write_dag, tmp_path: Path) -> tuple[LocalExecutor, TIKey, int]:
    """A started local executor running SLEEPY_DAG's task, once its `sleep 60` child runs: (executor, key, the
    child's pid). The caller ends the executor."""
    child_pid = tmp_path / "child.pid"
    executor, key = launch_one(metastore, write_dag("sleepy", SLEEPY_DAG.format(child_pid=str(child_pid))),
                               "sleepy", "nap")
    try:
        wait_for(lambda: child_pid.exists() and child_pid.read_text().strip())
    except BaseException:
        executor.end(kill=True)
        raise
    return executor, key, int(child_pid.read_text())


def test_kill_terminates_the_task_process_group(settings, metastore, write_dag, tmp_path) -> None:
    executor, key, sleeper = launch_sleepy(metastore, write_dag, tmp_path)
    try:
        task_pid = executor.pid(key)
        assert task_pid is not None and os.getpgid(sleeper) == task_pid  # what the task started is in its group
        assert executor.kill(key, grace=5)
        events = executor.sync()
        assert [e.workload.key for e in events] == [key]
        wait_for(lambda: not process_alive(sleeper))
        assert not process_alive(task_pid)
        # The runner turned SIGTERM into a failure it recorded itself (exit 0), as with a timeout.
        assert queries.get_task_instance(metastore.db, key).state is TaskState.FAILED
    finally:
        executor.end(kill=True)


def test_ending_waits_for_running_tasks_at_most_the_grace_then_kills_them(
    settings, metastore, write_dag, tmp_path
) -> None:
    """A drive that is over waits for task processes still busy (callbacks after their outcome), but a task that
    does not end cannot hold `trigger --wait` forever: after ``grace`` it is killed with its group."""
    executor, key, sleeper = launch_sleepy(metastore, write_dag, tmp_path)
    try:
        task_pid = executor.pid(key)
        started = time.monotonic()
        executor.end(grace=1.0)
        assert 1.0 <= time.monotonic() - started < 15  # waited the grace, not the task's 60 s
        wait_for(lambda: not process_alive(sleeper) and task_pid is not None and not process_alive(task_pid))
    finally:
        executor.end(kill=True)


def test_ctrl_c_while_ending_kills_what_runs(settings, metastore, write_dag, tmp_path, monkeypatch) -> None:
    executor, _, sleeper = launch_sleepy(metastore, write_dag, tmp_path)
    try:
        read = executor._read
        interrupts = iter([KeyboardInterrupt()])

        def interrupted_read(timeout):
            for interrupt in interrupts:  # the first wait of end(): as if Ctrl-C came in it
                raise interrupt
            return read(timeout)

        monkeypatch.setattr(executor, "_read", interrupted_read)
        with pytest.raises(KeyboardInterrupt):
            executor.end(grace=60)
        wait_for(lambda: not process_alive(sleeper), timeout=15)
    finally:
        executor.end(kill=True)


def test_a_second_sigterm_does_not_cut_the_kill_short(settings, metastore, write_dag, tmp_path) -> None:
    """Whoever kills a task may signal it twice (a run's time-out, then `trigger --wait` ending): the operator's
    on_kill() (which kills the Spark application) still runs to its end."""
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"
    path = write_dag("twice", f"""
        import time
        from datetime import datetime
        from sparkflow import DAG, BaseOperator

        class Slow(BaseOperator):
            def execute(self, context):
                open({str(started)!r}, "w").close()
                time.sleep(60)

            def on_kill(self):
                time.sleep(1)  # the second SIGTERM arrives in here
                with open({str(cleaned)!r}, "w") as fh:
                    fh.write("on_kill finished")

        with DAG("twice", start_date=datetime(2024, 1, 1)) as dag:
            Slow(task_id="slow")
    """)
    executor, key = launch_one(metastore, path, "twice", "slow")
    try:
        wait_for(started.exists)
        task_pid = executor.pid(key)
        assert task_pid is not None
        os.kill(task_pid, signal.SIGTERM)
        time.sleep(0.3)
        os.kill(task_pid, signal.SIGTERM)
        wait_for(lambda: cleaned.exists())
        assert cleaned.read_text() == "on_kill finished"
        wait_for(lambda: not process_alive(task_pid))
        assert queries.get_task_instance(metastore.db, key).state is TaskState.FAILED
    finally:
        executor.end(kill=True)


def test_a_try_marked_where_no_signal_reaches_it_ends_at_its_next_heartbeat(
    settings, metastore, write_dag, tmp_path, monkeypatch
) -> None:
    """A task marked failed while it runs on another host (a Celery worker) gets no SIGTERM from whoever marked
    it: its own heartbeat finds it no longer running and ends the try, with what it started, as Airflow's does."""
    monkeypatch.setenv("SPARKFLOW_HEARTBEAT_INTERVAL", "0.2")
    executor, key, sleeper = launch_sleepy(metastore, write_dag, tmp_path)
    try:
        task_pid = executor.pid(key)
        assert task_pid is not None
        before = metastore.store.mark_task_state(key, TaskState.FAILED, "another_host")  # the mark, no signal
        assert before.state is TaskState.RUNNING
        ended: list[TIKey] = []

        def task_ended() -> bool:
            ended.extend(event.workload.key for event in executor.sync())
            return key not in executor.running()

        wait_for(task_ended, timeout=15)
        assert ended == [key]
        wait_for(lambda: not process_alive(sleeper) and not process_alive(task_pid))
        assert queries.get_task_instance(metastore.db, key).state is TaskState.FAILED  # the mark stands
        log = (settings.resolved_log_folder / "dag_id=sleepy" / f"run_id={key.run_id}" / "task_id=nap"
               / "attempt=1.log").read_text()
        assert "This task instance was set to failed (try 1) from outside while it ran; ending this try" in log
        assert "Task was set to failed from outside while running; keeping that" in log
    finally:
        executor.end(kill=True)


def test_a_try_recording_its_own_outcome_is_never_ended_by_its_heartbeat(
    settings, metastore, write_dag, tmp_path, monkeypatch
) -> None:
    """Once a try has recorded its outcome its heartbeat finds it no longer running too, all through its success
    callback: that must not pass for a change from outside, nor end the worker's next try. With a beat every 10 ms,
    every callback runs to its end (also the last ones, still running when the run is over: `trigger --wait`
    waits for them)."""
    monkeypatch.setenv("SPARKFLOW_HEARTBEAT_INTERVAL", "0.01")
    done = tmp_path / "callbacks.txt"
    path = write_dag("beats", f"""
        import time
        from datetime import datetime
        from sparkflow import DAG, PythonOperator

        def slow_callback(context):
            time.sleep(0.2)  # the try's outcome is recorded: every beat in here finds it not running
            with open({str(done)!r}, "a") as fh:
                fh.write(context["ti"].task_id + "\\n")

        with DAG("beats", start_date=datetime(2024, 1, 1)) as dag:
            tasks = [PythonOperator(task_id=f"t{{i}}", python_callable=lambda: None,
                                    on_success_callback=slow_callback) for i in range(5)]
            for upstream, downstream in zip(tasks, tasks[1:]):
                upstream >> downstream
    """)
    final, run = drive(settings, metastore, load(path, metastore), "beats")
    assert final.state is RunState.SUCCESS
    # The run is over once t4 recorded its outcome; the drive has waited for the callbacks still running then.
    assert done.read_text().split() == [f"t{i}" for i in range(5)]
    for ti in queries.task_instances(metastore.db, "beats", run.run_id):
        assert "not reused" not in Path(ti.log_path).read_text()  # no worker was killed or left


def test_the_heartbeat_ends_an_in_process_try_without_signalling_the_process_around_it(
    settings, metastore, write_dag, tmp_path, monkeypatch
) -> None:
    """The sequential executor runs a try inside the scheduler's process, whose group may hold the user's shell
    pipeline: the heartbeat then interrupts the task's code alone (TaskKilled in the main thread)."""
    path = write_dag("inproc", """
        import time
        from datetime import datetime
        from sparkflow import DAG, PythonOperator
        with DAG("inproc", start_date=datetime(2024, 1, 1)) as dag:
            PythonOperator(task_id="nap", python_callable=lambda: time.sleep(60))
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["inproc"], datetime.now(UTC))
    key = TIKey("inproc", run.run_id, "nap")
    for old, new in ((TaskState.NONE, TaskState.SCHEDULED), (TaskState.SCHEDULED, TaskState.QUEUED)):
        assert metastore.store.set_task_state(key, old, new, "test", try_number=1)

    def mark_once_running() -> None:
        wait_for(lambda: queries.get_task_instance(metastore.db, key).state is TaskState.RUNNING)
        metastore.store.mark_task_state(key, TaskState.FAILED, "test")

    sent: list[str] = []
    pthread_kill = signal.pthread_kill
    monkeypatch.setattr(os, "killpg", lambda *args: sent.append("killpg"))
    monkeypatch.setattr(signal, "pthread_kill", lambda *args: sent.append("pthread_kill") or pthread_kill(*args))
    marker = threading.Thread(target=mark_once_running)
    marker.start()
    handler = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    state = run_try(dataclasses.replace(settings, heartbeat_interval=0.2), metastore, key, 1,
                    dag=dags["inproc"]).state
    marker.join()
    assert state is TaskState.FAILED and time.monotonic() - started < 30  # not the task's 60 s
    assert sent == ["pthread_kill"]  # the main thread only, never this process's group
    assert signal.getsignal(signal.SIGTERM) is handler


def test_a_threaded_scheduler_starts_the_fork_server_as_a_fresh_interpreter(settings, metastore, write_dag) -> None:
    path = write_dag("threaded", """
        from datetime import datetime
        from sparkflow import BashOperator, DAG

        with DAG("threaded", start_date=datetime(2024, 1, 1)) as dag:
            BashOperator(task_id="t", bash_command="echo hi")
    """)
    dags = load(path, metastore)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)  # a web server's thread, say
    other.start()
    try:
        final, _ = drive(settings, metastore, dags, "threaded")
    finally:
        stop.set()
        other.join()
    assert final.state is RunState.SUCCESS


def test_warm_up_runs_a_try_and_leaves_nothing_behind(settings, metastore) -> None:
    def counts() -> tuple[int, int]:
        events = queries.state_events(metastore.db, "sparkflow_fork_server_warm_up")
        return len(queries.list_runs(metastore.db)), len(events)

    before = counts()
    assert warm_up(settings, metastore)
    assert counts() == before
    assert not (settings.resolved_log_folder / "dag_id=sparkflow_fork_server_warm_up").exists()


def test_the_server_warms_up_once_idle_after_its_first_try(settings, metastore, write_dag, tmp_path,
                                                             monkeypatch) -> None:
    """Not before the first try (the warm-up holds SQLite's write lock: it held up the scheduler's first tick and
    so the first task, 40-70 ms of a one-task `trigger --wait`), and not while that try runs (a Spark job, maybe
    the only try there is, would lose the CPU), but once it has ended and nothing else is asked for."""
    marks = tmp_path / "marks"
    real_warm_up = forkserver.warm_up

    def recorded_warm_up(*args):
        with marks.open("a") as fh:
            fh.write("warm-up\n")
        return real_warm_up(*args)

    monkeypatch.setattr(forkserver, "warm_up", recorded_warm_up)  # the server is forked: it inherits both
    monkeypatch.setattr(forkserver, "WARM_UP_WHEN_IDLE_SECONDS", 0.5)
    path = write_dag("first", f"""
        import time
        from datetime import datetime
        from sparkflow import DAG, PythonOperator

        def mark():
            with open({str(marks)!r}, "a") as fh:
                fh.write("task starts\\n")
            time.sleep(1.5)  # the server is idle meanwhile
            with open({str(marks)!r}, "a") as fh:
                fh.write("task ends\\n")

        with DAG("first", start_date=datetime(2024, 1, 1)) as dag:
            PythonOperator(task_id="t", python_callable=mark)
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["first"], datetime.now(UTC))
    executor = make_executor(settings, metastore, dags.get, "local")
    loop = SchedulerLoop(metastore, executor, dags.get, heartbeat_timeout=30)
    executor.start()
    try:
        while not any(r.id == run.id for r in loop.tick(run_filter=[run.id]).finished_runs):
            loop.idle(0.05)
        assert queries.get_run(metastore.db, "first", run.run_id).state is RunState.SUCCESS
        wait_for(lambda: marks.read_text().splitlines() == ["task starts", "task ends", "warm-up"], timeout=20)
    finally:
        executor.end(kill=True)


def test_each_task_of_a_chain_starts_when_the_previous_one_records_its_outcome(settings, metastore, write_dag) -> None:
    """The runner's "done" wakes the loop, which queues the next task at once: a five-task chain finishes without
    the loop ever sitting out its idle interval (a minute here)."""
    path = write_dag("five", """
        from datetime import datetime
        from sparkflow import DAG, PythonOperator, chain

        with DAG("five", start_date=datetime(2024, 1, 1)) as dag:
            chain(*[PythonOperator(task_id=f"t{i}", python_callable=lambda: None) for i in range(5)])
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["five"], datetime.now(UTC))
    executor = make_executor(settings, metastore, dags.get, "local")
    loop = SchedulerLoop(metastore, executor, dags.get, heartbeat_timeout=30)
    started = time.monotonic()
    assert loop.run_until_finished(run, idle_sleep=60).state is RunState.SUCCESS
    assert time.monotonic() - started < 60
    tis = sorted(queries.task_instances(metastore.db, "five", run.run_id), key=lambda ti: ti.task_id)
    assert all(later.queued_at >= earlier.end_date for earlier, later in zip(tis, tis[1:], strict=False))


def test_each_executor_stops_its_own_fork_server_promptly(settings, metastore) -> None:
    first = LocalExecutor(1)
    second = LocalExecutor(1)
    first.start()
    second.start()  # forked after the first: it must not keep a copy of the first one's socket
    try:
        server = first._server
        pid = server.pid if server is not None else first._server_pid
        assert pid is not None
        first.end()  # waits up to 5 s for the server to see EOF, then leaves it: it must have ended by itself
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        second.end()




class FakeForkServer:
    """The other end of the executor's socket: reads its requests, sends the messages a fork server would. Why a
    fake: the real server cannot be made to deliver an old try's exit at a chosen moment after a new try of the
    same task was handed over (the Celery worker hands tries over without the scheduler's running() check)."""

    def __init__(self, monkeypatch) -> None:
        import socket

        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ours.setblocking(False)
        monkeypatch.setattr(LocalExecutor, "_ensure_server", lambda executor: self._attach(executor))
        self.buffer = b""

    def _attach(self, executor: LocalExecutor):
        executor._sock = self.ours
        return self.ours

    def request(self) -> dict:
        import json

        while b"\n" not in self.buffer:
            self.buffer += self.theirs.recv(4096)
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def send(self, **message) -> None:
        self.theirs.sendall(forkserver.encode(message))

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


def test_a_late_exit_of_an_earlier_try_is_not_applied_to_the_next_try_of_the_same_task(monkeypatch) -> None:
    server = FakeForkServer(monkeypatch)
    key = TIKey("dag", "run", "task")
    executor = LocalExecutor(2)
    try:
        executor.queue(Workload(key, 1))
        executor.sync()
        first = server.request()
        assert first["try"] == 1
        server.send(id=first["id"], pid=101)
        server.send(id=first["id"], pid=101, done=True)
        executor.wait(10)  # returns once the message arrived
        assert [(e.workload.try_number, e.exit_code) for e in executor.sync()] == [(1, 0)]
        # Try 2 is handed over while try 1's process is still leaving.
        executor.queue(Workload(key, 2))
        executor.sync()
        second = server.request()
        assert second["try"] == 2 and second["id"] != first["id"]
        server.send(id=second["id"], pid=202)
        # Try 1's process now leaves: first cleanly, then (another case) killed. Neither is try 2's end.
        server.send(id=first["id"], pid=101, exit=0)
        executor.wait(0.5)
        assert executor.sync() == []
        assert executor.running() == {key} and executor.pid(key, timeout=0) == 202
        assert executor.open_slots() == 1  # try 2 still takes its slot
        # Try 2 dies without an outcome: its own event, with its own try number and exit code.
        server.send(id=second["id"], pid=202, exit=-9)
        executor.wait(10)  # returns once the message arrived
        events = executor.sync()
        assert [(e.workload.try_number, e.exit_code, e.reason) for e in events] == [
            (2, -9, "task process was killed by SIGKILL")]
        assert executor.running() == set() and not executor.in_flight()
    finally:
        server.close()


def test_a_running_try_stores_its_rendered_fields_at_its_first_heartbeat(settings, metastore, write_dag,
                                                                        tmp_path) -> None:
    """A short try stores them with its outcome; one still running at its first heartbeat stores them then, so the
    task page shows them while it runs."""
    go = tmp_path / "go"
    path = write_dag("rendering", f"""
        import os, time
        from datetime import datetime
        from sparkflow import DAG, PythonOperator

        def wait(day):
            while not os.path.exists({str(go)!r}):
                time.sleep(0.05)

        with DAG("rendering", start_date=datetime(2024, 1, 1)) as dag:
            PythonOperator(task_id="wait", python_callable=wait, op_kwargs={{"day": "{{{{ ds }}}}"}})
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["rendering"], datetime.now(UTC))
    key = TIKey("rendering", run.run_id, "wait")
    for old, new in ((TaskState.NONE, TaskState.SCHEDULED), (TaskState.SCHEDULED, TaskState.QUEUED)):
        assert metastore.store.set_task_state(key, old, new, "test", try_number=1)
    seen = []

    def release_once_stored() -> None:
        try:
            wait_for(lambda: queries.rendered_fields(metastore.db, key) is not None, timeout=60)
            seen.append(queries.get_task_instance(metastore.db, key).state)
        finally:
            go.touch()

    watcher = threading.Thread(target=release_once_stored)
    watcher.start()
    state = run_try(dataclasses.replace(settings, heartbeat_interval=0.2), metastore, key, 1,
                    dag=dags["rendering"]).state
    watcher.join()
    assert state is TaskState.SUCCESS and seen == [TaskState.RUNNING]
    stored = queries.rendered_fields(metastore.db, key)
    assert stored is not None and stored.try_number == 1
    assert run.logical_date.strftime("%Y-%m-%d") in stored.fields["op_kwargs"]
