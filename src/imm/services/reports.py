"""Reports over the cached, analysed inventory: summary, costs, holds, expiry, eligibility (design §6, §7).

Reports read :class:`~imm.data.models.InactiveMailbox` records only; they make no Exchange call. A
:class:`Report` is a main table (``columns``, ``rows``, ``totals``) plus detail :class:`Section` s, notes, the
headline figures and the chart data (:class:`Overview`). Writers: :func:`write_csv`, :func:`write_json` here,
:func:`write_xlsx` (``report_xlsx``) and :func:`write_html` (``report_html``, one self-contained page with charts).

Conventions: sizes in GB are primary plus archive (1 GB = 1024 MB); money is per month in the cost model's
currency, rounded to cents; an empty company or department is reported as :data:`UNATTRIBUTED`, as chargeback
tools do. "Savings" is the monthly cost of the mailboxes whose holds have all expired (``releasable``): what
releasing them would stop costing.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from imm.errors import InputError
from imm.services.report_kinds import BUILDERS, common_notes, measure, overview_of
from imm.services.report_model import (
    AGE_BUCKETS,
    EXPIRY_WINDOWS,
    GROUPINGS,
    HOLD_KINDS,
    HTML_MAX_ROWS,
    KINDS,
    NO_HOLD,
    SIZE_BUCKETS,
    UNATTRIBUTED,
    Overview,
    Report,
    ReportColumn,
    Section,
    StreamedRows,
    age_days,
    as_utc,
    blocker_alternative,
    blocker_code,
    expiry_window,
    format_value,
    hold_label,
    is_numeric_cell,
    mailbox_cost,
    total_gb,
)

if TYPE_CHECKING:
    from imm.config import CostModel
    from imm.data.database import DatabaseManager, MailboxFilter
    from imm.data.models import InactiveMailbox

__all__ = [
    "AGE_BUCKETS",
    "EXPIRY_WINDOWS",
    "GROUPINGS",
    "HOLD_KINDS",
    "HTML_MAX_ROWS",
    "KINDS",
    "NO_HOLD",
    "SIZE_BUCKETS",
    "STORE_KINDS",
    "UNATTRIBUTED",
    "Overview",
    "Report",
    "ReportColumn",
    "Section",
    "age_days",
    "blocker_alternative",
    "blocker_code",
    "build_overview",
    "build_report",
    "build_report_from_store",
    "expiry_window",
    "format_value",
    "hold_label",
    "is_numeric_cell",
    "mailbox_cost",
    "report_json",
    "total_gb",
    "write_csv",
    "write_html",
    "write_json",
    "write_xlsx",
]


def build_overview(
    mailboxes: Sequence[InactiveMailbox], *, cost_model: CostModel | None, now: datetime | None = None
) -> Overview:
    """Headline figures and chart data for a set of mailboxes."""
    now = as_utc(now) or datetime.now(UTC)
    return overview_of(measure(mailboxes, cost_model, now))


def build_report(
    kind: str,
    mailboxes: Sequence[InactiveMailbox],
    *,
    by: str | None = None,
    cost_model: CostModel | None,
    now: datetime | None = None,
    filters: dict[str, Any] | None = None,
) -> Report:
    """Build the ``kind`` report (one of :data:`KINDS`) over ``mailboxes``.

    ``by`` ("company" or "department") groups summary and costs (costs defaults to company) and adds a
    breakdown section to holds, expiry and eligibility. ``cost_model`` None uses the cached ``monthly_cost``.
    ``now`` (default: the current time) dates ages and expiry windows. ``filters`` is recorded in the report.
    """
    if kind not in KINDS:
        raise InputError(f"unknown report '{kind}' (reports: {', '.join(KINDS)})")
    if by is not None and by not in GROUPINGS:
        raise InputError(f"cannot group by '{by}' (use company or department)")
    moment = as_utc(now) or datetime.now(UTC)
    measured = measure(mailboxes, cost_model, moment)
    overview = overview_of(measured)
    currency = cost_model.currency if cost_model is not None else "EUR"
    report = BUILDERS[kind](measured, overview, by, currency)
    report.generated_at = moment
    report.currency = currency
    report.filters = dict(filters or {})
    report.overview = overview
    report.notes.extend(common_notes(cost_model, overview, report.filters))
    return report


STORE_KINDS = KINDS  # every report can be computed in the store by build_report_from_store


def build_report_from_store(
    kind: str,
    db: DatabaseManager,
    selection: MailboxFilter | None = None,
    *,
    by: str | None = None,
    cost_model: CostModel | None,
    now: datetime | None = None,
    filters: dict[str, Any] | None = None,
) -> Report:
    """:func:`build_report` over the cached mailboxes matching ``selection``, computed in the store
    (:mod:`imm.data.report_store`, :mod:`imm.services.report_streams`): the same report, in flat memory at any
    size; the tables that list mailboxes are read again from the store by each writer."""
    from imm.data.report_store import report_figures
    from imm.services import report_streams
    from imm.services.report_kinds import (
        costs_by_groups,
        overview_from_figures,
        summary_by_groups,
        tallies_from_figures,
    )

    if kind not in STORE_KINDS:
        raise InputError(f"unknown report '{kind}' (reports: {', '.join(KINDS)})")
    if by is not None and by not in GROUPINGS:
        raise InputError(f"cannot group by '{by}' (use company or department)")
    moment = as_utc(now) or datetime.now(UTC)
    grouping = by or ("company" if kind == "costs" else None)
    rates = None if cost_model is None else dict(cost_model.license_month)
    figures = report_figures(
        db,
        selection,
        by_department=grouping == "department",
        now=moment,
        size_bounds=[top for _, top in SIZE_BUCKETS if top is not None],
        cost_rates=rates,
        unknown_rate=float((rates or {}).get("Unknown", 0.0)),
        per_gb=cost_model.per_gb_month if cost_model is not None else 0.0,
    )
    overview = overview_from_figures(figures)
    currency = cost_model.currency if cost_model is not None else "EUR"
    if kind == "holds":
        report = report_streams.holds_report(db, selection, figures, overview, by, currency)
    elif kind == "expiry":
        report = report_streams.expiry_report(db, selection, figures, overview, by, currency, cost_model, moment)
    elif kind == "eligibility":
        report = report_streams.eligibility_report(db, selection, figures, overview, by)
    elif grouping is None:
        report = BUILDERS["summary"]([], overview, None, currency)
    else:
        groups, total = tallies_from_figures(figures, grouping)
        build = summary_by_groups if kind == "summary" else costs_by_groups
        report = build(groups, total, grouping, currency)
    report.generated_at = moment
    report.currency = currency
    report.filters = dict(filters or {})
    report.overview = overview
    report.notes.extend(common_notes(cost_model, overview, report.filters))
    return report


# --------------------------------------------------------------------------------------------------- writers
def atomic_write(path: Path, write: Callable[[Path], None], what: str = "the report") -> None:
    """Write through a temporary file beside ``path`` and rename it into place; OSError becomes InputError
    ("cannot write ``what`` to PATH")."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent or Path(".")))
    except OSError as exc:
        raise InputError(f"cannot write {what} to {path}: {exc.strerror or exc}") from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"cannot write {what} to {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _to_stream(target: Path | IO[str] | str, write: Callable[[IO[str]], None]) -> None:
    if isinstance(target, str) and target == "-":
        write(sys.stdout)
    elif isinstance(target, str | Path):

        def to_file(tmp: Path) -> None:
            with tmp.open("w", encoding="utf-8", newline="") as stream:
                write(stream)

        atomic_write(Path(target), to_file)
    else:
        write(target)


