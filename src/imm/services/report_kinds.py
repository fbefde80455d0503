"""The five reports: summary, costs, holds, expiry, eligibility, built from measured mailboxes (no I/O)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from imm.domain.holds import dashed_guid
from imm.domain.lifecycle import SOFT_DELETED
from imm.services.report_model import (
    AGE_BUCKETS,
    EXPIRY_WINDOWS,
    HOLD_KINDS,
    NO_HOLD,
    SIZE_BUCKETS,
    UNATTRIBUTED,
    Overview,
    Report,
    ReportColumn,
    Section,
    age_days,
    as_utc,
    blocker_alternative,
    blocker_code,
    clean_text,
    expiry_window,
    hold_label,
    hold_order,
    mailbox_cost,
    round1,
    round2,
    total_gb,
)

if TYPE_CHECKING:
    from imm.config import CostModel
    from imm.data.models import InactiveMailbox
    from imm.data.report_store import GroupFigures, ReportFigures


# ----------------------------------------------------------------------------------------------- grouping
@dataclass
class _Tally:
    """Running sums for one group of mailboxes."""

    mailboxes: int = 0
    gb: float = 0.0
    cost: float = 0.0
    releasable: int = 0
    releasable_gb: float = 0.0
    savings: float = 0.0
    recoverable: int = 0
    restorable: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    soft_deleted: int = 0  # formerly inactive, soft-deleted, awaiting the purge (counted in ``mailboxes`` too)

    def merge(self, g: GroupFigures) -> None:
        """Add the sums of a group the store aggregated."""
        self.mailboxes += g.mailboxes
        self.gb += g.gb
        self.cost += g.cost
        self.releasable += g.releasable
        self.releasable_gb += g.releasable_gb
        self.savings += g.savings
        self.recoverable += g.recoverable
        self.restorable += g.restorable
        self.soft_deleted += g.soft_deleted
        for moment in (g.oldest, g.newest):
            if moment is not None:
                self.oldest = moment if self.oldest is None or moment < self.oldest else self.oldest
                self.newest = moment if self.newest is None or moment > self.newest else self.newest

    def add(self, mailbox: InactiveMailbox, gb: float, cost: float) -> None:
        self.mailboxes += 1
        self.gb += gb
        self.cost += cost
        if mailbox.releasable:
            self.releasable += 1
            self.releasable_gb += gb
            self.savings += cost
        self.recoverable += bool(mailbox.recovery_eligible)
        self.restorable += bool(mailbox.restore_eligible)
        self.soft_deleted += mailbox.lifecycle_state == SOFT_DELETED
        deleted = as_utc(mailbox.when_soft_deleted)
        if deleted is not None:
            self.oldest = deleted if self.oldest is None or deleted < self.oldest else self.oldest
            self.newest = deleted if self.newest is None or deleted > self.newest else self.newest


def _group_key(mailbox: InactiveMailbox, by: str) -> tuple[str, ...]:
    company = clean_text(mailbox.operating_company) or UNATTRIBUTED
    if by == "department":
        return company, clean_text(mailbox.department) or UNATTRIBUTED
    return (company,)


def _group_columns(by: str) -> list[ReportColumn]:
    columns = [ReportColumn("operating_company", "Company")]
    if by == "department":
        columns.append(ReportColumn("department", "Department"))
    return columns


def _group_fields(key: tuple[str, ...], by: str) -> dict[str, Any]:
    out: dict[str, Any] = {"operating_company": key[0]}
    if by == "department":
        out["department"] = key[1]
    return out


def _total_fields(by: str) -> dict[str, Any]:
    out: dict[str, Any] = {"operating_company": "Total"}
    if by == "department":
        out["department"] = ""
    return out


def _name_key(key: tuple[str, ...]) -> tuple[tuple[bool, str], ...]:
    """Group names in alphabetical order, each part's unattributed value after the named ones."""
    return tuple((part == UNATTRIBUTED, part.lower()) for part in key)


def _sorted_groups(groups: dict[tuple[str, ...], _Tally]) -> list[tuple[tuple[str, ...], _Tally]]:
    """By monthly cost, highest first (then name); unattributed groups last."""
    return sorted(groups.items(), key=lambda kv: (UNATTRIBUTED in kv[0], -round(kv[1].cost, 6), kv[0]))


# ------------------------------------------------------------------------------------------------ overview
@dataclass
class _Measured:
    mailbox: InactiveMailbox
    gb: float
    cost: float
    age: int | None
    window: str
    days_left: int | None


def measure(mailboxes: Sequence[InactiveMailbox], cost_model: CostModel | None, now: datetime) -> list[_Measured]:
    out = []
    for m in mailboxes:
        window, days = expiry_window(m, now)
        out.append(_Measured(m, total_gb(m), mailbox_cost(m, cost_model), age_days(m, now), window, days))
    return out


