"""Connections: the record, Airflow-style URIs, file import/export parsing, env overrides, secret handling.

A leaf module: it knows nothing of the metastore. The store encrypts ``password`` and ``extra`` with
:class:`SecretBox` before writing; listings show secrets as ``***``.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from sparkflow.exceptions import ConfigError, InvalidConnection
from sparkflow.files import write_private
from sparkflow.import_files import load_json, load_yaml, read_text
from sparkflow.logs import MASK, redact, secrets_in

# AIRFLOW_CONN_<ID> is read too, so an existing Airflow deployment's connection settings carry over.
ENV_PREFIXES = ("SPARKFLOW_CONN_", "AIRFLOW_CONN_")
CONN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
FIELDS = ("conn_type", "host", "port", "login", "password", "schema", "extra", "description")


@dataclass(frozen=True)
class Connection:
    conn_id: str
    conn_type: str
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    schema: str | None = None
    extra: str | None = field(default=None, repr=False)  # JSON object text, as Airflow stores it
    description: str | None = None

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """Airflow's name: the extras as a dict (empty when unset)."""
        if not self.extra:
            return {}
        value = json.loads(self.extra)
        return value if isinstance(value, dict) else {}

    def secrets(self) -> list[str]:
        """Values that must never appear in output: the password and sensitive extras."""
        found = [self.password] if self.password else []
        return found + secrets_in(self.extra_dejson)

    def masked(self) -> dict[str, Any]:
        """A dict safe to print: password and sensitive extras replaced by ***."""
        data = asdict(self)
        data["password"] = MASK if self.password else None
        extras = redact(self.extra_dejson)
        data["extra"] = json.dumps(extras) if extras else None
        return data

    def get_uri(self) -> str:
        return format_uri(self)


def validate(conn: Connection, where: str = "") -> Connection:
    """Check one connection; raise InvalidConnection naming the connection, the field, the value and the fix."""
    prefix = f"{where}connection '{conn.conn_id}'"
    if not CONN_ID_PATTERN.match(conn.conn_id or ""):
        raise InvalidConnection(
            f"{where}connection id {conn.conn_id!r} is invalid; use letters, digits, '_', '.', '-'"
        )
    if not conn.conn_type or not re.match(r"^[A-Za-z][A-Za-z0-9_+.\-]*$", conn.conn_type):
        raise InvalidConnection(f"{prefix}: field 'conn_type' has bad value {conn.conn_type!r}; e.g. spark, postgres")
    if conn.port is not None and not (0 < conn.port < 65536):
        raise InvalidConnection(f"{prefix}: field 'port' has bad value {conn.port!r}; use 1-65535")
    if conn.extra:
        try:
            parsed = json.loads(conn.extra)
        except json.JSONDecodeError:
            raise InvalidConnection(
                f"{prefix}: field 'extra' is not valid JSON; give a JSON object like '{{\"deploy-mode\": \"client\"}}'"
            ) from None
        if not isinstance(parsed, dict):
            raise InvalidConnection(f"{prefix}: field 'extra' must be a JSON object, got {type(parsed).__name__}")
    return conn


def _port(value: Any, conn_id: str, where: str = "") -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidConnection(
            f"{where}connection '{conn_id}': field 'port' has bad value {value!r}; use a number 1-65535"
        ) from None


def from_fields(conn_id: str, data: Mapping[str, Any], where: str = "") -> Connection:
    """Build a connection from a mapping of Airflow field names (as in connection files and the CLI)."""
    if not isinstance(data, Mapping):
        raise InvalidConnection(f"{where}connection '{conn_id}' must be a mapping of fields, got {data!r}")
    if "uri" in data or "conn_uri" in data:
        return validate(parse_uri(conn_id, str(data.get("uri") or data.get("conn_uri"))), where)
    unknown = sorted(set(data) - set(FIELDS) - {"conn_id"})
    if unknown:
        raise InvalidConnection(
            f"{where}connection '{conn_id}': unknown field '{unknown[0]}'; known: {', '.join(FIELDS)}, uri"
        )
    extra = data.get("extra")
    if isinstance(extra, Mapping):
        try:
            extra = json.dumps(dict(extra))
        except TypeError as exc:  # e.g. a YAML date: JSON has no such type
            raise InvalidConnection(
                f"{where}connection '{conn_id}': field 'extra' holds a value JSON cannot store ({exc}); "
                "quote dates and other such values as strings"
            ) from None
    conn = Connection(
        conn_id=conn_id,
        conn_type=str(data.get("conn_type") or ""),
        host=_str_or_none(data.get("host")),
        port=_port(data.get("port"), conn_id, where),
        login=_str_or_none(data.get("login")),
        password=_str_or_none(data.get("password")),
        schema=_str_or_none(data.get("schema")),
        extra=_str_or_none(extra),
        description=_str_or_none(data.get("description")),
    )
    return validate(conn, where)


