"""The alias table: Airflow module -> the names it provides -> the sparkflow object behind each name.

Targets are ``"module:attribute"`` strings resolved on first use, so a module that does not exist yet (or a
provider sparkflow lacks) only fails the DAG file that uses it, naming what is missing. ``op:`` targets are
operator classes handed out with Airflow's constructor arguments (translate.airflow_operator).
"""

from __future__ import annotations

_T = "sparkflow.compat.airflow.translate"
_M = "sparkflow.compat.airflow.models"
_BASH = "op:sparkflow.operators.bash:BashOperator"
_EMPTY = "op:sparkflow.operators.empty:EmptyOperator"
_PY = "sparkflow.operators.python"
_PYTHON_OPERATORS = {
    "PythonOperator": f"op:{_PY}:PythonOperator",
    "BranchPythonOperator": f"op:{_PY}:BranchPythonOperator",
    "ShortCircuitOperator": f"op:{_PY}:ShortCircuitOperator",
    "get_current_context": "sparkflow.definitions.context:get_current_context",
    "PythonVirtualenvOperator": "op:sparkflow.operators.python_virtualenv:PythonVirtualenvOperator",
    "BranchPythonVirtualenvOperator": "op:sparkflow.operators.python_virtualenv:BranchPythonVirtualenvOperator",
    "ExternalPythonOperator": "op:sparkflow.operators.python_virtualenv:ExternalPythonOperator",
    "BranchExternalPythonOperator": "op:sparkflow.operators.python_virtualenv:BranchExternalPythonOperator",
    "is_venv_installed": "sparkflow.operators.python_virtualenv:is_venv_installed",
}
_SENSORS = "sparkflow.operators.sensors"
_FILE_SENSOR = {"FileSensor": f"op:{_SENSORS}:FileSensor"}
_EXTERNAL_TASK = {
    "ExternalTaskSensor": f"op:{_SENSORS}:ExternalTaskSensor",
    "ExternalTaskMarker": f"op:{_SENSORS}:ExternalTaskMarker",
}
_TIME_DELTA = {"TimeDeltaSensor": f"op:{_SENSORS}:TimeDeltaSensor",
               "TimeDeltaSensorAsync": f"op:{_SENSORS}:TimeDeltaSensorAsync"}
_DATE_TIME = {"DateTimeSensor": f"op:{_SENSORS}:DateTimeSensor",
              "DateTimeSensorAsync": f"op:{_SENSORS}:DateTimeSensorAsync"}
_TIME = {"TimeSensor": f"op:{_SENSORS}:TimeSensor", "TimeSensorAsync": f"op:{_SENSORS}:TimeSensorAsync"}
_BASH_SENSOR = {"BashSensor": "op:sparkflow.operators.bash_sensor:BashSensor"}
_WEEKDAY = "sparkflow.operators.weekday"
_WEEKDAY_ENUM = {"WeekDay": f"{_WEEKDAY}:WeekDay"}
_WEEKDAY_SENSOR = {"DayOfWeekSensor": f"op:{_WEEKDAY}:DayOfWeekSensor"}
_WEEKDAY_BRANCH = {"BranchDayOfWeekOperator": f"op:{_WEEKDAY}:BranchDayOfWeekOperator"}
_DATETIME_BRANCH = {
    "BranchDateTimeOperator": "op:sparkflow.operators.branch_datetime:BranchDateTimeOperator",
    "target_times_as_dates": "sparkflow.operators.branch_datetime:target_times_as_dates",
}
_LATEST_ONLY = {"LatestOnlyOperator": "op:sparkflow.operators.latest_only:LatestOnlyOperator"}
_BRANCH = {"BaseBranchOperator": "op:sparkflow.operators.branch:BaseBranchOperator"}
_TRIGGER = {"TriggerDagRunOperator": "op:sparkflow.operators.trigger_dagrun:TriggerDagRunOperator"}
_PYTHON_SENSOR = {"PythonSensor": f"op:{_SENSORS}:PythonSensor"}
_BASE_SENSOR = {
    "BaseSensorOperator": f"op:{_SENSORS}:BaseSensorOperator",
    "PokeReturnValue": f"{_SENSORS}:PokeReturnValue",
}
_CHAIN = {"chain": "sparkflow.definitions.baseoperator:chain",
          "cross_downstream": "sparkflow.definitions.baseoperator:cross_downstream"}
