"""HTML pages (server-rendered Jinja2; small scripts under static/ only for the live parts)."""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from sparkflow.exceptions import NotFound, UserError
from sparkflow.metastore import queries
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord
from sparkflow.scheduler.runs import parse_run_conf
from sparkflow.state import RUN_ACTIVE, TASK_ACTIVE, TASK_TERMINAL
from sparkflow.web import auth, service, svg
from sparkflow.web.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Principal,
    Role,
    authenticate,
    check_csrf_request,
    csrf_token_of,
    new_csrf_seed,
    new_session_id,
    require,
    token_hash,
)
from sparkflow.web.present import mapped_summary, schedule_words

router = APIRouter(include_in_schema=False)
GRID_RUNS = 25
LOG_TAIL_BYTES = 64 * 1024  # the page shows the end of a log first; older lines stay in the file and the API
User = Annotated[Principal, Depends(authenticate)]
Csrf = Annotated[str | None, Form()]
TiId = Annotated[int, Path(ge=1, le=2**63 - 1, description="task instance id")]  # larger ids overflow the database


def _now() -> datetime:
    return datetime.now(UTC)


def render(request: Request, name: str, context: dict[str, Any], user: Principal | None,
           status_code: int = 200) -> Response:
    """Render a page with the CSRF token of its forms; before login, make sure the browser has a CSRF seed."""
    new_seed = None
    if not request.cookies.get(SESSION_COOKIE) and not request.cookies.get(CSRF_COOKIE):
        new_seed = new_csrf_seed()
    ctx = {"user": user, "csrf_token": csrf_token_of(request, new_seed),
           "can_edit": bool(user and user.can(Role.OP)), **context}
    response = request.app.state.templates.TemplateResponse(request, name, ctx, status_code=status_code)
    if new_seed:
        _set_cookie(request, response, CSRF_COOKIE, new_seed, None)
    return response


def _secure_cookies(request: Request) -> bool:
    """Secure on https, or behind a TLS proxy that speaks plain http to us (the setting cookie_secure)."""
    return request.url.scheme == "https" or bool(request.app.state.settings.cookie_secure)


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="lax", path="/",
                        secure=_secure_cookies(request))


def _delete_cookie(request: Request, response: Response, name: str) -> None:
    """With the attributes it was set with: a browser keeps a Secure cookie that a plain deletion cannot replace."""
    response.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=_secure_cookies(request))


def _back(request: Request, url: str, **params: str) -> RedirectResponse:
    """Redirect to a page; its error/message note is signed, so a link from elsewhere cannot put text there."""
    if params.get("error") or params.get("message"):
        params["sig"] = _note_signature(request, params.get("error"), params.get("message"))
    query = urlencode({k: v for k, v in params.items() if v})
    return RedirectResponse(f"{url}?{query}" if query else url, status_code=303)


def _note_signature(request: Request, error: str | None, message: str | None) -> str:
    return str(request.app.state.signer.sign("note", json.dumps([error or "", message or ""])))


def _notes(request: Request, error: str | None, message: str | None, sig: str | None) -> dict[str, str | None]:
    """The page's error and message from the query, only when this server signed them (see _back)."""
    if (error or message) and sig and hmac.compare_digest(_note_signature(request, error, message), sig):
        return {"error": error, "message": message}
    return {"error": None, "message": None}


