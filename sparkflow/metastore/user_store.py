"""Web users, their sessions and API tokens, and failed-login lock-outs. The store never sees a password, a token
or a session id, only their hashes (sparkflow.web.auth makes them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection as SAConnection
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from sparkflow.exceptions import NotFound, UserError
from sparkflow.metastore import schema as t
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import ApiTokenRecord, UserRecord

USER_ROLES = ("admin", "op", "viewer")  # web roles: everything / run and edit / read only
# last-seen and last-used times are written at most this often: not one write per request
TOUCH_EVERY = timedelta(seconds=60)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _user_id(conn: SAConnection, username: str) -> int:
    user_id = conn.execute(select(t.ab_user.c.id).where(t.ab_user.c.username == username)).scalar()
    if user_id is None:
        raise NotFound(f"user '{username}' does not exist; see `sparkflow users list`")
    return int(user_id)


def _end_sessions(conn: SAConnection, user_id: int) -> None:
    conn.execute(delete(t.web_session).where(t.web_session.c.user_id == user_id))


@dataclass(frozen=True)
class SessionLifetime:
    idle: timedelta  # since the last request
    absolute: timedelta  # since the login


@dataclass(frozen=True)
class LockoutPolicy:
    threshold: int  # failures before the first lock-out
    delay: timedelta  # the first lock-out; each further failure doubles it
    max_delay: timedelta

    def lock_for(self, failures: int) -> timedelta | None:
        if failures < self.threshold:
            return None
        doublings = min(failures - self.threshold, 30)
        return min(self.delay * (2 ** doublings), self.max_delay)


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- users --------------------------------------------------------------------------------------------------
    def create_user(self, username: str, password_hash: str, role: str, now: datetime | None = None) -> None:
        """Add a web user with the hash of its password."""
        t.check_id("username", username)
        if role not in USER_ROLES:
            raise UserError(f"role {role!r} is unknown; choose one of {', '.join(USER_ROLES)}")
        with self.db.write() as conn:
            try:
                conn.execute(insert(t.ab_user).values(username=username, password_hash=password_hash, role=role,
                                                      active=True, created_at=now or datetime.now(UTC)))
            except IntegrityError:
                raise UserError(f"user '{username}' already exists; choose another --username") from None

    def delete_user(self, username: str) -> None:
        """Delete a user with its sessions and API tokens (they stop working at once)."""
        with self.db.write() as conn:
            user_id = _user_id(conn, username)
            _end_sessions(conn, user_id)
            conn.execute(delete(t.api_token).where(t.api_token.c.user_id == user_id))
            conn.execute(delete(t.ab_user).where(t.ab_user.c.id == user_id))

    def set_role(self, username: str, role: str) -> None:
        if role not in USER_ROLES:
            raise UserError(f"role {role!r} is unknown; choose one of {', '.join(USER_ROLES)}")
        with self.db.write() as conn:
            conn.execute(update(t.ab_user).where(t.ab_user.c.id == _user_id(conn, username)).values(role=role))

    def set_password_hash(self, username: str, password_hash: str) -> None:
        """A new password ends the user's sessions (whoever knew the old one is logged out); tokens stay."""
        with self.db.write() as conn:
            user_id = _user_id(conn, username)
            conn.execute(update(t.ab_user).where(t.ab_user.c.id == user_id).values(password_hash=password_hash))
            _end_sessions(conn, user_id)

    def set_active(self, username: str, active: bool) -> None:
        """Deactivate (sessions end, tokens are refused while inactive) or reactivate a user."""
        with self.db.write() as conn:
            user_id = _user_id(conn, username)
            conn.execute(update(t.ab_user).where(t.ab_user.c.id == user_id).values(active=active))
            if not active:
                _end_sessions(conn, user_id)

    def start_session(self, username: str, id_hash: str, now: datetime | None = None) -> None:
        now = now or utcnow()
        with self.db.write() as conn:
            conn.execute(insert(t.web_session).values(id_hash=id_hash, user_id=_user_id(conn, username),
                                                      created_at=now, last_seen_at=now))

    def session_user(self, id_hash: str, lifetime: SessionLifetime, now: datetime | None = None
                     ) -> UserRecord | None:
        """The active user of a live session, or None (unknown, ended, idle or too old: an expired one is deleted)."""
        now = now or utcnow()
        query = (select(t.ab_user, t.web_session.c.created_at.label("session_created"), t.web_session.c.last_seen_at)
                 .join(t.web_session, t.web_session.c.user_id == t.ab_user.c.id)
                 .where(t.web_session.c.id_hash == id_hash))
        with self.db.read() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            return None
        if now - row.last_seen_at > lifetime.idle or now - row.session_created > lifetime.absolute:
            self.end_session(id_hash)
            return None
        if not row.active:
            return None
        if now - row.last_seen_at > TOUCH_EVERY:
            with self.db.write() as conn:
                conn.execute(update(t.web_session).where(t.web_session.c.id_hash == id_hash).values(last_seen_at=now))
        return UserRecord.from_row(row)

    def end_session(self, id_hash: str) -> None:
        with self.db.write() as conn:
            conn.execute(delete(t.web_session).where(t.web_session.c.id_hash == id_hash))

    def token_user(self, token_hash: str, now: datetime | None = None) -> UserRecord | None:
        """The active user owning this unexpired API token, or None; notes the token's last use."""
        now = now or utcnow()
        query = (select(t.ab_user, t.api_token.c.id.label("token_id"), t.api_token.c.expires_at,
                        t.api_token.c.last_used_at)
                 .join(t.api_token, t.api_token.c.user_id == t.ab_user.c.id)
                 .where(t.api_token.c.token_hash == token_hash))
        with self.db.read() as conn:
            row = conn.execute(query).one_or_none()
        if row is None or not row.active or (row.expires_at is not None and row.expires_at <= now):
            return None
        if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
            with self.db.write() as conn:
                conn.execute(update(t.api_token).where(t.api_token.c.id == row.token_id).values(last_used_at=now))
        return UserRecord.from_row(row)

    def list_tokens(self, username: str | None = None) -> list[ApiTokenRecord]:
        query = (select(t.api_token.c.id, t.ab_user.c.username, t.api_token.c.created_at, t.api_token.c.expires_at,
                        t.api_token.c.last_used_at)
                 .join(t.ab_user, t.api_token.c.user_id == t.ab_user.c.id).order_by(t.api_token.c.id))
        with self.db.read() as conn:
            if username is not None:
                _user_id(conn, username)
                query = query.where(t.ab_user.c.username == username)
            return [ApiTokenRecord(r.id, r.username, r.created_at, r.expires_at, r.last_used_at)
                    for r in conn.execute(query)]

    def revoke_token(self, token_id: int) -> None:
        with self.db.write() as conn:
            if conn.execute(delete(t.api_token).where(t.api_token.c.id == token_id)).rowcount == 0:
                raise NotFound(f"API token {token_id} does not exist; see `sparkflow users token-list`")

    def locked_until(self, subjects: Sequence[str], now: datetime | None = None) -> datetime | None:
        """The latest lock-out still running for any of these subjects (``user:NAME``, ``addr:IP``), or None."""
        now = now or utcnow()
        with self.db.read() as conn:
            ends = conn.execute(select(t.login_failure.c.locked_until)
                                .where(t.login_failure.c.subject.in_(subjects))).scalars().all()
        running = [end for end in ends if end is not None and end > now]
        return max(running) if running else None

    def record_login_failure(self, subjects: Sequence[str], policy: LockoutPolicy,
                             now: datetime | None = None) -> datetime | None:
        """Count a failed login for each subject; returns when the lock-out this failure started ends, if any."""
        now = now or utcnow()
        until = None
        with self.db.write() as conn:
            for subject in subjects:
                row = conn.execute(select(t.login_failure.c.failures, t.login_failure.c.last_failure_at)
                                   .where(t.login_failure.c.subject == subject)).one_or_none()
                failures = None if row is None else row.failures
                # a subject quiet for the longest lock-out starts counting again
                count = 1 if row is None or now - row.last_failure_at > policy.max_delay else row.failures + 1
                lock = policy.lock_for(count)
                values = {"failures": count, "last_failure_at": now, "locked_until": now + lock if lock else None}
                if failures is None:
                    try:
                        with conn.begin_nested():
                            conn.execute(insert(t.login_failure).values(subject=subject, **values))
                    except IntegrityError:  # another webserver counted the first failure at the same moment
                        conn.execute(update(t.login_failure).where(t.login_failure.c.subject == subject)
                                     .values(**values))
                else:
                    conn.execute(update(t.login_failure).where(t.login_failure.c.subject == subject).values(**values))
                if lock and (until is None or now + lock > until):
                    until = now + lock
        return until

    def clear_login_failures(self, subjects: Sequence[str]) -> None:
        with self.db.write() as conn:
            conn.execute(delete(t.login_failure).where(t.login_failure.c.subject.in_(subjects)))


    def add_api_token(self, username: str, token_hash: str, now: datetime | None = None,
                      expires_at: datetime | None = None) -> int:
        """Store the SHA-256 of a new API token of ``username`` (the token itself is shown once, never kept);
        returns the token's id (for `users token-revoke`)."""
        with self.db.write() as conn:
            user_id = _user_id(conn, username)
            conn.execute(insert(t.api_token).values(user_id=user_id, token_hash=token_hash,
                                                    created_at=now or datetime.now(UTC), expires_at=expires_at))
            return int(conn.execute(select(t.api_token.c.id).where(t.api_token.c.token_hash == token_hash))
                       .scalar_one())
