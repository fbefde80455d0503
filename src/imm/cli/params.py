"""Strict parameter types for every command: ASCII numbers with bounds, and text that was valid UTF-8.

:func:`harden` replaces Click's ``INT``/``IntRange``, ``FLOAT``/``FloatRange`` and ``STRING`` on a command's
parameters (``imm.cli.main`` applies it to every command), so no option of any command can take ``٣`` as 3, an
infinite or 20-digit number, or bytes that are not UTF-8 (POSIX arguments are decoded with the surrogate escapes
of the platform: an undecodable byte becomes a lone surrogate, which would fail later when written to SQLite or
printed). Each failure is Click's usage error (exit 2) naming the option. The help text keeps the declared range.
"""

from __future__ import annotations

from typing import Any

import click

from imm.numbers import NumberError, check_range, read_decimal, read_whole
from imm.textsafe import undecodable

MAX_WHOLE = 2**31 - 1  # the bound of an option declared without one (counts, limits, days, seeds)
MIN_WHOLE = -(2**31)
MAX_DECIMAL = 1e9
MIN_DECIMAL = -1e9


class WholeNumber(click.IntRange):
    """An ``IntRange`` that takes ASCII digits only and is bounded even when declared without a maximum."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        low = self.min if self.min is not None else MIN_WHOLE
        high = self.max if self.max is not None else MAX_WHOLE
        low = low + 1 if self.min_open else low
        high = high - 1 if self.max_open else high
        try:
            if isinstance(value, bool):
                raise NumberError("must be a whole number")
            if isinstance(value, int):
                number = check_range(value, low, high, whole=True)
            else:
                number = read_whole(str(value), None if self.clamp else low, None if self.clamp else high)
                number = min(max(number, low), high)
        except NumberError as exc:
            self.fail(f"{_quoted(value)} {exc.reason}.", param, ctx)
        return number


class DecimalNumber(click.FloatRange):
    """A ``FloatRange`` that takes ASCII decimals only, never NaN or an infinity, and is bounded."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        low = self.min if self.min is not None else MIN_DECIMAL
        high = self.max if self.max is not None else MAX_DECIMAL
        try:
            if isinstance(value, bool):
                raise NumberError("must be a number")
            if isinstance(value, int | float):
                number = check_range(float(value), low, high)
            else:
                number = read_decimal(str(value), None if self.clamp else low, None if self.clamp else high)
                number = min(max(number, low), high)
            if (self.min_open and number == self.min) or (self.max_open and number == self.max):
                raise NumberError(f"must be {self._describe_range()}")
        except NumberError as exc:
            self.fail(f"{_quoted(value)} {exc.reason}.", param, ctx)
        return number


class Text(click.types.StringParamType):
    """Text that was valid UTF-8 on the command line (Click's STRING otherwise)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = super().convert(value, param, ctx)
        if isinstance(text, str):
            problem = undecodable(text)
            if problem is not None:
                self.fail(f"the value is not valid UTF-8 text ({problem})", param, ctx)
        return text


TEXT = Text()

PERIOD_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}  # a month is 30 days, a year 365 (as `imm list` has always counted)
MAX_PERIOD_DAYS = 36500


class Period(click.ParamType):
    """A period in days: ``365`` or ``365d``, ``12w``, ``6m`` (30-day months), ``2y`` (365-day years); ASCII
    digits, at most 100 years. The same forms wherever imm asks for a period of days."""

    name = "period"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        unit = text[-1:] if text[-1:] in PERIOD_DAYS else "d"
        digits = text[:-1] if text[-1:] in PERIOD_DAYS else text
        try:
            count = read_whole(digits, 0, MAX_PERIOD_DAYS)
            return check_range(count * PERIOD_DAYS[unit], 0, MAX_PERIOD_DAYS, whole=True)
        except NumberError:
            self.fail(
                f"{_quoted(value)} is not a period: use days (365 or 365d), weeks (12w), months (6m) or years (2y), "
                f"at most {MAX_PERIOD_DAYS} days",
                param,
                ctx,
            )


PERIOD = Period()


def _quoted(value: Any) -> str:
    from imm.textsafe import shown

    return repr(shown(str(value), 40))


def harden(command: click.Command) -> None:
    """Swap the number and text types of ``command``'s parameters for the strict ones above (in place)."""
    for param in command.params:
        kind = param.type
        if type(kind) is click.IntRange:
            param.type = WholeNumber(kind.min, kind.max, kind.min_open, kind.max_open, kind.clamp)
        elif type(kind) is click.types.IntParamType:
            param.type = WholeNumber()
        elif type(kind) is click.FloatRange:
            param.type = DecimalNumber(kind.min, kind.max, kind.min_open, kind.max_open, kind.clamp)
        elif type(kind) is click.types.FloatParamType:
            param.type = DecimalNumber()
        elif type(kind) is click.types.StringParamType:
            param.type = TEXT
