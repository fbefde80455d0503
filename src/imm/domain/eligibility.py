"""What stops a recover, a restore or a hold release, and what a release would do (domain.md §4–§6, §8).

Every check returns :class:`Blocker` values: a stable ``code`` (for scripts and ``--output json``), a one-line
``message`` and the ``alternative`` an administrator can take instead. Nothing here talks to Exchange: the
services gather the facts (is the name taken, what does the target look like) and pass them in.

Blocker codes:

- recover: ``soft-deleted``, ``auto-expanding-archive``, ``aux-primary-shards``, ``user-restorable``,
  ``smtp-conflict``, ``upn-conflict`` (found at sync), ``name-taken``, ``upn-taken``, ``federated-upn``,
  ``upn-domain-not-accepted`` (the recover preflight);
- restore: ``auto-expanding-archive``, ``no-archive``, ``target-missing``, ``target-inactive``,
  ``target-no-archive``, ``target-over-quota``, ``target-archive-over-quota``,
  ``target-recoverable-items-over-quota``, ``too-many-restore-requests`` (auto-named requests only);
- release: ``preservation-lock``, ``ediscovery-case-hold`` (can be forced), ``adaptive-policy``,
  ``legacy-inplace-hold``, ``unknown-hold``, ``not-on-mailbox``, ``nothing-to-release``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from imm.data.models import InactiveMailbox
from imm.domain.holds import Hold, HoldKind, dashed_guid
from imm.domain.lifecycle import DELAY_HOLD_DAYS, SOFT_DELETE_PURGE_DAYS
from imm.domain.parsing import format_size, or_default, parse_bool, parse_size
from imm.errors import InputError

__all__ = [
    "Blocker",
    "ReleasePlan",
    "ReleaseStep",
    "RELEASE_TYPES",
    "LAST_HOLD_CONSEQUENCE",
    "LAST_DELAY_HOLD_CONSEQUENCE",
    "recovery_blockers",
    "restore_source_blockers",
    "restore_blockers",
    "release_selection",
    "release_blockers",
    "release_plan",
]

MB = 1024 * 1024
# New-MailboxRestoreRequest.md -Name: "If you didn't specify a name … Exchange generates up to 10 names, starting with
# MailboxRestore and then MailboxRestoreX (where X = 1-9)": the limit binds auto-named requests only (domain.md §5).
MAX_RESTORE_REQUESTS_PER_TARGET = 10
# After the last hold: a delay hold at the next Managed Folder Assistant run (identify-a-hold article), then
# soft-deleted and purged 183 days after the hold's removal (InactiveMailboxRetireTime + 183 days), restorable
# until then (delete-an-inactive-mailbox article; New-MailboxRestoreRequest -SourceMailbox). imm.domain.lifecycle.
LAST_HOLD_CONSEQUENCE = (
    f"this removes the last hold: Exchange keeps the mailbox under a {DELAY_HOLD_DAYS}-day delay hold (applied at "
    f"its next Managed Folder Assistant run), then soft-deletes it and purges it {SOFT_DELETE_PURGE_DAYS} days "
    "after the hold's removal; until the purge its content can still be restored into another mailbox "
    "(imm restore)"
)
LAST_DELAY_HOLD_CONSEQUENCE = (
    "this removes the last hold, a delay hold: Exchange soft-deletes the mailbox without a further delay and purges "
    f"it {SOFT_DELETE_PURGE_DAYS} days later (InactiveMailboxRetireTime + {SOFT_DELETE_PURGE_DAYS} days); until the "
    "purge its content can still be restored into another mailbox (imm restore)"
)
# An inactive mailbox is named in a case hold's location list with a leading period (".user@contoso.com"): documented
# for New-/Set-CaseHoldPolicy only (domain.md §6); Set-RetentionCompliancePolicy's delete-an-inactive-mailbox example
# names the mailbox plainly, so only case holds get the period.
INACTIVE_LOCATION_PREFIX = "."
EXPORT_ALTERNATIVE = "Export its content with a Content Search / eDiscovery export"
ALTERNATIVES: dict[str, str] = {  # what to do instead, by blocker code (reports look stored codes up here)
    "auto-expanding-archive": EXPORT_ALTERNATIVE,
    "aux-primary-shards": "Restore its content into an existing mailbox instead (imm restore)",
    "user-restorable": "Restore the deleted user in the Microsoft 365 admin center or Entra ID instead",
    "soft-deleted": "Restore its content into an existing mailbox with imm restore before it is purged",
    "name-taken": "Recover with a different --name",
    "upn-taken": "Recover with a different --upn (an onmicrosoft.com address avoids federated-domain errors)",
    "no-archive": "Restore the primary mailbox instead",
    "smtp-conflict": "Recover with a --upn of its own (its primary address becomes that UPN), or restore its content "
    "into the active mailbox instead (imm restore)",
    "upn-conflict": "Recover with a different --upn (an onmicrosoft.com address is always free of federation), or "
    "restore its content into the active mailbox instead (imm restore)",
    "federated-upn": "Recover with a UPN in a managed domain, such as the tenant's onmicrosoft.com domain, and change "
    "it afterwards",
    "upn-domain-not-accepted": "Recover with a UPN in one of the organization's accepted domains",
}


@dataclass(frozen=True)
class Blocker:
    """One reason an action cannot go ahead. ``forceable``: an explicit ``--force`` may override it.

    ``subject``: for release blockers, the raw value of the hold it is about (``Hold.raw``); else "".
    """

    code: str
    message: str
    alternative: str = ""
    forceable: bool = False
    subject: str = ""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "alternative": self.alternative,
            "forceable": self.forceable,
            "subject": self.subject,
        }


# ---------------------------------------------------------------------------------------------------- recover
def _auto_expanding(mailbox: InactiveMailbox) -> Blocker | None:
    shards = mailbox.mailbox_locations.count("AuxArchive")
    if shards:
        return Blocker(
            "auto-expanding-archive",
            "The mailbox has an auto-expanding archive (AuxArchive locations)",
            ALTERNATIVES["auto-expanding-archive"],
        )
    if mailbox.auto_expanding_archive:
        return Blocker(
            "auto-expanding-archive",
            "The mailbox has auto-expanding archiving enabled (AutoExpandingArchiveEnabled)",
            ALTERNATIVES["auto-expanding-archive"],
        )
    return None


def recovery_blockers(
    mailbox: InactiveMailbox,
    *,
    name_taken: bool = False,
    upn_taken: bool = False,
    sync_conflicts: bool = True,
    upn_domain: str | None = None,
    domain_authentication: str | None = None,
) -> list[Blocker]:
    """Why ``New-Mailbox -InactiveMailbox`` would fail or be the wrong tool (domain.md §4, §8).

    ``sync_conflicts``: report what sync found (``smtp_conflict`` / ``upn_conflict``: an active recipient uses the
    mailbox's own primary SMTP or UPN, so recovering it under its own name fails: the MicrosoftOnlineServicesID and
    the name must be unique, New-Mailbox.md; microsoft-365-docs#2814). The recover preflight passes False: it probes
    the UPN and name it was asked for instead (``name_taken`` / ``upn_taken``).

    ``upn_domain`` / ``domain_authentication``: the requested UPN's domain and that accepted domain's
    ``AuthenticationType`` (Get-AcceptedDomain; ``Managed`` or ``Federated``, Set-AcceptedDomain
    ``-AuthenticationType``), or ``""`` when the domain is not accepted, None when unknown. A federated domain makes
    New-Mailbox fail with "The parameters passed to the cmdlet represent a managed account, which doesn't match the
    namespace state, which is federated." (domain.md §4: recover-inactive-mailboxes-error support article).
    """
    blockers: list[Blocker] = []
    if not mailbox.is_inactive_mailbox:
        when = f" (purged from {mailbox.purge_on.date().isoformat()})" if mailbox.purge_on else ""
        blockers.append(
            Blocker(
                "soft-deleted",
                f"The mailbox is soft-deleted, no longer inactive{when}: New-Mailbox -InactiveMailbox cannot "
                "recover it",
                ALTERNATIVES["soft-deleted"],
            )
        )
    auto = _auto_expanding(mailbox)
    if auto is not None:
        blockers.append(auto)
    if "AuxPrimary" in mailbox.mailbox_locations:
        blockers.append(
            Blocker(
                "aux-primary-shards",
                "The mailbox has additional primary shards (AuxPrimary locations) that cannot be recovered",
                ALTERNATIVES["aux-primary-shards"],
            )
        )
    if mailbox.external_directory_object_id:
        blockers.append(
            Blocker(
                "user-restorable",
                "The user account is still within its 30-day soft-delete window (ExternalDirectoryObjectId is set)",
                ALTERNATIVES["user-restorable"],
            )
        )
    if sync_conflicts and mailbox.smtp_conflict:
        blockers.append(
            Blocker(
                "smtp-conflict",
                f"The primary address {mailbox.primary_smtp} is used by the active recipient "
                f"'{mailbox.smtp_conflict}' (found at sync)",
                ALTERNATIVES["smtp-conflict"],
            )
        )
    if sync_conflicts and mailbox.upn_conflict:
        blockers.append(
            Blocker(
                "upn-conflict",
                f"The user name {mailbox.user_principal_name or mailbox.primary_smtp} is used by the active "
                f"recipient '{mailbox.upn_conflict}' (found at sync)",
                ALTERNATIVES["upn-conflict"],
            )
        )
    if upn_domain is not None and domain_authentication is not None:
        if domain_authentication == "":
            blockers.append(
                Blocker(
                    "upn-domain-not-accepted",
                    f"The domain {upn_domain} is not an accepted domain of the organization (Get-AcceptedDomain)",
                    ALTERNATIVES["upn-domain-not-accepted"],
                )
            )
        elif domain_authentication.strip().lower() == "federated":
            blockers.append(
                Blocker(
                    "federated-upn",
                    f"The domain {upn_domain} is federated (AuthenticationType Federated): New-Mailbox creates a "
                    "managed account and Exchange refuses it",
                    ALTERNATIVES["federated-upn"],
                )
            )
    if name_taken:
        blockers.append(
            Blocker(
                "name-taken",
                f"The name '{mailbox.name or mailbox.display_name}' is already used by another object",
                ALTERNATIVES["name-taken"],
            )
        )
    if upn_taken:
        blockers.append(
            Blocker(
                "upn-taken",
                f"The user name '{mailbox.user_principal_name or mailbox.primary_smtp}' is already in use",
                ALTERNATIVES["upn-taken"],
            )
        )
    return blockers


# ---------------------------------------------------------------------------------------------------- restore
def restore_source_blockers(mailbox: InactiveMailbox, *, archive: bool = False) -> list[Blocker]:
    """The restore blockers that depend on the inactive mailbox alone (what ``analyse`` stores)."""
    blockers: list[Blocker] = []
    auto = _auto_expanding(mailbox)
    if auto is not None:
        blockers.append(auto)
    if archive and str(mailbox.archive_status or "").lower() != "active":
        blockers.append(
            Blocker(
                "no-archive",
                f"The inactive mailbox has no archive to restore (ArchiveStatus {mailbox.archive_status or 'None'})",
                ALTERNATIVES["no-archive"],
            )
        )
    return blockers


def _restore_request_count(target: Mapping[str, Any]) -> int:
    count = target.get("RestoreRequestCount")
    if count is not None:
        try:
            return int(count)
        except (TypeError, ValueError):
            return 0
    requests = target.get("RestoreRequests")
    return len(requests) if isinstance(requests, list | tuple) else 0


def _size_or_none(value: Any) -> int | None:
    return or_default(parse_size, value, None)


def recoverable_items_blocker(incoming: int, target: Mapping[str, Any]) -> Blocker | None:
    """The target's Recoverable Items folder would overflow: it has its own quota (``RecoverableItemsQuota``, 30 GB,
    100 GB under a hold; recoverable-items-folder article) apart from the mailbox quota, and a restore copies the
    source's Recoverable Items (Deletions, Versions, Purges) unless ``-ExcludeDumpster`` (New-MailboxRestoreRequest.md).
    ``incoming``: bytes of the source's Recoverable Items; ``target`` carries ``RecoverableItemsQuota`` (Get-Mailbox)
    and ``TotalDeletedItemSize`` (its Get-MailboxStatistics); either missing skips the check."""
    quota = _size_or_none(target.get("RecoverableItemsQuota"))
    used = _size_or_none(target.get("TotalDeletedItemSize"))
    if quota is None or used is None or used + incoming <= quota:
        return None
    return Blocker(
        "target-recoverable-items-over-quota",
        f"The target's RecoverableItemsQuota is {format_size(quota)}: {format_size(used)} used + "
        f"{format_size(incoming)} of Recoverable Items to restore would exceed it",
        "Restore without the source's Recoverable Items (--exclude-dumpster), or put the target on a hold first "
        "(its Recoverable Items quota rises to 100 GB), or choose another target",
    )


def restore_blockers(
    mailbox: InactiveMailbox,
    target: Mapping[str, Any] | None,
    *,
    archive: bool,
    named: bool = True,
    exclude_dumpster: bool = False,
) -> list[Blocker]:
    """Why ``New-MailboxRestoreRequest`` from ``mailbox`` into ``target`` would fail (domain.md §5).

    ``target`` is the target's Get-Mailbox record (None when it was not found), optionally merged with:
    ``TotalItemSize`` (Get-MailboxStatistics of the target), ``ArchiveTotalItemSize`` (its archive statistics),
    ``RestoreRequestCount`` or ``RestoreRequests`` (existing restore requests into the target). Keys that are
    missing skip their check. ``archive=True`` restores the source's archive into the target's archive
    (-SourceIsArchive -TargetIsArchive), so both need one. The quota checks are a preflight estimate: the source's
    items + the target's used size > its quota, and apart from it the source's Recoverable Items + the target's
    against its RecoverableItemsQuota (not with ``exclude_dumpster``); Exchange's own failure on quota is
    **unconfirmed**. ``named``: the request carries its own ``-Name`` (imm always names its requests), so the
    limit of 10 auto-generated names does not apply.
    """
    blockers = restore_source_blockers(mailbox, archive=archive)
    if target is None:
        blockers.append(
            Blocker("target-missing", "The target mailbox does not exist", "Name an existing active mailbox as target")
        )
        return blockers
    dn = str(target.get("DistinguishedName") or "")
    if parse_bool(target.get("IsInactiveMailbox"), False) or "OU=Soft Deleted Objects" in dn:
        blockers.append(
            Blocker(
                "target-inactive",
                "The target mailbox is inactive or soft-deleted",
                "Restore into an active mailbox (recover this one first if it is the one you need)",
            )
        )
    target_archive = str(target.get("ArchiveStatus") or "None").lower() == "active"
    if archive and not target_archive:
        blockers.append(
            Blocker(
                "target-no-archive",
                "The target mailbox has no active archive to restore the archive into",
                "Enable the target's archive first, or restore the archive into the target's primary mailbox",
            )
        )
    if archive:
        quota_key, used_key, code = "ArchiveQuota", "ArchiveTotalItemSize", "target-archive-over-quota"
        incoming = round(mailbox.archive_size_mb * MB)
    else:
        quota_key, used_key, code = "ProhibitSendReceiveQuota", "TotalItemSize", "target-over-quota"
        incoming = round(mailbox.size_mb * MB)
    quota = _size_or_none(target.get(quota_key))
    used = _size_or_none(target.get(used_key))
    if quota is not None and used is not None and used + incoming > quota:
        blockers.append(
            Blocker(
                code,
                f"The target's {quota_key} is {format_size(quota)}: {format_size(used)} used + "
                f"{format_size(incoming)} to restore would exceed it",
                "Raise the target's quota, restore into its archive, or choose another target",
            )
        )
    if not archive and not exclude_dumpster:
        found = recoverable_items_blocker(round(mailbox.recoverable_items_mb * MB), target)
        if found is not None:
            blockers.append(found)
    requests = _restore_request_count(target)
    if not named and requests >= MAX_RESTORE_REQUESTS_PER_TARGET:
        blockers.append(
            Blocker(
                "too-many-restore-requests",
                f"The target already has {requests} restore requests (at most {MAX_RESTORE_REQUESTS_PER_TARGET} "
                "without a -Name)",
                "Name the request (-Name), remove completed requests (Remove-MailboxRestoreRequest) or wait for them",
            )
        )
    return blockers


# Track and prevent migration data loss in Exchange Online (Learn, mailbox-migration/track-prevent-data-loss-dcs):
# four grades derived from the DataConsistencyScore, which "exists on MigrationBatch, MigrationUser, and
# RequestStatistics objects": Perfect (no inconsistency), Good (not impactful), Investigate (a small amount of
# noticeable data loss), Poor (major data loss). New-MailboxRestoreRequest.md (-BadItemLimit): in the cloud "tenant
# admins must review the DataConsistencyScore and any skipped items after the restore completes".
CONSISTENCY_GRADES: tuple[str, ...] = ("Perfect", "Good", "Investigate", "Poor")
_ACCEPTABLE_GRADES = frozenset({"perfect", "good"})


def consistency_warning(score: str | None, skipped_items: int | None) -> str:
    """The warning for a completed restore whose DataConsistencyScore is below Good ("" when Perfect, Good or not
    reported). An unrecognised score is a warning too: calling lost data fine is the risky side."""
    grade = (score or "").strip()
    if not grade or grade.lower() in _ACCEPTABLE_GRADES:
        return ""
    skipped = f"; {skipped_items:,} item(s) skipped" if skipped_items else ""
    known = grade.lower() in {g.lower() for g in CONSISTENCY_GRADES}
    what = "data was lost" if known else "an unrecognised score"
    return (
        f"DataConsistencyScore {grade}{skipped}: {what}; review the skipped items "
        "(Get-MailboxRestoreRequestStatistics -IncludeReport) before relying on the copy"
    )


# ---------------------------------------------------------------------------------------------------- release
RELEASE_TYPES: tuple[str, ...] = (
    "litigation",
    "delay",
    "delay-release",
    "label",
    "org-policy",
    "policy",
    "ediscovery",
    "all-unlocked",
)
# Old words refused with a hint: "all-releasable" read as "every hold has expired" (as `imm list --releasable`
# means) while it removed every unlocked hold, expired or not.
RENAMED_RELEASE_TYPES: dict[str, str] = {"all-releasable": "all-unlocked"}


def check_release_type(value: str | None) -> str:
    """The release type ``value`` names (lower case), or InputError naming the choices (and the new word for an old
    one). The one check of ``--type`` for ``holds release``, ``bulk plan`` and plan files."""
    kind = (value or "").strip().lower()
    if kind in RENAMED_RELEASE_TYPES:
        raise InputError(
            f"hold type '{kind}' was renamed '{RENAMED_RELEASE_TYPES[kind]}': it removes every unlocked hold, "
            "expired or not",
            hint="to act only on mailboxes whose holds have all expired, select them with --releasable "
            f"(imm list --releasable, imm bulk plan --releasable); then use --type {RENAMED_RELEASE_TYPES[kind]}",
        )
    if kind not in RELEASE_TYPES:
        raise InputError(f"unknown hold type '{value}' (choose from: {', '.join(RELEASE_TYPES)})")
    return kind


_TYPE_KINDS: dict[str, frozenset[HoldKind]] = {
    "litigation": frozenset({HoldKind.LITIGATION}),
    "delay": frozenset({HoldKind.DELAY}),
    "delay-release": frozenset({HoldKind.DELAY_RELEASE}),
    "label": frozenset({HoldKind.COMPLIANCE_TAG}),
    "org-policy": frozenset({HoldKind.ORG_POLICY}),
    "policy": frozenset({HoldKind.RETENTION_POLICY, HoldKind.SKYPE_POLICY}),
    "ediscovery": frozenset({HoldKind.EDISCOVERY}),
    "all-unlocked": frozenset(
        {
            HoldKind.LITIGATION,
            HoldKind.DELAY,
            HoldKind.DELAY_RELEASE,
            HoldKind.COMPLIANCE_TAG,
            HoldKind.ORG_POLICY,
            HoldKind.RETENTION_POLICY,
            HoldKind.SKYPE_POLICY,
        }
    ),
}


@dataclass(frozen=True)
class ReleaseStep:
    """One cmdlet call that releases one hold. ``endpoint`` is "exchange" or "compliance"."""

    hold: Hold
    cmdlet: str
    endpoint: str
    parameters: dict[str, Any]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "hold": self.hold.kind.value,
            "hold_raw": self.hold.raw,
            "description": self.hold.description,
            "cmdlet": self.cmdlet,
            "endpoint": self.endpoint,
            "parameters": dict(self.parameters),
            "note": self.note,
        }


@dataclass(frozen=True)
class ReleasePlan:
    """What ``holds release --type T`` would do to one mailbox.

    ``selected``: the holds the type picks; ``steps``: the calls for those that can be released (a blocked hold has
    no step); ``remaining``: the preserving holds left after the steps; ``removes_last_hold``: the steps leave no
    preserving hold, so the mailbox stops being inactive (``consequence`` then says what that means).
    """

    identity: str
    release_type: str
    selected: tuple[Hold, ...]
    steps: tuple[ReleaseStep, ...]
    blockers: tuple[Blocker, ...]
    remaining: tuple[Hold, ...]
    removes_last_hold: bool
    consequence: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def executable(self) -> bool:
        """True when there is something to do and nothing blocks it."""
        return bool(self.steps) and not self.blockers

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "release_type": self.release_type,
            "selected": [hold.to_dict() for hold in self.selected],
            "steps": [step.to_dict() for step in self.steps],
            "blockers": [blocker.to_dict() for blocker in self.blockers],
            "remaining": [hold.kind.value for hold in self.remaining],
            "removes_last_hold": self.removes_last_hold,
            "consequence": self.consequence,
            "notes": list(self.notes),
        }


def release_selection(holds: Iterable[Hold], release_type: str) -> list[Hold]:
    """The preserving holds a ``--type`` picks (see :data:`RELEASE_TYPES`).

    ``all-unlocked`` = every hold imm can release without ``--force``: litigation, policies naming the mailbox,
    org-wide policies, label and delay holds, except Preservation-Locked policies. It does not look at expiry.
    """
    kinds = _TYPE_KINDS.get(release_type)
    if kinds is None:
        raise InputError(f"unknown hold type '{release_type}' (choose from: {', '.join(RELEASE_TYPES)})")
    picked = [hold for hold in holds if hold.preserves and hold.kind in kinds]
    if release_type == "all-unlocked":
        picked = [hold for hold in picked if not hold.locked]
    return picked


def release_blockers(holds: Sequence[Hold], selection: Iterable[Hold], *, force: bool = False) -> list[Blocker]:
    """Why the ``selection`` of ``holds`` (all holds on the mailbox) cannot be released.

    Preservation Lock cannot be released at all; an eDiscovery case hold only with ``force`` (releasing or
    closing a case deletes the inactive mailboxes that depend on it, so it is the case owner's decision); legacy
    In-Place and unrecognised holds need manual work. Org-wide "All" policies are not blocked: the plan excludes
    the mailbox from them (Set-Mailbox -ExcludeFromOrgHolds) rather than editing the policy.
    """
    on_mailbox = set(holds)
    found = (_hold_blocker(hold, on_mailbox, force) for hold in selection)
    return [blocker for blocker in found if blocker is not None]


def _hold_blocker(hold: Hold, on_mailbox: set[Hold], force: bool) -> Blocker | None:
    found = _hold_blocker_text(hold, on_mailbox, force)
    return None if found is None else replace(found, subject=hold.raw)


def _hold_blocker_text(hold: Hold, on_mailbox: set[Hold], force: bool) -> Blocker | None:
    name = hold.policy_name or (dashed_guid(hold.guid) if hold.guid else hold.raw)
    if hold not in on_mailbox:
        return Blocker("not-on-mailbox", f"The hold {hold.raw} is not on this mailbox", "Refresh the cache (imm sync)")
    if hold.locked:
        return Blocker(
            "preservation-lock",
            f"Policy '{name}' is under Preservation Lock: the mailbox cannot be removed from it",
            "Nothing can release a locked policy; the mailbox stays inactive while the policy applies "
            "(escalate to Microsoft Support if it must go)",
        )
    if hold.kind is HoldKind.EDISCOVERY and not force:
        return Blocker(
            "ediscovery-case-hold",
            f"eDiscovery case hold '{name}': releasing or closing the case deletes the inactive mailboxes "
            "that depend on it",
            "Ask the case owner; re-run with --force-ediscovery to remove only this mailbox from the case hold",
            forceable=True,
        )
    if hold.policy_scope == "adaptive" and hold.kind in _POLICY_RELEASE_KINDS:
        return Blocker(
            "adaptive-policy",
            f"Policy '{name}' uses adaptive scopes: its members come from the scope's query, and "
            "-RemoveExchangeLocation belongs to the static policies' parameter set (Set-RetentionCompliancePolicy)",
            "Change the adaptive scope's query so it no longer includes this mailbox (Set-AdaptiveScope), or take "
            "the scope off the policy (-RemoveAdaptiveScopeLocation)",
        )
    if hold.kind is HoldKind.INPLACE_LEGACY:
        search = hold.raw  # the cld prefix stays: Get-MailboxSearch -InPlaceHoldIdentity takes it (domain.md §9)
        return Blocker(
            "legacy-inplace-hold",
            f"Legacy In-Place Hold {search} cannot be released by imm",
            f"Find it with Get-MailboxSearch -InPlaceHoldIdentity {search}, then Set-MailboxSearch "
            "-InPlaceHoldEnabled $false and Remove-MailboxSearch, or Set-Mailbox -RemoveOrphanedHolds when the search "
            "no longer exists",
        )
    if hold.kind is HoldKind.UNKNOWN:
        return Blocker(
            "unknown-hold",
            f"Unrecognised hold value '{hold.raw}'",
            "Identify it with Export-MailboxDiagnosticLogs -ComponentName HoldTracking",
        )
    return None


_POLICY_RELEASE_KINDS = frozenset({HoldKind.RETENTION_POLICY, HoldKind.SKYPE_POLICY, HoldKind.ORG_POLICY})


def _location(mailbox: InactiveMailbox, *, case_hold: bool = False) -> str:
    """How a compliance location list names the inactive mailbox: its primary SMTP address (``.<smtp>`` in a case
    hold, the documented mark of an inactive mailbox there); its GUID when it has no address."""
    if not mailbox.primary_smtp:
        return mailbox.identity
    return (INACTIVE_LOCATION_PREFIX if case_hold else "") + mailbox.primary_smtp


def _deleted_resources(mailbox: InactiveMailbox) -> str:
    """The ``-DeletedResources`` JSON naming a soft-deleted mailbox by its address (Set-RetentionCompliancePolicy
    Example 5, Set-AppRetentionCompliancePolicy Example 2)."""
    return json.dumps([{"EmailAddress": mailbox.primary_smtp or mailbox.identity}])


def _exception_step(mailbox: InactiveMailbox, hold: Hold) -> ReleaseStep | None:
    """The exclusion an app retention policy or a Teams chats policy takes for a deleted mailbox."""
    address = mailbox.primary_smtp or mailbox.identity
    assert hold.guid
    if hold.policy_scope == "app":
        # Set-AppRetentionCompliancePolicy Example 2: -AddExchangeLocationException with -DeletedResources for a
        # soft-deleted mailbox; -ExcludeFromAllOrgHolds does not reach app policies (Set-Mailbox, domain.md §9).
        return ReleaseStep(
            hold,
            "Set-AppRetentionCompliancePolicy",
            "compliance",
            {
                "Identity": dashed_guid(hold.guid),
                "AddExchangeLocationException": address,
                "DeletedResources": _deleted_resources(mailbox),
            },
            "excludes this mailbox from the app retention policy",
        )
    if hold.policy_scope == "teams-chat":
        # Set-RetentionCompliancePolicy Example 5: a soft-deleted mailbox as a Teams chat exception.
        return ReleaseStep(
            hold,
            "Set-RetentionCompliancePolicy",
            "compliance",
            {
                "Identity": dashed_guid(hold.guid),
                "AddTeamsChatLocationException": address,
                "DeletedResources": _deleted_resources(mailbox),
            },
            "excludes this mailbox's Teams chats from the policy",
        )
    return None


def _step(mailbox: InactiveMailbox, hold: Hold) -> ReleaseStep | None:
    """The call that releases ``hold`` (domain.md §6), or None when imm has no call for it."""
    identity = mailbox.identity
    kind = hold.kind

    def set_mailbox(**switches: Any) -> ReleaseStep:
        return ReleaseStep(hold, "Set-Mailbox", "exchange", {"Identity": identity, "InactiveMailbox": True, **switches})

    if kind is HoldKind.LITIGATION:
        return set_mailbox(LitigationHoldEnabled=False)
    if kind is HoldKind.DELAY:
        return set_mailbox(RemoveDelayHoldApplied=True)
    if kind is HoldKind.DELAY_RELEASE:
        return set_mailbox(RemoveDelayReleaseHoldApplied=True)
    if kind is HoldKind.COMPLIANCE_TAG:
        return set_mailbox(RemoveComplianceTagHoldApplied=True)
    if kind in _POLICY_RELEASE_KINDS and hold.guid and hold.policy_scope in ("app", "teams-chat"):
        return _exception_step(mailbox, hold)
    if kind is HoldKind.ORG_POLICY and hold.guid:
        # -InactiveMailbox with -ExcludeFromOrgHolds is how Set-Mailbox reaches an inactive mailbox: unconfirmed.
        step = set_mailbox(ExcludeFromOrgHolds=hold.guid)
        return ReleaseStep(
            hold,
            step.cmdlet,
            step.endpoint,
            step.parameters,
            "excludes this mailbox only; the policy keeps holding every other mailbox",
        )
    if kind is HoldKind.RETENTION_POLICY and hold.guid:
        return ReleaseStep(
            hold,
            "Set-RetentionCompliancePolicy",
            "compliance",
            {"Identity": dashed_guid(hold.guid), "RemoveExchangeLocation": _location(mailbox)},
        )
    if kind is HoldKind.SKYPE_POLICY and hold.guid:
        return ReleaseStep(
            hold,
            "Set-RetentionCompliancePolicy",
            "compliance",
            {"Identity": dashed_guid(hold.guid), "RemoveSkypeLocation": _location(mailbox)},
            "Skype for Business location removal for an inactive mailbox is unconfirmed",
        )
    if kind is HoldKind.EDISCOVERY and hold.guid:
        return ReleaseStep(
            hold,
            "Set-CaseHoldPolicy",
            "compliance",
            {"Identity": dashed_guid(hold.guid), "RemoveExchangeLocation": _location(mailbox, case_hold=True)},
            "removes only this mailbox from the case hold; the case stays open",
        )
    return None


def release_plan(
    mailbox: InactiveMailbox, holds: Sequence[Hold], release_type: str, *, force: bool = False
) -> ReleasePlan:
    """The plan for ``holds release --type release_type`` on ``mailbox`` whose decoded holds are ``holds``.

    ``force`` lets an eDiscovery case hold be released (``--type ediscovery --force``); nothing forces a
    Preservation Lock.
    """
    selected = release_selection(holds, release_type)
    on_mailbox = set(holds)
    blockers: list[Blocker] = []
    steps: list[ReleaseStep] = []
    for hold in selected:
        blocker = _hold_blocker(hold, on_mailbox, force)
        if blocker is not None:
            blockers.append(blocker)
            continue
        step = _step(mailbox, hold)
        if step is not None:
            steps.append(step)
    if not selected:
        blockers.append(
            Blocker(
                "nothing-to-release",
                f"The mailbox has no {release_type} hold to release",
                "See its holds with imm holds show",
            )
        )
    released = {id(step.hold) for step in steps}
    remaining = tuple(hold for hold in holds if hold.preserves and id(hold) not in released)
    removes_last = bool(steps) and not remaining
    notes: list[str] = []
    only_delay = all(step.hold.kind in (HoldKind.DELAY, HoldKind.DELAY_RELEASE) for step in steps)
    if removes_last:
        consequence = LAST_DELAY_HOLD_CONSEQUENCE if only_delay else LAST_HOLD_CONSEQUENCE
    elif steps:
        kinds = ", ".join(dict.fromkeys(hold.kind.value for hold in remaining))
        consequence = f"{len(remaining)} other hold(s) still keep the mailbox inactive ({kinds})"
    else:
        consequence = "nothing is released"
    unknown_lock = [step.hold for step in steps if step.hold.locked is None]
    if unknown_lock:
        names = ", ".join(dict.fromkeys(h.policy_name or dashed_guid(h.guid or "") for h in unknown_lock))
        notes.append(
            f"Preservation Lock unknown for {names} (the policy could not be read): Exchange refuses the change if "
            "the policy is locked"
        )
    if steps and not only_delay:
        notes.append(
            f"Exchange applies a {DELAY_HOLD_DAYS}-day delay hold after any hold is removed (at its next Managed "
            "Folder Assistant run); the mailbox stays inactive until it ends or is released with --type delay"
        )
    return ReleasePlan(
        identity=mailbox.identity,
        release_type=release_type,
        selected=tuple(selected),
        steps=tuple(steps),
        blockers=tuple(blockers),
        remaining=remaining,
        removes_last_hold=removes_last,
        consequence=consequence,
        notes=tuple(notes),
    )
