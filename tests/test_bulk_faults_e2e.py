"""A mixed bulk job under every fault a connection to Exchange Online has, against the same job run clean.

Two simulated tenants with one seed (so the same mailboxes); the same plan of releases, set-durations, restores
and recovers runs on both: clean on one, on the other under 429s, 5xx, resets before the cmdlet runs, resets
after it ran (the change is made, its reply lost) and slow replies. The faulted run must end with the tenant
exactly as the clean run leaves it, every item audited with its true result (confirmed after a lost reply where
that happened), no creating call (New-Mailbox, New-MailboxRestoreRequest) run twice, and no Set-Mailbox run again
once it took effect (a lost reply is read back, not resent blindly).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from imm.simulator import FaultConfig, Simulator
from imm.simulator.model import ACTIVE
from test_bulk_e2e import UNDERSTOOD, Site, hold_state, inactive, item_pairs, site, write_plan

pytestmark = pytest.mark.slow

CREATING = ("New-Mailbox", "New-MailboxRestoreRequest")
COLUMNS = ("action", "identity", "type", "days", "upn", "name", "target")


def _plain(mbx: Any) -> bool:
    return not (
        mbx.auto_expanding_archive
        or mbx.aux_archive_shards
        or mbx.aux_primary_shards
        or mbx.external_directory_object_id
        or any(h.lower().startswith("unih") for h in mbx.in_place_holds)
    )


def _prepare(place: Site) -> list[dict[str, Any]]:
    """The plan's rows for this tenant (the same on both: one seed), each mailbox in one row only: 8 recovers,
    8 restores (each into its own active target), set-durations for mailboxes whose Litigation Hold has a
    duration, and a litigation release for the rest (each given a Litigation Hold first)."""
    sim = place.sim
    tenant = sim.exchange.tenant
    mailboxes = inactive(sim)
    plain = [m for m in mailboxes if _plain(m)]
    recover, restore = plain[:8], plain[8:16]
    used = {m.exchange_guid for m in plain[:16]}
    with tenant.lock:
        targets = sorted((m for m in tenant.mailboxes.values() if m.state == ACTIVE), key=lambda m: m.exchange_guid)
    rest = [m for m in mailboxes if m.exchange_guid not in used][:180]
    durations = [m for m in rest if m.litigation_hold and m.litigation_hold_duration not in (None, 3650)][:40]
    releases = [m for m in rest if m not in durations]
    for mbx in releases:
        if not mbx.litigation_hold:
            tenant.add_hold(mbx.exchange_guid, "LitigationHold")
    synced = place.imm("sync")
    assert synced.exit_code == 0, synced.stderr
    domain = sim.config.tenant_domain
    rows: list[dict[str, Any]] = []
    rows += [{"action": "recover", "identity": m.exchange_guid, "upn": f"back.{m.alias}@{domain}",
              "name": f"{m.name}-back"} for m in recover]  # fmt: skip
    for mbx in restore:  # a target of its own with room for the content
        target = next(t for t in targets if t.quota_bytes - t.total_bytes > 2 * (mbx.total_bytes + mbx.deleted_bytes))
        targets.remove(target)
        rows.append({"action": "restore", "identity": mbx.exchange_guid, "target": target.primary_smtp})
    rows += [{"action": "set-duration", "identity": m.exchange_guid, "days": "3650"} for m in durations]
    rows += [{"action": "release", "identity": m.exchange_guid, "type": "litigation"} for m in releases]
    return rows


def _ran(sim: Simulator, cmdlet: str) -> Counter[str]:
    """Per identity: how many calls of ``cmdlet`` the tenant really ran (answered, or reset after it ran)."""
    key = {"New-Mailbox": "InactiveMailbox", "New-MailboxRestoreRequest": "SourceMailbox"}.get(cmdlet, "Identity")
    counts: Counter[str] = Counter()
    for entry in list(sim.exchange.request_log):
        if entry["cmdlet"] != cmdlet:
            continue
        ran = entry["fault"] == "reset_after_commit" or (
            entry["status"] == 200 and entry["fault"] in (None, "slow", "pass")
        )
        if ran:
            counts[str(entry["parameters"][key]).lower()] += 1
    return counts


def _tenant_state(sim: Simulator) -> tuple[Any, ...]:
    """What the job changes: the hold state of every mailbox, the active mailboxes (recovered ones included),
    every target's addresses (restore adds an X500), and the restore requests by source and target."""
    tenant = sim.exchange.tenant
    with tenant.lock:
        active = sorted(m.upn for m in tenant.mailboxes.values() if m.state == ACTIVE)
        addresses = {g: sorted(m.extra_addresses) for g, m in tenant.mailboxes.items() if m.state == ACTIVE}
    requests = sorted((r.source_guid, r.target_guid) for r in tenant.find_restore_requests())
    return hold_state(sim), active, addresses, requests


