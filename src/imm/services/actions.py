"""Acting on one inactive mailbox: recover, restore (+ status), release holds, change the Litigation Hold duration.

Every action follows the same shape (design §7, §10, domain.md §4–§6, §8):

1. **Preflight** (``preview_*``): the mailbox is read again from Exchange (``Get-Mailbox -InactiveMailboxOnly
   -Identity <ExchangeGuid>``, statistics and recipient when the cache lacks them) and the cache updated; the
   blockers of :mod:`imm.domain.eligibility` stop the action with :class:`ActionBlockedError` (a
   :class:`imm.errors.BlockedError`, exit 5) naming each blocker and its documented alternative. A preview is
   computed by imm; ``-WhatIf`` is never sent to Exchange.
2. **Write-ahead audit**: a ``started`` row with the relevant state before (holds, addresses) and the caller's
   ``operation_context`` (e.g. ``{"job_id": …, "line": …}``), then the call, then ``success`` with the state after,
   ``failure`` with Microsoft's message, or ``cancelled`` on Ctrl+C.
3. **Cache follows**: recover removes the inactive mailbox from the cache; release refreshes it or removes it when it
   became soft-deleted; restore requests are tracked in ``restore_requests`` (:mod:`imm.services.restore_tracking`).

Results: an :class:`ActionResult` whose ``status`` is ``success``, ``failed`` (Exchange refused; the audit row has
Microsoft's message), ``skipped`` (nothing to do) or ``already-done`` (:meth:`MailboxActions.reconcile` found the
change already made). Sign-in, store and "outcome unknown" errors are raised, not returned.

Creating calls (New-Mailbox, New-MailboxRestoreRequest) are never repeated blindly: after an
:class:`imm.exchange.AmbiguousOutcomeError` imm reconciles first (does the new mailbox / the named request exist
now?), and repeats the call once only when reconciliation shows it did not happen.

Passwords for recover are passed through to the client's SecureString encryption and are never stored, logged or
written to an audit row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from imm.data.audit_logger import AuditResult, OperationType, error_text, is_cancellation
from imm.errors import ImmError, InputError, NotFoundError
from imm.services.action_support import (
    ACTIONS,
    ALREADY_DONE,
    DEFAULT_TARGET_ROOT_FOLDER,
    FAILED,
    LICENSE_REMINDER,
    RECOVER,
    REHOLD_REMINDER,
    RELEASE,
    RELEASE_TYPE_OF_KIND,
    RESTORE,
    SET_DURATION,
    SKIPPED,
    SUCCESS,
    ActionBlockedError,
    ActionPreview,
    ActionResult,
    ItemFailed,
    addresses,
    as_list,
    blocker_line,
    check_password,
    days_of,
    duration_text,
    exchange_guid,
    first,
    generate_password,
    hint_for,
    hold_expiry_text,
    is_exchange_item_error,
    is_soft_deleted,
    label_of,
    parse_days,
    plain,
    records,
    recover_changes,
    release_text,
    restore_blockers_for,
    state_of,
    summary_of,
    truthy,
)
from imm.services.restore_tracking import GONE, NOT_CREATED, SUBMITTING, RestoreTracker, TrackedRestore

if TYPE_CHECKING:
    from imm.config import Profile
    from imm.data.audit_logger import AuditLogger
    from imm.data.database import DatabaseManager
    from imm.data.models import InactiveMailbox
    from imm.domain.eligibility import Blocker, ReleasePlan
    from imm.domain.holds import Hold, PolicyInfo

__all__ = [
    "ACTIONS",
    "ActionBlockedError",
    "ActionPreview",
    "ActionResult",
    "MailboxActions",
    "check_password",
    "generate_password",
    "parse_days",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- service
class MailboxActions:
    """The single-mailbox actions of one signed-in session.

    ``ops`` is :class:`imm.exchange.cmdlets.ExchangeOperations` (``SessionManager.connection``); it may be None for
    the offline :meth:`holds_report`. ``audit`` should carry the signed-in user (``SessionManager.audit``).
    ``now`` fixes the clock (tests); by default the current time is read at each use.
    """

    def __init__(
        self,
        db: DatabaseManager,
        ops: Any,
        audit: AuditLogger,
        profile: Profile,
        *,
        now: datetime | None = None,
    ) -> None:
        self.db = db
        self.ops = ops
        self.audit = audit
        self.profile = profile
        self._now = now
        self._org_holds: list[str] | None = None
        self._policies: dict[str, PolicyInfo] | None = None
        self.restores = RestoreTracker(db)

    # ------------------------------------------------------------------------------------ time, org state
    def now(self) -> datetime:
        return self._now or datetime.now(UTC)

    def _need_ops(self) -> Any:
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
                rows = self.db.get_connection().execute("SELECT value FROM org_holds ORDER BY value")
                self._org_holds = [str(r[0]) for r in rows]
        return list(self._org_holds)

    def policies(self) -> dict[str, PolicyInfo]:
        """Retention and case hold policies as the last sync cached them (names, Preservation Lock, durations)."""
        if self._policies is None:
            from imm.domain.holds import HoldAction, PolicyInfo

            out: dict[str, PolicyInfo] = {}
            rows = self.db.get_connection().execute(
                "SELECT guid, name, kind, locked, enabled, retention_days, retention_action, scope_all FROM policies"
            )
            for row in rows:
                action: HoldAction | None
                try:
                    action = HoldAction(row[6]) if row[6] else None
                except ValueError:
                    action = None
                out[str(row[0])] = PolicyInfo(
                    guid=str(row[0]),
                    name=row[1] or "",
                    kind=row[2] or "retention",
                    locked=bool(row[3]),
                    enabled=bool(row[4]),
                    retention_days=row[5],
                    action=action,
                    scope_all=bool(row[7]),
                )
            self._policies = out
        return self._policies

    def decode(self, mailbox: InactiveMailbox) -> list[Hold]:
        from imm.domain.holds import decode_holds

        return decode_holds(mailbox, self.org_holds(), self.policies())

    # ------------------------------------------------------------------------------------------- refresh
    def _lookup_inactive(self, identity: str) -> dict[str, Any] | None:
        """The Get-Mailbox -InactiveMailboxOnly record of ``identity``, or None when Exchange has no such one."""
        from imm.exchange import ExoNotFoundError

        try:
            return first(self._need_ops().get_mailbox(identity, inactive=True))
        except ExoNotFoundError:
            return None

    def _lookup_active(self, identity: str) -> dict[str, Any] | None:
        """The Get-Mailbox record of an active mailbox, or None."""
        from imm.exchange import ExoNotFoundError

        try:
            return first(self._need_ops().get_mailbox(identity, inactive=False))
        except ExoNotFoundError:
            return None

    def _lookup_soft_deleted(self, identity: str) -> dict[str, Any] | None:
        from imm.exchange import ExoNotFoundError

        try:
            record = first(self._need_ops().get_mailbox(identity, soft_deleted=True))
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
        try:
            cached = self.db.find_mailbox(text)
            return cached.identity, cached, None
        except NotFoundError:
            pass
        if self.ops is None:
            raise NotFoundError(
                f"no inactive mailbox '{text}' in the cache", hint="run `imm sync`, or find it with `imm search TEXT`"
            )
        record = self._lookup_inactive(text)
        if record is None or not exchange_guid(record):
            raise NotFoundError(
                f"no inactive mailbox '{text}' in the cache or in Exchange",
                hint="check the identity (ExchangeGuid, address or name) with `imm search TEXT`, or run `imm sync`",
            )
        return exchange_guid(record), None, record

    def refresh_mailbox(self, identity: str, *, full: bool = False) -> tuple[InactiveMailbox, dict[str, Any]]:
        """Read one inactive mailbox again from Exchange, analyse it and update the cache.

        Get-Mailbox always; Get-MailboxStatistics (primary, archive) only when the cache has no copy yet or with
        ``full`` (a hold change does not change sizes: an inactive mailbox receives no mail), Get-Recipient only
        when the cache has no copy. When Exchange no longer has it as inactive, it leaves the cache and
        NotFoundError says so. Returns (mailbox, Get-Mailbox record).
        """
        guid, cached, record = self._resolve(identity)
        if record is None:
            record = self._lookup_inactive(guid)
        if record is None:
            if cached is not None:
                self.db.delete_mailboxes([cached.identity])
            raise NotFoundError(
                f"'{identity}' is no longer an inactive mailbox in Exchange (recovered, released or purged)"
                + ("; it was removed from the cache" if cached is not None else ""),
                hint="run `imm sync` to refresh the cache",
            )
        return self._store(record, cached, sizes=full or cached is None), record

    def _store(self, record: dict[str, Any], cached: InactiveMailbox | None, *, sizes: bool) -> InactiveMailbox:
        """The cache row for a Get-Mailbox record: statistics read when ``sizes`` (else the cached ones),
        Company/Department from Get-Recipient when nothing is cached; analysed and written."""
        from imm.domain.analyse import analyse
        from imm.domain.records import mailbox_from_records
        from imm.exchange import ExoNotFoundError

        ops = self._need_ops()
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
        now = self.now()
        mailbox = mailbox_from_records(
            record, stats, archive, recipient, self.profile.org, None, self.profile.tenant_id, now
        )
        if cached is not None:
            if not sizes:  # sizes as the last sync read them
                mailbox.size_mb, mailbox.item_count = cached.size_mb, cached.item_count
                mailbox.archive_size_mb, mailbox.archive_item_count = cached.archive_size_mb, cached.archive_item_count
            mailbox.operating_company = mailbox.operating_company or cached.operating_company
            mailbox.department = mailbox.department or cached.department
        mailbox = analyse(
            mailbox,
            org_holds=self.org_holds(),
            policies=self.policies(),
            cost_model=self.profile.cost,
            now=now,
        )
        if cached is not None and cached.identity != mailbox.identity:
            self.db.delete_mailboxes([cached.identity])
        self.db.upsert_mailboxes([mailbox])
        return mailbox

    # ---------------------------------------------------------------------------------------------- audit
    def _begin(
        self,
        operation: OperationType,
        identity: str,
        details: dict[str, Any],
        context: Mapping[str, Any] | None,
    ) -> str:
        return self.audit.begin(operation, identity, {**(context or {}), **details})

    def _finish(
        self,
        operation_id: str,
        result: AuditResult,
        details: dict[str, Any],
        context: Mapping[str, Any] | None,
        error: str | None = None,
    ) -> None:
        self.audit.finish(operation_id, result, {**(context or {}), **details}, error)

    def record_unchanged(self, preview: ActionPreview, result: AuditResult | str, error: str | None = None) -> None:
        """One audit row for an attempt that changed nothing in Exchange: a what-if (``preview``), a preflight that
        blocked it (``failure``, naming the blockers) or a confirmation that was declined (``cancelled``)."""
        details: dict[str, Any] = {
            "action": preview.action,
            "cmdlets": preview.cmdlets,  # as previewed: a password shows as ***
            "blockers": preview.blockers,
            "removes_last_hold": preview.removes_last_hold,
            "nothing_to_do": preview.nothing_to_do,
        }
        operation = _OPERATION.get(preview.action, OperationType.REMOVE_ADDRESS)
        self.audit.log_operation(operation, preview.identity, details, AuditResult(result), error)

    def _guarded(
        self,
        operation_id: str,
        context: Mapping[str, Any] | None,
        details: dict[str, Any],
        body: Callable[[], ActionResult],
    ) -> ActionResult:
        """Run ``body``; an Exchange failure about this mailbox becomes a ``failure`` row and a failed result;
        anything else (Ctrl+C, sign-in, store) gets its result row and is raised."""
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
            try:
                self._finish(operation_id, result, failure_details, context, error_text(exc))
            except Exception:  # never hide the action's own error behind an audit failure
                log.error("could not record the result of operation %s", operation_id, exc_info=True)
            if is_exchange_item_error(exc):
                raise ItemFailed(exc, operation_id) from exc
            raise

    def _after_change(self, read: Callable[[], Any], default: Any, details: dict[str, Any]) -> Any:
        """Run a read or cache update that follows a change Exchange already made. Its failure must not turn the
        change into a reported failure: it is noted in ``details['after_error']`` and ``default`` returned."""
        try:
            return read()
        except ImmError as exc:
            log.warning("after the change: %s", exc.message)
            details.setdefault("after_error", exc.message)
            return default

    # =========================================================================================== recover
    def preview_recover(self, identity: str, upn: str, name: str, display_name: str | None = None) -> ActionPreview:
        """Preflight of a recover: refresh, name/UPN conflicts, blockers (raises ActionBlockedError)."""
        upn = (upn or "").strip()
        name = (name or "").strip()
        if "@" not in upn or upn.startswith("@") or upn.endswith("@") or " " in upn:
            raise InputError(f"'{upn}' is not a valid user principal name (expected user@domain)")
        if not name:
            raise InputError("the new mailbox needs a --name")
        mailbox, record = self.refresh_mailbox(identity)
        name_taken, upn_taken = self._conflicts(mailbox, upn, name)
        from imm.domain.eligibility import recovery_blockers

        blockers = recovery_blockers(mailbox, name_taken=name_taken, upn_taken=upn_taken)
        # recovery_blockers names the inactive mailbox's own name/UPN; say which ones were asked for.
        lines = []
        for blocker in blockers:
            if blocker.code == "name-taken":
                lines.append(
                    f"name-taken: the name '{name}' is already used by another object (instead: {blocker.alternative})"
                )
            elif blocker.code == "upn-taken":
                lines.append(f"upn-taken: the user name '{upn}' is already in use (instead: {blocker.alternative})")
            else:
                lines.append(blocker_line(blocker))
        parameters: dict[str, Any] = {
            "InactiveMailbox": mailbox.identity,
            "Name": name,
            "MicrosoftOnlineServicesID": upn,
            "Password": "***",
            "ResetPasswordOnNextLogon": True,
        }
        if display_name:
            parameters["DisplayName"] = display_name
        preview = ActionPreview(
            identity=mailbox.identity,
            action=RECOVER,
            mailbox=summary_of(mailbox),
            summary=[
                f"Recover inactive mailbox {label_of(mailbox)} into a new active mailbox",
                f"New user: {upn} (name '{name}'" + (f", display name '{display_name}')" if display_name else ")"),
                "The inactive mailbox is consumed: it stops being inactive and leaves the cache",
                f"Holds now: {', '.join(mailbox.hold_types) or 'none'}",
            ],
            blockers=lines,
            consequence="Exchange creates a new user account that needs a licence; unlocked retention policies are "
            "replaced by Litigation Hold; Litigation Hold and In-Place holds are removed; RetentionHold and "
            "RetainDeletedItemsFor are set to 30 days",
            cmdlets=[{"cmdlet": "New-Mailbox", "endpoint": "exchange", "parameters": parameters}],
            notes=[LICENSE_REMINDER],
        )
        preview.mailbox["state"] = state_of(record)
        if blockers:
            raise ActionBlockedError(preview, [b.code for b in blockers], hint=hint_for(blockers))
        return preview

    def _conflicts(self, mailbox: InactiveMailbox, upn: str, name: str) -> tuple[bool, bool]:
        """(name taken, UPN taken) by another active object: Get-Mailbox / Get-Recipient on the UPN and the name."""
        name_taken = upn_taken = False
        for probe in dict.fromkeys([upn, name]):
            for found in self._probe(probe):
                if exchange_guid(found) == mailbox.identity and truthy(found.get("IsInactiveMailbox")):
                    continue  # the inactive mailbox itself
                if is_soft_deleted(found):
                    continue  # soft-deleted objects do not conflict
                if str(found.get("Name") or "").lower() == name.lower():
                    name_taken = True
                names = {str(found.get(k) or "").lower() for k in ("UserPrincipalName", "PrimarySmtpAddress")}
                names |= {a.split(":", 1)[-1] for a in addresses(found) if a.startswith("smtp:")}
                if upn.lower() in names:
                    upn_taken = True
        return name_taken, upn_taken

    def _probe(self, identity: str) -> list[dict[str, Any]]:
        """Active objects Exchange finds by ``identity`` (mailbox first, then any recipient); an ambiguous
        identity means several objects use it: they are all returned as conflicts."""
        from imm.exchange import AmbiguousIdentityError, ExoNotFoundError

        ops = self._need_ops()
        try:
            found = self._lookup_active(identity)
        except AmbiguousIdentityError:
            return [{"Name": identity, "UserPrincipalName": identity, "PrimarySmtpAddress": identity}]
        if found is not None:
            return [found]
        try:
            return records(ops.get_recipient(identity))
        except ExoNotFoundError:
            return []
        except AmbiguousIdentityError:
            return [{"Name": identity, "UserPrincipalName": identity, "PrimarySmtpAddress": identity}]

    def recover(
        self,
        identity: str,
        upn: str,
        name: str,
        password: str,
        *,
        display_name: str | None = None,
        operation_context: dict[str, Any] | None = None,
    ) -> ActionResult:
        """Recover the inactive mailbox into a new active mailbox (New-Mailbox -InactiveMailbox)."""
        check_password(password)
        preview = self.preview_recover(identity, upn, name, display_name)
        guid = preview.identity
        upn, name = upn.strip(), name.strip()
        before = preview.mailbox["state"]
        intent = {"action": RECOVER, "upn": upn, "name": name, "display_name": display_name, "before": before}
        operation_id = self._begin(OperationType.RECOVER_MAILBOX, guid, intent, operation_context)

        def body() -> ActionResult:
            reconciled, warnings = self._create_mailbox(guid, upn, name, password, display_name)
            notes: dict[str, Any] = {}
            self._after_change(lambda: self.db.delete_mailboxes([guid]), 0, notes)
            new_record = self._after_change(lambda: self._lookup_active(upn), None, notes)
            after = state_of(new_record) if new_record else {}
            changes = recover_changes(before, after) if new_record else []
            details: dict[str, Any] = {
                "action": RECOVER,
                "upn": upn,
                "name": name,
                "after": after,
                "changes": changes,
                "reconciled": reconciled,
                "exchange_warnings": warnings,
                **notes,
            }
            self._finish(operation_id, AuditResult.SUCCESS, details, operation_context)
            message = f"Recovered {preview.mailbox.get('primary_smtp') or guid} as {upn}"
            if reconciled:
                message += " (the call's reply was lost; the new mailbox was found, so it was not repeated)"
            return ActionResult(
                guid,
                RECOVER,
                SUCCESS,
                message,
                operation_id,
                {
                    "upn": upn,
                    "name": name,
                    "new_mailbox": after,
                    "changes": changes,
                    "reminders": [LICENSE_REMINDER, REHOLD_REMINDER],
                    "reconciled": reconciled,
                    "exchange_warnings": warnings,
                },
            )

        return self._run(guid, RECOVER, operation_id, operation_context, intent, body)

    def _create_mailbox(
        self, guid: str, upn: str, name: str, password: str, display_name: str | None
    ) -> tuple[bool, list[str]]:
        """New-Mailbox -InactiveMailbox; (True when an ambiguous failure was reconciled as done, Exchange's
        warnings)."""
        from imm.exchange import AmbiguousOutcomeError

        ops = self._need_ops()
        try:
            ops.new_mailbox_from_inactive(guid, name, upn, password, display_name=display_name)
            return False, self._exchange_warnings()
        except AmbiguousOutcomeError as exc:
            log.warning("recover %s: outcome unknown (%s); reconciling", guid, exc.message)
            state = self._recover_state(guid, upn)
            if state == "done":
                return True, []
            if state != "not-done":
                exc.audit_details = {"reconcile": state}  # type: ignore[attr-defined]
                raise
        # Reconciled: nothing happened, so the call is safe to make once more.
        ops.new_mailbox_from_inactive(guid, name, upn, password, display_name=display_name)
        return False, self._exchange_warnings()

    def _exchange_warnings(self) -> list[str]:
        """The warnings Exchange gave the last call on this thread (e.g. New-Mailbox's licence warning)."""
        backend = getattr(self.ops, "exchange", None)
        try:
            return [str(w) for w in getattr(backend, "last_warnings", None) or []]
        except Exception:  # a backend without warnings
            return []

    def _recover_state(self, guid: str, upn: str) -> str:
        """'done' (new mailbox with the UPN, inactive gone), 'not-done' (inactive still there, UPN free), or a
        word for anything in between."""
        from imm.exchange import AmbiguousIdentityError, ExchangeError

        try:
            new = self._lookup_active(upn)
            inactive = self._lookup_inactive(guid)
        except AmbiguousIdentityError:
            return "ambiguous"
        except ExchangeError as exc:
            return f"unknown ({exc.code})"
        if new is not None and inactive is None:
            return "done"
        if new is None and inactive is not None:
            return "not-done"
        if new is not None and inactive is not None:
            return "upn-used-by-another"
        return "inactive-gone-no-new-mailbox"

    # =========================================================================================== restore
    def preview_restore(
        self,
        identity: str,
        target: str,
        *,
        archive: bool = False,
        target_folder: str | None = None,
        target_archive: bool | None = None,
    ) -> ActionPreview:
        """Preflight of a restore into ``target``: refresh, the target's mailbox, statistics and restore requests,
        blockers (raises ActionBlockedError). ``archive``: restore the source's archive (-SourceIsArchive);
        ``target_archive`` (default: same as ``archive``): into the target's archive (-TargetIsArchive)."""
        plan = self._restore_plan(identity, target, archive, target_folder, target_archive)
        if plan.blockers:
            raise ActionBlockedError(plan.preview, [b.code for b in plan.blockers], hint=hint_for(plan.blockers))
        return plan.preview

    def _restore_plan(
        self,
        identity: str,
        target: str,
        archive: bool,
        target_folder: str | None,
        target_archive: bool | None,
    ) -> _RestorePlan:
        target = (target or "").strip()
        if not target:
            raise InputError("a restore needs a --target mailbox")
        to_archive = archive if target_archive is None else bool(target_archive)
        mailbox, record = self.refresh_mailbox(identity, full=True)  # the quota check needs the source's size
        ops = self._need_ops()
        target_record = self._lookup_active(target)
        view: dict[str, Any] | None = None
        if target_record is not None:
            target_guid = exchange_guid(target_record)
            view = dict(plain(target_record))
            stats = first(ops.get_mailbox_statistics(target_guid))
            view["TotalItemSize"] = (stats or {}).get("TotalItemSize")
            if to_archive and str(target_record.get("ArchiveStatus") or "").lower() == "active":
                archive_stats = first(ops.get_mailbox_statistics(target_guid, archive=True))
                view["ArchiveTotalItemSize"] = (archive_stats or {}).get("TotalItemSize")
            view["RestoreRequestCount"] = len(records(ops.get_restore_requests(target=target_guid)))
        blockers = restore_blockers_for(mailbox, view, archive=archive, target_archive=to_archive)
        folder = target_folder or (DEFAULT_TARGET_ROOT_FOLDER if to_archive and not archive else None)
        name = self._request_name(mailbox.identity, exchange_guid(target_record) if target_record else None)
        x500 = f"X500:{mailbox.legacy_exchange_dn}" if mailbox.legacy_exchange_dn else None
        has_x500 = x500 is not None and x500.lower() in addresses(target_record)
        target_label = (target_record or {}).get("PrimarySmtpAddress") or target
        cmdlets: list[dict[str, Any]] = []
        if target_record is None:
            x500 = None  # nothing will run: the target is missing
        if x500 and not has_x500:
            cmdlets.append(
                {
                    "cmdlet": "Set-Mailbox",
                    "endpoint": "exchange",
                    "parameters": {"Identity": exchange_guid(target_record) or target, "EmailAddresses": {"Add": x500}},
                }
            )
        request_params: dict[str, Any] = {
            "Name": name,
            "SourceMailbox": mailbox.identity,
            "TargetMailbox": exchange_guid(target_record) or target,
        }
        if archive:
            request_params["SourceIsArchive"] = True
        if to_archive:
            request_params["TargetIsArchive"] = True
        if folder:
            request_params["TargetRootFolder"] = folder
        if target_record is not None:
            cmdlets.append(
                {"cmdlet": "New-MailboxRestoreRequest", "endpoint": "exchange", "parameters": request_params}
            )
        source_part = "archive" if archive else "primary mailbox"
        target_part = "archive" if to_archive else "primary mailbox"
        summary = [
            f"Restore the {source_part} of inactive mailbox {label_of(mailbox)} into the {target_part} of "
            f"{target_label}",
            f"Request name: {name}" + (f"; into folder '{folder}'" if folder else ""),
            "The inactive mailbox stays as it is (a copy is made)",
        ]
        if x500 and not has_x500:
            summary.append(f"First adds {x500} to the target's addresses (remove it later with --remove-x500)")
        elif x500:
            summary.append("The target already has the source's X500 address")
        preview = ActionPreview(
            identity=mailbox.identity,
            action=RESTORE,
            mailbox=summary_of(mailbox),
            summary=summary,
            blockers=[blocker_line(b) for b in blockers],
            consequence="Exchange copies the items into the target over minutes to hours; follow it with "
            "`imm restore status`",
            cmdlets=cmdlets,
            notes=["Put the target on Litigation Hold or Retention Hold first if old restored items must not expire"],
        )
        preview.mailbox["state"] = state_of(record)
        return _RestorePlan(
            preview=preview,
            blockers=blockers,
            mailbox=mailbox,
            target_record=target_record,
            archive=archive,
            target_archive=to_archive,
            folder=folder,
            name=name,
            x500=x500,
            has_x500=has_x500,
        )

    def _request_name(self, source_guid: str, target_guid: str | None) -> str:
        """``imm-<first 8 hex of the source ExchangeGuid>-<yyyymmddHHMM>`` (seconds added if that name is used)."""
        now = self.now().astimezone(UTC)
        base = f"imm-{source_guid.replace('-', '')[:8]}-{now:%Y%m%d%H%M}"
        if target_guid and base.lower() in self.restores.names_for_target(target_guid):
            return f"{base}{now:%S}"
        return base

    def restore(
        self,
        identity: str,
        target: str,
        *,
        archive: bool = False,
        target_folder: str | None = None,
        target_archive: bool | None = None,
        operation_context: dict[str, Any] | None = None,
    ) -> ActionResult:
        """Add the source's LegacyExchangeDN as X500 on the target, then New-MailboxRestoreRequest (domain.md §5)."""
        plan = self._restore_plan(identity, target, archive, target_folder, target_archive)
        if plan.blockers:
            raise ActionBlockedError(plan.preview, [b.code for b in plan.blockers], hint=hint_for(plan.blockers))
        mailbox = plan.mailbox
        guid = mailbox.identity
        target_record = plan.target_record or {}
        target_guid = exchange_guid(target_record)
        intent = {
            "action": RESTORE,
            "target": target_guid,
            "target_smtp": target_record.get("PrimarySmtpAddress"),
            "request_name": plan.name,
            "source_is_archive": plan.archive,
            "target_is_archive": plan.target_archive,
            "target_root_folder": plan.folder,
            "x500": plan.x500,
            "before": {"source": plan.preview.mailbox["state"], "target": state_of(target_record)},
        }
        operation_id = self._begin(OperationType.RESTORE_MAILBOX, guid, intent, operation_context)
        tracked = self.restores.add(
            name=plan.name,
            source_identity=guid,
            source_smtp=mailbox.primary_smtp,
            source_legacy_dn=mailbox.legacy_exchange_dn,
            target=target,
            target_guid=target_guid,
            target_smtp=target_record.get("PrimarySmtpAddress"),
            source_is_archive=plan.archive,
            target_is_archive=plan.target_archive,
            target_root_folder=plan.folder,
            x500_address=plan.x500,
            operation_id=operation_id,
            job_id=(operation_context or {}).get("job_id"),
        )

        def body() -> ActionResult:
            ops = self._need_ops()
            added = False
            if plan.x500 and not plan.has_x500:
                ops.add_email_address(target_guid, plan.x500)
                added = True
                self.restores.update(tracked.id, x500_added=True)
            request, reconciled = self._create_request(plan, target_guid)
            self.restores.update(
                tracked.id,
                request_identity=request.get("Identity"),
                request_guid=request.get("RequestGuid"),
                status=str(request.get("Status") or "Queued"),
            )
            notes: dict[str, Any] = {}
            after_target = self._after_change(lambda: self._lookup_active(target_guid), None, notes)
            details = {
                "action": RESTORE,
                "request_name": plan.name,
                "request_identity": request.get("Identity"),
                "request_guid": request.get("RequestGuid"),
                "status": request.get("Status"),
                "x500_added": added,
                "reconciled": reconciled,
                "after": {"target": state_of(after_target)},
                **notes,
            }
            self._finish(operation_id, AuditResult.SUCCESS, details, operation_context)
            return ActionResult(
                guid,
                RESTORE,
                SUCCESS,
                f"Restore request {request.get('Identity') or plan.name} created "
                f"({request.get('Status') or 'Queued'}); follow it with `imm restore status {guid}`",
                operation_id,
                {k: v for k, v in details.items() if k != "after"} | {"target": target_guid},
            )

        result = self._run(guid, RESTORE, operation_id, operation_context, intent, body)
        if result.status == FAILED:  # Exchange refused: the request does not exist (an unknown outcome raises)
            self.restores.update(tracked.id, status=NOT_CREATED)
        return result

    def _create_request(self, plan: _RestorePlan, target_guid: str) -> tuple[dict[str, Any], bool]:
        """New-MailboxRestoreRequest; (the request record, True when an ambiguous failure was reconciled)."""
        from imm.exchange import AmbiguousOutcomeError

        ops = self._need_ops()

        def create() -> dict[str, Any]:
            return first(
                ops.new_restore_request(
                    plan.name,
                    plan.mailbox.identity,
                    target_guid,
                    source_is_archive=plan.archive,
                    target_is_archive=plan.target_archive,
                    target_root_folder=plan.folder,
                )
            ) or {"Name": plan.name}

        try:
            return create(), False
        except AmbiguousOutcomeError as exc:
            log.warning("restore %s: outcome unknown (%s); reconciling", plan.mailbox.identity, exc.message)
            found = self._find_request(target_guid, plan.name)
            if found is not None:
                return found, True
        return create(), False

    def _find_request(self, target_guid: str, name: str) -> dict[str, Any] | None:
        from imm.exchange import ExoNotFoundError

        try:
            requests = records(self._need_ops().get_restore_requests(target=target_guid, name=name))
        except ExoNotFoundError:
            return None
        for request in requests:
            if str(request.get("Name") or "").lower() == name.lower():
                return request
        return None

    def restore_status(self, identity: str | None = None) -> list[dict[str, Any]]:
        """The restore requests imm tracks (all, or those of a source mailbox / request name / target), each
        refreshed from Get-MailboxRestoreRequestStatistics unless already final. A request reaching Completed or
        Failed leaves a RESTORE_STATUS audit row."""
        rows = self._tracked(identity)
        out = []
        for row in rows:
            if not row.is_final and self.ops is not None:
                row = self._refresh_request(row)
            out.append(row.to_dict())
        return out

    def _tracked(self, identity: str | None) -> list[TrackedRestore]:
        if identity is None:
            return self.restores.find()
        rows = self.restores.find(identity)
        if not rows:
            try:
                guid = self.db.find_mailbox(identity).identity
                rows = self.restores.find(guid)
            except (NotFoundError, InputError):
                rows = []
        if not rows:
            raise NotFoundError(
                f"no restore request imm started for '{identity}'",
                hint="list them all with `imm restore status`",
            )
        return rows

    def _refresh_request(self, row: TrackedRestore) -> TrackedRestore:
        from imm.domain.parsing import parse_size
        from imm.exchange import ExoNotFoundError

        if row.status == SUBMITTING and not (row.request_guid or row.request_identity):
            found = self._find_request(row.target_guid, row.name) if row.target_guid else None
            if found is None:
                return row
            self.restores.update(row.id, request_identity=found.get("Identity"), request_guid=found.get("RequestGuid"))
            row = self.restores.get(row.id) or row
        try:
            stats = first(self._need_ops().get_restore_request_statistics(row.exchange_identity))
        except ExoNotFoundError:
            self.restores.update(row.id, status=GONE)
            return self.restores.get(row.id) or row
        if stats is None:
            return row
        status = str(stats.get("Status") or row.status)
        values: dict[str, Any] = {
            "status": status,
            "status_detail": stats.get("StatusDetail"),
            "percent_complete": int(stats.get("PercentComplete") or 0),
        }
        for key, column in (("BytesTransferred", "bytes_transferred"), ("EstimatedTransferSize", "estimated_bytes")):
            try:
                values[column] = parse_size(stats.get(key))
            except ImmError:
                pass
        if status.lower() in ("completed", "completedwithwarning", "failed"):
            values["completed_at"] = str(stats.get("CompletionTimestamp") or self.now().isoformat())
        self.restores.update(row.id, **values)
        updated = self.restores.get(row.id) or row
        if updated.is_final and not row.is_final:
            result = AuditResult.SUCCESS if updated.is_completed else AuditResult.FAILURE
            self.audit.log_operation(
                OperationType.RESTORE_STATUS,
                row.source_identity,
                {"request_name": row.name, "target": row.target_guid, "status": status, **values},
                result,
                None
                if updated.is_completed
                else f"restore request {row.name} ended {status}: "
                f"{stats.get('Message') or stats.get('StatusDetail') or ''}".strip(),
                operation_id=row.operation_id,
            )
        return updated

    def remove_x500(self, identity: str, target: str | None = None) -> ActionResult:
        """Remove the X500 address imm added to the target for a completed restore (Set-Mailbox -EmailAddresses
        @{Remove=…}). Blocked while the request is not complete; skipped when imm did not add it."""
        rows = [r for r in self._tracked(identity) if r.x500_address]
        if target:
            key = target.strip().lower()
            rows = [r for r in rows if key in {str(v or "").lower() for v in (r.target, r.target_smtp, r.target_guid)}]
        if not rows:
            raise NotFoundError(f"no restore with an X500 address for '{identity}'")
        row = rows[-1]
        if not row.is_final and self.ops is not None:
            row = self._refresh_request(row)
        label = row.source_smtp or row.source_identity
        if not row.x500_added:
            return ActionResult(
                row.source_identity,
                "remove-x500",
                SKIPPED,
                f"imm did not add {row.x500_address} to {row.target_smtp or row.target} "
                "(it was there before): left in place",
            )
        if row.x500_removed:
            return ActionResult(
                row.source_identity,
                "remove-x500",
                SKIPPED,
                f"{row.x500_address} was already removed from {row.target_smtp or row.target}",
            )
        if not row.is_completed:
            preview = ActionPreview(
                identity=row.source_identity,
                action="remove-x500",
                mailbox={"primary_smtp": label},
                blockers=[f"restore-not-complete: restore request {row.name} is {row.status}"],
            )
            raise ActionBlockedError(
                preview, ["restore-not-complete"], hint="wait for it: imm restore status ID --wait --remove-x500"
            )
        target_guid = row.target_guid or row.target
        address = row.x500_address or ""
        before = self._lookup_active(target_guid)
        intent = {
            "address": address,
            "request_name": row.name,
            "source": row.source_identity,
            "before": state_of(before),
        }
        operation_id = self._begin(OperationType.REMOVE_ADDRESS, target_guid, intent, None)

        def body() -> ActionResult:
            self._need_ops().remove_email_address(target_guid, address)
            notes: dict[str, Any] = {}
            self._after_change(lambda: self.restores.update(row.id, x500_removed=True), None, notes)
            after = self._after_change(lambda: self._lookup_active(target_guid), None, notes)
            details = {"address": address, "after": state_of(after), **notes}
            self._finish(operation_id, AuditResult.SUCCESS, details, None)
            return ActionResult(
                row.source_identity,
                "remove-x500",
                SUCCESS,
                f"Removed {row.x500_address} from {row.target_smtp or row.target}",
                operation_id,
            )

        return self._run(row.source_identity, "remove-x500", operation_id, None, intent, body)

    # ======================================================================================= release holds
    def preview_release(self, identity: str, kind: str, *, force_ediscovery: bool = False) -> ActionPreview:
        """Preflight of a hold release (raises ActionBlockedError for Preservation Lock, eDiscovery without
        ``force_ediscovery``, legacy In-Place and unknown holds). ``nothing_to_do`` when no such hold is on it."""
        plan, mailbox, record = self._release_plan(identity, kind, force_ediscovery)
        preview = self._release_preview(plan, mailbox, record, force_ediscovery)
        real = [b for b in plan.blockers if b.code != "nothing-to-release"]
        if real:
            raise ActionBlockedError(preview, [b.code for b in real], hint=hint_for(real))
        return preview

    def _release_plan(
        self, identity: str, kind: str, force: bool
    ) -> tuple[ReleasePlan, InactiveMailbox, dict[str, Any]]:
        from imm.domain.eligibility import RELEASE_TYPES, release_plan

        kind = (kind or "").strip().lower()
        if kind not in RELEASE_TYPES:
            raise InputError(f"unknown hold type '{kind}' (choose from: {', '.join(RELEASE_TYPES)})")
        mailbox, record = self.refresh_mailbox(identity)
        holds = self.decode(mailbox)
        return release_plan(mailbox, holds, kind, force=force), mailbox, record

    def _release_preview(
        self, plan: ReleasePlan, mailbox: InactiveMailbox, record: dict[str, Any], forced: bool
    ) -> ActionPreview:
        nothing = not plan.steps
        summary = [f"Release {plan.release_type} hold(s) of inactive mailbox {label_of(mailbox)}"]
        for step in plan.steps:
            summary.append(f"Releases: {step.hold.description}" + (f" ({step.note})" if step.note else ""))
        if plan.remaining:
            summary.append("Stays: " + "; ".join(h.description for h in plan.remaining))
        if nothing and not [b for b in plan.blockers if b.code != "nothing-to-release"]:
            summary.append(f"Nothing to do: the mailbox has no {plan.release_type} hold imm can release")
        notes = list(plan.notes)
        if forced and any(s.hold.kind.value == "ediscovery" for s in plan.steps):
            notes.append("eDiscovery case hold release forced: the case owner should agree (the case stays open)")
        preview = ActionPreview(
            identity=mailbox.identity,
            action=RELEASE,
            mailbox=summary_of(mailbox),
            summary=summary,
            blockers=[blocker_line(b) for b in plan.blockers if b.code != "nothing-to-release"],
            removes_last_hold=plan.removes_last_hold,
            consequence=plan.consequence,
            cmdlets=[
                {"cmdlet": s.cmdlet, "endpoint": s.endpoint, "parameters": dict(s.parameters), "hold": s.hold.raw}
                for s in plan.steps
            ],
            notes=notes,
            nothing_to_do=nothing,
        )
        preview.mailbox["state"] = state_of(record)
        preview.mailbox["release_type"] = plan.release_type
        return preview

    def release(
        self,
        identity: str,
        kind: str,
        *,
        force_ediscovery: bool = False,
        operation_context: dict[str, Any] | None = None,
    ) -> ActionResult:
        """Release the selected hold(s) with the cmdlet domain.md §6 gives for each (one REMOVE_HOLD operation)."""
        plan, mailbox, record = self._release_plan(identity, kind, force_ediscovery)
        preview = self._release_preview(plan, mailbox, record, force_ediscovery)
        real = [b for b in plan.blockers if b.code != "nothing-to-release"]
        if real:
            raise ActionBlockedError(preview, [b.code for b in real], hint=hint_for(real))
        guid = mailbox.identity
        if not plan.steps:
            return ActionResult(guid, RELEASE, SKIPPED, preview.summary[-1], None, {"release_type": plan.release_type})
        intent = {
            "action": RELEASE,
            "release_type": plan.release_type,
            "holds": [s.hold.raw for s in plan.steps],
            "cmdlets": preview.cmdlets,
            "removes_last_hold": plan.removes_last_hold,
            "force_ediscovery": force_ediscovery,
            "before": preview.mailbox["state"],
        }
        operation_id = self._begin(OperationType.REMOVE_HOLD, guid, intent, operation_context)

        def body() -> ActionResult:
            done: list[str] = []
            for step in plan.steps:
                try:
                    self._run_step(step.cmdlet, step.parameters)
                except BaseException as exc:
                    exc.audit_details = {"steps_done": done, "failed_step": step.hold.raw}  # type: ignore[attr-defined]
                    raise
                done.append(step.hold.raw)
            notes: dict[str, Any] = {}
            after, soft_deleted = self._after_change(lambda: self._after_release(guid), ({}, False), notes)
            details = {
                "action": RELEASE,
                "release_type": plan.release_type,
                "released": done,
                "soft_deleted": soft_deleted,
                "after": after,
                **notes,
            }
            self._finish(operation_id, AuditResult.SUCCESS, details, operation_context)
            released = ", ".join(step.hold.kind.value for step in plan.steps)
            message = f"Released {released} hold(s) of {mailbox.primary_smtp or guid}"
            if soft_deleted:
                retire = after.get("InactiveMailboxRetireTime")
                message += "; it was the last hold: the mailbox is now soft-deleted" + (
                    f" (retired {retire}; purged 183 days later)" if retire else " (purged 183 days later)"
                )
            return ActionResult(guid, RELEASE, SUCCESS, message, operation_id, details)

        return self._run(guid, RELEASE, operation_id, operation_context, intent, body)

    def _run_step(self, cmdlet: str, parameters: Mapping[str, Any]) -> Any:
        """One release step (cmdlet + parameters as data) through the typed operations."""
        ops = self._need_ops()
        params = dict(parameters)
        identity = params.pop("Identity")
        if cmdlet == "Set-Mailbox":
            params.pop("InactiveMailbox", None)
            return ops.set_inactive_mailbox(identity, **params)
        if cmdlet == "Set-RetentionCompliancePolicy":
            return ops.set_retention_policy(identity, **params)
        if cmdlet == "Set-CaseHoldPolicy":
            return ops.set_case_hold_policy(identity, **params)
        raise ImmError(f"imm has no call for {cmdlet}")

    def _after_release(self, guid: str) -> tuple[dict[str, Any], bool]:
        """(state after, became soft-deleted); the cache follows (refreshed, or removed when soft-deleted)."""
        record = self._lookup_inactive(guid)
        if record is not None:
            self._store(record, self.db.get_mailbox(guid), sizes=False)
            return state_of(record), False
        self.db.delete_mailboxes([guid])
        soft = self._lookup_soft_deleted(guid)
        return (state_of(soft) if soft else {"IsInactiveMailbox": False}), True

    # ====================================================================================== hold duration
    def preview_set_duration(self, identity: str, duration_days: int | None) -> ActionPreview:
        """Preflight of a Litigation Hold duration change (blocked when the mailbox has no Litigation Hold)."""
        if isinstance(duration_days, str):  # a plan's text: "365" or "unlimited"
            duration_days = parse_days(duration_days)
        if duration_days is not None and (
            isinstance(duration_days, bool) or not isinstance(duration_days, int) or duration_days < 1
        ):
            raise InputError("the hold duration must be a whole number of days, 1 or more (or unlimited)")
        mailbox, record = self.refresh_mailbox(identity)
        current = days_of(record.get("LitigationHoldDuration"))
        enabled = truthy(record.get("LitigationHoldEnabled"))
        summary = [
            f"Change the Litigation Hold duration of inactive mailbox {label_of(mailbox)}",
            f"From {duration_text(current)} to {duration_text(duration_days)}",
        ]
        if duration_days is not None and mailbox.when_soft_deleted is not None:
            ends = mailbox.when_soft_deleted + timedelta(days=duration_days)
            summary.append(f"Counted from the deletion date, it then runs out on {ends.date().isoformat()}")
        nothing = enabled and current == duration_days
        if nothing:
            summary.append(f"Nothing to do: the duration is already {duration_text(duration_days)}")
        value: Any = "Unlimited" if duration_days is None else duration_days
        preview = ActionPreview(
            identity=mailbox.identity,
            action=SET_DURATION,
            mailbox=summary_of(mailbox),
            summary=summary,
            consequence="Items older than the new duration are no longer held by Litigation Hold "
            "(other holds still apply); the mailbox is not deleted by this change",
            cmdlets=[]
            if nothing
            else [
                {
                    "cmdlet": "Set-Mailbox",
                    "endpoint": "exchange",
                    "parameters": {
                        "Identity": mailbox.identity,
                        "InactiveMailbox": True,
                        "LitigationHoldDuration": value,
                    },
                }
            ],
            nothing_to_do=nothing,
        )
        preview.mailbox["state"] = state_of(record)
        if not enabled:
            preview.blockers = [
                "no-litigation-hold: the mailbox is not on Litigation Hold, so it has no hold duration to change "
                "(instead: see its holds with imm holds show)"
            ]
            raise ActionBlockedError(preview, ["no-litigation-hold"])
        return preview

    def set_duration(
        self, identity: str, duration_days: int | None, operation_context: dict[str, Any] | None = None
    ) -> ActionResult:
        """Set-Mailbox -InactiveMailbox -LitigationHoldDuration <days|Unlimited> (None = unlimited)."""
        if isinstance(duration_days, str):
            duration_days = parse_days(duration_days)
        preview = self.preview_set_duration(identity, duration_days)
        guid = preview.identity
        if preview.nothing_to_do:
            return ActionResult(
                guid, SET_DURATION, SKIPPED, preview.summary[-1], None, {"duration_days": duration_days}
            )
        intent = {"action": SET_DURATION, "duration_days": duration_days, "before": preview.mailbox["state"]}
        operation_id = self._begin(OperationType.CHANGE_HOLD, guid, intent, operation_context)

        def body() -> ActionResult:
            value: Any = "Unlimited" if duration_days is None else duration_days
            self._need_ops().set_inactive_mailbox(guid, LitigationHoldDuration=value)
            notes: dict[str, Any] = {}
            record = self._after_change(lambda: self._lookup_inactive(guid), None, notes) or {}
            mailbox = None
            if record:
                cached = self.db.get_mailbox(guid)
                mailbox = self._after_change(lambda: self._store(record, cached, sizes=False), None, notes)
            details = {
                "action": SET_DURATION,
                "duration_days": duration_days,
                "after": state_of(record),
                **notes,
            }
            self._finish(operation_id, AuditResult.SUCCESS, details, operation_context)
            return ActionResult(
                guid,
                SET_DURATION,
                SUCCESS,
                f"Litigation Hold duration of {(mailbox.primary_smtp if mailbox else '') or guid} is now "
                f"{duration_text(duration_days)}",
                operation_id,
                details,
            )

        return self._run(guid, SET_DURATION, operation_id, operation_context, intent, body)

    # ========================================================================================= holds show
    def holds_report(self, identity: str, *, refresh: bool = False) -> dict[str, Any]:
        """Every hold on a mailbox: kind, raw value, meaning, policy name, lock, expiry and what releasing it
        takes. From the cache, or read again from Exchange first with ``refresh``."""
        from imm.domain.eligibility import release_plan

        if refresh:
            mailbox, _ = self.refresh_mailbox(identity)
        else:
            mailbox = self.db.find_mailbox(identity)
        holds = self.decode(mailbox)
        rows = []
        plans: dict[str, ReleasePlan] = {}
        for hold in holds:
            release_type = RELEASE_TYPE_OF_KIND.get(hold.kind.value)
            release = "nothing: it does not keep the mailbox inactive"
            if hold.preserves and release_type is None:
                release = "cannot be released by imm"
            if hold.preserves and release_type is not None:
                plan = plans.get(release_type)
                if plan is None:
                    plan = plans[release_type] = release_plan(mailbox, holds, release_type, force=True)
                release = release_text(mailbox, hold, plan, release_type)
            expires, why = hold_expiry_text(mailbox, hold, self.now())
            rows.append(
                {
                    "kind": hold.kind.value,
                    "raw": hold.raw,
                    "meaning": hold.description,
                    "policy": hold.policy_name,
                    "locked": hold.locked,
                    "preserves": hold.preserves,
                    "org_wide": hold.org_wide,
                    "expires": expires,
                    "expiry": why,
                    "release": release,
                }
            )
        return {
            "mailbox": summary_of(mailbox),
            "holds": rows,
            "holds_expire_on": mailbox.holds_expire_on,
            "expiry_reason": mailbox.expiry_reason,
            "releasable": mailbox.releasable,
            "source": "exchange" if refresh else "cache",
            "last_updated": mailbox.last_updated,
        }

    # ========================================================================================== reconcile
    def reconcile(
        self, action: str, params: Mapping[str, Any], *, operation_context: Mapping[str, Any] | None = None
    ) -> ActionResult | None:
        """Did ``action`` with ``params`` already take effect in Exchange? An ActionResult ``already-done`` when it
        did, None when it did not (or when that cannot be told; the caller then runs it, and Exchange refuses a
        duplicate with its own error). Used for items whose outcome is unknown (a crash or kill mid-call).

        ``params`` use the bulk plan's names: ``identity`` plus recover ``upn``/``name``; restore ``target``,
        ``archive``, ``target_folder``; release ``type`` (or ``kind``); set-duration ``days`` (int or "unlimited").
        A ``started`` audit row of this action left without a result (matching ``operation_context`` when given)
        gets its result row here.
        """
        action = (action or "").strip().lower()
        identity = str(params.get("identity") or "").strip()
        if action not in ACTIONS:
            raise InputError(f"unknown action '{action}' (choose from: {', '.join(ACTIONS)})")
        if not identity:
            raise InputError("reconcile needs the item's identity")
        guid = self._known_guid(identity)
        outcome: ActionResult | None
        if action == RECOVER:
            outcome = self._reconcile_recover(guid, str(params.get("upn") or ""))
        elif action == RESTORE:
            outcome = self._reconcile_restore(guid, str(params.get("target") or ""), operation_context)
        elif action == RELEASE:
            outcome = self._reconcile_release(guid, str(params.get("type") or params.get("kind") or ""))
        else:
            outcome = self._reconcile_duration(guid, params.get("days", params.get("duration_days")))
        self._close_orphan(action, guid, outcome, operation_context)
        return outcome

    def _known_guid(self, identity: str) -> str:
        try:
            return self.db.find_mailbox(identity).identity
        except (NotFoundError, InputError):
            pass
        text = identity.strip().strip("{}").lower()
        rows = self.audit.get_operations(identity=text, limit=1)
        if rows:
            return text
        record = self._lookup_inactive(identity) or self._lookup_soft_deleted(identity)
        return exchange_guid(record) or text

    def _reconcile_recover(self, guid: str, upn: str) -> ActionResult | None:
        if not upn:
            return None
        if self._recover_state(guid, upn) != "done":
            return None
        self.db.delete_mailboxes([guid])
        return ActionResult(guid, RECOVER, ALREADY_DONE, f"{guid} was already recovered as {upn}", None, {"upn": upn})

    def _reconcile_restore(self, guid: str, target: str, context: Mapping[str, Any] | None) -> ActionResult | None:
        target_record = self._lookup_active(target) if target else None
        target_guid = exchange_guid(target_record) if target_record else None
        row = self.restores.latest(guid, target_guid, job_id=(context or {}).get("job_id"))
        if row is None or not row.target_guid:
            return None
        found = self._find_request(row.target_guid, row.name)
        if found is None:
            return None
        self.restores.update(
            row.id,
            request_identity=found.get("Identity"),
            request_guid=found.get("RequestGuid"),
            status=str(found.get("Status") or "Queued"),
        )
        return ActionResult(
            guid,
            RESTORE,
            ALREADY_DONE,
            f"restore request {found.get('Identity') or row.name} already exists",
            row.operation_id,
            {"request_name": row.name, "target": row.target_guid},
        )

    def _reconcile_release(self, guid: str, kind: str) -> ActionResult | None:
        from imm.domain.eligibility import release_plan

        if not kind:
            return None
        try:
            mailbox, _ = self.refresh_mailbox(guid)
        except NotFoundError:
            if self._lookup_soft_deleted(guid) is not None:
                return ActionResult(
                    guid,
                    RELEASE,
                    ALREADY_DONE,
                    f"{guid} is no longer inactive: its last hold was already released",
                    None,
                    {"release_type": kind, "soft_deleted": True},
                )
            return None
        plan = release_plan(mailbox, self.decode(mailbox), kind, force=True)
        if plan.selected:
            return None
        return ActionResult(
            guid, RELEASE, ALREADY_DONE, f"{guid} has no {kind} hold left", None, {"release_type": kind}
        )

    def _reconcile_duration(self, guid: str, days: Any) -> ActionResult | None:
        wanted = parse_days(days)
        record = self._lookup_inactive(guid)
        if record is None or not truthy(record.get("LitigationHoldEnabled")):
            return None
        if days_of(record.get("LitigationHoldDuration")) != wanted:
            return None
        return ActionResult(
            guid,
            SET_DURATION,
            ALREADY_DONE,
            f"the Litigation Hold duration of {guid} is already {duration_text(wanted)}",
            None,
            {"duration_days": wanted},
        )

    def _close_orphan(
        self, action: str, guid: str, outcome: ActionResult | None, context: Mapping[str, Any] | None
    ) -> None:
        """Give a ``started`` row of this action that has no result (a crash) its result: success when the change
        is found in Exchange, cancelled when it is not (the caller then runs the action anew)."""
        operation = _OPERATION[action]
        orphans = [
            row
            for row in self.audit.get_operations(identity=guid, operation=operation, incomplete=True)
            if all(row.details.get(k) == v for k, v in (context or {}).items())
        ]
        if not orphans or (context is None and len(orphans) > 1):
            return
        row = orphans[-1]
        if row.operation_id is None:
            return
        if outcome is not None:
            outcome.operation_id = row.operation_id
            self.audit.finish(
                row.operation_id,
                AuditResult.SUCCESS,
                {**(context or {}), "action": action, "reconciled": True, **outcome.details},
            )
        else:
            self.audit.finish(
                row.operation_id,
                AuditResult.CANCELLED,
                {**(context or {}), "action": action, "reconciled": True},
                "interrupted before Exchange made the change (reconciled); run again",
            )

    # =========================================================================================== plumbing
    def _run(
        self,
        identity: str,
        action: str,
        operation_id: str,
        context: Mapping[str, Any] | None,
        intent: dict[str, Any],
        body: Callable[[], ActionResult],
    ) -> ActionResult:
        try:
            return self._guarded(operation_id, context, {"action": action}, body)
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


@dataclass
class _RestorePlan:
    preview: ActionPreview
    blockers: list[Blocker]
    mailbox: InactiveMailbox
    target_record: dict[str, Any] | None
    archive: bool
    target_archive: bool
    folder: str | None
    name: str
    x500: str | None
    has_x500: bool


_OPERATION = {
    RECOVER: OperationType.RECOVER_MAILBOX,
    RESTORE: OperationType.RESTORE_MAILBOX,
    RELEASE: OperationType.REMOVE_HOLD,
    SET_DURATION: OperationType.CHANGE_HOLD,
}
