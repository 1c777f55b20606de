"""Schedules as Airflow defines them: presets, cron, timedelta, None, @once, data intervals, catchup, time zones."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pendulum
import pytest

from sparkflow import DAG
from sparkflow.definitions.schedule import (
    PRESETS,
    CronTimetable,
    DataInterval,
    DeltaTimetable,
    NullTimetable,
    OnceTimetable,
    make_timetable,
)
from sparkflow.exceptions import DagDefinitionError

AMS = ZoneInfo("Europe/Amsterdam")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iv(start: datetime, end: datetime) -> DataInterval:
    return DataInterval(start, end)


def all_due(the_dag: DAG, now: datetime) -> list[DataInterval]:
    """Every interval the scheduler would create up to ``now``, one after the other."""
    found: list[DataInterval] = []
    last = None
    while (nxt := the_dag.next_data_interval(last, now)) is not None:
        found.append(nxt)
        last = nxt
        assert len(found) < 1000
    return found


# -- parsing ------------------------------------------------------------------------------------------------------


def test_none_and_once_and_timedelta_map_to_their_timetables() -> None:
    assert isinstance(make_timetable(None), NullTimetable)
    assert make_timetable(None).periodic is False
    assert isinstance(make_timetable("@once"), OnceTimetable)
    delta = make_timetable(timedelta(hours=6))
    assert isinstance(delta, DeltaTimetable) and delta.periodic is True
    assert isinstance(make_timetable("*/5 * * * *"), CronTimetable)


def test_presets_are_airflows() -> None:
    assert PRESETS == {
        "@hourly": "0 * * * *",
        "@daily": "0 0 * * *",
        "@weekly": "0 0 * * 0",
        "@monthly": "0 0 1 * *",
        "@quarterly": "0 0 1 */3 *",
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
    }
    assert make_timetable("@daily").description == "@daily (0 0 * * *)"
    assert make_timetable("5 4 * * *").description == "cron 5 4 * * *"


@pytest.mark.parametrize(
    ("schedule", "run_after", "expected"),
    [
        ("@hourly", utc(2024, 1, 1, 10, 30), iv(utc(2024, 1, 1, 9), utc(2024, 1, 1, 10))),
        ("@daily", utc(2024, 1, 25, 1), iv(utc(2024, 1, 24), utc(2024, 1, 25))),
        ("@daily", utc(2024, 1, 25), iv(utc(2024, 1, 24), utc(2024, 1, 25))),  # exactly on a boundary
        ("@weekly", utc(2024, 1, 10, 12), iv(utc(2023, 12, 31), utc(2024, 1, 7))),  # Sundays
        ("@monthly", utc(2024, 1, 10), iv(utc(2023, 12, 1), utc(2024, 1, 1))),
        ("@quarterly", utc(2024, 5, 15), iv(utc(2024, 1, 1), utc(2024, 4, 1))),
        ("@yearly", utc(2024, 6, 1), iv(utc(2023, 1, 1), utc(2024, 1, 1))),
        ("@annually", utc(2024, 6, 1), iv(utc(2023, 1, 1), utc(2024, 1, 1))),
        ("30 2 * * *", utc(2024, 1, 25, 2, 29), iv(utc(2024, 1, 23, 2, 30), utc(2024, 1, 24, 2, 30))),
    ],
)
def test_manual_run_data_interval_is_the_last_complete_period(
    schedule: str, run_after: datetime, expected: DataInterval
) -> None:
    # Airflow: a manual run at 1am on the 25th of a daily DAG covers 0am 24th .. 0am 25th.
    assert DAG("manual", schedule=schedule).infer_manual_data_interval(run_after) == expected


def test_manual_run_data_interval_for_delta_none_and_once() -> None:
    run_after = utc(2024, 1, 25, 13, 7)
    assert DAG("d", schedule=timedelta(hours=2)).infer_manual_data_interval(run_after) == iv(
        utc(2024, 1, 25, 11, 7), run_after
    )
    assert DAG("n", schedule=None).infer_manual_data_interval(run_after) == iv(run_after, run_after)
    assert DAG("o", schedule="@once").infer_manual_data_interval(run_after) == iv(run_after, run_after)


def test_manual_run_with_naive_datetime_is_taken_as_utc() -> None:
    d = DAG("naive", schedule="@daily")
    assert d.infer_manual_data_interval(datetime(2024, 1, 25, 1)) == iv(utc(2024, 1, 24), utc(2024, 1, 25))


@pytest.mark.parametrize("bad", ["61 * * * *", "* * *", "every day", "0 0 32 * *"])
def test_invalid_cron_raises_value_error_with_example(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        make_timetable(bad)
    message = str(info.value)
    assert f"invalid cron expression {bad!r}" in message
    assert "expected 5 fields like '0 2 * * *'" in message


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        make_timetable("@daly")
    message = str(info.value)
    assert "unknown schedule preset '@daly'" in message
    for preset in ["@once", *PRESETS]:
        assert preset in message


def test_unsupported_schedule_type_and_bad_timedelta() -> None:
    with pytest.raises(ValueError, match=r"schedule 5 is not supported; use a cron string, a preset"):
        make_timetable(5)
    with pytest.raises(ValueError, match=r"schedule timedelta must be positive, got 0:00:00"):
        make_timetable(timedelta(0))


def test_bad_schedule_on_a_dag_names_the_dag() -> None:
    with pytest.raises(DagDefinitionError) as info:
        DAG("broken", schedule="0 25 * * *")
    assert str(info.value).startswith("DAG 'broken': invalid cron expression '0 25 * * *'")
    assert info.value.dag_id == "broken"
    assert info.value.lineno is not None


def test_custom_timetable_object_is_used_as_is() -> None:
    custom = NullTimetable()
    assert make_timetable(custom) is custom


# -- scheduled data intervals -------------------------------------------------------------------------------------


def test_daily_first_interval_is_due_only_once_it_has_ended() -> None:
    d = DAG("daily", schedule="@daily", start_date=utc(2024, 1, 1), catchup=True)
    assert d.next_data_interval(None, utc(2024, 1, 1)) is None
    assert d.next_data_interval(None, utc(2024, 1, 1, 23, 59, 59)) is None
    assert d.next_data_interval(None, utc(2024, 1, 2)) == iv(utc(2024, 1, 1), utc(2024, 1, 2))


def test_next_interval_follows_the_last_one() -> None:
    d = DAG("daily_next", schedule="@daily", start_date=utc(2024, 1, 1), catchup=True)
    first = iv(utc(2024, 1, 1), utc(2024, 1, 2))
    assert d.next_data_interval(first, utc(2024, 1, 2, 12)) is None
    assert d.next_data_interval(first, utc(2024, 1, 3)) == iv(utc(2024, 1, 2), utc(2024, 1, 3))


def test_catchup_creates_every_missed_interval() -> None:
    d = DAG("catchup", schedule="@daily", start_date=utc(2024, 1, 1), catchup=True)
    assert all_due(d, utc(2024, 1, 4, 6)) == [
        iv(utc(2024, 1, 1), utc(2024, 1, 2)),
        iv(utc(2024, 1, 2), utc(2024, 1, 3)),
        iv(utc(2024, 1, 3), utc(2024, 1, 4)),
    ]


def test_unaligned_start_date_waits_for_the_next_fire_time() -> None:
    d = DAG("unaligned", schedule="@daily", start_date=utc(2024, 1, 1, 10), catchup=True)
    assert all_due(d, utc(2024, 1, 3, 1)) == [iv(utc(2024, 1, 2), utc(2024, 1, 3))]


def test_no_catchup_gives_only_the_latest_interval() -> None:
    d = DAG("latest", schedule="@daily", start_date=utc(2024, 1, 1), catchup=False)
    now = utc(2024, 3, 10, 12)
    assert all_due(d, now) == [iv(utc(2024, 3, 9), utc(2024, 3, 10))]
    # A run long ago does not bring back the missed days either.
    old = iv(utc(2024, 1, 1), utc(2024, 1, 2))
    assert d.next_data_interval(old, now) == iv(utc(2024, 3, 9), utc(2024, 3, 10))
    # Exactly on a boundary the interval ending now is the latest.
    assert d.next_data_interval(None, utc(2024, 3, 10)) == iv(utc(2024, 3, 9), utc(2024, 3, 10))


def test_no_catchup_before_the_first_interval_ended_gives_nothing() -> None:
    d = DAG("early", schedule="@daily", start_date=utc(2024, 1, 1), catchup=False)
    assert d.next_data_interval(None, utc(2024, 1, 1, 10)) is None
    assert d.next_data_interval(None, utc(2024, 1, 2)) == iv(utc(2024, 1, 1), utc(2024, 1, 2))


def test_start_date_in_the_future_gives_nothing() -> None:
    for catchup in (True, False):
        d = DAG(f"future_{catchup}", schedule="@hourly", start_date=utc(2030, 1, 1), catchup=catchup)
        assert d.next_data_interval(None, utc(2024, 1, 1)) is None


def test_end_date_stops_scheduling() -> None:
    d = DAG("ending", schedule="@daily", start_date=utc(2024, 1, 1), end_date=utc(2024, 1, 2), catchup=True)
    assert [i.start for i in all_due(d, utc(2024, 2, 1))] == [utc(2024, 1, 1), utc(2024, 1, 2)]


def test_no_start_date_means_no_scheduled_runs() -> None:
    assert DAG("nostart", schedule="@daily").next_data_interval(None, utc(2024, 1, 1)) is None


def test_timedelta_schedule_intervals() -> None:
    d = DAG("delta", schedule=timedelta(hours=1), start_date=utc(2024, 1, 1, 0, 15), catchup=True)
    assert d.next_data_interval(None, utc(2024, 1, 1, 1)) is None
    assert all_due(d, utc(2024, 1, 1, 3, 20)) == [
        iv(utc(2024, 1, 1, 0, 15), utc(2024, 1, 1, 1, 15)),
        iv(utc(2024, 1, 1, 1, 15), utc(2024, 1, 1, 2, 15)),
        iv(utc(2024, 1, 1, 2, 15), utc(2024, 1, 1, 3, 15)),
    ]


def test_timedelta_schedule_without_catchup_gives_the_latest_interval() -> None:
    d = DAG("delta_latest", schedule=timedelta(hours=1), start_date=utc(2024, 1, 1), catchup=False)
    assert all_due(d, utc(2024, 1, 1, 5, 30)) == [iv(utc(2024, 1, 1, 4), utc(2024, 1, 1, 5))]
    last = iv(utc(2024, 1, 1, 0), utc(2024, 1, 1, 1))
    assert d.next_data_interval(last, utc(2024, 1, 1, 5, 30)) == iv(utc(2024, 1, 1, 4), utc(2024, 1, 1, 5))


def test_none_schedule_never_runs_by_itself() -> None:
    d = DAG("manual_only", schedule=None, start_date=utc(2024, 1, 1), catchup=True)
    assert d.next_data_interval(None, utc(2030, 1, 1)) is None


def test_once_runs_a_single_time_at_start_date() -> None:
    d = DAG("once", schedule="@once", start_date=utc(2024, 1, 1, 8), catchup=True)
    assert d.next_data_interval(None, utc(2024, 1, 1, 7)) is None
    first = d.next_data_interval(None, utc(2024, 1, 1, 9))
    assert first == iv(utc(2024, 1, 1, 8), utc(2024, 1, 1, 8))
    assert d.next_data_interval(first, utc(2030, 1, 1)) is None


# -- time zones ---------------------------------------------------------------------------------------------------


def test_cron_timetable_fires_at_local_midnight_across_dst() -> None:
    tt = CronTimetable("0 0 * * *", AMS)
    now = utc(2024, 4, 5)
    first = tt.next_interval(None, datetime(2024, 3, 30, tzinfo=AMS), now, True)
    assert first == iv(utc(2024, 3, 29, 23), utc(2024, 3, 30, 23))  # CET, UTC+1
    second = tt.next_interval(first, None, now, True)
    # The night of 31 March has 23 hours: the clocks go forward, midnight becomes 22:00 UTC (CEST).
    assert second == iv(utc(2024, 3, 30, 23), utc(2024, 3, 31, 22))
    assert second.end - second.start == timedelta(hours=23)


def test_naive_start_date_is_utc() -> None:
    d = DAG("naive_start", schedule="@daily", start_date=datetime(2024, 1, 1), catchup=True)
    assert d.start_date == utc(2024, 1, 1)
    assert d.next_data_interval(None, utc(2024, 1, 2)) == iv(utc(2024, 1, 1), utc(2024, 1, 2))


@pytest.mark.parametrize(
    "start_date",
    [datetime(2024, 1, 1, tzinfo=AMS), pendulum.datetime(2024, 1, 1, tz="Europe/Amsterdam")],
    ids=["zoneinfo", "pendulum"],
)
def test_dag_cron_schedule_uses_the_start_date_time_zone(start_date: datetime) -> None:
    d = DAG("amsterdam", schedule="@daily", start_date=start_date, catchup=True)
    assert d.next_data_interval(None, utc(2024, 1, 1, 23)) == iv(utc(2023, 12, 31, 23), utc(2024, 1, 1, 23))
    summer = iv(utc(2024, 6, 30, 22), utc(2024, 7, 1, 22))
    assert d.next_data_interval(iv(utc(2024, 6, 29, 22), summer.start), utc(2024, 7, 2)) == summer
