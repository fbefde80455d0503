"""The numbered migrations as PostgreSQL runs them (the same names and order as :mod:`imm.data.migrations`).

Each function here is the PostgreSQL form of the migration of the same number: one history, applied per dialect.
Column types follow the SQLite schema one for one (TEXT → text, INTEGER → bigint, REAL → double precision) and
values keep SQLite's encodings (ISO 8601 text, JSON text, 0/1), so rows move between the two unchanged. The
scripts run on the raw psycopg connection (no placeholder translation), inside the transaction the registry
opens.

What PostgreSQL does in its own way: the substring search is a ``pg_trgm`` GIN index over the searched names
(where SQLite keeps an FTS5 trigram table in step with triggers); the audit tables' "highest id ever used"
(SQLite's ``sqlite_sequence``) is ``audit_sequence``, kept by a trigger; append-only rules are triggers here too,
and on a shared server the GRANTs of :mod:`imm.data.pg_roles` are the first line of defence.
"""

from __future__ import annotations

import re
from typing import Any

_TYPES = {"TEXT": "text", "INTEGER": "bigint", "REAL": "double precision"}

# SQLite's functions and collation that the shared SQL uses, in PostgreSQL.
COMPAT = r"""
CREATE EXTENSION IF NOT EXISTS pg_trgm;
DO $$ BEGIN
    CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE OR REPLACE FUNCTION json_each(doc text) RETURNS TABLE (value text)
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT jsonb_array_elements_text(doc::jsonb) $$;
CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT doc::jsonb #>> string_to_array(substr(path, 3), '.') $$;
CREATE OR REPLACE FUNCTION instr(haystack text, needle text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT strpos(haystack, needle) $$;
CREATE OR REPLACE FUNCTION round(value double precision, digits integer) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT round(value::numeric, digits)::double precision $$;
CREATE OR REPLACE FUNCTION unixepoch(moment text) RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT floor(extract(epoch FROM moment::timestamptz))::bigint $$;
CREATE OR REPLACE FUNCTION imm_search_text(a text, b text, c text, d text, e text, f text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT lower(concat_ws(E'\n', a, b, c, d, e, f) COLLATE "und-x-icu") $$;
-- Python's str.lower order (report_streams): Unicode lower case, then code point (UTF-8 byte) order.
CREATE OR REPLACE FUNCTION imm_lower(t text) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT convert_to(lower(t COLLATE "und-x-icu"), 'UTF8') $$;
"""


def columns_of(script: str, table: str) -> list[tuple[str, str]]:
    """(name, PostgreSQL type) of the columns of ``CREATE TABLE table`` in an SQLite script."""
    body = script.split(f"CREATE TABLE {table} (", 1)[1].split("\n);", 1)[0]
    found = []
    for line in body.splitlines():
        match = re.match(r"\s+(\w+)\s+(TEXT|INTEGER|REAL)\b(.*)", line)
        if match:
            name, kind, rest = match.groups()
            # text in code point order, as SQLite's BINARY compares and sorts (not the database's locale)
            sql_type = 'text COLLATE "C"' if kind == "TEXT" else _TYPES[kind]
            found.append((name, sql_type + (" NOT NULL" if "NOT NULL" in rest and name != "identity" else "")))
    return found


def _pg_type(sqlite_type: str) -> str:
    return 'text COLLATE "C"' if sqlite_type == "TEXT" else _TYPES[sqlite_type]


def run(conn: Any, script: str) -> None:
    conn.raw.execute(script)


def migrate_0001_cache(conn: Any) -> None:
    from imm.data.migrations import CACHE_SCHEMA

    columns = ",\n".join(f"    {name} {kind}" for name, kind in columns_of(CACHE_SCHEMA, "inactive_mailboxes"))
    columns = columns.replace('    identity text COLLATE "C"', '    identity text COLLATE "C" PRIMARY KEY', 1)
    run(conn, COMPAT)
    run(
        conn,
        f"""
CREATE TABLE inactive_mailboxes (
    rowid bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
{columns}
);
CREATE INDEX idx_mailboxes_smtp ON inactive_mailboxes(primary_smtp COLLATE nocase);
CREATE INDEX idx_mailboxes_upn ON inactive_mailboxes(user_principal_name COLLATE nocase)
    WHERE lower(user_principal_name) <> lower(primary_smtp);
-- the default sort (by name, in SQLite's NOCASE order: imm.data.database.pg_order)
CREATE INDEX idx_mailboxes_display_name ON inactive_mailboxes(lower(display_name COLLATE "C"), identity);
CREATE INDEX idx_mailboxes_company ON inactive_mailboxes(operating_company COLLATE nocase, department COLLATE nocase);
CREATE INDEX idx_mailboxes_search ON inactive_mailboxes USING gin
    (imm_search_text(display_name, primary_smtp, name, user_principal_name, operating_company, department)
     gin_trgm_ops);

CREATE TABLE sync_runs (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    started_at  text NOT NULL,
    finished_at text,
    mode        text NOT NULL,
    status      text NOT NULL,
    fetched     bigint NOT NULL DEFAULT 0,
    changed     bigint NOT NULL DEFAULT 0,
    removed     bigint NOT NULL DEFAULT 0,
    errors      bigint NOT NULL DEFAULT 0,
    details     text NOT NULL DEFAULT '{{}}'
);
CREATE INDEX idx_sync_runs_started ON sync_runs(started_at);
CREATE TABLE org_holds (value text PRIMARY KEY, fetched_at text NOT NULL);
CREATE TABLE policies (
    guid             text PRIMARY KEY,
    name             text,
    kind             text,
    locked           bigint NOT NULL DEFAULT 0,
    enabled          bigint NOT NULL DEFAULT 1,
    retention_days   bigint NULL,
    retention_action text,
    scope_all        bigint NOT NULL DEFAULT 0,
    details          text NOT NULL DEFAULT '{{}}',
    fetched_at       text NOT NULL
);
CREATE TABLE meta (key text PRIMARY KEY, value text);
""",
    )


