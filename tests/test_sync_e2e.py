"""``imm sync`` end to end: the real CLI process, real msal sign-in, real httpx over TLS, a real SQLite file,
against a simulated tenant of known content.

Expectations come from the simulator's ground-truth records (``simulator.exchange.tenant``), read here directly
(sizes in bytes, company/department fields, holds), never through imm's own parsing code.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from action_support import hold_kind
from conftest import make_simulator, run_imm
from imm.config import write_profile
from imm.domain.records import MAILBOX_PROPERTIES
from imm.services.sync_fetch import CHANGE_PROPERTIES
from imm.simulator import FaultConfig, Simulator
from imm.simulator.model import ACTIVE, INACTIVE, SOFT_DELETED

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
ORG = {"company_attribute": "CustomAttribute5", "department_attribute": "CustomAttribute6"}


# ------------------------------------------------------------------------------------------------ helpers
def _write_profile(sim: Simulator, home: Path, **extra: Any) -> Path:
    config = home / "config" / "config.toml"
    write_profile(config, "sim", {**sim.profile_values(), "org": dict(ORG), **extra}, make_default=True)
    return config


def _db_path(home: Path) -> Path:
    return home / "data" / "sim.db"


def _login(sim: Simulator, home: Path) -> None:
    result = run_imm("login")
    assert result.exit_code == 0, result.stderr


def _rows(home: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    conn = sqlite3.connect(_db_path(home))
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _cache(home: Path) -> dict[str, sqlite3.Row]:
    return {row["identity"]: row for row in _rows(home, "SELECT * FROM inactive_mailboxes")}


def _inactive(sim: Simulator) -> dict[str, Any]:
    """What imm keeps: the inactive mailboxes and the formerly inactive ones not yet purged (soft-deleted,
    WasInactiveMailbox; delete-an-inactive-mailbox)."""
    tenant = sim.exchange.tenant
    with tenant.lock:
        return {
            guid: m
            for guid, m in tenant.mailboxes.items()
            if m.state == INACTIVE or (m.state == SOFT_DELETED and m.was_inactive)
        }


def _strictly_inactive(sim: Simulator) -> dict[str, Any]:
    return {guid: m for guid, m in _inactive(sim).items() if m.state == INACTIVE}


def _stats_calls(sim: Simulator) -> int:
    return int(sim.exchange.executed["Get-MailboxStatistics"])


def _expected_org(mbx: Any) -> tuple[str | None, str | None]:
    """Company/Department as the directory has them, else from CustomAttribute5/6 (the profile's [org])."""
    company = mbx.company or mbx.custom.get("CustomAttribute5") or None
    department = mbx.department or mbx.custom.get("CustomAttribute6") or None
    return company, department


def _mb(n_bytes: int) -> float:
    return round(n_bytes / MIB, 2)


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()


def _check_mailbox(row: sqlite3.Row, mbx: Any, sim: Simulator) -> None:
    """One cached row against the tenant's record, field by field."""
    tenant = sim.exchange.tenant
    assert row["display_name"] == mbx.display_name
    assert row["primary_smtp"] == mbx.primary_smtp
    assert row["user_principal_name"] == mbx.upn
    # sizes and counts as Get-MailboxStatistics reports them, in MB (2**20 bytes) to two decimals
    assert row["item_count"] == mbx.item_count
    assert row["size_mb"] == _mb(mbx.total_bytes)
    assert row["deleted_item_count"] == mbx.deleted_item_count
    assert row["recoverable_items_mb"] == _mb(mbx.deleted_bytes)
    assert row["archive_status"] == ("Active" if mbx.archive else "None")
    assert row["archive_size_mb"] == (_mb(mbx.archive_bytes) if mbx.archive else 0.0)
    assert row["archive_item_count"] == (mbx.archive_item_count if mbx.archive else 0)
    assert bool(row["auto_expanding_archive"]) is mbx.auto_expanding_archive
    assert (row["operating_company"], row["department"]) == _expected_org(mbx)
    assert bool(row["litigation_hold_enabled"]) is mbx.litigation_hold
    assert json.loads(row["in_place_holds"]) == list(mbx.in_place_holds)
    assert bool(row["delay_hold"]) is mbx.delay_hold
    assert bool(row["delay_release_hold"]) is mbx.delay_release_hold
    assert bool(row["compliance_tag_hold"]) is mbx.compliance_tag_hold
    assert _epoch(row["when_changed"]) == mbx.when_changed
    assert _epoch(row["when_soft_deleted"]) == mbx.when_soft_deleted
    expected_types = {hold_kind(r) for r in tenant.hold_reasons(mbx)}
    assert set(json.loads(row["hold_types"])) == expected_types, mbx.exchange_guid
    state = (
        "soft-deleted"
        if mbx.state == SOFT_DELETED
        else ("pending-delay" if expected_types <= {"delay", "delay-release"} else None)
    )
    if state is not None:
        assert row["lifecycle_state"] == state, mbx.exchange_guid
        assert row["releasable"] == 0
    else:
        assert row["lifecycle_state"] == "inactive"


@pytest.fixture
def tenant_1500(tmp_path: Path, imm_home: Path) -> Iterator[Simulator]:
    """1,500 inactive mailboxes (more than the silent 1,000 default), auto-approving sign-in."""
    with make_simulator(tmp_path, mailboxes=1500, seed=7, auto_approve_after=0.0) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        yield sim


# ------------------------------------------------------------------------------------------------- tests
def test_an_incremental_sync_of_many_changes_lists_once_more_in_full(tmp_path: Path, imm_home: Path) -> None:
    """More than a tenth of the listing changed (and more than SLIM_LISTING_MIN): one listing with every property
    is cheaper than a Get-Mailbox per changed mailbox, and gives the same cache."""
    with make_simulator(tmp_path, mailboxes=300, seed=5, auto_approve_after=0.0) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        assert run_imm("sync", "-q").exit_code == 0
        guids = sorted(_strictly_inactive(sim))[:120]
        for guid in guids:
            sim.exchange.tenant.touch(guid)
        sim.exchange.tenant.update(guids[0], department="Legal")
        sim.exchange.reset_counters()
        result = run_imm("sync", "-q")
        assert result.exit_code == 0, result.stderr
        mailbox_calls = [e for e in sim.exchange.request_log if e["cmdlet"] == "Get-Mailbox"]
        assert not [e for e in mailbox_calls if "Identity" in (e["parameters"] or {})]
        selects = [e["select"] for e in mailbox_calls if not e["page"]]  # first pages: inactive, soft-deleted
        assert selects == [",".join(CHANGE_PROPERTIES)] * 2 + [",".join(MAILBOX_PROPERTIES)] * 2
        cache, truth = _cache(imm_home), _inactive(sim)
        assert set(cache) == set(truth)
        for guid in guids:
            _check_mailbox(cache[guid], truth[guid], sim)
        assert cache[guids[0]]["department"] == "Legal"


def test_full_sync_matches_the_tenant_mailbox_by_mailbox(tenant_1500: Simulator, imm_home: Path) -> None:
    sim = tenant_1500
    truth = _inactive(sim)
    assert len(_strictly_inactive(sim)) == 1500 and len(truth) > 1500  # with the formerly inactive ones
    with_archive = sum(1 for m in truth.values() if m.archive)
    sim.exchange.reset_counters()

    result = run_imm("sync", "-q")

    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    cache = _cache(imm_home)
    assert set(cache) == set(truth)
    for guid, mbx in truth.items():
        _check_mailbox(cache[guid], mbx, sim)
    # one primary statistics call per mailbox plus one per active archive; never a truncated list
    assert _stats_calls(sim) == len(truth) + with_archive
    listings = [e for e in sim.exchange.request_log if e["cmdlet"] == "Get-Mailbox"]
    assert listings and all(e["parameters"].get("ResultSize") == "Unlimited" for e in listings)
    # the inactive list and, read beside it, the formerly inactive soft-deleted ones (filtered server-side;
    # filter-properties.md; $false goes over the wire as 'False', encoding.py); nothing else
    assert {
        (
            e["parameters"].get("InactiveMailboxOnly"),
            e["parameters"].get("SoftDeletedMailbox"),
            e["parameters"].get("Filter"),
        )
        for e in listings
        if e["status"] == 200
    } == {(True, None, None), (None, True, "IsInactiveMailbox -eq 'False'")}
    delayed = {g for g, m in truth.items() if m.delay_hold or m.delay_release_hold}
    tracked = {
        e["parameters"]["Identity"] for e in sim.exchange.request_log if e["cmdlet"] == "Export-MailboxDiagnosticLogs"
    }
    assert tracked == delayed and delayed  # HoldTracking only where a delay hold needs dating
    # Company/Department from one paged Get-Recipient listing, not 1,500 calls
    recipient_calls = [e for e in sim.exchange.request_log if e["cmdlet"] == "Get-Recipient"]
    assert 1 <= len(recipient_calls) <= 3
    assert recipient_calls[0]["parameters"].get("IncludeSoftDeletedRecipients") is True

    # the run record and the write-ahead audit rows
    (run,) = _rows(imm_home, "SELECT * FROM sync_runs")
    assert (run["mode"], run["status"], run["fetched"], run["removed"], run["errors"]) == (
        "incremental",
        "completed",
        len(truth),
        0,
        0,
    )
    assert run["finished_at"] is not None
    audit = _rows(imm_home, "SELECT * FROM audit_log WHERE operation = 'SYNC' ORDER BY id")
    assert [a["result"] for a in audit] == ["started", "success"]
    assert audit[0]["operation_id"] == audit[1]["operation_id"]
    details = json.loads(audit[1]["details"])
    n = len(truth)
    assert (details["listed"], details["fetched"], details["unchanged"], details["errors"]) == (n, n, 0, 0)
    assert audit[1]["user"] == f"admin@{sim.config.tenant_domain}"
    # org-wide holds and policy names were stored
    org = {r["value"] for r in _rows(imm_home, "SELECT value FROM org_holds")}
    assert org == set(sim.exchange.tenant.org_holds)
    names = {r["name"] for r in _rows(imm_home, "SELECT name FROM policies")}
    assert names == {p.name for p in sim.exchange.tenant.policies.values()}


def test_incremental_sync_fetches_exactly_the_changes(tenant_1500: Simulator, imm_home: Path) -> None:
    sim = tenant_1500
    tenant = sim.exchange.tenant
    assert run_imm("sync", "-q").exit_code == 0
    guids = sorted(_strictly_inactive(sim))
    before = len(_inactive(sim))
    touched, held, released = guids[10:15], guids[20], guids[30:33]
    purged, reactivated = guids[40:42], guids[50]
    for guid in touched:
        tenant.touch(guid)
    tenant.add_hold(held, "UniH" + "0123456789abcdef0123456789abcdef")
    tenant.update(guids[25], total_bytes=5 * 1024 * MIB, department="Legal")  # size and department changed
    for guid in released:  # every hold goes: soft-deleted (no longer inactive), kept until its purge
        mbx = tenant.mailbox(guid)
        tenant.update(
            guid,
            state=SOFT_DELETED,
            was_inactive=True,
            retire_time=float(math.floor(time.time())),
        )
        assert mbx.state == SOFT_DELETED
    for guid in purged:
        tenant.remove_mailbox(guid)
    tenant.update(reactivated, state=ACTIVE)  # recovered: an active mailbox now
    changed = {*touched, held, guids[25], *released}
    truth = _inactive(sim)
    assert len(truth) == before - 3  # the purged and the recovered ones leave; the released stay
    archives = sum(1 for g in changed if truth[g].archive)
    sim.exchange.reset_counters()

    result = run_imm("sync", "-q")

    assert result.exit_code == 0, result.stderr
    assert _stats_calls(sim) == len(changed) + archives
    # the listings ask for the keys and WhenChanged only; each changed mailbox's record is read on its own
    mailbox_calls = [e for e in sim.exchange.request_log if e["cmdlet"] == "Get-Mailbox"]
    listings = [e for e in mailbox_calls if "Identity" not in (e["parameters"] or {})]
    assert listings and {e["select"] for e in listings} == {",".join(CHANGE_PROPERTIES)}
    read = sorted(e["parameters"]["Identity"].lower() for e in mailbox_calls if e not in listings)
    assert read == sorted(changed)
    cache = _cache(imm_home)
    assert set(cache) == set(truth)
    for guid in changed:
        _check_mailbox(cache[guid], truth[guid], sim)
    assert "ediscovery" in json.loads(cache[held]["hold_types"])
    assert cache[guids[25]]["department"] == "Legal"
    run = _rows(imm_home, "SELECT * FROM sync_runs ORDER BY id DESC LIMIT 1")[0]
    assert (run["status"], run["fetched"], run["removed"]) == ("completed", len(changed), 3)
    for guid in released:
        assert cache[guid]["lifecycle_state"] == "soft-deleted" and cache[guid]["purge_on"]
    details = json.loads(run["details"])
    assert (details["listed"], details["unchanged"]) == (len(truth), len(truth) - len(changed))

    # nothing changed since: no statistics call at all
    sim.exchange.reset_counters()
    again = run_imm("sync")
    assert again.exit_code == 0, again.stderr
    assert _stats_calls(sim) == 0
    assert "0 fetched" in again.stdout and f"{len(truth):,} unchanged" in again.stdout

    # --full reads every mailbox again
    sim.exchange.reset_counters()
    assert run_imm("sync", "--full", "-q").exit_code == 0
    assert _stats_calls(sim) == len(truth) + sum(1 for m in truth.values() if m.archive)


def test_sync_under_throttling_and_faults_loses_nothing(tmp_path: Path, imm_home: Path) -> None:
    # random faults on top of the ones forced below; the client's backoff on 5xx/resets is seconds, so few
    faults = FaultConfig(error_5xx_rate=0.01, reset_rate=0.01, throttle_rate=0.05)
    with make_simulator(
        tmp_path,
        mailboxes=400,
        seed=11,
        auto_approve_after=0.0,
        latency_ms=5,
        concurrency_budget=3,
        retry_after_seconds=0.05,
        faults=faults,
    ) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        sim.exchange.fail_next("Get-MailboxStatistics", "reset", 2)
        sim.exchange.fail_next("Get-MailboxStatistics", "503", 2)
        sim.exchange.fail_next("Get-Mailbox", "429", 1)
        sim.exchange.reset_counters()

        result = run_imm("sync", "--concurrency", "8", "-q")

        assert result.exit_code == 0, result.stderr
        statuses = [e["status"] for e in sim.exchange.request_log]
        assert statuses.count(429) >= 5 and 503 in statuses and "reset" in statuses
        truth = _inactive(sim)
        cache = _cache(imm_home)
        assert set(cache) == set(truth)
        for guid, mbx in truth.items():
            _check_mailbox(cache[guid], mbx, sim)
        assert sim.exchange.max_in_flight <= 3


def test_ctrl_c_keeps_what_was_fetched_and_exits_130(tmp_path: Path, imm_home: Path) -> None:
    with make_simulator(
        tmp_path, mailboxes=1500, seed=3, auto_approve_after=0.0, latency_ms=20, concurrency_budget=4
    ) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        env = {**os.environ}
        env.pop("IMM_RAISE_ERRORS", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "imm", "sync"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the first batch is in the cache
            time.sleep(0.2)
            if _db_path(imm_home).exists():
                try:
                    if _rows(imm_home, "SELECT COUNT(*) AS n FROM inactive_mailboxes")[0]["n"] >= 1:
                        break
                except sqlite3.OperationalError:
                    continue
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)

        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr
        kept = len(_cache(imm_home))
        assert 0 < kept < len(_inactive(sim))
        assert f"{kept:,} mailboxes fetched before the interruption are kept" in stdout + stderr
        (run,) = _rows(imm_home, "SELECT * FROM sync_runs")
        assert (run["status"], run["fetched"]) == ("cancelled", kept)
        audit = _rows(imm_home, "SELECT result FROM audit_log WHERE operation = 'SYNC' ORDER BY id")
        assert [a["result"] for a in audit] == ["started", "cancelled"]
        truth = _inactive(sim)
        cache = _cache(imm_home)
        for guid, row in cache.items():
            _check_mailbox(row, truth[guid], sim)

        # the next (incremental) sync fetches only what is missing
        sim.exchange.reset_counters()
        sim.config.latency_ms = 0
        result = run_imm("sync", "-q")
        assert result.exit_code == 0, result.stderr
        missing = set(truth) - set(cache)
        assert _stats_calls(sim) == len(missing) + sum(1 for g in missing if truth[g].archive)
        assert set(_cache(imm_home)) == set(truth)


def _after_listing(sim: Simulator, action: Callable[[], None], statistics: int = 0) -> threading.Thread:
    """Run ``action`` once the inactive listing has been answered and ``statistics`` statistics calls were made."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            log = list(sim.exchange.request_log)
            listed = any(  # the inactive listing (the soft-deleted one runs beside it and may answer first)
                e["cmdlet"] == "Get-Mailbox" and e["status"] == 200 and "InactiveMailboxOnly" in (e["parameters"] or {})
                for e in log
            )
            if listed and sum(e["cmdlet"] == "Get-MailboxStatistics" for e in log) >= statistics:
                action()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_mailbox_purged_mid_sync_is_counted_and_the_run_goes_on(tmp_path: Path, imm_home: Path) -> None:
    with make_simulator(tmp_path, mailboxes=120, seed=5, auto_approve_after=0.0, latency_ms=40) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        last = list(_inactive(sim))[-1]  # listed last, so fetched last
        sim.exchange.reset_counters()
        watcher = _after_listing(sim, lambda: sim.exchange.tenant.remove_mailbox(last))

        result = run_imm("sync")

        watcher.join(timeout=5)
        assert result.exit_code == 1, result.stderr
        assert "1 failed" in result.stdout + result.stderr
        assert f"object '{last}' couldn't be found" in result.stderr
        assert "Traceback" not in result.stderr
        cache = _cache(imm_home)
        assert len(cache) == 119 and last not in cache
        run = _rows(imm_home, "SELECT * FROM sync_runs")[0]
        assert (run["status"], run["errors"], run["fetched"]) == ("completed_with_errors", 1, 119)
        audit = _rows(imm_home, "SELECT result, details FROM audit_log WHERE operation = 'SYNC' ORDER BY id")
        assert [a["result"] for a in audit] == ["started", "partial"]
        assert json.loads(audit[1]["details"])["errors"] == 1
        # the next sync no longer lists it and is clean
        again = run_imm("sync", "-q")
        assert again.exit_code == 0, again.stderr
        assert set(_cache(imm_home)) == set(_inactive(sim))


def test_losing_the_sign_in_mid_sync_stops_the_run_and_keeps_what_was_fetched(tmp_path: Path, imm_home: Path) -> None:
    with make_simulator(tmp_path, mailboxes=600, seed=4, auto_approve_after=0.0, latency_ms=10) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        sim.exchange.reset_counters()
        admin = f"admin@{sim.config.tenant_domain}"
        watcher = _after_listing(sim, lambda: sim.identity.revoke_user(admin), statistics=300)

        result = run_imm("sync")

        watcher.join(timeout=5)
        assert result.exit_code == 3, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("Error: ") and "revoked" in result.stderr
        kept = len(_cache(imm_home))
        assert 0 < kept < 600
        (run,) = _rows(imm_home, "SELECT * FROM sync_runs")
        assert (run["status"], run["fetched"], run["errors"]) == ("failed", kept, 0)
        audit = _rows(imm_home, "SELECT result FROM audit_log WHERE operation = 'SYNC' ORDER BY id")
        assert [a["result"] for a in audit] == ["started", "failure"]


def test_once_cancelled_no_queued_mailbox_starts() -> None:
    """Ctrl+C lets the calls in flight finish; the mailboxes queued behind them (two per worker) never start."""
    from imm.services.sync_fetch import fan_out

    started: list[int] = []
    release, cancel = threading.Event(), threading.Event()

    def fetch(item: int) -> int:
        started.append(item)
        release.wait(10)
        return item

    results: list[tuple[int, int]] = []
    consumer = threading.Thread(target=lambda: results.extend(fan_out(fetch, range(100), 2, cancel)))
    consumer.start()
    deadline = time.monotonic() + 10
    while len(started) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    cancel.set()
    time.sleep(0.3)  # the consumer wakes (every 0.2 s) while both workers are still busy
    release.set()
    consumer.join(10)
    assert sorted(started) == [0, 1]
    assert sorted(results) == [(0, 0), (1, 1)]


def test_an_exchange_that_stops_answering_stops_the_run_instead_of_failing_every_mailbox(
    tmp_path: Path, imm_home: Path
) -> None:
    """Each mailbox gets every retry; when mailbox after mailbox still gets no answer, the run stops (exit 1)
    rather than spending those retries on every remaining mailbox, and keeps what it fetched."""
    with make_simulator(tmp_path, mailboxes=200, seed=5, auto_approve_after=0.0, retry_after_seconds=0.001) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        sim.exchange.fail_next("Get-MailboxStatistics", "429", 100_000)  # the listing answers, nothing after it
        sim.exchange.reset_counters()

        result = run_imm("sync", "--concurrency", "2")  # 4 workers: stops after 6 mailboxes in a row

        assert (result.exit_code, result.stdout) == (1, "")
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert errors == [
            "Error: Exchange Online did not answer for 6 mailboxes in a row (last: Get-MailboxStatistics failed: "
            "still throttled by Exchange Online after 11 attempts "
            "(You have reached the maximum number of concurrent requests per tenant. Please wait and try again.))"
        ]
        assert "Hint: check the connection and the service health, then run imm sync again" in result.stderr
        log = [e for e in sim.exchange.request_log if e["cmdlet"] == "Get-MailboxStatistics"]
        asked = {e["parameters"]["Identity"] for e in log}
        assert 6 <= len(asked) <= 6 + 2 * 4  # the ones that failed, and at most those in flight or queued
        assert len(asked) <= 6 + 2 * 4  # the ones that failed, and at most the queued ones in flight
        (run,) = _rows(imm_home, "SELECT * FROM sync_runs")
        assert (run["status"], run["fetched"]) == ("failed", 0)
        audit = _rows(imm_home, "SELECT result, error_message FROM audit_log WHERE operation = 'SYNC' ORDER BY id")
        assert [a["result"] for a in audit] == ["started", "failure"]
        assert audit[1]["error_message"].startswith("Exchange Online did not answer for 6 mailboxes in a row")


def test_an_untrusted_exchange_certificate_fails_at_once_naming_ca_bundle(tmp_path: Path, imm_home: Path) -> None:
    """A certificate the profile's ca_bundle does not vouch for is a setting to fix, not a network fault to retry."""
    import trustme

    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    with make_simulator(tmp_path, mailboxes=20, seed=5, auto_approve_after=0.0) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)  # the token is cached: only Exchange sees the other CA

        result = run_imm("sync", env={"IMM_CA_BUNDLE": str(other_ca)})

        assert (result.exit_code, result.stdout) == (1, "")
        assert result.stderr.splitlines() == [
            "Error: Get-Mailbox failed: the TLS certificate of Exchange Online at 127.0.0.1 is not trusted "
            "(unable to get local issuer certificate)",
            "Hint: if a proxy inspects TLS or you use the simulator, set ca_bundle in the profile to its CA file",
        ]
        assert _cache(imm_home) == {}


