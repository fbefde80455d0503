"""Following restore requests imm created: their status, and removing the X500 address once one completed."""

from __future__ import annotations

from typing import Any

from imm.data.audit_logger import AuditResult, OperationType
from imm.errors import ImmError, InputError, NotFoundError
from imm.services.action_base import ActionService, send_change
from imm.services.action_support import (
    REQUEST_ACTIONS,
    RESTORE_REMOVE,
    RESTORE_RESUME,
    RESTORE_SUSPEND,
    SKIPPED,
    SUCCESS,
    ActionBlockedError,
    ActionPreview,
    ActionResult,
    addresses,
    first,
    state_of,
)
from imm.services.restore import find_request
from imm.services.restore_tracking import GONE, NOT_CREATED, SUBMITTING, TrackedRestore

# cmdlet, what it does (summary), and the statuses it can act on (lower case; None = any that exists)
_REQUEST_CMDLETS: dict[str, tuple[str, str, frozenset[str] | None]] = {
    RESTORE_REMOVE: ("Remove-MailboxRestoreRequest", "Remove", None),
    RESTORE_SUSPEND: ("Suspend-MailboxRestoreRequest", "Suspend", frozenset({"queued", "inprogress", "suspended"})),
    RESTORE_RESUME: ("Resume-MailboxRestoreRequest", "Resume", frozenset({"suspended", "failed"})),
}
_RUNNING = {"queued": "running", "inprogress": "running"}
# the items a request could not copy, as Get-MailboxRestoreRequestStatistics counts them (domain.md §5)
_SKIPPED_COUNTS = ("BadItemsEncountered", "LargeItemsEncountered", "MissingItemsEncountered")


def _skipped(stats: dict[str, Any]) -> int | None:
    counts = []
    for key in _SKIPPED_COUNTS:
        try:
            counts.append(int(stats[key]))
        except (KeyError, TypeError, ValueError):
            continue
    return sum(counts) if counts else None


