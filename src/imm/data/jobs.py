"""The bulk job journal (tables of migration ``0003_jobs``): jobs, their items, and each item's state changes.

Every state change is its own committed transaction, so the journal on disk is never behind what was done in
Exchange by more than the item in flight: an item is marked ``running`` (commit) before its action starts and gets
its final status (commit) after. Each thread uses its own connection (``DatabaseManager`` gives one per thread).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imm.errors import NotFoundError

if TYPE_CHECKING:
    from imm.data.database import DatabaseManager

# Item statuses (see imm.data.jobs_schema).
PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
BLOCKED = "blocked"
SKIPPED = "skipped"
ALREADY_DONE = "already-done"
UNKNOWN = "unknown"
WOULD_RUN = "would-run"
ITEM_STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED, BLOCKED, SKIPPED, ALREADY_DONE, UNKNOWN, WOULD_RUN)
UNFINISHED = frozenset({PENDING, RUNNING, UNKNOWN})  # what a resume still has to do
ERRORS = frozenset({FAILED, BLOCKED, UNKNOWN})  # what makes a run exit 1

# Job statuses.
PLANNED = "planned"
JOB_RUNNING = "running"
INTERRUPTED = "interrupted"
COMPLETED = "completed"
COMPLETED_WITH_ERRORS = "completed_with_errors"

WHAT_IF = "what-if"
EXECUTE = "execute"

_JOB_COLUMNS = (
    "id",
    "created_at",
    "updated_at",
    "finished_at",
    "plan_path",
    "plan_sha256",
    "status",
    "mode",
    "concurrency",
    "user",
    "tenant",
    "totals",
    "audit_operation_id",
    "results_path",
    "passwords_path",
    "runs",
)
_ITEM_COLUMNS = (
    "job_id",
    "line_no",
    "action",
    "identity",
    "mailbox_guid",
    "label",
    "params",
    "status",
    "operation_id",
    "message",
    "attempts",
    "started_at",
    "finished_at",
)


def stamp(moment: datetime | None = None) -> str:
    """UTC ISO 8601 with microseconds (text order is time order)."""
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")


def new_job_id(moment: datetime | None = None) -> str:
    """A time-sortable id such as ``job-20261128-123456-ab12``."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return f"job-{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@dataclass
class Job:
    """One row of ``bulk_jobs``."""

    id: str
    created_at: str
    updated_at: str
    finished_at: str | None
    plan_path: str
    plan_sha256: str
    status: str
    mode: str
    concurrency: int
    user: str | None
    tenant: str | None
    totals: dict[str, int] = field(default_factory=dict)
    audit_operation_id: str | None = None
    results_path: str | None = None
    passwords_path: str | None = None
    runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _JOB_COLUMNS}


@dataclass
class Item:
    """One row of ``bulk_items``: a plan line and what became of it."""

    job_id: str
    line_no: int
    action: str
    identity: str
    mailbox_guid: str
    label: str | None
    params: dict[str, Any]
    status: str = PENDING
    operation_id: str | None = None
    message: str | None = None
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ITEM_COLUMNS}


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["totals"] = json.loads(values.get("totals") or "{}")
    return Job(**values)


def _item(row: sqlite3.Row) -> Item:
    values = dict(row)
    values["params"] = json.loads(values.get("params") or "{}")
    return Item(**values)