def _str_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def parse_uri(conn_id: str, uri: str) -> Connection:
    """Parse Airflow's connection URI: ``type://login:password@host:port/schema?extra_key=value``.

    ``__extra__`` in the query holds a JSON object of extras, as in Airflow.
    """
    if "://" not in uri:
        raise InvalidConnection(
            f"connection '{conn_id}': URI {_mask_uri(uri)!r} has no scheme; expected type://[login:password@]host[:port][/schema]"
        )
    scheme, rest = uri.split("://", 1)
    conn_type = scheme.replace("-", "_")
    # Airflow's host-with-protocol form: k8s://https://k8s-host:443 is conn_type k8s, host https://k8s-host.
    protocol = None
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", rest):
        protocol, rest = rest.split("://", 1)
    # Hosts such as local[*] or k8s://... are not URL-safe: percent-encode them in a URI, as Airflow does.
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
    login = password = None
    hostport = netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        login, _, pw = userinfo.partition(":")
        login = unquote(login) or None
        password = unquote(pw) if pw else None
    host, port = hostport, None
    match = re.match(r"^(.*):(\d+)$", hostport)
    if match:
        host, port = match.group(1), int(match.group(2))
    extras: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "__extra__":
            try:
                extras.update(json.loads(value))
            except (json.JSONDecodeError, TypeError):
                raise InvalidConnection(f"connection '{conn_id}': __extra__ in the URI is not a JSON object") from None
        else:
            extras[key] = value
    conn = Connection(
        conn_id=conn_id,
        conn_type=conn_type,
        host=(f"{protocol}://{unquote(host)}" if protocol else unquote(host)) or None,
        port=port,
        login=login,
        password=password,
        schema=unquote(path) or None,
        extra=json.dumps(extras) if extras else None,
    )
    return validate(conn)


def format_uri(conn: Connection) -> str:
    scheme = conn.conn_type.replace("_", "-")
    userinfo = ""
    if conn.login or conn.password:
        userinfo = quote(conn.login or "", safe="")
        if conn.password:
            userinfo += ":" + quote(conn.password, safe="")
        userinfo += "@"
    host = quote(conn.host or "", safe="")
    port = f":{conn.port}" if conn.port else ""
    schema = "/" + quote(conn.schema, safe="") if conn.schema else ""
    query = ""
    extras = conn.extra_dejson
    if extras:
        flat = all(isinstance(v, str) for v in extras.values())
        query = "?" + (urlencode(extras) if flat else urlencode({"__extra__": json.dumps(extras)}))
    return f"{scheme}://{userinfo}{host}{port}{schema}{query}"


def _mask_uri(uri: str) -> str:
    """Hide the password of ``[scheme://]login:password@host``, with or without a scheme."""
    return re.sub(r"^((?:[^:/@]+://)?[^:/@]*):[^@]*@", r"\1:***@", uri)


def connection_from_env(conn_id: str, environ: Mapping[str, str] | None = None) -> Connection | None:
    """``SPARKFLOW_CONN_<ID>`` (then ``AIRFLOW_CONN_<ID>``), a URI or JSON object, overrides the store."""
    env = os.environ if environ is None else environ
    for prefix in ENV_PREFIXES:
        raw = env.get(prefix + conn_id.upper())
        if raw:
            text = raw.strip()
            if text.startswith("{"):
                try:
                    data = json.loads(text)
                except json.JSONDecodeError:
                    raise InvalidConnection(
                        f"environment variable {prefix}{conn_id.upper()} is neither a URI nor a JSON object"
                    ) from None
                return from_fields(conn_id, data)
            return parse_uri(conn_id, text)
    return None


# The connections Airflow creates by default that DAG files rely on; `sparkflow db init` adds the missing ones.
DEFAULT_CONNECTIONS = (
    Connection("fs_default", "fs", extra=json.dumps({"path": "/"}), description="FileSensor's default: local files"),
    Connection("spark_default", "spark", host="local[*]", description="SparkSubmitOperator's default: local mode"),
)


