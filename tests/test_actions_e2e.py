"""``imm recover`` and ``imm holds set-duration`` end to end: the real CLI process, real msal sign-in, real httpx
over TLS and a real SQLite file, against the simulated tenant (its ground truth is what the assertions read)."""

from __future__ import annotations

import os
import pty
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from action_support import (
    USER,
    ActEnv,
    make_env,
    only_litigation,
    recoverable,
    unlocked_policy_tags,
)
from imm.simulator.model import ACTIVE, INACTIVE, SOFT_DELETED, Mailbox

pytestmark = pytest.mark.slow

PASSWORD = "Xq7!vR2#mK9pL4wz"  # what every recover here sends, searched for everywhere afterwards


@pytest.fixture(scope="module")
def act(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActEnv]:
    yield from make_env(tmp_path_factory.mktemp("actions"))


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text(PASSWORD + "\n", encoding="utf-8")
    return path


def _assert_no_password(act: ActEnv, password: str) -> None:
    for where, text in act.secret_surfaces().items():
        assert password not in text, f"the password leaked into {where}"


def _recover_candidate(act: ActEnv) -> Mailbox:
    return act.pick(
        lambda m, t: recoverable(m, t) and bool(unlocked_policy_tags(m, t)) and not m.litigation_hold,
        "recoverable mailbox held by an unlocked retention policy",
    )


# ------------------------------------------------------------------------------------------------- recover
def test_recover_creates_the_mailbox_replaces_policies_and_leaves_the_cache(act: ActEnv, password_file: Path) -> None:
    mbx = _recover_candidate(act)
    guid = mbx.exchange_guid
    holds_before = list(mbx.in_place_holds)
    unlocked = unlocked_policy_tags(mbx, act.tenant)
    upn = f"rec-{guid[:8]}@contoso.onmicrosoft.com"
    assert act.cached(guid) is not None

    result, data = act.json(
        "recover", mbx.primary_smtp, "--upn", upn, "--name", f"rec-{guid[:8]}", "--password-file",
        str(password_file), "--yes", "-vv",
    )  # fmt: skip

    assert result.exit_code == 0, result.stderr
    assert data["status"] == "success"
    assert data["identity"] == guid
    # Ground truth: the inactive mailbox became the new active mailbox, as Exchange does it (domain.md §4).
    now = act.tenant.mailboxes[guid]
    assert now.state == ACTIVE
    assert (now.upn, now.primary_smtp, now.name) == (upn, upn, f"rec-{guid[:8]}")
    assert now.litigation_hold is True  # the unlocked policies were replaced by Litigation Hold
    assert not any(tag in now.in_place_holds for tag in unlocked)
    assert (now.retention_hold, now.retain_deleted_items_for, now.single_item_recovery) == (True, 30, True)
    # What imm reports Exchange changed, read back from the new mailbox.
    changes = data["details"]["changes"]
    assert "Litigation Hold: off → on" in changes
    assert "Keep deleted items for: 14.00:00:00 → 30.00:00:00" in changes
    assert any(line.startswith("In-place holds: removed ") for line in changes)
    assert data["details"]["reminders"][0].startswith("Assign the new user an Exchange Online licence")
    assert data["details"]["exchange_warnings"][0].startswith("The inactive mailbox has been recovered.")
    # The cache follows: the inactive mailbox is gone from it.
    assert act.cached(guid) is None
    # Write-ahead audit: started (state before) then success (state after), one operation id.
    rows = act.audit(guid, "RECOVER_MAILBOX")
    assert [r["result"] for r in rows] == ["started", "success"]
    assert rows[0]["operation_id"] == rows[1]["operation_id"] == data["operation_id"]
    assert rows[0]["user"] == USER
    assert rows[0]["details"]["before"]["InPlaceHolds"] == holds_before
    assert rows[0]["details"]["before"]["IsInactiveMailbox"] is True
    assert rows[0]["details"]["upn"] == upn
    assert rows[1]["details"]["after"]["LitigationHoldEnabled"] is True
    assert rows[1]["details"]["after"]["UserPrincipalName"] == upn
    assert rows[1]["details"]["reconciled"] is False
    assert act.sim.exchange.executed["New-Mailbox"] >= 1
    _assert_no_password(act, PASSWORD)


