"""The adaptive limiter converges to the tenant's concurrency budget from above and from below.

Exchange throttles on concurrent requests per tenant ("You have reached the maximum number of concurrent requests
per tenant", exo-rest.md §4), so a throttled reply that arrives while k of ours are in flight says the budget is at
most k - 1. The speed target itself (within 1.3x of the bound at concurrency 10, 20 and 40) is measured by
``bench/sync.py``; these tests check the behaviour that gives it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import make_simulator
from imm.exchange import AdaptiveLimiter
from imm.simulator.model import INACTIVE
from test_exchange_contract import exchange


def test_a_throttled_request_sets_the_limit_to_the_budget_it_shows() -> None:
    limiter = AdaptiveLimiter(40, decrease_interval=0.05)
    assert limiter.throttled(in_flight=11) is True
    assert (limiter.limit, limiter.budget) == (20, 10)  # never below half of the limit when the burst began
    assert limiter.throttled(in_flight=11) is False
    assert limiter.limit == 20  # the same burst: not below half of 40
    time.sleep(0.06)
    assert limiter.throttled(in_flight=11) is True
    assert (limiter.limit, limiter.budget) == (10, 10)  # the next burst reaches the estimate; no further
    time.sleep(0.06)
    assert limiter.throttled(in_flight=11) is False and limiter.limit == 10


def test_a_throttle_below_the_limit_says_someone_else_uses_the_budget() -> None:
    limiter = AdaptiveLimiter(10, decrease_interval=0.05)
    assert limiter.throttled(in_flight=7) is True
    assert (limiter.limit, limiter.budget) == (6, 6)


def test_from_below_the_limit_climbs_back_to_the_budget_then_probes_ever_more_rarely() -> None:
    limiter = AdaptiveLimiter(20, decrease_interval=0.05)
    for expected in (10, 5, 4):  # the budget looks like 4; each burst at most halves the limit
        limiter.throttled(in_flight=5)
        assert limiter.limit == expected
        time.sleep(0.06)
    limiter.throttled(in_flight=5)  # nothing to lower: a later burst at the budget
    for _ in range(4):
        limiter.succeeded()
    assert limiter.limit == 4  # at the budget a probe waits two intervals...
    time.sleep(0.11)
    for _ in range(4):
        limiter.succeeded()
    assert limiter.limit == 5  # ...then goes one above
    assert limiter.throttled(in_flight=5) is True  # the probe fails
    assert limiter.limit == 4
    time.sleep(0.11)
    for _ in range(8):
        limiter.succeeded()
    assert limiter.limit == 4  # the next probe waits twice as long
    time.sleep(0.11)
    for _ in range(4):
        limiter.succeeded()
    assert limiter.limit == 5
    for _ in range(5):
        limiter.succeeded()  # this probe holds: the budget grew
    assert (limiter.limit, limiter.budget) == (6, 5)


def test_below_the_budget_the_limit_climbs_additively() -> None:
    limiter = AdaptiveLimiter(8, decrease_interval=0.05)
    limiter.throttled(in_flight=9)  # a budget of 8: nothing to lower
    assert limiter.limit == 8
    limiter.throttled()  # a blind halving (e.g. a 429 counted without its in-flight count)
    assert limiter.limit == 4
    time.sleep(0.06)
    climbed = []
    for _ in range(4 + 5 + 6 + 7):
        limiter.succeeded()
        climbed.append(limiter.limit)
    assert climbed[3] == 5 and climbed[8] == 6 and climbed[14] == 7 and climbed[-1] == 8  # one per `limit` successes


def test_without_a_count_a_throttle_halves_once_per_interval() -> None:
    limiter = AdaptiveLimiter(8, decrease_interval=0.05)
    assert limiter.throttled() is True and limiter.limit == 4
    assert limiter.throttled() is False and limiter.limit == 4
    assert limiter.budget is None


def test_slot_yields_the_requests_in_flight() -> None:
    limiter = AdaptiveLimiter(3)
    with limiter.slot() as first:
        with limiter.slot() as second:
            assert (first, second, limiter.in_flight) == (1, 2, 2)
    assert limiter.in_flight == 0


@pytest.mark.parametrize("concurrency", [4, 12])
def test_a_client_settles_at_the_tenants_budget(tmp_path: Path, concurrency: int) -> None:
    """Profile concurrency at or above a budget of 4: at the end the limit is the budget (or one probe above),
    every call succeeded, and the tenant never had more than its budget in flight."""
    with make_simulator(tmp_path, mailboxes=160, concurrency_budget=4, latency_ms=15, retry_after_seconds=0.05) as sim:
        guids = sorted(m.exchange_guid for m in sim.exchange.tenant.mailboxes.values() if m.state == INACTIVE)
        with exchange(sim, tmp_path, concurrency=concurrency, decrease_interval=0.05) as client:
            results = list(
                client.map(
                    lambda g: client.invoke_all(
                        "Get-MailboxStatistics", {"Identity": g, "IncludeSoftDeletedRecipients": True}
                    ),
                    guids,
                )
            )
            assert [r for _, r in results if isinstance(r, BaseException)] == []
            assert len(results) == len(guids) > 100
            assert sim.exchange.max_in_flight <= 4
            if concurrency == 4:
                assert (client.limiter.decreases, client.stats_snapshot()["throttled"]) == (0, 0)
            else:
                assert client.limiter.budget == 4
                assert client.limiter.limit in (4, 5)
                assert client.stats_snapshot()["throttled"] < len(guids) // 4
