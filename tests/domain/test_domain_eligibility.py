"""imm.domain.eligibility: every blocker, and release plans per --type with last-hold detection."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from imm.data.models import InactiveMailbox
from imm.domain.eligibility import (
    LAST_HOLD_CONSEQUENCE,
    RELEASE_TYPES,
    Blocker,
    consistency_warning,
    recovery_blockers,
    release_blockers,
    release_plan,
    release_selection,
    restore_blockers,
    restore_source_blockers,
)
from imm.domain.holds import HoldKind, PolicyInfo, decode_hold, decode_holds
from imm.errors import InputError

IDENTITY = "5c8b9f0e-3d2a-4b1c-9e8f-7a6b5c4d3e2f"
G1 = "7cfb30345d454ac0a989ab3041051209"
G1_DASHED = "7cfb3034-5d45-4ac0-a989-ab3041051209"
G2 = "1a0e3347f7f343a7aaad92e4e8a9066f"
G2_DASHED = "1a0e3347-f7f3-43a7-aaad-92e4e8a9066f"
G3 = "c0ba3ce811b6432a8751430937152491"
G3_DASHED = "c0ba3ce8-11b6-432a-8751-430937152491"
SMTP = "anna.berg@contoso.com"
GB = 1024**3


def mbx(**fields: Any) -> InactiveMailbox:
    base: dict[str, Any] = {
        "identity": IDENTITY,
        "name": "Anna Berg",
        "display_name": "Anna Berg",
        "primary_smtp": SMTP,
        "user_principal_name": SMTP,
        "when_soft_deleted": datetime(2024, 1, 1, tzinfo=UTC),
    }
    return InactiveMailbox(**{**base, **fields})


def codes(blockers: list[Blocker] | tuple[Blocker, ...]) -> list[str]:
    return [b.code for b in blockers]


# -------------------------------------------------------------------------------------------------- recover


def test_a_plain_mailbox_can_be_recovered() -> None:
    assert recovery_blockers(mbx(mailbox_locations=["Primary", "MainArchive"], archive_status="Active")) == []


def test_auto_expanding_archive_blocks_recovery() -> None:
    [blocker] = recovery_blockers(mbx(mailbox_locations=["Primary", "MainArchive", "AuxArchive", "AuxArchive"]))
    assert blocker == Blocker(
        "auto-expanding-archive",
        "The mailbox has an auto-expanding archive (AuxArchive locations)",
        "Export its content with a Content Search / eDiscovery export",
    )
    assert str(blocker) == "auto-expanding-archive: The mailbox has an auto-expanding archive (AuxArchive locations)"


def test_auto_expanding_flag_alone_blocks_recovery() -> None:
    [blocker] = recovery_blockers(mbx(auto_expanding_archive=True, mailbox_locations=["Primary"]))
    assert blocker.code == "auto-expanding-archive"
    assert blocker.message == "The mailbox has auto-expanding archiving enabled (AutoExpandingArchiveEnabled)"


def test_aux_primary_shards_block_recovery() -> None:
    [blocker] = recovery_blockers(mbx(mailbox_locations=["Primary", "AuxPrimary"]))
    assert blocker == Blocker(
        "aux-primary-shards",
        "The mailbox has additional primary shards (AuxPrimary locations) that cannot be recovered",
        "Restore its content into an existing mailbox instead (imm restore)",
    )


def test_account_in_its_30_day_window_blocks_recovery() -> None:
    [blocker] = recovery_blockers(mbx(external_directory_object_id="0f9e8d7c-6b5a-4939-8271-605f4e3d2c1b"))
    assert blocker.code == "user-restorable"
    assert blocker.message == (
        "The user account is still within its 30-day soft-delete window (ExternalDirectoryObjectId is set)"
    )
    assert blocker.alternative == "Restore the deleted user in the Microsoft 365 admin center or Entra ID instead"


def test_name_and_upn_conflicts() -> None:
    blockers = recovery_blockers(mbx(), name_taken=True, upn_taken=True)
    assert [str(b) for b in blockers] == [
        "name-taken: The name 'Anna Berg' is already used by another object",
        "upn-taken: The user name 'anna.berg@contoso.com' is already in use",
    ]


def test_conflicts_found_at_sync_block_recovery_under_its_own_names() -> None:
    """New-Mailbox.md: -Name and -MicrosoftOnlineServicesID must be unique ("…is used by another recipient
    object"); microsoft-365-docs#2814. Sync records the active recipient that holds the address."""
    blockers = recovery_blockers(mbx(smtp_conflict="Anna Berg (new)", upn_conflict="Anna Berg (new)"))
    assert [str(b) for b in blockers] == [
        "smtp-conflict: The primary address anna.berg@contoso.com is used by the active recipient 'Anna Berg (new)' "
        "(found at sync)",
        "upn-conflict: The user name anna.berg@contoso.com is used by the active recipient 'Anna Berg (new)' "
        "(found at sync)",
    ]
    assert blockers[0].alternative.startswith("Recover with a --upn of its own")
    # The recover preflight probes the UPN it was given instead of the mailbox's own.
    assert recovery_blockers(mbx(smtp_conflict="X", upn_conflict="X"), sync_conflicts=False) == []


@pytest.mark.parametrize(
    ("authentication", "code"),
    [("Federated", "federated-upn"), ("federated", "federated-upn"), ("", "upn-domain-not-accepted")],
)
def test_a_federated_or_unknown_upn_domain_blocks_the_recover(authentication: str, code: str) -> None:
    """domain.md §4 (recover-inactive-mailboxes-error): a federated UPN fails with "…represent a managed account,
    which doesn't match the namespace state, which is federated."; Get-AcceptedDomain's AuthenticationType
    (Managed | Federated, Set-AcceptedDomain -AuthenticationType) tells which domains are federated."""
    [blocker] = recovery_blockers(mbx(), upn_domain="woodgrovebank.com", domain_authentication=authentication)
    assert blocker.code == code
    assert "woodgrovebank.com" in blocker.message


def test_a_managed_or_unchecked_upn_domain_does_not_block() -> None:
    assert recovery_blockers(mbx(), upn_domain="contoso.com", domain_authentication="Managed") == []
    assert recovery_blockers(mbx(), upn_domain="contoso.com", domain_authentication=None) == []


def test_all_recovery_blockers_in_order() -> None:
    mailbox = mbx(
        mailbox_locations=["Primary", "AuxArchive", "AuxPrimary"],
        external_directory_object_id="0f9e8d7c-6b5a-4939-8271-605f4e3d2c1b",
    )
    assert codes(recovery_blockers(mailbox, name_taken=True, upn_taken=True)) == [
        "auto-expanding-archive",
        "aux-primary-shards",
        "user-restorable",
        "name-taken",
        "upn-taken",
    ]


# -------------------------------------------------------------------------------------------------- restore

TARGET: dict[str, Any] = {
    "ExchangeGuid": "11111111-2222-3333-4444-555555555555",
    "DistinguishedName": "CN=Bo Ek,OU=contoso.onmicrosoft.com,OU=Microsoft Exchange Hosted Organizations,DC=EURPR01",
    "IsInactiveMailbox": False,
    "ArchiveStatus": "Active",
    "ProhibitSendReceiveQuota": "50 GB (53,687,091,200 bytes)",
    "ArchiveQuota": "100 GB (107,374,182,400 bytes)",
    "TotalItemSize": "40 GB (42,949,672,960 bytes)",
    "ArchiveTotalItemSize": "1 GB (1,073,741,824 bytes)",
    "RestoreRequestCount": 2,
}


def test_restore_into_a_healthy_target() -> None:
    assert restore_blockers(mbx(size_mb=1024.0), TARGET, archive=False) == []
    assert restore_blockers(mbx(archive_status="Active", archive_size_mb=2048.0), TARGET, archive=True) == []


def test_restore_source_blockers() -> None:
    assert restore_source_blockers(mbx()) == []
    assert codes(restore_source_blockers(mbx(mailbox_locations=["AuxArchive"]))) == ["auto-expanding-archive"]
    [blocker] = restore_source_blockers(mbx(archive_status="None"), archive=True)
    assert blocker == Blocker(
        "no-archive",
        "The inactive mailbox has no archive to restore (ArchiveStatus None)",
        "Restore the primary mailbox instead",
    )


def test_missing_target() -> None:
    [blocker] = restore_blockers(mbx(), None, archive=False)
    assert blocker == Blocker(
        "target-missing", "The target mailbox does not exist", "Name an existing active mailbox as target"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"IsInactiveMailbox": True},
        {"IsInactiveMailbox": "True"},
        {"DistinguishedName": "CN=Soft,OU=Soft Deleted Objects,OU=contoso.onmicrosoft.com,DC=EURPR01"},
    ],
)
def test_inactive_or_soft_deleted_target(change: dict[str, Any]) -> None:
    assert codes(restore_blockers(mbx(), {**TARGET, **change}, archive=False)) == ["target-inactive"]


