"""``imm store migrate --to postgresql://…``: a profile's SQLite file copied into an empty team store.

Everything is copied as stored, row by row and column by column: the inventory (with its sync bookkeeping), the
audit log with its checkpoints, signatures, anchors and export cursors, the bulk jobs and their items, and the
restore requests imm tracks. Values keep one encoding on both stores (ISO 8601 text, JSON text, 0/1; see
:mod:`imm.data.postgres`), so an audit row's id and hash are the same after the move: the chain is verified on
the SQLite file before anything is written (a log that does not verify is not moved), the ids and hashes are
compared after, and the chain is verified again on PostgreSQL.

The source is read in one read transaction (a snapshot: another imm writing the file meanwhile changes nothing
that is copied); the target is written in one transaction holding the store's write lock, after checking, in it,
that the target is empty: the move is all or nothing, and never mixes into a store already in use. The file is
left as it was. COPY is PostgreSQL's bulk load (https://www.postgresql.org/docs/current/sql-copy.html).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from imm.data.audit_chain import VerifyReport
from imm.data.audit_logger import AuditLogger
from imm.data.database import DatabaseManager
from imm.data.postgres import DatabaseError
from imm.errors import InputError, StoreError

log = logging.getLogger(__name__)

# Copied first, in this order (bulk_items refers to bulk_jobs); any other table both stores have follows, sorted.
ORDER = (
    "meta",
    "org_holds",
    "policies",
    "inactive_mailboxes",
    "sync_runs",
    "audit_log",
    "audit_checkpoints",
    "audit_signatures",
    "audit_anchors",
    "audit_export_cursors",
    "bulk_jobs",
    "bulk_items",
    "restore_requests",
)
# Bookkeeping each store keeps of its own (the migrations it applied, the prune guard, the highest audit ids).
OWN = frozenset({"_imm_migrations", "audit_prune_guard", "audit_sequence", "_imm_search_guard"})
# SQLite's AUTOINCREMENT high-water marks (sqlite_sequence) that PostgreSQL keeps in audit_sequence.
SEQUENCES = ("audit_log", "audit_checkpoints")


class NotEmptyError(StoreError):
    """The target store already holds rows: nothing was copied."""

    code = "store_not_empty"


@dataclass
class MigrateResult:
    source: str
    target: str
    tables: dict[str, int] = field(default_factory=dict)  # table → rows copied
    audit_rows: int = 0
    audit_first_id: int | None = None
    audit_last_id: int | None = None
    head_hash: str | None = None
    checkpoints: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "tables": dict(self.tables),
            "audit": {
                "verified_before_and_after": True,
                "rows": self.audit_rows,
                "first_id": self.audit_first_id,
                "last_id": self.audit_last_id,
                "head_hash": self.head_hash,
                "checkpoints": self.checkpoints,
            },
        }


def _quoted(names: list[str]) -> str:
    return ", ".join('"' + n + '"' for n in names)


def _sqlite_columns(conn: Any, table: str) -> list[str]:
    return [str(r[1]) for r in conn.execute(f'PRAGMA table_info("{table}")')]


def _pg_tables(conn: Any) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]


def _pg_columns(conn: Any, table: str) -> tuple[list[str], list[str]]:
    """The table's columns that take a value (not GENERATED ALWAYS), and those of an identity BY DEFAULT."""
    rows = conn.execute(
        "SELECT column_name, is_identity, identity_generation FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    settable = [str(r[0]) for r in rows if not (r[1] == "YES" and r[2] == "ALWAYS")]
    identity = [str(r[0]) for r in rows if r[1] == "YES" and r[2] == "BY DEFAULT"]
    return settable, identity


def _chain(report: VerifyReport, where: str) -> VerifyReport:
    """``report`` when the chain verified, else a StoreError naming the store and the first bad row."""
    if not report.ok:
        what = {"audit_checkpoints": "checkpoint", "audit_anchors": "anchor"}.get(str(report.bad_table), "row")
        raise StoreError(
            f"the audit log of {where} does not verify (at {what} {report.bad_id}: {report.problem}): "
            "nothing was copied",
            hint="keep the file as evidence; imm audit verify shows the same finding",
            code="audit_tampered",
        )
    return report


def migrate_store(
    source: DatabaseManager, target: DatabaseManager, source_audit: AuditLogger, target_audit: AuditLogger
) -> MigrateResult:
    """Copy every row of ``source`` (SQLite, opened and migrated) into ``target`` (PostgreSQL, opened and migrated,
    empty). Raises NotEmptyError, StoreError (a chain that does not verify, a column the target lacks); nothing
    is written then."""
    if source.is_postgresql or not target.is_postgresql:
        raise InputError("imm store migrate copies an SQLite file into a PostgreSQL store")
    result = MigrateResult(source.display_path, target.display_path)
    src = source.get_connection()
    src.execute("BEGIN")  # one snapshot of the file for the check and the copy
    try:
        before = _chain(source_audit.verify(), source.display_path)
        hashes = [(int(r[0]), str(r[1])) for r in src.execute("SELECT id, row_hash FROM audit_log ORDER BY id")]
        src_tables = {
            str(r[0])
            for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        }
        sequences = (
            {str(r[0]): int(r[1]) for r in src.execute("SELECT name, seq FROM sqlite_sequence") if r[0] in SEQUENCES}
            if "sqlite_sequence" in {str(r[0]) for r in src.execute("SELECT name FROM sqlite_master")}
            else {}
        )
        with target.transaction() as tgt:
            tables = [t for t in _pg_tables(tgt) if t not in OWN]
            order = [t for t in ORDER if t in tables] + sorted(t for t in tables if t not in ORDER)
            used = {t: int(tgt.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in order}
            if any(used.values()):
                held = ", ".join(f"{t} ({n})" for t, n in used.items() if n)
                raise NotEmptyError(
                    f"{target.display_path} is not empty ({held}): nothing was copied",
                    hint="migrate into a new, empty database (CREATE DATABASE …; open it once as the owner)",
                )
            for table in order:
                if table not in src_tables:
                    continue
                columns, identity = _pg_columns(tgt, table)
                have = _sqlite_columns(src, table)
                unknown = [c for c in have if c not in columns]
                if unknown:
                    raise StoreError(
                        f"{table} has columns the team store lacks ({', '.join(unknown)}): nothing was copied",
                        hint="use the same imm version on both (each migrates its store when opened)",
                    )
                names = [c for c in columns if c in have]
                rows: Iterator[Any] = src.execute(f'SELECT {_quoted(names)} FROM "{table}"')
                copied = _copy(tgt, table, names, rows)
                result.tables[table] = copied
                for column in identity:  # the next generated id follows the copied ones
                    tgt.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), max(\"{column}\")) "
                        f'FROM "{table}" HAVING max("{column}") IS NOT NULL'
                    )
            for name, seq in sequences.items():  # the highest id ever used, as SQLite knew it (a pruned tail)
                tgt.execute(
                    "INSERT INTO audit_sequence (name, seq) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET seq = greatest(audit_sequence.seq, excluded.seq)",
                    (name, seq),
                )
            moved = [(int(r[0]), str(r[1])) for r in tgt.execute("SELECT id, row_hash FROM audit_log ORDER BY id")]
            if moved != hashes:
                raise StoreError("the audit rows' ids or hashes differ after the copy: nothing was copied")
            # inside the transaction: the chain about to be committed
            after = _chain(target_audit.verify(), target.display_path)
            if (after.rows_checked, after.head_hash) != (before.rows_checked, before.head_hash):
                raise StoreError("the audit chain differs after the copy: nothing was copied")
    finally:
        if src.in_transaction:
            src.execute("ROLLBACK")
    try:  # fresh statistics for the planner (best effort: an optimisation)
        for table in result.tables:
            target.get_connection().execute(f'ANALYZE "{table}"')
    except DatabaseError:  # pragma: no cover
        log.debug("ANALYZE after the copy failed", exc_info=True)
    result.audit_rows = before.rows_checked
    result.audit_first_id = before.first_id
    result.audit_last_id = before.last_id
    result.head_hash = before.head_hash
    result.checkpoints = before.checkpoints_checked
    return result


def _copy(conn: Any, table: str, names: list[str], rows: Iterator[Any]) -> int:
    count = 0

    def counted() -> Iterator[Any]:
        nonlocal count
        for row in rows:
            count += 1
            yield tuple(row)

    conn.copy_rows(f'COPY "{table}" ({_quoted(names)}) FROM STDIN', counted(), queued=True)
    return count
