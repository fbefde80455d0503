"""The persisted msal token cache: encrypted where the platform offers it, else a private plaintext file.

- ``msal_extensions.build_encrypted_persistence`` (DPAPI on Windows, Keychain on macOS, libsecret on Linux) is
  tried first; any failure (no ``gi``, no Secret Service on a headless box…) falls back to a plaintext file
  written atomically with mode 0600 inside a 0700 folder, and a one-line warning that is shown once (a marker
  file next to the cache remembers it).
- ``PersistedTokenCache`` guards every write with ``<cache>.lockfile`` and reloads when another process wrote,
  so concurrent ``imm`` processes do not lose or corrupt each other's tokens; writes replace the file
  atomically, so a reader never sees half a file.
- A cache file that is not valid JSON is set aside (renamed ``<name>.corrupt-<time>``, kept) with a warning,
  and sign-in proceeds with an empty cache.
- msal's ``http_cache`` (only its discovery GETs, not its throttling entries) is kept in
  ``<cache>.http.json`` so a new process does not repeat OIDC discovery.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imm.auth.errors import AuthenticationError

log = logging.getLogger("imm.auth")

PLAINTEXT_WARNING = (
    "The token cache {path} is stored unencrypted (no system keyring is available here); "
    "it is readable only by you (mode 0600)."
)


def _fix_mode(path: Path, mode: int) -> None:
    """Make ``path`` exactly ``mode`` if it allows anyone but the owner in (POSIX only)."""
    if os.name != "posix":
        return
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if current & 0o077:
        os.chmod(path, mode)
        log.info("tightened permissions of %s from %o to %o", path, current, mode)


def _write_private(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` atomically with mode 0600 (a temp file in the same folder, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if os.name == "posix":
            os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _private_file_persistence(location: Path) -> Any:
    from msal_extensions import FilePersistence

    class PrivateFilePersistence(FilePersistence):
        """msal-extensions' plaintext persistence, saving atomically with mode 0600."""

        def save(self, content: str) -> None:
            try:
                _write_private(Path(self.get_location()), content)
            except PermissionError:  # Windows cannot replace a file another process has open
                super().save(content)

    return PrivateFilePersistence(str(location))


def prepare_folder(folder: Path, *, private: bool) -> None:
    """Create the cache folder with mode 0700; an existing one is tightened only when it is imm's own."""
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        _fix_mode(folder, 0o700)
    elif private:
        _fix_mode(folder, 0o700)


@dataclass
class OpenedCache:
    cache: Any  # msal_extensions.PersistedTokenCache
    encrypted: bool
    location: Path


def open_token_cache(
    location: Path,
    *,
    private_folder: bool = False,
    encrypt: bool = True,
    warn: Callable[[str], None] | None = None,
) -> OpenedCache:
    """Open (creating the folder, not the file) the persisted token cache at ``location``."""
    from msal_extensions import CrossPlatLock, LockError, PersistedTokenCache, build_encrypted_persistence

    warn = warn or log.warning
    try:
        if location.is_dir():
            raise IsADirectoryError(21, "it is a folder, not a file")
        prepare_folder(location.parent, private=private_folder)
        persistence: Any = None
        if encrypt:
            try:
                persistence = build_encrypted_persistence(str(location))
            except Exception as exc:  # ImportError (no gi), RuntimeError (no Secret Service), ValueError…
                reason = (str(exc).strip().splitlines() or [""])[0]
                log.info("encrypted token cache unavailable (%s: %s); using a private file", type(exc).__name__, reason)
        if persistence is None:
            persistence = _private_file_persistence(location)
            _fix_mode(location, 0o600)
        with CrossPlatLock(f"{location}.lockfile"):
            _set_aside_if_corrupt(persistence, location, warn)
        if not persistence.is_encrypted:
            _warn_plaintext_once(location, warn)
        return OpenedCache(PersistedTokenCache(persistence), bool(persistence.is_encrypted), location)
    except OSError as exc:
        raise AuthenticationError(
            "token_cache_error",
            f"Cannot use the token cache {location}: {exc.strerror or exc}.",
            hint="check the folder's permissions, or set token_cache_path in the profile",
        ) from None
    except LockError:
        raise AuthenticationError(
            "token_cache_error",
            f"The token cache {location} is locked by another process.",
            hint="wait for the other imm command to finish, then try again",
        ) from None


