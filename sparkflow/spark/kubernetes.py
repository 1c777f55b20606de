"""A Spark driver pod on Kubernetes (cluster mode): its phase and its deletion, through the Kubernetes API.

The API server is the one spark-submit talks to (``k8s://https://host:port`` -> ``https://host:port``). In a pod,
the service account's token and CA (``/var/run/secrets/kubernetes.io/serviceaccount``) are used, as the
provider's in-cluster client does; elsewhere the token of ``spark.kubernetes.authenticate.submission.oauthToken``
in ``conf``, if any. sparkflow reads no kubeconfig (the README says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sparkflow.exceptions import SparkSubmitFailed
from sparkflow.spark.tracking import Unavailable, request_json

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
OAUTH_TOKEN_CONF = "spark.kubernetes.authenticate.submission.oauthToken"
# The provider polls the API at most every 20 s, whatever status_poll_interval says.
MIN_POLL_SECONDS = 20.0
ACTIVE_PHASES = frozenset({"Pending", "Running"})


@dataclass(frozen=True)
class PodStatus:
    name: str
    phase: str  # Pending, Running, Succeeded, Failed, Unknown; NotFound when the pod is gone
    exit_code: int | None = None
    reason: str | None = None

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    def failure(self) -> str:
        detail = f" exit_code={self.exit_code} reason={self.reason}" if self.exit_code is not None else ""
        return f"Spark driver pod {self.name} ended in phase {self.phase}{detail}"


def api_server(master: str) -> str:
    """``k8s://https://host:443`` -> ``https://host:443``; a bare ``k8s://host`` is https, as in Spark."""
    rest = master.split("://", 1)[1] if master.startswith("k8s://") else master
    return (rest if "://" in rest else f"https://{rest}").rstrip("/")


class KubernetesClient:
    def __init__(self, base_url: str, conf: Mapping[str, str] = {},
                 service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers: dict[str, str] = {}
        self.context: Any = None
        token = conf.get(OAUTH_TOKEN_CONF)
        token_file = service_account_dir / "token"
        if not token and token_file.is_file():
            token = token_file.read_text().strip()
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        ca_file = service_account_dir / "ca.crt"
        if self.base_url.startswith("https://") and ca_file.is_file():
            import ssl

            self.context = ssl.create_default_context(cafile=str(ca_file))

    def _pod_url(self, namespace: str, pod: str) -> str:
        return f"{self.base_url}/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(pod, safe='')}"

    def pod_status(self, namespace: str, pod: str) -> PodStatus:
        """The pod's phase now (NotFound once deleted); SparkSubmitFailed when the API does not answer."""
        try:
            status, answer = request_json(self._pod_url(namespace, pod), 30.0, headers=self.headers,
                                          context=self.context)
        except Unavailable as exc:
            raise SparkSubmitFailed(f"Kubernetes API request for pod {pod} failed: {exc}") from None
        if status == 404:
            return PodStatus(pod, "NotFound")
        if status != 200 or not isinstance(answer, dict):
            raise SparkSubmitFailed(f"Kubernetes API answered HTTP {status} for pod {pod}: {str(answer)[:200]}")
        pod_status = answer.get("status") or {}
        exit_code = reason = None
        for container in pod_status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated:
                exit_code, reason = terminated.get("exitCode"), terminated.get("reason")
                break
        return PodStatus(pod, str(pod_status.get("phase") or "Pending"), exit_code, reason)

    def delete_pod(self, namespace: str, pod: str) -> str:
        """Delete the pod; returns what happened, for the log (never raises)."""
        try:
            status, _ = request_json(self._pod_url(namespace, pod), 30.0, "DELETE", {}, self.headers, self.context)
        except Unavailable as exc:
            return f"the delete request failed: {exc}"
        return "deleted" if status in (200, 202) else ("already gone" if status == 404 else f"HTTP {status}")
