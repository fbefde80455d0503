"""The XLSX report (openpyxl): one sheet per section, then an "About" sheet with the notes.

Each sheet: a bold header row (frozen, with a filter), the rows, and a bold "Total" row when the section has
totals. Numbers are stored as numbers with a number format, dates as dates; text goes through
:func:`imm.cli.output.csv_cell`, so a name such as ``=HYPERLINK(…)`` is stored as inert text, and characters
that XML cannot hold are dropped.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

from imm.services.report_model import Report, ReportColumn, Section, is_numeric_cell

FORMATS = {"int": "#,##0", "gb": "#,##0.00", "money": "#,##0.00", "percent": "0.0", "number": "#,##0.00"}
_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_SHEET_BAD = re.compile(r"[\[\]:*?/\\]")


def sheet_title(name: str, taken: set[str]) -> str:
    """A valid, unique sheet name (31 characters, none of []:*?/\\)."""
    base = _SHEET_BAD.sub("_", name)[:31] or "Sheet"
    title, n = base, 2
    while title.lower() in taken:
        suffix = f" {n}"
        title = base[: 31 - len(suffix)] + suffix
        n += 1
    taken.add(title.lower())
    return title


def cell_value(value: Any, column: ReportColumn) -> Any:
    """What goes into the cell: numbers and dates as themselves, everything else as safe text."""
    from imm.cli.output import csv_cell

    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)  # Excel has no time zones; imm's times are UTC
    if isinstance(value, date):
        return value
    if isinstance(value, int | float) and is_numeric_cell(value, column):
        return value
    return _ILLEGAL.sub("", csv_cell(value))


def _number_format(value: Any, column: ReportColumn) -> str | None:
    if isinstance(value, datetime):
        return "yyyy-mm-dd hh:mm"
    if isinstance(value, date):
        return "yyyy-mm-dd"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if column.kind == "auto":
        return FORMATS["int"] if isinstance(value, int) else FORMATS["number"]
    return FORMATS.get(column.kind)


def _write_section(ws: Any, section: Section) -> None:
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    bold = Font(bold=True)
    ws.append([c.header for c in section.columns])
    for cell in ws[1]:
        cell.font = bold
    rows = list(section.rows)
    if section.totals:
        rows.append(section.totals)
    widths = [len(c.header) for c in section.columns]
    for r, row in enumerate(rows, start=2):
        for i, column in enumerate(section.columns):
            raw = row.get(column.key)
            cell = ws.cell(row=r, column=i + 1, value=cell_value(raw, column))
            fmt = _number_format(raw, column)
            if fmt:
                cell.number_format = fmt
            if cell.data_type == "f":  # never a formula (csv_cell already neutralised it; belt and braces)
                cell.data_type = "s"
            widths[i] = max(widths[i], min(60, len(str(cell.value)) if cell.value is not None else 0))
    if section.totals:
        for cell in ws[len(rows) + 1]:
            cell.font = bold
    for i, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(i)].width = max(8, width + 2)
    ws.freeze_panes = "A2"
    if section.rows:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(section.columns))}{len(section.rows) + 1}"


def write_workbook(report: Report, path: Path) -> None:
    """Write the workbook to ``path``."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    taken: set[str] = set()
    first = True
    for section in report.sections():
        ws = wb.active if first else wb.create_sheet()
        first = False
        ws.title = sheet_title(section.name, taken)
        _write_section(ws, section)
    about = wb.create_sheet(sheet_title("about", taken))
    about.append(["Report", report.title])
    about.append(["Generated (UTC)", report.generated_at.replace(tzinfo=None)])
    about.cell(row=2, column=2).number_format = "yyyy-mm-dd hh:mm"
    about.append(["Currency", report.currency])
    about.append(["Grouped by", report.by or ""])
    for key, value in report.filters.items():
        about.append([f"Filter {key}", cell_value(value, ReportColumn(key, key))])
    for section in report.sections():
        about.append([f"Sheet {section.name}", cell_value(section.title, ReportColumn("t", "t"))])
    for note in report.notes:
        about.append(["Note", cell_value(note, ReportColumn("n", "n"))])
    for row in about.iter_rows(min_col=1, max_col=1):
        row[0].font = Font(bold=True)
    about.column_dimensions["A"].width = 20
    about.column_dimensions["B"].width = 110
    wb.save(path)
