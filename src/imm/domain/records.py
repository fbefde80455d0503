"""Exchange records → the cached :class:`~imm.data.models.InactiveMailbox` (domain.md §3), and the HR mapping CSV.

Records are the dictionaries ``InvokeCommand`` returns (exo-rest.md §4): property names as in PowerShell, values in
Exchange's string formats, ``P@data.type`` / ``P@odata.type`` annotation keys beside some properties. Missing
keys, ``None`` and annotation keys are tolerated; a value that cannot be read is treated as absent rather than
failing the whole mailbox (sizes as 0, dates as unknown).

Company and Department (each on its own): the Get-Recipient record's ``Company`` / ``Department``; else the
custom attribute the profile names (``[profiles.X.org] company_attribute = "CustomAttribute5"``); else the
mapping CSV (keyed by address or ExchangeGuid); else None.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from imm.config import OrgMapping
from imm.data.models import InactiveMailbox
from imm.domain.cost import former_license
from imm.domain.lifecycle import last_hold_removal, parse_hold_tracking
from imm.domain.parsing import (
    mailbox_location_kinds,
    or_default,
    parse_bool,
    parse_count,
    parse_datetime,
    parse_size,
    parse_strings,
)
from imm.errors import InputError

__all__ = ["address_conflicts", "load_org_mapping_csv", "mailbox_from_records", "mapping_key", "recipient_addresses"]

MB = 1024 * 1024
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
CUSTOM_ATTRIBUTES = tuple(f"CustomAttribute{n}" for n in range(1, 16))
# The Get-Mailbox properties :func:`mailbox_from_records` and sync read: a listing asks Exchange for these only
# (``$select``), so a 100K listing is a fraction of the bytes and of the memory. Keep it in step with the reader
# (tests/test_sync_select.py builds every simulated mailbox from the full record and from these).
MAILBOX_PROPERTIES: tuple[str, ...] = (
    "ExchangeGuid",
    "Guid",
    "PrimarySmtpAddress",
    "UserPrincipalName",
    "EmailAddresses",
    "DisplayName",
    "Name",
    "WhenSoftDeleted",
    "MailboxPlan",
    "DistinguishedName",
    "LegacyExchangeDN",
    "ExternalDirectoryObjectId",
    "ArchiveStatus",
    "ArchiveGuid",
    "AutoExpandingArchiveEnabled",
    "MailboxLocations",
    "LitigationHoldEnabled",
    "LitigationHoldDate",
    "LitigationHoldDuration",
    "InPlaceHolds",
    "ComplianceTagHoldApplied",
    "DelayHoldApplied",
    "DelayReleaseHoldApplied",
    "RetentionHoldEnabled",
    "WhenChanged",
    "WhenChangedUTC",
    "InactiveMailboxRetireTime",
    "IsInactiveMailbox",
    "WasInactiveMailbox",
    "PersistedCapabilities",
    "MicrosoftOnlineServicesID",
    *CUSTOM_ATTRIBUTES,
)
# What sync reads of Get-MailboxStatistics (primary and archive; :func:`mailbox_from_records`): asked for with
# ``$select`` on each of a sync's 100K calls, so a reply is a quarter of the bytes to send, decode and strip.
STATISTICS_PROPERTIES: tuple[str, ...] = ("ItemCount", "TotalItemSize", "DeletedItemCount", "TotalDeletedItemSize")
# What a recipient gives a mailbox (Company, Department) and the keys it is found by (sync_fetch.lookup_recipient).
RECIPIENT_PROPERTIES: tuple[str, ...] = (
    "ExchangeGuid",
    "Guid",
    "ExternalDirectoryObjectId",
    "PrimarySmtpAddress",
    "Company",
    "Department",
)

# What the conflicts at sync read of an active recipient (recipient_addresses, address_conflicts).
ACTIVE_RECIPIENT_PROPERTIES: tuple[str, ...] = (
    "ExchangeGuid",
    "Guid",
    "Name",
    "DisplayName",
    "PrimarySmtpAddress",
    "UserPrincipalName",
    "WindowsLiveID",
    "MicrosoftOnlineServicesID",
    "EmailAddresses",
)


def mailbox_properties(org: OrgMapping) -> tuple[str, ...]:
    """:data:`MAILBOX_PROPERTIES` plus the profile's company and department attributes (when it names others)."""
    extra = [a for a in (org.company_attribute, org.department_attribute) if a]
    known = {p.lower() for p in MAILBOX_PROPERTIES}
    return MAILBOX_PROPERTIES + tuple(dict.fromkeys(a for a in extra if a.lower() not in known))


MAX_REPORTED_ERRORS = 5


def _text(record: Mapping[str, Any] | None, key: str) -> str:
    if not record:
        return ""
    value = record.get(key)
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value if v not in (None, ""))
    return str(value).strip()


