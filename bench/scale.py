"""Scale benchmark (issue 18): not part of the test suite.

    python bench/scale.py [--sizes 10000,100000,1000000] [--runs 3] [--keep DIR] [--only list-json,...]

Per size, a cache of realistic rows (``tests/factories.make_mailboxes``) is built once with ``upsert_mailboxes``
and kept in ``--keep DIR`` (default: a folder under the system's temporary folder) for the next run. Then each
command runs as a whole process (median of ``--runs``; one run at 1M unless ``--runs`` says more), next to a
**baseline in the same run**: plain Python + sqlite3 writing the same document, streamed from a cursor (the
fastest straightforward program: no imm, no Click, one ``SELECT``, the C JSON encoder / csv writer, f-strings for
the table). Each line gives imm's time, the baseline's, the ratio (target <= 1.5x), the time to the first byte of
output and both peak RSS values (target under 100 MB at 1M rows), from ``wait4``.

Figures: ``list -o json``, ``list -o jsonl``, ``list -o csv``, ``list`` (table, 120 columns), ``report summary``
(its JSON; the baseline: the same counts and sums as SQL aggregates) and ``report summary --format html``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the realistic record factory

BATCH = 50_000

# --------------------------------------------------------------------------------------------------- baselines
# Each is a whole program run as `python -c`, argv[1] the database; it writes what the imm command writes.
_COMMON = r"""
import sqlite3, sys, json, csv
conn = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
out = sys.stdout
def iso(t):
    return None if t is None else (t[:19] + "+00:00" if t[19:26] == ".000000" else t)
"""

BASELINE_JSON = (
    _COMMON
    + r"""
cols = [r[1] for r in conn.execute("PRAGMA table_info(inactive_mailboxes)")]
types = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(inactive_mailboxes)")}
JSONC = {"hold_types", "recovery_blockers", "email_addresses", "mailbox_locations", "in_place_holds",
         "restore_blockers", "hold_details", "custom_attributes"}
BOOL = {"recovery_eligible", "auto_expanding_archive", "litigation_hold_enabled", "compliance_tag_hold",
        "delay_hold", "delay_release_hold", "retention_hold_enabled", "restore_eligible", "releasable"}
DT = {"when_soft_deleted", "last_updated", "litigation_hold_date", "when_changed", "inactive_mailbox_retire_time",
      "holds_expire_on"}
conv = [(json.loads if c in JSONC else bool if c in BOOL else iso if c in DT else None) for c in cols]
plan = [(i, f) for i, f in enumerate(conv) if f is not None]
a, b, c, d = (cols.index(n) for n in ("size_mb", "recoverable_items_mb", "archive_size_mb",
                                      "archive_recoverable_items_mb"))
names = [*cols, "total_size_mb"]
enc = json.JSONEncoder(ensure_ascii=False).encode
lines = sys.argv[2] == "jsonl"
first = True
for row in conn.execute("SELECT * FROM inactive_mailboxes ORDER BY display_name COLLATE NOCASE, identity"):
    v = list(row)
    for i, f in plan:
        if v[i] is not None:
            v[i] = f(v[i])
    v.append(round(v[a] + v[b] + v[c] + v[d], 2))
    text = enc(dict(zip(names, v)))
    if lines:
        out.write(text + "\n")
    else:
        out.write(("[\n  " if first else ",\n  ") + text)
    first = False
if not lines:
    out.write("[]\n" if first else "\n]\n")
"""
)

BASELINE_CSV = (
    _COMMON
    + r"""
cols = sys.argv[2].split(",")
BOOL = {"recovery_eligible", "litigation_hold_enabled", "restore_eligible", "releasable"}
def cell(c, v):
    if v is None:
        return ""
    if c in BOOL:
        return "true" if v else "false"
    if c == "hold_types":
        return ";".join(json.loads(v))
    if c in ("when_soft_deleted", "holds_expire_on"):
        return iso(v)
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v
w = csv.writer(out, lineterminator="\n")
w.writerow(cols)
TOTAL = ("round(coalesce(size_mb, 0) + coalesce(recoverable_items_mb, 0) + coalesce(archive_size_mb, 0)"
         " + coalesce(archive_recoverable_items_mb, 0), 2)")
select = ", ".join(TOTAL if c == "total_size_mb" else c for c in cols)
for row in conn.execute(
    f"SELECT {select} FROM inactive_mailboxes ORDER BY display_name COLLATE NOCASE, identity"
):
    w.writerow([cell(c, v) for c, v in zip(cols, row)])
"""
)

BASELINE_TABLE = (
    _COMMON
    + r"""
