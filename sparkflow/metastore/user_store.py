"""Writes of web users and their API tokens. The store never sees a password or a token, only their hashes
(sparkflow.web.auth makes them)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from sparkflow.exceptions import NotFound, UserError
from sparkflow.metastore import schema as t
from sparkflow.metastore.engine import Database

USER_ROLES = ("admin", "op", "viewer")  # web roles: everything / run and edit / read only


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

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

    def add_api_token(self, username: str, token_hash: str, now: datetime | None = None) -> None:
        """Store the SHA-256 of a new API token of ``username`` (the token itself is shown once, never kept)."""
        with self.db.write() as conn:
            user_id = conn.execute(select(t.ab_user.c.id).where(t.ab_user.c.username == username)).scalar()
            if user_id is None:
                raise NotFound(f"user '{username}' does not exist; create it with `sparkflow users create`")
            conn.execute(insert(t.api_token).values(user_id=user_id, token_hash=token_hash,
                                                    created_at=now or datetime.now(UTC)))