_TASK_GROUP = {"TaskGroup": f"{_T}:TaskGroup", "task_group": f"{_T}:task_group"}
_A = "sparkflow.definitions.assets"
_SETUP_TEARDOWN = {"setup": f"{_PY}:setup", "teardown": f"{_PY}:teardown"}
_LABEL = {"Label": "sparkflow.definitions.edgemodifier:Label",
          "EdgeModifier": "sparkflow.definitions.edgemodifier:EdgeModifier"}
_SPARK_SUBMIT_OP = {"SparkSubmitOperator": "op:sparkflow.operators.spark_submit:SparkSubmitOperator"}
_SPARK_SQL_OP = {"SparkSqlOperator": "op:sparkflow.operators.spark_sql:SparkSqlOperator"}
_SPARK_JDBC_OP = {"SparkJDBCOperator": "op:sparkflow.operators.spark_jdbc:SparkJDBCOperator"}
_SPARK_SUBMIT_HOOK = {"SparkSubmitHook": "sparkflow.compat.airflow.spark:SparkSubmitHook"}
_SPARK_SQL_HOOK = {"SparkSqlHook": "sparkflow.operators.spark_sql:SparkSqlHook"}
_SPARK_JDBC_HOOK = {"SparkJDBCHook": "sparkflow.compat.airflow.spark:SparkJDBCHook"}
_PYSPARK = "sparkflow.operators.pyspark"
_SPARK_PYSPARK_OP = {"PySparkOperator": f"op:{_PYSPARK}:PySparkOperator",
                     "SPARK_CONTEXT_KEYS": f"{_PYSPARK}:SPARK_CONTEXT_KEYS"}
_SPARK_CONNECT_HOOK = {"SparkConnectHook": "sparkflow.compat.airflow.spark_connect:SparkConnectHook"}
_PYSPARK_DECORATOR = {"pyspark_task": "sparkflow.compat.airflow.spark_connect:pyspark_task"}
_PIPELINES = "sparkflow.operators.spark_pipelines"
_SPARK_PIPELINES_OP = {"SparkPipelinesOperator": f"op:{_PIPELINES}:SparkPipelinesOperator"}
_SPARK_PIPELINES_HOOK = {"SparkPipelinesHook": "sparkflow.compat.airflow.spark_pipelines:SparkPipelinesHook",
                         "SparkPipelinesException": f"{_PIPELINES}:SparkPipelinesException"}
_EXCEPTIONS = {
    "AirflowException": "sparkflow.exceptions:AirflowException",
    "AirflowSkipException": "sparkflow.exceptions:SkipTask",
    "AirflowFailException": "sparkflow.exceptions:FailTaskNoRetry",
    "AirflowSensorTimeout": "sparkflow.exceptions:SensorTimeout",
    "AirflowRescheduleException": "sparkflow.exceptions:RescheduleTask",
    "AirflowTaskTimeout": "sparkflow.exceptions:TaskTimeout",
    "AirflowNotFoundException": "sparkflow.exceptions:NotFound",
}
_COMMON = {
    "DAG": f"{_T}:DAG",
    "BaseOperator": f"{_T}:BaseOperator",
    "Variable": f"{_M}:Variable",
    "Param": f"{_M}:Param",
}

