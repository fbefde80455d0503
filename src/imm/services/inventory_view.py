"""How cached mailboxes are shown: the record shapes of ``imm list``, ``imm search`` and ``imm show``.

- JSON (``--output json``): every :class:`~imm.data.models.InactiveMailbox` field, in the dataclass's order, with
  datetimes as ISO 8601 UTC, then ``total_size_mb`` (:data:`JSON_FIELDS`). Stable: new fields are only ever added.
- Sizes: ``size_mb`` / ``item_count`` are TotalItemSize / ItemCount as Get-MailboxStatistics reports them,
  ``recoverable_items_mb`` / ``deleted_item_count`` the Recoverable Items folder, ``archive_*`` likewise;
  ``total_size_mb`` (all four sizes) is the one quantity of the table's "Total MB", the ``size`` sort, the
  ``--min/max-size-mb`` filters and cost.
- CSV (``--output csv``): the fixed column list :data:`CSV_FIELDS` (lists joined with ``;``).
- Table: a few columns readable in 80 columns (:data:`TABLE_COLUMNS`); Age counts days to today.
- ``imm show``: :func:`mailbox_detail` gives the whole record plus derived values and the mailbox's audit history
  (:func:`audit_history`), grouped for the table view by :data:`DETAIL_SECTIONS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imm.data.models import InactiveMailbox

if TYPE_CHECKING:
    from imm.data.database import DatabaseManager

JSON_FIELDS: tuple[str, ...] = (*(f.name for f in fields(InactiveMailbox)), "total_size_mb")

CSV_FIELDS: tuple[str, ...] = (
    "identity",
    "display_name",
    "primary_smtp",
    "user_principal_name",
    "operating_company",
    "department",
    "when_soft_deleted",
    "age_days",
    "total_size_mb",
    "size_mb",
    "item_count",
    "recoverable_items_mb",
    "deleted_item_count",
    "archive_size_mb",
    "archive_item_count",
    "archive_recoverable_items_mb",
    "archive_deleted_item_count",
    "archive_status",
    "license_type",
    "monthly_cost",
    "hold_types",
    "litigation_hold_enabled",
    "litigation_hold_duration",
    "recovery_eligible",
    "restore_eligible",
    "releasable",
    "holds_expire_on",
    "lifecycle_state",
    "delay_hold_until",
    "purge_on",
    "leaver_retention_ends",
    "leaver_retention_ended",
    "tenant",
)

# (key, header, max width, min width, right-aligned) of the list/search table: fits 80 columns; numbers whole.
TABLE_COLUMNS: tuple[tuple[str, str, int | None, int | None, bool], ...] = (
    ("display_name", "Name", 24, 8, False),
    ("primary_smtp", "SMTP", 30, 12, False),
    ("operating_company", "Company", 14, None, False),
    ("department", "Dept", 12, None, False),
    ("total_size_mb", "Total MB", None, 7, True),
    ("age", "Age", None, 5, True),
    ("holds", "Holds", 24, None, False),
)
# Shown with --wide only: the UPN and the ExchangeGuid (the identity every command takes).
WIDE_TABLE_COLUMNS: tuple[tuple[str, str, int | None, int | None, bool], ...] = (
    ("user_principal_name", "UPN", None, None, False),
    ("identity", "ExchangeGuid", None, None, False),
)
# Which columns a narrow terminal leaves out first (highest first; the others are 1).
TABLE_PRIORITIES: dict[str, int] = {"department": 4, "age": 3, "operating_company": 2}

# What the table needs from the store (see table_rows); names and addresses keep more of their width when cut.
TABLE_FIELDS: tuple[str, ...] = (
    "display_name",
    "name",
    "primary_smtp",
    "operating_company",
    "department",
    "size_mb",
    "recoverable_items_mb",
    "archive_size_mb",
    "archive_recoverable_items_mb",
    "when_soft_deleted",
    "age_days",
    "hold_types",
    "lifecycle_state",
    "purge_on",
    "delay_hold_until",
)
WIDE_TABLE_FIELDS: tuple[str, ...] = (*TABLE_FIELDS, "user_principal_name", "identity")
_SIZES = ("size_mb", "recoverable_items_mb", "archive_size_mb", "archive_recoverable_items_mb")


def stored_fields(names: tuple[str, ...]) -> tuple[str, ...]:
    """The stored columns that give the fields ``names`` (``total_size_mb`` is derived from the four sizes)."""
    if "total_size_mb" not in names:
        return names
    base = tuple(n for n in names if n != "total_size_mb")
    return base + tuple(n for n in _SIZES if n not in base)


TABLE_WEIGHTS: dict[str, float] = {"display_name": 1.6, "primary_smtp": 1.8}


def fields_for(output: str, query: str | None, wide: bool = False) -> tuple[str, ...]:
    """The stored fields a list/search output reads: the table's (``wide``: with the UPN and ExchangeGuid),
    CSV's fixed columns, else every field."""
    if output == "table" and not query:
        return WIDE_TABLE_FIELDS if wide else TABLE_FIELDS
    if output in ("csv", "tsv") and not query:
        return CSV_FIELDS
    return JSON_FIELDS


