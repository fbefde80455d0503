"""The holds, expiry and eligibility reports computed in the store (issue 18): flat memory at any size.

Their tables of counts come from the store's aggregates (:func:`imm.data.report_store.report_figures`); what
needs each mailbox's lists (policies in ``hold_details``, blocker codes) is read as a stream of a few columns and
counted as it goes; the tables that list mailboxes (expiry's "mailboxes", eligibility's "blocked") are
:class:`~imm.services.report_model.StreamedRows`: read again from the store, in the report's order, by each
writer, never held. Every value is computed by the same functions as the record path
(:func:`imm.services.reports.build_report`), which the tests use as the oracle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from imm.data.database import parse_datetime
from imm.data.report_store import GB_SQL, MAILBOX_NAME_SQL, count_where, stream_where, window_sql
from imm.domain.cost import cost_of
from imm.services.report_kinds import (
    LISTED_WINDOWS,
    blocked_row,
    eligibility_from_store,
    expiring_row,
    expiry_from_store,
    holds_from_store,
)
from imm.services.report_model import EXPIRY_WINDOWS, Overview, Report, StreamedRows

if TYPE_CHECKING:
    from imm.config import CostModel
    from imm.data.database import DatabaseManager, MailboxFilter
    from imm.data.report_store import ReportFigures


class _Row(NamedTuple):
    """The fields of one mailbox the listing tables show (``expiring_row`` / ``blocked_row`` read them)."""

    primary_smtp: str
    operating_company: str | None
    department: str | None
    hold_types: list[str]
    expiry_reason: str | None
    identity: str
    recovery_eligible: bool = False
    restore_eligible: bool = False


def _list(text: str | None) -> list[str]:
    if not text or text == "[]":
        return []
    value = json.loads(text)
    return [str(v) for v in value] if isinstance(value, list) else []


def holds_report(
    db: DatabaseManager,
    selection: MailboxFilter | None,
    figures: ReportFigures,
    overview: Overview,
    by: str | None,
    currency: str,
) -> Report:
    details = stream_where(
        db,
        selection,
        f"m.hold_details, {GB_SQL}",
        "m.hold_details IS NOT NULL AND m.hold_details NOT IN ('', '[]')",
        order="m.identity",
    )
    return holds_from_store(figures, ((text, float(gb)) for text, gb in details), overview, by, currency)


def expiry_report(
    db: DatabaseManager,
    selection: MailboxFilter | None,
    figures: ReportFigures,
    overview: Overview,
    by: str | None,
    currency: str,
    cost_model: CostModel | None,
    now: datetime,
) -> Report:
    window, window_params = window_sql(now)
    reasons = stream_where(
        db,
        selection,
        f"m.expiry_reason, COUNT(*), SUM({GB_SQL})",
        f"{window} = 'never'",
        condition_params=window_params,
        group="m.expiry_reason",
    )
    listed = f"{window} IN ({', '.join(repr(w) for w in LISTED_WINDOWS)})"
    labels = dict(EXPIRY_WINDOWS)
    today = now.date()

    def rows() -> Iterator[dict[str, Any]]:
        for r in stream_where(
            db,
            selection,
            f"{MAILBOX_NAME_SQL}, m.primary_smtp, m.operating_company, m.department, m.hold_types, m.expiry_reason,"
            f" m.identity, m.holds_expire_on, {window}, m.size_mb, m.archive_size_mb, m.recoverable_items_mb,"
            " m.archive_recoverable_items_mb, m.license_type, m.monthly_cost",
            listed,
            select_params=window_params,
            condition_params=window_params,
            order=f"NULLIF(m.holds_expire_on, '') IS NULL, m.holds_expire_on, {MAILBOX_NAME_SQL}, m.identity",
        ):
            size, archive, recoverable, archive_recoverable = (float(v or 0.0) for v in r[9:13])
            gb = (size + recoverable + archive + archive_recoverable) / 1024  # as report_model.total_gb
            if cost_model is None:
                cost = float(r[14] or 0.0)
            else:
                total_mb = round(size + recoverable + archive + archive_recoverable, 2)
                cost = cost_of(r[13], total_mb, cost_model)
            expires = parse_datetime(r[7])
            day = expires.date() if expires else None
            days_left = (day - today).days if day else None
            mailbox = _Row(r[1], r[2], r[3], _list(r[4]), r[5], r[6])
            yield expiring_row(r[0], mailbox, day, days_left, labels[r[8]], gb, cost)

    count = count_where(db, selection, listed, window_params)
    return expiry_from_store(figures, reasons, StreamedRows(count, rows), overview, by, currency)


def eligibility_report(
    db: DatabaseManager,
    selection: MailboxFilter | None,
    figures: ReportFigures,
    overview: Overview,
    by: str | None,
) -> Report:
    blocked = "NOT (m.recovery_eligible = 1 AND m.restore_eligible = 1)"
    blockers = (
        (r[0], r[1], r[2], r[3], float(r[4]))
        for r in stream_where(
            db,
            selection,
            f"m.recovery_eligible, m.recovery_blockers, m.restore_eligible, m.restore_blockers, {GB_SQL}",
            blocked,
            order="m.identity",
        )
    )

    def rows() -> Iterator[dict[str, Any]]:
        for r in stream_where(
            db,
            selection,
            f"{MAILBOX_NAME_SQL}, m.primary_smtp, m.operating_company, m.department, m.identity,"
            " m.recovery_eligible, m.restore_eligible, m.recovery_blockers, m.restore_blockers",
            blocked,
            order=f"imm_lower({MAILBOX_NAME_SQL}), m.identity",
            functions={"imm_lower": lambda v: str(v).lower()},
        ):
            mailbox = _Row(r[1], r[2], r[3], [], None, r[4], bool(r[5]), bool(r[6]))
            yield blocked_row(r[0], mailbox, _list(r[7]), _list(r[8]))

    count = count_where(db, selection, blocked)
    return eligibility_from_store(figures, blockers, StreamedRows(count, rows), overview, by)
