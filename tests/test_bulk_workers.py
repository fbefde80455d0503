"""Workers sharing one bulk job (``imm bulk work JOB``): items claimed with a lease, on SQLite and PostgreSQL.

The store tests claim through ``JobStore.claim_next`` (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: ``BEGIN
IMMEDIATE`` and ``UPDATE … RETURNING``) from several connections at once; the end-to-end tests run real ``imm bulk
work`` processes against the simulated tenant and kill one of them.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, make_simulator, run_imm
from imm.config import write_profile
from imm.data.audit_logger import AuditLogger
from imm.data.database import DatabaseManager
from imm.data.jobs import EXECUTE, PENDING, RUNNING, SUCCEEDED, Item, Job, JobStore, stamp
from imm.services.bulk import BulkEngine, JobBusyError
from imm.simulator import Simulator
from imm.simulator.model import INACTIVE

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
    # the run path (bulk resume) does not take a leased item either, and a resume refuses while workers hold leases
    assert store.claim(job, 2, [RUNNING]) is False
    engine = BulkEngine(db, AuditLogger(db), clock=clock)
    with pytest.raises(JobBusyError) as busy:
        engine.check_not_busy(job)
    assert busy.value.message == (
        f"bulk job {job} is being worked on: 2 item(s) are leased to `imm bulk work` processes"
    )
    store.update_job(job, status="running")
    assert engine.effective_status(store.get(job)) == "running"  # no lock file here, but live leases
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


# ------------------------------------------------------------------------------- three real workers, one killed
ADMIN = "admin@contoso.onmicrosoft.com"
SECOND = "second.admin@contoso.onmicrosoft.com"
UNDERSTOOD = ("--i-understand-last-hold", "--i-understand-unlimited")  # an added Litigation Hold is Unlimited


@dataclass
class Home:
    path: Path

    @property
    def env(self) -> dict[str, str]:
        return {"IMM_USER_PATH": str(self.path)}

    def imm(self, *args: str, timeout: float = 300) -> CliResult:
        return run_imm(*args, env=self.env, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, **self.env}
        env.pop("IMM_RAISE_ERRORS", None)
        return subprocess.Popen(
            [sys.executable, "-m", "imm", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip


def query(store: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the shared store (a new connection each time: the workers write meanwhile)."""
    db = DatabaseManager(store)
    try:
        return [tuple(r) for r in db.get_connection().execute(sql, params).fetchall()]
    finally:
        db.close()


