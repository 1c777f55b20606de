"""A YARN application after spark-submit handed it over (cluster mode): its state and final status, and its kill.

Two ways, as in the Airflow provider: the ResourceManager REST API (``yarn_track_via_rm_api=True``, the
connection's ``yarn_resourcemanager_webapp_address`` extra; ``GET /ws/v1/cluster/apps/<id>`` and
``PUT .../state {"state": "KILLED"}``), or the ``yarn`` CLI (``yarn application -status <id>`` /
``yarn application -kill <id>``) found on PATH.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sparkflow.exceptions import SparkSubmitFailed
from sparkflow.spark.tracking import Unavailable, request_json

ACTIVE_STATES = frozenset({"NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING"})
# The provider polls the ResourceManager at most every 10 s, whatever status_poll_interval says.
MIN_RM_POLL_SECONDS = 10.0
CLI_TIMEOUT_SECONDS = 30.0
_CLI_FIELD = re.compile(r"^\s*(State|Final-State|Diagnostics)\s*:\s*(.*)$", re.M)


class YarnCliMissing(SparkSubmitFailed):
    """The yarn CLI could not be run here."""


@dataclass(frozen=True)
class YarnReport:
    app_id: str
    state: str  # NEW ... RUNNING, FINISHED, FAILED, KILLED
    final_status: str  # UNDEFINED while it runs, then SUCCEEDED, FAILED or KILLED
    diagnostics: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "FINISHED" and self.final_status == "SUCCEEDED"

    def normalized(self) -> str:
        """The provider's query_yarn_application_status(): an active state as is, else SUCCEEDED or FAILED."""
        if self.active:
            return self.state
        return "SUCCEEDED" if self.succeeded else "FAILED"

    def failure(self) -> str:
        diagnostics = f"\nDiagnostics: {self.diagnostics}" if self.diagnostics else ""
        return f"YARN application {self.app_id} ended with state {self.state}, final status {self.final_status}" + (
            diagnostics
        )


class YarnClient:
    """Asks about one cluster's applications, through the ResourceManager (``rm_url``) or the yarn CLI."""

    def __init__(self, rm_url: str | None, auth: Any = None, env: Mapping[str, str] | None = None,
                 yarn_binary: str = "yarn") -> None:
        self.rm_url = rm_url.rstrip("/") if rm_url else None
        self.auth = auth
        self.env = dict(env) if env is not None else None
        self.yarn_binary = yarn_binary

    def _headers(self) -> dict[str, str]:
        """``yarn_rm_auth``: a (user, password) pair for basic auth, a dict of headers, or a callable that
        returns headers (a requests AuthBase is not usable without requests; the README says so)."""
        import base64

        auth = self.auth
        if auth is None:
            return {}
        if isinstance(auth, tuple) and len(auth) == 2:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            return {"Authorization": f"Basic {token}"}
        if isinstance(auth, Mapping):
            return {str(k): str(v) for k, v in auth.items()}
        if callable(auth):
            return dict(auth())
        raise SparkSubmitFailed(
            f"yarn_rm_auth has unsupported type {type(auth).__name__}; give (user, password), a dict of headers "
            "or a callable returning headers"
        )

    def report(self, app_id: str) -> YarnReport:
        """The application's state now; SparkSubmitFailed when it cannot be had (a transient error for callers
        that poll)."""
        if self.rm_url:
            return self._rm_report(app_id)
        return self._cli_report(app_id)

    def _rm_report(self, app_id: str) -> YarnReport:
        url = f"{self.rm_url}/ws/v1/cluster/apps/{app_id}"
        try:
            status, answer = request_json(url, 30.0, headers=self._headers())
        except Unavailable as exc:
            raise SparkSubmitFailed(f"YARN ResourceManager request for {app_id} failed: {exc}") from None
        if status != 200:
            raise SparkSubmitFailed(f"YARN ResourceManager answered HTTP {status} for {app_id}: {str(answer)[:200]}")
        try:
            app = answer["app"]
            return YarnReport(app_id, str(app["state"]), str(app["finalStatus"]), str(app.get("diagnostics") or ""))
        except (KeyError, TypeError):
            raise SparkSubmitFailed(
                f"YARN ResourceManager gave an unexpected answer for {app_id}: {str(answer)[:200]}"
            ) from None

    def _cli_report(self, app_id: str) -> YarnReport:
        done = self._cli("-status", app_id)
        fields = {m.group(1): m.group(2).strip() for m in _CLI_FIELD.finditer(done.stdout)}
        if done.returncode != 0 or "State" not in fields:
            raise SparkSubmitFailed(
                f"`{self.yarn_binary} application -status {app_id}` exited with {done.returncode}: "
                f"{done.stdout.strip()[-300:]}"
            )
        return YarnReport(app_id, fields["State"], fields.get("Final-State", "UNDEFINED"),
                          fields.get("Diagnostics", ""))

    def kill(self, app_id: str) -> str:
        """Kill the application; returns what happened, for the log (a kill never raises)."""
        if self.rm_url:
            try:
                status, _ = request_json(f"{self.rm_url}/ws/v1/cluster/apps/{app_id}/state", 30.0, "PUT",
                                         {"state": "KILLED"}, self._headers())
            except (Unavailable, SparkSubmitFailed) as exc:
                return f"the ResourceManager kill request failed: {exc}"
            return f"the ResourceManager answered HTTP {status}"
        try:
            done = self._cli("-kill", app_id)
        except SparkSubmitFailed as exc:
            return str(exc)
        return f"`{self.yarn_binary} application -kill` exited with {done.returncode}"

    def _cli(self, action: str, app_id: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([self.yarn_binary, "application", action, app_id], env=self.env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=CLI_TIMEOUT_SECONDS, check=False)
        except OSError as exc:
            raise YarnCliMissing(f"`{self.yarn_binary} application {action} {app_id}` could not run: {exc}") from None
        except subprocess.TimeoutExpired as exc:
            raise SparkSubmitFailed(f"`{self.yarn_binary} application {action} {app_id}` failed: {exc}") from None
