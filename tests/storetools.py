"""Helpers for the store tests that run on both dialects (SQLite and PostgreSQL)."""

from __future__ import annotations

from imm.data.database import DatabaseManager


def table_columns(db: DatabaseManager, table: str) -> list[str]:
    """A table's columns in order (PostgreSQL's ``rowid`` of the mailbox table left out: SQLite's is implicit)."""
    conn = db.get_connection()
    if db.is_postgresql:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = ? AND column_name <> 'rowid' ORDER BY ordinal_position",
            (table,),
        )
        return [str(r[0]) for r in rows]
    return [str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")]


def triggers(db: DatabaseManager) -> set[str]:
    conn = db.get_connection()
    if db.is_postgresql:
        return {str(r[0]) for r in conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
    return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}


def stored_text(db: DatabaseManager, table: str) -> bytes:
    """Every row of ``table`` as the server holds it (for PostgreSQL; an SQLite test reads the file)."""
    rows = db.get_connection().execute(f"SELECT row_to_json(t)::text FROM {table} AS t")
    return b"\n".join(str(r[0]).encode() for r in rows)