def set_mailbox_changes(sim: Simulator) -> Counter[str]:
    """Set-Mailbox calls per identity that the tenant executed (answered 200, no injected fault)."""
    counts: Counter[str] = Counter()
    for entry in list(sim.exchange.request_log):
        if entry["cmdlet"] == "Set-Mailbox" and entry["status"] == 200 and entry["fault"] is None:
            counts[str(entry["parameters"]["Identity"]).lower()] += 1
    return counts


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_three_workers_one_killed_mid_item_do_every_item_exactly_once(tmp_path: Path, store_target: str) -> None:
    """Two admins share the store: the first submits a plan of 1,000 Litigation Hold releases (PostgreSQL; 300 on
    SQLite), the workers' run is refused until the second approves it, then three `imm bulk work` processes share
    the job and one is SIGKILLed while it holds an item. Its lease expires, a survivor reconciles the item with
    Exchange, and every mailbox is changed exactly once, with one success audit row each."""
    count = 1000 if store_target.startswith("postgresql") else 300
    with make_simulator(tmp_path, mailboxes=count, latency_ms=10.0, auto_approve_after=0.0, seed=11) as sim:
        sim.identity.add_user(SECOND, "Second Admin")
        where = {"store": store_target} if store_target.startswith("postgresql") else {"db_path": store_target}
        # request_timeout 3 s: a killed worker's item is taken again 3 s after its 2 s lease ends
        values = {**sim.profile_values(), **where, "approval_required": ["bulk"], "request_timeout": 3.0}
        homes = []
        for name, upn in (("first", ADMIN), ("second", SECOND)):
            home = Home(tmp_path / name)
            write_profile(home.path / "config" / "config.toml", "sim", values, make_default=True)
            sim.identity.auto_approve_upn = upn
            login = home.imm("login")
            assert login.exit_code == 0, login.stderr
            homes.append(home)
        first, second = homes
        tenant = sim.exchange.tenant
        with tenant.lock:
            guids = sorted(m.exchange_guid for m in tenant.mailboxes.values() if m.state == INACTIVE)[:count]
        assert len(guids) == count
        for guid in guids:
            if not tenant.mailboxes[guid].litigation_hold:
                tenant.add_hold(guid, "LitigationHold")
        synced = first.imm("sync")
        assert synced.exit_code == 0, synced.stderr
        plan = tmp_path / "plan.csv"
        with plan.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["action", "identity", "type"])
            writer.writerows(["release", g, "litigation"] for g in guids)
        submitted = first.imm("bulk", "submit", str(plan))
        assert submitted.exit_code == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        work = ("bulk", "work", job_id, "--yes", *UNDERSTOOD, "--lease", "2", "--concurrency", "4")
        refused = first.imm(*work)
        assert refused.exit_code == 5, refused.stderr
        assert f"job {job_id} is waiting for a second admin's approval" in " ".join(refused.stderr.split())
        approved = second.imm("bulk", "approve", job_id, "--yes")
        assert approved.exit_code == 0, approved.stderr
        sim.exchange.reset_counters()

        workers = [first.popen(*work) for _ in range(3)]
        victim = workers[0]

        watcher = DatabaseManager(store_target)  # one connection, polled until the moment comes

        def victim_mid_item() -> bool:
            """The first worker holds an item whose change Exchange has made and its journal does not know yet."""
            if victim.poll() is not None:
                raise AssertionError(f"the worker ended before the kill: {victim.communicate()[1][-2000:]}")
            held = watcher.get_connection().execute(
                "SELECT mailbox_guid FROM bulk_items WHERE job_id = ? AND status = 'running' AND lease_owner LIKE ?",
                (job_id, f"%:{victim.pid}:%"),
            )
            return any(not tenant.mailboxes[str(r[0])].litigation_hold for r in held.fetchall())

        wait_for(victim_mid_item, 120, "the first worker to hold an item done in Exchange")
        watcher.close()
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
        assert victim.returncode == -signal.SIGKILL
        killed = {
            int(r[0]): str(r[1])
            for r in query(store_target, "SELECT line_no, lease_owner FROM bulk_items WHERE job_id = ? AND "
                           "status = 'running' AND lease_owner LIKE ?", (job_id, f"%:{victim.pid}:%"))
        }  # fmt: skip
        assert killed  # the kill left items under its lease
        dead = next(iter(killed.values()))
        done_in_exchange = {line for line, _ in killed.items() if not tenant.mailboxes[guids[line - 2]].litigation_hold}
        assert done_in_exchange
        for survivor in workers[1:]:
            out, err = survivor.communicate(timeout=300)
            assert survivor.returncode == 0, err[-3000:]
            assert f"Job {job_id} (execute): " in err

        # Exchange: each mailbox changed exactly once, and released
        assert set_mailbox_changes(sim) == Counter(dict.fromkeys(guids, 1))
        assert all(not tenant.mailboxes[g].litigation_hold for g in guids)
        # the journal: every item final once; the killed worker's items taken over after its lease, reconciled
        items = {
            int(r[0]): r[1:]
            for r in query(store_target, "SELECT line_no, status, attempts, lease_owner, lease_expires FROM "
                           "bulk_items WHERE job_id = ?", (job_id,))
        }  # fmt: skip
        assert len(items) == count
        assert {r[0] for r in items.values()} <= {"succeeded", "already-done"}
        assert all(r[3] is None for r in items.values())  # no lease left
        for line in killed:
            status, attempts, owner, _ = items[line]
            assert attempts == 2 and owner != dead, (line, items[line])
        already = {line for line, r in items.items() if r[0] == "already-done"}
        assert done_in_exchange <= already <= set(killed)  # found done in Exchange: not sent again
        assert sum(1 for r in items.values() if r[1] != 1) == len(killed)
        # the audit: one success row per mailbox; no item operation left without a result; the dead worker's row
        # closed by the survivor that took its item over
        audit = [
            {"operation": r[0], "identity": r[1], "result": r[2], "operation_id": r[3], "details": json.loads(r[4])}
            for r in query(store_target, "SELECT operation, identity, result, operation_id, details FROM audit_log "
                           "ORDER BY id")
        ]  # fmt: skip
        successes = Counter(
            r["identity"] for r in audit if r["operation"] == "REMOVE_HOLD" and r["result"] == "success"
        )
        assert successes == Counter(dict.fromkeys(guids, 1))
        pairs: dict[str, Counter[str]] = {}
        for row in audit:
            if row["operation"] == "REMOVE_HOLD":
                pairs.setdefault(row["operation_id"], Counter())[row["result"]] += 1
        assert all(c["started"] == 1 and sum(c.values()) == 2 for c in pairs.values())
        job_rows = [(r["operation"], r["result"], r["details"].get("worker")) for r in audit if r["identity"] == job_id
                    and r["operation"] == "BULK_WORK"]  # fmt: skip
        started = [w for op, result, w in job_rows if result == "started"]
        assert len(started) == 3 and dead in started
        ends = Counter((result, w == dead) for op, result, w in job_rows if result != "started")
        # the run refused before the approval; the dead worker's row, closed by a survivor; the two survivors'
        assert ends == Counter({("failure", False): 1, ("interrupted", True): 1, ("success", False): 2})
        closed = next(r for r in audit if r["operation"] == "BULK_WORK" and r["result"] == "interrupted")
        assert closed["details"]["worker"] == dead and closed["details"]["line"] in killed
        status = first.imm("bulk", "status", job_id, "--output", "json")
        assert json.loads(status.stdout)["job"]["status"] == "completed"
        verify = first.imm("audit", "verify")
        assert verify.exit_code == 0, verify.stderr