def overview_of(measured: list[_Measured]) -> Overview:
    total = _Tally()
    companies: dict[tuple[str, ...], _Tally] = {}
    holds: dict[str, list[float]] = {}
    ages: list[int] = []
    age_counts = {label: [0, 0.0] for label, _ in AGE_BUCKETS}
    size_counts = {label: [0, 0.0] for label, _ in SIZE_BUCKETS}
    expiry = {key: [0, 0.0] for key, _ in EXPIRY_WINDOWS}
    primary_gb = archive_gb = 0.0
    items = 0
    unattributed = 0
    tenants: set[str] = set()
    for x in measured:
        m = x.mailbox
        total.add(m, x.gb, x.cost)
        companies.setdefault(_group_key(m, "company"), _Tally()).add(m, x.gb, x.cost)
        primary_gb += ((m.size_mb or 0.0) + (m.recoverable_items_mb or 0.0)) / 1024
        archive_gb += ((m.archive_size_mb or 0.0) + (m.archive_recoverable_items_mb or 0.0)) / 1024
        items += (m.item_count or 0) + (m.archive_item_count or 0)
        unattributed += not clean_text(m.operating_company)
        if m.tenant:
            tenants.add(m.tenant)
        for kind in set(m.hold_types) or {NO_HOLD}:
            tally = holds.setdefault(kind, [0, 0.0])
            tally[0] += 1
            tally[1] += x.gb
        if x.age is not None:
            ages.append(x.age)
            label = _age_label(x.age)
            age_counts[label][0] += 1
            age_counts[label][1] += x.gb
        label = next(lbl for lbl, top in SIZE_BUCKETS if top is None or x.gb < top)
        size_counts[label][0] += 1
        size_counts[label][1] += x.gb
        expiry[x.window][0] += 1
        expiry[x.window][1] += x.cost
    median = round(statistics.median(ages)) if ages else None
    figures = (primary_gb, archive_gb, items, unattributed, median, sorted(tenants))
    return _overview(total, companies, holds, age_counts, size_counts, expiry, figures)


def _age_label(age: int) -> str:
    return next(lbl for lbl, top in AGE_BUCKETS if top is None or age <= top)


def _overview(
    total: _Tally,
    companies: dict[tuple[str, ...], _Tally],
    holds: dict[str, list[float]],
    age_counts: dict[str, list[float]],
    size_counts: dict[str, list[float]],
    expiry: dict[str, list[float]],
    figures: tuple[float, float, int, int, int | None, list[str]],
) -> Overview:
    primary_gb, archive_gb, items, unattributed, median, tenants = figures
    headline = {
        "mailboxes": total.mailboxes,
        "inactive": total.mailboxes - total.soft_deleted,
        "soft_deleted": total.soft_deleted,
        "companies": len([k for k in companies if k[0] != UNATTRIBUTED]),
        "unattributed": unattributed,
        "total_gb": round2(total.gb),
        "primary_gb": round2(primary_gb),
        "archive_gb": round2(archive_gb),
        "items": items,
        "monthly_cost": round2(total.cost),
        "annual_cost": round2(total.cost * 12),
        "recoverable": total.recoverable,
        "recovery_blocked": total.mailboxes - total.recoverable,
        "restorable": total.restorable,
        "restore_blocked": total.mailboxes - total.restorable,
        "releasable": total.releasable,
        "releasable_gb": round2(total.releasable_gb),
        "monthly_savings": round2(total.savings),
        "annual_savings": round2(total.savings * 12),
        "oldest_deleted": total.oldest.date() if total.oldest else None,
        "newest_deleted": total.newest.date() if total.newest else None,
        "median_age_days": median,
        "tenants": tenants,
    }
    return Overview(
        headline=headline,
        by_company=[
            {
                "operating_company": key[0],
                "mailboxes": t.mailboxes,
                "total_gb": round2(t.gb),
                "monthly_cost": round2(t.cost),
                "monthly_savings": round2(t.savings),
            }
            for key, t in _sorted_groups(companies)
        ],
        age_buckets=[{"label": k, "mailboxes": v[0], "total_gb": round2(v[1])} for k, v in age_counts.items()],
        size_buckets=[{"label": k, "mailboxes": v[0], "total_gb": round2(v[1])} for k, v in size_counts.items()],
        hold_kinds=[
            {"kind": k, "label": hold_label(k), "mailboxes": holds[k][0], "total_gb": round2(holds[k][1])}
            for k in [*hold_order(k for k in holds if k != NO_HOLD), *([NO_HOLD] if NO_HOLD in holds else [])]
        ],
        expiry=[
            {"window": k, "label": label, "mailboxes": expiry[k][0], "monthly_cost": round2(expiry[k][1])}
            for k, label in EXPIRY_WINDOWS
        ],
    )


# ------------------------------------------------------------------------------- from the store's aggregates
def tallies_from_figures(figures: ReportFigures, by: str) -> tuple[dict[tuple[str, ...], _Tally], _Tally]:
    """The per-group tallies of :func:`_group_tallies` from the store's groups (merged by their clean names)."""
    groups: dict[tuple[str, ...], _Tally] = {}
    total = _Tally()
    for g in figures.groups:
        company = clean_text(g.company) or UNATTRIBUTED
        key = (company, clean_text(g.department) or UNATTRIBUTED) if by == "department" else (company,)
        for tally in (groups.setdefault(key, _Tally()), total):
            tally.merge(g)
    return groups, total


def overview_from_figures(figures: ReportFigures) -> Overview:
    """:func:`overview_of` from the store's aggregates."""
    companies, total = tallies_from_figures(figures, "company")
    holds: dict[str, list[float]] = {}
    age_counts: dict[str, list[float]] = {label: [0, 0.0] for label, _ in AGE_BUCKETS}
    size_counts: dict[str, list[float]] = {label: [0, 0.0] for label, _ in SIZE_BUCKETS}
    expiry: dict[str, list[float]] = {key: [0, 0.0] for key, _ in EXPIRY_WINDOWS}
    tenants: set[str] = set()
    for age, n, gb in figures.ages:
        bucket = age_counts[_age_label(age)]
        bucket[0] += n
        bucket[1] += gb
    for g in figures.groups:
        for kind in set(g.hold_types) or {NO_HOLD}:
            tally = holds.setdefault(kind, [0, 0.0])
            tally[0] += g.mailboxes
            tally[1] += g.gb
        size = size_counts[SIZE_BUCKETS[g.size_band][0]]
        size[0] += g.mailboxes
        size[1] += g.gb
        expiry[g.window][0] += g.mailboxes
        expiry[g.window][1] += g.cost
        if g.tenant:
            tenants.add(g.tenant)
    primary_gb = sum(g.primary_gb for g in figures.groups)
    archive_gb = sum(g.archive_gb for g in figures.groups)
    items = sum(g.items for g in figures.groups)
    unattributed = sum(g.mailboxes for g in figures.groups if not clean_text(g.company))
    median = _median_age(figures.ages)
    summary = (primary_gb, archive_gb, items, unattributed, median, sorted(tenants))
    return _overview(total, companies, holds, age_counts, size_counts, expiry, summary)


