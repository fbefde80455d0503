"""Numbered schema migrations, recorded by name in ``_imm_migrations(name, applied_at)``.

Each migration is a function ``migrate(conn)`` that runs its statements one by one on the connection it is given
and never commits: :func:`migrate` wraps every one in its own ``BEGIN IMMEDIATE … COMMIT`` together with the row
that records it, so a migration is applied completely or not at all, even with several imm processes starting at
once. Some migrations live in other modules and are imported lazily (``"module:function"``); while such a module
does not exist yet the migration is skipped without being recorded, so it runs on the first open after it appears.

A database that records a migration this version does not know was created by a newer imm and is refused.
Never edit a migration that has shipped: add a new one.

One history for both dialects: each migration names its PostgreSQL form too (:mod:`imm.data.pg_schema`), and a
PostgreSQL store records the same names in the same table. There, every migration runs in ``BEGIN`` with the
store-wide write lock (:data:`imm.data.postgres.WRITE_LOCK_KEY`), so several machines starting at once apply it
once.
"""

from __future__ import annotations

import importlib
import importlib.util
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MigrationFunc = Callable[[sqlite3.Connection], None]

MIGRATIONS_TABLE = "_imm_migrations"


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute each complete statement of ``script`` in turn (``executescript`` would COMMIT the transaction)."""
    current = ""
    for line in script.splitlines(keepends=True):
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("--")):
            continue
        current += line
        if sqlite3.complete_statement(current):
            conn.execute(current)
            current = ""
    if current.strip():
        raise ValueError(f"incomplete SQL statement in migration: {current.strip()[:80]}")


# ------------------------------------------------------------------------------------------------ 0001_cache
# One column per InactiveMailbox field, in the dataclass's order. Types: TEXT for strings, ISO 8601 UTC datetimes
# and JSON (lists, dicts); INTEGER for ints and booleans (0/1); REAL for sizes and money.
CACHE_SCHEMA = """
CREATE TABLE inactive_mailboxes (
    identity                     TEXT PRIMARY KEY NOT NULL,  -- ExchangeGuid
    display_name                 TEXT,
    primary_smtp                 TEXT,
    when_soft_deleted            TEXT,
    age_days                     INTEGER,
    size_mb                      REAL,
    item_count                   INTEGER,
    license_type                 TEXT,
    monthly_cost                 REAL,
    hold_types                   TEXT,     -- JSON array
    recovery_eligible            INTEGER,
    recovery_blockers            TEXT,     -- JSON array
    operating_company            TEXT,
    department                   TEXT,
    last_updated                 TEXT,
    name                         TEXT,
    distinguished_name           TEXT,
    legacy_exchange_dn           TEXT,
    user_principal_name          TEXT,
    external_directory_object_id TEXT,
    email_addresses              TEXT,     -- JSON array
    archive_status               TEXT,
    archive_guid                 TEXT,
    archive_size_mb              REAL,
    archive_item_count           INTEGER,
    auto_expanding_archive       INTEGER,
    mailbox_locations            TEXT,     -- JSON array
    litigation_hold_enabled      INTEGER,
    litigation_hold_date         TEXT,
    litigation_hold_duration     TEXT,
    in_place_holds               TEXT,     -- JSON array
    compliance_tag_hold          INTEGER,
    delay_hold                   INTEGER,
    delay_release_hold           INTEGER,
    retention_hold_enabled       INTEGER,
    when_changed                 TEXT,
    inactive_mailbox_retire_time TEXT,
    mailbox_plan                 TEXT,
    custom_attributes            TEXT,     -- JSON object
    tenant                       TEXT,
    restore_eligible             INTEGER,
    restore_blockers             TEXT,     -- JSON array
    holds_expire_on              TEXT,
    expiry_reason                TEXT,
    releasable                   INTEGER,
    hold_details                 TEXT      -- JSON array of objects
);

-- Indexes for lookups by address and for the list filters and default sort. Indexes on values spread at random
-- (addresses, dates) cost the most on every write, so: the UPN only where it differs from the primary SMTP
-- address (a lookup tries the address first), and none on WhenSoftDeleted or size (a scan of the table is fast
-- enough for those filters and sorts, as for department alone).
CREATE INDEX idx_mailboxes_smtp ON inactive_mailboxes(primary_smtp COLLATE NOCASE);
CREATE INDEX idx_mailboxes_upn ON inactive_mailboxes(user_principal_name COLLATE NOCASE)
    WHERE lower(user_principal_name) <> lower(primary_smtp);
CREATE INDEX idx_mailboxes_display_name ON inactive_mailboxes(display_name COLLATE NOCASE);
CREATE INDEX idx_mailboxes_company ON inactive_mailboxes(operating_company COLLATE NOCASE, department COLLATE NOCASE);

