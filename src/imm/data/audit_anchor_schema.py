"""Tables of the keyed audit log (a migration run by ``imm.data.migrations``; see ``imm.data.audit_signing``).

``audit_signatures`` holds the Ed25519 signature of each audit row and prune checkpoint imm wrote with the
profile's key; ``audit_anchors`` the signed heads (``imm audit anchor``), chained to each other;
``audit_export_cursors`` how far each export sink has been sent (``imm audit export --since-last``). Signatures
and anchors are append-only (triggers, a second line of defence: verification relies on the key, not on them).
"""

from __future__ import annotations

import sqlite3

from imm.data.audit_schema import _statements

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_signatures (
    kind      TEXT NOT NULL,                 -- 'row' (audit_log.id) | 'checkpoint' (audit_checkpoints.id)
    ref_id    INTEGER NOT NULL,
    key_id    TEXT NOT NULL,
    signature TEXT NOT NULL,                 -- base64 Ed25519 over imm-audit/v1/<kind>/<hash>
    PRIMARY KEY (kind, ref_id)
);

CREATE TABLE IF NOT EXISTS audit_anchors (
    anchor_id        INTEGER PRIMARY KEY,
    timestamp        TEXT NOT NULL,
    tenant           TEXT,
    head_id          INTEGER NOT NULL,
    head_hash        TEXT NOT NULL,
    head_timestamp   TEXT,
    row_count        INTEGER NOT NULL,
    checkpoint_count INTEGER NOT NULL,
    prev_anchor_hash TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    anchor_hash      TEXT NOT NULL,
    signature        TEXT NOT NULL,
    witness          TEXT
);

CREATE TABLE IF NOT EXISTS audit_export_cursors (
    sink          TEXT PRIMARY KEY NOT NULL,  -- the sink as given (a file's absolute path, an ingestion URL)
    last_id       INTEGER NOT NULL,           -- the last audit row delivered to it
    pending_first INTEGER,                    -- a batch being sent (delivery not yet confirmed)
    pending_last  INTEGER,
    updated_at    TEXT NOT NULL
);

CREATE TRIGGER IF NOT EXISTS audit_signatures_no_update BEFORE UPDATE ON audit_signatures
BEGIN
    SELECT RAISE(ABORT, 'audit_signatures rows are append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_signatures_no_delete BEFORE DELETE ON audit_signatures
BEGIN
    SELECT RAISE(ABORT, 'audit_signatures rows are append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_anchors_no_update BEFORE UPDATE ON audit_anchors
BEGIN
    SELECT RAISE(ABORT, 'audit_anchors rows are append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_anchors_no_delete BEFORE DELETE ON audit_anchors
BEGIN
    SELECT RAISE(ABORT, 'audit_anchors rows are append-only');
END;
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Create the tables and triggers inside the caller's transaction (never commits)."""
    for statement in _statements(SCHEMA):
        conn.execute(statement)


def migrate_export_state(conn: sqlite3.Connection) -> None:
    """``pending_state`` of an export cursor: 'in_flight' (sent, answer not seen) or 'rejected' (not taken)."""
    columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(audit_export_cursors)")}
    if "pending_state" not in columns:
        conn.execute("ALTER TABLE audit_export_cursors ADD COLUMN pending_state TEXT")
