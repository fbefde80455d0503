"""A sync whose process died is closed as ``interrupted`` by the next sync (its ``sync_runs`` row and its SYNC
audit operation), so ``imm audit list --incomplete`` shows only what is truly open; a live run is left alone."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import make_simulator, run_imm
from imm.config import write_profile


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def _incomplete(env: dict[str, str]) -> list[dict[str, object]]:
    listed = run_imm("audit", "list", "--incomplete", "--limit", "0", "-o", "json", env=env)
    assert listed.exit_code == 0, listed.stderr
    return json.loads(listed.stdout)


def test_a_killed_sync_is_closed_as_interrupted_by_the_next_one(tmp_path: Path, imm_home: Path) -> None:
    with make_simulator(tmp_path, mailboxes=120, auto_approve_after=0.0, latency_ms=150.0) as sim:
        write_profile(imm_home / "config" / "config.toml", "sim", sim.profile_values(), make_default=True)
        assert run_imm("login").exit_code == 0
        db = imm_home / "data" / "sim.db"
        env = {**os.environ}
        env.pop("IMM_RAISE_ERRORS", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "imm", "sync", "--concurrency", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if db.exists() and _rows(db, "SELECT id FROM sync_runs WHERE status = 'running'"):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the sync never started")
            time.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        (killed_run,) = _rows(db, "SELECT id, status FROM sync_runs")
        assert killed_run[1] == "running"
        open_ops = _incomplete({})
        assert [(r["operation"], r["result"]) for r in open_ops] == [("SYNC", "started")]

        again = run_imm("sync")
        assert again.exit_code == 0, again.stderr
        runs = _rows(db, "SELECT id, status FROM sync_runs ORDER BY id")
        assert runs == [(killed_run[0], "interrupted"), (killed_run[0] + 1, "completed")]
        assert _incomplete({}) == []
        closed = _rows(
            db,
            "SELECT result, error_message, details FROM audit_log WHERE operation = 'SYNC' "
            f"AND operation_id = '{open_ops[0]['operation_id']}' ORDER BY id",
        )
        assert [r[0] for r in closed] == ["started", "interrupted"]
        assert closed[1][1] == (
            "the sync's process ended without recording a result (killed or crashed); closed by the next sync"
        )
        assert json.loads(str(closed[1][2]))["run_id"] == killed_run[0]
        verified = run_imm("audit", "verify")
        assert verified.exit_code == 0, verified.stderr
        listed = run_imm("audit", "list", "--result", "interrupted", "-o", "json")
        assert [r["operation"] for r in json.loads(listed.stdout)] == ["SYNC"]


def test_a_running_sync_of_a_live_process_is_left_open(tmp_path: Path, imm_home: Path) -> None:
    """Another process on this host that is still syncing keeps its row; a row naming another host too."""
    import socket

    with make_simulator(tmp_path, mailboxes=20, auto_approve_after=0.0) as sim:
        write_profile(imm_home / "config" / "config.toml", "sim", sim.profile_values(), make_default=True)
        assert run_imm("login").exit_code == 0
        assert run_imm("sync").exit_code == 0
        db = imm_home / "data" / "sim.db"
        alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        try:
            conn = sqlite3.connect(db)
            for pid, host in ((alive.pid, socket.gethostname()), (dead.pid, socket.gethostname()), (1, "elsewhere")):
                details = json.dumps({"pid": pid, "host": host})
                conn.execute(
                    "INSERT INTO sync_runs(started_at, mode, status, details) VALUES "
                    "('2026-12-01T00:00:00+00:00', 'incremental', 'running', ?)",
                    (details,),
                )
            conn.commit()
            conn.close()
            assert run_imm("sync").exit_code == 0
            statuses = _rows(db, "SELECT status, details FROM sync_runs WHERE id > 1 ORDER BY id")
            assert [s for s, _ in statuses] == ["running", "interrupted", "running", "completed"]
        finally:
            alive.kill()
            alive.wait()
