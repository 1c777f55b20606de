"""A ``spark_connect`` connection resolved: the client URL (the provider's rules) and, for a managed connection, what
the server sparkflow runs behind it looks like.

Fields as in the Airflow provider: host (``sc://h`` or ``h``), port, login = ``user_id``, password = ``token``, extra
``use_ssl``. sparkflow's own extras: ``managed`` (sparkflow starts, watches, reuses and stops the server), ``master``
(the Spark master behind it, default ``local[*]``), ``driver_memory``, ``conf`` (Spark properties of the server),
``idle_timeout`` (seconds without a task before a managed server stops), ``ui_port`` (default: a free port) and
``startup_timeout``. Extras named ``spark.*`` are session SQL conf for every task, as the provider sets them. An
unmanaged connection may name its server's Spark UI (``ui_url``) for live progress and metrics when the UI is not
where the server's own conf says (behind a proxy, another host name).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from sparkflow.connections import Connection
from sparkflow.exceptions import InvalidConnection

CONN_TYPE = "spark_connect"
DEFAULT_CONN_ID = "spark_connect_default"
DEFAULT_PORT = 15002
DEFAULT_IDLE_TIMEOUT = 600.0
DEFAULT_STARTUP_TIMEOUT = 180.0
MANAGED_EXTRAS = ("managed", "master", "driver_memory", "conf", "idle_timeout", "ui_port", "startup_timeout")


@dataclass(frozen=True)
class ManagedServerSpec:
    """What a managed Spark Connect server runs with; a change of any field restarts it on next use."""

    conn_id: str
    bind_host: str
    port: int
    master: str = "local[*]"
    driver_memory: str | None = None
    conf: dict[str, str] = field(default_factory=dict)
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    ui_port: int | None = None
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT

    def to_json(self) -> dict[str, Any]:
        return {"conn_id": self.conn_id, "bind_host": self.bind_host, "port": self.port, "master": self.master,
                "driver_memory": self.driver_memory, "conf": dict(self.conf), "idle_timeout": self.idle_timeout,
                "ui_port": self.ui_port, "startup_timeout": self.startup_timeout}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ManagedServerSpec:
        return cls(**{**data, "conf": dict(data.get("conf") or {})})

    def fingerprint(self) -> str:
        """Identifies the server's configuration, so a changed connection restarts the server instead of reusing."""
        text = json.dumps({k: v for k, v in self.to_json().items() if k not in ("idle_timeout", "startup_timeout")},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ConnectTarget:
    """Where a task's Spark Connect session goes."""

    conn_id: str
    url: str  # sc://host:port/;user_id=...;token=...
    host: str
    port: int
    session_conf: dict[str, str] = field(default_factory=dict)
    managed: ManagedServerSpec | None = None
    ui_url: str | None = None  # an unmanaged server's Spark UI, as the connection names it


def _bad(conn_id: str, key: str, value: Any, fix: str) -> InvalidConnection:
    return InvalidConnection(f"connection '{conn_id}': extra '{key}' has bad value {value!r}; {fix}")


def check_spark_connect(conn: Connection) -> None:
    """Validate a spark_connect connection's fields and sparkflow's extras; raises InvalidConnection."""
    resolve_connect(conn)


def resolve_connect(conn: Connection) -> ConnectTarget:
    host, port = _host_port(conn)
    extra = conn.extra_dejson
    managed = extra.get("managed", False)
    if not isinstance(managed, bool):
        raise _bad(conn.conn_id, "managed", managed, "use true or false")
    if not managed:
        unused = sorted(k for k in extra if k in MANAGED_EXTRAS and k != "managed")
        if unused:
            raise _bad(conn.conn_id, unused[0], extra[unused[0]],
                       "it applies to managed servers only; add \"managed\": true or remove it")
    ui_url = extra.get("ui_url")
    if ui_url is not None and (managed or not isinstance(ui_url, str)
                               or urlsplit(ui_url).scheme not in ("http", "https") or not urlsplit(ui_url).hostname):
        raise _bad(conn.conn_id, "ui_url", ui_url, "a managed server's UI is known (use ui_port); leave it out"
                   if managed else "use the server's Spark UI address, such as http://spark-host:4040")
    session_conf = {str(k): str(v) for k, v in extra.items() if str(k).startswith("spark.")}
    spec = _managed_spec(conn, host, port, extra) if managed else None
    return ConnectTarget(conn_id=conn.conn_id, url=connection_url(conn, host, port), host=host, port=port,
                         session_conf=session_conf, managed=spec,
                         ui_url=ui_url.rstrip("/") if isinstance(ui_url, str) else None)


def _host_port(conn: Connection) -> tuple[str, int]:
    raw = (conn.host or "").strip()
    if not raw:
        raise InvalidConnection(f"connection '{conn.conn_id}' has no host; set it to sc://127.0.0.1 (or a host name)")
    parts = urlsplit(raw if "://" in raw else f"sc://{raw}")
    if parts.scheme != "sc":
        raise InvalidConnection(
            f"connection '{conn.conn_id}': host {raw!r} is not a Spark Connect address; use sc://HOST or HOST"
        )
    if parts.path not in ("", "/"):
        raise InvalidConnection(
            f"connection '{conn.conn_id}': host {raw!r} has a path; Spark Connect URLs have none (put options in "
            "login/password/extra)"
        )
    if not parts.hostname:
        raise InvalidConnection(f"connection '{conn.conn_id}': host {raw!r} names no host; use sc://HOST")
    port = conn.port or parts.port or DEFAULT_PORT
    return parts.hostname, port


def connection_url(conn: Connection, host: str, port: int) -> str:
    """The provider's SparkConnectHook.get_connection_url(): ``sc://host:port/;user_id=..;token=..;use_ssl=..``."""
    params = []
    if conn.login:
        params.append(f"user_id={quote(conn.login)}")
    if conn.password:
        params.append(f"token={quote(conn.password)}")
    use_ssl = conn.extra_dejson.get("use_ssl")
    if use_ssl is not None:
        params.append(f"use_ssl={quote(str(use_ssl))}")
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"sc://{netloc}/" + (";" + ";".join(params) if params else "")


def _managed_spec(conn: Connection, host: str, port: int, extra: dict[str, Any]) -> ManagedServerSpec:
    cid = conn.conn_id
    master = extra.get("master", "local[*]")
    if not isinstance(master, str) or not master.strip():
        raise _bad(cid, "master", master, "use a Spark master URL such as local[*] or spark://host:7077")
    memory = extra.get("driver_memory")
    if memory is not None and (not isinstance(memory, str) or not memory.strip()[:-1].isdigit()
                               or memory.strip()[-1].lower() not in "kmgt"):
        raise _bad(cid, "driver_memory", memory, "use a size such as 512m or 2g")
    conf = extra.get("conf", {})
    if not isinstance(conf, dict) or not all(isinstance(k, str) for k in conf):
        raise _bad(cid, "conf", conf, 'use a JSON object of Spark properties, e.g. {"spark.sql.shuffle.partitions": 4}')
    idle = _number(cid, extra, "idle_timeout", DEFAULT_IDLE_TIMEOUT)
    startup = _number(cid, extra, "startup_timeout", DEFAULT_STARTUP_TIMEOUT)
    ui_port = extra.get("ui_port")
    if ui_port is not None and (not isinstance(ui_port, int) or isinstance(ui_port, bool)
                                or not 0 < ui_port < 65536):
        raise _bad(cid, "ui_port", ui_port, "use a port number 1-65535, or leave it out for a free port")
    bind = "127.0.0.1" if host == "localhost" else host
    return ManagedServerSpec(conn_id=cid, bind_host=bind, port=port, master=master.strip(),
                             driver_memory=memory.strip() if memory else None,
                             conf={k: str(v) for k, v in conf.items()}, idle_timeout=idle, ui_port=ui_port,
                             startup_timeout=startup)


def _number(conn_id: str, extra: dict[str, Any], key: str, default: float) -> float:
    value = extra.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _bad(conn_id, key, value, "use a positive number of seconds")
    return float(value)
