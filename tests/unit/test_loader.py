"""Loading DAG files: good files load, every bad one becomes an ImportErrorInfo naming file, line, DAG and task,
and one broken file never hides the DAGs of the others."""

import sys
import textwrap
from pathlib import Path

from sparkflow.definitions.loader import ImportErrorInfo, collect_dags, list_dag_files, load_dag_file

GOOD = """
    from datetime import datetime
    from sparkflow import DAG, BashOperator, EmptyOperator

    with DAG("good", schedule="@daily", start_date=datetime(2024, 1, 1)) as dag:
        extract = BashOperator(task_id="extract", bash_command="echo hi")
        load = EmptyOperator(task_id="load")
        extract >> load
"""


def write(folder: Path, name: str, code: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code).lstrip("\n"))
    return path


def line_of(path: Path, marker: str) -> int:
    """1-based number of the only line of the file containing marker."""
    hits = [n for n, line in enumerate(path.read_text().splitlines(), start=1) if marker in line]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def only_error(bag_errors: list[ImportErrorInfo]) -> ImportErrorInfo:
    assert len(bag_errors) == 1, bag_errors
    return bag_errors[0]


def load_with_good(tmp_path: Path, name: str, code: str) -> tuple[Path, ImportErrorInfo]:
    """Write a bad file next to a good one, collect, check the good DAG survived, return the one error."""
    write(tmp_path, "good_dag.py", GOOD)
    bad = write(tmp_path, name, code)
    bag = collect_dags(tmp_path)
    assert list(bag.dags) == ["good"], "the good file's DAG must load despite the broken file"
    error = only_error(bag.import_errors)
    assert error.filename == str(bad.resolve())
    return bad, error


# -- good files ---------------------------------------------------------------------------------------------------


def test_good_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "good_dag.py", GOOD)
    bag = collect_dags(tmp_path)
    assert bag.import_errors == []
    assert bag.files == [path]
    d = bag.get_dag("good")
    assert d is not None
    assert d.fileloc == str(path.resolve())
    assert d.task_ids == ["extract", "load"]
    assert d.get_task("load").upstream_task_ids == {"extract"}
    assert d.location is not None and d.location.lineno == line_of(path, 'with DAG("good"')
    assert d.get_task("load").location.lineno == line_of(path, 'task_id="load"')


def test_load_dag_file_returns_dags_and_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "good_dag.py", GOOD)
    dags, errors = load_dag_file(path)
    assert [d.dag_id for d in dags] == ["good"]
    assert errors == []


def test_missing_folder_gives_an_empty_bag(tmp_path: Path) -> None:
    bag = collect_dags(tmp_path / "does_not_exist")
    assert bag.dags == {} and bag.import_errors == [] and bag.files == []


def test_dag_from_factory_call_is_found_without_a_module_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "factory_dag.py", """
        from sparkflow import DAG, EmptyOperator, dag, task

        @dag(schedule=None)
        def from_decorator(n: int = 1):
            @task
            def work(n):
                return n
            work(n)

        from_decorator()  # not assigned to anything

        def build():
            with DAG("from_function"):
                EmptyOperator(task_id="e")

        build()
    """)
    bag = collect_dags(tmp_path)
    assert bag.import_errors == []
    assert sorted(bag.dags) == ["from_decorator", "from_function"]
    assert bag.dags["from_decorator"].params == {"n": 1}
    assert bag.dags["from_decorator"].task_ids == ["work"]
    assert bag.dags["from_decorator"].location.lineno == line_of(path, "from_decorator()  #")


def test_dag_assigned_to_a_variable_is_not_counted_twice(tmp_path: Path) -> None:
    write(tmp_path, "assigned_dag.py", """
        from sparkflow import DAG
        my_dag = DAG("assigned")
        alias = my_dag
    """)
    bag = collect_dags(tmp_path)
    assert bag.import_errors == []
    assert list(bag.dags) == ["assigned"]


