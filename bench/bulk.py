"""Bulk benchmark: 1,000 hold releases as one bulk job, 50 ms latency per call, 10 concurrent requests allowed.

    python bench/bulk.py [--items 1000] [--latency-ms 50] [--budget 10] [--serial-sample 50]

Prints:
- the bulk job's time against the limit (requests x latency / budget): what the tenant's budget allows at best for
  the requests the job made;
- against the serial one-item-at-a-time baseline. The serial baseline is EXTRAPOLATED: ``--serial-sample`` other
  releases are run as a bulk job with concurrency 1 and their mean time per item is multiplied by ``--items``.

Each release is a whole item as ``imm bulk run --execute`` does it: journal writes, the preflight refresh
(Get-Mailbox), the write-ahead audit pair, Set-Mailbox -LitigationHoldEnabled $false, and the read-back that keeps
the cache in step. The simulated tenant runs in a child process (as a real tenant would be elsewhere), so its
threads do not share the benchmark's interpreter lock. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _serve(conn: Any, options: dict[str, Any]) -> None:
    """Child process: serve the simulated tenant; answer commands on the pipe."""
    from imm.simulator import Simulator, SimulatorConfig
    from imm.simulator.model import INACTIVE

    sim = Simulator(SimulatorConfig(**options)).start()
    conn.send(sim.profile_values())
    tenant = sim.exchange.tenant
    while True:
        command, argument = conn.recv()
        if command == "hold":  # the first N inactive mailboxes (by GUID) on Litigation Hold
            with tenant.lock:
                guids = sorted(g for g, m in tenant.mailboxes.items() if m.state == INACTIVE)[:argument]
            for guid in guids:
                if not tenant.mailboxes[guid].litigation_hold:
                    tenant.add_hold(guid, "LitigationHold")
            conn.send(guids)
        elif command == "requests":
            conn.send(dict(sim.exchange.counters))
        elif command == "released":
            conn.send(sum(1 for g in argument if not tenant.mailboxes[g].litigation_hold))
        elif command == "reset":
            sim.exchange.reset_counters()
            conn.send(True)
        elif command == "stop":
            sim.stop()
            conn.send(True)
            return


def _write_plan(path: Path, guids: list[str]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["action", "identity", "type"])
        writer.writerows(["release", guid, "litigation"] for guid in guids)
    return path


def _session(config_path: Path, concurrency: int) -> tuple[Any, Any, Any]:
    from imm.auth import Authenticator
    from imm.config import load_config
    from imm.data.database import DatabaseManager
    from imm.session import SessionManager

    config = load_config(config_path, "bench", env={}, overrides={"concurrency": concurrency})
    db = DatabaseManager(config.profile.database_path)
    db.initialize()
    return config, db, SessionManager(config, db, Authenticator.from_profile(config.profile))


def _sync(config_path: Path) -> None:
    from imm.services.sync import SyncService

    config, db, session = _session(config_path, 10)
    try:
        with session:
            SyncService(db, session.connection, config.profile, session.audit, concurrency=10).run(full=True)
    finally:
        db.close()


def _bulk(config_path: Path, plan_path: Path, concurrency: int) -> tuple[float, Any]:
    """Run the plan as an executed bulk job; (seconds, outcome)."""
    from imm.services.actions import MailboxActions
    from imm.services.bulk import BulkEngine
    from imm.services.bulk_plan import read_plan

    config, db, session = _session(config_path, concurrency)
    try:
        with session:
            engine = BulkEngine(db, session.audit)
            plan = read_plan(plan_path, db)
            job = engine.create_job(plan, mode="execute", concurrency=concurrency, user=session.user)

            def factory() -> MailboxActions:
                return MailboxActions(db, session.connection, session.audit, config.profile)

            started = time.perf_counter()
            outcome = engine.run(job.id, factory, concurrency=concurrency)
            return time.perf_counter() - started, outcome
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--serial-sample", type=int, default=50)
    args = parser.parse_args(argv)

    from imm.config import write_profile

    work = Path(tempfile.mkdtemp(prefix="imm-bench-bulk-"))
    total = args.items + args.serial_sample
    options = {
        "mailboxes": total,
        "latency_ms": args.latency_ms,
        "concurrency_budget": args.budget,
        "auto_approve_after": 0.0,
        "token_lifetime": 3600,
        "data_dir": work / "sim",
    }
    context = mp.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(child, options), daemon=True)
    process.start()

    def ask(command: str, argument: Any = None) -> Any:
        parent.send((command, argument))
        return parent.recv()

    try:
        values = parent.recv()
        config_path = work / "config.toml"
        write_profile(
            config_path,
            "bench",
            {**values, "db_path": work / "imm.db", "token_cache_path": work / "tokens.json"},
            make_default=True,
        )
        print(
            f"simulated tenant: {total:,} inactive mailboxes, {args.latency_ms:g} ms per call, "
            f"{args.budget} concurrent requests allowed (work dir {work})"
        )
        guids = ask("hold", total)
        started = time.perf_counter()
        _sync(config_path)
        print(f"setup: {total:,} mailboxes on Litigation Hold, synced in {time.perf_counter() - started:.1f} s")
        bulk_plan = _write_plan(work / "bulk.csv", guids[: args.items])
        sample_plan = _write_plan(work / "sample.csv", guids[args.items :])

        ask("reset")
        bulk_time, outcome = _bulk(config_path, bulk_plan, args.budget)
        requests = sum(ask("requests").values())
        released = ask("released", guids[: args.items])
        limit = requests * args.latency_ms / 1000 / args.budget
        print(
            f"bulk job:         {bulk_time:8.2f} s  {args.items:,} releases ({released:,} released in the tenant; "
            f"items: {outcome.counts}), {requests:,} requests ({requests / args.items:.2f} per item)"
        )
        print(
            f"limit:            {limit:8.2f} s  (requests x latency / {args.budget})  "
            f"ratio {bulk_time / limit:.2f}x of the limit"
        )

        ask("reset")
        sample_time, sample = _bulk(config_path, sample_plan, 1)
        sample_requests = sum(ask("requests").values())
        per_item = sample_time / args.serial_sample
        serial = per_item * args.items
        print(
            f"serial baseline:  {serial:8.2f} s  EXTRAPOLATED: {per_item * 1000:.0f} ms per release measured over "
            f"{args.serial_sample} releases run one at a time ({sample_requests / args.serial_sample:.2f} requests "
            f"per item; items: {sample.counts}) x {args.items:,}"
        )
        print(f"                              the bulk job is {serial / bulk_time:.1f}x faster than serial")
        return 0
    finally:
        try:
            ask("stop")
        except (EOFError, OSError):
            pass
        process.join(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
