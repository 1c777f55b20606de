"""Python callables run by another interpreter: PythonVirtualenvOperator (a virtual environment built from
requirements, cached), ExternalPythonOperator (an interpreter that exists), their branch forms, as in Airflow.

The callable's source is written into a script with its arguments (pickle, cloudpickle, dill or json, per
``serializer``); the other interpreter runs it in its own process group, its output streams into the task log, and
what it returns comes back the same way and becomes the task's XCom.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sparkflow.definitions.context import Context
from sparkflow.exceptions import DagDefinitionError, SkipTask, TaskFailure
from sparkflow.operators.branch import follow_branch
from sparkflow.operators.python import PythonOperator, determine_kwargs
from sparkflow.process import GroupProcess
from sparkflow.settings import load_settings

SERIALIZERS = ("pickle", "cloudpickle", "dill", "json")
# What of the context may travel to the other interpreter (plain values; Airflow passes the same kind).
SERIALIZABLE_CONTEXT_KEYS = frozenset({
    "ds", "ds_nodash", "ts", "ts_nodash", "ts_nodash_with_tz", "run_id", "task_instance_key_str", "test_mode",
    "try_number", "params", "templates_dict", "conf",
})
DONE_FILE = "sparkflow-venv.json"  # written last: a venv without it is half-built

_SCRIPT = """\
from __future__ import annotations

import sys
import {serializer} as _serializer

virtualenv_string_args = {string_args!r}

{source}

if __name__ == "__main__":
    with open(sys.argv[1], "{read}") as _file:
        _arguments = _serializer.load(_file)
    _result = {name}(*_arguments["args"], **_arguments["kwargs"])
    with open(sys.argv[2], "{write}") as _file:
        _serializer.dump(_result, _file)
"""


def is_venv_installed() -> bool:
    """Whether virtual environments can be made here: ``uv`` on PATH, or the standard library's venv."""
    return shutil.which("uv") is not None or importlib.util.find_spec("venv") is not None


def callable_source(func: Callable[..., Any]) -> str:
    """The function's own source, dedented, without its decorators (``@task.virtualenv(...)`` and the like)."""
    lines = textwrap.dedent(inspect.getsource(func)).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("def ", "async def ")))
    return "\n".join(lines[start:]) + "\n"


def _serializer_module(name: str) -> Any:
    return json if name == "json" else importlib.import_module(name)


def write_call(directory: Path, func: Callable[..., Any], serializer: str, args: list[Any],
               kwargs: dict[str, Any], string_args: list[str]) -> tuple[Path, Path, Path]:
    """The script, its input file and where it writes its result."""
    binary = serializer != "json"
    script = directory / "script.py"
    script.write_text(_SCRIPT.format(
        serializer=serializer, string_args=[str(s) for s in string_args], source=callable_source(func),
        name=func.__name__, read="rb" if binary else "r", write="wb" if binary else "w",
    ))
    given, result = directory / "input", directory / "output"
    with given.open("wb" if binary else "w") as out:
        _serializer_module(serializer).dump({"args": args, "kwargs": kwargs}, out)
    return script, given, result


