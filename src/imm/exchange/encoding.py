"""The ``InvokeCommand`` wire format: the ``CmdletInput`` envelope, parameter encoding and record clean-up.

Parameter encoding follows the module's Transform-Parameters (exo-rest.md §3):

============================  =====================================================================================
Python value                  JSON sent
============================  =====================================================================================
``True`` / ``False``          ``true`` / ``false`` (switches and booleans alike)
``dict`` (a hashtable)        the dict plus ``"@odata.type": "#Exchange.GenericHashTable"``, recursively
``list`` of ``dict``          an array of hashtables plus the sibling ``"<P>@odata.type":
                              "#Collection(Exchange.GenericHashTable)"``
``bytes``                     ``{"@odata.type": "#Exchange.ByteArrayType", "Data": [0, 255, …]}``
``datetime`` / ``date``       UTC ``yyyy-MM-ddTHH:mm:ss`` (a naive datetime is taken as UTC)
``timedelta``                 a TimeSpan string ``d.hh:mm:ss``
``list`` / ``tuple`` / set    a JSON array of the encoded items
UUID, Path, IP, Enum          their string (an Enum: its value)
:class:`SecureString`         RSA PKCS#1 v1.5 with the tenant's public key, base64 (see ``imm.exchange.secure``)
``None``                      the parameter is left out
============================  =====================================================================================

In parameters whose name ends in ``Filter`` (OPATH filters) ``$true`` / ``$false`` become ``'True'`` / ``'False'``,
as the module does. ``ResultSize`` is sent as an int or ``"Unlimited"``.

Records come back as Exchange writes them (strings for dates, sizes and GUIDs). :func:`strip_annotations` drops the
``P@odata.type`` / ``P@data.type`` / ``@odata.type`` annotation keys, so callers see plain property values.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import PurePath
from typing import Any

from imm.errors import InputError

HASHTABLE_TYPE = "#Exchange.GenericHashTable"
HASHTABLE_COLLECTION_TYPE = "#Collection(Exchange.GenericHashTable)"
BYTE_ARRAY_TYPE = "#Exchange.ByteArrayType"
ODATA_TYPE = "@odata.type"
MAX_PAGE_SIZE = 1000  # the module never asks for more than 1,000 records a page
UNLIMITED = "Unlimited"
_FILTER_BOOL = re.compile(r"\$(true|false)\b", re.IGNORECASE)
_CMDLET_NAME = re.compile(r"[A-Za-z]+-[A-Za-z0-9]+")


class SecureString:
    """A clear-text value that Exchange takes as a SecureString (e.g. ``New-Mailbox -Password``).

    It is encrypted at encoding time and never printed: ``repr``/``str`` show ``***``.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise InputError("a password must be a non-empty text")
        self._value = value

    def reveal(self) -> str:
        """The clear text (for the encryptor only)."""
        return self._value

    def __repr__(self) -> str:
        return "SecureString(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecureString) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("SecureString", self._value))


Encryptor = Callable[[str], str]


def check_cmdlet_name(name: str) -> str:
    """The cmdlet name if it looks like ``Verb-Noun``; else an InputError (nothing odd reaches Exchange)."""
    if not isinstance(name, str) or not _CMDLET_NAME.fullmatch(name):
        raise InputError(f"'{name}' is not a cmdlet name (expected Verb-Noun)")
    return name