from datetime import datetime, timezone
now = datetime.now(timezone.utc)
W = [24, 30, 14, 12, 7, 5, 24]
def cut(t, w):
    return t if len(t) <= w else t[: w - 1] + "…"
out.write("┏" + "┳".join("━" * (w + 2) for w in W)[1:-1] + "┓\n")
for row in conn.execute(
    "SELECT display_name, name, primary_smtp, operating_company, department, size_mb, recoverable_items_mb,"
    " archive_size_mb, archive_recoverable_items_mb, when_soft_deleted, hold_types, lifecycle_state, purge_on,"
    " delay_hold_until FROM inactive_mailboxes ORDER BY display_name COLLATE NOCASE, identity"
):
    dn, name, smtp, comp, dept, size, rec, arch, arec, deleted, holds, state, purge, delay = row
    age = (now - datetime.fromisoformat(deleted)).days if deleted else None
    held = (f"purge ≈ {(purge or '?')[:10]}" if state == "soft-deleted" else
            f"delay until ≈ {(delay or '?')[:10]}" if state == "pending-delay" else ", ".join(json.loads(holds)))
    cells = (cut(dn or name, 24), cut(smtp, 30), cut(comp or "", 14), cut(dept or "", 12),
             f"{round(round(size + rec + arch + arec, 2)):,}", f"{age:,}" if age is not None else "", cut(held, 24))
    out.write(f"│{cells[0]:<24} │ {cells[1]:<30} │ {cells[2]:<14} │ {cells[3]:<12} │ {cells[4]:>7} │ "
              f"{cells[5]:>5} │ {cells[6]:<24}│\n")
out.write("└" + "┴".join("─" * (w + 2) for w in W)[1:-1] + "┘\n")
"""
)

BASELINE_SUMMARY = (
    _COMMON
    + r"""
# The same figures as imm's summary: per company the counts and sums (monthly cost rounded to cents per mailbox,
# licence rate + 0.02 per GB), hold kinds, size bands, expiry windows and ages; SQL aggregates, JSON out.
gb = "((COALESCE(size_mb, 0.0) + COALESCE(archive_size_mb, 0.0)) / 1024.0)"
rate = "(CASE license_type WHEN 'Exchange Online Plan 2' THEN 7.0 WHEN 'Exchange Online Plan 1' THEN 4.0 ELSE 0 END)"
cost = f"ROUND({rate} + 0.02 * {gb}, 2)"
groups = conn.execute(
    f"SELECT operating_company, COUNT(*), SUM({gb}), SUM({cost}), SUM(releasable), SUM(recovery_eligible),"
    f" SUM(restore_eligible), MIN(when_soft_deleted), MAX(when_soft_deleted), TOTAL(CASE WHEN releasable THEN {gb}"
    f" END), TOTAL(CASE WHEN releasable THEN {cost} END), SUM(COALESCE(item_count, 0) + COALESCE(archive_item_count,"
    " 0)) FROM inactive_mailboxes GROUP BY 1"
).fetchall()
kinds = conn.execute(
    f"SELECT j.value, COUNT(*), SUM({gb}) FROM inactive_mailboxes, json_each(hold_types) j GROUP BY 1"
).fetchall()
bands = conn.execute(
    f"SELECT CASE WHEN {gb} < 0.09765625 THEN 0 WHEN {gb} < 1 THEN 1 WHEN {gb} < 5 THEN 2 WHEN {gb} < 10 THEN 3"
    f" WHEN {gb} < 50 THEN 4 WHEN {gb} < 100 THEN 5 ELSE 6 END AS b, COUNT(*), SUM({gb})"
    " FROM inactive_mailboxes GROUP BY b"
).fetchall()
windows = conn.execute(
    "SELECT CASE WHEN releasable THEN 'now' WHEN holds_expire_on IS NULL THEN 'never' WHEN holds_expire_on <="
    " date('now') THEN 'expired' WHEN holds_expire_on <= date('now', '+30 days') THEN '30' ELSE 'later' END AS w,"
    f" COUNT(*), SUM({cost}) FROM inactive_mailboxes GROUP BY w"
).fetchall()
ages = conn.execute(
    f"SELECT CAST(julianday('now') - julianday(when_soft_deleted) AS INTEGER) AS a, COUNT(*), SUM({gb})"
    " FROM inactive_mailboxes GROUP BY a ORDER BY a"
).fetchall()
json.dump({"groups": groups, "kinds": kinds, "bands": bands, "windows": windows, "ages": ages}, out, indent=2)
"""
)


# --------------------------------------------------------------------------------------------------- running
@dataclass
class Run:
    seconds: float
    first_byte: float
    rss_mb: float
    out_bytes: int


def run(argv: list[str], env: dict[str, str]) -> Run:
    """One whole process: wall time, time to its first byte of output, its peak RSS (wait4), bytes written."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    first_byte = time.perf_counter() - start
    size = len(first)
    while chunk := proc.stdout.read(1 << 20):
        size += len(chunk)
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}… failed ({proc.returncode}): {err.decode()[-500:]}")
    return Run(seconds, first_byte, usage.ru_maxrss / 1024, size)


