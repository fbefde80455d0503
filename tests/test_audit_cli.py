"""``imm audit list|export|verify|prune`` as a user runs them: the real CLI process on a real database file."""

from __future__ import annotations

import csv as csv_module
import json
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import run_imm
from imm.config import write_profile
from imm.data.audit_logger import AuditLogger, OperationType
from imm.data.database import DatabaseManager

DAY1 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
DAY2 = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Five rows over two days: a sync, a recover pair (success) and a hold change pair (failure)."""
    path = tmp_path / "imm.db"
    db = DatabaseManager(path)
    db.initialize()
    moments = iter([DAY1, DAY1 + timedelta(minutes=1), DAY1 + timedelta(minutes=2), DAY2, DAY2])
    audit = AuditLogger(db, tenant="contoso", user="admin@contoso.com", clock=lambda: next(moments))
    audit.log_operation(OperationType.SYNC, None, {"mailboxes": 200}, "success")
    with audit.operation(OperationType.RECOVER_MAILBOX, "guid-1", details={"before": {"holds": ["UniH1"]}}) as op:
        op.succeeded({"after": {"mailbox": '=HYPERLINK("x")'}})
    with pytest.raises(Exception, match="Access denied"):
        with audit.operation(OperationType.CHANGE_HOLD, "guid-2"):
            raise PermissionError("Access denied")
    db.close()
    return path


def imm(db_path: Path, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return run_imm(*args, "--db", str(db_path), input=input)


@pytest.mark.parametrize(
    "command", [[], ["list"], ["export"], ["verify"], ["prune"], ["anchor"], ["key"], ["reconcile"]]
)
def test_every_audit_command_documents_an_example(command: list[str]) -> None:
    result = run_imm("audit", *command, "--help")
    assert result.exit_code == 0
    assert re.search(r"Examples:\n\s+imm audit", result.stdout), result.stdout


def test_list_json_newest_first_with_chain_fields(db_path: Path) -> None:
    result = imm(db_path, "audit", "list", "--output", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["id"], r["operation"], r["identity"], r["result"]) for r in rows] == [
        (5, "CHANGE_HOLD", "guid-2", "failure"),
        (4, "CHANGE_HOLD", "guid-2", "started"),
        (3, "RECOVER_MAILBOX", "guid-1", "success"),
        (2, "RECOVER_MAILBOX", "guid-1", "started"),
        (1, "SYNC", None, "success"),
    ]
    assert rows[0]["error_message"] == "PermissionError: Access denied"
    assert rows[0]["timestamp"] == "2026-03-02T08:00:00.000000+00:00"
    assert rows[0]["user"] == "admin@contoso.com"
    assert rows[0]["tenant"] == "contoso"
    assert rows[0]["operation_id"] == rows[1]["operation_id"]
    assert rows[3]["details"] == {"before": {"holds": ["UniH1"]}}
    assert rows[4]["prev_hash"] == "0" * 64
    assert rows[3]["prev_hash"] == rows[4]["row_hash"]
    assert set(rows[0]) == {
        "id",
        "timestamp",
        "operation",
        "identity",
        "user",
        "tenant",
        "operation_id",
        "result",
        "error_message",
        "details",
        "prev_hash",
        "row_hash",
    }


def test_list_table_and_csv(db_path: Path) -> None:
    table = imm(db_path, "audit", "list")
    assert table.exit_code == 0
    assert "RECOVER_MAILBOX" in table.stdout
    assert "2026-03-02 08:00:00" in table.stdout
    csv = imm(db_path, "audit", "list", "--output", "csv", "--operation", "recover_mailbox")
    assert csv.exit_code == 0
    lines = csv.stdout.splitlines()
    assert lines[0] == (
        "id,timestamp,operation,identity,user,tenant,operation_id,result,error_message,details,prev_hash,row_hash"
    )
    assert len(lines) == 3
    assert lines[1].startswith("3,2026-03-01T08:02:00.000000+00:00,RECOVER_MAILBOX,guid-1,admin@contoso.com,contoso,")
    record = dict(zip(lines[0].split(","), next(csv_module.reader([lines[1]])), strict=True))
    assert record["details"] == '{"after": {"mailbox": "=HYPERLINK(\\"x\\")"}}'
    assert record["error_message"] == ""


@pytest.mark.parametrize(
    ("args", "ids"),
    [
        (["--since", "2026-03-02"], [5, 4]),
        (["--until", "2026-03-01"], [3, 2, 1]),
        (["--since", "2026-03-01T08:00:30Z", "--until", "2026-03-01T08:01:30+00:00"], [2]),
        (["--identity", "GUID-1"], [3, 2]),
        (["--operation", "SYNC", "--operation", "change_hold"], [5, 4, 1]),
        (["--result", "failure"], [5]),
        (["--result", "started", "--result", "success"], [4, 3, 2, 1]),
        (["--since", "3650d"], [5, 4, 3, 2, 1]),
        (["--limit", "2"], [5, 4]),
    ],
)
def test_list_filters(db_path: Path, args: list[str], ids: list[int]) -> None:
    result = imm(db_path, "audit", "list", "--output", "json", *args)
    assert result.exit_code == 0, result.stderr
    assert [r["id"] for r in json.loads(result.stdout)] == ids


def test_list_says_when_it_shows_only_the_latest(db_path: Path) -> None:
    result = imm(db_path, "audit", "list", "--limit", "2")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "Left out to fit 80 columns: User, Error (--wide shows every column).",
        "Showing the latest 2 rows; --limit 0 shows all.",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--since", "last tuesday"],
            "Error: --since: 'last tuesday' is not a date or time (use 2026-11-01, 2026-11-01T09:30:00Z or 7d)",
        ),
        (["--until", "2026-13-45"], "Error: --until: '2026-13-45' is not a date or time"),
        (["--operation", "DROP"], "Error: --operation: unknown operation 'DROP' (one of: ADD_ADDRESS, "),
    ],
)
def test_bad_list_input_is_one_line_and_exit_2(db_path: Path, args: list[str], message: str) -> None:
    result = imm(db_path, "audit", "list", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def test_bad_result_choice_is_a_usage_error(db_path: Path) -> None:
    result = imm(db_path, "audit", "list", "--result", "exploded")
    assert result.exit_code == 2
    assert "Invalid value for '--result'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_result_choices_are_the_audit_results() -> None:
    """--result offers exactly the results the audit log writes (the CLI keeps its own copy of the words only so
    that `imm --help` does not import the store)."""
    from imm.cli.audit_cmds import RESULTS
    from imm.data.audit_logger import AuditResult

    assert RESULTS == tuple(result.value for result in AuditResult)


KILLED = """
import os, signal, sys
from pathlib import Path
from imm.data.audit_logger import AuditLogger, OperationType
from imm.data.database import DatabaseManager
db = DatabaseManager(Path(sys.argv[1]))
db.initialize()
audit = AuditLogger(db, tenant="contoso", user="admin@contoso.com")
with audit.operation(OperationType.RECOVER_MAILBOX, "guid-killed", details={"before": {"holds": ["mbxabc:2"]}}):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_between_started_and_result_leaves_an_incomplete_row(db_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED, str(db_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    result = imm(db_path, "audit", "list", "--incomplete", "--output", "json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["id"], row["operation"], row["identity"], row["result"]) == (
        6,
        "RECOVER_MAILBOX",
        "guid-killed",
        "started",
    )
    assert row["details"] == {"before": {"holds": ["mbxabc:2"]}}
    table = imm(db_path, "audit", "list", "--incomplete")
    assert "RECOVER_MAILBOX" in table.stdout
    assert "started" in table.stdout
    assert imm(db_path, "audit", "verify").exit_code == 0


def test_export_writes_the_file_and_an_export_row(db_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    result = imm(db_path, "audit", "export", "--out", str(out), "--since", "2026-03-02")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Exported 2 audit rows to {out}\n"
    document = json.loads(out.read_text(encoding="utf-8"))
    assert [e["id"] for e in document["entries"]] == [4, 5]
    assert document["range"]["since"] == "2026-03-02T00:00:00.000000+00:00"
    listed = json.loads(imm(db_path, "audit", "list", "--operation", "EXPORT_DATA", "--output", "json").stdout)
    assert len(listed) == 1
    assert listed[0]["details"]["rows"] == 2
    assert listed[0]["details"]["path"] == str(out.resolve())
    assert listed[0]["user"].startswith("local:")
    assert out.stat().st_mode & 0o777 == 0o600

    again = imm(db_path, "audit", "export", "--out", str(out))
    assert again.exit_code == 2
    assert again.stderr.splitlines()[0] == f"Error: --out {out} exists: choose a new file, or add --force to replace it"
    assert [e["id"] for e in json.loads(out.read_text(encoding="utf-8"))["entries"]] == [4, 5]  # kept as it was
    assert imm(db_path, "audit", "export", "--out", str(out), "--force").exit_code == 0
    assert len(json.loads(out.read_text(encoding="utf-8"))["entries"]) > 2


def test_a_row_with_a_forged_timestamp_is_still_listed_and_exported_as_stored(db_path: Path, tmp_path: Path) -> None:
    """Evidence of tampering must stay readable: verify names the row, list and export still show it."""
    import sqlite3

    conn = sqlite3.connect(db_path)
    conn.execute("DROP TRIGGER audit_log_no_update")  # as someone editing the file outside imm would
    conn.execute("UPDATE audit_log SET timestamp = 'yesterday-ish' WHERE id = 3")
    conn.commit()
    conn.close()

    verify = imm(db_path, "audit", "verify")
    assert verify.exit_code == 1
    assert verify.stderr.startswith("Error: audit log verification failed at row 3: row 3 was edited or forged")
    listed = imm(db_path, "audit", "list", "--output", "json")
    assert listed.exit_code == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["id"] == 3)
    assert row["details"]["unparsed_timestamp"] == "yesterday-ish"
    assert imm(db_path, "audit", "list").exit_code == 0
    out = tmp_path / "evidence.json"
    exported = imm(db_path, "audit", "export", "--out", str(out))
    assert exported.exit_code == 0, exported.stderr
    entries = {e["id"]: e for e in json.loads(out.read_text(encoding="utf-8"))["entries"]}
    assert entries[3]["timestamp"] == "yesterday-ish"  # the stored text, which the hash recipe covers
    assert entries[2]["timestamp"] == "2026-03-01T08:01:00.000000+00:00"


def test_export_to_a_missing_folder_is_one_line(db_path: Path, tmp_path: Path) -> None:
    result = imm(db_path, "audit", "export", "--out", str(tmp_path / "nope" / "a.json"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: cannot write the export to {tmp_path / 'nope' / 'a.json'}: ")
    assert "Traceback" not in result.stderr


def test_verify_an_empty_log(tmp_path: Path) -> None:
    result = run_imm("audit", "verify", "--db", str(tmp_path / "new.db"))
    assert result.exit_code == 0
    assert result.stdout == "Audit log intact: no rows (0 checkpoints verified).\n"


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = run_imm("audit", "verify", "--db", str(bad))
    assert result.exit_code != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: ")


def old_rows(path: Path, count: int = 3) -> None:
    db = DatabaseManager(path)
    db.initialize()
    stamp = datetime.now(UTC) - timedelta(days=400)
    audit = AuditLogger(db, tenant="contoso", user="admin@contoso.com", clock=lambda: stamp)
    for n in range(count):
        audit.log_operation(OperationType.SYNC, None, {"n": n}, "success")
    AuditLogger(db, tenant="contoso").log_operation(OperationType.REPORT, None, {}, "success")
    db.close()


def test_prune_refuses_a_retention_below_the_profile_minimum(tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    old_rows(db_path)
    result = run_imm("audit", "prune", "--retention-days", "30", "--yes", "--db", str(db_path))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "Error: --retention-days 30 is shorter than this profile's minimum of 365 days"
    )
    assert json.loads(run_imm("audit", "list", "-o", "json", "--db", str(db_path)).stdout)[0]["id"] == 4


def test_prune_asks_first(tmp_path: Path) -> None:
    db_path = tmp_path / "imm.db"
    old_rows(db_path)
    declined = run_imm("audit", "prune", "--retention-days", "365", "--db", str(db_path), input="n\n")
    assert declined.exit_code == 6
    assert "Remove 3 audit rows (ids 1-3, older than " in declined.stderr
    assert declined.stderr.endswith("Error: not confirmed: nothing was changed\n")
    no_answer = run_imm("audit", "prune", "--retention-days", "365", "--db", str(db_path), input="")
    assert no_answer.exit_code == 6
    assert len(json.loads(run_imm("audit", "list", "-o", "json", "--db", str(db_path)).stdout)) == 4
    accepted = run_imm("audit", "prune", "--retention-days", "365", "--db", str(db_path), input="y\n")
    assert accepted.exit_code == 0, accepted.stderr
    assert accepted.stdout.startswith("Pruned 3 audit rows older than ")
    rows = json.loads(run_imm("audit", "list", "-o", "json", "--db", str(db_path)).stdout)
    assert [(r["id"], r["operation"]) for r in rows] == [(5, "PRUNE"), (4, "REPORT")]
    assert rows[0]["details"]["pruned_count"] == 3
    assert rows[0]["user"].startswith("local:")
    again = run_imm("audit", "prune", "--retention-days", "365", "--db", str(db_path))
    assert again.exit_code == 0
    assert again.stdout.startswith("Nothing to prune: no audit rows older than ")
    assert run_imm("audit", "verify", "--db", str(db_path)).exit_code == 0


def test_prune_minimum_comes_from_the_profile(tmp_path: Path, imm_home: Path) -> None:
    db_path = tmp_path / "imm.db"
    old_rows(db_path)
    write_profile(imm_home / "config" / "config.toml", "short", {"audit_min_retention_days": 30})
    result = run_imm("audit", "prune", "--retention-days", "30", "--yes", "--profile", "short", "--db", str(db_path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Pruned 3 audit rows")