-- Substring search (trigram) over the names people type. External content: the text lives once, in
-- inactive_mailboxes; the index reads it through this view, which leaves out a Name or UPN that the primary SMTP
-- address already contains (any text found in them is found in the address; indexing it twice costs time and
-- space). Keyed by the table's rowid, which ON CONFLICT DO UPDATE keeps. DatabaseManager maintains the index in
-- set-based statements while a row in _imm_search_guard switches the triggers off; the triggers keep it in step
-- for any other writer. A plain VACUUM may renumber the rowids of a table without an INTEGER PRIMARY KEY: after
-- one, INSERT INTO inactive_mailboxes_fts(inactive_mailboxes_fts) VALUES('rebuild') (DatabaseManager.vacuum does).
CREATE VIEW inactive_mailboxes_search AS
SELECT rowid AS rid, identity, display_name, primary_smtp,
       CASE WHEN instr(lower(primary_smtp), lower(name)) > 0 THEN NULL ELSE name END AS name,
       CASE WHEN instr(lower(primary_smtp), lower(user_principal_name)) > 0 THEN NULL
            ELSE user_principal_name END AS user_principal_name,
       operating_company, department
FROM inactive_mailboxes;

CREATE VIRTUAL TABLE inactive_mailboxes_fts USING fts5(
    display_name, primary_smtp, name, user_principal_name, operating_company, department,
    content='inactive_mailboxes_search', content_rowid='rid', tokenize='trigram', columnsize=0
);

CREATE TABLE _imm_search_guard (active INTEGER NOT NULL);

CREATE TRIGGER inactive_mailboxes_fts_insert AFTER INSERT ON inactive_mailboxes
WHEN NOT EXISTS (SELECT 1 FROM _imm_search_guard)
BEGIN
    INSERT INTO inactive_mailboxes_fts(rowid, display_name, primary_smtp, name, user_principal_name,
                                       operating_company, department)
    SELECT rid, display_name, primary_smtp, name, user_principal_name, operating_company, department
    FROM inactive_mailboxes_search WHERE rid = new.rowid;
END;

CREATE TRIGGER inactive_mailboxes_fts_delete AFTER DELETE ON inactive_mailboxes
WHEN NOT EXISTS (SELECT 1 FROM _imm_search_guard)
BEGIN
    INSERT INTO inactive_mailboxes_fts(inactive_mailboxes_fts, rowid, display_name, primary_smtp, name,
                                       user_principal_name, operating_company, department)
    VALUES ('delete', old.rowid, old.display_name, old.primary_smtp,
            CASE WHEN instr(lower(old.primary_smtp), lower(old.name)) > 0 THEN NULL ELSE old.name END,
            CASE WHEN instr(lower(old.primary_smtp), lower(old.user_principal_name)) > 0 THEN NULL
                 ELSE old.user_principal_name END,
            old.operating_company, old.department);
END;

-- Only when a searched column changes: a re-sync of unchanged names costs the index nothing.
CREATE TRIGGER inactive_mailboxes_fts_update AFTER UPDATE ON inactive_mailboxes
WHEN NOT EXISTS (SELECT 1 FROM _imm_search_guard)
 AND (old.display_name IS NOT new.display_name OR old.primary_smtp IS NOT new.primary_smtp
      OR old.name IS NOT new.name OR old.user_principal_name IS NOT new.user_principal_name
      OR old.operating_company IS NOT new.operating_company OR old.department IS NOT new.department
      OR old.rowid IS NOT new.rowid)
BEGIN
    INSERT INTO inactive_mailboxes_fts(inactive_mailboxes_fts, rowid, display_name, primary_smtp, name,
                                       user_principal_name, operating_company, department)
    VALUES ('delete', old.rowid, old.display_name, old.primary_smtp,
            CASE WHEN instr(lower(old.primary_smtp), lower(old.name)) > 0 THEN NULL ELSE old.name END,
            CASE WHEN instr(lower(old.primary_smtp), lower(old.user_principal_name)) > 0 THEN NULL
                 ELSE old.user_principal_name END,
            old.operating_company, old.department);
    INSERT INTO inactive_mailboxes_fts(rowid, display_name, primary_smtp, name, user_principal_name,
                                       operating_company, department)
    SELECT rid, display_name, primary_smtp, name, user_principal_name, operating_company, department
    FROM inactive_mailboxes_search WHERE rid = new.rowid;
END;

CREATE TABLE sync_runs (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    mode        TEXT NOT NULL,            -- incremental | full
    status      TEXT NOT NULL,            -- running | completed | completed_with_errors | cancelled | failed
    fetched     INTEGER NOT NULL DEFAULT 0,
    changed     INTEGER NOT NULL DEFAULT 0,
    removed     INTEGER NOT NULL DEFAULT 0,
    errors      INTEGER NOT NULL DEFAULT 0,
    details     TEXT NOT NULL DEFAULT '{}' -- JSON
);
CREATE INDEX idx_sync_runs_started ON sync_runs(started_at);