def _median_age(ages: list[tuple[int, int, float]]) -> int | None:
    """``round(statistics.median(every age))`` from (age, count) pairs in ascending order."""
    count = sum(n for _, n, _ in ages)
    if not count:
        return None
    wanted = [(count - 1) // 2, count // 2]
    found: list[int] = []
    seen = 0
    for age, n, _ in ages:
        while wanted and wanted[0] < seen + n:
            found.append(age)
            wanted.pop(0)
        seen += n
    return round(statistics.median(found))


def common_notes(cost_model: CostModel | None, overview: Overview, filters: dict[str, Any]) -> list[str]:
    notes = []
    if cost_model is not None:
        rates = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cost_model.license_month.items()))
        notes.append(
            f"Cost model (per month, {cost_model.currency}): former licence {rates}; plus "
            f"{cost_model.per_gb_month:.4g} per GB of the whole mailbox (items and Recoverable Items, primary and "
            "archive). Inactive mailboxes need no licence: "
            "this is the organisation's chargeback model, set in the profile's [cost] table."
        )
    else:
        notes.append("Costs are the monthly costs cached by the last sync's analysis.")
    notes.append(
        "Savings: what the mailboxes whose holds have all expired cost per month; releasing their holds starts "
        "Exchange's schedule: a 30-day delay hold, then soft-deleted and purged 183 days after the removal, "
        "their content restorable into another mailbox until the purge."
    )
    if filters:
        shown = ", ".join(f"{k}={v}" for k, v in filters.items())
        notes.append(f"Filtered: {shown}.")
    if not overview.headline["mailboxes"]:
        notes.append("No mailbox matches: the cache is empty or the filters exclude every mailbox.")
    return notes


def _money(header: str, currency: str) -> str:
    return f"{header} ({currency})"


def _summary(measured: list[_Measured], overview: Overview, by: str | None, currency: str) -> Report:
    if by is not None:
        return _summary_by(measured, by, currency)
    h = overview.headline
    rows: list[tuple[str, str, Any]] = [
        ("mailboxes", "Inactive mailboxes", h["inactive"]),
        ("soft_deleted", "Soft-deleted, awaiting purge", h["soft_deleted"]),
        ("companies", "Operating companies", h["companies"]),
        ("unattributed", "Mailboxes without a company", h["unattributed"]),
        ("total_gb", "Total size: items and Recoverable Items, primary and archive (GB)", h["total_gb"]),
        ("archive_gb", "Of which archives (GB)", h["archive_gb"]),
        ("items", "Items", h["items"]),
        ("monthly_cost", _money("Monthly cost", currency), h["monthly_cost"]),
        ("annual_cost", _money("Annual cost", currency), h["annual_cost"]),
        ("recoverable", "Recoverable as they are", h["recoverable"]),
        ("recovery_blocked", "Recovery blocked", h["recovery_blocked"]),
        ("restorable", "Restorable as they are", h["restorable"]),
        ("restore_blocked", "Restore blocked", h["restore_blocked"]),
        ("releasable", "Releasable now (every hold expired)", h["releasable"]),
        ("releasable_gb", "Releasable size (GB)", h["releasable_gb"]),
        ("monthly_savings", _money("Monthly saving if released", currency), h["monthly_savings"]),
        ("annual_savings", _money("Annual saving if released", currency), h["annual_savings"]),
        ("oldest_deleted", "Oldest deletion", h["oldest_deleted"]),
        ("newest_deleted", "Newest deletion", h["newest_deleted"]),
        ("median_age_days", "Median age (days)", h["median_age_days"]),
    ]
    counts = {k["kind"]: k["mailboxes"] for k in overview.hold_kinds}
    for kind in [*HOLD_KINDS, *(k for k in counts if k not in HOLD_KINDS)]:
        rows.append((f"hold_{kind}", f"With {hold_label(kind)}", counts.get(kind, 0)))
    return Report(
        kind="summary",
        name="summary",
        title="Inactive mailboxes: summary",
        columns=[ReportColumn("label", "Measure"), ReportColumn("value", "Value", "auto")],
        rows=[{"metric": key, "label": label, "value": value} for key, label, value in rows],
        totals=None,
        notes=[],
    )


def _group_tallies(measured: list[_Measured], by: str) -> tuple[dict[tuple[str, ...], _Tally], _Tally]:
    groups: dict[tuple[str, ...], _Tally] = {}
    total = _Tally()
    for x in measured:
        groups.setdefault(_group_key(x.mailbox, by), _Tally()).add(x.mailbox, x.gb, x.cost)
        total.add(x.mailbox, x.gb, x.cost)
    return groups, total


def _summary_by(measured: list[_Measured], by: str, currency: str) -> Report:
    return summary_by_groups(*_group_tallies(measured, by), by, currency)


