"""The audit log's hash chain: the canonical encoding, the hashes, and verification (pure, no I/O).

Recipe (also in README "Verifying the audit log"):

- ``details`` is stored as canonical JSON text: ``json.dumps(details, sort_keys=True, separators=(",", ":"),
  ensure_ascii=False)`` after secrets are removed.
- A row's hash is the lowercase hex SHA-256 of the UTF-8 bytes of the compact JSON array (``separators=(",",
  ":")``, ``ensure_ascii=False``)::

      [id, timestamp, operation, identity, user, tenant, operation_id, result, error_message, details, prev_hash]

  where ``id`` is an integer, ``details`` is the stored canonical JSON *text* (a JSON string inside the array),
  absent values are ``null``, and ``prev_hash`` is the previous row's ``row_hash`` (64 zeros for the first row ever).
- A prune records a checkpoint; its hash is the SHA-256 of the array
  ``[id, timestamp, user, tenant, first_kept_id, cut_hash, pruned_count, retention_days, prev_hash]``, with
  ``prev_hash`` the previous checkpoint's hash (64 zeros for the first). After a prune the first remaining row has
  id ``first_kept_id`` of the latest checkpoint and ``prev_hash`` equal to its ``cut_hash``.
- Ids are consecutive: a gap means deleted rows; the id sequence's high-water mark past the last row means the
  end was cut off.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any

GENESIS_HASH = "0" * 64

ROW_FIELDS = (
    "id",
    "timestamp",
    "operation",
    "identity",
    "user",
    "tenant",
    "operation_id",
    "result",
    "error_message",
    "details",
    "prev_hash",
)
CHECKPOINT_FIELDS = (
    "id",
    "timestamp",
    "user",
    "tenant",
    "first_kept_id",
    "cut_hash",
    "pruned_count",
    "retention_days",
    "prev_hash",
)


def jsonable(value: Any) -> Any:
    """Turn details into plain JSON data: datetimes as ISO 8601, paths and enums as text, sets as sorted lists."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def canonical_json(value: Any) -> str:
    """Keys sorted, no spaces, non-ASCII kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _digest(items: list[Any]) -> str:
    payload = json.dumps(items, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def row_hash(row: Mapping[str, Any]) -> str:
    """The hash of an audit row given its stored columns (``details`` as the stored JSON text)."""
    return _digest([row[name] for name in ROW_FIELDS])


def checkpoint_hash(checkpoint: Mapping[str, Any]) -> str:
    return _digest([checkpoint[name] for name in CHECKPOINT_FIELDS])


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify_chain`` found. ``bad_id`` is the first row (or checkpoint) that fails, with ``problem``."""

    ok: bool
    rows_checked: int = 0
    checkpoints_checked: int = 0
    first_id: int | None = None
    last_id: int | None = None
    head_hash: str = GENESIS_HASH
    bad_id: int | None = None
    bad_table: str | None = None  # 'audit_log' | 'audit_checkpoints' | 'audit_anchors'
    problem: str | None = None
    keyed: bool = False  # the profile has an audit key: rows from its keyed_from on must be signed
    signed_rows: int = 0
    uncovered_rows: int = 0  # rows after the last one a signature or anchor covers
    anchors_checked: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _fail(table: str, bad_id: int | None, problem: str, **counts: Any) -> VerifyReport:
    return VerifyReport(ok=False, bad_id=bad_id, bad_table=table, problem=problem, **counts)


def verify_checkpoints(checkpoints: Iterable[Mapping[str, Any]]) -> VerifyReport:
    """Each checkpoint's own hash and its link to the previous checkpoint."""
    prev = GENESIS_HASH
    count = 0
    prev_id = 0
    for cp in checkpoints:
        cid = int(cp["id"])
        if cid != prev_id + 1 and count > 0:
            return _fail("audit_checkpoints", prev_id + 1, f"checkpoint {prev_id + 1} is missing (deleted)")
        if cp["prev_hash"] != prev:
            return _fail(
                "audit_checkpoints",
                cid,
                f"checkpoint {cid} does not link to the previous checkpoint (one was deleted, inserted or edited)",
            )
        if checkpoint_hash(cp) != cp["checkpoint_hash"]:
            return _fail(
                "audit_checkpoints", cid, f"checkpoint {cid} was edited or forged: its contents do not match its hash"
            )
        prev = str(cp["checkpoint_hash"])
        prev_id = cid
        count += 1
    return VerifyReport(ok=True, checkpoints_checked=count, head_hash=prev)


