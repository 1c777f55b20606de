"""The spark-submit argv (exact lists, the provider's flag order), connection resolution and output parsing."""

from __future__ import annotations

import json

import pytest

from sparkflow.connections import Connection
from sparkflow.exceptions import InvalidConnection, UserError
from sparkflow.spark import jdbc_app
from sparkflow.spark.command import build_jdbc_app_args, build_spark_sql_argv, build_spark_submit_argv
from sparkflow.spark.rest_submission import submission_request
from sparkflow.spark.spec import SparkSubmitSpec, classify_master, master_url, resolve_target, rest_urls
from sparkflow.spark.submit import parse_ids

FULL = SparkSubmitSpec(
    application="app.py",
    conf={"parquet.compression": "SNAPPY"},
    files="hive-site.xml",
    py_files="sample_library.py",
    archives="sample_archive.zip#SAMPLE",
    jars="parquet.jar",
    packages="com.databricks:spark-avro_2.11:3.2.0",
    exclude_packages="org.bad.dependency:1.0.0",
    repositories="http://myrepo.org",
    num_executors=10,
    total_executor_cores=4,
    executor_cores=4,
    executor_memory="22g",
    driver_memory="3g",
    keytab="privileged_user.keytab",
    principal="user/spark@airflow.org",
    proxy_user="sample_user",
    name="spark-job",
    java_class="com.foo.bar.AppMain",
    verbose=True,
    application_args=("-f", "foo", "--bar", "bar", "--with-spaces", "args should keep embedded spaces", "baz"),
)


def conn(host: str, conn_type: str = "spark", port: int | None = None, **extra: str) -> Connection:
    return Connection("c", conn_type, host=host, port=port, extra=json.dumps(extra) if extra else None)


def test_full_argv_matches_the_provider_order() -> None:
    argv = build_spark_submit_argv(FULL, resolve_target(conn("yarn"), FULL))
    assert argv == [
        "spark-submit", "--master", "yarn",
        "--conf", "parquet.compression=SNAPPY",
        "--files", "hive-site.xml",
        "--py-files", "sample_library.py",
        "--archives", "sample_archive.zip#SAMPLE",
        "--jars", "parquet.jar",
        "--packages", "com.databricks:spark-avro_2.11:3.2.0",
        "--exclude-packages", "org.bad.dependency:1.0.0",
        "--repositories", "http://myrepo.org",
        "--num-executors", "10",
        "--total-executor-cores", "4",
        "--executor-cores", "4",
        "--executor-memory", "22g",
        "--driver-memory", "3g",
        "--keytab", "privileged_user.keytab",
        "--principal", "user/spark@airflow.org",
        "--proxy-user", "sample_user",
        "--name", "spark-job",
        "--class", "com.foo.bar.AppMain",
        "--verbose",
        "app.py",
        "-f", "foo", "--bar", "bar", "--with-spaces", "args should keep embedded spaces", "baz",
    ]


def test_minimal_local_argv_with_located_binary() -> None:
    spec = SparkSubmitSpec(application="job.py", name="n")
    argv = build_spark_submit_argv(spec, resolve_target(conn("local[*]"), spec), "/venv/bin/spark-submit")
    assert argv == ["/venv/bin/spark-submit", "--master", "local[*]", "--name", "n", "job.py"]


def test_extras_give_queue_and_deploy_mode_and_operator_args_override() -> None:
    spec = SparkSubmitSpec(application="a.py")
    target = resolve_target(conn("yarn", queue="etl", **{"deploy-mode": "cluster"}), spec)
    assert build_spark_submit_argv(spec, target)[-5:] == ["--queue", "etl", "--deploy-mode", "cluster", "a.py"]
    override = SparkSubmitSpec(application="a.py", yarn_queue="adhoc", deploy_mode="client")
    target = resolve_target(conn("yarn", queue="etl", **{"deploy-mode": "cluster"}), override)
    assert build_spark_submit_argv(override, target)[-5:] == ["--queue", "adhoc", "--deploy-mode", "client", "a.py"]


