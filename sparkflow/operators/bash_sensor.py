"""BashSensor: done when a bash command exits 0 (Airflow's semantics, ``retry_exit_code`` included)."""

from __future__ import annotations

from typing import Any

from sparkflow.definitions.context import Context
from sparkflow.exceptions import FailTaskNoRetry
from sparkflow.operators.bash import bash_environment
from sparkflow.operators.sensors import BaseSensorOperator
from sparkflow.process import GroupProcess


class BashSensor(BaseSensorOperator):
    """Pokes by running ``bash_command``: exit 0 is done. Any other code means "not yet", unless
    ``retry_exit_code`` is set: then only that code means "not yet" and any other fails the task."""

    template_fields = ("bash_command", "env")
    template_ext = (".sh", ".bash")

    def __init__(self, *, bash_command: str, env: dict[str, str] | None = None, output_encoding: str = "utf-8",
                 retry_exit_code: int | None = None, cwd: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bash_command = bash_command
        self.env = env
        self.output_encoding = output_encoding
        self.retry_exit_code = retry_exit_code
        self.cwd = cwd
        self._process: GroupProcess | None = None

    def poke(self, context: Context) -> bool:
        self._process = GroupProcess(["bash", "-c", self.bash_command], env=bash_environment(self.env, False, context),
                                     cwd=self.cwd)
        code = self._process.run(self.log.info).returncode
        self.log.info("Command exited with return code %s", code)
        if code == 0:
            return True
        if self.retry_exit_code is None or code == self.retry_exit_code:
            return False
        raise FailTaskNoRetry(f"sensor '{self.task_id}': command exited with return code {code} "
                              f"(retry_exit_code is {self.retry_exit_code})")

    def on_kill(self) -> None:
        if self._process is not None:
            self._process.kill()

    def _poke_description(self) -> str:
        return f"with command {self.bash_command!r}"
