"""Who is asking, and may they: password hashing, sessions, CSRF tokens, API bearer tokens and roles.

- Passwords are kept as scrypt hashes (``scrypt$n$r$p$salt$hash``), compared in constant time.
- The session cookie is ``username.issued.signature`` (HMAC-SHA256 with the webserver's secret key), HttpOnly and
  SameSite=Lax; it carries no secret and expires after SESSION_MAX_AGE.
- CSRF: every form carries a token that is the HMAC of a random per-browser value kept in its own HttpOnly cookie
  (double submit, signed); a form post without the matching token is refused. JavaScript calls of the API with the
  session send the same token in the X-CSRF-Token header. Bearer-token calls need no CSRF token.
- API tokens are random (32 bytes); only their SHA-256 is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from fastapi import HTTPException, Request

from sparkflow.files import private_dir
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import UserRecord

SESSION_COOKIE = "sparkflow_session"
CSRF_COOKIE = "sparkflow_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_MAX_AGE = 12 * 3600
SECRET_KEY_FILE = "webserver_secret.key"
# scrypt cost: n=2**15, r=8, p=1 (about 50 ms and 32 MiB per hash: slow for guessing, fine for a login)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024


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

    def session_cookie(self, username: str, now: float | None = None) -> str:
        issued = str(int(now if now is not None else time.time()))
        payload = f"{_b64(username.encode())}.{issued}"
        return f"{payload}.{self.sign('session', payload)}"

    def session_user(self, cookie: str | None, now: float | None = None) -> str | None:
        if not cookie or cookie.count(".") != 2:
            return None
        name, issued, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self.sign("session", f"{name}.{issued}")):
            return None
        try:
            age = (now if now is not None else time.time()) - int(issued)
            username = _unb64(name).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return username if 0 <= age <= SESSION_MAX_AGE else None

    def csrf_token(self, seed: str) -> str:
        return self.sign("csrf", seed)

    def check_csrf(self, seed: str | None, token: str | None) -> bool:
        return bool(seed and token) and hmac.compare_digest(self.csrf_token(seed or ""), token or "")


def new_csrf_seed() -> str:
    return secrets.token_urlsafe(24)


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
    """The user of this request from the bearer token or the session cookie; raises NotAuthenticated."""
    app = request.app.state
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("the Authorization header must be 'Bearer <token>' (see `sparkflow users token`)")
        user = queries.find_user_by_token(app.metastore.db, token_hash(token.strip()))
        if user is None:
            raise NotAuthenticated("the API token is not valid; create one with `sparkflow users token USERNAME`")
        return Principal(user.username, Role.parse(user.role), via_token=True)
    username = app.signer.session_user(request.cookies.get(SESSION_COOKIE))
    if username is None:
        raise NotAuthenticated("log in first (or send an API token as 'Authorization: Bearer <token>')")
    user = queries.find_user(app.metastore.db, username)
    if user is None or not user.active:
        raise NotAuthenticated("this session's user no longer exists; log in again")
    return Principal(user.username, Role.parse(user.role), via_token=False)


def require(principal: Principal, role: Role, what: str) -> None:
    if not principal.can(role):
        raise HTTPException(403, f"user '{principal.username}' ({principal.role.name.lower()}) may not {what}; "
                                 f"it needs the {role.name.lower()} role")


def check_csrf_request(request: Request, principal: Principal, form_token: str | None = None) -> None:
    """Unsafe requests made with the session cookie must carry the CSRF token (form field or header)."""
    if principal.via_token:
        return
    token = form_token if form_token is not None else request.headers.get(CSRF_HEADER)
    if not request.app.state.signer.check_csrf(request.cookies.get(CSRF_COOKIE), token):
        raise HTTPException(403, "the CSRF token is missing or wrong; reload the page and try again")
