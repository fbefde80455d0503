"""Migration ``0003_jobs``: bulk jobs and their items (the resume journal), and tracked restore requests.

A bulk job and every one of its items are written here BEFORE anything runs; each item then moves
``pending → running → <final>`` with a commit at each step, so a job killed at any moment can be resumed: an item
still ``running`` has an unknown outcome and is reconciled against Exchange before it is run again.

Item statuses: ``pending`` (not started), ``running`` (started, outcome not recorded), ``succeeded``, ``failed``,
``blocked`` (a preflight check stopped it), ``skipped`` (the action found nothing to do), ``already-done``
(reconciliation found it done in Exchange), ``unknown`` (the outcome could not be established: reconciled on the
next resume), and for what-if jobs ``would-run`` (the preview passed). Job statuses: ``planned``, ``running``,
``interrupted``, ``completed``, ``completed_with_errors``.

Runs inside the transaction the migration registry opens (never commits).
"""

from __future__ import annotations

import sqlite3

from imm.data.migrations import run_script
from imm.data.restore_schema import create_restore_tables

JOBS_SCHEMA = """
CREATE TABLE bulk_jobs (
    id                 TEXT PRIMARY KEY NOT NULL,  -- time-sortable: job-20261128-123456-ab12
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    finished_at        TEXT,
    plan_path          TEXT NOT NULL,
    plan_sha256        TEXT NOT NULL,
    status             TEXT NOT NULL DEFAULT 'planned'
                       CHECK (status IN ('planned', 'running', 'interrupted', 'completed', 'completed_with_errors')),
    mode               TEXT NOT NULL CHECK (mode IN ('what-if', 'execute')),
    concurrency        INTEGER NOT NULL,
    user               TEXT,
    tenant             TEXT,
    totals             TEXT NOT NULL DEFAULT '{}',  -- JSON: items by status after the latest run
    audit_operation_id TEXT,                        -- the BULK_OPERATION write-ahead pair
    results_path       TEXT,
    passwords_path     TEXT,                        -- where recover passwords went (the path only, never a password)
    runs               INTEGER NOT NULL DEFAULT 0   -- the first run plus each resume
);
CREATE INDEX idx_bulk_jobs_created ON bulk_jobs(created_at);

CREATE TABLE bulk_items (
    job_id       TEXT NOT NULL REFERENCES bulk_jobs(id) ON DELETE CASCADE,
    line_no      INTEGER NOT NULL,                 -- the plan's line (the header is line 1)
    action       TEXT NOT NULL CHECK (action IN ('recover', 'restore', 'release', 'set-duration')),
    identity     TEXT NOT NULL,                    -- as the plan names the mailbox
    mailbox_guid TEXT NOT NULL,                    -- the ExchangeGuid it resolved to
    label        TEXT,                             -- display name and address, for confirmations and reports
    params       TEXT NOT NULL DEFAULT '{}',       -- JSON: the action's parameters (never a password)
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'blocked', 'skipped', 'already-done',
                                   'unknown', 'would-run')),
    operation_id TEXT,                             -- the action's audit operation
    message      TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    started_at   TEXT,
    finished_at  TEXT,
    PRIMARY KEY (job_id, line_no)
);
CREATE INDEX idx_bulk_items_status ON bulk_items(job_id, status);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Create the tables of migration 0003_jobs."""
    run_script(conn, JOBS_SCHEMA)
    create_restore_tables(conn)