def test_recover_what_if_changes_nothing(act: ActEnv) -> None:
    mbx = act.pick(recoverable, "recoverable mailbox")
    before = mbx.to_state()
    executed = act.sim.exchange.executed["New-Mailbox"]

    result = act.run("recover", mbx.exchange_guid, "--upn", "whatif@contoso.onmicrosoft.com", "--what-if")

    assert result.exit_code == 0, result.stderr
    assert "Preview: recover" in result.stdout
    assert "New-Mailbox -InactiveMailbox " + mbx.exchange_guid in result.stdout
    assert "-Password ***" in result.stdout
    assert act.tenant.mailboxes[mbx.exchange_guid].to_state()["state"] == INACTIVE
    assert act.tenant.mailboxes[mbx.exchange_guid].in_place_holds == before["in_place_holds"]
    assert act.sim.exchange.executed["New-Mailbox"] == executed
    rows = act.audit(mbx.exchange_guid, "RECOVER_MAILBOX")
    assert [(r["result"], r["error_message"]) for r in rows] == [("preview", None)]
    assert rows[0]["details"]["cmdlets"][0]["cmdlet"] == "New-Mailbox"
    assert rows[0]["details"]["cmdlets"][0]["parameters"]["Password"] == "***"


def test_recover_asks_and_a_no_changes_nothing(act: ActEnv, password_file: Path) -> None:
    mbx = act.pick(recoverable, "recoverable mailbox")

    result = act.run(
        "recover", mbx.exchange_guid, "--upn", "declined@contoso.onmicrosoft.com", "--password-file",
        str(password_file), input="n\n",
    )  # fmt: skip

    assert result.exit_code == 6  # declined: its own exit code
    assert f"Recover {mbx.primary_smtp} as new mailbox declined@contoso.onmicrosoft.com? [y/N]" in result.stderr
    assert "Error: not confirmed: nothing was changed" in result.stderr
    assert act.tenant.mailboxes[mbx.exchange_guid].state == INACTIVE
    rows = act.audit(mbx.exchange_guid, "RECOVER_MAILBOX")
    assert [(r["result"], r["error_message"]) for r in rows] == [("cancelled", "not confirmed: nothing was changed")]


def _block_auto_expanding(act: ActEnv, guid: str) -> dict[str, str]:
    act.tenant.update(guid, archive=True, auto_expanding_archive=True, aux_archive_shards=2)
    return {}


def _block_aux_primary(act: ActEnv, guid: str) -> dict[str, str]:
    act.tenant.update(guid, aux_primary_shards=1)
    return {}


def _block_user_window(act: ActEnv, guid: str) -> dict[str, str]:
    act.tenant.update(guid, external_directory_object_id=str(uuid.uuid4()))
    return {}


def _block_upn_taken(act: ActEnv, guid: str) -> dict[str, str]:
    return {"upn": act.tenant.special["restore_target"]}


def _block_name_taken(act: ActEnv, guid: str) -> dict[str, str]:
    other = act.active_mailboxes()[3]
    return {"name": other.name}


def _block_federated(act: ActEnv, guid: str) -> dict[str, str]:
    return {"upn": f"fed-{guid[:8]}@{act.tenant.special['federated_domain']}"}


def _block_domain_not_accepted(act: ActEnv, guid: str) -> dict[str, str]:
    return {"upn": f"x-{guid[:8]}@not-ours.example"}


