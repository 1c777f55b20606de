"""Who is asking, and may they: password hashing, sessions, CSRF tokens, API bearer tokens, roles and lock-outs.

- Passwords are kept as scrypt hashes (``scrypt$n$r$p$salt$hash``), compared in constant time.
- The session cookie holds a random id; the metastore keeps its SHA-256 (sparkflow.metastore.user_store), so logout,
  a deleted or deactivated user, a new password, and the idle and absolute lifetimes end a session on the server.
  The cookie is HttpOnly and SameSite=Lax (Secure on https or with the setting cookie_secure).
- CSRF: a logged-in form carries the HMAC of the session id, so a token only works with the session it was made
  for (a cookie planted by a sibling host forges nothing). The login form, before any session, carries the HMAC
  of a random per-browser value kept in its own cookie. JavaScript calls of the API with the session send the
  token in the X-CSRF-Token header. Bearer-token calls need no CSRF token.
- API tokens are random (32 bytes); only their SHA-256 is stored, with an optional expiry and the last use.
- Failed logins are logged (user, client address, never the password) and lock the user and the address out for
  a growing time after login_lockout_threshold failures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import IntEnum
from pathlib import Path

from fastapi import HTTPException, Request

from sparkflow.files import private_dir
from sparkflow.metastore import queries, user_store
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import UserRecord
from sparkflow.settings import Settings

SESSION_COOKIE = "sparkflow_session"
CSRF_COOKIE = "sparkflow_csrf"
CSRF_HEADER = "X-CSRF-Token"
SECRET_KEY_FILE = "webserver_secret.key"
# scrypt cost: n=2**15, r=8, p=1 (about 50 ms and 32 MiB per hash: slow for guessing, fine for a login)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024
log = logging.getLogger("sparkflow.web.auth")


class Role(IntEnum):
    """Ordered: each role may do what the ones below it may."""

    VIEWER = 1  # read everything except connection logins
    OP = 2  # + trigger, clear, mark, pause, edit connections
    ADMIN = 3  # + everything

    @classmethod
    def parse(cls, name: str) -> Role:
        return cls[name.upper()]


# -- passwords and tokens -------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=32)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=_MAXMEM,
                             dklen=len(_unb64(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


# A hash to check against when the user does not exist, so a wrong username costs as long as a wrong password.
_DUMMY_HASH: str | None = None


def check_login(metastore: Metastore, username: str, password: str) -> UserRecord | None:
    global _DUMMY_HASH
    user = queries.find_user(metastore.db, username) if username else None
    if user is None or not user.active:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hash_password("not a password")
        verify_password(password, _DUMMY_HASH)
        return None
    return user if verify_password(password, user.password_hash) else None


def new_api_token() -> tuple[str, str]:
    """(token to show once, SHA-256 to store)."""
    token = "sf_" + secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_secret_key(home: Path) -> str:
    """The webserver's signing key: ``$SPARKFLOW_HOME/webserver_secret.key`` (mode 600), created on first use."""
    path = home / SECRET_KEY_FILE
    private_dir(home)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        key = secrets.token_urlsafe(48)
        fh.write(key + "\n")
    return key


# -- signing ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Signer:
    key: str

    def sign(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self.key.encode(), f"{purpose}|{value}".encode(), hashlib.sha256).digest())

    def csrf_token(self, seed: str) -> str:
        return self.sign("csrf", seed)


def new_csrf_seed() -> str:
    return secrets.token_urlsafe(24)


# -- sessions ---------------------------------------------------------------------------------------------------
def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def session_lifetime(settings: Settings) -> user_store.SessionLifetime:
    return user_store.SessionLifetime(timedelta(seconds=settings.session_idle_timeout),
                                 timedelta(seconds=settings.session_max_age))


def csrf_token_of(request: Request, new_seed: str | None = None) -> str:
    """The CSRF token forms of this request's page carry: bound to the session, or before login to the seed (the
    browser's, or ``new_seed`` that this answer gives it)."""
    signer: Signer = request.app.state.signer
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        return signer.csrf_token("session|" + session)
    return signer.csrf_token("login|" + (new_seed or request.cookies.get(CSRF_COOKIE) or ""))


