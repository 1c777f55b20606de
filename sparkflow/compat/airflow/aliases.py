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
}
_SENSORS = "sparkflow.operators.sensors"
_FILE_SENSOR = {"FileSensor": f"op:{_SENSORS}:FileSensor"}
_EXTERNAL_TASK = {
    "ExternalTaskSensor": f"op:{_SENSORS}:ExternalTaskSensor",
    "ExternalTaskMarker": f"op:{_SENSORS}:ExternalTaskMarker",
}
_TIME_DELTA = {"TimeDeltaSensor": f"op:{_SENSORS}:TimeDeltaSensor"}
_DATE_TIME = {"DateTimeSensor": f"op:{_SENSORS}:DateTimeSensor"}
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
    "airflow.timetables.interval": {"CronDataIntervalTimetable": f"{_M}:CronDataIntervalTimetable"},
    "airflow.providers.apache.spark.operators.spark_submit": _SPARK_SUBMIT_OP,
    "airflow.providers.apache.spark.operators.spark_sql": _SPARK_SQL_OP,
    "airflow.providers.apache.spark.operators.spark_jdbc": _SPARK_JDBC_OP,
    "airflow.providers.apache.spark.hooks.spark_submit": _SPARK_SUBMIT_HOOK,
    "airflow.providers.apache.spark.hooks.spark_sql": _SPARK_SQL_HOOK,
    "airflow.providers.apache.spark.hooks.spark_jdbc": _SPARK_JDBC_HOOK,
}


def all_module_names() -> list[str]:
    """Every aliased module and its parent packages (``airflow.providers``, ``airflow.providers.apache`` ...)."""
    names: set[str] = set()
    for module in ALIASES:
        parts = module.split(".")
        names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(names, key=lambda n: (n.count("."), n))
