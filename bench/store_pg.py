"""Team store benchmark (issue 16): PostgreSQL against its own baselines and against SQLite. Not part of the suite.

    python bench/store_pg.py [--sizes 10000,100000] [--mailboxes 10000] [--latency-ms 0] [--skip-sync]

- Upsert: ``DatabaseManager.upsert_mailboxes`` of N realistic mailboxes (in calls of 50,000, as a sync's batches
  are smaller still) into a fresh migrated PostgreSQL database, against psycopg's plain ``COPY`` and plain
  ``executemany`` (an INSERT per row, psycopg 3's pipelined executemany) of the same rows, already converted to
  tuples, into a plain table with the same columns, types and primary key, each in one transaction
  (target: <= 3x of each). Sizes up to 20,000 take the best of three runs. Then the same upsert again (a re-sync,
  informational).
- Sync: a full sync of ``--mailboxes`` against the simulated tenant (in a child process, as a real tenant would
  be elsewhere) into an SQLite file and into a PostgreSQL database, the same tenant and settings, after one
  untimed sync (sign-in, warm caches); best of ``--repeat`` runs each, alternating which goes first (target:
  PostgreSQL within 1.2x of SQLite). ``--latency-ms 0`` (the
  default) leaves only imm's own work and the store's, where a difference between the stores shows most.

The PostgreSQL server is the tests' throwaway cluster (tests/pgserver.py: a Unix socket, fsync off); the SQLite
file uses imm's own pragmas (WAL, synchronous NORMAL). Both run on this machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the realistic record factory and the throwaway cluster
sys.path.insert(0, str(ROOT / "bench"))

from factories import make_mailboxes  # noqa: E402
from imm.data.database import COLUMNS, DatabaseManager, mailbox_to_row  # noqa: E402
from pgserver import PgCluster  # noqa: E402

BATCH = 50_000


# -------------------------------------------------------------------------------------------------- upsert
def _plain_table(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS plain")
        conn.execute("CREATE TABLE plain (LIKE inactive_mailboxes INCLUDING DEFAULTS)")
        conn.execute("ALTER TABLE plain DROP COLUMN rowid, ADD PRIMARY KEY (identity)")


def _connect(url: str) -> Any:
    """A plain psycopg connection that sends Python booleans as imm stores them (0/1), as imm's connections do."""
    import psycopg

    from imm.data.postgres import _configure

    conn = psycopg.connect(url)
    _configure(conn)
    return conn