def test_env_vars_per_cluster_manager() -> None:
    spec = SparkSubmitSpec(application="a.py", env_vars={"K": "V"}, name="")
    yarn = build_spark_submit_argv(spec, resolve_target(conn("yarn"), spec))
    assert yarn[:5] == ["spark-submit", "--master", "yarn", "--conf", "spark.yarn.appMasterEnv.K=V"]
    k8s = build_spark_submit_argv(spec, resolve_target(conn("k8s://https://k8s:443", namespace="ns"), spec))
    assert k8s[3:7] == ["--conf", "spark.kubernetes.driverEnv.K=V", "--conf", "spark.kubernetes.namespace=ns"]
    local = build_spark_submit_argv(spec, resolve_target(conn("local[2]"), spec))
    assert local == ["spark-submit", "--master", "local[2]", "a.py"]  # env goes to the process instead
    with pytest.raises(UserError, match="standalone cluster mode"):
        cluster = SparkSubmitSpec(application="a.py", env_vars={"K": "V"}, deploy_mode="cluster")
        build_spark_submit_argv(cluster, resolve_target(conn("spark://h:7077"), cluster))


@pytest.mark.parametrize(
    ("connection", "master", "manager"),
    [
        (conn("local[*]"), "local[*]", "local"),
        (conn("yarn"), "yarn", "yarn"),
        (conn("spark://h", port=7077), "spark://h:7077", "standalone"),
        (conn("spark://h:7077"), "spark://h:7077", "standalone"),
        (conn("h", port=7077), "spark://h:7077", "standalone"),
        (conn("k8s://https://api:443"), "k8s://https://api:443", "k8s"),
        (conn("mesos-master", conn_type="mesos", port=5050), "mesos://mesos-master:5050", "mesos"),
    ],
)
def test_master_url_and_cluster_manager(connection: Connection, master: str, manager: str) -> None:
    assert master_url(connection) == master
    assert classify_master(master) == manager


def test_classification_is_by_scheme_not_substring() -> None:
    assert classify_master("spark://yarn-gateway:7077") == "standalone"
    assert classify_master("k8s://https://spark.example") == "k8s"


def test_spark_binary_extra_is_allow_listed_but_operator_may_name_any() -> None:
    spec = SparkSubmitSpec(application="a.py")
    assert resolve_target(conn("yarn", **{"spark-binary": "spark3-submit"}), spec).spark_binary == "spark3-submit"
    with pytest.raises(InvalidConnection, match="extra 'spark-binary' has bad value '/bin/evil'"):
        resolve_target(conn("yarn", **{"spark-binary": "/bin/evil"}), spec)
    custom = SparkSubmitSpec(application="a.py", spark_binary="/opt/spark/bin/spark-submit")
    assert resolve_target(conn("yarn"), custom).spark_binary == "/opt/spark/bin/spark-submit"


def test_connection_without_host_is_a_clear_error() -> None:
    with pytest.raises(InvalidConnection, match="connection 'c' has no host"):
        master_url(conn(""))


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("INFO EventLoggingListener: Logging events to file:/tmp/ev/local-1732880000123", "app_id",
         "local-1732880000123"),
        ("INFO StandaloneSchedulerBackend: Connected to Spark cluster with app ID app-20261129135623-0000",
         "app_id", "app-20261129135623-0000"),
        ("INFO Client: Submitted application application_1700000000000_0042", "app_id",
         "application_1700000000000_0042"),
        ('"submissionId" : "driver-20261129135854-0001",', "driver_id", "driver-20261129135854-0001"),
        ("INFO JettyUtils: Start Jetty 127.0.0.1:4040 for SparkUI", "ui_host", "127.0.0.1"),
        ("INFO Utils: Successfully started service 'SparkUI' on port 4041.", "ui_port", 4041),
        ("Spark Web UI available at http://localhost:4040", "ui_url", "http://localhost:4040"),
        ("INFO SparkUI: Bound SparkUI to 0.0.0.0, and started at http://h:4041", "ui_url", "http://h:4041"),
    ],
)
def test_parse_ids(line: str, field: str, value: object) -> None:
    assert getattr(parse_ids(line), field) == value


def test_stopped_ui_line_is_not_taken_for_the_ui() -> None:
    assert not parse_ids("INFO SparkUI: Stopped Spark web UI at http://localhost:4040").any()