def summary_by_groups(groups: dict[tuple[str, ...], _Tally], total: _Tally, by: str, currency: str) -> Report:
    def row(t: _Tally) -> dict[str, Any]:
        return {
            "mailboxes": t.mailboxes,
            "total_gb": round2(t.gb),
            "monthly_cost": round2(t.cost),
            "recoverable": t.recoverable,
            "recovery_blocked": t.mailboxes - t.recoverable,
            "releasable": t.releasable,
            "monthly_savings": round2(t.savings),
            "oldest_deleted": t.oldest.date() if t.oldest else None,
            "newest_deleted": t.newest.date() if t.newest else None,
        }

    return Report(
        kind="summary",
        name="summary",
        by=by,
        title=f"Inactive mailboxes: summary by {by}",
        columns=[
            *_group_columns(by),
            ReportColumn("mailboxes", "Mailboxes", "int"),
            ReportColumn("total_gb", "GB", "gb"),
            ReportColumn("monthly_cost", _money("Monthly cost", currency), "money", short="Cost/mo"),
            ReportColumn("recoverable", "Recoverable", "int", wide=True),
            ReportColumn("recovery_blocked", "Blocked", "int"),
            ReportColumn("releasable", "Releasable", "int"),
            ReportColumn("monthly_savings", _money("Saving if released", currency), "money", short="Saving/mo"),
            ReportColumn("oldest_deleted", "Oldest deletion", "date", wide=True),
            ReportColumn("newest_deleted", "Newest deletion", "date", wide=True),
        ],
        rows=[{**_group_fields(k, by), **row(t)} for k, t in _sorted_groups(groups)],
        totals={**_total_fields(by), **row(total)},
        notes=[],
    )


def _costs(measured: list[_Measured], overview: Overview, by: str | None, currency: str) -> Report:
    by = by or "company"
    return costs_by_groups(*_group_tallies(measured, by), by, currency)


def costs_by_groups(groups: dict[tuple[str, ...], _Tally], total: _Tally, by: str, currency: str) -> Report:
    def row(t: _Tally) -> dict[str, Any]:
        return {
            "mailboxes": t.mailboxes,
            "total_gb": round2(t.gb),
            "monthly_cost": round2(t.cost),
            "annual_cost": round2(t.cost * 12),
            "share_pct": round1(100 * t.cost / total.cost) if total.cost else 0.0,
            "releasable": t.releasable,
            "monthly_savings": round2(t.savings),
            "annual_savings": round2(t.savings * 12),
        }

    notes = []
    if by == "department":
        notes.append("Departments are counted within their company (the same name in two companies is two rows).")
    unattributed = [k for k in groups if UNATTRIBUTED in k]
    if unattributed:
        count = sum(groups[k].mailboxes for k in unattributed)
        notes.append(
            f"{count:,} mailbox(es) have no {by} in the cache and are reported as {UNATTRIBUTED}; map them with "
            "the profile's [org] settings (custom attribute or mapping CSV)."
        )
    return Report(
        kind="costs",
        name="costs",
        by=by,
        title=f"Inactive mailboxes: monthly cost by {by}",
        columns=[
            *_group_columns(by),
            ReportColumn("mailboxes", "Mailboxes", "int"),
            ReportColumn("total_gb", "GB", "gb"),
            ReportColumn("monthly_cost", _money("Monthly cost", currency), "money", short="Cost/mo"),
            ReportColumn("annual_cost", _money("Annual cost", currency), "money", wide=True),
            ReportColumn("share_pct", "Share %", "percent"),
            ReportColumn("releasable", "Releasable", "int", wide=True),
            ReportColumn(
                "monthly_savings",
                _money("Monthly saving if released", currency),
                "money",
                short="Saving/mo",
            ),
            ReportColumn("annual_savings", _money("Annual saving if released", currency), "money", wide=True),
        ],
        rows=[{**_group_fields(k, by), **row(t)} for k, t in _sorted_groups(groups)],
        totals={**_total_fields(by), **row(total)},
        notes=notes,
    )


def _holds(measured: list[_Measured], overview: Overview, by: str | None, currency: str) -> Report:
    tallies: dict[str, list[Any]] = {}  # kind -> [mailboxes, gb, cost, only-this-hold, releasable]
    policies: dict[tuple[str, str, str], list[Any]] = {}  # (kind, name, guid) -> [mailboxes, gb, locked]
    grouped: dict[tuple[tuple[str, ...], str], list[Any]] = {}
    for x in measured:
        m = x.mailbox
        kinds = set(m.hold_types) or {NO_HOLD}
        for kind in kinds:
            t = tallies.setdefault(kind, [0, 0.0, 0.0, 0, 0])
            t[0] += 1
            t[1] += x.gb
            t[2] += x.cost
            t[3] += len(kinds) == 1
            t[4] += bool(m.releasable)
            if by is not None:
                g = grouped.setdefault((_group_key(m, by), kind), [0, 0.0])
                g[0] += 1
                g[1] += x.gb
        _add_policies(policies, m.hold_details or [], x.gb)
    return _holds_report(tallies, policies, grouped, overview, by, currency)


def _add_policies(policies: dict[tuple[str, str, str], list[Any]], details: list[dict[str, Any]], gb: float) -> None:
    """Count one mailbox (``details``: its ``hold_details``) once under each policy or case holding it."""
    seen: set[tuple[str, str, str]] = set()
    for detail in details:
        # Hold.to_dict keys (imm.domain.holds): "guid", "preserves". Only holds that keep mailboxes are listed
        # (an exclusion, a delete-only or a Groups policy does not hold one).
        if not detail.get("preserves", True):
            continue
        name = str(detail.get("policy_name") or "")
        raw_guid = str(detail.get("guid") or "")
        guid = dashed_guid(raw_guid) if raw_guid else ""
        if not (name or guid):
            continue
        key = (str(detail.get("kind") or ""), name, guid)
        if key in seen:
            continue
        seen.add(key)
        p = policies.setdefault(key, [0, 0.0, False])
        p[0] += 1
        p[1] += gb
        locked = True if detail.get("preservation_lock") else detail.get("locked", False)
        if locked:
            p[2] = True
        elif locked is None and p[2] is False:  # the lock could not be read: unknown, never "not locked"
            p[2] = None


