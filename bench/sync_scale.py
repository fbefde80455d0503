"""Sync at scale (issue 18): ``imm sync --full`` then ``imm sync`` as whole processes against a large simulated
tenant. Not part of the test suite.

    python bench/sync_scale.py [--mailboxes 100000] [--latency-ms 50] [--budget 20] [--concurrency 20]
        [--incremental-latency-ms 20]

The simulated tenant runs in a child process (it shares the machine's cores with imm: the figures say how much
CPU each used). Per run: wall time, imm's peak RSS and CPU seconds (``wait4``), the requests the tenant answered,
and the bound of the full sync in the same run: requests × latency / budget (a throttled reply costs the tenant
no latency and is left out). Figures: full sync against the bound (target <= 1.3x), imm's CPU per request
(target <= 1.05 ms, half the 2.1 ms measured before), peak RSS of the full sync (target < 300 MB) and the
incremental sync with nothing changed (target < 5 s).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _serve(conn: Any, options: dict[str, Any]) -> None:
    """Child process: serve the tenant; answer 'statuses' / 'reset' / 'cpu' / 'stop' on the pipe."""
    import resource

    from imm.simulator import Simulator, SimulatorConfig

    started = time.perf_counter()
    sim = Simulator(SimulatorConfig(**options)).start()
    conn.send((sim.profile_values(), time.perf_counter() - started))
    while True:
        command = conn.recv()
        if command == "statuses":
            conn.send(dict(sim.exchange.statuses))  # every reply (the request log keeps the last 100,000)
        elif command == "counters":
            conn.send(dict(sim.exchange.counters))  # requests per cmdlet
        elif command == "reset":
            sim.exchange.reset_counters()
            conn.send(True)
        elif isinstance(command, tuple) and command[0] == "latency":  # every call from now on
            sim.exchange.config.latency_ms = float(command[1])
            conn.send(True)
        elif command == "cpu":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            conn.send(usage.ru_utime + usage.ru_stime)
        elif command == "stop":
            sim.stop()
            conn.send(True)
            return


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(seconds, peak RSS MB, CPU seconds, output) of one whole ``imm`` process."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "imm", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"imm {' '.join(args)} failed ({proc.returncode}): {err.decode()[-800:]}")
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, (out + err).decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=20, help="the profile's concurrency")
    parser.add_argument(
        "--incremental-latency-ms",
        type=float,
        action="append",
        default=[],
        help="also run the incremental sync at this latency (repeatable; the listing's pages follow one another, so "
        "its floor is pages x latency)",
    )
    args = parser.parse_args(argv)

    from imm.config import write_profile

    work = Path(tempfile.mkdtemp(prefix="imm-bench-sync-scale-"))
    options = {
        "mailboxes": args.mailboxes,
        "latency_ms": args.latency_ms,
        "concurrency_budget": args.budget,
        "auto_approve_after": 0.0,
        "token_lifetime": 3600,
        "data_dir": work / "sim",
    }
    parent, child = mp.get_context("spawn").Pipe()
    process = mp.get_context("spawn").Process(target=_serve, args=(child, options), daemon=True)
    process.start()
    try:
        values, startup = parent.recv()
        home = work / "home"
        config = home / "config" / "config.toml"
        values = {**values, "db_path": work / "imm.db", "token_cache_path": work / "tokens.json"}
        write_profile(config, "bench", {**values, "concurrency": args.concurrency}, make_default=True)
        env = {**os.environ, "IMM_USER_PATH": str(home), "IMM_CONFIG": str(config)}
        print(
            f"simulated tenant: {args.mailboxes:,} inactive mailboxes (built in {startup:.0f} s), "
            f"{args.latency_ms:g} ms per call, budget {args.budget}; profile concurrency {args.concurrency}; "
            f"{os.cpu_count()} CPUs shared by imm, the tenant and whatever else runs (work dir {work})",
            flush=True,
        )
        _run(["login"], env)
        runs = [("full", ["--full"], args.latency_ms), ("incremental", [], args.latency_ms)]
        runs += [("incremental", [], latency) for latency in args.incremental_latency_ms]
        for mode, flags, latency in runs:
            parent.send(("latency", latency))
            parent.recv()
            parent.send("reset")
            parent.recv()
            parent.send("cpu")
            tenant_cpu = parent.recv()
            seconds, rss, cpu, _ = _run(["sync", "-q", *flags], env)
            parent.send("cpu")
            tenant_cpu = parent.recv() - tenant_cpu
            parent.send("statuses")
            statuses = parent.recv()
            answered = sum(statuses.values())
            worked = answered - sum(n for s, n in statuses.items() if s not in ("200", "reset"))
            bound = worked * args.latency_ms / 1000 / args.budget
            label = mode + " sync" + ("" if latency == args.latency_ms else f" at {latency:g} ms")
            print(
                f"{label:<17} {seconds:8.2f} s  peak RSS {rss:6.0f} MB  imm CPU {cpu:7.2f} s "
                f"({cpu / max(worked, 1) * 1000:.2f} ms a request)  tenant CPU {tenant_cpu:7.2f} s  "
                f"{worked:,} requests {statuses}",
                flush=True,
            )
            if mode == "full":
                print(f"   bound {bound:8.2f} s (requests x latency / budget): ratio {seconds / bound:.2f}x (<= 1.3)")
            else:
                parent.send("counters")
                pages = parent.recv().get("Get-Mailbox", 0)
                print(
                    f"   target: under 5 s; the {pages} Get-Mailbox pages come one after another: "
                    f"{pages * latency / 1000:.2f} s of latency alone"
                )
        return 0
    finally:
        parent.send("stop")
        try:
            parent.recv()
        except EOFError:
            pass
        process.join(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
