"""The client's wait and backpressure policies, fed steps and clocks only (no I/O): the
sync and async drivers both follow exactly these answers."""

from __future__ import annotations

import time

import pytest

from mycelium.backoff import (
    BACKPRESSURE_SLEEP_MAX_S,
    BACKPRESSURE_SLEEP_MIN_S,
    BACKPRESSURE_SPINS,
    BACKPRESSURE_YIELDS,
    Backpressure,
)
from mycelium.client.waiting import (
    ADAPTIVE_SPIN_MAX_S,
    ADAPTIVE_SPIN_MIN_S,
    BLOCK,
    EXPIRED,
    POLL,
    YIELD,
    SpinBudget,
    WaitPlan,
)
from mycelium.errors import BackpressureTimeout
from mycelium.shm.ordering import BLOCK_SAFETY_S
from mycelium.shm.wait import WaitStrategy

FAR_S = 3600.0


def steps(plan: WaitPlan, n: int) -> list[int]:
    return [plan.step() for _ in range(n)]


def test_block_spins_then_yields_then_blocks() -> None:
    plan = WaitPlan(WaitStrategy.BLOCK, 5, 3, time.monotonic() + FAR_S)
    assert steps(plan, 10) == [POLL] * 5 + [YIELD] * 3 + [BLOCK] * 2
    assert 0 < plan.block_timeout() <= BLOCK_SAFETY_S


def test_yield_never_blocks_and_spin_never_yields() -> None:
    plan = WaitPlan(WaitStrategy.YIELD, 2, 3, time.monotonic() + FAR_S)
    assert steps(plan, 100) == [POLL] * 2 + [YIELD] * 98
    plan = WaitPlan(WaitStrategy.SPIN, 2, 3, time.monotonic() + FAR_S)
    assert set(steps(plan, 1000)) == {POLL}


@pytest.mark.parametrize("strategy", list(WaitStrategy))
def test_every_strategy_expires_at_its_deadline(strategy: WaitStrategy) -> None:
    plan = WaitPlan(strategy, 10, 10, time.monotonic() - 1)
    assert EXPIRED in steps(plan, 100)
    assert plan.block_timeout() <= 0


def test_no_deadline_blocks_for_the_safety_bound_only() -> None:
    plan = WaitPlan(WaitStrategy.BLOCK, 0, 0, None)
    assert steps(plan, 3) == [BLOCK] * 3
    assert plan.block_timeout() == BLOCK_SAFETY_S


def test_adaptive_spins_its_budget_then_blocks_without_yielding() -> None:
    budget = SpinBudget()
    plan = WaitPlan(WaitStrategy.ADAPTIVE, 5, 3, time.monotonic() + FAR_S, budget)
    first = steps(plan, 64)
    assert set(first) == {POLL}  # a budget of 100 us is far more than 64 polls
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2 * budget.spin_s:
        pass
    assert steps(plan, 16)[-1] == BLOCK and YIELD not in steps(plan, 16)


def test_the_spin_budget_follows_the_gaps() -> None:
    budget = SpinBudget()
    assert budget.spin_s == ADAPTIVE_SPIN_MAX_S  # a new consumer spins as much as allowed
    for _ in range(5):
        budget.learn(1e-6)  # back to back: keep spinning
    assert budget.spin_s == ADAPTIVE_SPIN_MAX_S
    for _ in range(20):
        budget.learn(1e-3)  # millisecond gaps: spinning through them is waste
    assert budget.spin_s == ADAPTIVE_SPIN_MIN_S
    budget.learn(30e-6)  # a gap a longer spin would have caught: spin that long next time
    assert budget.spin_s == 60e-6


def test_backpressure_spins_yields_then_backs_off_up_to_its_cap() -> None:
    bp = Backpressure(FAR_S, "topic 't'")
    pauses = [bp.pause() for _ in range(BACKPRESSURE_SPINS + BACKPRESSURE_YIELDS + 20)]
    assert pauses[:BACKPRESSURE_SPINS] == [-1.0] * BACKPRESSURE_SPINS
    yields = pauses[BACKPRESSURE_SPINS : BACKPRESSURE_SPINS + BACKPRESSURE_YIELDS]
    assert yields == [0.0] * BACKPRESSURE_YIELDS
    sleeps = pauses[BACKPRESSURE_SPINS + BACKPRESSURE_YIELDS :]
    assert sleeps[0] == BACKPRESSURE_SLEEP_MIN_S
    assert sleeps == sorted(sleeps) and sleeps[-1] == BACKPRESSURE_SLEEP_MAX_S


def test_backpressure_times_out_with_a_clear_error() -> None:
    bp = Backpressure(0.0, "topic 't'")
    with pytest.raises(BackpressureTimeout, match=r"topic 't'.*nothing written") as info:
        bp.pause()
    assert info.value.waited_s == 0.0 and info.value.published == 0


def test_backpressure_asks_for_liveness_checks_only_now_and_then() -> None:
    bp = Backpressure(FAR_S, "topic 't'")
    assert not bp.liveness_due()  # the first check is a whole interval away
