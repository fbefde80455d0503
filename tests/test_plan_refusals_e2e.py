"""Every action is a plan (real CLI process against the simulated tenant): a recover or restore whose mailbox
changed between the confirmation and the change is refused and audited; single and bulk runs of the same item
write the same audit rows for every action; a change tried while Exchange's port is closed leaves a failure row."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from action_support import ActEnv, make_env, recoverable
from imm.config import write_profile
from imm.simulator.model import ACTIVE, INACTIVE, Mailbox

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def act(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActEnv]:
    yield from make_env(tmp_path_factory.mktemp("refusals"))


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text("Xq7!vR2#mK9pL4wz\n", encoding="utf-8")
    return path


def _restorable(mbx: Mailbox, _tenant: Any) -> bool:
    return recoverable(mbx, _tenant) and mbx.total_bytes < 5 * 1024**3


def _target(act: ActEnv, source: Mailbox) -> Mailbox:
    special = {act.tenant.special["full_target"], act.tenant.special.get("shared_smtp")}
    for mbx in act.active_mailboxes():
        if mbx.primary_smtp in special or f"target:{mbx.exchange_guid}" in act.claimed:
            continue
        if mbx.quota_bytes - mbx.total_bytes > source.total_bytes * 2:
            act.claimed.add(f"target:{mbx.exchange_guid}")
            return mbx
    pytest.skip("no active mailbox with room left")


def _confirm_after_a_change(
    act: ActEnv, mbx: Mailbox | None, *args: str, change: Callable[[], None] | None = None
) -> tuple[int, str]:
    """Run ``args``, wait for its y/N question, change ``mbx`` in Exchange (someone adds an address) or run
    ``change``, answer y."""
    env = {**os.environ, **act.env}
    env.pop("IMM_RAISE_ERRORS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "imm", *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        prompt = ""
        deadline = time.monotonic() + 60
        while "[y/N]" not in prompt:
            assert time.monotonic() < deadline, prompt
            char = proc.stderr.read(1)
            assert char, prompt  # ended before it asked
            prompt += char
        with act.tenant.lock:
            if change is not None:
                change()
            else:
                assert mbx is not None
                mbx.extra_addresses.append(f"smtp:changed.{mbx.alias}@{act.sim.config.tenant_domain}")
                mbx.when_changed = time.time()
        _, stderr = proc.communicate("y\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, prompt + stderr


def _reads(act: ActEnv, guid: str) -> int:
    """Get-Mailbox calls the tenant answered for this mailbox (by its ExchangeGuid)."""
    log = list(act.sim.exchange.request_log)
    return sum(1 for e in log if e["cmdlet"] == "Get-Mailbox" and str(e["parameters"].get("Identity")).lower() == guid)


def _executed(act: ActEnv, cmdlet: str) -> int:
    return int(act.sim.exchange.executed[cmdlet])


# ------------------------------------------------------------------------------------ changed-plan refusal
def test_a_recover_whose_mailbox_changed_before_the_yes_is_refused_and_audited(
    act: ActEnv, password_file: Path
) -> None:
    mbx = act.pick(recoverable, "recoverable mailbox")
    guid = mbx.exchange_guid
    created = _executed(act, "New-Mailbox")
    upn = f"changed.{mbx.alias}@{act.sim.config.tenant_domain}"
    code, stderr = _confirm_after_a_change(act, mbx, "recover", guid, "--upn", upn, "--password-file",
                                           str(password_file))  # fmt: skip
    assert code == 5, stderr
    assert f"Error: recover of {mbx.primary_smtp} was not run: the mailbox changed since the preview" in stderr
    assert "Hint: preview it again and confirm the new plan" in stderr
    assert _executed(act, "New-Mailbox") == created  # nothing was created
    assert act.tenant.mailboxes[guid].state == INACTIVE
    rows = act.audit(guid, "RECOVER_MAILBOX")
    assert [r["result"] for r in rows] == ["failure"]
    assert rows[0]["details"]["blockers"][0].startswith(f"mailbox-changed: {mbx.primary_smtp} changed in Exchange")
    assert (
        rows[0]["error_message"] == f"recover of {mbx.primary_smtp} was not run: the mailbox changed since the preview"
    )
    assert "Xq7!vR2#mK9pL4wz" not in str(rows)


def test_a_restore_whose_source_changed_before_the_yes_is_refused_and_audited(act: ActEnv) -> None:
    source = act.pick(_restorable, "restorable mailbox")
    target = _target(act, source)
    guid = source.exchange_guid
    sets, creates = _executed(act, "Set-Mailbox"), _executed(act, "New-MailboxRestoreRequest")
    code, stderr = _confirm_after_a_change(act, source, "restore", guid, "--target", target.primary_smtp)
    assert code == 5, stderr
    assert f"Error: restore of {source.primary_smtp} was not run: the mailbox changed since the preview" in stderr
    # nothing ran: no X500 added to the target, no request created
    assert (_executed(act, "Set-Mailbox"), _executed(act, "New-MailboxRestoreRequest")) == (sets, creates)
    assert f"X500:{source.legacy_dn}" not in target.extra_addresses
    assert [r for r in act.tenant.restore_requests if r.source_guid == guid] == []
    rows = act.audit(guid, "RESTORE_MAILBOX")
    assert [r["result"] for r in rows] == ["failure"]
    assert rows[0]["details"]["blockers"][0].startswith("mailbox-changed: ")
    assert act.rows("SELECT * FROM restore_requests WHERE source_identity = ?", (guid,)) == []


def test_a_restore_request_action_whose_request_changed_before_the_yes_is_refused_and_audited(act: ActEnv) -> None:
    """restore remove, confirmed after someone else suspended the request: its plan was made for a running request,
    so it is refused (exit 5, a failure row naming request-changed) and Remove-MailboxRestoreRequest never sent."""
    source = act.pick(_restorable, "restorable mailbox")
    target = _target(act, source)
    guid = source.exchange_guid
    seconds = act.tenant.restore_seconds
    act.tenant.restore_seconds = 600.0  # still running when the person answers
    try:
        started = act.run("restore", guid, "--target", target.primary_smtp, "--yes")
        assert started.exit_code == 0, started.stderr
        [request] = [r for r in act.tenant.restore_requests if r.source_guid == guid]
        removes = _executed(act, "Remove-MailboxRestoreRequest")
        code, stderr = _confirm_after_a_change(
            act, None, "restore", "remove", request.name,
            change=lambda: act.tenant.suspend_restore_request(request.request_guid, "someone else"),
        )  # fmt: skip
    finally:
        act.tenant.restore_seconds = seconds
    assert code == 5, stderr
    message = f"restore-remove of restore request {request.name} was not run: the request changed since the preview"
    assert f"Error: {message}" in stderr
    assert _executed(act, "Remove-MailboxRestoreRequest") == removes
    assert [r.name for r in act.tenant.restore_requests if r.source_guid == guid] == [request.name]
    rows = act.audit(guid, "REMOVE_RESTORE_REQUEST")
    assert [r["result"] for r in rows] == ["failure"]
    assert rows[0]["error_message"] == message
    assert rows[0]["details"]["blockers"] == [
        f"request-changed: restore request {request.name} changed status after the preview, so the confirmed plan "
        "no longer describes what would happen"
    ]


# ------------------------------------------------------------------------ Exchange down: its port closed
def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the block ends: nothing listens there


def test_a_change_tried_while_exchanges_port_is_closed_leaves_a_failure_row(act: ActEnv) -> None:
    mbx = act.pick(lambda m, t: m.litigation_hold and len(t.hold_reasons(m)) > 1, "mailbox on Litigation Hold")
    guid = mbx.exchange_guid
    config = act.home / "config" / "config.toml"
    scope = f"{act.sim.base_url}/.default"  # the token stays the one signed in for; only the port is closed
    closed = {"exchange_url": f"https://127.0.0.1:{_closed_port()}", "exchange_scope": scope, "max_retries": 1}
    write_profile(config, "sim", closed)
    try:
        result = act.run("holds", "release", guid, "--type", "litigation", "--yes")
    finally:
        write_profile(config, "sim", {"exchange_url": act.sim.base_url, "max_retries": 5})
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()
    assert any(line.startswith("Error: Get-Mailbox failed: could not connect to 127.0.0.1") for line in last), last
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["failure"]
    assert rows[0]["error_message"].startswith(
        "Get-Mailbox failed: could not connect to 127.0.0.1 (ConnectError) after 2 attempts"
    )
    assert act.tenant.mailboxes[guid].litigation_hold is True


# ------------------------------------------------------------------------------- single and bulk alike
def _comparable(row: dict[str, Any]) -> tuple[Any, ...]:
    """An audit row without what differs between two runs of one change: ids, times, the job's place, the
    fingerprint (it hashes WhenChanged), the restore request's name (a job item's is derived from the job) and its
    guid, and the password-free record of the new mailbox (its times)."""
    volatile = ("job_id", "line", "fingerprint", "request_name", "request_identity", "request_guid", "after",
                "before", "cmdlets")  # fmt: skip
    details = {k: v for k, v in row["details"].items() if k not in volatile}
    return (row["operation"], row["identity"], row["user"], row["result"], row["error_message"], details)


def _undo_restore(act: ActEnv, source: Mailbox, target: Mailbox) -> None:
    with act.tenant.lock:
        act.tenant.restore_requests[:] = [
            r for r in act.tenant.restore_requests if r.source_guid != source.exchange_guid
        ]
        target.extra_addresses[:] = [a for a in target.extra_addresses if a != f"X500:{source.legacy_dn}"]


def test_single_and_bulk_restores_of_the_same_item_write_the_same_audit_rows(act: ActEnv, tmp_path: Path) -> None:
    source = act.pick(_restorable, "restorable mailbox")
    target = _target(act, source)
    guid = source.exchange_guid
    plan = tmp_path / "plan.csv"
    plan.write_text(f"action,identity,target\nrestore,{guid},{target.primary_smtp}\n", encoding="utf-8")

    reads = []
    for args in (("restore", guid, "--target", target.primary_smtp, "--what-if"), ("bulk", "run", str(plan)),
                 ("restore", guid, "--target", target.primary_smtp, "--yes")):  # fmt: skip
        before = _reads(act, guid)
        done = act.run(*args)
        assert done.exit_code == 0, done.stderr
        reads.append(_reads(act, guid) - before)
    _undo_restore(act, source, target)  # back as it was, for the bulk run of the same change
    before = _reads(act, guid)
    bulk = act.run("bulk", "run", str(plan), "--execute", "--yes")
    assert bulk.exit_code == 0, bulk.stderr
    reads.append(_reads(act, guid) - before)
    # the source read once for a preview (single or bulk), once more before a confirmed change; a bulk item's
    # plan is computed just before its change, so that one read serves both
    assert reads == [1, 1, 2, 1]
    assert len([r for r in act.tenant.restore_requests if r.source_guid == guid]) == 1

    rows = act.audit(guid, "RESTORE_MAILBOX")
    assert [r["result"] for r in rows] == ["preview", "preview", "started", "success", "started", "success"]
    assert [r["details"].get("line") for r in rows] == [None, 2, None, None, 2, 2]
    assert _comparable(rows[0]) == _comparable(rows[1])
    assert _comparable(rows[2]) == _comparable(rows[4])
    assert _comparable(rows[3]) == _comparable(rows[5])
    assert rows[1]["details"]["cmdlets"][0] == rows[0]["details"]["cmdlets"][0]  # the X500, the same


def test_single_and_bulk_releases_of_the_same_item_write_the_same_audit_rows(act: ActEnv, tmp_path: Path) -> None:
    mbx = act.pick(
        lambda m, t: (
            m.litigation_hold
            and m.litigation_hold_duration is not None
            and [r for r in t.hold_reasons(m) if r not in ("LitigationHold", "DelayHold", "DelayReleaseHold")]
        ),
        "mailbox on a Litigation Hold with a duration, held by something else too",
    )
    guid = mbx.exchange_guid
    plan = tmp_path / "plan.csv"
    plan.write_text(f"action,identity,type\nrelease,{guid},litigation\n", encoding="utf-8")

    reads = []
    for args in (("holds", "release", guid, "--type", "litigation", "--what-if"), ("bulk", "run", str(plan)),
                 ("holds", "release", guid, "--type", "litigation", "--yes")):  # fmt: skip
        before = _reads(act, guid)
        done = act.run(*args)
        assert done.exit_code == 0, done.stderr
        reads.append(_reads(act, guid) - before)
    with act.tenant.lock:  # back on Litigation Hold as it was, for the bulk run of the same change
        mbx.litigation_hold, mbx.delay_hold = True, False
    assert act.run("sync").exit_code == 0
    before = _reads(act, guid)
    bulk = act.run("bulk", "run", str(plan), "--execute", "--yes")
    assert bulk.exit_code == 0, bulk.stderr
    reads.append(_reads(act, guid) - before)
    # one read for a preview, one more before a confirmed change, and the read of the result after it
    assert reads == [1, 1, 3, 2]
    assert act.tenant.mailboxes[guid].litigation_hold is False

    rows = act.audit(guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["preview", "preview", "started", "success", "started", "success"]
    assert [r["details"].get("line") for r in rows] == [None, 2, None, None, 2, 2]
    assert _comparable(rows[0]) == _comparable(rows[1])
    assert _comparable(rows[2]) == _comparable(rows[4])
    assert _comparable(rows[3]) == _comparable(rows[5])
    assert rows[2]["details"]["cmdlets"] == rows[4]["details"]["cmdlets"]


def test_single_and_bulk_recovers_write_the_same_audit_rows(act: ActEnv, tmp_path: Path, password_file: Path) -> None:
    """Two mailboxes (one cannot be recovered twice): the single run of one and the bulk run of the other write the
    same rows but for the identity, the UPN, the name and what Exchange changed on each (``changes``)."""
    first = act.pick(recoverable, "recoverable mailbox")
    second = act.pick(recoverable, "recoverable mailbox")
    domain = act.sim.config.tenant_domain
    plan = tmp_path / "plan.csv"
    plan.write_text(
        f"action,identity,upn,name\nrecover,{second.exchange_guid},back.{second.alias}@{domain},{second.name}-back\n",
        encoding="utf-8",
    )
    single_args = ("recover", first.exchange_guid, "--upn", f"back.{first.alias}@{domain}", "--name",
                   f"{first.name}-back")  # fmt: skip
    reads = []
    for args, guid in (((*single_args, "--what-if"), first.exchange_guid), (("bulk", "run", str(plan)),
                       second.exchange_guid), ((*single_args, "--password-file", str(password_file), "--yes"),
                       first.exchange_guid), (("bulk", "run", str(plan), "--execute", "--yes", "--passwords-out",
                       str(tmp_path / "pw.csv")), second.exchange_guid)):  # fmt: skip
        before = _reads(act, guid)
        done = act.run(*args)
        assert done.exit_code == 0, done.stderr
        reads.append(_reads(act, guid) - before)
    assert reads == [1, 1, 2, 1]  # one read for a preview, one more before a confirmed change
    assert act.tenant.mailboxes[first.exchange_guid].state == ACTIVE
    assert act.tenant.mailboxes[second.exchange_guid].state == ACTIVE

    def shape(mbx: Mailbox) -> list[tuple[Any, ...]]:
        out = []
        for row in act.audit(mbx.exchange_guid, "RECOVER_MAILBOX"):
            comparable = _comparable(row)
            assert ("changes" in comparable[5]) == (row["result"] == "success")
            text = repr(comparable[:5] + ({k: v for k, v in comparable[5].items() if k != "changes"},))
            for value, word in ((mbx.exchange_guid, "GUID"), (mbx.alias, "ALIAS"), (mbx.name, "NAME"),
                                (mbx.primary_smtp, "SMTP"), (mbx.display_name, "DISPLAY")):  # fmt: skip
                text = text.replace(value, word)
            out.append((row["result"], row["details"].get("line") is not None, text))
        return out

    assert [r[:2] for r in shape(first)] == [("preview", False), ("started", False), ("success", False)]
    assert [r[:2] for r in shape(second)] == [("preview", True), ("started", True), ("success", True)]
    assert [r[2] for r in shape(first)] == [r[2] for r in shape(second)]


def test_a_single_and_a_bulk_recover_of_the_same_item_write_identical_audit_rows(
    act: ActEnv, tmp_path: Path, password_file: Path
) -> None:
    """The same inactive mailbox recovered singly, put back as it was in the tenant, then recovered by a bulk item
    with the same UPN and name: every row alike but for ids, times, the job's place and the fingerprint (it hashes
    WhenChanged) and the new mailbox's record (its creation time and new ids). What Exchange changed
    (``changes``), the state before, the cmdlets shown and the result are the same."""
    import copy
    import dataclasses

    mbx = act.pick(recoverable, "recoverable mailbox")
    guid = mbx.exchange_guid
    with act.tenant.lock:
        saved = copy.deepcopy(mbx)
    upn, name = f"again.{mbx.alias}@{act.sim.config.tenant_domain}", f"{mbx.name}-again"
    plan = tmp_path / "plan.csv"
    plan.write_text(f"action,identity,upn,name\nrecover,{guid},{upn},{name}\n", encoding="utf-8")
    single = ("recover", guid, "--upn", upn, "--name", name)
    reads = []
    for args in ((*single, "--what-if"), ("bulk", "run", str(plan)),
                 (*single, "--password-file", str(password_file), "--yes")):  # fmt: skip
        before = _reads(act, guid)
        done = act.run(*args)
        assert done.exit_code == 0, done.stderr
        reads.append(_reads(act, guid) - before)
    assert act.tenant.mailboxes[guid].state == ACTIVE
    with act.tenant.lock, act.tenant._rekey(mbx):  # back as it was before the recover, for the bulk run
        for item in dataclasses.fields(mbx):
            setattr(mbx, item.name, copy.deepcopy(getattr(saved, item.name)))
    assert act.tenant.mailboxes[guid].state == INACTIVE
    assert act.run("sync").exit_code == 0
    before = _reads(act, guid)
    bulk = act.run("bulk", "run", str(plan), "--execute", "--yes", "--passwords-out", str(tmp_path / "pw.csv"))
    assert bulk.exit_code == 0, bulk.stderr
    reads.append(_reads(act, guid) - before)
    assert reads == [1, 1, 2, 1]  # one read for a preview, one more before a confirmed change
    assert act.tenant.mailboxes[guid].state == ACTIVE and act.tenant.mailboxes[guid].upn == upn

    rows = act.audit(guid, "RECOVER_MAILBOX")
    assert [r["result"] for r in rows] == ["preview", "preview", "started", "success", "started", "success"]
    assert [r["details"].get("line") for r in rows] == [None, 2, None, None, 2, 2]

    def same(row: dict[str, Any]) -> tuple[Any, ...]:
        details = {k: v for k, v in row["details"].items() if k not in ("job_id", "line", "fingerprint", "after")}
        return (row["operation"], row["identity"], row["user"], row["result"], row["error_message"], details)

    assert same(rows[0]) == same(rows[1])
    assert same(rows[2]) == same(rows[4])
    assert same(rows[3]) == same(rows[5])
    assert rows[3]["details"]["changes"]  # what recovery changed is recorded, and the same both times
    assert rows[1]["details"]["cmdlets"][0]["parameters"]["Password"] == "***"