def format_datetime(value: datetime | date) -> str:
    """UTC ``yyyy-MM-ddTHH:mm:ss`` (a date is midnight UTC; a naive datetime is taken as UTC)."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day, tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def format_timespan(value: timedelta) -> str:
    """A .NET TimeSpan string: ``14.00:00:00``, ``01:30:00``, ``-1.00:00:00``."""
    total = int(value.total_seconds())
    sign = "-" if total < 0 else ""
    days, rest = divmod(abs(total), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{sign}{days}.{clock}" if days else f"{sign}{clock}"


def encode_value(value: Any, encrypt: Encryptor | None = None, *, name: str = "") -> Any:
    """One parameter value as JSON data (see the module docstring for the table)."""
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, str) and name.lower().endswith("filter"):
            return _FILTER_BOOL.sub(lambda m: "'True'" if m.group(1).lower() == "true" else "'False'", value)
        return value
    if isinstance(value, SecureString):
        if encrypt is None:
            raise InputError(
                f"the parameter '{name}' is a SecureString, but no public key is configured to encrypt it",
                hint="set password_public_key in the profile (a PEM file, PEM text or the .NET RSAKeyValue XML)",
            )
        return encrypt(value.reveal())
    if isinstance(value, enum.Enum):
        return encode_value(value.value, encrypt, name=name)
    if isinstance(value, datetime | date):
        return format_datetime(value)
    if isinstance(value, timedelta):
        return format_timespan(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {ODATA_TYPE: BYTE_ARRAY_TYPE, "Data": list(bytes(value))}
    if isinstance(value, Mapping):
        return encode_hashtable(value, encrypt)
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
        return [encode_value(item, encrypt, name=name) for item in items]
    if isinstance(value, uuid.UUID | PurePath | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    raise InputError(f"the parameter '{name}' has a value of type {type(value).__name__} that cannot be sent")


def encode_hashtable(table: Mapping[str, Any], encrypt: Encryptor | None = None) -> dict[str, Any]:
    """A hashtable with its ``@odata.type`` (nested hashtables too: e.g. ``@{Add=…; Remove=…}``)."""
    out: dict[str, Any] = {}
    for key, item in table.items():
        if key == ODATA_TYPE:
            continue
        out[str(key)] = encode_value(item, encrypt, name=str(key))
    out[ODATA_TYPE] = HASHTABLE_TYPE
    return out


def encode_parameters(parameters: Mapping[str, Any] | None, encrypt: Encryptor | None = None) -> dict[str, Any]:
    """The ``Parameters`` hashtable of a CmdletInput (top level carries no ``@odata.type`` of its own)."""
    out: dict[str, Any] = {}
    for name, value in (parameters or {}).items():
        if value is None:
            continue
        if not isinstance(name, str) or not name or "@" in name:
            raise InputError(f"'{name}' is not a parameter name")
        encoded = encode_value(value, encrypt, name=name)
        out[name] = encoded
        if isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
            # hashtable[]: the module adds a sibling annotation naming the collection type ([DUMP]); the items are
            # hashtables and carry their own @odata.type like any hashtable (per-item annotation: unconfirmed).
            out[f"{name}@odata.type"] = HASHTABLE_COLLECTION_TYPE
    return out


def result_size_value(result_size: int | str | None) -> int | str | None:
    """``ResultSize`` as sent: a positive int, ``"Unlimited"``, or None (not sent)."""
    if result_size is None:
        return None
    if isinstance(result_size, str):
        text = result_size.strip()
        if text.lower() == "unlimited":
            return UNLIMITED
        if text.isdigit() and int(text) > 0:
            return int(text)
    elif isinstance(result_size, int) and not isinstance(result_size, bool) and result_size > 0:
        return result_size
    raise InputError(f"ResultSize must be a positive number or 'Unlimited', not {result_size!r}")


def page_size_for(result_size: int | str | None, cap: int = MAX_PAGE_SIZE) -> int:
    """``Prefer: odata.maxpagesize`` = min(ResultSize, 1000) (Unlimited or unset: the cap)."""
    cap = max(1, min(int(cap), MAX_PAGE_SIZE))
    if isinstance(result_size, int) and not isinstance(result_size, bool):
        return max(1, min(result_size, cap))
    return cap


def envelope(cmdlet: str, parameters: Mapping[str, Any] | None, encrypt: Encryptor | None = None) -> dict[str, Any]:
    """``{"CmdletInput": {"CmdletName": …, "Parameters": {…}}}``."""
    return {
        "CmdletInput": {"CmdletName": check_cmdlet_name(cmdlet), "Parameters": encode_parameters(parameters, encrypt)}
    }


def is_annotation(key: str) -> bool:
    """``P@odata.type``, ``P@data.type``, ``@odata.type``, ``@odata.context`` … (OData instance annotations)."""
    return "@" in key


def strip_annotations(record: Any) -> Any:
    """The record without annotation keys (recursively in nested objects); values are left as Exchange wrote them."""
    # One pass per object; only nested objects and arrays recurse (every reply of a sync goes through here).
    if isinstance(record, dict):
        return {k: strip_annotations(v) if isinstance(v, dict | list) else v for k, v in record.items() if "@" not in k}
    if isinstance(record, list):
        return [strip_annotations(v) if isinstance(v, dict | list) else v for v in record]
    return record
