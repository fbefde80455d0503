"""Tables of the tamper-evident audit log (a migration run by ``imm.data.migrations``).

``audit_log`` holds one row per audited event; each row stores the previous row's hash and its own
(``imm.data.audit_chain`` defines the hash). ``audit_checkpoints`` records every prune: where the chain was cut,
who cut it, when, and how many rows went; the checkpoints form a hash chain of their own.

Triggers refuse UPDATE of either table, DELETE of checkpoints, and DELETE of audit rows unless
``audit_prune_guard`` holds a row (only ``AuditLogger.prune_old_entries`` inserts one, inside its own
transaction). They are a second line of defence: ``imm audit verify`` checks the hashes and never relies on them,
since anyone with the file can drop a trigger.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp     TEXT NOT NULL,             -- UTC, ISO 8601 with microseconds: 2026-11-28T12:00:00.000000+00:00
    operation     TEXT NOT NULL,             -- OperationType value, e.g. RECOVER_MAILBOX
    identity      TEXT,                      -- the mailbox (ExchangeGuid, address) or NULL
    user          TEXT,                      -- the signed-in user, or local:<os account>
    tenant        TEXT,
    operation_id  TEXT,                      -- ties a 'started' row to its result row
    result        TEXT NOT NULL,             -- started | success | failure | cancelled | partial | preview | skipped
    error_message TEXT,
    details       TEXT NOT NULL DEFAULT '{}',-- canonical JSON, secrets removed
    prev_hash     TEXT NOT NULL,
    row_hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_audit_timestamp ON audit_log(timestamp);
CREATE INDEX IF NOT EXISTS idx_audit_identity ON audit_log(identity COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS idx_audit_operation_id ON audit_log(operation_id);
CREATE INDEX IF NOT EXISTS idx_audit_operation ON audit_log(operation, result);

CREATE TABLE IF NOT EXISTS audit_checkpoints (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp       TEXT NOT NULL,
    user            TEXT,
    tenant          TEXT,
    first_kept_id   INTEGER NOT NULL,        -- the first audit_log row left after the prune
    cut_hash        TEXT NOT NULL,           -- row_hash of the last pruned row (= prev_hash of first_kept_id)
    pruned_count    INTEGER NOT NULL,
    retention_days  INTEGER NOT NULL,
    prev_hash       TEXT NOT NULL,           -- checkpoint_hash of the previous checkpoint
    checkpoint_hash TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS audit_prune_guard (active INTEGER NOT NULL);

CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log rows are append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
WHEN NOT EXISTS (SELECT 1 FROM audit_prune_guard)
BEGIN
    SELECT RAISE(ABORT, 'audit_log rows are removed only by imm audit prune');
END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints rows are append-only');
END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints rows are append-only');
END;
"""


def _statements(script: str) -> list[str]:
    """Split the script into complete statements (triggers contain ';' inside BEGIN … END)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--") or not line.strip():
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


def migrate(conn: sqlite3.Connection) -> None:
    """Create the audit tables, indexes and triggers. Runs inside the caller's transaction; never commits.

    Statements run one by one (``executescript`` would COMMIT the caller's transaction).
    """
    for statement in _statements(SCHEMA):
        conn.execute(statement)
