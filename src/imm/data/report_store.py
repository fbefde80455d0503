"""The figures of the summary and costs reports and of every report's overview, as SQL aggregates (issue 18).

:func:`report_figures` reads the cache in a few grouped scans and returns small tables (a row per company and
department *as stored*, per age in days, per size band, expiry window and hold kind); no mailbox is built and
memory does not grow with the inventory. The services turn them into reports (:mod:`imm.services.report_kinds`)
with the same rules as for records:

- sizes: the whole mailbox, ``(size_mb + recoverable_items_mb + archive_size_mb + archive_recoverable_items_mb) /
  1024`` per mailbox (items and Recoverable Items of primary and archive, as cost counts them), in the same float
  operations as ``total_gb``;
- money: with a cost model, each mailbox's ``licence rate + per-GB rate × GB`` rounded half up to cents as
  :func:`imm.domain.cost.round_money` does (float noise taken off at 1e-9 first), summed in whole cents (exact);
  without one, the cached ``monthly_cost``;
- ages: whole days from WhenSoftDeleted to ``now`` in integer microseconds (exact; never below 0), else the
  cached ``age_days``; expiry windows compare calendar dates (UTC) as text.

Company and department are grouped as stored; the services merge groups whose names differ only by surrounding
white space (``clean_text``), as the record path does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from imm.data import postgres
from imm.data.database import TOTAL_SIZE_SQL, DatabaseManager, MailboxFilter, parse_datetime, store_error

_GB = (
    "((COALESCE(m.size_mb, 0.0) + COALESCE(m.recoverable_items_mb, 0.0) + COALESCE(m.archive_size_mb, 0.0)"
    " + COALESCE(m.archive_recoverable_items_mb, 0.0)) / 1024.0)"
)
SOFT_DELETED_SQL = "'soft-deleted'"  # imm.domain.lifecycle.SOFT_DELETED (the data layer does not import domain)
_US = "(unixepoch(m.when_soft_deleted) * 1000000 + CAST(substr(m.when_soft_deleted, 21, 6) AS INTEGER))"


@dataclass
class GroupFigures:
    """Sums over the mailboxes of one stored company, department (None unless grouped by department), tenant,
    hold_types list, size band (index of the first upper bound the size is below) and expiry window."""

    company: str | None
    department: str | None
    tenant: str | None
    hold_types: list[str]
    size_band: int
    window: str
    mailboxes: int
    gb: float
    cost: float
    releasable: int
    releasable_gb: float
    savings: float
    recoverable: int
    restorable: int
    oldest: datetime | None
    newest: datetime | None
    primary_gb: float
    archive_gb: float
    items: int
    first_expiry: str | None = None  # the earliest and latest holds_expire_on date (YYYY-MM-DD) of the group
    last_expiry: str | None = None
    recoverable_gb: float = 0.0
    restorable_gb: float = 0.0
    soft_deleted: int = 0  # of ``mailboxes``: formerly inactive, soft-deleted and awaiting the purge (lifecycle)


@dataclass
class ReportFigures:
    groups: list[GroupFigures]
    ages: list[tuple[int, int, float]]  # (age in days, mailboxes, GB), ages ascending; without an age left out


def _cost_sql(
    rates: Mapping[str, float] | None, unknown_rate: float, per_gb: float, integer: str = "CAST({} AS INTEGER)"
) -> tuple[str, list[Any], bool]:
    """(SQL of one mailbox's monthly cost, its parameters, whether it is in whole cents). ``integer``: the
    dialect's truncation to a 64-bit integer (PostgreSQL's CAST rounds, and its INTEGER has 32 bits)."""
    if rates is None:
        return "COALESCE(m.monthly_cost, 0.0)", [], False
    params: list[Any] = []
    cases = ""
    for name, rate in rates.items():
        cases += " WHEN ? THEN ?"
        params += [name, float(rate)]
    rate_sql = f"(CASE m.license_type{cases} ELSE ? END)" if cases else "?"
    params += [float(unknown_rate), float(per_gb)]
    # round_money: Decimal(repr(x)) to 1e-9 half up, then to cents half up; in integers after one exact-enough
    # multiplication (it differs only for a cost within 5e-10 of half a cent and off its repr by float noise).
    # The size is total_size_mb (items and Recoverable Items of primary and archive), as imm.domain.cost counts.
    value = f"({rate_sql} + ? * ({TOTAL_SIZE_SQL} / 1024.0))"
    return f"(({integer.format(f'{value} * 1000000000.0 + 0.5')} + 5000000) / 10000000)", params, True


def _count(condition: str) -> str:
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def _total(value: str) -> str:
    """SQLite's TOTAL (a sum that is 0.0 over no rows) in both dialects."""
    return f"COALESCE(SUM({value}), 0.0)"


