"""Text that is safe to put on a terminal, and short enough to echo back in one line.

Values reach imm from Exchange (display names, companies), from files (plans, configuration) and from arguments;
any of them may hold control characters. Written raw to a terminal, ``ESC ] 0 ; … BEL`` sets the window title,
``ESC [ … m`` recolours or hides text, ``CSI`` (U+009B) does the same in one character, a carriage return or a
backspace overwrites what was written before, and the bidirectional overrides (U+202E …) make text read
backwards. :func:`terminal_safe` is the one sanitiser: every such character is replaced by a visible escape
(``\\x1b``, ``\\u202e``), so a sequence loses its introducer and is shown as plain text. Bytes that were not UTF-8
(arguments decoded with the platform's surrogate escapes) are shown as ``\\xff``.

Only what is written to a terminal goes through it: JSON and CSV keep the exact text (escaped as those formats
require), so data is never changed, only its display.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls and DEL, C1 controls, the bidirectional embeddings/overrides/isolates and marks, line and paragraph
# separators, and lone surrogates (undecodable bytes under surrogateescape).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

DEFAULT_LIMIT = 80


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def terminal_safe(value: Any) -> str:
    """``value`` as text with every control character, escape-sequence introducer, bidirectional control and
    undecodable byte replaced by a visible escape; printable text (any script) is kept as it is."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return _UNSAFE.sub(_escape, text)


def is_safe(text: str) -> bool:
    """True when :func:`terminal_safe` would leave ``text`` unchanged."""
    return _UNSAFE.search(text) is None


def shorten(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """At most about ``limit`` characters: the start, an ellipsis and the full length (``abc… (100,000
    characters)``)."""
    if len(text) <= limit:
        return text
    return f"{text[: max(1, limit - 1)]}… ({len(text):,} characters)"


def shown(value: Any, limit: int = DEFAULT_LIMIT) -> str:
    """A user-supplied value as echoed in a message: shortened, then made terminal safe."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    safe = terminal_safe(text)
    if len(safe) <= limit:
        return safe
    return f"{safe[: max(1, limit - 1)]}… ({len(text):,} characters)"


def undecodable(text: str) -> str | None:
    """For text decoded with surrogate escapes: a description of the first byte that was not UTF-8, or None."""
    for position, char in enumerate(text):
        if 0xD800 <= ord(char) <= 0xDFFF:
            byte = ord(char) - 0xDC00 if 0xDC80 <= ord(char) <= 0xDCFF else None
            what = f"byte 0x{byte:02x}" if byte is not None else f"U+{ord(char):04X}"
            return f"{what} at position {position + 1}"
    return None
