"""One sync per profile at a time: an exclusive lock file next to the cache (``<database>.sync.lock``).

The lock is an OS file lock (portalocker: ``fcntl.flock`` on POSIX, ``LockFileEx`` on Windows), so it is released
by the operating system when the holding process dies: a killed sync never leaves a stale lock behind. The holder
writes who it is into the file (process id, host, user, start time) so that a second ``imm sync`` can say who holds
it. Two syncs of one cache would each run at half speed and write the same rows; the second one is refused, or
waits for the first with ``--wait``.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import portalocker

from imm.errors import BlockedError, StoreError

__all__ = ["SyncBusyError", "SyncLock", "sync_lock_path"]

WAIT_POLL_SECONDS = 0.5


class SyncBusyError(BlockedError):
    """Another imm process is syncing this profile's cache right now. Exit 5 (blocked)."""

    code = "sync_busy"


def sync_lock_path(db_path: Path | str) -> Path:
    return Path(f"{db_path}.sync.lock")


class SyncLock:
    """The sync lock of one cache. ``acquire`` refuses (``SyncBusyError`` naming the holder) or, with ``wait``,
    waits until the holder ends (``cancel`` stops the wait)."""

    def __init__(self, path: Path, operation: str = "sync") -> None:
        self.path = path
        self.operation = operation
        self._file: IO[Any] | None = None

    def holder(self) -> dict[str, Any]:
        """What the holding process wrote (empty when unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def describe_holder(self) -> str:
        info = self.holder()
        if not info.get("pid"):
            return "another imm process"
        who = f"{info.get('operation') or 'sync'} by process {info['pid']} on {info.get('host') or '?'}"
        if info.get("user"):
            who += f" (user {info['user']})"
        if info.get("started_at"):
            who += f", started {info['started_at']}"
        return who

    def _try(self) -> bool:
        try:
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise StoreError(
                f"cannot create the sync lock {self.path} ({exc.strerror or exc}): the database's folder must be "
                "writable"
            ) from None
        try:
            portalocker.lock(handle, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
        except portalocker.exceptions.LockException:
            handle.close()
            return False
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_me(self.operation), sort_keys=True))
        handle.flush()
        self._file = handle
        return True

    def acquire(
        self,
        *,
        wait: bool = False,
        on_wait: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> bool:
        """Take the lock. Busy: ``SyncBusyError`` naming the holder, or with ``wait`` wait for it (``on_wait`` is
        told once who holds it). Returns False only when ``cancel`` stopped the wait."""
        if self._try():
            return True
        holder = self.describe_holder()
        if not wait:
            raise SyncBusyError(
                f"this profile's cache is being synced right now: {holder}",
                hint="wait for it to finish, or run `imm sync --wait` to start as soon as it has",
            )
        if on_wait is not None:
            on_wait(holder)
        while not self._try():
            if cancel is not None and cancel.wait(WAIT_POLL_SECONDS):
                return False
            if cancel is None:
                time.sleep(WAIT_POLL_SECONDS)
        return True

    def release(self) -> None:
        if self._file is None:
            return
        try:
            self._file.seek(0)
            self._file.truncate()
            self._file.flush()
            portalocker.unlock(self._file)
        except (OSError, portalocker.exceptions.LockException):
            pass
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> SyncLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _me(operation: str) -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except Exception:  # no user name (a container without passwd entry)
        user = ""
    return {
        "operation": operation,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "user": user,
        "started_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }
