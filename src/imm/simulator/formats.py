"""How Exchange Online writes values on the ``InvokeCommand`` wire (exo-rest.md §4), for the simulated tenant.

An independent reading of Microsoft's formats: nothing here is shared with imm's own parsers.

- Sizes (ByteQuantifiedSize.ToString): ``16.09 MB (16,873,043 bytes)``, ``99 GB (106,300,440,576 bytes)``,
  ``0 B (0 bytes)``. The unit is the largest one the value reaches; the number is rounded to two decimals with
  trailing zeros dropped (rounding rather than truncation is **unconfirmed**).
- DateTime: ``2022-09-21T08:07:47.0000000+00:00`` (seven fractional digits, the server's UTC offset); the
  ``*UTC`` twins (WhenChangedUTC, WhenCreatedUTC) end in ``Z``.
- TimeSpan: ``14.00:00:00`` (``d.hh:mm:ss``; no day part under one day: ``01:30:00``).
- GUIDs and DateTimes carry two annotations before the value: ``P@data.type`` (the .NET type) and
  ``P@odata.type`` (the OData type). The DateTime pair (``System.DateTime`` / ``#DateTimeOffset``) is
  **unconfirmed**; the GUID pair is as captured.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"


def size_string(n: int) -> str:
    """``16.09 MB (16,873,043 bytes)``: the Exchange ByteQuantifiedSize text for ``n`` bytes."""
    n = max(0, int(n))
    value = float(n)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        number = str(n)
    else:
        number = f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{number} {_UNITS[unit]} ({n:,} bytes)"


def datetime_string(ts: float | None, utc_z: bool = False) -> str | None:
    """``2022-09-21T08:07:47.0000000+00:00`` (or ``…Z`` for the ``*UTC`` fields); None stays None."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, UTC)
    ticks = f"{moment.microsecond:06d}0"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + ticks + ("Z" if utc_z else "+00:00")


def timespan_string(days: float) -> str:
    """``14.00:00:00`` for 14 days; ``01:30:00`` under a day."""
    total = round(days * 86400)
    d, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    clock = f"{h:02d}:{m:02d}:{s:02d}"
    return f"{d}.{clock}" if d else clock


def hold_duration_string(days: int | None) -> str:
    """LitigationHoldDuration: ``365.00:00:00`` or ``Unlimited``."""
    return "Unlimited" if days is None else timespan_string(days)


def ex_code(exception_type: str) -> str:
    """A stable ``Ex…`` prefix per exception type, shaped like the ``Ex6F9304`` Microsoft sends."""
    known = {"Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException": "Ex6F9304"}
    if exception_type in known:
        return known[exception_type]
    return "Ex" + hashlib.sha1(exception_type.encode()).hexdigest()[:6].upper()


class Record:
    """Builds one ``value`` entry in wire order, adding the GUID / DateTime / collection annotations."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def put(self, name: str, value: Any) -> Record:
        self.data[name] = value
        return self

    def guid(self, name: str, value: str | None) -> Record:
        if value:
            self.data[f"{name}@data.type"] = "System.Guid"
            self.data[f"{name}@odata.type"] = "#Guid"
        self.data[name] = value or None
        return self

    def date(self, name: str, ts: float | None, utc_z: bool = False) -> Record:
        if ts is not None:
            self.data[f"{name}@data.type"] = "System.DateTime"
            self.data[f"{name}@odata.type"] = "#DateTimeOffset"
        self.data[name] = datetime_string(ts, utc_z)
        return self

    def strings(self, name: str, values: list[str]) -> Record:
        self.data[f"{name}@odata.type"] = "#Collection(String)"
        self.data[name] = list(values)
        return self

    def int64(self, name: str, value: int) -> Record:
        self.data[f"{name}@odata.type"] = "#Int64"
        self.data[name] = int(value)
        return self
