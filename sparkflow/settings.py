"""Typed, frozen settings: defaults < ``$SPARKFLOW_HOME/sparkflow.toml`` < ``SPARKFLOW_*`` environment variables.

Settings are loaded once (``load_settings``) by an entry point and passed down; nothing reads configuration at
import time. Every field carries its help text, which ``sparkflow config list`` shows.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparkflow.exceptions import ConfigError
from sparkflow.logs import set_sensitive_names

ENV_PREFIX = "SPARKFLOW_"
EXECUTORS = ("sequential", "local", "celery")


def _setting(default: Any, help: str, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    home: Path = _setting(Path("~/sparkflow"), "sparkflow's home: metastore, logs, keys (env SPARKFLOW_HOME).")
    dags_folder: Path | None = _setting(None, "Folder of DAG files. Default: $SPARKFLOW_HOME/dags.")
    plugins_folder: Path | None = _setting(
        None, "Folder of the user's own modules that serialized DAGs refer to by import path, such as a custom "
        "Timetable class (Airflow's plugins_folder); on sys.path in every sparkflow process, as the DAG folder is. "
        "Default: $SPARKFLOW_HOME/plugins.")
    db_url: str | None = _setting(
        None, "SQLAlchemy URL of the metastore. Default: SQLite at $SPARKFLOW_HOME/sparkflow.db.", secret=True
    )
    executor: str = _setting("local", "Executor: local (warm worker processes), sequential (in-process) or celery.")
    parallelism: int = _setting(8, "Most task instances running at once in one scheduler/executor.")
    max_tasks_per_child: int = _setting(
        100,
        "Local executor: task tries one warm worker process runs before it is replaced (as Celery's "
        "worker_max_tasks_per_child). 1: a fresh process for every try. A worker is also replaced after a try "
        "that left threads or processes behind, failed to record its outcome, or grew it past "
        "max_memory_per_child_mb.",
    )
    max_memory_per_child_mb: int = _setting(
        1024, "Local executor: a warm worker process larger than this (resident MB) after a try is replaced."
    )
    log_folder: Path | None = _setting(None, "Task and sparkflow logs. Default: $SPARKFLOW_HOME/logs.")
    spark_connect_dir: Path | None = _setting(
        None, "Records, logs and leases of the managed Spark Connect servers on this host (one folder per "
        "connection). Default: $SPARKFLOW_HOME/spark-connect."
    )
    fernet_key: str | None = _setting(
        None, "Key encrypting connection secrets. Default: read from $SPARKFLOW_HOME/fernet.key.", secret=True
    )
    scheduler_loop_interval: float = _setting(0.5, "Seconds the scheduler sleeps when a loop found no work.")
    max_runs_per_loop: int = _setting(
        100,
        "Most DagRuns created at once for one DAG: the scheduler caps catchup at this many per loop (with a "
        "warning) and `backfill` asks for --yes beyond it.",
    )
    dag_parse_interval: float = _setting(
        2.0, "Seconds between the DAG processor's checks of the DAG folder for new, changed or removed files "
        "(a check of unchanged files costs one stat() each)."
    )
    dagbag_import_timeout: float = _setting(
        30.0, "Seconds a DAG file may take to import (Airflow's dagbag_import_timeout); a file that takes longer "
        "becomes an import error, 'import timed out after N s'."
    )
    parsing_processes: int = _setting(2, "DAG files the DAG processor parses at once, each in its own process.")
    standalone_dag_processor: bool = _setting(
        False, "True: `sparkflow scheduler` and `standalone` start no DAG processor; run `sparkflow dag-processor` "
        "yourself (Airflow's [scheduler] standalone_dag_processor).")
    heartbeat_interval: float = _setting(5.0, "Seconds between heartbeats of a running task.")
    heartbeat_timeout: float = _setting(60.0, "A running task silent this long is treated as dead.")
    task_queued_timeout: float = _setting(
        600.0, "Seconds a task may stay queued without starting (no free worker, no worker on its Celery queue) "
        "before the scheduler takes it back from the executor and fails it, retried while it has retries "
        "(Airflow's [scheduler] task_queued_timeout)."
    )
    max_map_length: int = _setting(
        1024, "Most instances one mapped task may expand into (Airflow's max_map_length); more fail the task."
    )
    callback_time_limit: float = _setting(
        60.0, "Seconds the scheduler waits for one DAG callback (or a lost task's callback), which runs off its loop "
        "in a thread, before it goes on to the next (the slow one is left to finish on its own).",
    )
    sqlite_busy_timeout: float = _setting(30.0, "Seconds a SQLite writer waits for the lock before failing.")
    default_timezone: str = _setting("UTC", "Time zone of naive datetimes in DAG files and on the CLI.")
    spark_history_url: str | None = _setting(
        None, "Spark History Server URL (e.g. http://127.0.0.1:18080): links to finished applications."
    )
    celery_broker_url: str = _setting(
        "redis://127.0.0.1:6379/0", "CeleryExecutor: Celery broker URL (Redis) that the scheduler sends task keys to.",
        secret=True,
    )
    celery_result_backend: str = _setting(
        "redis://127.0.0.1:6379/1", "CeleryExecutor: Celery result backend URL (Redis): workers report exit codes.",
        secret=True,
    )
    celery_default_queue: str = _setting(
        "default", "CeleryExecutor: queue of tasks whose `queue` is 'default'; what `sparkflow worker` consumes."
    )
    celery_worker_concurrency: int = _setting(
        4, "CeleryExecutor: task processes one `sparkflow worker` runs at once (its --concurrency default)."
    )
    sensitive_var_conn_names: str = _setting(
        "", "Comma-separated names added to the sensitive ones (password, secret, token, api_key, ...): values of "
            "connection extras and Variables whose key contains one are masked everywhere (Airflow's setting)."
    )
    session_idle_timeout: float = _setting(
        3600.0, "Web: seconds without a request after which a login session ends (log in again)."
    )
    session_max_age: float = _setting(12 * 3600.0, "Web: seconds after login at which a session ends, active or not.")
    login_lockout_threshold: int = _setting(
        5, "Web: failed logins for one user, or from one client address, before further logins are refused."
    )
    login_lockout_seconds: float = _setting(
        30.0, "Web: the first lock-out after login_lockout_threshold failures; each further failure doubles it."
    )
    login_lockout_max_seconds: float = _setting(3600.0, "Web: the longest lock-out after failed logins.")
    cookie_secure: bool = _setting(
        False, "Web: always mark cookies Secure (behind a TLS-terminating proxy); they are whenever the request "
               "itself is https."
    )
    max_request_body_bytes: int = _setting(
        1024 * 1024, "Web: largest request body accepted (bytes); larger ones are answered 413 before parsing."
    )
    max_task_log_bytes: int = _setting(
        100 * 1024 * 1024,
        "Largest task log of one try (bytes); output beyond it is dropped after a line saying so. 0: no limit.",
    )
    load_default_connections: bool = _setting(
        True, "`db init` adds Airflow's default connections when absent: fs_default (/) and spark_default (local[*])."
    )

    # Derived paths, resolved once so callers never repeat the defaults. Cached: resolving touches the file system
    # and each task asks several times.
    @functools.cached_property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @functools.cached_property
    def resolved_dags_folder(self) -> Path:
        return (self.dags_folder or self.resolved_home / "dags").expanduser().resolve()

    @functools.cached_property
    def resolved_plugins_folder(self) -> Path:
        return (self.plugins_folder or self.resolved_home / "plugins").expanduser().resolve()

    @property
    def import_folders(self) -> tuple[Path, Path]:
        """What every sparkflow process puts on sys.path: the DAG folder and the plugins folder (as Airflow)."""
        return (self.resolved_dags_folder, self.resolved_plugins_folder)

    @functools.cached_property
    def resolved_log_folder(self) -> Path:
        return (self.log_folder or self.resolved_home / "logs").expanduser().resolve()

    @property
    def resolved_spark_connect_dir(self) -> Path:
        return (self.spark_connect_dir or self.resolved_home / "spark-connect").expanduser().resolve()

    @property
    def resolved_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.resolved_home / 'sparkflow.db'}"

    @property
    def display_db_url(self) -> str:
        """The metastore URL with any password masked, for messages."""
        return _mask_url_password(self.resolved_db_url)

    @property
    def fernet_key_file(self) -> Path:
        return self.resolved_home / "fernet.key"

    def describe(self) -> list[tuple[str, str, str]]:
        """(name, effective value with secrets masked, help) for every setting."""
        rows = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            shown = "***" if f.metadata["secret"] and value else ("" if value is None else str(value))
            if f.name == "db_url" and value:
                shown = _mask_url_password(value)
            rows.append((f.name, shown, f.metadata["help"]))
        return rows


def _mask_url_password(url: str) -> str:
    """``postgresql://u:secret@h/db`` -> ``postgresql://u:***@h/db``."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _coerce(name: str, raw: Any, annotation: str, source: str) -> Any:
    kind = annotation.replace(" | None", "")
    try:
        if kind == "Path":
            return Path(str(raw)).expanduser()
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return str(raw)
    except ValueError:
        raise ConfigError(
            f"setting '{name}' from {source} has bad value {raw!r}; expected {kind}"
        ) from None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings once: defaults, then sparkflow.toml in the home, then SPARKFLOW_* variables."""
    env = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    home = Path(env.get(ENV_PREFIX + "HOME", "~/sparkflow")).expanduser()
    values: dict[str, Any] = {"home": home}

    toml_path = home / "sparkflow.toml"
    if toml_path.is_file():
        try:
            data = tomllib.loads(toml_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"settings file {toml_path} is not valid TOML: {exc}; fix or remove it") from None
        section = data.get("core", data)
        for key, raw in section.items():
            if key not in fields or key == "home":
                raise ConfigError(
                    f"settings file {toml_path} has unknown setting '{key}'; known: {', '.join(sorted(fields))}"
                )
            values[key] = _coerce(key, raw, str(fields[key].type), str(toml_path))

    for name, f in fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and name != "home":
            values[name] = _coerce(name, raw, str(f.type), ENV_PREFIX + name.upper())

    settings = Settings(**values)
    # every entry point loads the settings once; masking is per process, so it learns the extra names here
    set_sensitive_names(settings.sensitive_var_conn_names.split(","))
    if settings.executor not in EXECUTORS:
        raise ConfigError(
            f"setting 'executor' has bad value {settings.executor!r}; choose one of {', '.join(EXECUTORS)}"
        )
    for name in ("parallelism", "max_runs_per_loop", "celery_worker_concurrency", "max_tasks_per_child",
                 "max_memory_per_child_mb", "login_lockout_threshold", "max_request_body_bytes"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"setting '{name}' has bad value {getattr(settings, name)}; it must be at least 1")
    return settings