RETENTION_ROLE = (
    "Retention Management or View-Only Retention Management (Purview role groups Compliance Administrator, "
    "Records Management)"
)
REFUSED = {  # cmdlet -> the warning sync prints when only that cmdlet is refused (the role from CMDLET_ROLES)
    "Get-RetentionCompliancePolicy": f"Warning: Get-RetentionCompliancePolicy was refused (it needs the "
    f"{RETENTION_ROLE} role): retention policy names and Preservation Locks are unknown (the last known names and "
    "locks are kept; a lock is never shown as absent)",
    "Get-RetentionComplianceRule": f"Warning: Get-RetentionComplianceRule was refused (it needs the {RETENTION_ROLE} "
    "role): retention durations and actions are unknown (the last known are kept)",
    "Get-CaseHoldPolicy": "Warning: Get-CaseHoldPolicy was refused (it needs the Hold (Purview role group eDiscovery "
    "Manager) role): eDiscovery case hold names are unknown (the last known are kept)",
}


def _policies(home: Path) -> dict[str, dict[str, Any]]:
    rows = _rows(home, "SELECT guid, name, kind, locked, retention_days, details FROM policies")
    return {row["guid"]: {**dict(row), "details": json.loads(row["details"])} for row in rows}


def _truth_policies(sim: Simulator) -> dict[str, Any]:
    with sim.exchange.tenant.lock:
        return {p.hex: p for p in sim.exchange.tenant.policies.values()}


