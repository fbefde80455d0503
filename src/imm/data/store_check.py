"""``imm store check``: is the profile's store reachable, of the schema this imm expects, and set up safely?

Read-only: nothing here creates, migrates or writes (a check of an SQLite path that does not exist creates no
file; a PostgreSQL store is read through a connection of its own, outside the pool, so no migration runs).

- PostgreSQL: the connection (role, database, server version, TLS), the schema version against
  :data:`imm.data.migrations.MIGRATIONS`, the role connected as (owner or operator, from the owner of
  ``audit_log``), what that role may do with audit rows (the server's own ``has_table_privilege``: an operator may
  INSERT and SELECT, and must be refused UPDATE and DELETE), every table's grants against
  :mod:`imm.data.pg_roles`, the append-only triggers, and the ``pg_trgm`` extension search needs.
- SQLite: the file (size, mode, journal mode), the schema version and SQLite's ``PRAGMA integrity_check``.

PostgreSQL's privilege functions: https://www.postgresql.org/docs/current/functions-info.html (Access Privilege
Inquiry Functions); SQLite's check: https://www.sqlite.org/pragma.html#pragma_integrity_check.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imm.data import migrations, pg_roles, postgres

OK, WARNING, FAILED, SKIPPED = "ok", "warning", "failed", "skipped"

# The audit tables whose rows must never be rewritten by the operator (pg_roles: SELECT and INSERT at most).
AUDIT_TABLES = ("audit_log", "audit_signatures", "audit_anchors", "audit_checkpoints")
APPEND_ONLY_TRIGGERS = tuple(f"{t}_append_only" for t in AUDIT_TABLES)
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warning | failed | skipped
    detail: str
    hint: str | None = None


@dataclass
class StoreCheckReport:
    store: str  # as shown: never a password
    dialect: str  # sqlite | postgresql
    checks: list[Check] = field(default_factory=list)
    role: str | None = None  # PostgreSQL: owner | operator | superuser
    schema: str | None = None  # the newest migration applied, or None

    @property
    def ok(self) -> bool:
        return not any(c.status == FAILED for c in self.checks)

    def add(self, name: str, status: str, detail: str, hint: str | None = None) -> None:
        self.checks.append(Check(name, status, detail, hint))

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "dialect": self.dialect,
            "ok": self.ok,
            "role": self.role,
            "schema": self.schema,
            "expected_schema": migrations.MIGRATIONS[-1].name,
            "checks": [asdict(c) for c in self.checks],
        }


def check_store(target: str) -> StoreCheckReport:
    """Check the store ``target`` names (a ``postgresql://`` URL or an SQLite path)."""
    if postgres.is_store_url(target):
        return _check_postgresql(postgres.check_store_url(target))
    return _check_sqlite(Path(target))


# ----------------------------------------------------------------------------------------------- schema
def _schema_check(report: StoreCheckReport, applied: list[str], tables: list[str], *, can_migrate: bool) -> None:
    known = [m.name for m in migrations.MIGRATIONS]
    expected = known[-1]
    if not applied:
        if tables:
            report.add(
                "schema",
                FAILED,
                f"not an imm store: it holds other tables ({', '.join(sorted(tables)[:5])})",
                "point the profile at a database of its own",
            )
        elif can_migrate:
            report.add("schema", WARNING, f"empty: the first imm command creates the schema ({expected})")
        else:
            report.add(
                "schema",
                FAILED,
                "empty, and this role cannot create the schema",
                "run any imm command (e.g. imm store check after imm cache stats) once as the owner",
            )
        return
    report.schema = applied[-1]
    unknown = [name for name in applied if name not in known]
    if unknown:
        report.schema = unknown[-1]
        report.add(
            "schema",
            FAILED,
            f"created by a newer imm (unknown migrations: {', '.join(unknown)}); this imm expects {expected}",
            "upgrade imm on this machine",
        )
        return
    missing = [name for name in known if name not in applied]
    if not missing:
        report.add("schema", OK, f"{expected} ({len(known)} migrations), as this imm expects")
        return
    behind = f"older: {len(missing)} migration{'s' if len(missing) != 1 else ''} to apply ({', '.join(missing)})"
    if can_migrate:
        report.add("schema", WARNING, f"{behind}; the next imm command applies them")
    else:
        report.add(
            "schema",
            FAILED,
            f"{behind}; this role cannot apply them",
            "run any imm command once as the store's owner (it applies the migrations)",
        )


# ----------------------------------------------------------------------------------------------- SQLite
def _check_sqlite(path: Path) -> StoreCheckReport:
    from imm.data.store_repair import integrity_problems

    report = StoreCheckReport(str(path), "sqlite")
    if not path.exists():
        report.add("file", FAILED, f"{path} does not exist", "imm sync creates the store (or check --db / IMM_DB)")
        _skip(report, "schema", "integrity")
        return report
    if not path.is_file():
        report.add("file", FAILED, f"{path} is not a file", "give the database file's path with --db PATH or IMM_DB")
        _skip(report, "schema", "integrity")
        return report
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        try:
            journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
            applied = migrations.applied_migrations(conn)
            tables = [
                str(r[0])
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                )
            ]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        report.add("file", FAILED, f"{path} cannot be read as an SQLite database ({exc})", _DAMAGED_HINT)
        _skip(report, "schema", "integrity")
        return report
    size = f"{info.st_size / 1_048_576:.1f} MiB"
    detail = f"{path} ({size}, mode {mode:04o}, journal {journal})"
    if mode & 0o077:
        report.add("file", WARNING, detail, f"the file holds the audit log: chmod 600 {path}")
    else:
        report.add("file", OK, detail)
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    _schema_check(report, applied, tables, can_migrate=writable)
    problems = integrity_problems(path)
    if problems:
        shown = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
        report.add("integrity", FAILED, f"integrity_check: {shown}", _DAMAGED_HINT)
    else:
        report.add("integrity", OK, "integrity_check: ok (every page and index)")
    return report