def test_files_with_the_same_name_in_different_folders_both_load(tmp_path: Path) -> None:
    write(tmp_path, "team_a/etl.py", "from sparkflow import DAG\nd = DAG('etl_a')\n")
    write(tmp_path, "team_b/etl.py", "from sparkflow import DAG\nd = DAG('etl_b')\n")
    bag = collect_dags(tmp_path)
    assert bag.import_errors == []
    assert sorted(bag.dags) == ["etl_a", "etl_b"]


def test_helper_module_next_to_the_file_is_importable_and_sys_path_is_restored(tmp_path: Path) -> None:
    module = f"loader_helper_{tmp_path.name}"
    write(tmp_path, f"{module}.py", "TABLE = 'sales'\n")
    write(tmp_path, "uses_helper_dag.py", f"""
        from sparkflow import DAG, BashOperator
        from {module} import TABLE
        with DAG("helped"):
            BashOperator(task_id="t", bash_command="load " + TABLE)
    """)
    path_before = list(sys.path)
    try:
        bag = collect_dags(tmp_path)
    finally:
        sys.modules.pop(module, None)
    assert bag.import_errors == []
    assert bag.dags["helped"].get_task("t").bash_command == "load sales"
    assert sys.path == path_before


# -- which files are imported -------------------------------------------------------------------------------------


def test_only_files_mentioning_dag_and_the_framework_are_imported(tmp_path: Path) -> None:
    touch = "import pathlib\npathlib.Path(__file__).with_suffix('.ran').touch()\n"
    write(tmp_path, "no_word.py", "import sparkflow\n" + touch)
    write(tmp_path, "no_framework.py", "# builds a dag-like thing\n" + touch)
    both = write(tmp_path, "both.py", "# a dag file\nimport sparkflow\n" + touch)
    write(tmp_path, "notes.txt", "dag sparkflow")

    bag = collect_dags(tmp_path)
    assert bag.files == [both]
    assert bag.import_errors == []
    assert sorted(p.name for p in tmp_path.glob("*.ran")) == ["both.ran"]


def test_airflow_mention_also_counts(tmp_path: Path) -> None:
    path = write(tmp_path, "compat.py", "# airflow dag written for airflow\nx = 1\n")
    assert list_dag_files(tmp_path) == [path]


def test_ignore_file_patterns_exclude_files(tmp_path: Path) -> None:
    write(tmp_path, "kept_dag.py", "from sparkflow import DAG\nd = DAG('kept')\n")
    write(tmp_path, "scratch_dag.py", "from sparkflow import DAG\nraise RuntimeError('scratch must not run')\n")
    write(tmp_path, "legacy/old_dag.py", "from sparkflow import DAG\nraise RuntimeError('legacy must not run')\n")
    write(tmp_path, "other/also_dag.py", "from sparkflow import DAG\nd = DAG('also')\n")
    (tmp_path / ".sparkflowignore").write_text("# ignored files\nscratch_.*\n\nlegacy/  # whole folder\n")

    bag = collect_dags(tmp_path)
    assert bag.import_errors == []
    assert sorted(bag.dags) == ["also", "kept"]
    assert sorted(p.name for p in bag.files) == ["also_dag.py", "kept_dag.py"]


def test_airflowignore_is_honoured_too(tmp_path: Path) -> None:
    write(tmp_path, "kept_dag.py", "from sparkflow import DAG\nd = DAG('kept')\n")
    write(tmp_path, "skip_dag.py", "from sparkflow import DAG\nraise RuntimeError('must not run')\n")
    (tmp_path / ".airflowignore").write_text("skip\n")
    assert [p.name for p in list_dag_files(tmp_path)] == ["kept_dag.py"]


def test_hidden_and_dunder_folders_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, ".hidden/h_dag.py", "from sparkflow import DAG\nraise RuntimeError('hidden')\n")
    write(tmp_path, "__pycache__/c_dag.py", "from sparkflow import DAG\nraise RuntimeError('cache')\n")
    write(tmp_path, "visible_dag.py", "from sparkflow import DAG\nd = DAG('visible')\n")
    assert [p.name for p in list_dag_files(tmp_path)] == ["visible_dag.py"]


