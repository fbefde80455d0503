"""The audit log: write-ahead, tamper-evident (a SHA-256 hash chain), queryable (seed Task 3, design §3, §10).

Every change to Exchange is recorded twice, tied by an operation id: a ``started`` row before the call (with the
mailbox's state before) and a result row after it (``success`` with the state after, ``failure`` with Microsoft's
message, or ``cancelled``)::

    with audit.operation(OperationType.RECOVER_MAILBOX, guid, details={"before": state}) as op:
        result = exchange.recover(guid)
        op.succeeded({"after": new_state})

A crash in between leaves a ``started`` row with no result (``imm audit list --incomplete``). Rows are appended
under ``BEGIN IMMEDIATE`` (read the last hash, insert), so concurrent processes keep one valid chain. Details pass
through ``imm.logs.redact_data`` before they are hashed and written. The hash recipe is in ``imm.data.audit_chain``.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import wraps
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from imm.data import audit_signing as signing
from imm.data import postgres
from imm.data.audit_chain import (
    GENESIS_HASH,
    VerifyReport,
    canonical_json,
    checkpoint_hash,
    jsonable,
    row_hash,
    verify_chain,
)
from imm.data.models import AuditLogEntry
from imm.errors import ExitStatus, ImmError, InputError, StoreError
from imm.logs import redact, redact_data

if TYPE_CHECKING:
    from imm.data.database import DatabaseManager

log = logging.getLogger("imm.audit")
P = ParamSpec("P")
R = TypeVar("R")

EXPORT_FORMAT = "imm-audit-export"
EXPORT_VERSION = 1


class OperationType(StrEnum):
    """What an audit row records. Values are the names (``OperationType.CONNECT.value == "CONNECT"``)."""

    # the seed's
    CONNECT = "CONNECT"
    DISCONNECT = "DISCONNECT"
    LIST_MAILBOXES = "LIST_MAILBOXES"
    GET_MAILBOX_DETAILS = "GET_MAILBOX_DETAILS"
    RECOVER_MAILBOX = "RECOVER_MAILBOX"
    RESTORE_MAILBOX = "RESTORE_MAILBOX"
    REMOVE_HOLD = "REMOVE_HOLD"
    CHANGE_HOLD = "CHANGE_HOLD"
    BULK_OPERATION = "BULK_OPERATION"
    EXPORT_DATA = "EXPORT_DATA"
    ERROR = "ERROR"
    # sign-in and inventory
    LOGIN = "LOGIN"
    LOGOUT = "LOGOUT"
    SYNC = "SYNC"
    REPORT = "REPORT"
    CACHE_CLEAR = "CACHE_CLEAR"
    CACHE_REBUILD = "CACHE_REBUILD"
    # restore requests and addresses
    RESTORE_STATUS = "RESTORE_STATUS"
    REMOVE_RESTORE_REQUEST = "REMOVE_RESTORE_REQUEST"
    SUSPEND_RESTORE_REQUEST = "SUSPEND_RESTORE_REQUEST"
    RESUME_RESTORE_REQUEST = "RESUME_RESTORE_REQUEST"
    ADD_ADDRESS = "ADD_ADDRESS"
    REMOVE_ADDRESS = "REMOVE_ADDRESS"
    # bulk jobs and the audit log itself
    BULK_RESUME = "BULK_RESUME"
    BULK_WORK = "BULK_WORK"  # one worker's share of a job (imm bulk work)
    PRUNE = "PRUNE"
    # four-eyes approval of bulk jobs (imm.services.approval)
    BULK_SUBMIT = "BULK_SUBMIT"
    BULK_APPROVE = "BULK_APPROVE"
    BULK_REJECT = "BULK_REJECT"


# operations that change Exchange or the log itself: with audit_auto_anchor, their result rows are anchored
CHANGE_OPERATIONS = frozenset(
    {
        "RECOVER_MAILBOX",
        "RESTORE_MAILBOX",
        "REMOVE_HOLD",
        "CHANGE_HOLD",
        "BULK_OPERATION",
        "BULK_RESUME",
        "BULK_WORK",
        "BULK_APPROVE",
        "REMOVE_RESTORE_REQUEST",
        "ADD_ADDRESS",
        "REMOVE_ADDRESS",
        "PRUNE",
    }
)


class AuditResult(StrEnum):
    """The ``result`` column."""

    STARTED = "started"  # write-ahead intent; a result row with the same operation_id follows
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    PARTIAL = "partial"  # a bulk run where some items failed
    PREVIEW = "preview"  # a what-if: nothing was changed
    SKIPPED = "skipped"
    UNKNOWN = "unknown"  # interrupted or ambiguous: Exchange may or may not have made the change (not reconciled)
    INTERRUPTED = "interrupted"  # the process died before recording a result; closed by the next run (a sync)


class AuditIntegrityError(ImmError):
    """``imm audit verify`` found a row or checkpoint that was edited, deleted, inserted or reordered."""

    code = "audit_tampered"

    def __init__(self, report: VerifyReport) -> None:
        where = {"audit_checkpoints": "checkpoint", "audit_anchors": "anchor"}.get(str(report.bad_table), "row")
        super().__init__(
            f"audit log verification failed at {where} {report.bad_id}: {report.problem}",
            hint="keep this database file as evidence; compare with an earlier export (imm audit export)",
        )
        self.report = report


_COLUMNS = (
    "id, timestamp, operation, identity, user, tenant, operation_id, result, error_message, details, "
    "prev_hash, row_hash"
)
_CHECKPOINT_COLUMNS = (
    "id, timestamp, user, tenant, first_kept_id, cut_hash, pruned_count, retention_days, prev_hash, checkpoint_hash"
)


# The highest audit_log id ever used (rows cut off the end show against it), and a read snapshot, per dialect.
_SEQUENCE = {
    "sqlite": "SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'",
    "postgresql": "SELECT seq FROM audit_sequence WHERE name = 'audit_log'",
}
_SNAPSHOT = {"sqlite": "BEGIN", "postgresql": "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"}


def _mapped(method: Callable[P, R]) -> Callable[P, R]:
    """SQLite failures while using the audit log become one-line StoreErrors (exit 1), never tracebacks."""

    @wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (sqlite3.Error, postgres.DatabaseError) as exc:
            from imm.data.database import store_error

            db = getattr(args[0], "db", None)
            path = str(getattr(db, "display_path", None) or getattr(db, "db_path", "the database"))
            mapped = store_error(exc, path) or StoreError(f"{path}: the audit log cannot be used ({exc})")
            raise mapped from exc

    return wrapper


def format_timestamp(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds and ``+00:00``: fixed width, so text order is time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def local_user() -> str:
    """``local:<os account>``: who ran imm when nobody is signed in (prune, export)."""
    try:
        return f"local:{getpass.getuser()}"
    except (OSError, KeyError, ImportError):
        return "local:unknown"


def _as_dicts(cursor: sqlite3.Cursor) -> Iterator[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    for row in cursor:
        yield dict(zip(names, tuple(row), strict=True))


def _entry(row: Mapping[str, Any]) -> AuditLogEntry:
    try:
        details = json.loads(row["details"]) if row["details"] else {}
    except ValueError:
        details = {"unparsed": row["details"]}
    details = details if isinstance(details, dict) else {"value": details}
    try:
        timestamp = datetime.fromisoformat(row["timestamp"])
    except (TypeError, ValueError):  # a row edited outside imm (verify names it): still listed and exported
        timestamp = datetime.min.replace(tzinfo=UTC)
        details = {**details, "unparsed_timestamp": row["timestamp"]}
    return AuditLogEntry(
        id=row["id"],
        timestamp=timestamp,
        operation=row["operation"],
        identity=row["identity"],
        user=row["user"],
        details=details,
        result=row["result"],
        error_message=row["error_message"],
        operation_id=row["operation_id"],
        tenant=row["tenant"],
        prev_hash=row["prev_hash"],
        row_hash=row["row_hash"],
    )


def _blob_hex(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"blob_hex": bytes(value).hex()}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def entry_to_dict(entry: AuditLogEntry) -> dict[str, Any]:
    """An entry as JSON-ready data, with the chain fields."""
    return {
        "id": entry.id,
        "timestamp": format_timestamp(entry.timestamp),
        "operation": entry.operation,
        "identity": entry.identity,
        "user": entry.user,
        "tenant": entry.tenant,
        "operation_id": entry.operation_id,
        "result": entry.result,
        "error_message": entry.error_message,
        "details": entry.details,
        "prev_hash": entry.prev_hash,
        "row_hash": entry.row_hash,
    }


@dataclass(frozen=True)
class PrunePlan:
    """What a prune would remove: rows ``first_id``..``last_id`` (``count``), older than ``cutoff``."""

    count: int
    cutoff: datetime
    first_id: int | None
    last_id: int | None


class AuditOperation:
    """One write-ahead operation: the ``started`` row is written; call ``succeeded``/``failed``/``finish`` once.

    ``details`` (settable) are written with the result when the ``with`` block ends without an explicit result.
    """

    def __init__(self, logger: AuditLogger, operation_id: str, user: str | None) -> None:
        self.logger = logger
        self.operation_id = operation_id
        self.user = user
        self.details: dict[str, Any] = {}
        self.result: AuditLogEntry | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None

    def finish(
        self, result: AuditResult | str, details: Mapping[str, Any] | None = None, error: str | None = None
    ) -> AuditLogEntry:
        if self.result is not None:
            raise RuntimeError(f"audit operation {self.operation_id} already has a result")
        self.result = self.logger.finish(
            self.operation_id, result, details if details is not None else self.details, error, user=self.user
        )
        return self.result

    def succeeded(self, details: Mapping[str, Any] | None = None) -> AuditLogEntry:
        return self.finish(AuditResult.SUCCESS, details)

    def failed(self, error: str, details: Mapping[str, Any] | None = None) -> AuditLogEntry:
        return self.finish(AuditResult.FAILURE, details, error)

    def cancelled(self, details: Mapping[str, Any] | None = None, reason: str = "cancelled") -> AuditLogEntry:
        return self.finish(AuditResult.CANCELLED, details, reason)


def error_text(exc: BaseException) -> str:
    """The message recorded for an exception: an ImmError's own message (Microsoft's words), else type: text."""
    if isinstance(exc, ImmError):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted by the user"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_cancellation(exc: BaseException) -> bool:
    """Ctrl+C, or an ImmError that reports it (exit 130): recorded as ``cancelled`` rather than ``failure``."""
    if isinstance(exc, ImmError):
        return exc.exit_code == ExitStatus.INTERRUPTED
    return not isinstance(exc, Exception)


class OperationContext:
    """The ``with audit.operation(...)`` context: writes the result row when the block ends."""

    def __init__(self, logger: AuditLogger, begin_args: dict[str, Any]) -> None:
        self.logger = logger
        self.begin_args = begin_args
        self.op: AuditOperation | None = None

    def __enter__(self) -> AuditOperation:
        user = self.begin_args.get("user")
        self.op = AuditOperation(self.logger, self.logger.begin(**self.begin_args), user)
        return self.op

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        op = self.op
        if op is None or op.finished:
            return
        if exc is None:
            op.succeeded()
            return
        details = dict(op.details)
        if isinstance(exc, ImmError):
            details.setdefault("error_code", exc.code)
        result = AuditResult.CANCELLED if is_cancellation(exc) else AuditResult.FAILURE
        try:
            op.finish(result, details, error_text(exc))
        except Exception:  # never hide the original error behind an audit failure
            log.error("could not record the result of audit operation %s", op.operation_id, exc_info=True)


class AuditLogger:
    """Appends to and reads the audit log of one database.

    ``tenant`` and ``user`` go into every row this logger writes (``user`` defaults to ``local:<os account>``);
    ``clock`` returns the current time (UTC), for tests and for replaying.
    """

    def __init__(
        self,
        db: DatabaseManager,
        tenant: str | None = None,
        user: str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        keying: signing.AuditKeying | None = None,
    ) -> None:
        self.db = db
        self.tenant = tenant
        self.user = user
        self._clock = clock or (lambda: datetime.now(UTC))
        self.keying = keying or signing.AuditKeying(signing.AuditKeying.default_key_path(db.db_path))
        self._key: signing.AuditKey | None = None
        self._key_loaded = False

    @property
    def key(self) -> signing.AuditKey | None:
        """The profile's audit signing key, or None when the log is not keyed (``imm audit anchor`` keys it)."""
        if not self._key_loaded:
            self._key = signing.AuditKey.load(self.keying.key_path)
            self._key_loaded = True
        return self._key

    # ----- writing -----

    @_mapped
    def log_operation(
        self,
        operation: OperationType | str,
        identity: str | None,
        details: Mapping[str, Any] | None,
        result: AuditResult | str,
        error: str | None = None,
        *,
        user: str | None = None,
        operation_id: str | None = None,
    ) -> AuditLogEntry:
        """Append one row (an event that needs no write-ahead pair, or a result row given its operation id)."""
        fields = self._prepare(operation, identity, details, result, error, user, operation_id)
        conn = self.db.get_connection()
        if conn.in_transaction:  # part of the caller's transaction: its COMMIT decides durability
            with self.db.transaction() as conn:
                return self._insert(conn, fields)
        # An audit row must survive a power cut, not only a crash: sync the WAL on this commit (the store's
        # default, synchronous=NORMAL, may lose the last commits when the machine stops).
        if self.db.is_postgresql:  # the server's commit is durable (synchronous_commit is its setting)
            with self.db.transaction() as conn:
                entry = self._insert(conn, fields)
        else:
            previous = conn.execute("PRAGMA synchronous").fetchone()[0]
            conn.execute("PRAGMA synchronous = FULL")
            try:
                with self.db.transaction() as conn:
                    entry = self._insert(conn, fields)
            finally:
                conn.execute(f"PRAGMA synchronous = {int(previous)}")
        if self.keying.auto_anchor and fields["operation"] in CHANGE_OPERATIONS and fields["result"] != "started":
            self._auto_anchor()
        return entry

    def _auto_anchor(self) -> None:
        """Anchor after a change (profile setting audit_auto_anchor); a failure is logged, the change stands."""
        try:
            if self.key is not None:
                self.anchor()
        except ImmError as exc:
            log.error("could not anchor the audit log after a change: %s", exc.message)

    def begin(
        self,
        operation: OperationType | str,
        identity: str | None,
        details: Mapping[str, Any] | None = None,
        *,
        user: str | None = None,
        operation_id: str | None = None,
    ) -> str:
        """Record the intent (a ``started`` row) before calling Exchange; returns the operation id."""
        operation_id = operation_id or uuid.uuid4().hex
        self.log_operation(operation, identity, details, AuditResult.STARTED, user=user, operation_id=operation_id)
        return operation_id

    @_mapped
    def finish(
        self,
        operation_id: str,
        result: AuditResult | str,
        details: Mapping[str, Any] | None = None,
        error: str | None = None,
        *,
        user: str | None = None,
    ) -> AuditLogEntry:
        """Record the result of the operation ``begin`` started (operation and identity come from its row)."""
        if AuditResult(result) is AuditResult.STARTED:
            raise ValueError("finish() needs a result, not 'started'")
        conn = self.db.get_connection()
        started = conn.execute(
            "SELECT operation, identity, user FROM audit_log WHERE operation_id = ? AND result = 'started' "
            "ORDER BY id LIMIT 1",
            (operation_id,),
        ).fetchone()
        if started is None:
            raise ValueError(f"no started audit operation with id {operation_id!r}")
        operation, identity, started_user = tuple(started)
        return self.log_operation(
            operation, identity, details, result, error, user=user or started_user, operation_id=operation_id
        )

    def operation(
        self,
        operation: OperationType | str,
        identity: str | None,
        details: Mapping[str, Any] | None = None,
        *,
        user: str | None = None,
        operation_id: str | None = None,
    ) -> OperationContext:
        """Write-ahead context: ``started`` now; on exit success, failure (the ImmError's message) or cancelled.

        Exceptions are recorded and re-raised; ``KeyboardInterrupt`` is recorded as ``cancelled``.
        """
        args = {"operation": operation, "identity": identity, "details": details, "user": user}
        args["operation_id"] = operation_id
        return OperationContext(self, args)

    def _prepare(
        self,
        operation: OperationType | str,
        identity: str | None,
        details: Mapping[str, Any] | None,
        result: AuditResult | str,
        error: str | None,
        user: str | None,
        operation_id: str | None,
    ) -> dict[str, Any]:
        try:
            op_value = OperationType(str(operation).upper()).value
        except ValueError:
            raise ValueError(f"unknown audit operation {operation!r}") from None
        if details is not None and not isinstance(details, Mapping):
            raise TypeError("audit details must be a mapping")
        return {
            "operation": op_value,
            "identity": None if identity is None else str(identity),
            "user": user or self.user or local_user(),
            "tenant": self.tenant,
            "operation_id": operation_id,
            "result": AuditResult(result).value,
            "error_message": redact(error) if error else None,
            "details": canonical_json(redact_data(jsonable(details or {}))),
        }

    def _insert(self, conn: sqlite3.Connection, fields: dict[str, Any]) -> AuditLogEntry:
        """Append under the caller's BEGIN IMMEDIATE: read the last hash and the next id, insert the row."""
        last = conn.execute("SELECT id, row_hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        seq = conn.execute(_SEQUENCE[self.db.dialect]).fetchone()
        last_id = int(last[0]) if last else 0
        if last:
            prev_hash = str(last[1])
        else:  # empty: the start of the chain, or a prune just removed every row
            checkpoint = conn.execute("SELECT cut_hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1").fetchone()
            prev_hash = str(checkpoint[0]) if checkpoint else GENESIS_HASH
        row = {
            "id": max(last_id, int(seq[0]) if seq else 0) + 1,
            "timestamp": format_timestamp(self._clock()),
            **fields,
            "prev_hash": prev_hash,
        }
        row["row_hash"] = row_hash(row)
        conn.execute(
            f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tuple(row[name.strip()] for name in _COLUMNS.split(",")),
        )
        self._sign(conn, "row", int(row["id"]), signing.row_message(str(row["row_hash"])))
        return _entry(row)

    def _sign(self, conn: sqlite3.Connection, kind: str, ref_id: int, message: bytes) -> None:
        key = self.key
        if key is not None:
            conn.execute(
                "INSERT INTO audit_signatures (kind, ref_id, key_id, signature) VALUES (?, ?, ?, ?)",
                (kind, ref_id, key.key_id, key.sign(message)),
            )

    # ----- reading -----

    @_mapped
    def get_operations(self, *args: Any, **kwargs: Any) -> list[AuditLogEntry]:
        """:meth:`iter_operations` (the same arguments) as a list."""
        return list(self.iter_operations(*args, **kwargs))

    @_mapped
    def iter_operations(
        self,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        *,
        identity: str | Iterable[str] | None = None,
        operation: OperationType | str | Iterable[OperationType | str] | None = None,
        result: AuditResult | str | Iterable[AuditResult | str] | None = None,
        user: str | None = None,
        operation_id: str | None = None,
        incomplete: bool = False,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[AuditLogEntry]:
        """Rows in id (time) order, filtered, read from a cursor as they are used (flat memory at any size);
        ``incomplete`` keeps ``started`` rows that have no result row."""
        where: list[str] = []
        params: list[Any] = []
        if start_date is not None:
            where.append("timestamp >= ?")
            params.append(format_timestamp(start_date))
        if end_date is not None:
            where.append("timestamp <= ?")
            params.append(format_timestamp(end_date))
        if identity is not None:
            names = [identity] if isinstance(identity, str) else list(dict.fromkeys(identity))
            where.append(f"identity COLLATE NOCASE IN ({', '.join('?' * len(names))})")
            params.extend(names)
        for column, values in (("operation", operation), ("result", result)):
            if values is None:
                continue
            items = [str(v) for v in ([values] if isinstance(values, str) else values)]
            where.append(f"{column} IN ({', '.join('?' * len(items))})")
            params.extend(v.upper() if column == "operation" else v.lower() for v in items)
        if user is not None:
            where.append("user = ? COLLATE NOCASE")
            params.append(user)
        if operation_id is not None:
            where.append("operation_id = ?")
            params.append(operation_id)
        if incomplete:
            where.append(
                "result = 'started' AND NOT EXISTS (SELECT 1 FROM audit_log AS r "
                "WHERE r.operation_id = audit_log.operation_id AND r.result != 'started')"
            )
        sql = f"SELECT {_COLUMNS} FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        if limit is not None and limit > 0:
            sql += " LIMIT ?"
            params.append(int(limit))
        cursor = self.db.get_connection().execute(sql, params)
        return (_entry(row) for row in _as_dicts(cursor))

    def identities_recorded_for(self, address: str) -> list[str]:
        """The row identities (ExchangeGuids) whose recorded mailbox state names ``address`` as its primary SMTP
        address or UPN: finds a mailbox's rows by address after it left the cache (recovered, released)."""
        paths = ("$.before.PrimarySmtpAddress", "$.before.UserPrincipalName", "$.before.source.PrimarySmtpAddress")
        clauses = " OR ".join(f"json_extract(details, '{path}') = ? COLLATE NOCASE" for path in paths)
        rows = self.db.get_connection().execute(
            f"SELECT DISTINCT identity FROM audit_log WHERE identity IS NOT NULL AND ({clauses})",
            tuple(address for _ in paths),
        )
        return [str(r[0]) for r in rows]

    def get_operations_for_mailbox(self, identity: str) -> list[AuditLogEntry]:
        return self.get_operations(identity=identity)

    def get_incomplete(self) -> list[AuditLogEntry]:
        """Operations that started and never recorded a result (a crash or kill in between)."""
        return self.get_operations(incomplete=True)

    @_mapped
    def count(self) -> int:
        return int(self.db.get_connection().execute("SELECT COUNT(*) FROM audit_log").fetchone()[0])

    @_mapped
    def checkpoints(self) -> list[dict[str, Any]]:
        cursor = self.db.get_connection().execute(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY id")
        return list(_as_dicts(cursor))

    # ----- verification -----

    @_mapped
    def verify(self) -> VerifyReport:
        """Recompute every hash and link (rows and checkpoints) in one read snapshot."""
        conn = self.db.get_connection()
        own = not conn.in_transaction
        if own:
            conn.execute(_SNAPSHOT[self.db.dialect])
        try:
            checkpoints = list(
                _as_dicts(conn.execute(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY id"))
            )
            seq = conn.execute(_SEQUENCE[self.db.dialect]).fetchone()
            rows = _as_dicts(conn.execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY id"))
            report = verify_chain(rows, checkpoints, int(seq[0]) if seq else None)
            key = self.key
            if not report.ok or key is None:
                return report
            finding = signing.check_signatures(
                key,
                key.keyed_from_row,
                key.keyed_from_checkpoint,
                ((int(r[0]), str(r[1])) for r in conn.execute("SELECT id, row_hash FROM audit_log ORDER BY id")),
                checkpoints,
                self._stored_anchors(conn).values(),
                {
                    (str(r[0]), int(r[1])): str(r[2])
                    for r in conn.execute("SELECT kind, ref_id, signature FROM audit_signatures")
                },
                self._row_hashes(conn),
            )
            if finding.problem is not None:
                return replace(
                    report, ok=False, problem=finding.problem, bad_id=finding.bad_id, bad_table=finding.bad_table
                )
            return replace(
                report,
                keyed=True,
                signed_rows=finding.signed_rows,
                uncovered_rows=finding.uncovered_rows,
                anchors_checked=finding.anchors_checked,
            )
        finally:
            if own:
                conn.execute("ROLLBACK")

    def _stored_anchors(self, conn: sqlite3.Connection) -> dict[int, dict[str, Any]]:
        cursor = conn.execute(
            "SELECT anchor_id, timestamp, tenant, head_id, head_hash, head_timestamp, row_count, checkpoint_count, "
            "prev_anchor_hash, key_id, anchor_hash, signature FROM audit_anchors ORDER BY anchor_id"
        )
        return {int(a["anchor_id"]): {"format": signing.ANCHOR_FORMAT, "version": 1, **a} for a in _as_dicts(cursor)}

    @staticmethod
    def _row_hashes(conn: sqlite3.Connection) -> dict[int, str]:
        return {int(r[0]): str(r[1]) for r in conn.execute("SELECT id, row_hash FROM audit_log")}

    @_mapped
    def verify_against(self, witness_path: Path) -> VerifyReport:
        """``verify`` plus the anchors of an external witness file: the first failure, named."""
        key = self.key
        if key is None:
            raise InputError(
                f"this profile's audit log is not keyed (no key at {self.keying.key_path})",
                hint="imm audit anchor creates the key and the first anchor",
            )
        witness = signing.read_witness(witness_path)
        conn = self.db.get_connection()
        own = not conn.in_transaction
        if own:
            conn.execute(_SNAPSHOT[self.db.dialect])
        try:
            problem, bad_id = signing.check_witness(
                key, witness, self._stored_anchors(conn), self._row_hashes(conn), self.checkpoints()
            )
        finally:
            if own:
                conn.execute("ROLLBACK")
        if problem is not None:
            table = "audit_anchors" if problem.startswith(("bad signature", "missing anchor")) else "audit_log"
            return VerifyReport(ok=False, bad_id=bad_id, bad_table=table, problem=problem, keyed=True)
        report = self.verify()
        return replace(report, anchors_checked=len(witness)) if report.ok else report

    # ----- anchoring -----

    @_mapped
    def init_key(self) -> signing.AuditKey:
        """Create the profile's key (refused if one exists); rows and checkpoints from now on are signed."""
        conn = self.db.get_connection()
        seq = conn.execute(_SEQUENCE[self.db.dialect]).fetchone()
        last = conn.execute("SELECT MAX(id) FROM audit_log").fetchone()[0]
        cp = conn.execute("SELECT MAX(id) FROM audit_checkpoints").fetchone()[0]
        key = signing.AuditKey.create(
            self.keying.key_path,
            row_id=max(int(seq[0]) if seq else 0, int(last or 0)) + 1,
            checkpoint_id=int(cp or 0) + 1,
            created_at=format_timestamp(self._clock()),
        )
        self._key, self._key_loaded = key, True
        return key

    @_mapped
    def anchor(self, witness: str | None = None) -> dict[str, Any]:
        """Sign the head of the log, store the anchor and append it to the witness (the profile's, or ``witness``).

        The witness is written inside the transaction that stores the anchor: if it cannot be written, no anchor
        is recorded."""
        key = self.key
        if key is None:
            raise InputError(
                f"this profile's audit log is not keyed (no key at {self.keying.key_path})",
                hint="imm audit anchor --init creates the key",
            )
        target = witness if witness is not None else self.keying.witness
        with self.db.transaction() as conn:
            head = conn.execute("SELECT id, row_hash, timestamp FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
            if head is None:
                raise InputError("the audit log has no rows to anchor")
            previous = conn.execute(
                "SELECT anchor_id, anchor_hash FROM audit_anchors ORDER BY anchor_id DESC LIMIT 1"
            ).fetchone()
            anchor: dict[str, Any] = {
                "format": signing.ANCHOR_FORMAT,
                "version": 1,
                "anchor_id": (int(previous[0]) if previous else 0) + 1,
                "timestamp": format_timestamp(self._clock()),
                "tenant": self.tenant,
                "head_id": int(head[0]),
                "head_hash": str(head[1]),
                "head_timestamp": str(head[2]),
                "row_count": int(conn.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]),
                "checkpoint_count": int(conn.execute("SELECT COUNT(*) FROM audit_checkpoints").fetchone()[0]),
                "prev_anchor_hash": str(previous[1]) if previous else GENESIS_HASH,
                "key_id": key.key_id,
            }
            anchor["anchor_hash"] = signing.anchor_hash(anchor)
            anchor["signature"] = key.sign(signing.anchor_message(anchor))
            stored = {k: v for k, v in anchor.items() if k not in ("format", "version")}
            conn.execute(
                f"INSERT INTO audit_anchors ({', '.join(stored)}, witness) VALUES ({', '.join('?' * len(stored))}, ?)",
                (*stored.values(), target),
            )
            if target:
                signing.append_witness(target, {**anchor, "public_key": key.b64})
        return anchor

    # ----- export -----

    @_mapped
    def export_to_json(
        self,
        path: Path | str,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        *,
        user: str | None = None,
    ) -> int:
        """Write rows (with their chain fields) and all checkpoints to ``path``; returns the row count.

        The export is recorded as an EXPORT_DATA row carrying the file's SHA-256.
        """
        path = Path(path)
        where, params = [], []
        if start_date is not None:
            where.append("timestamp >= ?")
            params.append(format_timestamp(start_date))
        if end_date is not None:
            where.append("timestamp <= ?")
            params.append(format_timestamp(end_date))
        conn = self.db.get_connection()
        bounds = conn.execute(
            "SELECT MIN(id), MAX(id) FROM audit_log" + (" WHERE " + " AND ".join(where) if where else ""), params
        ).fetchone()
        first_id, last_id = bounds[0], bounds[1]
        # the whole id range, so the exported chain is contiguous even if the clock ever stepped back
        cursor = conn.execute(
            f"SELECT {_COLUMNS} FROM audit_log WHERE id BETWEEN ? AND ? ORDER BY id",
            (first_id or 0, last_id or -1),
        )
        # the stored text of the hashed fields, as the hash recipe needs them (also for a row edited outside imm)
        entries = [
            {**entry_to_dict(_entry(row)), "timestamp": row["timestamp"], "details_json": row["details"]}
            for row in _as_dicts(cursor)
        ]
        head = conn.execute("SELECT id, row_hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        since = format_timestamp(start_date) if start_date else None
        until = format_timestamp(end_date) if end_date else None
        document = {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": format_timestamp(self._clock()),
            "tenant": self.tenant,
            "range": {"since": since, "until": until, "first_id": first_id, "last_id": last_id},
            "head": {"id": head[0], "row_hash": head[1]} if head else None,
            "genesis_hash": GENESIS_HASH,
            "hash_recipe": (
                "row_hash = hex(sha256(utf8(compact_json([id, timestamp, operation, identity, user, tenant, "
                "operation_id, result, error_message, details_json, prev_hash])))); details_json = the canonical "
                "JSON text of details (sorted keys, separators ',' and ':', non-ASCII as is); the first row's "
                "prev_hash is 64 zeros or the latest checkpoint's cut_hash"
            ),
            "checkpoints": self.checkpoints(),
            "entries": entries,
        }
        # a column edited outside imm into a BLOB is exported as its hex (verify names the row), never a crash
        data = (json.dumps(document, ensure_ascii=False, indent=2, default=_blob_hex) + "\n").encode("utf-8")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it names users and mailboxes
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write the export to {path}: {exc.strerror or exc}") from None
        try:  # the file appears only once its export is on record (e.g. not when the database is locked)
            self.log_operation(
                OperationType.EXPORT_DATA,
                None,
                {
                    "path": str(path.resolve()),
                    "rows": len(entries),
                    "first_id": first_id,
                    "last_id": last_id,
                    "since": since,
                    "until": until,
                    "sha256": hashlib.sha256(data).hexdigest(),
                },
                AuditResult.SUCCESS,
                user=user,
            )
            os.replace(tmp, path)
        except OSError as exc:
            raise InputError(f"cannot write the export to {path}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return len(entries)

    # ----- retention -----

    @_mapped
    def prune_preview(self, retention_days: int) -> PrunePlan:
        """The rows a prune with this retention would remove (a prefix of the log, older than the cutoff)."""
        cutoff = self._clock() - timedelta(days=retention_days)
        conn = self.db.get_connection()
        return self._plan(conn, cutoff)

    def _plan(self, conn: sqlite3.Connection, cutoff: datetime) -> PrunePlan:
        first_new = conn.execute(
            "SELECT MIN(id) FROM audit_log WHERE timestamp >= ?", (format_timestamp(cutoff),)
        ).fetchone()[0]
        bounds = conn.execute("SELECT MIN(id), MAX(id) FROM audit_log").fetchone()
        first, last = bounds[0], bounds[1]
        if first is None:
            return PrunePlan(0, cutoff, None, None)
        cut = int(first_new) - 1 if first_new is not None else int(last)
        cut = min(cut, self._first_open_row(conn) - 1)
        count = conn.execute("SELECT COUNT(*) FROM audit_log WHERE id <= ?", (cut,)).fetchone()[0]
        return PrunePlan(int(count), cutoff, int(first) if count else None, cut if count else None)

    @staticmethod
    def _first_open_row(conn: sqlite3.Connection) -> int:
        """The first row a prune must keep whatever its age (the prune stops before it): a ``started`` row whose
        operation has no result yet, or a row of a bulk job that is still open (not completed), so that an
        operation in flight or a job being run or resumed never loses its rows."""
        open_jobs = "SELECT id FROM bulk_jobs WHERE status NOT IN ('completed', 'completed_with_errors')"
        found = conn.execute(
            f"""SELECT MIN(id) FROM audit_log AS a
                WHERE (a.result = 'started' AND a.operation_id IS NOT NULL AND NOT EXISTS (
                          SELECT 1 FROM audit_log AS r
                          WHERE r.operation_id = a.operation_id AND r.result != 'started'))
                   OR a.identity IN ({open_jobs})
                   OR json_extract(a.details, '$.job_id') IN ({open_jobs})"""
        ).fetchone()[0]
        return int(found) if found is not None else 1 << 62

    @_mapped
    def prune_old_entries(self, retention_days: int, user: str | None = None, *, min_retention_days: int = 0) -> int:
        """Remove rows older than ``retention_days``; record a checkpoint and a PRUNE row. Returns rows removed.

        Only a prefix of the log is removed, so the remaining chain starts at the checkpoint's cut hash.
        """
        if retention_days < 0:
            raise InputError(f"retention must be 0 days or more (got {retention_days})")
        if retention_days < min_retention_days:
            raise InputError(
                f"retention of {retention_days} days is shorter than this profile's minimum of "
                f"{min_retention_days} days",
                hint="the minimum is the profile setting audit_min_retention_days",
            )
        who = user or self.user or local_user()
        with self.db.transaction() as conn:
            now = self._clock()
            plan = self._plan(conn, now - timedelta(days=retention_days))
            if plan.count == 0 or plan.last_id is None:
                return 0
            cut_hash = conn.execute("SELECT row_hash FROM audit_log WHERE id = ?", (plan.last_id,)).fetchone()[0]
            conn.execute("INSERT INTO audit_prune_guard (active) VALUES (1)")
            conn.execute("DELETE FROM audit_log WHERE id <= ?", (plan.last_id,))
            conn.execute("DELETE FROM audit_prune_guard")
            previous = conn.execute(
                "SELECT id, checkpoint_hash FROM audit_checkpoints ORDER BY id DESC LIMIT 1"
            ).fetchone()
            checkpoint = {
                "id": (int(previous[0]) if previous else 0) + 1,
                "timestamp": format_timestamp(now),
                "user": who,
                "tenant": self.tenant,
                "first_kept_id": plan.last_id + 1,
                "cut_hash": str(cut_hash),
                "pruned_count": plan.count,
                "retention_days": int(retention_days),
                "prev_hash": str(previous[1]) if previous else GENESIS_HASH,
            }
            checkpoint["checkpoint_hash"] = checkpoint_hash(checkpoint)
            conn.execute(
                f"INSERT INTO audit_checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                tuple(checkpoint[name.strip()] for name in _CHECKPOINT_COLUMNS.split(",")),
            )
            cp_hash = str(checkpoint["checkpoint_hash"])
            self._sign(conn, "checkpoint", int(str(checkpoint["id"])), signing.checkpoint_message(cp_hash))
            fields = self._prepare(
                OperationType.PRUNE,
                None,
                {
                    "checkpoint_id": checkpoint["id"],
                    "checkpoint_hash": checkpoint["checkpoint_hash"],
                    "pruned_count": plan.count,
                    "first_pruned_id": plan.first_id,
                    "last_pruned_id": plan.last_id,
                    "cut_hash": checkpoint["cut_hash"],
                    "cutoff": format_timestamp(plan.cutoff),
                    "retention_days": int(retention_days),
                },
                AuditResult.SUCCESS,
                None,
                who,
                None,
            )
            self._insert(conn, fields)
        log.info("pruned %d audit rows (up to row %s)", plan.count, plan.last_id)
        if self.keying.auto_anchor:
            self._auto_anchor()
        return plan.count
