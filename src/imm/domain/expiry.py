"""When every hold on an inactive mailbox has run out (design §6 "Expiry").

A hold "runs out" when it no longer preserves any item. Hold durations count per item: a Litigation Hold duration
"is calculated from the date a mailbox item is received or created" (Set-Mailbox.md ``-LitigationHoldDuration``;
change-the-hold-duration article, domain.md §9), a retention policy's from each item's creation or last change
(retention settings article). An inactive mailbox gets no new items after its deletion, so its newest items date
from about ``WhenSoftDeleted`` and ``WhenSoftDeleted + duration`` is the latest day any item can still be held. imm
uses that bound for Litigation Hold and for retention policies whose duration is known, and the reason says so
(``NEWEST_ITEMS_BASIS``). It is an approximation on the safe side: older items run out earlier, none later.

Holds that never run out by themselves (``expires_on`` None, the reason names the hold): unlimited Litigation
Hold, eDiscovery case holds, legacy In-Place Holds, Preservation-Locked policies, policies with an unlimited or
unknown duration, retention label holds (a label's duration is not visible on the mailbox), and unrecognised
holds.

Delay holds (:mod:`imm.domain.lifecycle`): Microsoft applies one after *any* hold is removed, at the next Managed
Folder Assistant run, and tries to remove it after 30 days (identify-a-hold article). Its end is read from the
HoldTracking log's latest removal where sync fetched it, else estimated from WhenChanged, always with one MFA
cycle added (the safe side). A mailbox with a delay hold, or with a hold removed so recently that the delay hold
is still to come, is **never** releasable: the reason says "delay hold until ≈ DATE". A mailbox with no preserving
hold and no delay hold to come is releasable now.

A mailbox whose holds have all run out is a *candidate for release* (``releasable``): nothing in it is still
preserved, but Exchange keeps it inactive until the holds are removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from imm.data.models import InactiveMailbox
from imm.domain.holds import Hold, HoldKind
from imm.domain.lifecycle import DELAY_HOLD_DAYS, SOFT_DELETE_PURGE_DAYS, delay_hold_until, expected_delay_hold

__all__ = [
    "DELAY_HOLD_DAYS",
    "DurationChange",
    "Expiry",
    "duration_change",
    "hold_expiry",
    "holds_expiry",
    "per_item_basis",
]


def per_item_basis(days: int, deleted: datetime, start: str = "received or created date") -> str:
    """What a duration's end date rests on: it counts per item, and the newest items date from the deletion."""
    return (
        f"{days:,} days from each item's {start}; the newest items date from about the deletion on "
        f"{deleted.date().isoformat()}"
    )


@dataclass(frozen=True)
class Expiry:
    """``expires_on``: when the last hold runs out (None: never by itself, or no hold at all — see ``releasable``).

    ``reason`` is one sentence naming the hold that decides; ``releasable``: every hold has run out by ``now``.
    """

    expires_on: datetime | None
    reason: str
    releasable: bool


def _name(hold: Hold) -> str:
    if hold.policy_name:
        return f"'{hold.policy_name}'"
    return hold.guid or hold.raw


def hold_expiry(mailbox: InactiveMailbox, hold: Hold, now: datetime) -> tuple[datetime | None, str]:
    """When one preserving hold runs out, and why; ``(None, reason)`` when it never does by itself."""
    kind = hold.kind
    deleted = mailbox.when_soft_deleted
    if kind is HoldKind.LITIGATION:
        if hold.duration_days is None:
            return None, "Litigation Hold is unlimited"
        if deleted is None:
            return None, "Litigation Hold has a duration but the deletion date is unknown"
        end = deleted + timedelta(days=hold.duration_days)
        return end, f"Litigation Hold: {per_item_basis(hold.duration_days, deleted)}"
    if kind in (HoldKind.RETENTION_POLICY, HoldKind.SKYPE_POLICY, HoldKind.ORG_POLICY):
        if hold.locked:
            return None, f"retention policy {_name(hold)} is under Preservation Lock"
        if hold.locked is None and hold.policy_known:  # the lock could not be read: not counted as running out
            return None, f"retention policy {_name(hold)}: its Preservation Lock is unknown"
        if not hold.policy_known:
            return None, f"retention policy {_name(hold)}: its duration is unknown"
        if hold.duration_days is None:
            return None, f"retention policy {_name(hold)} retains without limit"
        if deleted is None:
            return None, f"retention policy {_name(hold)} has a duration but the deletion date is unknown"
        end = deleted + timedelta(days=hold.duration_days)
        return (
            end,
            f"retention policy {_name(hold)}: {per_item_basis(hold.duration_days, deleted, 'creation or last change')}",
        )
    if kind in (HoldKind.DELAY, HoldKind.DELAY_RELEASE):
        label = "delay hold" if kind is HoldKind.DELAY else "delay release hold"
        end, basis = delay_hold_until(mailbox, now)
        return end, f"{label} until ≈ {end.date().isoformat()} ({basis})"
    if kind is HoldKind.EDISCOVERY:
        return None, f"eDiscovery case hold {_name(hold)} has no duration"
    if kind is HoldKind.INPLACE_LEGACY:
        return None, f"legacy In-Place Hold {_name(hold)} has no duration imm can read"
    if kind is HoldKind.COMPLIANCE_TAG:
        return None, "retention label hold: the labels' durations are not visible on the mailbox"
    return None, f"unrecognised hold '{hold.raw}'"


