"""Workers sharing one bulk job (``imm bulk work JOB``): items claimed with a lease, on SQLite and PostgreSQL.

The store tests claim through ``JobStore.claim_next`` (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: ``BEGIN
IMMEDIATE`` and ``UPDATE … RETURNING``) from several connections at once; the end-to-end tests run real ``imm bulk
work`` processes against the simulated tenant and kill one of them.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from imm.data.database import DatabaseManager
from imm.data.jobs import EXECUTE, PENDING, RUNNING, SUCCEEDED, Item, Job, JobStore, stamp

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def make_job(db: DatabaseManager, items: int, job_id: str = "job-20261204-120000-ab12") -> JobStore:
    store = JobStore(db, Clock())
    now = stamp(T0)
    job = Job(job_id, now, now, None, "/plans/plan.csv", "0" * 64, "planned", EXECUTE, 4, "admin", "tenant")
    rows = [
        Item(job_id, line, "set-duration", f"user{line}@contoso.com", f"guid-{line}", None, {"days": 30})
        for line in range(2, items + 2)
    ]
    store.create(job, rows)
    return store


def opened(target: str, tmp_path: Path) -> DatabaseManager:
    db = DatabaseManager(target, local_path=tmp_path / "local")
    db.initialize()
    return db


def test_claims_take_pending_items_in_line_order_each_with_its_lease(store_target: str, tmp_path: Path) -> None:
    db = opened(store_target, tmp_path)
    store = make_job(db, 5)
    clock = store._clock
    stale = stamp(T0 - timedelta(seconds=30))
    first = store.claim_next("job-20261204-120000-ab12", "host-a:1:aa", lease_seconds=60, stale_before=stale)
    two = store.claim_next("job-20261204-120000-ab12", "host-b:2:bb", lease_seconds=60, stale_before=stale, limit=2)
    assert [(i.line_no, i.status, i.lease_owner, i.attempts) for i in first + two] == [
        (2, PENDING, None, 1),
        (3, PENDING, None, 1),
        (4, PENDING, None, 1),
    ]
    rows = {i.line_no: i for i in store.items("job-20261204-120000-ab12")}
    assert [(rows[n].status, rows[n].lease_owner, rows[n].lease_expires) for n in (2, 3, 4, 5)] == [
        (RUNNING, "host-a:1:aa", stamp(T0 + timedelta(seconds=60))),
        (RUNNING, "host-b:2:bb", stamp(T0 + timedelta(seconds=60))),
        (RUNNING, "host-b:2:bb", stamp(T0 + timedelta(seconds=60))),
        (PENDING, None, None),
    ]
    assert store.live_leases("job-20261204-120000-ab12") == 3
    assert clock() == T0
    db.close()


def test_a_live_lease_is_never_taken_and_an_expired_one_comes_back_as_running(
    store_target: str, tmp_path: Path
) -> None:
    db = opened(store_target, tmp_path)
    store = make_job(db, 2)
    clock: Clock = store._clock  # type: ignore[assignment]
    job = "job-20261204-120000-ab12"
    stale = stamp(T0 - timedelta(seconds=30))
    assert [i.line_no for i in store.claim_next(job, "dead:1:aa", lease_seconds=10, stale_before=stale)] == [2]
    assert [i.line_no for i in store.claim_next(job, "alive:2:bb", lease_seconds=10, stale_before=stale)] == [3]
    # the run path (bulk resume) does not take a leased item either
    assert store.claim(job, 2, [RUNNING]) is False
    clock.now = T0 + timedelta(seconds=5)
    assert store.renew(job, "alive:2:bb", {3}, 10) == 1
    assert store.renew(job, "alive:2:bb", {2}, 10) == 0  # not its item
    # 12 s later: dead's lease ran out at 10 s, alive's (renewed at 5 s) runs to 15 s; but the request timeout
    # (30 s) has not passed since dead's lease ended: its last call may still be in flight
    clock.now = T0 + timedelta(seconds=12)
    now_stale = stamp(clock.now - timedelta(seconds=30))
    assert store.claim_next(job, "third:3:cc", lease_seconds=10, stale_before=now_stale) == []
    assert store.live_leases(job) == 1
    clock.now = T0 + timedelta(seconds=41)
    now_stale = stamp(clock.now - timedelta(seconds=30))
    taken = store.claim_next(job, "third:3:cc", lease_seconds=10, stale_before=now_stale, limit=5)
    # alive's lease (to 15 s) is also 26 s expired by now: only 2 is taken (3's expiry + 30 s is at 45 s)
    assert [(i.line_no, i.status, i.lease_owner, i.attempts) for i in taken] == [(2, RUNNING, "dead:1:aa", 2)]
    # the dead worker's result, should it come after all, no longer counts; the new holder's does
    assert store.finish(job, 2, SUCCEEDED, "late", owner="dead:1:aa") is False
    assert store.finish(job, 2, SUCCEEDED, "done", owner="third:3:cc") is True
    item = store.items(job, [SUCCEEDED])[0]
    assert (item.line_no, item.message, item.lease_owner, item.lease_expires) == (2, "done", "third:3:cc", None)
    db.close()


def test_concurrent_claimers_on_separate_connections_take_every_item_exactly_once(
    store_target: str, tmp_path: Path
) -> None:
    """Four stores (as four processes would open them), each with two threads, claim a job of 120 items at once."""
    first = opened(store_target, tmp_path)
    make_job(first, 120)
    job = "job-20261204-120000-ab12"
    stale = stamp(T0 - timedelta(seconds=30))
    taken: dict[str, list[int]] = {}
    lock = threading.Lock()
    stores = [JobStore(opened(store_target, tmp_path), Clock()) for _ in range(4)]
    start = threading.Barrier(8)

    def claimer(store: JobStore, name: str) -> None:
        start.wait()
        mine: list[int] = []
        while True:
            found = store.claim_next(job, name, lease_seconds=60, stale_before=stale, limit=3)
            if not found:
                break
            for item in found:
                mine.append(item.line_no)
                store.finish(job, item.line_no, SUCCEEDED, None, owner=name)
        with lock:
            taken[name] = mine

    threads = [
        threading.Thread(target=claimer, args=(store, f"w{n}:{t}")) for n, store in enumerate(stores) for t in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = sorted(line for lines in taken.values() for line in lines)
    assert every == list(range(2, 122))
    assert len(taken) == 8
    assert JobStore(first).counts(job) == {SUCCEEDED: 120}
    owners = {i.lease_owner for i in JobStore(first).items(job)}
    assert owners <= set(taken) and len(owners) >= 2
    for store in stores:
        store.db.close()
    first.close()