def report_figures(
    db: DatabaseManager,
    filters: MailboxFilter | None,
    *,
    by_department: bool,
    now: datetime,
    size_bounds: Sequence[float],
    cost_rates: Mapping[str, float] | None,
    unknown_rate: float = 0.0,
    per_gb: float = 0.0,
) -> ReportFigures:
    """The aggregates of the mailboxes matching ``filters`` (see the module's notes), in two scans: one grouped
    by the stored company, department, tenant, hold_types, size band and expiry window with every sum, one per
    age in days."""
    where, params = (filters or MailboxFilter()).where()
    integer = "CAST(trunc({}) AS bigint)" if db.is_postgresql else "CAST({} AS INTEGER)"
    cost, cost_params, cents = _cost_sql(cost_rates, unknown_rate, per_gb, integer)
    window, days = window_sql(now)
    band = "CASE" + "".join(f" WHEN {_GB} < ? THEN {i}" for i in range(len(size_bounds)))
    band += f" ELSE {len(size_bounds)} END"
    department = "m.department" if by_department else "NULL"
    sql = (
        f"SELECT m.operating_company, {department}, m.tenant, m.hold_types, {band}, {window},"
        f" COUNT(*), SUM({_GB}), SUM({cost}), {_count('m.releasable = 1')},"
        f" {_total(f'CASE WHEN m.releasable <> 0 THEN {_GB} END')},"
        f" {_total(f'CASE WHEN m.releasable <> 0 THEN {cost} END')},"
        f" {_count('m.recovery_eligible = 1')}, {_count('m.restore_eligible = 1')},"
        " MIN(m.when_soft_deleted), MAX(m.when_soft_deleted),"
        " SUM((COALESCE(m.size_mb, 0.0) + COALESCE(m.recoverable_items_mb, 0.0)) / 1024.0),"
        " SUM((COALESCE(m.archive_size_mb, 0.0) + COALESCE(m.archive_recoverable_items_mb, 0.0)) / 1024.0),"
        " SUM(COALESCE(m.item_count, 0) + COALESCE(m.archive_item_count, 0)),"
        f" MIN(substr(NULLIF(m.holds_expire_on, ''), 1, 10)), MAX(substr(NULLIF(m.holds_expire_on, ''), 1, 10)),"
        f" {_total(f'CASE WHEN m.recovery_eligible <> 0 THEN {_GB} END')},"
        f" {_total(f'CASE WHEN m.restore_eligible <> 0 THEN {_GB} END')},"
        f" {_count(f'm.lifecycle_state = {SOFT_DELETED_SQL}')}"
        f" FROM inactive_mailboxes m{where} GROUP BY 1, 2, 3, 4, 5, 6"
    )
    sql_params = [*size_bounds, *days, *cost_params, *cost_params, *params]
    now_us = int(now.timestamp()) * 1_000_000 + now.microsecond
    age = (
        "(CASE WHEN m.when_soft_deleted IS NULL OR m.when_soft_deleted = '' THEN m.age_days"
        f" WHEN ? - {_US} < 0 THEN 0 ELSE (? - {_US}) / 86400000000 END)"
    )
    scale = 100.0 if cents else 1.0
    conn = db.reader_connection()
    try:
        groups = [
            GroupFigures(
                company=r[0],
                department=r[1],
                tenant=r[2],
                hold_types=_hold_list(r[3]),
                size_band=int(r[4]),
                window=str(r[5]),
                mailboxes=int(r[6]),
                gb=float(r[7] or 0.0),
                cost=(r[8] or 0) / scale,
                releasable=int(r[9] or 0),
                releasable_gb=float(r[10] or 0.0),
                savings=(r[11] or 0) / scale,
                recoverable=int(r[12] or 0),
                restorable=int(r[13] or 0),
                oldest=parse_datetime(r[14]),
                newest=parse_datetime(r[15]),
                primary_gb=float(r[16] or 0.0),
                archive_gb=float(r[17] or 0.0),
                items=int(r[18] or 0),
                first_expiry=r[19],
                last_expiry=r[20],
                recoverable_gb=float(r[21] or 0.0),
                restorable_gb=float(r[22] or 0.0),
                soft_deleted=int(r[23] or 0),
            )
            for r in conn.execute(sql, sql_params)
        ]
        ages = [
            (int(r[0]), int(r[1]), float(r[2] or 0.0))
            for r in conn.execute(
                f"SELECT a, COUNT(*), SUM(g) FROM (SELECT {age} AS a, {_GB} AS g FROM inactive_mailboxes m{where}) AS t"
                " WHERE a IS NOT NULL GROUP BY a ORDER BY a",
                [now_us, now_us, *params],
            )
        ]
    finally:
        conn.close()
    return ReportFigures(groups, ages)


