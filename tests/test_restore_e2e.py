"""``imm restore`` (start, status --wait, --remove-x500) end to end against the simulated tenant."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from action_support import USER, ActEnv, make_env
from imm.simulator.model import ACTIVE, Mailbox

pytestmark = pytest.mark.slow

NAME = re.compile(r"^imm-[0-9a-f]{8}-\d{12}(\d{2})?$")


@pytest.fixture(scope="module")
def act(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActEnv]:
    yield from make_env(tmp_path_factory.mktemp("restore"), restore_seconds=0.6)


def _source(act: ActEnv, archive: bool = False) -> Mailbox:
    return act.pick(
        lambda m, t: not m.auto_expanding_archive and not m.aux_archive_shards and (m.archive or not archive)
        and m.total_bytes < 5 * 1024**3,
        "restorable mailbox",
    )  # fmt: skip


def _target(act: ActEnv, source: Mailbox, archive: bool = False) -> Mailbox:
    """An active mailbox with room for ``source`` that no other test uses as its target."""
    special = {act.tenant.special["full_target"], act.tenant.special.get("shared_smtp")}
    for mbx in act.active_mailboxes():
        if mbx.primary_smtp in special or f"target:{mbx.exchange_guid}" in act.claimed:
            continue
        if archive and not (mbx.archive and mbx.archive_quota_bytes - mbx.archive_bytes > source.archive_bytes * 2):
            continue
        if mbx.quota_bytes - mbx.total_bytes > source.total_bytes * 2:
            act.claimed.add(f"target:{mbx.exchange_guid}")
            return mbx
    pytest.skip("no active mailbox with room left")


def _requests(act: ActEnv, source: Mailbox) -> list[Any]:
    return [r for r in act.tenant.restore_requests if r.source_guid == source.exchange_guid]


def _x500(source: Mailbox) -> str:
    return f"X500:{source.legacy_dn}"


# ----------------------------------------------------------------------------------------------- restore
def test_restore_adds_x500_creates_a_named_request_and_follows_it_to_completion(act: ActEnv) -> None:
    source = _source(act)
    target = _target(act, source)
    target_bytes = target.total_bytes

    result, data = act.json("restore", source.primary_smtp, "--target", target.primary_smtp, "--yes")

    assert result.exit_code == 0, result.stderr
    assert data["status"] == "success"
    [request] = _requests(act, source)
    assert NAME.match(request.name) and request.name.startswith(f"imm-{source.exchange_guid[:8]}-")
    assert request.target_guid == target.exchange_guid
    assert (request.source_is_archive, request.target_is_archive, request.target_root_folder) == (False, False, "")
    assert _x500(source) in target.extra_addresses  # the documented method: X500 first
    assert data["details"]["request_name"] == request.name
    assert data["details"]["x500_added"] is True
    rows = act.audit(source.exchange_guid, "RESTORE_MAILBOX")
    assert [r["result"] for r in rows] == ["started", "success"]
    assert rows[0]["user"] == USER
    assert rows[0]["details"]["request_name"] == request.name
    assert _x500(source) not in rows[0]["details"]["before"]["target"]["EmailAddresses"]
    assert _x500(source) in rows[1]["details"]["after"]["target"]["EmailAddresses"]
    tracked = act.rows("SELECT * FROM restore_requests WHERE source_identity = ?", (source.exchange_guid,))
    assert [(t["name"], t["target_guid"], t["x500_added"]) for t in tracked] == [
        (request.name, target.exchange_guid, 1)
    ]
    assert act.cached(source.exchange_guid) is not None  # a restore leaves the inactive mailbox as it is

    result, rows_out = act.json(
        "restore", "status", source.exchange_guid, "--wait", "--interval", "0.1", "--timeout", "30", "--remove-x500"
    )

    assert result.exit_code == 0, result.stderr
    [row] = rows_out
    assert (row["name"], row["status"], row["percent_complete"]) == (request.name, "Completed", 100)
    assert (row["data_consistency_score"], row["skipped_items"], row["consistency_warning"]) == ("Perfect", 0, "")
    assert row["x500_removed"] is True
    assert row["bytes_transferred"] == row["estimated_bytes"] == source.total_bytes
    assert _x500(source) not in target.extra_addresses  # removed once completed
    assert target.total_bytes == target_bytes + source.total_bytes  # the copy arrived
    removal = act.audit(target.exchange_guid, "REMOVE_ADDRESS")
    assert [r["result"] for r in removal] == ["started", "success"]
    assert removal[0]["details"]["address"] == _x500(source)
    done = act.audit(source.exchange_guid, "RESTORE_STATUS")
    assert [(r["result"], r["details"]["status"]) for r in done] == [("success", "Completed")]
    assert done[0]["operation_id"] == rows[0]["operation_id"]


def test_restore_start_archive_into_the_targets_archive(act: ActEnv) -> None:
    source = _source(act, archive=True)
    target = _target(act, source, archive=True)

    result = act.run(
        "restore", "start", source.exchange_guid, "--target", target.exchange_guid, "--archive",
        "--target-folder", "From the archive", "--yes",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    [request] = _requests(act, source)
    assert (request.source_is_archive, request.target_is_archive) == (True, True)
    assert request.target_root_folder == "From the archive"
    assert "Restore the archive of inactive mailbox" in result.stdout


def test_restore_primary_into_an_archive_gets_a_root_folder(act: ActEnv) -> None:
    source = _source(act)
    target = _target(act, source, archive=True)

    result = act.run("restore", source.exchange_guid, "--target", target.exchange_guid, "--target-archive", "--yes")

    assert result.exit_code == 0, result.stderr
    [request] = _requests(act, source)
    assert (request.source_is_archive, request.target_is_archive) == (False, True)
    assert request.target_root_folder == "Inactive Mailbox"


def test_restore_what_if_changes_nothing(act: ActEnv) -> None:
    source = _source(act)
    target = _target(act, source)
    addresses = list(target.extra_addresses)

    result = act.run("restore", source.exchange_guid, "--target", target.primary_smtp, "--what-if")

    assert result.exit_code == 0, result.stderr
    assert "Preview: restore" in result.stdout
    assert f'-EmailAddresses @{{Add="{_x500(source)}"}}' in result.stdout
    assert "New-MailboxRestoreRequest -Name imm-" in result.stdout
    assert target.extra_addresses == addresses
    assert _requests(act, source) == []
    assert [r["result"] for r in act.audit(source.exchange_guid, "RESTORE_MAILBOX")] == ["preview"]


@pytest.mark.parametrize("case", ["target-missing", "target-over-quota", "auto-expanding-archive"])
def test_restore_blockers_exit_5(act: ActEnv, case: str) -> None:
    source = _source(act)
    target = "nobody.here@contoso.com"
    if case == "target-over-quota":
        target = act.tenant.special["full_target"]
    elif case == "auto-expanding-archive":
        target = _target(act, source).primary_smtp
        act.tenant.update(source.exchange_guid, archive=True, auto_expanding_archive=True, aux_archive_shards=1)
    executed = act.sim.exchange.executed["New-MailboxRestoreRequest"]

    result = act.run("restore", source.exchange_guid, "--target", target, "--yes")

    assert result.exit_code == 5, result.stderr
    assert f"Error: restore of {source.primary_smtp} is blocked (1 blocker): {case}" in result.stderr
    assert act.sim.exchange.executed["New-MailboxRestoreRequest"] == executed
    assert _requests(act, source) == []
    assert [(r["result"], r["error_message"]) for r in act.audit(source.exchange_guid, "RESTORE_MAILBOX")] == [
        ("failure", f"restore of {source.primary_smtp} is blocked (1 blocker): {case}")
    ]
    if case == "target-over-quota":
        full = next(m for m in act.active_mailboxes() if m.primary_smtp == target)
        assert _x500(source) not in full.extra_addresses


def test_restore_ambiguous_failure_is_reconciled_not_repeated(act: ActEnv) -> None:
    source = _source(act)
    target = _target(act, source)
    act.sim.exchange.fail_next("New-MailboxRestoreRequest", "reset_after_commit")
    executed = act.sim.exchange.executed["New-MailboxRestoreRequest"]

    result, data = act.json("restore", source.exchange_guid, "--target", target.exchange_guid, "--yes")

    assert result.exit_code == 0, result.stderr
    assert data["details"]["reconciled"] is True
    assert act.sim.exchange.executed["New-MailboxRestoreRequest"] == executed + 1
    assert len(_requests(act, source)) == 1
    rows = act.audit(source.exchange_guid, "RESTORE_MAILBOX")
    assert [r["result"] for r in rows] == ["started", "success"]
    assert rows[1]["details"]["reconciled"] is True


def test_a_failed_restore_request_exits_1_and_keeps_the_x500(act: ActEnv) -> None:
    source = _source(act)
    target = _target(act, source)
    assert act.run("restore", source.exchange_guid, "--target", target.exchange_guid, "--yes").exit_code == 0
    [request] = _requests(act, source)
    request.fail = True  # the simulator's knob: the request ends Failed / FailedOther

    result, rows = act.json(
        "restore", "status", request.name, "--wait", "--interval", "0.1", "--timeout", "30", "--remove-x500"
    )

    assert result.exit_code == 1
    assert [(r["status"], r["status_detail"], r["x500_removed"]) for r in rows] == [("Failed", "FailedOther", False)]
    assert _x500(source) in target.extra_addresses  # only a completed restore loses its X500
    done = act.audit(source.exchange_guid, "RESTORE_STATUS")
    assert [r["result"] for r in done] == ["failure"]
    assert done[0]["error_message"].startswith(f"restore request {request.name} ended Failed")


def test_a_completed_restore_scored_below_good_is_a_warning_and_exit_1(act: ActEnv) -> None:
    """New-MailboxRestoreRequest.md (-BadItemLimit): admins "must review the DataConsistencyScore and any skipped
    items after the restore completes"; Investigate and Poor mean data was lost (track-prevent-data-loss-dcs)."""
    source = _source(act)
    target = _target(act, source)
    assert act.run("restore", source.exchange_guid, "--target", target.exchange_guid, "--yes").exit_code == 0
    [request] = _requests(act, source)
    request.consistency, request.skipped_items = "Investigate", 3  # the simulator's knobs for the outcome

    result, rows = act.json("restore", "status", request.name, "--wait", "--interval", "0.1", "--timeout", "30")

    assert result.exit_code == 1
    [row] = rows
    assert (row["status"], row["data_consistency_score"], row["skipped_items"]) == ("Completed", "Investigate", 3)
    assert row["consistency_warning"].startswith("DataConsistencyScore Investigate; 3 item(s) skipped: data was lost")
    assert f"Warning: restore request {request.name}: DataConsistencyScore Investigate" in result.stderr
    table = act.run("restore", "status", request.name)
    assert table.exit_code == 1
    assert "DataConsistencyScore Investigate" in table.stderr
    tracked = act.rows(
        "SELECT data_consistency_score, skipped_items FROM restore_requests WHERE name = ?", (request.name,)
    )
    assert tracked == [{"data_consistency_score": "Investigate", "skipped_items": 3}]


