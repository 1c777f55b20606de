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
