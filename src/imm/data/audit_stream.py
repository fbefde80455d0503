"""Audit rows as export events, and the per-sink cursor of ``imm audit export --since-last`` (SQL lives here).

Event schema ``imm.audit.v1`` (stable: fields are only ever added). Names are Log Analytics column names (a
letter first, letters, digits and ``_``, none of the reserved ``id``, ``TenantId``, ``Type``; Microsoft Learn,
"Logs Ingestion API in Azure Monitor", Supported tables)::

    TimeGenerated  the row's time (ISO 8601 UTC)      ImmSchema     "imm.audit.v1"
    ImmRowId       the row id (consecutive)           Timestamp     the row's timestamp text exactly as hashed
    Operation, Identity, User, Tenant, OperationId, Result, ErrorMessage      the row's columns
    Details        the details as JSON (dynamic)      DetailsJson   the canonical JSON text exactly as hashed
    PrevHash, RowHash                                 the chain (README "Verifying the audit log")
    Signature, KeyId                                  Ed25519 signature of the row (keyed logs), else null
    Redelivered    true when imm could not tell whether an earlier attempt to send this row arrived

A receiver re-computes ``RowHash`` from ``[ImmRowId, Timestamp, Operation, Identity, User, Tenant, OperationId,
Result, ErrorMessage, DetailsJson, PrevHash]`` and checks that ``PrevHash`` is the previous event's ``RowHash``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imm.data.database import DatabaseManager

SCHEMA = "imm.audit.v1"
IN_FLIGHT = "in_flight"
REJECTED = "rejected"


def event_of(row: dict[str, Any], redelivered: bool = False) -> dict[str, Any]:
    try:
        details: Any = json.loads(row["details"]) if row["details"] else {}
    except ValueError:
        details = None
    return {
        "TimeGenerated": row["timestamp"],
        "ImmSchema": SCHEMA,
        "ImmRowId": int(row["id"]),
        "Timestamp": row["timestamp"],
        "Operation": row["operation"],
        "Identity": row["identity"],
        "User": row["user"],
        "Tenant": row["tenant"],
        "OperationId": row["operation_id"],
        "Result": row["result"],
        "ErrorMessage": row["error_message"],
        "Details": details,
        "DetailsJson": row["details"],
        "PrevHash": row["prev_hash"],
        "RowHash": row["row_hash"],
        "Signature": row["signature"],
        "KeyId": row["key_id"],
        "Redelivered": redelivered,
    }


@dataclass(frozen=True)
class Cursor:
    sink: str
    last_id: int = 0
    pending_first: int | None = None
    pending_last: int | None = None
    pending_state: str | None = None

    @property
    def in_doubt(self) -> bool:
        """A batch was sent and the process died before the answer was recorded: it may or may not have arrived."""
        return self.pending_first is not None and self.pending_state == IN_FLIGHT


class ExportStore:
    """Reads events after a cursor and moves the cursor; every write commits at once (it is the sink's truth)."""

    def __init__(self, db: DatabaseManager) -> None:
        self.db = db

    def cursor(self, sink: str) -> Cursor:
        row = (
            self.db.get_connection()
            .execute(
                "SELECT last_id, pending_first, pending_last, pending_state FROM audit_export_cursors WHERE sink = ?",
                (sink,),
            )
            .fetchone()
        )
        if row is None:
            return Cursor(sink)
        return Cursor(sink, int(row[0]), row[1], row[2], row[3])

    def events(self, after_id: int, limit: int) -> list[dict[str, Any]]:
        cursor = self.db.get_connection().execute(
            "SELECT a.id, a.timestamp, a.operation, a.identity, a.user, a.tenant, a.operation_id, a.result, "
            "a.error_message, a.details, a.prev_hash, a.row_hash, s.signature, s.key_id FROM audit_log AS a "
            "LEFT JOIN audit_signatures AS s ON s.kind = 'row' AND s.ref_id = a.id "
            "WHERE a.id > ? ORDER BY a.id LIMIT ?",
            (after_id, limit),
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, tuple(r), strict=True)) for r in cursor]

    def iter_events(self, after_id: int, batch: int) -> Iterator[list[dict[str, Any]]]:
        while True:
            rows = self.events(after_id, batch)
            if not rows:
                return
            yield rows
            after_id = int(rows[-1]["id"])

    def _write(self, sink: str, last_id: int, first: int | None, last: int | None, state: str | None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO audit_export_cursors (sink, last_id, pending_first, pending_last, pending_state, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(sink) DO UPDATE SET last_id = excluded.last_id, "
                "pending_first = excluded.pending_first, pending_last = excluded.pending_last, "
                "pending_state = excluded.pending_state, updated_at = excluded.updated_at",
                (sink, last_id, first, last, state, datetime.now(UTC).isoformat(timespec="microseconds")),
            )

    def sending(self, cursor: Cursor, first: int, last: int) -> None:
        self._write(cursor.sink, cursor.last_id, first, last, IN_FLIGHT)

    def rejected(self, cursor: Cursor, first: int, last: int) -> None:
        self._write(cursor.sink, cursor.last_id, first, last, REJECTED)

    def delivered(self, sink: str, last_id: int) -> None:
        self._write(sink, last_id, None, None, None)
