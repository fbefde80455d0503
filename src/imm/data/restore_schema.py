"""The ``restore_requests`` table: restore requests imm started and follows (part of migration ``0003_jobs``).

:func:`create_restore_tables` is called by ``imm.data.jobs_schema.migrate`` inside the transaction the migration
registry opens (it never commits). One row per ``New-MailboxRestoreRequest`` imm ran: the name imm chose (so it
can find the request again after an ambiguous failure), source and target, the X500 address it added to the
target, and the last status it read from Exchange.
"""

from __future__ import annotations

import sqlite3

from imm.data.migrations import run_script

RESTORE_SCHEMA = """
CREATE TABLE restore_requests (
    id                 INTEGER PRIMARY KEY,
    name               TEXT NOT NULL,             -- the request name imm chose: imm-<guid8>-<yyyymmddHHMM>
    request_identity   TEXT,                      -- Alias\\Name as Exchange reports it
    request_guid       TEXT,
    source_identity    TEXT NOT NULL,             -- the inactive mailbox's ExchangeGuid
    source_smtp        TEXT,
    source_legacy_dn   TEXT,
    target             TEXT NOT NULL,             -- the target as the user named it
    target_guid        TEXT,                      -- the target's ExchangeGuid
    target_smtp        TEXT,
    source_is_archive  INTEGER NOT NULL DEFAULT 0,
    target_is_archive  INTEGER NOT NULL DEFAULT 0,
    target_root_folder TEXT,
    x500_address       TEXT,                      -- X500:<source LegacyExchangeDN>
    x500_added         INTEGER NOT NULL DEFAULT 0, -- 1 when imm added it (0: it was already there)
    x500_removed       INTEGER NOT NULL DEFAULT 0,
    status             TEXT NOT NULL DEFAULT 'Queued',
    status_detail      TEXT,
    percent_complete   INTEGER NOT NULL DEFAULT 0,
    bytes_transferred  INTEGER,
    estimated_bytes    INTEGER,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    completed_at       TEXT,
    operation_id       TEXT,                      -- the RESTORE_MAILBOX audit operation
    job_id             TEXT,                      -- the bulk job that started it, if any
    UNIQUE (target_guid, name)
);
CREATE INDEX idx_restore_requests_source ON restore_requests(source_identity);
CREATE INDEX idx_restore_requests_name ON restore_requests(name);
"""


def create_restore_tables(conn: sqlite3.Connection) -> None:
    """Create ``restore_requests`` on ``conn`` (inside the caller's transaction; no COMMIT)."""
    run_script(conn, RESTORE_SCHEMA)
