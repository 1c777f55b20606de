"""Task log files: where they live, secret masking, and reading them with offsets (for tail/follow).

Layout follows Airflow's so people find their way: ``<log_folder>/dag_id=D/run_id=R/task_id=T/attempt=N.log``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from sparkflow.files import open_private, private_dir

MASK = "***"
SPARKFLOW_LOG_NAME = "sparkflow.log"
_MIN_SECRET_LENGTH = 3  # masking "a" or "" would mangle every line

# Names whose values are secrets wherever they appear (connection extras at any depth, Variable keys, dict keys in
# rendered fields): Airflow's DEFAULT_SENSITIVE_FIELDS plus two words sparkflow always masked. Extended by the
# setting sensitive_var_conn_names (Airflow's name), see set_sensitive_names.
DEFAULT_SENSITIVE_NAMES = (
    "access_token", "api_key", "apikey", "authorization", "passphrase", "passwd", "password", "private_key",
    "secret", "token", "keyfile_dict", "service_account", "access_key", "credential",
)
_SEPARATORS = re.compile(r"[-_.\s]")


def _squash(name: str) -> str:
    """``API-Key``, ``api_key`` and ``api.key`` all become ``apikey``: one spelling to compare."""
    return _SEPARATORS.sub("", name.lower())


_DEFAULT_SQUASHED = tuple(_squash(n) for n in DEFAULT_SENSITIVE_NAMES)
_sensitive_names = _DEFAULT_SQUASHED


def set_sensitive_names(extra: Iterable[str]) -> None:
    """The sensitive names of this process: the defaults plus ``extra`` (the setting sensitive_var_conn_names)."""
    global _sensitive_names
    _sensitive_names = tuple(dict.fromkeys(_DEFAULT_SQUASHED + tuple(_squash(n) for n in extra if n.strip())))


def is_sensitive_name(name: str) -> bool:
    """Whether a key names a secret: it contains a sensitive name, case-insensitively, '-'/'_'/'.' ignored."""
    squashed = _squash(name)
    return any(word in squashed for word in _sensitive_names)


def redact(value: Any, name: str | None = None) -> Any:
    """``value`` with everything under a sensitive key replaced by ``***``, at any depth of dicts and lists."""
    if name is not None and is_sensitive_name(name) and value not in (None, ""):
        return MASK
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def secrets_in(value: Any, name: str | None = None) -> list[str]:
    """The values under sensitive keys of ``value`` (all of them when ``name`` itself is sensitive), at any depth."""
    if name is not None and is_sensitive_name(name):
        return _all_strings(value)
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in secrets_in(v, str(k))]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in secrets_in(v)]
    return []


def _all_strings(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _all_strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _all_strings(v)]
    return [] if value is None or isinstance(value, bool) else [str(value)]


def secret_forms(secret: str) -> set[str]:
    """The ways a secret shows up in output: as is, URL-encoded (``quote`` with and without ``/`` safe,
    ``quote_plus``: connection URIs, query strings), JSON-escaped and repr-escaped, and base64 (standard and
    URL-safe, with and without padding: basic auth headers, k8s secrets)."""
    raw = secret.encode("utf-8", errors="surrogatepass")
    b64, urlsafe = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), json.dumps(secret)[1:-1],
             json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1], b64, urlsafe,
             b64.rstrip("="), urlsafe.rstrip("=")}
    return {f for f in forms if len(f) >= _MIN_SECRET_LENGTH}


class SecretsMasker:
    """Replaces every registered secret, in each of its :func:`secret_forms`, by ``***`` in text. Thread-safe;
    secrets are only ever added."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            added = False
            for secret in secrets:
                if not secret or len(secret) < _MIN_SECRET_LENGTH:
                    continue
                new = secret_forms(secret) - self._secrets
                if new:
                    self._secrets |= new
                    added = True
            if added:
                # Longest first so a secret that contains another is masked whole.
                ordered = sorted(self._secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def add_value(self, value: Any, name: str | None = None) -> None:
        """Register the secrets in a structured value: all of it under a sensitive ``name``, else what sits under
        sensitive keys at any depth (Airflow's ``mask_secret(value, name)``)."""
        self.add(*secrets_in(value, name))

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
# The provider's key words: any token holding one masks the value after it (``k=v``, ``k v``, ``k: v``).
_PROVIDER_KEYWORDS = ("secret", "password")
# sparkflow's further words mask only a value given as a setting (``k=v``, ``(k,v)``, ``k: v``, ``--k v``):
# prose such as "tokens processed: 5" stays readable.
_WORDS = r"secret|passw(?:or)?d|token|credential|access[._\-]?key"
# The plain ``key=value`` token (no quotes, commas or colons in it; key and value bounded so that the match is
# linear): masked by one substitution in C, as most secrets in a command line are written; the scan below
# skips what it masked and handles every other form.
_PLAIN_SETTING = re.compile(rf"(?<!\S)([^\s'\"=,:]{{0,100}}?(?:{_WORDS})[^\s'\"=,:]{{0,100}}+=)[^\s'\"]++(?!\S)", re.I)
_MASKED_AHEAD = r"(?![^\s'\"=,:]{0,100}+=\*{6}(?!\S))"
# Searched in lower case. sparkflow's own words count only right after "--" or before a separator in the same
# token, so a line of prose repeating them costs one search, not one step per word.
_EXTRA_WORDS = r"(?:passwd|token|credential|access[._\-]?key)"
_KEYWORD = re.compile(
    rf"(?:secret|password){_MASKED_AHEAD}|(?<=--){_EXTRA_WORDS}{_MASKED_AHEAD}"
    rf"|{_EXTRA_WORDS}(?=[^\s'\"=,:]{{0,100}}+[=,:]){_MASKED_AHEAD}"
)
_ANY_WORD = re.compile(_WORDS, re.I)
_SEPARATOR = re.compile(r"[=,:]")
_WHITESPACE = re.compile(r"\s")
_NON_WHITESPACE = re.compile(r"\S")
# A quoted value ends at the last matching quote before that quote followed by whitespace, or before a newline.
_QUOTED_LIMIT = {quote: re.compile(rf"\n|{quote}(?=\s)") for quote in ("'", '"')}
_COMMA_VALUE_END = re.compile(r"[\s)]")


def mask_sensitive_settings(text: str) -> str:
    """Mask the values of settings whose key names a secret, as the Airflow Spark provider masks commands and
    output (``spark.hadoop.fs.s3a.secret.key=******``, ``--password '******'``, ``{'password': '******'}``),
    plus ``(key,value)`` (spark-submit --verbose) and the words token, credential, passwd and access key.

    One left-to-right scan from key word to key word, linear in the length of the text (a regular expression
    with backtracking took minutes on a long line packed with key words). A quoted value is masked up to its
    closing quote (the last one before a quote followed by whitespace, or before the end of the line); an
    unterminated one up to the end of the line; any other value up to the next whitespace.
    """
    if not _ANY_WORD.search(text):
        return text
    text = _PLAIN_SETTING.sub(rf"\1{SETTING_MASK}", text)
    lowered = text.lower()  # a case-insensitive search is several times slower than searching a lower-case copy
    if len(lowered) != len(text):  # a few non-ASCII letters grow when lowered: keep the offsets right
        lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    keyword = _KEYWORD.search(lowered)
    if keyword is None:
        return text
    length = len(text)
    out: list[str] = []
    copied = pos = 0
    find_keyword, find_space, find_text = _KEYWORD.search, _WHITESPACE.search, _NON_WHITESPACE.search
    while keyword is not None:
        at = keyword.start()
        token_start = max(pos, text.rfind(" ", pos, at) + 1, text.rfind("\t", pos, at) + 1,
                          text.rfind("\n", pos, at) + 1, text.rfind("\r", pos, at) + 1)
        end = find_space(text, at)
        token_end = end.start() if end else length
        separator = _SEPARATOR.search(text, keyword.end(), token_end)
        comma = False
        if separator is not None and separator.end() < token_end:
            value_start = separator.end()
            comma = separator.group() == ","
        elif separator is not None or keyword.group() in _PROVIDER_KEYWORDS or text.startswith("--", token_start):
            following = find_text(text, token_end)
            if following is None:
                break  # a key at the very end, without a value
            value_start = following.start()
        else:
            pos = token_end
            keyword = find_keyword(lowered, pos)
            continue
        first = text[value_start]
        quote = first if first in "'\"" else None
        enclosing = text[token_start] if text[token_start] in "'\"" and value_start < token_end else None
        wanted = quote or enclosing
        if wanted is not None:
            search_from = value_start + 1 if quote else value_start
            limit = _QUOTED_LIMIT[wanted].search(text, search_from)
            limit_end = length if limit is None else (limit.end() if limit.group() == wanted else limit.start())
            closing = text.rfind(wanted, search_from, limit_end)
            if closing != -1:
                out += [text[copied:search_from], SETTING_MASK]
                copied = closing
                pos = closing + 1
                keyword = find_keyword(lowered, pos)
                continue
            if quote:  # unterminated: the rest of the line is the secret
                line_end = text.find("\n", value_start)
                value_end = length if line_end == -1 else line_end
                out += [text[copied:value_start], SETTING_MASK]
                copied = pos = value_end
                keyword = find_keyword(lowered, pos)
                continue
        stop = (_COMMA_VALUE_END if comma else _WHITESPACE).search(text, value_start)
        value_end = stop.start() if stop else length
        if value_end == value_start:  # "(key,)": nothing to mask
            pos = value_start + 1
        else:
            out += [text[copied:value_start], SETTING_MASK]
            copied = pos = value_end
        keyword = find_keyword(lowered, pos)
    out.append(text[copied:])
    return "".join(out)


def task_log_path(log_folder: Path, dag_id: str, run_id: str, task_id: str, try_number: int,
                  map_index: int = -1) -> Path:
    """Airflow's layout; an instance of a mapped task has its own ``map_index=N`` folder."""
    run = _name("run_id", run_id.replace("/", "_"))  # a "/" only in run ids made before they were validated
    folder = log_folder / _name("dag_id", dag_id) / run / _name("task_id", task_id)
    if map_index >= 0:
        folder = folder / f"map_index={map_index}"
    return folder / f"attempt={try_number}.log"


_MAX_NAME_BYTES = 255  # a file name on ext4, xfs, btrfs


def _name(key: str, value: str) -> str:
    """``key=value`` as a folder name; a value too long for one (ids may be 250 characters) keeps its start and
    gets a hash of the whole, so every valid id has a log folder of its own."""
    name = f"{key}={value}"
    if len(name.encode()) <= _MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{key}={value.encode()[:200].decode(errors='ignore')}~{digest}"


class PrivateFileHandler(logging.FileHandler):
    """A FileHandler whose file is created 0600 in 0700 directories (logs carry secrets and XComs)."""

    def _open(self):  # type: ignore[no-untyped-def]
        return open(open_private(Path(self.baseFilename)), self.mode, encoding=self.encoding,  # noqa: SIM115
                    errors=self.errors)


class CappedFileHandler(PrivateFileHandler):
    """A try's log: records go through :func:`write_capped` (0 bytes: no limit). A write that fails (a full disk)
    is kept in ``error`` (the first one) instead of raised into the task's code, or reported through
    ``handleError``, which would log to the task's stderr: this very handler."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, encoding="utf-8", delay=True)
        self.max_bytes = max_bytes
        self.error: OSError | None = None

    def _open(self):  # type: ignore[no-untyped-def]
        return open(open_task_log(Path(self.baseFilename)), "a", encoding="utf-8")  # noqa: SIM115

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]
            try:
                stream = self.stream
                if stream is None:
                    stream = self.stream = self._open()
                write_capped(stream.fileno(), text.encode("utf-8", errors="replace"), self.max_bytes)
            except OSError as exc:
                if self.error is None:
                    self.error = exc

    def failure(self) -> str | None:
        """Why the try's log could not be written (one line naming the file), or None."""
        if self.error is None:
            return None
        reason = self.error.strerror or str(self.error)
        return (f"the task log {self.baseFilename} could not be written: {reason} (errno {self.error.errno}); "
                "free space on its disk or point the setting log_folder elsewhere")


def open_task_log(path: Path) -> int:
    """A try's log file for appending (created private); readable too, for write_capped's look at its end."""
    return open_private(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)


# Every capped write in this process (the log handler, the output pump's thread) holds this lock, so the check of
# the file's size and the write are one step and the truncation line is written once.
_CAP_LOCK = threading.Lock()


def write_capped(fd: int, data: bytes, max_bytes: int) -> bool:
    """Append ``data`` to a try's log (``fd`` is opened O_APPEND) unless the file would then hold more than
    ``max_bytes`` (0: no limit): then the whole lines of it that still fit and one truncation line, and nothing
    more afterwards (a pipe's read may bring many lines at once: the log fills up to the cap, whatever the chunks).
    Counts from the file's size, so every writer (records, output of subprocesses, a retried try's earlier lines)
    counts; a file that ends with the truncation line takes nothing more. False when (some of) ``data`` was
    dropped. Raises OSError (a full disk)."""
    if not max_bytes:
        _write_all(fd, data)
        return True
    line = truncation_line(max_bytes).encode()
    with _CAP_LOCK:
        size = os.fstat(fd).st_size
        if size >= len(line) and os.pread(fd, len(line), size - len(line)) == line:
            return False  # truncated already (a later, shorter record would still fit under the limit)
        if size + len(data) <= max_bytes:
            _write_all(fd, data)
            return True
        fitting = data[:max(max_bytes - size, 0)]
        _write_all(fd, fitting[:fitting.rfind(b"\n") + 1] + line)
        return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def truncation_line(max_bytes: int) -> str:
    return (f"[sparkflow] *** log truncated: this try's log reached {max_bytes} bytes (setting "
            "max_task_log_bytes); further output of the try is dropped ***\n")


def open_task_log_handler(path: Path, max_bytes: int = 0) -> CappedFileHandler:
    handler = CappedFileHandler(path, max_bytes)
    handler.setFormatter(MaskingFormatter("[%(asctime)s] {%(name)s} %(levelname)s - %(message)s"))
    return handler


def append_task_log_line(path: Path, when: datetime, level: str, message: str) -> None:
    """Add one line to a try's log from outside its task process (the scheduler's reason for failing a lost try,
    say), where the user looks first. Raises OSError when the file cannot be written."""
    with open(open_private(path), "a", encoding="utf-8") as fh:
        fh.write(f"[{when.isoformat()}] {level} - {message}\n")


LOG_CHUNK_BYTES = 1024 * 1024  # the most one read returns: memory per request stays bounded, whatever the log


def read_log(path: Path, offset: int = 0, limit: int | None = LOG_CHUNK_BYTES, complete: bool = False
             ) -> tuple[str, int]:
    """Return the text after byte ``offset`` (at most ``limit`` bytes, only whole lines unless ``complete``: the
    writer is done, or a line is longer than ``limit``) and the offset to continue from."""
    if offset < 0:
        raise ValueError(f"log offset must be >= 0, got {offset}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a fifo planted as a log must not block the reader
    except FileNotFoundError:
        return "", offset
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a device (/dev/zero) or fifo is not a log: nothing to read
            return "", offset
        fh.seek(offset)
        data = fh.read(-1 if limit is None else limit)
        at_end = limit is None or not fh.read(1)
    end = len(data)
    if not (complete and at_end):
        # a line still being written is returned once it is complete; a line longer than a chunk is cut
        end = data.rfind(b"\n") + 1 or (len(data) if limit is not None and len(data) >= limit else 0)
    return data[:end].decode("utf-8", errors="replace"), offset + end


def tail_offset(path: Path, tail_bytes: int) -> int:
    """Where the last ``tail_bytes`` of a log start, moved forward to the start of a line."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size <= tail_bytes:
        return 0
    start = size - tail_bytes
    with path.open("rb") as fh:
        fh.seek(start - 1)  # from the byte before: when it is a newline, start is a line's start already
        head = fh.read(min(tail_bytes, 64 * 1024) + 1)
    newline = head.find(b"\n")
    return start + newline if newline >= 0 else start


def configure_sparkflow_log(log_folder: Path) -> None:
    """Send sparkflow's own warnings and unexpected errors (with tracebacks) to ``<log_folder>/sparkflow.log``."""
    private_dir(log_folder)
    root = logging.getLogger("sparkflow")
    target = str(log_folder / SPARKFLOW_LOG_NAME)
    if any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in root.handlers):
        return
    handler = PrivateFileHandler(target, encoding="utf-8")
    handler.setFormatter(MaskingFormatter("[%(asctime)s] %(process)d %(name)s %(levelname)s - %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