def test_rest_python_submission_request() -> None:


    spec = SparkSubmitSpec(application="/jobs/app.py", name="job", conf={"spark.x": "1"}, driver_memory="512m",
                           total_executor_cores=1, application_args=("a", "b c"), env_vars={"K": "V"})
    target = resolve_target(conn("spark://127.0.0.1:7077", **{"deploy-mode": "cluster", "rest-port": "6166"}), spec)
    assert rest_urls(target) == ["http://127.0.0.1:6166"]
    request = submission_request(spec, target, "4.3.0", {"SPARK_LOCAL_IP": "127.0.0.1", "HOME": "/root"})
    assert request == {
        "action": "CreateSubmissionRequest",
        "appResource": "file:/jobs/app.py",
        "mainClass": "org.apache.spark.deploy.PythonRunner",
        "appArgs": ["/jobs/app.py", "", "a", "b c"],
        "clientSparkVersion": "4.3.0",
        "environmentVariables": {"SPARK_ENV_LOADED": "1", "SPARK_LOCAL_IP": "127.0.0.1", "K": "V"},
        "sparkProperties": {
            "spark.app.name": "job", "spark.master": "spark://127.0.0.1:7077", "spark.submit.deployMode": "cluster",
            "spark.driver.supervise": "false", "spark.x": "1", "spark.driver.memory": "512m", "spark.cores.max": "1",
        },
    }


def test_spark_sql_argv_in_provider_order() -> None:
    argv = build_spark_sql_argv(
        "SELECT 1", "yarn", {"spark.a": "1"}, total_executor_cores=4, executor_cores=2, executor_memory="1g",
        keytab="k.keytab", principal="me@R", num_executors=3, name="q", verbose=True, yarn_queue="etl",
    )
    assert argv == ["spark-sql", "--conf", "spark.a=1", "--total-executor-cores", "4", "--executor-cores", "2",
                    "--executor-memory", "1g", "--keytab", "k.keytab", "--principal", "me@R", "--num-executors", "3",
                    "-e", "SELECT 1", "--master", "yarn", "--name", "q", "--verbose", "--queue", "etl"]
    from_file = build_spark_sql_argv(" /sql/report.hql ", "local[*]", "spark.a=1, spark.b=2", verbose=False, name=None)
    assert from_file == ["spark-sql", "--conf", "spark.a=1", "--conf", "spark.b=2", "-f", "/sql/report.hql",
                         "--master", "local[*]"]


def test_jdbc_app_args_in_provider_order_without_credentials() -> None:
    args = build_jdbc_app_args(
        "spark_to_jdbc", "jdbc:postgresql://db:5432/sales", "default.trips", "public.trips", jdbc_truncate=True,
        jdbc_driver="org.postgresql.Driver", batch_size=500, fetch_size=100, num_partitions=4,
        partition_column="id", lower_bound="1", upper_bound="1000", save_mode="overwrite", save_format="parquet",
        create_table_column_types="id INT",
    )
    assert args == [
        "-cmdType", "spark_to_jdbc", "-url", "jdbc:postgresql://db:5432/sales", "-metastoreTable", "default.trips",
        "-jdbcTable", "public.trips", "-jdbcTruncate", "True", "-jdbcDriver", "org.postgresql.Driver",
        "-batchsize", "500", "-fetchsize", "100", "-numPartitions", "4", "-partitionColumn", "id",
        "-lowerBound", "1", "-upperBound", "1000", "-saveMode", "overwrite", "-saveFormat", "parquet",
        "-createTableColumnTypes", "id INT",
    ]
    assert not any("password" in a.lower() or a == "-user" for a in args)


def test_jdbc_app_reads_credentials_from_the_environment() -> None:
    parsed = jdbc_app.parse_args(["-cmdType", "jdbc_to_spark", "-url", "jdbc:x", "-jdbcTable", "t",
                                  "-metastoreTable", "m", "-numPartitions", "2", "-partitionColumn", "id",
                                  "-lowerBound", "1", "-upperBound", "9"])
    options = jdbc_app.jdbc_options(parsed, {jdbc_app.USER_ENV: "bob", jdbc_app.PASSWORD_ENV: "pw"})
    assert options == {"url": "jdbc:x", "dbtable": "t", "user": "bob", "password": "pw", "numPartitions": 2,
                       "partitionColumn": "id", "lowerBound": "1", "upperBound": "9"}
