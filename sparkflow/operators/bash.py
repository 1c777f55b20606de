"""BashOperator, as in Airflow: runs a bash command, streams its output, the last line goes to XCom."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context
from sparkflow.exceptions import SkipTask, TaskFailure
from sparkflow.process import GroupProcess


def bash_environment(env: dict[str, str] | None, append_env: bool, context: Context) -> dict[str, str]:
    """The command's environment: ``env`` alone, or added to this process's (``append_env``, or no ``env``),
    with the AIRFLOW_CTX_* names Airflow gives bash tasks."""
    result = dict(os.environ) if env is None or append_env else {}
    result.update(env or {})
    ti = context.get("ti")
    if ti is not None:
        result.update(
            AIRFLOW_CTX_DAG_ID=ti.dag_id, AIRFLOW_CTX_TASK_ID=ti.task_id, AIRFLOW_CTX_DAG_RUN_ID=ti.run_id,
            AIRFLOW_CTX_TRY_NUMBER=str(ti.try_number),
        )
    return result


def _unchanged(output: str) -> Any:
    return output


class BashOperator(BaseOperator):
    """``output_processor`` turns the last output line into the XCom value (Airflow 2.10+), e.g. ``json.loads``;
    an exit code in ``skip_on_exit_code`` (default 99) skips the task; ``append_env`` adds ``env`` to the
    worker's environment instead of replacing it."""

    template_fields = ("bash_command", "env", "cwd")
    template_ext = (".sh", ".bash")
    ui_color = "#f0ede4"

    def __init__(
        self,
        *,
        bash_command: str,
        env: dict[str, str] | None = None,
        append_env: bool = False,
        output_encoding: str = "utf-8",
        skip_on_exit_code: int | list[int] | None = 99,
        cwd: str | None = None,
        output_processor: Callable[[str], Any] = _unchanged,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(output_processor):
            raise self._error(f"output_processor must be callable (e.g. json.loads), got {output_processor!r}")
        self.output_processor = output_processor
        self.bash_command = bash_command
        self.env = env
        self.append_env = append_env
        self.output_encoding = output_encoding
        if skip_on_exit_code is None:
            self.skip_on_exit_code: list[int] = []
        elif isinstance(skip_on_exit_code, int):
            self.skip_on_exit_code = [skip_on_exit_code]
        else:
            self.skip_on_exit_code = list(skip_on_exit_code)
        self.cwd = cwd
        self._process: GroupProcess | None = None

    def _child_env(self, context: Context) -> dict[str, str]:
        return bash_environment(self.env, self.append_env, context)

    def execute(self, context: Context) -> Any:
        if self.cwd is not None and not os.path.isdir(self.cwd):
            raise TaskFailure(f"task '{self.task_id}': cwd {self.cwd!r} does not exist or is not a directory")
        self._process = GroupProcess(["bash", "-c", self.bash_command], env=self._child_env(context), cwd=self.cwd)
        self.log.info("Running command: %s", self.bash_command)
        result = self._process.run(self.log.info)
        self.log.info("Command exited with return code %s", result.returncode)
        if result.returncode in self.skip_on_exit_code:
            raise SkipTask(f"bash command exited with code {result.returncode}; skipping")
        if result.returncode != 0:
            raise TaskFailure(f"Bash command failed. The command returned a non-zero exit code {result.returncode}.")
        last = result.last_lines[-1] if result.last_lines else None
        return self.output_processor(last) if last is not None else None

    def on_kill(self) -> None:
        if self._process is not None:
            self._process.kill()
