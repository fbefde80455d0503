"""The bulk job journal (tables of migration ``0003_jobs``): jobs, their items, and each item's state changes.

Every state change is its own committed transaction, so the journal on disk is never behind what was done in
Exchange by more than the item in flight: an item is marked ``running`` (commit) before its action starts and gets
its final status (commit) after. Each thread uses its own connection (``DatabaseManager`` gives one per thread).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
    "lease_owner",
    "lease_expires",
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
    lease_owner: str | None = None  # the worker that claimed it last (``imm bulk work``)
    lease_expires: str | None = None  # until when its claim holds; NULL: no live lease

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
        """Mark the item ``running`` (one more attempt) if it is in one of ``from_statuses`` and no worker holds a
        live lease on it; committed before the action starts. False when the item is in another state (already
        done) or leased. A claim of ``bulk run``/``resume`` (under the job's exclusive lock) holds no lease."""
        statuses = list(from_statuses)
        now = self.now()
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE bulk_items SET status = ?, attempts = attempts + 1, started_at = ?, finished_at = NULL, "
                "lease_owner = NULL, lease_expires = NULL "
                f"WHERE job_id = ? AND line_no = ? AND status IN ({', '.join('?' * len(statuses))}) "
                "AND (lease_expires IS NULL OR lease_expires < ?)",
                (RUNNING, now, job_id, line_no, *statuses, now),
            )
            return cursor.rowcount == 1

    def claim_next(
        self, job_id: str, owner: str, *, lease_seconds: float, stale_before: str, limit: int = 1
    ) -> list[Item]:
        """``imm bulk work``: claim up to ``limit`` items for worker ``owner`` with a lease of ``lease_seconds``,
        each committed ``running`` before its action starts. Claimable: ``pending`` items, and ``running`` ones
        whose worker is gone (its lease expired before ``stale_before``; with no lease, a killed ``bulk run``'s item
        started before it), which the caller reconciles with Exchange before anything is sent again.

        Returned as they were when claimed (``status``: the status claimed from; ``lease_owner``: the previous
        holder, if any). One claim statement per dialect: PostgreSQL ``UPDATE … FROM (SELECT … FOR UPDATE SKIP
        LOCKED)`` (workers never wait for each other's rows, and never for the store's write lock); SQLite the
        same rows under ``BEGIN IMMEDIATE`` (the file's one writer) with ``UPDATE … RETURNING``."""
        now = self.now()
        expires = stamp(self._clock() + timedelta(seconds=lease_seconds))
        claimable = (
            "job_id = ? AND (status = 'pending' OR (status = 'running' AND ((lease_expires IS NOT NULL AND "
            "lease_expires < ?) OR (lease_expires IS NULL AND started_at < ?))))"
        )
        assign = (
            "status = 'running', attempts = attempts + 1, started_at = ?, finished_at = NULL, lease_owner = ?, "
            "lease_expires = ?"
        )
        if self.db.is_postgresql:
            columns = ", ".join(f"b.{name}" for name in _ITEM_COLUMNS if name not in ("status", "lease_owner"))
            rows = self.db.get_connection().execute(
                f"UPDATE bulk_items AS b SET {assign.replace('attempts + 1', 'b.attempts + 1')} "
                "FROM (SELECT job_id, line_no, status AS was, lease_owner AS held_by FROM bulk_items "
                f"WHERE {claimable} ORDER BY line_no LIMIT ? FOR UPDATE SKIP LOCKED) AS c "
                f"WHERE b.job_id = c.job_id AND b.line_no = c.line_no RETURNING {columns}, c.was, c.held_by",
                (now, owner, expires, job_id, stale_before, stale_before, limit),
            )
            found = rows.fetchall()
        else:
            columns = ", ".join(name for name in _ITEM_COLUMNS if name not in ("status", "lease_owner"))
            with self.db.transaction() as conn:
                was = {
                    int(r[0]): (str(r[1]), r[2])
                    for r in conn.execute(
                        f"SELECT line_no, status, lease_owner FROM bulk_items WHERE {claimable} "
                        "ORDER BY line_no LIMIT ?",
                        (job_id, stale_before, stale_before, limit),
                    )
                }
                if not was:
                    return []
                returned = conn.execute(
                    f"UPDATE bulk_items SET {assign} WHERE job_id = ? "
                    f"AND line_no IN ({', '.join('?' * len(was))}) RETURNING {columns}",
                    (now, owner, expires, job_id, *was),
                ).fetchall()
                found = [(*row, *was[int(row[1])]) for row in returned]
        names = [name for name in _ITEM_COLUMNS if name not in ("status", "lease_owner")] + ["status", "lease_owner"]
        items = []
        for row in found:
            values = dict(zip(names, row, strict=True))
            values["params"] = json.loads(values.get("params") or "{}")
            items.append(Item(**values))
        return sorted(items, key=lambda i: i.line_no)

    def renew(self, job_id: str, owner: str, lines: Collection[int], lease_seconds: float) -> int:
        """Extend ``owner``'s leases on the items ``lines`` it is running; how many it still held."""
        if not lines:
            return 0
        expires = stamp(self._clock() + timedelta(seconds=lease_seconds))
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE bulk_items SET lease_expires = ? WHERE job_id = ? AND lease_owner = ? AND status = 'running' "
                f"AND line_no IN ({', '.join('?' * len(lines))})",
                (expires, job_id, owner, *lines),
            )
            return int(cursor.rowcount)

    def live_leases(self, job_id: str) -> int:
        """Items a worker is running right now under a lease that has not expired."""
        row = (
            self.db.get_connection()
            .execute(
                "SELECT COUNT(*) FROM bulk_items WHERE job_id = ? AND status = 'running' AND lease_expires >= ?",
                (job_id, self.now()),
            )
            .fetchone()
        )
        return int(row[0])

    def add_run(self, job_id: str) -> None:
        """One more run of the job (a worker's start), counted in the database (workers start at once)."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE bulk_jobs SET status = ?, runs = runs + 1, updated_at = ? WHERE id = ?",
                (JOB_RUNNING, self.now(), job_id),
            )

    def finish(
        self,
        job_id: str,
        line_no: int,
        status: str,
        message: str | None,
        operation_id: str | None = None,
        *,
        owner: str | None = None,
    ) -> bool:
        """The item's final status (committed); its lease ends. With ``owner`` (a worker), only while that worker
        still holds the item: False when its lease was taken over (it had expired)."""
        if status not in ITEM_STATUSES:
            raise ValueError(f"unknown item status {status!r}")
        sql = (
            "UPDATE bulk_items SET status = ?, message = ?, operation_id = COALESCE(?, operation_id), "
            "finished_at = ?, lease_expires = NULL WHERE job_id = ? AND line_no = ?"
        )
        params: tuple[Any, ...] = (status, message, operation_id, self.now(), job_id, line_no)
        if owner is not None:
            sql += " AND lease_owner = ? AND status = 'running'"
            params += (owner,)
        with self.db.transaction() as conn:
            return conn.execute(sql, params).rowcount == 1

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
                "AND json_extract(details, '$.job_id') = ? AND CAST(json_extract(details, '$.line') AS INTEGER) = ? "
                "ORDER BY id DESC LIMIT 1",
                (f"%{job_id}%", job_id, line_no),
            )
            .fetchone()
        )
        return str(row[0]) if row and row[0] else None
