"""AuditLogger on a real SQLite file: rows, write-ahead pairs, filters, redaction, export, prune, triggers."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path

import pytest

from imm.data import postgres
from imm.data.audit_logger import AuditLogger, AuditResult, OperationType, local_user
from imm.data.database import DatabaseManager
from imm.errors import ExitStatus, ImmError, InputError, NotFoundError
from storetools import stored_text, table_columns, triggers

T0 = datetime(2026, 1, 15, 9, 30, 0, 123456, tzinfo=UTC)


class Clock:
    """A clock the test moves; each reading advances one second so rows have distinct times."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        value = self.now
        self.now += timedelta(seconds=1)
        return value


@pytest.fixture
def db(store_target: str, tmp_path: Path) -> Iterator[DatabaseManager]:
    """The store on each dialect (SQLite file, PostgreSQL database); the audit key lives beside tmp_path."""
    manager = DatabaseManager(store_target, local_path=tmp_path / "imm.db")
    manager.initialize()
    yield manager
    manager.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit(db: DatabaseManager, clock: Clock) -> AuditLogger:
    return AuditLogger(db, tenant="contoso.onmicrosoft.com", user="admin@contoso.com", clock=clock)


def test_seed_import_line_works() -> None:
    code = "from imm.data.audit_logger import AuditLogger, OperationType; print(OperationType.CONNECT.value)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "CONNECT\n"


def test_operation_types_are_their_names() -> None:
    names = {o.name for o in OperationType}
    assert {
        "CONNECT",
        "DISCONNECT",
        "LIST_MAILBOXES",
        "GET_MAILBOX_DETAILS",
        "RECOVER_MAILBOX",
        "RESTORE_MAILBOX",
        "REMOVE_HOLD",
        "CHANGE_HOLD",
        "BULK_OPERATION",
        "EXPORT_DATA",
        "ERROR",
        "SYNC",
        "LOGIN",
        "LOGOUT",
        "PRUNE",
        "REPORT",
        "RESTORE_STATUS",
        "REMOVE_RESTORE_REQUEST",
        "ADD_ADDRESS",
        "REMOVE_ADDRESS",
    } <= names
    for op in OperationType:
        assert op.value == op.name
        assert isinstance(op, str)


@pytest.mark.parametrize("operation", list(OperationType))
def test_every_operation_type_is_logged_and_read_back(audit: AuditLogger, operation: OperationType) -> None:
    entry = audit.log_operation(operation, "guid-1", {"k": "v"}, "success")
    [stored] = audit.get_operations()
    assert stored == entry
    assert stored.id == 1
    assert stored.operation == operation.value
    assert stored.identity == "guid-1"
    assert stored.user == "admin@contoso.com"
    assert stored.tenant == "contoso.onmicrosoft.com"
    assert stored.result == "success"
    assert stored.details == {"k": "v"}
    assert stored.error_message is None
    assert stored.timestamp == T0
    assert stored.prev_hash == "0" * 64
    assert len(stored.row_hash) == 64


def test_row_columns_as_stored(audit: AuditLogger, db: DatabaseManager) -> None:
    audit.log_operation("recover_mailbox", "a@contoso.com", {"b": 1, "a": "é"}, "failure", "Denied")
    conn = db.get_connection()
    row = dict(conn.execute("SELECT * FROM audit_log").fetchone())
    assert row["timestamp"] == "2026-01-15T09:30:00.123456+00:00"
    assert row["operation"] == "RECOVER_MAILBOX"
    assert row["details"] == '{"a":"é","b":1}'
    assert row["error_message"] == "Denied"
    assert row["operation_id"] is None
    assert row["result"] == "failure"


def test_user_defaults_to_local_account_and_can_be_overridden(db: DatabaseManager) -> None:
    audit = AuditLogger(db, tenant="t")
    first = audit.log_operation(OperationType.EXPORT_DATA, None, {}, "success")
    second = audit.log_operation(OperationType.EXPORT_DATA, None, {}, "success", user="bob@contoso.com")
    assert first.user == local_user()
    assert first.user.startswith("local:")
    assert second.user == "bob@contoso.com"


def test_unknown_operation_or_result_is_refused(audit: AuditLogger) -> None:
    with pytest.raises(ValueError, match="unknown audit operation 'DROP_TABLES'"):
        audit.log_operation("DROP_TABLES", None, {}, "success")
    with pytest.raises(ValueError):
        audit.log_operation(OperationType.SYNC, None, {}, "maybe")
    assert audit.get_operations() == []


