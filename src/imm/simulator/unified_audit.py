"""The unified audit log of the simulated tenant, and ``Search-UnifiedAuditLog`` over it.

Every change an admin makes through Exchange (every cmdlet that is not Get-/Search-/Test-) is recorded as an
``ExchangeAdmin`` record (RecordType 1) in Microsoft's AuditData schema (Microsoft Learn, "Office 365 Management
Activity API schema": the common schema and the Exchange admin schema)::

    {"CreationTime": "2026-12-03T14:55:02", "Id": GUID, "Operation": "Set-Mailbox", "OrganizationId": TENANT,
     "RecordType": 1, "ResultStatus": "True", "UserKey": PUID, "UserType": 2, "Version": 1, "Workload": "Exchange",
     "ClientIP": "203.0.113.7:51234", "ObjectId": "EURPR01A001.prod.outlook.com/Microsoft Exchange Hosted
     Organizations/contoso.onmicrosoft.com/ana", "UserId": "admin@contoso.onmicrosoft.com", "AppId": "…",
     "ExternalAccess": false, "OrganizationName": "contoso.onmicrosoft.com", "OriginatingServer":
     "AM6PR04MB5211 (15.20.7409.032)", "Parameters": [{"Name": "Identity", "Value": "…"}, …],
     "ModifiedObjectResolvedName": "ana", "SessionId": GUID}

A record becomes searchable ``delay_seconds`` after the change (the log is not real time). ``outside_change``
records a change made by someone else (another admin, a script) as if it came through Exchange.

``Search-UnifiedAuditLog`` (cmdlet reference, MicrosoftDocs/office-docs-powershell
``exchange/exchange-ps/ExchangePowerShell/Search-UnifiedAuditLog.md``): ``-StartDate``/``-EndDate`` required (UTC);
``-RecordType``, ``-Operations``, ``-ObjectIds``, ``-UserIds`` filter; ``-ResultSize`` 100 by default, at most
5,000; without ``-SessionId`` one block only; with ``-SessionId`` each rerun of the same command returns the next
block, and a rerun after the last returns nothing; ``-SessionCommand ReturnLargeSet`` returns the records
*unsorted* (up to 50,000), ``ReturnNextPreviewPage`` sorted by date (up to 5,000). Each result carries
``ResultIndex`` (its position in the whole set) and ``ResultCount`` (the whole set's size).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imm.simulator.binding import Cmdlet, Invocation, Param, Result
from imm.simulator.model import CmdletError

ORIGINATING_SERVER = "AM6PR04MB5211 (15.20.7409.032)"
DEFAULT_RESULT_SIZE = 100
MAX_RESULT_SIZE = 5000
LARGE_SET_LIMIT = 50_000
PREVIEW_LIMIT = 5000


def is_change(cmdlet: str) -> bool:
    return not cmdlet.lower().startswith(("get-", "search-", "test-"))


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return ";".join(_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


@dataclass
class AuditRecord:
    created: float  # epoch seconds
    visible_at: float  # time.monotonic() from which a search finds it
    audit_data: dict[str, Any]
    identity: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class _Session:
    key: str
    records: list[AuditRecord]
    offset: int = 0


class UnifiedAuditLog:
    def __init__(self, tenant_id: str, tenant_domain: str, delay_seconds: float = 0.0, seed: int = 1) -> None:
        self.tenant_id = tenant_id
        self.tenant_domain = tenant_domain
        self.delay_seconds = delay_seconds
        self.records: list[AuditRecord] = []
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(f"ual:{seed}")

    def record(
        self,
        cmdlet: str,
        params: dict[str, Any],
        caller: str,
        object_name: str | None,
        *,
        app_id: str | None = None,
        when: float | None = None,
    ) -> AuditRecord:
        created = time.time() if when is None else when
        user_id = caller[4:] if caller.startswith("app:") else caller
        data: dict[str, Any] = {
            "CreationTime": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "Id": str(uuid.uuid4()),
            "Operation": cmdlet,
            "OrganizationId": self.tenant_id,
            "RecordType": 1,
            "ResultStatus": "True",
            "UserKey": hashlib.sha256(user_id.lower().encode()).hexdigest()[:16].upper(),
            "UserType": 5 if caller.startswith("app:") else 2,
            "Version": 1,
            "Workload": "Exchange",
            "ClientIP": "203.0.113.7:51234",
            "ObjectId": (
                f"EURPR01A001.prod.outlook.com/Microsoft Exchange Hosted Organizations/{self.tenant_domain}/"
                f"{object_name}"
                if object_name
                else ""
            ),
            "UserId": user_id,
            "AppId": app_id or "fb78d390-0c51-40cd-8e17-fdbfab77341b",
            "ClientAppId": "",
            "ExternalAccess": False,
            "OrganizationName": self.tenant_domain,
            "OriginatingServer": ORIGINATING_SERVER,
            "Parameters": [{"Name": k, "Value": _value(v)} for k, v in params.items() if k != "Password"]
            + ([{"Name": "Password", "Value": "********"}] if "Password" in params else []),
            "SessionId": str(uuid.uuid4()),
        }
        if object_name:
            data["ModifiedObjectResolvedName"] = object_name
        entry = AuditRecord(created, time.monotonic() + self.delay_seconds, data)
        with self._lock:
            self.records.append(entry)
        return entry

    def catch_up(self) -> None:
        """Let the delay pass: every record so far becomes searchable."""
        with self._lock:
            for r in self.records:
                r.visible_at = 0.0

    # ----- Search-UnifiedAuditLog -----

    def search(self, inv: Invocation) -> Result:
        start = _date(inv.get("StartDate"), "StartDate")
        end = _date(inv.get("EndDate"), "EndDate")
        if end <= start:
            return Result([])  # same date without a time: nothing (the reference's note on Example 2)
        size = inv.get("ResultSize") or DEFAULT_RESULT_SIZE
        if not 1 <= size <= MAX_RESULT_SIZE:
            raise CmdletError(
                400,
                "Microsoft.Exchange.Management.SystemConfigurationTasks.InvalidResultSizeException",
                f"The ResultSize value {size} is out of range: it must be between 1 and {MAX_RESULT_SIZE}.",
            )
        command = str(inv.get("SessionCommand") or "")
        if command and command.lower() not in ("returnlargeset", "returnnextpreviewpage"):
            raise CmdletError(
                400,
                "System.Management.Automation.ParameterBindingException",
                f"Cannot bind parameter 'SessionCommand'. Cannot convert value \"{command}\" to type "
                '"Microsoft.Exchange.Management.UnifiedAuditLog.UnifiedAuditSessionCommand".',
            )
        session_id = inv.get("SessionId")
        key = json.dumps({k: v for k, v in inv.params.items() if k != "SessionId"}, sort_keys=True, default=str)
        with self._lock:
            session = self._sessions.get(session_id) if session_id else None
            if session is None or session.key != key:
                found = self._matching(inv, start, end)
                if command.lower() == "returnlargeset":
                    self._rng.shuffle(found)  # "returns unsorted data"
                    found = found[:LARGE_SET_LIMIT]
                else:
                    found = sorted(found, key=lambda r: r.created, reverse=True)[:PREVIEW_LIMIT]
                session = _Session(key, found)
                if session_id:
                    self._sessions[session_id] = session
            block = session.records[session.offset : session.offset + size]
            first = session.offset
            session.offset += len(block)
            total = len(session.records)
        return Result([(r, first + i + 1, total) for i, r in enumerate(block)], render=_render)

    def _matching(self, inv: Invocation, start: datetime, end: datetime) -> list[AuditRecord]:
        now = time.monotonic()
        record_type = str(inv.get("RecordType") or "")
        if record_type and record_type.lower() != "exchangeadmin":
            return []
        operations = {o.lower() for o in inv.get("Operations") or []}
        objects = {o.lower() for o in inv.get("ObjectIds") or []}
        users = {u.lower() for u in inv.get("UserIds") or []}
        out = []
        for r in self.records:
            moment = datetime.fromtimestamp(r.created, UTC)
            if r.visible_at > now or not start <= moment < end:
                continue
            if operations and r.audit_data["Operation"].lower() not in operations:
                continue
            if objects and str(r.audit_data["ObjectId"]).lower() not in objects:
                continue
            if users and str(r.audit_data["UserId"]).lower() not in users:
                continue
            out.append(r)
        return out


def _date(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise CmdletError(
            400,
            "System.Management.Automation.ParameterBindingException",
            f"Cannot process argument transformation on parameter '{name}'. Cannot convert null to type "
            '"Microsoft.Exchange.ExchangeSystem.ExDateTime".',
        )
    text = value.strip().replace(" ", "T", 1)
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CmdletError(
            400,
            "System.Management.Automation.ParameterBindingException",
            f"Cannot process argument transformation on parameter '{name}'. Cannot convert value \"{value}\" to "
            'type "Microsoft.Exchange.ExchangeSystem.ExDateTime".',
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # "without a time zone, the value is in UTC"


def _render(item: tuple[AuditRecord, int, int]) -> dict[str, Any]:
    from imm.simulator.formats import datetime_string

    record, index, total = item
    data = record.audit_data
    return {
        "RecordType": "ExchangeAdmin",
        "CreationDate@data.type": "System.DateTime",
        "CreationDate@odata.type": "#DateTimeOffset",
        "CreationDate": datetime_string(record.created),
        "UserIds": data["UserId"],
        "Operations": data["Operation"],
        "AuditData": json.dumps(data, separators=(",", ":")),
        "ResultIndex": index,
        "ResultCount": total,
        "Identity": record.identity,
        "IsValid": True,
        "ObjectState": "Unchanged",
    }


def search_cmdlet(log: UnifiedAuditLog) -> Cmdlet:
    return Cmdlet(
        "Search-UnifiedAuditLog",
        (
            Param("StartDate", "string", True),
            Param("EndDate", "string", True),
            Param("RecordType"),
            Param("Operations", "strings"),
            Param("ObjectIds", "strings"),
            Param("UserIds", "strings"),
            Param("FreeText"),
            Param("IPAddresses", "strings"),
            Param("ResultSize", "int"),
            Param("SessionId"),
            Param("SessionCommand"),
            Param("Formatted", "switch"),
            Param("HighCompleteness", "switch"),
        ),
        log.search,
    )
