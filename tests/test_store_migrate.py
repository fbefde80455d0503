"""`imm store migrate --to postgresql://…` (issue 16): a profile's SQLite file, used for real (a sync, a bulk job
that changed the tenant, a restore, a keyed and anchored audit log), moved into an empty team store; every read a
user makes then says the same on both, the audit chain verifies with the same ids and hashes, and the team store
goes on working (a sync after the move). The real `imm` process against the simulated tenant and a real server."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_imm
from imm.data.database import DatabaseManager
from imm.simulator import Simulator
from imm.simulator.model import ACTIVE, INACTIVE
from test_audit_chain import make_old_log, tamper

pytestmark = pytest.mark.slow

UNDERSTOOD = ("--i-understand-last-hold", "--i-understand-unlimited")


def _rows(target: str, sql: str) -> list[tuple[Any, ...]]:
    db = DatabaseManager(target)
    try:
        return [tuple(r) for r in db.get_connection().execute(sql)]
    finally:
        db.close()


def _plan(path: Path, simulator: Simulator) -> Path:
    """A release of one Litigation Hold and a restore into an active mailbox with room."""
    tenant = simulator.exchange.tenant
    with tenant.lock:
        inactive = sorted((m for m in tenant.mailboxes.values() if m.state == INACTIVE), key=lambda m: m.exchange_guid)
        plain = [m for m in inactive if not m.auto_expanding_archive and not m.aux_archive_shards
                 and not m.aux_primary_shards and m.total_bytes < 1024**3]  # fmt: skip
        held = next(m for m in plain if m.litigation_hold)
        source = next(m for m in plain if m is not held)
        target = next(
            m
            for m in tenant.mailboxes.values()
            if m.state == ACTIVE and m.quota_bytes - m.total_bytes > source.total_bytes * 2
        )
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["action", "identity", "type", "target"])
        writer.writerow(["release", held.exchange_guid, "litigation", ""])
        writer.writerow(["restore", source.exchange_guid, "", target.primary_smtp])
    return path


def _without_generated_at(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_generated_at(v) for k, v in value.items() if k != "generated_at"}
    if isinstance(value, list):
        return [_without_generated_at(v) for v in value]
    return value


TABLES = {
    "audit_log": "SELECT id, row_hash, prev_hash, operation, result FROM audit_log ORDER BY id",
    "audit_signatures": "SELECT kind, ref_id, key_id, signature FROM audit_signatures ORDER BY kind, ref_id",
    "audit_anchors": "SELECT anchor_id, head_id, anchor_hash FROM audit_anchors ORDER BY anchor_id",
    "bulk_jobs": "SELECT id, status, plan_sha256, totals, runs FROM bulk_jobs ORDER BY id",
    "bulk_items": "SELECT job_id, line_no, action, status, operation_id, attempts FROM bulk_items ORDER BY 1, 2",
    "restore_requests": "SELECT id, name, source_identity, target_guid, status, x500_added FROM restore_requests",
    "sync_runs": "SELECT id, started_at, mode, status, fetched, changed FROM sync_runs ORDER BY id",
}


def test_a_used_profile_moves_into_a_team_store_and_reads_the_same(
    sim_profile: str, simulator: Simulator, pg_cluster: Any, imm_home: Path, tmp_path: Path
) -> None:
    db_file = str(imm_home / "data" / f"{sim_profile}.db")
    url = pg_cluster.new_database()
    assert run_imm("login").exit_code == 0
    assert run_imm("sync", "-q").exit_code == 0
    anchored = run_imm("audit", "anchor", "--witness", str(tmp_path / "anchors.jsonl"))
    assert anchored.exit_code == 0, anchored.stderr
    ran = run_imm("bulk", "run", str(_plan(tmp_path / "plan.csv", simulator)), "--execute", "--yes", *UNDERSTOOD)
    assert ran.exit_code in (0, 1), ran.stderr
    assert run_imm("sync", "-q").exit_code == 0  # signed rows after the anchor
    [job] = _rows(db_file, "SELECT id FROM bulk_jobs")
    tracked = {name: _rows(db_file, sql) for name, sql in TABLES.items()}
    assert len(tracked["restore_requests"]) == 1
    assert len(tracked["audit_anchors"]) == 1 and tracked["audit_signatures"]
    assert [r[3] for r in tracked["bulk_items"]] == ["succeeded", "succeeded"]

    # reports write REPORT rows: on the file they run before the audit reads, on the team store after them
    audit_reads: list[tuple[str, ...]] = [
        ("audit", "verify", "-o", "json"),
        ("audit", "verify", "--anchors", str(tmp_path / "anchors.jsonl"), "-o", "json"),
        ("audit", "list", "-o", "json"),
    ]
    other_reads: list[tuple[str, ...]] = [
        ("bulk", "list", "-o", "json"),
        ("bulk", "status", str(job[0]), "-o", "json"),
        ("list", "-o", "json"),
        ("list", "-o", "json", "--sort", "size", "--desc", "--limit", "25"),
        ("search", "an", "-o", "json"),
        ("report", "summary", "--output", "json"),
        ("report", "holds", "--output", "json"),
        ("report", "eligibility", "--output", "json"),
    ]
    before = {}
    for args in other_reads + audit_reads:
        result = run_imm(*args)
        assert result.exit_code == 0, (args, result.stderr)
        before[args] = _without_generated_at(json.loads(result.stdout))
    source_rows = {name: _rows(db_file, sql) for name, sql in TABLES.items()}

    moved = run_imm("store", "migrate", "--to", url, "-o", "json")
    assert moved.exit_code == 0, moved.stderr
    summary = json.loads(moved.stdout)
    verified = before[("audit", "verify", "-o", "json")]
    assert summary["audit"] == {
        "verified_before_and_after": True,
        "rows": verified["rows_checked"],
        "first_id": 1,
        "last_id": verified["last_id"],
        "head_hash": verified["head_hash"],
        "checkpoints": 0,
    }
    counts = summary["tables"]
    assert counts["inactive_mailboxes"] == len(before[("list", "-o", "json")])
    assert (counts["bulk_jobs"], counts["bulk_items"], counts["restore_requests"], counts["audit_anchors"]) == (
        1,
        2,
        1,
        1,
    )
    assert "To use the team store: imm config set store 'postgresql://" in moved.stderr

    assert {name: _rows(url, sql) for name, sql in TABLES.items()} == source_rows
    team = {"IMM_STORE": url}
    for args in audit_reads + other_reads:
        result = run_imm(*args, env=team)
        assert result.exit_code == 0, (args, result.stderr)
        assert _without_generated_at(json.loads(result.stdout)) == before[args], args

    # the team store goes on: a sync numbers its run after the copied ones, and the chain still verifies
    assert run_imm("sync", "-q", env=team).exit_code == 0
    runs = _rows(url, "SELECT id FROM sync_runs ORDER BY id")
    assert [r[0] for r in runs] == [*(r[0] for r in source_rows["sync_runs"]), source_rows["sync_runs"][-1][0] + 1]
    assert run_imm("audit", "verify", env=team).exit_code == 0

    # a second move into the store now in use is refused, and changes nothing
    held = _rows(url, "SELECT count(*) FROM audit_log")
    again = run_imm("store", "migrate", "--to", url)
    assert again.exit_code == 1
    assert again.stderr.startswith(f"Error: {url} is not empty (")
    assert "nothing was copied" in again.stderr
    assert _rows(url, "SELECT count(*) FROM audit_log") == held


def test_a_file_whose_audit_log_does_not_verify_is_not_moved(pg_cluster: Any, tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    make_old_log(db_path)
    tamper(db_path, "UPDATE audit_log SET details = '{\"n\": 99}' WHERE id = 2")
    url = pg_cluster.new_database()
    result = run_imm("--db", str(db_path), "store", "migrate", "--to", url)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: the audit log of {db_path} does not verify (at row 2: row 2 was edited")
    assert "nothing was copied" in result.stderr
    assert "Traceback" not in result.stderr
    assert _rows(url, "SELECT count(*) FROM audit_log") == [(0,)]


def test_store_migrate_needs_a_file_and_a_postgresql_target(pg_cluster: Any, tmp_path: Path) -> None:
    url = pg_cluster.new_database()
    missing = run_imm("--db", str(tmp_path / "none.db"), "store", "migrate", "--to", url)
    assert (missing.exit_code, missing.stderr.splitlines()[0]) == (
        2,
        f"Error: there is no store file at {tmp_path / 'none.db'} to migrate",
    )
    assert not (tmp_path / "none.db").exists()
    on_team = run_imm("store", "migrate", "--to", url, env={"IMM_STORE": url})
    assert on_team.exit_code == 2
    assert "this profile's store is already a team store" in on_team.stderr
    other = run_imm("--db", str(tmp_path / "a.db"), "store", "migrate", "--to", str(tmp_path / "b.db"))
    assert other.exit_code == 2
    assert "--to takes the team store's postgresql:// URL" in other.stderr
    secret = run_imm("--db", str(tmp_path / "a.db"), "store", "migrate", "--to", "postgresql://u:hunter2@db/imm")
    assert secret.exit_code == 2
    assert "hunter2" not in secret.stdout + secret.stderr


def test_store_migrate_as_the_operator_is_refused_by_the_server(pg_cluster: Any, tmp_path: Path) -> None:
    import uuid

    suffix = uuid.uuid4().hex[:8]
    owner, operator = f"own_{suffix}", f"op_{suffix}"
    for role in (owner, operator):
        pg_cluster.sql(f"CREATE ROLE {role} LOGIN")
    url = pg_cluster.new_database()
    grants = run_imm("store", "grants", "--owner", owner, "--operator", operator, "--apply", env={"IMM_STORE": url})
    assert grants.exit_code == 0, grants.stderr
    db_path = tmp_path / "imm.db"
    make_old_log(db_path)
    database = url.split("@/", 1)[1].split("?", 1)[0]
    result = run_imm("--db", str(db_path), "store", "migrate", "--to", pg_cluster.url(database, user=operator))
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[0] == (
        "Error: imm store migrate runs only as the team store's owner: the server refused (permission denied for "
        "table audit_checkpoints); nothing was copied"
    )
    assert _rows(url, "SELECT count(*) FROM inactive_mailboxes") == [(0,)]
    assert _rows(url, "SELECT count(*) FROM audit_log") == [(0,)]
    moved = run_imm("--db", str(db_path), "store", "migrate", "--to", pg_cluster.url(database, user=owner))
    assert moved.exit_code == 0, moved.stderr
    assert _rows(url, "SELECT count(*) FROM audit_log") == _rows(str(db_path), "SELECT count(*) FROM audit_log")