# The per-mailbox queries read only the columns a report uses, from a cursor on a reader connection: memory
# stays flat; a sort (ORDER BY) spills to a temporary file. They yield plain tuples.
MAILBOX_NAME_SQL = "COALESCE(NULLIF(m.display_name, ''), NULLIF(m.name, ''), NULLIF(m.primary_smtp, ''), m.identity)"
GB_SQL = _GB  # primary plus archive in GB, as report_model.total_gb


def _where(filters: MailboxFilter | None, condition: str) -> tuple[str, list[Any]]:
    where, params = (filters or MailboxFilter()).where()
    return (f"{where} AND ({condition})" if where else f" WHERE ({condition})"), params


def count_where(
    db: DatabaseManager, filters: MailboxFilter | None, condition: str, condition_params: Sequence[Any] = ()
) -> int:
    """How many mailboxes match ``filters`` and the SQL ``condition`` (over ``m``)."""
    where, params = _where(filters, condition)
    conn = db.reader_connection()
    try:
        sql = f"SELECT COUNT(*) FROM inactive_mailboxes m{where}"
        return int(conn.execute(sql, [*params, *condition_params]).fetchone()[0])
    finally:
        conn.close()


def stream_where(
    db: DatabaseManager,
    filters: MailboxFilter | None,
    select: str,
    condition: str,
    *,
    select_params: Sequence[Any] = (),
    condition_params: Sequence[Any] = (),
    group: str = "",
    order: str = "",
    functions: Mapping[str, Callable[[Any], Any]] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """The SQL ``select`` list (over ``m``) of the mailboxes matching ``filters`` and ``condition``, grouped by
    ``group`` (SQL after GROUP BY; none: a row per mailbox), in ``order`` (after ORDER BY; none: any), as tuples
    from a cursor on its own reader connection. ``functions`` are one-argument SQL functions registered on it
    (e.g. ``str.lower`` for an order that must match Python's)."""
    where, params = _where(filters, condition)
    sql = f"SELECT {select} FROM inactive_mailboxes m{where}" + (f" GROUP BY {group}" if group else "")
    sql += f" ORDER BY {order}" if order else ""
    conn = db.reader_connection()
    try:
        for name, func in (functions or {}).items():
            if not db.is_postgresql:  # PostgreSQL has them as SQL functions (imm.data.pg_schema.COMPAT)
                conn.create_function(name, 1, func, deterministic=True)
        cursor = conn.execute(sql, [*select_params, *params, *condition_params])
        cursor.row_factory = None
        while batch := cursor.fetchmany(500):
            yield from batch
    except (sqlite3.Error, postgres.DatabaseError) as exc:
        mapped = store_error(exc, db.display_path)
        if mapped is None:
            raise
        raise mapped from exc
    finally:
        conn.close()


def window_sql(now: datetime) -> tuple[str, list[str]]:
    """(SQL of a mailbox's expiry window key, its parameters): the rules of ``report_model.expiry_window``."""
    day = "substr(m.holds_expire_on, 1, 10)"
    window = (
        "CASE WHEN m.releasable <> 0 THEN 'now' WHEN m.holds_expire_on IS NULL OR m.holds_expire_on = '' THEN 'never'"
        f" WHEN {day} <= ? THEN 'expired' WHEN {day} <= ? THEN '30' WHEN {day} <= ? THEN '90'"
        f" WHEN {day} <= ? THEN '365' ELSE 'later' END"
    )
    today = now.date()
    return window, [(today + timedelta(days=n)).isoformat() for n in (0, 30, 90, 365)]


def _hold_list(text: str | None) -> list[str]:
    if not text:
        return []
    value = json.loads(text)
    return [str(v) for v in value] if isinstance(value, list) else []