def _hold_locks(home: Path, identity: str) -> dict[str, Any]:
    """policy GUID -> (policy name, locked) as `imm holds show -o json` gives them."""
    result = run_imm("holds", "show", identity, "-o", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    return {h["raw"]: (h["policy"], h["locked"]) for h in data["holds"] if h["kind"] != "litigation"}


@pytest.mark.parametrize("refused", sorted(REFUSED))
def test_a_refused_compliance_cmdlet_hides_only_what_it_reads(tmp_path: Path, imm_home: Path, refused: str) -> None:
    """Each compliance read stands alone (issue 17): the real 403 (NUL bytes declared gzip) for one cmdlet is one
    warning naming it and its role; every mailbox is cached, and the names and Preservation Locks the other reads
    gave are kept. Exit 0: a refused compliance read is a warning (README, exit codes)."""
    with make_simulator(tmp_path, mailboxes=120, seed=9, auto_approve_after=0.0) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        sim.exchange.deny_cmdlet(refused)
        result = run_imm("sync", "-q")

        assert (result.exit_code, result.stdout) == (0, ""), result.stderr
        assert [line for line in result.stderr.splitlines() if line.startswith("Warning:")] == [REFUSED[refused]], (
            result.stderr
        )
        assert len(_cache(imm_home)) == len(_inactive(sim))
        truth = _truth_policies(sim)
        cached = _policies(imm_home)
        retention = {g: p for g, p in truth.items() if p.kind == "retention"}
        cases = {g: p for g, p in truth.items() if p.kind != "retention"}
        locked = [g for g, p in retention.items() if p.restrictive]
        assert locked, "the generator makes a Preservation-Locked policy"
        if refused == "Get-RetentionCompliancePolicy":
            # No name and no lock could be read: every retention policy is named by its rule only, lock unknown.
            named = {g: p["name"] for g, p in cached.items() if p["kind"] == "retention"}
            assert set(named) == set(retention) and set(named.values()) == {""}
            assert all(cached[g]["details"]["locked_unknown"] for g in retention)
            assert {g: cached[g]["retention_days"] for g in retention} == {
                g: p.duration_days for g, p in retention.items()
            }
        else:
            assert {g: (cached[g]["name"], bool(cached[g]["locked"])) for g in retention} == {
                g: (p.name, p.restrictive) for g, p in retention.items()
            }
            assert not any(cached[g]["details"]["locked_unknown"] for g in retention)
        if refused == "Get-CaseHoldPolicy":
            assert not any(g in cached for g in cases)
        else:
            assert {g: cached[g]["name"] for g in cases} == {g: p.name for g, p in cases.items()}
        if refused == "Get-RetentionComplianceRule":
            assert all(cached[g]["details"]["duration_unknown"] for g in retention)

        # What `imm holds show` says of a mailbox under the locked policy: locked, or unknown; never "not locked".
        tag = next(p.hold_tag for g, p in retention.items() if g == locked[0])
        with sim.exchange.tenant.lock:
            holder = next(m.exchange_guid for m in _inactive(sim).values() if tag in m.in_place_holds)
        shown = _hold_locks(imm_home, holder)[tag]
        report = run_imm("report", "holds", "-o", "json")
        assert report.exit_code == 0, report.stderr
        (section,) = [s for s in json.loads(report.stdout)["sections"] if s["name"] == "policies"]
        dashed = str(uuid.UUID(locked[0]))
        (row,) = [r for r in section["rows"] if r["policy_guid"] == dashed]
        if refused == "Get-RetentionCompliancePolicy":
            assert shown == (None, None)
            assert (row["policy_name"], row["preservation_lock"]) == ("(policy name unknown)", "unknown")
        else:
            assert shown == (retention[locked[0]].name, True)
            assert (row["policy_name"], row["preservation_lock"]) == (retention[locked[0]].name, "yes")


def test_a_refused_policy_read_keeps_the_last_known_names_and_locks(tmp_path: Path, imm_home: Path) -> None:
    """After a sync that could read everything, one where Get-RetentionCompliancePolicy is refused keeps the names
    and every Preservation Lock (it cannot be turned off); a lock seen absent before is unknown now, not absent."""
    with make_simulator(tmp_path, mailboxes=120, seed=9, auto_approve_after=0.0) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        assert run_imm("sync", "-q").exit_code == 0
        before = _policies(imm_home)
        sim.exchange.deny_cmdlet("Get-RetentionCompliancePolicy")
        result = run_imm("sync", "-q", "--full")

        assert result.exit_code == 0, result.stderr
        assert REFUSED["Get-RetentionCompliancePolicy"] in result.stderr.splitlines()
        after = _policies(imm_home)
        assert {g: p["name"] for g, p in after.items()} == {g: p["name"] for g, p in before.items()}
        for guid, policy in after.items():
            if policy["kind"] != "retention":
                assert not policy["details"]["locked_unknown"]
            elif before[guid]["locked"]:
                assert (policy["locked"], policy["details"]["locked_unknown"]) == (1, False)
            else:
                assert policy["details"]["locked_unknown"] is True


def test_without_the_compliance_role_sync_names_each_refused_read_and_goes_on(tmp_path: Path, imm_home: Path) -> None:
    with make_simulator(tmp_path, mailboxes=60, seed=9, auto_approve_after=0.0) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        sim.exchange.deny_role(f"admin@{sim.config.tenant_domain}", "compliance")
        result = run_imm("sync")

        assert result.exit_code == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
        assert warnings == [REFUSED[c] for c in REFUSED] + [
            f"Warning: Get-AppRetentionCompliancePolicy was refused (it needs the {RETENTION_ROLE} role): app "
            "retention policy names and Preservation Locks are unknown (the last known are kept)",
            f"Warning: Get-AppRetentionComplianceRule was refused (it needs the {RETENTION_ROLE} role): app retention "
            "durations and actions are unknown (the last known are kept)",
        ]
        assert len(_cache(imm_home)) == 60
        assert _rows(imm_home, "SELECT COUNT(*) AS n FROM policies")[0]["n"] == 0


def test_company_and_department_from_a_mapping_csv(tmp_path: Path, imm_home: Path) -> None:
    """Mailboxes whose directory fields and custom attributes are empty get them from the HR export."""
    with make_simulator(tmp_path, mailboxes=200, seed=2, auto_approve_after=0.0) as sim:
        truth = _inactive(sim)
        bare = [m for m in truth.values() if _expected_org(m) == (None, None)]
        assert bare, "the generator leaves some mailboxes without company and department"
        mapping = tmp_path / "hr.csv"
        lines = ["address,company,department"]
        lines += [f"{m.primary_smtp},Mapped Co {i},Dept {i}" for i, m in enumerate(bare)]
        mapping.write_text("\n".join(lines) + "\n", encoding="utf-8")
        config = imm_home / "config" / "config.toml"
        write_profile(
            config, "sim", {**sim.profile_values(), "org": {**ORG, "mapping_file": str(mapping)}}, make_default=True
        )
        _login(sim, imm_home)
        assert run_imm("sync", "-q").exit_code == 0
        cache = _cache(imm_home)
        for i, mbx in enumerate(bare):
            row = cache[mbx.exchange_guid]
            assert (row["operating_company"], row["department"]) == (f"Mapped Co {i}", f"Dept {i}")

        mapping.write_text("address,company\nnot-an-address,X\n", encoding="utf-8")
        bad = run_imm("sync")
        assert bad.exit_code == 2
        assert "hr.csv" in bad.stderr or "line 2" in bad.stderr
        assert "Traceback" not in bad.stderr


def test_sync_finds_addresses_active_recipients_use_so_recovery_is_refused_before_anyone_tries(
    tmp_path: Path, imm_home: Path
) -> None:
    """New-Mailbox.md: -MicrosoftOnlineServicesID (the UPN, which becomes the primary address) and -Name must be
    unique; microsoft-365-docs#2814. A full sync checks every mailbox against one listing of the active recipients,
    an incremental one asks per changed mailbox (Get-Recipient -Identity without -IncludeSoftDeletedRecipients)."""
    with make_simulator(tmp_path, mailboxes=120, seed=7, auto_approve_after=0.0) as sim:
        tenant = sim.exchange.tenant
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        result = run_imm("sync")
        assert result.exit_code == 0, result.stderr

        twin_of = tenant.mailboxes[tenant.special["shared_smtp_inactive"]]
        twin = tenant.mailboxes[tenant.special["shared_smtp_active"]]
        cache = _cache(imm_home)
        row = cache[twin_of.exchange_guid]
        assert (row["smtp_conflict"], row["upn_conflict"]) == (twin.name, twin.name)
        assert row["recovery_eligible"] == 0
        blockers = json.loads(row["recovery_blockers"])
        assert f"smtp-conflict: The primary address {twin_of.primary_smtp} is used by the active recipient " \
            f"'{twin.name}' (found at sync)" in blockers  # fmt: skip
        assert any(b.startswith("upn-conflict: ") for b in blockers)
        # Ground truth: no other inactive mailbox shares an address with an active one.
        taken = {a.partition(":")[2].lower() for m in tenant.actives() for a in m.email_addresses(tenant.tenant_domain)}
        for guid, mbx in _strictly_inactive(sim).items():
            expected = mbx.primary_smtp.lower() in taken
            assert bool(cache[guid]["smtp_conflict"]) is expected, guid
        not_recoverable = run_imm("list", "--not-recoverable", "-o", "json", "--query", "[].identity")
        assert twin_of.exchange_guid in json.loads(not_recoverable.stdout)

        # Made outside imm after the sync: an active mailbox takes another inactive mailbox's address as a proxy.
        victim = next(
            m
            for g, m in _strictly_inactive(sim).items()
            if not cache[g]["smtp_conflict"] and cache[g]["recovery_eligible"]
        )
        holder = tenant.actives()[5]
        tenant.update(holder.exchange_guid, extra_addresses=[*holder.extra_addresses, f"smtp:{victim.primary_smtp}"])
        tenant.touch(victim.exchange_guid)
        incremental = run_imm("sync")
        assert incremental.exit_code == 0, incremental.stderr
        probes = [
            e["parameters"]
            for e in sim.exchange.request_log
            if e["cmdlet"] == "Get-Recipient" and (e["parameters"] or {}).get("Identity") == victim.primary_smtp
        ]
        assert probes == [{"Identity": victim.primary_smtp}]  # active recipients only: no -IncludeSoftDeletedRecipients
        after = _cache(imm_home)[victim.exchange_guid]
        assert after["smtp_conflict"] == holder.name
        assert after["recovery_eligible"] == 0
        assert after["upn_conflict"] == ("" if victim.upn.lower() != victim.primary_smtp.lower() else holder.name)


def test_the_former_licence_comes_from_persisted_capabilities_when_the_mailbox_plan_is_empty(
    tmp_path: Path, imm_home: Path
) -> None:
    """filter-properties article: PersistedCapabilities (Get-Mailbox) holds the Capability enumeration's SKU values;
    "Unknown" only when neither MailboxPlan nor PersistedCapabilities says."""
    with make_simulator(tmp_path, mailboxes=60, seed=4, auto_approve_after=0.0) as sim:
        tenant = sim.exchange.tenant
        first, second = list(_strictly_inactive(sim))[:2]
        tenant.update(first, mailbox_plan="", capabilities=["BPOS_S_Standard", "BPOS_S_ArchiveAddOn"])
        tenant.update(second, mailbox_plan="", capabilities=[])
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        assert run_imm("sync", "-q").exit_code == 0
        cache = _cache(imm_home)
        assert cache[first]["license_type"] == "Exchange Online Plan 1"
        assert cache[second]["license_type"] == "Unknown"
        shown = json.loads(run_imm("show", first, "-o", "json").stdout)
        assert shown["license_type"] == "Exchange Online Plan 1"


def test_a_leaver_retention_schedule_keeps_mailboxes_out_of_releasable_and_plans_the_ended_ones(
    tmp_path: Path, imm_home: Path
) -> None:
    """leaver_retention_days counts from WhenSoftDeleted; within it a mailbox is never releasable; once it has ended
    and only the schedule's holds (Litigation Hold, unlocked retention policies) remain, bulk plan releases them."""
    days = 1500
    with make_simulator(tmp_path, mailboxes=200, seed=7, auto_approve_after=0.0) as sim:
        tenant = sim.exchange.tenant
        _write_profile(sim, imm_home, leaver_retention_days=days)
        _login(sim, imm_home)
        assert run_imm("sync", "-q").exit_code == 0
        now = tenant.clock()
        within = {g for g, m in _strictly_inactive(sim).items() if (m.when_soft_deleted or now) + days * 86400 > now}
        assert within
        releasable = json.loads(run_imm("list", "--releasable", "-o", "json", "--query", "[].identity").stdout)
        assert not within & set(releasable)
        row = _cache(imm_home)[next(iter(within))]
        assert row["leaver_retention_ends"] is not None and row["leaver_retention_ended"] == 0

        plan = tmp_path / "leavers.csv"
        result = run_imm("bulk", "plan", "--leaver-retention-ended", "--out", str(plan))
        assert result.exit_code == 0, result.stderr
        planned = [line.split(",")[1] for line in plan.read_text(encoding="utf-8").splitlines()[1:]]
        assert planned
        policies = {p.hex: p for p in tenant.policies.values()}
        for guid in planned:
            mbx = tenant.mailboxes[guid]
            assert (mbx.when_soft_deleted or now) + days * 86400 <= now, guid
            assert not (mbx.delay_hold or mbx.delay_release_hold), guid
            for reason in tenant.hold_reasons(mbx):
                kind = hold_kind(reason)
                assert kind in ("litigation", "retention-policy", "skype-policy", "org-policy"), (guid, reason)
                tag = reason.removeprefix("org:")
                if kind != "litigation":
                    assert not policies[tag[3:35]].restrictive, (guid, reason)
        cased = [
            g for g, m in _strictly_inactive(sim).items()
            if (m.when_soft_deleted or now) + days * 86400 <= now
            and any(h.lower().startswith("unih") for h in m.in_place_holds)
        ]  # fmt: skip
        assert not set(cased) & set(planned)  # an eDiscovery case hold is not the schedule's

    with make_simulator(tmp_path / "plain", mailboxes=20, seed=7, auto_approve_after=0.0) as sim:
        _write_profile(sim, imm_home, leaver_retention_days=0)
        refused = run_imm("bulk", "plan", "--leaver-retention-ended")
        assert refused.exit_code == 2
        assert "has no leaver retention schedule" in refused.stderr


def test_sync_writes_its_record_as_json_or_csv_and_the_summary_on_stderr(tmp_path: Path, imm_home: Path) -> None:
    with make_simulator(tmp_path, mailboxes=40, seed=3, auto_approve_after=0.0) as sim:
        _write_profile(sim, imm_home)
        _login(sim, imm_home)
        first = run_imm("sync", "-o", "json")
        assert first.exit_code == 0, first.stderr
        record = json.loads(first.stdout)
        expected = len(_inactive(sim))
        assert (record["status"], record["listed"], record["fetched"], record["errors"]) == (
            "completed",
            expected,
            expected,
            0,
        )
        assert record["failures"] == [] and isinstance(record["run_id"], int)
        assert first.stderr.splitlines()[-1].startswith("Synced: ")  # the summary, not on stdout
        second = run_imm("sync", "-o", "csv")
        assert second.exit_code == 0, second.stderr
        header, row = second.stdout.splitlines()
        assert header.split(",")[:4] == ["mode", "status", "listed", "soft_deleted"]
        values = dict(zip(header.split(","), row.split(","), strict=False))
        assert (values["mode"], values["unchanged"], values["fetched"]) == ("incremental", str(expected), "0")
        picked = run_imm("sync", "--query", "listed")
        assert (picked.exit_code, picked.stdout) == (0, f"{expected}\n")
