"""metastore.migrate: the schema check reads the head revision from the migration files, without alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sparkflow.metastore import migrate

ROOT = Path(__file__).resolve().parents[2]


def test_schema_check_reads_the_head_from_the_migration_files_as_alembic_does(settings, metastore) -> None:
    assert migrate.head_revision() == migrate.alembic_head_revision()
    assert migrate.current_revision(metastore.db) == migrate.head_revision()


def test_task_and_scheduler_start_path_does_not_import_alembic() -> None:
    code = ("import sys, sparkflow.runtime.__main__, sparkflow.runtime.forkserver, sparkflow.scheduler.daemon, "
            "sparkflow.metastore.bootstrap; print(sorted(m for m in sys.modules if m.startswith('alembic')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