def test_write_ahead_success_pairs_rows(audit: AuditLogger) -> None:
    before = {"holds": ["UniH1", "mbxabc:2"], "addresses": ["SMTP:a@contoso.com"]}
    with audit.operation(OperationType.REMOVE_HOLD, "guid-7", details={"before": before}) as op:
        started = audit.get_operations()
        assert [(e.operation, e.result) for e in started] == [("REMOVE_HOLD", "started")]
        op.succeeded({"after": {"holds": ["UniH1"]}})
    rows = audit.get_operations()
    assert [(r.id, r.operation, r.identity, r.result) for r in rows] == [
        (1, "REMOVE_HOLD", "guid-7", "started"),
        (2, "REMOVE_HOLD", "guid-7", "success"),
    ]
    assert rows[0].operation_id == rows[1].operation_id == op.operation_id
    assert len(op.operation_id) == 32
    assert rows[0].details == {"before": before}
    assert rows[1].details == {"after": {"holds": ["UniH1"]}}
    assert audit.get_incomplete() == []


def test_write_ahead_failure_records_microsofts_message_and_reraises(audit: AuditLogger) -> None:
    message = "The operation couldn't be performed because object 'x' couldn't be found on 'DC01'."
    with pytest.raises(NotFoundError):
        with audit.operation(OperationType.RECOVER_MAILBOX, "x", details={"before": {}}) as op:
            op.details = {"after": {"state": "unchanged"}}
            raise NotFoundError(message)
    started, result = audit.get_operations()
    assert (started.result, result.result) == ("started", "failure")
    assert result.error_message == message
    assert result.details == {"after": {"state": "unchanged"}, "error_code": "not_found"}
    assert result.operation_id == started.operation_id


def test_write_ahead_keyboard_interrupt_is_cancelled(audit: AuditLogger) -> None:
    with pytest.raises(KeyboardInterrupt):
        with audit.operation(OperationType.RESTORE_MAILBOX, "guid-2"):
            raise KeyboardInterrupt
    rows = audit.get_operations()
    assert [(r.result, r.error_message) for r in rows] == [
        ("started", None),
        ("cancelled", "interrupted by the user"),
    ]


def test_an_error_reporting_ctrl_c_is_cancelled(audit: AuditLogger) -> None:
    cancelled = ImmError("Sign-in was cancelled.", code="user_cancelled")
    cancelled.exit_code = ExitStatus.INTERRUPTED
    with pytest.raises(ImmError):
        with audit.operation(OperationType.LOGIN, None):
            raise cancelled
    assert [(r.result, r.error_message) for r in audit.get_operations()][-1] == (
        "cancelled",
        "Sign-in was cancelled.",
    )


def test_write_ahead_unexpected_error_is_a_failure(audit: AuditLogger) -> None:
    with pytest.raises(ValueError):
        with audit.operation(OperationType.ADD_ADDRESS, "guid-3"):
            raise ValueError("boom")
    assert audit.get_operations()[-1].error_message == "ValueError: boom"
    assert audit.get_operations()[-1].result == "failure"


def test_block_without_explicit_result_records_success(audit: AuditLogger) -> None:
    with audit.operation(OperationType.REMOVE_ADDRESS, "guid-4") as op:
        op.details = {"after": {"addresses": []}}
    assert [(r.result, r.details) for r in audit.get_operations()] == [
        ("started", {}),
        ("success", {"after": {"addresses": []}}),
    ]


def test_result_recorded_once(audit: AuditLogger) -> None:
    with audit.operation(OperationType.CHANGE_HOLD, "guid-5") as op:
        op.failed("Access denied")
        with pytest.raises(RuntimeError, match="already has a result"):
            op.succeeded()
    assert [r.result for r in audit.get_operations()] == ["started", "failure"]


