"""The REST API under /api/v1, shaped like Airflow's stable REST API v1 (same paths, fields and envelopes), plus
sparkflow's own Spark progress and metrics of a task instance. Errors are JSON ``{"detail": ...}``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from sparkflow.exceptions import NotFound, UserError
from sparkflow.logs import LOG_CHUNK_BYTES
from sparkflow.metastore import queries
from sparkflow.metastore.records import DagRecord, DagRunRecord, TaskInstanceRecord, TIKey
from sparkflow.state import RunState
from sparkflow.web import service
from sparkflow.web.auth import Principal, Role, authenticate, check_csrf_request, require

bearer = HTTPBearer(auto_error=False, description="An API token from `sparkflow users token USERNAME`")


def principal(request: Request,
              _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None) -> Principal:
    return authenticate(request)


User = Annotated[Principal, Depends(principal)]
router = APIRouter(prefix="/api/v1", tags=["api"])
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _write(request: Request, user: Principal, what: str) -> None:
    require(user, Role.OP, what)
    check_csrf_request(request, user)


# -- shapes ---------------------------------------------------------------------------------------------------
def dag_json(d: DagRecord, next_run: datetime | None = None) -> dict[str, Any]:
    return {
        "dag_id": d.dag_id, "is_paused": d.is_paused, "is_active": d.is_active, "description": d.description,
        "fileloc": d.fileloc, "owners": [o.strip() for o in (d.owners or "").split(",") if o.strip()],
        "tags": [{"name": tag} for tag in d.tags], "timetable_description": d.schedule,
        "schedule_interval": {"__type": "CronExpression", "value": d.schedule} if d.schedule else None,
        "max_active_runs": d.max_active_runs, "max_active_tasks": d.max_active_tasks,
        "last_parsed_time": _iso(d.last_parsed_at), "next_dagrun": _iso(next_run),
    }


def run_json(r: DagRunRecord) -> dict[str, Any]:
    return {
        "dag_id": r.dag_id, "dag_run_id": r.run_id, "run_type": r.run_type, "state": r.state.value,
        "logical_date": _iso(r.logical_date), "execution_date": _iso(r.logical_date),
        "data_interval_start": _iso(r.data_interval_start), "data_interval_end": _iso(r.data_interval_end),
        "queued_at": _iso(r.queued_at), "start_date": _iso(r.start_date), "end_date": _iso(r.end_date),
        "external_trigger": r.external_trigger, "conf": r.conf,
    }


def ti_json(ti: TaskInstanceRecord) -> dict[str, Any]:
    return {
        "task_instance_id": ti.id, "dag_id": ti.dag_id, "dag_run_id": ti.run_id, "task_id": ti.task_id,
        "map_index": ti.map_index,
        "state": ti.state.value, "try_number": ti.try_number, "max_tries": ti.max_tries, "operator": ti.operator,
        "pool": ti.pool, "pool_slots": ti.pool_slots, "queue": ti.queue, "priority_weight": ti.priority_weight,
        "queued_when": _iso(ti.queued_at), "start_date": _iso(ti.start_date), "end_date": _iso(ti.end_date),
        "duration": ti.duration, "hostname": ti.hostname, "pid": ti.pid, "executor": ti.executor,
        "spark_app_id": ti.spark_app_id, "spark_ui_url": ti.spark_ui_url, "note": ti.error,
    }


# -- DAGs -----------------------------------------------------------------------------------------------------
@router.get("/dags", summary="List DAGs")
def list_dags(request: Request, user: User, limit: Limit = 100, offset: Offset = 0,
              paused: bool | None = None, dag_id_pattern: str | None = None) -> dict[str, Any]:
    dags = queries.list_dags(request.app.state.metastore.db)
    if paused is not None:
        dags = [d for d in dags if d.is_paused == paused]
    if dag_id_pattern:
        dags = [d for d in dags if dag_id_pattern.lower() in d.dag_id.lower()]
    return {"dags": [dag_json(d) for d in dags[offset:offset + limit]], "total_entries": len(dags)}


@router.get("/importErrors", summary="List DAG files that failed to import")
def list_import_errors(request: Request, user: User, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """Airflow's import errors: each file that failed to import (or timed out, exited, crashed) and why."""
    errors = queries.list_import_errors(request.app.state.metastore.db)
    return {"import_errors": [
        {"import_error_id": e.id, "filename": e.filename, "lineno": e.lineno, "dag_id": e.dag_id,
         "task_id": e.task_id, "stack_trace": e.message, "timestamp": _iso(e.timestamp)}
        for e in errors[offset:offset + limit]], "total_entries": len(errors)}