def write_csv(report: Report, target: Path | IO[str] | str, *, section: str | None = None) -> None:
    """One section (default: the main table) as CSV: a header of row keys, then the rows (no totals row).

    Cells a spreadsheet would run as formulas get a leading apostrophe; lists are joined with ``;``.
    ``target`` is a path, an open text stream, or ``"-"`` for stdout.
    """
    import csv

    from imm.serialise import csv_cell

    chosen = report.section(section)
    keys = [c.key for c in chosen.columns]
    if chosen.rows and "metric" in chosen.rows[0] and "metric" not in keys:  # the summary's machine names
        keys = ["metric", *keys]

    def write(stream: IO[str]) -> None:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(keys)
        for row in chosen.rows:
            writer.writerow([csv_cell(row.get(k)) for k in keys])

    _to_stream(target, write)


def report_json(report: Report, query: str | None = None) -> Any:
    """The JSON-ready document (ISO dates), or what the JMESPath ``query`` selects from it."""
    from imm.serialise import apply_query, to_jsonable

    document = to_jsonable(report.to_dict())
    return apply_query(document, query) if query else document


def write_json(report: Report, target: Path | IO[str] | str, *, query: str | None = None) -> None:
    """The whole report (every section, headline, notes) as one JSON document (indented by two spaces).

    Without ``query`` it is written as it is encoded: the rows of a table that lists mailboxes go from the store
    to the output one at a time. ``query`` (JMESPath) needs the whole document first.
    """
    if query:
        document = report_json(report, query)

        def write(stream: IO[str]) -> None:
            stream.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")

    else:

        def write(stream: IO[str]) -> None:
            for chunk in _encode(report.to_dict(streamed=True), 0):
                stream.write(chunk)
            stream.write("\n")

    _to_stream(target, write)


