"""The lifecycle after a hold is removed (imm.domain.lifecycle). Each rule names its Microsoft source."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from imm.data.models import InactiveMailbox
from imm.domain.lifecycle import (
    DELAY_HOLD_DAYS,
    MFA_CYCLE_DAYS,
    PENDING_DELAY,
    SOFT_DELETE_PURGE_DAYS,
    SOFT_DELETED,
    HoldTrackingEntry,
    last_hold_removal,
    lifecycle_of,
    parse_hold_tracking,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def mbx(**fields: Any) -> InactiveMailbox:
    return InactiveMailbox(identity="5c8b9f0e-3d2a-4b1c-9e8f-7a6b5c4d3e2f", **fields)


def test_the_documented_constants() -> None:
    # identify-a-hold article: the delay hold lasts 30 days; create-and-manage-inactive-mailboxes: the Managed
    # Folder Assistant processes a mailbox about every 7 days; delete-an-inactive-mailbox: purge 183 days later.
    assert (DELAY_HOLD_DAYS, MFA_CYCLE_DAYS, SOFT_DELETE_PURGE_DAYS) == (30, 7, 183)


def test_hold_tracking_log_as_the_identify_a_hold_article_shows_it() -> None:
    # "$ht = Export-MailboxDiagnosticLogs <username> -ComponentName HoldTracking; $ht.MailboxLog | ConvertFrom-Json"
    # ed = end date (MinValue: still applied), hid = hold id, ht = hold type, lsd / osd = last / original start.
    log = [
        {
            "ed": "0001-01-01T00:00:00.0000000",
            "hid": "mbx7cfb30345d454ac0a989ab3041051209:1",
            "ht": 4,
            "lsd": "2020-03-23T18:24:37.1884606Z",
            "osd": "2020-03-23T18:24:37.1884606Z",
        },
        {
            "ed": "2026-11-02T09:15:00.0000000Z",
            "hid": "LitigationHold",
            "ht": 0,
            "lsd": "2021-01-04T10:00:00Z",
            "osd": "2021-01-04T10:00:00Z",
        },
    ]
    reply = [{"Identity": "x", "MailboxLog": json.dumps(log)}]
    entries = parse_hold_tracking(reply)
    assert entries[0] == HoldTrackingEntry(
        "mbx7cfb30345d454ac0a989ab3041051209:1",
        "4",
        datetime(2020, 3, 23, 18, 24, 37, 188460, tzinfo=UTC),
        datetime(2020, 3, 23, 18, 24, 37, 188460, tzinfo=UTC),
        None,
    )
    assert last_hold_removal(entries) == datetime(2026, 11, 2, 9, 15, tzinfo=UTC)
    assert parse_hold_tracking(json.dumps(log)) == entries  # the MailboxLog text alone
    assert parse_hold_tracking([{"MailboxLog": "not json"}, {"MailboxLog": ""}, 7]) == []  # never fails a sync


def test_pending_delay_when_only_a_delay_hold_is_left() -> None:
    removed = datetime(2026, 11, 20, tzinfo=UTC)
    stage = lifecycle_of(mbx(delay_hold=True, last_hold_removed=removed), ["delay"], NOW)
    assert stage.state == PENDING_DELAY
    assert stage.delay_hold_until == removed + timedelta(days=37)
    # delete-an-inactive-mailbox: "183 days from the day the hold was removed" (the earliest purge).
    assert stage.purge_on == removed + timedelta(days=183)
    assert stage.text == (
        "pending delay: no hold but a delay hold until ≈ 2026-12-27; then soft-deleted and purged from ≈ 2027-05-22 "
        "(183 days after the hold's removal)"
    )


def test_other_holds_keep_the_mailbox_inactive_even_with_a_delay_hold() -> None:
    stage = lifecycle_of(mbx(delay_hold=True, when_changed=NOW), ["litigation", "delay"], NOW)
    assert (stage.state, stage.purge_on) == ("inactive", None)
    assert stage.delay_hold_until == NOW + timedelta(days=37)


def test_soft_deleted_purge_date_is_the_retire_time_plus_183_days() -> None:
    # delete-an-inactive-mailbox: MailboxLifeCycle purges once "InactiveMailboxRetireTime + 183 days" has passed.
    retire = datetime(2026, 10, 1, tzinfo=UTC)
    stage = lifecycle_of(
        mbx(is_inactive_mailbox=False, was_inactive_mailbox=True, inactive_mailbox_retire_time=retire), [], NOW
    )
    assert stage.state == SOFT_DELETED
    assert stage.purge_on == datetime(2027, 4, 2, tzinfo=UTC)
    assert stage.text == (
        "soft-deleted (no hold left): purged on ≈ 2027-04-02; until then its content can be restored with imm restore"
    )
    unknown = lifecycle_of(mbx(is_inactive_mailbox=False, was_inactive_mailbox=True), [], NOW)
    assert unknown.purge_on is None and "purge date unknown" in unknown.text