@dataclass(frozen=True)
class VenvSpec:
    """What makes one cached virtual environment differ from another."""

    requirements: tuple[str, ...]
    python_version: str | None
    system_site_packages: bool
    pip_install_options: tuple[str, ...]
    index_urls: tuple[str, ...]

    def key(self, base_python: str) -> str:
        """A hash of the spec and the base interpreter's version: the cache directory's name."""
        text = json.dumps({**asdict(self), "python": _python_version_of(base_python)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _python_version_of(python: str) -> str:
    if python == sys.executable:
        return ".".join(map(str, sys.version_info[:3]))
    return python  # another interpreter: its path names it (python3.12)


def base_python(python_version: str | None) -> str:
    """The interpreter a new environment is made from: this one, or ``python<version>`` on PATH."""
    if not python_version or python_version == ".".join(map(str, sys.version_info[: len(python_version.split("."))])):
        return sys.executable
    found = shutil.which(f"python{python_version}")
    if found is None:
        raise TaskFailure(f"python_version {python_version!r}: no python{python_version} on PATH; install it or leave "
                          "python_version out to use sparkflow's own Python")
    return found


def venv_commands(spec: VenvSpec, base: str, target: Path, requirements_file: Path, uv: str | None) -> list[list[str]]:
    """argv of each step that builds the environment: ``uv`` when present, else ``python -m venv`` and pip."""
    python = str(target / "bin" / "python")
    index = [*(["--index-url", spec.index_urls[0]] if spec.index_urls else []),
             *(arg for url in spec.index_urls[1:] for arg in ("--extra-index-url", url))]
    site = ["--system-site-packages"] if spec.system_site_packages else []
    if uv is not None:
        steps = [[uv, "venv", "--python", base, *site, str(target)]]
        install = [uv, "pip", "install", "--python", python]
    else:
        no_pip = [] if spec.requirements else ["--without-pip"]  # nothing to install: skip ensurepip's seconds
        steps = [[base, "-m", "venv", *site, *no_pip, str(target)]]
        install = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    if spec.requirements:
        steps.append([*install, *spec.pip_install_options, *index, "-r", str(requirements_file)])
    return steps


def prepare_venv(spec: VenvSpec, cache_root: Path, on_line: Callable[[str], None]) -> Path:
    """The environment's python, built once per spec under ``cache_root`` (one builder at a time; a half-built one
    is built again), then reused."""
    base = base_python(spec.python_version)
    target = cache_root / f"venv-{spec.key(base)}"
    python = target / "bin" / "python"
    if (target / DONE_FILE).exists():
        on_line(f"Reusing cached virtual environment {target}")
        return python
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / DONE_FILE).exists():
            on_line(f"Reusing cached virtual environment {target} (built meanwhile)")
            return python
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        requirements_file = target / "requirements.txt"
        requirements_file.write_text("\n".join(spec.requirements) + "\n")
        uv = shutil.which("uv")
        on_line(f"Creating virtual environment {target} with {'uv' if uv else 'venv and pip'}: "
                f"{', '.join(spec.requirements) or 'no requirements'}")
        for argv in venv_commands(spec, base, target, requirements_file, uv):
            result = GroupProcess(argv, keep_lines=10).run(on_line)
            if result.returncode != 0:
                shutil.rmtree(target, ignore_errors=True)
                raise TaskFailure(f"creating the virtual environment failed: {' '.join(argv[:4])} ... exited with "
                                  f"code {result.returncode}; last output:\n" + "\n".join(result.last_lines))
        (target / DONE_FILE).write_text(json.dumps(asdict(spec)))
    return python


def _requirement_lines(requirements: Iterable[str]) -> tuple[str, ...]:
    lines = (line.strip() for item in requirements for line in str(item).splitlines())
    return tuple(sorted({line for line in lines if line and not line.startswith("#")}))


class _OtherInterpreterOperator(PythonOperator):
    """Runs ``python_callable`` in the interpreter :meth:`interpreter` gives."""

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        serializer: str | None = None,
        use_dill: bool = False,
        string_args: Iterable[str] | None = None,
        expect_airflow: bool = True,
        skip_on_exit_code: int | Iterable[int] | None = None,
        env_vars: dict[str, str] | None = None,
        inherit_env: bool = True,
        **kwargs: Any,
    ) -> None:
        if not inspect.isfunction(python_callable) or python_callable.__name__ == "<lambda>":
            raise DagDefinitionError(f"task '{kwargs.get('task_id')}': {type(self).__name__} runs a function's "
                                     f"source in another interpreter; give a def function, not {python_callable!r}",
                                     task_id=kwargs.get("task_id"))
        super().__init__(python_callable=python_callable, **kwargs)
        self.serializer = serializer or ("dill" if use_dill else "pickle")
        if self.serializer not in SERIALIZERS:
            raise self._error(f"serializer {self.serializer!r} is not supported; use one of {', '.join(SERIALIZERS)}")
        if self.serializer in ("cloudpickle", "dill") and importlib.util.find_spec(self.serializer) is None:
            raise self._error(f"serializer {self.serializer!r} needs the {self.serializer} package in sparkflow's "
                              f"environment: pip install {self.serializer} (or use serializer='pickle' or 'json')")
        self.string_args = list(string_args or [])
        self.expect_airflow = expect_airflow  # there is no Airflow to expect: accepted for the signature
        codes = [skip_on_exit_code] if isinstance(skip_on_exit_code, int) else list(skip_on_exit_code or [])
        self.skip_on_exit_code = codes
        self.env_vars = dict(env_vars or {})
        self.inherit_env = inherit_env
        self._process: GroupProcess | None = None

    def interpreter(self, context: Context) -> str:
        raise NotImplementedError

    def _arguments(self, context: Context) -> dict[str, Any]:
        plain = {k: v for k, v in {**context, "templates_dict": self.templates_dict}.items()
                 if k in SERIALIZABLE_CONTEXT_KEYS}
        asked = determine_kwargs(self.python_callable, tuple(self.op_args), plain)
        return {"args": list(self.op_args), "kwargs": {**asked, **self.op_kwargs}}

    def execute(self, context: Context) -> Any:
        python = self.interpreter(context)
        arguments = self._arguments(context)
        env = {**(os.environ if self.inherit_env else {}), **self.env_vars}
        with tempfile.TemporaryDirectory(prefix="sparkflow-call-") as tmp:
            script, given, output = write_call(Path(tmp), self.python_callable, self.serializer,
                                               arguments["args"], arguments["kwargs"], self.string_args)
            self.log.info("Running %s() with %s", self.python_callable.__name__, python)
            self._process = GroupProcess([python, str(script), str(given), str(output)], env=env, cwd=tmp)
            result = self._process.run(self.log.info)
            if result.returncode in self.skip_on_exit_code:
                raise SkipTask(f"{self.python_callable.__name__}() exited with code {result.returncode}; skipping")
            if result.returncode != 0:
                raise TaskFailure(f"{self.python_callable.__name__}() failed in {python} (exit code "
                                  f"{result.returncode}); last output:\n" + "\n".join(result.last_lines))
            with output.open("rb" if self.serializer != "json" else "r") as given_back:
                value = _serializer_module(self.serializer).load(given_back)
        if self.show_return_value_in_logs:
            self.log.info("Done. Returned value was: %s", value)
        return value

    def on_kill(self) -> None:
        if self._process is not None:
            self._process.kill()


