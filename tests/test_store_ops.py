"""Operating a store (issue 16): `imm store check` on both stores, `imm audit prune` only as the team store's owner.

The real `imm` process against a real SQLite file and a real PostgreSQL database (tests/pgserver.py); the roles are
real PostgreSQL roles with the GRANTs `imm store grants --apply` gives them, so every refusal is the server's own.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import run_imm
from imm.data.audit_logger import AuditLogger, OperationType
from imm.data.database import DatabaseManager
from imm.data.migrations import MIGRATIONS
from test_cache_repair import _corrupt_a_page_of

EXPECTED = MIGRATIONS[-1].name


def store_args(target: str) -> tuple[list[str], dict[str, str]]:
    """How a command names the store: --db for an SQLite file, IMM_STORE for a team store."""
    if target.startswith("postgresql://"):
        return [], {"IMM_STORE": target}
    return ["--db", target], {}


def check(target: str) -> tuple[int, dict[str, Any]]:
    args, env = store_args(target)
    result = run_imm("store", "check", "-o", "json", *args, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return result.exit_code, json.loads(result.stdout)


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def detail(report: dict[str, Any], name: str) -> str:
    return str(next(c["detail"] for c in report["checks"] if c["name"] == name))


def opened(target: str) -> None:
    db = DatabaseManager(target)
    db.initialize()
    db.close()


def record_migration(target: str, name: str) -> None:
    db = DatabaseManager(target)
    try:
        with db.transaction() as conn:
            conn.execute("INSERT INTO _imm_migrations (name, applied_at) VALUES (?, ?)", (name, "2030-01-01"))
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------- store check
def test_store_check_passes_on_a_fresh_store_and_says_what_it_checked(store_target: str) -> None:
    opened(store_target)
    code, report = check(store_target)
    assert code == 0, report
    assert (report["ok"], report["schema"], report["expected_schema"]) == (True, EXPECTED, EXPECTED)
    assert detail(report, "schema") == f"{EXPECTED} ({len(MIGRATIONS)} migrations), as this imm expects"
    if report["dialect"] == "sqlite":
        assert statuses(report) == {"file": "ok", "schema": "ok", "integrity": "ok"}
        assert detail(report, "file") == f"{store_target} (0.2 MiB, mode 0600, journal wal)"
        assert detail(report, "integrity") == "integrity_check: ok (every page and index)"
    else:  # the test cluster's own superuser: allowed, with a warning
        assert statuses(report) == {
            "connection": "ok",
            "schema": "ok",
            "role": "warning",
            "grants": "ok",
            "append-only": "ok",
            "pg_trgm": "ok",
        }
        assert report["role"] == "superuser"
        assert detail(report, "connection").startswith("connected as postgres to database t_")
        assert detail(report, "pg_trgm").startswith("pg_trgm 1.")


def test_store_check_refuses_a_store_of_a_newer_imm(store_target: str) -> None:
    opened(store_target)
    record_migration(store_target, "9999_future")
    code, report = check(store_target)
    assert code == 1
    assert statuses(report)["schema"] == "failed"
    assert report["schema"] == "9999_future"
    assert detail(report, "schema") == (
        f"created by a newer imm (unknown migrations: 9999_future); this imm expects {EXPECTED}"
    )
    table = run_imm("store", "check", *store_args(store_target)[0], env=store_args(store_target)[1])
    assert table.exit_code == 1
    assert "  FAIL  schema" in table.stdout
    assert table.stdout.rstrip().endswith("1 check failed.")


def test_store_check_of_a_missing_file_fails_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none" / "imm.db"
    code, report = check(str(path))
    assert code == 1
    assert statuses(report) == {"file": "failed", "schema": "skipped", "integrity": "skipped"}
    assert detail(report, "file") == f"{path} does not exist"
    assert not path.parent.exists()


def test_store_check_names_a_damaged_page(tmp_path: Path) -> None:
    path = tmp_path / "imm.db"
    db = DatabaseManager(path)
    db.initialize()
    audit = AuditLogger(db, tenant="t", user="a@contoso.com")
    for n in range(400):
        audit.log_operation(OperationType.SYNC, None, {"n": n, "pad": "x" * 200}, "success")
    db.close()
    _corrupt_a_page_of(path, "audit_log")
    code, report = check(str(path))
    assert code == 1
    assert statuses(report)["integrity"] == "failed"
    assert detail(report, "integrity").startswith("integrity_check: ")
    assert "imm cache rebuild" in next(c["hint"] for c in report["checks"] if c["name"] == "integrity")


def test_store_check_of_an_unreachable_team_store_is_one_failed_check(pg_cluster: Any) -> None:
    url = pg_cluster.url("no_such_database")
    code, report = check(url)
    assert code == 1
    assert statuses(report) == {
        "connection": "failed",
        "schema": "skipped",
        "role": "skipped",
        "grants": "skipped",
        "append-only": "skipped",
        "pg_trgm": "skipped",
    }
    assert 'database "no_such_database" does not exist' in detail(report, "connection")


# ------------------------------------------------------------------------------------- the two roles of a team store
@pytest.fixture
def team(pg_cluster: Any) -> dict[str, str]:
    """A migrated team store with an owner and an operator role set up by `imm store grants --apply`; an audit log
    whose first four rows are 800 days old. Returns the URLs of each role."""
    suffix = uuid.uuid4().hex[:8]
    owner, operator = f"own_{suffix}", f"op_{suffix}"
    for role in (owner, operator):
        pg_cluster.sql(f"CREATE ROLE {role} LOGIN")
    url = pg_cluster.new_database()
    db = DatabaseManager(url)
    now = datetime.now(UTC)
    moments = iter([now - timedelta(days=800, seconds=-n) for n in range(4)] + [now] * 2)
    audit = AuditLogger(db, tenant="t", user="officer@contoso.com", clock=lambda: next(moments))
    for n in range(4):
        audit.log_operation(OperationType.SYNC, None, {"n": n}, "success")
    audit.log_operation(OperationType.REPORT, None, {"kind": "costs"}, "success")
    db.close()
    applied = run_imm("store", "grants", "--owner", owner, "--operator", operator, "--apply", env={"IMM_STORE": url})
    assert applied.exit_code == 0, applied.stderr
    database = url.split("@/", 1)[1].split("?", 1)[0]
    return {
        "owner": pg_cluster.url(database, user=owner),
        "operator": pg_cluster.url(database, user=operator),
        "owner_role": owner,
        "operator_role": operator,
        "super": url,
    }


def test_store_check_tells_the_owner_from_the_operator(team: dict[str, str], pg_cluster: Any) -> None:
    code, report = check(team["operator"])
    assert code == 0, report
    assert report["role"] == "operator"
    assert set(statuses(report).values()) == {"ok"}
    assert detail(report, "role") == (
        f"operator ({team['operator_role']}): may INSERT and SELECT audit rows; UPDATE and DELETE are refused by "
        "the server; imm audit prune runs only as the owner"
    )
    code, report = check(team["owner"])
    assert code == 0, report
    assert report["role"] == "owner"
    assert detail(report, "role").startswith(f"owner ({team['owner_role']} owns the tables): runs the migrations")

    # an operator that was given UPDATE on the audit log (by hand, past imm store grants) fails the check
    database = team["super"].split("@/", 1)[1].split("?", 1)[0]
    pg_cluster.sql(f"GRANT UPDATE ON audit_log TO {team['operator_role']}", database)
    code, report = check(team["operator"])
    assert code == 1
    assert statuses(report)["role"] == "failed"
    assert detail(report, "role") == (
        f"operator ({team['operator_role']}) may UPDATE audit rows: only a trigger stands between it and the chain"
    )
    assert detail(report, "grants") == "more than the operator's share on audit_log (UPDATE)"


def _audit_rows(url: str) -> list[tuple[Any, ...]]:
    db = DatabaseManager(url)
    try:
        return [tuple(r) for r in db.get_connection().execute("SELECT id, row_hash FROM audit_log ORDER BY id")]
    finally:
        db.close()


def test_audit_prune_runs_only_as_the_owner(team: dict[str, str]) -> None:
    """The operator's prune is refused by the server (one clear line, exit 1, nothing removed); the owner's
    removes the old rows with a checkpoint, and the chain verifies for both roles."""
    before = _audit_rows(team["super"])
    assert len(before) == 5
    refused = run_imm("audit", "prune", "--retention-days", "365", "--yes", env={"IMM_STORE": team["operator"]})
    assert refused.exit_code == 1
    assert "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[0] == (
        f"Error: imm audit prune runs only as the team store's owner: the server refused it to "
        f"{team['operator_role']} (permission denied for table audit_prune_guard); nothing was removed"
    )
    assert _audit_rows(team["super"]) == before
    assert run_imm("audit", "verify", env={"IMM_STORE": team["operator"]}).exit_code == 0

    pruned = run_imm("audit", "prune", "--retention-days", "365", "--yes", env={"IMM_STORE": team["owner"]})
    assert pruned.exit_code == 0, pruned.stderr
    assert pruned.stdout.startswith("Pruned 4 audit rows older than ")
    after = _audit_rows(team["super"])
    assert after[0] == before[4]
    assert [r[0] for r in after] == [5, 6]  # the kept row, then the PRUNE row
    for role in ("operator", "owner"):
        verify = run_imm("audit", "verify", "-o", "json", env={"IMM_STORE": team[role]})
        assert verify.exit_code == 0, verify.stderr
        assert json.loads(verify.stdout)["checkpoints_checked"] == 1


def test_sqlite_store_check_reads_a_file_another_process_writes(tmp_path: Path) -> None:
    """A check while the file is open for writing elsewhere: read-only, it neither waits nor changes the file."""
    path = tmp_path / "imm.db"
    opened(str(path))
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
        code, report = check(str(path))
        assert code == 0, report
        holder.execute("ROLLBACK")
    finally:
        holder.close()


# ---------------------------------------------------------------------------------------- the team store's upsert
def test_a_team_store_upsert_rewrites_only_the_rows_that_changed(pg_cluster: Any) -> None:
    """New rows go straight in; of the rows upserted again, only those whose values differ get a new row version
    (PostgreSQL's xmin: the transaction that wrote it), and every row reads back as last written."""
    from factories import make_mailbox

    db = DatabaseManager(pg_cluster.new_database())
    try:
        db.initialize()
        same, changed = make_mailbox(display_name="Same Name"), make_mailbox(display_name="Old Name")
        assert db.upsert_mailboxes([same, changed]) == 2

        def versions() -> dict[str, str]:
            rows = db.get_connection().execute("SELECT identity, xmin::text FROM inactive_mailboxes")
            return {str(r[0]): str(r[1]) for r in rows}

        before = versions()
        changed.display_name = "New Name"
        added = make_mailbox(display_name="Added Later")
        assert db.upsert_mailboxes([same, changed, added]) == 3
        after = versions()
        assert after[same.identity] == before[same.identity]
        assert after[changed.identity] != before[changed.identity]
        assert set(after) == {same.identity, changed.identity, added.identity}
        assert db.get_mailbox(changed.identity) == changed
        assert db.get_mailbox(same.identity) == same
        assert [m.identity for m in db.search_mailboxes("New Name")] == [changed.identity]
        assert db.search_mailboxes("Old Name") == []
    finally:
        db.close()