def holds_from_store(
    figures: ReportFigures,
    details: Iterable[tuple[str | None, float]],
    overview: Overview,
    by: str | None,
    currency: str,
) -> Report:
    """:func:`_holds` from the store's groups (grouped by department when ``by`` is) and a stream of
    (``hold_details`` JSON, GB) of the mailboxes that have details."""
    tallies: dict[str, list[Any]] = {}
    grouped: dict[tuple[tuple[str, ...], str], list[Any]] = {}
    for g in figures.groups:
        kinds = set(g.hold_types) or {NO_HOLD}
        key = _figures_key(g, by) if by is not None else ()
        for kind in kinds:
            t = tallies.setdefault(kind, [0, 0.0, 0.0, 0, 0])
            t[0] += g.mailboxes
            t[1] += g.gb
            t[2] += g.cost
            t[3] += g.mailboxes if len(kinds) == 1 else 0
            t[4] += g.releasable
            if by is not None:
                cell = grouped.setdefault((key, kind), [0, 0.0])
                cell[0] += g.mailboxes
                cell[1] += g.gb
    policies: dict[tuple[str, str, str], list[Any]] = {}
    for text, gb in details:
        decoded = json.loads(text) if text else []
        _add_policies(policies, decoded if isinstance(decoded, list) else [], gb)
    return _holds_report(tallies, policies, grouped, overview, by, currency)


def _figures_key(g: GroupFigures, by: str) -> tuple[str, ...]:
    """:func:`_group_key` of a stored group."""
    company = clean_text(g.company) or UNATTRIBUTED
    return (company, clean_text(g.department) or UNATTRIBUTED) if by == "department" else (company,)


def _holds_report(
    tallies: dict[str, list[Any]],
    policies: dict[tuple[str, str, str], list[Any]],
    grouped: dict[tuple[tuple[str, ...], str], list[Any]],
    overview: Overview,
    by: str | None,
    currency: str,
) -> Report:
    names: dict[str, list[str]] = {}
    for kind, name, guid in policies:
        names.setdefault(kind, []).append(name or guid)
    order = [*hold_order(k for k in tallies if k != NO_HOLD), *([NO_HOLD] if NO_HOLD in tallies else [])]
    rows = []
    for kind in order:
        t = tallies[kind]
        known = sorted(set(names.get(kind, [])), key=str.lower)
        shown = "; ".join(known[:10]) + (f"; +{len(known) - 10} more" if len(known) > 10 else "")
        rows.append(
            {
                "hold_kind": kind,
                "label": hold_label(kind),
                "mailboxes": t[0],
                "total_gb": round2(t[1]),
                "monthly_cost": round2(t[2]),
                "only_hold": t[3],
                "releasable": t[4],
                "policies": shown,
            }
        )
    h = overview.headline
    totals = {
        "hold_kind": "Total",
        "label": "Distinct mailboxes",
        "mailboxes": h["mailboxes"],
        "total_gb": h["total_gb"],
        "monthly_cost": h["monthly_cost"],
        "only_hold": sum(t[3] for t in tallies.values()),
        "releasable": h["releasable"],
        "policies": "",
    }
    details = [
        Section(
            name="policies",
            title="Retention policies and cases holding mailboxes",
            columns=[
                ReportColumn("hold_kind", "Kind"),
                ReportColumn("policy_name", "Policy or case"),
                ReportColumn("policy_guid", "GUID", "id", wide=True),
                ReportColumn("preservation_lock", "Preservation Lock", short="Locked"),
                ReportColumn("mailboxes", "Mailboxes", "int"),
                ReportColumn("total_gb", "GB", "gb"),
            ],
            rows=[
                {
                    "hold_kind": kind,
                    "policy_name": name or "(policy name unknown)",
                    "policy_guid": guid,
                    "preservation_lock": "yes" if p[2] else ("unknown" if p[2] is None else ""),
                    "mailboxes": p[0],
                    "total_gb": round2(p[1]),
                }
                for (kind, name, guid), p in sorted(
                    policies.items(), key=lambda kv: (-kv[1][0], kv[0][0], kv[0][1].lower(), kv[0][2])
                )
            ],
            note="Policies as resolved by the last sync; a GUID without a name could not be resolved.",
        )
    ]
    if by is not None:
        details.append(
            Section(
                name=f"holds_by_{by}",
                title=f"Hold kinds by {by}",
                columns=[
                    *_group_columns(by),
                    ReportColumn("hold_kind", "Hold kind"),
                    ReportColumn("mailboxes", "Mailboxes", "int"),
                    ReportColumn("total_gb", "GB", "gb"),
                ],
                rows=[
                    {**_group_fields(g, by), "hold_kind": kind, "mailboxes": v[0], "total_gb": round2(v[1])}
                    for (g, kind), v in sorted(
                        grouped.items(),
                        key=lambda kv: (_name_key(kv[0][0]), order.index(kv[0][1])),
                    )
                ],
            )
        )
    return Report(
        kind="holds",
        name="holds",
        by=by,
        title="Inactive mailboxes: holds by kind",
        columns=[
            ReportColumn("hold_kind", "Kind", wide=True),
            ReportColumn("label", "Hold"),
            ReportColumn("mailboxes", "Mailboxes", "int"),
            ReportColumn("total_gb", "GB", "gb"),
            ReportColumn("monthly_cost", _money("Monthly cost", currency), "money", short="Cost/mo"),
            ReportColumn("only_hold", "Only hold", "int", short="Only"),
            ReportColumn("releasable", "Releasable", "int"),
            ReportColumn("policies", "Policies / cases", "long", wide=True),
        ],
        rows=rows,
        totals=totals,
        notes=[
            "A mailbox with several kinds of hold counts once under each kind; the total counts each mailbox once.",
            "Only hold: mailboxes held by this kind alone (releasing it would end their retention).",
            "Org-wide policies are found through the organisation's configuration: an empty InPlaceHolds list "
            "does not mean no hold.",
        ],
        details=details,
    )


