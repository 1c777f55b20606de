"""What to submit (SparkSubmitSpec: the one definition of the spark-submit options) and where (SparkTarget).

SparkSubmitSpec's fields are the Airflow provider's SparkSubmitHook constructor arguments, in its order and with
its defaults: the operators, the compat hooks and the argv builder all derive their options from it instead of
spelling the list out again.
"""

from __future__ import annotations

import ast
import base64
import binascii
import functools
import inspect
import json
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from sparkflow.connections import Connection
from sparkflow.exceptions import InvalidConnection, UserError

ALLOWED_SPARK_BINARIES = ("spark-submit", "spark2-submit", "spark3-submit")
DEFAULT_SPARK_BINARY = "spark-submit"
K8S_NAMESPACE_CONF = "spark.kubernetes.namespace"
YARN_RM_ADDRESS_EXTRA = "yarn_resourcemanager_webapp_address"


@dataclass(frozen=True)
class SparkSubmitSpec:
    """The options of one spark-submit. Field order = the provider hook's positional order (up to deploy_mode,
    then its keyword-only arguments); ``application`` is what ``submit(application)`` gets."""

    conf: Mapping[str, str] = field(default_factory=dict)
    conn_id: str = "spark_default"
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
    status_poll_interval: float = 1
    application_args: tuple[str, ...] = ()
    env_vars: Mapping[str, str] = field(default_factory=dict)
    verbose: bool = False
    spark_binary: str | None = None
    properties_file: str | None = None
    yarn_queue: str | None = None
    deploy_mode: str | None = None
    # keyword-only in the provider's hook
    use_krb5ccache: bool = False
    post_submit_commands: tuple[str, ...] = ()
    track_driver_via_k8s_api: bool = False
    yarn_track_via_rm_api: bool = False
    yarn_rm_auth: Any = None
    application: str = ""

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> SparkSubmitSpec:
        """A spec from rendered operator/hook values (None means the default); a bad value is a UserError."""
        given = {k: v for k, v in values.items() if v is not None}
        unknown = sorted(set(given) - set(SPEC_FIELDS))
        if unknown:
            raise UserError(f"unknown Spark option {unknown[0]!r}; known: {', '.join(SPEC_FIELDS)}")
        if "conf" in given:
            given["conf"] = {str(k): str(v) for k, v in _as_mapping("conf", given["conf"]).items()}
        if "env_vars" in given:
            given["env_vars"] = {str(k): str(v) for k, v in _as_mapping("env_vars", given["env_vars"]).items()}
        if "application_args" in given:
            given["application_args"] = tuple(str(a) for a in _as_list("application_args", given["application_args"]))
        if "post_submit_commands" in given:
            given["post_submit_commands"] = tuple(
                str(c) for c in _as_list("post_submit_commands", given["post_submit_commands"])
            )
        spec = cls(**given)
        problem = spec.problem()
        if problem:
            raise UserError(problem)
        return spec

    def problem(self) -> str | None:
        """What is wrong with these options (None when nothing): checked at DAG load and again at run time."""
        for name in ("total_executor_cores", "executor_cores", "num_executors"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                return f"{name} must be a positive integer, got {value!r}"
        interval = self.status_poll_interval
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            return f"status_poll_interval must be a positive number of seconds, got {interval!r}"
        if self.deploy_mode is not None and self.deploy_mode not in ("client", "cluster"):
            return f"deploy_mode has bad value {self.deploy_mode!r}; use client or cluster"
        if not isinstance(self.conn_id, str) or not self.conn_id:
            return f"conn_id must name a Spark connection, got {self.conn_id!r}"
        return None

    def with_conf(self, **conf: str) -> SparkSubmitSpec:
        """The spec with these properties added where the user did not set them."""
        return replace(self, conf={**conf, **self.conf})


SPEC_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SparkSubmitSpec))
# The provider hook's positional parameters (SparkSubmitHook(conf, conn_id, files, ...)).
HOOK_POSITIONAL: tuple[str, ...] = SPEC_FIELDS[: SPEC_FIELDS.index("deploy_mode") + 1]
HOOK_KEYWORD_ONLY: tuple[str, ...] = SPEC_FIELDS[len(HOOK_POSITIONAL): SPEC_FIELDS.index("application")]


