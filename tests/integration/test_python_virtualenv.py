"""PythonVirtualenvOperator / ExternalPythonOperator and their decorators with real virtual environments: a small
real package (termcolor, pure Python) installed from the package index by pip, the environment cached by a hash of
its requirements and Python version and reused. One cache for the whole session keeps the suite fast: only the
first test that needs termcolor builds its environment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.loader import collect_dags
from sparkflow.logs import task_log_path
from sparkflow.metastore import queries
from sparkflow.operators.python_virtualenv import VenvSpec, is_venv_installed, venv_commands
from sparkflow.runtime.context import metastore_environment
from sparkflow.state import RunState
from tests.helpers import run_dag, states

PACKAGE = "termcolor==3.3.0"


@pytest.fixture(scope="session")
def venv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("venv-cache")


def run_airflow(settings, metastore, write_dag, name: str, code: str):
    path = write_dag(name, code)
    with metastore_environment(metastore):
        return run_dag(settings, metastore, path, name, meta_path_finders=airflow_finders())


def xcom(metastore, run, task_id: str, key: str = "return_value"):
    record = queries.get_xcom(metastore.db, run.dag_id, run.run_id, task_id, key)
    return record.value if record is not None else None


def log_of(settings, run, task_id: str) -> str:
    return task_log_path(settings.resolved_log_folder, run.dag_id, run.run_id, task_id, 1).read_text()


VENV_DAG = """
from datetime import datetime
from airflow import DAG
from airflow.operators.python import PythonVirtualenvOperator

def colour(word, ds=None):
    from importlib.metadata import version
    import termcolor
    print("inside the environment:", termcolor.__file__)
    return {{"version": version("termcolor"), "text": termcolor.colored(word, "red", force_color=True), "ds": ds}}

with DAG("{dag_id}", start_date=datetime(2024, 1, 1), schedule=None):
    PythonVirtualenvOperator(task_id="colour", python_callable=colour, requirements=["{package}"],
                             system_site_packages=False, op_kwargs={{"word": "{{{{ params.word }}}}"}},
                             params={{"word": "hello"}}, venv_cache_path={cache!r})
"""


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the subject is the environment, not the store
def test_virtualenv_operator_installs_a_real_package_then_reuses_the_cache(settings, metastore, write_dag,
                                                                           venv_cache) -> None:
    runs = [run_airflow(settings, metastore, write_dag, dag_id, VENV_DAG.format(
        dag_id=dag_id, package=PACKAGE, cache=str(venv_cache))) for dag_id in ("venv_first", "venv_second")]
    for run in runs:
        assert run.state is RunState.SUCCESS, log_of(settings, run, "colour")[-3000:]
        assert xcom(metastore, run, "colour") == {"version": "3.3.0", "text": "\x1b[31mhello\x1b[0m",
                                                  "ds": "2024-03-01"}
    first, second = (log_of(settings, run, "colour") for run in runs)
    # the builder's output streams into the task log: pip's, then the callable's own print
    assert "Successfully installed termcolor-3.3.0" in first and "Creating virtual environment" in first
    assert "inside the environment:" in first and str(venv_cache) in first.split("inside the environment:")[1]
    assert "Reusing cached virtual environment" in second and "Successfully installed" not in second
    assert len([p for p in venv_cache.iterdir() if p.is_dir()]) == 1


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_decorators_branches_serializers_and_external_python(settings, metastore, write_dag, venv_cache) -> None:
    (settings.resolved_dags_folder / "reqs.txt").write_text("# pinned\ntermcolor=={{ params.version }}\n")
    run = run_airflow(settings, metastore, write_dag, "venv_decorated", f"""
from datetime import datetime
from airflow import DAG
from airflow.decorators import task
from airflow.operators.empty import EmptyOperator
from airflow.operators.python import BranchExternalPythonOperator, ExternalPythonOperator, is_venv_installed

assert is_venv_installed()

def which_python(extra):
    import sys
    return [sys.executable, extra, virtualenv_string_args]

def pick(ds):
    return "external_yes" if ds.startswith("2024") else "external_no"

with DAG("venv_decorated", start_date=datetime(2024, 1, 1), schedule=None, params={{"version": "3.3.0"}}):
    @task.virtualenv(requirements="reqs.txt", system_site_packages=False, serializer="json",
                     venv_cache_path={str(venv_cache)!r}, multiple_outputs=True)
    def versions(n: int) -> dict:
        from importlib.metadata import version
        return {{"termcolor": version("termcolor"), "double": n * 2}}

    @task.branch_virtualenv(requirements=["{PACKAGE}"], system_site_packages=False, venv_cache_path={str(venv_cache)!r})
    def choose() -> str:
        import termcolor
        return "venv_yes"

    @task.external_python(python={sys.executable!r})
    def same_interpreter(x):
        import sys
        return (sys.executable, x)

    external = ExternalPythonOperator(task_id="external", python={sys.executable!r}, python_callable=which_python,
                                      op_args=["{{{{ ds }}}}"], string_args=["a", "b"])
    branch = BranchExternalPythonOperator(task_id="external_branch", python={sys.executable!r}, python_callable=pick)
    branch >> [EmptyOperator(task_id="external_yes"), EmptyOperator(task_id="external_no")]
    choose() >> [EmptyOperator(task_id="venv_yes"), EmptyOperator(task_id="venv_no")]
    versions(21)
    same_interpreter([1, 2])
