"""The HTML report: one self-contained page (inline CSS, inline SVG charts drawn here, no script, no network).

Every text that comes from data (names, companies, policy names, notes) goes through :func:`html.escape`, in
tables and inside the SVG alike; the page's Content-Security-Policy forbids scripts and remote content, so
even a missed escape could not run code or fetch anything.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from importlib import resources
from string import Template
from typing import Any

from imm import __version__
from imm.services.report_model import (
    HTML_MAX_ROWS,
    Overview,
    Report,
    Section,
    format_value,
    is_numeric_cell,
)

CHART_WIDTH = 560
MAX_BARS = 10  # companies beyond these are summed as "Other"
COLORS = {
    "mailboxes": "#3b6fd8",
    "cost": "#0f8b8d",
    "age": "#7c5cc4",
    "size": "#c47f17",
    "holds": "#56657d",
    "saving": "#2e9d5b",
    "kept": "#b8c2cc",
    "expiry": "#2e9d5b",
}


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _count(value: float) -> str:
    return f"{value:,.0f}"


# ------------------------------------------------------------------------------------------------- charts
def _svg(chart_id: str, title: str, height: int, body: list[str]) -> str:
    return (
        f'<svg id="svg-{chart_id}" viewBox="0 0 {CHART_WIDTH} {height}" role="img" '
        f'aria-labelledby="svg-{chart_id}-title" preserveAspectRatio="xMinYMin meet">'
        f'<title id="svg-{chart_id}-title">{esc(title)}</title>' + "".join(body) + "</svg>"
    )


def _empty(chart_id: str, title: str) -> str:
    return _svg(
        chart_id,
        title,
        60,
        ['<text x="10" y="35" class="lbl">No mailboxes to chart.</text>'],
    )


def hbar_chart(
    chart_id: str,
    title: str,
    items: Sequence[tuple[str, float]],
    fmt: Callable[[float], str],
    color: str,
) -> str:
    """Horizontal bars, one per (label, value), the value printed after each bar."""
    if not items or not any(v for _, v in items):
        return _empty(chart_id, title)
    row, top, label_w, value_w = 26, 6, 180, 84
    span = CHART_WIDTH - label_w - value_w - 10
    peak = max(v for _, v in items) or 1.0
    height = top + row * len(items) + 6
    body = [f'<line class="axis" x1="{label_w}" y1="{top}" x2="{label_w}" y2="{height - 4}"/>']
    for i, (label, value) in enumerate(items):
        y = top + i * row
        width = max(0.0, span * value / peak)
        body.append(
            f"<g><title>{esc(label)}: {esc(fmt(value))}</title>"
            f'<text class="lbl" x="{label_w - 8}" y="{y + 17}" text-anchor="end">{esc(_clip(label, 26))}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{width:.1f}" height="{row - 8}" rx="2" fill="{color}"/>'
            f'<text class="value" x="{label_w + width + 6:.1f}" y="{y + 17}">{esc(fmt(value))}</text></g>'
        )
    return _svg(chart_id, title, height, body)


def vbar_chart(
    chart_id: str,
    title: str,
    items: Sequence[tuple[str, float]],
    fmt: Callable[[float], str],
    color: str,
) -> str:
    """Vertical bars (a distribution), labels under the bars and values above them."""
    if not items or not any(v for _, v in items):
        return _empty(chart_id, title)
    height, top, bottom, left = 230, 22, 40, 10
    plot = height - top - bottom
    slot = (CHART_WIDTH - 2 * left) / len(items)
    bar = min(56.0, slot * 0.7)
    peak = max(v for _, v in items) or 1.0
    base = top + plot
    fits = int(slot / 6.5)  # characters of 11 px text that fit under one bar
    split = any(len(label) > fits for label, _ in items)
    labels = [_two_lines(label) if split else (label, "") for label, _ in items]
    body = [f'<line class="axis" x1="{left}" y1="{base}" x2="{CHART_WIDTH - left}" y2="{base}"/>']
    for i, (label, value) in enumerate(items):
        cx = left + slot * i + slot / 2
        h = plot * value / peak
        body.append(
            f"<g><title>{esc(label)}: {esc(fmt(value))}</title>"
            f'<rect x="{cx - bar / 2:.1f}" y="{base - h:.1f}" width="{bar:.1f}" height="{h:.1f}" rx="2" '
            f'fill="{color}"/>'
            f'<text class="value" x="{cx:.1f}" y="{base - h - 5:.1f}" text-anchor="middle">{esc(fmt(value))}</text>'
            + _under(cx, base, labels[i])
            + "</g>"
        )
    return _svg(chart_id, title, height, body)


def _two_lines(label: str) -> tuple[str, str]:
    """Split a label at the space nearest its middle (the first of two equally near)."""
    spaces = [i for i, ch in enumerate(label) if ch == " "]
    if not spaces:
        return label, ""
    cut = min(spaces, key=lambda i: abs(i - len(label) / 2))
    return label[:cut], label[cut + 1 :]


def _under(cx: float, base: float, lines: tuple[str, str]) -> str:
    out = f'<text class="small" x="{cx:.1f}" y="{base + 16}" text-anchor="middle">{esc(_clip(lines[0], 16))}</text>'
    if lines[1]:
        out += (
            f'<text class="small" x="{cx:.1f}" y="{base + 30}" text-anchor="middle">{esc(_clip(lines[1], 16))}</text>'
        )
    return out


def stacked_chart(
    chart_id: str,
    title: str,
    items: Sequence[tuple[str, float, float]],
    fmt: Callable[[float], str],
    colors: tuple[str, str],
    legend: tuple[str, str],
) -> str:
    """Horizontal bars split in two parts (kept, saved) per label, with a legend; the saving printed after."""
    if not items or not any(a + b for _, a, b in items):
        return _empty(chart_id, title)
    row, top, label_w, value_w = 26, 30, 180, 110
    span = CHART_WIDTH - label_w - value_w - 10
    peak = max(a + b for _, a, b in items) or 1.0
    height = top + row * len(items) + 6
    body = [
        f'<rect x="{label_w}" y="6" width="12" height="12" fill="{colors[0]}"/>'
        f'<text class="small" x="{label_w + 18}" y="16">{esc(legend[0])}</text>'
        f'<rect x="{label_w + 190}" y="6" width="12" height="12" fill="{colors[1]}"/>'
        f'<text class="small" x="{label_w + 208}" y="16">{esc(legend[1])}</text>',
        f'<line class="axis" x1="{label_w}" y1="{top}" x2="{label_w}" y2="{height - 4}"/>',
    ]
    for i, (label, kept, saved) in enumerate(items):
        y = top + i * row
        w1 = span * kept / peak
        w2 = span * saved / peak
        body.append(
            f"<g><title>{esc(label)}: {esc(legend[0])} {esc(fmt(kept))}, {esc(legend[1])} {esc(fmt(saved))}"
            "</title>"
            f'<text class="lbl" x="{label_w - 8}" y="{y + 17}" text-anchor="end">{esc(_clip(label, 26))}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w1:.1f}" height="{row - 8}" fill="{colors[0]}"/>'
            f'<rect x="{label_w + w1:.1f}" y="{y + 4}" width="{w2:.1f}" height="{row - 8}" fill="{colors[1]}"/>'
            f'<text class="value" x="{label_w + w1 + w2 + 6:.1f}" y="{y + 17}">'
            f"{esc('saves ' + fmt(saved) if saved else '–')}</text></g>"
        )
    return _svg(chart_id, title, height, body)


def _top(rows: list[dict[str, Any]], keys: Sequence[str]) -> list[tuple[str, list[float]]]:
    """Companies, largest first (the overview's order), the rest summed as 'Other (n)'."""
    out = [(str(r["operating_company"]), [float(r[k]) for k in keys]) for r in rows[:MAX_BARS]]
    rest = rows[MAX_BARS:]
    if rest:
        out.append((f"Other ({len(rest)})", [sum(float(r[k]) for r in rest) for k in keys]))
    return out


def _figure(chart_id: str, title: str, svg: str, note: str = "") -> str:
    extra = f'<p class="chart-note">{esc(note)}</p>' if note else ""
    return (
        f'<figure class="chart" id="chart-{chart_id}" data-chart="{chart_id}">'
        f"<figcaption>{esc(title)}</figcaption>{svg}{extra}</figure>"
    )


def charts(overview: Overview, currency: str) -> list[str]:
    """The figures of the page, in reading order."""
    money = _money
    by_count = sorted(overview.by_company, key=lambda r: (-r["mailboxes"], str(r["operating_company"])))
    companies = _top(by_count, ["mailboxes"])
    costs = _top(overview.by_company, ["monthly_cost", "monthly_savings"])
    h = overview.headline
    out = [
        _figure(
            "company-mailboxes",
            "Mailboxes by company",
            hbar_chart(
                "company-mailboxes",
                "Mailboxes by company",
                [(n, v[0]) for n, v in companies],
                _count,
                COLORS["mailboxes"],
            ),
        ),
        _figure(
            "company-cost",
            f"Monthly cost by company ({currency})",
            hbar_chart("company-cost", "Monthly cost by company", [(n, v[0]) for n, v in costs], money, COLORS["cost"]),
        ),
        _figure(
            "age",
            "Age since deletion",
            vbar_chart(
                "age",
                "Mailboxes by age since deletion",
                [(b["label"], b["mailboxes"]) for b in overview.age_buckets],
                _count,
                COLORS["age"],
            ),
            "Mailboxes per age band.",
        ),
        _figure(
            "size",
            "Total size (items and Recoverable Items, primary and archive)",
            vbar_chart(
                "size",
                "Mailboxes by size",
                [(b["label"], b["mailboxes"]) for b in overview.size_buckets],
                _count,
                COLORS["size"],
            ),
            "Mailboxes per size band.",
        ),
        _figure(
            "savings",
            f"What releasing expired holds would save ({currency} per month)",
            stacked_chart(
                "savings",
                "Monthly cost by company, split into what stays and what releasing expired holds would save",
                [(n, v[0] - v[1], v[1]) for n, v in costs],
                money,
                (COLORS["kept"], COLORS["saving"]),
                ("stays", "saved by release"),
            ),
            f"Releasing the {h['releasable']:,} mailboxes whose holds have all expired would save "
            f"{money(h['monthly_savings'])} {currency} per month ({money(h['annual_savings'])} per year).",
        ),
        _figure(
            "expiry",
            f"When holds end: monthly cost of the mailboxes ({currency})",
            vbar_chart(
                "expiry",
                "Monthly cost by when the holds end",
                [(e["label"], e["monthly_cost"]) for e in overview.expiry if e["window"] in {"now", "30", "90", "365"}],
                money,
                COLORS["expiry"],
            ),
            "Releasable now, and mailboxes whose last hold ends within 30, 31–90 and 91–365 days.",
        ),
        _figure(
            "holds",
            "Hold kinds",
            hbar_chart(
                "holds",
                "Mailboxes per kind of hold",
                [(k["label"], k["mailboxes"]) for k in overview.hold_kinds],
                _count,
                COLORS["holds"],
            ),
            "A mailbox with several kinds of hold counts under each.",
        ),
    ]
    return out


# ------------------------------------------------------------------------------------------------- tables
_CSS = {"long": ' class="long"', "id": ' class="id"', "date": ' class="date"'}


def _cell(value: Any, column: Any) -> str:
    numeric = is_numeric_cell(value, column) or column.kind == "auto"
    css = ' class="num"' if numeric else _CSS.get(column.kind, "")
    return f"<td{css}>{esc(format_value(value, column.kind))}</td>"


def table(section: Section, anchor: str) -> str:
    """A section as an HTML table (at most :data:`HTML_MAX_ROWS` rows; the totals row in the footer)."""
    num = ' class="num"'
    head = "".join(
        f'<th scope="col"{num if c.numeric or c.kind == "auto" else ""}>{esc(c.header)}</th>' for c in section.columns
    )
    rows = section.rows[:HTML_MAX_ROWS]
    body = "".join("<tr>" + "".join(_cell(r.get(c.key), c) for c in section.columns) + "</tr>" for r in rows)
    if not rows:
        body = f'<tr><td colspan="{len(section.columns)}">None.</td></tr>'
    foot = ""
    if section.totals:
        foot = "<tfoot><tr>" + "".join(_cell(section.totals.get(c.key), c) for c in section.columns) + "</tr></tfoot>"
    kv = ' class="kv"' if any(c.kind == "auto" for c in section.columns) else ""
    notes = []
    if len(section.rows) > HTML_MAX_ROWS:
        notes.append(
            f"The first {HTML_MAX_ROWS:,} of {len(section.rows):,} rows; the CSV, XLSX and JSON formats hold them all."
        )
    if section.note:
        notes.append(section.note)
    note = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    return (
        f'<section class="table-section" id="section-{esc(anchor)}"><h2>{esc(section.title)}</h2>'
        f'<div class="table-wrap"><table{kv}><thead><tr>{head}</tr></thead><tbody>{body}</tbody>{foot}</table></div>'
        f"{note}</section>"
    )


# --------------------------------------------------------------------------------------------------- page
def _kpi(key: str, label: str, value: str, sub: str = "", css: str = "", unit: str = "") -> str:
    extra = f'<div class="sub">{esc(sub)}</div>' if sub else ""
    units = f'<span class="unit"> {esc(unit)}</span>' if unit else ""
    return (
        f'<div class="kpi {css}" id="kpi-{key}" data-value="{esc(value)}"><div class="label">{esc(label)}</div>'
        f'<div class="value">{esc(value)}{units}</div>{extra}</div>'
    )


def kpis(overview: Overview, currency: str) -> list[str]:
    h = overview.headline
    return [
        _kpi(
            "mailboxes",
            "Inactive mailboxes",
            _count(h["inactive"]),
            f"{h['companies']:,} companies, {h['unattributed']:,} unattributed"
            + (f"; {h['soft_deleted']:,} soft-deleted, awaiting purge" if h["soft_deleted"] else ""),
        ),
        _kpi(
            "total-gb",
            "Total size",
            f"{h['total_gb']:,.2f}",
            f"of which archives {h['archive_gb']:,.2f} GB",
            unit="GB",
        ),
        _kpi(
            "monthly-cost",
            "Monthly cost",
            _money(h["monthly_cost"]),
            f"{_money(h['annual_cost'])} {currency} per year",
            unit=currency,
        ),
        _kpi(
            "recoverable",
            "Recoverable",
            _count(h["recoverable"]),
            f"{h['recovery_blocked']:,} blocked; {h['restorable']:,} restorable",
        ),
        _kpi("releasable", "Releasable now", _count(h["releasable"]), f"{h['releasable_gb']:,.2f} GB, holds expired"),
        _kpi(
            "monthly-savings",
            "Saving if released",
            _money(h["monthly_savings"]),
            f"{_money(h['annual_savings'])} {currency} per year",
            "saving",
            unit=currency,
        ),
    ]


def render_html(report: Report, overview: Overview) -> str:
    """The whole page as text."""
    template = Template(resources.files("imm.services").joinpath("templates/report.html").read_text("utf-8"))
    h = overview.headline
    parts = [f"Generated {report.generated_at.strftime('%Y-%m-%d %H:%M')} UTC"]
    if h.get("tenants"):
        parts.append("tenant " + ", ".join(h["tenants"]))
    parts.append(f"{h['inactive']:,} inactive mailboxes")
    if h["soft_deleted"]:
        parts.append(f"{h['soft_deleted']:,} soft-deleted, awaiting purge")
    if report.filters:
        parts.append("filtered: " + ", ".join(f"{k}={v}" for k, v in report.filters.items()))
    parts.append(f"amounts in {report.currency} per month unless stated")
    tables = [table(s, s.name) for s in report.sections()]
    return template.substitute(
        version=esc(__version__),
        title=esc(report.title),
        subtitle=esc(" · ".join(parts)),
        kpis="\n".join(kpis(overview, report.currency)),
        charts="\n".join(charts(overview, report.currency)),
        tables="\n".join(tables),
        notes="\n".join(f"<li>{esc(n)}</li>" for n in report.notes),
    )