def load_connections_file(path: Path) -> list[Connection]:
    """Parse a YAML or JSON connections file (``{conn_id: {field: value}}``) completely, or raise.

    Nothing is returned unless every entry is valid, so an import is all-or-nothing.
    """
    text = read_text(path, "connections file", InvalidConnection)
    import yaml  # here, not at the top: only connection files need it (~30 ms of every CLI start otherwise)

    kind = path.suffix.lstrip(".") or "YAML"
    try:
        data = load_json(text) if path.suffix == ".json" else load_yaml(text)
    except (ValueError, yaml.YAMLError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidConnection(f"connections file {path} is not valid {kind}: {str(exc).splitlines()[0]}") from None
    if data is None:
        return []
    if isinstance(data, list):  # Airflow's JSON export can be a list of objects with conn_id
        entries = {}
        for item in data:
            if not isinstance(item, Mapping) or "conn_id" not in item:
                raise InvalidConnection(f"connections file {path}: every list entry needs a 'conn_id'")
            if str(item["conn_id"]) in entries:
                raise InvalidConnection(f"connections file {path}: conn_id '{item['conn_id']}' appears more "
                                        "than once; keep one")
            entries[str(item["conn_id"])] = item
        data = entries
    if not isinstance(data, Mapping):
        raise InvalidConnection(f"connections file {path} must map connection ids to fields")
    return [from_fields(str(conn_id), fields, where=f"{path}: ") for conn_id, fields in data.items()]


def dump_connections(conns: list[Connection], path: Path) -> None:
    import yaml  # see load_connections_file

    data = {}
    for conn in conns:
        fields = {k: v for k, v in asdict(conn).items() if k != "conn_id" and v is not None}
        if conn.extra:
            fields["extra"] = conn.extra_dejson
        data[conn.conn_id] = fields
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=True)
    write_private(path, text)  # the export holds plaintext secrets


class SecretBox:
    """Fernet encryption of connection secrets at rest.

    The key is checked at once, but `cryptography` (~15 ms of imports) is loaded only when a secret is encrypted
    or decrypted: most commands and task processes never touch one."""

    def __init__(self, key: str) -> None:
        raw = key.encode() if isinstance(key, str) else key
        try:
            valid = len(base64.urlsafe_b64decode(raw)) == 32  # what Fernet() itself requires of a key
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise ConfigError("fernet_key is not a valid Fernet key; generate one with `sparkflow db init`")
        self._key = raw

    @functools.cached_property
    def _fernet(self) -> Any:
        from cryptography.fernet import Fernet

        return Fernet(self._key)

    @staticmethod
    def generate_key() -> str:
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()

    def encrypt(self, value: str | None) -> str | None:
        return None if value is None else self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str | None) -> str | None:
        from cryptography.fernet import InvalidToken

        if token is None:
            return None
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ConfigError(
                "a stored connection secret cannot be decrypted with this fernet_key; "
                "use the key that encrypted it ($SPARKFLOW_HOME/fernet.key)"
            ) from None



# How to add a connection of each type the operators use: the flags after `connections add ID --conn-type T`.
_ADD_FLAGS = {
    "spark": "--conn-host 'local[*]'",
    "jdbc": "--conn-host jdbc:postgresql://HOST --conn-port 5432 --conn-schema DB --conn-login USER --conn-password PW",
    "postgres": "--conn-host HOST --conn-port 5432 --conn-schema DB --conn-login USER --conn-password PW",
    "mysql": "--conn-host HOST --conn-port 3306 --conn-schema DB --conn-login USER --conn-password PW",
    "fs": "--conn-extra '{\"path\": \"/data\"}'",
    "http": "--conn-host https://HOST",
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def guess_conn_type(conn_id: str) -> str | None:
    """The type a conventional id names (``spark_default``, ``jdbc-default``, ``postgres_dwh``, ``fs_default``)."""
    first = re.split(r"[-_.]", conn_id.lower(), maxsplit=1)[0]
    aliases = {"postgresql": "postgres", "pg": "postgres", "spark_sql": "spark"}
    first = aliases.get(first, first)
    return first if first in _ADD_FLAGS else None


def missing_connection_hint(conn_id: str, conn_type: str | None = None) -> str:
    """How to define a missing connection, fitting its type (given, or guessed from the id): a `connections add`
    command, and the environment variable only when its name is one a shell can set."""
    kind = conn_type or guess_conn_type(conn_id)
    flags = _ADD_FLAGS.get(kind or "", "--conn-host HOST")
    hint = f"add it with `sparkflow connections add {conn_id} --conn-type {kind or 'TYPE'} {flags}`"
    name = ENV_PREFIXES[0] + conn_id.upper()
    if _ENV_NAME.match(name):
        example = json.dumps({"conn_type": kind or "TYPE", "host": "HOST"})
        hint += f" or set {name} to its URI or a JSON object like '{example}'"
    return hint
