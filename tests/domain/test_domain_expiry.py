"""imm.domain.expiry: when every hold has run out, at the day boundaries, and the holds that never do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imm.data.models import InactiveMailbox
from imm.domain.expiry import DurationChange, Expiry, duration_change, holds_expiry
from imm.domain.holds import HoldAction, PolicyInfo, decode_holds

G1 = "7cfb30345d454ac0a989ab3041051209"
G2 = "1a0e3347f7f343a7aaad92e4e8a9066f"
G3 = "c0ba3ce811b6432a8751430937152491"
DELETED = datetime(2025, 11, 28, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def mbx(**fields: Any) -> InactiveMailbox:
    base: dict[str, Any] = {"identity": "5c8b9f0e-3d2a-4b1c-9e8f-7a6b5c4d3e2f", "when_soft_deleted": DELETED}
    return InactiveMailbox(**{**base, **fields})


def expiry_of(
    mailbox: InactiveMailbox, org: list[str] | None = None, policies: Any = None, now: datetime = NOW
) -> Expiry:
    return holds_expiry(mailbox, decode_holds(mailbox, org or [], policies or {}), now)


# -------------------------------------------------------------------------------- litigation at the boundaries


@pytest.mark.parametrize(
    ("now", "releasable"),
    [
        (datetime(2026, 11, 27, 12, 0, tzinfo=UTC), False),  # expires tomorrow
        (datetime(2026, 11, 28, 9, 59, 59, tzinfo=UTC), False),  # expires later today
        (datetime(2026, 11, 28, 10, 0, tzinfo=UTC), True),  # expires this instant
        (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), True),  # expired earlier today
        (datetime(2026, 11, 29, 12, 0, tzinfo=UTC), True),  # expired yesterday
    ],
)
def test_litigation_duration_boundaries(now: datetime, releasable: bool) -> None:
    mailbox = mbx(litigation_hold_enabled=True, litigation_hold_duration="365.00:00:00")
    result = expiry_of(mailbox, now=now)
    assert result.expires_on == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert result.releasable is releasable
    detail = (
        "Litigation Hold: 365 days from each item's received or created date;"
        " the newest items date from about the deletion on 2025-11-28"
    )
    if releasable:
        assert result.reason == f"every hold has run out; the last on 2026-11-28 ({detail})"
    else:
        assert result.reason == f"every hold runs out by 2026-11-28 ({detail})"


def test_yesterday_today_tomorrow_by_deletion_date() -> None:
    """With ``now`` fixed, mailboxes deleted 365 days ago +/- one day."""
    for shift, releasable in ((-1, True), (0, True), (1, False)):
        deleted = NOW - timedelta(days=365) + timedelta(days=shift)
        mailbox = mbx(when_soft_deleted=deleted, litigation_hold_enabled=True, litigation_hold_duration="365.00:00:00")
        result = expiry_of(mailbox)
        assert result.expires_on == NOW + timedelta(days=shift)
        assert result.releasable is releasable


def test_unlimited_litigation_never_expires() -> None:
    result = expiry_of(mbx(litigation_hold_enabled=True, litigation_hold_duration="Unlimited"))
    assert result == Expiry(None, "never by itself: Litigation Hold is unlimited", False)


def test_litigation_without_deletion_date() -> None:
    mailbox = mbx(when_soft_deleted=None, litigation_hold_enabled=True, litigation_hold_duration="30.00:00:00")
    assert expiry_of(mailbox) == Expiry(
        None, "never by itself: Litigation Hold has a duration but the deletion date is unknown", False
    )


# ---------------------------------------------------------------------------------------------- never expiring


def test_ediscovery_never_expires() -> None:
    policies = {G1: PolicyInfo(guid=G1, name="Case 7", kind="case-hold")}
    assert expiry_of(mbx(in_place_holds=[f"UniH{G1}"]), policies=policies) == Expiry(
        None, "never by itself: eDiscovery case hold 'Case 7' has no duration", False
    )


def test_locked_policy_never_expires_even_with_a_duration() -> None:
    policies = {G1: PolicyInfo(guid=G1, name="SEC 17a-4", locked=True, retention_days=30)}
    assert expiry_of(mbx(in_place_holds=[f"mbx{G1}:3"]), policies=policies) == Expiry(
        None, "never by itself: retention policy 'SEC 17a-4' is under Preservation Lock", False
    )


def test_policy_with_unknown_or_unlimited_duration() -> None:
    assert expiry_of(mbx(in_place_holds=[f"mbx{G1}:2"])).reason == (
        f"never by itself: retention policy {G1}: its duration is unknown"
    )
    policies = {G1: PolicyInfo(guid=G1, name="Forever", retention_days=None)}
    assert expiry_of(mbx(in_place_holds=[f"mbx{G1}:2"]), policies=policies).reason == (
        "never by itself: retention policy 'Forever' retains without limit"
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"in_place_holds": [G3]}, f"legacy In-Place Hold {G3} has no duration imm can read"),
        ({"in_place_holds": ["odd-value"]}, "unrecognised hold 'odd-value'"),
        ({"compliance_tag_hold": True}, "retention label hold: the labels' durations are not visible on the mailbox"),
    ],
)
def test_other_holds_never_expire(fields: dict[str, Any], reason: str) -> None:
    assert expiry_of(mbx(**fields)) == Expiry(None, f"never by itself: {reason}", False)


def test_one_never_expiring_hold_decides_and_more_are_counted() -> None:
    mailbox = mbx(
        litigation_hold_enabled=True,
        litigation_hold_duration="30.00:00:00",
        in_place_holds=[f"UniH{G1}", G3],
    )
    result = expiry_of(mailbox)
    assert result == Expiry(None, f"never by itself: eDiscovery case hold {G1} has no duration (and 1 more)", False)


# -------------------------------------------------------------------------------------------- policies with time


def test_retention_policy_duration_counts_from_deletion() -> None:
    policies = {G1: PolicyInfo(guid=G1, name="Mail 1y", retention_days=365, action=HoldAction.RETAIN_THEN_DELETE)}
    result = expiry_of(mbx(in_place_holds=[f"mbx{G1}:3"]), policies=policies)
    assert result.expires_on == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert result.releasable is True
    assert result.reason == (
        "every hold has run out; the last on 2026-11-28 (retention policy 'Mail 1y': 365 days from each item's "
        "creation or last change;"
        " the newest items date from about the deletion on "
        "2025-11-28)"
    )


def test_latest_hold_decides() -> None:
    policies = {G2: PolicyInfo(guid=G2, name="Org 3y", retention_days=1095)}
    mailbox = mbx(litigation_hold_enabled=True, litigation_hold_duration="365.00:00:00")
    result = expiry_of(mailbox, org=[f"mbx{G2}:3"], policies=policies)
    assert result.expires_on == DELETED + timedelta(days=1095)
    assert result.releasable is False
    assert result.reason == (
        "every hold runs out by 2028-11-27 (retention policy 'Org 3y': 1,095 days from each item's "
        "creation or last change;"
        " the newest items date from about the deletion on 2025-11-28)"
    )


def test_org_policy_excluded_does_not_count() -> None:
    mailbox = mbx(in_place_holds=[f"-mbx{G2}"])
    assert expiry_of(mailbox, org=[f"mbx{G2}:2"]) == Expiry(None, "no hold keeps this mailbox inactive", True)


# ----------------------------------------------------------------------------------------------------- delays


# Delay holds. Source: ediscovery-identify-a-hold-on-an-exchange-online-mailbox, "Managing mailboxes on delay
# hold": applied after ANY hold is removed, at the next Managed Folder Assistant run (a ~7-day cycle, domain.md §1),
# removed by Microsoft after 30 days; HoldTracking (Export-MailboxDiagnosticLogs.md, Set-Mailbox.md
# -RemoveDelayHoldApplied) dates the removal. A mailbox with a delay hold is never releasable now.
def test_delay_hold_estimated_from_when_changed_with_one_mfa_cycle() -> None:
    changed = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    result = expiry_of(mbx(delay_hold=True, when_changed=changed))
    assert result == Expiry(
        datetime(2026, 12, 27, 8, 0, tzinfo=UTC),  # 20 Nov + 30 days + 7 days
        "every hold runs out by 2026-12-27 (delay hold until ≈ 2026-12-27 (estimated from the mailbox's last "
        "change on 2026-11-20 (no HoldTracking date): 30 days plus one Managed Folder Assistant cycle (7 days)))",
        False,
    )


def test_delay_hold_dated_by_hold_tracking() -> None:
    removed = datetime(2026, 11, 10, 6, 0, tzinfo=UTC)
    result = expiry_of(mbx(delay_hold=True, when_changed=NOW, last_hold_removed=removed))
    assert result.expires_on == datetime(2026, 12, 17, 6, 0, tzinfo=UTC)  # removal + 7 + 30 days
    assert "a hold was removed on 2026-11-10 (HoldTracking)" in result.reason
    assert result.releasable is False


def test_delay_hold_long_past_its_estimate_is_still_not_releasable() -> None:
    changed = datetime(2026, 9, 1, tzinfo=UTC)
    result = expiry_of(mbx(delay_release_hold=True, when_changed=changed))
    assert result.expires_on == datetime(2026, 10, 8, tzinfo=UTC)
    assert result.releasable is False
    assert result.reason == (
        "delay hold until ≈ 2026-10-08 is still applied; Exchange removes it at a Managed Folder Assistant run, "
        "or release it with --type delay"
    )


def test_delay_hold_beside_expired_holds_keeps_the_mailbox_from_being_releasable() -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    mailbox = mbx(
        when_soft_deleted=old,
        litigation_hold_enabled=True,
        litigation_hold_duration="30.00:00:00",
        delay_hold=True,
        when_changed=NOW - timedelta(days=2),
    )
    result = expiry_of(mailbox)
    assert result.releasable is False
    assert result.expires_on == NOW + timedelta(days=35)
    assert "delay hold until ≈ 2027-01-02" in result.reason


def test_delay_hold_without_a_date_is_estimated_from_today() -> None:
    result = expiry_of(mbx(delay_hold=True, when_changed=None))
    assert result == Expiry(
        NOW + timedelta(days=37),
        "every hold runs out by 2027-01-04 (delay hold until ≈ 2027-01-04 (estimated from today: 30 days plus one "
        "Managed Folder Assistant cycle))",
        False,
    )
    future = expiry_of(mbx(delay_hold=True, when_changed=NOW + timedelta(days=2)))  # clock skew: not trusted
    assert future.expires_on == NOW + timedelta(days=37)


def test_a_hold_removed_before_the_mfa_ran_means_a_delay_hold_is_still_to_come() -> None:
    removed = NOW - timedelta(days=1)
    result = expiry_of(mbx(last_hold_removed=removed))  # no hold left, no delay flag yet
    assert result.releasable is False
    assert result.expires_on == removed + timedelta(days=37)
    assert result.reason.startswith("every hold runs out by 2027-01-03 (delay hold expected until ≈ 2027-01-03")
    long_ago = expiry_of(mbx(last_hold_removed=NOW - timedelta(days=60)))  # that delay hold has come and gone
    assert long_ago == Expiry(None, "no hold keeps this mailbox inactive", True)


def test_a_soft_deleted_mailbox_is_never_releasable() -> None:
    result = expiry_of(mbx(is_inactive_mailbox=False, was_inactive_mailbox=True))
    assert result == Expiry(None, "soft-deleted: no hold is left; the mailbox awaits its purge", False)


# ---------------------------------------------------------------------------------------------- no hold at all


def test_no_preserving_hold_is_releasable_now() -> None:
    assert expiry_of(mbx()) == Expiry(None, "no hold keeps this mailbox inactive", True)
    delete_only = mbx(in_place_holds=[f"mbx{G1}:1"])
    assert expiry_of(delete_only) == Expiry(None, "no hold keeps this mailbox inactive", True)


def test_hold_expiry_of_one_hold() -> None:
    from imm.domain.expiry import hold_expiry

    mailbox = mbx(litigation_hold_enabled=True, litigation_hold_duration="30.00:00:00")
    [hold] = decode_holds(mailbox, [], {})
    assert hold_expiry(mailbox, hold, NOW) == (
        DELETED + timedelta(days=30),
        "Litigation Hold: 30 days from each item's received or created date;"
        " the newest items date from about the deletion on 2025-11-28",
    )


# ---------------------------------------------------------------------------------- set-duration (duration_change)
# Set-Mailbox.md -LitigationHoldDuration: "The duration is calculated from the date a mailbox item is received or
# created"; "unlimited, which means items are held indefinitely or until the hold is removed". -RecalculateInactive-
# Mailbox "might lead to the soft-deletion of the mailbox if all holds on the mailbox have expired".
def _change(mailbox: InactiveMailbox, days: int | None, org: list[str] | None = None) -> DurationChange:
    return duration_change(mailbox, decode_holds(mailbox, org or [], {}), days, NOW)


def test_a_duration_longer_than_the_newest_content_keeps_the_newest_items_held() -> None:
    change = _change(mbx(litigation_hold_enabled=True, litigation_hold_duration="30.00:00:00"), 730)
    assert change.ends_on == DELETED + timedelta(days=730)
    assert (change.holds_nothing, change.may_soft_delete) == (False, False)
    assert change.lines == (
        "Litigation Hold then runs out on 2027-11-28 (730 days from each item's received or created date; the newest "
        "items date from about the deletion on 2025-11-28)",
    )


def test_a_duration_shorter_than_the_newest_content_warns_of_soft_deletion_when_nothing_else_holds() -> None:
    change = _change(mbx(litigation_hold_enabled=True), 100)
    assert (change.holds_nothing, change.may_soft_delete) == (True, True)
    assert change.lines[1] == (
        "Warning: 100 days is shorter than the age of the mailbox's newest content (≈ 365 days, deleted on "
        "2025-11-28): the end date is in the past and Litigation Hold then holds no item"
    )
    assert "-RecalculateInactiveMailbox" in change.lines[2]
    assert change.consequence.startswith("Litigation Hold no longer holds any item and no other hold keeps")


def test_a_duration_shorter_than_the_newest_content_with_another_hold_says_the_mailbox_stays() -> None:
    change = _change(mbx(litigation_hold_enabled=True, in_place_holds=[f"UniH{G1}"]), 100)
    assert (change.holds_nothing, change.may_soft_delete) == (True, False)
    assert change.lines[-1] == "Other holds still keep the mailbox inactive (ediscovery)"


def test_unlimited_says_every_item_stays_held() -> None:
    change = _change(mbx(litigation_hold_enabled=True, litigation_hold_duration="30.00:00:00"), None)
    assert change.lines == ("Unlimited: every item stays held by Litigation Hold until the hold is removed",)
    assert "no longer held" not in change.consequence


# ------------------------------------------------------------------------------------ leaver retention schedule
# Counted from WhenSoftDeleted, when the mailbox became inactive (create-and-manage-inactive-mailboxes); the holds
# it is carried by are Litigation Hold and unlocked retention policies (what Set-Mailbox -LitigationHoldEnabled and
# Set-RetentionCompliancePolicy / -ExcludeFromOrgHolds release, domain.md §6).
def _schedule(mailbox: InactiveMailbox, days: int, now: datetime = NOW, org: list[str] | None = None) -> Any:
    from imm.domain.expiry import leaver_schedule

    return leaver_schedule(mailbox, decode_holds(mailbox, org or [], {}), days, now)


def test_a_schedule_within_its_period_has_not_ended_and_names_the_holds_then_in_force() -> None:
    schedule = _schedule(mbx(litigation_hold_enabled=True, in_place_holds=[f"UniH{G1}"]), 730)
    assert schedule.ends_on == DELETED + timedelta(days=730)
    assert (schedule.ended, schedule.release_ok) == (False, False)
    assert schedule.holds_after == ("litigation", "ediscovery")


def test_an_ended_schedule_releases_only_when_its_own_holds_remain() -> None:
    ended = _schedule(mbx(litigation_hold_enabled=True), 100)
    assert (ended.ended, ended.release_ok, ended.holds_after) == (True, True, ("litigation",))
    case = _schedule(mbx(litigation_hold_enabled=True, in_place_holds=[f"UniH{G1}"]), 100)
    assert (case.ended, case.release_ok) == (True, False)  # the case hold is not the schedule's
    delayed = _schedule(mbx(litigation_hold_enabled=True, delay_hold=True), 100)
    assert delayed.release_ok is False  # a delay hold runs out by itself first


def test_no_schedule_without_days_or_a_deletion_date() -> None:
    assert _schedule(mbx(litigation_hold_enabled=True), 0).ends_on is None
    assert _schedule(mbx(litigation_hold_enabled=True, when_soft_deleted=None), 365).ends_on is None
