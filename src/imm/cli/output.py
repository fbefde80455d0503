"""One renderer for every list: ``--output table|json|jsonl|csv|tsv`` and ``--query`` (JMESPath over the JSON).

Every format streams: rows are written one at a time as they come from the caller's iterator (a database cursor
for ``list``, ``search`` and ``audit list``), so memory stays flat at any size and the first row appears at once.

- ``json``: one array, one record a line; ``jsonl``: one record a line, no array.
- ``csv`` / ``tsv``: a header, then a line per row (cells a spreadsheet would run as formulas get an apostrophe).
- ``table``: the column widths are fixed from the header, the columns' limits and a sample of the first
  :data:`TABLE_SAMPLE` rows, fitted to the terminal; later rows are cut (``…``) or folded to those widths.
- ``--query``: JMESPath needs the whole document for a JSON array, so with ``json``, ``csv``, ``tsv`` and
  ``table`` the rows are gathered first (memory grows with the result); with ``jsonl`` the expression applies to
  each row on its own (``primary_smtp``, ``{a: x, b: y}``), rows where it gives null are left out, and the output
  streams.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import json
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import click

from imm.cli.context import app
from imm.serialise import FORMULA_START, apply_query, compile_query, csv_cell, to_jsonable


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"
    TSV = "tsv"


TABLE_SAMPLE = 200  # rows read before a table's column widths are fixed


@dataclass(frozen=True)
class Column:
    """A table column: the row key, its header, and optional limits for narrow terminals.

    ``no_wrap`` cuts a long value with an ellipsis, otherwise it folds onto more lines. On a narrow terminal the
    left-aligned columns shrink (never below ``min_width`` or the header), widest first, the ``weight`` of a
    column making it keep more of its width; right-aligned columns (numbers) keep their full width. When that is
    not enough, columns are left out, the highest ``priority`` number first (then the rightmost). Nothing folds
    inside a word, so identifiers (GUIDs, addresses) are whole or cut with an ellipsis, never split over lines.
    ``wide_only`` columns are shown with ``--wide`` alone.
    """

    key: str
    header: str
    max_width: int | None = None
    justify: str = "left"
    no_wrap: bool = False
    min_width: int | None = None
    weight: float = 1.0
    priority: int = 1
    wide_only: bool = False


def _set_output(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value:
        app(ctx).output = value
    return value


def _set_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and param.name:
        setattr(app(ctx), param.name, True)


def table_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--wide`` and ``--no-pager`` (kept on the AppContext, read by the table renderer)."""
    f = click.option(
        "--no-pager",
        "no_pager",
        is_flag=True,
        expose_value=False,
        callback=_set_flag,
        help="Never page a long table (default on a terminal: IMM_PAGER, else PAGER, else less -FRX).",
    )(f)
    f = click.option(
        "--wide",
        "wide",
        is_flag=True,
        expose_value=False,
        callback=_set_flag,
        help="Tables: every column, nothing cut (lines may be wider than the terminal).",
    )(f)
    return f


def output_options(f: Callable[..., Any], formats: Sequence[str] = ("table", "json", "csv")) -> Callable[..., Any]:
    """Adds ``--output/-o`` and ``--query`` (passed to the command as ``output`` and ``query``), and the table
    options ``--wide`` and ``--no-pager`` (:func:`table_options`)."""
    f = table_options(f)
    f = click.option(
        "--query",
        metavar="JMESPATH",
        help="JMESPath expression (https://jmespath.org) over the JSON output: the fields -o json prints.",
    )(f)
    f = click.option(
        "-o",
        "--output",
        type=click.Choice(list(formats)),
        default="table",
        show_default=True,
        callback=_set_output,
        is_eager=True,
        help="Output format."
        + (
            " jsonl: one JSON record a line (--query applies to each); tsv: tab-separated."
            if "jsonl" in formats
            else ""
        ),
    )(f)
    return f


def stream_output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """:func:`output_options` with every streaming format: table, json, jsonl, csv, tsv."""
    return output_options(f, [o.value for o in OutputFormat])