class JobStore:
    """Reads and writes ``bulk_jobs`` / ``bulk_items`` of one database (thread-safe through per-thread
    connections)."""

    def __init__(self, db: DatabaseManager, clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> str:
        return stamp(self._clock())

    # ----- writing -----
    def create(self, job: Job, items: Sequence[Item]) -> None:
        """The job and all its items, in one transaction (the journal exists before anything runs)."""
        with self.db.transaction() as conn:
            values = job.to_dict()
            values["totals"] = json.dumps(values["totals"], sort_keys=True)
            conn.execute(
                f"INSERT INTO bulk_jobs ({', '.join(_JOB_COLUMNS)}) VALUES ({', '.join('?' * len(_JOB_COLUMNS))})",
                tuple(values[name] for name in _JOB_COLUMNS),
            )
            rows = []
            for item in items:
                data = item.to_dict()
                data["params"] = json.dumps(data["params"], sort_keys=True, ensure_ascii=False)
                rows.append(tuple(data[name] for name in _ITEM_COLUMNS))
            conn.executemany(
                f"INSERT INTO bulk_items ({', '.join(_ITEM_COLUMNS)}) VALUES ({', '.join('?' * len(_ITEM_COLUMNS))})",
                rows,
            )

    def update_job(self, job_id: str, **values: Any) -> None:
        """Set job columns (``totals`` as a dict); ``updated_at`` is set too."""
        if "totals" in values:
            values["totals"] = json.dumps(values["totals"], sort_keys=True)
        values["updated_at"] = self.now()
        unknown = set(values) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job columns: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE bulk_jobs SET {assignments} WHERE id = ?", (*values.values(), job_id))

    def claim(self, job_id: str, line_no: int, from_statuses: Iterable[str]) -> bool:
        """Mark the item ``running`` (one more attempt) if it is in one of ``from_statuses``; committed before the
        action starts. False when the item is in another state (already done)."""
        statuses = list(from_statuses)
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE bulk_items SET status = ?, attempts = attempts + 1, started_at = ?, finished_at = NULL "
                f"WHERE job_id = ? AND line_no = ? AND status IN ({', '.join('?' * len(statuses))})",
                (RUNNING, self.now(), job_id, line_no, *statuses),
            )
            return cursor.rowcount == 1

    def finish(
        self, job_id: str, line_no: int, status: str, message: str | None, operation_id: str | None = None
    ) -> None:
        """The item's final status (committed)."""
        if status not in ITEM_STATUSES:
            raise ValueError(f"unknown item status {status!r}")
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE bulk_items SET status = ?, message = ?, operation_id = COALESCE(?, operation_id), "
                "finished_at = ? WHERE job_id = ? AND line_no = ?",
                (status, message, operation_id, self.now(), job_id, line_no),
            )

    # ----- reading -----
    def get(self, job_id: str) -> Job:
        """The job, or NotFoundError (exit 4) naming it."""
        text = (job_id or "").strip()
        row = (
            self.db.get_connection()
            .execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM bulk_jobs WHERE id = ?", (text,))
            .fetchone()
        )
        if row is None:
            raise NotFoundError(f"no bulk job '{text}'", hint="`imm bulk list` shows the jobs of this profile")
        return _job(row)

    def jobs(self, limit: int | None = None) -> list[Job]:
        """Newest first."""
        sql = f"SELECT {', '.join(_JOB_COLUMNS)} FROM bulk_jobs ORDER BY created_at DESC, id DESC"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        return [_job(row) for row in self.db.get_connection().execute(sql, params)]

    def items(self, job_id: str, statuses: Iterable[str] | None = None) -> list[Item]:
        """Items in line order, optionally only those in ``statuses``."""
        sql = f"SELECT {', '.join(_ITEM_COLUMNS)} FROM bulk_items WHERE job_id = ?"
        params: list[Any] = [job_id]
        if statuses is not None:
            wanted = list(statuses)
            sql += f" AND status IN ({', '.join('?' * len(wanted))})"
            params += wanted
        sql += " ORDER BY line_no"
        return [_item(row) for row in self.db.get_connection().execute(sql, params)]

    def counts(self, job_id: str) -> dict[str, int]:
        """Items by status (only statuses that occur)."""
        rows = self.db.get_connection().execute(
            "SELECT status, COUNT(*) FROM bulk_items WHERE job_id = ? GROUP BY status", (job_id,)
        )
        found = {str(r[0]): int(r[1]) for r in rows}
        return {status: found[status] for status in ITEM_STATUSES if status in found}

    def counts_by_job(self, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Items by status for several jobs at once."""
        out: dict[str, dict[str, int]] = {job_id: {} for job_id in job_ids}
        if not job_ids:
            return out
        rows = self.db.get_connection().execute(
            "SELECT job_id, status, COUNT(*) FROM bulk_items "
            f"WHERE job_id IN ({', '.join('?' * len(job_ids))}) GROUP BY job_id, status",
            tuple(job_ids),
        )
        for job_id, status, count in rows:
            out[str(job_id)][str(status)] = int(count)
        return out

    def item_success_operation(self, job_id: str, line_no: int) -> str | None:
        """The operation id of a ``success`` audit row that this item's action wrote (its details carry the
        job id and line), or None. Used when reconciliation finds an item done whose journal missed it."""
        row = (
            self.db.get_connection()
            .execute(
                "SELECT operation_id FROM audit_log WHERE result = 'success' AND details LIKE ? "
                "AND json_extract(details, '$.job_id') = ? AND json_extract(details, '$.line') = ? "
                "ORDER BY id DESC LIMIT 1",
                (f"%{job_id}%", job_id, line_no),
            )
            .fetchone()
        )
        return str(row[0]) if row and row[0] else None