# -- bad files: each one is an ImportErrorInfo naming file, line, DAG and task --------------------------------------


def test_exception_at_import_names_the_statement_line(tmp_path: Path) -> None:
    bad, error = load_with_good(tmp_path, "raises_dag.py", """
        from sparkflow import DAG, EmptyOperator

        with DAG("raises"):
            EmptyOperator(task_id="fine")
            EmptyOperator(task_id=undefined_name)
    """)
    assert error.lineno == line_of(bad, "undefined_name")
    assert error.message == "NameError: name 'undefined_name' is not defined"
    assert error.dag_id is None and error.task_id is None
    assert str(error) == f"{bad.resolve()}:{error.lineno}: NameError: name 'undefined_name' is not defined"


def test_exception_in_a_helper_function_names_the_deepest_line_of_the_file(tmp_path: Path) -> None:
    bad, error = load_with_good(tmp_path, "helper_raises_dag.py", """
        from sparkflow import DAG

        def tables():
            return {"a": 1}["missing"]

        with DAG("h"):
            tables()
    """)
    assert error.lineno == line_of(bad, '["missing"]')
    assert error.message == "KeyError: 'missing'"


def test_system_exit_in_a_file_is_an_import_error_not_a_crash(tmp_path: Path) -> None:
    bad, error = load_with_good(tmp_path, "exits_dag.py", """
        import sys
        from sparkflow import DAG
        sys.exit(3)
    """)
    assert error.lineno == line_of(bad, "sys.exit(3)")
    assert error.message.startswith("SystemExit")


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    bad, error = load_with_good(tmp_path, "syntax_dag.py", """
        from sparkflow import DAG

        with DAG("syntax"):
            def broken(:
                pass
    """)
    assert error.lineno == line_of(bad, "def broken(:")
    assert error.message.startswith("SyntaxError: ")


def test_cycle_lists_the_cycle_and_names_dag_task_and_line(tmp_path: Path) -> None:
    bad, error = load_with_good(tmp_path, "cycle_dag.py", """
        from sparkflow import DAG, EmptyOperator

        with DAG("cyclic"):
            a = EmptyOperator(task_id="a")
            b = EmptyOperator(task_id="b")
            c = EmptyOperator(task_id="c")
            a >> b >> c >> a
    """)
    assert error.message == "DAG 'cyclic' task 'a': cycle detected: a >> b >> c >> a"
    assert (error.dag_id, error.task_id) == ("cyclic", "a")
    assert error.lineno == line_of(bad, 'task_id="a"')


def test_duplicate_task_id_names_both_lines(tmp_path: Path) -> None:
    bad, error = load_with_good(tmp_path, "dupe_dag.py", """
        from sparkflow import DAG, BashOperator

        with DAG("dupes"):
            BashOperator(task_id="load", bash_command="echo 1")  # first
            BashOperator(task_id="load", bash_command="echo 2")  # second
    """)
    assert (error.dag_id, error.task_id) == ("dupes", "load")
    assert error.lineno == line_of(bad, "# second")
    assert "duplicate task_id" in error.message
    assert f"first defined at line {line_of(bad, '# first')}" in error.message


def test_unknown_upstream_by_id_lists_the_known_tasks(tmp_path: Path) -> None:
    bad, error = load_with_good(tmp_path, "upstream_dag.py", """
        from sparkflow import DAG, EmptyOperator

        with DAG("by_id"):
            EmptyOperator(task_id="extract")
            load = EmptyOperator(task_id="load")
            load.set_upstream("nope")
    """)
    assert error.message == "DAG 'by_id' task 'load': upstream 'nope' does not exist; known: extract, load"
    assert (error.dag_id, error.task_id) == ("by_id", "load")
    assert error.lineno == line_of(bad, 'task_id="load"')