# -- who is asking --------------------------------------------------------------------------------------------
class NotAuthenticated(Exception):
    """No (valid) session or token: 401 for the API, a redirect to the login page for pages."""


@dataclass(frozen=True)
class Principal:
    username: str
    role: Role
    via_token: bool

    def can(self, role: Role) -> bool:
        return self.role >= role


def authenticate(request: Request) -> Principal:
    """The user of this request from the bearer token or the session cookie; raises NotAuthenticated. Kept on the
    request: the request guard (web.limits) authenticates before the body is read, the route reuses it."""
    known = getattr(request.state, "principal", None)
    if known is not None:
        return known  # type: ignore[no-any-return]
    principal = _authenticate(request)
    request.state.principal = principal
    return principal


def _authenticate(request: Request) -> Principal:
    app = request.app.state
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("the Authorization header must be 'Bearer <token>' (see `sparkflow users token`)")
        user = app.metastore.users.token_user(token_hash(token.strip()))
        if user is None:
            raise NotAuthenticated("the API token is not valid (unknown, revoked, expired, or its user is "
                                   "inactive); create one with `sparkflow users token USERNAME`")
        return Principal(user.username, Role.parse(user.role), via_token=True)
    session = request.cookies.get(SESSION_COOKIE)
    user = app.metastore.users.session_user(token_hash(session), session_lifetime(app.settings)) if session \
        else None
    if user is None:
        raise NotAuthenticated("log in first (or send an API token as 'Authorization: Bearer <token>')")
    return Principal(user.username, Role.parse(user.role), via_token=False)


def require(principal: Principal, role: Role, what: str) -> None:
    if not principal.can(role):
        raise HTTPException(403, f"user '{principal.username}' ({principal.role.name.lower()}) may not {what}; "
                                 f"it needs the {role.name.lower()} role")


def check_csrf_request(request: Request, principal: Principal, form_token: str | None = None) -> None:
    """Unsafe requests made with the session cookie must carry its CSRF token (form field or header)."""
    if principal.via_token:
        return
    token = form_token if form_token is not None else request.headers.get(CSRF_HEADER)
    if not token or not hmac.compare_digest(csrf_token_of(request), token):
        raise HTTPException(403, "the CSRF token is missing or wrong; reload the page and try again")


# -- logging in -------------------------------------------------------------------------------------------------
def lockout_policy(settings: Settings) -> user_store.LockoutPolicy:
    return user_store.LockoutPolicy(settings.login_lockout_threshold, timedelta(seconds=settings.login_lockout_seconds),
                               timedelta(seconds=settings.login_lockout_max_seconds))


class LockedOut(Exception):
    def __init__(self, seconds: int) -> None:
        super().__init__(f"Too many failed logins; try again in {seconds} s.")
        self.seconds = seconds


def login(request: Request, username: str, password: str) -> UserRecord | None:
    """Check a login (raises LockedOut while a lock-out runs); a failure is logged and counted, a success clears
    the count and starts a session (its cookie is for the caller to set)."""
    app = request.app.state
    address = request.client.host if request.client else "unknown"
    subjects = [f"user:{username[:250]}", f"addr:{address}"]
    now = user_store.utcnow()
    until = app.metastore.users.locked_until(subjects, now)
    if until is not None:
        log.warning("login refused (locked out) for user %r from %s", username, address)
        raise LockedOut(max(1, math.ceil((until - now).total_seconds())))
    user = check_login(app.metastore, username, password)
    if user is None:
        until = app.metastore.users.record_login_failure(subjects, lockout_policy(app.settings), now)
        log.warning("login failed for user %r from %s%s", username, address,
                    f"; locked out until {until.isoformat()}" if until else "")
        return None
    app.metastore.users.clear_login_failures(subjects)
    return user