def test_archive_restore_needs_archives_on_both_sides() -> None:
    target = {**TARGET, "ArchiveStatus": "None"}
    assert codes(restore_blockers(mbx(archive_status="None"), target, archive=True)) == [
        "no-archive",
        "target-no-archive",
    ]


def test_target_over_quota() -> None:
    # 40 GB used + 10 GB + 1 MB incoming > 50 GB
    [blocker] = restore_blockers(mbx(size_mb=10 * 1024 + 1), TARGET, archive=False)
    assert blocker == Blocker(
        "target-over-quota",
        "The target's ProhibitSendReceiveQuota is 50 GB: 40 GB used + 10 GB to restore would exceed it",
        "Raise the target's quota, restore into its archive, or choose another target",
    )
    assert restore_blockers(mbx(size_mb=10 * 1024), TARGET, archive=False) == []  # exactly at the quota


def test_target_archive_over_quota() -> None:
    mailbox = mbx(archive_status="Active", archive_size_mb=99.5 * 1024)
    [blocker] = restore_blockers(mailbox, TARGET, archive=True)
    assert blocker.code == "target-archive-over-quota"
    assert blocker.message == "The target's ArchiveQuota is 100 GB: 1 GB used + 99.5 GB to restore would exceed it"


@pytest.mark.parametrize(
    "change",
    [
        {"ProhibitSendReceiveQuota": "Unlimited"},
        {"ProhibitSendReceiveQuota": None},
        {"TotalItemSize": None},
        {"TotalItemSize": "not a size"},
    ],
)
def test_quota_check_skipped_when_unlimited_or_unknown(change: dict[str, Any]) -> None:
    assert restore_blockers(mbx(size_mb=500 * 1024), {**TARGET, **change}, archive=False) == []


