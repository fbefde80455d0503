"""Finding and repairing a damaged store without losing the evidence in it.

:func:`integrity_problems` runs SQLite's own ``PRAGMA integrity_check`` (every page, every index; ``quick`` =
``quick_check``, which skips the index cross-checks: what a sync runs before it writes). :func:`rebuild` builds
a fresh file from a damaged one: everything that is not the inventory (the audit log with its checkpoints,
signatures, anchors and export cursors, bulk jobs and their items, restore requests, sync runs) is copied row for
row, unchanged, into a newly migrated file; the inventory (mailboxes, their search index, org holds, policies) is
left behind, to be synced again. Rows are read by rowid, and a range that cannot be read is read row by row, so
a damaged page costs only the rows on it, and a row that cannot be read is counted: when any row outside the
inventory is lost, nothing is replaced. The damaged file is kept beside the new one (``<name>.damaged-<time>``),
never deleted. SQLite's guidance: "How To Corrupt An SQLite Database File" and the integrity_check pragma
(sqlite.org/howtocorrupt.html, sqlite.org/pragma.html#pragma_integrity_check).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from imm.errors import StoreError

__all__ = ["RebuildResult", "integrity_problems", "rebuild", "INVENTORY_TABLES"]

MAX_PROBLEMS = 100  # lines integrity_check reports at most
CHUNK = 500
# The inventory: rebuilt by the next sync, never copied (a damaged page there is what a rebuild repairs).
INVENTORY_TABLES = frozenset({"inactive_mailboxes", "org_holds", "policies"})
# Bookkeeping that the fresh file has of its own.
_OWN_TABLES = frozenset({"_imm_migrations", "sqlite_sequence", "_imm_search_guard", "audit_prune_guard"})
_SKIP_META = frozenset({"analysis_key"})  # recomputed by the next sync


def integrity_problems(path: Path | str, *, quick: bool = False) -> list[str]:
    """What SQLite's integrity check finds in the file (empty: none). An unreadable file is one problem.

    A page damaged badly enough makes the check itself fail ("database disk image is malformed"); the tables are
    then checked one by one, so the problem names the table whose pages are damaged."""
    pragma = "quick_check" if quick else "integrity_check"
    try:
        conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        return [str(exc)]
    try:
        try:
            return _ok_or_problems(conn.execute(f"PRAGMA {pragma}({MAX_PROBLEMS})").fetchall())
        except sqlite3.Error:
            pass
        try:
            tables = [
                str(r[0])
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%' "
                    "ORDER BY rowid"
                )
            ]
        except sqlite3.Error as exc:
            return [f"the schema cannot be read: {exc}"]
        problems: list[str] = []
        for table in tables:
            try:
                found = _ok_or_problems(conn.execute(f'PRAGMA {pragma}("{table}")').fetchall())
            except sqlite3.Error as exc:
                found = [f"{exc} (in the pages of table {table})"]
            problems.extend(found)
        return problems[:MAX_PROBLEMS]
    finally:
        conn.close()


def _ok_or_problems(rows: list[tuple[object, ...]]) -> list[str]:
    problems = [str(row[0]) for row in rows]
    return [] if problems == ["ok"] else problems


@dataclass
class RebuildResult:
    """What a rebuild copied (rows by table), what it could not read, and where the damaged file went."""

    new_path: Path
    damaged_path: Path | None = None
    copied: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    left_behind: list[str] = field(default_factory=list)


def rebuild(db_path: Path, *, check: Callable[[Path], None] | None = None, stamp: str | None = None) -> RebuildResult:
    """Copy what is not the inventory from ``db_path`` into a fresh file and swap the two; the damaged file is kept
    as ``<name>.damaged-<stamp>``. Refuses (StoreError, nothing replaced, the fresh file removed) when a row
    outside the inventory cannot be read, or when ``check`` (given the fresh file before the swap; the audit
    chain's verification) raises. The caller holds the sync lock and has closed its connections."""
    from imm.data.database import DatabaseManager

    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    new_path = db_path.with_name(f"{db_path.name}.rebuild-{stamp}")
    damaged_path = db_path.with_name(f"{db_path.name}.damaged-{stamp}")
    result = RebuildResult(new_path=new_path)
    fresh = DatabaseManager(new_path)
    try:
        fresh.initialize()
        fresh.close()
        _copy_all(db_path, new_path, result)
    except BaseException:
        fresh.close()
        _remove(new_path)
        raise
    if result.lost:
        _remove(new_path)
        lost = ", ".join(f"{n:,} of {table}" for table, n in sorted(result.lost.items()))
        raise StoreError(
            f"the store {db_path} is too damaged to rebuild without loss: rows that cannot be read ({lost})",
            hint="nothing was replaced; keep the file and restore it from a backup (imm audit export keeps a copy "
            "of the audit log elsewhere)",
            code="store_unrepairable",
        )
    if check is not None:
        try:
            check(new_path)
        except BaseException:
            _remove(new_path)
            raise
    _swap(db_path, new_path, damaged_path)
    result.damaged_path = damaged_path
    return result


def _copy_all(source: Path, target: Path, result: RebuildResult) -> None:
    old = sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None)
    new = sqlite3.connect(target, isolation_level=None)
    try:
        new.execute("PRAGMA foreign_keys = OFF")
        tables = [
            str(r[0])
            for r in old.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid").fetchall()
        ]
        present = {str(r[0]) for r in new.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in tables:
            if table in _OWN_TABLES or table.startswith("sqlite_"):
                continue
            if table in INVENTORY_TABLES or table.startswith("inactive_mailboxes_fts"):
                result.left_behind.append(table)
                continue
            if table not in present:
                raise StoreError(
                    f"the store {source} holds a table this imm does not know ({table}): upgrade imm first",
                    code="store_newer",
                )
            old_columns = [str(r[1]) for r in old.execute(f'PRAGMA table_info("{table}")')]
            new_columns = {str(r[1]) for r in new.execute(f'PRAGMA table_info("{table}")')}
            columns = [c for c in old_columns if c in new_columns]
            copied, lost = _copy_table(old, new, table, columns)
            result.copied[table] = copied
            if lost:
                result.lost[table] = lost
        _copy_sequences(old, new)
    finally:
        old.close()
        new.close()


def _copy_table(old: sqlite3.Connection, new: sqlite3.Connection, table: str, columns: list[str]) -> tuple[int, int]:
    names = ", ".join(f'"{c}"' for c in columns)
    insert = f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" for _ in columns)})'
    copied = lost = 0
    new.execute("BEGIN")
    try:
        for row in _readable_rows(old, table, names):
            if row is None:
                lost += 1
                continue
            if table == "meta" and row[columns.index("key")] in _SKIP_META:
                continue
            new.execute(insert, row)
            copied += 1
        new.execute("COMMIT")
    except BaseException:
        new.execute("ROLLBACK")
        raise
    return copied, lost


def _readable_rows(old: sqlite3.Connection, table: str, names: str) -> Iterator[tuple[object, ...] | None]:
    """The table's rows by rowid; None for each row that cannot be read. A chunk that fails is read row by row
    up to the highest rowid known (the table's own, else AUTOINCREMENT's sequence)."""
    last = 0
    highest = _highest_rowid(old, table)
    while True:
        try:
            rows = old.execute(
                f'SELECT rowid, {names} FROM "{table}" WHERE rowid > ? ORDER BY rowid LIMIT {CHUNK}', (last,)
            ).fetchall()
        except sqlite3.DatabaseError:
            rows = None
        if rows is not None:
            if not rows:
                return
            for row in rows:
                yield tuple(row[1:])
            last = int(rows[-1][0])
            continue
        end = last + CHUNK if highest is None else min(highest, last + CHUNK)
        if end <= last:
            return
        for rowid in range(last + 1, end + 1):
            try:
                one = old.execute(f'SELECT {names} FROM "{table}" WHERE rowid = ?', (rowid,)).fetchone()
            except sqlite3.DatabaseError:
                yield None
                continue
            if one is not None:
                yield tuple(one)
        last = end


def _highest_rowid(old: sqlite3.Connection, table: str) -> int | None:
    highest: int | None = None
    try:
        row = old.execute(f'SELECT max(rowid) FROM "{table}"').fetchone()
        highest = None if row is None or row[0] is None else int(row[0])
    except sqlite3.DatabaseError:
        pass
    try:
        row = old.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        if row is not None and row[0] is not None:
            highest = max(highest or 0, int(row[0]))
    except sqlite3.DatabaseError:
        pass
    return highest


def _copy_sequences(old: sqlite3.Connection, new: sqlite3.Connection) -> None:
    """AUTOINCREMENT counters, so that no id is ever handed out twice (audit ids of pruned rows included)."""
    try:
        rows = old.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
    except sqlite3.DatabaseError:
        return
    for name, seq in rows:
        if name in INVENTORY_TABLES:
            continue
        updated = new.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, name))
        if updated.rowcount == 0:
            new.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (name, seq))


def _swap(db_path: Path, new_path: Path, damaged_path: Path) -> None:
    """The damaged file (with its WAL) aside, the fresh one in its place."""
    for suffix in ("", "-wal", "-shm"):
        current = Path(f"{db_path}{suffix}")
        if current.exists():
            os.replace(current, Path(f"{damaged_path}{suffix}"))
    os.replace(new_path, db_path)
    for suffix in ("-wal", "-shm"):
        leftover = Path(f"{new_path}{suffix}")
        if leftover.exists():
            os.replace(leftover, Path(f"{db_path}{suffix}"))


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            Path(f"{path}{suffix}").unlink()
        except FileNotFoundError:
            pass
