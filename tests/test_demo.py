"""``imm demo`` end to end as a real process: simulated tenant, device code sign-in, sync, reports, next steps."""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
from pathlib import Path

import pytest

from conftest import run_imm

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_and_its_next_commands_work(tmp_path: Path) -> None:
    report = tmp_path / "out" / "demo-report.html"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)}  # the demo folder goes under the system temp dir

    result = run_imm("demo", "--mailboxes", "300", "--report", str(report), env=env, timeout=120)

    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    # the device code message as msal words it, then the sign-in went through by itself
    assert re.search(r"enter the code \S+ to authenticate", result.stderr), result.stderr
    # 300 inactive mailboxes and the one formerly inactive mailbox the demo tenant has soft-deleted (kept until purge)
    assert "Synced: 300 inactive mailboxes listed (and 1 soft-deleted, awaiting purge), 301 fetched" in result.stderr
    # the demo folder: printed, under the temp dir, holding config, database, token cache and simulator files
    match = re.search(r"Demo folder: (\S+)", result.stderr)
    assert match, result.stderr
    workdir = Path(match.group(1))
    assert workdir.parent == temp and workdir.name.startswith("imm-demo-")
    for name in ("config.toml", "imm.db", "tokens", "simulator"):
        assert (workdir / name).exists(), name
    conn = sqlite3.connect(workdir / "imm.db")
    try:
        counts = dict(
            conn.execute("SELECT is_inactive_mailbox, COUNT(*) FROM inactive_mailboxes GROUP BY 1").fetchall()
        )
        assert counts == {1: 300, 0: 1}
        assert [r[0] for r in conn.execute("SELECT result FROM audit_log WHERE operation='SYNC' ORDER BY id")] == [
            "started",
            "success",
        ]
    finally:
        conn.close()
    # the HTML report with its charts stays
    assert f"HTML report with charts: {report}" in result.stdout
    html = report.read_text(encoding="utf-8")
    assert html.count("<svg") >= 3
    assert "<script src=" not in html and "http://" not in html.replace("http://www.w3.org", "")
    # the summary report on stdout: the inactive mailboxes, and the soft-deleted one on a row of its own
    assert re.search(r"^ Inactive mailboxes +300 $", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^ Soft-deleted, awaiting purge +1 $", result.stdout, re.MULTILINE), result.stdout

    # the printed next commands run against the demo's cache after the demo has ended
    commands = [line.strip() for line in result.stdout.splitlines() if "--config" in line]
    assert commands, result.stdout
    listing = next(c for c in commands if " list --company " in c)
    args = shlex.split(listing)
    args = args[args.index("--config") :]
    company = args[args.index("--company") + 1]
    listed = run_imm(*args, "--output", "json")
    assert listed.exit_code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert rows and all(r["operating_company"] == company for r in rows)
    show = next((c for c in commands if " show " in c), None)
    if show is not None:
        args = shlex.split(show)
        shown = run_imm(*args[args.index("--config") :])
        assert shown.exit_code == 0, shown.stderr