ALIASES: dict[str, dict[str, str]] = {
    "airflow": {"DAG": f"{_T}:DAG", "XComArg": "sparkflow.definitions.xcom_arg:XComArg"},
    "airflow.models": {
        **_COMMON,
        "Connection": "sparkflow.connections:Connection",
        "TaskInstance": "sparkflow.definitions.context:TaskInstanceHandle",
        "XComArg": "sparkflow.definitions.xcom_arg:XComArg",
    },
    "airflow.models.dag": {"DAG": f"{_T}:DAG"},
    "airflow.models.baseoperator": {"BaseOperator": f"{_T}:BaseOperator", **_CHAIN},
    "airflow.models.param": {"Param": f"{_M}:Param", "ParamsDict": "builtins:dict"},
    "airflow.models.variable": {"Variable": f"{_M}:Variable"},
    "airflow.models.connection": {"Connection": "sparkflow.connections:Connection"},
    "airflow.models.taskinstance": {"TaskInstance": "sparkflow.definitions.context:TaskInstanceHandle"},
    "airflow.models.xcom_arg": {"XComArg": "sparkflow.definitions.xcom_arg:XComArg"},
    "airflow.decorators": {
        "dag": f"{_T}:dag", "task": f"{_T}:task", "task_group": f"{_T}:task_group", **_SETUP_TEARDOWN,
    },
    "airflow.decorators.setup_teardown": {"setup_task": f"{_PY}:setup", "teardown_task": f"{_PY}:teardown"},
    "airflow.utils.edgemodifier": _LABEL,
    "airflow.datasets": {"Dataset": f"{_A}:Dataset", "DatasetAlias": f"{_A}:AssetAlias",
                         "DatasetAll": f"{_A}:DatasetAll", "DatasetAny": f"{_A}:DatasetAny"},
    "airflow.timetables.datasets": {"DatasetOrTimeSchedule": f"{_A}:DatasetOrTimeSchedule"},
    "airflow.timetables.assets": {"AssetOrTimeSchedule": f"{_A}:AssetOrTimeSchedule"},
    "airflow.models.mappedoperator": {"MappedOperator": "sparkflow.definitions.mappedoperator:MappedOperator"},
    "airflow.sdk": {
        **_COMMON, **_CHAIN, **_TASK_GROUP, **_SETUP_TEARDOWN, "Label": _LABEL["Label"],
        "Asset": f"{_A}:Asset", "AssetAlias": f"{_A}:AssetAlias", "AssetAll": f"{_A}:AssetAll",
        "AssetAny": f"{_A}:AssetAny",
        "dag": f"{_T}:dag", "task": f"{_T}:task",
        "get_current_context": "sparkflow.definitions.context:get_current_context",
        "BaseHook": f"{_M}:BaseHook",
        "Connection": "sparkflow.connections:Connection",
        "Context": "sparkflow.definitions.context:Context",
        "TriggerRule": "sparkflow.definitions.trigger_rule:TriggerRule",
        "XComArg": "sparkflow.definitions.xcom_arg:XComArg",
        "BaseSensorOperator": f"op:{_SENSORS}:BaseSensorOperator",
        "PokeReturnValue": f"{_SENSORS}:PokeReturnValue",
    },
    "airflow.operators.bash": {"BashOperator": _BASH},
    "airflow.operators.bash_operator": {"BashOperator": _BASH},
    "airflow.operators.python": _PYTHON_OPERATORS,
    "airflow.operators.python_operator": _PYTHON_OPERATORS,
    "airflow.operators.empty": {"EmptyOperator": _EMPTY},
    "airflow.operators.dummy": {"DummyOperator": _EMPTY, "EmptyOperator": _EMPTY},
    "airflow.operators.dummy_operator": {"DummyOperator": _EMPTY},
    "airflow.providers.standard.operators.bash": {"BashOperator": _BASH},
    "airflow.providers.standard.operators.python": _PYTHON_OPERATORS,
    "airflow.providers.standard.operators.empty": {"EmptyOperator": _EMPTY},
    "airflow.sensors.base": _BASE_SENSOR,
    "airflow.sensors.filesystem": _FILE_SENSOR,
    "airflow.sensors.external_task": _EXTERNAL_TASK,
    "airflow.sensors.time_delta": _TIME_DELTA,
    "airflow.sensors.date_time": _DATE_TIME,
    "airflow.sensors.python": _PYTHON_SENSOR,
    "airflow.providers.standard.sensors.filesystem": _FILE_SENSOR,
    "airflow.providers.standard.sensors.external_task": _EXTERNAL_TASK,
    "airflow.providers.standard.sensors.time_delta": _TIME_DELTA,
    "airflow.providers.standard.sensors.date_time": _DATE_TIME,
    "airflow.providers.standard.sensors.python": _PYTHON_SENSOR,
    "airflow.utils.dates": {"days_ago": f"{_M}:days_ago"},
    "airflow.utils.timezone": {
        "utcnow": f"{_M}:utcnow", "datetime": f"{_M}:tz_datetime", "make_aware": f"{_M}:make_aware",
        "convert_to_utc": f"{_M}:convert_to_utc",
    },
    "airflow.utils.trigger_rule": {"TriggerRule": "sparkflow.definitions.trigger_rule:TriggerRule"},
    "airflow.utils.task_group": {"TaskGroup": f"{_T}:TaskGroup"},
    "airflow.utils.helpers": _CHAIN,
    "airflow.utils.state": {
        "State": "sparkflow.state:TaskState", "TaskInstanceState": "sparkflow.state:TaskState",
        "DagRunState": "sparkflow.state:RunState",
    },
    "airflow.exceptions": _EXCEPTIONS,
    "airflow.hooks.base": {"BaseHook": f"{_M}:BaseHook"},
    "airflow.hooks.base_hook": {"BaseHook": f"{_M}:BaseHook"},
    "airflow.macros": {
        "ds_add": "sparkflow.definitions.context:ds_add", "ds_format": "sparkflow.definitions.context:ds_format",
    },
    "airflow.timetables.trigger": {"CronTriggerTimetable": f"{_M}:CronTriggerTimetable"},
    "airflow.timetables.base": {
        name: f"sparkflow.compat.airflow.timetables:{name}"
        for name in ("Timetable", "DataInterval", "DagRunInfo", "TimeRestriction")
    },
    "airflow.timetables.interval": {"CronDataIntervalTimetable": f"{_M}:CronDataIntervalTimetable"},
    "airflow.providers.apache.spark.operators.spark_submit": _SPARK_SUBMIT_OP,
    "airflow.providers.apache.spark.operators.spark_sql": _SPARK_SQL_OP,
    "airflow.providers.apache.spark.operators.spark_jdbc": _SPARK_JDBC_OP,
    "airflow.providers.apache.spark.hooks.spark_submit": _SPARK_SUBMIT_HOOK,
    "airflow.providers.apache.spark.hooks.spark_sql": _SPARK_SQL_HOOK,
    "airflow.providers.apache.spark.hooks.spark_jdbc": _SPARK_JDBC_HOOK,
    # -- standard operators and sensors: Airflow 2 paths, 1.x/contrib paths Airflow 2 still took, providers.standard
    "airflow.operators.branch": _BRANCH,
    "airflow.operators.branch_operator": _BRANCH,
    "airflow.providers.standard.operators.branch": _BRANCH,
    "airflow.operators.weekday": _WEEKDAY_BRANCH,
    "airflow.providers.standard.operators.weekday": _WEEKDAY_BRANCH,
    "airflow.operators.datetime": _DATETIME_BRANCH,
    "airflow.providers.standard.operators.datetime": _DATETIME_BRANCH,
    "airflow.operators.trigger_dagrun": _TRIGGER,
    "airflow.operators.dagrun_operator": _TRIGGER,
    "airflow.providers.standard.operators.trigger_dagrun": _TRIGGER,
    "airflow.operators.latest_only": _LATEST_ONLY,
    "airflow.operators.latest_only_operator": _LATEST_ONLY,
    "airflow.providers.standard.operators.latest_only": _LATEST_ONLY,
    "airflow.sensors.bash": _BASH_SENSOR,
    "airflow.sensors.bash_sensor": _BASH_SENSOR,
    "airflow.contrib.sensors.bash_sensor": _BASH_SENSOR,
    "airflow.providers.standard.sensors.bash": _BASH_SENSOR,
    "airflow.sensors.time_sensor": _TIME,
    "airflow.providers.standard.sensors.time": _TIME,
    "airflow.sensors.weekday": _WEEKDAY_SENSOR,
    "airflow.sensors.weekday_sensor": _WEEKDAY_SENSOR,
    "airflow.contrib.sensors.weekday_sensor": _WEEKDAY_SENSOR,
    "airflow.providers.standard.sensors.weekday": _WEEKDAY_SENSOR,
    "airflow.sensors.time_delta_sensor": _TIME_DELTA,
    "airflow.sensors.date_time_sensor": _DATE_TIME,
    "airflow.sensors.python_sensor": _PYTHON_SENSOR,
    "airflow.contrib.sensors.python_sensor": _PYTHON_SENSOR,
    "airflow.sensors.external_task_sensor": _EXTERNAL_TASK,
    "airflow.contrib.sensors.file_sensor": _FILE_SENSOR,
    "airflow.sensors.base_sensor_operator": _BASE_SENSOR,
    "airflow.utils.weekday": _WEEKDAY_ENUM,
    "airflow.providers.standard.utils.weekday": _WEEKDAY_ENUM,
    # -- the old contrib paths of the Spark provider (Airflow 1.10; Airflow 2 still accepted them)
    "airflow.contrib.operators.spark_submit_operator": _SPARK_SUBMIT_OP,
    "airflow.contrib.operators.spark_sql_operator": _SPARK_SQL_OP,
    "airflow.contrib.operators.spark_jdbc_operator": _SPARK_JDBC_OP,
    "airflow.contrib.hooks.spark_submit_hook": _SPARK_SUBMIT_HOOK,
    "airflow.contrib.hooks.spark_sql_hook": _SPARK_SQL_HOOK,
    "airflow.contrib.hooks.spark_jdbc_hook": _SPARK_JDBC_HOOK,
    # -- what the newest provider examples import for Airflow 2/3 alike
    "airflow.providers.common.compat.sdk": {
        **_COMMON, **_CHAIN, **_TASK_GROUP, **_BASE_SENSOR, **_EXCEPTIONS,
        "dag": f"{_T}:dag", "task": f"{_T}:task",
        "BaseHook": f"{_M}:BaseHook",
        "Connection": "sparkflow.connections:Connection",
        "Context": "sparkflow.definitions.context:Context",
        "get_current_context": "sparkflow.definitions.context:get_current_context",
        "TriggerRule": "sparkflow.definitions.trigger_rule:TriggerRule",
        "XComArg": "sparkflow.definitions.xcom_arg:XComArg",
        "XCOM_RETURN_KEY": "sparkflow.definitions.context:XCOM_RETURN_KEY",
        "TaskInstanceState": "sparkflow.state:TaskState",
        "DagRunState": "sparkflow.state:RunState",
        "timezone": "airflow.utils:timezone",
    },
    "airflow.providers.apache.spark.operators.spark_pyspark": _SPARK_PYSPARK_OP,
    "airflow.providers.apache.spark.hooks.spark_connect": _SPARK_CONNECT_HOOK,
    "airflow.providers.apache.spark.decorators.pyspark": _PYSPARK_DECORATOR,
    "airflow.providers.apache.spark.operators.spark_pipelines": _SPARK_PIPELINES_OP,
    "airflow.providers.apache.spark.hooks.spark_pipelines": _SPARK_PIPELINES_HOOK,
}


def all_module_names() -> list[str]:
    """Every aliased module and its parent packages (``airflow.providers``, ``airflow.providers.apache`` ...)."""
    names: set[str] = set()
    for module in ALIASES:
        parts = module.split(".")
        names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(names, key=lambda n: (n.count("."), n))