@pytest.mark.parametrize(
    ("requests", "blocked"),
    [
        ({"RestoreRequestCount": 9}, False),
        ({"RestoreRequestCount": 10}, True),
        ({"RestoreRequestCount": None, "RestoreRequests": [{}] * 10}, True),
        ({"RestoreRequestCount": None, "RestoreRequests": [{}] * 3}, False),
        ({"RestoreRequestCount": "x"}, False),
    ],
)
def test_too_many_auto_named_restore_requests(requests: dict[str, Any], blocked: bool) -> None:
    """New-MailboxRestoreRequest.md -Name: Exchange generates up to 10 default names (MailboxRestore, 1-9)."""
    blockers = restore_blockers(mbx(), {**TARGET, **requests}, archive=False, named=False)
    assert codes(blockers) == (["too-many-restore-requests"] if blocked else [])
    if blocked:
        assert blockers[0].message == "The target already has 10 restore requests (at most 10 without a -Name)"
    # a request with its own -Name is not limited that way (imm names every request it starts)
    assert restore_blockers(mbx(), {**TARGET, **requests}, archive=False) == []


def test_the_targets_recoverable_items_quota_is_checked_apart_from_its_mailbox_quota() -> None:
    """recoverable-items-folder article: the folder has its own quota (30 GB, 100 GB on hold); the restore copies the
    source's Recoverable Items unless -ExcludeDumpster (New-MailboxRestoreRequest.md)."""
    target = {
        **TARGET,
        "RecoverableItemsQuota": "30 GB (32,212,254,720 bytes)",
        "TotalDeletedItemSize": "29 GB (31,138,512,896 bytes)",
    }
    source = mbx(size_mb=100, recoverable_items_mb=2048)  # 100 MB of items fit the mailbox quota; 2 GB RI do not
    [blocker] = restore_blockers(source, target, archive=False)
    assert blocker.code == "target-recoverable-items-over-quota"
    assert blocker.message == (
        "The target's RecoverableItemsQuota is 30 GB: 29 GB used + 2 GB of Recoverable Items to restore would exceed it"
    )
    assert "--exclude-dumpster" in blocker.alternative
    assert restore_blockers(source, target, archive=False, exclude_dumpster=True) == []
    assert restore_blockers(mbx(size_mb=100, recoverable_items_mb=512), target, archive=False) == []


