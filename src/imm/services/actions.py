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

:class:`MailboxActions` is a facade composed of a few services, each an object of its own over the session's one
:class:`~imm.services.action_base.MailboxRefresher` (reads a mailbox, updates the cache) and one
:class:`~imm.services.action_base.ActionAuditor` (writes every audit row):
:class:`~imm.services.recover.RecoverService`, :class:`~imm.services.restore.RestoreService` (creating restore
requests), :class:`~imm.services.restore_status.RestoreRequestService` (status, remove | suspend | resume,
``remove_x500``), :class:`~imm.services.holds.HoldsService` (release, set-duration, ``holds_report``) and
:class:`~imm.services.reconcile.Reconciler`. ``execute(plan)`` hands a plan to the service of its action. Results,
passwords and record readers are in :mod:`imm.services.action_support`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imm.services.action_base import ActionAuditor, MailboxRefresher
from imm.services.action_support import (
    ACTIONS,
    RECOVER,
    REQUEST_ACTIONS,
    RESTORE,
    ActionBlockedError,
    ActionPreview,
    ActionResult,
    check_password,
    generate_password,
    parse_days,
)
from imm.services.holds import HoldsService
from imm.services.reconcile import Reconciler
from imm.services.recover import RecoverService
from imm.services.restore import RestoreService
from imm.services.restore_status import RestoreRequestService
from imm.services.restore_tracking import RestoreTracker

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from imm.config import Profile
    from imm.data.audit_logger import AuditLogger
    from imm.data.database import DatabaseManager
    from imm.exchange.cmdlets import ExchangeOperations
    from imm.services.action_base import ActionService

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


class MailboxActions:
    """The single-mailbox actions of one signed-in session, composed of one service per kind of change.

    ``ops`` is :class:`imm.exchange.cmdlets.ExchangeOperations` (``SessionManager.connection``); it may be None for
    the offline :meth:`holds_report`. ``audit`` should carry the signed-in user (``SessionManager.audit``).
    ``now`` fixes the clock (tests); by default the current time is read at each use.
    """

    def __init__(
        self,
        db: DatabaseManager,
        ops: ExchangeOperations | None,
        audit: AuditLogger,
        profile: Profile,
        *,
        now: datetime | None = None,
    ) -> None:
        self.mailboxes = MailboxRefresher(db, ops, profile, now=now)
        self.auditor = ActionAuditor(audit)
        self.restores = RestoreTracker(db)
        parts = (self.mailboxes, self.auditor, self.restores)
        self.recovery = RecoverService(*parts)
        self.restoring = RestoreService(*parts)
        self.requests = RestoreRequestService(*parts)
        self.holds = HoldsService(*parts)
        self.reconciler = Reconciler(*parts, recovery=self.recovery)
        # each public action is its service's own method (one signature, typed where it is defined)
        self.resolve = self.mailboxes.resolve
        self.refresh_mailbox = self.mailboxes.refresh
        self.record_unchanged = self.auditor.record_unchanged
        self.preview_recover = self.recovery.preview_recover
        self.recover = self.recovery.recover
        self.preview_restore = self.restoring.preview_restore
        self.restore = self.restoring.restore
        self.restore_status = self.requests.restore_status
        self.preview_request_action = self.requests.preview_request_action
        self.remove_x500 = self.requests.remove_x500
        self.preview_release = self.holds.preview_release
        self.release = self.holds.release
        self.cached_release_consequences = self.holds.cached_release_consequences
        self.preview_set_duration = self.holds.preview_set_duration
        self.set_duration = self.holds.set_duration
        self.holds_report = self.holds.holds_report
        self.reconcile = self.reconciler.reconcile

    # ---------------------------------------------------------------------------------- the session's parts
    @property
    def db(self) -> DatabaseManager:
        return self.mailboxes.db

    @property
    def ops(self) -> ExchangeOperations | None:
        return self.mailboxes.ops

    @property
    def audit(self) -> AuditLogger:
        return self.auditor.audit

    @property
    def profile(self) -> Profile:
        return self.mailboxes.profile

    def now(self) -> datetime:
        return self.mailboxes.now()

    # -------------------------------------------------------------------------------------- plan → execute
    def service_for(self, action: str) -> ActionService:
        """The service that owns ``action``'s plans."""
        if action == RECOVER:
            return self.recovery
        if action == RESTORE:
            return self.restoring
        if action in REQUEST_ACTIONS:
            return self.requests
        return self.holds

    def execute(
        self,
        plan: ActionPreview,
        *,
        password: str | None = None,
        operation_context: Mapping[str, Any] | None = None,
        check: bool = True,
    ) -> ActionResult:
        """Run ``plan`` exactly as shown, through the service of its action (see
        :meth:`imm.services.action_base.ActionService.execute`)."""
        return self.service_for(plan.action).execute(
            plan, password=password, operation_context=operation_context, check=check
        )
