"""The ``sync_runs`` and ``meta`` tables, and the cheap view of the cache that change detection reads."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imm.data.database import format_datetime, parse_datetime

if TYPE_CHECKING:
    from imm.data.database import DatabaseManager


class SyncRunStore:
    """Sync run rows, key/value meta and the cached WhenChanged of each mailbox, of one cache."""

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    # ------------------------------------------------------------------------------------------- runs
    def start(self, mode: str, started_at: datetime | None = None) -> int | None:
        """A ``running`` row naming this process (:func:`imm.data.stale.process_marker`); returns its id."""
        from imm.data.stale import process_marker

        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO sync_runs(started_at, mode, status, fetched, changed, removed, errors, details) "
                "VALUES (?, ?, 'running', 0, 0, 0, 0, ?) RETURNING id",
                (format_datetime(started_at or datetime.now(UTC)), mode, json.dumps(process_marker())),
            )
            return int(cursor.fetchone()[0])

    def finish(
        self,
        run_id: int | None,
        *,
        status: str,
        fetched: int,
        removed: int,
        errors: int,
        details: Mapping[str, Any],
        finished_at: datetime | None = None,
    ) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE sync_runs SET finished_at = ?, status = ?, fetched = ?, changed = ?, removed = ?, "
                "errors = ?, details = ? WHERE id = ?",
                (
                    format_datetime(finished_at or datetime.now(UTC)),
                    status,
                    fetched,
                    fetched,
                    removed,
                    errors,
                    json.dumps(details, sort_keys=True, ensure_ascii=False),
                    run_id,
                ),
            )

    # ------------------------------------------------------------------------------------------- meta
    def meta_get(self, key: str) -> str | None:
        row = self.db.get_connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_set(self, key: str, value: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ----------------------------------------------------------------------------------- change detection
    def read_before(self, moment: datetime, limit: int) -> list[str]:
        """Up to ``limit`` cached identities (lower case) last read in detail before ``moment``, oldest first
        (``last_updated`` is the time of the last detail read; never read first)."""
        if limit <= 0:
            return []
        rows = self.db.get_connection().execute(
            "SELECT identity FROM inactive_mailboxes WHERE last_updated IS NULL OR last_updated < ? "
            "ORDER BY last_updated IS NOT NULL, last_updated, identity LIMIT ?",
            (format_datetime(moment), limit),
        )
        return [str(row[0]).lower() for row in rows]

    def cached_changes(self) -> dict[str, tuple[str, datetime | None]]:
        """lower-case identity → (identity as stored, cached WhenChanged), read cheaply (no full records)."""
        rows = self.db.get_connection().execute("SELECT identity, when_changed FROM inactive_mailboxes")
        return {str(row[0]).lower(): (str(row[0]), parse_datetime(row[1])) for row in rows}
