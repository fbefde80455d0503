"""Exchange Online value formats (exo-rest.md §4) turned into Python values.

Every function accepts what Exchange sends over ``InvokeCommand`` (and what the PowerShell backend or the local
cache hands back): strings in Exchange's own formats, already-typed values, ``None`` and empty strings. Text that
is none of these raises :class:`imm.errors.InputError` with one line naming the value, so the same parsers serve
user input (``--min-size 5GB``, ``--older-than 365``) and records from Exchange.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from imm.errors import InputError

__all__ = [
    "KNOWN_LOCATION_KINDS",
    "format_size",
    "mailbox_location_kinds",
    "canonical_guid",
    "normalise_guid",
    "or_default",
    "parse_bool",
    "parse_count",
    "parse_datetime",
    "parse_guid",
    "parse_list",
    "parse_size",
    "parse_strings",
    "parse_timespan_days",
    "strip_prefix_guid",
]

T = TypeVar("T")


def or_default(reader: Callable[[Any], T | None], value: Any, default: T) -> T:
    """``reader(value)``, or ``default`` when the value is empty or not in the reader's format.

    The one lenient form of every reader below, for record fields where one odd value must not fail a whole
    mailbox: ``or_default(parse_bool, record.get("Enabled"), True)``.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        result = reader(value)
    except InputError:
        return default
    return default if result is None else result


# Exchange's ByteQuantifiedSize uses binary multiples (1 KB = 1,024 bytes).
_UNIT_BYTES: dict[str, int] = {"": 1, "b": 1, "byte": 1, "bytes": 1}
for _power, _letter in enumerate("kmgtp", start=1):
    for _spelling in (_letter, _letter + "b", _letter + "ib"):
        _UNIT_BYTES[_spelling] = 1024**_power