-- Org-wide InPlaceHolds from Get-OrganizationConfig.
CREATE TABLE org_holds (
    value      TEXT PRIMARY KEY NOT NULL,
    fetched_at TEXT NOT NULL
);

-- Retention and case hold policies from the Security & Compliance endpoint.
CREATE TABLE policies (
    guid             TEXT PRIMARY KEY NOT NULL,
    name             TEXT,
    kind             TEXT,
    locked           INTEGER NOT NULL DEFAULT 0,
    enabled          INTEGER NOT NULL DEFAULT 1,
    retention_days   INTEGER NULL,         -- NULL = unlimited or unknown
    retention_action TEXT,
    scope_all        INTEGER NOT NULL DEFAULT 0,
    details          TEXT NOT NULL DEFAULT '{}',
    fetched_at       TEXT NOT NULL
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT
);
"""


def migrate_0001_cache(conn: sqlite3.Connection) -> None:
    """The cache: mailboxes (+ search index), sync runs, org-wide holds, policies, key/value meta."""
    run_script(conn, CACHE_SCHEMA)


# -------------------------------------------------------------------------------------------- 0006_lifecycle
LIFECYCLE_COLUMNS = (
    ("recoverable_items_mb", "REAL DEFAULT 0"),
    ("deleted_item_count", "INTEGER DEFAULT 0"),
    ("archive_recoverable_items_mb", "REAL DEFAULT 0"),
    ("archive_deleted_item_count", "INTEGER DEFAULT 0"),
    ("is_inactive_mailbox", "INTEGER DEFAULT 1"),
    ("was_inactive_mailbox", "INTEGER DEFAULT 0"),
    ("last_hold_removed", "TEXT"),
    ("lifecycle_state", "TEXT DEFAULT 'inactive'"),
    ("delay_hold_until", "TEXT"),
    ("purge_on", "TEXT"),
)


def migrate_0006_lifecycle(conn: sqlite3.Connection) -> None:
    """Sizes as Exchange reports them (Recoverable Items apart) and the lifecycle after the last hold.

    Older caches counted Recoverable Items inside ``size_mb`` / ``item_count``; their WhenChanged is cleared so the
    next sync reads every mailbox's statistics again instead of keeping the old sums.
    """
    for name, kind in LIFECYCLE_COLUMNS:
        conn.execute(f"ALTER TABLE inactive_mailboxes ADD COLUMN {name} {kind}")
    conn.execute("UPDATE inactive_mailboxes SET when_changed = NULL")
    conn.execute("CREATE INDEX idx_mailboxes_lifecycle ON inactive_mailboxes(lifecycle_state)")


# -------------------------------------------------------------------------------------------- 0007_conflicts
CONFLICT_COLUMNS = (("smtp_conflict", "TEXT DEFAULT ''"), ("upn_conflict", "TEXT DEFAULT ''"))


def migrate_0007_conflicts(conn: sqlite3.Connection) -> None:
    """The active recipient, if any, that uses an inactive mailbox's primary SMTP or UPN (found at sync)."""
    for name, kind in CONFLICT_COLUMNS:
        conn.execute(f"ALTER TABLE inactive_mailboxes ADD COLUMN {name} {kind}")


# --------------------------------------------------------------------------------- 0008_restore_consistency
def migrate_0008_restore_consistency(conn: sqlite3.Connection) -> None:
    """The DataConsistencyScore and skipped items of a restore request, read when it completes."""
    conn.execute("ALTER TABLE restore_requests ADD COLUMN data_consistency_score TEXT")
    conn.execute("ALTER TABLE restore_requests ADD COLUMN skipped_items INTEGER")


# ------------------------------------------------------------------------------------------ 0009_leaver_schedule
LEAVER_COLUMNS = (
    ("leaver_retention_ends", "TEXT"),
    ("leaver_holds_after", "TEXT DEFAULT '[]'"),
    ("leaver_retention_ended", "INTEGER DEFAULT 0"),
)


def migrate_0009_leaver_schedule(conn: sqlite3.Connection) -> None:
    """The leaver retention schedule of each mailbox (filled by the next analysis)."""
    for name, kind in LEAVER_COLUMNS:
        conn.execute(f"ALTER TABLE inactive_mailboxes ADD COLUMN {name} {kind}")


# ------------------------------------------------------------------------------------------------ 0010_job_leases
LEASE_COLUMNS = (("lease_owner", "TEXT"), ("lease_expires", "TEXT"))