def write_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str], stream: Any, *, tsv: bool = False) -> int:
    """A header, then one line per row as it comes (TSV: Excel's tab dialect); returns the number of rows."""
    writer = csv.writer(stream, dialect=csv.excel_tab if tsv else csv.excel, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    write = writer.writerow
    cell = _csv_value
    for row in rows:
        write([cell(row.get(c)) for c in columns])
        count += 1
    return count


_FORMULA_CHARS = frozenset(FORMULA_START)


def _csv_value(value: Any) -> Any:
    """:func:`csv_cell`, with text and numbers (the common cases) first; numbers are left to the csv writer,
    which writes them as ``str()`` does."""
    kind = type(value)
    if kind is str:
        return csv_cell(value) if value[:1] in _FORMULA_CHARS else value
    if kind is int or kind is float:
        return value
    return csv_cell(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_ENCODE = json.JSONEncoder(ensure_ascii=False, default=_json_default).encode  # the C encoder (no indent)


def write_json(rows: Iterable[Any], stream: Any) -> int:
    """A JSON array with one record a line, written as the rows come; returns the number of rows."""
    encode = _ENCODE
    count = 0
    for row in rows:
        stream.write(("[\n  " if count == 0 else ",\n  ") + encode(row))
        count += 1
    stream.write("[]\n" if count == 0 else "\n]\n")
    return count


def write_jsonl(rows: Iterable[Any], stream: Any) -> int:
    """One JSON record a line (JSON Lines), written as the rows come; returns the number of rows."""
    encode = _ENCODE
    count = 0
    for row in rows:
        stream.write(encode(row) + "\n")
        count += 1
    return count


def write_query_csv(result: Any, preferred: Sequence[str], stream: Any, *, tsv: bool = False) -> None:
    """A ``--query`` result as CSV: objects as rows under a header (``preferred`` columns first, then the rest),
    anything else one cell per line."""
    if isinstance(result, dict):
        result = [result]
    if isinstance(result, list) and result and all(isinstance(r, dict) for r in result):
        keys = list(dict.fromkeys(k for r in result for k in r))
        columns = [k for k in preferred if k in keys] + [k for k in keys if k not in preferred]
        write_csv(result, columns, stream, tsv=tsv)
        return
    out = io.StringIO()
    for item in result if isinstance(result, list) else [] if result is None else [result]:
        out.write(csv_cell(item) + "\n")
    stream.write(out.getvalue())


def _cell_text(value: Any) -> str:
    if type(value) is str:  # the common case first
        return value
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
    rows: Iterable[dict[str, Any]],
    columns: Sequence[Column],
    output: str = "table",
    query: str | None = None,
    title: str | None = None,
    stream: Any = None,
) -> int:
    """Write rows as a table (the given columns), JSON / JSON Lines (every key) or CSV / TSV (the given columns),
    one at a time as they come; returns how many rows were written (with ``--query``: how many it gave)."""
    if stream is None and output == OutputFormat.TABLE:
        count = 0
        with paged() as out:
            count = render(rows, columns, output, query, title, out)
        return count
    stream = stream or sys.stdout
    if query:
        search = compile_query(query)
        if output == OutputFormat.JSONL:  # each row its own document: still a stream
            return write_jsonl((r for r in map(search, rows) if r is not None), stream)
        result = search(list(rows))
        if output == OutputFormat.TABLE and isinstance(result, list) and all(isinstance(r, dict) for r in result):
            keys = list(dict.fromkeys(k for r in result for k in r))
            known = {c.key: c for c in columns}
            columns = [known.get(k) or Column(k, k) for k in keys]  # in the order the query gives
            return write_table(result, columns, title=title, stream=stream)
        if output in (OutputFormat.CSV, OutputFormat.TSV):
            write_query_csv(result, [c.key for c in columns], stream, tsv=output == OutputFormat.TSV)
        else:
            stream.write(json.dumps(to_jsonable(result), ensure_ascii=False, indent=2) + "\n")
        return len(result) if isinstance(result, list) else int(result is not None)
    if output == OutputFormat.JSON:
        return write_json(rows, stream)
    if output == OutputFormat.JSONL:
        return write_jsonl(rows, stream)
    if output in (OutputFormat.CSV, OutputFormat.TSV):
        return write_csv(rows, [c.key for c in columns], stream, tsv=output == OutputFormat.TSV)
    return write_table(rows, columns, title=title, stream=stream)


def terminal_width() -> int:
    """The terminal's width in cells (``COLUMNS`` first; 80 when there is no terminal)."""
    return shutil.get_terminal_size((80, 24)).columns


# ---------------------------------------------------------------------------------------------- display width
# Cells are counted as a terminal draws them, by wcwidth (https://github.com/jquast/wcwidth), with its corrections
# for the terminal that TERM_PROGRAM or TERM names: East Asian wide characters and emoji take two cells,
# combining marks none, and the spacing vowel signs of Devanagari and other Indic scripts (category Mc) one, as
# glibc's wcwidth() and the terminals built on it count them (Rich's tables count them as none, which is what
# broke the borders of a Devanagari name). Text is cut only between grapheme clusters (UAX #29), so a cut never
# leaves a vowel sign without its consonant or half an emoji sequence.
@functools.lru_cache(maxsize=8192)
def _cells_of(text: str) -> int:
    from wcwidth import width

    return int(width(text, term_program=True))


def _cells(text: str) -> int:
    """The cells ``text`` takes on the terminal (ASCII: one a character)."""
    return len(text) if text.isascii() else _cells_of(text)


def _cut(text: str, size: int) -> str:
    """``text`` in at most ``size`` cells, with an ellipsis when cut, cut between grapheme clusters."""
    if _cells(text) <= size:
        return text
    if size <= 1:
        return "…"[:size]
    if text.isascii():
        return text[: size - 1] + "…"
    from wcwidth import iter_graphemes

    kept = ""
    for grapheme in iter_graphemes(text):
        if _cells(kept + grapheme) > size - 1:
            break
        kept += grapheme
    return kept.rstrip() + "…"


def _pieces(text: str) -> list[tuple[str, str]]:
    """Where a line may break: (separator, piece) pairs, pieces split at spaces and around East Asian wide
    characters (CJK text breaks between ideographs, UAX #14, though not before a closing or after an opening
    bracket or mark); nothing else is split, so an address, a GUID or an operation id stays whole."""
    pieces: list[tuple[str, str]] = []
    for n, word in enumerate(text.split()):
        sep = " " if n else ""
        if word.isascii():
            pieces.append((sep, word))
            continue
        import unicodedata

        from wcwidth import iter_graphemes

        run, glue = "", False  # glue: the next piece joins the last (after an opening bracket)
        for grapheme in iter_graphemes(word):
            if unicodedata.east_asian_width(grapheme[0]) not in {"W", "F"}:
                run += grapheme
                continue
            kind = unicodedata.category(grapheme[0])
            if kind in {"Pe", "Pf", "Po"} and not run and pieces and not sep:  # stays with what it closes
                pieces[-1] = (pieces[-1][0], pieces[-1][1] + grapheme)
                continue
            if kind in {"Pe", "Pf", "Po"} or glue:
                run += grapheme
            else:
                if run:
                    pieces.append((sep, run))
                    sep = ""
                run = grapheme
            glue = kind in {"Ps", "Pi"}
            if not glue:
                pieces.append((sep, run))
                sep, run = "", ""
        if run:
            pieces.append((sep, run))
    return pieces


def _fold(text: str, size: int, *, keep_long: bool = False) -> list[str]:
    """``text`` on lines of at most ``size`` cells, broken at spaces (and between CJK characters), never
    inside a word: a word longer than a line is cut with an ellipsis (``keep_long``: shown whole, the line
    wider)."""
    if _cells(text) <= size:
        return [text]
    lines: list[str] = []
    line = ""
    for sep, piece in _pieces(text):
        joined = line + sep + piece if line else piece
        if _cells(joined) <= size:
            line = joined
            continue
        if line:
            lines.append(line)
        line = piece if keep_long or _cells(piece) <= size else _cut(piece, size)
    return [*lines, line] if line or not lines else lines


def _pad(text: str, size: int, right: bool) -> str:
    gap = size - _cells(text)
    if gap <= 0:
        return text
    return " " * gap + text if right else text + " " * gap


# ---------------------------------------------------------------------------------------------- fitting
def fit_widths(columns: Sequence[Column], texts: Sequence[Sequence[str]], width: int | None) -> list[int]:
    """Column widths: each column's widest text (up to its ``max_width``), shrunk to fit ``width`` cells; a
    column that would have to go below its floor is dropped (width 0; highest ``priority`` number first, then
    the rightmost; the first column stays). ``width`` None (``--wide``): every column at its full width."""
    natural = [max([_cells(c.header), *(_cells(t[i]) for t in texts)]) for i, c in enumerate(columns)]
    if width is None:
        return natural
    wanted = [min(n, c.max_width) if c.max_width else n for n, c in zip(natural, columns, strict=True)]
    kept = list(range(len(columns)))
    while True:
        sizes, fits = _shrink(columns, wanted, kept, width)
        if fits or len(kept) == 1:
            break
        drop = max(kept[1:], key=lambda i: (columns[i].priority, i))
        kept.remove(drop)
    if not fits:  # one column left, still too wide: below its floor
        (only,) = kept
        sizes[only] = max(1, width - 2)
    return [sizes[i] if i in kept else 0 for i in range(len(columns))]


def _shrink(
    columns: Sequence[Column], wanted: Sequence[int], kept: Sequence[int], width: int
) -> tuple[dict[int, int], bool]:
    """The kept columns' widths within ``width``: folding columns give way first, then cut ones, down to their
    floors (numbers never); and whether that fits."""
    sizes = {i: wanted[i] for i in kept}
    chrome = 3 * len(kept) - 1  # n + 1 borders and 2n - 2 padding (no padding at the edges)
    floors = {
        i: min(wanted[i], max(columns[i].min_width or 4, _cells(columns[i].header)))
        for i in kept
        if columns[i].justify != "right"
    }
    folding = [i for i in floors if not columns[i].no_wrap]
    for shrinkable in (folding, list(floors)):
        while sum(sizes.values()) + chrome > width:
            candidates = [i for i in shrinkable if sizes[i] > floors[i]]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: sizes[i] / columns[i].weight)
            sizes[widest] -= 1
    return sizes, sum(sizes.values()) + chrome <= width


