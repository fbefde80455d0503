"""Sync benchmark (design §9): 10K inactive mailboxes, 50 ms latency per call, 10 concurrent requests allowed.

    python bench/sync.py [--mailboxes 10000] [--latency-ms 50] [--budget 10] [--serial-sample 200]
                         [--concurrency 10,20,40]

Prints:
- the full sync time against the limit (calls × latency / budget; target: within 1.3x), once per profile
  concurrency in ``--concurrency``: a profile allowing more requests than the tenant's budget must converge to
  the budget (the adaptive limiter), not fall below it. Throttled replies cost the tenant no latency and are left
  out of the limit;
- against the serial one-call-at-a-time baseline (target: 8x faster or better). The serial baseline is
  EXTRAPOLATED: the mean time of ``--serial-sample`` Get-MailboxStatistics calls made one at a time by the same
  client, times the number of calls the full sync made;
- an incremental re-sync with nothing changed against the full sync (target: 20x faster or better);
- an incremental re-sync with the slice refresh on (issue 17): every mailbox last read 8 days ago, so the run
  re-reads the oldest 1/``sync_refresh_days`` (default 7) of them; against the full sync (target: 4x faster or
  better; the ideal is 7x, less the listing every run pays).

The simulated tenant runs in a child process (as a real tenant would be elsewhere), so its threads do not share
the benchmark's interpreter lock. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _serve(conn: Any, options: dict[str, Any]) -> None:
    """Child process: serve the simulated tenant; answer 'counters' / 'reset' / 'stop' on the pipe."""
    from collections import Counter

    from imm.simulator import Simulator, SimulatorConfig

    sim = Simulator(SimulatorConfig(**options)).start()
    conn.send(sim.profile_values())
    while True:
        command = conn.recv()
        if command == "counters":
            conn.send(dict(sim.exchange.executed))
        elif command == "requests":
            conn.send(dict(sim.exchange.counters))
        elif command == "busy":  # seconds the tenant spent answering: their sum over the run time is the mean
            conn.send(sum(float(e.get("duration_ms") or 0) for e in list(sim.exchange.request_log)) / 1000)
        elif command == "statuses":
            conn.send(dict(Counter(str(e.get("status")) for e in list(sim.exchange.request_log))))
        elif command == "reset":
            sim.exchange.reset_counters()
            conn.send(True)
        elif command == "stop":
            sim.stop()
            conn.send(True)
            return


def _sync(
    config_path: Path, profile: str, full: bool, concurrency: int, stats: dict[str, Any] | None = None
) -> tuple[float, Any]:
    from imm.auth import Authenticator
    from imm.config import load_config
    from imm.data.database import DatabaseManager
    from imm.services.sync import SyncService
    from imm.session import SessionManager

    config = load_config(config_path, profile, env={}, overrides={"concurrency": concurrency})
    db = DatabaseManager(config.profile.database_path)
    db.initialize()
    try:
        with SessionManager(config, db, Authenticator.from_profile(config.profile)) as session:
            service = SyncService(db, session.connection, config.profile, session.audit, concurrency=concurrency)
            started = time.perf_counter()
            result = service.run(full=full)
            elapsed = time.perf_counter() - started
            if stats is not None:
                stats.update(session.connection.exchange.stats_snapshot())
            return elapsed, result
    finally:
        db.close()


def _serial_call_time(config_path: Path, profile: str, sample: int) -> float:
    """Mean seconds per Get-MailboxStatistics call made strictly one at a time (concurrency 1)."""
    from imm.auth import Authenticator
    from imm.config import load_config
    from imm.data.database import DatabaseManager
    from imm.session import SessionManager

    config = load_config(config_path, profile, env={}, overrides={"concurrency": 1})
    db = DatabaseManager(config.profile.database_path)
    db.initialize()
    try:
        guids = [m.identity for m in db.get_all_mailboxes()[:sample]]
        with SessionManager(config, db, Authenticator.from_profile(config.profile)) as session:
            ops = session.connection
            ops.get_mailbox_statistics(guids[0])  # warm the connection
            started = time.perf_counter()
            for guid in guids:
                ops.get_mailbox_statistics(guid)
            return (time.perf_counter() - started) / len(guids)
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--serial-sample", type=int, default=200)
    parser.add_argument("--concurrency", default="10,20,40", help="profile concurrencies to run the full sync with")
    parser.add_argument(
        "--throttle-status", type=int, default=429, help="status of over-budget replies (400: the plain message)"
    )
    parser.add_argument("--skip-baselines", action="store_true", help="only the full sync ratios")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]

    from imm.config import write_profile

    work = Path(tempfile.mkdtemp(prefix="imm-bench-sync-"))
    options = {
        "mailboxes": args.mailboxes,
        "latency_ms": args.latency_ms,
        "concurrency_budget": args.budget,
        "throttle_status": args.throttle_status,
        "auto_approve_after": 0.0,
        "token_lifetime": 3600,
        "data_dir": work / "sim",
    }
    parent, child = mp.get_context("spawn").Pipe()
    process = mp.get_context("spawn").Process(target=_serve, args=(child, options), daemon=True)
    process.start()
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
            f"simulated tenant: {args.mailboxes:,} inactive mailboxes, {args.latency_ms:g} ms per call, "
            f"{args.budget} concurrent requests allowed, over-budget replies HTTP {args.throttle_status} "
            f"(work dir {work})"
        )

        ratios: dict[int, float] = {}
        full_time, full, calls = 0.0, None, 0
        for concurrency in concurrencies:
            parent.send("reset")
            parent.recv()
            stats: dict[str, Any] = {}
            run_time, run = _sync(config_path, "bench", True, concurrency, stats)
            parent.send("counters")
            cmdlets = sum(parent.recv().values())
            parent.send("statuses")
            statuses = parent.recv()
            answered = sum(statuses.values())
            refused = sum(n for status, n in statuses.items() if status not in ("200", "reset"))
            worked = answered - refused  # a throttled reply costs the tenant no latency
            parent.send("busy")
            mean_in_flight = parent.recv() / run_time
            limit = worked * args.latency_ms / 1000 / args.budget
            ratios[concurrency] = run_time / limit
            print(
                f"full sync, profile concurrency {concurrency:>3}: {run_time:8.2f} s  {run.fetched:,} mailboxes, "
                f"{worked:,} requests ({cmdlets:,} cmdlet calls + listing pages), {refused:,} refused "
                f"{ {k: v for k, v in statuses.items() if k != '200'} }, {run.errors} errors"
            )
            print(
                f"   limiter: max in flight {stats.get('max_in_flight')}, final limit {stats.get('limit')}, "
                f"lowest {stats.get('min_limit')}, {stats.get('limit_decreases')} decreases; the tenant had "
                f"{mean_in_flight:.1f} requests in flight on average of the {args.budget} allowed"
            )
            print(
                f"   limit:   {limit:8.2f} s  (requests x latency / {args.budget})  ratio {ratios[concurrency]:.2f}x "
                "(target <= 1.3x)"
            )
            if concurrency == args.budget or full is None:
                full_time, full, calls = run_time, run, worked
        assert full is not None
        print(f"                  phases (s): {full.phases}")
        if args.skip_baselines:
            ok = all(r <= 1.3 for r in ratios.values())
            print("targets:", "met" if ok else "MISSED")
            return 0 if ok else 1

        per_call = _serial_call_time(config_path, "bench", args.serial_sample)
        serial = per_call * calls
        print(
            f"serial baseline:  {serial:8.2f} s  EXTRAPOLATED: {per_call * 1000:.1f} ms per call measured over "
            f"{args.serial_sample} sequential Get-MailboxStatistics calls x {calls:,} requests"
        )
        print(f"                              full sync is {serial / full_time:.1f}x faster (target >= 8x)")

        parent.send("reset")
        parent.recv()
        inc_time, inc = _sync(config_path, "bench", False, args.budget)
        parent.send("requests")
        inc_calls = sum(parent.recv().values())
        print(f"                  phases (s): {inc.phases}")
        print(
            f"incremental sync: {inc_time:8.2f} s  nothing changed: {inc.unchanged:,} unchanged, "
            f"{inc.fetched} fetched, {inc_calls} requests; full/incremental {full_time / inc_time:.1f}x "
            f"(target >= 20x)"
        )
        import sqlite3

        conn = sqlite3.connect(work / "imm.db")
        with conn:
            conn.execute("DELETE FROM meta WHERE key = 'analysis_key'")  # as on the first sync of a new day
        conn.close()
        day_time, day = _sync(config_path, "bench", False, args.budget)
        print(
            f"incremental sync, analysis inputs changed (a new day): {day_time:.2f} s "
            f"({day.reanalysed:,} cached mailboxes re-analysed, {day.fetched} fetched; informational)"
        )
        # The slice refresh: the whole cache read 8 days ago, so this run re-reads the oldest 1/7 of it.
        from datetime import UTC, datetime, timedelta

        old = (datetime.now(UTC) - timedelta(days=8)).isoformat(timespec="microseconds")
        conn = sqlite3.connect(work / "imm.db")
        with conn:
            conn.execute("UPDATE inactive_mailboxes SET last_updated = ?", (old,))
        conn.close()
        parent.send("reset")
        parent.recv()
        refresh_time, refresh = _sync(config_path, "bench", False, args.budget)
        parent.send("requests")
        refresh_calls = sum(parent.recv().values())
        refresh_ratio = full_time / refresh_time
        ideal = refresh.listed / max(1, refresh.refreshed)
        print(
            f"incremental sync, slice refresh on (all read 8 days ago): {refresh_time:.2f} s  {refresh.refreshed:,} "
            f"re-read of {refresh.listed:,} ({refresh.refreshed / max(1, refresh.listed):.1%}), {refresh_calls} "
            f"requests; full/incremental {refresh_ratio:.1f}x (ideal {ideal:.1f}x; "
            "target >= 4x)"
        )
        ok = (
            all(r <= 1.3 for r in ratios.values())
            and serial / full_time >= 8
            and full_time / inc_time >= 20
            and refresh_ratio >= 4
        )
        print("targets:", "met" if ok else "MISSED")
        return 0 if ok else 1
    finally:
        parent.send("stop")
        try:
            parent.recv()
        except EOFError:
            pass
        process.join(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