@pytest.mark.parametrize(
    ("code", "arrange"),
    [
        ("auto-expanding-archive", _block_auto_expanding),
        ("aux-primary-shards", _block_aux_primary),
        ("user-restorable", _block_user_window),
        ("upn-taken", _block_upn_taken),
        ("name-taken", _block_name_taken),
        ("federated-upn", _block_federated),  # Get-AcceptedDomain AuthenticationType Federated (domain.md §4)
        ("upn-domain-not-accepted", _block_domain_not_accepted),
    ],
)
def test_recover_blockers_stop_it_with_exit_5(
    act: ActEnv, password_file: Path, code: str, arrange: Callable[[ActEnv, str], dict[str, str]]
) -> None:
    mbx = act.pick(recoverable, "recoverable mailbox")
    guid = mbx.exchange_guid
    options = {"upn": f"blk-{guid[:8]}@contoso.onmicrosoft.com", "name": f"blk-{guid[:8]}"}
    options.update(arrange(act, guid))  # made in Exchange after the sync: the preflight must read it afresh
    executed = act.sim.exchange.executed["New-Mailbox"]

    result = act.run(
        "recover", guid, "--upn", options["upn"], "--name", options["name"], "--password-file", str(password_file),
        "--yes",
    )  # fmt: skip

    assert result.exit_code == 5, result.stderr
    assert f"Error: recover of {mbx.primary_smtp} is blocked (1 blocker): {code}" in result.stderr
    assert f"  - {code}: " in result.stderr
    assert "(instead: " in result.stderr
    assert act.tenant.mailboxes[guid].state == INACTIVE
    assert act.sim.exchange.executed["New-Mailbox"] == executed
    rows = act.audit(guid, "RECOVER_MAILBOX")
    assert [(r["result"], r["error_message"]) for r in rows] == [
        ("failure", f"recover of {mbx.primary_smtp} is blocked (1 blocker): {code}")
    ]
    assert rows[0]["details"]["blockers"][0].startswith(f"{code}: ")
    if code in ("auto-expanding-archive", "aux-primary-shards", "user-restorable"):
        cached = act.cached(guid)
        assert cached is not None and code in cached["recovery_blockers"]  # the preflight refreshed the cache


def test_recover_auto_expanding_names_content_search(act: ActEnv, password_file: Path) -> None:
    mbx = act.pick(recoverable, "recoverable mailbox")
    _block_auto_expanding(act, mbx.exchange_guid)

    result = act.run("recover", mbx.exchange_guid, "--upn", "ae@contoso.onmicrosoft.com", "--what-if")

    assert result.exit_code == 5
    assert (
        "  - auto-expanding-archive: The mailbox has an auto-expanding archive (AuxArchive locations) (instead: "
        "Export its content with a Content Search / eDiscovery export)"
    ) in result.stderr


def test_recover_ambiguous_failure_is_reconciled_not_repeated(act: ActEnv, password_file: Path) -> None:
    mbx = _recover_candidate(act)
    guid = mbx.exchange_guid
    upn = f"amb-{guid[:8]}@contoso.onmicrosoft.com"
    act.sim.exchange.fail_next("New-Mailbox", "reset_after_commit")  # runs the cmdlet, then drops the connection
    executed = act.sim.exchange.executed["New-Mailbox"]
    sent = sum(1 for e in act.sim.exchange.request_log if e["cmdlet"] == "New-Mailbox")

    result, data = act.json("recover", guid, "--upn", upn, "--password-file", str(password_file), "--yes")

    assert result.exit_code == 0, result.stderr
    assert data["status"] == "success"
    assert data["details"]["reconciled"] is True
    assert "reply was lost; the new mailbox was found, so it was not repeated" in data["message"]
    assert act.sim.exchange.executed["New-Mailbox"] == executed + 1  # ran once
    assert sum(1 for e in act.sim.exchange.request_log if e["cmdlet"] == "New-Mailbox") == sent + 1  # sent once
    assert act.tenant.mailboxes[guid].state == ACTIVE
    assert act.tenant.mailboxes[guid].upn == upn
    rows = act.audit(guid, "RECOVER_MAILBOX")
    assert [r["result"] for r in rows] == ["started", "success"]
    assert rows[1]["details"]["reconciled"] is True
    _assert_no_password(act, PASSWORD)


