"""DAG processing benchmark (issue 16): a generated DAG folder of N files (10 tasks each: Empty, Bash, Python,
a task group, one Spark task), every figure also measured for N=1 in the same run as the baseline.

- time from an empty metastore to all N DAGs listed (`sparkflow dags list`: every file parsed in time-limited
  child processes), N = 1, 100, 1000; goal <= 30 s for 1,000 files;
- CPU of an idle `sparkflow dag-processor` over the unchanged folder (goal <= 5% of one core);
- with N DAGs present: chain100 per task (`trigger --wait`, the run's own duration) against its N=1 figure (goal
  within 1.2x), the web DAG list page and `GET /api/v1/dags?limit=100` (goal <= 0.5 s each), the scheduler's RSS
  (goal <= 300 MB) and how long one changed file takes to reach the scheduler (goal <= 5 s).

    python bench/dag_processing.py [--quick] [--sizes 1,100,1000]

--quick: N = 1 and 100 only, fewer repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

from sparkflow.process import terminate_group

DAG_FILE = """
    from datetime import datetime
    from sparkflow import DAG, BashOperator, EmptyOperator, PythonOperator, TaskGroup
    from sparkflow.operators.spark_submit import SparkSubmitOperator

    def work(n):
        return n * 2

    with DAG("dag_{i:04d}", start_date=datetime(2024, 1, 1), schedule="@daily", tags=["bench"],
             doc_md="A generated DAG") as dag:
        start = EmptyOperator(task_id="start")
        with TaskGroup("prepare") as prepare:
            steps = [BashOperator(task_id=f"step_{{k}}", bash_command="echo {{{{ ds }}}}") for k in range(3)]
        compute = [PythonOperator(task_id=f"compute_{{k}}", python_callable=work, op_args=[k]) for k in range(3)]
        spark = SparkSubmitOperator(task_id="spark", application="/jobs/count.py", conn_id="spark_default",
                                    application_args=["--day", "{{{{ ds }}}}"])
        end = EmptyOperator(task_id="end", trigger_rule="all_done")
        start >> prepare >> compute >> spark >> end
