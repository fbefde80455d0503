"""``imm bulk`` end to end: the real CLI process, real sign-in, real httpx over TLS, a real SQLite journal, against
the simulated tenant. Ground truth is the simulator's own records (``sim.exchange.tenant``) and its request log.

What is proven here (design §10, the task's acceptance):
- what-if changes nothing in the tenant (only Get-* cmdlets reach it);
- 1,000 hold releases under injected 429s, 5xx and connection resets: every item done, each mailbox changed by
  exactly one Set-Mailbox, exactly one started+success audit pair per item;
- a job SIGKILLed at several points (including while an item was done in Exchange but not yet in the journal) and
  resumed ends with the same tenant state and the same per-item success audit rows as an uninterrupted run;
- Ctrl+C stops cleanly (exit 130, results written, the resume command printed); sign-in lost mid-run exits 3;
- recover passwords go only to the --passwords-out file (0600), never to logs, output, the database or audit rows.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, make_simulator, run_imm
from imm.config import write_profile
from imm.simulator import FaultConfig, Simulator
from imm.simulator.model import ACTIVE, INACTIVE

pytestmark = pytest.mark.slow

ADMIN = "admin@contoso.onmicrosoft.com"
CHANGING = ("Set-", "New-", "Remove-", "Add-", "Enable-", "Disable-", "Start-", "Invoke-")
# bulk runs of these tests confirm their last-hold and Unlimited releases by flag (the typed count is tested apart)
UNDERSTOOD = ("--i-understand-last-hold", "--i-understand-unlimited")
ITEM_OPERATIONS = ("RECOVER_MAILBOX", "RESTORE_MAILBOX", "REMOVE_HOLD", "CHANGE_HOLD")


# ------------------------------------------------------------------------------------------------ helpers
@dataclass
class Site:
    """One simulated tenant and the imm home (config, database, logs) that talks to it."""

    sim: Simulator
    home: Path
    work: Path

    @property
    def env(self) -> dict[str, str]:
        return {"IMM_USER_PATH": str(self.home)}

    @property
    def db(self) -> Path:
        return self.home / "data" / "sim.db"

    def imm(self, *args: str, input: str | None = None, timeout: float = 120) -> CliResult:
        return run_imm(*args, env=self.env, input=input, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, **self.env}
        env.pop("IMM_RAISE_ERRORS", None)
        return subprocess.Popen(
            [sys.executable, "-m", "imm", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def job_id(self) -> str:
        return str(self.rows("SELECT id FROM bulk_jobs ORDER BY created_at DESC LIMIT 1")[0]["id"])

    def items(self, job_id: str) -> dict[int, sqlite3.Row]:
        return {r["line_no"]: r for r in self.rows("SELECT * FROM bulk_items WHERE job_id = ?", (job_id,))}

    def audit(self) -> list[dict[str, Any]]:
        out = []
        for row in self.rows("SELECT * FROM audit_log ORDER BY id"):
            entry = dict(row)
            entry["details"] = json.loads(entry["details"] or "{}")
            out.append(entry)
        return out

    def mailbox(self, guid: str) -> Any:
        return self.sim.exchange.tenant.mailboxes[guid]


@contextmanager
def site(tmp_path: Path, name: str, **options: Any) -> Iterator[Site]:
    """A served simulator (auto-approving sign-in) with an imm home signed in and synced."""
    work = tmp_path / name
    work.mkdir()
    options.setdefault("auto_approve_after", 0.0)
    with make_simulator(work, **options) as sim:
        home = work / "imm-home"
        # no call of these tests takes 5 s: a resume waits that long at most for a killed run's calls in flight
        values = {**sim.profile_values(), "request_timeout": 5.0}
        write_profile(home / "config" / "config.toml", "sim", values, make_default=True)
        place = Site(sim, home, work)
        login = place.imm("login")
        assert login.exit_code == 0, login.stderr
        synced = place.imm("sync")
        assert synced.exit_code == 0, synced.stderr
        yield place


def inactive(sim: Simulator) -> list[Any]:
    tenant = sim.exchange.tenant
    with tenant.lock:
        return sorted((m for m in tenant.mailboxes.values() if m.state == INACTIVE), key=lambda m: m.exchange_guid)


def put_on_litigation_hold(place: Site, count: int) -> list[str]:
    """The first ``count`` inactive mailboxes (by GUID), each given a Litigation Hold when it has none; then
    synced, so that a `--type litigation` release of each is exactly one Set-Mailbox."""
    chosen = [m.exchange_guid for m in inactive(place.sim)[:count]]
    tenant = place.sim.exchange.tenant
    for guid in chosen:
        if not tenant.mailboxes[guid].litigation_hold:
            tenant.add_hold(guid, "LitigationHold")
    synced = place.imm("sync")
    assert synced.exit_code == 0, synced.stderr
    return chosen


def write_plan(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    return path


def release_plan(path: Path, guids: list[str], kind: str = "litigation") -> Path:
    return write_plan(path, [{"action": "release", "identity": g, "type": kind} for g in guids],
                      ("action", "identity", "type"))  # fmt: skip


def set_mailbox_changes(sim: Simulator) -> Counter[str]:
    """Set-Mailbox calls per identity that the tenant executed (answered 200, no injected fault)."""
    counts: Counter[str] = Counter()
    for entry in list(sim.exchange.request_log):
        if entry["cmdlet"] == "Set-Mailbox" and entry["status"] == 200 and entry["fault"] is None:
            counts[str(entry["parameters"]["Identity"]).lower()] += 1
    return counts


def changing_cmdlets(sim: Simulator) -> set[str]:
    return {str(e["cmdlet"]) for e in sim.exchange.request_log if str(e["cmdlet"]).startswith(CHANGING)}


def hold_state(sim: Simulator) -> dict[str, tuple[Any, ...]]:
    """What a bulk release can change, per mailbox (times left out: they differ between two runs)."""
    tenant = sim.exchange.tenant
    with tenant.lock:
        return {
            guid: (m.state, m.litigation_hold, m.litigation_hold_duration, tuple(m.in_place_holds),
                   m.compliance_tag_hold, m.delay_hold, m.delay_release_hold)
            for guid, m in tenant.mailboxes.items()
        }  # fmt: skip


def item_pairs(audit: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """Per operation id of the per-item operations: how many rows of each result."""
    out: dict[str, Counter[str]] = {}
    for row in audit:
        if row["operation"] in ITEM_OPERATIONS:
            out.setdefault(row["operation_id"], Counter())[row["result"]] += 1
    return out


def success_rows(audit: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((r["operation"], r["identity"]) for r in audit if r["operation"] in ITEM_OPERATIONS
                   and r["result"] == "success")  # fmt: skip


def _case_held(mbx: Any) -> bool:
    return any(h.lower().startswith("unih") for h in mbx.in_place_holds)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def results_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------------ what-if
def test_what_if_previews_every_row_and_changes_nothing(tmp_path: Path) -> None:
    with site(tmp_path, "a", mailboxes=60) as place:
        sim = place.sim
        mailboxes = inactive(sim)
        plain = [m for m in mailboxes if not m.auto_expanding_archive and not m.aux_archive_shards
                 and not m.aux_primary_shards and not m.external_directory_object_id]  # fmt: skip
        litigated = [m for m in plain if m.litigation_hold]
        target = next(m for m in sim.exchange.tenant.mailboxes.values() if m.state == ACTIVE)
        rows = [
            {"action": "release", "identity": litigated[0].primary_smtp, "type": "litigation"},
            {"action": "set-duration", "identity": litigated[1].exchange_guid, "days": "3650"},
            {"action": "recover", "identity": plain[2].exchange_guid, "upn": f"new.{plain[2].upn}",
             "name": f"{plain[2].name}-new"},
            {"action": "restore", "identity": plain[3].exchange_guid, "target": target.primary_smtp},
            {"action": "release", "identity": next(m for m in mailboxes if _case_held(m)).exchange_guid,
             "type": "ediscovery"},
        ]  # fmt: skip
        plan = write_plan(place.work / "plan.csv", rows, ("action", "identity", "type", "days", "upn", "name",
                                                          "target"))  # fmt: skip
        before = hold_state(sim)
        sim.exchange.reset_counters()
        result = place.imm("bulk", "run", str(plan))  # no --execute: what-if
        job_id = place.job_id()
        assert result.exit_code in (0, 1), result.stderr
        assert changing_cmdlets(sim) == set()
        assert hold_state(sim) == before
        out = results_csv(place.work / f"plan.{job_id}.results.csv")
        assert [r["line"] for r in out] == ["2", "3", "4", "5", "6"]
        statuses = [r["status"] for r in out]
        assert statuses[:4] == ["would-run"] * 4
        assert statuses[4] in ("blocked", "skipped")  # an eDiscovery hold is never released without --force
        assert out[0]["message"].startswith("Release litigation hold(s) of inactive mailbox")
        assert all(r["operation_id"] == "" for r in out)
        assert f"Job {job_id} (what-if): " in result.stderr
        assert "nothing was changed in Exchange" in result.stderr
        audit = place.audit()
        assert [(r["operation"], r["result"]) for r in audit if r["identity"] == job_id] == [
            ("BULK_OPERATION", "started"),
            ("BULK_OPERATION", "preview"),
        ]
        # every item audited as a single --what-if is: a preview, or the failure of a blocked preflight
        last = "failure" if statuses[4] == "blocked" else "preview"
        assert item_pairs(audit) == {None: Counter({"preview": 4}) + Counter({last: 1})}
        job = place.rows("SELECT * FROM bulk_jobs WHERE id = ?", (job_id,))[0]
        assert (job["mode"], job["status"], job["runs"]) == ("what-if", "completed" if statuses[4] == "skipped"
                                                             else "completed_with_errors", 1)  # fmt: skip


# ---------------------------------------------------------------------------------------- 1,000 under faults
def test_a_thousand_releases_under_faults_each_happen_exactly_once(tmp_path: Path) -> None:
    with site(tmp_path, "a", mailboxes=1000, latency_ms=2.0, concurrency_budget=8) as place:
        sim = place.sim
        guids = put_on_litigation_hold(place, 1000)
        plan = release_plan(place.work / "plan.csv", guids)
        sim.exchange.reset_counters()
        sim.config.retry_after_seconds = 0.02
        sim.config.faults = FaultConfig(throttle_rate=0.02, error_5xx_rate=0.002, reset_rate=0.002)
        started = time.monotonic()
        result = place.imm(
            "bulk", "run", str(plan), "--execute", "--yes", *UNDERSTOOD, "--concurrency", "10", timeout=300
        )
        elapsed = time.monotonic() - started
        sim.config.faults = FaultConfig()
        assert result.exit_code == 0, result.stderr[-3000:]
        job_id = place.job_id()
        assert f"Job {job_id} (execute): 1,000 succeeded in " in result.stderr
        statuses = Counter(e["status"] for e in sim.exchange.request_log)
        assert statuses[429] > 0  # throttled (budget 8 < 10 workers, plus injected 429s) and still no failure
        assert sum(1 for e in sim.exchange.request_log if e["fault"] in ("reset", "503", "504")) > 0
        # each mailbox changed exactly once, and is released in the tenant
        assert set_mailbox_changes(sim) == Counter(dict.fromkeys(guids, 1))
        assert all(not place.mailbox(g).litigation_hold for g in guids)
        # the journal: every item succeeded, once
        items = place.items(job_id)
        assert len(items) == 1000
        assert {(r["status"], r["attempts"]) for r in items.values()} == {("succeeded", 1)}
        # audit: exactly one started + one success per item, tied to its job line
        audit = place.audit()
        pairs = item_pairs(audit)
        assert len(pairs) == 1000
        assert all(c == Counter({"started": 1, "success": 1}) for c in pairs.values())
        lines = Counter((r["details"]["job_id"], r["details"]["line"]) for r in audit
                        if r["operation"] == "REMOVE_HOLD" and r["result"] == "success")  # fmt: skip
        assert lines == Counter({(job_id, n): 1 for n in range(2, 1002)})
        assert {r["operation_id"] for r in audit if r["operation"] == "REMOVE_HOLD"} == {
            r["operation_id"] for r in items.values()
        }
        job_rows = [(r["operation"], r["result"]) for r in audit if r["identity"] == job_id]
        assert job_rows == [("BULK_OPERATION", "started"), ("BULK_OPERATION", "success")]
        assert elapsed < 120, elapsed


# -------------------------------------------------------------------------------------- kill and resume
def _kill_when(
    place: Site, process: subprocess.Popen[str], job_done: Callable[[], int], at_least: int, released_in_flight: bool
) -> None:
    """SIGKILL the run once ``at_least`` items are final and (when asked) an item is `running` in the journal while
    its mailbox is already released in the tenant (done in Exchange, not yet in the journal)."""

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before the kill: {process.communicate()[1][-2000:]}")
        try:
            if job_done() < at_least:
                return False
            if not released_in_flight:
                return True
            running = place.rows("SELECT mailbox_guid FROM bulk_items WHERE status = 'running'")
        except sqlite3.OperationalError:  # no job yet / locked for a moment
            return False
        return any(not place.mailbox(r["mailbox_guid"]).litigation_hold for r in running)

    wait_for(ready, 60, f"{at_least} items done")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_a_job_killed_at_several_points_resumes_to_the_same_end_as_an_uninterrupted_run(tmp_path: Path) -> None:
    count = 120
    options = {"mailboxes": 150, "latency_ms": 15.0, "seed": 7}
    with site(tmp_path, "straight", **options) as straight, site(tmp_path, "killed", **options) as killed:
        plans = {}
        for place in (straight, killed):
            guids = put_on_litigation_hold(place, count)
            plans[place.work] = release_plan(place.work / "plan.csv", guids)
            place.sim.exchange.reset_counters()
        assert [m.exchange_guid for m in inactive(straight.sim)] == [m.exchange_guid for m in inactive(killed.sim)]
        assert hold_state(straight.sim) == hold_state(killed.sim)

        done = straight.imm("bulk", "run", str(plans[straight.work]), "--execute", "--yes", *UNDERSTOOD)
        assert done.exit_code == 0, done.stderr

        def finished() -> int:
            rows = killed.rows("SELECT COUNT(*) FROM bulk_items WHERE status NOT IN ('pending', 'running')")
            return int(rows[0][0])

        run = killed.popen("bulk", "run", str(plans[killed.work]), "--execute", "--yes", *UNDERSTOOD)
        _kill_when(killed, run, finished, 15, released_in_flight=True)
        job_id = killed.job_id()
        in_flight = [r for r in killed.items(job_id).values() if r["status"] == "running"]
        assert in_flight  # the kill left items whose outcome the journal does not know
        done_in_exchange = [r for r in in_flight if not killed.mailbox(r["mailbox_guid"]).litigation_hold]
        assert done_in_exchange  # ... at least one of them done in Exchange already

        status = killed.imm("bulk", "status", job_id, "--output", "json")
        assert json.loads(status.stdout)["job"]["status"] == "interrupted"  # running, but its process is gone
        # the next run of any job closes the killed run's job-level row as interrupted; its items stay to reconcile
        other = killed.imm("bulk", "run", str(release_plan(killed.work / "one.csv", guids[:1])))
        assert other.exit_code == 0, other.stderr
        closed = [(r["operation"], r["result"], r["error_message"]) for r in killed.audit() if r["identity"] == job_id]
        assert closed == [
            ("BULK_OPERATION", "started", None),
            (
                "BULK_OPERATION",
                "interrupted",
                "the run's process ended without recording a result (killed or crashed); closed by the next run, "
                f"`imm bulk resume {job_id}` finishes the job",
            ),
        ]

        resume = killed.popen("bulk", "resume", job_id, "--yes", *UNDERSTOOD)
        _kill_when(killed, resume, finished, 60, released_in_flight=False)
        last = killed.imm("bulk", "resume", job_id, "--yes", *UNDERSTOOD)
        assert last.exit_code == 0, last.stderr
        assert f"Job {job_id} (execute): " in last.stderr

        # the same tenant state as the uninterrupted run; each mailbox changed exactly once
        assert hold_state(killed.sim) == hold_state(straight.sim)
        guids = [r["mailbox_guid"] for r in killed.items(job_id).values()]
        assert set_mailbox_changes(killed.sim) == Counter(dict.fromkeys(guids, 1)) == set_mailbox_changes(straight.sim)
        # the journal: all final, done once; the items the kill caught in Exchange are already-done
        items = killed.items(job_id)
        assert {r["status"] for r in items.values()} <= {"succeeded", "already-done"}
        already = {r["line_no"] for r in items.values() if r["status"] == "already-done"}
        assert {r["line_no"] for r in done_in_exchange} <= already
        # the audit: the same per-item success rows, none twice, no operation left without a result
        audit, reference = killed.audit(), straight.audit()
        assert success_rows(audit) == success_rows(reference) == Counter({("REMOVE_HOLD", g): 1 for g in guids})
        pairs = {k: c for k, c in item_pairs(audit).items() if "preview" not in c}  # the what-if run above
        assert all(c["started"] == 1 and sum(c.values()) == 2 for c in pairs.values())
        assert sum(c["success"] for c in pairs.values()) == count
        # an item a kill caught before Exchange made its change: its attempt is closed as reconciled-not-done and
        # the item runs anew under a new operation id (how many depends on where the kills land)
        redone = {k for k, c in pairs.items() if c["cancelled"]}
        assert len(pairs) == count + len(redone)
        closures = [r for r in audit if r["operation_id"] in redone and r["result"] == "cancelled"]
        assert {(r["error_message"], r["details"]["reconciled"]) for r in closures} <= {
            ("interrupted before Exchange made the change (reconciled); run again", True)
        }
        assert all(row["operation_id"] for row in items.values())
        job_rows = [(r["operation"], r["result"]) for r in audit if r["identity"] == job_id]
        assert job_rows == [
            ("BULK_OPERATION", "started"),
            ("BULK_OPERATION", "interrupted"),  # closed by the next run: the killed run recorded no result
            ("BULK_RESUME", "started"),
            ("BULK_RESUME", "interrupted"),  # the killed resume, closed by the next one
            ("BULK_RESUME", "started"),
            ("BULK_RESUME", "success"),
        ]
        verify = killed.imm("audit", "verify")
        assert verify.exit_code == 0, verify.stderr


# ------------------------------------------------------------------------------- Ctrl+C, sign-in, passwords
def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    with site(tmp_path, "a", mailboxes=80, latency_ms=20.0) as place:
        guids = put_on_litigation_hold(place, 60)
        plan = release_plan(place.work / "plan.csv", guids)
        run = place.popen("bulk", "run", str(plan), "--execute", "--yes", *UNDERSTOOD, "--concurrency", "4")

        def some_done() -> bool:
            try:
                return int(place.rows("SELECT COUNT(*) FROM bulk_items WHERE status = 'succeeded'")[0][0]) >= 5
            except sqlite3.OperationalError:
                return False

        wait_for(some_done, 60, "5 items done")
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=60)
        assert run.returncode == 130, stderr
        job_id = place.job_id()
        assert f"Interrupted: finish the job with: imm bulk resume {job_id}\n" in stderr
        items = place.items(job_id)
        assert "running" not in {r["status"] for r in items.values()}  # the items in flight finished
        assert {r["status"] for r in items.values()} == {"succeeded", "pending"}
        out = results_csv(plan.with_name(f"plan.{job_id}.results.csv"))
        assert [r["status"] for r in out] == [items[n]["status"] for n in sorted(items)]
        job_rows = [(r["operation"], r["result"]) for r in place.audit() if r["identity"] == job_id]
        assert job_rows == [("BULK_OPERATION", "started"), ("BULK_OPERATION", "cancelled")]

        listing = place.imm("bulk", "list", "--output", "json")
        assert [(j["id"], j["status"], j["left"]) for j in json.loads(listing.stdout)] == [
            (job_id, "interrupted", sum(1 for r in items.values() if r["status"] == "pending"))
        ]
        resumed = place.imm("bulk", "resume", job_id, "--yes", *UNDERSTOOD)
        assert resumed.exit_code == 0, resumed.stderr
        assert set_mailbox_changes(place.sim) == Counter(dict.fromkeys(guids, 1))
        again = place.imm("bulk", "resume", job_id, "--yes", *UNDERSTOOD)
        assert (again.exit_code, again.stderr) == (0, f"Job {job_id} has nothing left to run (60 succeeded).\n")


def test_lost_sign_in_stops_the_job_with_exit_3_and_resume_after_login(tmp_path: Path) -> None:
    with site(tmp_path, "a", mailboxes=60, latency_ms=20.0) as place:
        guids = put_on_litigation_hold(place, 40)
        plan = release_plan(place.work / "plan.csv", guids)
        run = place.popen("bulk", "run", str(plan), "--execute", "--yes", *UNDERSTOOD, "--concurrency", "2")

        def some_done() -> bool:
            try:
                return int(place.rows("SELECT COUNT(*) FROM bulk_items WHERE status = 'succeeded'")[0][0]) >= 4
            except sqlite3.OperationalError:
                return False

        wait_for(some_done, 60, "4 items done")
        place.sim.identity.revoke_user(ADMIN)
        stdout, stderr = run.communicate(timeout=120)
        job_id = place.job_id()
        assert run.returncode == 3, stderr
        assert f"Then finish it with: imm bulk resume {job_id}\n" in stderr
        items = place.items(job_id)
        assert "pending" in {r["status"] for r in items.values()}
        assert place.imm("login").exit_code == 0
        resumed = place.imm("bulk", "resume", job_id, "--yes", *UNDERSTOOD)
        assert resumed.exit_code == 0, resumed.stderr
        assert set_mailbox_changes(place.sim) == Counter(dict.fromkeys(guids, 1))
        assert {r["status"] for r in place.items(job_id).values()} <= {"succeeded", "already-done"}


def test_recover_passwords_go_only_to_the_passwords_file_even_across_a_kill(tmp_path: Path) -> None:
    with site(tmp_path, "a", mailboxes=60, latency_ms=40.0) as place:
        sim = place.sim
        plain = [m for m in inactive(sim) if not m.auto_expanding_archive and not m.aux_archive_shards
                 and not m.aux_primary_shards and not m.external_directory_object_id]  # fmt: skip
        recover = [m for m in plain if not _case_held(m)][:6]
        held = next(m for m in inactive(sim) if _case_held(m))
        domain = sim.config.tenant_domain
        upns = {m.exchange_guid: f"back.{m.alias}@{domain}" for m in recover}  # (recover changes the records)
        rows = [{"action": "recover", "identity": m.exchange_guid, "upn": upns[m.exchange_guid],
                 "name": f"{m.name}-back"} for m in recover]  # fmt: skip
        rows.append({"action": "release", "identity": held.exchange_guid, "type": "ediscovery"})  # blocked
        source = next(m for m in plain[6:] if not _case_held(m) and m is not held)
        target = next(m for m in sim.exchange.tenant.mailboxes.values() if m.state == ACTIVE)
        rows.append({"action": "restore", "identity": source.exchange_guid, "target": target.primary_smtp})
        litigated = next(m for m in plain[6:] if m.litigation_hold and m.litigation_hold_duration and m is not source)
        rows.append({"action": "set-duration", "identity": litigated.exchange_guid, "days": "unlimited"})
        columns = ("action", "identity", "upn", "name", "type", "target", "days")
        plan = write_plan(place.work / "plan.csv", rows, columns)
        secrets_file = place.work / "passwords.csv"
        run = place.popen("bulk", "run", str(plan), "--execute", "--yes", *UNDERSTOOD, "--concurrency", "2",
                          "--passwords-out", str(secrets_file))  # fmt: skip

        def one_done() -> bool:
            try:
                return int(place.rows("SELECT COUNT(*) FROM bulk_items WHERE status = 'succeeded'")[0][0]) >= 1
            except sqlite3.OperationalError:
                return False

        wait_for(one_done, 60, "1 recover done")
        run.send_signal(signal.SIGKILL)
        first_out, first_err = run.communicate(timeout=30)
        job_id = place.job_id()
        assert "running" in {r["status"] for r in place.items(job_id).values()}  # a recover caught mid-flight
        resumed = place.imm("bulk", "resume", job_id, "--yes", *UNDERSTOOD)
        assert resumed.exit_code == 1, resumed.stderr  # the eDiscovery release is blocked
        items = place.items(job_id)
        assert all(items[n]["status"] in ("succeeded", "already-done") for n in range(2, 8))
        assert items[8]["status"] == "blocked"
        assert "line 8 release" in resumed.stderr and ": blocked: " in resumed.stderr
        assert (items[9]["status"], items[10]["status"]) == ("succeeded", "succeeded")
        requests = [r for r in sim.exchange.tenant.find_restore_requests() if r.source_guid == source.exchange_guid]
        assert len(requests) == 1 and requests[0].name.startswith("imm-")
        assert place.mailbox(litigated.exchange_guid).litigation_hold_duration is None  # unlimited

        # one password per recovered mailbox, in a file only its owner can read
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        with secrets_file.open(encoding="utf-8", newline="") as handle:
            saved = list(csv.DictReader(handle))
        assert sorted(int(r["line"]) for r in saved) == list(range(2, 8))
        passwords = [r["password"] for r in saved]
        assert all(len(p) >= 16 for p in passwords)
        for mbx, row in zip(recover, sorted(saved, key=lambda r: int(r["line"])), strict=True):
            assert row["upn"] == upns[mbx.exchange_guid]
            assert place.mailbox(mbx.exchange_guid).state != INACTIVE
        tenant = sim.exchange.tenant
        assert {m.upn for m in tenant.mailboxes.values() if m.state == ACTIVE} >= set(upns.values())
        assert sum(1 for e in sim.exchange.request_log if e["cmdlet"] == "New-Mailbox" and e["status"] == 200) == 6

        # ... and nowhere else: outputs, logs, the database (with its WAL), results, the audit log
        places: dict[str, bytes] = {
            "run output": (first_out + first_err).encode(),
            "resume output": (resumed.stdout + resumed.stderr).encode(),
        }
        for path in [*place.home.rglob("*"), *place.work.glob("*.results.csv")]:
            if path.is_file():
                places[str(path)] = path.read_bytes()
        places["audit"] = json.dumps(place.audit()).encode()
        places["simulator request log"] = json.dumps(list(sim.exchange.request_log), default=str).encode()
        for password in passwords:
            leaks = [where for where, data in places.items() if password.encode() in data]
            assert leaks == [], f"a password leaked into {leaks}"
        assert any(p.suffix == ".log" for p in place.home.rglob("*.log"))  # the log file was checked too


def test_an_exchange_that_stops_answering_stops_the_job_and_resume_finishes(tmp_path: Path) -> None:
    with site(tmp_path, "a", mailboxes=40) as place:
        guids = put_on_litigation_hold(place, 20)
        plan = release_plan(place.work / "plan.csv", guids)
        place.sim.config.retry_after_seconds = 0.01
        place.sim.config.faults = FaultConfig(throttle_rate=1.0)  # every call: 429, until the client gives up
        result = place.imm("bulk", "run", str(plan), "--execute", "--yes", *UNDERSTOOD, "--concurrency", "2")
        job_id = place.job_id()
        assert result.exit_code == 1, result.stderr
        assert "Error: the job stopped: Exchange Online did not answer for 5 items in a row (last: not done, " in (
            result.stderr
        )
        assert f"Then finish it with: imm bulk resume {job_id}\n" in result.stderr
        items = place.items(job_id)
        assert {r["status"] for r in items.values()} == {"pending"}  # nothing was changed: all still to do
        assert sum(r["attempts"] for r in items.values()) in (5, 6)  # 5 in a row, and the one in flight
        assert set_mailbox_changes(place.sim) == Counter()
        assert place.rows("SELECT status FROM bulk_jobs")[0]["status"] == "interrupted"

        place.sim.config.faults = FaultConfig()
        resumed = place.imm("bulk", "resume", job_id, "--yes", *UNDERSTOOD)
        assert resumed.exit_code == 0, resumed.stderr
        assert set_mailbox_changes(place.sim) == Counter(dict.fromkeys(guids, 1))
        assert {r["status"] for r in place.items(job_id).values()} == {"succeeded"}


def test_items_left_undone_without_a_stop_say_why_and_are_not_called_interrupted(tmp_path: Path) -> None:
    """Fewer items than the stop threshold get no answer: each is put back with its reason, which is shown."""
    with site(tmp_path, "a", mailboxes=20) as place:
        guids = put_on_litigation_hold(place, 2)
        plan = release_plan(place.work / "plan.csv", guids)
        place.sim.config.retry_after_seconds = 0.001
        place.sim.config.faults = FaultConfig(throttle_rate=1.0)  # every call: 429, until the client gives up

        result = place.imm("bulk", "run", str(plan), "--execute", "--yes", *UNDERSTOOD, "--concurrency", "2")

        job_id = place.job_id()
        assert (result.exit_code, result.stdout) == (1, "")
        items = place.items(job_id)
        assert {r["status"] for r in items.values()} == {"pending"}
        for line in (2, 3):
            assert f"  line {line} release {items[line]['label']}: pending: not done, Exchange did not answer: " in (
                result.stderr
            )
        assert f"Not finished: 2 left to do; finish the job with: imm bulk resume {job_id}" in result.stderr
        assert "Interrupted" not in result.stderr
        assert set_mailbox_changes(place.sim) == Counter()
        (row,) = [r for r in place.audit() if r["operation"] == "BULK_OPERATION" and r["result"] != "started"]
        assert row["error_message"] == "not finished: 2 left to do (Exchange did not answer for them)"


def test_sigkill_while_exchange_creates_a_restore_request_and_an_immediate_resume_leave_one_request(
    tmp_path: Path,
) -> None:
    with site(tmp_path, "a", mailboxes=40) as place:
        sim = place.sim
        source = next(m for m in inactive(sim) if not m.auto_expanding_archive and not m.aux_archive_shards)
        target = next(m for m in sim.exchange.tenant.mailboxes.values() if m.state == ACTIVE)
        plan = write_plan(place.work / "plan.csv", [{"action": "restore", "identity": source.exchange_guid,
                          "target": target.primary_smtp}], ("action", "identity", "target"))  # fmt: skip
        sim.config.faults.slow_seconds = 2.0
        sim.exchange.fail_next("New-MailboxRestoreRequest", "slow")  # still running in Exchange after the kill
        run = place.popen("bulk", "run", str(plan), "--execute", "--yes")
        wait_for(lambda: sim.exchange.in_flight > 0 and any(
            e["cmdlet"] == "Set-Mailbox" for e in list(sim.exchange.request_log)), 60, "the restore call")  # fmt: skip
        time.sleep(0.3)  # inside the slow New-MailboxRestoreRequest
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=30)
        job_id = place.job_id()
        assert sim.exchange.tenant.find_restore_requests() == [] or all(
            r.source_guid != source.exchange_guid for r in sim.exchange.tenant.find_restore_requests()
        )  # not created yet: the killed run's call is still in flight
        resumed = place.imm("bulk", "resume", job_id, "--yes")  # at once: the first call has not finished yet
        assert resumed.exit_code == 0, resumed.stderr
        assert "Waiting " in resumed.stderr and " before checking 1 item(s) whose call may still be in flight" in (
            resumed.stderr
        )
        requests = [r for r in sim.exchange.tenant.find_restore_requests() if r.source_guid == source.exchange_guid]
        name = f"imm-{source.exchange_guid.replace('-', '')[:8]}-{job_id.removeprefix('job-').replace('-', '')}-2"
        assert [r.name for r in requests] == [name]
        # the resume waited for the killed run's call, found its request and did not send another
        assert place.items(job_id)[2]["status"] == "already-done"
        created = [e for e in sim.exchange.request_log if e["cmdlet"] == "New-MailboxRestoreRequest"]
        assert len(created) == 1
        rows = [r for r in place.audit() if r["operation"] == "RESTORE_MAILBOX"]
        assert [r["result"] for r in rows] == ["started", "success"]  # the first attempt, reconciled: made
        assert rows[1]["details"]["reconciled"] is True
        tracked = place.rows("SELECT name FROM restore_requests WHERE source_identity = ?", (source.exchange_guid,))
        assert [r["name"] for r in tracked] == [name]


def test_audit_prune_during_a_running_bulk_job_loses_no_row_and_the_job_ends_cleanly(tmp_path: Path) -> None:
    with site(tmp_path, "a", mailboxes=40, latency_ms=40.0) as place:
        guids = put_on_litigation_hold(place, 16)
        plan = release_plan(place.work / "plan.csv", guids)
        run = place.popen("bulk", "run", str(plan), "--execute", "--yes", *UNDERSTOOD, "--concurrency", "2")

        def some_done() -> bool:
            try:
                return int(place.rows("SELECT COUNT(*) FROM bulk_items WHERE status = 'succeeded'")[0][0]) >= 3
            except sqlite3.OperationalError:
                return False

        wait_for(some_done, 60, "3 items done")
        env = {**place.env, "IMM_AUDIT_MIN_RETENTION_DAYS": "0"}
        pruned = run_imm("audit", "prune", "--retention-days", "0", "--yes", env=env)
        assert pruned.exit_code == 0, pruned.stderr
        assert "Nothing to prune" not in pruned.stdout  # the rows before the job went; the job's stayed
        _, stderr = run.communicate(timeout=180)
        assert run.returncode == 0, stderr
        assert "Traceback" not in stderr and "unexpected" not in stderr
        job_id = place.job_id()
        assert {r["status"] for r in place.items(job_id).values()} == {"succeeded"}
        audit = place.audit()
        assert [r["operation"] for r in audit].count("PRUNE") == 1
        assert audit[0]["operation"] not in ("LOGIN", "SYNC")  # they were older than the job's first row
        job_rows = [r for r in audit if r["details"].get("job_id") == job_id and r["operation"] == "REMOVE_HOLD"]
        pairs = item_pairs(job_rows)
        assert len(pairs) == len(guids)
        assert all(c == Counter({"started": 1, "success": 1}) for c in pairs.values())
        verified = place.imm("audit", "verify")
        assert verified.exit_code == 0, verified.stderr
