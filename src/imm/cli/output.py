"""One renderer for every list: ``--output table|json|csv`` and ``--query`` (JMESPath over the JSON form)."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import click

from imm.cli.context import app
from imm.errors import InputError


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


@dataclass(frozen=True)
class Column:
    """A table column: the row key, its header, and optional limits for narrow terminals."""

    key: str
    header: str
    max_width: int | None = None
    justify: str = "left"
    no_wrap: bool = False


def _set_output(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value:
        app(ctx).output = value
    return value


def output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Adds ``--output/-o`` and ``--query`` (passed to the command as ``output`` and ``query``)."""
    f = click.option(
        "--query",
        metavar="JMESPATH",
        help="JMESPath expression over the JSON output, e.g. \"[?operating_company=='Contoso'].primary_smtp\".",
    )(f)
    f = click.option(
        "-o",
        "--output",
        type=click.Choice([o.value for o in OutputFormat]),
        default="table",
        show_default=True,
        callback=_set_output,
        is_eager=True,
        help="Output format.",
    )(f)
    return f


def to_jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601, sets and tuples as lists; everything else as it is."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    return value


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """Text for one CSV cell; a cell a spreadsheet would run as a formula gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        text = ";".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(to_jsonable(value), ensure_ascii=False, sort_keys=True)
    elif isinstance(value, datetime | date):
        text = value.isoformat()
    else:
        text = str(value)
    if text.startswith(_FORMULA_START):
        # A number such as "-3.5" is data, not a formula.
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def write_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str], stream: Any) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])


def write_query_csv(result: Any, preferred: Sequence[str], stream: Any) -> None:
    """A ``--query`` result as CSV: objects as rows under a header (``preferred`` columns first, then the rest),
    anything else one cell per line."""
    if isinstance(result, dict):
        result = [result]
    if isinstance(result, list) and result and all(isinstance(r, dict) for r in result):
        keys = list(dict.fromkeys(k for r in result for k in r))
        columns = [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]
        write_csv(result, columns, stream)
        return
    out = io.StringIO()
    for item in result if isinstance(result, list) else [] if result is None else [result]:
        out.write(csv_cell(item) + "\n")
    stream.write(out.getvalue())


def apply_query(data: Any, query: str | None) -> Any:
    if not query:
        return data
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.search(query, to_jsonable(data))
    except JMESPathError as exc:
        raise InputError(f"invalid --query expression {query!r}: {_query_problem(exc)}") from None


def _query_problem(exc: Exception) -> str:
    """One short line for a JMESPath error (its own text spans lines, and may quote a whole record)."""
    from jmespath.exceptions import JMESPathTypeError, ParseError

    if isinstance(exc, JMESPathTypeError):
        expected = ", ".join(exc.expected_types)
        return f"in function {exc.function_name}(), a value of type {exc.actual_type} where {expected} was expected"
    text = str(exc).splitlines()[0].rstrip(": ") if str(exc) else type(exc).__name__
    if isinstance(exc, ParseError) and exc.lex_position is not None:
        text += f" at column {exc.lex_position + 1}"
    return text if len(text) <= 200 else text[:199] + "…"


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d")
    return str(value)


def render(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    output: str = "table",
    query: str | None = None,
    title: str | None = None,
    stream: Any = None,
) -> None:
    """Print rows as a table (the given columns), JSON (every key) or CSV (the given columns)."""
    stream = stream or sys.stdout
    if query:
        result = apply_query(list(rows), query)
        if output == OutputFormat.TABLE and isinstance(result, list) and all(isinstance(r, dict) for r in result):
            rows = result
            keys = list(dict.fromkeys(k for r in result for k in r))
            columns = [c for c in columns if c.key in keys] or [Column(k, k) for k in keys]
        elif output == OutputFormat.CSV:
            write_query_csv(result, [c.key for c in columns], stream)
            return
        else:
            stream.write(json.dumps(to_jsonable(result), ensure_ascii=False, indent=2) + "\n")
            return
    if output == OutputFormat.JSON:
        stream.write(json.dumps(to_jsonable(list(rows)), ensure_ascii=False, indent=2) + "\n")
        return
    if output == OutputFormat.CSV:
        write_csv(rows, [c.key for c in columns], stream)
        return
    render_table(rows, columns, title=title)


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    table = Table(title=title, show_lines=False, header_style="bold", pad_edge=False, expand=False)
    for column in columns:
        table.add_column(
            column.header,
            max_width=column.max_width,
            justify=column.justify,  # type: ignore[arg-type]
            no_wrap=column.no_wrap,
            overflow="ellipsis" if column.no_wrap else "fold",
        )
    for row in rows:
        table.add_row(*(_escape(_cell_text(row.get(c.key))) for c in columns))
    console.print(table)
    if not rows:
        console.print("[dim]No rows.[/dim]")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def render_object(data: dict[str, Any], output: str = "table", query: str | None = None) -> None:
    """One record: key/value lines as a table, or the object as JSON / a one-row CSV."""
    if query and output == OutputFormat.CSV:
        out = io.StringIO()
        write_query_csv(apply_query(data, query), list(data), out)
        click.echo(out.getvalue(), nl=False)
        return
    if query:
        click.echo(json.dumps(to_jsonable(apply_query(data, query)), ensure_ascii=False, indent=2))
        return
    if output == OutputFormat.JSON:
        click.echo(json.dumps(to_jsonable(data), ensure_ascii=False, indent=2))
    elif output == OutputFormat.CSV:
        out = io.StringIO()
        write_csv([data], list(data), out)
        click.echo(out.getvalue(), nl=False)
    else:
        width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            click.echo(f"{key:<{width}}  {_cell_text(value)}")
