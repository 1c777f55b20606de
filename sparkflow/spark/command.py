"""The spark-submit argv, built by a pure function in the Airflow provider's flag order (tests assert it exactly)."""

from __future__ import annotations

from collections.abc import Mapping

from sparkflow.exceptions import UserError
from sparkflow.spark.spec import SparkSubmitSpec, SparkTarget

YARN_WAIT_APP_COMPLETION = "spark.yarn.submit.waitAppCompletion"
K8S_WAIT_APP_COMPLETION = "spark.kubernetes.submission.waitAppCompletion"


def build_spark_submit_argv(
    spec: SparkSubmitSpec, target: SparkTarget, binary_path: str | None = None, environ: Mapping[str, str] = {},
    keytab_path: str | None = None,
) -> list[str]:
    """argv for spark-submit. ``binary_path`` replaces the bare binary name once it has been located;
    ``keytab_path`` is where the connection's base64 keytab was written for this run."""
    argv = [binary_path or target.spark_binary]
    argv += ["--master", target.master]
    for key, value in spec.conf.items():
        argv += ["--conf", f"{key}={value}"]
    manager = target.cluster_manager
    if spec.yarn_track_via_rm_api and target.cluster_mode == "yarn":
        wait = spec.conf.get(YARN_WAIT_APP_COMPLETION)
        if wait is None:
            argv += ["--conf", f"{YARN_WAIT_APP_COMPLETION}=false"]
        elif wait.strip().lower() != "false":
            raise UserError(f"yarn_track_via_rm_api=True needs {YARN_WAIT_APP_COMPLETION}=false; remove it from conf")
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
    for flag, option in (
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
        ("--keytab", keytab_path or target.keytab),
        ("--principal", target.principal),
    ):
        if option:
            argv += [flag, str(option)]
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
    if spec.track_driver_via_k8s_api and target.cluster_mode == "k8s" and K8S_WAIT_APP_COMPLETION not in spec.conf:
        argv += ["--conf", f"{K8S_WAIT_APP_COMPLETION}=false"]
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
    for flag, option in (
        ("--total-executor-cores", total_executor_cores),
        ("--executor-cores", executor_cores),
        ("--executor-memory", executor_memory),
        ("--keytab", keytab),
        ("--principal", principal),
        ("--num-executors", num_executors),
    ):
        if option:
            argv += [flag, str(option)]
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


def build_jdbc_app_args(
    cmd_type: str,
    jdbc_url: str,
    metastore_table: str | None,
    jdbc_table: str | None,
    jdbc_truncate: bool = False,
    jdbc_driver: str | None = None,
    batch_size: int | None = None,
    fetch_size: int | None = None,
    num_partitions: int | None = None,
    partition_column: str | None = None,
    lower_bound: str | None = None,
    upper_bound: str | None = None,
    save_mode: str | None = None,
    save_format: str | None = None,
    create_table_column_types: str | None = None,
) -> list[str]:
    """Arguments of the JDBC transfer application, in the provider's order, without the credentials."""
    args = ["-cmdType", cmd_type, "-url", jdbc_url]
    if metastore_table:
        args += ["-metastoreTable", metastore_table]
    if jdbc_table:
        args += ["-jdbcTable", jdbc_table]
    if jdbc_truncate:
        args += ["-jdbcTruncate", str(jdbc_truncate)]
    for flag, value in (("-jdbcDriver", jdbc_driver), ("-batchsize", batch_size), ("-fetchsize", fetch_size),
                        ("-numPartitions", num_partitions)):
        if value:
            args += [flag, str(value)]
    if partition_column and lower_bound and upper_bound and num_partitions:
        args += ["-partitionColumn", partition_column, "-lowerBound", str(lower_bound), "-upperBound", str(upper_bound)]
    for flag, value in (("-saveMode", save_mode), ("-saveFormat", save_format),
                        ("-createTableColumnTypes", create_table_column_types)):
        if value:
            args += [flag, value]
    return args