def test_named_requests_are_not_limited_to_ten_per_target(act: ActEnv) -> None:
    """New-MailboxRestoreRequest.md -Name: only the generated names MailboxRestore, MailboxRestore1-9 run out."""
    source = _source(act)
    target = _target(act, source)
    for _ in range(10):  # ten auto-named requests already on the target (made outside imm)
        act.tenant.new_restore_request(source.exchange_guid, target.exchange_guid, allow_legacy_dn_mismatch=True)

    result, data = act.json("restore", source.exchange_guid, "--target", target.exchange_guid, "--yes")

    assert result.exit_code == 0, result.stderr
    assert data["status"] == "success"
    named = [r for r in _requests(act, source) if r.name.startswith("imm-")]
    assert len(named) == 1 and len(_requests(act, source)) == 11


def test_the_targets_recoverable_items_quota_blocks_unless_the_dumpster_is_left_out(act: ActEnv) -> None:
    """recoverable-items-folder article: the folder has its own quota (30 GB unless on hold); the restore copies the
    source's Recoverable Items unless -ExcludeDumpster (New-MailboxRestoreRequest.md)."""
    source = _source(act)
    target = _target(act, source)
    if target.litigation_hold or target.in_place_holds:
        pytest.skip("target on hold: 100 GB Recoverable Items quota")
    source.deleted_bytes = 2 * 1024**3
    target.deleted_bytes = 29 * 1024**3

    blocked = act.run("restore", source.exchange_guid, "--target", target.exchange_guid, "--yes")

    assert blocked.exit_code == 5, blocked.stderr
    assert "target-recoverable-items-over-quota: The target's RecoverableItemsQuota is 30 GB" in blocked.stderr
    assert "--exclude-dumpster" in blocked.stderr
    assert _requests(act, source) == []

    result = act.run("restore", source.exchange_guid, "--target", target.exchange_guid, "--exclude-dumpster", "--yes")

    assert result.exit_code == 0, result.stderr
    [request] = _requests(act, source)
    assert (request.exclude_dumpster, request.dumpster_bytes) == (True, 0)