def holds_expiry(mailbox: InactiveMailbox, holds: Iterable[Hold], now: datetime) -> Expiry:
    """When every preserving hold in ``holds`` has run out (see the module docstring for the rules)."""
    latest: datetime | None = None
    latest_reason = ""
    never: list[str] = []
    any_hold = False
    delay: tuple[datetime, str] | None = None
    for hold in holds:
        if not hold.preserves:
            continue
        any_hold = True
        end, reason = hold_expiry(mailbox, hold, now)
        if hold.kind in (HoldKind.DELAY, HoldKind.DELAY_RELEASE) and end is not None:
            delay = max(delay, (end, reason)) if delay else (end, reason)
        if end is None:
            never.append(reason)
        elif latest is None or end > latest:
            latest, latest_reason = end, reason
    expected = expected_delay_hold(mailbox, now)
    if expected is not None and (latest is None or expected > latest) and not never:
        removed = mailbox.last_hold_removed
        assert removed is not None
        latest, latest_reason = (
            expected,
            (
                f"delay hold expected until ≈ {expected.date().isoformat()}: a hold was removed on "
                f"{removed.date().isoformat()} and Exchange applies the delay hold at its next Managed Folder "
                "Assistant run"
            ),
        )
        any_hold = True
    if not mailbox.is_inactive_mailbox:
        return Expiry(None, "soft-deleted: no hold is left; the mailbox awaits its purge", False)
    if not any_hold:
        return Expiry(None, "no hold keeps this mailbox inactive", True)
    if never:
        more = f" (and {len(never) - 1} more)" if len(never) > 1 else ""
        return Expiry(None, f"never by itself: {never[0]}{more}", False)
    assert latest is not None
    if delay is not None and delay[0] <= now:
        # Past its estimate but still stamped (e.g. the account is disabled): never "releasable now".
        return Expiry(
            latest,
            f"delay hold until ≈ {delay[0].date().isoformat()} is still applied; Exchange removes it at a Managed "
            "Folder Assistant run, or release it with --type delay",
            False,
        )
    if latest <= now:
        return Expiry(
            latest, f"every hold has run out; the last on {latest.date().isoformat()} ({latest_reason})", True
        )
    return Expiry(latest, f"every hold runs out by {latest.date().isoformat()} ({latest_reason})", False)


@dataclass(frozen=True)
class DurationChange:
    """What a new Litigation Hold duration means for one mailbox (``imm holds set-duration``).

    ``ends_on``: when the hold then stops holding the newest items (None: unlimited or deletion date unknown);
    ``holds_nothing``: the new duration is shorter than the age of the newest content, so it holds no item at all;
    ``may_soft_delete``: and no other hold keeps the mailbox, so Exchange may soft-delete it once it recalculates
    the hold status (``Set-Mailbox -InactiveMailbox -RecalculateInactiveMailbox`` forces that: it "might lead to
    the soft-deletion of the mailbox if all holds on the mailbox have expired", Set-Mailbox.md).
    """

    ends_on: datetime | None
    holds_nothing: bool
    may_soft_delete: bool
    lines: tuple[str, ...]
    consequence: str