def test_recover_refused_by_exchange_records_the_failure(act: ActEnv, password_file: Path) -> None:
    """Without Get-AcceptedDomain (a role without it) the preflight cannot see the federated domain: it says so,
    and Exchange's refusal is recorded."""
    mbx = act.pick(recoverable, "recoverable mailbox")
    guid = mbx.exchange_guid
    federated = act.tenant.special["federated_domain"]
    act.sim.exchange.deny_cmdlet("Get-AcceptedDomain")
    try:
        result, data = act.json(
            "recover", guid, "--upn", f"fed-{guid[:8]}@{federated}", "--password-file", str(password_file), "--yes"
        )
    finally:
        act.sim.exchange.allow_cmdlet("Get-AcceptedDomain")

    assert result.exit_code == 1, result.stderr
    assert data["status"] == "failed"
    expected = (
        "The parameters passed to the cmdlet represent a managed account, which doesn't match the namespace state, "
        "which is federated."
    )
    assert expected in data["message"]
    assert act.tenant.mailboxes[guid].state == INACTIVE
    rows = act.audit(guid, "RECOVER_MAILBOX")
    assert [r["result"] for r in rows] == ["started", "failure"]
    assert expected in rows[1]["error_message"]
    assert rows[1]["details"]["exchange_error"]["exception_type"].endswith("WLCDManagedMemberExistsException")
    assert act.cached(guid) is not None  # still inactive, still cached
    _assert_no_password(act, PASSWORD)


def test_recover_generated_password_goes_only_to_a_0600_file(act: ActEnv, tmp_path: Path) -> None:
    mbx = act.pick(recoverable, "recoverable mailbox")
    guid = mbx.exchange_guid
    out = tmp_path / "new-password.txt"

    result = act.run("recover", guid, "--upn", f"gen-{guid[:8]}@contoso.onmicrosoft.com", "--password-out",
                     str(out), "--yes")  # fmt: skip

    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    password = out.read_text(encoding="utf-8").rstrip("\n")
    assert len(password) == 20
    assert any(c.isupper() for c in password) and any(c.islower() for c in password)
    assert any(c.isdigit() for c in password) and any(not c.isalnum() for c in password)
    assert f"The new user's password is in {out} (mode 0600)" in result.stdout
    assert act.tenant.mailboxes[guid].state == ACTIVE
    _assert_no_password(act, password)


def test_recover_generated_password_is_shown_once_on_a_terminal(act: ActEnv) -> None:
    mbx = act.pick(recoverable, "recoverable mailbox")
    guid = mbx.exchange_guid
    upn = f"tty-{guid[:8]}@contoso.onmicrosoft.com"
    env = {**os.environ, **act.env, "COLUMNS": "200"}
    env.pop("IMM_RAISE_ERRORS", None)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imm", "recover", guid, "--upn", upn, "--yes"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=60)
    finally:
        os.close(leader)
    shown = b"".join(chunks).decode("utf-8", errors="replace")
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    match = re.search(rf"Password for {re.escape(upn)} \(shown once, not stored\): (\S+)", shown)
    assert match, shown
    password = match.group(1)
    assert shown.count(password) == 1
    assert act.tenant.mailboxes[guid].state == ACTIVE
    _assert_no_password(act, password)


def _run_on_a_terminal(act: ActEnv, *args: str) -> tuple[int, str, str]:
    """Run the real CLI with its stdout on a pseudo-terminal: (exit code, what the terminal showed, stderr)."""
    env = {**os.environ, **act.env, "COLUMNS": "200"}
    env.pop("IMM_RAISE_ERRORS", None)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imm", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait(timeout=60)
    finally:
        os.close(leader)
    return proc.returncode, b"".join(chunks).decode("utf-8", errors="replace"), stderr


