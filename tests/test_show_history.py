"""``imm show ID`` in full: the cached record with its audit history (real CLI process, real SQLite file)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_imm
from factories import make_mailbox
from imm.data.audit_logger import AuditLogger, OperationType
from imm.data.database import DatabaseManager


def _seed(home: Path) -> tuple[str, str]:
    db = DatabaseManager(home / "data" / "default.db")
    db.initialize()
    try:
        mailbox = make_mailbox(alias="ingrid.holm", display_name="Ingrid Holm")
        other = make_mailbox(alias="someone.else")
        db.upsert_mailboxes([mailbox, other])
        audit = AuditLogger(db, tenant="contoso.onmicrosoft.com", user="admin@contoso.onmicrosoft.com")
        with audit.operation(OperationType.CHANGE_HOLD, mailbox.identity, {"before": {"lit": True}}) as op:
            op.succeeded({"after": {"lit": False}})
        audit.log_operation(
            OperationType.RECOVER_MAILBOX, mailbox.primary_smtp, {}, "failure", "The mailbox has additional shards"
        )
        audit.log_operation(OperationType.RECOVER_MAILBOX, other.identity, {}, "success")  # someone else's
        audit.log_operation(OperationType.SYNC, None, {"fetched": 2}, "success")  # not about a mailbox
        return mailbox.identity, mailbox.primary_smtp
    finally:
        db.close()


def test_show_lists_the_mailbox_audit_history_oldest_first(imm_home: Path) -> None:
    identity, smtp = _seed(imm_home)

    result = run_imm("show", smtp, "--output", "json")

    assert result.exit_code == 0, result.stderr
    detail = json.loads(result.stdout)
    assert detail["identity"] == identity
    history = detail["audit_history"]
    assert [(h["operation"], h["result"]) for h in history] == [
        ("CHANGE_HOLD", "started"),
        ("CHANGE_HOLD", "success"),
        ("RECOVER_MAILBOX", "failure"),
    ]
    assert history[0]["operation_id"] == history[1]["operation_id"]
    assert history[2]["error_message"] == "The mailbox has additional shards"
    assert all(h["user"] == "admin@contoso.onmicrosoft.com" for h in history)


def test_show_table_has_an_audit_history_section(imm_home: Path) -> None:
    identity, _ = _seed(imm_home)

    result = run_imm("show", identity)

    assert result.exit_code == 0, result.stderr
    section = result.stdout.split("Audit history\n", 1)[1]
    lines = [line.strip() for line in section.splitlines() if "UTC" in line]
    assert len(lines) == 3
    assert lines[0].endswith("CHANGE_HOLD started by admin@contoso.onmicrosoft.com")
    assert lines[2].endswith(
        "RECOVER_MAILBOX failure by admin@contoso.onmicrosoft.com: The mailbox has additional shards"
    )


def test_show_without_history_says_none(imm_home: Path) -> None:
    db = DatabaseManager(imm_home / "data" / "default.db")
    db.initialize()
    mailbox = make_mailbox(alias="quiet.one")
    db.upsert_mailboxes([mailbox])
    db.close()

    result = run_imm("show", mailbox.identity)

    assert result.exit_code == 0, result.stderr
    assert "(none)" in result.stdout.split("Audit history\n", 1)[1]