def _append_only(table: str, guard: str | None = None) -> str:
    """A trigger refusing UPDATE and DELETE (DELETE allowed while ``guard`` holds a row: prune), with SQLite's
    words."""
    delete_rule = (
        f"""IF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT 1 FROM {guard}) THEN RETURN OLD; END IF;
        RAISE EXCEPTION '{table} rows are removed only by imm audit prune' USING ERRCODE = 'insufficient_privilege';
    END IF;"""
        if guard is not None
        else ""
    )
    return f"""
CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {delete_rule}
    RAISE EXCEPTION '{table} rows are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {table}_append_only();
"""


def migrate_0002_audit(conn: Any) -> None:
    run(
        conn,
        """
CREATE TABLE audit_log (
    id            bigint PRIMARY KEY,
    timestamp     text NOT NULL,
    operation     text NOT NULL,
    identity      text,
    "user"        text,
    tenant        text,
    operation_id  text,
    result        text NOT NULL,
    error_message text,
    details       text NOT NULL DEFAULT '{}',
    prev_hash     text NOT NULL,
    row_hash      text NOT NULL
);
CREATE INDEX idx_audit_timestamp ON audit_log(timestamp);
CREATE INDEX idx_audit_identity ON audit_log(identity COLLATE nocase);
CREATE INDEX idx_audit_operation_id ON audit_log(operation_id);
CREATE INDEX idx_audit_operation ON audit_log(operation, result);
CREATE TABLE audit_checkpoints (
    id              bigint PRIMARY KEY,
    timestamp       text NOT NULL,
    "user"          text,
    tenant          text,
    first_kept_id   bigint NOT NULL,
    cut_hash        text NOT NULL,
    pruned_count    bigint NOT NULL,
    retention_days  bigint NOT NULL,
    prev_hash       text NOT NULL,
    checkpoint_hash text NOT NULL
);
CREATE TABLE audit_prune_guard (active bigint NOT NULL);
-- The highest id each audit table ever used (SQLite: sqlite_sequence of an AUTOINCREMENT table), so a removed
-- tail is seen by verify.
CREATE TABLE audit_sequence (name text PRIMARY KEY, seq bigint NOT NULL);
CREATE FUNCTION audit_sequence_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit_sequence (name, seq) VALUES (TG_TABLE_NAME, NEW.id)
    ON CONFLICT (name) DO UPDATE SET seq = greatest(audit_sequence.seq, excluded.seq);
    RETURN NEW;
END $$;
CREATE TRIGGER audit_log_sequence AFTER INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_sequence_bump();
CREATE TRIGGER audit_checkpoints_sequence AFTER INSERT ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_sequence_bump();
"""
        + _append_only("audit_log", "audit_prune_guard")
        + _append_only("audit_checkpoints"),
    )