def _guid_text(record: Mapping[str, Any], key: str) -> str:
    value = _text(record, key).lower()
    return "" if value in ("", EMPTY_GUID) else value


def _date(record: Mapping[str, Any], *keys: str) -> datetime | None:
    for key in keys:
        moment = or_default(parse_datetime, record.get(key), None)
        if moment is not None:
            return moment
    return None


def _flag(record: Mapping[str, Any], key: str) -> bool:
    return or_default(parse_bool, record.get(key), False)


def _bytes(record: Mapping[str, Any] | None, key: str) -> int:
    return or_default(parse_size, record.get(key), 0) if record else 0


def _count(record: Mapping[str, Any] | None, key: str) -> int:
    return or_default(parse_count, record.get(key), 0) if record else 0


_strings = parse_strings  # the one reader of multi-valued properties


def _attribute(record: Mapping[str, Any], name: str) -> str | None:
    """A custom attribute of the mailbox record by its property name (case-insensitive)."""
    value = record.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in record.items() if k.lower() == lower), None)
    text = ";".join(_strings(value)).strip()
    return text or None


def mapping_key(value: str) -> str:
    """How the mapping is keyed: an ExchangeGuid in lower-case dashed form, else the lower-cased address."""
    text = str(value or "").strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text.lower()


def _clean(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _from_mapping(mapping: Mapping[str, tuple[str, str]] | None, keys: list[str]) -> tuple[str | None, str | None]:
    if not mapping:
        return None, None
    for key in keys:
        if key and key in mapping:
            company, department = mapping[key]
            return _clean(company), _clean(department)
    return None, None


def mailbox_from_records(
    mailbox: Mapping[str, Any],
    stats: Mapping[str, Any] | None,
    archive_stats: Mapping[str, Any] | None,
    recipient: Mapping[str, Any] | None,
    org: OrgMapping,
    mapping: Mapping[str, tuple[str, str]] | None,
    tenant: str,
    now: datetime,
    hold_tracking: Any = None,
) -> InactiveMailbox:
    """The cache record from Get-Mailbox, Get-MailboxStatistics (primary, ``-Archive``) and Get-Recipient.

    ``identity`` is the ExchangeGuid in lower case (Guid when ExchangeGuid is missing). Sizes are the figures
    Get-MailboxStatistics reports (domain.md §3, Get-MailboxStatistics.md), in MB rounded to 2 decimals:
    ``size_mb`` = TotalItemSize, ``item_count`` = ItemCount, ``recoverable_items_mb`` = TotalDeletedItemSize,
    ``deleted_item_count`` = DeletedItemCount, and the same four of the archive. ``hold_tracking`` is the
    ``Export-MailboxDiagnosticLogs -ComponentName HoldTracking`` reply when sync read one (the latest hold
    removal, :mod:`imm.domain.lifecycle`). Analysis fields are left for :func:`imm.domain.analyse.analyse`.
    """
    identity = _guid_text(mailbox, "ExchangeGuid") or _guid_text(mailbox, "Guid")
    if not identity:
        raise InputError("a mailbox record has no ExchangeGuid")
    smtp = _text(mailbox, "PrimarySmtpAddress")
    upn = _text(mailbox, "UserPrincipalName")
    addresses = _strings(mailbox.get("EmailAddresses"))
    custom = {name: value for name in CUSTOM_ATTRIBUTES if (value := _text(mailbox, name))}

    company = _clean(recipient.get("Company")) if recipient else None
    department = _clean(recipient.get("Department")) if recipient else None
    if company is None and org.company_attribute:
        company = _attribute(mailbox, org.company_attribute)
    if department is None and org.department_attribute:
        department = _attribute(mailbox, org.department_attribute)
    if (company is None or department is None) and mapping:
        keys = [smtp.lower(), mapping_key(identity), upn.lower()]
        keys += [a.split(":", 1)[1].lower() for a in addresses if a.lower().startswith("smtp:")]
        mapped_company, mapped_department = _from_mapping(mapping, keys)
        company = company or mapped_company
        department = department or mapped_department

    removed = last_hold_removal(parse_hold_tracking(hold_tracking)) if hold_tracking else None
    duration = _text(mailbox, "LitigationHoldDuration") or None
    plan = _text(mailbox, "MailboxPlan")
    return InactiveMailbox(
        identity=identity,
        display_name=_text(mailbox, "DisplayName"),
        primary_smtp=smtp,
        when_soft_deleted=_date(mailbox, "WhenSoftDeleted"),
        size_mb=round(_bytes(stats, "TotalItemSize") / MB, 2),
        item_count=_count(stats, "ItemCount"),
        recoverable_items_mb=round(_bytes(stats, "TotalDeletedItemSize") / MB, 2),
        deleted_item_count=_count(stats, "DeletedItemCount"),
        license_type=former_license(plan, parse_strings(mailbox.get("PersistedCapabilities"))),
        operating_company=company,
        department=department,
        last_updated=now,
        name=_text(mailbox, "Name"),
        distinguished_name=_text(mailbox, "DistinguishedName"),
        legacy_exchange_dn=_text(mailbox, "LegacyExchangeDN"),
        user_principal_name=upn,
        external_directory_object_id=_guid_text(mailbox, "ExternalDirectoryObjectId"),
        email_addresses=addresses,
        archive_status=_text(mailbox, "ArchiveStatus") or "None",
        archive_guid=_guid_text(mailbox, "ArchiveGuid"),
        archive_size_mb=round(_bytes(archive_stats, "TotalItemSize") / MB, 2),
        archive_item_count=_count(archive_stats, "ItemCount"),
        archive_recoverable_items_mb=round(_bytes(archive_stats, "TotalDeletedItemSize") / MB, 2),
        archive_deleted_item_count=_count(archive_stats, "DeletedItemCount"),
        auto_expanding_archive=_flag(mailbox, "AutoExpandingArchiveEnabled"),
        mailbox_locations=mailbox_location_kinds(_strings(mailbox.get("MailboxLocations"))),
        litigation_hold_enabled=_flag(mailbox, "LitigationHoldEnabled"),
        litigation_hold_date=_date(mailbox, "LitigationHoldDate"),
        litigation_hold_duration=duration,
        in_place_holds=[h.strip() for h in _strings(mailbox.get("InPlaceHolds")) if h.strip()],
        compliance_tag_hold=_flag(mailbox, "ComplianceTagHoldApplied"),
        delay_hold=_flag(mailbox, "DelayHoldApplied"),
        delay_release_hold=_flag(mailbox, "DelayReleaseHoldApplied"),
        retention_hold_enabled=_flag(mailbox, "RetentionHoldEnabled"),
        when_changed=_date(mailbox, "WhenChangedUTC", "WhenChanged"),
        inactive_mailbox_retire_time=_date(mailbox, "InactiveMailboxRetireTime"),
        mailbox_plan=plan,
        custom_attributes=custom,
        tenant=tenant,
        # IsInactiveMailbox is absent from some replies: only an explicit False marks a soft-deleted mailbox.
        is_inactive_mailbox=or_default(parse_bool, mailbox.get("IsInactiveMailbox"), True),
        was_inactive_mailbox=_flag(mailbox, "WasInactiveMailbox"),
        last_hold_removed=removed,
    )


# ------------------------------------------------------------------------------------------------ mapping CSV
_ADDRESS_COLUMNS = {
    "address",
    "emailaddress",
    "email",
    "mail",
    "smtp",
    "primarysmtpaddress",
    "userprincipalname",
    "upn",
}
_GUID_COLUMNS = {"exchangeguid", "guid", "mailboxguid"}
_COMPANY_COLUMNS = {"company", "operatingcompany"}
_DEPARTMENT_COLUMNS = {"department", "dept"}
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _column(header: list[str], names: set[str]) -> str | None:
    for column in header:
        if re.sub(r"[\s_\-]", "", column.strip().lower()) in names:
            return column
    return None


def _delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def load_org_mapping_csv(text: str) -> dict[str, tuple[str, str]]:
    """Parse an HR export into ``{key: (company, department)}`` for :func:`mailbox_from_records`.

    The header needs an address column (address, email, mail, PrimarySmtpAddress, UPN…) and/or an ExchangeGuid
    column, plus company and/or department; other columns are ignored; ``,``, ``;`` or tab separated. Keys are
    :func:`mapping_key` forms. Every bad row is reported with its line number in one :class:`InputError`: no key,
    a key that is neither an address nor a GUID, no company and no department, extra fields, or a key mapped twice
    to different values.
    """
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise InputError("org mapping CSV: the file is empty (expected a header: address,company,department)")
    reader = csv.DictReader(io.StringIO(text), delimiter=_delimiter(text))
    try:
        header = list(reader.fieldnames or [])
    except csv.Error as exc:
        raise InputError(f"org mapping CSV: line 1: {exc}") from None
    address_col = _column(header, _ADDRESS_COLUMNS)
    guid_col = _column(header, _GUID_COLUMNS)
    company_col = _column(header, _COMPANY_COLUMNS)
    department_col = _column(header, _DEPARTMENT_COLUMNS)
    if address_col is None and guid_col is None:
        raise InputError(
            f"org mapping CSV: line 1: no address or ExchangeGuid column (header: {', '.join(header)})",
            hint="name the key column 'address' or 'ExchangeGuid'",
        )
    if company_col is None and department_col is None:
        raise InputError(
            f"org mapping CSV: line 1: no company or department column (header: {', '.join(header)})",
            hint="name the columns 'company' and 'department'",
        )
    out: dict[str, tuple[str, str]] = {}
    first_line: dict[str, int] = {}
    errors: list[str] = []
    try:
        for row in reader:
            line = reader.line_num
            error = _mapping_row(row, line, address_col, guid_col, company_col, department_col, out, first_line)
            if error:
                errors.append(f"line {line}: {error}")
    except csv.Error as exc:
        errors.append(f"line {reader.line_num}: {exc}")
    if errors:
        shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
        more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
        rows = "row" if len(errors) == 1 else "rows"
        raise InputError(f"org mapping CSV: {len(errors)} bad {rows}: {shown}{more}", hint="fix or remove the rows")
    return out


def _mapping_row(
    row: dict[str | None, Any],
    line: int,
    address_col: str | None,
    guid_col: str | None,
    company_col: str | None,
    department_col: str | None,
    out: dict[str, tuple[str, str]],
    first_line: dict[str, int],
) -> str | None:
    """Add one row to ``out``; the error text when the row is bad."""
    if None in row:
        return f"{len(row) - 1 + len(row[None])} fields, the header has {len(row) - 1}"
    for column, value in row.items():
        if value and _CONTROL.search(value):
            return f"a control character in column '{column}'"
    keys: list[str] = []
    for column, is_guid in ((address_col, False), (guid_col, True)):
        raw = (row.get(column) or "").strip() if column else ""
        if not raw:
            continue
        if _is_guid(raw):
            keys.append(mapping_key(raw))
        elif is_guid:
            return f"'{raw}' is not an ExchangeGuid"
        elif _ADDRESS.match(raw):
            keys.append(raw.lower())
        else:
            return f"'{raw}' is neither an email address nor an ExchangeGuid"
    if not keys:
        return "no address or ExchangeGuid"
    company = (row.get(company_col) or "").strip() if company_col else ""
    department = (row.get(department_col) or "").strip() if department_col else ""
    if not company and not department:
        return "no company and no department"
    value = (company, department)
    for key in keys:
        if key in out and out[key] != value:
            return f"'{key}' is already mapped on line {first_line[key]} to different values"
        out[key] = value
        first_line.setdefault(key, line)
    return None


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text.strip())
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------- conflicts at sync
def recipient_addresses(record: Mapping[str, Any]) -> set[str]:
    """The names a recipient answers to as a user name or address (lower case): PrimarySmtpAddress, every
    ``smtp:`` entry of EmailAddresses, and its UPN where the record carries one (UserPrincipalName, WindowsLiveID,
    MicrosoftOnlineServicesID)."""
    names = {
        str(record.get(key) or "").strip().lower()
        for key in ("PrimarySmtpAddress", "UserPrincipalName", "WindowsLiveID", "MicrosoftOnlineServicesID")
    }
    for address in parse_strings(record.get("EmailAddresses")):
        kind, _, value = str(address).partition(":")
        if kind.lower() == "smtp" and value:
            names.add(value.strip().lower())
    names.discard("")
    return names


