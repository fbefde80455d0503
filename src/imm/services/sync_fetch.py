"""What a sync reads from Exchange: org-wide holds, compliance policies, the inactive mailbox list, recipients and
per-mailbox statistics fanned out over a bounded pool (:func:`fan_out`). No cache access and no record building
here: :mod:`imm.services.sync` orchestrates, :mod:`imm.services.sync_build` turns what was read into mailboxes.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from imm.domain.parsing import parse_strings
from imm.domain.records import STATISTICS_PROPERTIES
from imm.errors import ImmError, NotFoundError, SignInError
from imm.services.action_support import first, truthy

if TYPE_CHECKING:
    from imm.exchange.cmdlets import ExchangeOperations

log = logging.getLogger(__name__)

# What stays unknown when one compliance read is refused (each read stands alone; issue 17, domain.compliance).
COMPLIANCE_UNKNOWN = {
    "Get-RetentionCompliancePolicy": "retention policy names and Preservation Locks are unknown (the last known "
    "names and locks are kept; a lock is never shown as absent)",
    "Get-RetentionComplianceRule": "retention durations and actions are unknown (the last known are kept)",
    "Get-CaseHoldPolicy": "eDiscovery case hold names are unknown (the last known are kept)",
    "Get-AppRetentionCompliancePolicy": "app retention policy names and Preservation Locks are unknown (the last "
    "known are kept)",
    "Get-AppRetentionComplianceRule": "app retention durations and actions are unknown (the last known are kept)",
}


@dataclass
class Fetched:
    """One mailbox as read: its Get-Mailbox record, statistics (primary, archive), recipient and, under a delay
    hold, its HoldTracking log."""

    record: dict[str, Any]
    stats: dict[str, Any] | None
    archive: dict[str, Any] | None
    recipient: dict[str, Any] | None
    hold_tracking: list[dict[str, Any]] | None = None
    conflicts: tuple[str, str] | None = None  # (smtp, upn) holders probed per mailbox; None: from the listing


# What an incremental listing asks for: the keys, WhenChanged (change detection) and WasInactiveMailbox (the
# formerly inactive soft-deleted ones are told apart client-side). ``$select`` on the InvokeCommand URL trims the
# properties of every record (exo-rest.md §1: CIPP and the Exchange Health scripts send ``?$select=A,B``).
CHANGE_PROPERTIES: tuple[str, ...] = ("ExchangeGuid", "Guid", "WhenChangedUTC", "WhenChanged", "WasInactiveMailbox")


class Listed(NamedTuple):
    """One mailbox of the listing, held until it is fetched: its identity, its WhenChanged (change detection) and
    its selected properties as zlib-compressed JSON (about 0.5 KB instead of about 5 KB as a dict: a listing of
    100K mailboxes stays small). ``slim``: listed with :data:`CHANGE_PROPERTIES` only, so a fetch reads its
    Get-Mailbox record first; ``soft_deleted``: from the listing of formerly inactive soft-deleted mailboxes."""

    identity: str
    when_changed: Any
    blob: bytes
    slim: bool = False
    soft_deleted: bool = False

    @classmethod
    def of(cls, identity: str, record: dict[str, Any], slim: bool = False, soft_deleted: bool = False) -> Listed:
        """``slim``: nothing of the record is kept but the identity and WhenChanged (its fetch reads the record)."""
        when = record.get("WhenChangedUTC") or record.get("WhenChanged")
        if slim:
            return cls(identity, when, b"", True, soft_deleted)
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        return cls(identity, when, zlib.compress(text.encode(), 1), slim, soft_deleted)

    def record(self) -> dict[str, Any]:
        """The Get-Mailbox record (its selected properties) again; empty for a slim one."""
        if not self.blob:
            return {}
        value: dict[str, Any] = json.loads(zlib.decompress(self.blob))
        return value


@dataclass
class ComplianceRead:
    """What the compliance endpoint gave: the records of each read (None: not read), and why not (one warning per
    refused cmdlet, naming the role that grants it); ``refused`` lists those cmdlets."""

    policies: list[dict[str, Any]] | None = None
    rules: list[dict[str, Any]] | None = None
    case_holds: list[dict[str, Any]] | None = None
    warnings: list[str] = field(default_factory=list)
    app_policies: list[dict[str, Any]] | None = None  # Get-AppRetentionCompliancePolicy (+ its rules)
    app_rules: list[dict[str, Any]] | None = None
    refused: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.refused


class MailboxFetcher:
    """The Exchange reads of one sync run, counting the calls it makes. ``properties``: the Get-Mailbox properties
    the run reads (:func:`imm.domain.records.mailbox_properties`); the listings ask for those only and keep only
    those (a 100K listing is held until its mailboxes are fetched)."""

    def __init__(self, ops: ExchangeOperations, workers: int, properties: Sequence[str] | None = None) -> None:
        from imm.domain.records import MAILBOX_PROPERTIES

        self.ops = ops
        self.workers = workers
        self.properties = tuple(properties or MAILBOX_PROPERTIES)
        self._wanted = frozenset(p.lower() for p in self.properties)
        self._calls = 0
        self._calls_lock = threading.Lock()
        self.soft_deleted_listed = 0  # of the last list_inactive: formerly inactive, soft-deleted mailboxes

    @property
    def calls(self) -> int:
        return self._calls

    # ------------------------------------------------------------------------------------ org state, policies
    def org_holds(self) -> list[str]:
        config = first(self.ops.get_organization_config()) or {}
        return parse_strings(config.get("InPlaceHolds"))

    def compliance(self) -> ComplianceRead:
        """Retention policies, their rules, case hold policies and app retention policies with their rules, each
        read on its own: a refused read (403) is None with a warning naming the cmdlet, its role and what stays
        unknown; the others are kept."""
        read = ComplianceRead()
        read.policies = self._compliance_read(
            "Get-RetentionCompliancePolicy", lambda: self.ops.get_retention_policies(distribution_detail=True), read
        )
        read.rules = self._compliance_read("Get-RetentionComplianceRule", self.ops.get_retention_rules, read)
        read.case_holds = self._compliance_read("Get-CaseHoldPolicy", self.ops.get_case_hold_policies, read)
        # app retention policies (Teams private channels, Viva Engage) can hold an inactive mailbox too
        read.app_policies = self._compliance_read(
            "Get-AppRetentionCompliancePolicy", self.ops.get_app_retention_policies, read
        )
        read.app_rules = self._compliance_read("Get-AppRetentionComplianceRule", self.ops.get_app_retention_rules, read)
        return read

    def _compliance_read(
        self, cmdlet: str, fn: Callable[[], Iterable[dict[str, Any]]], read: ComplianceRead
    ) -> list[dict[str, Any]] | None:
        from imm.exchange import AccessDeniedError
        from imm.exchange.errors import role_for

        try:
            return list(fn())
        except ImmError as exc:
            if not (isinstance(exc, AccessDeniedError) or _is_auth_denied(exc)):
                raise
            role = getattr(exc, "role", None) or role_for(cmdlet)
            grant = f"it needs the {role} role" if role else "the account lacks the role that grants it"
            warning = f"{cmdlet} was refused ({grant}): {COMPLIANCE_UNKNOWN[cmdlet]}"
            log.info("%s", warning)
            read.refused.append(cmdlet)
            read.warnings.append(warning)
            return None

    # ------------------------------------------------------------------------------------------- listing
    def list_inactive(self, slim: bool = False) -> dict[str, Listed]:
        """ExchangeGuid → Get-Mailbox record of every inactive mailbox (the complete list), plus the formerly
        inactive ones that are soft-deleted and not yet purged (kept with their lifecycle state and purge date;
        delete-an-inactive-mailbox). ``slim``: only :data:`CHANGE_PROPERTIES` (an incremental sync: a page is a
        fraction of the size to send and decode; what is fetched reads its record then)."""
        out: dict[str, Listed] = {}
        select = CHANGE_PROPERTIES if slim else self.properties
        wanted = frozenset(p.lower() for p in select)

        def kept(record: dict[str, Any]) -> dict[str, Any]:
            return record if slim else {k: v for k, v in record.items() if k.lower() in wanted}

        self.soft_deleted_listed = 0
        # The soft-deleted listing (a few records) is read beside the long one, not after it.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imm-sync-soft-deleted") as side:
            soft_deleted = side.submit(
                lambda: [kept(r) for r in self.ops.iter_soft_deleted_mailboxes(formerly_inactive=True, select=select)]
            )
            for record in self.ops.iter_inactive_mailboxes(select=select):
                identity = identity_of(record)
                if identity:
                    out[identity] = Listed.of(identity, kept(record), slim)
            soft_records = soft_deleted.result()
        for record in soft_records:
            identity = identity_of(record)
            if identity and identity not in out:
                out[identity] = Listed.of(identity, record, slim, soft_deleted=True)
                self.soft_deleted_listed += 1
        return out

    def recipient_index(self) -> dict[Any, dict[str, Any]]:
        """Company and Department of every recipient of one paged Get-Recipient listing, by each of its keys (see
        :func:`lookup_recipient`); nothing else of a recipient is kept."""
        from imm.domain.records import RECIPIENT_PROPERTIES

        index: dict[Any, dict[str, Any]] = {}
        shared: dict[tuple[Any, Any], dict[str, Any]] = {}  # one dict per distinct pair (read only, never changed)
        for record in self.ops.iter_recipients(select=RECIPIENT_PROPERTIES):
            pair = (record.get("Company"), record.get("Department"))
            if all(isinstance(v, str | None) for v in pair):
                org = shared.setdefault(pair, {"Company": pair[0], "Department": pair[1]})
            else:  # not text as Exchange gives it: kept as it came
                org = {"Company": pair[0], "Department": pair[1]}
            for key in _recipient_keys(record):
                index.setdefault(key, org)
        return index

    def active_address_index(self) -> dict[str, list[dict[str, Any]]]:
        """Every active recipient (of any type: mailboxes, mail users, contacts, groups) of one paged
        ``Get-Recipient -ResultSize Unlimited`` (no soft-deleted ones), by each address it answers to."""
        from imm.domain.records import ACTIVE_RECIPIENT_PROPERTIES, recipient_addresses

        index: dict[str, list[dict[str, Any]]] = {}
        wanted = ACTIVE_RECIPIENT_PROPERTIES
        listing = self.ops.iter_recipients(recipient_type_details=None, include_soft_deleted=False, select=wanted)
        for full in listing:
            record = {k: full[k] for k in wanted if k in full}  # what the conflicts read, nothing more
            for address in recipient_addresses(record):
                index.setdefault(address, []).append(record)
        return index

    def probe_conflicts(self, record: dict[str, Any]) -> tuple[str, str]:
        """(smtp, upn) conflicts of one inactive mailbox, asked per address: ``Get-Recipient -Identity <address>``
        without -IncludeSoftDeletedRecipients finds only active recipients."""
        from imm.domain.records import address_conflicts
        from imm.exchange import AmbiguousIdentityError

        def holders(address: str) -> list[dict[str, Any]]:
            try:
                return [r for r in [first(self._call(self.ops.get_recipient, address, soft_deleted=False))] if r]
            except NotFoundError:
                return []
            except AmbiguousIdentityError:  # several recipients answer to it: a conflict all the same
                return [{"Name": "several recipients", "PrimarySmtpAddress": address}]

        return address_conflicts(record, holders)

    # ------------------------------------------------------------------------------------------- fan-out
    def fetch_one(self, listed: Listed, per_mailbox_recipient: bool) -> Fetched:
        identity = listed.identity
        if listed.slim:  # listed for change detection only: its Get-Mailbox record first
            found = first(
                self._call(
                    self.ops.get_mailbox, identity, inactive=not listed.soft_deleted, soft_deleted=listed.soft_deleted
                )
            )
            record = {k: v for k, v in (found or {}).items() if k.lower() in self._wanted}
        else:
            record = listed.record()
        stats = self._call(self.ops.get_mailbox_statistics, identity, select=STATISTICS_PROPERTIES)
        archive = None
        if str(record.get("ArchiveStatus") or "").lower() == "active":
            archive = self._call(self.ops.get_mailbox_statistics, identity, archive=True, select=STATISTICS_PROPERTIES)
        recipient = None
        if per_mailbox_recipient:
            try:
                recipient = self._call(self.ops.get_recipient, identity)
            except NotFoundError:
                recipient = None  # no recipient object: Company/Department from the attribute or mapping
        tracking = None
        if truthy(record.get("DelayHoldApplied")) or truthy(record.get("DelayReleaseHoldApplied")):
            # When the delay hold started: the latest removal in the hold history (identify-a-hold article).
            from imm.exchange.errors import AccessDeniedError, InvalidParameterError

            try:
                tracking = self._call(self.ops.export_hold_tracking, identity)
            except (NotFoundError, AccessDeniedError, InvalidParameterError):
                tracking = None  # no history readable: the delay hold is estimated from WhenChanged
        conflicts = self.probe_conflicts(record) if per_mailbox_recipient else None
        return Fetched(record, first(stats), first(archive), first(recipient), tracking, conflicts)

    def fetch_all(
        self, records: Iterable[Listed], per_mailbox_recipient: bool, cancel: threading.Event | None
    ) -> Iterator[tuple[Listed, Fetched | BaseException]]:
        """(listed mailbox, Fetched or the exception) for each, as each finishes."""
        return fan_out(lambda r: self.fetch_one(r, per_mailbox_recipient), records, self.workers, cancel)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._calls_lock:
            self._calls += 1
        return fn(*args, **kwargs)


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
    # Each future puts itself here when it ends: one wake-up per result, instead of ``wait()`` over every pending
    # future (which locks and hooks each of them on every round; issue 18: a tenth of a sync's CPU).
    finished: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imm-sync")

    def submit_more() -> None:
        while len(pending) < workers * 2 and not (cancel is not None and cancel.is_set()):
            try:
                item = next(iterator)
            except StopIteration:
                return
            future = pool.submit(fn, item)
            pending[future] = item
            future.add_done_callback(finished.put)

    try:
        submit_more()
        while pending:
            try:
                future: Future[Any] | None = finished.get(timeout=0.2)
            except queue.Empty:
                future = None
            if cancel is not None and cancel.is_set():  # queued items that have not started never will
                for queued in [f for f in pending if f is not future and f.cancel()]:
                    del pending[queued]
            if future is not None and future in pending:  # a cancelled one was dropped above
                item = pending.pop(future)
                exc = future.exception()
                yield item, (exc if exc is not None else future.result())
            submit_more()
    finally:
        # Stopped early (an error, the consumer gone): drop what has not started, let calls in flight end.
        pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------- pure helpers
def identity_of(record: dict[str, Any]) -> str:
    """The cache key of a Get-Mailbox record: its ExchangeGuid (else Guid), lower-case."""
    return str(record.get("ExchangeGuid") or record.get("Guid") or "").strip().lower()


_GUID_KINDS = (("ExchangeGuid", b"E"), ("Guid", b"G"), ("ExternalDirectoryObjectId", b"X"))


def _recipient_keys(record: dict[str, Any]) -> list[bytes | str]:
    """The keys of a recipient index entry: each GUID as its kind's letter and its 16 bytes (a third of the memory
    of its text, for 100K recipients x 3; a value that is not a GUID keeps its text), then ``smtp:<address>``."""
    keys: list[bytes | str] = []
    for name, kind in _GUID_KINDS:
        value = str(record.get(name) or "").strip().lower()
        if value and value != "00000000-0000-0000-0000-000000000000":
            try:
                raw = bytes.fromhex(value.replace("-", ""))
            except ValueError:
                raw = b""
            keys.append(kind + raw if len(raw) == 16 else f"{name}:{value}")
    smtp = str(record.get("PrimarySmtpAddress") or "").strip().lower()
    if smtp:
        keys.append(f"smtp:{smtp}")
    return keys


def lookup_recipient(index: dict[Any, dict[str, Any]], mailbox: dict[str, Any]) -> dict[str, Any] | None:
    """The recipient of a mailbox: by ExchangeGuid first (SMTP addresses can be shared), then Guid, then SMTP."""
    keys = _recipient_keys(mailbox)
    for key in keys:
        if isinstance(key, str) and key.startswith("smtp:"):
            continue
        found = index.get(key)
        if found is not None:
            return found
    smtp = str(mailbox.get("PrimarySmtpAddress") or "").strip().lower()
    return index.get(f"smtp:{smtp}") if smtp else None


def is_fatal(exc: BaseException) -> bool:
    """Errors that end the run rather than count against one mailbox."""
    from imm.exchange import AccessDeniedError, ExoAuthError

    if not isinstance(exc, Exception):
        return True  # KeyboardInterrupt, SystemExit in a worker
    return isinstance(exc, ExoAuthError | AccessDeniedError | SignInError)


def is_unavailable(outcome: Any) -> bool:
    """A mailbox that could not be read because Exchange did not answer (after every retry), not because of it."""
    from imm.exchange import ThrottledError, TransientError

    return isinstance(outcome, TransientError | ThrottledError)


def describe(exc: BaseException) -> str:
    if isinstance(exc, ImmError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _is_auth_denied(exc: ImmError) -> bool:
    return getattr(exc, "status", None) == 403
