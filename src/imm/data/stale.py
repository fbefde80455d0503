"""Runs whose process died: a ``running`` sync row or a ``started`` audit operation that no process will finish.

A sync (or any long operation) records which process runs it (``pid`` and ``host`` in its details). When that
process is killed (SIGKILL, a power cut, a closed terminal), nothing records its end; the next run of the same
kind on the same host sees that the process is gone and closes the leftovers as ``interrupted``, so
``imm audit list --incomplete`` shows only what is truly open. A process on another host, or one still alive,
is left alone; rows from before imm recorded the process (no ``pid``) count as dead.
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imm.data.audit_logger import AuditLogger
    from imm.data.database import DatabaseManager


def process_marker() -> dict[str, Any]:
    """The details that name this process: ``{"pid": …, "host": …}``."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (never signals or stops it)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - os.kill would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return False
    return True


def is_dead(details: Any) -> bool:
    """True when the details (a dict or its JSON text) name a process of this host that no longer runs, or no
    process at all; False for a live process or one on another host."""
    if isinstance(details, str | bytes):
        try:
            details = json.loads(details)
        except ValueError:
            return True
    if not isinstance(details, dict) or "pid" not in details:
        return True
    if details.get("host") != socket.gethostname():
        return False
    try:
        pid = int(details["pid"])
    except (TypeError, ValueError):
        return True
    if pid == os.getpid():  # this process has not started its own run yet: the id was reused
        return True
    return not process_alive(pid)


def close_interrupted_syncs(db: DatabaseManager, audit: AuditLogger | None) -> list[int]:
    """Close the sync runs whose process died: their ``sync_runs`` row becomes ``interrupted`` and their SYNC audit
    operation gets an ``interrupted`` result. Returns the run ids closed. A run of a live process is left alone."""
    from datetime import UTC, datetime

    from imm.data.audit_logger import AuditResult
    from imm.data.database import format_datetime

    conn = db.get_connection()
    rows = conn.execute("SELECT id, details FROM sync_runs WHERE status = 'running' ORDER BY id").fetchall()
    dead = [int(row[0]) for row in rows if is_dead(row[1])]
    if dead:
        now = format_datetime(datetime.now(UTC))
        with db.transaction() as tx:
            tx.executemany(
                "UPDATE sync_runs SET status = 'interrupted', finished_at = ? WHERE id = ? AND status = 'running'",
                [(now, run_id) for run_id in dead],
            )
    if audit is None:
        return dead
    open_rows = conn.execute(
        "SELECT s.operation_id, s.details FROM audit_log s WHERE s.operation = 'SYNC' AND s.result = 'started' "
        "AND s.operation_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM audit_log r "
        "WHERE r.operation_id = s.operation_id AND r.result <> 'started') ORDER BY s.id"
    ).fetchall()
    for operation_id, details in open_rows:
        try:
            data = json.loads(details)
        except (TypeError, ValueError):
            data = {}
        run_id = data.get("run_id") if isinstance(data, dict) else None
        if run_id in dead or (run_id not in {int(r[0]) for r in rows} and is_dead(data)):
            audit.finish(
                str(operation_id),
                AuditResult.INTERRUPTED,
                {"run_id": run_id, "closed_by": process_marker()},
                "the sync's process ended without recording a result (killed or crashed); closed by the next sync",
            )
    return dead