def test_begin_and_finish_for_the_bulk_engine(audit: AuditLogger) -> None:
    first = audit.begin(OperationType.BULK_OPERATION, "job-1", {"items": 3}, operation_id="job-1-item-1")
    second = audit.begin(OperationType.RECOVER_MAILBOX, "guid-9")
    assert first == "job-1-item-1"
    assert {e.operation_id for e in audit.get_incomplete()} == {first, second}
    entry = audit.finish(first, AuditResult.PARTIAL, {"succeeded": 2, "failed": 1}, "1 item failed")
    assert (entry.operation, entry.identity, entry.result, entry.error_message) == (
        "BULK_OPERATION",
        "job-1",
        "partial",
        "1 item failed",
    )
    assert [e.operation_id for e in audit.get_incomplete()] == [second]
    with pytest.raises(ValueError, match="no started audit operation"):
        audit.finish("nope", "success")
    with pytest.raises(ValueError):
        audit.finish(second, "started")


def test_filters(db: DatabaseManager, clock: Clock) -> None:
    audit = AuditLogger(db, tenant="t", user="u@x", clock=clock)
    audit.log_operation(OperationType.SYNC, None, {}, "success")  # T0
    audit.log_operation(OperationType.RECOVER_MAILBOX, "Guid-A", {}, "failure", "denied")  # T0+1s
    clock.now = T0 + timedelta(days=2)
    audit.log_operation(OperationType.REMOVE_HOLD, "guid-a", {}, "success", user="other@x")
    audit.log_operation(OperationType.REMOVE_HOLD, "guid-b", {}, "success")
    ids = lambda entries: [e.id for e in entries]  # noqa: E731
    assert ids(audit.get_operations()) == [1, 2, 3, 4]
    assert ids(audit.get_operations(T0 + timedelta(days=1))) == [3, 4]
    assert ids(audit.get_operations(None, T0 + timedelta(seconds=1))) == [1, 2]
    assert ids(audit.get_operations(T0, T0)) == [1]
    naive = (T0 + timedelta(days=1)).replace(tzinfo=None)
    assert ids(audit.get_operations(naive)) == [3, 4]
    assert ids(audit.get_operations_for_mailbox("GUID-A")) == [2, 3]
    assert ids(audit.get_operations(operation="remove_hold")) == [3, 4]
    assert ids(audit.get_operations(operation=[OperationType.SYNC, "RECOVER_MAILBOX"])) == [1, 2]
    assert ids(audit.get_operations(result="failure")) == [2]
    assert ids(audit.get_operations(user="OTHER@x")) == [3]
    assert ids(audit.get_operations(limit=2, newest_first=True)) == [4, 3]
    assert ids(audit.get_operations(limit=2)) == [1, 2]
    assert audit.count() == 4


SECRETS = {
    "bearer": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sifQ.c2lnbmF0dXJlLXNlY3JldA",
    "password": "Winter2026!Hunter2",
    "refresh": "0.AAAAq7rSECRETREFRESHTOKENvalue-xyz",
    "pem_body": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
}
PEM = f"-----BEGIN PRIVATE KEY-----\n{SECRETS['pem_body']}\n-----END PRIVATE KEY-----"


def test_no_secret_is_stored(audit: AuditLogger, db: DatabaseManager, tmp_path: Path) -> None:
    details = {
        "request": {"headers": {"Authorization": f"Bearer {SECRETS['bearer']}"}},
        "password": SECRETS["password"],
        "token_response": {"refresh_token": SECRETS["refresh"], "expires_in": 3599},
        "note": f"sent refresh_token={SECRETS['refresh']} and Bearer {SECRETS['bearer']}",
        "certificate": {"pem": PEM},
        "lines": [f"key material {PEM}", {"Password": SECRETS["password"]}],
    }
    with pytest.raises(ImmError):
        with audit.operation(OperationType.RECOVER_MAILBOX, "guid-1", details=details):
            raise ImmError(f"call failed with Authorization: Bearer {SECRETS['bearer']} password={SECRETS['password']}")
    audit.log_operation(OperationType.LOGIN, None, details, "success", f"refresh_token={SECRETS['refresh']}")
    started = audit.get_operations()[0]
    if db.is_postgresql:
        stored = stored_text(db, "audit_log")
    db.close()
    if not db.is_postgresql:
        stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("imm.db"))
    assert b"RECOVER_MAILBOX" in stored
    for secret in SECRETS.values():
        assert secret.encode() not in stored, secret
    assert started.details["password"] == "***"
    assert started.details["token_response"] == {"refresh_token": "***", "expires_in": 3599}
    assert started.details["request"]["headers"]["Authorization"] == "***"
    assert started.details["certificate"]["pem"] == "***private-key***"


class Colour(Enum):
    RED = "red"


