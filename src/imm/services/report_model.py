"""The shapes of a report and the measurements every report shares (no I/O).

:class:`Report` is a main table (``columns``, ``rows``, ``totals``) plus detail :class:`Section` s, notes, and
the whole set's :class:`Overview` (headline figures, chart data). Sizes in GB are primary plus archive
(1 GB = 1024 MB); money is per month in the cost model's currency; an empty company or department is
:data:`UNATTRIBUTED`, as chargeback tools report it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from imm.domain.cost import monthly_cost
from imm.domain.eligibility import ALTERNATIVES
from imm.errors import InputError

if TYPE_CHECKING:
    from imm.config import CostModel
    from imm.data.models import InactiveMailbox

KINDS: tuple[str, ...] = ("summary", "costs", "holds", "expiry", "eligibility")
GROUPINGS: tuple[str, ...] = ("company", "department")
UNATTRIBUTED = "(unattributed)"
HTML_MAX_ROWS = 1000  # rows of one detail table in the HTML page; CSV / XLSX / JSON hold every row

# Hold kinds as imm.domain names them, in the order reports list them, with a label for people.
HOLD_KINDS: dict[str, str] = {
    "litigation": "Litigation Hold",
    "ediscovery": "eDiscovery case hold",
    "inplace": "In-Place Hold (legacy)",
    "retention-policy": "Retention policy",
    "org-policy": "Org-wide retention policy",
    "label": "Retention label",
    "delay": "Delay hold",
    "delay-release": "Delay release hold",
    "skype-policy": "Skype retention policy",
    "unknown": "Unrecognised hold",
}
NO_HOLD = "(none recorded)"

AGE_BUCKETS: tuple[tuple[str, int | None], ...] = (  # (label, upper bound in days, inclusive)
    ("< 6 months", 182),
    ("6–12 months", 365),
    ("1–2 years", 730),
    ("2–3 years", 1095),
    ("3–5 years", 1826),
    ("5–7 years", 2557),
    ("7–10 years", 3652),
    ("> 10 years", None),
)
SIZE_BUCKETS: tuple[tuple[str, float | None], ...] = (  # (label, upper bound in GB, exclusive)
    ("< 100 MB", 100 / 1024),
    ("0.1–1 GB", 1.0),
    ("1–5 GB", 5.0),
    ("5–10 GB", 10.0),
    ("10–50 GB", 50.0),
    ("50–100 GB", 100.0),
    ("≥ 100 GB", None),
)
# Expiry windows: (key, label). "now" = releasable; "expired" = the date has passed but imm.domain does not
# call the mailbox releasable (e.g. a hold without an end date remains); "never" = no end date.
EXPIRY_WINDOWS: tuple[tuple[str, str], ...] = (
    ("now", "Releasable now"),
    ("expired", "End date passed, not releasable"),
    ("30", "Within 30 days"),
    ("90", "In 31–90 days"),
    ("365", "In 91–365 days"),
    ("later", "After a year"),
    ("never", "No end date"),
)


# ------------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class ReportColumn:
    """A column: row key, header for people, and the value kind.

    Kinds: text, long (a sentence), id (a GUID), int, gb, money, percent, number, date, bool, auto (the value
    decides: the summary's Value column).
    """

    key: str
    header: str
    kind: str = "text"
    short: str = ""  # header in the terminal table (default: ``header``)
    wide: bool = False  # left out of the terminal table (files have every column)

    @property
    def terminal_header(self) -> str:
        return self.short or self.header

    @property
    def numeric(self) -> bool:
        return self.kind in {"int", "gb", "money", "percent", "number"}


class StreamedRows(Sequence[dict[str, Any]]):
    """The rows of a section that lists mailboxes, read again from the store each time they are iterated: a
    report over a million mailboxes holds none of them (issue 18). ``read`` returns a fresh iterator of the rows
    in order; ``count`` is how many it yields. Indexing and slicing read only as far as they need."""

    def __init__(self, count: int, read: Callable[[], Iterator[dict[str, Any]]]) -> None:
        self._count = count
        self._read = read

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._read()

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._count)
            return list(itertools.islice(self._read(), start, stop, step))
        position = index + self._count if index < 0 else index
        if not 0 <= position < self._count:
            raise IndexError(index)
        return next(itertools.islice(self._read(), position, None))

    def __repr__(self) -> str:
        return f"StreamedRows({self._count} rows)"


@dataclass
class Section:
    """One table of a report (one XLSX sheet). ``totals`` is a row aligned with ``columns``, or None. ``rows`` is
    a list, or :class:`StreamedRows` for a table that lists mailboxes (writers iterate it once)."""

    name: str
    title: str
    columns: list[ReportColumn]
    rows: Sequence[dict[str, Any]]
    totals: dict[str, Any] | None = None
    note: str = ""


@dataclass
class Overview:
    """Whole-inventory figures: the headline numbers and the data of the HTML charts."""

    headline: dict[str, Any]
    by_company: list[dict[str, Any]]  # operating_company, mailboxes, total_gb, monthly_cost, monthly_savings
    age_buckets: list[dict[str, Any]]  # label, mailboxes, total_gb
    size_buckets: list[dict[str, Any]]  # label, mailboxes, total_gb
    hold_kinds: list[dict[str, Any]]  # kind, label, mailboxes, total_gb
    expiry: list[dict[str, Any]]  # window, label, mailboxes, monthly_cost


@dataclass
class Report:
    """A built report: the main table, detail sections, notes, headline figures and chart data."""

    kind: str
    title: str
    columns: list[ReportColumn]
    rows: list[dict[str, Any]]
    totals: dict[str, Any] | None
    notes: list[str]
    details: list[Section] = field(default_factory=list)
    name: str = ""  # the main section's name (sheet and --section name)
    by: str | None = None
    currency: str = "EUR"
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    filters: dict[str, Any] = field(default_factory=dict)
    overview: Overview | None = None

    @property
    def headline(self) -> dict[str, Any]:
        return dict(self.overview.headline) if self.overview else {}

    def main_section(self) -> Section:
        return Section(self.name or self.kind, self.title, self.columns, self.rows, self.totals)

    def sections(self) -> list[Section]:
        """The main table first, then the detail tables."""
        return [self.main_section(), *self.details]

    def section(self, name: str | None) -> Section:
        """The section called ``name`` (None: the main one); InputError naming the choices otherwise."""
        if name is None:
            return self.main_section()
        for section in self.sections():
            if section.name == name:
                return section
        choices = ", ".join(s.name for s in self.sections())
        raise InputError(f"the {self.kind} report has no section '{name}' (sections: {choices})")

    def to_dict(self, *, streamed: bool = False) -> dict[str, Any]:
        """The JSON document (``--output json``, ``--format json``); ``--query`` runs over it. ``streamed``
        leaves each section's rows as they are (:class:`StreamedRows` are otherwise read into lists)."""
        return {
            "kind": self.kind,
            "title": self.title,
            "generated_at": self.generated_at,
            "by": self.by,
            "currency": self.currency,
            "filters": self.filters,
            "headline": self.headline,
            "columns": [_column_dict(c) for c in self.columns],
            "rows": self.rows,
            "totals": self.totals,
            "notes": self.notes,
            "sections": [
                {
                    "name": s.name,
                    "title": s.title,
                    "columns": [_column_dict(c) for c in s.columns],
                    "rows": s.rows if streamed else list(s.rows),
                    "totals": s.totals,
                    "note": s.note,
                }
                for s in self.details
            ],
        }


def _column_dict(column: ReportColumn) -> dict[str, str]:
    return {"key": column.key, "header": column.header, "kind": column.kind}


# ------------------------------------------------------------------------------------------ measurements
def as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def total_gb(mailbox: InactiveMailbox) -> float:
    """The whole mailbox in GB (1 GB = 1024 MB): items and Recoverable Items, primary and archive, the quantity cost
    and the size bands use (TotalItemSize + TotalDeletedItemSize of each, Get-MailboxStatistics)."""
    return (
        (mailbox.size_mb or 0.0)
        + (mailbox.recoverable_items_mb or 0.0)
        + (mailbox.archive_size_mb or 0.0)
        + (mailbox.archive_recoverable_items_mb or 0.0)
    ) / 1024


def mailbox_cost(mailbox: InactiveMailbox, cost_model: CostModel | None) -> float:
    """Monthly chargeback of one mailbox, unrounded.

    With a cost model: the former licence's monthly rate (``Unknown``'s rate when the type has none) plus the
    per-GB rate times primary-plus-archive GB, the formula of design §6, so that editing the rates in the
    configuration shows at once without a new sync. Without one: the ``monthly_cost`` imm.domain cached.
    """
    if cost_model is None:
        return float(mailbox.monthly_cost or 0.0)
    return monthly_cost(mailbox, cost_model)


def age_days(mailbox: InactiveMailbox, now: datetime) -> int | None:
    """Whole days since WhenSoftDeleted (to ``now``), else the cached ``age_days``."""
    deleted = as_utc(mailbox.when_soft_deleted)
    if deleted is None:
        return mailbox.age_days
    return max(0, (now - deleted).days)


def expiry_window(mailbox: InactiveMailbox, now: datetime) -> tuple[str, int | None]:
    """(window key of :data:`EXPIRY_WINDOWS`, calendar days from today to the end of the last hold)."""
    expires = as_utc(mailbox.holds_expire_on)
    days = (expires.date() - now.date()).days if expires else None
    if mailbox.releasable:
        return "now", days
    if days is None:
        return "never", None
    if days <= 0:
        return "expired", days
    if days <= 30:
        return "30", days
    if days <= 90:
        return "90", days
    if days <= 365:
        return "365", days
    return "later", days


def blocker_code(blocker: str) -> tuple[str, str]:
    """(code, description) of an imm.domain blocker ``"code: description"``; a bare sentence is its own code."""
    head, sep, tail = blocker.partition(":")
    head = head.strip()
    if sep and head and " " not in head:
        return head, tail.strip()
    return blocker.strip(), ""


def blocker_alternative(code: str) -> str:
    """What to do instead, for an imm.domain blocker code (domain.md §4, §5, §8); "" when none is known."""
    return ALTERNATIVES.get(code, "")


def hold_label(kind: str) -> str:
    return HOLD_KINDS.get(kind, kind)


def hold_order(kinds: Iterable[str]) -> list[str]:
    """Known kinds in :data:`HOLD_KINDS` order, then any others alphabetically."""
    present = set(kinds)
    return [k for k in HOLD_KINDS if k in present] + sorted(present - set(HOLD_KINDS))


def clean_text(value: str | None) -> str:
    return (value or "").strip()


def round2(value: float) -> float:
    return round(value + 0.0, 2)


def round1(value: float) -> float:
    return round(value + 0.0, 1)


# ----------------------------------------------------------------------------------------------- formatting
def format_value(value: Any, kind: str = "text") -> str:
    """A cell for people (terminal table, HTML): thousands separators, two decimals for GB and money."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "auto":
        kind = "int" if isinstance(value, int) else "number" if isinstance(value, float) else "text"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if kind in {"gb", "money", "number"} and isinstance(value, int | float):
        return f"{value:,.2f}"
    if kind == "percent" and isinstance(value, int | float):
        return f"{value:.1f}"
    if kind == "int" and isinstance(value, int | float):
        return f"{value:,.0f}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def is_numeric_cell(value: Any, column: ReportColumn) -> bool:
    if column.numeric:
        return True
    return column.kind == "auto" and isinstance(value, int | float) and not isinstance(value, bool)