# -------------------------------------------------------------------------------------------------- release

POLICIES = {
    G1: PolicyInfo(guid=G1, name="Finance 10y", retention_days=3650, locked=True),
    G2: PolicyInfo(guid=G2, name="HR 7y", retention_days=2555),
    G3: PolicyInfo(guid=G3, name="Case 42", kind="case-hold"),
}


def test_release_litigation_that_is_the_last_hold() -> None:
    mailbox = mbx(litigation_hold_enabled=True, litigation_hold_duration="365.00:00:00")
    holds = decode_holds(mailbox, [], {})
    plan = release_plan(mailbox, holds, "litigation")
    assert [(s.cmdlet, s.endpoint, s.parameters) for s in plan.steps] == [
        ("Set-Mailbox", "exchange", {"Identity": IDENTITY, "InactiveMailbox": True, "LitigationHoldEnabled": False})
    ]
    assert plan.blockers == ()
    assert plan.remaining == ()
    assert plan.removes_last_hold is True
    assert plan.consequence == LAST_HOLD_CONSEQUENCE
    # identify-a-hold article ("Managing mailboxes on delay hold"); delete-an-inactive-mailbox ("More
    # information": InactiveMailboxRetireTime + 183 days, recoverable meanwhile); New-MailboxRestoreRequest.md.
    assert plan.consequence == (
        "this removes the last hold: Exchange keeps the mailbox under a 30-day delay hold (applied at its next "
        "Managed Folder Assistant run), then soft-deletes it and purges it 183 days after the hold's removal; until "
        "the purge its content can still be restored into another mailbox (imm restore)"
    )
    assert "no documented undo" not in plan.consequence
    assert plan.executable is True
    assert plan.notes == (
        "Exchange applies a 30-day delay hold after any hold is removed (at its next Managed Folder Assistant run); "
        "the mailbox stays inactive until it ends or is released with --type delay",
    )


def test_release_of_the_last_delay_hold_soft_deletes_without_a_further_delay() -> None:
    from imm.domain.eligibility import LAST_DELAY_HOLD_CONSEQUENCE

    mailbox = mbx(delay_hold=True)
    plan = release_plan(mailbox, decode_holds(mailbox, [], {}), "delay")
    assert [s.parameters for s in plan.steps] == [
        {"Identity": IDENTITY, "InactiveMailbox": True, "RemoveDelayHoldApplied": True}
    ]
    assert plan.removes_last_hold is True
    assert plan.consequence == LAST_DELAY_HOLD_CONSEQUENCE
    assert plan.consequence.startswith("this removes the last hold, a delay hold: Exchange soft-deletes the mailbox")
    assert plan.notes == ()  # removing a delay hold places no new one


