"""Pure scheduling decisions: trigger rules with Airflow's semantics, propagation in one pass, retries, run state."""

from datetime import UTC, datetime, timedelta

import pytest

from sparkflow import DAG, EmptyOperator
from sparkflow.definitions.trigger_rule import TriggerRule
from sparkflow.scheduler.planner import UpstreamCounts, evaluate_trigger_rule, plan_run, run_state
from sparkflow.state import RunState, TaskState

TR = TriggerRule
S = TaskState
NOW = datetime(2024, 1, 2, 12, tzinfo=UTC)

SUCCESS, FAILED, SKIPPED, UPSTREAM_FAILED = S.SUCCESS, S.FAILED, S.SKIPPED, S.UPSTREAM_FAILED
RUNNING, NONE, RETRY = S.RUNNING, S.NONE, S.UP_FOR_RETRY
RUN, WAIT = S.SCHEDULED, None

# (rule, direct upstream states, expected decision). Airflow's TriggerRuleDep with flag_upstream_failed=True.
CASES: list[tuple[TriggerRule, list[TaskState], TaskState | None]] = [
    # all_success: waits for success everywhere; a failure anywhere fails it at once, a skip skips it at once.
    (TR.ALL_SUCCESS, [SUCCESS, SUCCESS], RUN),
    (TR.ALL_SUCCESS, [SUCCESS, RUNNING], WAIT),
    (TR.ALL_SUCCESS, [SUCCESS, RETRY], WAIT),
    (TR.ALL_SUCCESS, [FAILED, RUNNING], UPSTREAM_FAILED),
    (TR.ALL_SUCCESS, [UPSTREAM_FAILED, SUCCESS], UPSTREAM_FAILED),
    (TR.ALL_SUCCESS, [SKIPPED, RUNNING], SKIPPED),
    (TR.ALL_SUCCESS, [SKIPPED, FAILED], UPSTREAM_FAILED),  # failure wins over skip
    # all_failed: every upstream failed or upstream_failed; any success or skip skips it.
    (TR.ALL_FAILED, [FAILED, UPSTREAM_FAILED], RUN),
    (TR.ALL_FAILED, [FAILED, RUNNING], WAIT),
    (TR.ALL_FAILED, [FAILED, SUCCESS], SKIPPED),
    (TR.ALL_FAILED, [SKIPPED, RUNNING], SKIPPED),
    # all_done_setup_success (a teardown): once everything is done, unless no setup upstream succeeded (below).
    (TR.ALL_DONE_SETUP_SUCCESS, [SUCCESS, FAILED, UPSTREAM_FAILED], RUN),
    (TR.ALL_DONE_SETUP_SUCCESS, [FAILED, RUNNING], WAIT),
    # all_done: whatever the outcome, once everything is done.
    (TR.ALL_DONE, [SUCCESS, FAILED, SKIPPED, UPSTREAM_FAILED], RUN),
    (TR.ALL_DONE, [FAILED, RUNNING], WAIT),
    (TR.ALL_DONE, [SUCCESS, RETRY], WAIT),
    # one_success: runs as soon as one succeeded; when all done without success: skipped if all skipped, else failed.
    (TR.ONE_SUCCESS, [SUCCESS, RUNNING], RUN),
    (TR.ONE_SUCCESS, [FAILED, RUNNING], WAIT),
    (TR.ONE_SUCCESS, [FAILED, SKIPPED], UPSTREAM_FAILED),
    (TR.ONE_SUCCESS, [SKIPPED, SKIPPED], SKIPPED),
    # one_failed: runs as soon as one failed (upstream_failed counts); all done without failure: skipped.
    (TR.ONE_FAILED, [FAILED, RUNNING], RUN),
    (TR.ONE_FAILED, [UPSTREAM_FAILED, RUNNING], RUN),
    (TR.ONE_FAILED, [SUCCESS, RUNNING], WAIT),
    (TR.ONE_FAILED, [SUCCESS, SKIPPED], SKIPPED),
    # one_done: runs as soon as one succeeded or failed; all done with neither: skipped.
    (TR.ONE_DONE, [SUCCESS, RUNNING], RUN),
    (TR.ONE_DONE, [FAILED, RUNNING], RUN),
    (TR.ONE_DONE, [SKIPPED, RUNNING], WAIT),
    (TR.ONE_DONE, [SKIPPED, SKIPPED], SKIPPED),
    # none_failed: all done and none failed; a failure fails it at once; skips are fine.
    (TR.NONE_FAILED, [SUCCESS, SKIPPED], RUN),
    (TR.NONE_FAILED, [SKIPPED, SKIPPED], RUN),
    (TR.NONE_FAILED, [SUCCESS, RUNNING], WAIT),
    (TR.NONE_FAILED, [FAILED, RUNNING], UPSTREAM_FAILED),
    (TR.NONE_FAILED, [UPSTREAM_FAILED, SUCCESS], UPSTREAM_FAILED),
    # none_failed_min_one_success: like none_failed, but all skipped means skipped.
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, [SUCCESS, SKIPPED], RUN),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, [SKIPPED, SKIPPED], SKIPPED),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, [SUCCESS, RUNNING], WAIT),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, [FAILED, RUNNING], UPSTREAM_FAILED),
    (TR.NONE_FAILED_MIN_ONE_SUCCESS, [UPSTREAM_FAILED, SKIPPED], UPSTREAM_FAILED),
    # none_skipped: all done and none skipped (failures are fine); a skip skips it at once.
    (TR.NONE_SKIPPED, [SUCCESS, FAILED], RUN),
    (TR.NONE_SKIPPED, [UPSTREAM_FAILED, SUCCESS], RUN),
    (TR.NONE_SKIPPED, [SUCCESS, RUNNING], WAIT),
    (TR.NONE_SKIPPED, [SKIPPED, RUNNING], SKIPPED),
    # always: no matter what, even while upstream is still running.
    (TR.ALWAYS, [RUNNING, NONE], RUN),
    (TR.ALWAYS, [FAILED, SKIPPED], RUN),
]