@router.get("/dags/{dag_id}", summary="Get a DAG")
def get_dag(request: Request, user: User, dag_id: str) -> dict[str, Any]:
    return dag_json(queries.get_dag(request.app.state.metastore.db, dag_id))


class DagPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    is_paused: bool


@router.patch("/dags/{dag_id}", summary="Pause or unpause a DAG")
def patch_dag(request: Request, user: User, dag_id: str, body: DagPatch,
              update_mask: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:
    if update_mask is not None and any(m != "is_paused" for m in update_mask):
        raise UserError(f"update_mask {update_mask} is not supported; only is_paused can be changed")
    _write(request, user, "pause or unpause DAGs")
    return dag_json(service.set_paused(request.app.state.metastore, dag_id, body.is_paused))


# -- DAG runs -------------------------------------------------------------------------------------------------
@router.get("/dags/{dag_id}/dagRuns", summary="List DAG runs")
def list_runs(request: Request, user: User, dag_id: str, limit: Limit = 100, offset: Offset = 0,
              state: Annotated[list[RunState] | None, Query()] = None) -> dict[str, Any]:
    db = request.app.state.metastore.db
    queries.get_dag(db, dag_id)
    runs = queries.list_runs(db, dag_id, state)
    return {"dag_runs": [run_json(r) for r in runs[offset:offset + limit]], "total_entries": len(runs)}


class TriggerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dag_run_id: str | None = Field(default=None, max_length=250)
    logical_date: datetime | None = None
    execution_date: datetime | None = None
    conf: dict[str, Any] | None = None
    note: str | None = None


@router.post("/dags/{dag_id}/dagRuns", summary="Trigger a DAG run")
def trigger_run(request: Request, user: User, dag_id: str, body: TriggerBody) -> dict[str, Any]:
    _write(request, user, "trigger DAG runs")
    logical = body.logical_date or body.execution_date
    if logical is not None and logical.tzinfo is None:
        raise UserError("logical_date needs a time zone, e.g. 2024-01-01T00:00:00+00:00")
    if body.dag_run_id:
        try:
            queries.get_run(request.app.state.metastore.db, dag_id, body.dag_run_id)
        except NotFound:
            pass
        else:  # Airflow answers 409 here; scripts that re-trigger idempotently rely on it
            raise HTTPException(409, f"DAG run '{body.dag_run_id}' of DAG '{dag_id}' already exists")
    run = service.trigger(request.app.state.dags, dag_id, body.conf, body.dag_run_id, logical,
                          actor=f"web:{user.username}")
    return run_json(run)


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}", summary="Get a DAG run")
def get_run(request: Request, user: User, dag_id: str, dag_run_id: str) -> dict[str, Any]:
    return run_json(queries.get_run(request.app.state.metastore.db, dag_id, dag_run_id))


# -- task instances -------------------------------------------------------------------------------------------
@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances", summary="List the task instances of a run")
def list_task_instances(request: Request, user: User, dag_id: str, dag_run_id: str) -> dict[str, Any]:
    db = request.app.state.metastore.db
    queries.get_run(db, dag_id, dag_run_id)
    tis = queries.task_instances(db, dag_id, dag_run_id)
    return {"task_instances": [ti_json(ti) for ti in tis], "total_entries": len(tis)}


# bounded: a larger one overflows the database's integer (a 500 the API fuzz found)
MapIndex = Annotated[int, Query(ge=-1, le=2**31 - 1,
                                description="The instance of a mapped task (-1: an unmapped task)")]


def _ti(request: Request, dag_id: str, dag_run_id: str, task_id: str, map_index: int = -1) -> TaskInstanceRecord:
    return queries.get_task_instance(request.app.state.metastore.db, TIKey(dag_id, dag_run_id, task_id, map_index))


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}", summary="Get a task instance")
def get_task_instance(request: Request, user: User, dag_id: str, dag_run_id: str, task_id: str,
                      map_index: MapIndex = -1) -> dict[str, Any]:
    return ti_json(_ti(request, dag_id, dag_run_id, task_id, map_index))


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/listMapped",
            summary="The instances of a mapped task in a run, by map_index")