def verify_chain(
    rows: Iterable[Mapping[str, Any]],
    checkpoints: Sequence[Mapping[str, Any]] | None = None,
    sequence: int | None = None,
) -> VerifyReport:
    """Walk rows in id order; report the first row that was edited, deleted, inserted or moved.

    ``checkpoints`` are the prune checkpoints in id order; ``sequence`` is the highest id ever handed out (SQLite's
    ``sqlite_sequence``), which reveals rows cut off the end.
    """
    checkpoints = list(checkpoints or [])
    cp_report = verify_checkpoints(checkpoints)
    if not cp_report.ok:
        return cp_report
    by_id = {int(cp["id"]): cp for cp in checkpoints}
    if checkpoints:
        latest = checkpoints[-1]
        expected_id = int(latest["first_kept_id"])
        expected_prev = str(latest["cut_hash"])
    else:
        expected_id, expected_prev = 1, GENESIS_HASH
    counts: dict[str, Any] = {"checkpoints_checked": cp_report.checkpoints_checked}
    checked = 0
    first_id: int | None = None
    last_id: int | None = None
    for row in rows:
        rid = int(row["id"])
        counts.update(rows_checked=checked, first_id=first_id, last_id=last_id)
        if rid < expected_id:
            return _fail("audit_log", rid, f"row {rid} should not exist (it is older than the chain allows)", **counts)
        if rid > expected_id:
            missing = f"row {expected_id}" if rid == expected_id + 1 else f"rows {expected_id}-{rid - 1}"
            return _fail("audit_log", expected_id, f"{missing} missing (deleted) before row {rid}", **counts)
        if row["prev_hash"] != expected_prev:
            before = f"row {rid - 1}" if checked else "the start of the chain"
            return _fail(
                "audit_log",
                rid,
                f"row {rid} does not link to {before}: a row was edited and re-hashed, inserted or removed there",
                **counts,
            )
        stored_as = next((n for n in ROW_FIELDS if isinstance(row[n], bytes | bytearray | float)), None)
        if stored_as is not None:  # only SQL outside imm stores a BLOB or a REAL in these columns
            kind = "a number" if isinstance(row[stored_as], float) else "binary data (a BLOB)"
            return _fail("audit_log", rid, f"row {rid} was edited: its {stored_as} is stored as {kind}", **counts)
        if row_hash(row) != row["row_hash"]:
            return _fail(
                "audit_log", rid, f"row {rid} was edited or forged: its contents do not match its hash", **counts
            )
        problem = _check_prune_row(row, by_id)
        if problem:
            return _fail("audit_log", rid, problem, **counts)
        expected_prev = str(row["row_hash"])
        expected_id = rid + 1
        checked += 1
        first_id = rid if first_id is None else first_id
        last_id = rid
    counts.update(rows_checked=checked, first_id=first_id, last_id=last_id)
    if sequence is not None and sequence >= expected_id:
        missing = f"row {expected_id}" if sequence == expected_id else f"rows {expected_id}-{sequence}"
        return _fail("audit_log", expected_id, f"{missing} missing: the end of the log was cut off", **counts)
    return VerifyReport(ok=True, head_hash=expected_prev, **counts)


def _check_prune_row(row: Mapping[str, Any], checkpoints: Mapping[int, Mapping[str, Any]]) -> str | None:
    """A PRUNE row names the checkpoint it made; that checkpoint must exist (unless pruned later) and match."""
    if row["operation"] != "PRUNE" or row["result"] != "success":
        return None
    try:
        details = json.loads(row["details"])
        cid = int(details["checkpoint_id"])
    except (ValueError, KeyError, TypeError):
        return f"row {row['id']} (PRUNE) does not name its checkpoint"
    cp = checkpoints.get(cid)
    if cp is None:  # checkpoints are never pruned
        return f"row {row['id']} (PRUNE) names checkpoint {cid}, which is missing"
    if cp["checkpoint_hash"] != details.get("checkpoint_hash"):
        return f"row {row['id']} (PRUNE) does not match checkpoint {cid}"
    return None
