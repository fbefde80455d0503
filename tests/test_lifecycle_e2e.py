"""The lifecycle after the last hold, end to end: imm release → delay hold → soft-deleted → purged.

Microsoft's rules (imm.domain.lifecycle cites them): a delay hold follows any hold removal and lasts 30 days
(ediscovery-identify-a-hold-on-an-exchange-online-mailbox, "Managing mailboxes on delay hold"); then the mailbox is
soft-deleted, InactiveMailboxRetireTime is set, and MailboxLifeCycle purges it 183 days later; until then its content
can be restored (delete-an-inactive-mailbox; New-MailboxRestoreRequest -SourceMailbox). The simulated tenant runs the
same schedule with a short day (``lifecycle_day_seconds``) so the test need not wait 30 days.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from action_support import ActEnv, make_env, only_litigation
from conftest import run_imm
from imm.simulator.model import ACTIVE, INACTIVE, SOFT_DELETED

DAY_SECONDS = 0.05  # one simulated lifecycle day: the delay hold lasts 1.5 s, the purge comes 9.15 s after retiring


@pytest.fixture(scope="module")
def act(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActEnv]:
    yield from make_env(tmp_path_factory.mktemp("lifecycle"))


def _listed(act: ActEnv, *options: str) -> dict[str, dict[str, object]]:
    result, data = act.json("list", *options)
    assert result.exit_code == 0, result.stderr
    return {row["identity"]: row for row in data}


def _target(act: ActEnv) -> str:
    special = {act.tenant.special["full_target"], act.tenant.special.get("shared_smtp")}
    for mbx in act.tenant.mailboxes.values():
        if mbx.state == ACTIVE and mbx.primary_smtp not in special and mbx.quota_bytes - mbx.total_bytes > 10 * 2**30:
            return mbx.primary_smtp
    pytest.skip("no active mailbox with room")


def test_release_of_the_last_hold_goes_through_delay_soft_delete_and_purge(act: ActEnv) -> None:
    tenant = act.tenant
    tenant.lifecycle_day_seconds = DAY_SECONDS
    mbx = act.pick(only_litigation, "mailbox held only by Litigation Hold")
    guid = mbx.exchange_guid
    start = float(int(time.time()))
    tenant.clock = lambda: start  # the tenant's time stands still until step 2 (a slow machine changes nothing)

    released = act.run("holds", "release", guid, "--type", "litigation", "--yes", "--i-understand-last-hold")
    assert released.exit_code == 0, released.stderr
    assert "Exchange keeps the mailbox under a delay hold until ≈ " in released.stdout
    assert (mbx.state, mbx.delay_hold) == (INACTIVE, True)

    # 1. Pending delay: in the cache with its dates; never in a --releasable selection.
    assert act.run("sync", "-q").exit_code == 0
    pending = _listed(act, "--state", "pending-delay")
    assert guid in pending
    row = pending[guid]
    assert row["lifecycle_state"] == "pending-delay" and row["releasable"] is False
    assert row["hold_types"] == ["delay"]
    removed = datetime.fromisoformat(str(row["last_hold_removed"]))  # read from HoldTracking at sync
    assert abs(removed.timestamp() - (mbx.hold_history or [{}])[0]["ed"]) < 1
    until = datetime.fromisoformat(str(row["delay_hold_until"]))
    assert until == removed + timedelta(days=37)  # 30 days after the next MFA run (≤ 7 days), the safe side
    assert datetime.fromisoformat(str(row["purge_on"])) == removed + timedelta(days=183)
    assert f"delay hold until ≈ {until.date().isoformat()}" in str(row["expiry_reason"])
    assert guid not in _listed(act, "--releasable")
    table = run_imm("list", "--state", "pending-delay", env={**act.env, "COLUMNS": "200"})
    assert f"delay until ≈ {until.date().isoformat()}" in table.stdout

    # 2. Thirty (short) days later Exchange lifts the delay hold: soft-deleted, kept with its purge date.
    tenant.clock = time.time
    time.sleep(max(0.0, start + 30 * DAY_SECONDS + 0.2 - time.time()))
    lifted = start + 30 * DAY_SECONDS + 0.2
    tenant.clock = lambda: lifted  # and stands still again: a slow machine must not reach the purge (9 s) in step 3
    assert act.run("sync", "-q").exit_code == 0
    assert mbx.state == SOFT_DELETED and mbx.retire_time is not None
    soft = _listed(act, "--state", "soft-deleted")
    assert guid in soft and guid not in _listed(act, "--state", "pending-delay")
    row = soft[guid]
    retire = datetime.fromisoformat(str(row["inactive_mailbox_retire_time"]))
    assert datetime.fromisoformat(str(row["purge_on"])) == retire + timedelta(days=183)
    assert (row["releasable"], row["recovery_eligible"], row["is_inactive_mailbox"]) == (False, False, False)
    assert guid not in _listed(act, "--releasable")
    table = run_imm("list", "--state", "soft-deleted", env={**act.env, "COLUMNS": "200"})
    assert f"purge ≈ {(retire + timedelta(days=183)).date().isoformat()}" in table.stdout

    # 3. Recover is refused with the documented way out; restore is offered while the window is open.
    password = act.home / "pw.txt"
    password.write_text("Lifecycle-Passw0rd-42\n", encoding="utf-8")
    recover = act.run(
        "recover", guid, "--upn", "back.again@contoso.onmicrosoft.com", "--password-file", str(password), "--yes"
    )
    assert recover.exit_code == 5, recover.stderr
    assert "is blocked (1 blocker): soft-deleted" in recover.stderr
    preview = act.run("restore", guid, "--target", _target(act), "--what-if")
    assert preview.exit_code == 0, preview.stderr
    assert "New-MailboxRestoreRequest -Name imm-" in preview.stdout and f"-SourceMailbox {guid}" in preview.stdout

    # 4. After InactiveMailboxRetireTime + 183 days MailboxLifeCycle purges it: it leaves the cache.
    tenant.clock = lambda: time.time() + 183 * DAY_SECONDS + 1
    try:
        assert act.run("sync", "-q").exit_code == 0
    finally:
        tenant.clock = time.time
    assert guid not in tenant.mailboxes
    assert act.cached(guid) is None
