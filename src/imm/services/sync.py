"""Inventory sync: every inactive mailbox of the tenant into the local cache, analysed (design §3, §5, §6).

One run:

1. Org-wide holds (Get-OrganizationConfig) and, where the account may read them, retention and case hold
   policies from the compliance endpoint (names, Preservation Lock, durations). A 403 there is said once and the
   run goes on without policy names.
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
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imm.errors import ImmError, InputError, NotFoundError, SignInError

if TYPE_CHECKING:
    from imm.config import Profile
    from imm.data.audit_logger import AuditLogger
    from imm.data.database import DatabaseManager
    from imm.data.models import InactiveMailbox
    from imm.domain.holds import HoldAction, PolicyInfo

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
COMPLIANCE_DENIED = "policy names unavailable: the account lacks the compliance role"
SYNC = "SYNC"


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
    listed: int = 0
    fetched: int = 0
    unchanged: int = 0
    removed: int = 0
    errors: int = 0
    reanalysed: int = 0
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
            "fetched": self.fetched,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "errors": self.errors,
            "reanalysed": self.reanalysed,
            "calls": self.calls,
            "duration_seconds": round(self.duration, 3),
        }

    def summary(self) -> str:
        """One line for people, e.g. 'Synced 1,500 inactive mailboxes: 20 fetched, 1,480 unchanged, …'."""
        verb = "Sync interrupted" if self.cancelled else "Synced"
        text = (
            f"{verb}: {self.listed:,} inactive mailboxes listed, {self.fetched:,} fetched, "
            f"{self.unchanged:,} unchanged, {self.removed:,} removed, {self.errors:,} failed "
            f"in {self.duration:.1f} s"
        )
        if self.cancelled:
            text += f"; the {self.fetched:,} mailboxes fetched before the interruption are kept"
        return text


@dataclass
class _Fetched:
    record: dict[str, Any]
    stats: dict[str, Any] | None
    archive: dict[str, Any] | None
    recipient: dict[str, Any] | None
    hold_tracking: list[dict[str, Any]] | None = None


ProgressCallback = Callable[[SyncProgress], None]


class SyncService:
    """Runs one inventory sync of a profile's tenant into its cache."""

    def __init__(
        self,
        db: DatabaseManager,
        ops: Any,
        profile: Profile,
        audit: AuditLogger | None,
        *,
        now: datetime | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.db = db
        self.ops = ops  # imm.exchange.cmdlets.ExchangeOperations
        self.profile = profile
        self.audit = audit
        self._now = now
        self.concurrency = max(1, int(concurrency or profile.concurrency or 10))
        # More threads than calls allowed in flight: a thread is always waiting at the client's limiter, so a
        # freed slot is taken at once instead of after the previous thread has parsed its reply.
        self.workers = self.concurrency + max(2, self.concurrency // 2)
        self._calls = 0
        self._calls_lock = threading.Lock()

    # ----------------------------------------------------------------------------------------------- the run
    def run(
        self,
        full: bool = False,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> SyncResult:
        """Sync the cache with the tenant; returns the counts. Raises ImmError when the run as a whole fails."""
        cancel = cancel or threading.Event()
        notify = progress or (lambda _p: None)
        now = self._now or datetime.now(UTC)
        result = SyncResult(mode="full" if full else "incremental")
        started = time.monotonic()
        mapping = self._load_mapping()  # bad mapping CSV: an input error before anything starts
        from imm.data.stale import close_interrupted_syncs

        close_interrupted_syncs(self.db, self.audit)  # runs whose process was killed: closed as interrupted
        result.run_id = self._start_run(result.mode)
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
            org_state = side.submit(lambda: (self._fetch_org_holds(), self._fetch_policies(result)))
            listing = self._list_inactive()  # on failure, leaving the block waits for the side call
            org_holds, policies = org_state.result()
        result.listed = len(listing)
        phase.done("listing")
        if cancel.is_set():
            return
        self._store_org_state(org_holds, policies, now)
        analysis_key = self._analysis_key(org_holds, policies, now)
        if cancel.is_set():
            return
        cached = self._cached_changes()
        listed_ids = set(listing)
        gone = [stored for identity, (stored, _) in cached.items() if identity not in listed_ids]
        if gone:
            result.removed = self.db.delete_mailboxes(gone)
        to_fetch = [
            record
            for identity, record in listing.items()
            if full or identity not in cached or _is_newer(record, cached[identity][1])
        ]
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

        context = _AnalysisContext(org_holds, policies, self.profile, now)
        if self._meta_get("analysis_key") != analysis_key:
            if result.unchanged:
                fetch_ids = {_identity(r) for r in to_fetch}
                notify(SyncProgress("analysing", 0, result.unchanged))
                result.reanalysed = self._reanalyse_cached(fetch_ids, context)
            # Mailboxes still to fetch are analysed as they arrive (now or, if interrupted, in the next run).
            self._meta_set("analysis_key", analysis_key)
            phase.done("reanalyse")
        if to_fetch and not cancel.is_set():
            recipients, per_mailbox = self._recipient_plan(len(to_fetch), result)
            phase.done("recipients")
            self._fetch_all(to_fetch, recipients, per_mailbox, mapping, context, result, notify, cancel)
            phase.done("fetch")

    # ------------------------------------------------------------------------------------ org state, policies
    def _fetch_org_holds(self) -> list[str]:
        config = self.ops.get_organization_config() or {}
        if isinstance(config, list):
            config = config[0] if config else {}
        return [str(v) for v in _as_list(config.get("InPlaceHolds"))]

    def _fetch_policies(self, result: SyncResult) -> dict[str, PolicyInfo]:
        """Retention and case hold policies by GUID; when the account may not read them, one warning and the
        names cached by an earlier run (if any)."""
        from imm.exchange import AccessDeniedError

        try:
            policies = list(self.ops.get_retention_policies(distribution_detail=True))
            rules = list(self.ops.get_retention_rules())
            case_holds = list(self.ops.get_case_hold_policies())
        except ImmError as exc:
            if not (isinstance(exc, AccessDeniedError) or _is_auth_denied(exc)):
                raise
            result.warnings.append(COMPLIANCE_DENIED)  # the caller shows it once
            log.info(COMPLIANCE_DENIED)
            return self._cached_policies()  # names known from an earlier run with the role, if any
        return policies_from_records(policies, rules, case_holds)

    def _store_org_state(self, org_holds: list[str], policies: dict[str, PolicyInfo], now: datetime) -> None:
        from imm.data.database import format_datetime

        stamp = format_datetime(now)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM org_holds")
            conn.executemany(
                "INSERT OR REPLACE INTO org_holds(value, fetched_at) VALUES (?, ?)", [(v, stamp) for v in org_holds]
            )
            if policies:  # keep the last known names when the compliance endpoint is not readable
                conn.execute("DELETE FROM policies")
                conn.executemany(
                    "INSERT OR REPLACE INTO policies(guid, name, kind, locked, enabled, retention_days, "
                    "retention_action, scope_all, details, fetched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            p.guid,
                            p.name,
                            str(p.kind),
                            int(bool(p.locked)),
                            int(bool(p.enabled)),
                            p.retention_days,
                            None if p.action is None else str(getattr(p.action, "value", p.action)),
                            int(bool(p.scope_all)),
                            json.dumps({}, sort_keys=True),
                            stamp,
                        )
                        for p in policies.values()
                    ],
                )

    def _cached_policies(self) -> dict[str, PolicyInfo]:
        """Policy names from an earlier run (used when the compliance endpoint is not readable now)."""
        from imm.domain.holds import PolicyInfo

        rows = self.db.get_connection().execute(
            "SELECT guid, name, kind, locked, enabled, retention_days, retention_action, scope_all FROM policies"
        )
        out: dict[str, PolicyInfo] = {}
        for row in rows:
            out[row[0]] = PolicyInfo(
                guid=row[0],
                name=row[1],
                kind=row[2],
                locked=bool(row[3]),
                enabled=bool(row[4]),
                retention_days=row[5],
                action=_policy_action(row[6]),
                scope_all=bool(row[7]),
            )
        return out

    def _analysis_key(self, org_holds: list[str], policies: dict[str, PolicyInfo], now: datetime) -> str:
        """Changes when anything analysis reads besides the mailbox itself changes (then the cache is re-analysed)."""
        cost = self.profile.cost
        material = {
            "org_holds": sorted(org_holds),
            "policies": sorted(repr(p) for p in policies.values()),
            "cost": [cost.currency, cost.per_gb_month, sorted(cost.license_month.items())],
            "day": now.date().isoformat(),
            "tenant": self.profile.tenant_id,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()

    # ------------------------------------------------------------------------------------------- listing
    def _list_inactive(self) -> dict[str, dict[str, Any]]:
        """ExchangeGuid → Get-Mailbox record of every inactive mailbox (the complete list), plus the formerly
        inactive ones that are soft-deleted and not yet purged (kept with their lifecycle state and purge date;
        delete-an-inactive-mailbox)."""
        out: dict[str, dict[str, Any]] = {}
        for record in self.ops.get_inactive_mailboxes():
            identity = _identity(record)
            if identity:
                out[identity] = record
        for record in self.ops.get_soft_deleted_mailboxes(formerly_inactive=True):
            identity = _identity(record)
            if identity and identity not in out:
                out[identity] = record
        return out

    def _cached_changes(self) -> dict[str, tuple[str, datetime | None]]:
        """lower-case identity → (identity as stored, cached WhenChanged), read cheaply (no full records)."""
        from imm.data.database import parse_datetime

        rows = self.db.get_connection().execute("SELECT identity, when_changed FROM inactive_mailboxes")
        return {str(row[0]).lower(): (str(row[0]), parse_datetime(row[1])) for row in rows}

    def _reanalyse_cached(self, skip: set[str], context: _AnalysisContext) -> int:
        """Re-run the analysis on cached mailboxes that need no fetch (org holds, policies or the day changed)."""
        batch: list[InactiveMailbox] = []
        count = 0
        for mailbox in self.db.get_all_mailboxes():
            if mailbox.identity.lower() in skip:
                continue
            batch.append(context.analyse(mailbox))
            if len(batch) >= 2000:
                count += self.db.upsert_mailboxes(batch) or len(batch)
                batch = []
        if batch:
            count += self.db.upsert_mailboxes(batch) or len(batch)
        return count

    # ------------------------------------------------------------------------------------------ recipients
    def _recipient_plan(self, to_fetch: int, result: SyncResult) -> tuple[dict[str, dict[str, Any]], bool]:
        """(recipient index from one listing, or {}; whether to ask Get-Recipient per mailbox instead)."""
        threshold = max(RECIPIENT_LISTING_MIN, result.listed * self.concurrency // 1000)
        if to_fetch <= threshold:
            result.recipient_source = "per-mailbox"
            return {}, True
        result.recipient_source = "listing"
        index: dict[str, dict[str, Any]] = {}
        for record in self.ops.get_recipients():
            for key in _recipient_keys(record):
                index.setdefault(key, record)
        return index, False

    # ------------------------------------------------------------------------------------------- fan-out
    def _fetch_one(self, record: dict[str, Any], per_mailbox_recipient: bool) -> _Fetched:
        identity = _identity(record)
        stats = self._call(self.ops.get_mailbox_statistics, identity)
        archive = None
        if str(record.get("ArchiveStatus") or "").lower() == "active":
            archive = self._call(self.ops.get_mailbox_statistics, identity, archive=True)
        recipient = None
        if per_mailbox_recipient:
            try:
                recipient = self._call(self.ops.get_recipient, identity)
            except NotFoundError:
                recipient = None  # no recipient object: Company/Department from the attribute or mapping
        tracking = None
        if _truthy(record.get("DelayHoldApplied")) or _truthy(record.get("DelayReleaseHoldApplied")):
            # When the delay hold started: the latest removal in the hold history (identify-a-hold article).
            from imm.exchange.errors import AccessDeniedError, InvalidParameterError

            try:
                tracking = self._call(self.ops.export_hold_tracking, identity)
            except (NotFoundError, AccessDeniedError, InvalidParameterError):
                tracking = None  # no history readable: the delay hold is estimated from WhenChanged
        return _Fetched(record, _first(stats), _first(archive), _first(recipient), tracking)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._calls_lock:
            self._calls += 1
        return fn(*args, **kwargs)

    def _fetch_all(
        self,
        to_fetch: list[dict[str, Any]],
        recipients: dict[str, dict[str, Any]],
        per_mailbox: bool,
        mapping: dict[str, tuple[str, str]] | None,
        context: _AnalysisContext,
        result: SyncResult,
        notify: ProgressCallback,
        cancel: threading.Event,
    ) -> None:
        from imm.domain.records import mailbox_from_records

        total = len(to_fetch)
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
            for record, outcome in fan_out(lambda r: self._fetch_one(r, per_mailbox), to_fetch, self.workers, cancel):
                done += 1
                if isinstance(outcome, BaseException) and _fatal(outcome):
                    raise outcome  # sign-in lost or access denied: every other call would fail the same way
                unavailable_in_a_row = unavailable_in_a_row + 1 if _unavailable(outcome) else 0
                if unavailable_in_a_row >= give_up_after:
                    raise ImmError(
                        f"Exchange Online did not answer for {unavailable_in_a_row} mailboxes in a row "
                        f"(last: {_describe(outcome)})",
                        hint="check the connection and the service health, then run imm sync again "
                        "(what was fetched is kept)",
                        code="exchange_unavailable",
                    )
                if isinstance(outcome, BaseException):
                    result.errors += 1
                    message = f"{_identity(record)} ({record.get('PrimarySmtpAddress') or ''}): {_describe(outcome)}"
                    if len(result.error_details) < MAX_ERROR_DETAILS:
                        result.error_details.append(message)
                    log.info("sync: %s", message)  # the caller shows it
                else:
                    recipient = outcome.recipient
                    if recipient is None and not per_mailbox:
                        recipient = _lookup_recipient(recipients, outcome.record)
                    mailbox = mailbox_from_records(
                        outcome.record,
                        outcome.stats,
                        outcome.archive,
                        recipient,
                        self.profile.org,
                        mapping,
                        self.profile.tenant_id,
                        context.now,
                        outcome.hold_tracking,
                    )
                    batch.append(context.analyse(mailbox))
                    if len(batch) >= BATCH_SIZE or time.monotonic() - last_write >= BATCH_SECONDS:
                        flush()
                notify(SyncProgress("fetching", done, total, result.errors))
        finally:
            flush()  # a cancelled or failed run keeps what was fetched
            result.calls = self._calls

    # ----------------------------------------------------------------------------------------- bookkeeping
    def _load_mapping(self) -> dict[str, tuple[str, str]] | None:
        path = self.profile.org.mapping_file
        if path is None:
            return None
        from imm.domain.records import load_org_mapping_csv

        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise InputError(f"cannot read the org mapping file {path}: {exc.strerror or exc}") from None
        return load_org_mapping_csv(text)

    def _start_run(self, mode: str) -> int | None:
        from imm.data.database import format_datetime
        from imm.data.stale import process_marker

        with self.db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO sync_runs(started_at, mode, status, fetched, changed, removed, errors, details) "
                "VALUES (?, ?, 'running', 0, 0, 0, 0, ?)",
                (format_datetime(datetime.now(UTC)), mode, json.dumps(process_marker())),
            )
            return cursor.lastrowid

    def _audit_begin(self, result: SyncResult) -> str | None:
        if self.audit is None:
            return None
        from imm.data.stale import process_marker

        return self.audit.begin(SYNC, None, {"mode": result.mode, "run_id": result.run_id, **process_marker()})

    def _finish(self, result: SyncResult, started: float, operation_id: str | None, error: str | None) -> None:
        result.duration = time.monotonic() - started
        result.calls = self._calls
        details = {
            **result.counts(),
            "warnings": result.warnings,
            "error_details": result.error_details,
            "recipient_source": result.recipient_source,
            "phase_seconds": result.phases,
        }
        if error:
            details["error"] = error
        from imm.data.database import format_datetime

        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "UPDATE sync_runs SET finished_at = ?, status = ?, fetched = ?, changed = ?, removed = ?, "
                    "errors = ?, details = ? WHERE id = ?",
                    (
                        format_datetime(datetime.now(UTC)),
                        result.status,
                        result.fetched,
                        result.fetched,
                        result.removed,
                        result.errors,
                        json.dumps(details, sort_keys=True, ensure_ascii=False),
                        result.run_id,
                    ),
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

    def _meta_get(self, key: str) -> str | None:
        row = self.db.get_connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _meta_set(self, key: str, value: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))


class _Phases:
    """Records how long each stage of a run took (in the run record's details)."""

    def __init__(self, result: SyncResult) -> None:
        self.result = result
        self.mark = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.result.phases[name] = round(now - self.mark, 3)
        self.mark = now


class _AnalysisContext:
    """Everything :func:`imm.domain.analyse.analyse` needs besides the mailbox."""

    def __init__(self, org_holds: list[str], policies: dict[str, PolicyInfo], profile: Profile, now: datetime) -> None:
        from imm.domain.analyse import analyse

        self._analyse = analyse
        self.org_holds = org_holds
        self.policies = policies
        self.cost_model = profile.cost
        self.now = now

    def analyse(self, mailbox: InactiveMailbox) -> InactiveMailbox:
        return self._analyse(
            mailbox, org_holds=self.org_holds, policies=self.policies, cost_model=self.cost_model, now=self.now
        )


# ---------------------------------------------------------------------------------------------- fan-out helper
def fan_out(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int,
    cancel: threading.Event | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Run ``fn`` over ``items`` on ``workers`` threads; yield ``(item, result or exception)`` as each finishes.

    At most ``2 * workers`` items are queued at a time, so a set ``cancel`` stops new work at once; calls in flight
    finish (their results are still yielded). Throttling is the Exchange client's job: each call waits for its
    adaptive limiter, so more workers than the allowed concurrency only queue there.
    """
    iterator = iter(items)
    pending: dict[Future[Any], Any] = {}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imm-sync")

    def submit_more() -> None:
        while len(pending) < workers * 2 and not (cancel is not None and cancel.is_set()):
            try:
                item = next(iterator)
            except StopIteration:
                return
            pending[pool.submit(fn, item)] = item

    try:
        submit_more()
        while pending:
            done, _ = wait(list(pending), timeout=0.2, return_when=FIRST_COMPLETED)
            if cancel is not None and cancel.is_set():  # queued items that have not started never will
                for future in [f for f in pending if f not in done and f.cancel()]:
                    del pending[future]
            for future in done:
                item = pending.pop(future)
                exc = future.exception()
                yield item, (exc if exc is not None else future.result())
            submit_more()
    finally:
        # Stopped early (an error, the consumer gone): drop what has not started, let calls in flight end.
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------- pure helpers
def _identity(record: dict[str, Any]) -> str:
    return str(record.get("ExchangeGuid") or record.get("Guid") or "").strip().lower()


def _is_newer(record: dict[str, Any], cached_when_changed: datetime | None) -> bool:
    """True when the listed mailbox changed after the cached copy (or either date is unknown)."""
    if cached_when_changed is None:
        return True
    from imm.domain.parsing import parse_datetime

    listed = parse_datetime(record.get("WhenChangedUTC") or record.get("WhenChanged"))
    if listed is None:
        return True  # no date to compare: fetch, to be safe
    return bool(listed > cached_when_changed)


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _first(value: Any) -> dict[str, Any] | None:
    """A cmdlet result may be a record, a list of records, or nothing."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return None


def _recipient_keys(record: dict[str, Any]) -> list[str]:
    keys = []
    for name in ("ExchangeGuid", "Guid", "ExternalDirectoryObjectId"):
        value = str(record.get(name) or "").strip().lower()
        if value and value != "00000000-0000-0000-0000-000000000000":
            keys.append(f"{name}:{value}")
    smtp = str(record.get("PrimarySmtpAddress") or "").strip().lower()
    if smtp:
        keys.append(f"smtp:{smtp}")
    return keys


def _lookup_recipient(index: dict[str, dict[str, Any]], mailbox: dict[str, Any]) -> dict[str, Any] | None:
    """The recipient of a mailbox: by ExchangeGuid first (SMTP addresses can be shared), then Guid, then SMTP."""
    for key in _recipient_keys(mailbox):
        if key.startswith("smtp:"):
            continue
        found = index.get(key)
        if found is not None:
            return found
    smtp = str(mailbox.get("PrimarySmtpAddress") or "").strip().lower()
    return index.get(f"smtp:{smtp}") if smtp else None


def _fatal(exc: BaseException) -> bool:
    """Errors that end the run rather than count against one mailbox."""
    from imm.exchange import AccessDeniedError, ExoAuthError

    if not isinstance(exc, Exception):
        return True  # KeyboardInterrupt, SystemExit in a worker
    return isinstance(exc, ExoAuthError | AccessDeniedError | SignInError)


def _unavailable(outcome: Any) -> bool:
    """A mailbox that could not be read because Exchange did not answer (after every retry), not because of it."""
    from imm.exchange import ThrottledError, TransientError

    return isinstance(outcome, TransientError | ThrottledError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ImmError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _is_auth_denied(exc: ImmError) -> bool:
    return getattr(exc, "status", None) == 403


def _policy_action(value: Any) -> HoldAction | None:
    from imm.domain.holds import HoldAction

    try:
        return HoldAction(value) if value else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------- compliance records
def policies_from_records(
    policies: Iterable[dict[str, Any]],
    rules: Iterable[dict[str, Any]],
    case_holds: Iterable[dict[str, Any]],
) -> dict[str, PolicyInfo]:
    """PolicyInfo by normalised GUID from Get-RetentionCompliancePolicy, -Rule and Get-CaseHoldPolicy records."""
    from imm.domain.holds import PolicyInfo

    rules_by_policy: dict[str, dict[str, Any]] = {}
    for rule in rules:
        for key in (rule.get("Policy"), rule.get("PolicyId"), rule.get("ParentPolicyName")):
            if key:  # a rule names its policy by GUID or by name
                rules_by_policy.setdefault(_norm_guid(key) or str(key).strip().lower(), rule)
    out: dict[str, PolicyInfo] = {}
    for policy in policies:
        guid = _norm_guid(policy.get("Guid") or policy.get("ExchangeObjectId") or policy.get("Identity"))
        if not guid:
            continue
        name = str(policy.get("Name") or "")
        rule = rules_by_policy.get(guid) or rules_by_policy.get(name.lower()) or {}
        locations = [str(v).lower() for v in _as_list(policy.get("ExchangeLocation"))]
        out[guid] = PolicyInfo(
            guid=guid,
            name=name,
            kind="retention",
            locked=_truthy(policy.get("RestrictiveRetention")),
            enabled=_truthy(policy.get("Enabled"), default=True),
            retention_days=_duration_days(rule.get("RetentionDuration")),
            action=_rule_action(rule.get("RetentionComplianceAction")),
            scope_all="all" in locations,
        )
    for policy in case_holds:
        guid = _norm_guid(policy.get("Guid") or policy.get("ExchangeObjectId") or policy.get("Identity"))
        if not guid:
            continue
        out[guid] = PolicyInfo(
            guid=guid,
            name=str(policy.get("Name") or ""),
            kind="case-hold",
            locked=False,
            enabled=_truthy(policy.get("Enabled"), default=True),
            retention_days=None,
            action=None,
            scope_all=False,
        )
    return out


def _norm_guid(value: Any) -> str:
    """Bare lower-case 32-hex, or '' when ``value`` is not a GUID."""
    text = str(value or "").strip().strip("{}").replace("-", "").lower()
    return text if len(text) == 32 and all(c in "0123456789abcdef" for c in text) else ""


def _truthy(value: Any, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"true", "1", "yes"}


def _duration_days(value: Any) -> int | None:
    if value in (None, "", "Unlimited", "unlimited"):
        return None
    try:
        return int(str(value).split(".")[0].split(":")[0]) if ":" in str(value) else int(float(value))
    except ValueError:
        return None


def _rule_action(value: Any) -> HoldAction | None:
    """Keep → retain, KeepAndDelete → retain then delete, Delete → delete only (the :2/:3/:1 suffixes)."""
    from imm.domain.holds import HoldAction

    return {
        "keep": HoldAction.RETAIN,
        "keepanddelete": HoldAction.RETAIN_THEN_DELETE,
        "delete": HoldAction.DELETE_ONLY,
    }.get(str(value or "").strip().lower())
