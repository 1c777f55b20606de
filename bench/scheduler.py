"""Scheduler benchmark: real scheduler loop + local executor (a process per task), from trigger to run success.

Workloads (issue 4): chain100 (100 no-op Python tasks in a line), fanout200 (one -> 200 parallel -> one), bash50
(50 independent BashOperator("true")). Each is measured against a baseline from the same run: calling the same
operators' execute() directly in this process, so the ratio is the orchestration cost (durable state changes in
SQLite, a separate process per task). Also the sequential executor (in-process runner, every state change still
written) to separate metastore cost from process start-up cost.

    python bench/scheduler.py [--full]

By default the local-executor rows use a tenth of each workload (a process per task costs about a second on a
2-core machine, so full sizes take minutes); --full runs them at full size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WORKLOADS = {
    "chain100": """
        from datetime import datetime
        from sparkflow import DAG, PythonOperator, chain

        def noop():
            pass

        with DAG("chain100", start_date=datetime(2024, 1, 1), max_active_tasks=64) as dag:
            chain(*[PythonOperator(task_id=f"t{i:03d}", python_callable=noop) for i in range(N)])
    """,
    "fanout200": """
        from datetime import datetime
        from sparkflow import DAG, PythonOperator

        def noop():
            pass

        with DAG("fanout200", start_date=datetime(2024, 1, 1), max_active_tasks=256) as dag:
            start = PythonOperator(task_id="start", python_callable=noop)
            end = PythonOperator(task_id="end", python_callable=noop)
            start >> [PythonOperator(task_id=f"t{i:03d}", python_callable=noop) for i in range(N)] >> end
    """,
    "bash50": """
        from datetime import datetime
        from sparkflow import DAG, BashOperator

        with DAG("bash50", start_date=datetime(2024, 1, 1), max_active_tasks=64) as dag:
            for i in range(N):
                BashOperator(task_id=f"t{i:03d}", bash_command="true")
    """,
}
SIZES = {"chain100": 100, "fanout200": 200, "bash50": 50}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="Full-size workloads for the local executor too.")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sparkflow-bench-"))
    os.environ["SPARKFLOW_HOME"] = str(home)
    os.environ["SPARKFLOW_DAGS_FOLDER"] = str(home / "dags")
    os.environ.setdefault("SPARKFLOW_PARALLELISM", str(max(os.cpu_count() or 2, 2) * 2))
    (home / "dags").mkdir()
    # Imported after the environment is set: settings are read once.
    from datetime import UTC, datetime

    from sparkflow.metastore.bootstrap import init_metastore
    from sparkflow.metastore.records import DagRunRecord
    from sparkflow.runtime.context import InMemoryTaskInstance, build_context
    from sparkflow.runtime.task_runner import execute_task
    from sparkflow.scheduler.dag_processing import parse_dags
    from sparkflow.scheduler.loop import drive_run
    from sparkflow.scheduler.runs import trigger_dag
    from sparkflow.settings import load_settings
    from sparkflow.state import RunState

    settings = load_settings()
    metastore = init_metastore(settings)
    print(f"sparkflow scheduler benchmark ({os.cpu_count()} CPUs, parallelism {settings.parallelism}, SQLite)")
    for name, code in WORKLOADS.items():
        for suffix, size in (("", SIZES[name]), ("_local", SIZES[name] // (1 if args.full else 10))):
            text = textwrap.dedent(code).replace("range(N)", f"range({size})").replace(f'"{name}"', f'"{name}{suffix}"')
            (home / "dags" / f"{name}{suffix}.py").write_text(text)
    bag = parse_dags(settings, metastore)
    for name, executor in [(n, e) for n in WORKLOADS for e in ("sequential", "local")]:
        dag = bag.dags[name if executor == "sequential" else f"{name}_local"]
        size = len(dag.tasks)
        # Baseline: the same operators' execute(), rendered and run in this process, nothing recorded.
        started = time.perf_counter()
        for task in dag.topological_order():
            run_id = f"baseline__{task.task_id}"
            handle = InMemoryTaskInstance(dag, task.task_id, run_id)
            record = DagRunRecord(0, dag.dag_id, run_id, "manual", datetime.now(UTC), None, None, {},
                                  RunState.RUNNING, None, None, None, True)
            execute_task(dag, task, build_context(dag, task, record, handle))
        baseline = time.perf_counter() - started
        walls, spans = [], []
        for _ in range(args.repeats):
            run = trigger_dag(metastore, dag, datetime.now(UTC))
            started = time.perf_counter()
            final = drive_run(settings, metastore, dag, run, executor)
            walls.append(time.perf_counter() - started)
            assert final.state is RunState.SUCCESS, final
            spans.append(final.duration or 0.0)
        wall, span = statistics.median(walls), statistics.median(spans)
        print(f"{name:10s} {executor:10s} tasks={size:3d} run={span:7.2f}s command={wall:7.2f}s "
              f"per-task={1000 * span / size:7.1f}ms tasks/s={size / span:7.1f} "
              f"baseline(direct execute)={baseline:6.3f}s ratio={wall / baseline:8.1f}x")
    print("What dominates: with the local executor each task is a fresh `python -m sparkflow.runtime` process "
          "(interpreter start + ~1 s of imports on 2 cores, half of it alembic pulled in by the metastore's schema "
          "check, + re-parsing the DAG file); the sequential rows show the metastore's share (about 8 durable "
          "state changes per task, each a SQLite transaction).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