def test_recover_json_on_a_terminal_never_generates_a_password_it_cannot_show(act: ActEnv) -> None:
    """JSON or CSV output carries no password: even on a terminal a generated one would be lost with the mailbox."""
    guid = act.pick(recoverable, "recoverable mailbox").exchange_guid
    for output in ("json", "csv"):
        code, shown, stderr = _run_on_a_terminal(
            act, "recover", guid, "--upn", f"lost-{guid[:8]}@contoso.onmicrosoft.com", "--yes", "-o", output
        )
        assert (code, shown) == (2, ""), stderr
        message = "a generated password is shown only on a terminal: use --password-out FILE or --password-file FILE"
        assert message in stderr
        assert act.tenant.mailboxes[guid].state == INACTIVE
    assert act.audit(guid, "RECOVER_MAILBOX") == []


def test_set_duration_csv_output_is_csv(act: ActEnv) -> None:
    """``--output csv`` on an action prints one CSV row (the preview, or the result), not the text preview."""
    import csv
    import io

    mbx = act.pick(lambda m, t: m.litigation_hold and m.litigation_hold_duration != 1234, "mailbox on Litigation Hold")
    guid = mbx.exchange_guid

    preview = act.run("holds", "set-duration", guid, "--days", "1234", "--what-if", "--output", "csv")
    assert preview.exit_code == 0, preview.stderr
    rows = list(csv.DictReader(io.StringIO(preview.stdout)))
    assert [(r["identity"], r["action"], r["removes_last_hold"]) for r in rows] == [(guid, "set-duration", "false")]
    assert "LitigationHoldDuration" in rows[0]["cmdlets"]

    done = act.run("holds", "set-duration", guid, "--days", "1234", "--yes", "--output", "csv")
    assert done.exit_code == 0, done.stderr
    reader = csv.DictReader(io.StringIO(done.stdout))
    rows = list(reader)
    assert reader.fieldnames == ["identity", "action", "status", "message", "operation_id", "details", "preview"]
    assert [(r["identity"], r["status"]) for r in rows] == [(guid, "success")]
    assert act.tenant.mailboxes[guid].litigation_hold_duration == 1234

    shown = act.run("holds", "show", guid, "--output", "csv", "--query", "{smtp: mailbox.primary_smtp}")
    assert (shown.exit_code, shown.stdout) == (0, f"smtp\n{mbx.primary_smtp}\n"), shown.stderr


def test_recover_password_input_errors(act: ActEnv, tmp_path: Path) -> None:
    guid = act.pick(recoverable, "recoverable mailbox").exchange_guid
    upn = "pw@contoso.onmicrosoft.com"
    missing = tmp_path / "missing.txt"
    cases: list[tuple[tuple[str, ...], str]] = [
        (
            (),
            "Error: a generated password is shown only on a terminal: use --password-out FILE or --password-file FILE",
        ),
        (("--password-file", str(missing)), f"Error: --password-file {missing}: no such file"),
        (
            ("--password-file", str(tmp_path / "a"), "--password-out", str(tmp_path / "b")),
            "Error: give either --password-file or --password-out, not both",
        ),
    ]
    (tmp_path / "weak.txt").write_text("password\n", encoding="utf-8")
    cases.append(
        (
            ("--password-file", str(tmp_path / "weak.txt")),
            "Error: the password needs 3 of: upper-case letters, lower-case letters, digits, symbols",
        )
    )
    for extra, message in cases:
        result = act.run("recover", guid, "--upn", upn, "--yes", *extra)
        assert result.exit_code == 2, (extra, result.stderr)
        assert result.stderr.splitlines()[0] == message
        assert "Traceback" not in result.stderr
    assert act.tenant.mailboxes[guid].state == INACTIVE