def test_a_soft_deleted_mailbox_cannot_be_recovered_but_can_be_restored() -> None:
    from imm.domain.eligibility import recovery_blockers, restore_source_blockers

    mailbox = mbx(is_inactive_mailbox=False, was_inactive_mailbox=True, purge_on=datetime(2027, 6, 1, tzinfo=UTC))
    [blocker] = recovery_blockers(mailbox)
    assert blocker.code == "soft-deleted"
    assert blocker.message == (
        "The mailbox is soft-deleted, no longer inactive (purged from 2027-06-01): New-Mailbox -InactiveMailbox "
        "cannot recover it"
    )
    assert blocker.alternative == "Restore its content into an existing mailbox with imm restore before it is purged"
    assert restore_source_blockers(mailbox) == []  # New-MailboxRestoreRequest -SourceMailbox takes it


def test_release_litigation_when_other_holds_remain() -> None:
    mailbox = mbx(litigation_hold_enabled=True, compliance_tag_hold=True, in_place_holds=[f"UniH{G3}"])
    holds = decode_holds(mailbox, [], POLICIES)
    plan = release_plan(mailbox, holds, "litigation")
    assert plan.removes_last_hold is False
    assert [h.kind for h in plan.remaining] == [HoldKind.EDISCOVERY, HoldKind.COMPLIANCE_TAG]
    assert plan.consequence == "2 other hold(s) still keep the mailbox inactive (ediscovery, label)"


@pytest.mark.parametrize(
    ("flag", "release_type", "switch"),
    [
        ("delay_hold", "delay", "RemoveDelayHoldApplied"),
        ("delay_release_hold", "delay-release", "RemoveDelayReleaseHoldApplied"),
        ("compliance_tag_hold", "label", "RemoveComplianceTagHoldApplied"),
    ],
)
def test_release_flag_holds(flag: str, release_type: str, switch: str) -> None:
    mailbox = mbx(**{flag: True})
    plan = release_plan(mailbox, decode_holds(mailbox, [], {}), release_type)
    assert [(s.cmdlet, s.endpoint, s.parameters) for s in plan.steps] == [
        ("Set-Mailbox", "exchange", {"Identity": IDENTITY, "InactiveMailbox": True, switch: True})
    ]
    assert plan.removes_last_hold is True
    has_note = release_type == "label"  # releasing a delay hold does not start another delay
    assert bool(plan.notes) is has_note


def test_release_org_policy_by_exclusion() -> None:
    mailbox = mbx()
    holds = decode_holds(mailbox, [f"mbx{G2}:3"], POLICIES)
    plan = release_plan(mailbox, holds, "org-policy")
    [step] = plan.steps
    assert (step.cmdlet, step.endpoint, step.parameters) == (
        "Set-Mailbox",
        "exchange",
        {"Identity": IDENTITY, "InactiveMailbox": True, "ExcludeFromOrgHolds": G2},
    )
    assert step.note == "excludes this mailbox only; the policy keeps holding every other mailbox"
    assert plan.removes_last_hold is True


def test_release_policies_naming_the_mailbox() -> None:
    mailbox = mbx(in_place_holds=[f"mbx{G2}:3", f"skp{G2}:3", f"mbx{G3}:1"])
    holds = decode_holds(mailbox, [], POLICIES)
    plan = release_plan(mailbox, holds, "policy")
    assert [(s.cmdlet, s.endpoint, s.parameters) for s in plan.steps] == [
        (
            "Set-RetentionCompliancePolicy",
            "compliance",
            {"Identity": G2_DASHED, "RemoveExchangeLocation": "anna.berg@contoso.com"},
        ),
        (
            "Set-RetentionCompliancePolicy",
            "compliance",
            {"Identity": G2_DASHED, "RemoveSkypeLocation": "anna.berg@contoso.com"},
        ),
    ]  # the delete-only policy (mbx…:1) does not hold the mailbox and is not selected
    assert plan.removes_last_hold is True