def list_mapped(request: Request, user: User, dag_id: str, dag_run_id: str, task_id: str,
                limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    db = request.app.state.metastore.db
    queries.get_run(db, dag_id, dag_run_id)
    tis = queries.mapped_instances(db, dag_id, dag_run_id, task_id)
    if not tis:
        queries.get_task_instance(db, TIKey(dag_id, dag_run_id, task_id))  # unknown task: 404
    return {"task_instances": [ti_json(ti) for ti in tis[offset:offset + limit]], "total_entries": len(tis)}


class SetState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    new_state: Literal["success", "failed"]
    dry_run: bool = False


@router.patch("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}",
              summary="Mark a task instance success or failed (a running one is killed)")
def set_task_state(request: Request, user: User, dag_id: str, dag_run_id: str, task_id: str,
                   body: SetState, map_index: MapIndex = -1) -> dict[str, Any]:
    _write(request, user, "mark task instances")
    ti = _ti(request, dag_id, dag_run_id, task_id, map_index)
    if body.dry_run:
        return ti_json(ti)
    result = service.mark(request.app.state.metastore, ti.key, body.new_state, actor=f"web:{user.username}")
    data = ti_json(_ti(request, dag_id, dag_run_id, task_id, map_index))
    data["killed_pid"] = result.killed_pid
    data["kill_note"] = result.note
    return data


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(header: str) -> tuple[int | None, int | None, int | None]:
    """``Range: bytes=N-M`` / ``bytes=N-`` / ``bytes=-T`` -> (offset, limit, tail)."""
    match = _RANGE.match(header.strip())
    if not match or not (match.group(1) or match.group(2)):
        raise HTTPException(416, f"Range {header!r} is not supported; use bytes=START-END, bytes=START- or bytes=-N")
    first, last = match.group(1), match.group(2)
    if not first:
        return None, None, int(last)
    if last and int(last) < int(first):
        raise HTTPException(416, f"Range {header!r} ends before it starts")
    return int(first), (int(last) - int(first) + 1) if last else None, None


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/logs/{try_number}",
            summary="A chunk of a try's log from a byte offset (follow it by passing back the returned offset)")
def get_log(request: Request, user: User, dag_id: str, dag_run_id: str, task_id: str, try_number: int,
            offset: Annotated[int | None, Query(ge=0, le=2**62, description="Byte offset to read from")] = None,
            token: Annotated[str | None, Query(description="Airflow's continuation_token (the offset)")] = None,
            limit: Annotated[int, Query(ge=1, le=LOG_CHUNK_BYTES, description="Most bytes returned")] =
            LOG_CHUNK_BYTES,
            tail: Annotated[int | None, Query(ge=1, le=2**62, description="Start at the last N bytes (from the "
                                                                          "start of a line)")] = None,
            map_index: MapIndex = -1,
            ) -> Response:
    """One read of the task instance and at most ``limit`` bytes of its log: the page's live log polls this too.
    ``Range: bytes=...`` works as well (206 with Content-Range for ``Accept: text/plain``)."""
    if offset is None and token is not None:
        if not token.isdigit() or len(token) > 18:
            raise UserError(f"token {token!r} is not a continuation token from an earlier answer")
        offset = int(token)
    ranged = request.headers.get("range")
    if ranged:
        offset, ranged_limit, tail = _parse_range(ranged)
        limit = min(ranged_limit or limit, LOG_CHUNK_BYTES)
    ti = _ti(request, dag_id, dag_run_id, task_id, map_index)
    chunk = service.read_task_log(request.app.state.settings, request.app.state.metastore, ti, try_number, offset,
                                  limit, tail)
    if "text/plain" in request.headers.get("accept", ""):
        headers = {"X-Log-Offset": str(chunk.offset), "Accept-Ranges": "bytes"}
        if ranged:
            end = max(chunk.offset - 1, chunk.start)
            headers["Content-Range"] = f"bytes {chunk.start}-{end}/{chunk.size}"
        return Response(chunk.content, status_code=206 if ranged else 200,
                        media_type="text/plain; charset=utf-8", headers=headers)
    return JSONResponse({
        "content": chunk.content, "continuation_token": str(chunk.offset), "offset": chunk.offset,
        "start": chunk.start, "size": chunk.size, "try_number": chunk.try_number, "done": chunk.done,
        "state": ti.state.value, "task_try_number": ti.try_number, "progress": ti.spark_progress,
        "spark_app_id": ti.spark_app_id, "spark_ui_url": ti.spark_ui_url,
    })


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/sparkProgress",
            summary="Live Spark progress of a task instance (jobs, stages, tasks)")
