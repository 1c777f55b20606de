"""Connections: Airflow URIs, env overrides, connection files, masking, encryption at rest, the store."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest

from sparkflow.connections import (
    MASK,
    Connection,
    SecretBox,
    connection_from_env,
    dump_connections,
    format_uri,
    from_fields,
    load_connections_file,
    parse_uri,
)
from sparkflow.exceptions import ConfigError, InvalidConnection, NotFound, UserError
from sparkflow.logs import is_sensitive_name
from sparkflow.metastore import migrate, queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.engine import Database
from sparkflow.metastore.secret_store import ConnectionStore
from sparkflow.settings import Settings

# Characters outside the base64 alphabet: a Fernet token can never contain this by chance.
PASSWORD = "pw!#s3cr3t~value"
TOKEN = "tok!#extra~secret"


def spark_conn(conn_id: str = "spark_default", **overrides: object) -> Connection:
    fields: dict[str, object] = dict(
        conn_type="spark", host="local[*]", port=7077, login="bob", password=PASSWORD, schema="queue",
        extra=json.dumps({"deploy-mode": "client", "token": TOKEN}), description="the default",
    )
    fields.update(overrides)
    return Connection(conn_id=conn_id, **fields)  # type: ignore[arg-type]


# -- URIs ------------------------------------------------------------------------------------------------------


def test_parse_uri_reads_every_field_and_decodes_percent_escapes() -> None:
    conn = parse_uri(
        "spark_default", "spark://bob:pa%3Ass%40w%2Fd@spark-master:7077/queue?deploy-mode=cluster&spark_binary=s3"
    )
    assert conn == Connection(
        conn_id="spark_default", conn_type="spark", host="spark-master", port=7077, login="bob",
        password="pa:ss@w/d", schema="queue", extra=json.dumps({"deploy-mode": "cluster", "spark_binary": "s3"}),
    )
    assert conn.extra_dejson == {"deploy-mode": "cluster", "spark_binary": "s3"}


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("spark://local%5B%2A%5D", "local[*]"),
        ("spark://local%5B4%5D", "local[4]"),
        ("spark://k8s%3A%2F%2Fhttps%3A%2F%2Fapi.example%3A6443", "k8s://https://api.example:6443"),
        ("spark://yarn", "yarn"),
    ],
)
def test_percent_encoded_hosts_decode_and_format_back_identically(uri: str, host: str) -> None:
    conn = parse_uri("c", uri)
    assert conn.host == host
    assert conn.port is None
    assert format_uri(conn) == uri


def test_extra_json_in_dunder_extra_keeps_types_and_round_trips() -> None:
    extras = {"deploy-mode": "cluster", "conf": {"spark.executor.cores": 2}, "verbose": True}
    uri = format_uri(Connection("c", "spark", host="master", port=7077, extra=json.dumps(extras)))
    assert "__extra__=" in uri  # non-string values cannot be flat query parameters
    conn = parse_uri("c", uri)
    assert conn.extra_dejson == extras
    assert conn.host == "master" and conn.port == 7077


def test_flat_string_extras_use_plain_query_parameters() -> None:
    uri = format_uri(Connection("c", "spark", host="h", extra=json.dumps({"queue": "root.etl"})))
    assert uri == "spark://h?queue=root.etl"


def test_conn_type_underscores_are_hyphens_in_the_scheme() -> None:
    conn = parse_uri("gcp", "google-cloud-platform://?__extra__=%7B%22project%22%3A+%22p1%22%7D")
    assert conn.conn_type == "google_cloud_platform"
    assert conn.host is None
    assert conn.extra_dejson == {"project": "p1"}
    assert format_uri(conn).startswith("google-cloud-platform://")


@pytest.mark.parametrize(
    "conn",
    [
        spark_conn(description=None),
        Connection("c", "spark", host="local[*]"),
        Connection("c", "postgres", host="db.example", port=5432, login="u", password="p@ss:/w rd?#", schema="db/x"),
        Connection("c", "postgres", host="h", password="only-password"),
        Connection("c", "http", host="api.example", login="user only"),
        Connection("c", "spark", host="k8s://https://api:6443", extra=json.dumps({"nested": {"a": [1, 2]}})),
    ],
    ids=["full", "host-only", "escapes", "password-no-login", "login-no-password", "nested-extra"],
)
def test_format_then_parse_round_trips(conn: Connection) -> None:
    assert parse_uri(conn.conn_id, conn.get_uri()) == conn


def test_parse_uri_without_scheme_is_rejected() -> None:
    with pytest.raises(InvalidConnection, match=r"connection 'c'.*no scheme.*type://"):
        parse_uri("c", "local[*]")


def test_parse_uri_error_never_shows_the_password() -> None:
    with pytest.raises(InvalidConnection) as info:
        parse_uri("c", "bob:hunter2pw@spark-master:7077")
    assert "hunter2pw" not in str(info.value)


@pytest.mark.parametrize("query", ["__extra__=notjson", "__extra__=%5B1%2C2%5D"])
def test_parse_uri_rejects_dunder_extra_that_is_not_a_json_object(query: str) -> None:
    with pytest.raises(InvalidConnection, match=r"connection 'c': __extra__ .* not a JSON object"):
        parse_uri("c", f"spark://h?{query}")


def test_parse_uri_rejects_out_of_range_port() -> None:
    with pytest.raises(InvalidConnection, match=r"connection 'c': field 'port' has bad value 99999"):
        parse_uri("c", "spark://h:99999")


# -- SPARKFLOW_CONN_<ID> ---------------------------------------------------------------------------------------


def test_env_uri_form() -> None:
    conn = connection_from_env("spark_default", {"SPARKFLOW_CONN_SPARK_DEFAULT": "spark://local%5B%2A%5D"})
    assert conn == Connection("spark_default", "spark", host="local[*]")


def test_env_json_form() -> None:
    value = json.dumps({"conn_type": "spark", "host": "yarn", "port": "8032", "extra": {"queue": "etl"}})
    conn = connection_from_env("spark_yarn", {"SPARKFLOW_CONN_SPARK_YARN": f"  {value}\n"})
    assert conn == Connection("spark_yarn", "spark", host="yarn", port=8032, extra=json.dumps({"queue": "etl"}))


def test_env_absent_or_empty_gives_none() -> None:
    assert connection_from_env("x", {}) is None
    assert connection_from_env("x", {"SPARKFLOW_CONN_X": ""}) is None
    assert connection_from_env("x", {"SPARKFLOW_CONN_Y": "spark://h"}) is None


def test_env_broken_json_names_the_variable() -> None:
    with pytest.raises(InvalidConnection, match="SPARKFLOW_CONN_MY_CONN is neither a URI nor a JSON object"):
        connection_from_env("my_conn", {"SPARKFLOW_CONN_MY_CONN": "{not json"})


def test_env_override_beats_the_store(metastore: Metastore, monkeypatch: pytest.MonkeyPatch) -> None:
    metastore.connections.add_connections([spark_conn(host="stored-host")])
    stored = queries.resolve_connection(metastore.db, "spark_default", metastore.secrets)
    assert stored.host == "stored-host"

    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_DEFAULT", "spark://env-host:7078")
    from_env = queries.resolve_connection(metastore.db, "spark_default", metastore.secrets)
    assert (from_env.host, from_env.port, from_env.password) == ("env-host", 7078, None)

    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "json-host"}')
    assert queries.resolve_connection(metastore.db, "spark_default", metastore.secrets).host == "json-host"


def test_env_override_resolves_an_id_the_store_lacks(metastore: Metastore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARKFLOW_CONN_ONLY_ENV", "postgres://u:pw@db:5432/x")
    conn = queries.resolve_connection(metastore.db, "only_env", metastore.secrets)
    assert (conn.conn_type, conn.host, conn.password) == ("postgres", "db", "pw")


# -- connection files --------------------------------------------------------------------------------------------


def test_load_yaml_dict_form(tmp_path: Path) -> None:
    path = tmp_path / "conns.yaml"
    path.write_text(
        "spark_default:\n"
        "  conn_type: spark\n"
        "  host: local[*]\n"
        "  port: 7077\n"
        "  password: pw1\n"
        "  extra:\n"
        "    deploy-mode: client\n"
        "    conf: {spark.executor.cores: 2}\n"
        "pg:\n"
        "  uri: postgres://u:p%40ss@db.example:5432/mydb\n"
    )
    first, second = load_connections_file(path)
    assert first == Connection(
        "spark_default", "spark", host="local[*]", port=7077, password="pw1",
        extra=json.dumps({"deploy-mode": "client", "conf": {"spark.executor.cores": 2}}),
    )
    assert second == Connection("pg", "postgres", host="db.example", port=5432, login="u", password="p@ss",
                                schema="mydb")


def test_load_json_dict_form(tmp_path: Path) -> None:
    path = tmp_path / "conns.json"
    path.write_text(json.dumps({"s": {"conn_type": "spark", "host": "yarn", "extra": "{\"queue\": \"q\"}"}}))
    assert load_connections_file(path) == [Connection("s", "spark", host="yarn", extra='{"queue": "q"}')]


def test_load_json_list_form_with_conn_id(tmp_path: Path) -> None:
    path = tmp_path / "airflow_export.json"
    path.write_text(json.dumps([
        {"conn_id": "a", "conn_type": "spark", "host": "local[2]", "port": None, "description": "A"},
        {"conn_id": "b", "conn_type": "http", "host": "api.example", "login": "me", "password": "pw"},
    ]))
    assert load_connections_file(path) == [
        Connection("a", "spark", host="local[2]", description="A"),
        Connection("b", "http", host="api.example", login="me", password="pw"),
    ]


def test_load_empty_file_gives_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_connections_file(path) == []


BAD_ENTRIES = [
    ("port: seventy", "field 'port' has bad value 'seventy'"),
    ("port: 70000", "field 'port' has bad value 70000"),
    ("extra: '[1, 2]'", "field 'extra' must be a JSON object"),
    ("extra: '{broken'", "field 'extra' is not valid JSON"),
    ("host: h", "field 'conn_type' has bad value ''"),
    ("hots: h", "unknown field 'hots'"),
]


@pytest.mark.parametrize(("line", "expected"), BAD_ENTRIES, ids=[b[0].split(":")[0] + "-" + str(i)
                                                                  for i, b in enumerate(BAD_ENTRIES)])
def test_invalid_yaml_entry_names_file_connection_and_field(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "conns.yaml"
    conn_type = "" if line.startswith("host") else "  conn_type: spark\n"
    path.write_text(f"good:\n  conn_type: spark\n  host: h\nbroken_one:\n{conn_type}  {line}\n")
    with pytest.raises(InvalidConnection) as info:
        load_connections_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: connection 'broken_one'")
    assert expected in message
    assert "\n" not in message


def test_invalid_json_list_entry_names_file_connection_and_field(tmp_path: Path) -> None:
    path = tmp_path / "conns.json"
    path.write_text(json.dumps([{"conn_id": "ok", "conn_type": "spark"},
                                {"conn_id": "nope", "conn_type": "spark", "port": "x1"}]))
    with pytest.raises(InvalidConnection, match=r"conns\.json: connection 'nope': field 'port' has bad value 'x1'"):
        load_connections_file(path)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("list.yaml", "- just a string\n", "every list entry needs a 'conn_id'"),
        ("list.json", '[{"conn_type": "spark"}]', "every list entry needs a 'conn_id'"),
        ("scalar.yaml", "42\n", "must map connection ids to fields"),
        ("broken.yaml", "a: [unclosed\n", "is not valid yaml"),
        ("broken.json", '{"a": ', "is not valid json"),
        ("fields.yaml", "a: not-a-mapping\n", "connection 'a' must be a mapping of fields"),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidConnection) as info:
        load_connections_file(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(InvalidConnection, match=r"absent\.yaml cannot be read"):
        load_connections_file(path)


def test_yaml_date_in_extra_is_a_validation_error(tmp_path: Path) -> None:
    path = tmp_path / "conns.yaml"
    path.write_text("dated:\n  conn_type: http\n  extra:\n    since: 2024-01-01\n")
    with pytest.raises(InvalidConnection, match=r"connection 'dated'.*'extra'"):
        load_connections_file(path)


def test_from_fields_rejects_bad_conn_id() -> None:
    with pytest.raises(InvalidConnection, match=r"connection id 'has space' is invalid"):
        from_fields("has space", {"conn_type": "spark"})


# -- masking and encryption --------------------------------------------------------------------------------------


def test_masked_hides_password_and_sensitive_extras_only() -> None:
    conn = spark_conn(extra=json.dumps({"deploy-mode": "client", "token": TOKEN, "client_secret": "cs!#1",
                                        "api_key": "ak!#1", "spark_binary": "spark-submit"}))
    masked = conn.masked()
    assert masked["password"] == MASK
    assert json.loads(masked["extra"]) == {"deploy-mode": "client", "token": MASK, "client_secret": MASK,
                                           "api_key": MASK, "spark_binary": "spark-submit"}
    assert (masked["conn_id"], masked["host"], masked["port"], masked["login"]) == ("spark_default", "local[*]",
                                                                                     7077, "bob")
    text = json.dumps(masked)
    for secret in (PASSWORD, TOKEN, "cs!#1", "ak!#1"):
        assert secret not in text
    assert conn.password == PASSWORD  # the record itself is untouched


def test_masked_keeps_unset_password_unset() -> None:
    masked = Connection("c", "spark", host="h").masked()
    assert masked["password"] is None
    assert masked["extra"] is None


def test_secrets_lists_password_and_sensitive_extras() -> None:
    assert sorted(spark_conn().secrets()) == sorted([PASSWORD, TOKEN])


def test_repr_never_shows_password_or_extra() -> None:
    text = repr(spark_conn())
    assert PASSWORD not in text and TOKEN not in text


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [("password", True), ("Client_Secret", True), ("token", True), ("API_KEY", True), ("keyfile_dict", True),
     ("aws_access_key_id", True), ("credentials", True), ("deploy-mode", False), ("spark_binary", False),
     ("queue", False)],
)
def test_is_sensitive_key(key: str, sensitive: bool) -> None:
    assert is_sensitive_name(key) is sensitive


def test_secret_box_round_trip() -> None:
    box = SecretBox(SecretBox.generate_key())
    token = box.encrypt(PASSWORD)
    assert token is not None and PASSWORD not in token
    assert box.decrypt(token) == PASSWORD
    assert box.encrypt(None) is None and box.decrypt(None) is None


def test_secret_box_wrong_key_is_a_clear_config_error() -> None:
    token = SecretBox(SecretBox.generate_key()).encrypt(PASSWORD)
    with pytest.raises(ConfigError, match=r"cannot be decrypted with this fernet_key.*fernet\.key") as info:
        SecretBox(SecretBox.generate_key()).decrypt(token)
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize("key", ["not-a-key", "", "x" * 44])
def test_secret_box_invalid_key_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match="fernet_key is not a valid Fernet key"):
        SecretBox(key)


# -- the store -------------------------------------------------------------------------------------------------


def test_store_round_trips_connections_with_their_secrets(metastore: Metastore) -> None:
    conns = [spark_conn(), Connection("pg", "postgres", host="db", port=5432, login="u", password="pw2")]
    metastore.connections.add_connections(conns)
    assert queries.list_connections(metastore.db, metastore.secrets) == sorted(conns, key=lambda c: c.conn_id)
    assert queries.find_connection(metastore.db, "spark_default", metastore.secrets) == conns[0]
    assert queries.find_connection(metastore.db, "absent", metastore.secrets) is None


def test_add_connections_is_all_or_nothing(metastore: Metastore) -> None:
    store = metastore.connections
    store.add_connections([spark_conn("existing", host="original")])
    with pytest.raises(UserError, match=r"connection 'existing' already exists.*--overwrite"):
        store.add_connections([spark_conn("new_one"), spark_conn("existing", host="replacement")])
    conns = queries.list_connections(metastore.db, metastore.secrets)
    assert [c.conn_id for c in conns] == ["existing"]
    assert conns[0].host == "original"


def test_add_connections_duplicate_within_one_batch_writes_nothing(metastore: Metastore) -> None:
    with pytest.raises(UserError, match="connection 'twice' already exists"):
        metastore.connections.add_connections([spark_conn("first"), spark_conn("twice"), spark_conn("twice")])
    assert queries.list_connections(metastore.db, metastore.secrets) == []


def test_add_connections_overwrite_replaces(metastore: Metastore) -> None:
    store = metastore.connections
    store.add_connections([spark_conn("c", host="old")])
    store.add_connections([spark_conn("c", host="new", password="newpw")], overwrite=True)
    (conn,) = queries.list_connections(metastore.db, metastore.secrets)
    assert (conn.host, conn.password) == ("new", "newpw")


def test_delete_connection(metastore: Metastore) -> None:
    metastore.connections.add_connections([spark_conn("gone")])
    metastore.connections.delete_connection("gone")
    assert queries.find_connection(metastore.db, "gone", metastore.secrets) is None
    with pytest.raises(NotFound, match="connection 'gone' does not exist"):
        metastore.connections.delete_connection("gone")


def test_resolve_unknown_connection_names_it_and_lists_spark_connections(metastore: Metastore) -> None:
    metastore.connections.add_connections([
        spark_conn("spark_yarn"), spark_conn("spark_default"), Connection("pg", "postgres", host="db"),
    ])
    with pytest.raises(NotFound) as info:
        queries.resolve_connection(metastore.db, "spark_k8s", metastore.secrets)
    message = str(info.value)
    assert "connection 'spark_k8s' does not exist" in message
    assert "known Spark connections: spark_default, spark_yarn" in message
    assert "pg" not in message.split("known Spark connections:")[1].split(")")[0]
    assert "SPARKFLOW_CONN_SPARK_K8S" in message


def test_resolve_unknown_connection_with_no_spark_connections(metastore: Metastore) -> None:
    with pytest.raises(NotFound, match=r"connection 'spark_x' does not exist \(no Spark connections are defined\)"):
        queries.resolve_connection(metastore.db, "spark_x", metastore.secrets)


def test_missing_non_spark_connection_gets_a_hint_of_its_own_type(metastore: Metastore) -> None:
    """Difference 6: a missing jdbc-default was told to add a Spark connection, through SPARKFLOW_CONN_JDBC-DEFAULT
    (not a name a shell can set)."""
    metastore.connections.add_connections([spark_conn("spark_default"), Connection("jdbc_dwh", "jdbc", host="jdbc:x")])
    with pytest.raises(NotFound) as info:
        queries.resolve_connection(metastore.db, "jdbc-default", metastore.secrets)
    message = str(info.value)
    assert "(known jdbc connections: jdbc_dwh)" in message
    assert "`sparkflow connections add jdbc-default --conn-type jdbc --conn-host jdbc:postgresql://HOST" in message
    assert "--conn-type spark" not in message and "SPARKFLOW_CONN_" not in message  # no unusable variable name
    with pytest.raises(NotFound) as info:
        queries.resolve_connection(metastore.db, "postgres_dwh", metastore.secrets)
    assert "--conn-type postgres" in str(info.value) and "set SPARKFLOW_CONN_POSTGRES_DWH to" in str(info.value)
    with pytest.raises(NotFound) as info:  # a name that says nothing: every connection, no guessed type
        queries.resolve_connection(metastore.db, "warehouse", metastore.secrets)
    assert "(known connections: jdbc_dwh, spark_default)" in str(info.value) and "--conn-type TYPE" in str(info.value)


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # a second home / the raw SQLite file
def test_raw_database_holds_no_plaintext_secret(metastore: Metastore, settings: Settings) -> None:
    metastore.connections.add_connections([spark_conn()])
    metastore.db.dispose()
    db_path = Path(settings.resolved_db_url.removeprefix("sqlite:///"))
    raw = sqlite3.connect(db_path)
    try:
        tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        texts: list[str] = []
        for table in tables:
            for row in raw.execute(f'SELECT * FROM "{table}"'):
                texts.extend(str(v) for v in row if v is not None)
    finally:
        raw.close()
    dump = "\n".join(texts)
    assert "connection" in tables
    assert "local[*]" in dump and "bob" in dump  # the scan sees the connection row
    assert PASSWORD not in dump
    assert TOKEN not in dump
    assert "deploy-mode" not in dump  # the whole extra is encrypted, not only its secret keys
    for path in db_path.parent.glob(db_path.name + "*"):  # the file itself and any WAL left behind
        data = path.read_bytes()
        assert PASSWORD.encode() not in data and TOKEN.encode() not in data


def test_listing_without_a_key_shows_secrets_as_unset(metastore: Metastore) -> None:
    metastore.connections.add_connections([spark_conn()])
    (conn,) = queries.list_connections(metastore.db, None)
    assert conn.password is None and conn.extra is None
    assert conn.host == "local[*]"


def test_reading_with_the_wrong_key_is_a_config_error(metastore: Metastore) -> None:
    metastore.connections.add_connections([spark_conn()])
    other = SecretBox(SecretBox.generate_key())
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        queries.list_connections(metastore.db, other)


def test_store_without_a_key_refuses_to_write(metastore: Metastore) -> None:
    store = ConnectionStore(metastore.db, None)
    with pytest.raises(ConfigError, match="no fernet key is configured"):
        store.add_connections([spark_conn()])
    assert queries.list_connections(metastore.db, metastore.secrets) == []


# -- export / import -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_export_import_round_trip_through_files(metastore: Metastore, tmp_path: Path, suffix: str) -> None:
    conns = [
        spark_conn(),
        Connection("pg", "postgres", host="db.example", port=5432, login="u", password="p@ss:w/rd", schema="db"),
        Connection("bare", "spark", host="local[*]"),
        Connection("nested", "spark", extra=json.dumps({"conf": {"a": [1, 2]}, "verbose": True})),
    ]
    metastore.connections.add_connections(conns)
    path = tmp_path / f"export{suffix}"
    dump_connections(queries.list_connections(metastore.db, metastore.secrets), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # plaintext secrets: owner only
    loaded = load_connections_file(path)
    assert sorted(loaded, key=lambda c: c.conn_id) == sorted(conns, key=lambda c: c.conn_id)

    fresh = Database(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        migrate.upgrade(fresh)
        box = SecretBox(SecretBox.generate_key())
        ConnectionStore(fresh, box).add_connections(loaded)
        assert queries.list_connections(fresh, box) == sorted(conns, key=lambda c: c.conn_id)
    finally:
        fresh.dispose()