def _safe_next(target: str | None) -> str:
    """Only same-site paths, never another host (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# -- login ----------------------------------------------------------------------------------------------------
@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", {"next": _safe_next(next), "error": None}, None)


@router.post("/login")
def login(request: Request, username: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
          next: Annotated[str, Form()] = "/", csrf_token: Csrf = None) -> Response:
    if not csrf_token or not hmac.compare_digest(csrf_token_of(request), csrf_token):
        return render(request, "login.html", {"next": _safe_next(next),
                                              "error": "The form expired; please log in again."}, None, 400)
    try:
        user = auth.login(request, username, password)
    except auth.LockedOut as exc:
        return render(request, "login.html", {"next": _safe_next(next), "error": str(exc)}, None, 429)
    if user is None:
        return render(request, "login.html", {"next": _safe_next(next), "error": "Wrong username or password."},
                      None, 401)
    settings = request.app.state.settings
    session = new_session_id()
    request.app.state.metastore.users.start_session(user.username, token_hash(session))
    response = RedirectResponse(_safe_next(next), status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, session, int(settings.session_max_age))
    _delete_cookie(request, response, CSRF_COOKIE)  # from now on the CSRF token is bound to the session
    return response


@router.post("/logout")
def logout(request: Request, user: User, csrf_token: Csrf = None) -> Response:
    check_csrf_request(request, user, csrf_token or "")
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        request.app.state.metastore.users.end_session(token_hash(session))
    response = RedirectResponse("/login", status_code=303)
    _delete_cookie(request, response, SESSION_COOKIE)
    return response


# Airflow's [webserver] page_size: the list page stays fast with thousands of DAGs.
DAGS_PER_PAGE = 100


# -- DAG list -------------------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def dag_list(request: Request, user: User, page: Annotated[int, Query(ge=1, le=1_000_000)] = 1) -> Response:
    ms = request.app.state.metastore
    now = _now()
    rows = []
    records = queries.list_dags(ms.db)
    pages = max(1, -(-len(records) // DAGS_PER_PAGE))
    page = min(page, pages)
    for record in records[(page - 1) * DAGS_PER_PAGE:page * DAGS_PER_PAGE]:
        runs = queries.list_runs(ms.db, record.dag_id, limit=10)
        next_run = request.app.state.dags.next_run_end(record, now) if record.schedule else None
        rows.append({"dag": record, "runs": list(reversed(runs)), "schedule": schedule_words(record.schedule),
                     "next_run": next_run})
    errors = queries.list_import_errors(ms.db)
    return render(request, "dags.html", {"rows": rows, "import_errors": errors, "page": page, "pages": pages,
                                         "total": len(records)}, user)


@router.post("/dags/{dag_id}/paused")
def set_paused(request: Request, user: User, dag_id: str, paused: Annotated[str, Form()] = "true",
               next: Annotated[str, Form()] = "/", csrf_token: Csrf = None) -> Response:
    check_csrf_request(request, user, csrf_token or "")
    require(user, Role.OP, "pause or unpause DAGs")
    service.set_paused(request.app.state.metastore, dag_id, paused.lower() in ("true", "1", "on", "yes"))
    return _back(request, _safe_next(next))


# -- DAG page -------------------------------------------------------------------------------------------------
def _grid(request: Request, dag_id: str) -> dict[str, Any]:
    ms = request.app.state.metastore
    record = queries.get_dag(ms.db, dag_id)
    dag = request.app.state.dags.get(record)
    runs = list(reversed(queries.list_runs(ms.db, dag_id, limit=GRID_RUNS)))
    tis = queries.task_instances_of_runs(ms.db, [r.id for r in runs])
    cells: dict[tuple[int, str], Any] = {(ti.dag_run_id, ti.task_id): ti for ti in tis if ti.map_index < 0}
    mapped: dict[tuple[int, str], list[TaskInstanceRecord]] = {}
    for ti in tis:
        if ti.map_index >= 0:
            mapped.setdefault((ti.dag_run_id, ti.task_id), []).append(ti)
    cells.update({cell: mapped_summary(instances) for cell, instances in mapped.items()})
    if dag is not None:
        task_ids = [t.task_id for t in dag.topological_order()]
    else:
        task_ids = []
    for ti in sorted(tis, key=lambda t: t.id):
        if ti.task_id not in task_ids:
            task_ids.append(ti.task_id)
    active = any(r.state in RUN_ACTIVE for r in runs) or any(ti.state in TASK_ACTIVE for ti in tis)
    return {"record": record, "dag": dag, "runs": runs, "task_ids": task_ids, "cells": cells, "active": active}


@router.get("/dags/{dag_id}", response_class=HTMLResponse)
def dag_page(request: Request, user: User, dag_id: str, run_id: str | None = None,
             error: str | None = None, message: str | None = None, sig: str | None = None) -> Response:
    ms = request.app.state.metastore
    grid = _grid(request, dag_id)
    dag = grid["dag"]
    runs: list[DagRunRecord] = grid["runs"]
    selected = None
    if run_id:
        selected = queries.get_run(ms.db, dag_id, run_id)
    elif runs:
        selected = runs[-1]
    run_tis = queries.task_instances(ms.db, dag_id, selected.run_id) if selected else []
    tis = {ti.task_id: ti for ti in run_tis if ti.map_index < 0}
    by_task: dict[str, list[TaskInstanceRecord]] = {}
    for instance in run_tis:
        if instance.map_index >= 0:
            by_task.setdefault(instance.task_id, []).append(instance)
    nodes = []
    if dag is not None:
        for task in dag.topological_order():
            ti = tis.get(task.task_id)
            instances = by_task.get(task.task_id)
            if instances:  # a mapped task: one node, coloured by its instances, opening their list
                summary = mapped_summary(instances)
                nodes.append(svg.GraphNode(task.task_id, f"{task.task_type} [{summary.count}]",
                                           tuple(sorted(task.upstream_task_ids)), summary.state,
                                           f"/ti/{summary.instances[0].id}/mapped"))
                continue
            labels = tuple((up, label) for up in sorted(task.upstream_task_ids)
                           if (label := dag.get_edge_info(up, task.task_id).get("label")))
            nodes.append(svg.GraphNode(task.task_id, task.task_type, tuple(sorted(task.upstream_task_ids)),
                                       ti.state.value if ti else None, f"/ti/{ti.id}" if ti else None, labels))
    bars = [svg.GanttBar(tid, tis[tid].state.value, tis[tid].start_date, tis[tid].end_date, f"/ti/{tis[tid].id}")
            for tid in grid["task_ids"] if tid in tis]
    bars += [svg.GanttBar(f"{ti.task_id}[{ti.map_index}]", ti.state.value, ti.start_date, ti.end_date,
                          f"/ti/{ti.id}") for instances in by_task.values() for ti in instances]
    history = queries.list_runs(ms.db, dag_id, limit=50)
    interval = service.next_run(dag, ms, _now()) if dag is not None and grid["record"].schedule else None
    return render(request, "dag.html", {
        **grid, "selected": selected, "graph": svg.graph(nodes), "gantt": svg.gantt(bars, _now()),
        "history": history, "schedule": schedule_words(grid["record"].schedule),
        **_notes(request, error, message, sig), "next_run": interval.end if interval else None,
        "import_errors": [e for e in queries.list_import_errors(ms.db) if e.dag_id == dag_id],
    }, user)


@router.get("/dags/{dag_id}/grid", response_class=HTMLResponse)
def grid_fragment(request: Request, user: User, dag_id: str) -> Response:
    return render(request, "grid.html", _grid(request, dag_id), user)


@router.post("/dags/{dag_id}/trigger")
def trigger(request: Request, user: User, dag_id: str, conf: Annotated[str, Form()] = "",
            run_id: Annotated[str, Form()] = "", logical_date: Annotated[str, Form()] = "",
            csrf_token: Csrf = None) -> Response:
    check_csrf_request(request, user, csrf_token or "")
    require(user, Role.OP, "trigger DAG runs")
    try:
        run = service.trigger(request.app.state.dags, dag_id, parse_run_conf(conf, 'conf'), run_id.strip() or None,
                              service.parse_logical_date(logical_date), actor=f"web:{user.username}")
    except UserError as exc:
        if isinstance(exc, NotFound) and "is not known" in str(exc):
            raise
        return _back(request, f"/dags/{dag_id}", error=f"Not triggered: {exc}")
    return _back(request, f"/dags/{dag_id}", run_id=run.run_id, message=f"Triggered run {run.run_id}")


@router.post("/dags/{dag_id}/clear")
def clear_run(request: Request, user: User, dag_id: str, run_id: Annotated[str, Form()] = "",
              only_failed: Annotated[str, Form()] = "", csrf_token: Csrf = None) -> Response:
    check_csrf_request(request, user, csrf_token or "")
    require(user, Role.OP, "clear task instances")
    if not run_id:
        raise UserError("run_id is required")
    keys = service.clear(request.app.state.dags, dag_id, None, run_id, only_failed=bool(only_failed),
                         actor=f"web:{user.username}")
    return _back(request, f"/dags/{dag_id}", run_id=run_id, message=f"Cleared {len(keys)} task instance(s) of {run_id}")


# -- task instance page ---------------------------------------------------------------------------------------
def _ti_or_404(request: Request, ti_id: int) -> TaskInstanceRecord:
    return queries.get_task_instance_by_id(request.app.state.metastore.db, ti_id)


@router.get("/ti/{ti_id}", response_class=HTMLResponse)
def task_instance_page(request: Request, user: User, ti_id: TiId, try_number: int | None = None,
                       error: str | None = None, message: str | None = None, sig: str | None = None) -> Response:
    settings, ms = request.app.state.settings, request.app.state.metastore
    ti = _ti_or_404(request, ti_id)
    run = queries.get_run(ms.db, ti.dag_id, ti.run_id)
    tries = queries.task_tries(ms.db, ti.key)
    shown_try = try_number or max(ti.try_number, 1)
    if try_number is not None and not any(t.try_number == try_number for t in tries) and try_number != ti.try_number:
        raise NotFound(f"task '{ti.task_id}' of run '{ti.run_id}' has no try {try_number}")
    record = queries.get_dag(ms.db, ti.dag_id)
    dag = request.app.state.dags.get(record)
    fields, render_error = service.rendered_fields(ms, dag, ti)
    this_try = next((t for t in tries if t.try_number == shown_try), None)
    history_url = None
    try_running = shown_try == ti.try_number and ti.state in TASK_ACTIVE  # the Spark UI serves it until the end
    if settings.spark_history_url and not try_running and (this_try and this_try.spark_app_id or ti.spark_app_id):
        app_id = this_try.spark_app_id if this_try and this_try.spark_app_id else ti.spark_app_id
        history_url = f"{settings.spark_history_url.rstrip('/')}/history/{app_id}"
    trend = queries.task_history(ms.db, ti.dag_id, ti.task_id, limit=20)
    points = [svg.TrendPoint(t.run_id, {"duration": t.duration, **{
        k: (t.spark_metrics or {}).get(k) for k in ("input_bytes", "shuffle_read_bytes", "shuffle_write_bytes")}},
        f"/ti/{t.id}") for t in trend]
    has_bytes = any(p.values.get("input_bytes") is not None for p in points)
    api_base = "/api/v1/dags/{}/dagRuns/{}/taskInstances/{}".format(*(quote(part, safe="") for part in ti.key[:3]))
    return render(request, "task_instance.html", {
        "ti": ti, "run": run, "tries": tries, "shown_try": shown_try, "this_try": this_try,
        "fields": fields, "render_error": render_error, "history_url": history_url,
        "metrics": (this_try.spark_metrics if this_try else None) or ti.spark_metrics,
        "duration_chart": svg.trend_chart(points, ["duration"], "Duration over recent runs"),
        "bytes_chart": svg.trend_chart(points, ["input_bytes", "shuffle_read_bytes", "shuffle_write_bytes"],
                                       "Input and shuffle bytes over recent runs") if has_bytes else None,
        "api_base": api_base, **_notes(request, error, message, sig),
        "finished_states": sorted(s.value for s in TASK_TERMINAL), "log_tail_bytes": LOG_TAIL_BYTES,
    }, user)


@router.get("/ti/{ti_id}/mapped", response_class=HTMLResponse)
def mapped_instances_page(request: Request, user: User, ti_id: TiId) -> Response:
    """Every instance of the mapped task this task instance belongs to, by map_index."""
    ti = _ti_or_404(request, ti_id)
    instances = queries.mapped_instances(request.app.state.metastore.db, ti.dag_id, ti.run_id, ti.task_id)
    return render(request, "mapped.html", {"ti": ti, "instances": instances,
                                           "summary": mapped_summary(instances) if instances else None}, user)


@router.post("/ti/{ti_id}/clear")
def clear_task(request: Request, user: User, ti_id: TiId, downstream: Annotated[str, Form()] = "",
               csrf_token: Csrf = None) -> Response:
    check_csrf_request(request, user, csrf_token or "")
    require(user, Role.OP, "clear task instances")
    ti = _ti_or_404(request, ti_id)
    # an instance of a mapped task: that instance only (and what its downstream clear brings along)
    keys = service.clear(request.app.state.dags, ti.dag_id, [ti.task_id], ti.run_id, downstream=bool(downstream),
                         map_indexes=[ti.map_index] if ti.map_index >= 0 else None,
                         actor=f"web:{user.username}")
    note = (f"Cleared {len(keys)} task instance(s)" if keys
            else f"Nothing cleared: the task is {ti.state.value} (mark it failed first)")
    return _back(request, f"/ti/{ti_id}", message=note)


@router.post("/ti/{ti_id}/mark")
def mark_task(request: Request, user: User, ti_id: TiId, state: Annotated[str, Form()] = "",
              csrf_token: Csrf = None) -> Response:
    check_csrf_request(request, user, csrf_token or "")
    require(user, Role.OP, "mark task instances")
    ti = _ti_or_404(request, ti_id)
    try:
        result = service.mark(request.app.state.metastore, ti.key, state, actor=f"web:{user.username}")
    except UserError as exc:
        return _back(request, f"/ti/{ti_id}", error=str(exc))
    note = f"Marked {state} (was {result.before.state.value})"
    if result.killed_pid is not None:
        note += f"; sent SIGTERM to the task's process group {result.killed_pid}"
    elif result.note:
        note += f"; the task was running, no signal was sent from here: {result.note}"
    return _back(request, f"/ti/{ti_id}", message=note)


# -- assets ---------------------------------------------------------------------------------------------------
@router.get("/assets", response_class=HTMLResponse)
def assets_page(request: Request, user: User) -> Response:
    db = request.app.state.metastore.db
    return render(request, "assets.html", {"assets": queries.list_assets(db),
                                           "events": queries.list_asset_events(db, limit=50)}, user)


# -- connections ----------------------------------------------------------------------------------------------
@router.get("/connections", response_class=HTMLResponse)
def connections(request: Request, user: User, message: str | None = None, sig: str | None = None) -> Response:
    ms = request.app.state.metastore
    rows = [service.connection_view(c, user.can(Role.OP)) for c in queries.list_connections(ms.db, ms.secrets)]
    return render(request, "connections.html", {"rows": rows, **_notes(request, None, message, sig)}, user)


@router.get("/connections/new", response_class=HTMLResponse)
def new_connection(request: Request, user: User) -> Response:
    require(user, Role.OP, "add connections")
    return render(request, "connection_form.html", {"conn": None, "values": {}, "error": None}, user)


@router.get("/connections/{conn_id}/edit", response_class=HTMLResponse)
def edit_connection(request: Request, user: User, conn_id: str) -> Response:
    require(user, Role.OP, "edit connections")
    ms = request.app.state.metastore
    conn = queries.find_connection(ms.db, conn_id, ms.secrets)
    if conn is None:
        raise NotFound(f"connection '{conn_id}' does not exist")
    return render(request, "connection_form.html",
                  {"conn": conn, "values": service.connection_view(conn, True), "error": None}, user)


def _form_values(conn_type: str, description: str, host: str, port: str, login: str, password: str, schema: str,
                 extra: str) -> dict[str, Any]:
    return {"conn_type": conn_type, "description": description, "host": host, "port": port, "login": login,
            "password": password or None, "schema": schema, "extra": extra}


@router.post("/connections/save")
def save_connection(request: Request, user: User, connection_id: Annotated[str, Form()] = "",
                    create: Annotated[str, Form()] = "", conn_type: Annotated[str, Form()] = "",
                    description: Annotated[str, Form()] = "", host: Annotated[str, Form()] = "",
                    port: Annotated[str, Form()] = "", login: Annotated[str, Form()] = "",
                    password: Annotated[str, Form()] = "", schema_: Annotated[str, Form(alias="schema")] = "",
                    extra: Annotated[str, Form()] = "", csrf_token: Csrf = None) -> Response:
    check_csrf_request(request, user, csrf_token or "")
    require(user, Role.OP, "edit connections")
    values = _form_values(conn_type, description, host, port, login, password, schema_, extra)
    is_new = bool(create)
    try:
        if not connection_id:
            raise UserError("connection id is required")
        service.save_connection(request.app.state.metastore, connection_id, values, create=is_new)
    except NotFound:
        raise
    except UserError as exc:
        shown = {**values, "connection_id": connection_id, "password": None}
        conn = None if is_new else queries.find_connection(request.app.state.metastore.db, connection_id, None)
        return render(request, "connection_form.html", {"conn": conn, "values": shown, "error": str(exc)}, user,
                      status_code=400)
    return _back(request, "/connections", message=f"Saved connection {connection_id}")


@router.post("/connections/{conn_id}/delete")
def delete_connection(request: Request, user: User, conn_id: str, csrf_token: Csrf = None) -> Response:
    check_csrf_request(request, user, csrf_token or "")
    require(user, Role.OP, "delete connections")
    request.app.state.metastore.connections.delete_connection(conn_id)
    return _back(request, "/connections", message=f"Deleted connection {conn_id}")
