"""The real `sparkflow scheduler` daemon in its own process: kill -9 at several points (right after a task was
queued, while tasks run), restart, and every task of the run still executes exactly once; SIGTERM stops it
cleanly with exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import init_metastore
from sparkflow.scheduler.dag_processing import refresh_dag_folder, serialized_dag
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.settings import load_settings
from sparkflow.state import RunState, TaskState

pytestmark = pytest.mark.slow

DAG_FILE = """
    from datetime import datetime
    from sparkflow import DAG, BashOperator

    with DAG("crashy", start_date=datetime(2024, 1, 1), schedule=None) as dag:
        first = BashOperator(task_id="first", bash_command="echo first >> {out}; sleep 0.5")
        middle = [BashOperator(task_id=f"mid{{i}}", bash_command=f"echo mid{{i}} >> {out}; sleep 1")
                  for i in range(4)]
        last = BashOperator(task_id="last", bash_command="echo last >> {out}")
        first >> middle >> last
"""
TASKS = ["first", "mid0", "mid1", "mid2", "mid3", "last"]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def daemon_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKFLOW_")}
    env.update({
        "SPARKFLOW_HOME": str(tmp_path / "home"),
        "SPARKFLOW_DAGS_FOLDER": str(tmp_path / "dags"),
        "SPARKFLOW_EXECUTOR": "local",
        "SPARKFLOW_HEARTBEAT_INTERVAL": "0.5",
        "SPARKFLOW_HEARTBEAT_TIMEOUT": "5",
        "SPARKFLOW_SCHEDULER_LOOP_INTERVAL": "0.05",
        "SPARKFLOW_DAG_PARSE_INTERVAL": "1",
    })
    (tmp_path / "dags").mkdir()
    return env


def start_scheduler(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "sparkflow", "scheduler"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_kill_9_at_several_points_then_restart_runs_every_task_exactly_once(daemon_env, tmp_path) -> None:
    out = tmp_path / "ran.txt"
    (tmp_path / "dags" / "crashy.py").write_text(textwrap.dedent(DAG_FILE.format(out=out)))
    settings = load_settings(daemon_env)
    metastore = init_metastore(settings)
    refresh_dag_folder(settings, metastore)
    run = trigger_dag(metastore, serialized_dag(metastore, "crashy"), datetime.now(UTC))
    db = metastore.db

    def task_states() -> dict[str, TaskState]:
        return {ti.task_id: ti.state for ti in queries.task_instances(db, "crashy", run.run_id)}

    log = tmp_path / "scheduler.log"
    procs = []
    try:
        # 1: kill -9 the moment a task is queued (before or while its process starts).
        procs.append(start_scheduler(daemon_env, log))
        wait_for(lambda: TaskState.QUEUED in task_states().values(), 30, "a queued task")
        procs[-1].kill()
        procs[-1].wait()
        # 2: restart, then kill -9 while the middle tasks run.
        procs.append(start_scheduler(daemon_env, log))
        wait_for(lambda: list(task_states().values()).count(TaskState.RUNNING) >= 2, 30, "running middle tasks")
        procs[-1].kill()
        procs[-1].wait()
        # 3: restart; the run must finish.
        procs.append(start_scheduler(daemon_env, log))
        wait_for(lambda: queries.get_run(db, "crashy", run.run_id).state not in (RunState.QUEUED, RunState.RUNNING),
                 60, "the run to finish")
        assert queries.get_run(db, "crashy", run.run_id).state is RunState.SUCCESS, log.read_text()
        assert set(task_states().values()) == {TaskState.SUCCESS}
        assert Counter(out.read_text().split()) == Counter(TASKS), log.read_text()  # each ran exactly once
        # SIGTERM: finish the iteration and exit 0.
        procs[-1].send_signal(signal.SIGTERM)
        assert procs[-1].wait(timeout=15) == 0
        assert "scheduler stopped" in log.read_text()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        metastore.db.dispose()


def test_new_dag_file_is_picked_up_and_scheduled_without_restart(daemon_env, tmp_path) -> None:
    out = tmp_path / "ds.txt"
    settings = load_settings(daemon_env)
    init_metastore(settings).db.dispose()
    log = tmp_path / "scheduler.log"
    proc = start_scheduler(daemon_env, log)
    try:
        time.sleep(0.5)
        (tmp_path / "dags" / "late.py").write_text(textwrap.dedent(f"""
            from datetime import datetime, timedelta
            from sparkflow import DAG, BashOperator

            START = (datetime.now() - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
            with DAG("late", schedule="@daily", start_date=START, catchup=True) as dag:
                BashOperator(task_id="w", bash_command="echo {{{{ ds }}}} >> {out}")
        """))
        metastore = init_metastore(settings)
        wait_for(lambda: len(queries.list_runs(metastore.db, "late", states=[RunState.SUCCESS])) == 3, 45,
                 "three catchup runs")
        assert len(out.read_text().split()) == 3
        assert {r.run_type for r in queries.list_runs(metastore.db, "late")} == {"scheduled"}
        metastore.db.dispose()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()


USER_CODE_DAG = """
    import os
    from datetime import datetime
    from sparkflow import DAG, PythonOperator
    {imports}

    OWNER = "{owner}"

    def say():
        with open("{out}", "a") as fh:
            fh.write(f"{dag_id} {{OWNER}} {{{value}}} {{os.getpid()}}\\n")

    with DAG("{dag_id}", start_date=datetime(2024, 1, 1), schedule=None) as dag:
        PythonOperator(task_id="say", python_callable=say)
"""


def test_warm_task_processes_run_current_user_code_and_only_their_own_dags(daemon_env, tmp_path) -> None:
    """Tries reuse warm processes, yet each runs the user code as its files are now: a helper module edited
    between two runs is seen by the second, and two DAG files (each defining OWNER) importing a `common` module
    of the same name from their own folders each get their own, also in one reused process."""
    out, dags = tmp_path / "said.txt", tmp_path / "dags"
    (dags / "greeting.py").write_text('VALUE = "first"\n')
    (dags / "greeter.py").write_text(textwrap.dedent(USER_CODE_DAG.format(
        imports="import greeting", owner="g", out=out, dag_id="greeter", value="greeting.VALUE")))
    for team in ("a", "b"):
        (dags / f"team_{team}").mkdir()
        (dags / f"team_{team}" / "common.py").write_text(f'NAME = "common_{team}"\n')
        (dags / f"team_{team}" / "pipeline.py").write_text(textwrap.dedent(USER_CODE_DAG.format(
            imports="from common import NAME", owner=team, out=out, dag_id=f"team_{team}", value="NAME")))
    settings = load_settings(daemon_env)
    metastore = init_metastore(settings)
    assert not refresh_dag_folder(settings, metastore).error_count
    log = tmp_path / "scheduler.log"
    proc = start_scheduler(daemon_env, log)

    def run(dag_id: str) -> list[str]:
        started = trigger_dag(metastore, serialized_dag(metastore, dag_id), datetime.now(UTC))
        wait_for(lambda: queries.get_run(metastore.db, dag_id, started.run_id).state is RunState.SUCCESS, 30,
                 f"a run of {dag_id}")
        return out.read_text().splitlines()[-1].split()

    try:
        assert run("greeter")[:3] == ["greeter", "g", "first"]
        (dags / "greeting.py").write_text('VALUE = "second, edited"\n')
        assert run("greeter")[:3] == ["greeter", "g", "second,"]
        said = [run(dag_id) for dag_id in ("team_a", "team_b", "team_a", "team_b")]
        assert [line[:3] for line in said] == [["team_a", "a", "common_a"], ["team_b", "b", "common_b"]] * 2
        assert said[2][3] == said[3][3], said  # both DAGs parsed by now: one warm process ran both tries
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
        metastore.db.dispose()
