"""One sync per profile at a time (issue 17): a second ``imm sync`` names the process that holds the cache and exits
5, or with ``--wait`` starts once the first has finished. Real imm processes against the simulated tenant."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import make_simulator, run_imm
from imm.config import write_profile

pytestmark = pytest.mark.slow


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _wait_for_running_sync(db: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if db.exists() and _rows(db, "SELECT id FROM sync_runs WHERE status = 'running'"):
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    raise AssertionError("the first sync never started")


def test_a_second_sync_names_the_holder_and_exits_5_or_waits(tmp_path: Path, imm_home: Path) -> None:
    with make_simulator(tmp_path, mailboxes=120, auto_approve_after=0.0, latency_ms=150.0) as sim:
        write_profile(imm_home / "config" / "config.toml", "sim", sim.profile_values(), make_default=True)
        assert run_imm("login").exit_code == 0
        db = imm_home / "data" / "sim.db"
        env = {**os.environ}
        env.pop("IMM_RAISE_ERRORS", None)
        first = subprocess.Popen(
            [sys.executable, "-m", "imm", "sync", "-q", "--concurrency", "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for_running_sync(db)
            second = run_imm("sync", "-q")
            assert (second.exit_code, second.stdout) == (5, "")
            lines = second.stderr.splitlines()
            assert lines[0].startswith(
                "Error: this profile's cache is being synced right now: sync by process "
                f"{first.pid} on {socket.gethostname()}"
            ), second.stderr
            assert ", started 20" in lines[0]
            assert lines[1:] == ["Hint: wait for it to finish, or run `imm sync --wait` to start as soon as it has"]
            refused = _rows(db, "SELECT result, error_message FROM audit_log WHERE operation = 'SYNC' ORDER BY id")
            assert [r[0] for r in refused] == ["started", "failure"]
            assert str(refused[1][1]).startswith("this profile's cache is being synced right now")
            assert len(_rows(db, "SELECT id FROM sync_runs")) == 1  # the refused run left no run row

            waiting = subprocess.Popen(
                [sys.executable, "-m", "imm", "sync", "-q", "--wait"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert waiting.stderr is not None
            said: list[str] = []
            reader = threading.Thread(target=lambda: said.append(waiting.stderr.readline()), daemon=True)
            reader.start()
            reader.join(timeout=60)  # it says it waits (however slowly it starts) before the first is let go
            assert said and said[0].startswith(f"Waiting for the running sync: sync by process {first.pid} on "), said
            assert waiting.poll() is None  # still waiting for the first
            sim.config.latency_ms = 0  # let the first one finish
            assert first.wait(timeout=120) == 0
            out, err = waiting.communicate(timeout=120)
            assert waiting.returncode == 0, err
        finally:
            for proc in (first,):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
        runs = _rows(db, "SELECT status FROM sync_runs ORDER BY id")
        assert runs == [("completed",), ("completed",)]  # one after the other, never side by side