def test_restore_status_table_and_errors(act: ActEnv) -> None:
    source = _source(act)  # this test's own request: it must not depend on which tests ran before it
    assert (
        act.run("restore", source.exchange_guid, "--target", _target(act, source).exchange_guid, "--yes").exit_code == 0
    )
    result = act.run("restore", "status")
    assert result.exit_code in (0, 1)  # earlier requests of this module may have failed on purpose
    assert "Request" in result.stdout and "Status" in result.stdout
    unknown = act.run("restore", "status", "never.restored@contoso.com")
    assert unknown.exit_code == 4
    assert unknown.stderr.splitlines()[0] == "Error: no restore request imm started for 'never.restored@contoso.com'"
    missing = act.run("restore", "start", "someone")
    assert missing.exit_code == 2
    assert "Missing option '--target'" in missing.stderr


def test_remove_x500_waits_for_completion(act: ActEnv) -> None:
    source = _source(act)
    target = _target(act, source)
    act.tenant.restore_seconds = 60.0  # stays in progress while this test runs
    try:
        assert act.run("restore", source.exchange_guid, "--target", target.exchange_guid, "--yes").exit_code == 0
        result = act.run("restore", "status", source.exchange_guid, "--remove-x500")
    finally:
        act.tenant.restore_seconds = 0.6
    assert result.exit_code == 0, result.stderr
    assert _x500(source) in target.extra_addresses
    assert act.audit(target.exchange_guid, "REMOVE_ADDRESS") == []
    assert target.state == ACTIVE


