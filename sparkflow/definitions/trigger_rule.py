"""Trigger rules, with Airflow's names: when a task may run given the states of its direct upstream tasks."""

from __future__ import annotations

from enum import StrEnum


class TriggerRule(StrEnum):
    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ONE_DONE = "one_done"
    NONE_FAILED = "none_failed"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    NONE_SKIPPED = "none_skipped"
    ALWAYS = "always"
    # a teardown's rule: all upstream done, and at least one of its setups succeeded (or it has none)
    ALL_DONE_SETUP_SUCCESS = "all_done_setup_success"

    @classmethod
    def parse(cls, value: str) -> TriggerRule:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"unknown trigger_rule {value!r}; use one of {', '.join(r.value for r in cls)}"
            ) from None
