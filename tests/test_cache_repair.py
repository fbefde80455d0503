"""A damaged store found and repaired without losing evidence (issue 17): `imm cache check` finds a corrupted page,
`imm sync` refuses to write to it, and `imm cache rebuild` keeps every audit row (verify passes), brings the
inventory back and keeps the damaged file. Real imm processes, a real SQLite file damaged on disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import make_simulator, run_imm
from imm.config import write_profile

pytestmark = pytest.mark.slow


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _corrupt_a_page_of(db: Path, table: str) -> int:
    """Overwrite one b-tree page of ``table`` with bytes that are no page (as a failing disk or a stray write
    would): a leaf page when the table has one, else its root. Returns the page number."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        leaves = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno", (table,)
        ).fetchall()
        page = (
            leaves[len(leaves) // 2][0]
            if leaves
            else conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        )
    finally:
        conn.close()
    with open(db, "r+b") as handle:
        handle.seek((page - 1) * page_size)
        handle.write(b"\x0d\xff\xff\xff" + b"\xa5" * (page_size - 4))
    return int(page)


def _audit_rows(db: Path) -> list[tuple[object, ...]]:
    return _query(db, "SELECT id, operation, result, row_hash FROM audit_log ORDER BY id")


def test_a_corrupted_page_is_found_and_the_rebuild_keeps_every_audit_row(tmp_path: Path, imm_home: Path) -> None:
    with make_simulator(tmp_path, mailboxes=400, seed=7, auto_approve_after=0.0) as sim:
        write_profile(imm_home / "config" / "config.toml", "sim", sim.profile_values(), make_default=True)
        assert run_imm("login").exit_code == 0
        assert run_imm("sync", "-q").exit_code == 0
        db = imm_home / "data" / "sim.db"
        listed = {str(r[0]) for r in _query(db, "SELECT identity FROM inactive_mailboxes")}
        assert len(listed) >= 400
        assert run_imm("cache", "check").exit_code == 0
        before = _audit_rows(db)
        assert before

        _corrupt_a_page_of(db, "inactive_mailboxes")

        checked = run_imm("cache", "check")
        assert (checked.exit_code, checked.stdout) == (1, "")
        errors = [line for line in checked.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and errors[0].startswith(f"Error: the store {db} is damaged: "), checked.stderr
        assert "(in the pages of table inactive_mailboxes)" in errors[0], checked.stderr
        assert checked.stderr.splitlines()[-1] == (
            "Hint: run `imm cache rebuild`: the audit log and bulk jobs move into a fresh file, the inventory is "
            "synced again, and the damaged file is kept"
        )

        synced = run_imm("sync", "-q")
        assert synced.exit_code == 1
        assert synced.stderr.startswith(f"Error: the store {db} is damaged ("), synced.stderr
        assert "sync wrote nothing" in synced.stderr
        runs = _query(db, "SELECT id, status FROM sync_runs")
        # The audit pages are intact: the session's sign-in rows are added, no SYNC and no run row.
        assert [r[1] for r in _audit_rows(db)[len(before) :] if r[1] == "SYNC"] == []
        assert _query(db, "SELECT id, status FROM sync_runs") == runs == [(1, "completed")]
        before = _audit_rows(db)

        rebuilt = run_imm("cache", "rebuild", "--yes")
        assert rebuilt.exit_code == 0, rebuilt.stderr
        assert "audit rows verified; the damaged file is kept as" in rebuilt.stderr
        damaged = sorted(db.parent.glob("sim.db.damaged-*"))
        assert [p.name for p in damaged if not p.name.endswith(("-wal", "-shm"))] == [damaged[0].name]

        after = _audit_rows(db)
        assert after[: len(before)] == before  # every row, unchanged, in its place
        added = [(op, result) for _, op, result, _ in after[len(before) :]]
        assert added[0] == ("CACHE_REBUILD", "success")
        assert ("SYNC", "success") in added
        assert run_imm("audit", "verify").exit_code == 0
        assert run_imm("cache", "check").exit_code == 0
        assert {str(r[0]) for r in _query(db, "SELECT identity FROM inactive_mailboxes")} == listed


def test_a_rebuild_that_cannot_read_audit_rows_replaces_nothing(tmp_path: Path, imm_home: Path) -> None:
    with make_simulator(tmp_path, mailboxes=30, seed=7, auto_approve_after=0.0) as sim:
        write_profile(imm_home / "config" / "config.toml", "sim", sim.profile_values(), make_default=True)
        assert run_imm("login").exit_code == 0
        assert run_imm("sync", "-q").exit_code == 0
        db = imm_home / "data" / "sim.db"
        _corrupt_a_page_of(db, "audit_log")
        damaged_bytes = db.read_bytes()

        rebuilt = run_imm("cache", "rebuild", "--yes")
        assert rebuilt.exit_code == 1
        assert rebuilt.stderr.startswith(
            f"Error: the store {db} is too damaged to rebuild without loss: rows that cannot be read ("
        ), rebuilt.stderr
        assert "of audit_log" in rebuilt.stderr
        assert db.read_bytes() == damaged_bytes
        assert sorted(p.name for p in db.parent.iterdir() if ".rebuild-" in p.name or ".damaged-" in p.name) == []
