"""vulture's whitelist (pyproject [tool.vulture]): names only a framework or a user's DAG file uses.

Each line is a true false positive of the dead-code check, except the last section (see there).
"""
# ruff: noqa
# mypy: ignore-errors


# Called by a framework: click (commands), importlib (finders), SQLAlchemy (types, events), enum members
# compared by value, the module __dir__.
ADMIN  # unused variable (sparkflow/web/auth.py:45)
VIEWER  # unused variable (sparkflow/web/auth.py:43)
_.get_command  # unused method (sparkflow/cli/__init__.py:51)
_.isolation_level  # unused attribute (sparkflow/metastore/engine.py:76)
_.list_commands  # unused method (sparkflow/cli/__init__.py:48)
_.process_bind_param  # unused method (sparkflow/metastore/schema.py:54)
_.process_result_value  # unused method (sparkflow/metastore/schema.py:62)
__dir__  # unused function (sparkflow/__init__.py:85)
_on_begin  # unused function (sparkflow/metastore/engine.py:84)
_on_connect  # unused function (sparkflow/metastore/engine.py:74)
_on_checkin  # unused function (sparkflow/metastore/engine.py:100)
_on_checkout  # unused function (sparkflow/metastore/engine.py:104)
cache_ok  # unused variable (sparkflow/metastore/schema.py:52)
impl  # unused variable (sparkflow/metastore/schema.py:51)

# Airflow's public API, called by users' DAG files (compat aliases, operator and timetable attributes).
SparkConnectHook  # unused class (sparkflow/compat/airflow/spark_connect.py:13)
PARAM_USE_SSL  # unused variable (sparkflow/compat/airflow/spark_connect.py:17)
PARAM_TOKEN  # unused variable (sparkflow/compat/airflow/spark_connect.py:18)
PARAM_USER_ID  # unused variable (sparkflow/compat/airflow/spark_connect.py:19)
_.get_connection_url  # unused method (sparkflow/compat/airflow/spark_connect.py:29)
pyspark_task  # unused function (sparkflow/compat/airflow/spark_connect.py:33)
SparkPipelinesHook  # unused class (sparkflow/compat/airflow/spark_pipelines.py:16)
PySparkDecoratedOperator  # unused class (sparkflow/operators/pyspark.py:326), loaded by name for @task.pyspark
CronDataIntervalTimetable  # unused class (sparkflow/compat/airflow/models.py:145)
Param  # unused class (sparkflow/compat/airflow/models.py:78)
SparkJDBCOperator  # unused class (sparkflow/operators/spark_jdbc.py:29)
SparkSqlOperator  # unused class (sparkflow/operators/spark_sql.py:95)
_.__path__  # unused attribute (sparkflow/compat/airflow/finder.py:108)
_.__signature__  # unused attribute (sparkflow/compat/airflow/spark.py:138)
_.__signature__  # unused attribute (sparkflow/compat/airflow/spark.py:57)
_.__signature__  # unused attribute (sparkflow/operators/spark_jdbc.py:46)
_.__signature__  # unused attribute (sparkflow/operators/spark_sql.py:111)
_.__signature__  # unused attribute (sparkflow/operators/spark_sql.py:44)
_.__signature__  # unused attribute (sparkflow/operators/spark_submit.py:89)
_._jdbc_conn_id  # unused attribute (sparkflow/compat/airflow/spark.py:114)
_.bash  # unused attribute (sparkflow/operators/python.py:287)
_.branch  # unused attribute (sparkflow/operators/python.py:285)
_.create_module  # unused method (sparkflow/compat/airflow/finder.py:90)
_.downstream_list  # unused property (sparkflow/definitions/baseoperator.py:276)
_.get_conn  # unused method (sparkflow/compat/airflow/spark.py:64)
_.get_conn  # unused method (sparkflow/operators/spark_sql.py:54)
_.get_connection  # unused method (sparkflow/compat/airflow/models.py:102)
_.get_ui_field_behaviour  # unused method (sparkflow/compat/airflow/spark.py:59)
_.get_ui_field_behaviour  # unused method (sparkflow/operators/spark_sql.py:50)
_.override  # unused attribute (sparkflow/definitions/taskgroup.py:188)
_.override  # unused method (sparkflow/operators/python.py:161)
_.periodic  # unused attribute (sparkflow/definitions/schedule.py:136)
_.periodic  # unused attribute (sparkflow/definitions/schedule.py:94)
_.query_yarn_application_status  # unused method (sparkflow/compat/airflow/spark.py:88)
_.short_circuit  # unused attribute (sparkflow/operators/python.py:286)
_.spark_conn_id  # unused attribute (sparkflow/compat/airflow/spark.py:112)
_.spark_conn_id  # unused attribute (sparkflow/operators/spark_jdbc.py:41)
_.submit_jdbc_job  # unused method (sparkflow/compat/airflow/spark.py:116)
_.upstream_list  # unused property (sparkflow/definitions/baseoperator.py:271)
conn_name_attr  # unused variable (sparkflow/compat/airflow/spark.py:44)
conn_name_attr  # unused variable (sparkflow/compat/airflow/spark.py:98)
conn_name_attr  # unused variable (sparkflow/operators/spark_sql.py:28)
convert_to_utc  # unused function (sparkflow/compat/airflow/models.py:127)
days_ago  # unused function (sparkflow/compat/airflow/models.py:117)
default_conn_name  # unused variable (sparkflow/compat/airflow/spark.py:45)
default_conn_name  # unused variable (sparkflow/compat/airflow/spark.py:99)
default_conn_name  # unused variable (sparkflow/operators/spark_sql.py:29)
hook_name  # unused variable (sparkflow/compat/airflow/spark.py:101)
hook_name  # unused variable (sparkflow/compat/airflow/spark.py:47)
hook_name  # unused variable (sparkflow/operators/spark_sql.py:31)
ignored  # unused variable (sparkflow/compat/airflow/models.py:141)
periodic  # unused variable (sparkflow/definitions/schedule.py:32)
periodic  # unused variable (sparkflow/definitions/schedule.py:49)
periodic  # unused variable (sparkflow/definitions/serialization.py:167)
suppress_exception  # unused variable (sparkflow/compat/airflow/models.py:89)
tz_datetime  # unused function (sparkflow/compat/airflow/models.py:131)

