"""Serialized DAGs: the contract between parsing a DAG file and everything else (the scheduler, the web server,
the API), so no reader imports user code. Pure functions DAG <-> JSON-able dict, versioned and hashed, as
Airflow's serialized DAGs.

A serialized DAG holds what the planner needs (task ids, dependencies, trigger rules, retries, pools, queues,
priority, time-outs, schedule, limits) and what the UI needs (operator name, raw template fields, docs, task
groups, Spark connection ids). ``deserialize_dag`` gives back a real :class:`DAG` whose tasks are
:class:`SerializedOperator` placeholders: every planning attribute is there, ``execute`` is not. Callbacks are
user code too: only whether a DAG or task has one is kept (``has_callback``), and whoever runs it imports the
file (a task process, or a callback process the scheduler starts).

To add a field, add it to ``_task_fields`` (or ``serialize_task`` for values that need converting) and read it in
``SerializedOperator``; readers of older data get the constructor's default.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sparkflow.definitions.assets import Asset, AssetAlias, condition_from_json, condition_to_json
from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.custom_timetable import timetable_from_json, timetable_to_json
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.expand_input import (
    DictOfListsExpandInput,
    ExpandInput,
    ListOfDictsExpandInput,
    MappedArgument,
)
from sparkflow.definitions.location import Location
from sparkflow.definitions.mappedoperator import MappedOperator
from sparkflow.definitions.schedule import CronTimetable, DeltaTimetable, NullTimetable, OnceTimetable
from sparkflow.definitions.xcom_arg import NOTSET, MapXComArg, SourceLength, XComArg, ZipXComArg
from sparkflow.exceptions import DagDefinitionError

SERIALIZATION_VERSION = 1
CALLBACKS = ("on_execute_callback", "on_success_callback", "on_failure_callback", "on_retry_callback")
# Plain task attributes kept as they are (JSON values), with BaseOperator's defaults on the way back.
_task_fields = (
    "owner", "email", "retries", "retry_exponential_backoff", "depends_on_past", "wait_for_downstream", "pool",
    "pool_slots", "priority_weight", "weight_rule", "queue", "do_xcom_push", "multiple_outputs", "doc_md",
    "max_active_tis_per_dag", "max_active_tis_per_dagrun",
)


class SerializedOperator(BaseOperator):
    """A task as the metastore knows it: every attribute the scheduler and the UI read, no user code.

    ``task_type`` is the original operator's class name; ``template_values`` its template fields unrendered;
    ``conn_id`` the Spark (or other) connection it names, if any; ``has_callback`` the callbacks it defines."""

    def __init__(self, *, task_type: str, task_module: str, template_values: Mapping[str, Any],
                 template_ext: list[str], ui_color: str, task_group_id: str | None, conn_id: str | None,
                 has_callback: Mapping[str, bool], extra: Mapping[str, Any], mapped: Mapping[str, Any] | None = None,
                 mapped_group: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self._task_type = task_type
        self.mapped = mapped  # what a mapped task expands over (expand_spec), None when it is not mapped
        self.mapped_group_spec = mapped_group  # {"group_id": ..., "expand": ...} of its mapped task group
        self.task_module = task_module
        self.template_fields = tuple(template_values)  # type: ignore[misc]
        self.template_values = dict(template_values)
        self.template_ext = tuple(template_ext)  # type: ignore[misc]
        self.ui_color = ui_color  # type: ignore[misc]
        self.task_group_id = task_group_id
        self.conn_id = conn_id
        self.has_callback = dict(has_callback)
        self.extra = dict(extra)  # fields of later versions that this one does not know
        super().__init__(**kwargs)

    @property
    def task_type(self) -> str:
        return self._task_type

    @property
    def is_mapped(self) -> bool:
        return self.mapped is not None

    @property
    def mapped_group_id(self) -> str | None:
        return self.mapped_group_spec["group_id"] if self.mapped_group_spec else None

    def map_length(self, source_length: SourceLength) -> int:
        """How many instances the task gets, from its serialized expand input (lengths only, no user code)."""
        spec = self.mapped_group_spec["expand"] if self.mapped_group_spec else self.mapped
        assert spec is not None and self.dag is not None, "map_length() of a task that is not mapped"
        dag = self.dag

        def length(item: Mapping[str, Any]) -> int:
            if "length" in item:
                return int(item["length"])
            if "xcom" in item:
                return source_length(XComArg(dag.task_dict[item["xcom"]], item["key"]))
            if "map" in item:
                return length(item["map"])
            if "zip" in item:
                lengths = [length(i) for i in item["zip"]]
                return max(lengths) if item.get("fill") else min(lengths)
            raise TypeError(f"cannot map over {item.get('what', 'this value')}")

        if spec["kind"] == "list_of_dicts":
            return length(spec["arg"])
        total = 1
        for item in spec["args"].values():
            total *= length(item)
        return total

    def execute(self, context: Any) -> Any:
        raise DagDefinitionError(
            f"task '{self.task_id}' is a serialized copy ({self._task_type}); a task process runs the DAG file's "
            "own task")


def is_serialized(dag: DAG) -> bool:
    return getattr(dag, "serialized_hash", None) is not None


# -- JSON values ----------------------------------------------------------------------------------------------
def to_json_value(value: Any) -> Any:
    """A value as JSON can hold it: containers recursed, dates as ISO text, durations as seconds, anything else
    (a callable, an XComArg, a Param) as its text: the UI shows it, nobody runs it."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_json_value(v) for v in items]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


