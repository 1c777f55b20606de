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
    "ExternalTaskSensor": "sparkflow.operators.sensors",
    "FileSensor": "sparkflow.operators.sensors",
    "PokeReturnValue": "sparkflow.operators.sensors",
    "PythonSensor": "sparkflow.operators.sensors",
    "TimeDeltaSensor": "sparkflow.operators.sensors",
    "SparkSubmitOperator": "sparkflow.operators.spark_submit",
}

__all__ = [
    "DAG",
    "Asset",
    "AssetAlias",
    "AssetOrTimeSchedule",
    "Dataset",
    "AirflowException",
    "BaseOperator",
    "BaseSensorOperator",
    "BashOperator",
    "BranchPythonOperator",
    "DateTimeSensor",
    "EmptyOperator",
    "ExternalTaskSensor",
    "FailTaskNoRetry",
    "FileSensor",
    "Label",
    "PokeReturnValue",
    "PythonOperator",
    "PythonSensor",
    "ShortCircuitOperator",
    "SkipTask",
    "SparkSubmitOperator",
    "TaskGroup",
    "TimeDeltaSensor",
    "TriggerRule",
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
    from sparkflow.operators.empty import EmptyOperator
    from sparkflow.operators.python import (
        BranchPythonOperator,
        PythonOperator,
        ShortCircuitOperator,
        setup,
        task,
        teardown,
    )
    from sparkflow.operators.sensors import (
        BaseSensorOperator,
        DateTimeSensor,
        ExternalTaskSensor,
        FileSensor,
        PokeReturnValue,
        PythonSensor,
        TimeDeltaSensor,
    )
    from sparkflow.operators.spark_submit import SparkSubmitOperator
