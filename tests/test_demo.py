"""``imm demo`` end to end as a real process: simulated tenant, device code sign-in, sync, reports, next steps."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_imm

pytestmark = pytest.mark.slow


def _run_keep_demo(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    """``imm demo --keep`` as a child process: it, and its stdout up to its last line (the --clean hint)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "imm", "demo", "--keep", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Remove the demo folder when done: "):
            return proc, lines
    proc.kill()
    raise AssertionError(f"the demo did not finish: {lines} {proc.stderr.read() if proc.stderr else ''}")


def test_demo_runs_end_to_end_and_every_hint_runs_as_printed(tmp_path: Path, imm_home: Path) -> None:
    report = tmp_path / "out" / "demo-report.html"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}  # nothing may be left in the system temp dir

    proc, stdout_lines = _run_keep_demo(["--mailboxes", "300", "--report", str(report)], env)
    stdout = "\n".join(stdout_lines)
    try:
        # every printed hint runs as printed (shell words, first word the imm to run), against the cache and,
        # while the demo keeps it running, the simulated tenant: exit 0 each
        hints = [line.strip() for line in stdout_lines if line.startswith("  ") and " --config " in line]
        assert len(hints) == 12, stdout  # 7 offline (show included), 5 against the tenant
        # a new UPN in the tenant's managed onmicrosoft.com domain (a federated one is refused), as a preview
        assert any(" recover " in h and ".recovered@contoso.onmicrosoft.com --what-if" in h for h in hints), hints
        for hint in hints:
            ran = subprocess.run(
                shlex.split(hint), capture_output=True, text=True, env={**os.environ, **env}, timeout=120
            )
            assert ran.returncode == 0, (hint, ran.stderr)
            assert "Traceback" not in ran.stderr
            if " list --company " in hint:
                company = shlex.split(hint)[-1]
                listed = run_imm(*shlex.split(hint)[1:], "--output", "json")
                rows = json.loads(listed.stdout)
                assert rows and all(r["operating_company"] == company for r in rows)
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    # the device code message as msal words it, then the sign-in went through by itself
    assert re.search(r"enter the code \S+ to authenticate", stderr), stderr
    # 300 inactive mailboxes and the one formerly inactive mailbox the demo tenant has soft-deleted (kept until purge)
    assert "Synced: 300 inactive mailboxes listed (and 1 soft-deleted, awaiting purge), 301 fetched" in stderr
    # the demo folder: printed, "demo" in imm's data folder, holding config, database, tokens, its log and the
    # simulator's files; the log of the hints run afterwards is there too, and no log folder was made elsewhere
    workdir = imm_home / "data" / "demo"
    assert f"Demo folder: {workdir}" in stderr
    for name in ("config.toml", "imm.db", "tokens", "simulator", "imm.log"):
        assert (workdir / name).exists(), name
    log_pids = {line.split()[2] for line in (workdir / "imm.log").read_text(encoding="utf-8").splitlines()}
    assert str(proc.pid) in log_pids and len(log_pids) > 1, log_pids  # the demo's and the hints' lines
    assert sorted(p.name for p in imm_home.iterdir()) == ["data"]
    assert list(temp.iterdir()) == []
    conn = sqlite3.connect(workdir / "imm.db")
    try:
        counts = dict(
            conn.execute("SELECT is_inactive_mailbox, COUNT(*) FROM inactive_mailboxes GROUP BY 1").fetchall()
        )
        assert counts == {1: 300, 0: 1}
        assert [r[0] for r in conn.execute("SELECT result FROM audit_log WHERE operation='SYNC' ORDER BY id")] == [
            "started",
            "success",
            "started",
            "success",
        ]  # the demo's sync, then the hint's
    finally:
        conn.close()
    # the HTML report with its charts stays
    assert f"HTML report with charts: {report}" in stdout
    html = report.read_text(encoding="utf-8")
    assert html.count("<svg") >= 3
    assert "<script src=" not in html and "http://" not in html.replace("http://www.w3.org", "")
    # the summary report on stdout: the inactive mailboxes, and the soft-deleted one on a row of its own
    assert re.search(r"^│Inactive mailboxes +│ +300│$", stdout, re.MULTILINE), stdout
    assert re.search(r"^│Soft-deleted, awaiting purge +│ +1│$", stdout, re.MULTILINE), stdout

    export = f"Every --help example runs against the demo with: export IMM_CONFIG={workdir}/config.toml"
    assert stdout_lines[-2] == export
    # imm demo --clean, as printed, removes the folder (the report stays); a second time there is none
    clean = shlex.split(stdout_lines[-1].split(": ", 1)[1])
    cleaned = subprocess.run(clean, capture_output=True, text=True, timeout=60)
    assert (cleaned.returncode, cleaned.stdout) == (0, f"Removed the demo folder {workdir}\n"), cleaned.stderr
    assert not workdir.exists() and report.exists()
    again = run_imm("demo", "--clean")
    assert (again.exit_code, again.stdout) == (0, f"No demo folder at {workdir}\n")


def test_demo_clean_refuses_a_folder_it_did_not_make(imm_home: Path) -> None:
    folder = imm_home / "data" / "demo"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    result = run_imm("demo", "--clean")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {folder} is not a folder imm demo made: not removed\n")
    assert (folder / "notes.txt").exists()