def migrate_0010_job_leases(conn: sqlite3.Connection) -> None:
    """A bulk item's lease: the worker that claimed it (``imm bulk work``) and until when (ISO 8601 UTC text;
    NULL when no live lease). An expired lease is a worker that died mid-item: its item is reconciled first."""
    for name, kind in LEASE_COLUMNS:
        conn.execute(f"ALTER TABLE bulk_items ADD COLUMN {name} {kind}")


# ------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Migration:
    """A named migration: a function, or ``"module:function"`` imported when it is about to run."""

    name: str
    target: MigrationFunc | str

    def for_dialect(self, dialect: str) -> Migration:
        """This migration as ``dialect`` runs it (PostgreSQL: the function of that name in ``pg_schema``)."""
        if dialect != "postgresql":
            return self
        return Migration(self.name, f"imm.data.pg_schema:migrate_{self.name}")

    def available(self) -> bool:
        """False while a lazily imported module does not exist yet."""
        if callable(self.target):
            return True
        module_name = self.target.split(":", 1)[0]
        try:
            return importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:  # a missing parent package
            return False

    def load(self) -> MigrationFunc:
        if callable(self.target):
            return self.target
        module_name, attr = self.target.split(":", 1)
        func: MigrationFunc = getattr(importlib.import_module(module_name), attr)
        return func


MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_cache", migrate_0001_cache),
    Migration("0002_audit", "imm.data.audit_schema:migrate"),
    Migration("0003_jobs", "imm.data.jobs_schema:migrate"),
    Migration("0004_audit_keys", "imm.data.audit_anchor_schema:migrate"),
    Migration("0005_audit_export_state", "imm.data.audit_anchor_schema:migrate_export_state"),
    Migration("0006_lifecycle", migrate_0006_lifecycle),
    Migration("0007_conflicts", migrate_0007_conflicts),
    Migration("0008_restore_consistency", migrate_0008_restore_consistency),
    Migration("0009_leaver_schedule", migrate_0009_leaver_schedule),
    Migration("0010_job_leases", migrate_0010_job_leases),
)

KNOWN_NAMES = frozenset(m.name for m in MIGRATIONS)


class NewerSchemaError(Exception):
    """The database records migrations this version of imm does not know."""

    def __init__(self, unknown: list[str]) -> None:
        super().__init__(", ".join(unknown))
        self.unknown = unknown


class NotImmDatabaseError(Exception):
    """A valid SQLite file holding another application's tables."""


def _dialect(conn: Any) -> str:
    return str(getattr(conn, "dialect", "sqlite"))


def ensure_table(conn: sqlite3.Connection) -> None:
    if _dialect(conn) == "postgresql":
        conn.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name text PRIMARY KEY, applied_at text)")
        return
    conn.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name TEXT PRIMARY KEY NOT NULL, applied_at TEXT)")


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """Names recorded in the database, oldest first ([] when the table does not exist yet)."""
    if _dialect(conn) == "postgresql":
        if conn.execute("SELECT to_regclass(?)", (MIGRATIONS_TABLE,)).fetchone()[0] is None:
            return []
        return [str(r[0]) for r in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY applied_at, name")]
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MIGRATIONS_TABLE,)
    ).fetchone()
    if not exists:
        return []
    return [str(r[0]) for r in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY applied_at, rowid")]


def pending(conn: sqlite3.Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[Migration]:
    """Migrations not yet applied whose code is available. Raises for a newer or foreign database."""
    applied = applied_migrations(conn)
    if not applied:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
                if _dialect(conn) == "postgresql"
                else "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        if tables and MIGRATIONS_TABLE not in tables:
            raise NotImmDatabaseError(", ".join(sorted(tables)[:5]))
    known = {m.name for m in migrations}
    unknown = [name for name in applied if name not in known]
    if unknown:
        raise NewerSchemaError(unknown)
    done = set(applied)
    dialect = _dialect(conn)
    return [m.for_dialect(dialect) for m in migrations if m.name not in done and m.available()]


def migrate(
    conn: sqlite3.Connection,
    migrations: tuple[Migration, ...] = MIGRATIONS,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[str]:
    """Apply every pending migration, each in its own transaction; returns the names applied now.

    ``conn`` must be in autocommit mode (``isolation_level=None``) and outside a transaction.
    """
    todo = pending(conn, migrations)
    applied_now: list[str] = []
    for migration in todo:
        func = migration.load()
        if _dialect(conn) == "postgresql":
            from imm.data.postgres import WRITE_LOCK_KEY

            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
        else:
            conn.execute("BEGIN IMMEDIATE")
        try:
            ensure_table(conn)
            # another process may have applied it while we waited for the write lock
            again = conn.execute(f"SELECT 1 FROM {MIGRATIONS_TABLE} WHERE name = ?", (migration.name,)).fetchone()
            if again is None:
                func(conn)
                conn.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)",
                    (migration.name, clock().isoformat(timespec="microseconds")),
                )
                applied_now.append(migration.name)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return applied_now
