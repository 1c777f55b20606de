"""The web application: ``create_app(settings, metastore)`` gives a FastAPI app with the pages, the REST API,
/health and the error handling shared by all of them."""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException

from sparkflow import __version__
from sparkflow.exceptions import NotFound, SparkflowError, UserError
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.settings import Settings
from sparkflow.web import api, present, views
from sparkflow.web.auth import NotAuthenticated, Principal, Signer, authenticate, load_secret_key
from sparkflow.web.guard import RequestGuard
from sparkflow.web.service import WebDags

HERE = Path(__file__).parent
log = logging.getLogger("sparkflow.web")


OPENAPI_URL, DOCS_URL = "/api/v1/openapi.json", "/api/v1/ui"


def _is_api_path(path: str) -> bool:
    """JSON answers (401 rather than a redirect to the login page): the API, except its documentation page."""
    return path.startswith(("/api/", "/health")) and path != DOCS_URL


def _is_api(request: Request) -> bool:
    return _is_api_path(request.url.path)


def _error(request: Request, status: int, detail: object) -> Response:
    if _is_api(request) or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"detail": detail}, status_code=status)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, "error.html", {"status": status, "detail": detail, "user": None},
                                      status_code=status)


def create_app(settings: Settings, metastore: Metastore, secret_key: str | None = None) -> FastAPI:
    app = FastAPI(
        title="sparkflow", version=__version__,
        description="sparkflow's REST API, shaped like Airflow's stable REST API v1. Authenticate with "
                    "'Authorization: Bearer <token>' (`sparkflow users token USERNAME`) or the web session.",
        openapi_url=None, docs_url=None, redoc_url=None,  # served below, behind the login like every page
    )
    app.state.settings = settings
    app.state.metastore = metastore
    app.state.signer = Signer(secret_key or load_secret_key(settings.resolved_home))
    app.state.dags = WebDags(settings, metastore)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(colour=present.colour, text_colour=present.text_colour, duration=present.duration,
                                 nbytes=present.nbytes, when=present.when, states=list(present.STATE_COLOURS))
    app.state.templates = templates
    # Swagger UI from the fastapi-offline package: the docs work offline and under the Content-Security-Policy
    swagger_ui = importlib.resources.files("fastapi_offline") / "static"
    app.mount("/static/swagger-ui", StaticFiles(directory=str(swagger_ui)), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(NotAuthenticated)
    def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(NotFound)
    def not_found(request: Request, exc: NotFound) -> Response:
        return _error(request, 404, str(exc))

    @app.exception_handler(UserError)
    def user_error(request: Request, exc: UserError) -> Response:
        return _error(request, 400, str(exc))

    @app.exception_handler(SparkflowError)
    def conflict(request: Request, exc: SparkflowError) -> Response:
        return _error(request, 409, str(exc))

    @app.exception_handler(RequestValidationError)
    def bad_request(request: Request, exc: RequestValidationError) -> Response:
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return _error(request, 400, detail)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(request, exc.status_code, exc.detail)

    @app.exception_handler(Exception)
    def internal(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(request, 500, f"internal error ({type(exc).__name__}); see the webserver log")

    app.add_middleware(RequestGuard, max_body=settings.max_request_body_bytes,  # type: ignore[arg-type]
                       is_api=_is_api_path)

    @app.get("/health", tags=["monitoring"], summary="Health of the metastore (no login needed)")
    def health() -> JSONResponse:
        try:
            with metastore.db.read() as conn:
                conn.execute(text("SELECT 1"))
            status = "healthy"
        except Exception:
            status = "unhealthy"
        return JSONResponse({"metadatabase": {"status": status}},
                            status_code=200 if status == "healthy" else 503)

    @app.get(OPENAPI_URL, include_in_schema=False)
    def openapi_document(user: Annotated[Principal, Depends(authenticate)]) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(DOCS_URL, include_in_schema=False)
    def api_docs(request: Request, user: Annotated[Principal, Depends(authenticate)]) -> Response:
        return templates.TemplateResponse(request, "api_docs.html", {"openapi_url": OPENAPI_URL})

    app.include_router(api.router)
    app.include_router(views.router)
    return app
