"""The spark-submit argv, built by a pure function in the Airflow provider's flag order (tests assert it exactly)."""

from __future__ import annotations

from collections.abc import Mapping

from sparkflow.exceptions import UserError
from sparkflow.spark.spec import SparkSubmitSpec, SparkTarget


def build_spark_submit_argv(
    spec: SparkSubmitSpec, target: SparkTarget, binary_path: str | None = None, environ: Mapping[str, str] = {}
) -> list[str]:
    """argv for spark-submit. ``binary_path`` replaces the bare binary name once it has been located."""
    argv = [binary_path or target.spark_binary]
    argv += ["--master", target.master]
    for key, value in spec.conf.items():
        argv += ["--conf", f"{key}={value}"]
    manager = target.cluster_manager
    if spec.env_vars and manager in ("yarn", "k8s"):
        template = "spark.yarn.appMasterEnv.{}={}" if manager == "yarn" else "spark.kubernetes.driverEnv.{}={}"
        for key, value in spec.env_vars.items():
            argv += ["--conf", template.format(key, value)]
    elif spec.env_vars and target.deploy_mode == "cluster":
        raise UserError(
            "SparkSubmitOperator env_vars is not supported in standalone cluster mode; "
            "pass them with conf spark.driverEnv.* or use client mode"
        )
    if manager == "k8s" and target.namespace:
        argv += ["--conf", f"spark.kubernetes.namespace={target.namespace}"]
    for flag, value in (
        ("--properties-file", spec.properties_file),
        ("--files", spec.files),
        ("--py-files", spec.py_files),
        ("--archives", spec.archives),
        ("--driver-class-path", spec.driver_class_path),
        ("--jars", spec.jars),
        ("--packages", spec.packages),
        ("--exclude-packages", spec.exclude_packages),
        ("--repositories", spec.repositories),
        ("--num-executors", spec.num_executors),
        ("--total-executor-cores", spec.total_executor_cores),
        ("--executor-cores", spec.executor_cores),
        ("--executor-memory", spec.executor_memory),
        ("--driver-memory", spec.driver_memory),
        ("--keytab", target.keytab),
        ("--principal", target.principal),
    ):
        if value:
            argv += [flag, str(value)]
    if spec.use_krb5ccache:
        if not environ.get("KRB5CCNAME"):
            raise UserError("use_krb5ccache=True needs the KRB5CCNAME environment variable; set it to the ticket cache")
        argv += ["--conf", "spark.kerberos.renewal.credentials=ccache"]
    if spec.proxy_user:
        argv += ["--proxy-user", spec.proxy_user]
    if spec.name:
        argv += ["--name", spec.name]
    if spec.java_class:
        argv += ["--class", spec.java_class]
    if spec.verbose:
        argv += ["--verbose"]
    if target.queue:
        argv += ["--queue", target.queue]
    if target.deploy_mode:
        argv += ["--deploy-mode", target.deploy_mode]
    argv.append(spec.application)
    argv += [str(arg) for arg in spec.application_args]
    return argv


def build_spark_sql_argv(
    sql: str,
    master: str | None,
    conf: dict[str, str] | str | None = None,
    total_executor_cores: int | None = None,
    executor_cores: int | None = None,
    executor_memory: str | None = None,
    keytab: str | None = None,
    principal: str | None = None,
    num_executors: int | None = None,
    name: str | None = "default-name",
    verbose: bool = True,
    yarn_queue: str | None = None,
    binary: str = "spark-sql",
) -> list[str]:
    """argv for spark-sql in the provider's SparkSqlHook order; a .sql/.hql path runs with -f, text with -e."""
    argv = [binary]
    if isinstance(conf, dict):
        for key, value in conf.items():
            argv += ["--conf", f"{key}={value}"]
    elif conf:
        for item in conf.split(","):
            argv += ["--conf", item.strip()]
    for flag, value in (
        ("--total-executor-cores", total_executor_cores),
        ("--executor-cores", executor_cores),
        ("--executor-memory", executor_memory),
        ("--keytab", keytab),
        ("--principal", principal),
        ("--num-executors", num_executors),
    ):
        if value:
            argv += [flag, str(value)]
    text = sql.strip()
    argv += ["-f", text] if text.endswith((".sql", ".hql")) else ["-e", text]
    if master:
        argv += ["--master", master]
    if name:
        argv += ["--name", name]
    if verbose:
        argv.append("--verbose")
    if yarn_queue:
        argv += ["--queue", yarn_queue]
    return argv
