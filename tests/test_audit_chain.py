"""The hash chain end to end: tampering through sqlite3 is caught by the real ``imm audit verify``; an export is
re-verified independently (hashlib + json only, following the README recipe); two processes append at once."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import run_imm
from imm.data.audit_logger import AuditLogger, OperationType
from imm.data.database import DatabaseManager

ZEROS = "0" * 64


def build_log(path: Path) -> None:
    """Six rows: a sync, a write-ahead recover pair, a failed hold change pair, a login."""
    db = DatabaseManager(path)
    db.initialize()
    audit = AuditLogger(db, tenant="contoso.onmicrosoft.com", user="admin@contoso.com")
    audit.log_operation(OperationType.SYNC, None, {"mailboxes": 200}, "success")
    with audit.operation(OperationType.RECOVER_MAILBOX, "guid-1", details={"before": {"holds": ["UniH1"]}}) as op:
        op.succeeded({"after": {"mailbox": "ana@contoso.com"}})
    op_id = audit.begin(OperationType.CHANGE_HOLD, "guid-2", {"before": {"litigation_hold": True}})
    audit.finish(op_id, "failure", {}, "Access denied")
    audit.log_operation(OperationType.LOGIN, None, {"method": "device_code"}, "success")
    db.close()


def tamper(path: Path, *statements: str) -> None:
    """What an attacker with the file does: drop the triggers, then change rows directly."""
    conn = sqlite3.connect(path)
    try:
        for trigger in ("audit_log_no_update", "audit_log_no_delete", "audit_checkpoints_no_update"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        conn.execute("DROP TRIGGER IF EXISTS audit_checkpoints_no_delete")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def forged_hash(path: Path, row_id: int) -> str:
    """Re-hash a row after editing it (what a tamperer who read the recipe would do)."""
    conn = sqlite3.connect(path)
    try:
        cols = (
            "id, timestamp, operation, identity, user, tenant, operation_id, result, error_message, details, prev_hash"
        )
        values = list(conn.execute(f"SELECT {cols} FROM audit_log WHERE id = ?", (row_id,)).fetchone())
    finally:
        conn.close()
    payload = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def verify(path: Path) -> tuple[int, str, str]:
    result = run_imm("audit", "verify", "--db", str(path))
    return result.exit_code, result.stdout, result.stderr


def test_intact_log_verifies(tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    build_log(db_path)
    code, out, err = verify(db_path)
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "Audit log intact: 6 rows verified (ids 1-6), 0 checkpoints."
    assert out.splitlines()[1].startswith("Head: row 6 ")


COPY_ROW_2_INTO_3 = (
    "UPDATE audit_log SET (timestamp, operation, identity, user, tenant, operation_id, result, error_message, "
    "details, prev_hash, row_hash) = (SELECT timestamp, operation, identity, user, tenant, operation_id, result, "
    "error_message, details, prev_hash, row_hash FROM audit_log WHERE id = {src}) WHERE id = {dst}"
)


@pytest.mark.parametrize(
    ("statements", "bad_row", "phrase"),
    [
        # edited
        (["UPDATE audit_log SET identity = 'someone-else' WHERE id = 1"], 1, "row 1 was edited or forged"),
        (["UPDATE audit_log SET result = 'success', error_message = NULL WHERE id = 5"], 5, "row 5 was edited"),
        (["UPDATE audit_log SET details = '{\"mailboxes\":2}' WHERE id = 6"], 6, "row 6 was edited"),
        (["UPDATE audit_log SET timestamp = '2020-01-01T00:00:00.000000+00:00' WHERE id = 3"], 3, "row 3 was"),
        # deleted: first, middle, last
        (["DELETE FROM audit_log WHERE id = 1"], 1, "row 1 missing (deleted) before row 2"),
        (["DELETE FROM audit_log WHERE id = 3"], 3, "row 3 missing (deleted) before row 4"),
        (["DELETE FROM audit_log WHERE id IN (3, 4)"], 3, "rows 3-4 missing (deleted) before row 5"),
        (["DELETE FROM audit_log WHERE id = 6"], 6, "row 6 missing: the end of the log was cut off"),
        # inserted: at the end, before the start, in the middle (ids shifted up to make room)
        (
            [
                "INSERT INTO audit_log SELECT 7, timestamp, 'REMOVE_HOLD', 'guid-9', user, tenant, NULL, 'success', "
                "NULL, '{}', row_hash, 'f' || substr(row_hash, 2) FROM audit_log WHERE id = 6"
            ],
            7,
            "row 7 was edited or forged",
        ),
        (
            [
                "INSERT INTO audit_log SELECT 0, timestamp, operation, identity, user, tenant, operation_id, "
                f"result, error_message, details, '{ZEROS}', row_hash FROM audit_log WHERE id = 1"
            ],
            0,
            "row 0 should not exist",
        ),
        (
            [
                "UPDATE audit_log SET id = id + 100 WHERE id >= 4",
                "UPDATE audit_log SET id = id - 99 WHERE id >= 100",
                "INSERT INTO audit_log SELECT 4, timestamp, 'REMOVE_HOLD', 'guid-9', user, tenant, NULL, "
                "'success', NULL, '{}', row_hash, row_hash FROM audit_log WHERE id = 3",
            ],
            4,
            "row 4 was edited or forged",
        ),
        # swapped (reordered)
        (
            [
                "UPDATE audit_log SET id = -2 WHERE id = 2",
                "UPDATE audit_log SET id = 2 WHERE id = 3",
                "UPDATE audit_log SET id = 3 WHERE id = -2",
            ],
            2,
            "row 2 does not link to row 1",
        ),
        (
            [
                "UPDATE audit_log SET id = -1 WHERE id = 1",
                "UPDATE audit_log SET id = 1 WHERE id = 5",
                "UPDATE audit_log SET id = 5 WHERE id = -1",
            ],
            1,
            "row 1 does not link to the start of the chain",
        ),
        # a row overwritten with a copy of another, hashes and all
        ([COPY_ROW_2_INTO_3.format(src=2, dst=3)], 3, "row 3 does not link to row 2"),
    ],
    ids=[
        "edit-first",
        "edit-result",
        "edit-last-details",
        "edit-timestamp",
        "delete-first",
        "delete-middle",
        "delete-two",
        "delete-last",
        "insert-end",
        "insert-before-start",
        "insert-middle",
        "swap-adjacent",
        "swap-first-and-fifth",
        "copy-row",
    ],
)
def test_tampering_is_caught_at_the_row(tmp_path: Path, statements: list[str], bad_row: int, phrase: str) -> None:
    db_path = tmp_path / "imm.db"
    build_log(db_path)
    tamper(db_path, *statements)
    code, out, err = verify(db_path)
    assert code == 1
    assert out == ""
    assert err.startswith(f"Error: audit log verification failed at row {bad_row}: ")
    assert phrase in err
    assert "Traceback" not in err


def test_edit_and_rehash_is_caught_at_the_next_row(tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    build_log(db_path)
    tamper(db_path, "UPDATE audit_log SET error_message = NULL, result = 'success' WHERE id = 5")
    tamper(db_path, f"UPDATE audit_log SET row_hash = '{forged_hash(db_path, 5)}' WHERE id = 5")
    code, _, err = verify(db_path)
    assert code == 1
    assert "verification failed at row 6: row 6 does not link to row 5" in err


def test_verify_as_json(tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    build_log(db_path)
    result = run_imm("audit", "verify", "--db", str(db_path), "--output", "json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert (report["ok"], report["rows_checked"], report["first_id"], report["last_id"]) == (True, 6, 1, 6)
    tamper(db_path, "DELETE FROM audit_log WHERE id = 2")
    result = run_imm("audit", "verify", "--db", str(db_path), "--output", "json")
    assert result.exit_code == 1
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "audit_tampered"
    assert error["exit_code"] == 1
    assert error["message"].startswith("audit log verification failed at row 2: row 2 missing")


def make_old_log(path: Path, old_rows: int = 4) -> AuditLogger:
    """``old_rows`` rows written 800 days ago, then two recent ones."""
    db = DatabaseManager(path)
    db.initialize()
    now = datetime.now(UTC)
    moments = iter([now - timedelta(days=800, seconds=-n) for n in range(old_rows)] + [now] * 3)
    audit = AuditLogger(db, tenant="t", user="officer@contoso.com", clock=lambda: next(moments))
    for n in range(old_rows):
        audit.log_operation(OperationType.SYNC, None, {"n": n, "name": "Zoë 李"}, "success")
    audit.log_operation(OperationType.REPORT, None, {"kind": "costs"}, "success")
    with audit.operation(OperationType.REMOVE_HOLD, "guid-1"):
        pass
    db.close()
    return audit


def test_prune_then_verify_passes_and_checkpoint_tampering_is_caught(tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    make_old_log(db_path)
    result = run_imm("audit", "prune", "--retention-days", "365", "--yes", "--db", str(db_path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Pruned 4 audit rows older than ")
    code, out, _ = verify(db_path)
    assert code == 0
    assert out.splitlines()[0] == "Audit log intact: 4 rows verified (ids 5-8), 1 checkpoint."
    # the checkpoint itself is verified
    tamper(db_path, "UPDATE audit_checkpoints SET pruned_count = 1")
    code, _, err = verify(db_path)
    assert code == 1
    assert "verification failed at checkpoint 1: checkpoint 1 was edited" in err


def test_deleting_the_checkpoint_is_caught(tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    make_old_log(db_path)
    assert run_imm("audit", "prune", "--retention-days", "365", "--yes", "--db", str(db_path)).exit_code == 0
    tamper(db_path, "DELETE FROM audit_checkpoints")
    code, _, err = verify(db_path)
    assert code == 1
    assert "verification failed at row 1: rows 1-4 missing (deleted) before row 5" in err


def test_a_dropped_audit_table_fails_verification(tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    build_log(db_path)
    tamper(db_path, "DROP TABLE audit_log")
    code, out, err = verify(db_path)
    assert code == 1
    assert err.splitlines()[0] == f"Error: the store {db_path} is damaged (no such table: audit_log)"


def _recompute(document: dict) -> int:
    """An auditor's check, following the README recipe with nothing but hashlib and json."""

    def sha(items: list) -> str:
        return hashlib.sha256(json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode("utf-8")).hexdigest()

    prev_cp = ZEROS
    for cp in document["checkpoints"]:
        assert cp["prev_hash"] == prev_cp
        fields = ["id", "timestamp", "user", "tenant", "first_kept_id", "cut_hash", "pruned_count"]
        fields += ["retention_days", "prev_hash"]
        assert sha([cp[f] for f in fields]) == cp["checkpoint_hash"]
        prev_cp = cp["checkpoint_hash"]
    entries = document["entries"]
    if document["checkpoints"]:
        start = document["checkpoints"][-1]
        assert entries[0]["id"] == start["first_kept_id"]
        assert entries[0]["prev_hash"] == start["cut_hash"]
    else:
        assert entries[0]["prev_hash"] == ZEROS
    previous = None
    for entry in entries:
        canonical = json.dumps(entry["details"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert canonical == entry["details_json"]
        if previous is not None:
            assert entry["id"] == previous["id"] + 1
            assert entry["prev_hash"] == previous["row_hash"]
        items = [entry[f] for f in ("id", "timestamp", "operation", "identity", "user", "tenant", "operation_id")]
        items += [entry["result"], entry["error_message"], canonical, entry["prev_hash"]]
        assert sha(items) == entry["row_hash"]
        previous = entry
    return len(entries)


def test_export_is_independently_verifiable(tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    make_old_log(db_path)
    assert run_imm("audit", "prune", "--retention-days", "365", "--yes", "--db", str(db_path)).exit_code == 0
    out = tmp_path / "export.json"
    result = run_imm("audit", "export", "--out", str(out), "--db", str(db_path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Exported 4 audit rows to {out}\n"
    document = json.loads(out.read_text(encoding="utf-8"))
    assert _recompute(document) == 4
    assert [e["operation"] for e in document["entries"]] == ["REPORT", "REMOVE_HOLD", "REMOVE_HOLD", "PRUNE"]
    # and an edited export no longer recomputes
    document["entries"][1]["identity"] = "guid-2"
    with pytest.raises(AssertionError):
        _recompute(document)


WRITER = """
import sys
import time
from pathlib import Path
from imm.data.audit_logger import AuditLogger, OperationType
from imm.data.database import DatabaseManager
db = DatabaseManager(Path(sys.argv[1]))
db.initialize()
audit = AuditLogger(db, tenant="t", user=f"writer-{sys.argv[2]}@contoso.com")
print("ready", flush=True)
sys.stdin.readline()
for n in range(int(sys.argv[3])):
    audit.log_operation(OperationType.SYNC, f"w{sys.argv[2]}-{n}", {"writer": int(sys.argv[2]), "n": n}, "success")
    time.sleep(0.0005)  # real callers do work between rows; without it one writer can finish before the other wakes
db.close()
"""


def test_two_processes_logging_at_once_keep_one_chain(tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    DatabaseManager(db_path).initialize()
    rows = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db_path), str(k), str(rows)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (1, 2)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:  # release both at once
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    db = DatabaseManager(db_path)
    audit = AuditLogger(db)
    entries = audit.get_operations()
    db.close()
    assert len(entries) == 2 * rows
    assert [e.id for e in entries] == list(range(1, 2 * rows + 1))
    assert sorted(e.identity or "" for e in entries) == sorted(f"w{k}-{n}" for k in (1, 2) for n in range(rows))
    writers = [e.details["writer"] for e in entries]
    assert writers != sorted(writers), "the writers never interleaved; the test did not test concurrency"
    code, out, _ = verify(db_path)
    assert code == 0
    assert out.startswith(f"Audit log intact: {2 * rows} rows verified")
