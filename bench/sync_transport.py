"""Transport benchmark for the Exchange client (design §9): many Get-MailboxStatistics calls at a simulated latency
under a per-tenant concurrency budget.

    python bench/sync_transport.py [--calls 10000] [--latency-ms 50] [--budget 10] [--serial-sample 200]
                                   [--workers N]

Prints:
- the serial time, one call at a time. It is EXTRAPOLATED: the mean of ``--serial-sample`` calls made strictly one
  after another over the same warm connection, times ``--calls``;
- imm's bounded-concurrency time: ``--calls`` calls through ``ExchangeClient.map`` (a pool of ``--workers``
  threads, default the budget; every request waits for the client's adaptive limiter, which starts at the budget);
- the theoretical limit, calls x latency / budget, and the ratios (target: within 1.3x of the limit and at least
  8x faster than serial);
- the client's counters (requests, retries, 429s, most requests in flight) and the tenant's most concurrent.

The simulated tenant runs in a child process (as a real tenant would be elsewhere), so its threads do not share the
benchmark's interpreter lock. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ADMIN = "admin@contoso.onmicrosoft.com"


def _serve(conn: Any, options: dict[str, Any]) -> None:
    """Child process: serve the tenant; answer 'setup' / 'token' / 'stats' / 'reset' / 'stop' on the pipe."""
    from imm.simulator import Simulator, SimulatorConfig
    from imm.simulator.model import INACTIVE

    sim = Simulator(SimulatorConfig(**options)).start()
    while True:
        command = conn.recv()
        if command == "setup":
            guids = [m.exchange_guid for m in sim.exchange.tenant.mailboxes.values() if m.state == INACTIVE]
            conn.send((sim.profile_values(), guids))
        elif command == "token":
            conn.send(sim.identity.issue_access_token(ADMIN, sim.base_url))
        elif command == "stats":
            conn.send({"max_in_flight": sim.exchange.max_in_flight, "executed": dict(sim.exchange.executed)})
        elif command == "reset":
            sim.exchange.reset_counters()
            conn.send(True)
        elif command == "stop":
            sim.stop()
            conn.send(True)
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--serial-sample", type=int, default=200)
    parser.add_argument("--workers", type=int, default=None, help="thread pool size (default: the budget)")
    args = parser.parse_args(argv)

    from imm.config import Profile
    from imm.exchange import ExchangeClient
    from imm.exchange.cmdlets import ExchangeOperations

    work = Path(tempfile.mkdtemp(prefix="imm-bench-transport-"))
    options = {
        "mailboxes": args.calls,
        "latency_ms": args.latency_ms,
        "concurrency_budget": args.budget,
        "data_dir": work / "sim",
    }
    context = mp.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(child, options), daemon=True)
    process.start()
    try:
        parent.send("setup")
        values, guids = parent.recv()
        parent.send("token")
        token = parent.recv()
        profile = Profile(
            name="bench",
            tenant_id=values["tenant_id"],
            exchange_url=values["exchange_url"],
            ca_bundle=Path(values["ca_bundle"]),
            concurrency=args.budget,
        )
        calls = (guids * (args.calls // max(1, len(guids)) + 1))[: args.calls]
        print(
            f"simulated tenant: {len(guids):,} inactive mailboxes, {args.latency_ms:g} ms per call, "
            f"{args.budget} concurrent requests allowed; {args.calls:,} Get-MailboxStatistics calls"
        )

        with ExchangeClient.from_profile(profile, lambda force: token, anchor_mailbox=f"UPN:{ADMIN}") as client:
            ops = ExchangeOperations(client)
            ops.get_mailbox_statistics(calls[0])  # warm: TLS handshake, connection in the pool
            sample = calls[: args.serial_sample]
            started = time.perf_counter()
            for guid in sample:
                ops.get_mailbox_statistics(guid)
            per_call = (time.perf_counter() - started) / len(sample)
            serial = per_call * args.calls

        parent.send("reset")
        parent.recv()
        with ExchangeClient.from_profile(profile, lambda force: token, anchor_mailbox=f"UPN:{ADMIN}") as client:
            ops = ExchangeOperations(client)
            failures = 0
            started = time.perf_counter()
            for _, result in client.map(ops.get_mailbox_statistics, calls, workers=args.workers or args.budget):
                if isinstance(result, BaseException):
                    failures += 1
            concurrent = time.perf_counter() - started
            stats = client.stats_snapshot()
        parent.send("stats")
        tenant = parent.recv()

        limit = args.calls * args.latency_ms / 1000 / args.budget
        print(
            f"serial:      {serial:8.2f} s  (extrapolated: {per_call * 1000:.1f} ms a call over "
            f"{len(sample)} calls, x {args.calls:,})"
        )
        print(
            f"imm bounded: {concurrent:8.2f} s  ({args.calls / concurrent:,.0f} calls/s, {failures} failed, "
            f"{stats['requests']:,} requests, {stats['retries']} retries, {stats['throttled']} x 429, "
            f"client max in flight {stats['max_in_flight']}, tenant max in flight {tenant['max_in_flight']})"
        )
        print(f"limit:       {limit:8.2f} s  (calls x latency / {args.budget})")
        print(
            f"ratios:      imm / limit = {concurrent / limit:.2f}x (target <= 1.3x); "
            f"serial / imm = {serial / concurrent:.1f}x (target >= 8x)"
        )
        return 0 if concurrent <= 1.3 * limit and serial / concurrent >= 8 else 1
    finally:
        parent.send("stop")
        parent.recv()
        process.join(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
