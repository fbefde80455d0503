"""A small OPATH ``-Filter`` evaluator: ``WhenChanged -gt '2026-01-01T00:00:00Z' -and IsInactiveMailbox -eq $true``.

Operators: -eq -ne -gt -ge -lt -le -like -notlike, combined with -and / -or / -not and parentheses. Values: 'single'
or "double" quoted text, $true / $false / $null, numbers. Date texts: ISO 8601 or US ``MM/dd/yyyy [HH:mm:ss]``;
without an offset they are taken as UTC (**unconfirmed**: Exchange may read them in the server's culture).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Getter = Callable[[Any], Any]
Predicate = Callable[[Any], bool]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lp>\() | (?P<rp>\)) |
        (?P<op>-(?:eq|ne|gt|ge|lt|le|like|notlike|and|or|not)\b) |
        '(?P<sq>(?:[^']|'')*)' |
        "(?P<dq>(?:[^"]|"")*)" |
        (?P<word>[$A-Za-z0-9_.:/+\-]+)
    )""",
    re.IGNORECASE | re.VERBOSE,
)


class FilterError(ValueError):
    """An invalid filter; the message is the one Exchange shows."""


def _syntax(text: str, position: int) -> FilterError:
    return FilterError(
        'Cannot bind parameter \'Filter\' to the target. Exception setting "Filter": "Invalid filter syntax. For a '
        f'description of the filter parameter syntax see the command help. "{text}" at position {position + 1}."'
    )


def parse_date(text: str) -> float:
    """Epoch seconds for an ISO 8601 or US-format date text."""
    value = text.strip()
    for fmt in ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            pass
    iso = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    iso = re.sub(r"(\.\d{6})\d+", r"\1", iso)  # .NET's seven fractional digits
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def compile_filter(text: str, properties: dict[str, tuple[str, Getter]]) -> Predicate:
    """A predicate over records; ``properties`` maps a property name to (kind, getter), kind in
    'str' | 'date' | 'bool' | 'int'."""
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None or match.end() == pos:
            raise _syntax(text, pos)
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "sq":
            value = value.replace("''", "'")
        elif kind == "dq":
            value = value.replace('""', '"')
        tokens.append((kind, value, match.start(kind)))
        pos = match.end()
    lookup = {name.lower(): (name, spec) for name, spec in properties.items()}
    parser = _Parser(text, tokens, lookup)
    predicate = parser.expression()
    if parser.i != len(tokens):
        raise _syntax(text, tokens[parser.i][2])
    return predicate


class _Parser:
    def __init__(self, text: str, tokens: list[tuple[str, str, int]], props: dict[str, tuple[str, Any]]) -> None:
        self.text = text
        self.tokens = tokens
        self.props = props
        self.i = 0

    def _peek_op(self) -> str:
        if self.i < len(self.tokens) and self.tokens[self.i][0] == "op":
            return self.tokens[self.i][1].lower()
        return ""

    def _fail(self) -> FilterError:
        position = self.tokens[self.i][2] if self.i < len(self.tokens) else len(self.text)
        return _syntax(self.text, position)

    def expression(self) -> Predicate:
        left = self._and()
        while self._peek_op() == "-or":
            self.i += 1
            right = self._and()
            left = (lambda a, b: lambda r: a(r) or b(r))(left, right)
        return left

    def _and(self) -> Predicate:
        left = self._not()
        while self._peek_op() == "-and":
            self.i += 1
            right = self._not()
            left = (lambda a, b: lambda r: a(r) and b(r))(left, right)
        return left

    def _not(self) -> Predicate:
        if self._peek_op() == "-not":
            self.i += 1
            inner = self._not()
            return lambda r: not inner(r)
        return self._primary()

    def _primary(self) -> Predicate:
        if self.i >= len(self.tokens):
            raise self._fail()
        kind, value, _ = self.tokens[self.i]
        if kind == "lp":
            self.i += 1
            inner = self.expression()
            if self.i >= len(self.tokens) or self.tokens[self.i][0] != "rp":
                raise self._fail()
            self.i += 1
            return inner
        if kind != "word" or value.lower() not in self.props:
            if kind == "word":
                raise FilterError(
                    'Cannot bind parameter \'Filter\' to the target. Exception setting "Filter": "The property '
                    f"'{value}' isn't supported in a filter for this cmdlet.\""
                )
            raise self._fail()
        self.i += 1
        op = self._peek_op()
        if op not in ("-eq", "-ne", "-gt", "-ge", "-lt", "-le", "-like", "-notlike"):
            raise self._fail()
        self.i += 1
        if self.i >= len(self.tokens) or self.tokens[self.i][0] not in ("sq", "dq", "word"):
            raise self._fail()
        raw_kind, raw, raw_pos = self.tokens[self.i]
        self.i += 1
        _, (prop_kind, getter) = self.props[value.lower()]
        return _comparison(prop_kind, getter, op, raw, raw_kind, self.text, raw_pos)


def _comparison(kind: str, getter: Getter, op: str, raw: str, raw_kind: str, text: str, pos: int) -> Predicate:
    if raw_kind == "word" and raw.lower() == "$null":
        if op == "-eq":
            return lambda r: getter(r) in (None, "")
        if op == "-ne":
            return lambda r: getter(r) not in (None, "")
        raise _syntax(text, pos)
    if op in ("-like", "-notlike"):
        pattern = re.compile(fnmatch.translate(raw.lower()), re.DOTALL)
        negate = op == "-notlike"
        return lambda r: bool(pattern.match(str(getter(r) or "").lower())) != negate
    target: Any
    if kind == "date":
        try:
            target = parse_date(raw)
        except ValueError:
            raise FilterError(
                f"Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"The value '{raw}' "
                'could not be converted to type System.DateTime."'
            ) from None
    elif kind == "bool":
        low = raw.lower().lstrip("$")
        if low not in ("true", "false"):
            raise _syntax(text, pos)
        target = low == "true"
    elif kind == "int":
        try:
            target = int(raw)
        except ValueError:
            raise _syntax(text, pos) from None
    else:
        target = raw.lower()

    def value_of(record: Any) -> Any:
        value = getter(record)
        return value.lower() if kind == "str" and isinstance(value, str) else value

    compare: dict[str, Callable[[Any, Any], bool]] = {
        "-eq": lambda a, b: a == b,
        "-ne": lambda a, b: a != b,
        "-gt": lambda a, b: a > b,
        "-ge": lambda a, b: a >= b,
        "-lt": lambda a, b: a < b,
        "-le": lambda a, b: a <= b,
    }
    fn = compare[op]

    def predicate(record: Any) -> bool:
        value = value_of(record)
        if value is None:
            return op == "-ne"
        try:
            return fn(value, target)
        except TypeError:
            return False

    return predicate
