"""``imm report summary|costs|holds|expiry|eligibility``: reports from the local cache (no Exchange call).

Each report prints as a table by default; ``--format csv|json|xlsx|html --out FILE`` writes a file (``--out -``
writes CSV or JSON to stdout), and ``--output json|csv`` / ``--query`` work as on every list. Every run is
recorded in the audit log (operation REPORT). The reports themselves live in :mod:`imm.services.reports`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from imm.cli.completion import complete_hold_kinds
from imm.cli.context import app
from imm.cli.filters import check_hold_kind
from imm.cli.output import output_options

if TYPE_CHECKING:
    from imm.cli.output import Column
    from imm.services.reports import Report, ReportColumn, Section

EMPTY_CACHE = "The cache is empty: run `imm sync` (or `imm demo`)"
FORMATS = ("table", "csv", "json", "xlsx", "html")
SUFFIXES = {".csv": "csv", ".json": "json", ".xlsx": "xlsx", ".html": "html", ".htm": "html"}
TABLE_DETAIL_ROWS = 50  # rows of a detail section shown in the terminal (--section NAME shows all)


def report_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options every report takes."""
    options = [
        click.option(
            "--by",
            type=click.Choice(["company", "department"]),
            help="Group by operating company, or by department within company.",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(FORMATS),
            help="table (the terminal, default), csv, json, xlsx or html; files need --out.",
        ),
        click.option(
            "--out",
            metavar="FILE",
            help="Write the report to FILE (- for stdout with csv or json); the format follows the file's suffix.",
        ),
        click.option("--force", is_flag=True, help="Replace FILE if it exists."),
        click.option(
            "--section",
            metavar="NAME",
            help="The table to print or write as CSV (default: the main one; a table report lists the others).",
        ),
        click.option("--company", metavar="NAME", help="Only this operating company (ignores case)."),
        click.option("--department", metavar="NAME", help="Only this department (ignores case)."),
        click.option(
            "--hold-type",
            metavar="KIND",
            shell_complete=complete_hold_kinds,
            callback=check_hold_kind,
            help="Only mailboxes with this kind of hold (e.g. litigation).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return output_options(f)


def resolve_format(fmt: str | None, out: str | None, output: str, query: str | None) -> tuple[str, str | None]:
    """(format, destination): destination None is the terminal, "-" stdout, else a file path."""
    from imm.errors import InputError

    target, dest = _destination(fmt, out, output)
    if query and target not in {"json", "table"}:
        raise InputError("--query selects from the JSON form: use it with --output json or --format json")
    return target, dest


def _destination(fmt: str | None, out: str | None, output: str) -> tuple[str, str | None]:
    from pathlib import Path

    from imm.errors import InputError

    if fmt is None:
        if out is None:
            return output, None
        if out == "-":
            if output not in {"csv", "json"}:
                raise InputError("--out - writes to stdout: add --format csv or --format json")
            fmt = output
        else:
            fmt = SUFFIXES.get(Path(out).suffix.lower()) or (output if output != "table" else None)
            if fmt is None:
                raise InputError(f"cannot tell the format of {out}: add --format csv, json, xlsx or html")
    if fmt != "table" and output != "table" and fmt != output:
        raise InputError(f"--format {fmt} and --output {output} disagree: give one of them")
    if fmt == "table":
        if out is not None:
            raise InputError("--format table prints to the terminal: drop --out, or choose csv, json, xlsx or html")
        return output, None
    if fmt in {"xlsx", "html"} and out in {None, "-"}:
        raise InputError(f"--format {fmt} writes a file: add --out FILE")
    if fmt in {"csv", "json"} and out is None:
        raise InputError(f"--format {fmt} needs --out FILE (or --out - for stdout)")
    return fmt, out


def run_report(
    kind: str,
    *,
    by: str | None,
    fmt: str | None,
    out: str | None,
    section: str | None,
    company: str | None,
    department: str | None,
    hold_type: str | None,
    output: str,
    query: str | None,
    force: bool = False,
) -> None:
    """Read the cache, build the report, render or write it, and record a REPORT audit row."""
    from datetime import UTC, datetime

    from imm.data.database import MailboxFilter
    from imm.errors import ImmError, InputError
    from imm.services import reports

    target, dest = resolve_format(fmt, out, output, query)
    if dest not in {None, "-"} and os.path.lexists(str(dest)) and not force:  # as audit export and bulk plan
        raise InputError(f"--out {dest} exists: choose a new file, or add --force to replace it")
    if section is not None and target not in {"table", "csv"}:
        raise InputError(f"--section picks one table for the terminal or CSV; {target} holds every section")
    obj = app()
    db = obj.database()
    filters = {"company": company, "department": department, "hold_type": hold_type}
    chosen = {k: v for k, v in filters.items() if v is not None}
    selection = MailboxFilter(company=company, department=department, hold_type=hold_type)
    if db.count_mailboxes() == 0:
        click.echo(EMPTY_CACHE, err=True)
        if target == "table":
            return
    # computed in the store: SQL aggregates, mailbox tables streamed; flat memory at any size
    report = reports.build_report_from_store(
        kind, db, selection, by=by, cost_model=obj.profile.cost, now=datetime.now(UTC), filters=chosen
    )
    count = report.overview.headline["mailboxes"] if report.overview else 0
    details: dict[str, Any] = {
        "kind": kind,
        "format": target,
        "out": dest or "-",
        "by": report.by,
        "mailboxes": count,
    }
    if chosen:
        details["filters"] = chosen
    try:
        if target == "table":
            print_report(report, section, query)
        elif target == "json":
            reports.write_json(report, dest or "-", query=query)
        elif target == "csv":
            reports.write_csv(report, dest or "-", section=section)
        elif target == "xlsx":
            reports.write_xlsx(report, str(dest))
        else:
            reports.write_html(report, str(dest))
    except ImmError as exc:
        obj.audit().log_operation("REPORT", None, details, "failure", exc.message)
        raise
    obj.audit().log_operation("REPORT", None, details, "success")
    if dest not in {None, "-"} and not obj.quiet:
        click.echo(f"Wrote the {kind} report ({target}, {count:,} mailboxes) to {dest}", err=True)


def print_report(report: Report, section: str | None, query: str | None) -> None:
    """The report in the terminal: the chosen section, or every section (long ones cut), then the notes."""
    import json

    from imm.cli.output import Column, render, to_jsonable
    from imm.services.reports import report_json

    if query:
        result = report_json(report, query)
        if isinstance(result, list) and result and all(isinstance(r, dict) for r in result):
            keys = list(dict.fromkeys(k for r in result for k in r))
            render(result, [Column(k, k) for k in keys], "table")
        else:
            click.echo(json.dumps(to_jsonable(result), ensure_ascii=False, indent=2))
        return
    from imm.cli.output import paged

    sections = [report.section(section)] if section else report.sections()
    with paged() as out:  # one pager for every section; the notes follow on stderr when it ends
        for i, part in enumerate(sections):
            limit = None if section or i == 0 else TABLE_DETAIL_ROWS
            _print_section(part, limit, report.currency, out)
    if not app().quiet:
        for note in report.notes:
            click.echo(f"Note: {note}", err=True)
        if not section and len(sections) > 1:
            names = ", ".join(s.name for s in sections)
            click.echo(f"Sections: {names} (--section NAME for one, --format xlsx or html for all).", err=True)


def _right(column: ReportColumn) -> bool:
    return column.numeric or column.kind in {"auto", "date"}


def table_columns(columns: list[ReportColumn]) -> list[Column]:
    """A report's columns as the table renderer's: numbers and dates right-aligned and never cut; a GUID or a
    name cut with an ellipsis; a sentence (reasons, blockers) folded over lines, so rows stay distinguishable;
    on a narrow terminal numeric columns after the first three are left out first; ``wide`` ones only with
    ``--wide`` (files have every column)."""
    from imm.cli.output import Column

    shown: list[Column] = []
    numbers = 0
    for column in columns:
        right = _right(column)
        numbers += right
        long = column.kind == "long"
        shown.append(
            Column(
                column.key,
                column.terminal_header,
                max_width=None if right or long else 40,
                justify="right" if right else "left",
                no_wrap=not long,
                min_width=20 if long else 8,
                priority=2 if right and numbers > 3 else 1,
                wide_only=column.wide,
            )
        )
    return shown


def _print_section(section: Section, limit: int | None, currency: str, out: Any = None) -> None:
    """One section through the one table renderer (streamed: a section that lists mailboxes is read from the
    store as it is written), its totals row under a rule, then how many rows a cut section left out."""
    import itertools

    from imm.cli.output import write_table
    from imm.services.reports import format_value

    out = out or sys.stdout
    money = any(c.kind == "money" for c in section.columns if not c.wide or app().wide)
    title = f"{section.title} (amounts in {currency})" if money else section.title
    kinds = [(c.key, c.kind) for c in section.columns]

    def formatted(row: dict[str, Any]) -> dict[str, Any]:
        return {key: format_value(row.get(key), kind) for key, kind in kinds}

    rows = section.rows if limit is None else itertools.islice(section.rows, limit)
    footer = formatted(section.totals) if section.totals else None
    write_table(map(formatted, rows), table_columns(section.columns), title=title, stream=out, footer=footer)
    if limit is not None and len(section.rows) > limit:
        out.write(f"… {len(section.rows) - limit:,} more rows: --section {section.name} shows them all.\n")
    out.write("\n")


@click.group()
def report() -> None:
    """Reports from the local cache: summary, costs, holds, expiry, eligibility.

    Reports read the cache only (run `imm sync` first). They print as tables, or write CSV, JSON, an Excel
    workbook (one sheet per table) or one self-contained HTML page with charts. Costs follow the profile's
    [cost] table (a monthly rate per former licence plus a rate per GB); "savings" is what the mailboxes whose
    holds have all expired cost per month.

    \b
    Examples:
      imm report summary
      imm report costs --by department --format xlsx --out costs.xlsx
      imm report expiry --format html --out expiry.html
    """


def _command(kind: str, summary: str, examples: list[str]) -> click.Command:
    def command(**options: Any) -> None:
        run_report(kind, **options)

    command.__doc__ = summary + "\n\n\b\nExamples:\n" + "\n".join(f"  {e}" for e in examples)
    command.__name__ = kind
    return report.command(kind)(report_options(command))


_command(
    "summary",
    "Counts, size, monthly cost, recoverable and blocked, releasable and what it saves, oldest and newest, and "
    "mailboxes per hold kind. With --by: one row per company or department.",
    ["imm report summary", "imm report summary --by company --format csv --out summary.csv"],
)
_command(
    "costs",
    "Monthly cost by operating company (default) or department: mailboxes, GB, cost, share, and the saving if "
    "expired holds were released. Mailboxes without a company or department are reported as (unattributed).",
    ["imm report costs --by company", "imm report costs --by department --format xlsx --out costs.xlsx"],
)
_command(
    "holds",
    "Mailboxes and GB per kind of hold, with the policy and case names the last sync resolved (section "
    "'policies'). With --by: hold kinds per company or department.",
    ["imm report holds", "imm report holds --section policies --format csv --out policies.csv"],
)
_command(
    "expiry",
    "Mailboxes whose holds have all ended (releasable now) and those whose holds end within 30, 90 and 365 "
    "days, with dates and reasons (section 'mailboxes'), and why the others never end (section 'never').",
    ["imm report expiry", "imm report expiry --section mailboxes --format csv --out expiring.csv"],
)
_command(
    "eligibility",
    "Recoverable and restorable versus blocked, counts per blocker with the documented alternative, and the "
    "blocked mailboxes (section 'blocked').",
    ["imm report eligibility", "imm report eligibility --output json --query \"rows[?outcome!='eligible']\""],
)