_DAMAGED_HINT = "imm cache rebuild repairs it (the audit log, jobs and restore tracking are copied unchanged)"


def _skip(report: StoreCheckReport, *names: str) -> None:
    for name in names:
        report.add(name, SKIPPED, "not checked (see above)")


# ------------------------------------------------------------------------------------------- PostgreSQL
def _check_postgresql(url: str) -> StoreCheckReport:
    from imm.errors import StoreError

    report = StoreCheckReport(postgres.display_url(url), "postgresql")
    try:
        conn = postgres.PgPool(url).connect()
    except StoreError as exc:
        hint = (exc.hint or "").replace("; `imm store check` tells more", "") or None
        report.add("connection", FAILED, exc.message.replace("cannot reach the store ", "cannot reach "), hint)
        _skip(report, "schema", "role", "grants", "append-only", "pg_trgm")
        return report
    try:
        _pg_checks(report, conn)
    except postgres.DatabaseError as exc:
        report.add("query", FAILED, f"the server refused a check: {exc}", "see the server's log")
    finally:
        conn.close()
    return report


def _one(conn: postgres.PgConnection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def _pg_checks(report: StoreCheckReport, conn: postgres.PgConnection) -> None:
    user, database, schema, version = conn.execute(
        "SELECT current_user, current_database(), current_schema(), current_setting('server_version')"
    ).fetchone()
    ssl = _one(conn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    tls = "TLS" if ssl else "no TLS"
    report.add("connection", OK, f"connected as {user} to database {database} on PostgreSQL {version} ({tls})")

    tables = {
        str(r[0]): str(r[1])
        for r in conn.execute("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = current_schema()")
    }
    superuser = bool(_one(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    owner = tables.get("audit_log") or tables.get(migrations.MIGRATIONS_TABLE)
    is_owner = superuser or (owner is not None and bool(_one(conn, "SELECT pg_has_role(?, 'MEMBER')", (owner,))))
    can_create = bool(_one(conn, "SELECT has_schema_privilege(current_schema(), 'CREATE')"))
    applied = migrations.applied_migrations(conn)  # type: ignore[arg-type]
    _schema_check(report, applied, list(tables), can_migrate=is_owner or (owner is None and can_create))

    if "audit_log" not in tables:
        _skip(report, "role", "grants", "append-only")
    else:
        _role_check(report, conn, str(user), owner or "", superuser=superuser, is_owner=is_owner)
        _grants_check(report, conn, list(tables), is_owner=is_owner)
        _trigger_check(report, conn)

    trgm = _one(conn, "SELECT extversion FROM pg_extension WHERE extname = 'pg_trgm'")
    if trgm is not None:
        report.add("pg_trgm", OK, f"pg_trgm {trgm} (the search index)")
    elif _one(conn, "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'") is not None:
        status = WARNING if not applied else FAILED
        report.add(
            "pg_trgm",
            status,
            "pg_trgm is available but not created in this database",
            f"CREATE EXTENSION pg_trgm; in database {database} (as a superuser, or the owner on PostgreSQL 13+)",
        )
    else:
        report.add(
            "pg_trgm",
            FAILED,
            "pg_trgm is not installed on the server (search needs it)",
            "install PostgreSQL's contrib extensions on the server (Debian: postgresql-contrib)",
        )


def _privileges(conn: postgres.PgConnection, table: str) -> set[str]:
    row = conn.execute(
        "SELECT has_table_privilege(?, 'SELECT'), has_table_privilege(?, 'INSERT'), "
        "has_table_privilege(?, 'UPDATE'), has_table_privilege(?, 'DELETE')",
        (table,) * 4,
    ).fetchone()
    return {name for name, granted in zip(PRIVILEGES, row, strict=True) if granted}


def _role_check(
    report: StoreCheckReport, conn: postgres.PgConnection, user: str, owner: str, *, superuser: bool, is_owner: bool
) -> None:
    held = _privileges(conn, "audit_log")
    if superuser:
        report.role = "superuser"
        report.add(
            "role",
            WARNING,
            f"{user} is a superuser: it may do anything, drop the append-only triggers included",
            "connect as the operator role for daily work, as the owner only to upgrade or prune",
        )
        return
    if is_owner:
        report.role = "owner"
        report.add(
            "role",
            OK,
            f"owner ({user}{' owns' if user == owner else ', a member of ' + owner + ', which owns'} the tables): "
            "runs the migrations and imm audit prune; UPDATE of audit rows is refused by the append-only trigger",
            "connect as the operator role for daily work",
        )
        return
    report.role = "operator"
    missing = [p for p in ("SELECT", "INSERT") if p not in held]
    extra = [p for p in ("UPDATE", "DELETE") if p in held]
    if missing:
        report.add(
            "role",
            FAILED,
            f"operator ({user}) may not {' or '.join(missing)} audit rows: every change would fail",
            f"run imm store grants --owner {owner} --operator {user} --apply as the owner",
        )
    elif extra:
        report.add(
            "role",
            FAILED,
            f"operator ({user}) may {' and '.join(extra)} audit rows: only a trigger stands between it and the chain",
            f"run imm store grants --owner {owner} --operator {user} --apply as the owner",
        )
    else:
        report.add(
            "role",
            OK,
            f"operator ({user}): may INSERT and SELECT audit rows; UPDATE and DELETE are refused by the server; "
            "imm audit prune runs only as the owner",
        )


def _grants_check(report: StoreCheckReport, conn: postgres.PgConnection, tables: list[str], *, is_owner: bool) -> None:
    if is_owner:
        report.add("grants", OK, f"the owner holds every privilege on the {len(tables)} tables")
        return
    short: list[str] = []
    excess: list[str] = []
    for table in sorted(tables):
        held = _privileges(conn, table)
        wanted = set(pg_roles.operator_privileges(table))
        if wanted - held:
            short.append(f"{table} ({', '.join(p for p in PRIVILEGES if p in wanted - held)})")
        if table in AUDIT_TABLES and held - wanted:
            excess.append(f"{table} ({', '.join(p for p in PRIVILEGES if p in held - wanted)})")
    if excess:
        report.add(
            "grants",
            FAILED,
            f"more than the operator's share on {'; '.join(excess)}",
            "run imm store grants --apply as the owner",
        )
    elif short:
        report.add(
            "grants",
            FAILED,
            f"missing on {'; '.join(short[:5])}" + (f" (+{len(short) - 5} tables)" if len(short) > 5 else ""),
            "run imm store grants --apply as the owner (again after an upgrade adds a table)",
        )
    else:
        report.add("grants", OK, f"the operator's share on all {len(tables)} tables, as imm store grants gives it")


def _trigger_check(report: StoreCheckReport, conn: postgres.PgConnection) -> None:
    found = {
        str(r[0]): str(r[1])
        for r in conn.execute(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal AND tgname = ANY(?)",
            (list(APPEND_ONLY_TRIGGERS),),
        )
    }
    absent = [t for t in APPEND_ONLY_TRIGGERS if t not in found]
    disabled = [t for t, enabled in found.items() if enabled == "D"]
    if absent or disabled:
        report.add(
            "append-only",
            FAILED,
            "append-only triggers "
            + ", ".join([*(f"{t} missing" for t in absent), *(f"{t} disabled" for t in disabled)]),
            "someone with the owner's rights changed the schema: run imm audit verify, and restore the triggers",
        )
    else:
        report.add("append-only", OK, f"the {len(found)} append-only triggers of the audit tables are in place")
