"""DESIGN.md §2: dependencies point down. import-linter checks the contracts written in pyproject.toml."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import sparkflow

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    lint_imports = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_function_level_sparkflow_imports() -> None:
    """A `from sparkflow... import` inside a function usually hides a layering problem; keep them out."""
    offenders = []
    for path in (ROOT / "sparkflow").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                if isinstance(node, ast.Import):
                    module = node.names[0].name
                if module and module.split(".")[0] == "sparkflow":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module}")
    assert offenders == []


def test_the_package_names_load_on_first_use() -> None:
    """`import sparkflow` is cheap (the CLI and task processes import only what they use); every name in
    __all__ still resolves, to the object its module defines."""
    code = ("import sys, sparkflow; heavy = {'sqlalchemy', 'jinja2', 'sparkflow.operators.sensors'} & set(sys.modules);"
            "print(sorted(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
    assert sorted(sparkflow._EXPORTS) == sorted(sparkflow.__all__)
    for name, module in sparkflow._EXPORTS.items():
        assert getattr(sparkflow, name) is getattr(importlib.import_module(module), name)


def test_commands_that_only_parse_dags_import_neither_jinja_nor_pendulum() -> None:
    """The CLI, the scheduler and a task whose fields hold no template never import Jinja (25-40 ms) or pendulum
    (~20 ms): they are imported where a template is rendered and where a task's context is built."""
    code = textwrap.dedent("""
        import sys
        import sparkflow.cli.runs_cmd, sparkflow.scheduler.loop
        from sparkflow import DAG, BashOperator
        from sparkflow.definitions.templating import TemplateEnvironment
        with DAG("d") as d:
            t = BashOperator(task_id="t", bash_command="echo hi")
        t.render_template_fields({"ds": "2024-01-01"}, TemplateEnvironment())
        print(sorted({"jinja2", "pendulum"} & set(sys.modules)))
        t.bash_command = "echo {{ ds }}"
        t.render_template_fields({"ds": "2024-01-01"}, TemplateEnvironment())
        print("jinja2" in sys.modules, t.bash_command)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "True echo 2024-01-01"]