def test_unknown_identity_exits_4_naming_it(act: ActEnv, password_file: Path) -> None:
    result = act.run("recover", "nobody@nowhere.example", "--upn", "x@contoso.onmicrosoft.com", "--password-file",
                     str(password_file), "--yes")  # fmt: skip
    assert result.exit_code == 4
    assert (
        result.stderr.splitlines()[0]
        == "Error: no inactive mailbox 'nobody@nowhere.example' in the cache or in Exchange"
    )
    result = act.run("holds", "set-duration", "nobody@nowhere.example", "--days", "30", "--yes")
    assert result.exit_code == 4
    assert "nobody@nowhere.example" in result.stderr.splitlines()[0]
    attempts = [
        (r["operation"], r["result"], r["error_message"]) for r in act.audit("nobody@nowhere.example")
    ]  # each attempt is in the audit log, under the identity as it was given
    assert attempts == [
        ("RECOVER_MAILBOX", "failure", "no inactive mailbox 'nobody@nowhere.example' in the cache or in Exchange"),
        ("CHANGE_HOLD", "failure", result.stderr.splitlines()[0].removeprefix("Error: ")),
    ]


# --------------------------------------------------------------------------------------------- set-duration
def test_set_duration_changes_the_litigation_hold_and_the_cache(act: ActEnv) -> None:
    mbx = act.pick(lambda m, t: m.litigation_hold and m.litigation_hold_duration != 3650, "mailbox on Litigation Hold")
    guid = mbx.exchange_guid
    old = mbx.litigation_hold_duration

    result, data = act.json("holds", "set-duration", guid, "--days", "3650", "--yes")

    assert result.exit_code == 0, result.stderr
    assert data["status"] == "success"
    assert act.tenant.mailboxes[guid].litigation_hold_duration == 3650
    assert act.tenant.mailboxes[guid].litigation_hold is True
    assert act.cached_row(guid)["litigation_hold_duration"] == "3650.00:00:00"
    rows = act.audit(guid, "CHANGE_HOLD")
    assert [r["result"] for r in rows] == ["started", "success"]
    expected_old = "Unlimited" if old is None else f"{old}.00:00:00"
    assert rows[0]["details"]["before"]["LitigationHoldDuration"] == expected_old
    assert rows[0]["details"]["duration_days"] == 3650
    assert rows[1]["details"]["after"]["LitigationHoldDuration"] == "3650.00:00:00"

    result, data = act.json("holds", "set-duration", guid, "--unlimited", "--yes")
    assert result.exit_code == 0, result.stderr
    assert act.tenant.mailboxes[guid].litigation_hold_duration is None
    assert act.cached_row(guid)["litigation_hold_duration"] == "Unlimited"

    result, data = act.json("holds", "set-duration", guid, "--unlimited", "--yes")  # already so
    assert result.exit_code == 0
    assert (data["status"], data["message"]) == ("skipped", "Nothing to do: the duration is already Unlimited")
    result = act.run("holds", "set-duration", guid, "--unlimited", "--yes")
    assert result.exit_code == 0
    assert "  Nothing to do: the duration is already Unlimited" in result.stdout
    rows = act.audit(guid, "CHANGE_HOLD")
    assert [r["result"] for r in rows] == ["started", "success", "started", "success", "skipped", "skipped"]
    assert rows[-1]["error_message"] == "Nothing to do: the duration is already Unlimited"


