"""Four-eyes approval end to end: two admins (two imm homes, each with its own msal token cache and a real device
code sign-in against the simulated Entra ID) share one store, an SQLite file or a PostgreSQL database, and run the
real ``imm`` process. Ground truth: the audit rows of the shared store and the simulated tenant's own state.

Proven here: approving one's own submission is refused (exit 5) and audited; a run before the approval and a run
of a plan edited after the approval are refused and audited; a rejection stops the job; an approved job runs and
changes the tenant; a single change the policy covers is refused with the one-row-plan hint; the identities
compared are the Entra ID object ids (``oid``) of the two accounts.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, make_simulator, run_imm
from imm.config import write_profile
from imm.data.database import DatabaseManager
from imm.simulator import Simulator
from imm.simulator.model import INACTIVE

pytestmark = pytest.mark.slow

ADMIN = "admin@contoso.onmicrosoft.com"
SECOND = "second.admin@contoso.onmicrosoft.com"
UNDERSTOOD = ("--i-understand-last-hold", "--i-understand-unlimited")  # a Litigation Hold added is Unlimited


@dataclass
class Admin:
    home: Path
    upn: str

    def imm(self, *args: str, input: str | None = None) -> CliResult:
        return run_imm(*args, env={"IMM_USER_PATH": str(self.home)}, input=input)


@dataclass
class Team:
    sim: Simulator
    store: str
    first: Admin
    second: Admin

    def audit(self, operations: tuple[str, ...]) -> list[dict[str, Any]]:
        db = DatabaseManager(self.store)
        try:
            marks = ", ".join("?" * len(operations))
            rows = db.get_connection().execute(
                'SELECT operation, identity, "user", result, error_message, details FROM audit_log '
                f"WHERE operation IN ({marks}) ORDER BY id",
                operations,
            )
            return [
                {"operation": r[0], "identity": r[1], "user": r[2], "result": r[3], "error": r[4],
                 "details": json.loads(r[5] or "{}")}
                for r in rows
            ]  # fmt: skip
        finally:
            db.close()


@contextmanager
def team(tmp_path: Path, store: str) -> Iterator[Team]:
    """One simulated tenant, two admins signed in on their own accounts, one shared store (synced once)."""
    with make_simulator(tmp_path, mailboxes=30, auto_approve_after=0.0) as sim:
        sim.identity.add_user(SECOND, "Second Admin")
        admins = []
        for name, upn in (("first", ADMIN), ("second", SECOND)):
            home = tmp_path / name
            where = {"store": store} if store.startswith("postgresql") else {"db_path": store}
            values = {**sim.profile_values(), **where, "approval_required": ["bulk", "unlimited"]}
            write_profile(home / "config" / "config.toml", "sim", values, make_default=True)
            sim.identity.auto_approve_upn = upn  # who signs in on the verification page
            admin = Admin(home, upn)
            login = admin.imm("login")
            assert login.exit_code == 0, login.stderr
            admins.append(admin)
        synced = admins[0].imm("sync")
        assert synced.exit_code == 0, synced.stderr
        yield Team(sim, store, admins[0], admins[1])


def litigation_held(sim: Simulator, count: int) -> list[str]:
    """``count`` inactive mailboxes (by GUID) held by something else too, each given a Litigation Hold: releasing
    it removes no last hold."""
    tenant = sim.exchange.tenant
    with tenant.lock:
        found = sorted(m.exchange_guid for m in tenant.mailboxes.values() if m.state == INACTIVE and m.in_place_holds)
    chosen = found[:count]
    for guid in chosen:
        tenant.add_hold(guid, "LitigationHold")
    return chosen


def write_plan(path: Path, guids: list[str]) -> bytes:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["action", "identity", "type"])
        for guid in guids:
            writer.writerow(["release", guid, "litigation"])
    return path.read_bytes()


def object_id(sim: Simulator, upn: str) -> str:
    return sim.identity.user(upn).oid


def test_a_second_admin_approves_and_only_the_approved_plan_runs(tmp_path: Path, store_target: str) -> None:
    with team(tmp_path, store_target) as t:
        guids = litigation_held(t.sim, 2)
        resynced = t.first.imm("sync")
        assert resynced.exit_code == 0, resynced.stderr
        plan = tmp_path / "plan.csv"
        original = write_plan(plan, guids)
        resolved = str(plan.resolve())

        # the policy covers every executed bulk job: a run without a submission is refused before anything runs
        early = t.first.imm("bulk", "run", str(plan), "--execute", "--yes", *UNDERSTOOD)
        assert early.exit_code == 5, early.stderr
        needs = "(approval_required: bulk, unlimited)"
        assert f"Error: the plan {resolved} needs a second admin's approval {needs}" in early.stderr

        submitted = t.first.imm("bulk", "submit", str(plan))
        assert submitted.exit_code == 0, submitted.stderr
        job = submitted.stdout.strip()
        assert job.startswith("job-")
        assert f"A different admin approves it with: imm bulk approve {job}" in submitted.stderr

        waiting = t.first.imm("bulk", "run", str(plan), "--execute", "--yes", *UNDERSTOOD)
        assert waiting.exit_code == 5
        assert f"Error: job {job} is waiting for a second admin's approval" in waiting.stderr

        own = t.first.imm("bulk", "approve", job, "--yes")
        assert own.exit_code == 5
        assert f"Error: job {job} was submitted by you ({ADMIN}): a different admin must approve it" in own.stderr

        approved = t.second.imm("bulk", "approve", job, "--yes")
        assert approved.exit_code == 0, approved.stderr
        again = t.second.imm("bulk", "approve", job, "--yes")
        assert again.exit_code == 5
        assert f"Error: job {job} was already approved by {SECOND}" in again.stderr

        # one more row after the approval: the plan is not what was approved
        write_plan(plan, [*guids, litigation_held(t.sim, 3)[2]])
        edited = t.first.imm("bulk", "run", str(plan), "--execute", "--yes", *UNDERSTOOD)
        assert edited.exit_code == 5
        assert f"Error: the plan {resolved} changed after job {job} was approved" in edited.stderr
        assert all(t.sim.exchange.tenant.mailboxes[g].litigation_hold for g in guids)  # nothing ran

        plan.write_bytes(original)  # the approved bytes again
        ran = t.first.imm("bulk", "run", str(plan), "--execute", "--yes", *UNDERSTOOD)
        assert ran.exit_code == 0, ran.stderr
        assert f"Job {job}: Running 2 items" in ran.stderr
        assert not any(t.sim.exchange.tenant.mailboxes[g].litigation_hold for g in guids)

        status = t.second.imm("bulk", "status", job, "--output", "json")
        assert json.loads(status.stdout)["job"]["approval"].startswith(f"approved by {SECOND} at ")

        first_oid, second_oid = object_id(t.sim, ADMIN), object_id(t.sim, SECOND)
        assert first_oid != second_oid
        sha = hashlib.sha256(original).hexdigest()
        rows = t.audit(("BULK_SUBMIT", "BULK_APPROVE", "BULK_REJECT", "BULK_OPERATION"))
        shape = [(r["operation"], r["identity"], r["user"], r["result"], r["details"].get("refused")) for r in rows]
        assert shape == [
            ("BULK_OPERATION", resolved, ADMIN, "failure", "not-submitted"),
            ("BULK_SUBMIT", job, ADMIN, "success", None),
            ("BULK_OPERATION", job, ADMIN, "failure", "awaiting-approval"),
            ("BULK_APPROVE", job, ADMIN, "failure", "own-submission"),
            ("BULK_APPROVE", job, SECOND, "success", None),
            ("BULK_OPERATION", job, ADMIN, "failure", "plan-changed"),
            ("BULK_OPERATION", job, ADMIN, "started", None),
            ("BULK_OPERATION", job, ADMIN, "success", None),
        ]
        submit, own_row, approve = rows[1], rows[3], rows[4]
        content = submit["details"]["content_sha256"]
        assert submit["details"] == {
            "job_id": job, "plan_path": resolved, "plan_sha256": sha, "content_sha256": content,
            "items": 2, "actions": {"release": 2}, "consequences": {"unlimited-litigation": 2},
            "needs": ["bulk", "unlimited"], "object_id": first_oid,
        }  # fmt: skip
        decided = {
            "job_id": job, "plan_path": resolved, "plan_sha256": sha, "content_sha256": content,
            "needs": ["bulk", "unlimited"], "submitted_by": ADMIN, "submitted_by_object_id": first_oid,
        }  # fmt: skip
        assert approve["details"] == {**decided, "object_id": second_oid}
        assert own_row["details"] == {**decided, "object_id": first_oid, "refused": "own-submission"}
        assert own_row["error"] == f"job {job} was submitted by you ({ADMIN}): a different admin must approve it"
        verified = t.second.imm("audit", "verify")
        assert verified.exit_code == 0, verified.stderr


def test_a_rejected_job_never_runs_and_single_changes_the_policy_covers_are_refused(
    tmp_path: Path, store_target: str
) -> None:
    with team(tmp_path, store_target) as t:
        guids = litigation_held(t.sim, 1)
        plan = tmp_path / "one.csv"
        write_plan(plan, guids)
        job = t.first.imm("bulk", "submit", str(plan)).stdout.strip()
        rejected = t.second.imm("bulk", "reject", job, "--reason", "not  this one\nplease")
        assert rejected.exit_code == 0, rejected.stderr
        refused = t.first.imm("bulk", "run", str(plan), "--execute", "--yes")
        assert refused.exit_code == 5
        assert f"Error: job {job} was rejected by {SECOND}: not this one please" in refused.stderr
        resumed = t.first.imm("bulk", "resume", job, "--yes")
        assert resumed.exit_code == 5
        assert f"Error: job {job} was rejected by {SECOND}: not this one please" in resumed.stderr
        assert t.sim.exchange.tenant.mailboxes[guids[0]].litigation_hold

        # unlimited is in the policy: releasing an Unlimited Litigation Hold on its own is refused, with the way
        tenant = t.sim.exchange.tenant
        only = litigation_held(t.sim, 2)[1]
        assert t.first.imm("sync").exit_code == 0
        single = t.first.imm("holds", "release", only, "--type", "litigation", "--yes")
        assert single.exit_code == 5, single.stdout + single.stderr
        assert "Error: this release needs a second admin's approval (approval_required: unlimited)" in single.stderr
        assert "imm bulk submit plan.csv" in single.stderr
        assert tenant.mailboxes[only].litigation_hold

        rows = t.audit(("BULK_REJECT", "BULK_RESUME", "REMOVE_HOLD"))
        shape = [(r["operation"], r["identity"], r["user"], r["result"], r["details"].get("refused")) for r in rows]
        assert shape == [
            ("BULK_REJECT", job, SECOND, "success", None),
            ("BULK_RESUME", job, ADMIN, "failure", "rejected"),
            ("REMOVE_HOLD", only, ADMIN, "failure", None),
        ]
        assert rows[0]["details"]["reason"] == "not this one please"
        assert rows[0]["details"]["withdrawn"] is False
        assert rows[0]["details"]["object_id"] == object_id(t.sim, SECOND)
        assert rows[2]["error"] == "this release needs a second admin's approval (approval_required: unlimited)"
