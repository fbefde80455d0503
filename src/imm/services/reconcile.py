"""Reconcile: did an action whose outcome is unknown (a crash or kill mid-call) already take effect in Exchange?

Used by bulk jobs on resume; also gives an orphaned ``started`` audit row its result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imm.data.audit_logger import AuditResult
from imm.errors import InputError, NotFoundError
from imm.services.action_base import ACTION_OPERATIONS, ActionAuditor, ActionService, MailboxRefresher
from imm.services.action_support import (
    ACTIONS,
    ALREADY_DONE,
    RECOVER,
    RELEASE,
    RESTORE,
    SET_DURATION,
    ActionResult,
    days_of,
    duration_text,
    exchange_guid,
    parse_days,
    truthy,
)
from imm.services.recover import RecoverService
from imm.services.restore import find_request
from imm.services.restore_tracking import RestoreTracker


class Reconciler(ActionService):
    """Tell whether an interrupted action already happened (over the recover service's reading of a recover)."""

    def __init__(
        self, mailboxes: MailboxRefresher, auditor: ActionAuditor, restores: RestoreTracker, recovery: RecoverService
    ) -> None:
        super().__init__(mailboxes, auditor, restores)
        self.recovery = recovery

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
        rows = self.auditor.audit.get_operations(identity=text, limit=1)
        if rows:
            return text
        record = self.mailboxes.lookup_inactive(identity) or self.mailboxes.lookup_soft_deleted(identity)
        return exchange_guid(record) or text

    def _reconcile_recover(self, guid: str, upn: str) -> ActionResult | None:
        if not upn:
            return None
        if self.recovery.recover_state(guid, upn) != "done":
            return None
        self.db.delete_mailboxes([guid])
        return ActionResult(guid, RECOVER, ALREADY_DONE, f"{guid} was already recovered as {upn}", None, {"upn": upn})

    def _reconcile_restore(self, guid: str, target: str, context: Mapping[str, Any] | None) -> ActionResult | None:
        target_record = self.mailboxes.lookup_active(target) if target else None
        target_guid = exchange_guid(target_record) if target_record else None
        row = self.restores.latest(guid, target_guid, job_id=(context or {}).get("job_id"))
        if row is None or not row.target_guid:
            return None
        found = find_request(self.mailboxes.need_ops(), row.target_guid, row.name)
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
            mailbox, _ = self.mailboxes.refresh(guid)
        except NotFoundError:
            if self.mailboxes.lookup_soft_deleted(guid) is not None:
                return ActionResult(
                    guid,
                    RELEASE,
                    ALREADY_DONE,
                    f"{guid} is no longer inactive: its last hold was already released",
                    None,
                    {"release_type": kind, "soft_deleted": True},
                )
            return None
        plan = release_plan(mailbox, self.mailboxes.decode(mailbox), kind, force=True)
        if plan.selected:
            return None
        return ActionResult(
            guid, RELEASE, ALREADY_DONE, f"{guid} has no {kind} hold left", None, {"release_type": kind}
        )

    def _reconcile_duration(self, guid: str, days: Any) -> ActionResult | None:
        wanted = parse_days(days)
        record = self.mailboxes.lookup_inactive(guid)
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
        operation = ACTION_OPERATIONS[action]
        orphans = [
            row
            for row in self.auditor.audit.get_operations(identity=guid, operation=operation, incomplete=True)
            if all(row.details.get(k) == v for k, v in (context or {}).items())
        ]
        if not orphans or (context is None and len(orphans) > 1):
            return
        row = orphans[-1]
        if row.operation_id is None:
            return
        if outcome is not None:
            outcome.operation_id = row.operation_id
            self.auditor.audit.finish(
                row.operation_id,
                AuditResult.SUCCESS,
                {**(context or {}), "action": action, "reconciled": True, **outcome.details},
            )
        else:
            self.auditor.audit.finish(
                row.operation_id,
                AuditResult.CANCELLED,
                {**(context or {}), "action": action, "reconciled": True},
                "interrupted before Exchange made the change (reconciled); run again",
            )
