"""Inventory sync: every inactive mailbox of the tenant into the local cache, analysed (design §3, §5, §6).

One run:

1. Org-wide holds (Get-OrganizationConfig) and, where the account may read them, retention and case hold
   policies from the compliance endpoint (names, Preservation Lock, durations). Each of the three reads stands
   alone: a refused one (403) is one warning naming the cmdlet and its role, what the others gave is kept, and for
   the refused part the last known facts stay with what is unknown marked (a lock is never shown as absent).
2. The complete list: ``Get-Mailbox -InactiveMailboxOnly -ResultSize Unlimited`` (never the silent 1,000 default).
   Cached mailboxes that are no longer listed (recovered, purged, soft-deleted) leave the cache.
3. Detail for new mailboxes and those whose WhenChanged is newer than the cached one (all with ``full``):
   Get-MailboxStatistics for the primary and, when the archive is active, the archive, fanned out over a bounded
   pool whose calls go through the client's throttling-aware limiter. Company/Department come from one paged
   ``Get-Recipient -IncludeSoftDeletedRecipients`` listing when many mailboxes changed (a few pages are cheaper than
   thousands of calls), from one Get-Recipient per mailbox when few did, or from the profile's custom attribute /
   mapping CSV.
4. Every fetched mailbox is analysed (:func:`imm.domain.analyse.analyse`) and written in batches, so Ctrl+C (the
   ``cancel`` event) stops cleanly and keeps what was fetched. Unchanged mailboxes are re-analysed from the cache
   (no Exchange call) when org holds, policies, the cost model or the day changed.

Per-mailbox failures (e.g. a mailbox purged mid-sync) are counted and reported, not fatal: such a mailbox keeps
its previous cache row (or none) and is fetched again by the next sync. Each run leaves a ``sync_runs`` row and
write-ahead SYNC audit rows (started, then the result with the counts).

The run is split in three: this module orchestrates (stages, batches, bookkeeping, audit);
:mod:`imm.services.sync_fetch` reads Exchange (:class:`MailboxFetcher`, the fan-out);
:mod:`imm.services.sync_build` builds and analyses records (:class:`RecordBuilder`). The cache tables it keeps
are written through :class:`imm.data.org_state.OrgStateStore` and :class:`imm.data.sync_store.SyncRunStore`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imm.data.org_state import OrgStateStore
from imm.data.sync_store import SyncRunStore
from imm.errors import ImmError
from imm.services.sync_build import RecordBuilder, load_mapping, policies_from_read
from imm.services.sync_fetch import (
    COMPLIANCE_UNKNOWN,
    Fetched,
    Listed,
    MailboxFetcher,
    describe,
    fan_out,
    is_fatal,
    is_unavailable,
)

if TYPE_CHECKING:
    from imm.config import Profile
    from imm.data.audit_logger import AuditLogger
    from imm.data.database import DatabaseManager
    from imm.data.models import InactiveMailbox
    from imm.domain.holds import PolicyInfo
    from imm.exchange.cmdlets import ExchangeOperations

log = logging.getLogger(__name__)

BATCH_SIZE = 250  # mailboxes per cache write
BATCH_SECONDS = 1.0  # or at least this often, so a cancelled run keeps nearly everything fetched
MAX_ERROR_DETAILS = 50  # per-mailbox error messages kept in the run record
# A run stops after this many mailboxes in a row (at least the workers + 2) could not reach Exchange (each after
# every retry): an outage otherwise costs every remaining mailbox its own minute of retries.
UNAVAILABLE_STOP = 5
# Above this many mailboxes to fetch, Company/Department come from one paged Get-Recipient listing instead of one
# Get-Recipient per mailbox. A listing page (1,000 records) costs about one call; per-mailbox calls run in
# parallel, so the crossover is near total/1000 * concurrency; this floor keeps small incremental runs cheap.
RECIPIENT_LISTING_MIN = 50
# An incremental sync lists the keys and WhenChanged only (sync_fetch.CHANGE_PROPERTIES) and reads the record of
# each mailbox it fetches (one Get-Mailbox each, in the fan-out); when more than this share of the listing is to be
# fetched (and more than the minimum), one listing with every property is cheaper: it is read again in full.
SLIM_LISTING_SHARE = 10  # 1/10
SYNC_PAGE_CACHE_KIB = 16_384  # the writer's SQLite page cache during a sync (issue 18: peak RSS of a 100K sync)
SLIM_LISTING_MIN = 100
SYNC = "SYNC"
__all__ = ["COMPLIANCE_UNKNOWN", "SyncProgress", "SyncResult", "SyncService", "fan_out"]


@dataclass(frozen=True)
class SyncProgress:
    """What the progress bar shows: the stage, mailboxes done of total in it, and errors so far."""

    stage: str  # "listing" | "analysing" | "fetching" | "done"
    done: int = 0
    total: int = 0
    errors: int = 0


@dataclass
class SyncResult:
    """Counts of one run. ``fetched`` = mailboxes read in detail and written; ``unchanged`` = skipped."""

    mode: str = "incremental"
    status: str = "running"  # completed | completed_with_errors | cancelled | failed
    listed: int = 0  # inactive mailboxes and formerly inactive soft-deleted ones (awaiting the purge) listed
    soft_deleted: int = 0  # of ``listed``: the soft-deleted ones
    fetched: int = 0
    unchanged: int = 0
    removed: int = 0
    errors: int = 0
    reanalysed: int = 0
    refreshed: int = 0  # unchanged mailboxes read again because their last read was older than sync_refresh_days
    calls: int = 0  # Exchange calls this run made (listing pages not counted)
    duration: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error_details: list[str] = field(default_factory=list)
    run_id: int | None = None
    recipient_source: str = ""  # "listing" | "per-mailbox" | "none"
    phases: dict[str, float] = field(default_factory=dict)  # seconds per stage of the run

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    def counts(self) -> dict[str, Any]:
        """The numbers recorded in the run row and the audit row."""
        return {
            "mode": self.mode,
            "status": self.status,
            "listed": self.listed,
            "soft_deleted": self.soft_deleted,
            "fetched": self.fetched,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "errors": self.errors,
            "reanalysed": self.reanalysed,
            "refreshed": self.refreshed,
            "calls": self.calls,
            "duration_seconds": round(self.duration, 3),
        }

    def summary(self) -> str:
        """One line for people, e.g. 'Synced 1,500 inactive mailboxes: 20 fetched, 1,480 unchanged, …'."""
        verb = "Sync interrupted" if self.cancelled else "Synced"
        text = (
            f"{verb}: {self.listed - self.soft_deleted:,} inactive mailboxes listed"
            + (f" (and {self.soft_deleted:,} soft-deleted, awaiting purge)" if self.soft_deleted else "")
            + f", {self.fetched:,} fetched"
            + (f" ({self.refreshed:,} re-read as older than the refresh age)" if self.refreshed else "")
            + ", "
            f"{self.unchanged:,} unchanged, {self.removed:,} removed, {self.errors:,} failed "
            f"in {self.duration:.1f} s"
        )
        if self.cancelled:
            text += f"; the {self.fetched:,} mailboxes fetched before the interruption are kept"
        return text


ProgressCallback = Callable[[SyncProgress], None]


class SyncService:
    """Runs one inventory sync of a profile's tenant into its cache."""

    def __init__(
        self,
        db: DatabaseManager,
        ops: ExchangeOperations,
        profile: Profile,
        audit: AuditLogger | None,
        *,
        now: datetime | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.db = db
        self.ops = ops
        self.profile = profile
        self.audit = audit
        self._now = now
        self.concurrency = max(1, int(concurrency or profile.concurrency or 10))
        # More threads than calls allowed in flight: a thread is always waiting at the client's limiter, so a
        # freed slot is taken at once instead of after the previous thread has parsed its reply.
        self.workers = self.concurrency + max(2, self.concurrency // 2)
        from imm.domain.records import mailbox_properties

        self.fetcher = MailboxFetcher(ops, self.workers, mailbox_properties(profile.org))
        self.runs = SyncRunStore(db)
        self.org_state = OrgStateStore(db)

    # ----------------------------------------------------------------------------------------------- the run
    def run(
        self,
        full: bool = False,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        *,
        wait: bool = False,
        on_wait: Callable[[str], None] | None = None,
    ) -> SyncResult:
        """Sync the cache with the tenant; returns the counts. Raises ImmError when the run as a whole fails.

        One sync per cache at a time (:class:`imm.data.run_lock.SyncLock`): when another process syncs it,
        :class:`~imm.data.run_lock.SyncBusyError` names the holder (audited as a failed SYNC), or with ``wait``
        the run starts once the holder ends (``on_wait`` is told who it waits for; ``cancel`` stops the wait)."""
        from imm.data.run_lock import SyncBusyError, SyncLock, sync_lock_path

        cancel = cancel or threading.Event()
        mapping = load_mapping(self.profile)  # bad mapping CSV: an input error before anything starts
        lock = SyncLock(sync_lock_path(self.db.db_path))
        try:
            if not lock.acquire(wait=wait, on_wait=on_wait, cancel=cancel):
                return SyncResult(mode="full" if full else "incremental", status="cancelled")
        except SyncBusyError as exc:
            if self.audit is not None:
                self.audit.log_operation(SYNC, None, {"holder": lock.holder()}, "failure", exc.message)
            raise
        try:
            return self._run_locked(full, progress, cancel, mapping)
        finally:
            lock.release()

    def _run_locked(
        self,
        full: bool,
        progress: ProgressCallback | None,
        cancel: threading.Event,
        mapping: dict[str, tuple[str, str]] | None,
    ) -> SyncResult:
        notify = progress or (lambda _p: None)
        now = self._now or datetime.now(UTC)
        result = SyncResult(mode="full" if full else "incremental")
        started = time.monotonic()
        self._check_store()  # a damaged file is named before anything is written to it
        self.db.limit_page_cache(SYNC_PAGE_CACHE_KIB)
        from imm.data.stale import close_interrupted_syncs

        close_interrupted_syncs(self.db, self.audit)  # runs whose process was killed: closed as interrupted
        result.run_id = self.runs.start(result.mode)
        operation_id = self._audit_begin(result)
        try:
            self._run(full, result, now, mapping, notify, cancel)
            if cancel.is_set():
                result.status = "cancelled"
            else:
                result.status = "completed_with_errors" if result.errors else "completed"
        except KeyboardInterrupt:
            result.status = "cancelled"
            self._finish(result, started, operation_id, None)
            raise
        except ImmError as exc:
            result.status = "failed"
            self._finish(result, started, operation_id, exc.message)
            raise
        except Exception as exc:
            result.status = "failed"
            self._finish(result, started, operation_id, f"{type(exc).__name__}: {exc}")
            raise
        self._finish(result, started, operation_id, None)
        notify(SyncProgress("done", result.fetched, result.fetched, result.errors))
        return result

    def _run(
        self,
        full: bool,
        result: SyncResult,
        now: datetime,
        mapping: dict[str, tuple[str, str]] | None,
        notify: ProgressCallback,
        cancel: threading.Event,
    ) -> None:
        phase = _Phases(result)
        notify(SyncProgress("listing"))
        # Org-wide holds and policies (a few sequential calls) are read while the mailbox list pages in.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imm-sync-policies") as side:
            org_state = side.submit(lambda: (self.fetcher.org_holds(), self.fetcher.compliance()))
            slim = not full and self.db.count_mailboxes() > 0  # change detection needs a cache to compare with
            listing = self.fetcher.list_inactive(slim)  # on failure, leaving the block waits for the side call
            org_holds, compliance = org_state.result()
        result.warnings.extend(compliance.warnings or [])  # the caller shows them once
        policies = policies_from_read(compliance, self.org_state.policy_rows() if not compliance.complete else [])
        result.listed = len(listing)
        result.soft_deleted = self.fetcher.soft_deleted_listed
        phase.done("listing")
        if cancel.is_set():
            return
        self._store_org_state(org_holds, policies, now)
        builder = RecordBuilder(org_holds, policies, self.profile, now, mapping)
        analysis_key = builder.analysis_key()
        if cancel.is_set():
            return
        cached = self.runs.cached_changes()
        listed_ids = set(listing)
        gone = [stored for identity, (stored, _) in cached.items() if identity not in listed_ids]
        if gone:
            result.removed = self.db.delete_mailboxes(gone)
        to_fetch = [
            listed
            for identity, listed in listing.items()
            if full or identity not in cached or _is_newer(listed.when_changed, cached[identity][1])
        ]
        if not full:
            to_fetch += self._refresh_slice(listing, cached, {item.identity for item in to_fetch}, now, result)
        del listing, listed_ids  # what is not fetched is not kept
        if slim and len(to_fetch) > max(SLIM_LISTING_MIN, result.listed // SLIM_LISTING_SHARE):
            whole = self.fetcher.list_inactive()
            to_fetch = [whole.get(item.identity, item) for item in to_fetch]
            del whole
        result.unchanged = result.listed - len(to_fetch)
        log.info(
            "sync %s: %d listed, %d to fetch, %d unchanged, %d removed",
            result.mode,
            result.listed,
            len(to_fetch),
            result.unchanged,
            len(gone),
        )
        phase.done("compare")

        if self.runs.meta_get("analysis_key") != analysis_key:
            if result.unchanged:
                fetch_ids = {listed.identity for listed in to_fetch}
                notify(SyncProgress("analysing", 0, result.unchanged))
                result.reanalysed = self._reanalyse_cached(fetch_ids, builder)
            # Mailboxes still to fetch are analysed as they arrive (now or, if interrupted, in the next run).
            self.runs.meta_set("analysis_key", analysis_key)
            phase.done("reanalyse")
        if to_fetch and not cancel.is_set():
            recipients = self._recipient_plan(len(to_fetch), result)
            # the conflicts at sync: who else uses each mailbox's address (per mailbox when recipients are)
            active = self.fetcher.active_address_index() if recipients is not None else None
            phase.done("recipients")
            self._fetch_all(to_fetch, recipients, builder, result, notify, cancel, active)
            phase.done("fetch")

    def _refresh_slice(
        self,
        listing: dict[str, Listed],
        cached: dict[str, tuple[str, datetime | None]],
        fetching: set[str],
        now: datetime,
        result: SyncResult,
    ) -> list[Listed]:
        """Unchanged mailboxes read in detail longer ago than ``sync_refresh_days``, oldest first, at most
        1/``sync_refresh_days`` of the cache per run: WhenChanged does not move when the Managed Folder Assistant
        purges items (sizes shrink) or when the directory's Company/Department change, so without this those would
        wait for ``--full``. A daily sync re-reads each mailbox about once per period, every run staying short."""
        days = int(getattr(self.profile, "sync_refresh_days", 0) or 0)
        if days <= 0 or not cached:
            return []
        from datetime import timedelta

        size = math.ceil(len(cached) / days)
        # a few more than the slice, as some of the oldest may be fetched anyway or no longer listed
        candidates = self.runs.read_before(now - timedelta(days=days), size + len(fetching))
        picked = [listing[i] for i in candidates if i in listing and i not in fetching][:size]
        result.refreshed = len(picked)
        return picked

    def _check_store(self) -> None:
        """SQLite's quick check of the store file (every page; issue 17): a damaged one stops the run before it
        writes, naming the check and the repair that keeps the audit log."""
        from imm.data.store_repair import integrity_problems

        path = self.db.db_path
        if getattr(self.db, "is_uri", False) or not path.is_file():
            return
        problems = integrity_problems(path, quick=True)
        if problems:
            from imm.errors import StoreError

            raise StoreError(
                f"the store {path} is damaged ({problems[0]}): sync wrote nothing",
                hint="`imm cache check` lists the damage; `imm cache rebuild` repairs it and keeps the audit log",
                code="store_damaged",
            )

    # ------------------------------------------------------------------------------------ org state, policies
    def _store_org_state(self, org_holds: list[str], policies: dict[str, PolicyInfo], now: datetime) -> None:
        """Org holds, and the policies as this run knows them (read now, or last known with unknowns marked)."""
        from imm.data.database import format_datetime
        from imm.domain.compliance import policy_row

        rows = [policy_row(p) for p in policies.values()]
        self.org_state.save(org_holds, rows, format_datetime(now))

    def _reanalyse_cached(self, skip: set[str], builder: RecordBuilder) -> int:
        """Re-run the analysis on cached mailboxes that need no fetch (org holds, policies or the day changed)."""
        batch: list[InactiveMailbox] = []
        count = 0
        for mailbox in builder.reanalysed(self.db.iter_mailboxes(), skip):
            batch.append(mailbox)
            if len(batch) >= 2000:
                count += self.db.upsert_mailboxes(batch) or len(batch)
                batch = []
        if batch:
            count += self.db.upsert_mailboxes(batch) or len(batch)
        return count

    # ------------------------------------------------------------------------------------------ recipients
    def _recipient_plan(self, to_fetch: int, result: SyncResult) -> dict[str, dict[str, Any]] | None:
        """The recipient index of one listing, or None: ask Get-Recipient per mailbox instead."""
        threshold = max(RECIPIENT_LISTING_MIN, result.listed * self.concurrency // 1000)
        if to_fetch <= threshold:
            result.recipient_source = "per-mailbox"
            return None
        result.recipient_source = "listing"
        return self.fetcher.recipient_index()

    # ------------------------------------------------------------------------------------------- fan-out
    def _fetch_all(
        self,
        to_fetch: list[Listed],
        recipients: dict[str, dict[str, Any]] | None,
        builder: RecordBuilder,
        result: SyncResult,
        notify: ProgressCallback,
        cancel: threading.Event,
        active: dict[str, list[dict[str, Any]]] | None = None,
    ) -> None:
        total = len(to_fetch)
        # each listed mailbox is let go once handed to the pool (the caller's list is emptied)
        queue = deque(to_fetch)
        to_fetch.clear()

        def pending() -> Iterator[Listed]:
            while queue:
                yield queue.popleft()

        batch: list[InactiveMailbox] = []
        last_write = time.monotonic()
        done = 0

        def flush() -> None:
            nonlocal batch, last_write
            if batch:
                self.db.upsert_mailboxes(batch)
                result.fetched += len(batch)
                batch = []
            last_write = time.monotonic()

        unavailable_in_a_row = 0
        give_up_after = max(UNAVAILABLE_STOP, self.workers + 2)
        notify(SyncProgress("fetching", 0, total, 0))
        try:
            for record, outcome in self.fetcher.fetch_all(pending(), recipients is None, cancel):
                done += 1
                if isinstance(outcome, BaseException) and is_fatal(outcome):
                    raise outcome  # sign-in lost or access denied: every other call would fail the same way
                unavailable_in_a_row = unavailable_in_a_row + 1 if is_unavailable(outcome) else 0
                if unavailable_in_a_row >= give_up_after and isinstance(outcome, BaseException):
                    raise ImmError(
                        f"Exchange Online did not answer for {unavailable_in_a_row} mailboxes in a row "
                        f"(last: {describe(outcome)})",
                        hint="check the connection and the service health, then run imm sync again "
                        "(what was fetched is kept)",
                        code="exchange_unavailable",
                    )
                if isinstance(outcome, BaseException):
                    result.errors += 1
                    smtp = record.record().get("PrimarySmtpAddress") or ""
                    message = f"{record.identity} ({smtp}): {describe(outcome)}"
                    if len(result.error_details) < MAX_ERROR_DETAILS:
                        result.error_details.append(message)
                    log.info("sync: %s", message)  # the caller shows it
                elif isinstance(outcome, Fetched):
                    batch.append(builder.build(outcome, recipients, active))
                    if len(batch) >= BATCH_SIZE or time.monotonic() - last_write >= BATCH_SECONDS:
                        flush()
                notify(SyncProgress("fetching", done, total, result.errors))
        finally:
            flush()  # a cancelled or failed run keeps what was fetched
            result.calls = self.fetcher.calls

    # ----------------------------------------------------------------------------------------- bookkeeping
    def _audit_begin(self, result: SyncResult) -> str | None:
        if self.audit is None:
            return None
        from imm.data.stale import process_marker

        return self.audit.begin(SYNC, None, {"mode": result.mode, "run_id": result.run_id, **process_marker()})

    def _finish(self, result: SyncResult, started: float, operation_id: str | None, error: str | None) -> None:
        result.duration = time.monotonic() - started
        result.calls = self.fetcher.calls
        details = {
            **result.counts(),
            "warnings": result.warnings,
            "error_details": result.error_details,
            "recipient_source": result.recipient_source,
            "phase_seconds": result.phases,
        }
        if error:
            details["error"] = error
        try:
            self.runs.finish(
                result.run_id,
                status=result.status,
                fetched=result.fetched,
                removed=result.removed,
                errors=result.errors,
                details=details,
            )
        except Exception:  # the run row is bookkeeping; never hide the run's own outcome behind it
            log.warning("could not record the sync run", exc_info=True)
        if self.audit is not None and operation_id is not None:
            audit_result = {
                "completed": "success",
                "completed_with_errors": "partial",
                "cancelled": "cancelled",
            }.get(result.status, "failure")
            self.audit.finish(operation_id, audit_result, details, error)


class _Phases:
    """Records how long each stage of a run took (in the run record's details)."""

    def __init__(self, result: SyncResult) -> None:
        self.result = result
        self.mark = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.result.phases[name] = round(now - self.mark, 3)
        self.mark = now


def _is_newer(when_changed: Any, cached_when_changed: datetime | None) -> bool:
    """True when the listed mailbox (its WhenChangedUTC or WhenChanged) changed after the cached copy (or either
    date is unknown)."""
    if cached_when_changed is None:
        return True
    from imm.domain.parsing import or_default, parse_datetime

    listed = or_default(parse_datetime, when_changed, None)
    if listed is None:
        return True  # no date to compare: fetch, to be safe
    return bool(listed > cached_when_changed)
