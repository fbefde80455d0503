"""A change is a plan: read once for the preview and once before the change, refused when the mailbox changed in
between, and every attempt audited, interrupted or not (real CLI process against the simulated tenant)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from action_support import ActEnv, make_env
from imm.simulator import FaultConfig
from imm.simulator.model import INACTIVE, Mailbox
from imm.simulator.tenant import Tenant

pytestmark = pytest.mark.slow

INTERRUPTED_BEFORE = "interrupted by the user before the change: nothing was changed"


@pytest.fixture(scope="module")
def act(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActEnv]:
    yield from make_env(tmp_path_factory.mktemp("plans"))


def _litigation_and_more(mbx: Mailbox, tenant: Tenant) -> bool:
    """On Litigation Hold and held by something else that no litigation release touches."""
    others = [r for r in tenant.hold_reasons(mbx) if r not in ("LitigationHold", "DelayHold", "DelayReleaseHold")]
    return mbx.litigation_hold and bool(others)


def _get_mailbox_calls(act: ActEnv) -> int:
    return int(act.sim.exchange.executed["Get-Mailbox"])


def _popen(act: ActEnv, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **act.env}
    env.pop("IMM_RAISE_ERRORS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "imm", *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: Any, proc: subprocess.Popen[str], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)


def _settle(act: ActEnv, seconds: float = 30) -> None:
    """Wait until the simulator has finished every call, also those of a killed process (a slow read still runs
    on the server after its client went away, and would count as the next test's call)."""
    deadline = time.monotonic() + seconds
    while act.sim.exchange.in_flight:
        assert time.monotonic() < deadline, "the simulator still has calls in flight"
        time.sleep(0.02)


def test_release_reads_the_mailbox_once_for_the_preview_and_once_before_the_change(act: ActEnv) -> None:
    mbx = act.pick(_litigation_and_more, "mailbox on Litigation Hold with other holds")
    before = _get_mailbox_calls(act)
    result, data = act.json("holds", "release", mbx.exchange_guid, "--type", "litigation", "--what-if")
    assert result.exit_code == 0, result.stderr
    assert _get_mailbox_calls(act) - before == 1
    assert data["fingerprint"] and data["consequences"] == (
        ["unlimited-litigation"] if mbx.litigation_hold_duration is None else []
    )

    before = _get_mailbox_calls(act)
    result, data = act.json("holds", "release", mbx.exchange_guid, "--type", "litigation", "--yes")
    assert result.exit_code == 0, result.stderr
    assert data["status"] == "success"
    # the preview, the check before the change, and the read of the result after it
    assert _get_mailbox_calls(act) - before == 3
    assert act.sim.exchange.executed["Set-Mailbox"] >= 1
    rows = act.audit(mbx.exchange_guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["preview", "started", "success"]
    assert rows[1]["details"]["fingerprint"] == data["preview"]["fingerprint"] == rows[0]["details"]["fingerprint"]
    assert rows[1]["details"]["cmdlets"] == data["preview"]["cmdlets"]


def test_a_plan_whose_mailbox_changed_before_the_yes_is_refused_and_audited(act: ActEnv) -> None:
    mbx = act.pick(_litigation_and_more, "mailbox on Litigation Hold with other holds")
    guid = mbx.exchange_guid
    calls = act.sim.exchange.executed["Set-Mailbox"]
    proc = _popen(act, "holds", "release", guid, "--type", "litigation")
    try:
        assert proc.stderr is not None and proc.stdin is not None
        prompt = ""
        deadline = time.monotonic() + 30
        while "?" not in prompt:  # the y/N question follows the preview
            assert time.monotonic() < deadline, prompt
            prompt += proc.stderr.read(1)
        with act.tenant.lock:  # someone changes the mailbox while the person reads the preview
            mbx.litigation_hold_duration = 4321
            mbx.when_changed = time.time()
        stdout, stderr = proc.communicate("y\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = prompt + stderr
    assert proc.returncode == 5, stderr
    assert "Error: release of " in stderr and "was not run: the mailbox changed since the preview" in stderr
    assert "Hint: preview it again and confirm the new plan" in stderr
    assert act.sim.exchange.executed["Set-Mailbox"] == calls  # nothing ran
    assert act.tenant.mailboxes[guid].litigation_hold is True
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["failure"]
    assert rows[0]["details"]["blockers"][0].startswith("mailbox-changed: ")
    assert rows[0]["error_message"].endswith("was not run: the mailbox changed since the preview")


def test_ctrl_c_during_the_preview_leaves_a_cancelled_row_and_exit_130(act: ActEnv) -> None:
    mbx = act.pick(_litigation_and_more, "mailbox on Litigation Hold with other holds")
    guid = mbx.exchange_guid
    act.sim.config.faults.slow_seconds = 3.0
    act.sim.exchange.fail_next("Get-Mailbox", "slow")
    proc = _popen(act, "holds", "release", guid, "--type", "litigation", "--yes")
    try:
        _wait_for(lambda: act.sim.exchange.in_flight > 0, proc, "the preview's Get-Mailbox")
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-1] == f"Error: {INTERRUPTED_BEFORE}"
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [(r["result"], r["error_message"]) for r in rows] == [("cancelled", INTERRUPTED_BEFORE)]
    _settle(act)  # the slow read ends; nothing was sent after it
    assert act.tenant.mailboxes[guid].litigation_hold is True


def test_ctrl_c_after_the_change_keeps_its_success_and_exit_0(act: ActEnv) -> None:
    mbx = act.pick(_litigation_and_more, "mailbox on Litigation Hold with other holds")
    guid = mbx.exchange_guid
    act.sim.config.faults.slow_seconds = 3.0
    act.sim.exchange.fail_next("Get-Mailbox", "pass", 2)  # the preview and the check before the change
    act.sim.exchange.fail_next("Get-Mailbox", "slow")  # the read after the change
    done = act.sim.exchange.executed["Set-Mailbox"]
    proc = _popen(act, "holds", "release", guid, "--type", "litigation", "--yes", "--output", "json")
    try:
        _wait_for(lambda: act.sim.exchange.executed["Set-Mailbox"] > done, proc, "the Set-Mailbox call")
        time.sleep(0.3)  # inside the slow read after it
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert '"status": "success"' in stdout
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["started", "success"]
    assert rows[1]["details"]["after_error"] == "interrupted by the user while reading the mailbox after the change"
    assert act.tenant.mailboxes[guid].litigation_hold is False
    _settle(act)


def test_a_change_tried_while_exchange_does_not_answer_leaves_a_failure_row(act: ActEnv) -> None:
    mbx = act.pick(_litigation_and_more, "mailbox on Litigation Hold with other holds")
    guid = mbx.exchange_guid
    faults, retry_after = act.sim.config.faults, act.sim.config.retry_after_seconds
    act.sim.config.retry_after_seconds = 0.01
    act.sim.config.faults = FaultConfig(throttle_rate=1.0)  # every call: 429 until the client gives up
    try:
        result, data = act.json("holds", "release", mbx.primary_smtp, "--type", "litigation", "--yes")
    finally:
        act.sim.config.faults, act.sim.config.retry_after_seconds = faults, retry_after
    assert result.exit_code == 1, result.stderr
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["failure"]
    assert rows[0]["error_message"].startswith("Get-Mailbox failed: ")
    assert act.tenant.mailboxes[guid].litigation_hold is True


def test_audit_list_finds_unknown_outcomes(act: ActEnv) -> None:
    mbx = act.pick(_litigation_and_more, "mailbox on Litigation Hold with other holds")
    guid = mbx.exchange_guid
    act.sim.config.faults.slow_seconds = 2.0
    act.sim.exchange.fail_next("Set-Mailbox", "slow")
    proc = _popen(act, "holds", "release", guid, "--type", "litigation", "--yes")
    try:
        _wait_for(lambda: bool(act.audit(guid, "REMOVE_HOLD")), proc, "the started row")
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    _settle(act)  # the slow Set-Mailbox ends on the server
    result, data = act.json("audit", "list", "--result", "unknown")
    assert result.exit_code == 0, result.stderr
    assert [(r["identity"], r["result"]) for r in data if r["identity"] == guid] == [(guid, "unknown")]


def test_ctrl_c_at_the_question_is_cancelled_with_exit_130(act: ActEnv) -> None:
    mbx = act.pick(_litigation_and_more, "mailbox on Litigation Hold with other holds")
    guid = mbx.exchange_guid
    proc = _popen(act, "holds", "release", guid, "--type", "litigation")
    try:
        assert proc.stderr is not None
        prompt = ""
        deadline = time.monotonic() + 30
        while "?" not in prompt:
            assert time.monotonic() < deadline, prompt
            prompt += proc.stderr.read(1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert stderr.splitlines()[-1] == f"Error: {INTERRUPTED_BEFORE}"
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [(r["result"], r["error_message"]) for r in rows] == [("cancelled", INTERRUPTED_BEFORE)]
    assert act.tenant.mailboxes[guid].litigation_hold is True


def test_bulk_release_needs_the_typed_count_and_blocks_an_unconfirmed_consequence(act: ActEnv, tmp_path: Path) -> None:
    last = act.pick(lambda m, t: t.hold_reasons(m) == ["LitigationHold"], "mailbox held only by Litigation Hold")
    other = act.pick(_litigation_and_more, "mailbox on Litigation Hold with other holds")
    turned = act.pick(lambda m, t: t.hold_reasons(m) == ["LitigationHold"], "mailbox held only by Litigation Hold")
    with act.tenant.lock:
        turned.compliance_tag_hold = True  # a label hold too, as the cache will know it
    assert act.run("sync").exit_code == 0
    plan = tmp_path / "plan.csv"
    plan.write_text(
        "action,identity,type\n" + "".join(f"release,{m.exchange_guid},litigation\n" for m in (last, other, turned)),
        encoding="utf-8",
    )
    shown = act.run("bulk", "run", str(plan), "--show-cmdlets")
    assert shown.exit_code == 0, shown.stderr
    for line, mbx in zip((2, 3, 4), (last, other, turned), strict=True):
        assert f"line {line} release " in shown.stdout
        assert f"    Set-Mailbox -Identity {mbx.exchange_guid} -InactiveMailbox -LitigationHoldEnabled $false\n" in (
            shown.stdout
        )
    with act.tenant.lock:  # Exchange changes after the last sync: the cache still shows the label hold
        turned.compliance_tag_hold = False

    refused = act.run("bulk", "run", str(plan), "--execute", "--yes", "--i-understand-unlimited", input="")
    assert refused.exit_code == 6  # declined
    assert (
        "  1 row remove the last hold (a 30-day delay hold, then soft-deleted, purged 183 days after the removal): "
        in refused.stderr
    )
    assert refused.stderr.splitlines()[-1].endswith(
        "Error: not confirmed (the typed confirmation was not 'release 1'): nothing was changed"
    )
    assert act.tenant.mailboxes[last.exchange_guid].litigation_hold is True

    result = act.run("bulk", "run", str(plan), "--execute", "--yes", "--i-understand-unlimited", input="release 1\n")
    assert result.exit_code == 1, result.stderr  # one row blocked
    released = act.tenant.mailboxes[last.exchange_guid]  # its last hold, confirmed by count: a delay hold follows
    assert (released.state, released.litigation_hold, released.delay_hold) == (INACTIVE, False, True)
    assert act.tenant.mailboxes[other.exchange_guid].litigation_hold is False
    assert act.tenant.mailboxes[turned.exchange_guid].litigation_hold is True  # its last hold was never confirmed
    assert "line 4 release " in result.stderr and ": blocked: " in result.stderr
    rows = act.audit(turned.exchange_guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["preview", "failure"]
    assert rows[1]["details"]["blockers"][0].startswith("unconfirmed-consequence: this release would remove the last")
    assert rows[1]["details"]["line"] == 4


def test_audit_list_identity_takes_an_address_upn_or_name_also_after_the_mailbox_left_the_cache(act: ActEnv) -> None:
    mbx = act.pick(lambda m, t: t.hold_reasons(m) == ["LitigationHold"], "mailbox held only by Litigation Hold")
    guid = mbx.exchange_guid
    assert act.run("holds", "release", guid, "--type", "litigation", "--what-if").exit_code == 0
    by_guid = [r["id"] for r in act.audit(guid)]
    assert by_guid
    for text in (mbx.primary_smtp, mbx.primary_smtp.upper(), mbx.upn, mbx.name):
        result, data = act.json("audit", "list", "--identity", text)
        assert result.exit_code == 0, result.stderr
        assert sorted(r["id"] for r in data) == by_guid, text
    done = act.run("holds", "release", guid, "--type", "litigation", "--yes", "--i-understand-last-hold")
    assert done.exit_code == 0, done.stderr
    act.tenant.remove_mailbox(guid)  # purged at the end of its lifecycle (walked through in test_lifecycle_e2e)
    assert act.run("sync", "-q").exit_code == 0
    assert act.cached(guid) is None  # it left the cache
    result, data = act.json("audit", "list", "--identity", mbx.primary_smtp)
    assert [(r["identity"], r["result"]) for r in data][:2] == [(guid, "success"), (guid, "started")]


def test_a_last_hold_release_whose_reply_was_lost_is_read_back_not_resent(act: ActEnv) -> None:
    """After a reset that came once the change was made, imm reads the mailbox (the hold is off) instead of sending
    Set-Mailbox again, and records a success confirmed after the lost reply. The mailbox then waits under a delay
    hold, not soft-deleted."""
    mbx = act.pick(lambda m, t: t.hold_reasons(m) == ["LitigationHold"], "mailbox held only by Litigation Hold")
    guid = mbx.exchange_guid
    act.sim.exchange.fail_next("Set-Mailbox", "reset_after_commit")  # made, then the connection drops
    before = int(act.sim.exchange.executed["Set-Mailbox"])
    result, data = act.json("holds", "release", guid, "--type", "litigation", "--yes", "--i-understand-last-hold")
    assert result.exit_code == 0, result.stderr
    assert int(act.sim.exchange.executed["Set-Mailbox"]) - before == 1  # sent once: the lost reply was read back
    assert data["status"] == "success"
    assert (
        " (confirmed after a lost reply); it was the last hold: Exchange keeps the mailbox under a delay hold "
        in (data["message"])
    )
    assert (act.tenant.mailboxes[guid].state, act.tenant.mailboxes[guid].delay_hold) == (INACTIVE, True)
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["started", "success"]
    assert rows[1]["details"]["confirmed_after_lost_reply"] == rows[0]["details"]["holds"]
    assert rows[1]["details"]["soft_deleted"] is False  # not yet: the delay hold comes first


def test_a_release_whose_change_was_lost_before_it_ran_is_sent_again_once(act: ActEnv) -> None:
    """A 503 (the cmdlet did not run): read back, the hold is still there, so Set-Mailbox is sent once more."""
    mbx = act.pick(_litigation_and_more, "mailbox on Litigation Hold with other holds")
    guid = mbx.exchange_guid
    act.sim.exchange.fail_next("Set-Mailbox", "503")
    before = int(act.sim.exchange.executed["Set-Mailbox"])
    result, data = act.json("holds", "release", guid, "--type", "litigation", "--yes")
    assert result.exit_code == 0, result.stderr
    assert int(act.sim.exchange.executed["Set-Mailbox"]) - before == 1  # the 503 ran nothing; the second send did
    assert "confirmed after a lost reply" not in data["message"]
    assert act.tenant.mailboxes[guid].litigation_hold is False
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["started", "success"]
    assert "confirmed_after_lost_reply" not in rows[1]["details"]


def _comparable(row: dict[str, Any]) -> tuple[Any, ...]:
    """An audit row without what differs between two runs: ids, times, the job's place, the fingerprint (it hashes
    WhenChanged, a time)."""
    details = {k: v for k, v in row["details"].items() if k not in ("job_id", "line", "fingerprint")}
    return (row["operation"], row["identity"], row["user"], row["result"], row["error_message"], details)


def test_single_and_bulk_runs_of_the_same_item_write_the_same_audit_rows(act: ActEnv, tmp_path: Path) -> None:
    mbx = act.pick(
        lambda m, t: m.litigation_hold and m.litigation_hold_duration not in (None, 365), "mailbox with a duration"
    )
    guid, original = mbx.exchange_guid, mbx.litigation_hold_duration
    plan = tmp_path / "plan.csv"
    plan.write_text(f"action,identity,days\nset-duration,{guid},365\n", encoding="utf-8")

    before = _get_mailbox_calls(act)
    assert act.run("holds", "set-duration", guid, "--days", "365", "--what-if").exit_code == 0
    assert _get_mailbox_calls(act) - before == 1  # one read for the preview
    before = _get_mailbox_calls(act)
    assert act.run("bulk", "run", str(plan)).exit_code == 0
    assert _get_mailbox_calls(act) - before == 1  # the same for a bulk item
    before = _get_mailbox_calls(act)
    single = act.run("holds", "set-duration", guid, "--days", "365", "--yes")
    assert single.exit_code == 0, single.stderr
    assert _get_mailbox_calls(act) - before == 3  # preview, the check before the change, the read after it
    with act.tenant.lock:
        mbx.litigation_hold_duration = original  # back as it was, for the bulk run of the same change
    assert act.run("sync").exit_code == 0
    before = _get_mailbox_calls(act)
    bulk = act.run("bulk", "run", str(plan), "--execute", "--yes")
    assert bulk.exit_code == 0, bulk.stderr
    assert _get_mailbox_calls(act) - before == 2  # one read for the item's plan, one after the change
    assert act.tenant.mailboxes[guid].litigation_hold_duration == 365

    rows = act.audit(guid, "CHANGE_HOLD")
    assert [r["result"] for r in rows] == ["preview", "preview", "started", "success", "started", "success"]
    assert [r["details"].get("line") for r in rows] == [None, 2, None, None, 2, 2]
    assert _comparable(rows[0]) == _comparable(rows[1])
    assert _comparable(rows[2]) == _comparable(rows[4])
    assert _comparable(rows[3]) == _comparable(rows[5])


def test_a_set_duration_plan_whose_mailbox_changed_before_the_yes_is_refused_and_audited(act: ActEnv) -> None:
    mbx = act.pick(lambda m, t: m.litigation_hold and m.litigation_hold_duration != 400, "mailbox on Litigation Hold")
    guid = mbx.exchange_guid
    calls = act.sim.exchange.executed["Set-Mailbox"]
    proc = _popen(act, "holds", "set-duration", guid, "--days", "400")
    try:
        assert proc.stderr is not None
        prompt = ""
        deadline = time.monotonic() + 30
        while "?" not in prompt:
            assert time.monotonic() < deadline, prompt
            prompt += proc.stderr.read(1)
        with act.tenant.lock:  # someone else adds a delay hold meanwhile
            mbx.delay_hold = True
            mbx.when_changed = time.time()
        _, stderr = proc.communicate("y\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 5, prompt + stderr
    assert "was not run: the mailbox changed since the preview" in stderr
    assert act.sim.exchange.executed["Set-Mailbox"] == calls
    assert act.tenant.mailboxes[guid].litigation_hold_duration != 400
    rows = act.audit(guid, "CHANGE_HOLD")
    assert [r["result"] for r in rows] == ["failure"]
    assert rows[0]["details"]["blockers"][0].startswith("mailbox-changed: ")