def test_details_become_plain_json(audit: AuditLogger) -> None:
    entry = audit.log_operation(
        OperationType.REPORT,
        None,
        {"when": T0, "path": Path("/tmp/r.csv"), "kinds": {"b", "a"}, "colour": Colour.RED, "pair": (1, 2)},
        "success",
    )
    assert entry.details == {
        "when": "2026-01-15T09:30:00.123456+00:00",
        "path": "/tmp/r.csv",
        "kinds": ["a", "b"],
        "colour": "red",
        "pair": [1, 2],
    }


def test_export_to_json(audit: AuditLogger, tmp_path: Path) -> None:
    audit.log_operation(OperationType.SYNC, None, {"n": 1}, "success")
    with audit.operation(OperationType.RECOVER_MAILBOX, "guid-1", details={"before": {"holds": ["UniH1"]}}) as op:
        op.succeeded({"after": {"mailbox": "new@contoso.com"}})
    out = tmp_path / "export.json"
    assert audit.export_to_json(out) == 3
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["format"] == "imm-audit-export"
    assert document["version"] == 1
    assert document["range"] == {"since": None, "until": None, "first_id": 1, "last_id": 3}
    assert document["checkpoints"] == []
    assert [e["id"] for e in document["entries"]] == [1, 2, 3]
    second = document["entries"][1]
    assert second["operation"] == "RECOVER_MAILBOX"
    assert second["details"] == {"before": {"holds": ["UniH1"]}}
    assert second["details_json"] == '{"before":{"holds":["UniH1"]}}'
    assert second["prev_hash"] == document["entries"][0]["row_hash"]
    assert document["head"] == {"id": 3, "row_hash": document["entries"][2]["row_hash"]}
    [export_row] = audit.get_operations(operation=OperationType.EXPORT_DATA)
    assert export_row.id == 4
    assert export_row.details["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert export_row.details["rows"] == 3
    assert export_row.details["path"] == str(out.resolve())
    # a date range
    part = tmp_path / "part.json"
    assert audit.export_to_json(part, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)) == 2
    assert [e["id"] for e in json.loads(part.read_text())["entries"]] == [2, 3]