def test_locked_policy_cannot_be_released() -> None:
    mailbox = mbx(in_place_holds=[f"mbx{G1}:3"])
    holds = decode_holds(mailbox, [], POLICIES)
    plan = release_plan(mailbox, holds, "policy")
    assert plan.steps == ()
    assert plan.blockers == (
        Blocker(
            "preservation-lock",
            "Policy 'Finance 10y' is under Preservation Lock: the mailbox cannot be removed from it",
            "Nothing can release a locked policy; the mailbox stays inactive while the policy applies "
            "(escalate to Microsoft Support if it must go)",
            subject=f"mbx{G1}:3",
        ),
    )
    assert plan.removes_last_hold is False
    assert plan.executable is False
    assert plan.consequence == "nothing is released"
    # not even --force
    assert codes(release_plan(mailbox, holds, "policy", force=True).blockers) == ["preservation-lock"]


def test_ediscovery_needs_force() -> None:
    mailbox = mbx(in_place_holds=[f"UniH{G3}"])
    holds = decode_holds(mailbox, [], POLICIES)
    plan = release_plan(mailbox, holds, "ediscovery")
    [blocker] = plan.blockers
    assert blocker == Blocker(
        "ediscovery-case-hold",
        "eDiscovery case hold 'Case 42': releasing or closing the case deletes the inactive mailboxes that depend "
        "on it",
        "Ask the case owner; re-run with --force-ediscovery to remove only this mailbox from the case hold",
        forceable=True,
        subject=f"UniH{G3}",
    )
    assert plan.steps == ()
    forced = release_plan(mailbox, holds, "ediscovery", force=True)
    assert forced.blockers == ()
    assert [(s.cmdlet, s.endpoint, s.parameters) for s in forced.steps] == [
        (
            "Set-CaseHoldPolicy",
            "compliance",
            {"Identity": G3_DASHED, "RemoveExchangeLocation": ".anna.berg@contoso.com"},
        )
    ]
    assert forced.removes_last_hold is True


def test_all_releasable_leaves_locked_ediscovery_and_inplace() -> None:
    mailbox = mbx(
        litigation_hold_enabled=True,
        in_place_holds=[f"mbx{G1}:3", f"mbx{G2}:2", f"UniH{G3}", "a" * 32],
        delay_hold=True,
        compliance_tag_hold=True,
    )
    holds = decode_holds(mailbox, ["mbx" + "b" * 32 + ":2"], POLICIES)
    plan = release_plan(mailbox, holds, "all-unlocked")
    assert [s.hold.kind.value for s in plan.steps] == ["litigation", "retention-policy", "org-policy", "label", "delay"]
    assert plan.blockers == ()
    assert [h.kind.value for h in plan.remaining] == ["retention-policy", "ediscovery", "inplace"]
    assert plan.remaining[0].policy_name == "Finance 10y"
    assert plan.removes_last_hold is False
    assert plan.consequence == "3 other hold(s) still keep the mailbox inactive (retention-policy, ediscovery, inplace)"


def test_all_releasable_on_a_mailbox_with_only_releasable_holds_removes_the_last() -> None:
    mailbox = mbx(litigation_hold_enabled=True, delay_hold=True)
    plan = release_plan(mailbox, decode_holds(mailbox, [], {}), "all-unlocked")
    assert len(plan.steps) == 2
    assert plan.removes_last_hold is True
    assert plan.consequence == LAST_HOLD_CONSEQUENCE