@functools.cache  # asked for every option of every Spark operator a DAG file builds
def spec_default(name: str) -> Any:
    spec_field = next(f for f in fields(SparkSubmitSpec) if f.name == name)
    if spec_field.default_factory is not MISSING:
        return None  # a collection: None stands for "empty" in a constructor signature, as in the provider
    return spec_field.default


def spec_parameters(
    names: tuple[str, ...], kind: inspect._ParameterKind, overrides: Mapping[str, Any] = {}
) -> list[inspect.Parameter]:
    """inspect.Parameters of these options with the provider's defaults, for a constructor's __signature__."""
    return [inspect.Parameter(n, kind, default=overrides.get(n, spec_default(n))) for n in names]


def _as_mapping(name: str, value: Any) -> Mapping[str, Any]:
    """A dict as given, or a rendered template that spells one (JSON or a Python literal)."""
    if isinstance(value, str):
        value = _literal(name, value)
    if not isinstance(value, Mapping):
        raise UserError(f"{name} must be a dict, got {type(value).__name__} {str(value)[:80]!r}")
    return value


def _as_list(name: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        value = _literal(name, value)
    if not isinstance(value, (list, tuple)):
        raise UserError(f"{name} must be a list, got {type(value).__name__} {str(value)[:80]!r}")
    return list(value)


def _literal(name: str, text: str) -> Any:
    """A template such as ``"{{ var.json.conf }}"`` renders to text: read it back as JSON or a Python literal."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        raise UserError(
            f"{name} rendered to {text[:80]!r}, which is neither JSON nor a Python literal; "
            f"give {name} as a dict/list or a template that renders to one"
        ) from None


@dataclass(frozen=True)
class SparkTarget:
    """A resolved Spark connection: the master URL and the connection-level options."""

    master: str
    deploy_mode: str | None = None
    queue: str | None = None
    namespace: str | None = None
    principal: str | None = None
    keytab: str | None = None
    keytab_base64: str | None = None  # the connection's keytab extra: written to a private file for the run
    spark_binary: str = DEFAULT_SPARK_BINARY
    rest_scheme: str = "http"
    rest_port: int = 6066
    master_web_ui: str | None = None  # standalone master's web UI (for driver logs in cluster mode)
    yarn_rm_url: str | None = None  # extra yarn_resourcemanager_webapp_address

    @property
    def cluster_manager(self) -> str:
        """local, standalone, yarn, k8s or mesos, classified by the URL's scheme (never by substring)."""
        return classify_master(self.master)

    @property
    def cluster_mode(self) -> str | None:
        """standalone, yarn or k8s when the driver runs on that cluster (deploy mode cluster), else None."""
        manager = self.cluster_manager
        if self.deploy_mode == "cluster" and manager in ("standalone", "yarn", "k8s"):
            return manager
        return None


def classify_master(master: str) -> str:
    if master == "local" or master.startswith("local["):
        return "local"
    if master == "yarn":
        return "yarn"
    scheme = urlsplit(master).scheme if "://" in master else ""
    return {"spark": "standalone", "k8s": "k8s", "mesos": "mesos", "yarn": "yarn"}.get(scheme, "unknown")


def resolve_target(conn: Connection, spec: SparkSubmitSpec) -> SparkTarget:
    """The provider's connection resolution; operator arguments override the connection's extras, and a
    ``spark.kubernetes.namespace`` in ``conf`` wins over the connection's namespace."""
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
    if extra.get("spark-home"):
        raise InvalidConnection(
            f"connection '{conn.conn_id}': extra 'spark-home' is not supported (nor by the provider); remove it "
            "and set 'spark-binary' or put spark-submit on PATH"
        )
    rest_port = extra.get("rest-port", 6066)
    try:
        rest_port = int(rest_port)
    except (TypeError, ValueError):
        raise InvalidConnection(
            f"connection '{conn.conn_id}': extra 'rest-port' has bad value {rest_port!r}; use a port number"
        ) from None
    keytab, keytab_base64 = spec.keytab, None
    if keytab is None and extra.get("keytab"):
        keytab_base64 = _checked_base64(conn.conn_id, str(extra["keytab"]))
    rm_url = str(extra.get(YARN_RM_ADDRESS_EXTRA) or "").strip()
    return SparkTarget(
        master=master,
        deploy_mode=spec.deploy_mode or extra.get("deploy-mode"),
        queue=spec.yarn_queue or extra.get("queue"),
        namespace=spec.conf.get(K8S_NAMESPACE_CONF) or extra.get("namespace"),
        principal=spec.principal if spec.principal is not None else extra.get("principal"),
        keytab=keytab,
        keytab_base64=keytab_base64,
        spark_binary=binary,
        rest_scheme=extra.get("rest-scheme", "http"),
        rest_port=rest_port,
        master_web_ui=extra.get("master-web-ui") or _default_master_ui(master),
        yarn_rm_url=(rm_url if "://" in rm_url else f"http://{rm_url}").rstrip("/") if rm_url else None,
    )


def _checked_base64(conn_id: str, value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidConnection(
            f"connection '{conn_id}': extra 'keytab' is not base64; set it to the output of "
            "`base64 -w0 <your.keytab>` (or pass keytab=<path> to the operator)"
        ) from None
    return value


def _default_master_ui(master: str) -> str | None:
    if classify_master(master) != "standalone":
        return None
    hosts = standalone_hosts(master)
    return f"http://{_bracketed(hosts[0][0])}:8080" if hosts else None


def standalone_hosts(master: str) -> list[tuple[str, int]]:
    """(host, port) of every master of ``spark://a:7077,b:7077`` (HA) or ``spark://[::1]:7077`` (IPv6)."""
    found = []
    for part in master.split("://", 1)[-1].split(","):
        part = part.strip().rstrip("/")
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port = rest.lstrip(":")
        elif part.count(":") == 1:
            host, _, port = part.partition(":")
        else:
            host, port = part, ""
        if host:
            found.append((host, int(port) if port.isdigit() else 7077))
    return found


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def rest_urls(target: SparkTarget) -> list[str]:
    """``<rest-scheme>://<host>:<rest-port>`` of every master (HA masters each have a REST server)."""
    hosts = standalone_hosts(target.master)
    return [f"{target.rest_scheme}://{_bracketed(host)}:{target.rest_port}" for host, _ in hosts]


def master_url(conn: Connection) -> str:
    """The provider's rule: a spark-type host that is already a master URL (or has no port) is used as is,
    otherwise ``conn_type://host``; then ``:port`` when the connection has one. sparkflow adds ``spark://`` to a
    bare standalone host and does not repeat a port the URL already has."""
    host = (conn.host or "").strip()
    if not host:
        raise InvalidConnection(
            f"connection '{conn.conn_id}' has no host; set it to a master URL such as local[*], yarn or "
            "spark://host:7077"
        )
    is_url = "://" in host or host in ("yarn", "local") or host.startswith("local[")
    conn_type = conn.conn_type if conn.conn_type not in ("spark", "", "spark_sql", "spark_jdbc") else "spark"
    if conn_type == "spark" and is_url:
        master = host
    else:
        master = f"{conn_type}://{host}"
    if conn.port and not _has_port(master):
        master = f"{master}:{conn.port}"
    return master


def _has_port(master: str) -> bool:
    if classify_master(master) in ("local", "yarn") and "://" not in master:
        return True  # local[*] and yarn take no port
    last = master.rsplit("://", 1)[-1]
    return ":" in last.rsplit("]", 1)[-1]


def write_private_keytab(content_base64: str, directory: str | None = None) -> str:
    """Decode a base64 keytab into a new file only this user can read; the caller removes it after the run."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="sparkflow-keytab-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, base64.b64decode(content_base64))
    finally:
        os.close(fd)
    return path


@dataclass(frozen=True)
class SparkSqlSpec:
    """The options of one spark-sql run: the provider's SparkSqlHook constructor, in its order and defaults."""

    sql: str = ""
    conf: Mapping[str, str] | str | None = None  # a dict, or "k=v,k2=v2" as the provider allows
    conn_id: str = "spark_sql_default"
    total_executor_cores: int | None = None
    executor_cores: int | None = None
    executor_memory: str | None = None
    keytab: str | None = None
    principal: str | None = None
    master: str | None = None
    name: str = "default-name"
    num_executors: int | None = None
    verbose: bool = True
    yarn_queue: str | None = None


SQL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SparkSqlSpec))


def sql_default(name: str) -> Any:
    return next(f.default for f in fields(SparkSqlSpec) if f.name == name)