""")
    assert states(metastore, run) == {
        "versions": "success", "choose": "success", "venv_yes": "success", "venv_no": "skipped",
        "same_interpreter": "success", "external": "success", "external_branch": "success",
        "external_yes": "success", "external_no": "skipped",
    }
    assert xcom(metastore, run, "versions") == {"termcolor": "3.3.0", "double": 42}
    assert xcom(metastore, run, "versions", "double") == 42  # multiple_outputs
    assert xcom(metastore, run, "external") == [sys.executable, "2024-03-01", ["a", "b"]]
    assert xcom(metastore, run, "same_interpreter") == [sys.executable, [1, 2]]
    # the templated requirements file and the branch's list name the same package: one environment for all
    assert "Reusing cached virtual environment" in log_of(settings, run, "versions")
    assert "Reusing cached virtual environment" in log_of(settings, run, "choose")
    assert len([p for p in venv_cache.iterdir() if p.is_dir()]) == 1


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_failures_exit_codes_and_the_default_cache_under_sparkflow_home(settings, metastore, write_dag) -> None:
    run = run_airflow(settings, metastore, write_dag, "venv_failing", f"""
from datetime import datetime
from airflow import DAG
from airflow.operators.python import ExternalPythonOperator, PythonVirtualenvOperator

def boom():
    print("about to fail")
    raise ValueError("no good")

def leave(code):
    import sys
    sys.exit(code)

def plain():
    return "no requirements"

with DAG("venv_failing", start_date=datetime(2024, 1, 1), schedule=None):
    ExternalPythonOperator(task_id="boom", python={sys.executable!r}, python_callable=boom)
    ExternalPythonOperator(task_id="skip", python={sys.executable!r}, python_callable=leave, op_args=[3],
                           skip_on_exit_code=3)
    ExternalPythonOperator(task_id="missing", python="/nonexistent/bin/python", python_callable=plain)
    PythonVirtualenvOperator(task_id="bare_venv", python_callable=plain)
""")
    assert states(metastore, run) == {"boom": "failed", "skip": "skipped", "missing": "failed",
                                      "bare_venv": "success"}
    tis = {ti.task_id: ti for ti in queries.task_instances(metastore.db, run.dag_id, run.run_id)}
    assert "boom() failed in" in tis["boom"].error and "ValueError: no good" in tis["boom"].error
    assert "about to fail" in log_of(settings, run, "boom")
    assert "python '/nonexistent/bin/python' is not an executable file" in tis["missing"].error
    assert xcom(metastore, run, "bare_venv") == "no requirements"
    assert (settings.resolved_home / "venvs").is_dir()  # no venv_cache_path: the cache is under SPARKFLOW_HOME


def test_bad_arguments_fail_when_the_dag_file_loads(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("""
from datetime import datetime
from airflow import DAG
from airflow.operators.python import PythonVirtualenvOperator

def f():
    return 1

with DAG("bad", start_date=datetime(2024, 1, 1), schedule=None):
    PythonVirtualenvOperator(task_id="cloud", python_callable=f, serializer="cloudpickle")
""")
    (tmp_path / "lambda.py").write_text("""
from datetime import datetime
from airflow import DAG
from airflow.operators.python import PythonVirtualenvOperator

with DAG("lambda_dag", start_date=datetime(2024, 1, 1), schedule=None):
    PythonVirtualenvOperator(task_id="anon", python_callable=lambda: 1)
""")
    errors = {Path(e.filename).name: e.message for e in collect_dags(tmp_path, airflow_finders()).import_errors}
    assert "serializer 'cloudpickle' needs the cloudpickle package" in errors["bad.py"]
    assert "pip install cloudpickle" in errors["bad.py"]
    assert "task 'anon'" in errors["lambda.py"] and "give a def function" in errors["lambda.py"]


def test_environment_steps_with_uv_and_with_pip(tmp_path: Path) -> None:
    spec = VenvSpec(("termcolor==3.3.0",), None, True, ("--no-cache-dir",), ("https://a/simple", "https://b/simple"))
    target, reqs = tmp_path / "venv-x", tmp_path / "venv-x" / "requirements.txt"
    index = ["--index-url", "https://a/simple", "--extra-index-url", "https://b/simple"]
    assert venv_commands(spec, "/usr/bin/python3", target, reqs, "/usr/bin/uv") == [
        ["/usr/bin/uv", "venv", "--python", "/usr/bin/python3", "--system-site-packages", str(target)],
        ["/usr/bin/uv", "pip", "install", "--python", f"{target}/bin/python", "--no-cache-dir", *index, "-r",
         str(reqs)],
    ]
    assert venv_commands(spec, "/usr/bin/python3", target, reqs, None) == [
        ["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(target)],
        [f"{target}/bin/python", "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir", *index,
         "-r", str(reqs)],
    ]
    assert is_venv_installed()