@pytest.mark.parametrize(
    ("rule", "upstream", "expected"),
    CASES,
    ids=[f"{r.value}-{'+'.join(s.value for s in up)}" for r, up, _ in CASES],
)
def test_trigger_rule(rule: TriggerRule, upstream: list[TaskState], expected: TaskState | None) -> None:
    assert evaluate_trigger_rule(rule, UpstreamCounts.of(upstream)) is expected


def test_every_trigger_rule_is_covered() -> None:
    assert {rule for rule, _, _ in CASES} == set(TriggerRule)


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_task_without_upstream_is_scheduled_whatever_its_rule(rule: TriggerRule) -> None:
    assert evaluate_trigger_rule(rule, UpstreamCounts.of([])) is RUN


@pytest.mark.parametrize(("upstream", "expected"), [([UPSTREAM_FAILED, SKIPPED], SKIPPED),
                                                    ([UPSTREAM_FAILED, RUNNING], WAIT)])
def test_one_done_ignores_upstream_failed(upstream: list[TaskState], expected: TaskState | None) -> None:
    assert evaluate_trigger_rule(TR.ONE_DONE, UpstreamCounts.of(upstream)) is expected


def test_a_teardown_is_skipped_when_none_of_its_setups_succeeded() -> None:
    done = UpstreamCounts.of([FAILED, UPSTREAM_FAILED])
    assert evaluate_trigger_rule(TR.ALL_DONE_SETUP_SUCCESS, done, UpstreamCounts.of([FAILED])) is SKIPPED
    assert evaluate_trigger_rule(TR.ALL_DONE_SETUP_SUCCESS, done, UpstreamCounts.of([SUCCESS, FAILED])) is RUN


def test_upstream_counts() -> None:
    counts = UpstreamCounts.of([SUCCESS, FAILED, UPSTREAM_FAILED, SKIPPED, RUNNING, S.REMOVED])
    assert counts == UpstreamCounts(total=6, success=1, skipped=1, failed=2, failed_only=1, done=5)


# -- plan_run -----------------------------------------------------------------------------------------------------


