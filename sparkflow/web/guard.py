"""What every request passes on its way in and out, as one ASGI middleware in front of the application.

In: a request that carries a body must come from a logged-in user (or be the login form) and its body is at most
max_request_body_bytes, else 401/303 or 413 with nothing parsed. FastAPI parses a JSON or form body before it runs
any dependency, authentication included, so this cannot be a dependency (a 100 MB anonymous POST cost the server
over 200 MB before).
Out: security headers on every answer (a Content-Security-Policy that allows only the server's own scripts, no
framing, no sniffing), and ``Cache-Control: no-store`` on everything but static files, so pages and API answers
with data never stay in a shared or browser cache."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException  # FastAPI re-raises its own while reading a body, wraps others in a 400
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from sparkflow.web.auth import NotAuthenticated, authenticate

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ANONYMOUS_BODIES = ("/login",)  # the only form an anonymous browser may post


class RequestTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes (setting max_request_body_bytes)")


def _has_body(scope: Scope) -> bool:
    headers = dict(scope["headers"])
    length = headers.get(b"content-length")
    return bool(length and length != b"0") or b"transfer-encoding" in headers


CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin"), (b"content-security-policy", CSP.encode())]


class RequestGuard:
    """Authenticate requests with a body before reading it, refuse bodies over the limit (413), add the security
    headers to every answer."""

    def __init__(self, app: ASGIApp, max_body: int, is_api: Callable[[str], bool]) -> None:
        self.app, self.max_body, self.is_api = app, max_body, is_api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [h for h in _HEADERS if h[0] not in names]
                if not cacheable and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self._guard(scope, receive, send_with_headers)

    async def _guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _has_body(scope):
            await self.app(scope, receive, send)
            return
        if scope["path"] not in ANONYMOUS_BODIES:
            request = Request(scope)
            try:
                # authenticate() keeps its answer on the request's state: the route's dependency reuses it
                await run_in_threadpool(authenticate, request)
            except NotAuthenticated as exc:
                await self._unauthenticated(scope, send, str(exc))
                return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            await _answer(send, 413, str(RequestTooLarge(self.max_body).detail), close=True)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:  # a chunked body without a Content-Length
                    raise RequestTooLarge(self.max_body)
            return message

        await self.app(scope, limited, send)

    async def _unauthenticated(self, scope: Scope, send: Send, detail: str) -> None:
        if self.is_api(scope["path"]):
            await _answer(send, 401, detail, headers=[(b"www-authenticate", b"Bearer")], close=True)
        else:
            target = quote(scope["path"], safe="")
            await _answer(send, 303, detail, headers=[(b"location", f"/login?next={target}".encode())], close=True)


async def _answer(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None,
                  close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    # Connection: close, so the client's unread body is not taken for the next request
    extra = [(b"connection", b"close")] if close else []
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *extra, *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
