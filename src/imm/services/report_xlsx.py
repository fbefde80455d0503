"""The XLSX report (openpyxl): one sheet per section, then an "About" sheet with the notes.

Each sheet: a bold header row (frozen, with a filter), the rows, and a bold "Total" row when the section has
totals. Numbers are stored as numbers with a number format, dates as dates; text goes through
:func:`imm.serialise.csv_cell`, so a name such as ``=HYPERLINK(…)`` is stored as inert text, and characters
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
    from imm.serialise import csv_cell

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


WIDTH_SAMPLE = 1000  # rows measured for the column widths (write-only sheets take widths before any row)


def _write_section(ws: Any, section: Section) -> None:
    """One sheet, row by row (openpyxl's write-only mode: a row is written and let go, so memory stays flat)."""
    import itertools

    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    bold = Font(bold=True)
    columns = section.columns
    rows = iter(section.rows)
    sample = list(itertools.islice(rows, WIDTH_SAMPLE))
    widths = [len(c.header) for c in columns]
    for row in [*sample, *([section.totals] if section.totals else [])]:
        for i, column in enumerate(columns):
            value = cell_value(row.get(column.key), column)
            widths[i] = max(widths[i], min(60, len(str(value)) if value is not None else 0))
    for i, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(i)].width = max(8, width + 2)
    ws.freeze_panes = "A2"

    def cells(row: dict[str, Any], font: Any = None) -> list[Any]:
        out = []
        for column in columns:
            raw = row.get(column.key)
            cell = WriteOnlyCell(ws, value=cell_value(raw, column))
            fmt = _number_format(raw, column)
            if fmt:
                cell.number_format = fmt
            if cell.data_type == "f":  # never a formula (csv_cell already neutralised it; belt and braces)
                cell.data_type = "s"
            if font is not None:
                cell.font = font
            out.append(cell)
        return out

    header = []
    for column in columns:
        cell = WriteOnlyCell(ws, value=column.header)
        cell.font = bold
        header.append(cell)
    ws.append(header)
    count = 0
    for row in itertools.chain(sample, rows):
        ws.append(cells(row))
        count += 1
    if section.totals:
        ws.append(cells(section.totals, bold))
    if count:
        ws.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{count + 1}"


def write_workbook(report: Report, path: Path) -> None:
    """Write the workbook to ``path``: one sheet per section, then "about"; rows streamed (write-only mode)."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    wb = Workbook(write_only=True)
    taken: set[str] = set()
    for section in report.sections():
        _write_section(wb.create_sheet(sheet_title(section.name, taken)), section)
    about = wb.create_sheet(sheet_title("about", taken))
    about.column_dimensions["A"].width = 20
    about.column_dimensions["B"].width = 110
    bold = Font(bold=True)

    def line(key: str, value: Any, number_format: str | None = None) -> None:
        head = WriteOnlyCell(about, value=key)
        head.font = bold
        cell = WriteOnlyCell(about, value=value)
        if number_format:
            cell.number_format = number_format
        if cell.data_type == "f":
            cell.data_type = "s"
        about.append([head, cell])

    line("Report", report.title)
    line("Generated (UTC)", report.generated_at.replace(tzinfo=None), "yyyy-mm-dd hh:mm")
    line("Currency", report.currency)
    line("Grouped by", report.by or "")
    for key, value in report.filters.items():
        line(f"Filter {key}", cell_value(value, ReportColumn(key, key)))
    for section in report.sections():
        line(f"Sheet {section.name}", cell_value(section.title, ReportColumn("t", "t")))
    for note in report.notes:
        line("Note", cell_value(note, ReportColumn("n", "n")))
    wb.save(path)
