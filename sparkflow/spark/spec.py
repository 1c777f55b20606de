"""What to submit (SparkSubmitSpec) and where (SparkTarget): frozen values the argv builder turns into argv."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sparkflow.connections import Connection
from sparkflow.exceptions import InvalidConnection

ALLOWED_SPARK_BINARIES = ("spark-submit", "spark2-submit", "spark3-submit")
DEFAULT_SPARK_BINARY = "spark-submit"


@dataclass(frozen=True)
class SparkTarget:
    """A resolved Spark connection: the master URL and the connection-level options."""

    master: str
    deploy_mode: str | None = None
    queue: str | None = None
    namespace: str | None = None
    principal: str | None = None
    keytab: str | None = None
    spark_binary: str = DEFAULT_SPARK_BINARY
    rest_scheme: str = "http"
    rest_port: int = 6066
    master_web_ui: str | None = None  # standalone master's web UI (for driver logs in cluster mode)

    @property
    def cluster_manager(self) -> str:
        """local, standalone, yarn, k8s or mesos, classified by the URL's scheme (never by substring)."""
        return classify_master(self.master)


def classify_master(master: str) -> str:
    if master == "local" or master.startswith("local["):
        return "local"
    if master == "yarn":
        return "yarn"
    scheme = urlsplit(master).scheme
    return {"spark": "standalone", "k8s": "k8s", "mesos": "mesos"}.get(scheme, "unknown")


@dataclass(frozen=True)
class SparkSubmitSpec:
    """The operator-level arguments of one spark-submit, with the provider's names."""

    application: str
    conf: dict[str, str] = field(default_factory=dict)
    files: str | None = None
    py_files: str | None = None
    archives: str | None = None
    driver_class_path: str | None = None
    jars: str | None = None
    java_class: str | None = None
    packages: str | None = None
    exclude_packages: str | None = None
    repositories: str | None = None
    total_executor_cores: int | None = None
    executor_cores: int | None = None
    executor_memory: str | None = None
    driver_memory: str | None = None
    keytab: str | None = None
    principal: str | None = None
    proxy_user: str | None = None
    name: str = "default-name"
    num_executors: int | None = None
    application_args: tuple[str, ...] = ()
    env_vars: dict[str, str] = field(default_factory=dict)
    verbose: bool = False
    spark_binary: str | None = None
    properties_file: str | None = None
    yarn_queue: str | None = None
    deploy_mode: str | None = None
    use_krb5ccache: bool = False


def resolve_target(conn: Connection, spec: SparkSubmitSpec) -> SparkTarget:
    """The provider's connection resolution; operator arguments override the connection's extras."""
    extra = conn.extra_dejson
    master = master_url(conn)
    binary = spec.spark_binary
    if not binary:
        binary = extra.get("spark-binary", DEFAULT_SPARK_BINARY)
        if binary not in ALLOWED_SPARK_BINARIES:
            raise InvalidConnection(
                f"connection '{conn.conn_id}': extra 'spark-binary' has bad value {binary!r}; "
                f"use one of {', '.join(ALLOWED_SPARK_BINARIES)} (or pass spark_binary= to the operator)"
            )
    rest_port = extra.get("rest-port", 6066)
    try:
        rest_port = int(rest_port)
    except (TypeError, ValueError):
        raise InvalidConnection(
            f"connection '{conn.conn_id}': extra 'rest-port' has bad value {rest_port!r}; use a port number"
        ) from None
    return SparkTarget(
        master=master,
        deploy_mode=spec.deploy_mode or extra.get("deploy-mode"),
        queue=spec.yarn_queue or extra.get("queue"),
        namespace=extra.get("namespace"),
        principal=spec.principal if spec.principal is not None else extra.get("principal"),
        keytab=spec.keytab if spec.keytab is not None else extra.get("keytab"),
        spark_binary=binary,
        rest_scheme=extra.get("rest-scheme", "http"),
        rest_port=rest_port,
        master_web_ui=extra.get("master-web-ui") or _default_master_ui(master),
    )


def _default_master_ui(master: str) -> str | None:
    if classify_master(master) != "standalone":
        return None
    return f"http://{urlsplit(master).hostname}:8080"


def master_url(conn: Connection) -> str:
    """A spark-type host that is already a master URL is used as is; otherwise ``conn_type://host[:port]``."""
    host = (conn.host or "").strip()
    if not host:
        raise InvalidConnection(
            f"connection '{conn.conn_id}' has no host; set it to a master URL such as local[*], yarn or "
            "spark://host:7077"
        )
    is_url = "://" in host or host in ("yarn", "local") or host.startswith("local[")
    if is_url:
        if conn.port and classify_master(host) in ("standalone", "mesos") and not urlsplit(host).port:
            return f"{host}:{conn.port}"
        return host
    conn_type = conn.conn_type if conn.conn_type not in ("spark", "") else "spark"
    return f"{conn_type}://{host}:{conn.port}" if conn.port else f"{conn_type}://{host}"