def median_run(argv: list[str], env: dict[str, str], runs: int) -> Run:
    results = [run(argv, env) for _ in range(runs)]
    pick = sorted(results, key=lambda r: r.seconds)[len(results) // 2]
    return Run(
        statistics.median(r.seconds for r in results),
        statistics.median(r.first_byte for r in results),
        max(r.rss_mb for r in results),
        pick.out_bytes,
    )


def build(size: int, workdir: Path) -> Path:
    """The cache of ``size`` rows (kept: built once, reused by the next run), built in a child process so that
    this one stays small (a forked child's peak RSS starts from its parent's)."""
    path = workdir / f"scale-{size}.db"
    if not path.exists():
        subprocess.run([sys.executable, __file__, "--build", str(size), "--keep", str(workdir)], check=True)
    return path


def build_here(size: int, workdir: Path) -> None:
    from factories import make_mailboxes
    from imm.data.database import DatabaseManager

    path = workdir / f"scale-{size}.db"
    partial = workdir / f"scale-{size}.db.partial"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    t = time.perf_counter()
    db = DatabaseManager(partial)
    db.initialize()
    for start in range(0, size, BATCH):
        db.upsert_mailboxes(make_mailboxes(min(BATCH, size - start), seed=1000 + start // BATCH))
    db.get_connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    partial.rename(path)
    print(f"  built {size:,} rows in {time.perf_counter() - t:.1f}s ({path})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "imm-bench-scale")
    parser.add_argument("--only", default="", help="comma-separated figure names (list-json, report-html, …)")
    parser.add_argument("--build", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.keep.mkdir(parents=True, exist_ok=True)
    if args.build:
        build_here(args.build, args.keep)
        return

    import sqlite3

    csv_fields = subprocess.run(
        [sys.executable, "-c", "from imm.services.inventory_view import CSV_FIELDS; print(','.join(CSV_FIELDS))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    python = sys.executable
    imm = [python, "-m", "imm"]
    print(f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
    only = {name for name in args.only.split(",") if name}
    for size in (int(s) for s in args.sizes.split(",")):
        path = build(size, args.keep)
        runs = args.runs if size < 1_000_000 else max(1, args.runs // 3)
        home = args.keep / f"home-{size}"
        home.mkdir(exist_ok=True)
        env = {**os.environ, "IMM_DB": str(path), "IMM_USER_PATH": str(home), "COLUMNS": "120"}
        html = str(args.keep / f"summary-{size}.html")
        figures = [
            ("list-json", [*imm, "list", "-o", "json"], [python, "-c", BASELINE_JSON, str(path), "json"]),
            ("list-jsonl", [*imm, "list", "-o", "jsonl"], [python, "-c", BASELINE_JSON, str(path), "jsonl"]),
            (
                "list-csv",
                [*imm, "list", "-o", "csv"],
                [python, "-c", BASELINE_CSV, str(path), csv_fields],
            ),
            ("list-table", [*imm, "list"], [python, "-c", BASELINE_TABLE, str(path)]),
            ("report-summary", [*imm, "report", "summary", "-o", "json"], [python, "-c", BASELINE_SUMMARY, str(path)]),
            (
                "report-html",
                [*imm, "report", "summary", "--format", "html", "--out", html],
                [python, "-c", BASELINE_SUMMARY, str(path)],
            ),
        ]
        print(f"{size:>9,} rows ({runs} run{'s' if runs != 1 else ''} each, median)", flush=True)
        for name, command, baseline in figures:
            if only and name not in only:
                continue
            base = median_run(baseline, env, runs)
            mine = median_run(command, env, runs)
            print(
                f"  {name:<15} imm {mine.seconds:7.2f}s {mine.rss_mb:6.0f} MB first byte {mine.first_byte:6.3f}s"
                f"  baseline {base.seconds:7.2f}s {base.rss_mb:5.0f} MB  ratio {mine.seconds / base.seconds:5.2f}x"
                f" (<=1.5)  {mine.out_bytes / 1e6:8.1f} MB out",
                flush=True,
            )


if __name__ == "__main__":
    main()
