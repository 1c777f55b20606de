"""Run unmodified Airflow DAG files: ``airflow.*`` imports resolve to sparkflow when Airflow is not installed.

Only the public authoring API (definitions, operators) is used here; the DAG loader receives the finder from its
callers (the scheduler's DAG parsing and the task runner) and never imports this package.
"""

from sparkflow.compat.airflow.finder import (
    FINDER,
    AirflowAliasFinder,
    NotProvidedError,
    airflow_finders,
    forget_alias_modules,
    real_airflow_installed,
)

__all__ = [
    "FINDER",
    "AirflowAliasFinder",
    "NotProvidedError",
    "airflow_finders",
    "forget_alias_modules",
    "real_airflow_installed",
]