def _wide() -> bool:
    """--wide of the running command (False outside one)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and app(ctx).wide)


def _note(message: str) -> None:
    ctx = click.get_current_context(silent=True)
    if ctx is None or not app(ctx).quiet:
        click.echo(message, err=True)


def write_table(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[Column],
    title: str | None = None,
    stream: Any = None,
    width: int | None = None,
    wide: bool | None = None,
    footer: dict[str, Any] | None = None,
) -> int:
    """A boxed table written as the rows come: widths fixed from the first :data:`TABLE_SAMPLE` rows (and the
    ``footer``, a totals row written under a rule after the rows).

    Fitted to ``width`` (the terminal's) by shrinking text columns and then leaving columns out (said on
    stderr); ``wide`` (``--wide``): every column, ``wide_only`` ones included, at full width, nothing cut.
    """
    stream = stream or sys.stdout
    wide = _wide() if wide is None else wide
    columns = [c for c in columns if wide or not c.wide_only] or [Column("value", "value")]
    keys = [c.key for c in columns]
    rows = iter(rows)
    sample = [[_safe(_cell_text(r.get(k))) for k in keys] for r in itertools.islice(rows, TABLE_SAMPLE)]
    foot = [_safe(_cell_text(footer.get(k))) for k in keys] if footer is not None else None
    limit = None if wide else width or terminal_width()
    sizes = fit_widths(columns, [*sample, foot] if foot else sample, limit)
    if not all(sizes):
        left_out = [c.header for c, s in zip(columns, sizes, strict=True) if not s]
        _note(f"Left out to fit {limit} columns: {', '.join(left_out)} (--wide shows every column).")
        shown = [i for i, s in enumerate(sizes) if s]
        columns, sizes = [columns[i] for i in shown], [sizes[i] for i in shown]
        keys = [keys[i] for i in shown]
        sample = [[t[i] for i in shown] for t in sample]
        foot = [foot[i] for i in shown] if foot else None
    total = sum(sizes) + 3 * len(columns) - 1
    if title:
        title = _safe(title)
        gap = max(0, total - _cells(title))
        stream.write(" " * (gap // 2) + title + " " * (gap - gap // 2) + "\n")
    cut = [c.no_wrap for c in columns]
    right = [c.justify == "right" for c in columns]
    plan = list(zip(sizes, cut, right, strict=True))

    def line(cells: Sequence[str], bar: str) -> str:
        padded = [_pad(cell, size, r) for cell, (size, _, r) in zip(cells, plan, strict=True)]
        return bar + f" {bar} ".join(padded) + bar + "\n"

    def write_row(texts: list[str]) -> None:
        cells: list[str] = []
        folded: list[list[str]] | None = None
        for i, (text, (size, c, r)) in enumerate(zip(texts, plan, strict=True)):
            used = _cells(text)
            if used <= size:
                gap = " " * (size - used)
                cells.append(gap + text if r else text + gap)
            elif r or (c and wide):  # a number is never cut, nor anything under --wide: its line is wider
                cells.append(text)
            elif c:
                cells.append(_pad(_cut(text, size), size, False))
            else:
                folded = folded or [[cell] for cell in cells]
                cells.append("")
                folded.append(_fold(text, size, keep_long=wide))
                continue
            if folded is not None:
                folded.append([cells[i]])
        if folded is None:
            stream.write("│" + " │ ".join(cells) + "│\n")
            return
        for n in range(max(len(f) for f in folded)):
            stream.write(line([f[n] if n < len(f) else "" for f in folded], "│"))

    if len(sizes) == 1:
        bar, thin = "━" * sizes[0], "─" * sizes[0]
        rule_top, rule_mid, rule_end, rule_foot = f"┏{bar}┓", f"┡{bar}┩", f"└{thin}┘", f"├{thin}┤"
    else:
        edge = [s + (2 if 0 < i < len(sizes) - 1 else 1) for i, s in enumerate(sizes)]
        rule_top = "┏" + "┳".join("━" * n for n in edge) + "┓"
        rule_mid = "┡" + "╇".join("━" * n for n in edge) + "┩"
        rule_end = "└" + "┴".join("─" * n for n in edge) + "┘"
        rule_foot = "├" + "┼".join("─" * n for n in edge) + "┤"
    stream.write(rule_top + "\n")
    stream.write(line([_cut(_safe(c.header), s) for c, s in zip(columns, sizes, strict=True)], "┃"))
    stream.write(rule_mid + "\n")
    count = 0
    for texts in sample:
        write_row(texts)
        count += 1
    fast = _compile_line(keys, plan, wide)
    for r in rows:
        text = fast(r)
        if text is None:
            write_row([_safe(_cell_text(r.get(k))) for k in keys])
        else:
            stream.write(text)
        count += 1
    if foot is not None and count:
        stream.write(rule_foot + "\n")
        write_row(foot)
    stream.write(rule_end + "\n")
    if count == 0:
        stream.write("No rows.\n")
    return count


def _compile_line(
    keys: Sequence[str], plan: Sequence[tuple[int, bool, bool]], wide: bool = False
) -> Callable[[Any], str | None]:
    """The table line of one row in one generated function (several times faster than a loop over cells), or
    None when a cell does not fit its column (then the general path cuts or folds it)."""
    namespace: dict[str, Any] = {"_text": _cell_text, "_safe": _safe, "_cl": _cells_of, "_cut": _cut}
    body = []
    for i, (key, (size, cut, right)) in enumerate(zip(keys, plan, strict=True)):
        body += [
            f"    t = r.get({key!r})",
            "    if type(t) is not str: t = _text(t)",
            "    if not t.isprintable(): t = _safe(t)",
            "    w = len(t) if t.isascii() else _cl(t)",
        ]
        if cut and not right and not wide:
            body.append(f"    if w > {size}: t = _cut(t, {size}); w = len(t) if t.isascii() else _cl(t)")
        else:
            body.append(f"    if w > {size}: return None")
        body.append(f"    c{i} = " + (f"' ' * ({size} - w) + t" if right else f"t + ' ' * ({size} - w)"))
    cells = " + ' │ ' + ".join(f"c{i}" for i in range(len(keys)))
    source = "def line(r):\n" + "\n".join(body) + f"\n    return '│' + {cells} + '│\\n'\n"
    exec(compile(source, "<imm.cli.output.table_line>", "exec"), namespace)  # noqa: S102 - our own text
    func: Callable[[Any], str | None] = namespace["line"]
    return func


# ---------------------------------------------------------------------------------------------- the pager
class _PagerClosed(Exception):
    """The pager ended before the table did (the user quit it): stop writing, quietly."""


class PagedOutput:
    """stdout for a table on a terminal: the lines are held until they fill the screen, then the pager starts,
    gets them and every later line as it comes (so a table still streams, and memory holds one screen at most);
    a table shorter than the screen goes straight to the terminal and no pager runs."""

    def __init__(self, target: Any, command: list[str], height: int) -> None:
        self._target = target
        self._command = command
        self._height = height
        self._held: list[str] = []
        self._lines = 0
        self._pager: Any = None
        self._direct = False  # the pager could not start: straight to the terminal

    def write(self, text: str) -> int:
        if self._direct:
            return int(self._target.write(text))
        if self._pager is None:
            self._held.append(text)
            self._lines += text.count("\n")
            if self._lines > self._height:  # more than the screen holds above the prompt
                self._start()
            return len(text)
        try:
            self._pager.stdin.write(text)
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise _PagerClosed from exc
        return len(text)

    def isatty(self) -> bool:  # what click asks before it keeps styles (the pager is less -R by default)
        return bool(self._target.isatty())

    def flush(self) -> None:
        if self._pager is None:
            return
        try:
            self._pager.stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise _PagerClosed from exc

    def _start(self) -> None:
        import subprocess

        held, self._held = "".join(self._held), []
        encoding = getattr(self._target, "encoding", None) or "utf-8"
        try:
            self._pager = subprocess.Popen(  # noqa: S603 - the user's own pager command
                self._command, stdin=subprocess.PIPE, encoding=encoding, errors="replace"
            )
        except OSError as exc:  # not found or not executable: say so once, and print the table as it is
            click.echo(f"Warning: could not start the pager {self._command[0]}: {exc.strerror}", err=True)
            self._direct = True
            self._target.write(held)
            return
        self.write(held)

    def close(self) -> None:
        """Send what is held (short output) to the terminal, or close the pager's input and wait for the user to
        leave it (Ctrl+C meanwhile is the pager's own: imm waits)."""
        if self._pager is None:
            self._target.write("".join(self._held))
            self._held = []
            self._target.flush()
            return
        try:
            self._pager.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        while True:
            try:
                self._pager.wait()
                return
            except KeyboardInterrupt:
                continue


def pager_command() -> list[str] | None:
    """The pager: ``IMM_PAGER``, else ``PAGER``, else ``less -FRX`` when installed (not on a dumb terminal);
    None when the variable is empty or ``cat``. A value is split as a shell would (``less -S``)."""
    import os
    import shlex

    from imm.errors import InputError

    for name in ("IMM_PAGER", "PAGER"):
        value = os.environ.get(name)
        if value is None:
            continue
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise InputError(f"environment variable {name}: {exc}", hint="e.g. IMM_PAGER='less -S'") from None
        return None if not words or words == ["cat"] else words
    less = shutil.which("less")
    if less is None or os.environ.get("TERM") == "dumb":
        return None
    return [less, "-FRX"]


_PAGING: list[PagedOutput] = []  # the pager a table is being written to (tables inside a paged report share it)


@contextlib.contextmanager
def paged() -> Iterator[Any]:
    """The stream to write a table (or a report's tables) to: stdout, through the pager when stdout is a
    terminal and the output is longer than the screen, unless ``--no-pager``; stdout as it is otherwise (a
    pipe, a file, ``-o json``/``csv``, which never take this path). The pager's quitting early ends the
    output quietly."""
    if _PAGING:
        yield _PAGING[-1]
        return
    ctx = click.get_current_context(silent=True)
    stdout = sys.stdout
    command = None
    if ctx is not None and not app(ctx).no_pager and stdout.isatty():
        command = pager_command()
    if not command:
        yield stdout
        return
    stream = PagedOutput(stdout, command, max(2, shutil.get_terminal_size((80, 24)).lines - 1))
    _PAGING.append(stream)
    try:
        yield stream
    except _PagerClosed:
        pass
    finally:
        _PAGING.pop()
        stream.close()


def _safe(text: str) -> str:
    """Text that cannot move the cursor or recolour the terminal (:func:`imm.textsafe.terminal_safe`: control
    characters, escape sequences and bidirectional overrides shown as visible escapes)."""
    if text.isprintable():
        return text
    from imm.textsafe import terminal_safe

    return terminal_safe(text)


def render_table(rows: Iterable[dict[str, Any]], columns: Sequence[Column], title: str | None = None) -> None:
    with paged() as out:
        write_table(rows, columns, title=title, stream=out)


def render_object(data: dict[str, Any], output: str = "table", query: str | None = None) -> None:
    """One record: key/value lines as a table, or the object as JSON (one line for jsonl) / a one-row CSV or TSV."""
    tsv = output == OutputFormat.TSV
    if query and output in (OutputFormat.CSV, OutputFormat.TSV):
        out = io.StringIO()
        write_query_csv(apply_query(data, query), list(data), out, tsv=tsv)
        click.echo(out.getvalue(), nl=False)
        return
    if query or output in (OutputFormat.JSON, OutputFormat.JSONL):
        value = to_jsonable(apply_query(data, query))
        indent = None if output == OutputFormat.JSONL else 2
        click.echo(json.dumps(value, ensure_ascii=False, indent=indent))
    elif output in (OutputFormat.CSV, OutputFormat.TSV):
        out = io.StringIO()
        write_csv([data], list(data), out, tsv=tsv)
        click.echo(out.getvalue(), nl=False)
    else:
        width = max((len(k) for k in data), default=0)
        with paged() as out:
            for key, value in data.items():
                out.write(f"{key:<{width}}  {_safe(_cell_text(value))}\n")
