"""Authoring model: DAGs, operators' base class, schedules, templating and the DAG-file loader.

Nothing here touches the metastore, the scheduler or the edges (enforced by import-linter).
"""