def test_export_to_unwritable_place_is_an_input_error(audit: AuditLogger, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot write the export to"):
        audit.export_to_json(tmp_path / "missing-dir" / "x.json")
    assert audit.get_operations(operation="EXPORT_DATA") == []


def test_an_export_that_cannot_be_recorded_leaves_no_file(tmp_path: Path, clock: Clock) -> None:
    """The database locked by another process: the EXPORT_DATA row cannot be written, so no unaudited copy of the
    log is left behind."""
    from imm.errors import StoreError

    path = tmp_path / "imm.db"
    writer = DatabaseManager(path)
    writer.initialize()
    AuditLogger(writer, tenant="t", user="u", clock=clock).log_operation(OperationType.SYNC, None, {}, "success")
    writer.close()
    waiting = DatabaseManager(path, busy_timeout=0.1)
    waiting.initialize()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    out = tmp_path / "audit.json"
    try:
        with pytest.raises(StoreError, match="locked by another process"):
            AuditLogger(waiting, tenant="t", user="u", clock=clock).export_to_json(out)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sorted(p.name for p in tmp_path.iterdir() if "audit" in p.name) == []  # nor a temporary file
    waiting.close()


def test_prune_keeps_a_checkpoint_and_the_chain_verifies(db: DatabaseManager, clock: Clock) -> None:
    audit = AuditLogger(db, tenant="t", user="officer@contoso.com", clock=clock)
    for n in range(5):
        audit.log_operation(OperationType.SYNC, None, {"n": n}, "success")
    clock.now = T0 + timedelta(days=400)
    audit.log_operation(OperationType.REPORT, None, {}, "success")  # id 6, recent
    plan = audit.prune_preview(365)
    assert (plan.count, plan.first_id, plan.last_id) == (5, 1, 5)
    assert audit.prune_old_entries(365) == 5
    rows = audit.get_operations()
    assert [(r.id, r.operation) for r in rows] == [(6, "REPORT"), (7, "PRUNE")]
    [checkpoint] = audit.checkpoints()
    assert checkpoint["first_kept_id"] == 6
    assert checkpoint["pruned_count"] == 5
    assert checkpoint["retention_days"] == 365
    assert checkpoint["user"] == "officer@contoso.com"
    assert checkpoint["cut_hash"] == rows[0].prev_hash
    assert rows[1].details["checkpoint_id"] == 1
    assert rows[1].details["checkpoint_hash"] == checkpoint["checkpoint_hash"]
    assert (rows[1].details["first_pruned_id"], rows[1].details["last_pruned_id"]) == (1, 5)
    assert audit.verify().ok
    # a second prune removes everything older, including the first PRUNE row; the checkpoints chain
    clock.now = T0 + timedelta(days=2000)
    assert audit.prune_old_entries(365) == 2
    assert [(r.id, r.operation) for r in audit.get_operations()] == [(8, "PRUNE")]
    assert [c["first_kept_id"] for c in audit.checkpoints()] == [6, 8]
    report = audit.verify()
    assert (report.ok, report.rows_checked, report.checkpoints_checked) == (True, 1, 2)
    audit.log_operation(OperationType.SYNC, None, {}, "success")
    assert audit.verify().ok


def test_prune_keeps_operations_without_a_result_and_rows_of_open_jobs(db: DatabaseManager, clock: Clock) -> None:
    audit = AuditLogger(db, tenant="t", user="officer@contoso.com", clock=clock)
    audit.log_operation(OperationType.SYNC, None, {}, "success")  # 1: old, done
    in_flight = audit.begin(OperationType.REMOVE_HOLD, "guid-1", {"action": "release"})  # 2: no result yet
    audit.log_operation(OperationType.SYNC, None, {}, "success")  # 3
    clock.now = T0 + timedelta(days=400)
    assert audit.prune_old_entries(365) == 1  # stops before the operation in flight
    assert [r.id for r in audit.get_operations()][:2] == [2, 3]
    audit.finish(in_flight, "success", {"action": "release"})
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO bulk_jobs (id, created_at, updated_at, plan_path, plan_sha256, status, mode, concurrency) "
            "VALUES ('job-1', '2025-01-01', '2025-01-01', 'p.csv', 'x', 'running', 'execute', 2)"
        )
    clock.now = T0 + timedelta(days=401)
    job_row = audit.log_operation(OperationType.REMOVE_HOLD, "guid-2", {"job_id": "job-1", "line": 2}, "success")
    audit.log_operation(OperationType.SYNC, None, {}, "success")
    clock.now = T0 + timedelta(days=900)
    pruned = audit.prune_old_entries(365)
    kept = [r.id for r in audit.get_operations()]
    assert kept[0] == job_row.id and pruned == job_row.id - 1 - 1  # the open job's row and all after it stay
    with db.transaction() as conn:
        conn.execute("UPDATE bulk_jobs SET status = 'completed' WHERE id = 'job-1'")
    assert audit.prune_old_entries(365) > 0
    assert job_row.id not in [r.id for r in audit.get_operations()]
    assert audit.verify().ok


def test_prune_refuses_short_retention_and_does_nothing_when_nothing_is_old(audit: AuditLogger) -> None:
    audit.log_operation(OperationType.SYNC, None, {}, "success")
    with pytest.raises(InputError, match="shorter than this profile's minimum of 365 days"):
        audit.prune_old_entries(30, min_retention_days=365)
    with pytest.raises(InputError):
        audit.prune_old_entries(-1)
    assert audit.prune_old_entries(365) == 0
    assert audit.count() == 1
    assert audit.checkpoints() == []


def test_triggers_refuse_update_and_delete(audit: AuditLogger, db: DatabaseManager) -> None:
    audit.log_operation(OperationType.SYNC, None, {}, "success")
    conn = db.get_connection()
    with pytest.raises((sqlite3.IntegrityError, postgres.DatabaseError), match="append-only"):
        conn.execute("UPDATE audit_log SET result = 'failure'")
    with pytest.raises((sqlite3.IntegrityError, postgres.DatabaseError), match="only by imm audit prune"):
        conn.execute("DELETE FROM audit_log")
    assert audit.count() == 1


def test_schema(db: DatabaseManager) -> None:
    columns = table_columns(db, "audit_log")
    assert columns == [
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
    ]
    if db.is_postgresql:  # one trigger per table refuses both (see imm.data.pg_schema)
        assert {"audit_log_append_only", "audit_checkpoints_append_only"} <= triggers(db)
        return
    assert {
        "audit_log_no_update",
        "audit_log_no_delete",
        "audit_checkpoints_no_update",
        "audit_checkpoints_no_delete",
    } <= triggers(db)
