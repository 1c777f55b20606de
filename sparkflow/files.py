"""Private files: sparkflow's home and everything it writes there (the database and its WAL, keys, task logs,
exports) can be read by their owner only, since logs and data carry secrets and XComs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DIR_MODE, FILE_MODE = 0o700, 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700; an existing directory is left as it is."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            pass  # another process made it at the same time
        else:
            os.chmod(directory, DIR_MODE)  # mkdir's mode is cut by the umask; 0700 is what we want exactly
    return path


def restrict_home(home: Path) -> None:
    """The home is 0700, whoever created it (``db init`` on an older home tightens it)."""
    private_dir(home)
    if os.stat(home).st_mode & 0o077:
        os.chmod(home, DIR_MODE)


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """A file descriptor of ``path``, created 0600 (its directory 0700) when it does not exist."""
    private_dir(path.parent)
    return os.open(path, flags, FILE_MODE)


def touch_private(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists (SQLite then gives its WAL and shm files the same mode)."""
    try:
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        pass


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a fresh 0600 temporary file (O_EXCL, a random name, so a planted
    file or symlink is never followed) renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