def _encode(value: Any, level: int) -> Iterator[str]:
    """``json.dumps(to_jsonable(value), ensure_ascii=False, indent=2)`` in pieces; a row sequence is iterated
    once (never indexed), so rows read from the store are encoded as they arrive."""
    from imm.serialise import to_jsonable

    if isinstance(value, dict):
        if not value:
            yield "{}"
            return
        inner = "\n" + "  " * (level + 1)
        first = True
        for key, item in value.items():
            yield ("{" if first else ",") + inner + json.dumps(str(key), ensure_ascii=False) + ": "
            yield from _encode(item, level + 1)
            first = False
        yield "\n" + "  " * level + "}"
    elif isinstance(value, list | tuple | StreamedRows):
        inner = "\n" + "  " * (level + 1)
        first = True
        for item in value:
            yield ("[" if first else ",") + inner
            if isinstance(item, dict) and not any(isinstance(v, StreamedRows) for v in item.values()):  # a row
                text = json.dumps(to_jsonable(item), ensure_ascii=False, indent=2)
                yield text.replace("\n", inner) if "\n" in text else text
            else:
                yield from _encode(item, level + 1)
            first = False
        yield "[]" if first else "\n" + "  " * level + "]"
    else:
        yield json.dumps(to_jsonable(value), ensure_ascii=False)


def write_xlsx(report: Report, path: Path | str) -> None:
    """An Excel workbook: one sheet per section and an "About" sheet (see :mod:`imm.services.report_xlsx`)."""
    from imm.services.report_xlsx import write_workbook

    atomic_write(Path(path), lambda tmp: write_workbook(report, tmp))


def write_html(
    report: Report,
    path: Path | str,
    *,
    mailboxes: Sequence[InactiveMailbox] | None = None,
    cost_model: CostModel | None = None,
    now: datetime | None = None,
) -> None:
    """One self-contained HTML page: headline, charts (inline SVG), the report's tables, notes.

    The charts show the whole set the report was built from; pass ``mailboxes`` (with ``cost_model`` and
    ``now``) to chart another set.
    """
    from imm.services.report_html import render_html

    if mailboxes is not None:
        overview = build_overview(mailboxes, cost_model=cost_model, now=now or report.generated_at)
    else:
        overview = report.overview or build_overview([], cost_model=None, now=report.generated_at)
    page = render_html(report, overview)

    def write(tmp: Path) -> None:
        tmp.write_text(page, encoding="utf-8")

    atomic_write(Path(path), write)
