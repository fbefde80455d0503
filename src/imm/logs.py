"""Logging: the package logger, a rotating file per profile, and a filter that removes secrets."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import re
from pathlib import Path
from typing import Any

# Patterns for secret material; each keeps the name and replaces the value with "***".
_SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-_\.=+/~]+"), r"\1 ***"),
    (re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}(?:\.[A-Za-z0-9_\-]*)?"), "***jwt***"),
    (
        re.compile(
            r"(?i)([\"']?(?:access_token|refresh_token|id_token|client_assertion|client_secret|password|"
            r"passwd|secret|device_code|assertion|private_key|Password)[\"']?\s*[:=]\s*)"
            r"(\"[^\"]*\"|'[^']*'|[^\s&,;}]+)"
        ),
        r"\1***",
    ),
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
        "***private-key***",
    ),
]

SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "client_assertion",
        "client_secret",
        "password",
        "secret",
        "device_code",
        "assertion",
        "private_key",
        "certificate_password",
        "token",
        "authorization",
        "securepassword",
        "pfx",
        "key",
    }
)


def redact(text: str) -> str:
    """Remove bearer tokens, JWTs, refresh tokens, passwords, client assertions and private keys from text."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_data(value: Any) -> Any:
    """Recursively mask secret-named keys and secret-looking strings in JSON-like data (for audit details)."""
    if isinstance(value, dict):
        return {
            k: "***" if str(k).lower().replace("-", "_") in SECRET_KEYS else redact_data(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_data(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


class SecretFilter(logging.Filter):
    """Rewrites each record's message (with its arguments applied) so no secret reaches a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: keep it, unformatted
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log file readable only by its owner (it names mailboxes and users), also after rotation."""

    def _open(self) -> Any:
        stream = super()._open()
        with contextlib.suppress(OSError):
            os.chmod(self.baseFilename, 0o600)
        return stream


_configured: dict[str, Any] = {}


class _TerminalFormatter(logging.Formatter):
    """Console lines with escape sequences and control characters neutralised (messages quote directory data)."""

    def format(self, record: logging.LogRecord) -> str:
        from imm.textsafe import terminal_safe

        return "\n".join(terminal_safe(line) for line in super().format(record).split("\n"))


def setup_logging(log_path: Path | None, verbose: int = 0, quiet: bool = False) -> None:
    """Console at WARNING (INFO with -v, DEBUG with -vv, ERROR with -q) and a rotating file at INFO/DEBUG."""
    root = logging.getLogger("imm")
    secret_filter = SecretFilter()
    for handler in list(root.handlers):
        if getattr(handler, "_imm", False):
            root.removeHandler(handler)
            handler.close()
    console = logging.StreamHandler()
    console.setLevel(
        logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    )
    console.setFormatter(_TerminalFormatter("%(levelname)s: %(message)s"))
    console.addFilter(secret_filter)
    if verbose < 2:  # tracebacks of unexpected errors go to the log file; on the console only with -vv
        console.addFilter(lambda record: not getattr(record, "file_only", False))
    console._imm = True  # type: ignore[attr-defined]
    root.addHandler(console)
    if log_path is not None:
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            file_handler = _PrivateRotatingFileHandler(log_path, maxBytes=5_000_000, backupCount=5, encoding="utf-8")
        except OSError:
            file_handler = None
        if file_handler is not None:
            file_handler.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
            file_handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
            file_handler.addFilter(secret_filter)
            file_handler._imm = True  # type: ignore[attr-defined]
            root.addHandler(file_handler)
    root.setLevel(logging.DEBUG)
    root.propagate = False
    # msal and httpx log request details at DEBUG; route them through the same filter.
    for name in ("msal", "httpx", "httpcore"):
        other = logging.getLogger(name)
        other.setLevel(logging.DEBUG if verbose > 2 else logging.WARNING)
        for handler in root.handlers:
            if getattr(handler, "_imm", False) and handler not in other.handlers:
                other.addHandler(handler)
        other.propagate = False
    _configured["path"] = log_path
