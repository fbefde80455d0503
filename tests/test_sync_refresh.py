"""Incremental sync re-reads what WhenChanged does not announce (issue 17): statistics shrink when the Managed
Folder Assistant purges items, and Company/Department change in the directory, without WhenChanged moving. Each
run re-reads the mailboxes last read longer ago than ``sync_refresh_days`` (default 7), oldest first, at most a
1/7 slice of the cache, so every run stays short and a week of daily syncs re-reads every mailbox."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import make_simulator, run_imm
from imm.config import write_profile
from imm.simulator.model import INACTIVE

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


def _query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(sql, params).fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def _stats_calls(sim: object) -> int:
    return sum(e["cmdlet"] == "Get-MailboxStatistics" for e in sim.exchange.request_log)  # type: ignore[attr-defined]


def test_incremental_sync_rereads_a_slice_of_what_is_older_than_a_week(tmp_path: Path, imm_home: Path) -> None:
    with make_simulator(tmp_path, mailboxes=70, seed=11, auto_approve_after=0.0) as sim:
        write_profile(imm_home / "config" / "config.toml", "sim", sim.profile_values(), make_default=True)
        assert run_imm("login").exit_code == 0
        assert run_imm("sync", "-q").exit_code == 0
        db = imm_home / "data" / "sim.db"
        cached = sorted(str(r[0]) for r in _query(db, "SELECT identity FROM inactive_mailboxes"))
        slice_size = math.ceil(len(cached) / 7)

        # Nothing older than a week: an incremental sync reads no statistics.
        sim.exchange.reset_counters()
        assert run_imm("sync", "-q").exit_code == 0
        assert _stats_calls(sim) == 0

        # In the tenant, items are purged and the directory moves everyone; WhenChanged stays where it was.
        tenant = sim.exchange.tenant
        with tenant.lock:
            inactive = {g: m for g, m in tenant.mailboxes.items() if m.state == INACTIVE and g in cached}
            for m in inactive.values():
                m.total_bytes = 3 * MIB
                m.company = "Purged Co"
        # The cache was read eight days ago.
        old = (datetime.now(UTC) - timedelta(days=8)).isoformat(timespec="microseconds")
        _query(db, "UPDATE inactive_mailboxes SET last_updated = ?", (old,))

        seen: set[str] = set()
        for run in range(7):
            sim.exchange.reset_counters()
            result = run_imm("sync")
            assert result.exit_code == 0, result.stderr
            fresh = {
                str(r[0]) for r in _query(db, "SELECT identity FROM inactive_mailboxes WHERE last_updated > ?", (old,))
            }
            new = fresh - seen
            expected = min(slice_size, len(cached) - len(seen))
            assert len(new) == expected, run
            assert new == set(sorted(set(cached) - seen)[:expected])  # oldest first, then by identity
            with tenant.lock:
                archives = sum(1 for g in new if tenant.mailboxes[g].archive)
            assert _stats_calls(sim) == expected + archives
            assert f"({expected:,} re-read as older than the refresh age)" in result.stderr + result.stdout
            seen |= new
            marks = ",".join("?" * len(new))
            rows = _query(
                db,
                f"SELECT identity, size_mb, operating_company FROM inactive_mailboxes WHERE identity IN ({marks})",
                tuple(new),
            )
            assert {r[0]: (r[1], r[2]) for r in rows if r[0] in inactive} == {
                g: (3.0, "Purged Co") for g in new if g in inactive
            }
        assert seen == set(cached)  # a week of daily syncs re-read every mailbox

        # sync_refresh_days = 0 turns it off.
        write_profile(
            imm_home / "config" / "config.toml",
            "sim",
            {**sim.profile_values(), "sync_refresh_days": 0},
            make_default=True,
        )
        _query(db, "UPDATE inactive_mailboxes SET last_updated = ?", (old,))
        sim.exchange.reset_counters()
        assert run_imm("sync", "-q").exit_code == 0
        assert _stats_calls(sim) == 0
