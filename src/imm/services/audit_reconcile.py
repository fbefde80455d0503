"""``imm audit reconcile``: imm's changes against Microsoft's own audit log, and changes imm did not make.

Microsoft records every Exchange admin cmdlet that changes something in the unified audit log (RecordType
``ExchangeAdmin``; AuditData schema: Microsoft Learn, "Office 365 Management Activity API schema", common and
Exchange admin schemas). imm reads it with ``Search-UnifiedAuditLog -RecordType ExchangeAdmin -SessionId …
-SessionCommand ReturnLargeSet`` (cmdlet reference, MicrosoftDocs/office-docs-powershell), rerun with the same
session id until a block comes back empty (at most 50,000 records: a longer span is refused with a hint).

Each imm change that succeeded names the cmdlets it ran (the ``cmdlets`` of its started row; else
``DEFAULT_CMDLETS`` gives its operation's cmdlet). A cmdlet run on the
Exchange endpoint is **confirmed** by an unmatched record with the same cmdlet (``Operation``), an identity in
common (``Identity``/``InactiveMailbox``/``SourceMailbox``/``TargetMailbox`` parameters, the ``ObjectId``'s last part,
``ModifiedObjectResolvedName``) and a ``CreationTime`` within the change's start and end (± ``SLACK``). Unconfirmed
changes younger than ``delay`` are **not yet** (the log is not real time), older ones **missing**. Records about
an inactive mailbox in the cache that match no imm change are **outside** changes: who, when, which cmdlet and
parameters. Security & Compliance cmdlets (retention and case hold policies) are logged under other record types
and are reported as **not checked**.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from imm.data.audit_logger import CHANGE_OPERATIONS, AuditLogger, AuditResult, OperationType, format_timestamp
from imm.data.database import DatabaseManager
from imm.errors import InputError
from imm.exchange.cmdlets import ExchangeOperations

SLACK = timedelta(minutes=5)
# the cmdlet an operation runs, when its rows do not list their cmdlets (identity parameter: the mailbox)
DEFAULT_CMDLETS = {
    "RECOVER_MAILBOX": ("New-Mailbox", "InactiveMailbox"),
    "RESTORE_MAILBOX": ("New-MailboxRestoreRequest", "SourceMailbox"),
    "REMOVE_RESTORE_REQUEST": ("Remove-MailboxRestoreRequest", "Identity"),
    "REMOVE_HOLD": ("Set-Mailbox", "Identity"),
    "CHANGE_HOLD": ("Set-Mailbox", "Identity"),
    "ADD_ADDRESS": ("Set-Mailbox", "Identity"),
    "REMOVE_ADDRESS": ("Set-Mailbox", "Identity"),
}
LARGE_SET_LIMIT = 50_000
IDENTITY_PARAMETERS = ("identity", "inactivemailbox", "sourcemailbox", "targetmailbox")
# Admin audit logging records every cmdlet but those whose verb is Get, Search or Test; Export-MailboxDiagnosticLogs
# (which imm runs to read HoldTracking) is logged too, yet only reads diagnostics: none of these is an outside change.
READ_ONLY_VERBS = frozenset({"get", "search", "test", "export"})


@dataclass
class Finding:
    status: str  # confirmed | not_yet | missing | outside | not_checked
    when: str
    cmdlet: str
    mailbox: str | None
    user: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    audit_row: int | None = None
    record_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "when": self.when,
            "cmdlet": self.cmdlet,
            "mailbox": self.mailbox,
            "user": self.user,
            "parameters": self.parameters,
            "audit_row": self.audit_row,
            "record_id": self.record_id,
        }


@dataclass
class _Expected:
    cmdlet: str
    names: set[str]
    start: datetime
    end: datetime
    row: Any
    parameters: dict[str, Any]


@dataclass
class _Record:
    data: dict[str, Any]
    when: datetime
    cmdlet: str
    names: set[str]
    parameters: dict[str, Any]
    ordered: list[str] = field(default_factory=list)  # the identity parameters first: names can repeat
    matched: bool = False


def _names(values: Iterable[Any]) -> set[str]:
    """Identity values, lower case; a switch (``Set-Mailbox -InactiveMailbox``) names nothing."""
    out = {str(v).strip().lower() for v in values if isinstance(v, str) and v.strip()}
    return out - {"true", "false"}


def _record(raw: Mapping[str, Any]) -> _Record | None:
    try:
        data = json.loads(raw["AuditData"]) if isinstance(raw.get("AuditData"), str) else dict(raw["AuditData"])
        when = datetime.fromisoformat(str(data["CreationTime"]).replace("Z", "+00:00"))
    except (KeyError, ValueError, TypeError):
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    parameters = {
        str(p.get("Name")): p.get("Value")
        for p in data.get("Parameters") or []
        if isinstance(p, dict) and p.get("Name")
    }
    object_id = str(data.get("ObjectId") or "")
    ordered = [
        str(v).strip().lower()
        for k, v in parameters.items()
        if k.lower() in IDENTITY_PARAMETERS and isinstance(v, str) and v.strip().lower() not in ("", "true", "false")
    ]
    ordered += [n.strip().lower() for n in (object_id.rsplit("/", 1)[-1], data.get("ModifiedObjectResolvedName")) if n]
    names = _names([*ordered, object_id])
    operation = str(data.get("Operation") or raw.get("Operations") or "")
    return _Record(data, when, operation, names, parameters, ordered)


def read_exchange_admin_log(ops: ExchangeOperations, start: datetime, end: datetime) -> list[_Record]:
    """Every ExchangeAdmin record in [start, end): blocks of one search session until an empty block."""
    session = f"imm-reconcile-{uuid.uuid4()}"
    records: list[_Record] = []
    seen: set[str] = set()
    while True:
        block = ops.search_unified_audit_log(start, end, session)
        if not block:
            break
        for raw in block:
            rec = _record(raw)
            key = str(rec.data.get("Id")) if rec else ""
            if rec is not None and key not in seen:
                seen.add(key)
                records.append(rec)
        total = max(int(r.get("ResultCount") or 0) for r in block)
        if total >= LARGE_SET_LIMIT:
            raise InputError(
                f"Microsoft's audit log has {LARGE_SET_LIMIT:,} or more Exchange admin records since "
                f"{format_timestamp(start)}: more than one search returns",
                hint="reconcile a shorter span (--since)",
            )
        if max(int(r.get("ResultIndex") or 0) for r in block) >= total:
            break
    return records


@dataclass
class ReconcileReport:
    since: datetime
    until: datetime
    findings: list[Finding]
    records_read: int

    def counts(self) -> dict[str, int]:
        out = {"confirmed": 0, "not_yet": 0, "missing": 0, "outside": 0, "not_checked": 0}
        for f in self.findings:
            out[f.status] += 1
        return out


def _when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _imm_changes(audit: AuditLogger, since: datetime) -> tuple[list[_Expected], list[Finding]]:
    expected: list[_Expected] = []
    unchecked: list[Finding] = []
    results = audit.get_operations(since, operation=sorted(CHANGE_OPERATIONS - {"PRUNE"}), result=["success"])
    for row in results:
        started = audit.get_operations(operation_id=row.operation_id, result="started") if row.operation_id else []
        details = started[0].details if started else row.details
        begin = started[0].timestamp if started else row.timestamp
        steps = details.get("cmdlets") or row.details.get("cmdlets")
        if not steps and row.operation in DEFAULT_CMDLETS:
            cmdlet, parameter = DEFAULT_CMDLETS[row.operation]
            steps = [{"cmdlet": cmdlet, "endpoint": "exchange", "parameters": {parameter: row.identity}}]
        for step in steps or []:
            if not isinstance(step, dict) or not step.get("cmdlet"):
                continue
            parameters = dict(step.get("parameters") or {})
            if step.get("endpoint", "exchange") != "exchange":
                unchecked.append(
                    Finding(
                        "not_checked",
                        format_timestamp(row.timestamp),
                        str(step["cmdlet"]),
                        row.identity,
                        row.user,
                        parameters,
                        row.id,
                    )
                )
                continue
            names = _names([row.identity] + [v for k, v in parameters.items() if k.lower() in IDENTITY_PARAMETERS])
            expected.append(
                _Expected(str(step["cmdlet"]), names, begin - SLACK, row.timestamp + SLACK, row, parameters)
            )
    return expected, unchecked


def _inactive_names(db: DatabaseManager) -> dict[str, str]:
    """Every identifier of every mailbox in the cache → its ExchangeGuid."""
    out: dict[str, str] = {}
    for mailbox in db.get_all_mailboxes():
        for value in (
            mailbox.identity,
            mailbox.primary_smtp,
            mailbox.name,
            mailbox.distinguished_name,
            mailbox.user_principal_name,
            mailbox.legacy_exchange_dn,
        ):
            if value:
                out[str(value).strip().lower()] = mailbox.identity
    return out


def reconcile(
    audit: AuditLogger,
    db: DatabaseManager,
    ops: ExchangeOperations,
    since: datetime,
    *,
    delay: timedelta = timedelta(hours=24),
    now: datetime | None = None,
) -> ReconcileReport:
    now = now or datetime.now(UTC)
    expected, findings = _imm_changes(audit, since)
    records = read_exchange_admin_log(ops, since - SLACK, now + SLACK)
    for item in expected:
        match = next(
            (
                r
                for r in records
                if not r.matched
                and r.cmdlet.lower() == item.cmdlet.lower()
                and r.names & item.names
                and item.start <= r.when <= item.end
            ),
            None,
        )
        row = item.row
        if match is not None:
            match.matched = True
            status = "confirmed"
        else:
            status = "not_yet" if row.timestamp > now - delay else "missing"
        findings.append(
            Finding(
                status,
                format_timestamp(row.timestamp),
                item.cmdlet,
                row.identity,
                row.user,
                item.parameters,
                row.id,
                str(match.data.get("Id")) if match else None,
            )
        )
    inactive = _inactive_names(db)
    for rec in records:
        if rec.matched or rec.cmdlet.split("-", 1)[0].lower() in READ_ONLY_VERBS:
            continue
        hit = next((inactive[n] for n in rec.ordered if n in inactive), None)
        if hit is None:
            continue
        findings.append(
            Finding(
                "outside",
                format_timestamp(rec.when),
                rec.cmdlet,
                hit,
                str(rec.data.get("UserId") or ""),
                rec.parameters,
                None,
                str(rec.data.get("Id")),
            )
        )
    findings.sort(key=lambda f: f.when)
    report = ReconcileReport(since, now, findings, len(records))
    audit.log_operation(
        OperationType.REPORT,
        None,
        {
            "report": "audit-reconcile",
            "since": format_timestamp(since),
            "records_read": len(records),
            **report.counts(),
        },
        AuditResult.SUCCESS,
    )
    return report