def test_excluded_org_policies_are_not_releasable_holds() -> None:
    mailbox = mbx(in_place_holds=[f"-mbx{G2}"])
    holds = decode_holds(mailbox, [f"mbx{G2}:3"], POLICIES)
    plan = release_plan(mailbox, holds, "org-policy")
    assert plan.steps == ()
    assert codes(plan.blockers) == ["nothing-to-release"]
    assert plan.blockers[0].message == "The mailbox has no org-policy hold to release"


def test_nothing_to_release() -> None:
    plan = release_plan(mbx(), [], "litigation")
    assert codes(plan.blockers) == ["nothing-to-release"]
    assert plan.removes_last_hold is False
    assert plan.executable is False


def test_unknown_release_type() -> None:
    with pytest.raises(InputError) as err:
        release_plan(mbx(), [], "everything")
    assert err.value.message == (
        "unknown hold type 'everything' (choose from: litigation, delay, delay-release, label, org-policy, policy, "
        "ediscovery, all-unlocked)"
    )
    assert RELEASE_TYPES[-1] == "all-unlocked"


def test_release_blockers_for_manual_holds() -> None:
    inplace, unknown, policy = decode_hold(f"cld{G2}"), decode_hold("Mystery"), decode_hold(f"mbx{G1}:2")
    holds = [inplace, unknown]
    blockers = release_blockers(holds, [inplace, unknown, policy])
    # domain.md §2 (identify-a-hold article): Get-MailboxSearch -InPlaceHoldIdentity takes the GUID with its cld
    assert [str(b) for b in blockers] == [
        f"legacy-inplace-hold: Legacy In-Place Hold cld{G2} cannot be released by imm",
        "unknown-hold: Unrecognised hold value 'Mystery'",
        f"not-on-mailbox: The hold mbx{G1}:2 is not on this mailbox",
    ]
    assert [b.subject for b in blockers] == [f"cld{G2}", "Mystery", f"mbx{G1}:2"]
    assert blockers[0].alternative == (
        f"Find it with Get-MailboxSearch -InPlaceHoldIdentity cld{G2}, then Set-MailboxSearch -InPlaceHoldEnabled "
        "$false and Remove-MailboxSearch, or Set-Mailbox -RemoveOrphanedHolds when the search no longer exists"
    )


def test_selection_ignores_holds_that_do_not_preserve() -> None:
    holds = [decode_hold(f"mbx{G1}:1"), decode_hold(f"mbx{G2}:2")]
    assert [h.guid for h in release_selection(holds, "policy")] == [G2]


def test_plan_serialises() -> None:
    mailbox = mbx(litigation_hold_enabled=True)
    data = release_plan(mailbox, decode_holds(mailbox, [], {}), "litigation").to_dict()
    assert data["removes_last_hold"] is True
    assert data["steps"][0]["cmdlet"] == "Set-Mailbox"
    assert data["steps"][0]["parameters"] == {
        "Identity": IDENTITY,
        "InactiveMailbox": True,
        "LitigationHoldEnabled": False,
    }
    assert data["remaining"] == []
    assert data["selected"][0]["kind"] == "litigation"


def test_location_falls_back_to_the_guid_without_an_address() -> None:
    mailbox = mbx(primary_smtp="", in_place_holds=[f"mbx{G2}:2"])
    [step] = release_plan(mailbox, decode_holds(mailbox, [], {}), "policy").steps
    assert step.parameters["RemoveExchangeLocation"] == IDENTITY


# ------------------------------------------------------------------------------------ restore outcome (DCS)
@pytest.mark.parametrize(
    ("score", "skipped", "warned"),
    [
        (None, None, False),  # not reported (still running, or an older service)
        ("Perfect", 0, False),
        ("Good", 4, False),  # "the data loss wasn't impactful"
        ("Investigate", 3, True),  # "a small amount of noticeable data loss"
        ("Poor", 0, True),  # "major data loss"
        ("Unheard", None, True),  # unknown: the safe side
    ],
)
def test_a_restore_scored_below_good_is_a_warning(score: str | None, skipped: int | None, warned: bool) -> None:
    """Learn, track-prevent-data-loss-dcs: the grades Perfect, Good, Investigate, Poor of the DataConsistencyScore;
    New-MailboxRestoreRequest.md: review the score and the skipped items after the restore completes."""
    text = consistency_warning(score, skipped)
    assert bool(text) is warned
    if score == "Investigate":
        assert text.startswith("DataConsistencyScore Investigate; 3 item(s) skipped: data was lost;")