class PythonVirtualenvOperator(_OtherInterpreterOperator):
    """Runs the callable in a virtual environment with ``requirements`` (a list, or a requirements file's lines;
    a ``.txt`` name is read as a template file), built with ``uv`` when present, else ``python -m venv`` and pip,
    and cached by a hash of the requirements and the Python version under ``venv_cache_path`` (default
    ``$SPARKFLOW_HOME/venvs``), so later runs do not reinstall."""

    template_fields = (*PythonOperator.template_fields, "requirements", "index_urls",  # type: ignore[assignment]
                       "venv_cache_path")
    template_ext = (".txt",)

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        requirements: None | Iterable[str] | str = None,
        python_version: str | None = None,
        system_site_packages: bool = True,
        pip_install_options: list[str] | None = None,
        index_urls: None | list[str] | str = None,
        venv_cache_path: None | os.PathLike[str] | str = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(python_callable=python_callable, **kwargs)
        self.requirements = [requirements] if isinstance(requirements, str) else list(requirements or [])
        self.python_version = str(python_version) if python_version is not None else None
        self.system_site_packages = system_site_packages
        self.pip_install_options = list(pip_install_options or [])
        self.index_urls = [index_urls] if isinstance(index_urls, str) else list(index_urls or [])
        self.venv_cache_path = str(venv_cache_path) if venv_cache_path is not None else None

    def venv_spec(self) -> VenvSpec:
        requirements = list(_requirement_lines(self.requirements))
        if self.serializer != "pickle" and self.serializer != "json" and self.serializer not in requirements:
            requirements.append(self.serializer)  # the environment loads the arguments with it
        return VenvSpec(tuple(sorted(requirements)), self.python_version, self.system_site_packages,
                        tuple(self.pip_install_options), tuple(self.index_urls))

    def interpreter(self, context: Context) -> str:
        cache = Path(self.venv_cache_path) if self.venv_cache_path else load_settings().resolved_home / "venvs"
        return str(prepare_venv(self.venv_spec(), cache.expanduser(), self.log.info))


class ExternalPythonOperator(_OtherInterpreterOperator):
    """Runs the callable with the interpreter at ``python`` (another virtual environment, say)."""

    template_fields = (*PythonOperator.template_fields, "python")  # type: ignore[assignment]

    def __init__(self, *, python: str, python_callable: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(python_callable=python_callable, **kwargs)
        if not python:
            raise self._error("python must be the path of a Python interpreter, e.g. /opt/venv/bin/python")
        self.python = python

    def interpreter(self, context: Context) -> str:
        if not os.path.isfile(self.python) or not os.access(self.python, os.X_OK):
            raise TaskFailure(f"task '{self.task_id}': python {self.python!r} is not an executable file; give the "
                              "path of an existing interpreter")
        return self.python


class _Branching:
    """The callable's result names the downstream task(s) to follow, as in BranchPythonOperator."""

    def execute(self, context: Context) -> Any:
        chosen = super().execute(context)  # type: ignore[misc]
        follow_branch(self, context, chosen)  # type: ignore[arg-type]
        return chosen


class BranchPythonVirtualenvOperator(_Branching, PythonVirtualenvOperator):
    pass


class BranchExternalPythonOperator(_Branching, ExternalPythonOperator):
    pass


class _MultipleOutputs:
    """``@task.virtualenv`` / ``@task.external_python``: a dict result also pushed key by key with
    ``multiple_outputs``."""

    def execute(self, context: Context) -> Any:
        result = super().execute(context)  # type: ignore[misc]
        if getattr(self, "multiple_outputs", False) and isinstance(result, Mapping):
            for key, value in result.items():
                if key != "return_value":
                    context["ti"].xcom_push(str(key), value)
        return result


class DecoratedVirtualenvOperator(_MultipleOutputs, PythonVirtualenvOperator):
    pass


class DecoratedExternalPythonOperator(_MultipleOutputs, ExternalPythonOperator):
    pass


class DecoratedBranchVirtualenvOperator(_MultipleOutputs, BranchPythonVirtualenvOperator):
    pass


class DecoratedBranchExternalPythonOperator(_MultipleOutputs, BranchExternalPythonOperator):
    pass
