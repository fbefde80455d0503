"""What happens to an inactive mailbox after a hold is removed: delay holds, soft deletion, purge (domain.md §6).

Sources (Microsoft Learn / the cmdlet reference):

- *ediscovery-identify-a-hold-on-an-exchange-online-mailbox*, "Managing mailboxes on delay hold": "After any type of
  hold is removed from a mailbox, a delay hold is applied" the next time the Managed Folder Assistant (MFA)
  processes the mailbox (``DelayHoldApplied`` for Outlook data, ``DelayReleaseHoldApplied`` for Teams, Forms and
  Viva Engage data); while either is True "the mailbox is still considered to be on hold for an unlimited hold
  duration"; "After 30 days, the delay hold expires, and Microsoft 365 will automatically attempt to remove" it.
- The same article, "How to confirm that an organization-wide retention policy is applied to a mailbox":
  ``Export-MailboxDiagnosticLogs <id> -ComponentName HoldTracking`` → ``MailboxLog`` is JSON, one entry per hold
  with ``hid`` (hold id), ``ht`` (hold type), ``osd`` / ``lsd`` (original / last start date) and ``ed`` (end date:
  when the hold stopped applying; ``0001-01-01`` = still applied). ``-IncludeInactiveMailboxes`` reaches an
  inactive mailbox (Export-MailboxDiagnosticLogs.md); Set-Mailbox.md (``-RemoveDelayHoldApplied``) points to the
  HoldTracking log for "the hold history on a mailbox".
- *create-and-manage-inactive-mailboxes* / domain.md §1: the MFA processes a mailbox about every 7 days.
- *delete-an-inactive-mailbox*, "More information": once no hold remains the mailbox is soft-deleted
  (``IsInactiveMailbox`` False, ``WasInactiveMailbox`` True, only ``Get-Mailbox -SoftDeletedMailbox`` shows it);
  ``InactiveMailboxRetireTime`` is set to the date of that transition and the MailboxLifeCycle assistant purges
  the mailbox once "InactiveMailboxRetireTime + 183 days" has passed; "it's soft-deleted and stays in Exchange Online
  for 183 days from the day the hold was removed and can be recovered during that period".
- New-MailboxRestoreRequest.md: ``-SourceMailbox`` takes a soft-deleted mailbox, so its content can still be copied
  into another mailbox (``imm restore``) until the purge.

imm's reading, on the safe side (a mailbox is never called releasable or purged too early):

- a delay hold ends ``DELAY_HOLD_DAYS`` after it was applied; when it was applied is the end date (``ed``) of the
  latest hold removal in HoldTracking plus up to one MFA cycle; without HoldTracking, WhenChanged (the flag's
  stamp changes the mailbox) plus one MFA cycle; without either, now plus both;
- a hold removed less than ``MFA_CYCLE_DAYS + DELAY_HOLD_DAYS`` ago with no delay flag yet: the MFA has not run, the
  delay hold is still to come;
- the purge date of a soft-deleted mailbox is ``InactiveMailboxRetireTime + 183 days``; before the retire time is
  set (pending delay) the earliest documented purge is the hold's removal + 183 days.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from imm.data.models import InactiveMailbox
from imm.domain.parsing import parse_datetime
from imm.errors import InputError

__all__ = [
    "DELAY_HOLD_DAYS",
    "MFA_CYCLE_DAYS",
    "SOFT_DELETE_PURGE_DAYS",
    "INACTIVE",
    "PENDING_DELAY",
    "SOFT_DELETED",
    "LIFECYCLE_STATES",
    "HoldTrackingEntry",
    "Lifecycle",
    "parse_hold_tracking",
    "last_hold_removal",
    "delay_hold_until",
    "lifecycle_of",
]

DELAY_HOLD_DAYS = 30
MFA_CYCLE_DAYS = 7
SOFT_DELETE_PURGE_DAYS = 183

INACTIVE = "inactive"  # kept by at least one hold other than a delay hold
PENDING_DELAY = "pending-delay"  # inactive only because of a delay hold (present, or expected after a removal)
SOFT_DELETED = "soft-deleted"  # no longer inactive (WasInactiveMailbox): restorable until the purge
LIFECYCLE_STATES: tuple[str, ...] = (INACTIVE, PENDING_DELAY, SOFT_DELETED)

_MIN_YEAR = 1900  # ``ed`` is DateTime.MinValue (0001-01-01) while the hold still applies


@dataclass(frozen=True)
class HoldTrackingEntry:
    """One entry of the HoldTracking log: ``hid`` hold id, ``ht`` hold type, start dates, end date (None: applied)."""

    hold_id: str
    hold_type: str
    first_start: datetime | None
    last_start: datetime | None
    ended: datetime | None


def _date(value: Any) -> datetime | None:
    try:
        moment = parse_datetime(value)
    except InputError:
        return None
    if moment is None or moment.year < _MIN_YEAR:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_hold_tracking(value: Any) -> list[HoldTrackingEntry]:
    """The entries of an ``Export-MailboxDiagnosticLogs -ComponentName HoldTracking`` reply.

    ``value`` is the reply's records (each with ``MailboxLog``), one record, the ``MailboxLog`` JSON text, or the
    parsed list. Unreadable parts are skipped: the log only ever refines an estimate.
    """
    logs: list[Any] = []
    items: Iterable[Any] = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if isinstance(item, Mapping) and "MailboxLog" in item:
            logs.append(item.get("MailboxLog"))
        else:
            logs.append(item)
    entries: list[HoldTrackingEntry] = []
    for log in logs:
        if isinstance(log, str):
            try:
                log = json.loads(log) if log.strip() else []
            except ValueError:
                continue
        if isinstance(log, Mapping):
            log = [log]
        if not isinstance(log, list):
            continue
        for entry in log:
            if not isinstance(entry, Mapping):
                continue
            entries.append(
                HoldTrackingEntry(
                    hold_id=str(entry.get("hid") or ""),
                    hold_type=str(entry.get("ht") if entry.get("ht") is not None else ""),
                    first_start=_date(entry.get("osd")),
                    last_start=_date(entry.get("lsd")),
                    ended=_date(entry.get("ed")),
                )
            )
    return entries


def last_hold_removal(entries: Sequence[HoldTrackingEntry]) -> datetime | None:
    """When the latest hold in the log stopped applying (its ``ed``), or None when none has ended.

    The end of a delay hold itself is not a removal that brings another delay hold, so it is left out."""
    ended = [
        entry.ended
        for entry in entries
        if entry.ended is not None and not entry.hold_id.lower().startswith(("delayhold", "delayreleasehold"))
    ]
    return max(ended) if ended else None


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def delay_hold_until(mailbox: InactiveMailbox, now: datetime) -> tuple[datetime, str]:
    """When a delay hold on ``mailbox`` ends at the latest, and what that date rests on (one phrase)."""
    removed = mailbox.last_hold_removed
    if removed is not None and removed <= now:
        end = removed + timedelta(days=MFA_CYCLE_DAYS + DELAY_HOLD_DAYS)
        return end, (
            f"a hold was removed on {_day(removed)} (HoldTracking); the delay hold follows at the next Managed "
            f"Folder Assistant run (within {MFA_CYCLE_DAYS} days) and lasts {DELAY_HOLD_DAYS} days"
        )
    changed = mailbox.when_changed
    if changed is not None and changed <= now:
        end = changed + timedelta(days=MFA_CYCLE_DAYS + DELAY_HOLD_DAYS)
        return end, (
            f"estimated from the mailbox's last change on {_day(changed)} (no HoldTracking date): "
            f"{DELAY_HOLD_DAYS} days plus one Managed Folder Assistant cycle ({MFA_CYCLE_DAYS} days)"
        )
    end = now + timedelta(days=MFA_CYCLE_DAYS + DELAY_HOLD_DAYS)
    return end, f"estimated from today: {DELAY_HOLD_DAYS} days plus one Managed Folder Assistant cycle"


def expected_delay_hold(mailbox: InactiveMailbox, now: datetime) -> datetime | None:
    """The end of a delay hold Exchange has not stamped yet (a hold removed within the last MFA cycle + 30 days)."""
    removed = mailbox.last_hold_removed
    if removed is None or removed > now or mailbox.delay_hold or mailbox.delay_release_hold:
        return None
    end = removed + timedelta(days=MFA_CYCLE_DAYS + DELAY_HOLD_DAYS)
    return end if end > now else None


@dataclass(frozen=True)
class Lifecycle:
    """Where a mailbox is in its lifecycle. ``purge_on``: the earliest documented purge date (None: not scheduled)."""

    state: str
    delay_hold_until: datetime | None
    purge_on: datetime | None
    text: str


def lifecycle_of(mailbox: InactiveMailbox, preserving_kinds: Iterable[str], now: datetime) -> Lifecycle:
    """The lifecycle state and dates of ``mailbox`` whose preserving hold kinds are ``preserving_kinds``."""
    if not mailbox.is_inactive_mailbox:
        retire = mailbox.inactive_mailbox_retire_time
        purge = retire + timedelta(days=SOFT_DELETE_PURGE_DAYS) if retire is not None else None
        if purge is None and mailbox.last_hold_removed is not None:
            purge = mailbox.last_hold_removed + timedelta(days=SOFT_DELETE_PURGE_DAYS)
        when = f"purged on ≈ {_day(purge)}" if purge else "purge date unknown (no InactiveMailboxRetireTime)"
        return Lifecycle(
            SOFT_DELETED,
            None,
            purge,
            f"soft-deleted (no hold left): {when}; until then its content can be restored with imm restore",
        )
    kinds = set(preserving_kinds)
    delay_kinds = {"delay", "delay-release"}
    until: datetime | None = None
    if kinds & delay_kinds:
        until, _basis = delay_hold_until(mailbox, now)
    else:
        until = expected_delay_hold(mailbox, now)
    if kinds - delay_kinds:
        return Lifecycle(INACTIVE, until, None, "inactive: kept by its holds")
    if until is None:  # listed as inactive with no hold at all: Exchange has yet to process it
        until = now + timedelta(days=MFA_CYCLE_DAYS + DELAY_HOLD_DAYS)
    removed = mailbox.last_hold_removed or (until - timedelta(days=MFA_CYCLE_DAYS + DELAY_HOLD_DAYS))
    purge = removed + timedelta(days=SOFT_DELETE_PURGE_DAYS)
    return Lifecycle(
        PENDING_DELAY,
        until,
        purge,
        f"pending delay: no hold but a delay hold until ≈ {_day(until)}; then soft-deleted and purged from "
        f"≈ {_day(purge)} (183 days after the hold's removal)",
    )