def _expiry(measured: list[_Measured], overview: Overview, by: str | None, currency: str) -> Report:
    windows: dict[str, list[Any]] = {k: [0, 0.0, 0.0, None, None] for k, _ in EXPIRY_WINDOWS}
    reasons: dict[str, list[Any]] = {}
    listed: list[_Measured] = []
    grouped: dict[tuple[str, ...], dict[str, list[float]]] = {}
    for x in measured:
        m = x.mailbox
        w = windows[x.window]
        w[0] += 1
        w[1] += x.gb
        w[2] += x.cost
        expires = as_utc(m.holds_expire_on)
        if expires is not None:
            day = expires.date()
            w[3] = day if w[3] is None or day < w[3] else w[3]
            w[4] = day if w[4] is None or day > w[4] else w[4]
        if x.window == "never":
            r = reasons.setdefault(clean_text(m.expiry_reason) or NO_END_DATE, [0, 0.0])
            r[0] += 1
            r[1] += x.gb
        elif x.window in LISTED_WINDOWS:
            listed.append(x)
        if by is not None:
            g = grouped.setdefault(_group_key(m, by), {})
            cell = g.setdefault(x.window, [0, 0.0])
            cell[0] += 1
            cell[1] += x.cost
    labels = dict(EXPIRY_WINDOWS)
    listed.sort(key=lambda x: (as_utc(x.mailbox.holds_expire_on) or datetime.max.replace(tzinfo=UTC), _name(x)))
    rows = [
        expiring_row(
            _name(x),
            x.mailbox,
            _day(x.mailbox.holds_expire_on),
            x.days_left,
            labels[x.window],
            x.gb,
            x.cost,
        )
        for x in listed
    ]
    return _expiry_report(windows, reasons, rows, grouped, overview, by, currency)


NO_END_DATE = "no end date recorded"
LISTED_WINDOWS = ("now", "expired", "30", "90", "365")  # the windows whose mailboxes the expiry report lists


def expiring_row(
    name: str, m: Any, day: date | None, days_left: int | None, window: str, gb: float, cost: float
) -> dict[str, Any]:
    """A row of the expiry report's "mailboxes" section; ``m`` has the mailbox's fields (a record or a row)."""
    return {
        "display_name": name,
        "primary_smtp": m.primary_smtp,
        "operating_company": m.operating_company or "",
        "department": m.department or "",
        "holds_expire_on": day,
        "days_left": days_left,
        "window": window,
        "hold_types": ", ".join(hold_order(m.hold_types)),
        "expiry_reason": m.expiry_reason or "",
        "total_gb": round2(gb),
        "monthly_cost": round2(cost),
        "identity": m.identity,
    }


def expiry_from_store(
    figures: ReportFigures,
    reasons: Iterable[tuple[str | None, int, float]],
    listed: Sequence[dict[str, Any]],
    overview: Overview,
    by: str | None,
    currency: str,
) -> Report:
    """:func:`_expiry` from the store's groups, the (expiry_reason, mailboxes, GB) of the "never" window, and the
    rows of the mailboxes section (streamed from the store, in order)."""
    windows: dict[str, list[Any]] = {k: [0, 0.0, 0.0, None, None] for k, _ in EXPIRY_WINDOWS}
    grouped: dict[tuple[str, ...], dict[str, list[float]]] = {}
    for g in figures.groups:
        w = windows[g.window]
        w[0] += g.mailboxes
        w[1] += g.gb
        w[2] += g.cost
        for day in (date.fromisoformat(d) for d in (g.first_expiry, g.last_expiry) if d):
            w[3] = day if w[3] is None or day < w[3] else w[3]
            w[4] = day if w[4] is None or day > w[4] else w[4]
        if by is not None:
            cell = grouped.setdefault(_figures_key(g, by), {}).setdefault(g.window, [0, 0.0])
            cell[0] += g.mailboxes
            cell[1] += g.cost
    merged: dict[str, list[Any]] = {}
    for reason, n, gb in reasons:
        r = merged.setdefault(clean_text(reason) or NO_END_DATE, [0, 0.0])
        r[0] += n
        r[1] += gb
    return _expiry_report(windows, merged, listed, grouped, overview, by, currency)