_UNLIMITED = {"unlimited", "infinite"}
# "16.09 MB (16,873,043 bytes)": the exact count is in the parentheses.
_BYTES_IN_PARENS = re.compile(r"\(\s*([0-9,.\s\u00a0\u202f']+?)\s*bytes?\s*\)", re.IGNORECASE)
_GROUPED_INT = re.compile(r"^[0-9]{1,3}(?:,[0-9]{3})+$")  # "16,873,043"
_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:[.,][0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(value: Any) -> int | None:
    """Bytes from an Exchange size: ``"16.09 MB (16,873,043 bytes)"`` → 16873043.

    ``"Unlimited"``, ``None`` and ``""`` → None. A plain int (or digit string) is bytes. Without the exact count in
    parentheses, ``"1.5 GB"`` / ``"500MB"`` are converted with binary units and rounded to whole bytes.
    """
    if value is None or isinstance(value, bool):
        if isinstance(value, bool):
            raise InputError(f"not a size: {value!r}")
        return None
    if isinstance(value, int):
        if value < 0:
            raise InputError(f"not a size: {value!r} (negative)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise InputError(f"not a size: {value!r}")
        return int(round(value))
    text = str(value).strip()
    if not text:
        return None
    if text.lower() in _UNLIMITED:
        return None
    exact = _BYTES_IN_PARENS.search(text)
    if exact:
        digits = re.sub(r"[^0-9]", "", exact.group(1))
        if digits:
            return int(digits)
    if text.isascii() and text.isdigit():
        return int(text)
    if _GROUPED_INT.match(text):
        return int(text.replace(",", ""))
    match = _NUMBER_UNIT.match(text.replace("\u00a0", " "))
    if match:
        number, unit = match.group(1).replace(",", "."), match.group(2).lower()
        factor = _UNIT_BYTES.get(unit)
        if factor:
            return int((Decimal(number) * factor).to_integral_value(ROUND_HALF_UP))
    raise InputError(f"not a size: {text!r} (expected e.g. '16.09 MB (16,873,043 bytes)', '5 GB' or 'Unlimited')")


def format_size(n: int | float | None) -> str:
    """A short human size with binary units: ``1.5 GB``, ``0 B``; None → ``Unlimited``."""
    if n is None:
        return "Unlimited"
    value = float(n)
    units = ("B", "KB", "MB", "GB", "TB", "PB")
    unit = 0
    while abs(value) >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{int(value)} B"
    return f"{value:.2f}".rstrip("0").rstrip(".") + f" {units[unit]}"


_MS_DATE = re.compile(r"^/?Date\((-?[0-9]+)([+-][0-9]{4})?\)/?$")
_US_DATE = re.compile(
    r"^([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})(?:\s+([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?\s*([AaPp][Mm])?)?$"
)  # "9/21/2022 8:07:47 AM": what PowerShell's ToString() gives in en-US (the pwsh backend may pass it through)


def parse_datetime(value: Any) -> datetime | None:
    """A timezone-aware UTC datetime from Exchange's formats, or None when empty.

    Accepts ``2022-09-21T08:07:47.0000000+00:00``, ``…Z``, ``/Date(1663747667000)/``, ISO dates, en-US
    ``9/21/2022 8:07:47 AM``, datetimes and Unix seconds. Values without an offset are taken as UTC. .NET's
    ``DateTime.MinValue`` (year 1), which Exchange shows for "never set", is None.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, bool):
        raise InputError(f"not a date: {value!r}")
    elif isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            raise InputError(f"not a date: {value!r} (out of range)") from None
    else:
        text = str(value).strip()
        if not text:
            return None
        moment = _parse_datetime_text(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.utcoffset() != timedelta(0) or moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    if moment.year <= 1:
        return None
    return moment


def _parse_datetime_text(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    ms = _MS_DATE.match(text)
    if ms:
        try:
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms.group(1)))
        except OverflowError:
            raise InputError(f"not a date: {text!r} (out of range)") from None
    us = _US_DATE.match(text)
    if us:
        month, day, year = int(us.group(1)), int(us.group(2)), int(us.group(3))
        hour, minute, second = int(us.group(4) or 0), int(us.group(5) or 0), int(us.group(6) or 0)
        meridian = (us.group(7) or "").lower()
        if meridian == "pm" and hour < 12:
            hour += 12
        elif meridian == "am" and hour == 12:
            hour = 0
        try:
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except ValueError:
            pass
    raise InputError(f"not a date: {text!r} (expected e.g. '2022-09-21T08:07:47Z' or '2022-09-21')")


_TIMESPAN = re.compile(r"^(-)?(?:([0-9]+)\.)?([0-9]+):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]+)?)?$")
_ISO_DURATION = re.compile(
    r"^P(?:([0-9]+)W)?(?:([0-9]+)D)?(?:T(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+(?:\.[0-9]+)?)S)?)?$", re.I
)


def parse_timespan_days(value: Any) -> int | None:
    """Whole days of a .NET TimeSpan: ``"365.00:00:00"`` → 365, ``"00:00:00"`` → 0, ``"Unlimited"`` → None.

    Also takes ints, digit strings (days) and ISO 8601 durations (``P365D``). Partial days are dropped
    (``"1.12:00:00"`` → 1). ``None``/``""`` → None.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(f"not a duration: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, timedelta):
        return value.days
    text = str(value).strip()
    if not text or text.lower() in _UNLIMITED:
        return None
    if text.isascii() and text.lstrip("-").isdigit():
        return int(text)
    span = _TIMESPAN.match(text)
    if span:
        days = int(span.group(2) or 0)
        hours = int(span.group(3))
        total = days + hours // 24
        return -total if span.group(1) else total
    iso = _ISO_DURATION.match(text)
    if iso and any(iso.groups()):
        weeks, days, hours = int(iso.group(1) or 0), int(iso.group(2) or 0), int(iso.group(3) or 0)
        return weeks * 7 + days + hours // 24
    raise InputError(f"not a duration: {text!r} (expected e.g. '365.00:00:00', '365' or 'Unlimited')")


_TRUE = {"true", "$true", "1", "yes", "y", "on"}
_FALSE = {"false", "$false", "0", "no", "n", "off", "none", "null"}


def parse_bool(value: Any, default: bool = False) -> bool:
    """``True``/``"True"``/``"$true"``/``1``/``"yes"`` → True; the false forms → False; None or ``""`` → default."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    text = str(value).strip().lower()
    if not text:
        return default
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(f"not a true/false value: {value!r}")


_HEX32 = re.compile(r"[0-9a-f]{32}")
_HOLD_PREFIXES = ("unih", "mbx", "skp", "grp", "cld")


def parse_guid(value: Any) -> str:
    """A GUID in any form Exchange prints (dashed, bare 32 hex digits, in braces, any case) as 32 lower-case hex
    digits; ``""`` when ``value`` is empty or not a GUID."""
    text = normalise_guid(value)
    return text if _HEX32.fullmatch(text) else ""


def normalise_guid(value: Any) -> str:
    """32 lower-case hex digits without dashes or braces (the form InPlaceHolds values carry); ``""`` if empty."""
    return str(value or "").strip().strip("{}").replace("-", "").lower()


def canonical_guid(value: Any) -> str | None:
    """A GUID in any form Exchange prints it (``D`` with dashes, ``N`` 32 hex digits as in InPlaceHolds, ``B`` in
    braces, ``P`` in parentheses, ``urn:uuid:``), as lower-case ``8-4-4-4-12``; None when it is not a GUID."""
    import uuid

    text = str(value or "").strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def strip_prefix_guid(hold: str) -> str:
    """The policy GUID inside an InPlaceHolds value, normalised (see :func:`normalise_guid`).

    ``"mbx7cfb30345d454ac0a989ab3041051209:2"`` → ``"7cfb30345d454ac0a989ab3041051209"``; works for the
    ``mbx``/``skp``/``grp``/``UniH``/``cld`` prefixes, the ``-`` exclusion mark, the ``:n`` action suffix and bare
    legacy GUIDs (dashed or not). A value with no GUID comes back lower-cased without prefix and suffix.
    """
    text = str(hold or "").strip().lower()
    if text.startswith("-"):
        text = text[1:]
    for prefix in _HOLD_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    if ":" in text:
        text = text.split(":", 1)[0]
    text = normalise_guid(text)
    found = _HEX32.search(text)
    return found.group(0) if found else text


KNOWN_LOCATION_KINDS = ("Primary", "MainArchive", "AuxArchive", "AuxPrimary", "ComponentShared")
_KIND_BY_LOWER = {kind.lower(): kind for kind in KNOWN_LOCATION_KINDS}


def mailbox_location_kinds(values: Any) -> list[str]:
    """The kind of each MailboxLocations entry, in order, duplicates kept (they count shards).

    Entries look like ``"1;<guid>;Primary;<domain>;<dbguid>"``; the kind is the third field, but any field that
    is a known kind (Primary, MainArchive, AuxArchive, AuxPrimary, ComponentShared, any case) is taken. An entry
    with no known kind contributes its third field when it has one, else nothing.
    """
    if values is None or values == "":
        return []
    if isinstance(values, str):
        values = [values]
    kinds: list[str] = []
    for entry in values:
        fields = [part.strip() for part in str(entry).split(";")]
        kind = next((_KIND_BY_LOWER[f.lower()] for f in fields if f.lower() in _KIND_BY_LOWER), None)
        if kind is None and len(fields) >= 3 and fields[2]:
            kind = fields[2]
        if kind:
            kinds.append(kind)
    return kinds


def parse_list(value: Any) -> list[Any]:
    """A multi-valued property as a list: a JSON array as it is, one value as a list of one, None/``""`` → []."""
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def parse_strings(value: Any) -> list[str]:
    """A multi-valued property as texts, empty entries dropped: ``["a", None, ""]`` → ``["a"]``."""
    return [str(v) for v in parse_list(value) if v is not None and v != ""]


def parse_count(value: Any) -> int | None:
    """A whole count Exchange prints (``"1,234"``, ``12``); None/``""`` → None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InputError(f"not a count: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip().replace(",", "")
    if text.isascii() and text.isdigit():
        return int(text)
    raise InputError(f"not a count: {value!r}")