# Fields of records and API bodies: read through dataclasses.asdict / pydantic / templates, or part of a request
# schema Airflow clients send.
inode  # unused variable (sparkflow/runtime/user_code.py:37): compared as part of the frozen dataclass
mtime_ns  # unused variable (sparkflow/runtime/user_code.py:35): compared as part of the frozen dataclass
source_try_number  # unused variable (sparkflow/metastore/records.py:351): a record field
executor_cpu_time_ms  # unused variable (sparkflow/spark/eventlog.py:49)
executor_run_time_ms  # unused variable (sparkflow/spark/eventlog.py:48)
include_future  # unused variable (sparkflow/web/api.py:250)
include_parentdag  # unused variable (sparkflow/web/api.py:247)
include_past  # unused variable (sparkflow/web/api.py:251)
include_subdags  # unused variable (sparkflow/web/api.py:246)
include_upstream  # unused variable (sparkflow/web/api.py:249)
input_records  # unused variable (sparkflow/spark/eventlog.py:39)
jobs_running  # unused variable (sparkflow/spark/tracking.py:174)
last_updated  # unused variable (sparkflow/metastore/records.py:241)
model_config  # unused variable (sparkflow/web/api.py:119)
model_config  # unused variable (sparkflow/web/api.py:169)
model_config  # unused variable (sparkflow/web/api.py:235)
model_config  # unused variable (sparkflow/web/api.py:274)
model_config  # unused variable (sparkflow/web/api.py:95)
old_state  # unused variable (sparkflow/metastore/records.py:193)
only_running  # unused variable (sparkflow/web/api.py:248)
output_bytes  # unused variable (sparkflow/spark/eventlog.py:40)
output_records  # unused variable (sparkflow/spark/eventlog.py:41)
peak_execution_memory_bytes  # unused variable (sparkflow/spark/eventlog.py:51)
reset_dag_runs  # unused variable (sparkflow/web/api.py:243)
shuffle_read_records  # unused variable (sparkflow/spark/eventlog.py:43)
shuffle_write_records  # unused variable (sparkflow/spark/eventlog.py:45)
stages_failed  # unused variable (sparkflow/spark/eventlog.py:34)
tasks_active  # unused variable (sparkflow/spark/tracking.py:165)
worker_host_port  # unused variable (sparkflow/spark/rest_submission.py:79)

# Airflow's standard operators (issue 18): arguments kept for Airflow's signatures, WeekDay members compared by
# value, operators and decorators that only DAG files and the lazy @task.<variant> table name.
seen_oids  # unused variable (sparkflow/definitions/baseoperator.py)
start_from_trigger  # unused variable (sparkflow/operators/sensors.py)
end_from_trigger  # unused variable (sparkflow/operators/sensors.py)
trigger_kwargs  # unused variable (sparkflow/operators/sensors.py)
is_venv_installed  # unused function (sparkflow/operators/python_virtualenv.py)
DecoratedVirtualenvOperator  # unused class (sparkflow/operators/python_virtualenv.py)
DecoratedExternalPythonOperator  # unused class (sparkflow/operators/python_virtualenv.py)
DecoratedBranchVirtualenvOperator  # unused class (sparkflow/operators/python_virtualenv.py)
DecoratedBranchExternalPythonOperator  # unused class (sparkflow/operators/python_virtualenv.py)
MONDAY  # unused variable (sparkflow/operators/weekday.py)
TUESDAY  # unused variable (sparkflow/operators/weekday.py)
WEDNESDAY  # unused variable (sparkflow/operators/weekday.py)
THURSDAY  # unused variable (sparkflow/operators/weekday.py)
FRIDAY  # unused variable (sparkflow/operators/weekday.py)
SATURDAY  # unused variable (sparkflow/operators/weekday.py)
SUNDAY  # unused variable (sparkflow/operators/weekday.py)

# Read paths only tests use: the progress record's JSON round trip and the token lookup the CLI test checks.
_.from_dict  # unused method (sparkflow/spark/tracking.py:183)
find_user_by_token  # unused function (sparkflow/metastore/queries.py:451)

# The in-process import of a whole DAG folder: sparkflow itself parses in time-limited child processes
# (scheduler/parse_worker.py); tests and tools that look at the DAG objects themselves use this.
collect_dags  # unused function (sparkflow/definitions/loader.py:257)
# Recording DAG objects built in this process (the tests' and tools' way); sparkflow records what its parse
# workers serialized (DagStore.sync_serialized).
_.sync_dags  # unused method (sparkflow/metastore/dag_store.py:51)