def migrate_0003_jobs(conn: Any) -> None:
    run(
        conn,
        """
CREATE TABLE bulk_jobs (
    id                 text PRIMARY KEY,
    created_at         text NOT NULL,
    updated_at         text NOT NULL,
    finished_at        text,
    plan_path          text NOT NULL,
    plan_sha256        text NOT NULL,
    status             text NOT NULL DEFAULT 'planned'
                       CHECK (status IN ('planned', 'running', 'interrupted', 'completed', 'completed_with_errors')),
    mode               text NOT NULL CHECK (mode IN ('what-if', 'execute')),
    concurrency        bigint NOT NULL,
    "user"             text,
    tenant             text,
    totals             text NOT NULL DEFAULT '{}',
    audit_operation_id text,
    results_path       text,
    passwords_path     text,
    runs               bigint NOT NULL DEFAULT 0
);
CREATE INDEX idx_bulk_jobs_created ON bulk_jobs(created_at);
CREATE TABLE bulk_items (
    job_id       text NOT NULL REFERENCES bulk_jobs(id) ON DELETE CASCADE,
    line_no      bigint NOT NULL,
    action       text NOT NULL CHECK (action IN ('recover', 'restore', 'release', 'set-duration')),
    identity     text NOT NULL,
    mailbox_guid text NOT NULL,
    label        text,
    params       text NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'blocked', 'skipped', 'already-done',
                                   'unknown', 'would-run')),
    operation_id text,
    message      text,
    attempts     bigint NOT NULL DEFAULT 0,
    started_at   text,
    finished_at  text,
    PRIMARY KEY (job_id, line_no)
);
CREATE INDEX idx_bulk_items_status ON bulk_items(job_id, status);
CREATE TABLE restore_requests (
    id                 bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name               text NOT NULL,
    request_identity   text,
    request_guid       text,
    source_identity    text NOT NULL,
    source_smtp        text,
    source_legacy_dn   text,
    target             text NOT NULL,
    target_guid        text,
    target_smtp        text,
    source_is_archive  bigint NOT NULL DEFAULT 0,
    target_is_archive  bigint NOT NULL DEFAULT 0,
    target_root_folder text,
    x500_address       text,
    x500_added         bigint NOT NULL DEFAULT 0,
    x500_removed       bigint NOT NULL DEFAULT 0,
    status             text NOT NULL DEFAULT 'Queued',
    status_detail      text,
    percent_complete   bigint NOT NULL DEFAULT 0,
    bytes_transferred  bigint,
    estimated_bytes    bigint,
    created_at         text NOT NULL,
    updated_at         text NOT NULL,
    completed_at       text,
    operation_id       text,
    job_id             text,
    UNIQUE (target_guid, name)
);
CREATE INDEX idx_restore_requests_source ON restore_requests(source_identity);
CREATE INDEX idx_restore_requests_name ON restore_requests(name);
""",
    )


def migrate_0004_audit_keys(conn: Any) -> None:
    run(
        conn,
        """
CREATE TABLE audit_signatures (
    kind      text NOT NULL,
    ref_id    bigint NOT NULL,
    key_id    text NOT NULL,
    signature text NOT NULL,
    PRIMARY KEY (kind, ref_id)
);
CREATE TABLE audit_anchors (
    anchor_id        bigint PRIMARY KEY,
    timestamp        text NOT NULL,
    tenant           text,
    head_id          bigint NOT NULL,
    head_hash        text NOT NULL,
    head_timestamp   text,
    row_count        bigint NOT NULL,
    checkpoint_count bigint NOT NULL,
    prev_anchor_hash text NOT NULL,
    key_id           text NOT NULL,
    anchor_hash      text NOT NULL,
    signature        text NOT NULL,
    witness          text
);
CREATE TABLE audit_export_cursors (
    sink          text PRIMARY KEY,
    last_id       bigint NOT NULL,
    pending_first bigint,
    pending_last  bigint,
    updated_at    text NOT NULL
);
"""
        + _append_only("audit_signatures")
        + _append_only("audit_anchors"),
    )


def migrate_0005_audit_export_state(conn: Any) -> None:
    run(conn, "ALTER TABLE audit_export_cursors ADD COLUMN IF NOT EXISTS pending_state text")


def migrate_0006_lifecycle(conn: Any) -> None:
    from imm.data.migrations import LIFECYCLE_COLUMNS

    for name, kind in LIFECYCLE_COLUMNS:
        sql_type, _, default = kind.partition(" ")
        run(conn, f"ALTER TABLE inactive_mailboxes ADD COLUMN {name} {_pg_type(sql_type)} {default}")
    run(conn, "UPDATE inactive_mailboxes SET when_changed = NULL")
    run(conn, "CREATE INDEX idx_mailboxes_lifecycle ON inactive_mailboxes(lifecycle_state)")


def migrate_0007_conflicts(conn: Any) -> None:
    from imm.data.migrations import CONFLICT_COLUMNS

    for name, kind in CONFLICT_COLUMNS:
        sql_type, _, default = kind.partition(" ")
        run(conn, f"ALTER TABLE inactive_mailboxes ADD COLUMN {name} {_pg_type(sql_type)} {default}")


def migrate_0008_restore_consistency(conn: Any) -> None:
    run(conn, "ALTER TABLE restore_requests ADD COLUMN data_consistency_score text")
    run(conn, "ALTER TABLE restore_requests ADD COLUMN skipped_items bigint")


def migrate_0009_leaver_schedule(conn: Any) -> None:
    from imm.data.migrations import LEAVER_COLUMNS

    for name, kind in LEAVER_COLUMNS:
        sql_type, _, default = kind.partition(" ")
        run(conn, f"ALTER TABLE inactive_mailboxes ADD COLUMN {name} {_pg_type(sql_type)} {default}")


def migrate_0010_job_leases(conn: Any) -> None:
    from imm.data.migrations import LEASE_COLUMNS

    for name, kind in LEASE_COLUMNS:
        run(conn, f"ALTER TABLE bulk_items ADD COLUMN {name} {_pg_type(kind)}")
