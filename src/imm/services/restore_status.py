"""Following restore requests imm created: their status, and removing the X500 address once one completed."""

from __future__ import annotations

from typing import Any

from imm.data.audit_logger import AuditResult, OperationType
from imm.errors import ImmError, InputError, NotFoundError
from imm.services.action_support import (
    SKIPPED,
    SUCCESS,
    ActionBlockedError,
    ActionPreview,
    ActionResult,
    first,
    state_of,
)
from imm.services.restore import RestoreActions
from imm.services.restore_tracking import GONE, SUBMITTING, TrackedRestore


class RestoreStatusActions(RestoreActions):
    """Restore status (Get-MailboxRestoreRequestStatistics) and --remove-x500."""

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
            "percent_complete": _percent(stats.get("PercentComplete")),
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


def _percent(value: Any) -> int:
    """PercentComplete as a whole number; anything unreadable counts as 0 (it is only shown)."""
    try:
        return int(float(str(value or 0)))
    except ValueError:
        return 0
