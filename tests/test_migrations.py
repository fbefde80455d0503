"""Numbered migrations: from a blank database, from an older one, lazily registered ones, newer and failing ones."""

from __future__ import annotations

import sqlite3
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from factories import make_mailbox
from imm.data import migrations
from imm.data.database import DatabaseManager
from imm.data.migrations import (
    CONFLICT_COLUMNS,
    LEAVER_COLUMNS,
    LIFECYCLE_COLUMNS,
    MIGRATIONS,
    Migration,
    NewerSchemaError,
    migrate,
    run_script,
)

AVAILABLE = [m.name for m in MIGRATIONS if m.available()]


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def recorded(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM _imm_migrations ORDER BY rowid")]


def schema_names(conn: sqlite3.Connection, kind: str) -> set[str]:
    return {
        r[0]
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%'", (kind,))
    }


def test_registry_names_are_fixed() -> None:
    assert [m.name for m in MIGRATIONS] == [
        "0001_cache",
        "0002_audit",
        "0003_jobs",
        "0004_audit_keys",
        "0005_audit_export_state",
        "0006_lifecycle",
        "0007_conflicts",
        "0008_restore_consistency",
        "0009_leaver_schedule",
        "0010_job_leases",
    ]
    assert MIGRATIONS[1].target == "imm.data.audit_schema:migrate"
    assert MIGRATIONS[2].target == "imm.data.jobs_schema:migrate"
    assert AVAILABLE[:2] == ["0001_cache", "0002_audit"]


def test_blank_database_gets_every_available_migration(tmp_path: Path) -> None:
    db = DatabaseManager(tmp_path / "imm.db")
    db.initialize()
    conn = db.get_connection()
    assert recorded(conn) == AVAILABLE
    applied_at = [r[0] for r in conn.execute("SELECT applied_at FROM _imm_migrations")]
    assert all(datetime.fromisoformat(t).tzinfo is not None for t in applied_at)
    db.initialize()  # a second open applies nothing
    assert recorded(conn) == AVAILABLE
    db.close()


def test_0001_cache_schema(tmp_path: Path) -> None:
    conn = connect(tmp_path / "imm.db")
    migrate(conn, MIGRATIONS[:1])
    tables = schema_names(conn, "table")
    assert {
        "_imm_migrations",
        "_imm_search_guard",
        "inactive_mailboxes",
        "inactive_mailboxes_fts",
        "sync_runs",
        "org_holds",
        "policies",
        "meta",
    } <= tables
    assert schema_names(conn, "view") == {"inactive_mailboxes_search"}
    assert schema_names(conn, "trigger") == {
        "inactive_mailboxes_fts_insert",
        "inactive_mailboxes_fts_update",
        "inactive_mailboxes_fts_delete",
    }
    assert schema_names(conn, "index") == {
        "idx_mailboxes_smtp",
        "idx_mailboxes_upn",
        "idx_mailboxes_display_name",
        "idx_mailboxes_company",
        "idx_sync_runs_started",
    }
    fts_sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'inactive_mailboxes_fts'").fetchone()[0]
    assert "tokenize='trigram'" in fts_sql

    def columns(table: str) -> list[tuple[str, str, int]]:
        return [(r[1], r[2], r[5]) for r in conn.execute(f"PRAGMA table_info({table})")]

    assert columns("sync_runs") == [
        ("id", "INTEGER", 1),
        ("started_at", "TEXT", 0),
        ("finished_at", "TEXT", 0),
        ("mode", "TEXT", 0),
        ("status", "TEXT", 0),
        ("fetched", "INTEGER", 0),
        ("changed", "INTEGER", 0),
        ("removed", "INTEGER", 0),
        ("errors", "INTEGER", 0),
        ("details", "TEXT", 0),
    ]
    assert columns("org_holds") == [("value", "TEXT", 1), ("fetched_at", "TEXT", 0)]
    assert columns("policies") == [
        ("guid", "TEXT", 1),
        ("name", "TEXT", 0),
        ("kind", "TEXT", 0),
        ("locked", "INTEGER", 0),
        ("enabled", "INTEGER", 0),
        ("retention_days", "INTEGER", 0),
        ("retention_action", "TEXT", 0),
        ("scope_all", "INTEGER", 0),
        ("details", "TEXT", 0),
        ("fetched_at", "TEXT", 0),
    ]
    assert columns("meta") == [("key", "TEXT", 1), ("value", "TEXT", 0)]
    mailbox_columns = columns("inactive_mailboxes")
    assert mailbox_columns[0] == ("identity", "TEXT", 1)
    # 0006 and 0007 add the rest
    assert len(mailbox_columns) + len(LIFECYCLE_COLUMNS) + len(CONFLICT_COLUMNS) + len(LEAVER_COLUMNS) == len(
        make_mailbox().__dict__
    )
    conn.close()


def test_0006_adds_sizes_and_lifecycle_and_makes_the_next_sync_read_every_mailbox_again(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db")
    migrate(conn, MIGRATIONS[:5])
    conn.execute(
        "INSERT INTO inactive_mailboxes(identity, size_mb, item_count, when_changed) "
        "VALUES ('a', 1636.0, 12400, '2026-11-01T10:00:00+00:00')"
    )
    conn.commit()
    assert migrate(conn) == [
        "0006_lifecycle",
        "0007_conflicts",
        "0008_restore_consistency",
        "0009_leaver_schedule",
        "0010_job_leases",
    ]
    row = conn.execute(
        "SELECT size_mb, when_changed, recoverable_items_mb, lifecycle_state, is_inactive_mailbox, purge_on "
        "FROM inactive_mailboxes"
    ).fetchone()
    # The old size_mb summed items and Recoverable Items: WhenChanged is cleared so sync reads the statistics again.
    assert row == (1636.0, None, 0, "inactive", 1, None)
    names = {r[1] for r in conn.execute("PRAGMA table_info(inactive_mailboxes)")}
    assert names == set(make_mailbox().__dict__)
    conn.close()


def test_0007_adds_the_conflicts_found_at_sync_empty(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db")
    migrate(conn, MIGRATIONS[:6])
    conn.execute("INSERT INTO inactive_mailboxes(identity) VALUES ('a')")
    conn.commit()
    assert migrate(conn) == ["0007_conflicts", "0008_restore_consistency", "0009_leaver_schedule", "0010_job_leases"]
    assert conn.execute("SELECT smtp_conflict, upn_conflict FROM inactive_mailboxes").fetchone() == ("", "")
    conn.close()


def test_older_database_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "imm.db"
    conn = connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    assert migrate(conn, MIGRATIONS[:1]) == ["0001_cache"]  # an "older" imm knew only 0001
    conn.execute("INSERT INTO meta VALUES ('kept', 'yes')")
    conn.close()
    db = DatabaseManager(path)
    db.initialize()
    db.upsert_mailbox(mailbox := make_mailbox(display_name="Old Data"))
    conn2 = db.get_connection()
    assert recorded(conn2) == AVAILABLE
    assert "audit_log" in schema_names(conn2, "table")
    assert conn2.execute("SELECT value FROM meta WHERE key = 'kept'").fetchone()[0] == "yes"
    assert db.find_mailbox("Old Data") == mailbox
    db.close()


def test_lazy_migration_waits_for_its_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = "imm_test_lazy_schema_mod"
    registry = (*MIGRATIONS[:1], Migration("0009_lazy", f"{module}:migrate"))
    conn = connect(tmp_path / "imm.db")
    assert not registry[1].available()
    assert migrate(conn, registry) == ["0001_cache"]
    assert recorded(conn) == ["0001_cache"]  # skipped, not recorded
    (tmp_path / f"{module}.py").write_text(
        "def migrate(conn):\n    conn.execute('CREATE TABLE lazy_table (x INTEGER)')\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    assert migrate(conn, registry) == ["0009_lazy"]
    assert recorded(conn) == ["0001_cache", "0009_lazy"]
    assert "lazy_table" in schema_names(conn, "table")
    conn.close()


def test_lazy_migration_in_a_missing_package_is_unavailable() -> None:
    assert not Migration("x", "imm_no_such_package.sub:migrate").available()
    assert Migration("y", "imm.data.audit_schema:migrate").available()


def test_a_failing_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("migration bug")

    registry = (*MIGRATIONS[:1], Migration("0010_broken", half_then_fail))
    conn = connect(tmp_path / "imm.db")
    with pytest.raises(RuntimeError, match="migration bug"):
        migrate(conn, registry)
    assert recorded(conn) == ["0001_cache"]  # the first committed on its own
    assert "half_done" not in schema_names(conn, "table")
    assert not conn.in_transaction
    conn.close()


def test_newer_database_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "imm.db")
    migrate(conn, MIGRATIONS[:1])
    conn.execute("INSERT INTO _imm_migrations VALUES ('0042_from_the_future', '2031-01-01T00:00:00+00:00')")
    with pytest.raises(NewerSchemaError) as info:
        migrations.pending(conn)
    assert info.value.unknown == ["0042_from_the_future"]
    conn.close()


def test_concurrent_opens_apply_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "imm.db"
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_it() -> None:
        db = DatabaseManager(path, busy_timeout=10)
        try:
            barrier.wait()
            db.initialize()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    conn = connect(path)
    assert recorded(conn) == AVAILABLE
    conn.close()


def test_run_script_splits_triggers_and_rejects_a_partial_statement() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("BEGIN")
    run_script(
        conn,
        "-- a comment\nCREATE TABLE t (x);\n\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n",
    )
    assert conn.in_transaction  # never commits the caller's transaction
    conn.execute("ROLLBACK")
    with pytest.raises(ValueError, match="incomplete SQL statement"):
        run_script(conn, "CREATE TABLE u (x")


def test_applied_at_uses_the_clock(tmp_path: Path) -> None:
    conn = connect(tmp_path / "imm.db")
    migrate(conn, MIGRATIONS[:1], clock=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert conn.execute("SELECT applied_at FROM _imm_migrations").fetchone()[0] == "2026-01-02T03:04:05.000000+00:00"
    conn.close()