def test_set_duration_shorter_than_the_newest_content_warns_that_exchange_may_soft_delete(act: ActEnv) -> None:
    """Set-Mailbox.md: the duration counts from each item's received/created date (the newest ≈ the deletion), and
    -RecalculateInactiveMailbox "might lead to the soft-deletion of the mailbox if all holds … have expired"."""
    mbx = act.pick(
        lambda m, t: (
            only_litigation(m, t) and m.when_soft_deleted is not None and t.clock() - m.when_soft_deleted > 400 * 86400
        ),
        "mailbox deleted over 400 days ago kept only by Litigation Hold",
    )
    guid = mbx.exchange_guid
    age = int((act.tenant.clock() - (mbx.when_soft_deleted or 0)) // 86400)

    preview = act.run("holds", "set-duration", guid, "--days", "30", "--what-if")

    assert preview.exit_code == 0, preview.stderr
    text = " ".join(preview.stdout.split())
    assert "30 days from each item's received or created date; the newest items date from about the deletion" in text
    assert f"Warning: 30 days is shorter than the age of the mailbox's newest content (≈ {age:,} days" in text
    assert "Exchange may soft-delete it when it recalculates the hold status" in text
    assert "-RecalculateInactiveMailbox" in text

    result = act.run("holds", "set-duration", guid, "--days", "30", "--yes")
    assert result.exit_code == 0, result.stderr
    assert act.tenant.mailboxes[guid].state == INACTIVE  # nothing recalculated yet
    # Exchange recalculates (here: the switch forces it): every hold has expired, the mailbox is soft-deleted.
    act.tenant.set_inactive_mailbox(guid, USER, {"InactiveMailbox": True, "RecalculateInactiveMailbox": True})
    assert act.tenant.mailboxes[guid].state == SOFT_DELETED

    unlimited = act.pick(
        lambda m, t: m.litigation_hold and m.litigation_hold_duration is not None and m.exchange_guid != guid,
        "another mailbox on a Litigation Hold with a duration",
    )
    extend = act.run("holds", "set-duration", unlimited.exchange_guid, "--unlimited", "--what-if")
    assert extend.exit_code == 0, extend.stderr
    assert "Every item is held by Litigation Hold until the hold is removed" in " ".join(extend.stdout.split())
    assert "no longer held" not in extend.stdout


def test_set_duration_without_litigation_hold_is_blocked(act: ActEnv) -> None:
    mbx = act.pick(lambda m, t: not m.litigation_hold, "mailbox without Litigation Hold")

    result = act.run("holds", "set-duration", mbx.exchange_guid, "--days", "365", "--yes")

    assert result.exit_code == 5
    assert "no-litigation-hold" in result.stderr
    assert act.tenant.mailboxes[mbx.exchange_guid].litigation_hold is False
    assert [r["result"] for r in act.audit(mbx.exchange_guid, "CHANGE_HOLD")] == ["failure"]


def test_set_duration_needs_exactly_one_of_days_or_unlimited(act: ActEnv) -> None:
    for extra in ((), ("--days", "30", "--unlimited")):
        result = act.run("holds", "set-duration", "anyone", *extra)
        assert result.exit_code == 2
        assert result.stderr.splitlines()[0] == "Error: give exactly one of --days N or --unlimited"
    result = act.run("holds", "set-duration", "anyone", "--days", "0")
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr


def test_only_litigation_mailbox_exists_for_holds_tests(act: ActEnv) -> None:
    """The seeded tenant has the shapes the holds tests need (a guard against generator changes)."""
    assert any(only_litigation(m, act.tenant) for m in act.tenant.mailboxes.values() if m.state == INACTIVE)


# ------------------------------------------------------------------------------------------------ reconcile
def test_reconcile_tells_done_from_not_done_and_closes_orphaned_audit_rows(
    act: ActEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the bulk engine's resume relies on: for each action, a change made in Exchange whose result row was
    never written (a crash) is found, and one that was not made is reported as not done."""
    from imm.auth import Authenticator
    from imm.config import load_config
    from imm.data.audit_logger import OperationType
    from imm.data.database import DatabaseManager
    from imm.services.actions import MailboxActions
    from imm.session import SessionManager

    monkeypatch.setenv("IMM_USER_PATH", str(act.home))
    config = load_config(act.home / "config" / "config.toml")
    db = DatabaseManager(config.profile.database_path)
    db.initialize()
    held = act.pick(lambda m, t: m.litigation_hold and len(t.hold_reasons(m)) >= 2, "mailbox on Litigation Hold")
    untouched = act.pick(lambda m, t: m.litigation_hold and len(t.hold_reasons(m)) >= 2, "mailbox on Litigation Hold")
    recovered = act.pick(recoverable, "recoverable mailbox")
    not_recovered = act.pick(recoverable, "recoverable mailbox")
    try:
        with SessionManager(config, db, Authenticator.from_profile(config.profile)) as session:
            actions = MailboxActions(db, session.connection, session.audit, config.profile)
            ops = session.connection
            ctx = {"job_id": "job-reconcile", "line": 7}

            # release: the change was made, the result row never written
            started = session.audit.begin(OperationType.REMOVE_HOLD, held.exchange_guid, {**ctx, "action": "release"})
            ops.set_inactive_mailbox(held.exchange_guid, LitigationHoldEnabled=False)
            done = actions.reconcile("release", {"identity": held.exchange_guid, "type": "litigation"},
                                     operation_context=ctx)  # fmt: skip
            assert done is not None and (done.status, done.operation_id) == ("already-done", started)
            # release not made: the orphan is closed as cancelled and the caller runs the item again
            orphan = session.audit.begin(OperationType.REMOVE_HOLD, untouched.exchange_guid, {**ctx, "line": 8})
            assert actions.reconcile("release", {"identity": untouched.exchange_guid, "type": "litigation"},
                                     operation_context={**ctx, "line": 8}) is None  # fmt: skip

            # recover
            upn = f"rc-{recovered.exchange_guid[:8]}@contoso.onmicrosoft.com"
            ops.new_mailbox_from_inactive(recovered.exchange_guid, f"rc-{recovered.exchange_guid[:8]}", upn, PASSWORD)
            done = actions.reconcile("recover", {"identity": recovered.exchange_guid, "upn": upn, "name": "x"})
            assert done is not None and done.status == "already-done"
            assert (
                actions.reconcile(
                    "recover", {"identity": not_recovered.exchange_guid, "upn": "free@contoso.onmicrosoft.com"}
                )
                is None
            )

            # set-duration
            ops.set_inactive_mailbox(untouched.exchange_guid, LitigationHoldDuration=999)
            done = actions.reconcile("set-duration", {"identity": untouched.exchange_guid, "days": "999"})
            assert done is not None and done.status == "already-done"
            assert actions.reconcile("set-duration", {"identity": untouched.exchange_guid, "days": 1000}) is None

            # restore: a request with imm's name exists for that source and target
            target = act.tenant.special["restore_target"]
            made = actions.restore(not_recovered.exchange_guid, target, operation_context={"job_id": "job-r"})
            assert made.status == "success"
            done = actions.reconcile("restore", {"identity": not_recovered.exchange_guid, "target": target},
                                     operation_context={"job_id": "job-r"})  # fmt: skip
            assert done is not None and done.status == "already-done"
            assert done.details["request_name"] == made.details["request_name"]
            assert actions.reconcile("restore", {"identity": untouched.exchange_guid, "target": target}) is None
    finally:
        db.close()

    rows = act.audit(held.exchange_guid, "REMOVE_HOLD")
    assert [(r["result"], r["operation_id"]) for r in rows] == [("started", started), ("success", started)]
    assert rows[1]["details"]["reconciled"] is True and rows[1]["details"]["job_id"] == "job-reconcile"
    rows = act.audit(untouched.exchange_guid, "REMOVE_HOLD")
    assert [(r["result"], r["operation_id"]) for r in rows] == [("started", orphan), ("cancelled", orphan)]
    assert act.cached(recovered.exchange_guid) is None
    assert act.tenant.mailboxes[untouched.exchange_guid].litigation_hold is True