def _expiry_report(
    windows: dict[str, list[Any]],
    reasons: dict[str, list[Any]],
    listed: Sequence[dict[str, Any]],
    grouped: dict[tuple[str, ...], dict[str, list[float]]],
    overview: Overview,
    by: str | None,
    currency: str,
) -> Report:
    labels = dict(EXPIRY_WINDOWS)
    rows = [
        {
            "window": key,
            "label": labels[key],
            "mailboxes": w[0],
            "total_gb": round2(w[1]),
            "monthly_cost": round2(w[2]),
            "first_date": w[3],
            "last_date": w[4],
        }
        for key, w in windows.items()
        if key != "expired" or w[0]
    ]
    details = [
        Section(
            name="mailboxes",
            title="Mailboxes releasable now or within a year",
            columns=[
                ReportColumn("display_name", "Name"),
                ReportColumn("primary_smtp", "SMTP"),
                ReportColumn("operating_company", "Company"),
                ReportColumn("department", "Department", wide=True),
                ReportColumn("holds_expire_on", "Holds end", "date"),
                ReportColumn("days_left", "Days left", "int"),
                ReportColumn("window", "Window", wide=True),
                ReportColumn("hold_types", "Holds"),
                ReportColumn("expiry_reason", "Reason", "long", wide=True),
                ReportColumn("total_gb", "GB", "gb", wide=True),
                ReportColumn("monthly_cost", _money("Monthly cost", currency), "money", short="Cost/mo", wide=True),
                ReportColumn("identity", "ExchangeGuid", "id", wide=True),
            ],
            rows=listed,
            note="Days left is negative when the end date has passed.",
        ),
        Section(
            name="never",
            title="Why the other holds never end by themselves",
            columns=[
                ReportColumn("reason", "Reason", "long"),  # a sentence: folded, never cut (rows would look alike)
                ReportColumn("mailboxes", "Mailboxes", "int"),
                ReportColumn("total_gb", "GB", "gb"),
            ],
            rows=[
                {"reason": reason, "mailboxes": r[0], "total_gb": round2(r[1])}
                for reason, r in sorted(reasons.items(), key=lambda kv: (-kv[1][0], kv[0]))
            ],
        ),
    ]
    if by is not None:
        keys = ("now", "30", "90", "365")
        details.append(
            Section(
                name=f"expiry_by_{by}",
                title=f"Releasable and expiring by {by}",
                columns=[
                    *_group_columns(by),
                    ReportColumn("releasable", "Releasable now", "int"),
                    ReportColumn("monthly_savings", _money("Monthly saving", currency), "money", short="Saving/mo"),
                    ReportColumn("within_30", "≤ 30 days", "int"),
                    ReportColumn("within_90", "31–90 days", "int"),
                    ReportColumn("within_365", "91–365 days", "int"),
                ],
                rows=[
                    {
                        **_group_fields(g, by),
                        "releasable": int(cells.get("now", [0, 0.0])[0]),
                        "monthly_savings": round2(cells.get("now", [0, 0.0])[1]),
                        "within_30": int(cells.get("30", [0, 0.0])[0]),
                        "within_90": int(cells.get("90", [0, 0.0])[0]),
                        "within_365": int(cells.get("365", [0, 0.0])[0]),
                    }
                    for g, cells in sorted(grouped.items(), key=lambda kv: _name_key(kv[0]))
                    if any(cells.get(k) for k in keys)
                ],
            )
        )
    h = overview.headline
    return Report(
        kind="expiry",
        name="expiry",
        by=by,
        title="Inactive mailboxes: when their holds end",
        columns=[
            ReportColumn("label", "Window"),
            ReportColumn("mailboxes", "Mailboxes", "int"),
            ReportColumn("total_gb", "GB", "gb"),
            ReportColumn("monthly_cost", _money("Monthly cost", currency), "money", short="Cost/mo"),
            ReportColumn("first_date", "First end date", "date", short="First end"),
            ReportColumn("last_date", "Last end date", "date", short="Last end"),
        ],
        rows=rows,
        totals={
            "window": "total",
            "label": "Total",
            "mailboxes": h["mailboxes"],
            "total_gb": h["total_gb"],
            "monthly_cost": h["monthly_cost"],
            "first_date": None,
            "last_date": None,
        },
        notes=[
            "Releasable now: every hold has ended (e.g. deletion date + Litigation Hold duration). Unlimited "
            "holds, eDiscovery holds and Preservation-Locked policies never end by themselves.",
            "Windows count calendar days from today; the monthly cost of 'Releasable now' is what releasing "
            "would save.",
        ],
        details=details,
    )


def _eligibility(measured: list[_Measured], overview: Overview, by: str | None, currency: str) -> Report:
    counts: dict[tuple[str, str], list[Any]] = {}  # (action, code) -> [mailboxes, gb, description]
    eligible = {"recover": [0, 0.0], "restore": [0, 0.0]}
    blocked_rows = []
    grouped: dict[tuple[str, ...], list[int]] = {}
    for x in measured:
        m = x.mailbox
        for action, ok in (("recover", m.recovery_eligible), ("restore", m.restore_eligible)):
            if ok:
                eligible[action][0] += 1
                eligible[action][1] += x.gb
        _count_blockers(counts, m.recovery_eligible, m.recovery_blockers, m.restore_eligible, m.restore_blockers, x.gb)
        if not (m.recovery_eligible and m.restore_eligible):
            blocked_rows.append(blocked_row(_name(x), m, m.recovery_blockers, m.restore_blockers))
        if by is not None:
            g = grouped.setdefault(_group_key(m, by), [0, 0, 0])
            g[0] += 1
            g[1] += bool(m.recovery_eligible)
            g[2] += bool(m.restore_eligible)
    blocked_rows.sort(key=lambda r: (str(r["display_name"]).lower(), r["identity"]))
    return _eligibility_report(counts, eligible, blocked_rows, grouped, overview, by)


def _count_blockers(
    counts: dict[tuple[str, str], list[Any]],
    recoverable: bool,
    recovery_blockers: Sequence[str],
    restorable: bool,
    restore_blockers: Sequence[str],
    gb: float,
) -> None:
    """Count one mailbox once under each blocker code of each action it is not eligible for."""
    actions = (("recover", recoverable, recovery_blockers), ("restore", restorable, restore_blockers))
    for action, ok, blockers in actions:
        if ok:
            continue
        codes: dict[str, str] = {}
        for blocker in blockers or ["unknown: blocked, no reason recorded"]:
            code, description = blocker_code(blocker)
            codes.setdefault(code, description)
        for code, description in codes.items():
            c = counts.setdefault((action, code), [0, 0.0, description])
            c[0] += 1
            c[1] += gb
            c[2] = c[2] or description


def blocked_row(name: str, m: Any, recovery_blockers: Sequence[str], restore_blockers: Sequence[str]) -> dict[str, Any]:
    """A row of the eligibility report's "blocked" section; ``m`` has the mailbox's fields (record or row)."""
    return {
        "display_name": name,
        "primary_smtp": m.primary_smtp,
        "operating_company": m.operating_company or "",
        "department": m.department or "",
        "recovery_eligible": bool(m.recovery_eligible),
        "recovery_blockers": "; ".join(recovery_blockers),
        "restore_eligible": bool(m.restore_eligible),
        "restore_blockers": "; ".join(restore_blockers),
        "identity": m.identity,
    }


