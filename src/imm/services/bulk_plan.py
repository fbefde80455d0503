"""Bulk plans: the CSV a bulk job runs, read and validated as a whole, and written from a cache query.

A plan is a UTF-8 CSV file with a header row. Columns (names ignore case; ``-`` and spaces count as ``_``):

==================  =====================================================================================
``action``          ``recover``, ``restore``, ``release`` or ``set-duration``
``identity``        the inactive mailbox: ExchangeGuid, address, UPN, DN or name (it must be in the cache)
``upn``, ``name``   recover: the new account's user principal name and the new mailbox's name (required)
``display_name``    recover: the new mailbox's display name (optional)
``target``          restore: the active mailbox that receives the content (required)
``archive``         restore: ``true`` to restore the inactive mailbox's archive (optional; default false)
``target_folder``   restore: a folder of the target to restore into (optional)
``type``            release: which holds (``litigation``, ``delay``, ``delay-release``, ``label``, ``org-policy``,
                    ``policy``, ``ediscovery``, ``all-unlocked``)
``days``            set-duration: the Litigation Hold duration in days, or ``unlimited``
``note``            free text, ignored (``imm bulk plan`` writes who each row is about)
==================  =====================================================================================

Rows whose first cell starts with ``#`` and empty rows are skipped. A cell that ``imm`` wrote with a leading
apostrophe to keep a spreadsheet from running it as a formula (``'=…``) is read back without the apostrophe.

The whole file is checked before anything runs: every bad row is reported with its line number and the reason,
and nothing is executed (:class:`PlanError`, exit 2).

A plan is read as a stream, with limits: it must be a regular file (not a FIFO, a device or a folder), of at most
:data:`MAX_PLAN_BYTES`, with lines of at most :data:`MAX_LINE_CHARS` characters and a header of at most
:data:`MAX_COLUMNS` columns; numbers (``days``) are ASCII digits.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from imm.errors import InputError, NotFoundError
from imm.services.action_support import ACTIONS, RECOVER, RELEASE, RESTORE, SET_DURATION  # one vocabulary
from imm.textsafe import shorten

if TYPE_CHECKING:
    from imm.data.database import DatabaseManager, MailboxFilter
    from imm.data.models import InactiveMailbox

ACTION_WORDS = "recover, restore, release or set-duration"

# Columns each action needs and may have; "note" is free text on any row.
REQUIRED: dict[str, tuple[str, ...]] = {
    RECOVER: ("upn", "name"),
    RESTORE: ("target",),
    RELEASE: ("type",),
    SET_DURATION: ("days",),
}
OPTIONAL: dict[str, tuple[str, ...]] = {
    RECOVER: ("display_name",),
    RESTORE: ("archive", "target_folder"),
    RELEASE: (),
    SET_DURATION: (),
}
BASE_COLUMNS = ("action", "identity")
INFO_COLUMNS = ("note",)
KNOWN_COLUMNS = (
    *BASE_COLUMNS,
    "upn",
    "name",
    "display_name",
    "target",
    "archive",
    "target_folder",
    "type",
    "days",
    *INFO_COLUMNS,
)
MAX_PLAN_BYTES = 64 * 1024 * 1024  # about 500,000 rows; a bigger file is not a plan anyone reviewed
MAX_LINE_CHARS = 32 * 1024  # a row is a few hundred characters; a longer line is not a plan row
MAX_COLUMNS = 64  # the plan has ten columns; a spreadsheet's empty trailing columns fit too
MAX_PROBLEM = 300  # characters of one problem line (values from the plan are quoted in it)
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0", ""}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def release_types() -> tuple[str, ...]:
    from imm.domain.eligibility import RELEASE_TYPES

    return RELEASE_TYPES


@dataclass(frozen=True)
class PlanRow:
    """One valid plan row: its line, the action, the identity as written and the ExchangeGuid it resolved to."""

    line: int
    action: str
    identity: str
    mailbox_guid: str
    params: dict[str, Any]
    label: str  # "Display Name <address>" for confirmations and summaries


@dataclass
class Plan:
    """A validated plan: the file, its SHA-256 and its rows in file order."""

    path: Path
    sha256: str
    rows: list[PlanRow] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Rows per action, in the order of :data:`ACTIONS`."""
        found: dict[str, int] = {}
        for row in self.rows:
            found[row.action] = found.get(row.action, 0) + 1
        return {action: found[action] for action in ACTIONS if action in found}

    @property
    def has_recover(self) -> bool:
        return any(row.action == RECOVER for row in self.rows)


