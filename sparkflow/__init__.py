"""sparkflow: a compact, Spark-first workflow orchestrator with Airflow's authoring API.

    from sparkflow import DAG, task, BashOperator, SparkSubmitOperator

The names load on first use (PEP 562): `import sparkflow.cli` or a task process that only needs the Spark operator
does not pay for every operator and its dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it (the same names as __all__ and the TYPE_CHECKING imports below)
_EXPORTS = {
    "DAG": "sparkflow.definitions.dag",
    "dag": "sparkflow.definitions.dag",
    "BaseOperator": "sparkflow.definitions.baseoperator",
    "chain": "sparkflow.definitions.baseoperator",
    "cross_downstream": "sparkflow.definitions.baseoperator",
    "get_current_context": "sparkflow.definitions.context",
    "Label": "sparkflow.definitions.edgemodifier",
    "Asset": "sparkflow.definitions.assets",
    "AssetAlias": "sparkflow.definitions.assets",
    "AssetOrTimeSchedule": "sparkflow.definitions.assets",
    "Dataset": "sparkflow.definitions.assets",
    "TaskGroup": "sparkflow.definitions.taskgroup",
    "task_group": "sparkflow.definitions.taskgroup",
    "TriggerRule": "sparkflow.definitions.trigger_rule",
    "AirflowException": "sparkflow.exceptions",
    "FailTaskNoRetry": "sparkflow.exceptions",
    "SkipTask": "sparkflow.exceptions",
    "BashOperator": "sparkflow.operators.bash",
    "EmptyOperator": "sparkflow.operators.empty",
    "BranchPythonOperator": "sparkflow.operators.python",
    "PythonOperator": "sparkflow.operators.python",
    "ShortCircuitOperator": "sparkflow.operators.python",
    "task": "sparkflow.operators.python",
    "setup": "sparkflow.operators.python",
    "teardown": "sparkflow.operators.python",
    "BaseSensorOperator": "sparkflow.operators.sensors",
    "DateTimeSensor": "sparkflow.operators.sensors",
    "ExternalTaskMarker": "sparkflow.operators.sensors",
    "ExternalTaskSensor": "sparkflow.operators.sensors",
    "FileSensor": "sparkflow.operators.sensors",
    "PokeReturnValue": "sparkflow.operators.sensors",
    "PythonSensor": "sparkflow.operators.sensors",
    "TimeDeltaSensor": "sparkflow.operators.sensors",
    "SparkSubmitOperator": "sparkflow.operators.spark_submit",
    "BaseBranchOperator": "sparkflow.operators.branch",
    "BashSensor": "sparkflow.operators.bash_sensor",
    "BranchDateTimeOperator": "sparkflow.operators.branch_datetime",
    "BranchDayOfWeekOperator": "sparkflow.operators.weekday",
    "DayOfWeekSensor": "sparkflow.operators.weekday",
    "WeekDay": "sparkflow.operators.weekday",
    "LatestOnlyOperator": "sparkflow.operators.latest_only",
    "TriggerDagRunOperator": "sparkflow.operators.trigger_dagrun",
    "PythonVirtualenvOperator": "sparkflow.operators.python_virtualenv",
    "BranchPythonVirtualenvOperator": "sparkflow.operators.python_virtualenv",
    "ExternalPythonOperator": "sparkflow.operators.python_virtualenv",
    "BranchExternalPythonOperator": "sparkflow.operators.python_virtualenv",
    "TimeSensor": "sparkflow.operators.sensors",
    "TimeSensorAsync": "sparkflow.operators.sensors",
    "TimeDeltaSensorAsync": "sparkflow.operators.sensors",
    "DateTimeSensorAsync": "sparkflow.operators.sensors",
    "PySparkOperator": "sparkflow.operators.pyspark",
    "SparkPipelinesOperator": "sparkflow.operators.spark_pipelines",
}

__all__ = [
    "DAG",
    "Asset",
    "AssetAlias",
    "AssetOrTimeSchedule",
    "Dataset",
    "AirflowException",
    "BaseBranchOperator",
    "BaseOperator",
    "BaseSensorOperator",
    "BashOperator",
    "BashSensor",
    "BranchDateTimeOperator",
    "BranchDayOfWeekOperator",
    "BranchExternalPythonOperator",
    "BranchPythonOperator",
    "BranchPythonVirtualenvOperator",
    "DateTimeSensor",
    "DateTimeSensorAsync",
    "DayOfWeekSensor",
    "EmptyOperator",
    "ExternalPythonOperator",
    "ExternalTaskMarker",
    "ExternalTaskSensor",
    "FailTaskNoRetry",
    "FileSensor",
    "Label",
    "LatestOnlyOperator",
    "PokeReturnValue",
    "PythonOperator",
    "PySparkOperator",
    "PythonSensor",
    "PythonVirtualenvOperator",
    "ShortCircuitOperator",
    "SkipTask",
    "SparkPipelinesOperator",
    "SparkSubmitOperator",
    "TaskGroup",
    "TimeDeltaSensor",
    "TimeDeltaSensorAsync",
    "TimeSensor",
    "TimeSensorAsync",
    "TriggerDagRunOperator",
    "TriggerRule",
    "WeekDay",
    "chain",
    "cross_downstream",
    "dag",
    "get_current_context",
    "setup",
    "task",
    "task_group",
    "teardown",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sparkflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from sparkflow.definitions.assets import Asset, AssetAlias, AssetOrTimeSchedule, Dataset
    from sparkflow.definitions.baseoperator import BaseOperator, chain, cross_downstream
    from sparkflow.definitions.context import get_current_context
    from sparkflow.definitions.dag import DAG, dag
    from sparkflow.definitions.edgemodifier import Label
    from sparkflow.definitions.taskgroup import TaskGroup, task_group
    from sparkflow.definitions.trigger_rule import TriggerRule
    from sparkflow.exceptions import AirflowException, FailTaskNoRetry, SkipTask
    from sparkflow.operators.bash import BashOperator
    from sparkflow.operators.bash_sensor import BashSensor
    from sparkflow.operators.branch import BaseBranchOperator
    from sparkflow.operators.branch_datetime import BranchDateTimeOperator
    from sparkflow.operators.empty import EmptyOperator
    from sparkflow.operators.latest_only import LatestOnlyOperator
    from sparkflow.operators.pyspark import PySparkOperator
    from sparkflow.operators.python import (
        BranchPythonOperator,
        PythonOperator,
        ShortCircuitOperator,
        setup,
        task,
        teardown,
    )
    from sparkflow.operators.python_virtualenv import (
        BranchExternalPythonOperator,
        BranchPythonVirtualenvOperator,
        ExternalPythonOperator,
        PythonVirtualenvOperator,
    )
    from sparkflow.operators.sensors import (
        BaseSensorOperator,
        DateTimeSensor,
        DateTimeSensorAsync,
        ExternalTaskMarker,
        ExternalTaskSensor,
        FileSensor,
        PokeReturnValue,
        PythonSensor,
        TimeDeltaSensor,
        TimeDeltaSensorAsync,
        TimeSensor,
        TimeSensorAsync,
    )
    from sparkflow.operators.spark_pipelines import SparkPipelinesOperator
    from sparkflow.operators.spark_submit import SparkSubmitOperator
    from sparkflow.operators.trigger_dagrun import TriggerDagRunOperator
    from sparkflow.operators.weekday import BranchDayOfWeekOperator, DayOfWeekSensor, WeekDay
