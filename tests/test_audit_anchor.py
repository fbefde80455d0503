"""A keyed audit log against an attacker who can write the database: every tamper is done through sqlite3 with the
append-only triggers dropped first, and checked by the real ``imm audit verify`` (plain and ``--anchors``)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import run_imm
from imm.config import write_profile
from imm.data.audit_chain import checkpoint_hash
from imm.data.audit_logger import AuditLogger, OperationType
from imm.data.audit_signing import AuditKeying
from imm.data.database import DatabaseManager

START = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
TRIGGERS = (
    "audit_log_no_update",
    "audit_log_no_delete",
    "audit_checkpoints_no_update",
    "audit_checkpoints_no_delete",
    "audit_signatures_no_update",
    "audit_signatures_no_delete",
    "audit_anchors_no_update",
    "audit_anchors_no_delete",
)
COLS = "id, timestamp, operation, identity, user, tenant, operation_id, result, error_message, details, prev_hash"


def clock_from(start: datetime):  # type: ignore[no-untyped-def]
    moments = (start + timedelta(minutes=i) for i in range(10_000))
    return lambda: next(moments)


def logger(db: DatabaseManager, witness: Path | None = None, start: datetime = START) -> AuditLogger:
    keying = AuditKeying(AuditKeying.default_key_path(db.db_path), str(witness) if witness else None)
    return AuditLogger(db, tenant="contoso", user="admin@contoso.com", clock=clock_from(start), keying=keying)


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[Path, Path]:
    """Rows 1-6 written before the key; key created and anchor 1 (head 6); rows 7-10 signed; anchor 2 (head 10)."""
    db_path, witness = tmp_path / "imm.db", tmp_path / "anchors.jsonl"
    db = DatabaseManager(db_path)
    db.initialize()
    audit = logger(db, witness)
    for n in range(3):
        with audit.operation(OperationType.RECOVER_MAILBOX, f"guid-{n}", details={"n": n}) as op:
            op.succeeded({"after": n})
    audit.init_key()
    audit.anchor()
    for n in range(3, 5):
        with audit.operation(OperationType.REMOVE_HOLD, f"guid-{n}", details={"n": n}) as op:
            op.succeeded({"after": n})
    audit.anchor()
    db.close()
    return db_path, witness


def tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for trigger in TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def recompute(path: Path, from_id: int) -> None:
    """Re-hash every row from ``from_id`` on with the README recipe (what an attacker who read it does)."""
    conn = sqlite3.connect(path)
    try:
        for trigger in TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        prev = conn.execute("SELECT row_hash FROM audit_log WHERE id = ?", (from_id - 1,)).fetchone()
        prev_hash = prev[0] if prev else "0" * 64
        for row in conn.execute(f"SELECT {COLS} FROM audit_log WHERE id >= ? ORDER BY id", (from_id,)).fetchall():
            values = [*row[:-1], prev_hash]
            payload = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
            prev_hash = hashlib.sha256(payload.encode()).hexdigest()
            conn.execute(
                "UPDATE audit_log SET prev_hash = ?, row_hash = ? WHERE id = ?", (values[-1], prev_hash, row[0])
            )
        conn.commit()
    finally:
        conn.close()


def forge_append(path: Path) -> None:
    """A plain INSERT (no trigger needed) of a row whose hash is computed correctly."""
    conn = sqlite3.connect(path)
    try:
        last_id, last_hash = conn.execute("SELECT id, row_hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        values = [
            last_id + 1,
            "2026-03-02T08:00:00.000000+00:00",
            "REMOVE_HOLD",
            "guid-ceo",
            "admin@contoso.com",
            "contoso",
            None,
            "success",
            None,
            "{}",
            last_hash,
        ]
        digest = hashlib.sha256(json.dumps(values, separators=(",", ":")).encode()).hexdigest()
        conn.execute(f"INSERT INTO audit_log ({COLS}, row_hash) VALUES ({', '.join('?' * 12)})", (*values, digest))
        conn.commit()
    finally:
        conn.close()


def fake_prune(path: Path, through: int) -> None:
    """Rows 1..through deleted through the prune guard, and a checkpoint whose hash is well formed."""
    conn = sqlite3.connect(path)
    try:
        cut = conn.execute("SELECT row_hash FROM audit_log WHERE id = ?", (through,)).fetchone()[0]
        conn.execute("INSERT INTO audit_prune_guard (active) VALUES (1)")
        conn.execute("DELETE FROM audit_log WHERE id <= ?", (through,))
        conn.execute("DELETE FROM audit_prune_guard")
        cp = {
            "id": 1,
            "timestamp": "2027-03-01T00:00:00.000000+00:00",
            "user": "admin@contoso.com",
            "tenant": "contoso",
            "first_kept_id": through + 1,
            "cut_hash": cut,
            "pruned_count": through,
            "retention_days": 365,
            "prev_hash": "0" * 64,
        }
        cp["checkpoint_hash"] = checkpoint_hash(cp)
        conn.execute(
            f"INSERT INTO audit_checkpoints ({', '.join(cp)}) VALUES ({', '.join('?' * len(cp))})", list(cp.values())
        )
        conn.commit()
    finally:
        conn.close()


def verify(db_path: Path, *extra: str) -> tuple[int, str]:
    result = run_imm("audit", "verify", "--db", str(db_path), *extra)
    return result.exit_code, result.stdout + result.stderr


def test_a_keyed_log_verifies_plain_and_against_its_witness(keyed: tuple[Path, Path]) -> None:
    db_path, witness = keyed
    code, out = verify(db_path)
    assert code == 0, out
    assert "Audit log intact: 10 rows verified (ids 1-10), 0 checkpoints." in out
    assert "Signed: 4 rows carry a valid signature; 2 anchors verified; 0 rows after the last signature" in out
    code, out = verify(db_path, "--anchors", str(witness))
    assert code == 0, out
    assert "2 anchors verified against the witness" in out
    lines = [json.loads(line) for line in witness.read_text().splitlines()]
    assert [(a["anchor_id"], a["head_id"], a["row_count"]) for a in lines] == [(1, 6, 6), (2, 10, 10)]


@pytest.mark.parametrize(
    ("attack", "plain", "anchored"),
    [
        (
            lambda p: tamper(p, "UPDATE audit_log SET identity = 'guid-x' WHERE id = 8"),
            "row 8 was edited or forged",
            "row 8 was edited or forged",
        ),
        (
            lambda p: tamper(p, "DELETE FROM audit_log WHERE id = 8"),
            "row 8 missing (deleted) before row 9",
            "rows deleted: anchor 2 (witness line 2) counted 10 rows up to row 10, the database has 9",
        ),
        (
            lambda p: tamper(
                p,
                "UPDATE audit_log SET id = id + 100 WHERE id >= 8",
                "UPDATE audit_log SET id = id - 99 WHERE id >= 100",
                "INSERT INTO audit_log SELECT 8, timestamp, 'REMOVE_HOLD', 'guid-9', user, tenant, NULL, "
                "'success', NULL, '{}', row_hash, row_hash FROM audit_log WHERE id = 7",
            ),
            "row 8 was edited or forged",
            "recomputed chain: row 10 has a different hash than anchor 2 (witness line 2) signed",
        ),
        (
            lambda p: tamper(
                p,
                "UPDATE audit_log SET id = -8 WHERE id = 8",
                "UPDATE audit_log SET id = 8 WHERE id = 9",
                "UPDATE audit_log SET id = 9 WHERE id = -8",
            ),
            "row 8 does not link to row 7",
            "row 8 does not link to row 7",
        ),
        (
            lambda p: tamper(
                p,
                "DELETE FROM audit_log WHERE id >= 9",
                "UPDATE sqlite_sequence SET seq = 8 WHERE name = 'audit_log'",
                "DELETE FROM audit_anchors WHERE anchor_id = 2",
            ),
            None,  # a clean cut with the database's anchor removed too: only the witness knows
            "truncated tail: row 10, which anchor 2 (witness line 2) signed, is missing (the log ends at row 8)",
        ),
        (
            lambda p: (tamper(p, "UPDATE audit_log SET details = '{\"n\":99}' WHERE id = 2"), recompute(p, 2)),
            "row 7 has a bad signature",
            "recomputed chain: row 6 has a different hash than anchor 1 (witness line 1) signed",
        ),
        (
            lambda p: (
                tamper(p, "UPDATE audit_log SET user = 'intruder@contoso.com' WHERE id = 1"),
                recompute(p, 1),
            ),
            "row 7 has a bad signature",
            "recomputed chain: row 6 has a different hash than anchor 1 (witness line 1) signed",
        ),
        (
            forge_append,
            "row 11 has no signature: it was not written by imm with this profile's audit key",
            "row 11 has no signature",
        ),
        (
            lambda p: fake_prune(p, 8),
            "checkpoint 1 has no signature: it was not written by imm with this profile's audit key (a fake prune)",
            "checkpoint 1 has no signature",
        ),
    ],
    ids=[
        "edit",
        "delete",
        "insert",
        "reorder",
        "truncate-tail",
        "recompute",
        "recompute-from-row-1",
        "forged-append",
        "fake-prune",
    ],
)
def test_every_tamper_is_caught(keyed: tuple[Path, Path], attack, plain: str | None, anchored: str) -> None:  # type: ignore[no-untyped-def]
    db_path, witness = keyed
    attack(db_path)
    code, out = verify(db_path, "--anchors", str(witness))
    assert code == 1, out
    assert anchored in out
    assert "Traceback" not in out
    code, out = verify(db_path)
    if plain is None:
        assert code == 0, out
    else:
        assert code == 1, out
        assert plain in out


def test_a_missing_anchor_is_named_on_either_side(keyed: tuple[Path, Path], tmp_path: Path) -> None:
    db_path, witness = keyed
    lines = witness.read_text().splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_text(lines[0] + "\n")
    code, out = verify(db_path, "--anchors", str(cut))
    assert code == 1
    assert (
        "missing anchor: anchor 2 of the database is missing from the witness file (the witness ends at anchor 1)"
        in out
    )
    gap = tmp_path / "gap.jsonl"
    gap.write_text(lines[1] + "\n")
    code, out = verify(db_path, "--anchors", str(gap))
    assert code == 0, out  # a witness that starts later is fine: it proves what it covers
    tamper(db_path, "DELETE FROM audit_anchors WHERE anchor_id = 1")
    code, out = verify(db_path, "--anchors", str(witness))
    assert code == 1
    assert "missing anchor: anchor 1 (witness line 1) is missing from the database" in out


def test_a_bad_signature_is_named(keyed: tuple[Path, Path], tmp_path: Path) -> None:
    db_path, witness = keyed
    lines = [json.loads(line) for line in witness.read_text().splitlines()]
    lines[1]["row_count"] = 9
    forged = tmp_path / "forged.jsonl"
    forged.write_text("".join(json.dumps(a) + "\n" for a in lines))
    code, out = verify(db_path, "--anchors", str(forged))
    assert code == 1
    assert "bad signature: anchor 2 (witness line 2) is not signed by this profile's audit key" in out


def test_an_honest_prune_is_signed_and_still_verifies(keyed: tuple[Path, Path]) -> None:
    db_path, witness = keyed
    db = DatabaseManager(db_path)
    audit = logger(db, witness, start=START + timedelta(days=1))
    assert audit.prune_old_entries(0) == 10
    report = audit.verify()
    assert (report.ok, report.keyed, report.signed_rows, report.uncovered_rows) == (True, True, 1, 0)
    audit.anchor()
    db.close()
    code, out = verify(db_path, "--anchors", str(witness))
    assert code == 0, out
    assert "1 rows carry a valid signature; 3 anchors verified against the witness; 0 rows after" in out


def test_the_key_lives_outside_the_database_owner_only(keyed: tuple[Path, Path]) -> None:
    db_path, _ = keyed
    key_file = db_path.parent / "audit-keys" / "imm.db.key.json"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    private = base64.b64decode(json.loads(key_file.read_text())["private_key"])
    assert private not in db_path.read_bytes()
    assert base64.b64encode(private) not in db_path.read_bytes()
    result = run_imm("audit", "key", "--db", str(db_path), "--output", "json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["keyed_from_row"], info["keyed_from_checkpoint"]) == (7, 1)
    assert "private" not in result.stdout


def test_unkeyed_verify_says_nothing_is_signed_and_anchor_keys_the_log(tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    db = DatabaseManager(db_path)
    db.initialize()
    AuditLogger(db).log_operation(OperationType.SYNC, None, {}, "success")
    db.close()
    code, out = verify(db_path)
    assert code == 0
    assert "Not keyed: no signature covers these rows" in out
    result = run_imm("audit", "anchor", "--db", str(db_path), "--witness", "-")
    assert result.exit_code == 0, result.stderr
    line = json.loads(result.stdout)
    assert (line["format"], line["anchor_id"], line["head_id"], line["row_count"]) == ("imm-audit-anchor", 1, 1, 1)
    assert "Created this profile's audit signing key" in result.stderr
    again = run_imm("audit", "anchor", "--db", str(db_path))
    assert again.exit_code == 0, again.stderr
    assert again.stdout.startswith("Anchor 2: row 1 ")
    assert "no witness configured" in again.stdout


def test_auto_anchor_after_every_change_goes_to_the_profile_witness(tmp_path: Path, imm_home: Path) -> None:
    db_path, witness = tmp_path / "imm.db", tmp_path / "w.jsonl"
    values = {"db_path": str(db_path), "audit_witness": str(witness), "audit_auto_anchor": True}
    write_profile(imm_home / "config" / "config.toml", "auto", values, make_default=True)
    db = DatabaseManager(db_path)
    db.initialize()
    from imm.config import load_config

    audit = AuditLogger(db, keying=AuditKeying.from_profile(load_config().profile))
    with audit.operation(OperationType.RECOVER_MAILBOX, "guid-0") as op:
        op.succeeded({})  # not keyed yet: nothing to sign with, no anchor
    first = run_imm("audit", "anchor")
    assert first.exit_code == 0, first.stderr
    assert f"; witness {witness}." in first.stdout
    audit = AuditLogger(db, keying=AuditKeying.from_profile(load_config().profile))
    with audit.operation(OperationType.RECOVER_MAILBOX, "guid-1") as op:
        op.succeeded({})
    audit.log_operation(OperationType.SYNC, None, {}, "success")  # not a change: no anchor
    db.close()
    anchors = [json.loads(line) for line in witness.read_text().splitlines()]
    assert [(a["anchor_id"], a["head_id"]) for a in anchors] == [(1, 2), (2, 4)]
    code, out = verify(db_path, "--anchors", str(witness))
    assert code == 0, out
    assert "Signed: 3 rows carry a valid signature; 2 anchors verified against the witness; 0 rows after" in out
