"""The adaptive poll interval: stretches with a run's age, lands just after its predicted finish, and doubles
when ARM says few reads are left."""

from __future__ import annotations

import pytest

from acr_transfer.polling import PollPlan, next_delay

PLAN = PollPlan(0.5, 15.0)


def test_a_young_run_is_read_every_min_seconds_and_an_old_one_every_tenth_of_its_age() -> None:
    assert next_delay(1.0, None, None, PLAN) == 0.5
    assert next_delay(60.0, None, None, PLAN) == pytest.approx(6.0)
    assert next_delay(3600.0, None, None, PLAN) == 15.0


def test_the_read_lands_just_after_the_finish_its_progress_predicts() -> None:
    assert next_delay(9.9, 99, None, PLAN) == pytest.approx(0.1 + 0.05, abs=0.01)  # sooner than min_seconds
    assert next_delay(1.0, 99, None, PLAN) == pytest.approx(0.1)  # never sooner than a fifth of it
    assert next_delay(60.0, 50, None, PLAN) == pytest.approx(6.0)  # far from done: the age-based interval


def test_few_remaining_reads_double_the_interval() -> None:
    assert next_delay(60.0, None, 10, PLAN) == pytest.approx(12.0)
    assert next_delay(3600.0, None, 10, PLAN) == 30.0