def address_conflicts(
    mailbox: Mapping[str, Any], holders: Callable[[str], Sequence[Mapping[str, Any]]]
) -> tuple[str, str]:
    """(who uses the inactive mailbox's primary SMTP, who uses its UPN): the Name of the active recipient, "" when
    none. ``mailbox`` is its Get-Mailbox record; ``holders(address)`` the active recipients that answer to
    ``address``. Recovering it under its own address then fails: New-Mailbox -MicrosoftOnlineServicesID (its UPN,
    which also becomes the primary SMTP address) must be unique ("…is used by another recipient object",
    New-Mailbox.md; microsoft-365-docs#2814; domain.md §4)."""
    own = {str(mailbox.get(key) or "").strip().lower() for key in ("ExchangeGuid", "Guid")} - {""}

    asked: dict[str, str] = {}  # the UPN is often the primary address: ask once

    def who(address: str) -> str:
        address = address.strip().lower()
        if not address:
            return ""
        if address not in asked:
            asked[address] = holder_names(address)
        return asked[address]

    def holder_names(address: str) -> str:
        found = [
            r for r in holders(address) if not own & {str(r.get(k) or "").lower() for k in ("ExchangeGuid", "Guid")}
        ]
        found = [r for r in found if address in recipient_addresses(r)]
        names = sorted({str(r.get("Name") or r.get("DisplayName") or r.get("PrimarySmtpAddress") or "") for r in found})
        return ", ".join(n for n in names if n)

    smtp = str(mailbox.get("PrimarySmtpAddress") or "")
    upn = str(mailbox.get("UserPrincipalName") or mailbox.get("MicrosoftOnlineServicesID") or "")
    return who(smtp), who(upn)