def linear(dag_id: str, n: int = 4) -> DAG:
    with DAG(dag_id) as d:
        tasks = [EmptyOperator(task_id=f"t{i}") for i in range(n)]
        for up, down in zip(tasks, tasks[1:], strict=False):
            up >> down
    return d


def test_fresh_run_schedules_only_the_roots() -> None:
    d = linear("fresh", 3)
    plan = plan_run(d, {"t0": NONE, "t1": NONE, "t2": NONE}, {}, NOW)
    assert plan.decisions == {"t0": RUN}
    assert plan.retry_due == []
    assert plan.run_state is None


def test_skip_propagates_down_a_chain_in_one_call() -> None:
    d = linear("skips", 4)
    plan = plan_run(d, {"t0": SUCCESS, "t1": SKIPPED, "t2": NONE, "t3": NONE}, {}, NOW)
    assert plan.decisions == {"t2": SKIPPED, "t3": SKIPPED}
    assert plan.run_state is RunState.SUCCESS


def test_upstream_failed_propagates_and_fails_the_run() -> None:
    d = linear("fails", 4)
    plan = plan_run(d, {"t0": FAILED, "t1": NONE, "t2": NONE, "t3": NONE}, {}, NOW)
    assert plan.decisions == {"t1": UPSTREAM_FAILED, "t2": UPSTREAM_FAILED, "t3": UPSTREAM_FAILED}
    assert plan.run_state is RunState.FAILED


def test_all_done_cleanup_runs_after_a_failure_and_the_run_waits_for_it() -> None:
    with DAG("cleanup") as d:
        work = EmptyOperator(task_id="work")
        after = EmptyOperator(task_id="after")
        cleanup = EmptyOperator(task_id="cleanup", trigger_rule="all_done")
        work >> after >> cleanup
    plan = plan_run(d, {"work": FAILED, "after": NONE, "cleanup": NONE}, {}, NOW)
    assert plan.decisions == {"after": UPSTREAM_FAILED, "cleanup": RUN}
    assert plan.run_state is None
    # Airflow: the run's state is decided by its leaves; a leaf that succeeded makes it a success.
    assert run_state(d, {"work": FAILED, "after": UPSTREAM_FAILED, "cleanup": SUCCESS}) is RunState.SUCCESS


def branch_dag(join_rule: str) -> DAG:
    with DAG(f"branch_{join_rule}") as d:
        branch = EmptyOperator(task_id="branch")
        left = EmptyOperator(task_id="left")
        right = EmptyOperator(task_id="right")
        right_more = EmptyOperator(task_id="right_more")
        join = EmptyOperator(task_id="join", trigger_rule=join_rule)
        branch >> [left, right]
        right >> right_more
        [left, right_more] >> join
    return d


def test_branch_join_with_none_failed_min_one_success_runs() -> None:
    d = branch_dag("none_failed_min_one_success")
    # The branch task chose "left" and skipped "right" itself.
    states = {"branch": SUCCESS, "left": SUCCESS, "right": SKIPPED, "right_more": NONE, "join": NONE}
    plan = plan_run(d, states, {}, NOW)
    assert plan.decisions == {"right_more": SKIPPED, "join": RUN}
    assert plan.run_state is None


def test_branch_join_waits_for_the_chosen_branch() -> None:
    d = branch_dag("none_failed_min_one_success")
    states = {"branch": SUCCESS, "left": RUNNING, "right": SKIPPED, "right_more": NONE, "join": NONE}
    assert plan_run(d, states, {}, NOW).decisions == {"right_more": SKIPPED}


def test_branch_join_with_default_rule_is_skipped() -> None:
    # The classic Airflow pitfall: all_success after a branch skips the join.
    d = branch_dag("all_success")
    states = {"branch": SUCCESS, "left": SUCCESS, "right": SKIPPED, "right_more": NONE, "join": NONE}
    plan = plan_run(d, states, {}, NOW)
    assert plan.decisions == {"right_more": SKIPPED, "join": SKIPPED}
    assert plan.run_state is RunState.SUCCESS