def test_a_blocked_restore_is_one_json_error_under_output_json(act: ActEnv) -> None:
    source = _source(act)

    result = act.run("restore", source.exchange_guid, "--target", "nobody.at.all@contoso.com", "--yes", "-o", "json")

    assert result.exit_code == 5
    assert result.stdout == ""
    body = json.loads(result.stderr)
    assert body["error"]["code"] == "blocked"
    assert body["error"]["exit_code"] == 5
    assert body["error"]["message"] == f"restore of {source.primary_smtp} is blocked (1 blocker): target-missing"
    assert body["error"]["blockers"] == [
        "target-missing: The target mailbox does not exist (instead: Name an existing active mailbox as target)"
    ]


def test_restore_requests_are_suspended_resumed_and_removed_through_the_plan_path(act: ActEnv) -> None:
    source = _source(act)
    target = _target(act, source)
    seconds = act.tenant.restore_seconds
    act.tenant.restore_seconds = 120.0  # long enough to be caught in flight
    try:
        started, data = act.json("restore", source.primary_smtp, "--target", target.primary_smtp, "--yes")
        assert started.exit_code == 0, started.stderr
        [request] = _requests(act, source)
        name = request.name

        what_if, plan = act.json("restore", "suspend", name, "--what-if")
        assert what_if.exit_code == 0, what_if.stderr
        assert plan["cmdlets"] == [
            {"cmdlet": "Suspend-MailboxRestoreRequest", "endpoint": "exchange",
             "parameters": {"Identity": request.request_guid}}
        ]  # fmt: skip
        assert request.suspended_at is None  # a what-if changes nothing

        resumed, _ = act.json("restore", "resume", name, "--yes")  # it is running: nothing to resume
        assert resumed.exit_code == 5
        suspended, out = act.json("restore", "suspend", name, "--yes", "--comment", "after hours")
        assert suspended.exit_code == 0, suspended.stderr
        assert (out["status"], out["message"]) == ("success", f"Suspended restore request {name} (now Suspended)")
        assert request.suspended_at is not None and request.suspend_comment == "after hours"
        _, rows = act.json("restore", "status", name)
        assert [r["status"] for r in rows] == ["Suspended"]

        again, out = act.json("restore", "resume", name, "--yes")
        assert again.exit_code == 0, again.stderr
        assert request.suspended_at is None and out["message"].startswith(f"Resumed restore request {name} (now ")

        removed, out = act.json("restore", "remove", name, "--yes")
        assert removed.exit_code == 0, removed.stderr
        assert _requests(act, source) == []
        assert out["message"] == f"Removed restore request {name} (now Removed)"
    finally:
        act.tenant.restore_seconds = seconds
    results = {
        op: [r["result"] for r in act.audit(source.exchange_guid, op)]
        for op in ("SUSPEND_RESTORE_REQUEST", "RESUME_RESTORE_REQUEST", "REMOVE_RESTORE_REQUEST")
    }
    assert results == {
        "SUSPEND_RESTORE_REQUEST": ["preview", "started", "success"],
        "RESUME_RESTORE_REQUEST": ["failure", "started", "success"],  # the blocked attempt, then the resume
        "REMOVE_RESTORE_REQUEST": ["started", "success"],
    }
    gone, _ = act.json("restore", "remove", name, "--yes")
    assert gone.exit_code == 5  # it no longer exists


