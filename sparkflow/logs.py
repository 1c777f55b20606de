"""Task log files: where they live, secret masking, and reading them with offsets (for tail/follow).

Layout follows Airflow's so people find their way: ``<log_folder>/dag_id=D/run_id=R/task_id=T/attempt=N.log``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

MASK = "***"
SPARKFLOW_LOG_NAME = "sparkflow.log"
_MIN_SECRET_LENGTH = 3  # masking "a" or "" would mangle every line


class SecretsMasker:
    """Replaces every registered secret by ``***`` in text. Thread-safe; secrets are only ever added."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            added = False
            for secret in secrets:
                if secret and len(secret) >= _MIN_SECRET_LENGTH and secret not in self._secrets:
                    self._secrets.add(secret)
                    added = True
            if added:
                # Longest first so a secret that contains another is masked whole.
                ordered = sorted(self._secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def mask(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern else text


# One masker per process: the task runner registers connection passwords as it resolves them, and every
# handler that writes task output uses it.
masker = SecretsMasker()


class MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return masker.mask(super().format(record))


SETTING_MASK = "******"
_SENSITIVE_KEY = r"[\w.\-]*(?:secret|password|passwd|token|credential|access[._\-]?key)[\w.\-]*"
# key=value / key="v a l" (confs), (key,value) (spark-submit --verbose), --key value / --key 'v a l' (flags)
_QUOTED = re.compile(rf"((?:--)?{_SENSITIVE_KEY}(?:=|,))(['\"])(.*?)\2|(--{_SENSITIVE_KEY}\s+)(['\"])(.*?)\5", re.I)
_INSIDE_QUOTES = re.compile(rf"(['\"])({_SENSITIVE_KEY}=)([^'\"]*)\1", re.I)  # 'key=v a l'
_BARE = re.compile(rf"((?:--)?{_SENSITIVE_KEY}(?:=|,)|--{_SENSITIVE_KEY}\s+)(?!['\"])([^\s)'\"]+)", re.I)
# Every pattern above needs one of these words: a line without any (nearly every line spark-submit prints) is
# returned after one search instead of three substitutions (~3x less of a Spark task's CPU per output line).
_ANY_SENSITIVE_WORD = re.compile(r"secret|password|passwd|token|credential|access[._\-]?key", re.I)


def mask_sensitive_settings(text: str) -> str:
    """Mask values of settings whose key names a secret (password, secret, token, credential, access key), as the
    Airflow Spark provider does for commands: ``spark.hadoop.fs.s3a.secret.key=******``."""
    if not _ANY_SENSITIVE_WORD.search(text):
        return text

    def quoted(match: re.Match[str]) -> str:
        if match.group(1):
            return f"{match.group(1)}{match.group(2)}{SETTING_MASK}{match.group(2)}"
        return f"{match.group(4)}{match.group(5)}{SETTING_MASK}{match.group(5)}"

    text = _INSIDE_QUOTES.sub(lambda m: f"{m.group(1)}{m.group(2)}{SETTING_MASK}{m.group(1)}", text)
    return _BARE.sub(lambda m: f"{m.group(1)}{SETTING_MASK}", _QUOTED.sub(quoted, text))


def task_log_path(log_folder: Path, dag_id: str, run_id: str, task_id: str, try_number: int,
                  map_index: int = -1) -> Path:
    """Airflow's layout; an instance of a mapped task has its own ``map_index=N`` folder."""
    safe_run = run_id.replace("/", "_")
    folder = log_folder / f"dag_id={dag_id}" / f"run_id={safe_run}" / f"task_id={task_id}"
    if map_index >= 0:
        folder = folder / f"map_index={map_index}"
    return folder / f"attempt={try_number}.log"


def open_task_log_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(MaskingFormatter("[%(asctime)s] {%(name)s} %(levelname)s - %(message)s"))
    return handler


def append_task_log_line(path: Path, when: datetime, level: str, message: str) -> None:
    """Add one line to a try's log from outside its task process (the scheduler's reason for failing a lost try,
    say), where the user looks first. Raises OSError when the file cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(f"[{when.isoformat()}] {level} - {message}\n")


def read_log(path: Path, offset: int = 0) -> tuple[str, int]:
    """Return the text after byte ``offset`` (only whole lines) and the offset to continue from."""
    if offset < 0:
        raise ValueError(f"log offset must be >= 0, got {offset}")
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return "", offset
    end = data.rfind(b"\n") + 1  # a line still being written is returned once it is complete
    return data[:end].decode("utf-8", errors="replace"), offset + end


def mask_lines(lines: Iterable[str]) -> list[str]:
    return [masker.mask(line) for line in lines]


def configure_sparkflow_log(log_folder: Path) -> None:
    """Send sparkflow's own warnings and unexpected errors (with tracebacks) to ``<log_folder>/sparkflow.log``."""
    log_folder.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("sparkflow")
    target = str(log_folder / SPARKFLOW_LOG_NAME)
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in root.handlers):
        return
    handler = logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(MaskingFormatter("[%(asctime)s] %(process)d %(name)s %(levelname)s - %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
