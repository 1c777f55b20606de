"""sparkflow: a compact, Spark-first workflow orchestrator with Airflow's authoring API.

    from sparkflow import DAG, task, BashOperator, SparkSubmitOperator
"""

from sparkflow.definitions.baseoperator import BaseOperator, chain, cross_downstream
from sparkflow.definitions.context import get_current_context
from sparkflow.definitions.dag import DAG, dag
from sparkflow.definitions.taskgroup import TaskGroup, task_group
from sparkflow.definitions.trigger_rule import TriggerRule
from sparkflow.exceptions import AirflowException, FailTaskNoRetry, SkipTask
from sparkflow.operators.bash import BashOperator
from sparkflow.operators.empty import EmptyOperator
from sparkflow.operators.python import BranchPythonOperator, PythonOperator, ShortCircuitOperator, task
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

__version__ = "0.1.0"

__all__ = [
    "DAG",
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
    "task",
    "task_group",
]
