"""Pure parts of the web layer: password hashing, CSRF signing, schedules in words, server-drawn SVG."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sparkflow.web.auth import Signer, hash_password, verify_password
from sparkflow.web.present import duration, nbytes, schedule_words
from sparkflow.web.svg import GanttBar, GraphNode, TrendPoint, gantt, graph, layout, trend_chart


def test_password_hash_and_signature() -> None:
    stored = hash_password("pw-123456", n=2**10)
    assert stored.startswith("scrypt$1024$") and verify_password("pw-123456", stored)
    assert not verify_password("pw-1234567", stored) and not verify_password("x", "garbage")
    assert Signer("k").csrf_token("session|a") != Signer("k").csrf_token("session|b")
    assert Signer("k").csrf_token("session|a") != Signer("other").csrf_token("session|a")


def test_schedule_words() -> None:
    assert schedule_words("@daily (0 0 * * *)") == "every day at 00:00 UTC"
    assert schedule_words("cron */5 * * * *") == "every 5 minutes"
    assert schedule_words("cron 30 6 * * 1") == "every Monday at 06:30 UTC"
    assert schedule_words(None) == "manual runs only"
    assert schedule_words("every 1:00:00") == "every 1:00:00"


def test_graph_layout_left_to_right() -> None:
    nodes = [GraphNode("a", "X", ()), GraphNode("b", "X", ("a",)), GraphNode("c", "X", ("a",)),
             GraphNode("d", "X", ("b", "c"), state="success", href="/ti/4")]
    assert layout(nodes) == {"a": (0, 0), "b": (1, 0), "c": (1, 1), "d": (2, 0)}
    svg = str(graph(nodes))
    assert svg.count('class="edge"') == 4 and 'href="/ti/4"' in svg and "#008000" in svg
    assert "<script" not in str(graph([GraphNode("<script>", "X", ())]))


def test_gantt_and_trends() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    svg = str(gantt([GanttBar("a", "success", t0, t0 + timedelta(seconds=10)), GanttBar("b", "none", None, None)],
                    now=t0 + timedelta(seconds=20)))
    assert svg.count("<rect") == 1 and "10.0s" in svg
    chart = str(trend_chart([TrendPoint("r1", {"duration": 5.0}), TrendPoint("r2", {"duration": 10.0})],
                            ["duration"], "Duration"))
    assert chart.count("<rect") == 3  # legend + two bars
    assert duration(75) == "1m 15s" and nbytes(3 * 1024 * 1024) == "3.0 MiB"
