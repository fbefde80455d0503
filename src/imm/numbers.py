"""One reader for numbers that people type: command-line options, plan cells, configuration values.

Python's ``int()`` and ``float()`` take far more than a person means: ``int("٣")`` is 3 (Arabic-Indic digits),
``int("１")`` is 1 (fullwidth), ``"²".isdigit()`` is true but ``int("²")`` fails, ``"1_000"`` is a thousand,
``float("nan")`` and ``float("1e400")`` are not numbers anyone keeps a mailbox for. imm accepts ASCII digits
only: a whole number is ``[+-]?[0-9]+``, a decimal is ``[+-]?[0-9]+(.[0-9]+)?`` (or ``.5``), optionally with an
``e`` exponent; surrounding spaces are ignored. Every number has a range, and a value outside it is refused
(never clamped or wrapped).
"""

from __future__ import annotations

import math
import re
from typing import TypeVar

_WHOLE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
MAX_DIGITS = 30  # longer than any number imm has a use for; keeps a 10 MB "number" from being converted

WHOLE_WORDS = "a whole number in ASCII digits"
DECIMAL_WORDS = "a number in ASCII digits"
N = TypeVar("N", int, float)


class NumberError(ValueError):
    """``reason`` is a short phrase for a message: 'must be a whole number from 1 to 64'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) or not value.is_integer() else str(int(value))


def _range_words(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {_num(minimum)} to {_num(maximum)}"
    if minimum is not None:
        return f" of at least {_num(minimum)}"
    if maximum is not None:
        return f" of at most {_num(maximum)}"
    return ""


def read_whole(text: str, minimum: float | None = None, maximum: float | None = None) -> int:
    """``text`` as an int in ``[minimum, maximum]``; raises :class:`NumberError` saying what is accepted."""
    stripped = text.strip()
    if len(stripped) > MAX_DIGITS or not _WHOLE.fullmatch(stripped):
        raise NumberError(f"must be {WHOLE_WORDS}{_range_words(minimum, maximum)}")
    return check_range(int(stripped), minimum, maximum, whole=True, words=WHOLE_WORDS)


def read_decimal(text: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """``text`` as a finite float in ``[minimum, maximum]``; raises :class:`NumberError`."""
    stripped = text.strip()
    if len(stripped) > MAX_DIGITS or not _DECIMAL.fullmatch(stripped):
        raise NumberError(f"must be {DECIMAL_WORDS}{_range_words(minimum, maximum)}")
    return check_range(float(stripped), minimum, maximum, words=DECIMAL_WORDS)


def check_range(
    value: N, minimum: float | None = None, maximum: float | None = None, *, whole: bool = False, words: str = ""
) -> N:
    """``value`` itself when it is finite and in range; else :class:`NumberError`."""
    words = words or ("a whole number" if whole else "a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise NumberError(f"must be {words}{_range_words(minimum, maximum)}, not {value}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise NumberError(f"must be {words}{_range_words(minimum, maximum)}")
    return value