class PlanError(InputError):
    """The plan cannot run; ``problems`` has one line per bad row (``line N: reason``). Exit 2."""

    code = "plan_invalid"

    def __init__(self, message: str, problems: Sequence[str], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = list(problems)


# ------------------------------------------------------------------------------------------------ reading
def unescape_cell(text: str) -> str:
    """The reverse of :func:`csv_safe`: ``'=x`` → ``=x`` (only before a formula character)."""
    if len(text) > 1 and text[0] == "'" and text[1] in "=+-@\t\r":
        return text[1:]
    return text


def csv_safe(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula: a leading apostrophe before ``= + - @`` (numbers
    such as ``-3`` stay as they are). :func:`unescape_cell` undoes it when the plan is read back."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text.startswith(_FORMULA_START):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def _not_utf8(name: str, line: int, byte: int) -> PlanError:
    return PlanError(
        f"{name}: line {line}: the plan is not UTF-8 text (byte 0x{byte:02x}); nothing was run",
        [f"line {line}: not UTF-8 text (byte 0x{byte:02x})"],
        hint="save the plan as 'CSV UTF-8' and run it again",
    )


class _PlanFile:
    """The plan's lines, read as a stream with the limits above; ``sha256`` is of the bytes read so far."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.hasher = hashlib.sha256()
        self.line = 0  # lines read so far
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; the check below refuses it anyway.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise InputError(f"{self.name}: no such plan file") from None
        except IsADirectoryError:
            raise InputError(f"{self.name} is a folder, not a plan file") from None
        except OSError as exc:
            raise InputError(f"{self.name}: cannot read the plan ({exc.strerror or exc})") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            if stat.S_ISDIR(info.st_mode):
                raise InputError(f"{self.name} is a folder, not a plan file")
            raise InputError(
                f"{self.name} is not a regular file (a FIFO, a device or a socket): a plan must be a regular file",
                hint="save the plan to a file and give its path",
            )
        if info.st_size > MAX_PLAN_BYTES:
            os.close(fd)
            raise InputError(
                f"{self.name} is {info.st_size:,} bytes: a plan is at most {MAX_PLAN_BYTES:,} bytes; nothing was run",
                hint="split it into smaller plans",
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        self.stream = os.fdopen(fd, "rb")
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.read = 0
        self.first = True
        self.blank = True  # only white space so far

    def close(self) -> None:
        self.stream.close()

    def lines(self) -> Iterator[str]:
        """Each line (with its line ending) as text; PlanError for a line too long, a file grown too big, or bytes
        that are not UTF-8."""
        while True:
            raw = self.stream.readline(MAX_LINE_CHARS * 4 + 2)  # a character is at most 4 bytes in UTF-8
            if not raw:
                try:
                    self.decoder.decode(b"", final=True)
                except UnicodeDecodeError:
                    raise _not_utf8(self.name, self.line + 1, raw[-1:][0] if raw else 0) from None
                return
            self.read += len(raw)
            if self.read > MAX_PLAN_BYTES:
                raise InputError(f"{self.name} grew beyond {MAX_PLAN_BYTES:,} bytes while it was read; nothing was run")
            self.hasher.update(raw)
            self.line += 1
            if self.first:
                self.first = False
                if raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = self.decoder.decode(raw)
            except UnicodeDecodeError as exc:
                raise _not_utf8(self.name, self.line, raw[exc.start] if exc.start < len(raw) else 0) from None
            if len(text) > MAX_LINE_CHARS or (len(raw) > MAX_LINE_CHARS * 4 and not raw.endswith(b"\n")):
                raise PlanError(
                    f"{self.name}: line {self.line} is longer than {MAX_LINE_CHARS:,} characters; nothing was run",
                    [f"line {self.line}: longer than {MAX_LINE_CHARS:,} characters"],
                    hint="a plan row is one mailbox: check that this is the plan file",
                )
            self.blank = self.blank and not text.strip()
            yield text


def _delimiter(first_line: str) -> str:
    """Comma; or semicolon / tab when the header uses those (spreadsheets in some locales save ``;``)."""
    if "," not in first_line:
        if ";" in first_line:
            return ";"
        if "\t" in first_line:
            return "\t"
    return ","


def _column_name(text: str) -> str:
    return re.sub(r"[\s\-]+", "_", text.strip().lower())


def _rows(lines: Iterator[str], name: str) -> Iterable[tuple[int, list[str]]]:
    """(line number where the row starts, cells) for every CSV row, blank rows included."""
    first = next(lines, "")
    reader = csv.reader(_chain(first, lines), delimiter=_delimiter(first.split("\n", 1)[0]), strict=True)
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise PlanError(
                f"{name}: line {line}: not valid CSV ({exc}); nothing was run",
                [f"line {line}: not valid CSV ({exc})"],
                hint="check the quotes on that line: a value with a comma or a quote must be in double quotes",
            ) from None
        yield line, cells
        line = reader.line_num + 1


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest


def _label(mailbox: InactiveMailbox | _PlanMailbox) -> str:
    name = mailbox.display_name or mailbox.name
    if mailbox.primary_smtp and name:
        return f"{name} <{mailbox.primary_smtp}>"
    return mailbox.primary_smtp or name or mailbox.identity


class _Checker:
    """Validates rows one by one, collecting every problem."""

    def __init__(self, db: DatabaseManager, header: list[str]) -> None:
        self.db = db
        self.header = header
        self.columns = set(header)
        self.problems: list[str] = []
        self.seen: dict[tuple[str, str], int] = {}  # (guid, action) -> line
        self.upns: dict[str, int] = {}
        self.names: dict[str, int] = {}
        self.cache_empty: bool | None = None

    def bad(self, line: int, reason: str) -> None:
        self.problems.append(f"line {line}: {shorten(reason, MAX_PROBLEM)}")

    def row(self, line: int, cells: list[str]) -> PlanRow | None:
        if len(cells) > len(self.header):
            extra = [c for c in cells[len(self.header) :] if c.strip()]
            if extra:
                self.bad(line, f"{len(cells)} values but the header has {len(self.header)} columns")
                return None
        values = {name: unescape_cell(cells[i].strip()) if i < len(cells) else "" for i, name in enumerate(self.header)}
        action = values.get("action", "").lower().replace("_", "-")
        identity = values.get("identity", "")
        problems_before = len(self.problems)
        if not action:
            self.bad(line, f"no action (use {ACTION_WORDS})")
        elif action not in ACTIONS:
            self.bad(line, f"unknown action '{values.get('action')}' (use {ACTION_WORDS})")
        if not identity:
            self.bad(line, "no identity (give the mailbox's ExchangeGuid, address or name)")
        if len(self.problems) > problems_before:
            return None
        params = self.params(line, action, values)
        mailbox = self.mailbox(line, identity)
        if params is None or mailbox is None:
            return None
        key = (mailbox.identity, action)
        if key in self.seen:
            self.bad(line, f"the same mailbox and action as line {self.seen[key]} ({_label(mailbox)}, {action})")
            return None
        self.seen[key] = line
        if action == RECOVER:
            if not self.unique(line, "upn", params["upn"].lower(), self.upns):
                return None
            if not self.unique(line, "name", params["name"].lower(), self.names):
                return None
        return PlanRow(line, action, identity, mailbox.identity, params, _label(mailbox))

    def unique(self, line: int, column: str, value: str, seen: dict[str, int]) -> bool:
        if value in seen:
            self.bad(line, f"{column} '{value}' is also used on line {seen[value]}")
            return False
        seen[value] = line
        return True

    def params(self, line: int, action: str, values: dict[str, str]) -> dict[str, Any] | None:
        ok = True
        for column in REQUIRED[action]:
            if column not in self.columns:
                self.bad(line, f"{action} needs the column '{column}', which the header does not have")
                ok = False
            elif not values[column]:
                self.bad(line, f"{action} needs a value in '{column}'")
                ok = False
        allowed = {*BASE_COLUMNS, *INFO_COLUMNS, *REQUIRED[action], *OPTIONAL[action]}
        for column in self.header:
            if column not in allowed and values.get(column):
                self.bad(line, f"'{column}' does not apply to {action} (it has '{values[column]}')")
                ok = False
        if not ok:
            return None
        check = getattr(self, "_" + action.replace("-", "_"))
        result: dict[str, Any] | None = check(line, values)
        return result

    def _recover(self, line: int, values: dict[str, str]) -> dict[str, Any] | None:
        from imm.services.action_specs import RecoverSpec

        upn, name, display = values["upn"], values["name"], values.get("display_name", "")
        problems = RecoverSpec.problems(upn, name, display)  # the same check as `imm recover`
        for problem in problems:
            self.bad(line, problem)
        if problems:
            return None
        params: dict[str, Any] = {"upn": upn, "name": name}
        if display:
            params["display_name"] = display
        return params

    def _restore(self, line: int, values: dict[str, str]) -> dict[str, Any] | None:
        archive = values.get("archive", "").lower()
        if archive not in _TRUE | _FALSE:
            self.bad(line, f"archive must be true or false (it is '{values['archive']}')")
            return None
        params: dict[str, Any] = {"target": values["target"], "archive": archive in _TRUE}
        if values.get("target_folder"):
            params["target_folder"] = values["target_folder"]
        return params

    def _release(self, line: int, values: dict[str, str]) -> dict[str, Any] | None:
        from imm.domain.eligibility import check_release_type

        try:
            kind = check_release_type(values["type"])
        except InputError as exc:
            if exc.hint:  # an old word, renamed
                self.bad(line, f"release: {exc.message} ({exc.hint})")
            else:
                types = ", ".join(release_types())
                self.bad(line, f"unknown hold type '{values['type']}' for release (use {types})")
            return None
        return {"type": kind}

    def _set_duration(self, line: int, values: dict[str, str]) -> dict[str, Any] | None:
        from imm.services.action_specs import SetDurationSpec

        try:
            return {"days": SetDurationSpec.of(values["days"]).days}  # the same check as `imm holds set-duration`
        except InputError as exc:
            self.bad(line, exc.message)
            return None

    def mailbox(self, line: int, identity: str) -> InactiveMailbox | None:
        try:
            return self.db.find_mailbox(identity)
        except NotFoundError:
            if self.cache_empty is None:
                self.cache_empty = self.db.count_mailboxes() == 0
            self.bad(line, f"no mailbox '{identity}' in the cache (run `imm sync` if it is new)")
        except InputError as exc:  # ambiguous, or an unusable identity
            reason = exc.message
            if exc.code == "ambiguous_identity":
                reason += "; use the ExchangeGuid"
            self.bad(line, reason)
        return None


def read_plan(path: Path, db: DatabaseManager) -> Plan:
    """Read and validate the whole plan against the cache. Raises :class:`PlanError` listing every bad row."""
    source = _PlanFile(path)
    try:
        return _read_plan(source, path, db)
    finally:
        source.close()


def _read_plan(source: _PlanFile, path: Path, db: DatabaseManager) -> Plan:
    name = source.name
    rows = iter(_rows(source.lines(), name))
    header: list[str] = []
    raw_header: list[str] = []
    header_line = 1
    for line, cells in rows:
        if any(c.strip() for c in cells):
            header, raw_header, header_line = [_column_name(c) for c in cells], cells, line
            break
    if not header and source.blank:
        raise PlanError(f"{name}: the plan is empty; nothing was run", ["line 1: the file is empty"])
    if len(header) > MAX_COLUMNS:
        raise PlanError(
            f"{name}: line {header_line}: the header has {len(header):,} columns (at most {MAX_COLUMNS}); "
            "nothing was run",
            [f"line {header_line}: {len(header):,} columns (at most {MAX_COLUMNS})"],
            hint="the first row names the columns, e.g. action,identity,type",
        )
    problems = _header_problems(header, raw_header, header_line)
    if problems:
        raise PlanError(
            f"{name}: {problems[0].split(': ', 1)[1]}; nothing was run",
            problems,
            hint="the first row names the columns, e.g. action,identity,type",
        )
    checker = _Checker(db, header)
    plan = Plan(path, "")
    for line, cells in rows:
        if not any(c.strip() for c in cells) or cells[0].strip().startswith("#"):
            continue
        row = checker.row(line, cells)
        if row is not None:
            plan.rows.append(row)
    if checker.problems:
        count = len(checker.problems)
        hint = "fix the rows above and run the plan again"
        if checker.cache_empty:
            hint = "the cache is empty: run `imm sync` first"
        raise PlanError(
            f"{name}: {count} invalid {'row' if count == 1 else 'rows'}; nothing was run", checker.problems, hint=hint
        )
    if not plan.rows:
        raise PlanError(f"{name}: the plan has no rows, only a header; nothing was run", ["the plan has no rows"])
    plan.sha256 = source.hasher.hexdigest()
    return plan


def _header_problems(header: list[str], raw: list[str], line: int) -> list[str]:
    missing = [c for c in BASE_COLUMNS if c not in header]
    if missing:
        found = shorten(", ".join(c.strip() for c in raw if c.strip()), 120) or "nothing"
        return [
            f"line {line}: the header row is missing (the first row must name the columns action and identity; "
            f"it has {found})"
        ]
    problems = []
    for column in dict.fromkeys(header):
        if header.count(column) > 1:
            problems.append(f"line {line}: the column '{shorten(column, 40)}' appears {header.count(column)} times")
        elif column not in KNOWN_COLUMNS:
            problems.append(
                f"line {line}: unknown column '{shorten(column, 40)}' (the columns are: {', '.join(KNOWN_COLUMNS)})"
            )
    return problems


# ------------------------------------------------------------------------------------------------ writing
PLAN_COLUMNS: dict[str, tuple[str, ...]] = {
    RECOVER: ("action", "identity", "upn", "name", "display_name", "note"),
    RESTORE: ("action", "identity", "target", "archive", "target_folder", "note"),
    RELEASE: ("action", "identity", "type", "note"),
    SET_DURATION: ("action", "identity", "days", "note"),
}


class _PlanMailbox(NamedTuple):
    """The fields of a cached mailbox a plan row is made of (read as a stream of rows, not records)."""

    identity: str
    display_name: str
    name: str
    primary_smtp: str
    user_principal_name: str
    operating_company: str | None
    department: str | None
    hold_types: list[str]
    releasable: bool
    holds_expire_on: str | None  # ISO 8601 text


def _note(m: _PlanMailbox) -> str:
    """What the 'note' column says of a mailbox (``m``: a record or a row with its fields)."""
    parts = [_label(m)]
    org = " / ".join(p for p in (m.operating_company, m.department) if p)
    if org:
        parts.append(org)
    parts.append("holds: " + (", ".join(m.hold_types) or "none"))
    if m.releasable:
        when = m.holds_expire_on[:10] if m.holds_expire_on else None
        parts.append(f"holds expired {when}" if when else "holds expired")
    return "; ".join(parts)


def plan_rows(
    db: DatabaseManager,
    filters: MailboxFilter,
    action: str,
    *,
    release_type: str | None = None,
    days: int | None = None,
    target: str | None = None,
    archive: bool = False,
    target_folder: str | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """One plan row per cached mailbox matching ``filters`` (sorted by address), for ``imm bulk plan``, read
    from the store as they are written (flat memory for a plan of any size).

    recover rows propose the mailbox's own UPN and name (edit them if those are taken); restore rows take
    ``target`` (empty when not given: the plan is then rejected until each row names one). NotFoundError,
    before any row, when no mailbox matches.
    """
    if action not in ACTIONS:
        raise InputError(f"unknown action '{action}' (use {ACTION_WORDS})")
    kind = ""
    if action == RELEASE:
        from imm.domain.eligibility import check_release_type

        kind = check_release_type(release_type or "all-unlocked")
    stream = db.stream_mailbox_rows(filters, sort="smtp", limit=limit, columns=_PlanMailbox._fields)
    first = next(stream, None)
    if first is None:
        raise NotFoundError(
            "no cached mailbox matches these filters; no plan was written",
            hint="check the filters with `imm list` (same options), or run `imm sync`",
        )
    return _plan_rows(itertools.chain([first], stream), action, kind, days, target, archive, target_folder)


def _plan_rows(
    stream: Iterator[tuple[Any, ...]],
    action: str,
    kind: str,
    days: int | None,
    target: str | None,
    archive: bool,
    target_folder: str | None,
) -> Iterator[dict[str, Any]]:
    for values in stream:
        m = _PlanMailbox._make(values)
        row: dict[str, Any] = {"action": action, "identity": m.identity, "note": _note(m)}
        if action == RECOVER:
            row.update(
                upn=m.user_principal_name or m.primary_smtp,
                name=m.name or m.primary_smtp.split("@")[0],
                display_name=m.display_name,
            )
        elif action == RESTORE:
            row.update(target=target or "", archive=archive, target_folder=target_folder or "")
        elif action == RELEASE:
            row["type"] = kind
        else:
            row["days"] = "unlimited" if days is None else days
        yield row


def write_plan(rows: Iterable[dict[str, Any]], action: str, stream: Any) -> int:
    """The plan as CSV, row by row (formula-like cells made safe; :func:`read_plan` reads them back unchanged);
    returns how many rows it wrote."""
    columns = PLAN_COLUMNS[action]
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow([csv_safe(row.get(c)) for c in columns])
        count += 1
    return count
