"""One call that fills every analysis field of a cached mailbox (run by sync for each mailbox, and on re-analysis).

Fast enough for 100K mailboxes per sync: hold values and policy lookups are decoded once per distinct value
(cached), the rest is attribute arithmetic (``bench/bench_analyse.py`` measures the per-mailbox time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from imm.config import CostModel
from imm.data.models import InactiveMailbox
from imm.domain.cost import license_type_from_plan, monthly_cost
from imm.domain.eligibility import recovery_blockers, restore_source_blockers
from imm.domain.expiry import holds_expiry, leaver_schedule
from imm.domain.holds import Hold, PolicyInfo, decode_holds, hold_types
from imm.domain.lifecycle import lifecycle_of

__all__ = ["analyse"]


@lru_cache(maxsize=65536)
def _details(hold: Hold) -> dict[str, Any]:
    return hold.to_dict()


def _aware(moment: datetime | None) -> datetime | None:
    """Cached datetimes are UTC; a naive one (from an older cache) is taken as UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def analyse(
    mailbox: InactiveMailbox,
    *,
    org_holds: Iterable[str],
    policies: Mapping[str, PolicyInfo],
    cost_model: CostModel,
    now: datetime,
    leaver_retention_days: int = 0,
) -> InactiveMailbox:
    """Fill ``mailbox``'s analysis fields **in place** and return it.

    Sets ``hold_types``, ``hold_details``, ``recovery_eligible``/``recovery_blockers`` ("code: message" strings),
    ``restore_eligible``/``restore_blockers`` (source-side blockers only: the target is not known here),
    ``holds_expire_on``, ``expiry_reason``, ``releasable`` (never while a delay hold is on or to come, never for a
    soft-deleted mailbox), ``lifecycle_state`` / ``delay_hold_until`` / ``purge_on``, ``age_days`` (whole days
    since WhenSoftDeleted, None when unknown), ``license_type`` (from MailboxPlan when there is one) and
    ``monthly_cost``. ``now`` must be timezone-aware.
    """
    mailbox.when_soft_deleted = _aware(mailbox.when_soft_deleted)
    mailbox.when_changed = _aware(mailbox.when_changed)
    mailbox.litigation_hold_date = _aware(mailbox.litigation_hold_date)
    mailbox.inactive_mailbox_retire_time = _aware(mailbox.inactive_mailbox_retire_time)
    mailbox.last_hold_removed = _aware(mailbox.last_hold_removed)

    holds = decode_holds(mailbox, org_holds, policies)
    mailbox.hold_types = hold_types(holds)
    mailbox.hold_details = [dict(_details(hold)) for hold in holds]

    recovery = recovery_blockers(mailbox)
    mailbox.recovery_eligible = not recovery
    mailbox.recovery_blockers = [str(blocker) for blocker in recovery]
    restore = restore_source_blockers(mailbox)
    mailbox.restore_eligible = not restore
    mailbox.restore_blockers = [str(blocker) for blocker in restore]

    expiry = holds_expiry(mailbox, holds, now)
    mailbox.holds_expire_on = expiry.expires_on
    mailbox.expiry_reason = expiry.reason
    mailbox.releasable = expiry.releasable
    stage = lifecycle_of(mailbox, mailbox.hold_types, now)
    mailbox.lifecycle_state = stage.state
    mailbox.delay_hold_until = stage.delay_hold_until
    mailbox.purge_on = stage.purge_on
    if stage.state != "inactive":
        mailbox.releasable = False  # pending delay or soft-deleted: Exchange's schedule runs, nothing to release
        if stage.state == "soft-deleted":
            mailbox.expiry_reason = stage.text

    deleted = mailbox.when_soft_deleted
    mailbox.age_days = max(0, (now - deleted).days) if deleted is not None else None
    if mailbox.mailbox_plan and license_type_from_plan(mailbox.mailbox_plan) != "Unknown":
        mailbox.license_type = license_type_from_plan(mailbox.mailbox_plan)  # else the record's PersistedCapabilities
    mailbox.monthly_cost = monthly_cost(mailbox, cost_model)
    schedule = leaver_schedule(mailbox, holds, leaver_retention_days, now)
    mailbox.leaver_retention_ends = schedule.ends_on
    mailbox.leaver_holds_after = list(schedule.holds_after)
    mailbox.leaver_retention_ended = schedule.release_ok
    if schedule.ends_on is not None and not schedule.ended:
        mailbox.releasable = False  # within its leaver retention schedule: nothing to release yet
    return mailbox
