"""Holds: release a hold type (domain.md §6), change the Litigation Hold duration, and the holds report (with
``RELEASE_TYPE_OF_KIND`` and the texts saying when each hold runs out and what releasing it takes)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from imm.data.audit_logger import AuditResult, OperationType
from imm.errors import ImmError
from imm.services.action_base import ActionService, log, send_change
from imm.services.action_support import (
    CONSEQUENCE_WORDS,
    EDISCOVERY,
    LAST_HOLD,
    RELEASE,
    SET_DURATION,
    SKIPPED,
    SUCCESS,
    UNLIMITED,
    ActionBlockedError,
    ActionPreview,
    ActionResult,
    blocker_line,
    days_of,
    duration_text,
    fingerprint_of,
    hint_for,
    label_of,
    parse_days,
    state_of,
    summary_of,
    truthy,
)

if TYPE_CHECKING:
    from imm.data.models import InactiveMailbox
    from imm.domain.eligibility import ReleasePlan
    from imm.domain.holds import Hold

# Which `holds release --type` releases a hold of each kind.
RELEASE_TYPE_OF_KIND = {
    "litigation": "litigation",
    "delay": "delay",
    "delay-release": "delay-release",
    "label": "label",
    "org-policy": "org-policy",
    "retention-policy": "policy",
    "skype-policy": "policy",
    "ediscovery": "ediscovery",
    "inplace": "all-unlocked",
    "unknown": "all-unlocked",
}


def release_consequences(plan: ReleasePlan) -> list[str]:
    """What of a release plan needs a typed confirmation: ``last-hold`` (a delay hold, then soft deletion),
    ``unlimited-litigation`` (an Unlimited Litigation Hold is released), ``ediscovery`` (a case hold)."""
    out = [LAST_HOLD] if plan.removes_last_hold else []
    for step in plan.steps:
        kind = step.hold.kind.value
        if kind == "litigation" and step.hold.duration_days is None and UNLIMITED not in out:
            out.append(UNLIMITED)
        if kind == "ediscovery" and EDISCOVERY not in out:
            out.append(EDISCOVERY)
    return out


class HoldsService(ActionService):
    """Release holds, set the Litigation Hold duration, report every hold on a mailbox."""

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
        from imm.domain.eligibility import check_release_type, release_plan

        kind = check_release_type(kind)
        mailbox, record = self.mailboxes.refresh(identity)
        holds = self.mailboxes.decode(mailbox)
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
        preview.fingerprint = fingerprint_of(record)
        preview.spec = {"type": plan.release_type, "force_ediscovery": forced}
        preview.computed = (plan, mailbox)
        preview.consequences = release_consequences(plan)
        return preview

    def cached_release_consequences(self, identity: str, kind: str) -> list[str]:
        """The consequences a release would have by the cached copy of the mailbox (no Exchange call): what a
        bulk run counts and confirms before it starts. Empty when the cache does not have the mailbox."""
        from imm.domain.eligibility import check_release_type, release_plan

        mailbox = self.db.get_mailbox(identity)
        if mailbox is None:
            return []
        return release_consequences(release_plan(mailbox, self.mailboxes.decode(mailbox), check_release_type(kind)))

    def release(
        self,
        identity: str,
        kind: str,
        *,
        force_ediscovery: bool = False,
        operation_context: dict[str, Any] | None = None,
        allowed_consequences: Collection[str] | None = None,
    ) -> ActionResult:
        """Release the selected hold(s) with the cmdlet domain.md §6 gives for each (one REMOVE_HOLD operation):
        the plan computed now, executed at once (one read of the mailbox). With ``allowed_consequences`` (a bulk
        item: what the person confirmed for it), a plan with any other consequence is blocked, not run."""
        preview = self.preview_release(identity, kind, force_ediscovery=force_ediscovery)
        unconfirmed = [c for c in preview.consequences if c not in (allowed_consequences or ())]
        if allowed_consequences is not None and unconfirmed and not preview.nothing_to_do:
            preview.blockers = [
                f"unconfirmed-consequence: this release would {CONSEQUENCE_WORDS[c]}, which was not confirmed for "
                "this row (instead: run the plan again and confirm what it shows)"
                for c in unconfirmed
            ]
            raise ActionBlockedError(preview, ["unconfirmed-consequence"], hint="run the plan again to confirm it")
        if preview.nothing_to_do:
            message = preview.summary[-1]
            self.auditor.record_unchanged(preview, AuditResult.SKIPPED, message, operation_context)
            return ActionResult(
                preview.identity, RELEASE, SKIPPED, message, None, {"release_type": preview.spec["type"]}
            )
        return self.execute(preview, operation_context=operation_context, check=False)

    def _execute(
        self, preview: ActionPreview, operation_context: dict[str, Any] | None, password: str | None = None
    ) -> ActionResult:
        if preview.action == SET_DURATION:
            return self._execute_set_duration(preview, operation_context)
        return self._execute_release(preview, operation_context)

    def _execute_release(self, preview: ActionPreview, operation_context: dict[str, Any] | None) -> ActionResult:
        """Run the release steps of ``preview`` exactly as shown (one REMOVE_HOLD operation)."""
        plan, mailbox = preview.computed
        guid = mailbox.identity
        intent = {
            "action": RELEASE,
            "release_type": preview.spec["type"],
            "holds": [c["hold"] for c in preview.cmdlets],
            "cmdlets": preview.cmdlets,
            "removes_last_hold": preview.removes_last_hold,
            "consequences": preview.consequences,
            "force_ediscovery": preview.spec["force_ediscovery"],
            "fingerprint": preview.fingerprint,
            "before": preview.mailbox["state"],
        }
        operation_id = self.auditor.begin(OperationType.REMOVE_HOLD, guid, intent, operation_context)

        def body() -> ActionResult:
            from imm.exchange import ExoNotFoundError

            done: list[str] = []
            confirmed: list[str] = []
            for step in preview.cmdlets:
                hold = str(step["hold"])
                try:
                    # a lost reply is read back (is the hold gone?), not resent blindly
                    if send_change(
                        lambda step=step: self._run_step(step["cmdlet"], step["parameters"]),  # type: ignore[misc]
                        lambda hold=hold: self._hold_gone(guid, hold),  # type: ignore[misc]
                        f"release {guid} ({step['cmdlet']})",
                    ):
                        confirmed.append(hold)
                except ExoNotFoundError as exc:
                    # a 404 for a mailbox that this change made soft-deleted: what is true is read, not guessed
                    if not self._hold_gone(guid, hold):
                        exc.audit_details = {"steps_done": done, "failed_step": hold}  # type: ignore[attr-defined]
                        raise
                    log.warning("release %s: %s; the hold is gone, so the step took effect", guid, exc.message)
                    confirmed.append(hold)
                except BaseException as exc:
                    exc.audit_details = {"steps_done": done, "failed_step": step["hold"]}  # type: ignore[attr-defined]
                    raise
                done.append(step["hold"])
            notes: dict[str, Any] = {}
            if confirmed:
                notes["confirmed_after_lost_reply"] = confirmed
            after, soft_deleted = self.auditor.after_change(lambda: self._after_release(guid), ({}, False), notes)
            details = {
                "action": RELEASE,
                "release_type": preview.spec["type"],
                "released": done,
                "soft_deleted": soft_deleted,
                "after": after,
                **notes,
            }
            self.auditor.finish(operation_id, AuditResult.SUCCESS, details, operation_context)
            released = ", ".join(step.hold.kind.value for step in plan.steps)
            message = f"Released {released} hold(s) of {mailbox.primary_smtp or guid}"
            if confirmed:
                message += " (confirmed after a lost reply)"
            if soft_deleted:
                retire = after.get("InactiveMailboxRetireTime")
                message += "; it was the last hold: the mailbox is now soft-deleted" + (
                    f" (retired {retire}; purged 183 days later)" if retire else " (purged 183 days later)"
                )
                message += "; its content can be restored with imm restore until then"
            elif plan.removes_last_hold:
                stored = self.db.get_mailbox(guid)
                until = stored.delay_hold_until if stored is not None else None
                purge = stored.purge_on if stored is not None else None
                message += (
                    "; it was the last hold: Exchange keeps the mailbox under a delay hold"
                    + (f" until ≈ {until.date().isoformat()}" if until else "")
                    + ", then soft-deletes it"
                    + (f"; purged from ≈ {purge.date().isoformat()}" if purge else "")
                    + ", restorable with imm restore until then"
                )
            return ActionResult(guid, RELEASE, SUCCESS, message, operation_id, details)

        return self.auditor.run(guid, RELEASE, operation_id, operation_context, intent, body)

    def _hold_gone(self, guid: str, raw: str) -> bool:
        """After a lost reply: is the hold ``raw`` no longer on the mailbox (or did the mailbox become
        soft-deleted, which only the release of its last hold does)? Read from Exchange."""
        from imm.errors import NotFoundError as Gone

        try:
            mailbox, _ = self.mailboxes.refresh(guid)
        except Gone:
            return self.mailboxes.lookup_soft_deleted(guid) is not None
        return raw not in {hold.raw for hold in self.mailboxes.decode(mailbox) if hold.preserves}

    def _run_step(self, cmdlet: str, parameters: Mapping[str, Any]) -> Any:
        """One change step (cmdlet + parameters as data) through the typed operations, sent once: a lost reply
        raises AmbiguousOutcomeError for :meth:`send_change` to read back."""
        ops = self.mailboxes.need_ops()
        params = dict(parameters)
        identity = params.pop("Identity")
        if cmdlet == "Set-Mailbox":
            params.pop("InactiveMailbox", None)
            return ops.set_inactive_mailbox(identity, once=True, **params)
        if cmdlet == "Set-RetentionCompliancePolicy":
            return ops.set_retention_policy(identity, once=True, **params)
        if cmdlet == "Set-CaseHoldPolicy":
            return ops.set_case_hold_policy(identity, once=True, **params)
        if cmdlet == "Set-AppRetentionCompliancePolicy":
            return ops.set_app_retention_policy(identity, once=True, **params)
        raise ImmError(f"imm has no call for {cmdlet}")

    def _after_release(self, guid: str) -> tuple[dict[str, Any], bool]:
        """(state after, became soft-deleted); the cache follows (refreshed, or removed when soft-deleted)."""
        record = self.mailboxes.lookup_inactive(guid)
        if record is not None:
            self.mailboxes.store(record, self.db.get_mailbox(guid), sizes=False)
            return state_of(record), False
        soft = self.mailboxes.lookup_soft_deleted(guid)
        if soft is not None:  # kept in the cache as soft-deleted, with its purge date (imm list --state soft-deleted)
            self.mailboxes.store(soft, self.db.get_mailbox(guid), sizes=False)
        else:
            self.db.delete_mailboxes([guid])
        return (state_of(soft) if soft else {"IsInactiveMailbox": False}), True

    # ====================================================================================== hold duration
    def preview_set_duration(self, identity: str, duration_days: int | None) -> ActionPreview:
        """Preflight of a Litigation Hold duration change (blocked when the mailbox has no Litigation Hold)."""
        from imm.services.action_specs import SetDurationSpec

        duration_days = SetDurationSpec.of(duration_days).days  # the one check (also the plan reader's)
        mailbox, record = self.mailboxes.refresh(identity)
        current = days_of(record.get("LitigationHoldDuration"))
        enabled = truthy(record.get("LitigationHoldEnabled"))
        summary = [
            f"Change the Litigation Hold duration of inactive mailbox {label_of(mailbox)}",
            f"From {duration_text(current)} to {duration_text(duration_days)}",
        ]
        from imm.domain.expiry import duration_change
        from imm.domain.holds import Hold

        change = duration_change(mailbox, [Hold.from_dict(d) for d in mailbox.hold_details], duration_days, self.now())
        summary.extend(change.lines)
        nothing = enabled and current == duration_days
        if nothing:
            summary.append(f"Nothing to do: the duration is already {duration_text(duration_days)}")
        value: Any = "Unlimited" if duration_days is None else duration_days
        preview = ActionPreview(
            identity=mailbox.identity,
            action=SET_DURATION,
            mailbox=summary_of(mailbox),
            summary=summary,
            consequence=change.consequence,
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
        preview.fingerprint = fingerprint_of(record)
        preview.spec = {"days": duration_days}
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
        if preview.nothing_to_do:
            message = preview.summary[-1]
            self.auditor.record_unchanged(preview, AuditResult.SKIPPED, message, operation_context)
            return ActionResult(
                preview.identity, SET_DURATION, SKIPPED, message, None, {"duration_days": duration_days}
            )
        return self.execute(preview, operation_context=operation_context, check=False)

    def _execute_set_duration(self, preview: ActionPreview, operation_context: dict[str, Any] | None) -> ActionResult:
        """Run the Set-Mailbox -LitigationHoldDuration of ``preview`` exactly as shown."""
        guid = preview.identity
        duration_days = preview.spec["days"]
        intent = {
            "action": SET_DURATION,
            "duration_days": duration_days,
            "cmdlets": preview.cmdlets,
            "fingerprint": preview.fingerprint,
            "before": preview.mailbox["state"],
        }
        operation_id = self.auditor.begin(OperationType.CHANGE_HOLD, guid, intent, operation_context)

        def body() -> ActionResult:
            notes: dict[str, Any] = {}
            for step in preview.cmdlets:
                if send_change(
                    lambda step=step: self._run_step(step["cmdlet"], step["parameters"]),  # type: ignore[misc]
                    lambda: self._duration_is(guid, duration_days),
                    f"set-duration {guid}",
                ):
                    notes["confirmed_after_lost_reply"] = True
            record = self.auditor.after_change(lambda: self.mailboxes.lookup_inactive(guid), None, notes) or {}
            mailbox = None
            if record:
                cached = self.db.get_mailbox(guid)
                mailbox = self.auditor.after_change(
                    lambda: self.mailboxes.store(record, cached, sizes=False), None, notes
                )
            details = {
                "action": SET_DURATION,
                "duration_days": duration_days,
                "after": state_of(record),
                **notes,
            }
            self.auditor.finish(operation_id, AuditResult.SUCCESS, details, operation_context)
            return ActionResult(
                guid,
                SET_DURATION,
                SUCCESS,
                f"Litigation Hold duration of {(mailbox.primary_smtp if mailbox else '') or guid} is now "
                f"{duration_text(duration_days)}"
                + (" (confirmed after a lost reply)" if notes.get("confirmed_after_lost_reply") else ""),
                operation_id,
                details,
            )

        return self.auditor.run(guid, SET_DURATION, operation_id, operation_context, intent, body)

    def _duration_is(self, guid: str, days: int | None) -> bool:
        """After a lost reply: is the Litigation Hold duration now ``days`` (None: Unlimited)? Read from Exchange."""
        record = self.mailboxes.lookup_inactive(guid)
        return record is not None and days_of(record.get("LitigationHoldDuration")) == days

    # ========================================================================================= holds show
    def holds_report(self, identity: str, *, refresh: bool = False) -> dict[str, Any]:
        """Every hold on a mailbox: kind, raw value, meaning, policy name, lock, expiry and what releasing it
        takes. From the cache, or read again from Exchange first with ``refresh``."""
        from imm.domain.eligibility import release_plan

        if refresh:
            mailbox, _ = self.mailboxes.refresh(identity)
        else:
            mailbox = self.db.find_mailbox(identity)
        holds = self.mailboxes.decode(mailbox)
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


# ------------------------------------------------------------------------------------------------- helpers
def hold_expiry_text(mailbox: InactiveMailbox, hold: Hold, now: datetime) -> tuple[str, str]:
    """(when this hold runs out: an ISO date, "never" or "" for a hold that keeps nothing; why)."""
    from imm.domain.expiry import hold_expiry

    if not hold.preserves:
        return "", "it does not keep the mailbox inactive"
    end, reason = hold_expiry(mailbox, hold, now)
    return (end.date().isoformat() if end is not None else "never"), reason


def release_text(mailbox: InactiveMailbox, hold: Hold, plan: ReleasePlan, release_type: str) -> str:
    for blocker in plan.blockers:
        if blocker.subject == hold.raw:
            return f"cannot: {blocker.message} ({blocker.alternative})" if blocker.alternative else blocker.message
    for step in plan.steps:
        if step.hold is hold or step.hold.raw == hold.raw:
            params = " ".join(_param_text(k, v) for k, v in step.parameters.items() if k != "Identity")
            flag = " --force-ediscovery" if hold.kind.value == "ediscovery" else ""
            return f"imm holds release {mailbox.identity} --type {release_type}{flag} ({step.cmdlet} {params})"
    if hold.locked:
        return "cannot: Preservation Lock"
    return "cannot be released by imm"


def _param_text(name: str, value: Any) -> str:
    """``-Name value`` as PowerShell shows it (a switch without a value)."""
    if value is True:
        return f"-{name}"
    if value is False:
        return f"-{name} $false"
    return f"-{name} {value}"