def _set_aside_if_corrupt(persistence: Any, location: Path, warn: Callable[[str], None]) -> None:
    from msal_extensions import FilePersistence
    from msal_extensions.persistence import PersistenceNotFound

    try:
        content = persistence.load()
    except PersistenceNotFound:
        return
    except PermissionError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # includes PersistenceDecryptionError
        problem = f"it cannot be read ({type(exc).__name__})"
    else:
        try:
            data = json.loads(content) if content else {}
            problem = "" if _has_cache_shape(data) else "it is not a token cache"
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            problem = "it is not valid JSON"
    if not problem:
        return
    if isinstance(persistence, FilePersistence):  # the plaintext file, or DPAPI's encrypted file
        aside = location.with_name(f"{location.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(location, aside)
        _fix_mode(aside, 0o600)
        warn(f"The token cache {location} was damaged ({problem}); it was set aside as {aside.name}. Sign in again.")
    else:  # a keyring entry cannot be renamed: start it afresh
        persistence.save("{}")
        warn(f"The token cache in the system keyring was damaged ({problem}); it was reset. Sign in again.")


def _has_cache_shape(data: Any) -> bool:
    """msal's serialised cache is {credential type: {key: {field: value}}}; anything else makes msal fail."""
    return isinstance(data, dict) and all(
        isinstance(section, dict) and all(isinstance(entry, dict) for entry in section.values())
        for section in data.values()
    )


def _warn_plaintext_once(location: Path, warn: Callable[[str], None]) -> None:
    marker = location.with_name(f"{location.name}.plaintext-notice")
    if marker.exists():
        return
    warn(PLAINTEXT_WARNING.format(path=location))
    with contextlib.suppress(OSError):
        _write_private(marker, "The plaintext token cache warning was shown on " + time.strftime("%Y-%m-%d") + "\n")


# ----- msal's http_cache (OIDC discovery) -----


class _CachedResponse:
    """What msal's throttled client stores for a GET: status, text, headers."""

    def __init__(self, status_code: int, text: str, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.text = text
        self.headers = headers

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            from msal.exceptions import MsalServiceError

            raise MsalServiceError(f"HTTP Error: {self.status_code}", error=None, error_description=None)


_INDEX = "_index_"  # msal.individual_cache._ExpiringMapping's reserved key


def load_http_cache(path: Path) -> dict[str, Any]:
    """msal's http_cache mapping with the discovery GETs saved earlier (empty when unreadable or stale)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        now = int(time.time())
        mapping: dict[str, Any] = {}
        sequence: list[list[Any]] = []
        timestamps: dict[str, list[int]] = {}
        for item in saved["entries"]:
            expires_at, created_at = int(item["expires_at"]), int(item["created_at"])
            if not (created_at <= now < expires_at) or not str(item["key"]).startswith("GET "):
                continue
            key = str(item["key"])
            mapping[key] = _CachedResponse(int(item["status"]), str(item["text"]), dict(item["headers"]))
            sequence.append([expires_at, created_at, key])
            timestamps[key] = [expires_at, created_at]
        if mapping:
            import heapq

            heapq.heapify(sequence)
            mapping[_INDEX] = (sequence, timestamps)
        return mapping
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}


def save_http_cache(path: Path, mapping: MutableMapping[str, Any]) -> None:
    """Keep only msal's successful discovery GETs (never its replayed error POSTs) in ``path``."""
    try:
        index = mapping.get(_INDEX)
        if not index:
            return
        _, timestamps = index
        entries = []
        for key, (expires_at, created_at) in timestamps.items():
            value = mapping.get(key)
            if not str(key).startswith("GET ") or value is None or not 200 <= int(value.status_code) < 300:
                continue
            entries.append(
                {
                    "key": key,
                    "expires_at": int(expires_at),
                    "created_at": int(created_at),
                    "status": int(value.status_code),
                    "text": str(value.text),
                    "headers": {str(k): str(v) for k, v in dict(getattr(value, "headers", {}) or {}).items()},
                }
            )
        content = json.dumps({"entries": entries}, sort_keys=True)
        try:
            if path.read_text(encoding="utf-8") == content:
                return
        except OSError:
            pass
        _write_private(path, content)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.debug("could not save msal's http cache to %s: %s", path, exc)
