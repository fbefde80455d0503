"""``imm audit export --format jsonl --since-last SINK`` through the real CLI process: a file sink and the simulated
Azure Monitor Logs Ingestion endpoint, each killed with SIGKILL mid-export and resumed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import run_imm
from imm.data.audit_logger import AuditLogger, OperationType
from imm.data.database import DatabaseManager
from imm.simulator import Simulator

START = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
HASHED = ("ImmRowId", "Timestamp", "Operation", "Identity", "User", "Tenant", "OperationId", "Result")


def fill(db_path: Path, rows: int) -> None:
    db = DatabaseManager(db_path)
    db.initialize()
    moments = (START + timedelta(seconds=i) for i in range(rows + 10))
    audit = AuditLogger(db, tenant="contoso", user="admin@contoso.com", clock=lambda: next(moments))
    with db.transaction():
        for n in range(rows):
            audit.log_operation(OperationType.SYNC, None, {"n": n, "name": "Zoë"}, "success")
    db.close()


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_chain(events: list[dict[str, Any]]) -> None:
    """What a receiver does with schema imm.audit.v1: re-compute each RowHash and follow PrevHash."""
    prev = "0" * 64
    for event in events:
        values = [event[k] for k in HASHED] + [event["ErrorMessage"], event["DetailsJson"], event["PrevHash"]]
        payload = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(payload.encode()).hexdigest() == event["RowHash"]
        assert event["PrevHash"] == prev
        prev = event["RowHash"]


def start_export(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("IMM_RAISE_ERRORS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "imm", "audit", "export", "--format", "jsonl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )


def wait_for(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_file_sink_sends_only_new_rows_with_a_verifiable_schema(tmp_path: Path) -> None:
    db_path, sink = tmp_path / "imm.db", tmp_path / "out" / "audit.jsonl"
    sink.parent.mkdir()
    fill(db_path, 7)
    first = run_imm("audit", "export", "--format", "jsonl", "--since-last", str(sink), "--db", str(db_path))
    assert first.exit_code == 0, first.stderr
    assert first.stdout == f"Exported 7 audit rows (ids 1-7) to {sink}\n"
    events = read_lines(sink)
    assert [e["ImmRowId"] for e in events] == list(range(1, 8))
    assert events[0]["ImmSchema"] == "imm.audit.v1"
    assert events[0]["Details"] == {"n": 0, "name": "Zoë"}
    assert (events[0]["Signature"], events[0]["Redelivered"]) == (None, False)
    check_chain(events)
    assert oct(sink.stat().st_mode & 0o777) == "0o600"
    second = run_imm("audit", "export", "--format", "jsonl", "--since-last", str(sink), "--db", str(db_path))
    assert second.stdout == f"Exported 1 audit rows (ids 8-8) to {sink}\n"  # the first run's EXPORT_DATA row
    events = read_lines(sink)
    assert events[-1]["Operation"] == "EXPORT_DATA"
    assert events[-1]["Details"]["rows"] == 7
    check_chain(events)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "jsonl"], "--format jsonl streams to a sink: add --since-last SINK"),
        (["--since-last", "x.jsonl", "--out", "y.json"], "--since-last sends every row after the sink's cursor"),
        (["--since-last", "https://example.com/x"], "is not a Logs Ingestion stream URL"),
    ],
)
def test_bad_export_options_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    fill(tmp_path / "imm.db", 1)
    result = run_imm("audit", "export", *args, "--db", str(tmp_path / "imm.db"))
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_file_sink_killed_and_resumed_delivers_every_row_exactly_once(tmp_path: Path) -> None:
    db_path, sink = tmp_path / "imm.db", tmp_path / "audit.jsonl"
    rows = 1500
    fill(db_path, rows)
    for at_least in (40, 400, 900):  # three kills at different points
        proc = start_export("--since-last", str(sink), "--batch-size", "1", "--db", str(db_path))
        wait_for(lambda n=at_least, p=proc: sink.exists() and sink.stat().st_size > n * 300 or p.poll() is not None)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = run_imm("audit", "export", "--format", "jsonl", "--since-last", str(sink), "--db", str(db_path))
    assert done.exit_code == 0, done.stderr
    ids = [e["ImmRowId"] for e in read_lines(sink)]
    assert ids[:rows] == list(range(1, rows + 1))
    assert len(ids) == len(set(ids))
    check_chain(read_lines(sink))


def _login(sim: Simulator, home: Path) -> None:
    from imm.config import write_profile

    write_profile(home / "config" / "config.toml", "sim", sim.profile_values(), make_default=True)
    result = run_imm("login")
    assert result.exit_code == 0, result.stderr


def test_logs_ingestion_batches_retries_on_429_and_resumes_after_sigkill(simulator: Simulator, imm_home: Path) -> None:
    _login(simulator, imm_home)
    db_path = imm_home / "data" / "sim.db"
    fill(db_path, 120)  # the login's rows come first
    total = DatabaseManager(db_path)
    count = int(total.get_connection().execute("SELECT MAX(id) FROM audit_log").fetchone()[0])
    total.close()
    url = simulator.ingestion.stream_url(simulator.base_url)
    simulator.ingestion.throttle_every = 3
    simulator.ingestion.retry_after = 30  # long enough to be killed while waiting it out
    proc = start_export("--since-last", url, "--batch-size", "10")
    wait_for(lambda: simulator.ingestion.throttled >= 1 or proc.poll() is not None)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    got_before = len(simulator.ingestion.records)
    assert 0 < got_before < count
    simulator.ingestion.retry_after = 1
    done = run_imm("audit", "export", "--format", "jsonl", "--since-last", url, "--batch-size", "10")
    assert done.exit_code == 0, done.stderr
    ids = [r["ImmRowId"] for r in simulator.ingestion.records]
    assert ids[:count] == list(range(1, count + 1))
    assert len(ids) == len(set(ids))  # exactly once: the refused batch was not taken, and is sent once
    assert not any(r["Redelivered"] for r in simulator.ingestion.records)
    assert simulator.ingestion.throttled >= 2  # throttled again during the resume, and waited it out
    check_chain(simulator.ingestion.records)
    again = run_imm("audit", "export", "--format", "jsonl", "--since-last", url)
    assert again.stdout.startswith(f"Exported 1 audit rows (ids {count + 1}-{count + 1})")


def test_a_batch_in_flight_when_killed_is_sent_again_marked_redelivered(simulator: Simulator, imm_home: Path) -> None:
    _login(simulator, imm_home)
    db_path = imm_home / "data" / "sim.db"
    fill(db_path, 30)
    url = simulator.ingestion.stream_url(simulator.base_url)
    simulator.ingestion.delay_seconds = 1.5  # Microsoft takes its time to answer; the records are taken anyway
    proc = start_export("--since-last", url, "--batch-size", "50")
    wait_for(lambda: simulator.ingestion.calls >= 1 or proc.poll() is not None)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.7)
    simulator.ingestion.delay_seconds = 0
    done = run_imm("audit", "export", "--format", "jsonl", "--since-last", url)
    assert done.exit_code == 0, done.stderr
    assert "sent again: an earlier attempt may have arrived" in done.stdout
    records = simulator.ingestion.records
    first_batch = [r for r in records if not r["Redelivered"]]
    again = [r for r in records if r["Redelivered"]]
    assert [r["ImmRowId"] for r in again] == [r["ImmRowId"] for r in first_batch]  # flagged, for the receiver
    assert {r["ImmRowId"] for r in records} == set(range(1, max(r["ImmRowId"] for r in records) + 1))