def duration_change(
    mailbox: InactiveMailbox, holds: Iterable[Hold], new_days: int | None, now: datetime
) -> DurationChange:
    """The effect of ``Set-Mailbox -LitigationHoldDuration new_days`` (None = Unlimited) on ``mailbox``.

    Set-Mailbox.md: the duration "is calculated from the date a mailbox item is received or created", and the
    value unlimited means "items are held indefinitely or until the hold is removed". The newest content of an
    inactive mailbox dates from about its deletion (WhenSoftDeleted).
    """
    if new_days is None:
        return DurationChange(
            None,
            False,
            False,
            ("Unlimited: every item stays held by Litigation Hold until the hold is removed",),
            "Every item is held by Litigation Hold until the hold is removed; the mailbox stays inactive",
        )
    deleted = mailbox.when_soft_deleted
    if deleted is None:
        return DurationChange(
            None,
            False,
            False,
            (
                f"{new_days:,} days from each item's received or created date; the deletion date is unknown, so "
                "imm cannot tell which items that still holds",
            ),
            "Items received or created more than the new duration ago are no longer held by Litigation Hold "
            "(other holds still apply)",
        )
    ends = deleted + timedelta(days=new_days)
    age = max(0, (now - deleted).days)
    lines = [f"Litigation Hold then runs out on {ends.date().isoformat()} ({per_item_basis(new_days, deleted)})"]
    if ends > now:
        return DurationChange(
            ends,
            False,
            False,
            tuple(lines),
            "Items received or created more than the new duration ago are no longer held by Litigation Hold "
            f"(other holds still apply); the newest stay held until ≈ {ends.date().isoformat()}",
        )
    others = [
        hold
        for hold in holds
        if hold.preserves and hold.kind is not HoldKind.LITIGATION and _still_holds(mailbox, hold, now)
    ]
    lines.append(
        f"Warning: {new_days:,} days is shorter than the age of the mailbox's newest content (≈ {age:,} days, "
        f"deleted on {deleted.date().isoformat()}): the end date is in the past and Litigation Hold then holds "
        "no item"
    )
    if others:
        kinds = ", ".join(dict.fromkeys(hold.kind.value for hold in others))
        lines.append(f"Other holds still keep the mailbox inactive ({kinds})")
        consequence = "Litigation Hold no longer holds any item; other holds still keep the mailbox inactive"
        return DurationChange(ends, True, False, tuple(lines), consequence)
    lines.append(
        "Warning: no other hold keeps the mailbox: Exchange may soft-delete it when it recalculates the hold status "
        "(Set-Mailbox -InactiveMailbox -RecalculateInactiveMailbox forces that), after which its content stays "
        f"restorable until the purge {SOFT_DELETE_PURGE_DAYS} days later"
    )
    consequence = (
        "Litigation Hold no longer holds any item and no other hold keeps the mailbox: Exchange may soft-delete it "
        f"(then purged after {SOFT_DELETE_PURGE_DAYS} days; restorable with imm restore until then)"
    )
    return DurationChange(ends, True, True, tuple(lines), consequence)


def _still_holds(mailbox: InactiveMailbox, hold: Hold, now: datetime) -> bool:
    end, _reason = hold_expiry(mailbox, hold, now)
    return end is None or end > now


# ------------------------------------------------------------------------------------ leaver retention schedule
# What admins ask for ("keep mailboxes 7 years after the person leaves"): a profile's ``leaver_retention_days``,
# counted from WhenSoftDeleted (when the mailbox became inactive, create-and-manage-inactive-mailboxes). The holds
# such a schedule is carried by, and which imm releases once it has passed: Litigation Hold and unlocked retention
# policies (naming the mailbox or org-wide). Anything else (eDiscovery case holds, Preservation Lock, legacy
# In-Place holds, retention labels, unrecognised holds) is not the schedule's and keeps the mailbox.
SCHEDULE_KINDS = frozenset({HoldKind.LITIGATION, HoldKind.RETENTION_POLICY, HoldKind.SKYPE_POLICY, HoldKind.ORG_POLICY})


@dataclass(frozen=True)
class LeaverSchedule:
    """``ends_on``: WhenSoftDeleted + the schedule (None: no schedule or no deletion date); ``ended`` by ``now``;
    ``holds_after``: the kinds of the preserving holds still in force on ``ends_on`` (not run out by then);
    ``release_ok``: ended, and every hold then in force is one the schedule covers (no delay hold either), so
    ``imm bulk plan --leaver-retention-ended`` writes its release."""

    ends_on: datetime | None
    ended: bool
    holds_after: tuple[str, ...]
    release_ok: bool


def leaver_schedule(mailbox: InactiveMailbox, holds: Iterable[Hold], days: int, now: datetime) -> LeaverSchedule:
    """The leaver retention schedule of ``mailbox`` (``days`` ≤ 0: none)."""
    deleted = mailbox.when_soft_deleted
    if days <= 0 or deleted is None:
        return LeaverSchedule(None, False, (), False)
    ends = deleted + timedelta(days=days)
    after: list[Hold] = []
    for hold in holds:
        if not hold.preserves:
            continue
        end, _reason = hold_expiry(mailbox, hold, now)
        if end is None or end > ends:
            after.append(hold)
    kinds = tuple(dict.fromkeys(hold.kind.value for hold in after))
    ended = now >= ends
    covered = all(hold.kind in SCHEDULE_KINDS and not hold.locked for hold in after)
    no_delay = not (mailbox.delay_hold or mailbox.delay_release_hold)
    return LeaverSchedule(ends, ended, kinds, ended and covered and no_delay and mailbox.is_inactive_mailbox)
