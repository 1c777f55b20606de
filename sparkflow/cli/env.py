"""What every command needs, loaded once and lazily: settings, the metastore, the clock, argument parsers."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import click

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.custom_timetable import add_import_folders
from sparkflow.exceptions import UserError
from sparkflow.metastore.bootstrap import Metastore, open_metastore
from sparkflow.settings import Settings, load_settings


class CliEnv:
    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._metastore: Metastore | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
            add_import_folders(self._settings.import_folders, airflow_finders())
        return self._settings

    @property
    def metastore(self) -> Metastore:
        if self._metastore is None:
            self._metastore = open_metastore(self.settings)
        return self._metastore

    def close(self) -> None:
        """Close the metastore's connections (on SQLite the last one out checkpoints the write-ahead log)."""
        if self._metastore is not None:
            self._metastore.db.dispose()
            self._metastore = None

    def now(self) -> datetime:
        return datetime.now(UTC)

    def parse_date(self, value: str, option: str) -> datetime:
        """YYYY-MM-DD or ISO 8601; naive values are in the default_timezone setting."""
        import pendulum  # here, not at the top: most commands parse no date (~20 ms of every start)

        try:
            parsed = pendulum.parse(value, tz=ZoneInfo(self.settings.default_timezone), strict=False)
        except (ValueError, pendulum.parsing.exceptions.ParserError):
            parsed = None
        if not isinstance(parsed, datetime):
            raise UserError(
                f"{option} {value!r} is not a date; use YYYY-MM-DD or ISO 8601 such as 2024-01-01T00:00:00+00:00"
            )
        return datetime.fromtimestamp(parsed.timestamp(), UTC)


def confirm(question: str, yes: bool) -> None:
    """Go on when --yes was given or the user agrees at a terminal; with no terminal to ask, stop with a fix."""
    if yes:
        return
    if sys.stdin.isatty():
        click.confirm(question, abort=True)
        return
    raise UserError(f"{question} Pass --yes to confirm (there is no terminal to ask on)")
