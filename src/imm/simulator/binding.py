"""Cmdlet descriptions and parameter binding for the ``CmdletInput`` envelope (exo-rest.md §3).

Parameter names bind case-insensitively, as PowerShell does; ``<P>@odata.type`` siblings and ``@odata.type`` keys
inside hashtables are annotations, not parameters. A bad name or value is a ParameterBindingException (HTTP 400).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imm.simulator.model import CmdletError, binding

if TYPE_CHECKING:
    from imm.simulator.tenant import Tenant

# Accepted on every cmdlet and ignored (WhatIf included: some EXO cmdlets accept it and change things anyway).
COMMON = frozenset(
    {"confirm", "whatif", "warningaction", "erroraction", "verbose", "debug", "informationaction", "force"}
)
_DOTNET = {
    "switch": "System.Management.Automation.SwitchParameter",
    "bool": "System.Boolean",
    "string": "System.String",
    "strings": "Microsoft.Exchange.Data.MultiValuedProperty`1[System.String]",
    "int": "System.Int32",
    "resultsize": "Microsoft.Exchange.Data.Unlimited`1[System.UInt32]",
    "duration": "Microsoft.Exchange.Data.Unlimited`1[Microsoft.Exchange.Data.EnhancedTimeSpan]",
    "timespan": "Microsoft.Exchange.Data.EnhancedTimeSpan",
    "proxies": "Microsoft.Exchange.Data.ProxyAddressCollection",
    "secure": "System.Security.SecureString",
    "any": "System.Object",
}
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str = "string"
    required: bool = False


@dataclass
class Invocation:
    """One bound call: the tenant, who calls, the converted parameters and the SecureString decryptor."""

    tenant: Tenant
    caller: str
    params: dict[str, Any]
    decrypt: Callable[[str], str]

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)


@dataclass
class Result:
    """What a cmdlet returns: items (rendered lazily per page by ``render``), warnings, a truncation flag."""

    items: Sequence[Any] = ()
    render: Callable[[Any], dict[str, Any]] | None = None
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False


@dataclass(frozen=True)
class Cmdlet:
    name: str
    params: tuple[Param, ...]
    run: Callable[[Invocation], Result]
    confirm: Callable[[dict[str, Any]], str] | None = None  # text of @adminapi.confirmationmessage

    def bind(self, raw: Any) -> dict[str, Any]:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise binding("The Parameters value must be a hashtable.")
        by_name = {p.name.lower(): p for p in self.params}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if "@" in key:
                continue
            param = by_name.get(key.lower())
            if param is None:
                if key.lower() in COMMON:
                    out[key[0].upper() + key[1:]] = value
                    continue
                raise binding(f"A parameter cannot be found that matches parameter name '{key}'.")
            out[param.name] = convert(param, value)
        missing = [p.name for p in self.params if p.required and p.name not in out]
        if missing:
            raise binding(
                f"Cannot process command because of one or more missing mandatory parameters: {' '.join(missing)}."
            )
        return out


def _bad(param: Param, value: Any) -> CmdletError:
    shown = value if isinstance(value, str) else repr(value)
    return binding(
        f"Cannot process argument transformation on parameter '{param.name}'. Cannot convert value \"{shown}\" "
        f'to type "{_DOTNET[param.kind]}".'
    )


def _bool(param: Param, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower().lstrip("$") in ("true", "false"):
        return value.strip().lower().lstrip("$") == "true"
    raise _bad(param, value)


def _days(param: Param, value: Any) -> int:
    if isinstance(value, bool):
        raise _bad(param, value)
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        match = _TIMESPAN.match(text)
        if match:
            return int(match.group(1) or 0)
    raise _bad(param, value)


def convert(param: Param, value: Any) -> Any:
    """The Python value of one parameter, or a ParameterBindingException."""
    kind = param.kind
    if kind == "switch":
        if isinstance(value, bool):
            return value
        raise _bad(param, value)
    if kind == "bool":
        return _bool(param, value)
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _bad(param, value)
    if kind == "strings":
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise _bad(param, value)
        return list(values)
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise _bad(param, value)
    if kind == "resultsize":
        if isinstance(value, str) and value.strip().lower() == "unlimited":
            return None
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        raise _bad(param, value)
    if kind == "duration":
        if isinstance(value, str) and value.strip().lower() == "unlimited":
            return None
        return _days(param, value)
    if kind == "timespan":
        return _days(param, value)
    if kind == "proxies":
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if "@" not in k}
        if isinstance(value, str | list):
            return value
        raise _bad(param, value)
    if kind == "secure":
        if isinstance(value, str) and value:
            return value
        raise _bad(param, value)
    return value