def _copy(url: str, rows: list[tuple[Any, ...]]) -> float:
    _plain_table(url)
    names = ", ".join(COLUMNS)
    with _connect(url) as conn:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy(f"COPY plain ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return time.perf_counter() - started


def _executemany(url: str, rows: list[tuple[Any, ...]]) -> float:
    _plain_table(url)
    sql = f"INSERT INTO plain ({', '.join(COLUMNS)}) VALUES ({', '.join('%s' for _ in COLUMNS)})"
    with _connect(url) as conn:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(sql, rows)  # type: ignore[arg-type]
        return time.perf_counter() - started


def _upsert(url: str, mailboxes: list[Any]) -> tuple[float, float]:
    db = DatabaseManager(url)
    db.initialize()
    try:
        db.get_connection()  # the pool opened, as a sync's first batch finds it
        started = time.perf_counter()
        for start in range(0, len(mailboxes), BATCH):
            db.upsert_mailboxes(mailboxes[start : start + BATCH])
        first = time.perf_counter() - started
        started = time.perf_counter()
        for start in range(0, len(mailboxes), BATCH):
            db.upsert_mailboxes(mailboxes[start : start + BATCH])
        return first, time.perf_counter() - started
    finally:
        db.close()


def upsert_size(cluster: PgCluster, size: int) -> dict[str, float]:
    mailboxes = make_mailboxes(size, seed=1000)
    rows = [mailbox_to_row(m) for m in mailboxes]
    best: dict[str, float] = {}
    for _ in range(3 if size <= 20_000 else 1):
        url = cluster.new_database()
        try:
            upsert_s, resync_s = _upsert(url, mailboxes)
            measured = {
                "upsert_s": upsert_s,
                "resync_s": resync_s,
                "copy_s": _copy(url, rows),
                "executemany_s": _executemany(url, rows),
            }
        finally:
            cluster.drop_database(url)
        for key, value in measured.items():
            best[key] = min(best.get(key, value), value)
    return best


# ---------------------------------------------------------------------------------------------------- sync
def _sync(config_path: Path, profile: str) -> tuple[float, Any]:
    from imm.auth import Authenticator
    from imm.config import load_config
    from imm.services.sync import SyncService
    from imm.session import SessionManager

    config = load_config(config_path, profile, env={})
    db = DatabaseManager(config.profile.store_target, local_path=config.profile.database_path)
    db.initialize()
    try:
        with SessionManager(config, db, Authenticator.from_profile(config.profile)) as session:
            service = SyncService(db, session.connection, config.profile, session.audit)
            started = time.perf_counter()
            result = service.run(full=True)
            return time.perf_counter() - started, result
    finally:
        db.close()


def sync_both(cluster: PgCluster, mailboxes: int, latency_ms: float, budget: int, repeat: int) -> dict[str, Any]:
    from sync import _serve

    from imm.config import write_profile

    work = Path(tempfile.mkdtemp(prefix="imm-bench-store-"))
    options = {
        "mailboxes": mailboxes,
        "latency_ms": latency_ms,
        "concurrency_budget": budget,
        "auto_approve_after": 0.0,
        "token_lifetime": 3600,
        "data_dir": work / "sim",
    }
    parent, child = mp.get_context("spawn").Pipe()
    process = mp.get_context("spawn").Process(target=_serve, args=(child, options), daemon=True)
    process.start()
    times: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    fetched: dict[str, int] = {}
    phases: dict[str, Any] = {}
    try:
        values = parent.recv()
        config_path = work / "config.toml"
        common = {**values, "token_cache_path": work / "tokens.json"}
        # untimed: the first sync signs in and warms the tenant's caches
        write_profile(config_path, "warm-up", {**common, "db_path": work / "warm-up.db"}, make_default=True)
        _sync(config_path, "warm-up")
        for attempt in range(repeat):
            db_file = work / f"imm-{attempt}.db"
            url = cluster.new_database()
            write_profile(config_path, "sqlite", {**common, "db_path": db_file}, make_default=True)
            write_profile(config_path, "postgresql", {**common, "db_path": work / "pg-side.db", "store": url})
            for name in ("sqlite", "postgresql") if attempt % 2 == 0 else ("postgresql", "sqlite"):
                elapsed, result = _sync(config_path, name)
                times[name].append(elapsed)
                fetched[name] = int(result.fetched)
                phases[name] = result.phases
            cluster.drop_database(url)
    finally:
        parent.send("stop")
        parent.recv()
        process.join(10)
    return {"times": times, "fetched": fetched, "phases": phases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-sync", action="store_true")
    args = parser.parse_args(argv)

    cluster = PgCluster().start()
    ok = True
    try:
        version = cluster_version(cluster)
        print(f"PostgreSQL {version} (throwaway cluster, Unix socket, fsync off); psycopg {psycopg_version()}")
        for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
            r = upsert_size(cluster, size)
            vs_copy, vs_many = r["upsert_s"] / r["copy_s"], r["upsert_s"] / r["executemany_s"]
            met = vs_copy <= 3 and vs_many <= 3
            ok = ok and met
            print(
                f"upsert {size:>7,} rows: imm {r['upsert_s']:7.2f} s ({size / r['upsert_s']:8,.0f} rows/s)  "
                f"COPY {r['copy_s']:6.2f} s -> {vs_copy:.2f}x  executemany {r['executemany_s']:6.2f} s -> "
                f"{vs_many:.2f}x  (target <= 3x: {'met' if met else 'MISSED'}); re-sync upsert {r['resync_s']:.2f} s"
            )
        if not args.skip_sync:
            s = sync_both(cluster, args.mailboxes, args.latency_ms, args.budget, args.repeat)
            lite, pg = min(s["times"]["sqlite"]), min(s["times"]["postgresql"])
            met = pg / lite <= 1.2
            ok = ok and met
            print(
                f"full sync of {args.mailboxes:,} mailboxes ({args.latency_ms:g} ms per call, budget {args.budget}), "
                f"best of {args.repeat}: SQLite {lite:.2f} s {s['times']['sqlite']}, PostgreSQL {pg:.2f} s "
                f"{s['times']['postgresql']} -> {pg / lite:.2f}x (target <= 1.2x: {'met' if met else 'MISSED'}); "
                f"fetched {s['fetched']}"
            )
            for name, phases in s["phases"].items():
                print(f"   phases {name} (s): {phases}")
    finally:
        cluster.stop()
    print("targets:", "met" if ok else "MISSED")
    return 0 if ok else 1


def cluster_version(cluster: PgCluster) -> str:
    import psycopg

    with psycopg.connect(cluster.url()) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def psycopg_version() -> str:
    import psycopg

    return str(psycopg.__version__)


if __name__ == "__main__":
    raise SystemExit(main())