def _delta(value: float | None) -> timedelta | None:
    return timedelta(seconds=value) if value is not None else None


def _tz_name(tz: tzinfo | None) -> str:
    if tz is None or tz is UTC:
        return "UTC"
    for attribute in ("key", "name", "zone"):  # zoneinfo, pendulum, pytz
        name = getattr(tz, attribute, None)
        if isinstance(name, str) and name:
            return name
    offset = tz.utcoffset(None)
    return f"{offset.total_seconds():+}" if offset is not None else "UTC"


def _tz(name: str) -> tzinfo:
    if name == "UTC":
        return UTC
    if name[:1] in "+-":
        return timezone(timedelta(seconds=float(name)))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _date_out(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _date_in(value: str | None, tz: tzinfo) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.astimezone(tz) if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


def _schedule_out(dag: DAG) -> dict[str, Any]:
    timetable = dag.timetable
    if isinstance(timetable, OnceTimetable):
        return {"type": "once"}
    if isinstance(timetable, NullTimetable):
        return {"type": "none"}
    if isinstance(timetable, CronTimetable):
        return {"type": "cron", "expression": timetable.expression}
    if isinstance(timetable, DeltaTimetable):
        return {"type": "delta", "seconds": timetable.delta.total_seconds()}
    return timetable_to_json(timetable)  # a user's own class: by import path, as Airflow keeps it


def _schedule_in(data: Mapping[str, Any]) -> Any:
    kind = data["type"]
    if kind == "once":
        return "@once"
    if kind == "cron":
        return data["expression"]
    if kind == "delta":
        return timedelta(seconds=data["seconds"])
    if kind == "custom":
        return timetable_from_json(data)
    return None


# -- DAG -> dict ----------------------------------------------------------------------------------------------
def _value_spec(value: Any) -> dict[str, Any]:
    """What a mapped argument is, as far as its length goes: a literal's length, an upstream output, a .map() or
    .zip() of those."""
    if isinstance(value, ZipXComArg):
        return {"zip": [_value_spec(arg) for arg in value.args], "fill": value.fillvalue is not NOTSET}
    if isinstance(value, MapXComArg):
        return {"map": _value_spec(value.arg)}
    if isinstance(value, MappedArgument):
        return {"what": repr(value)}
    if isinstance(value, XComArg):
        return {"xcom": value.operator.task_id, "key": value.key}
    if isinstance(value, (list, tuple, dict)):
        return {"length": len(value)}
    return {"what": type(value).__name__}


def expand_spec(expand_input: ExpandInput) -> dict[str, Any]:
    if isinstance(expand_input, ListOfDictsExpandInput):
        return {"kind": "list_of_dicts", "arg": _value_spec(expand_input.value)}
    return {"kind": "dict_of_lists", "args": {name: _value_spec(v) for name, v in expand_input.value.items()}}


def _mapping_fields(task: BaseOperator) -> dict[str, Any]:
    if isinstance(task, SerializedOperator):
        return {"mapped": task.mapped, "mapped_group": task.mapped_group_spec}
    group = task.mapped_group
    if not isinstance(task, MappedOperator):  # a classic operator in a mapped group: mapped with the group only
        if group is None:
            return {"mapped": None, "mapped_group": None}
        return {"mapped": expand_spec(DictOfListsExpandInput({})),
                "mapped_group": {"group_id": group.group_id, "expand": expand_spec(group.expand_input)}}
    return {"mapped": expand_spec(task.expand_input),
            "mapped_group": {"group_id": group.group_id, "expand": expand_spec(group.expand_input)} if group else None}


def serialize_task(task: BaseOperator) -> dict[str, Any]:
    """One task as a JSON-able dict: the one place that says what a task carries into the metastore."""
    group = task.task_group
    data: dict[str, Any] = {name: to_json_value(getattr(task, name, None)) for name in _task_fields}
    data.update(
        task_id=task.task_id,
        task_type=task.task_type,
        task_module=getattr(task, "task_module", type(task).__module__),
        upstream=sorted(task.upstream_task_ids),
        downstream=sorted(task.downstream_task_ids),
        trigger_rule=task.trigger_rule.value,
        retry_delay=_seconds(task.retry_delay),
        max_retry_delay=_seconds(task.max_retry_delay),
        execution_timeout=_seconds(task.execution_timeout),
        start_date=_date_out(task.start_date),
        end_date=_date_out(task.end_date),
        params=to_json_value(task.params),
        template_fields=_template_values(task),
        template_ext=list(task.template_ext),
        ui_color=task.ui_color,
        task_group=group.group_id if group is not None else getattr(task, "task_group_id", None),
        conn_id=_conn_id(task),
        callbacks=sorted(name for name in CALLBACKS if _has_callback(task, name)),
        lineno=task.location.lineno if task.location else None,
        **_mapping_fields(task),
        is_setup=task.is_setup, is_teardown=task.is_teardown, on_failure_fail_dagrun=task.on_failure_fail_dagrun,
        outlets=[_outlet_to_json(a) for a in task.outlets],
    )
    data.update(getattr(task, "extra", None) or {})
    return data


def _outlet_to_json(outlet: Asset | AssetAlias) -> dict[str, Any]:
    if isinstance(outlet, AssetAlias):
        return {"alias": outlet.name, "group": outlet.group}
    return {"uri": outlet.uri, "name": outlet.name, "group": outlet.group, "extra": to_json_value(outlet.extra)}


def outlet_from_json(item: dict[str, Any]) -> Asset | AssetAlias:
    if "alias" in item:
        return AssetAlias(item["alias"], item.get("group") or "")
    return Asset(item["uri"], name=item.get("name"), group=item.get("group") or "asset", extra=item.get("extra") or {})


def _template_values(task: BaseOperator) -> dict[str, Any]:
    if isinstance(task, SerializedOperator):
        return dict(task.template_values)
    return {name: to_json_value(getattr(task, name, None)) for name in task.template_fields}


def _conn_id(task: BaseOperator) -> str | None:
    value = getattr(task, "conn_id", None)
    return value if isinstance(value, str) else None


def _has_callback(owner: Any, name: str) -> bool:
    if isinstance(owner, SerializedOperator):
        return owner.has_callback.get(name, False)
    if isinstance(owner, DAG) and is_serialized(owner):
        return name in getattr(owner, "serialized_callbacks", ())
    return bool(getattr(owner, name, None))


def _groups(dag: DAG) -> list[dict[str, Any]]:
    groups = getattr(dag, "serialized_groups", None)
    if groups is not None:
        return list(groups)
    return [
        {"group_id": g.group_id, "label": g.label, "parent": g.parent_group.group_id if g.parent_group else None,
         "tooltip": g.tooltip, "ui_color": g.ui_color, "ui_fgcolor": g.ui_fgcolor}
        for g in sorted(dag.task_group_dict.values(), key=lambda g: g.group_id)
    ]


def serialize_dag(dag: DAG) -> dict[str, Any]:
    """The DAG as a JSON-able dict (``__version`` first). Tasks in topological order."""
    tz = dag.start_date.tzinfo if dag.start_date is not None else UTC
    return {
        "__version": SERIALIZATION_VERSION,
        "dag": {
            "dag_id": dag.dag_id,
            "fileloc": dag.fileloc,
            "lineno": dag.location.lineno if dag.location else None,
            "description": dag.description,
            "schedule": _schedule_out(dag),
            "timetable_description": dag.timetable.description,
            "schedule_description": dag.schedule_description,
            "timezone": _tz_name(tz),
            "start_date": _date_out(dag.start_date),
            "end_date": _date_out(dag.end_date),
            "catchup": dag.catchup,
            "params": to_json_value(dag.params),
            "tags": sorted(dag.tags),
            "max_active_runs": dag.max_active_runs,
            "max_active_tasks": dag.max_active_tasks,
            "dagrun_timeout": _seconds(dag.dagrun_timeout),
            "doc_md": dag.doc_md,
            "owner_links": to_json_value(dag.owner_links),
            "is_paused_upon_creation": dag.is_paused_upon_creation,
            "render_template_as_native_obj": dag.render_template_as_native_obj,
            "template_searchpath": list(dag.template_searchpath),
            "callbacks": sorted(n for n in ("on_success_callback", "on_failure_callback") if _has_callback(dag, n)),
            "task_groups": _groups(dag),
            "edge_info": dag.edge_info,
            "asset_schedule": condition_to_json(dag.asset_condition) if dag.asset_condition is not None else None,
            "tasks": [serialize_task(task) for task in dag.topological_order()],
        },
    }


def dumps(data: Mapping[str, Any]) -> str:
    """Canonical JSON text: the same DAG always gives the same text, so the hash says whether it changed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def dag_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- dict -> DAG ----------------------------------------------------------------------------------------------
def deserialize_dag(data: Mapping[str, Any], hash_: str | None = None) -> DAG:
    """A DAG with SerializedOperator tasks, as the scheduler and the web server use it. Raises ValueError for
    data of a newer version than this sparkflow reads."""
    version = data.get("__version")
    if version != SERIALIZATION_VERSION:
        raise ValueError(f"serialized DAG version {version!r} is not {SERIALIZATION_VERSION}; re-parse the DAG "
                         "files with this sparkflow (`sparkflow dags reserialize`)")
    d = data["dag"]
    tz = _tz(d.get("timezone") or "UTC")
    dag = DAG(
        d["dag_id"], description=d.get("description"), schedule=_schedule_in(d["schedule"]),
        start_date=_date_in(d.get("start_date"), tz), end_date=_date_in(d.get("end_date"), tz),
        catchup=d.get("catchup", False), params=d.get("params"), tags=d.get("tags"),
        max_active_runs=d.get("max_active_runs", 16), max_active_tasks=d.get("max_active_tasks", 16),
        dagrun_timeout=_delta(d.get("dagrun_timeout")), doc_md=d.get("doc_md"), owner_links=d.get("owner_links"),
        render_template_as_native_obj=d.get("render_template_as_native_obj", False),
        template_searchpath=d.get("template_searchpath"), is_paused_upon_creation=d.get("is_paused_upon_creation"),
        fileloc=d.get("fileloc"),
    )
    dag._location = Location(d["fileloc"], d["lineno"]) if d.get("fileloc") and d.get("lineno") else None
    dag.serialized_callbacks = tuple(d.get("callbacks", ()))  # type: ignore[attr-defined]
    dag.serialized_groups = tuple(d.get("task_groups", ()))  # type: ignore[attr-defined]
    dag.edge_info = {up: dict(downs) for up, downs in (d.get("edge_info") or {}).items()}
    if d.get("asset_schedule"):
        dag.asset_condition = condition_from_json(d["asset_schedule"])
    for item in d["tasks"]:
        task = _deserialize_task(item, tz, dag)
        task.upstream_task_ids.update(item.get("upstream", ()))
        task.downstream_task_ids.update(item.get("downstream", ()))
    dag.serialized_hash = hash_ or dag_hash(dumps(data))  # type: ignore[attr-defined]
    return dag


_KNOWN_TASK_KEYS = frozenset(_task_fields) | {
    "task_id", "task_type", "task_module", "upstream", "downstream", "trigger_rule", "retry_delay",
    "max_retry_delay", "execution_timeout", "start_date", "end_date", "params", "template_fields", "template_ext",
    "ui_color", "task_group", "conn_id", "callbacks", "lineno", "mapped", "mapped_group", "is_setup", "is_teardown",
    "on_failure_fail_dagrun", "outlets",
}


def _deserialize_task(item: Mapping[str, Any], tz: tzinfo, dag: DAG) -> SerializedOperator:
    plain = {name: item[name] for name in _task_fields if name in item and item[name] is not None}
    callbacks = set(item.get("callbacks", ()))
    task = SerializedOperator(
        task_type=item["task_type"], task_module=item.get("task_module", ""),
        template_values=item.get("template_fields", {}), template_ext=item.get("template_ext", []),
        ui_color=item.get("ui_color", "#fff"), task_group_id=item.get("task_group"), conn_id=item.get("conn_id"),
        has_callback={name: name in callbacks for name in CALLBACKS},
        mapped=item.get("mapped"), mapped_group=item.get("mapped_group"),
        extra={k: v for k, v in item.items() if k not in _KNOWN_TASK_KEYS},
        task_id=item["task_id"], trigger_rule=item.get("trigger_rule", "all_success"),
        retry_delay=item.get("retry_delay", 300.0), max_retry_delay=item.get("max_retry_delay"),
        execution_timeout=item.get("execution_timeout"), start_date=_date_in(item.get("start_date"), tz),
        end_date=_date_in(item.get("end_date"), tz), params=item.get("params"), dag=dag, **plain,
    )
    task.outlets = [outlet_from_json(o) for o in item.get("outlets") or []]
    task.is_setup = bool(item.get("is_setup"))
    task.is_teardown = bool(item.get("is_teardown"))
    task.on_failure_fail_dagrun = bool(item.get("on_failure_fail_dagrun"))
    if item.get("lineno") and dag.fileloc:
        task._location = Location(dag.fileloc, item["lineno"])
    return task


__all__ = ["SERIALIZATION_VERSION", "SerializedOperator", "dag_hash", "deserialize_dag", "dumps", "is_serialized",
           "outlet_from_json", "serialize_dag", "serialize_task", "to_json_value"]