def test_a_request_action_whose_reply_was_lost_is_read_back_not_resent(act: ActEnv) -> None:
    """Suspend and remove answered by a reset after Exchange made them: read back (Suspended; not found), not sent
    again, and audited as successes confirmed after the lost reply; a remove sent again would be refused (gone)."""
    source = _source(act)
    target = _target(act, source)
    seconds = act.tenant.restore_seconds
    act.tenant.restore_seconds = 120.0
    try:
        assert act.run("restore", source.primary_smtp, "--target", target.primary_smtp, "--yes").exit_code == 0
        [request] = _requests(act, source)
        counts = act.sim.exchange.executed
        for cmdlet, command, done in (("Suspend-MailboxRestoreRequest", "suspend", "Suspended"),
                                      ("Remove-MailboxRestoreRequest", "remove", "Removed")):  # fmt: skip
            before = int(counts[cmdlet])
            act.sim.exchange.fail_next(cmdlet, "reset_after_commit")
            result, out = act.json("restore", command, request.name, "--yes")
            assert result.exit_code == 0, result.stderr
            assert int(counts[cmdlet]) - before == 1  # sent once
            assert out["message"] == (
                f"{done} restore request {request.name} (now {done}) (confirmed after a lost reply)"
            )
        assert _requests(act, source) == []
    finally:
        act.tenant.restore_seconds = seconds
    for operation in ("SUSPEND_RESTORE_REQUEST", "REMOVE_RESTORE_REQUEST"):
        rows = act.audit(source.exchange_guid, operation)
        assert [r["result"] for r in rows] == ["started", "success"], operation
        assert rows[1]["details"]["confirmed_after_lost_reply"] is True


def test_an_x500_removal_whose_reply_was_lost_is_read_back_not_resent(act: ActEnv) -> None:
    source = _source(act)
    target = _target(act, source)
    assert act.run("restore", source.exchange_guid, "--target", target.exchange_guid, "--yes").exit_code == 0
    sets = act.sim.exchange.executed
    before = int(sets["Set-Mailbox"])
    act.sim.exchange.fail_next("Set-Mailbox", "reset_after_commit")  # the removal is made, its reply lost
    result = act.run(
        "restore", "status", source.exchange_guid, "--wait", "--interval", "0.1", "--timeout", "30", "--remove-x500"
    )
    assert result.exit_code == 0, result.stderr
    assert int(sets["Set-Mailbox"]) - before == 1  # sent once: read back, the address was gone
    assert _x500(source) not in target.extra_addresses
    removal = act.audit(target.exchange_guid, "REMOVE_ADDRESS")
    assert [r["result"] for r in removal] == ["started", "success"]
    assert removal[1]["details"]["confirmed_after_lost_reply"] is True