def eligibility_from_store(
    figures: ReportFigures,
    blockers: Iterable[tuple[int, str | None, int, str | None, float]],
    blocked: Sequence[dict[str, Any]],
    overview: Overview,
    by: str | None,
) -> Report:
    """:func:`_eligibility` from the store's groups, a stream of (recoverable, recovery_blockers JSON,
    restorable, restore_blockers JSON, GB) of the blocked mailboxes in identity order, and the rows of the
    blocked section (streamed from the store, in order)."""
    eligible = {"recover": [0, 0.0], "restore": [0, 0.0]}
    grouped: dict[tuple[str, ...], list[int]] = {}
    for g in figures.groups:
        eligible["recover"][0] += g.recoverable
        eligible["recover"][1] += g.recoverable_gb
        eligible["restore"][0] += g.restorable
        eligible["restore"][1] += g.restorable_gb
        if by is not None:
            cell = grouped.setdefault(_figures_key(g, by), [0, 0, 0])
            cell[0] += g.mailboxes
            cell[1] += g.recoverable
            cell[2] += g.restorable
    counts: dict[tuple[str, str], list[Any]] = {}
    for recoverable, recovery, restorable, restore, gb in blockers:
        _count_blockers(counts, bool(recoverable), _texts(recovery), bool(restorable), _texts(restore), gb)
    return _eligibility_report(counts, eligible, blocked, grouped, overview, by)


def _texts(text: str | None) -> list[str]:
    if not text or text == "[]":
        return []
    value = json.loads(text)
    return [str(v) for v in value] if isinstance(value, list) else []


def _eligibility_report(
    counts: dict[tuple[str, str], list[Any]],
    eligible: dict[str, list[Any]],
    blocked_rows: Sequence[dict[str, Any]],
    grouped: dict[tuple[str, ...], list[int]],
    overview: Overview,
    by: str | None,
) -> Report:
    rows: list[dict[str, Any]] = []
    for action in ("recover", "restore"):
        rows.append(
            {
                "action": action,
                "outcome": "eligible",
                "description": f"Can be {'recovered' if action == 'recover' else 'restored'} as it is",
                "mailboxes": eligible[action][0],
                "total_gb": round2(eligible[action][1]),
                "alternative": "",
            }
        )
        blocked = sorted(((c, v) for (a, c), v in counts.items() if a == action), key=lambda kv: (-kv[1][0], kv[0]))
        for code, v in blocked:
            rows.append(
                {
                    "action": action,
                    "outcome": code,
                    "description": v[2],
                    "mailboxes": v[0],
                    "total_gb": round2(v[1]),
                    "alternative": blocker_alternative(code),
                }
            )
    h = overview.headline
    details = [
        Section(
            name="blocked",
            title="Mailboxes that cannot be recovered or restored as they are",
            columns=[
                ReportColumn("display_name", "Name"),
                ReportColumn("primary_smtp", "SMTP"),
                ReportColumn("operating_company", "Company"),
                ReportColumn("department", "Department", wide=True),
                ReportColumn("recovery_eligible", "Recoverable", "bool", wide=True),
                ReportColumn("recovery_blockers", "Recovery blockers", "long"),
                ReportColumn("restore_eligible", "Restorable", "bool", wide=True),
                ReportColumn("restore_blockers", "Restore blockers", "long"),
                ReportColumn("identity", "ExchangeGuid", "id", wide=True),
            ],
            rows=blocked_rows,
        )
    ]
    if by is not None:
        details.append(
            Section(
                name=f"eligibility_by_{by}",
                title=f"Eligibility by {by}",
                columns=[
                    *_group_columns(by),
                    ReportColumn("mailboxes", "Mailboxes", "int"),
                    ReportColumn("recoverable", "Recoverable", "int"),
                    ReportColumn("recovery_blocked", "Recovery blocked", "int"),
                    ReportColumn("restorable", "Restorable", "int"),
                    ReportColumn("restore_blocked", "Restore blocked", "int"),
                ],
                rows=[
                    {
                        **_group_fields(g, by),
                        "mailboxes": v[0],
                        "recoverable": v[1],
                        "recovery_blocked": v[0] - v[1],
                        "restorable": v[2],
                        "restore_blocked": v[0] - v[2],
                    }
                    for g, v in sorted(grouped.items(), key=lambda kv: _name_key(kv[0]))
                ],
            )
        )
    return Report(
        kind="eligibility",
        name="eligibility",
        by=by,
        title="Inactive mailboxes: recover and restore eligibility",
        columns=[
            ReportColumn("action", "Action"),
            ReportColumn("outcome", "Outcome"),
            ReportColumn("description", "Description", "long", wide=True),
            ReportColumn("mailboxes", "Mailboxes", "int"),
            ReportColumn("total_gb", "GB", "gb"),
            ReportColumn("alternative", "Documented alternative", "long"),
        ],
        rows=rows,
        totals={
            "action": "Total",
            "outcome": "",
            "description": (
                f"{h['recoverable']:,} recoverable, {h['recovery_blocked']:,} blocked; "
                f"{h['restorable']:,} restorable, {h['restore_blocked']:,} blocked"
            ),
            "mailboxes": h["mailboxes"],
            "total_gb": h["total_gb"],
            "alternative": "",
        },
        notes=[
            "Recover makes a new active mailbox from the inactive one (which is consumed; it needs a licence); "
            "restore copies the content into an existing mailbox (the inactive one stays).",
            "A mailbox with several blockers counts once under each of them.",
        ],
        details=details,
    )


def _name(x: _Measured) -> str:
    return x.mailbox.display_name or x.mailbox.name or x.mailbox.primary_smtp or x.mailbox.identity


def _day(moment: datetime | None) -> date | None:
    aware = as_utc(moment)
    return aware.date() if aware else None


BUILDERS: dict[str, Callable[[list[_Measured], Overview, str | None, str], Report]] = {
    "summary": _summary,
    "costs": _costs,
    "holds": _holds,
    "expiry": _expiry,
    "eligibility": _eligibility,
}
