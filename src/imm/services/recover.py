"""Recover: an inactive mailbox becomes a new active mailbox (New-Mailbox -InactiveMailbox, domain.md §4).

Preflight with name/UPN conflict probes, the write-ahead audited call, and reconciliation of an unknown outcome
(``_recover_state``) so the creating call is never repeated blindly; the reminders and the words for what recovery
changed (``recover_changes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from imm.data.audit_logger import AuditResult, OperationType
from imm.services.action_base import ActionService, log
from imm.services.action_support import (
    RECOVER,
    SUCCESS,
    ActionBlockedError,
    ActionPreview,
    ActionResult,
    addresses,
    as_list,
    blocker_line,
    check_password,
    exchange_guid,
    fingerprint_of,
    hint_for,
    label_of,
    records,
    state_of,
    summary_of,
    truthy,
)

if TYPE_CHECKING:
    from imm.data.models import InactiveMailbox

LICENSE_REMINDER = (
    "Assign the new user an Exchange Online licence within 30 days: Exchange keeps Single Item Recovery and "
    "Retention Hold on for 30 days 'to preserve data until you obtain a valid license'."
)
REHOLD_REMINDER = (
    "Recovery replaced unlocked retention policies with Litigation Hold and removed Litigation Hold and In-Place "
    "holds it had: put back the holds the data still needs."
)
# What recovery changes (domain.md §4), with words for people.
_RECOVER_CHANGES = (
    ("LitigationHoldEnabled", "Litigation Hold"),
    ("LitigationHoldDuration", "Litigation Hold duration"),
    ("InPlaceHolds", "In-place holds"),
    ("RetentionHoldEnabled", "Retention Hold"),
    ("RetainDeletedItemsFor", "Keep deleted items for"),
    ("SingleItemRecoveryEnabled", "Single Item Recovery"),
    ("ComplianceTagHoldApplied", "Retention label hold"),
    ("DelayHoldApplied", "Delay hold"),
)


class RecoverService(ActionService):
    """Recover an inactive mailbox into a new active mailbox."""

    def preview_recover(self, identity: str, upn: str, name: str, display_name: str | None = None) -> ActionPreview:
        """Preflight of a recover: refresh, name/UPN conflicts, blockers (raises ActionBlockedError)."""
        from imm.services.action_specs import RecoverSpec

        spec = RecoverSpec.of(upn, name, display_name)  # the one check (also the plan reader's)
        upn, name, display_name = spec.upn, spec.name, spec.display_name
        mailbox, record = self.mailboxes.refresh(identity)
        # the SecureString key, known before any confirmation: a recover never fails for want of it after "started"
        self.mailboxes.need_ops().prepare_secure_strings()
        name_taken, upn_taken = self._conflicts(mailbox, upn, name)
        upn_domain = upn.rsplit("@", 1)[-1].lower()
        authentication, domain_note = self._domain_authentication(upn_domain)
        from imm.domain.eligibility import recovery_blockers

        # The preflight probes the UPN and name it was given; the conflicts sync found concern the mailbox's own.
        blockers = recovery_blockers(
            mailbox,
            name_taken=name_taken,
            upn_taken=upn_taken,
            sync_conflicts=False,
            upn_domain=upn_domain,
            domain_authentication=authentication,
        )
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
            notes=[LICENSE_REMINDER, *([domain_note] if domain_note else [])],
        )
        preview.mailbox["state"] = state_of(record)
        preview.fingerprint = fingerprint_of(record)
        preview.spec = {"upn": upn, "name": name, "display_name": display_name}
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

    def _domain_authentication(self, domain: str) -> tuple[str | None, str]:
        """(AuthenticationType of the accepted domain ``domain``, "" when it is not accepted, None when unknown;
        a note when Get-AcceptedDomain could not be read)."""
        from imm.exchange import AccessDeniedError

        try:
            domains = self.mailboxes.need_ops().get_accepted_domains()
        except AccessDeniedError:
            return None, (
                f"Not checked whether {domain} is a federated domain (Get-AcceptedDomain was refused): Exchange "
                "refuses a recover under a federated UPN"
            )
        for record in domains:
            if str(record.get("DomainName") or record.get("Name") or "").strip().lower() == domain:
                return str(record.get("AuthenticationType") or "Managed"), ""
        return ("", "") if domains else (None, "")

    def _probe(self, identity: str) -> list[dict[str, Any]]:
        """Active objects Exchange finds by ``identity`` (mailbox first, then any recipient); an ambiguous
        identity means several objects use it: they are all returned as conflicts."""
        from imm.exchange import AmbiguousIdentityError, ExoNotFoundError

        ops = self.mailboxes.need_ops()
        try:
            found = self.mailboxes.lookup_active(identity)
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
        """Recover the inactive mailbox into a new active mailbox (New-Mailbox -InactiveMailbox): the plan computed
        now, executed at once (one read of the mailbox)."""
        check_password(password)
        preview = self.preview_recover(identity, upn, name, display_name)
        return self.execute(preview, password=password, operation_context=operation_context, check=False)

    def _execute(
        self, preview: ActionPreview, operation_context: dict[str, Any] | None, password: str | None
    ) -> ActionResult:
        """Run the New-Mailbox -InactiveMailbox of ``preview`` exactly as shown, with ``password``."""
        password = password or ""
        check_password(password)
        guid = preview.identity
        upn, name, display_name = preview.spec["upn"], preview.spec["name"], preview.spec["display_name"]
        before = preview.mailbox["state"]
        intent = {
            "action": RECOVER,
            "upn": upn,
            "name": name,
            "display_name": display_name,
            "fingerprint": preview.fingerprint,
            "before": before,
        }
        operation_id = self.auditor.begin(OperationType.RECOVER_MAILBOX, guid, intent, operation_context)

        def body() -> ActionResult:
            reconciled, warnings = self._create_mailbox(guid, upn, name, password, display_name)
            notes: dict[str, Any] = {}
            self.auditor.after_change(lambda: self.db.delete_mailboxes([guid]), 0, notes)
            new_record = self.auditor.after_change(lambda: self.mailboxes.lookup_active(upn), None, notes)
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
            self.auditor.finish(operation_id, AuditResult.SUCCESS, details, operation_context)
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

        return self.auditor.run(guid, RECOVER, operation_id, operation_context, intent, body)

    def _create_mailbox(
        self, guid: str, upn: str, name: str, password: str, display_name: str | None
    ) -> tuple[bool, list[str]]:
        """New-Mailbox -InactiveMailbox; (True when an ambiguous failure was reconciled as done, Exchange's
        warnings)."""
        from imm.exchange import AmbiguousOutcomeError
        from imm.services.action_base import LOST_REPLY_SENDS

        ops = self.mailboxes.need_ops()
        for attempt in range(1, LOST_REPLY_SENDS + 1):
            try:
                ops.new_mailbox_from_inactive(guid, name, upn, password, display_name=display_name)
                return False, self._exchange_warnings()
            except AmbiguousOutcomeError as exc:
                log.warning("recover %s: outcome unknown (%s); reconciling", guid, exc.message)
                state = self.recover_state(guid, upn)
                if state == "done":
                    return True, []
                if state != "not-done" or attempt == LOST_REPLY_SENDS:
                    exc.audit_details = {"reconcile": state}  # type: ignore[attr-defined]
                    raise
                # Reconciled: nothing happened, so the call is safe to make once more.
        raise AssertionError("not reached")

    def _exchange_warnings(self) -> list[str]:
        """The warnings Exchange gave the last call on this thread (e.g. New-Mailbox's licence warning)."""
        backend = getattr(self.ops, "exchange", None)
        try:
            return [str(w) for w in getattr(backend, "last_warnings", None) or []]
        except Exception:  # a backend without warnings
            return []

    def recover_state(self, guid: str, upn: str) -> str:
        """'done' (new mailbox with the UPN, inactive gone), 'not-done' (inactive still there, UPN free), or a
        word for anything in between."""
        from imm.exchange import AmbiguousIdentityError, ExchangeError

        try:
            new = self.mailboxes.lookup_active(upn)
            inactive = self.mailboxes.lookup_inactive(guid)
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


# ------------------------------------------------------------------------------------------------- helpers
def recover_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What Exchange changed on recovery, in words (domain.md §4), from the inactive and the new mailbox."""
    lines = []
    for key, label in _RECOVER_CHANGES:
        old, new = before.get(key), after.get(key)
        if isinstance(old, list) or isinstance(new, list):
            old_set, new_set = set(as_list(old)), set(as_list(new))
            if old_set == new_set:
                continue
            gone = sorted(old_set - new_set)
            added = sorted(new_set - old_set)
            parts = []
            if gone:
                parts.append("removed " + ", ".join(gone))
            if added:
                parts.append("added " + ", ".join(added))
            lines.append(f"{label}: {'; '.join(parts)}")
            continue
        if str(old) == str(new) or (old is None and new is None):
            continue
        lines.append(f"{label}: {_show(old)} → {_show(new)}")
    if truthy(after.get("LitigationHoldEnabled")) and not truthy(before.get("LitigationHoldEnabled")):
        lines.append("Litigation Hold now replaces the unlocked retention policies that held the inactive mailbox")
    return lines


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == "":
        return "(none)"
    return str(value)


def is_soft_deleted(record: Mapping[str, Any]) -> bool:
    dn = str(record.get("DistinguishedName") or "")
    return "OU=Soft Deleted Objects" in dn or truthy(record.get("IsInactiveMailbox"))
