"""sparkflow's overhead on a Spark job: the same application by bare spark-submit and as a one-task DAG
(`sparkflow trigger --wait`, local executor, progress polling and event-log metrics on), alternated in pairs in
the same run. Prints each pair and the median ratio; the goal is sparkflow <= 1.05x bare spark-submit.

Both commands are run once untimed first, and the order inside a pair alternates (bare first, then sparkflow
first), so that neither side always runs right after the other or on a colder cache. On a small shared machine a
single pair varies by seconds: read the median and the spread, not one pair.

    python bench/spark_submit_overhead.py [--pairs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = textwrap.dedent("""
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.appName("bench").getOrCreate()
    spark.range(0, 2_000_000, numPartitions=4).selectExpr("id % 97 AS k").groupBy("k").count().collect()
    spark.stop()
""")


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv[:3])} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
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
        sparkflow = [sys.executable, "-m", "sparkflow"]
        timed([*sparkflow, "db", "init"], env)
        bare = [str(bin_dir / "spark-submit"), "--master", "local[2]", "--name", "bench", str(app)]

        def flow(run_id: str) -> list[str]:
            return [*sparkflow, "trigger", "bench_dag", "--wait", "--run-id", run_id]

        timed(bare, env)  # warm-up of both: JVM class data, page cache, compiled Python
        timed(flow("bench_warmup"), env)
        ratios, extra = [], []
        for pair in range(1, args.pairs + 1):
            if pair % 2:
                t_bare = timed(bare, env)
                t_flow = timed(flow(f"bench_{pair}"), env)
            else:
                t_flow = timed(flow(f"bench_{pair}"), env)
                t_bare = timed(bare, env)
            ratios.append(t_flow / t_bare)
            extra.append(t_flow - t_bare)
            print(f"pair {pair}: spark-submit {t_bare:6.2f} s   sparkflow trigger --wait {t_flow:6.2f} s   "
                  f"ratio {t_flow / t_bare:.3f}")
    print(f"median ratio sparkflow / bare spark-submit: {statistics.median(ratios):.3f} (goal <= 1.05); "
          f"pairs {min(ratios):.3f}..{max(ratios):.3f}, median extra {statistics.median(extra):+.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
