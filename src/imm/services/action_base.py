"""What every action service of :class:`imm.services.actions.MailboxActions` is composed over.

- :class:`MailboxRefresher`, one per session: the store, the Exchange operations, the profile and the clock, the
  org-wide holds and cached policies, the Get-Mailbox lookups, resolving an identity and refreshing one mailbox
  into the cache (the one read a preview and an execution each make).
- :class:`ActionAuditor`, one per session: every audit row an action writes (write-ahead ``started`` row, the
  guarded body and its ``success``/``failure``/``unknown``/``cancelled`` row, ``record_unchanged`` for a preview,
  a block, a decline or a skip).
- :class:`ActionService`, the base of each service (recover, restore, restore requests, holds): ``execute(plan)``
  re-reads what the plan was computed from, refuses a changed one (audited), and runs the plan's cmdlets.
- :func:`send_change`: an idempotent change sent without resending it needlessly after a lost reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imm.data.audit_logger import AuditResult, OperationType, error_text, is_cancellation
from imm.errors import ImmError, InputError, InterruptedChange, NotFoundError
from imm.services.action_support import (
    FAILED,
    RECOVER,
    RELEASE,
    REQUEST_ACTIONS,
    RESTORE,
    RESTORE_REMOVE,
    RESTORE_RESUME,
    RESTORE_SUSPEND,
    SET_DURATION,
    ActionPreview,
    ActionResult,
    ItemFailed,
    PlanChangedError,
    as_list,
    exchange_guid,
    fingerprint_of,
    first,
    is_exchange_item_error,
    truthy,
)
from imm.services.restore_tracking import RestoreTracker

if TYPE_CHECKING:
    from imm.config import Profile
    from imm.data.audit_logger import AuditLogger
    from imm.data.database import DatabaseManager
    from imm.data.models import InactiveMailbox
    from imm.domain.holds import Hold, PolicyInfo
    from imm.exchange.cmdlets import ExchangeOperations

# The name these actions have always logged under (the log file shows it), kept across the split into modules.
log = logging.getLogger("imm.services.actions")

LOST_REPLY_SENDS = 3  # a change whose reply was lost and that did not take effect is sent at most this often

ACTION_OPERATIONS = {
    RECOVER: OperationType.RECOVER_MAILBOX,
    RESTORE: OperationType.RESTORE_MAILBOX,
    RELEASE: OperationType.REMOVE_HOLD,
    SET_DURATION: OperationType.CHANGE_HOLD,
    RESTORE_REMOVE: OperationType.REMOVE_RESTORE_REQUEST,
    RESTORE_SUSPEND: OperationType.SUSPEND_RESTORE_REQUEST,
    RESTORE_RESUME: OperationType.RESUME_RESTORE_REQUEST,
}


class MailboxRefresher:
    """One session's view of its mailboxes: reads them from Exchange, analyses them and keeps the cache in step.

    Every action service holds the same refresher, so a preview and an execution each read the mailbox once.
    """

    def __init__(
        self,
        db: DatabaseManager,
        ops: ExchangeOperations | None,
        profile: Profile,
        *,
        now: datetime | None = None,
    ) -> None:
        self.db = db
        self.ops = ops
        self.profile = profile
        self._now = now
        self._org_holds: list[str] | None = None
        self._policies: dict[str, PolicyInfo] | None = None

    # ------------------------------------------------------------------------------------ time, org state
    def now(self) -> datetime:
        return self._now or datetime.now(UTC)

    def need_ops(self) -> ExchangeOperations:
        if self.ops is None:
            from imm.errors import SignInError

            raise SignInError("this needs an Exchange session", hint="sign in with 'imm login'")
        return self.ops

    def org_holds(self, *, fresh: bool = False) -> list[str]:
        """The org-wide InPlaceHolds: from Exchange once per instance (with a session), else from the cache."""
        if self._org_holds is None or fresh:
            if self.ops is not None:
                config = first(self.ops.get_organization_config()) or {}
                self._org_holds = [str(v) for v in as_list(config.get("InPlaceHolds"))]
            else:
                from imm.data.org_state import OrgStateStore

                self._org_holds = OrgStateStore(self.db).org_holds()
        return list(self._org_holds)

    def policies(self) -> dict[str, PolicyInfo]:
        """Retention and case hold policies as the last sync cached them (names, Preservation Lock, durations)."""
        if self._policies is None:
            from imm.data.org_state import OrgStateStore
            from imm.domain.compliance import policy_from_row

            rows = OrgStateStore(self.db).policy_rows()
            self._policies = {str(row["guid"]): policy_from_row(row) for row in rows}
        return self._policies

    def decode(self, mailbox: InactiveMailbox) -> list[Hold]:
        from imm.domain.holds import decode_holds

        return decode_holds(mailbox, self.org_holds(), self.policies())

    # ------------------------------------------------------------------------------------------- lookups
    def lookup_inactive(self, identity: str) -> dict[str, Any] | None:
        """The Get-Mailbox -InactiveMailboxOnly record of ``identity``, or None when Exchange has no such one."""
        from imm.exchange import ExoNotFoundError

        try:
            return first(self.need_ops().get_mailbox(identity, inactive=True))
        except ExoNotFoundError:
            return None

    def lookup_active(self, identity: str) -> dict[str, Any] | None:
        """The Get-Mailbox record of an active mailbox, or None."""
        from imm.exchange import ExoNotFoundError

        try:
            return first(self.need_ops().get_mailbox(identity, inactive=False))
        except ExoNotFoundError:
            return None

    def lookup_soft_deleted(self, identity: str) -> dict[str, Any] | None:
        from imm.exchange import ExoNotFoundError

        try:
            record = first(self.need_ops().get_mailbox(identity, soft_deleted=True))
        except ExoNotFoundError:
            return None
        if record is not None and truthy(record.get("IsInactiveMailbox")):
            return None  # -SoftDeletedMailbox also lists inactive mailboxes
        return record

    def resolve(self, identity: str) -> tuple[str, InactiveMailbox | None]:
        """(ExchangeGuid, cached mailbox or None) for any identity the cache knows; else asks Exchange.

        Raises NotFoundError (exit 4) naming the identity when neither knows an inactive mailbox by it.
        """
        guid, cached, _ = self._resolve(identity)
        return guid, cached

    def _resolve(self, identity: str) -> tuple[str, InactiveMailbox | None, dict[str, Any] | None]:
        """(ExchangeGuid, cached mailbox, the Get-Mailbox record when Exchange was asked)."""
        text = (identity or "").strip()
        if not text:
            raise InputError("an empty mailbox identity was given")
        from imm.domain.parsing import canonical_guid

        text = canonical_guid(text) or text  # a GUID in any form Exchange prints goes out in the dashed form
        try:
            cached = self.db.find_mailbox(text)
            return cached.identity, cached, None
        except NotFoundError:
            pass
        if self.ops is None:
            raise NotFoundError(
                f"no inactive mailbox '{text}' in the cache", hint="run `imm sync`, or find it with `imm search TEXT`"
            )
        record = self.lookup_inactive(text)
        if record is None or not exchange_guid(record):
            raise NotFoundError(
                f"no inactive mailbox '{text}' in the cache or in Exchange",
                hint="check the identity (ExchangeGuid, address or name) with `imm search TEXT`, or run `imm sync`",
            )
        return exchange_guid(record), None, record

    # ------------------------------------------------------------------------------------------- refresh
    def refresh(self, identity: str, *, full: bool = False) -> tuple[InactiveMailbox, dict[str, Any]]:
        """Read one inactive mailbox again from Exchange, analyse it and update the cache.

        Get-Mailbox always; Get-MailboxStatistics (primary, archive) only when the cache has no copy yet or with
        ``full`` (a hold change does not change sizes: an inactive mailbox receives no mail), Get-Recipient only
        when the cache has no copy. When Exchange no longer has it as inactive, it leaves the cache and
        NotFoundError says so. Returns (mailbox, Get-Mailbox record).
        """
        guid, cached, record = self._resolve(identity)
        if record is None:
            record = self.lookup_inactive(guid)
        if record is None:
            # Past its last hold but not purged (delete-an-inactive-mailbox): kept, with its lifecycle state, so that
            # its content can still be restored (New-MailboxRestoreRequest -SourceMailbox takes it).
            record = self.lookup_soft_deleted(guid)
            if record is not None and not truthy(record.get("WasInactiveMailbox")):
                record = None
        if record is None:
            if cached is not None:
                self.db.delete_mailboxes([cached.identity])
            raise NotFoundError(
                f"'{identity}' is no longer an inactive mailbox in Exchange (recovered, released or purged)"
                + ("; it was removed from the cache" if cached is not None else ""),
                hint="run `imm sync` to refresh the cache",
            )
        return self.store(record, cached, sizes=full or cached is None), record

    def store(self, record: dict[str, Any], cached: InactiveMailbox | None, *, sizes: bool) -> InactiveMailbox:
        """The cache row for a Get-Mailbox record: statistics read when ``sizes`` (else the cached ones),
        Company/Department from Get-Recipient when nothing is cached; analysed and written."""
        from imm.domain.analyse import analyse
        from imm.domain.records import mailbox_from_records
        from imm.exchange import ExoNotFoundError

        ops = self.need_ops()
        guid = exchange_guid(record)
        stats = archive = recipient = None
        if sizes:
            stats = first(ops.get_mailbox_statistics(guid))
            if str(record.get("ArchiveStatus") or "").lower() == "active":
                try:
                    archive = first(ops.get_mailbox_statistics(guid, archive=True))
                except ExoNotFoundError:
                    archive = None
        if cached is None:
            try:
                recipient = first(ops.get_recipient(guid))
            except ExoNotFoundError:
                recipient = None
        tracking = None
        if truthy(record.get("DelayHoldApplied")) or truthy(record.get("DelayReleaseHoldApplied")):
            from imm.exchange.errors import AccessDeniedError, InvalidParameterError

            try:  # when the delay hold started (identify-a-hold article); else estimated from WhenChanged
                tracking = ops.export_hold_tracking(guid)
            except (ExoNotFoundError, AccessDeniedError, InvalidParameterError):
                tracking = None
        now = self.now()
        mailbox = mailbox_from_records(
            record, stats, archive, recipient, self.profile.org, None, self.profile.tenant_id, now, tracking
        )
        if cached is not None:
            if not sizes:  # sizes as the last sync read them
                mailbox.size_mb, mailbox.item_count = cached.size_mb, cached.item_count
                mailbox.archive_size_mb, mailbox.archive_item_count = cached.archive_size_mb, cached.archive_item_count
                mailbox.recoverable_items_mb, mailbox.deleted_item_count = (
                    cached.recoverable_items_mb,
                    cached.deleted_item_count,
                )
                mailbox.archive_recoverable_items_mb = cached.archive_recoverable_items_mb
                mailbox.archive_deleted_item_count = cached.archive_deleted_item_count
            mailbox.operating_company = mailbox.operating_company or cached.operating_company
            mailbox.department = mailbox.department or cached.department
            # what sync found about its addresses (a single read does not list the active recipients)
            mailbox.smtp_conflict, mailbox.upn_conflict = cached.smtp_conflict, cached.upn_conflict
        mailbox = analyse(
            mailbox,
            org_holds=self.org_holds(),
            policies=self.policies(),
            cost_model=self.profile.cost,
            now=now,
            leaver_retention_days=self.profile.leaver_retention_days,
        )
        if cached is not None and cached.identity != mailbox.identity:
            self.db.delete_mailboxes([cached.identity])
        self.db.upsert_mailboxes([mailbox])
        return mailbox


class ActionAuditor:
    """Every audit row an action writes, for one session (``audit`` carries the signed-in user)."""

    def __init__(self, audit: AuditLogger) -> None:
        self.audit = audit

    def begin(
        self,
        operation: OperationType,
        identity: str,
        details: dict[str, Any],
        context: Mapping[str, Any] | None,
    ) -> str:
        return self.audit.begin(operation, identity, {**(context or {}), **details})

    def finish(
        self,
        operation_id: str,
        result: AuditResult,
        details: dict[str, Any],
        context: Mapping[str, Any] | None,
        error: str | None = None,
    ) -> None:
        self.audit.finish(operation_id, result, {**(context or {}), **details}, error)

    def record_unchanged(
        self,
        preview: ActionPreview,
        result: AuditResult | str,
        error: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """One audit row for an attempt that changed nothing in Exchange: a what-if (``preview``), a preflight that
        blocked it (``failure``, naming the blockers) or a confirmation that was declined (``cancelled``)."""
        details: dict[str, Any] = {
            **(context or {}),
            "action": preview.action,
            "cmdlets": preview.cmdlets,  # as previewed: a password shows as ***
            "blockers": preview.blockers,
            "removes_last_hold": preview.removes_last_hold,
            "consequences": preview.consequences,
            "fingerprint": preview.fingerprint,
            "nothing_to_do": preview.nothing_to_do,
        }
        operation = (
            OperationType.REMOVE_ADDRESS if preview.action == "remove-x500" else ACTION_OPERATIONS[preview.action]
        )
        self.audit.log_operation(operation, preview.identity, details, AuditResult(result), error)

    def guarded(
        self,
        operation_id: str,
        context: Mapping[str, Any] | None,
        details: dict[str, Any],
        body: Callable[[], ActionResult],
    ) -> ActionResult:
        """Run ``body``; an Exchange failure about this mailbox becomes a ``failure`` row and a failed result;
        anything else (Ctrl+C, sign-in, store) gets its result row and is raised."""
        from imm.exchange import AmbiguousOutcomeError

        try:
            return body()
        except BaseException as exc:
            failure_details = {**details, **getattr(exc, "audit_details", {})}
            if isinstance(exc, ImmError):
                failure_details["error_code"] = exc.code
                extra = getattr(exc, "details", None)
                if callable(extra):
                    failure_details["exchange_error"] = extra()
            result = AuditResult.CANCELLED if is_cancellation(exc) else AuditResult.FAILURE
            error = error_text(exc)
            if isinstance(exc, AmbiguousOutcomeError):  # not reconciled: neither made nor not made is known
                result = AuditResult.UNKNOWN
                failure_details["outcome"] = "unknown"
            if isinstance(exc, KeyboardInterrupt):  # the call may already have reached Exchange
                result = AuditResult.UNKNOWN
                failure_details["outcome"] = "unknown"
                error = "interrupted by the user while the change was in progress: it may or may not have been made"
            try:
                self.finish(operation_id, result, failure_details, context, error)
            except Exception:  # never hide the action's own error behind an audit failure
                log.error("could not record the result of operation %s", operation_id, exc_info=True)
            if isinstance(exc, KeyboardInterrupt):
                interrupted = InterruptedChange(
                    error, hint="check the mailbox in Exchange (e.g. imm holds show ID --refresh) before trying again"
                )
                interrupted.audited = True  # type: ignore[attr-defined]
                raise interrupted from None
            if is_exchange_item_error(exc):
                raise ItemFailed(exc, operation_id) from exc
            exc.audited = True  # type: ignore[attr-defined]  # its result row is written: callers add none
            raise

    def after_change(self, read: Callable[[], Any], default: Any, details: dict[str, Any]) -> Any:
        """Run a read or cache update that follows a change Exchange already made. Its failure must not turn the
        change into a reported failure: it is noted in ``details['after_error']`` and ``default`` returned."""
        try:
            return read()
        except ImmError as exc:
            log.warning("after the change: %s", exc.message)
            details.setdefault("after_error", exc.message)
            return default
        except KeyboardInterrupt:  # the change is made: its success stands, only the read after it is cut short
            details.setdefault("after_error", "interrupted by the user while reading the mailbox after the change")
            return default

    def run(
        self,
        identity: str,
        action: str,
        operation_id: str,
        context: Mapping[str, Any] | None,
        intent: dict[str, Any],
        body: Callable[[], ActionResult],
    ) -> ActionResult:
        try:
            return self.guarded(operation_id, context, {"action": action}, body)
        except ItemFailed as failed:
            return ActionResult(
                identity,
                action,
                FAILED,
                failed.error.message if isinstance(failed.error, ImmError) else str(failed.error),
                operation_id,
                {
                    "error_code": getattr(failed.error, "code", "failed"),
                    "microsoft_message": getattr(failed.error, "microsoft_message", None),
                },
            )


def send_change(send: Callable[[], Any], took_effect: Callable[[], bool], what: str) -> bool:
    """Send one idempotent change (``send`` calls an ops method with ``once=True``) without resending it
    needlessly. After a lost reply (a reset or timeout after the request went out, a 5xx:
    AmbiguousOutcomeError) Exchange is read (``took_effect``): made → not sent again, True (confirmed after a
    lost reply); not made → sent again, up to LOST_REPLY_SENDS times in all. When the read itself fails, the
    outcome stays unknown and the ambiguous error is raised (audited ``unknown``; a bulk resume reconciles)."""
    from imm.exchange import AmbiguousOutcomeError

    for attempt in range(1, LOST_REPLY_SENDS + 1):
        try:
            send()
            return False
        except AmbiguousOutcomeError as exc:
            try:
                made = took_effect()
            except ImmError as read_error:
                log.warning("%s: %s; reading it back failed too: %s", what, exc.message, read_error.message)
                raise exc from None
            if made:
                log.warning("%s: %s; read back: it took effect, so it is not sent again", what, exc.message)
                return True
            if attempt == LOST_REPLY_SENDS:
                raise
            log.warning("%s: %s; read back: not made, so it is sent again", what, exc.message)
    return False  # not reached


class ActionService:
    """The base of each action service: the session's refresher, auditor and restore tracker, and
    ``execute(plan)``. A service implements ``_execute(plan, context, password)`` for the actions it owns."""

    def __init__(self, mailboxes: MailboxRefresher, auditor: ActionAuditor, restores: RestoreTracker) -> None:
        self.mailboxes = mailboxes
        self.auditor = auditor
        self.restores = restores

    @property
    def db(self) -> DatabaseManager:
        return self.mailboxes.db

    @property
    def ops(self) -> ExchangeOperations | None:
        return self.mailboxes.ops

    @property
    def profile(self) -> Profile:
        return self.mailboxes.profile

    def now(self) -> datetime:
        return self.mailboxes.now()

    def _execute(
        self, plan: ActionPreview, context: dict[str, Any] | None, password: str | None
    ) -> ActionResult:  # pragma: no cover - every service defines it
        raise NotImplementedError(plan.action)

    def execute(
        self,
        plan: ActionPreview,
        *,
        password: str | None = None,
        operation_context: Mapping[str, Any] | None = None,
        check: bool = True,
    ) -> ActionResult:
        """Run ``plan`` (a ``preview_*`` result) exactly as it was shown: its cmdlets, its parameters.

        With ``check`` (a person confirmed the plan some time ago) the mailbox is read from Exchange once more and
        the plan is refused, audited and nothing run, when the mailbox's state differs from the one the plan was
        computed from (:class:`PlanChangedError`, exit 5). Without it (the plan was computed just now, e.g. by a
        bulk item) no second read is made. ``password`` is recover's, never part of a plan.
        """
        if check and self.current_fingerprint(plan) != plan.fingerprint:
            self._refuse_changed(plan, operation_context)
        context = dict(operation_context) if operation_context is not None else None
        if plan.action == RECOVER and password is None:
            raise InputError("a recover needs the new user's password")
        return self._execute(plan, context, password)

    def current_fingerprint(self, plan: ActionPreview) -> str:
        """The fingerprint of what ``plan`` was computed from, read again (one Get-Mailbox)."""
        _, record = self.mailboxes.refresh(plan.identity)
        return fingerprint_of(record)

    def _refuse_changed(self, plan: ActionPreview, context: Mapping[str, Any] | None) -> None:
        label = plan.mailbox.get("primary_smtp") or plan.identity
        if plan.action in REQUEST_ACTIONS:
            request = plan.spec.get("request")
            blocker = (
                f"request-changed: restore request {request} changed status after the preview, so the confirmed "
                "plan no longer describes what would happen"
            )
            message = f"{plan.action} of restore request {request} was not run: the request changed since the preview"
        else:
            blocker = (
                f"mailbox-changed: {label} changed in Exchange after the preview was computed (holds, addresses or "
                "WhenChanged differ), so the confirmed plan no longer describes what would happen"
            )
            message = f"{plan.action} of {label} was not run: the mailbox changed since the preview"
        refused = ActionPreview(
            identity=plan.identity,
            action=plan.action,
            mailbox=plan.mailbox,
            summary=plan.summary,
            blockers=[blocker],
            removes_last_hold=plan.removes_last_hold,
            cmdlets=plan.cmdlets,
            fingerprint=plan.fingerprint,
        )
        error = PlanChangedError(
            message,
            blockers=[blocker],
            hint="preview it again and confirm the new plan",
        )
        self.auditor.record_unchanged(refused, AuditResult.FAILURE, error.message, context)
        error.audited = True  # type: ignore[attr-defined]
        raise error