"""
CHAIN = """
    from datetime import datetime
    from sparkflow import DAG, PythonOperator, chain

    def noop():
        pass

    with DAG("chain100", start_date=datetime(2024, 1, 1), schedule=None, max_active_tasks=64) as dag:
        chain(*[PythonOperator(task_id=f"t{i:03d}", python_callable=noop) for i in range(100)])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Home:
    """A fresh SPARKFLOW_HOME with N generated DAG files and chain100."""

    def __init__(self, n: int) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=f"sparkflow-bench-dags-{n}-"))
        self.dags = self.base / "dags"
        self.dags.mkdir()
        self.n = n
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKFLOW_")}
        self.env.update(SPARKFLOW_HOME=str(self.base), SPARKFLOW_DAGS_FOLDER=str(self.dags),
                        SPARKFLOW_EXECUTOR="local", SPARKFLOW_LOAD_DEFAULT_CONNECTIONS="true")
        for i in range(n):
            (self.dags / f"dag_{i:04d}.py").write_text(textwrap.dedent(DAG_FILE.format(i=i)))
        (self.dags / "chain100.py").write_text(textwrap.dedent(CHAIN))
        self.cli("db", "init")

    def cli(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "sparkflow", *args], env=self.env, capture_output=True,
                                text=True, stdin=subprocess.DEVNULL, timeout=1800)
        if result.returncode != 0:
            raise RuntimeError(f"sparkflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def start(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        with (self.base / log).open("ab") as out:
            return subprocess.Popen([sys.executable, "-m", "sparkflow", *args], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    terminate_group(proc, grace=20)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and of its reaped children (the parse workers), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def time_to_list(home: Home) -> float:
    started = time.perf_counter()
    listed = json.loads(home.cli("dags", "list", "-o", "json"))
    elapsed = time.perf_counter() - started
    assert len(listed) == home.n + 1, f"{len(listed)} DAGs listed, expected {home.n + 1}"
    return elapsed


def idle_processor_cpu(home: Home, seconds: float) -> float:
    proc = home.start("dag-processor", log="processor.log")
    try:
        time.sleep(3.0)  # its start-up and first look at the (unchanged) folder
        before, started = cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(seconds)
        return 100 * (cpu_seconds(proc.pid) - before) / (time.perf_counter() - started)
    finally:
        stop(proc)


def chain_per_task_ms(home: Home, repeats: int) -> float:
    figures = []
    for _ in range(repeats):
        out = home.cli("trigger", "chain100", "--wait")
        seconds = float(re.search(r"finished: success in ([0-9.]+)s", out).group(1))  # type: ignore[union-attr]
        figures.append(1000 * seconds / 100)
    return statistics.median(figures)


def web_times(home: Home, repeats: int) -> tuple[float, float]:
    home.cli("users", "create", "--username", "bench", "--password", "bench-password-1", "--role", "viewer")
    token = home.cli("users", "token", "bench").strip().split()[-1]
    port = free_port()
    proc = home.start("webserver", "--port", str(port), log="web.log")
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

        def timed(path: str, with_session: dict[str, str]) -> float:
            figures = []
            for _ in range(repeats + 1):  # the first request warms the caches and is not counted
                started = time.perf_counter()
                with urllib.request.urlopen(urllib.request.Request(url + path, headers=with_session),
                                            timeout=60) as r:
                    r.read()
                figures.append(time.perf_counter() - started)
            return statistics.median(figures[1:])

        api = timed("/api/v1/dags?limit=100", headers)
        page = timed("/", {"Cookie": login_cookie(url)})
        return page, api
    finally:
        stop(proc)


def login_cookie(url: str) -> str:
    with urllib.request.urlopen(url + "/login", timeout=10) as r:
        html = r.read().decode()
        cookies = [c.split(";", 1)[0] for c in r.headers.get_all("Set-Cookie") or []]
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    data = f"username=bench&password=bench-password-1&csrf_token={csrf}&next=/".encode()
    request = urllib.request.Request(url + "/login", data=data, headers={"Cookie": "; ".join(cookies)})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        response = opener.open(request, timeout=10)
    except urllib.error.HTTPError as exc:  # the 303 after a good login
        response = exc
    session = [c.split(";", 1)[0] for c in response.headers.get_all("Set-Cookie") or []]
    return "; ".join(cookies + session)


def scheduler_figures(home: Home) -> tuple[float, float]:
    """The scheduler's RSS with every DAG read, and the seconds from a changed file to the scheduler reading it."""
    proc = home.start("scheduler", log="scheduler.log")
    log = home.base / "scheduler.log"
    try:
        deadline = time.monotonic() + 120
        while "scheduler started" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.2)
        time.sleep(3.0)  # the processor's first look at the folder, and a few scheduler iterations
        rss = rss_mb(proc.pid)
        seen = log.read_text().count("(1 changed)")
        path = home.dags / "dag_0000.py" if home.n else home.dags / "chain100.py"
        started = time.perf_counter()
        path.write_text(path.read_text() + "\n    EmptyOperator(task_id='added')\n" if home.n else
                        path.read_text().replace("max_active_tasks=64", "max_active_tasks=63"))
        while log.read_text().count("(1 changed)") == seen:
            assert time.perf_counter() - started < 120, log.read_text()[-2000:]
            time.sleep(0.05)
        return rss, time.perf_counter() - started
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="N = 1 and 100 only, fewer repeats.")
    parser.add_argument("--sizes", default=None, help="Comma-separated N values (default 1,100,1000).")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("1,100" if args.quick else "1,100,1000")).split(",")]
    repeats = 1 if args.quick else 3
    print(f"sparkflow DAG processing benchmark ({os.cpu_count()} CPUs, SQLite); N files of 10 tasks each + chain100")
    rows: dict[int, dict[str, float]] = {}
    for n in sizes:
        home = Home(n)
        row = rows.setdefault(n, {})
        row["list_s"] = time_to_list(home)
        row["idle_cpu_pct"] = idle_processor_cpu(home, 10.0 if args.quick else 20.0)
        row["chain_ms"] = chain_per_task_ms(home, repeats)
        row["page_s"], row["api_s"] = web_times(home, repeats)
        row["rss_mb"], row["change_s"] = scheduler_figures(home)
        print(f"N={n:5d} list={row['list_s']:7.2f}s idle-processor-cpu={row['idle_cpu_pct']:5.2f}% "
              f"chain100={row['chain_ms']:6.1f}ms/task page={row['page_s']:6.3f}s api(limit=100)={row['api_s']:6.3f}s "
              f"scheduler-rss={row['rss_mb']:6.0f}MB change-visible={row['change_s']:5.2f}s", flush=True)
    base = rows[sizes[0]]
    largest = max(sizes)
    top = rows[largest]
    print(f"ratios N={largest} vs N={sizes[0]}: list {top['list_s'] / base['list_s']:.1f}x, chain100 per task "
          f"{top['chain_ms'] / base['chain_ms']:.2f}x, page {top['page_s'] / base['page_s']:.1f}x, api "
          f"{top['api_s'] / base['api_s']:.1f}x, scheduler RSS {top['rss_mb'] / base['rss_mb']:.2f}x")
    goals = [
        (f"N={largest} listed from an empty metastore <= 30 s", top["list_s"], "s", top["list_s"] <= 30),
        ("idle processor CPU <= 5% of one core", top["idle_cpu_pct"], "%", top["idle_cpu_pct"] <= 5),
        ("chain100 per task within 1.2x of N=1", top["chain_ms"] / base["chain_ms"], "x",
         top["chain_ms"] <= 1.2 * base["chain_ms"]),
        ("web DAG list page <= 0.5 s", top["page_s"], "s", top["page_s"] <= 0.5),
        ("GET /api/v1/dags?limit=100 <= 0.5 s", top["api_s"], "s", top["api_s"] <= 0.5),
        ("scheduler RSS <= 300 MB", top["rss_mb"], "MB", top["rss_mb"] <= 300),
        ("one changed file visible to the scheduler <= 5 s", top["change_s"], "s", top["change_s"] <= 5),
    ]
    for text, value, unit, met in goals:
        print(f"goal {text:52s} measured {value:8.2f} {unit:2s} {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
