"""The ``restore_requests`` table (:mod:`imm.data.restore_schema`): restore requests imm started and follows.

A row is written BEFORE ``New-MailboxRestoreRequest`` runs (status ``Submitting``), carrying the request name imm
chose, so an ambiguous failure or a crash can be reconciled later by looking that name up in Exchange.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imm.domain.eligibility import consistency_warning

if TYPE_CHECKING:
    from imm.data.database import DatabaseManager

SUBMITTING = "Submitting"  # written before the request is sent; replaced by Exchange's status
NOT_CREATED = "NotCreated"  # the request was never created (the call failed)
GONE = "Removed"  # Exchange no longer knows the request (removed after completion)
FINAL_STATUSES = frozenset({"completed", "completedwithwarning", "failed", NOT_CREATED.lower(), GONE.lower()})
COMPLETED_STATUSES = frozenset({"completed", "completedwithwarning"})


@dataclass
class TrackedRestore:
    """One row of ``restore_requests``."""

    id: int
    name: str
    request_identity: str | None
    request_guid: str | None
    source_identity: str
    source_smtp: str | None
    source_legacy_dn: str | None
    target: str
    target_guid: str | None
    target_smtp: str | None
    source_is_archive: bool
    target_is_archive: bool
    target_root_folder: str | None
    x500_address: str | None
    x500_added: bool
    x500_removed: bool
    status: str
    status_detail: str | None
    percent_complete: int
    bytes_transferred: int | None
    estimated_bytes: int | None
    created_at: str
    updated_at: str
    completed_at: str | None
    operation_id: str | None
    job_id: str | None
    data_consistency_score: str | None = None  # Perfect | Good | Investigate | Poor, once completed
    skipped_items: int | None = None  # bad + large + missing items the request skipped

    @property
    def is_final(self) -> bool:
        return self.status.lower() in FINAL_STATUSES

    @property
    def is_completed(self) -> bool:
        return self.status.lower() in COMPLETED_STATUSES

    @property
    def exchange_identity(self) -> str:
        """How to name the request to Exchange: its RequestGuid when known, else ``Alias\\Name``, else the name."""
        return self.request_guid or self.request_identity or self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "request_identity": self.request_identity,
            "source": self.source_identity,
            "source_smtp": self.source_smtp,
            "target": self.target_smtp or self.target,
            "target_guid": self.target_guid,
            "source_is_archive": self.source_is_archive,
            "target_is_archive": self.target_is_archive,
            "target_root_folder": self.target_root_folder,
            "status": self.status,
            "status_detail": self.status_detail,
            "percent_complete": self.percent_complete,
            "bytes_transferred": self.bytes_transferred,
            "estimated_bytes": self.estimated_bytes,
            "x500_address": self.x500_address,
            "x500_added": self.x500_added,
            "x500_removed": self.x500_removed,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "completed_at": self.completed_at,
            "operation_id": self.operation_id,
            "job_id": self.job_id,
            "data_consistency_score": self.data_consistency_score,
            "skipped_items": self.skipped_items,
            "consistency_warning": consistency_warning(self.data_consistency_score, self.skipped_items),
        }


_NAMES = [f.name for f in fields(TrackedRestore)]
_BOOLS = {"source_is_archive", "target_is_archive", "x500_added", "x500_removed"}
_SELECT = f"SELECT {', '.join(_NAMES)} FROM restore_requests"


def _stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def _row(row: sqlite3.Row | tuple[Any, ...]) -> TrackedRestore:
    values = dict(zip(_NAMES, tuple(row), strict=True))
    for key in _BOOLS:
        values[key] = bool(values[key])
    values["percent_complete"] = int(values["percent_complete"] or 0)
    return TrackedRestore(**values)


class RestoreTracker:
    """Reads and writes ``restore_requests`` of one database."""

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    def add(self, **values: Any) -> TrackedRestore:
        """Insert a row (status ``Submitting`` unless given); returns it."""
        now = _stamp()
        values.setdefault("status", SUBMITTING)
        values.setdefault("created_at", now)
        values.setdefault("updated_at", now)
        for key in _BOOLS:
            if key in values:
                values[key] = int(bool(values[key]))
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self.db.transaction() as conn:
            cursor = conn.execute(
                f"INSERT INTO restore_requests ({columns}) VALUES ({marks}) RETURNING id", tuple(values.values())
            )
            row_id = int(cursor.fetchone()[0])
        found = self.get(row_id)
        assert found is not None
        return found

    def update(self, row_id: int, **values: Any) -> None:
        if not values:
            return
        values["updated_at"] = _stamp()
        for key in _BOOLS:
            if key in values:
                values[key] = int(bool(values[key]))
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE restore_requests SET {assignments} WHERE id = ?", (*values.values(), row_id))

    def get(self, row_id: int) -> TrackedRestore | None:
        row = self.db.get_connection().execute(_SELECT + " WHERE id = ?", (row_id,)).fetchone()
        return None if row is None else _row(row)

    def names_for_target(self, target_guid: str) -> set[str]:
        rows = self.db.get_connection().execute(
            "SELECT name FROM restore_requests WHERE target_guid = ?", (target_guid,)
        )
        return {str(r[0]).lower() for r in rows}

    def by_name(self, target_guid: str, name: str) -> TrackedRestore | None:
        """The row of the request ``name`` into ``target_guid`` (names are unique per target), if any."""
        row = (
            self.db.get_connection()
            .execute(_SELECT + " WHERE lower(target_guid) = lower(?) AND lower(name) = lower(?)", (target_guid, name))
            .fetchone()
        )
        return None if row is None else _row(row)

    def latest(
        self, source_identity: str, target_guid: str | None = None, *, job_id: str | None = None
    ) -> TrackedRestore | None:
        """The newest row for a source (and target, and bulk job when given), if any."""
        sql = _SELECT + " WHERE lower(source_identity) = lower(?)"
        params: list[Any] = [source_identity]
        if target_guid:
            sql += " AND lower(target_guid) = lower(?)"
            params.append(target_guid)
        if job_id:
            sql += " AND job_id = ?"
            params.append(job_id)
        row = self.db.get_connection().execute(sql + " ORDER BY id DESC LIMIT 1", params).fetchone()
        return None if row is None else _row(row)

    def find(self, text: str | None = None) -> list[TrackedRestore]:
        """Rows whose source identity or SMTP, request name/identity, or target matches ``text`` (all when None)."""
        if text is None:
            rows = self.db.get_connection().execute(_SELECT + " ORDER BY id")
            return [_row(r) for r in rows]
        key = text.strip().lower()
        rows = self.db.get_connection().execute(
            _SELECT + " WHERE lower(source_identity) = ? OR lower(source_smtp) = ? OR lower(name) = ? "
            "OR lower(request_identity) = ? OR lower(request_guid) = ? OR lower(target) = ? OR lower(target_smtp) = ? "
            "OR lower(target_guid) = ? ORDER BY id",
            (key,) * 8,
        )
        return [_row(r) for r in rows]
