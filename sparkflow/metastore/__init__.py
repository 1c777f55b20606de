"""The metastore: tables, engine, migrations; ``store`` is the only writer, ``queries`` the readers."""
