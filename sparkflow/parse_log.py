"""Parse logs: what a DAG file prints while it is imported goes to a log of its own, never to the stdout of the
command, scheduler or server that imports it (`<log_folder>/dag_processor/<file>.log`, its last import)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from sparkflow.files import open_private


def parse_log_path(log_folder: Path, dags_folder: Path, path: Path) -> Path:
    """The parse log of one DAG file: named after its path in the DAG folder."""
    try:
        rel = path.relative_to(dags_folder).as_posix()
    except ValueError:
        rel = path.name
    return log_folder / "dag_processor" / (re.sub(r"[^0-9A-Za-z_.\-/]", "_", rel) + ".log")


@contextlib.contextmanager
def output_to(log_path: Path) -> Iterator[None]:
    """Send what this process prints (Python's streams and file descriptors 1 and 2) to log_path meanwhile."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    fd = open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as sink:
        saved = []
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                saved.append((fd, os.dup(fd)))
        try:
            for fd, _ in saved:
                os.dup2(sink.fileno(), fd)
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                yield
        finally:
            with contextlib.suppress(Exception):
                sink.flush()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