class RestoreRequestService(ActionService):
    """The restore requests imm started: status (Get-MailboxRestoreRequestStatistics), remove | suspend | resume
    (Remove-, Suspend-, Resume-MailboxRestoreRequest) and --remove-x500."""

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
            found = find_request(self.mailboxes.need_ops(), row.target_guid, row.name) if row.target_guid else None
            if found is None:
                return row
            self.restores.update(row.id, request_identity=found.get("Identity"), request_guid=found.get("RequestGuid"))
            row = self.restores.get(row.id) or row
        try:
            stats = first(self.mailboxes.need_ops().get_restore_request_statistics(row.exchange_identity))
        except ExoNotFoundError:
            self.restores.update(row.id, status=GONE)
            return self.restores.get(row.id) or row
        if stats is None:
            return row
        status = str(stats.get("Status") or row.status)
        values: dict[str, Any] = {
            "status": status,
            "status_detail": stats.get("StatusDetail"),
            "percent_complete": _percent(stats.get("PercentComplete")),
        }
        for key, column in (("BytesTransferred", "bytes_transferred"), ("EstimatedTransferSize", "estimated_bytes")):
            try:
                values[column] = parse_size(stats.get(key))
            except ImmError:
                pass
        if status.lower() in ("completed", "completedwithwarning", "failed"):
            values["completed_at"] = str(stats.get("CompletionTimestamp") or self.now().isoformat())
            # reviewed once the request completes (New-MailboxRestoreRequest.md -BadItemLimit; DCS article)
            score = stats.get("DataConsistencyScore")
            values["data_consistency_score"] = str(score) if score not in (None, "") else None
            values["skipped_items"] = _skipped(stats)
        self.restores.update(row.id, **values)
        updated = self.restores.get(row.id) or row
        if updated.is_final and not row.is_final:
            result = AuditResult.SUCCESS if updated.is_completed else AuditResult.FAILURE
            self.auditor.audit.log_operation(
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

    # ----------------------------------------------------------------- remove | suspend | resume a request
    def preview_request_action(self, action: str, request: str, *, comment: str | None = None) -> ActionPreview:
        """The plan of ``imm restore remove|suspend|resume REQUEST`` for one request imm started (its name,
        ``Alias\\Name``, RequestGuid, or the source mailbox when it has one request): read from Exchange once;
        blocked (exit 5) when the request's status does not allow it (suspend: not completed or failed; resume:
        suspended or failed, as the cmdlet reference says)."""
        if action not in REQUEST_ACTIONS:
            raise InputError(f"unknown restore request action '{action}'")
        rows = self._tracked(request)
        if len(rows) > 1:
            names = ", ".join(r.name for r in rows[:5])
            raise InputError(f"'{request}' names {len(rows)} restore requests ({names}): give the request's name")
        row = self._refresh_request(rows[0]) if rows[0].status not in (NOT_CREATED, GONE) else rows[0]
        cmdlet, verb, allowed = _REQUEST_CMDLETS[action]
        status = row.status.lower()
        parameters: dict[str, Any] = {"Identity": row.exchange_identity}
        if action == RESTORE_SUSPEND and comment:
            parameters["SuspendComment"] = comment
        preview = ActionPreview(
            identity=row.source_identity,
            action=action,
            mailbox={"primary_smtp": row.source_smtp or row.source_identity, "display_name": f"request {row.name}"},
            summary=[
                f"{verb} restore request {row.name} ({row.status}, {row.percent_complete}%) of "
                f"{row.source_smtp or row.source_identity} into {row.target_smtp or row.target}"
            ],
            consequence={
                RESTORE_REMOVE: "Exchange stops the request if it is running and deletes it; the items already "
                "copied stay in the target",
                RESTORE_SUSPEND: "The copy stops where it is until the request is resumed (imm restore resume)",
                RESTORE_RESUME: "The copy goes on (a failed request starts again)",
            }[action],
            cmdlets=[{"cmdlet": cmdlet, "endpoint": "exchange", "parameters": parameters}],
            fingerprint=_request_fingerprint(row),
            spec={"request_id": row.id, "request": row.name, "comment": comment},
        )
        preview.mailbox["state"] = {"request": row.name, "status": row.status}
        gone = status in (GONE.lower(), NOT_CREATED.lower())
        if gone or (allowed is not None and status not in allowed):
            what = {RESTORE_SUSPEND: "suspended", RESTORE_RESUME: "resumed", RESTORE_REMOVE: "removed"}[action]
            preview.blockers = [f"request-status: restore request {row.name} is {row.status}, so it cannot be {what}"]
            raise ActionBlockedError(preview, ["request-status"], hint="see it with `imm restore status`")
        return preview

    def current_fingerprint(self, plan: ActionPreview) -> str:
        if plan.action not in REQUEST_ACTIONS:
            return super().current_fingerprint(plan)
        row = self.restores.get(int(plan.spec["request_id"]))
        if row is None:
            return ""
        return _request_fingerprint(self._refresh_request(row))

    def _execute(
        self, plan: ActionPreview, context: dict[str, Any] | None, password: str | None = None
    ) -> ActionResult:
        return self._execute_request(plan, context)

    def _execute_request(self, plan: ActionPreview, context: dict[str, Any] | None) -> ActionResult:
        """Run the one request cmdlet of ``plan`` exactly as shown; the tracked row follows Exchange."""
        from imm.services.action_base import ACTION_OPERATIONS

        request_id = int(plan.spec["request_id"])
        [step] = plan.cmdlets
        intent = {"action": plan.action, "request_name": plan.spec["request"], "cmdlets": plan.cmdlets,
                  "fingerprint": plan.fingerprint, "before": plan.mailbox["state"]}  # fmt: skip
        operation_id = self.auditor.begin(ACTION_OPERATIONS[plan.action], plan.identity, intent, context)

        def body() -> ActionResult:
            ops = self.mailboxes.need_ops()
            identity = step["parameters"]["Identity"]

            def send() -> None:
                if plan.action == RESTORE_REMOVE:
                    ops.remove_restore_request(identity, once=True)
                elif plan.action == RESTORE_SUSPEND:
                    ops.suspend_restore_request(identity, step["parameters"].get("SuspendComment"), once=True)
                else:
                    ops.resume_restore_request(identity, once=True)

            notes: dict[str, Any] = {}
            # a lost reply is read back (is the request gone / suspended / running again?), not resent blindly
            if send_change(send, lambda: self._request_changed(plan.action, request_id), plan.action):
                notes["confirmed_after_lost_reply"] = True
            tracked = self.restores.get(request_id)
            status = ""
            if tracked is not None:
                if plan.action == RESTORE_RESUME:  # a failed row is final: read it as running again
                    self.restores.update(request_id, status="Queued", completed_at=None)
                    tracked = self.restores.get(request_id) or tracked
                before = tracked
                status = self.auditor.after_change(lambda: self._refresh_request(before), before, notes).status
            details = {"action": plan.action, "request_name": plan.spec["request"], "after": {"status": status},
                       **notes}  # fmt: skip
            self.auditor.finish(operation_id, AuditResult.SUCCESS, details, context)
            verb = {RESTORE_REMOVE: "Removed", RESTORE_SUSPEND: "Suspended", RESTORE_RESUME: "Resumed"}[plan.action]
            message = f"{verb} restore request {plan.spec['request']}" + (f" (now {status})" if status else "")
            if notes.get("confirmed_after_lost_reply"):
                message += " (confirmed after a lost reply)"
            return ActionResult(plan.identity, plan.action, SUCCESS, message, operation_id, details)

        return self.auditor.run(plan.identity, plan.action, operation_id, context, intent, body)

    def _request_changed(self, action: str, request_id: int) -> bool:
        """After a lost reply: does Exchange show the request ``action`` asked for (removed: not found;
        suspended: Suspended; resumed: no longer Suspended or Failed)?"""
        row = self.restores.get(request_id)
        if row is None:
            return False
        status = self._refresh_request(row).status.lower()
        if action == RESTORE_REMOVE:
            return status == GONE.lower()
        if action == RESTORE_SUSPEND:
            return status in ("suspended", "autosuspended")
        return status not in ("suspended", "autosuspended", "failed", GONE.lower())

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
        before = self.mailboxes.lookup_active(target_guid)
        intent = {
            "address": address,
            "request_name": row.name,
            "source": row.source_identity,
            "before": state_of(before),
        }
        operation_id = self.auditor.begin(OperationType.REMOVE_ADDRESS, target_guid, intent, None)

        def body() -> ActionResult:
            ops = self.mailboxes.need_ops()
            notes: dict[str, Any] = {}
            if send_change(  # a lost reply is read back (is the address gone from the target?), not resent
                lambda: ops.remove_email_address(target_guid, address, once=True),
                lambda: address.lower() not in addresses(self.mailboxes.lookup_active(target_guid)),
                f"remove-x500 {target_guid}",
            ):
                notes["confirmed_after_lost_reply"] = True
            self.auditor.after_change(lambda: self.restores.update(row.id, x500_removed=True), None, notes)
            after = self.auditor.after_change(lambda: self.mailboxes.lookup_active(target_guid), None, notes)
            details = {"address": address, "after": state_of(after), **notes}
            self.auditor.finish(operation_id, AuditResult.SUCCESS, details, None)
            return ActionResult(
                row.source_identity,
                "remove-x500",
                SUCCESS,
                f"Removed {row.x500_address} from {row.target_smtp or row.target}",
                operation_id,
            )

        return self.auditor.run(row.source_identity, "remove-x500", operation_id, None, intent, body)


def _request_fingerprint(row: TrackedRestore) -> str:
    """What a request plan depends on: which request, and whether it is running, suspended, failed or done (not
    its percentage, which moves by itself)."""
    status = row.status.lower()
    return f"{row.request_guid or row.name}:{_RUNNING.get(status, status)}"


def _percent(value: Any) -> int:
    """PercentComplete as a whole number; anything unreadable counts as 0 (it is only shown)."""
    try:
        return int(float(str(value or 0)))
    except ValueError:
        return 0