def _items(place: Site) -> Iterator[tuple[int, str]]:
    job_id = place.job_id()
    for line, row in sorted(place.items(job_id).items()):
        yield line, row["status"]


def test_a_mixed_job_under_resets_after_the_change_5xx_429s_and_slow_replies_ends_as_a_clean_run(
    tmp_path: Path,
) -> None:
    options = {"mailboxes": 260, "latency_ms": 2.0, "seed": 11, "concurrency_budget": 6}
    with ExitStack() as stack:
        clean = stack.enter_context(site(tmp_path, "clean", **options))
        faulty = stack.enter_context(site(tmp_path, "faulty", **options))
        plans = {}
        for place in (clean, faulty):
            rows = _prepare(place)
            plans[place.work] = write_plan(place.work / "plan.csv", rows, COLUMNS)
            place.sim.exchange.reset_counters()
        assert plans[clean.work].read_text() == plans[faulty.work].read_text()
        assert _tenant_state(clean.sim) == _tenant_state(faulty.sim)
        count = len(rows)
        assert 180 <= count <= 220
        args = ("--execute", "--yes", *UNDERSTOOD, "--concurrency", "8")

        def run(place: Site) -> None:
            passwords = place.work / "passwords.csv"
            result = place.imm("bulk", "run", str(plans[place.work]), *args, "--passwords-out", str(passwords),
                               timeout=300)  # fmt: skip
            assert result.exit_code == 0, result.stderr[-3000:]
            assert f"): {count:,} succeeded in " in result.stderr

        run(clean)

        sim = faulty.sim
        sim.config.retry_after_seconds = 0.02
        sim.config.faults = FaultConfig(
            throttle_rate=0.03,
            error_5xx_rate=0.02,
            reset_rate=0.02,
            reset_after_commit_rate=0.08,
            slow_rate=0.03,
            slow_seconds=0.3,
        )
        # at least one lost reply of each change this job makes, whatever the dice say
        for cmdlet in (*CREATING, "Set-Mailbox"):
            sim.exchange.fail_next(cmdlet, "reset_after_commit")
        sim.exchange.fail_next("Set-Mailbox", "503")
        run(faulty)
        sim.config.faults = FaultConfig()

        log = list(sim.exchange.request_log)
        faults = Counter(e["fault"] for e in log if e["fault"] not in (None, "pass"))
        assert all(faults[kind] > 0 for kind in ("429", "reset", "reset_after_commit", "slow")), faults
        assert faults["503"] + faults["504"] > 0, faults
        lost = Counter(e["cmdlet"] for e in log if e["fault"] == "reset_after_commit")
        assert all(lost[c] > 0 for c in (*CREATING, "Set-Mailbox")), lost

        # the tenant: as the clean run left it
        assert _tenant_state(faulty.sim) == _tenant_state(clean.sim)
        # no creating call run twice; each change made once, as in the clean run (a lost reply is read back)
        for cmdlet in (*CREATING, "Set-Mailbox"):
            assert _ran(faulty.sim, cmdlet) == _ran(clean.sim, cmdlet), cmdlet
        assert set(_ran(faulty.sim, "Set-Mailbox").values()) == {1}

        # the journal and the audit: every item succeeded once, one started + one success row each
        assert dict(_items(faulty)) == dict(_items(clean)) == dict.fromkeys(range(2, count + 2), "succeeded")
        audit = faulty.audit()
        pairs = item_pairs(audit)
        assert len(pairs) == count
        assert all(c == Counter({"started": 1, "success": 1}) for c in pairs.values()), [
            c for c in pairs.values() if c != Counter({"started": 1, "success": 1})
        ]
        confirmed = [r for r in audit if r["result"] == "success" and (
            r["details"].get("confirmed_after_lost_reply") or r["details"].get("reconciled"))]  # fmt: skip
        assert confirmed  # the lost replies were confirmed by reading Exchange, and say so
        verify = faulty.imm("audit", "verify")
        assert verify.exit_code == 0, verify.stderr