def spark_progress(request: Request, user: User, dag_id: str, dag_run_id: str, task_id: str,
                   map_index: MapIndex = -1) -> dict[str, Any]:
    ti = _ti(request, dag_id, dag_run_id, task_id, map_index)
    progress = ti.spark_progress or {}
    total = progress.get("tasks_total") or 0
    return {"task_instance_id": ti.id, "state": ti.state.value, "try_number": ti.try_number,
            "spark_app_id": ti.spark_app_id, "spark_ui_url": ti.spark_ui_url, "progress": ti.spark_progress,
            "fraction": (progress.get("tasks_done", 0) / total) if total else None}


@router.get("/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/sparkMetrics",
            summary="Spark metrics of each try of a task instance, with Spark UI / History Server links")
def spark_metrics(request: Request, user: User, dag_id: str, dag_run_id: str, task_id: str,
                  map_index: MapIndex = -1) -> dict[str, Any]:
    ti = _ti(request, dag_id, dag_run_id, task_id, map_index)
    history = request.app.state.settings.spark_history_url
    tries = queries.task_tries(request.app.state.metastore.db, ti.key)
    return {"task_instance_id": ti.id, "tries": [
        {"try_number": t.try_number, "state": t.state.value, "spark_app_id": t.spark_app_id,
         "spark_ui_url": t.spark_ui_url,
         "history_url": f"{history.rstrip('/')}/history/{t.spark_app_id}" if history and t.spark_app_id else None,
         "metrics": t.spark_metrics}
        for t in tries]}


class ClearBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = True
    # Airflow's: a task id (every instance of it) or a [task_id, map_index] pair (that mapped instance only)
    task_ids: list[str | tuple[str, int]] | None = None
    dag_run_id: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    only_failed: bool = False
    include_downstream: bool = False
    reset_dag_runs: bool = True
    # the rest of Airflow's ClearTaskInstances body, so its documented examples carry over: no SubDAGs here (the
    # two include_* flags have nothing to add); the others are refused when set rather than silently ignored
    include_subdags: bool = False
    include_parentdag: bool = False
    only_running: bool = False
    include_upstream: bool = False
    include_future: bool = False
    include_past: bool = False


def _by_map_indexes(task_ids: list[str | tuple[str, int]] | None) -> list[tuple[list[str] | None, list[int] | None]]:
    """Airflow's task_ids as clears to make: the plain task ids (every instance) at once, then the tasks given as
    [task_id, map_index] pairs grouped by their set of map indexes."""
    if task_ids is None:
        return [(None, None)]
    plain = [t for t in task_ids if isinstance(t, str)]
    indexes: dict[str, set[int]] = {}
    for item in task_ids:
        if not isinstance(item, str):
            if item[1] < 0:
                raise UserError(f"task_ids item {list(item)!r}: map_index {item[1]} is not an instance; give 0 or "
                                "more, or the task id alone for every instance")
            indexes.setdefault(item[0], set()).add(item[1])
    groups: dict[tuple[int, ...], list[str]] = {}
    for task_id, wanted in indexes.items():
        if task_id not in plain:  # a plain id already clears every instance of it
            groups.setdefault(tuple(sorted(wanted)), []).append(task_id)
    clears: list[tuple[list[str] | None, list[int] | None]] = [(plain, None)] if plain or not groups else []
    return clears + [(ids, list(wanted)) for wanted, ids in groups.items()]


@router.post("/dags/{dag_id}/clearTaskInstances", summary="Clear (re-run) task instances")
def clear_task_instances(request: Request, user: User, dag_id: str, body: ClearBody) -> dict[str, Any]:
    _write(request, user, "clear task instances")
    unsupported = [name for name in ("only_running", "include_upstream", "include_future", "include_past")
                   if getattr(body, name)]
    if unsupported:
        raise UserError(f"{', '.join(unsupported)} cannot be set to true here; select the task instances with "
                        "task_ids, dag_run_id, start_date/end_date, only_failed and include_downstream")
    for name in ("start_date", "end_date"):
        value = getattr(body, name)
        if value is not None and value.tzinfo is None:
            raise UserError(f"{name} needs a time zone, e.g. 2024-01-01T00:00:00+00:00")
    keys = []
    for task_ids, map_indexes in _by_map_indexes(body.task_ids):
        keys += service.clear(request.app.state.dags, dag_id, task_ids, body.dag_run_id, body.only_failed,
                              body.include_downstream, body.dry_run, actor=f"web:{user.username}",
                              start=body.start_date, end=body.end_date, map_indexes=map_indexes)
    return {"task_instances": [{"dag_id": k.dag_id, "dag_run_id": k.run_id, "task_id": k.task_id,
                                "map_index": k.map_index} for k in keys]}