def test_invalid_cron_names_the_dag_line(tmp_path: Path) -> None:
    bad, error = load_with_good(tmp_path, "cron_dag.py", """
        from sparkflow import DAG, EmptyOperator

        with DAG("bad_cron", schedule="0 25 * * *"):
            EmptyOperator(task_id="t")
    """)
    assert error.dag_id == "bad_cron" and error.task_id is None
    assert error.lineno == line_of(bad, 'DAG("bad_cron"')
    assert error.message.startswith("DAG 'bad_cron': invalid cron expression '0 25 * * *'")
    assert "expected 5 fields like '0 2 * * *'" in error.message


def test_multi_line_dag_call_names_its_first_line(tmp_path: Path) -> None:
    bad, error = load_with_good(tmp_path, "preset_dag.py", """
        from sparkflow import DAG

        dag = DAG(  # here
            "bad_preset",
            schedule="@dayly",
        )
    """)
    assert error.dag_id == "bad_preset"
    assert error.lineno == line_of(bad, "# here")
    assert "unknown schedule preset '@dayly'" in error.message


def test_unknown_trigger_rule_names_task_line_and_choices(tmp_path: Path) -> None:
    bad, error = load_with_good(tmp_path, "rule_dag.py", """
        from sparkflow import DAG, EmptyOperator

        with DAG("rules"):
            EmptyOperator(task_id="ok")
            EmptyOperator(task_id="join", trigger_rule="all_sucess")
    """)
    assert error.task_id == "join"
    assert error.lineno == line_of(bad, "all_sucess")
    assert "task 'join'" in error.message
    assert "unknown trigger_rule 'all_sucess'; use one of all_success," in error.message


def test_unknown_trigger_rule_error_names_the_dag(tmp_path: Path) -> None:
    _, error = load_with_good(tmp_path, "rule_dag.py", """
        from sparkflow import DAG, EmptyOperator

        with DAG("rules"):
            EmptyOperator(task_id="join", trigger_rule="all_sucess")
    """)
    assert error.dag_id == "rules"
    assert error.message.startswith("DAG 'rules' task 'join': ")


def test_same_dag_id_in_two_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a_first_dag.py", "from sparkflow import DAG\nd = DAG('shared')\n")
    second = write(tmp_path, "b_second_dag.py", "from sparkflow import DAG\n\nd = DAG('shared')  # again\n")
    write(tmp_path, "good_dag.py", GOOD)
    bag = collect_dags(tmp_path)
    assert sorted(bag.dags) == ["good", "shared"]
    assert bag.dags["shared"].fileloc == str(first.resolve())
    error = only_error(bag.import_errors)
    assert error.filename == str(second.resolve())
    assert error.dag_id == "shared"
    assert error.lineno == line_of(second, "# again")
    assert error.message == f"DAG 'shared' is already defined in {first.resolve()}; dag_ids must be unique"


def test_same_dag_id_twice_in_one_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "twice_dag.py", """
        from sparkflow import DAG
        one = DAG("twice")
        two = DAG("twice")  # second
    """)
    bag = collect_dags(tmp_path)
    assert bag.dags["twice"].location.lineno == line_of(bad, "one = DAG")  # the first one is kept
    error = only_error(bag.import_errors)
    assert error.filename == str(bad.resolve())
    assert error.dag_id == "twice"
    assert error.lineno == line_of(bad, "# second")
    assert error.message == "DAG 'twice' is defined twice in this file; dag_ids must be unique"


def test_errors_in_several_files_are_all_reported(tmp_path: Path) -> None:
    write(tmp_path, "good_dag.py", GOOD)
    write(tmp_path, "one_dag.py", "from sparkflow import DAG\nDAG('x', schedule='nope')\n")
    write(tmp_path, "two_dag.py", "from sparkflow import DAG\n1 / 0\n")
    bag = collect_dags(tmp_path)
    assert list(bag.dags) == ["good"]
    assert sorted(Path(e.filename).name for e in bag.import_errors) == ["one_dag.py", "two_dag.py"]
    assert {e.lineno for e in bag.import_errors} == {2}
