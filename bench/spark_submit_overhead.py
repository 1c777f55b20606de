"""sparkflow's overhead on a Spark job: the same application by bare spark-submit and as a one-task DAG
(`sparkflow trigger --wait`, local executor, progress and event-log metrics on), alternated in pairs in the same
run. Prints each pair and the median ratio; the goal is sparkflow <= 1.05x bare spark-submit.

Both commands are run once untimed first, and the order inside a pair alternates (bare first, then sparkflow
first), so that neither side always runs right after the other or on a colder cache. On a small shared machine one
spark-submit of the same application varies by a second or more from run to run, which is as much as the whole
overhead: read the median over many pairs with its 95% confidence interval, not one pair. 40 pairs by default
(~25 min): seven runs of 20 pairs on the same code gave medians from 1.023 to 1.071, wider than the goal's margin.
Each sparkflow run also reports its own fixed cost, from its task log, which does not vary with Spark: the time
from the command's start to spark-submit's start, and from spark-submit's end to the command's end; and how long
spark-submit itself ran under sparkflow against the bare run (does sparkflow slow Spark down while it runs, or only
add its fixed cost?).

    python bench/spark_submit_overhead.py [--pairs 40]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = textwrap.dedent("""
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.appName("bench").getOrCreate()
    spark.range(0, 2_000_000, numPartitions=4).selectExpr("id % 97 AS k").groupBy("k").count().collect()
    spark.stop()
""")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall time of the command, and (start, end) on the clock of the task log's timestamps."""
    started_at = time.time()
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return elapsed, started_at, started_at + elapsed


def submit_window(task_log: Path) -> tuple[float, float]:
    """When the try started spark-submit and when it saw it end, from the task log ("[2024-01-01 00:00:00,123]")."""
    def stamp(line: str) -> float:
        return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()

    lines = task_log.read_text().splitlines()
    submitted = next(stamp(line) for line in lines if "Submitting to " in line)
    finished = next(stamp(line) for line in lines if "spark-submit finished with code" in line)
    return submitted, finished


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: the order statistics k and n+1-k, with k the largest
    rank such that fewer than k of n values fall below the median with probability at most (1-confidence)/2."""
    ordered, n = sorted(values), len(values)
    k, below = 0, 0.0
    while k < n // 2 and below + math.comb(n, k) / 2**n <= (1 - confidence) / 2:
        below += math.comb(n, k) / 2**n
        k += 1
    return (ordered[k - 1], ordered[n - k]) if k else (ordered[0], ordered[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40)
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="sparkflow-bench-") as tmp:
        base = Path(tmp)
        app = base / "app.py"
        app.write_text(APP)
        dags = base / "dags"
        dags.mkdir()
        (dags / "bench_dag.py").write_text(textwrap.dedent(f"""
            from datetime import datetime
            from sparkflow import DAG, SparkSubmitOperator

            with DAG("bench_dag", start_date=datetime(2024, 1, 1)) as dag:
                SparkSubmitOperator(task_id="job", application={str(app)!r}, conn_id="spark_bench", name="bench")
        """))
        env = {**os.environ, "SPARKFLOW_HOME": str(base / "home"), "SPARKFLOW_DAGS_FOLDER": str(dags),
               "SPARKFLOW_CONN_SPARK_BENCH": "spark://local%5B2%5D", "SPARK_LOCAL_IP": "127.0.0.1",
               "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        # The warm-up below leaves sparkflow's modules compiled, as an installed sparkflow's are (pip compiles them):
        # where PYTHONDONTWRITEBYTECODE is set (some CI machines), every command would compile its ~170 modules
        # again, ~0.2 s of sparkflow's side that no user pays.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        sparkflow = [sys.executable, "-m", "sparkflow"]
        timed([*sparkflow, "db", "init"], env)
        bare = [str(bin_dir / "spark-submit"), "--master", "local[2]", "--name", "bench", str(app)]

        def flow(run_id: str) -> list[str]:
            return [*sparkflow, "trigger", "bench_dag", "--wait", "--run-id", run_id]

        timed(bare, env)  # warm-up of both: JVM class data, page cache, compiled Python
        timed(flow("bench_warmup"), env)
        ratios, extra, bares, before, after, inside = [], [], [], [], [], []
        for pair in range(1, args.pairs + 1):
            run_id = f"bench_{pair}"
            if pair % 2:
                t_bare = timed(bare, env)[0]
                t_flow, flow_start, flow_end = timed(flow(run_id), env)
            else:
                t_flow, flow_start, flow_end = timed(flow(run_id), env)
                t_bare = timed(bare, env)[0]
            log = base / "home" / "logs" / "dag_id=bench_dag" / f"run_id={run_id}" / "task_id=job" / "attempt=1.log"
            submitted, finished = submit_window(log)
            ratios.append(t_flow / t_bare)
            bares.append(t_bare)
            extra.append(t_flow - t_bare)
            before.append(submitted - flow_start)
            after.append(flow_end - finished)
            inside.append((finished - submitted) / t_bare)
            print(f"pair {pair}: spark-submit {t_bare:6.2f} s   sparkflow trigger --wait {t_flow:6.2f} s   "
                  f"ratio {t_flow / t_bare:.3f}   (sparkflow before spark-submit {before[-1]:.2f} s, "
                  f"after {after[-1]:.2f} s)")
    fixed = statistics.median(before) + statistics.median(after)
    low, high = median_interval(ratios)
    print(f"median ratio sparkflow / bare spark-submit: {statistics.median(ratios):.3f}, 95% confidence interval "
          f"{low:.3f}..{high:.3f}; pairs {min(ratios):.3f}..{max(ratios):.3f}, "
          f"median extra {statistics.median(extra):+.2f} s")
    print(f"sparkflow's own time around spark-submit (median): {statistics.median(before):.2f} s before it starts "
          f"+ {statistics.median(after):.2f} s after it ends = {fixed:.2f} s, "
          f"{fixed / statistics.median(bares):.1%} of a bare spark-submit")
    print(f"spark-submit under sparkflow / bare spark-submit (median): {statistics.median(inside):.3f}")
    met = statistics.median(ratios) <= 1.05
    print(f"goal sparkflow <= 1.05x bare spark-submit: measured {statistics.median(ratios):.3f} "
          f"(median of {len(ratios)} pairs) {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