# -- assets ---------------------------------------------------------------------------------------------------
@router.get("/assets", summary="List assets, with the tasks that update them and the DAGs scheduled on them")
def list_assets(request: Request, user: User, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    assets = queries.list_assets(request.app.state.metastore.db)
    return {"assets": [{"uri": a.uri, "name": a.name, "group": a.group, "extra": a.extra,
                        "producing_tasks": [{"dag_id": p.split(".", 1)[0], "task_id": p.split(".", 1)[1]}
                                            for p in a.producers],
                        "consuming_dags": [{"dag_id": d} for d in a.consumers],
                        "last_event_at": _iso(a.last_event_at)} for a in assets[offset:offset + limit]],
            "total_entries": len(assets)}


@router.get("/assets/events", summary="Asset events, newest first")
def list_asset_events(request: Request, user: User, limit: Limit = 100,
                      uri: Annotated[str | None, Query(max_length=1500)] = None) -> dict[str, Any]:
    events = queries.list_asset_events(request.app.state.metastore.db, uri, limit)
    return {"asset_events": [e.as_dict() for e in events], "total_entries": len(events)}


# -- connections ----------------------------------------------------------------------------------------------
class ConnectionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    connection_id: str | None = Field(default=None, max_length=250)
    conn_type: str | None = Field(default=None, max_length=500)
    description: str | None = None
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    extra: str | dict[str, Any] | None = None


def _conn_values(body: ConnectionBody) -> dict[str, Any]:
    return {"conn_type": body.conn_type, "description": body.description, "host": body.host, "port": body.port,
            "login": body.login, "password": body.password, "schema": body.schema_, "extra": body.extra}


@router.get("/connections", summary="List connections (secrets never returned)")
def list_connections(request: Request, user: User, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    ms = request.app.state.metastore
    conns = queries.list_connections(ms.db, ms.secrets)
    show = user.can(Role.OP)
    return {"connections": [service.connection_view(c, show) for c in conns[offset:offset + limit]],
            "total_entries": len(conns)}


@router.get("/connections/{connection_id}", summary="Get a connection (secrets never returned)")
def get_connection(request: Request, user: User, connection_id: str) -> dict[str, Any]:
    ms = request.app.state.metastore
    conn = queries.find_connection(ms.db, connection_id, ms.secrets)
    if conn is None:
        raise NotFound(f"connection '{connection_id}' does not exist")
    return service.connection_view(conn, user.can(Role.OP))


@router.post("/connections", summary="Add a connection")
def add_connection(request: Request, user: User, body: ConnectionBody) -> dict[str, Any]:
    _write(request, user, "add connections")
    if not body.connection_id:
        raise UserError("connection_id is required")
    ms = request.app.state.metastore
    if queries.find_connection(ms.db, body.connection_id, None) is not None:
        raise HTTPException(409, f"connection '{body.connection_id}' already exists; PATCH it to change it")
    conn = service.save_connection(request.app.state.metastore, body.connection_id, _conn_values(body), create=True)
    return service.connection_view(conn, True)


@router.patch("/connections/{connection_id}", summary="Change a connection (fields left out are kept)")
def patch_connection(request: Request, user: User, connection_id: str, body: ConnectionBody) -> dict[str, Any]:
    _write(request, user, "edit connections")
    if body.connection_id not in (None, connection_id):
        raise UserError("connection_id in the body must match the path; a connection cannot be renamed")
    conn = service.save_connection(request.app.state.metastore, connection_id, _conn_values(body), create=False)
    return service.connection_view(conn, True)


@router.delete("/connections/{connection_id}", status_code=204, summary="Delete a connection")
def delete_connection(request: Request, user: User, connection_id: str) -> Response:
    _write(request, user, "delete connections")
    request.app.state.metastore.connections.delete_connection(connection_id)
    return Response(status_code=204)
