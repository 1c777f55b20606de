"""Assets on real runs through the scheduler daemon (sequential executor): a chain of three DAGs, each scheduled on
what the one before updates, with asset events, asset_triggered runs, triggering_asset_events in the context,
the CLI and the REST API."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

from sparkflow.cli import main
from sparkflow.definitions.serialization import deserialize_dag, serialize_dag
from sparkflow.metastore import queries
from sparkflow.scheduler.daemon import SchedulerDaemon
from sparkflow.scheduler.dag_processing import refresh_dag_folder
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.state import RunState
from tests.helpers import NOW, Clock

CHAIN = {
    "producer": """
        from datetime import datetime
        from sparkflow import DAG, task
        from sparkflow.definitions.assets import Asset

        with DAG("producer", start_date=datetime(2024, 1, 1)) as dag:
            @task(outlets=[Asset("file:///data/raw.csv", extra={"format": "csv"})])
            def extract():
                return "raw"

            extract()
    """,
    "middle": """
        from datetime import datetime
        from airflow.datasets import Dataset
        from sparkflow import DAG, task

        with DAG("middle", start_date=datetime(2024, 1, 1), schedule=[Dataset("file:///data/raw.csv")]) as dag:
            @task(outlets=[Dataset("file:///data/clean.parquet")])
            def clean(**context):
                return sorted(context["triggering_dataset_events"])

            clean()
    """,
    "consumer": """
        from datetime import datetime
        from sparkflow import DAG, task
        from sparkflow.definitions.assets import Asset

        with DAG("consumer", start_date=datetime(2024, 1, 1),
                 schedule=Asset("file:///data/clean.parquet") | Asset("file:///data/other")) as dag:
            @task
            def report(**context):
                events = context["triggering_asset_events"]
                return {uri: [e["source_dag_id"] for e in evs] for uri, evs in events.items()}

            report()
    """,
}


def test_an_asset_chain_of_three_dags_runs_through_the_daemon(settings, metastore, write_dag, capsys) -> None:
    for name, code in CHAIN.items():
        write_dag(name, code)
    clock = Clock(NOW)
    refresh_dag_folder(settings, metastore)  # the DAG processor's work, done here once
    daemon = SchedulerDaemon(dataclasses.replace(settings, dag_parse_interval=0.0), metastore, "sequential",
                             clock=clock)
    daemon.refresh_dags(force=True)
    assert daemon.dags["consumer"].schedule_description.startswith("assets: file:///data/clean.parquet or")
    trigger_dag(metastore, daemon.dags["producer"], NOW)
    for _ in range(60):
        daemon.step()
        clock.now += timedelta(seconds=2)
        runs = queries.list_runs(metastore.db, "consumer")
        if runs and runs[0].state is RunState.SUCCESS:
            break
    (middle,) = queries.list_runs(metastore.db, "middle")
    (consumer,) = queries.list_runs(metastore.db, "consumer")
    assert middle.run_type == consumer.run_type == "asset_triggered" and consumer.state is RunState.SUCCESS
    value = queries.get_xcom(metastore.db, "consumer", consumer.run_id, "report", "return_value")
    assert value is not None and value.value == {"file:///data/clean.parquet": ["middle"]}
    middle_value = queries.get_xcom(metastore.db, "middle", middle.run_id, "clean", "return_value")
    assert middle_value is not None and middle_value.value == ["file:///data/raw.csv"]

    assert main(["assets", "events", "file:///data/raw.csv", "-o", "json"]) == 0
    (event,) = json.loads(capsys.readouterr().out)
    assert event["source_dag_id"] == "producer" and event["source_task_id"] == "extract"
    assert event["extra"] == {"format": "csv"}
    assert main(["assets", "list", "-o", "json"]) == 0
    listed = {a["uri"]: a for a in json.loads(capsys.readouterr().out)}
    assert listed["file:///data/clean.parquet"]["producing_tasks"] == ["middle.clean"]
    assert listed["file:///data/clean.parquet"]["consuming_dags"] == ["consumer"]
    assert listed["file:///data/other"]["events"] == 0

    copy = deserialize_dag(serialize_dag(daemon.dags["consumer"]))
    assert copy.asset_condition is not None and copy.asset_condition.evaluate({"file:///data/other"})


def test_assets_page_and_api(settings, metastore, write_dag) -> None:
    from fastapi.testclient import TestClient

    from sparkflow.web.app import create_app
    from tests.web_support import PASSWORD, csrf_from, make_web_env

    env = make_web_env(settings, metastore)
    write_dag("producer", CHAIN["producer"])
    write_dag("middle", CHAIN["middle"])
    from sparkflow.scheduler.dag_processing import refresh_dag_folder
    from tests.helpers import run_dag

    refresh_dag_folder(settings, metastore)  # the consumer's schedule is on record too
    run = run_dag(settings, metastore, settings.resolved_dags_folder / "producer.py", "producer")
    assert run.state is RunState.SUCCESS
    with TestClient(create_app(settings, metastore, secret_key="test-key")) as client:
        body = client.get("/api/v1/assets", headers=env.auth("viewer")).json()
        by_uri = {a["uri"]: a for a in body["assets"]}
        assert by_uri["file:///data/raw.csv"]["consuming_dags"] == [{"dag_id": "middle"}]
        assert by_uri["file:///data/raw.csv"]["producing_tasks"] == [{"dag_id": "producer", "task_id": "extract"}]
        events = client.get("/api/v1/assets/events?uri=file:///data/raw.csv", headers=env.auth("viewer")).json()
        assert events["total_entries"] >= 1 and events["asset_events"][0]["source_task_id"] == "extract"
        token = csrf_from(client.get("/login").text)
        client.post("/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": token, "next": "/"})
        page = client.get("/assets").text
        assert 'data-uri="file:///data/raw.csv"' in page and "producer.extract" in page
        assert "when file:///data/raw.csv is updated" in client.get("/").text


ALIAS = {
    "partitions": """
        from datetime import datetime
        from sparkflow import DAG, task
        from sparkflow.definitions.assets import Asset, AssetAlias

        with DAG("partitions", start_date=datetime(2024, 1, 1)) as dag:
            @task(outlets=[AssetAlias("daily-partitions")])
            def write(*, outlet_events=None, ds=None):
                outlet_events[AssetAlias("daily-partitions")].add(Asset(f"s3://lake/trips/{ds}"), extra={"rows": 3})

            write()
    """,
    "on_alias": """
        from datetime import datetime
        from airflow.datasets import DatasetAlias
        from sparkflow import DAG, task

        with DAG("on_alias", start_date=datetime(2024, 1, 1), schedule=[DatasetAlias("daily-partitions")]) as dag:
            @task
            def read(**context):
                return {uri: [e["extra"] for e in evs] for uri, evs in context["triggering_asset_events"].items()}

            read()
    """,
}


def test_an_asset_alias_resolves_to_the_assets_added_through_it(settings, metastore, write_dag, capsys) -> None:
    for name, code in ALIAS.items():
        write_dag(name, code)
    clock = Clock(NOW)
    refresh_dag_folder(settings, metastore)
    daemon = SchedulerDaemon(dataclasses.replace(settings, dag_parse_interval=0.0), metastore, "sequential",
                             clock=clock)
    daemon.refresh_dags(force=True)
    assert daemon.dags["on_alias"].schedule_description == "assets: alias daily-partitions"
    trigger_dag(metastore, daemon.dags["partitions"], NOW)
    for _ in range(60):
        daemon.step()
        clock.now += timedelta(seconds=2)
        runs = queries.list_runs(metastore.db, "on_alias")
        if runs and runs[0].state is RunState.SUCCESS:
            break
    (consumer,) = queries.list_runs(metastore.db, "on_alias")
    assert consumer.run_type == "asset_triggered" and consumer.state is RunState.SUCCESS
    uri = f"s3://lake/trips/{NOW.date().isoformat()}"
    value = queries.get_xcom(metastore.db, "on_alias", consumer.run_id, "read", "return_value")
    assert value is not None and value.value == {uri: [{"rows": 3}]}
    assert main(["assets", "list", "-o", "json"]) == 0
    listed = {a["uri"]: a for a in json.loads(capsys.readouterr().out)}
    assert listed[uri]["producing_tasks"] == ["partitions.write"] and listed[uri]["consuming_dags"] == ["on_alias"]

    # the alias now resolves to that asset: an event of it from anywhere queues the DAG scheduled on the alias
    with metastore.db.write() as conn:
        from sparkflow.metastore.asset_store import AssetUpdate, record_events_in
        ti = queries.task_instances(metastore.db, "partitions", queries.list_runs(metastore.db, "partitions")[0].run_id)
        record_events_in(conn, ti[0], [AssetUpdate(uri)], NOW)
    assert metastore.assets.take_queue(daemon.dags["on_alias"]) == {uri}


def test_a_success_and_its_asset_events_are_one_transaction(settings, metastore, write_dag, monkeypatch) -> None:
    from sparkflow.metastore import store as store_module
    from sparkflow.metastore.asset_store import AssetUpdate
    from sparkflow.metastore.records import TIKey
    from sparkflow.scheduler.dag_processing import current_dag
    from sparkflow.scheduler.runs import trigger_dag as trigger
    from sparkflow.state import TaskState

    write_dag("producer", CHAIN["producer"])
    write_dag("middle", CHAIN["middle"])
    refresh_dag_folder(settings, metastore)
    dags = {dag_id: current_dag(settings, metastore, dag_id) for dag_id in ("producer", "middle")}
    run = trigger(metastore, dags["producer"], NOW)
    key = TIKey("producer", run.run_id, "extract")
    store = metastore.store
    store.set_task_state(key, TaskState.NONE, TaskState.SCHEDULED, "test", now=NOW)
    store.set_task_state(key, TaskState.SCHEDULED, TaskState.QUEUED, "test", now=NOW, try_number=1)
    running = store.set_task_state(key, TaskState.QUEUED, TaskState.RUNNING, "test", now=NOW, expected_try=1)
    updates = [AssetUpdate("file:///data/raw.csv", {"format": "csv"})]
    real = store_module.record_events_in

    def crash_after_the_events(*args, **kwargs):  # the process dies after writing the events, before the commit
        real(*args, **kwargs)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(store_module, "record_events_in", crash_after_the_events)
    try:
        store.set_task_state(key, TaskState.RUNNING, TaskState.SUCCESS, "test", now=NOW, expected_try=1,
                             known=running, asset_updates=updates)
    except KeyboardInterrupt:
        pass
    assert queries.get_task_instance(metastore.db, key).state is TaskState.RUNNING  # no success without events
    assert queries.list_asset_events(metastore.db) == []  # and no events without the success
    assert metastore.assets.take_queue(dags["middle"]) is None

    monkeypatch.setattr(store_module, "record_events_in", real)
    done = store.set_task_state(key, TaskState.RUNNING, TaskState.SUCCESS, "test", now=NOW, expected_try=1,
                                known=running, asset_updates=updates)
    assert done is not None and done.state is TaskState.SUCCESS
    (event,) = queries.list_asset_events(metastore.db)
    assert (event.source_task_id, event.source_try_number, event.extra) == ("extract", 1, {"format": "csv"})
    assert metastore.assets.take_queue(dags["middle"]) == {"file:///data/raw.csv"}
    # a compare-and-set that does not move the row records no events either
    assert store.set_task_state(key, TaskState.RUNNING, TaskState.SUCCESS, "test", now=NOW, expected_try=1,
                                asset_updates=updates) is None
    assert len(queries.list_asset_events(metastore.db)) == 1


def test_materialize_triggers_the_one_producing_dag(settings, metastore, write_dag, capsys) -> None:
    write_dag("producer", CHAIN["producer"])
    write_dag("middle", CHAIN["middle"])
    write_dag("twin", CHAIN["producer"].replace('"producer"', '"twin"'))
    refresh_dag_folder(settings, metastore)
    assert main(["assets", "materialize", "file:///data/clean.parquet"]) == 0
    assert "of DAG 'middle' to materialize" in capsys.readouterr().out
    (run,) = queries.list_runs(metastore.db, "middle")
    assert run.run_type == "asset_materialization" and run.run_id.startswith("asset_materialization__")

    assert main(["assets", "materialize", "file:///nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: asset 'file:///nope' is not known") and "\n" not in err
    assert main(["assets", "materialize", "file:///data/raw.csv"]) == 2  # producer and twin
    assert "2 DAGs do: producer, twin" in capsys.readouterr().err
    write_dag("consumer", CHAIN["consumer"])
    refresh_dag_folder(settings, metastore)
    assert main(["assets", "materialize", "file:///data/other"]) == 2
    assert "no DAG has a task with it as an outlet" in capsys.readouterr().err
