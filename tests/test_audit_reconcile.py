"""``imm audit reconcile`` against the simulated tenant's unified audit log (real CLI, real Search-UnifiedAuditLog
paging over REST): imm's changes are confirmed once the log's delay has passed, an outside change is found with who,
when, cmdlet and parameters, and a tenant where only imm acted shows none."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from action_support import ActEnv, make_env, recoverable
from imm.simulator.model import INACTIVE

DELAY = 3600.0  # the log's delay; catch_up() lets it pass
HELPDESK = "helpdesk@contoso.onmicrosoft.com"


@pytest.fixture(scope="module")
def act(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActEnv]:
    yield from make_env(tmp_path_factory.mktemp("reconcile"), audit_delay_seconds=DELAY)


def litigation_only_extra(act: ActEnv) -> Any:
    return act.pick(lambda m, t: m.litigation_hold and len(t.hold_reasons(m)) >= 2, "mailbox on Litigation Hold")


def reconcile(act: ActEnv, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
    result = act.run("audit", "reconcile", "--since", "1d", "--output", "json", *extra)
    return result.exit_code, json.loads(result.stdout or "[]"), result.stderr


def test_imm_changes_confirmed_after_the_delay_and_an_outside_change_found(act: ActEnv) -> None:
    released = [litigation_only_extra(act).exchange_guid for _ in range(2)]
    for guid in released:
        result = act.run("holds", "release", guid, "--type", "litigation", "--yes")
        assert result.exit_code == 0, result.stderr

    code, rows, err = reconcile(act)  # Microsoft has not shown them yet
    assert code == 0, err
    assert sorted((r["status"], r["cmdlet"], r["mailbox"]) for r in rows) == sorted(
        ("not_yet", "Set-Mailbox", g) for g in released
    )
    assert "2 not yet in Microsoft's log, 0 missing, 0 outside changes" in err

    act.sim.exchange.unified_audit.catch_up()
    operations = [r.audit_data["Operation"] for r in act.sim.exchange.unified_audit.records]
    assert "Export-MailboxDiagnosticLogs" in operations  # imm's HoldTracking reads are logged but change nothing
    code, rows, err = reconcile(act)  # only imm acted: everything confirmed, nothing outside
    assert code == 0, err
    assert sorted((r["status"], r["mailbox"]) for r in rows) == sorted(("confirmed", g) for g in released)
    assert all(r["record_id"] and r["audit_row"] for r in rows)
    assert "2 confirmed, 0 not yet in Microsoft's log, 0 missing, 0 outside changes" in err

    target = litigation_only_extra(act)
    act.sim.exchange.outside_change(
        "Set-Mailbox",
        {"Identity": target.exchange_guid, "InactiveMailbox": True, "LitigationHoldEnabled": False},
        HELPDESK,
    )
    assert act.tenant.mailboxes[target.exchange_guid].litigation_hold is False
    assert act.tenant.mailboxes[target.exchange_guid].state == INACTIVE
    code, rows, err = reconcile(act)
    assert code == 0, err  # not in the log yet: nothing to report
    act.sim.exchange.unified_audit.catch_up()
    code, rows, err = reconcile(act)
    assert code == 1
    outside = [r for r in rows if r["status"] == "outside"]
    assert len(outside) == 1
    assert (outside[0]["mailbox"], outside[0]["user"], outside[0]["cmdlet"]) == (
        target.exchange_guid,
        HELPDESK,
        "Set-Mailbox",
    )
    assert outside[0]["parameters"] == {
        "Identity": target.exchange_guid,
        "InactiveMailbox": "True",
        "LitigationHoldEnabled": "False",
    }
    assert outside[0]["audit_row"] is None
    assert [r["status"] for r in rows].count("confirmed") == 2
    table = act.run("audit", "reconcile", "--since", "1d")
    assert f"Outside imm: {outside[0]['when']} {HELPDESK} ran Set-Mailbox -Identity {target.exchange_guid}" in (
        table.stderr
    )


def test_a_recover_is_confirmed_by_its_new_mailbox_record(act: ActEnv, tmp_path: Path) -> None:
    mbx = act.pick(lambda m, t: recoverable(m, t) and not m.litigation_hold, "recoverable mailbox")
    password = tmp_path / "password.txt"
    password.write_text("Rec0ver-Me-Now!\n", encoding="utf-8")
    upn = f"rec-{mbx.exchange_guid[:8]}@contoso.onmicrosoft.com"
    result = act.run("recover", mbx.exchange_guid, "--upn", upn, "--password-file", str(password), "--yes")
    assert result.exit_code == 0, result.stderr
    act.sim.exchange.unified_audit.catch_up()
    code, rows, err = reconcile(act)
    mine = [r for r in rows if r["mailbox"] == mbx.exchange_guid]
    assert [(r["status"], r["cmdlet"]) for r in mine] == [("confirmed", "New-Mailbox")]
    assert "Rec0ver" not in json.dumps(rows) and "Rec0ver" not in err


def test_an_imm_change_microsoft_never_logged_is_missing_once_the_delay_is_over(act: ActEnv) -> None:
    guid = litigation_only_extra(act).exchange_guid
    result = act.run("holds", "release", guid, "--type", "litigation", "--yes")
    assert result.exit_code == 0, result.stderr
    log = act.sim.exchange.unified_audit
    with log._lock:
        log.records = [r for r in log.records if guid not in json.dumps(r.audit_data)]
    code, rows, _ = reconcile(act)
    assert [r["status"] for r in rows if r["mailbox"] == guid] == ["not_yet"]
    code, rows, err = reconcile(act, "--delay", "0m")
    assert code == 1
    assert [r["status"] for r in rows if r["mailbox"] == guid] == ["missing"]
    assert "1 missing" in err


def test_more_records_than_one_block_are_read_through_the_session(act: ActEnv) -> None:
    log = act.sim.exchange.unified_audit
    for n in range(5200):  # changes to active mailboxes elsewhere in the tenant: read, but not about imm's
        log.record("Set-Mailbox", {"Identity": f"someone{n}@contoso.onmicrosoft.com"}, HELPDESK, f"someone{n}")
    log.catch_up()
    total = len(log.records)
    code, rows, err = reconcile(act, "--delay", "1h")
    assert f"({total} Exchange admin records read)" in err
    assert not any(r["mailbox"] and r["mailbox"].startswith("someone") for r in rows)


def test_reconcile_is_audited_and_bad_input_is_one_line(act: ActEnv, tmp_path: Path) -> None:
    rows = act.audit(operation="REPORT")
    assert rows and rows[-1]["details"]["report"] == "audit-reconcile"
    bad = act.run("audit", "reconcile", "--delay", "soon")
    assert bad.exit_code == 2
    assert "--delay: 'soon' is not a span" in bad.stderr
