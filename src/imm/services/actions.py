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

The code lives in sibling modules, one per concern, composed here into :class:`MailboxActions`:
:mod:`imm.services.action_base` (session state, lookups, refresh, audit plumbing, ``record_unchanged``),
:mod:`imm.services.recover`, :mod:`imm.services.restore` (creating restore requests),
:mod:`imm.services.restore_status` (status, ``remove_x500``), :mod:`imm.services.holds` (release, set-duration,
``holds_report``) and :mod:`imm.services.reconcile`. Results, passwords and record readers are in
:mod:`imm.services.action_support`.
"""

from __future__ import annotations

from imm.services.action_support import (
    ACTIONS,
    ActionBlockedError,
    ActionPreview,
    ActionResult,
    check_password,
    generate_password,
    parse_days,
)
from imm.services.holds import HoldActions
from imm.services.reconcile import ReconcileActions
from imm.services.restore_status import RestoreStatusActions

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


class MailboxActions(ReconcileActions, RestoreStatusActions, HoldActions):
    """The single-mailbox actions of one signed-in session.

    ``ops`` is :class:`imm.exchange.cmdlets.ExchangeOperations` (``SessionManager.connection``); it may be None for
    the offline :meth:`holds_report`. ``audit`` should carry the signed-in user (``SessionManager.audit``).
    ``now`` fixes the clock (tests); by default the current time is read at each use.
    """
