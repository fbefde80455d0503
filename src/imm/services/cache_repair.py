"""``imm cache check`` and ``imm cache rebuild``: a damaged store found, and repaired without losing evidence.

The check is SQLite's integrity check (:func:`imm.data.store_repair.integrity_problems`). The rebuild holds the
profile's sync lock, copies the audit log, bulk jobs and the other records into a fresh file
(:func:`imm.data.store_repair.rebuild`), verifies the copied audit chain (hashes, links, and signatures when the
log is keyed) before the fresh file replaces the damaged one, which is kept beside it, and records a
CACHE_REBUILD audit row in the new file. The inventory is then synced again (by the caller: it needs a sign-in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imm.data.run_lock import SyncLock, sync_lock_path
from imm.data.store_repair import RebuildResult, integrity_problems, rebuild
from imm.errors import StoreError

if TYPE_CHECKING:
    from imm.data.audit_chain import VerifyReport
    from imm.data.audit_logger import AuditLogger
    from imm.data.database import DatabaseManager

__all__ = ["RebuildOutcome", "check_store", "rebuild_store"]


def check_store(path: Path) -> list[str]:
    """SQLite's integrity check of the store file: each problem it names (empty: the file is sound)."""
    if not path.exists():
        raise StoreError(f"{path} does not exist: there is nothing to check yet (run imm sync)", code="store_missing")
    return integrity_problems(path)


@dataclass
class RebuildOutcome:
    problems: list[str]  # what the integrity check found before the rebuild
    result: RebuildResult
    audit_rows: int  # rows of the verified audit chain in the new file


def rebuild_store(db: DatabaseManager, make_audit: Callable[[DatabaseManager], AuditLogger]) -> RebuildOutcome:
    """Rebuild ``db``'s file (see the module text); ``make_audit`` opens the profile's audit log on a store.
    StoreError (nothing replaced) when a row outside the inventory cannot be read or the copied chain does not
    verify; SyncBusyError when a sync runs."""
    from imm.data.database import DatabaseManager

    path = db.db_path
    lock = SyncLock(sync_lock_path(path), operation="cache rebuild")
    lock.acquire()
    try:
        problems = integrity_problems(path)
        db.close()
        rows = 0

        def verified(fresh_path: Path) -> None:
            nonlocal rows
            fresh = DatabaseManager(fresh_path)
            try:
                fresh.initialize()
                report = make_audit(fresh).verify()
                rows = fresh.get_connection().execute("SELECT COUNT(*) FROM audit_log").fetchone()[0]
            finally:
                fresh.close()
            if not report.ok:
                raise StoreError(
                    f"the audit log copied from {path} does not verify ({_problem(report)}): nothing was replaced",
                    hint="keep the file; `imm audit verify` names the row; restore the store from a backup",
                    code="store_unrepairable",
                )

        result = rebuild(path, check=verified)
        db.initialize()  # the fresh file, at the same path
        details: dict[str, Any] = {
            "database": str(path),
            "damaged_copy": str(result.damaged_path),
            "problems": problems[:20],
            "copied": result.copied,
            "left_behind": result.left_behind,
            "audit_rows_verified": rows,
        }
        make_audit(db).log_operation("CACHE_REBUILD", None, details, "success")
    finally:
        lock.release()
    return RebuildOutcome(problems, result, rows)


def _problem(report: VerifyReport) -> str:
    where = f"{report.bad_table or 'audit_log'} row {report.bad_id}: " if report.bad_id is not None else ""
    return where + (report.problem or "the chain is broken")