# ------------------------------------------------------------------------------- policies of every kind: release
def _with(info: PolicyInfo, raw: str) -> tuple[InactiveMailbox, list[Any]]:
    mailbox = mbx(in_place_holds=[raw], litigation_hold_enabled=True)
    return mailbox, decode_holds(mailbox, [], {info.guid: info})


def test_an_app_policy_excludes_the_deleted_mailbox_with_deleted_resources() -> None:
    """Set-AppRetentionCompliancePolicy Example 2: -AddExchangeLocationException with -DeletedResources naming the
    soft-deleted mailbox by its address."""
    mailbox, holds = _with(
        PolicyInfo(guid=G1, name="Channels", kind="app", workloads=("User:MicrosoftTeams",)), f"mbx{G1}:2"
    )
    [step] = release_plan(mailbox, holds, "policy").steps
    assert (step.cmdlet, step.parameters) == (
        "Set-AppRetentionCompliancePolicy",
        {
            "Identity": G1_DASHED,
            "AddExchangeLocationException": SMTP,
            "DeletedResources": f'[{{"EmailAddress": "{SMTP}"}}]',
        },
    )


def test_a_teams_chats_policy_takes_a_chat_exception() -> None:
    """Set-RetentionCompliancePolicy Example 5: -AddTeamsChatLocationException … -DeletedResources."""
    mailbox, holds = _with(PolicyInfo(guid=G1, name="Chats", workloads=("teams-chat",)), f"mbx{G1}:2")
    [step] = release_plan(mailbox, holds, "policy").steps
    assert step.parameters["AddTeamsChatLocationException"] == SMTP
    assert "Teams chats stored in this mailbox" in holds[1].description


def test_an_adaptive_policy_is_changed_through_its_scope() -> None:
    """-RemoveExchangeLocation belongs to the static ("Identity") parameter set (Set-RetentionCompliancePolicy.md)."""
    mailbox, holds = _with(PolicyInfo(guid=G1, name="Leavers", adaptive=True, scopes=("Leavers",)), f"mbx{G1}:2")
    plan = release_plan(mailbox, holds, "policy")
    assert plan.steps == () and codes(plan.blockers) == ["adaptive-policy"]
    assert "Set-AdaptiveScope" in plan.blockers[0].alternative


def test_a_label_policy_is_described_as_labels_and_a_public_folder_policy_holds_no_mailbox() -> None:
    """identify-a-hold article: label policies show as mbx<guid>:1; an mbx entry may cover public folders only."""
    _, holds = _with(PolicyInfo(guid=G1, name="Labels", label=True), f"mbx{G1}:1")
    assert holds[1].description.startswith("Retention label policy 'Labels': it publishes or applies retention labels")
    assert holds[1].preserves is False
    _, holds = _with(PolicyInfo(guid=G1, name="PF", workloads=("public-folders",)), f"mbx{G1}:2")
    assert holds[1].preserves is False and "public folders" in holds[1].description


def test_only_case_holds_get_the_leading_period() -> None:
    """domain.md §6: the period prefix is documented for New-/Set-CaseHoldPolicy only."""
    mailbox, holds = _with(PolicyInfo(guid=G1, name="Plain"), f"mbx{G1}:2")
    [step] = release_plan(mailbox, holds, "policy").steps
    assert step.parameters == {"Identity": G1_DASHED, "RemoveExchangeLocation": SMTP}
