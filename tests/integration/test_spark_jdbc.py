"""SparkJDBCOperator for real: a PostgreSQL table copied into Spark's catalog and back, with Debian's PostgreSQL
JDBC driver (libpostgresql-jdbc-java), local-mode Spark; the password never appears on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.state import RunState
from tests.helpers import run_dag

pytestmark = pytest.mark.spark
JDBC_JAR = Path("/usr/share/java/postgresql.jar")
PASSWORD = "jdbc-s3cret-pw"


def test_jdbc_to_spark_and_back(settings, metastore, write_dag, pg_server, tmp_path, monkeypatch) -> None:
    assert JDBC_JAR.is_file(), "install the Debian package libpostgresql-jdbc-java (.ci/run does)"
    database = pg_server.create_database()
    with psycopg.connect(host="127.0.0.1", port=pg_server.port, user="postgres", dbname=database,
                         autocommit=True) as conn:
        conn.execute("CREATE TABLE trips (id int, day date, fare numeric(10,2))")
        conn.execute("INSERT INTO trips SELECT g, DATE '2024-01-01' + (g % 31), g * 1.5 "
                     "FROM generate_series(1, 500) g")
    monkeypatch.setenv("SPARKFLOW_CONN_PG", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": pg_server.port, "login": "postgres",
        "password": PASSWORD, "schema": database, "extra": {"conn_prefix": "jdbc:postgresql://"},
    }))
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_DEFAULT", "spark://local%5B1%5D")
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    catalog = {  # one Spark catalog shared by both tasks
        "spark.sql.warehouse.dir": str(tmp_path / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={tmp_path / 'metastore_db'};create=true",
    }
    path = write_dag("jdbc_dag", f"""
        from datetime import datetime
        from sparkflow import DAG
        from sparkflow.operators.spark_jdbc import SparkJDBCOperator

        common = dict(jdbc_conn_id="pg", spark_conn_id="spark_default", spark_jars={str(JDBC_JAR)!r},
                      jdbc_driver="org.postgresql.Driver", spark_conf={catalog!r})
        with DAG("jdbc_dag", start_date=datetime(2024, 1, 1)) as dag:
            into_spark = SparkJDBCOperator(task_id="into_spark", cmd_type="jdbc_to_spark", jdbc_table="trips",
                                           metastore_table="trips_copy", save_mode="overwrite", **common)
            back = SparkJDBCOperator(task_id="back", cmd_type="spark_to_jdbc", jdbc_table="trips_back",
                                     metastore_table="trips_copy", save_mode="overwrite", **common)
            into_spark >> back
    """)
    run = run_dag(settings, metastore, path, "jdbc_dag")
    logs = {t: Path(queries.get_task_instance(metastore.db, TIKey("jdbc_dag", run.run_id, t)).log_path).read_text()
            for t in ("into_spark", "back")}
    assert run.state is RunState.SUCCESS, logs["into_spark"][-2000:] + logs["back"][-2000:]
    assert "jdbc_to_spark: copied 500 rows of trips to trips_copy" in logs["into_spark"]
    assert "spark_to_jdbc: wrote 500 rows of trips_copy to trips_back" in logs["back"]
    for log in logs.values():
        assert PASSWORD not in log
        submit_line = next(line for line in log.splitlines() if "Submitting to" in line)
        assert "-user" not in submit_line and "-password" not in submit_line
    with psycopg.connect(host="127.0.0.1", port=pg_server.port, user="postgres", dbname=database) as conn:
        assert conn.execute("SELECT count(*), sum(fare) FROM trips_back").fetchone() == (500, 187875)
    pg_server.drop_database(database)