@pytest.mark.parametrize(
    ("next_try_at", "due"),
    [
        (NOW + timedelta(seconds=1), False),
        (NOW, True),
        (NOW - timedelta(minutes=5), True),
        (None, True),
    ],
    ids=["future", "now", "past", "unknown"],
)
def test_retry_is_due_according_to_next_try_at(next_try_at: datetime | None, due: bool) -> None:
    d = linear("retry", 2)
    plan = plan_run(d, {"t0": RETRY, "t1": NONE}, {"t0": next_try_at}, NOW)
    assert plan.retry_due == (["t0"] if due else [])
    assert plan.decisions == {}  # t1 waits for its upstream's retry
    assert plan.run_state is None


def test_up_for_reschedule_uses_next_try_at_too() -> None:
    d = linear("resched", 1)
    later = NOW + timedelta(minutes=1)
    assert plan_run(d, {"t0": S.UP_FOR_RESCHEDULE}, {"t0": later}, NOW).retry_due == []
    assert plan_run(d, {"t0": S.UP_FOR_RESCHEDULE}, {"t0": later}, later).retry_due == ["t0"]


def test_depends_on_past_holds_the_task_until_the_previous_run_succeeded() -> None:
    with DAG("past") as d:
        EmptyOperator(task_id="t", depends_on_past=True)
    assert plan_run(d, {"t": NONE}, {}, NOW, past_ok={"t": False}).decisions == {}
    assert plan_run(d, {"t": NONE}, {}, NOW, past_ok={"t": True}).decisions == {"t": RUN}
    assert plan_run(d, {"t": NONE}, {}, NOW).decisions == {"t": RUN}


def test_tasks_already_decided_are_left_alone() -> None:
    d = linear("decided", 3)
    plan = plan_run(d, {"t0": SUCCESS, "t1": S.QUEUED, "t2": NONE}, {}, NOW)
    assert plan.decisions == {}
    assert plan.run_state is None


# -- run state ----------------------------------------------------------------------------------------------------


def fan_out() -> DAG:
    with DAG("fan") as d:
        root = EmptyOperator(task_id="root")
        root >> [EmptyOperator(task_id="a"), EmptyOperator(task_id="b")]
    return d


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({"root": SUCCESS, "a": SUCCESS, "b": SUCCESS}, RunState.SUCCESS),
        ({"root": SUCCESS, "a": SUCCESS, "b": SKIPPED}, RunState.SUCCESS),
        ({"root": SKIPPED, "a": SKIPPED, "b": SKIPPED}, RunState.SUCCESS),
        ({"root": SUCCESS, "a": SUCCESS, "b": FAILED}, RunState.FAILED),
        ({"root": FAILED, "a": UPSTREAM_FAILED, "b": UPSTREAM_FAILED}, RunState.FAILED),
        ({"root": SUCCESS, "a": FAILED, "b": RUNNING}, None),
        ({"root": SUCCESS, "a": SUCCESS, "b": RETRY}, None),
        ({"root": SUCCESS, "a": SUCCESS, "b": S.SCHEDULED}, None),
        ({"root": SUCCESS, "a": SUCCESS, "b": NONE}, None),
    ],
    ids=["all-success", "leaf-skipped", "all-skipped", "leaf-failed", "leaf-upstream-failed",
         "unfinished-with-failure", "retry-pending", "scheduled", "not-yet-decided"],
)
def test_run_state(states: dict[str, TaskState], expected: RunState | None) -> None:
    assert run_state(fan_out(), states) is expected
    assert plan_run(fan_out(), states, {}, NOW).run_state is expected


def test_plan_run_finishes_the_run_once_propagation_ends_it() -> None:
    d = fan_out()
    plan = plan_run(d, {"root": SUCCESS, "a": SUCCESS, "b": NONE}, {}, NOW)
    assert plan.decisions == {"b": RUN}
    assert plan.run_state is None
    plan = plan_run(d, {"root": SKIPPED, "a": NONE, "b": NONE}, {}, NOW)
    assert plan.decisions == {"a": SKIPPED, "b": SKIPPED}
    assert plan.run_state is RunState.SUCCESS