def records(rows: Iterable[tuple[Any, ...]], names: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Rows streamed from the store (``DatabaseManager.stream_mailbox_rows`` with ``stored_fields(names)``) as
    records: the JSON / CSV shape (datetimes are already ISO 8601 text), ``total_size_mb`` computed as the
    record's property computes it."""
    stored = stored_fields(names)
    if stored == names:
        yield from (dict(zip(names, row, strict=True)) for row in rows)
        return
    a, b, c, d = (stored.index(n) for n in _SIZES)
    for row in rows:
        record = dict(zip(stored, row, strict=True))
        record["total_size_mb"] = round(row[a] + row[b] + row[c] + row[d], 2)
        yield record


def table_rows(rows: Iterable[tuple[Any, ...]], now: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Rows of :data:`TABLE_FIELDS` (or :data:`WIDE_TABLE_FIELDS`) streamed from the store as the values of
    :data:`TABLE_COLUMNS` (and :data:`WIDE_TABLE_COLUMNS`), the same as :func:`mailbox_table_row` gives for the
    mailbox."""
    today = now or datetime.now(UTC)
    parse = datetime.fromisoformat
    for row in rows:
        display_name, name, smtp, company, department, size, rec, archive, arec, deleted, age, holds = row[:12]
        state, purge_on, delay_until = row[12:15]
        if deleted is not None:
            moment = parse(deleted)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            age = max(0, (today - moment).days)
        if state == "soft-deleted":
            cell = f"purge ≈ {purge_on[:10] if purge_on else '?'}"
        elif state == "pending-delay":
            cell = f"delay until ≈ {delay_until[:10] if delay_until else '?'}"
        else:
            cell = ", ".join(holds)
        shaped = {
            "display_name": display_name or name,
            "primary_smtp": smtp,
            "operating_company": company,
            "department": department,
            "total_size_mb": round(round(size + rec + archive + arec, 2)),
            "age": age,
            "holds": cell,
        }
        if len(row) > 15:
            shaped["user_principal_name"], shaped["identity"] = row[15:17]
        yield shaped


DETAIL_SECTIONS: list[tuple[str, list[str]]] = [
    (
        "Identity",
        [
            "identity",
            "display_name",
            "name",
            "primary_smtp",
            "user_principal_name",
            "email_addresses",
            "distinguished_name",
            "legacy_exchange_dn",
            "external_directory_object_id",
            "tenant",
        ],
    ),
    ("Organisation", ["operating_company", "department", "custom_attributes"]),
    (
        "Lifecycle",
        [
            "lifecycle_state",
            "when_soft_deleted",
            "age_days",
            "when_changed",
            "last_hold_removed",
            "delay_hold_until",
            "inactive_mailbox_retire_time",
            "purge_on",
            "is_inactive_mailbox",
            "was_inactive_mailbox",
            "last_updated",
        ],
    ),
    (
        "Size",
        [
            "total_size_mb",
            "size_mb",
            "item_count",
            "recoverable_items_mb",
            "deleted_item_count",
            "archive_status",
            "archive_guid",
            "archive_size_mb",
            "archive_item_count",
            "archive_recoverable_items_mb",
            "archive_deleted_item_count",
            "auto_expanding_archive",
            "mailbox_locations",
        ],
    ),
    (
        "Holds",
        [
            "hold_types",
            "litigation_hold_enabled",
            "litigation_hold_date",
            "litigation_hold_duration",
            "in_place_holds",
            "compliance_tag_hold",
            "delay_hold",
            "delay_release_hold",
            "retention_hold_enabled",
            "hold_details",
        ],
    ),
    (
        "Eligibility",
        [
            "recovery_eligible",
            "recovery_blockers",
            "smtp_conflict",
            "upn_conflict",
            "restore_eligible",
            "restore_blockers",
        ],
    ),  # fmt: skip
    (
        "Expiry",
        [
            "holds_expire_on",
            "expiry_reason",
            "releasable",
            "leaver_retention_ends",
            "leaver_holds_after",
            "leaver_retention_ended",
        ],
    ),  # fmt: skip
    ("Cost", ["license_type", "mailbox_plan", "monthly_cost"]),
    ("Audit history", ["audit_history"]),
]

LABELS: dict[str, str] = {
    "identity": "ExchangeGuid",
    "primary_smtp": "Primary SMTP",
    "user_principal_name": "UPN",
    "distinguished_name": "DistinguishedName",
    "legacy_exchange_dn": "LegacyExchangeDN",
    "external_directory_object_id": "ExternalDirectoryObjectId",
    "archive_guid": "Archive GUID",
    "size_mb": "Items MB",
    "item_count": "Items",
    "recoverable_items_mb": "Recoverable Items MB",
    "deleted_item_count": "Recoverable items",
    "archive_size_mb": "Archive items MB",
    "archive_item_count": "Archive items",
    "archive_recoverable_items_mb": "Archive Recoverable MB",
    "archive_deleted_item_count": "Archive recoverable items",
    "total_size_mb": "Total MB",
    "lifecycle_state": "State",
    "last_hold_removed": "Last hold removed",
    "delay_hold_until": "Delay hold until (≈)",
    "purge_on": "Purged from (≈)",
    "monthly_cost": "Monthly cost",
    "in_place_holds": "InPlaceHolds",
    "age_days": "Age (days)",
    "operating_company": "Company",
    "when_soft_deleted": "Deleted",
    "when_changed": "Changed",
    "inactive_mailbox_retire_time": "Retire time",
    "last_updated": "Cached",
    "audit_history": "Events",
}


def label(key: str) -> str:
    """A human label for a record key."""
    return LABELS.get(key) or key.replace("_", " ").capitalize()


def mailbox_record(mailbox: InactiveMailbox) -> dict[str, Any]:
    """The JSON shape: every field, in the dataclass's order (values as stored; datetimes stay datetimes)."""
    d = mailbox.__dict__
    record = {name: d[name] for name in JSON_FIELDS[:-1]}
    record["total_size_mb"] = mailbox.total_size_mb
    return record


def age_in_days(mailbox: InactiveMailbox, now: datetime | None = None) -> int | None:
    """Whole days since WhenSoftDeleted (to ``now``), else the cached ``age_days``."""
    if mailbox.when_soft_deleted is None:
        return mailbox.age_days
    deleted = mailbox.when_soft_deleted
    if deleted.tzinfo is None:
        deleted = deleted.replace(tzinfo=UTC)
    return max(0, ((now or datetime.now(UTC)) - deleted).days)


def total_size_mb(mailbox: InactiveMailbox) -> float:
    """Primary and archive, items and Recoverable Items, in MB (what cost counts)."""
    return mailbox.total_size_mb


def holds_cell(mailbox: InactiveMailbox) -> str:
    """The table's Holds column: the hold kinds, and where the mailbox is in its lifecycle after its holds."""
    kinds = ", ".join(mailbox.hold_types)
    if mailbox.lifecycle_state == "soft-deleted":
        when = mailbox.purge_on.date().isoformat() if mailbox.purge_on else "?"
        return f"purge ≈ {when}"  # soft-deleted: only the purge date is to come
    if mailbox.lifecycle_state == "pending-delay":
        when = mailbox.delay_hold_until.date().isoformat() if mailbox.delay_hold_until else "?"
        return f"delay until ≈ {when}"
    return kinds


def mailbox_table_row(mailbox: InactiveMailbox, now: datetime | None = None) -> dict[str, Any]:
    """The values of the list/search table (keys of :data:`TABLE_COLUMNS`)."""
    return {
        "display_name": mailbox.display_name or mailbox.name,
        "primary_smtp": mailbox.primary_smtp,
        "operating_company": mailbox.operating_company,
        "department": mailbox.department,
        "total_size_mb": round(total_size_mb(mailbox)),
        "age": age_in_days(mailbox, now),
        "holds": holds_cell(mailbox),
        "user_principal_name": mailbox.user_principal_name,
        "identity": mailbox.identity,
    }


def mailbox_detail(db: DatabaseManager, identity: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Everything the cache knows about one mailbox, found by ExchangeGuid, address, DN or name.

    Raises NotFoundError / InputError (ambiguous) from :meth:`DatabaseManager.find_mailbox`.
    """
    mailbox = db.find_mailbox(identity)
    detail = detail_from_mailbox(mailbox, now=now)
    detail["audit_history"] = audit_history(db, mailbox)
    return detail


def audit_history(db: DatabaseManager, mailbox: InactiveMailbox) -> list[dict[str, Any]]:
    """Every audit row about the mailbox (by ExchangeGuid, address or DN), oldest first, with a one-line summary."""
    from imm.data.audit_logger import AuditLogger

    logger = AuditLogger(db)
    seen: dict[int, Any] = {}
    for key in dict.fromkeys(k for k in (mailbox.identity, mailbox.primary_smtp, mailbox.distinguished_name) if k):
        for entry in logger.get_operations_for_mailbox(key):
            seen.setdefault(entry.id or 0, entry)
    rows = []
    for entry in sorted(seen.values(), key=lambda e: e.id or 0):
        when = entry.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        summary = f"{when} UTC  {entry.operation} {entry.result}" + (f" by {entry.user}" if entry.user else "")
        if entry.error_message:
            summary += f": {entry.error_message}"
        rows.append(
            {
                "id": entry.id,
                "timestamp": entry.timestamp,
                "operation": entry.operation,
                "result": entry.result,
                "user": entry.user,
                "operation_id": entry.operation_id,
                "error_message": entry.error_message,
                "summary": summary,
            }
        )
    return rows


def detail_from_mailbox(mailbox: InactiveMailbox, *, now: datetime | None = None) -> dict[str, Any]:
    """The record in :data:`DETAIL_SECTIONS` order with derived values (``total_size_mb``) added."""
    record = mailbox_record(mailbox)
    record["total_size_mb"] = total_size_mb(mailbox)
    ordered: dict[str, Any] = {}
    for _, keys in DETAIL_SECTIONS:
        for key in keys:
            if key in record:
                ordered[key] = record[key]
    for key, value in record.items():  # anything a section does not name yet
        ordered.setdefault(key, value)
    return ordered
