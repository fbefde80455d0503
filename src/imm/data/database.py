"""The local store: one SQLite file per profile (seed Task 1, design §3).

``DatabaseManager`` opens the file (WAL, ``foreign_keys=ON``, a busy timeout, ``synchronous=NORMAL``), runs the
migrations (:mod:`imm.data.migrations`), and reads and writes the mailbox cache. Each thread gets its own
connection, so worker threads may read while the main thread writes. Connections are in autocommit mode; writes
that belong together go through :meth:`DatabaseManager.transaction` (``BEGIN IMMEDIATE … COMMIT``; nested use
becomes a SAVEPOINT).

Values are stored so they read back as the same Python values: datetimes as ISO 8601 UTC text with microseconds
(``2026-01-15T09:30:00.123456+00:00``; naive datetimes are taken as UTC; read back timezone-aware in UTC),
lists and dicts as JSON, booleans as 0/1.

SQLite failures that a user can act on become :class:`imm.errors.StoreError` (exit 1) with one line naming the
file and what to do: not a database / corrupt, read-only location, locked by another process, newer schema.

A ``postgresql://`` target opens the team store instead (:mod:`imm.data.postgres`): the same interface and the
same SQL, with the few dialect-specific statements chosen here by ``self.dialect`` (search, bulk writes,
streaming, write serialisation, file-only housekeeping).
"""

from __future__ import annotations

import itertools
import json
import json.encoder
import logging
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast, get_type_hints

from imm.data import migrations, postgres
from imm.data.models import InactiveMailbox
from imm.errors import ImmError, InputError, NotFoundError, StoreError
from imm.textsafe import shorten

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT = 5.0  # seconds
FTS_TABLE = "inactive_mailboxes_fts"
SEARCH_VIEW = "inactive_mailboxes_search"  # what the index reads (see migrations 0001_cache)
MIN_FTS_QUERY = 3  # the trigram tokenizer needs three characters; shorter text falls back to LIKE
SEARCH_WINDOW = 2000  # matches gathered before sorting by name when a search has a limit

P = ParamSpec("P")
R = TypeVar("R")


# ------------------------------------------------------------------------------------------ value encoding
def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with microseconds: one fixed width, so text order is time order."""
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def parse_datetime(text: str | None) -> datetime | None:
    """The reverse of :func:`format_datetime` (also accepts other ISO forms, taken as UTC when naive)."""
    if text is None or text == "":
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default)
# The C encoder built once (json.dumps builds one per call); markers=None: our values have no cycles.
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_FAST_ENCODE = (
    _C_ENCODER(None, _json_default, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    if _C_ENCODER is not None
    else None
)


def to_json(value: Any) -> str:
    """Compact JSON (UTF-8 text kept as is); datetimes as ISO 8601 UTC, enums as their values."""
    if _FAST_ENCODE is not None and (type(value) is list or type(value) is dict):
        return "".join(_FAST_ENCODE(value, 0))
    return _JSON_ENCODER.encode(value)


def _encode_bool(value: Any) -> int | None:
    return None if value is None else int(bool(value))


def _encode_datetime(value: Any) -> str | None:
    if value is None:
        return None
    if value.tzinfo is UTC:  # the common case, in one call
        return str(value.isoformat(timespec="microseconds"))
    return format_datetime(value)


def _encode_json(value: Any) -> str | None:
    return None if value is None else to_json(value)


def _decoder_bool(value: Any) -> bool:
    return bool(value)


def _decode_list(value: Any) -> list[Any]:
    if value is None or value == "[]":
        return []
    return list(json.loads(value))


def _decode_dict(value: Any) -> dict[str, Any]:
    if value is None or value == "{}":
        return {}
    return dict(json.loads(value))


def _classify() -> tuple[tuple[str, ...], list[Callable[[Any], Any] | None], list[Callable[[Any], Any] | None]]:
    """Column names (the dataclass's field order) with an encoder and decoder per column (None = as is)."""
    hints = get_type_hints(InactiveMailbox)
    names: list[str] = []
    encoders: list[Callable[[Any], Any] | None] = []
    decoders: list[Callable[[Any], Any] | None] = []
    for f in fields(InactiveMailbox):
        text = str(hints[f.name])
        names.append(f.name)
        if hints[f.name] is bool:
            encoders.append(_encode_bool)
            decoders.append(_decoder_bool)
        elif "datetime" in text:
            encoders.append(_encode_datetime)
            decoders.append(parse_datetime)
        elif text.startswith("list"):
            encoders.append(_encode_json)
            decoders.append(_decode_list)
        elif text.startswith("dict"):
            encoders.append(_encode_json)
            decoders.append(_decode_dict)
        else:
            encoders.append(None)
            decoders.append(None)
    return tuple(names), encoders, decoders


COLUMNS, _ENCODERS, _DECODERS = _classify()
_TEXT_COLUMNS = frozenset(
    name for name, hint in get_type_hints(InactiveMailbox).items() if hint in (str, str | None) and name in COLUMNS
)
_COLUMN_LIST = ", ".join(COLUMNS)
_DECODE_PLAN = [(i, dec) for i, dec in enumerate(_DECODERS) if dec is not None]
# The columns of the search index (in its order) and their positions in COLUMNS.
_SEARCH_COLUMNS = ("display_name", "primary_smtp", "name", "user_principal_name", "operating_company", "department")
_SEARCH_POSITIONS = [COLUMNS.index(c) for c in _SEARCH_COLUMNS]
_FTS_COLUMNS = ", ".join(_SEARCH_COLUMNS)
_COLUMN_LIST_SEARCH = "identity, " + _FTS_COLUMNS
# Both in rowid order: FTS5 flushes its in-memory buffer whenever a rowid arrives out of order (many times slower).
_FTS_DELETE_SQL = (
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, {_FTS_COLUMNS}) SELECT 'delete', rid, {_FTS_COLUMNS} "
    f"FROM {SEARCH_VIEW} WHERE identity IN (SELECT value FROM json_each(?)) ORDER BY rid"
)
_FTS_INSERT_SQL = (
    f"INSERT INTO {FTS_TABLE}(rowid, {_FTS_COLUMNS}) SELECT rid, {_FTS_COLUMNS} "
    f"FROM {SEARCH_VIEW} WHERE identity IN (SELECT value FROM json_each(?)) ORDER BY rid"
)
_FTS_INSERT_NEW_SQL = (
    f"INSERT INTO {FTS_TABLE}(rowid, {_FTS_COLUMNS}) SELECT rid, {_FTS_COLUMNS} FROM {SEARCH_VIEW} WHERE rid > ?"
)
_SEARCH_GUARD = "_imm_search_guard"
_INSERT_SQL = f"INSERT INTO inactive_mailboxes ({_COLUMN_LIST}) VALUES ({', '.join('?' for _ in COLUMNS)})"
_UPSERT_SQL = (
    f"INSERT INTO inactive_mailboxes ({_COLUMN_LIST}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT(identity) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "identity")
)
_SELECT_SQL = f"SELECT {_COLUMN_LIST} FROM inactive_mailboxes"
_SELECT_M = ", ".join(f"m.{c}" for c in COLUMNS)


def _memo_datetime() -> Callable[[Any], str | None]:
    """A datetime encoder for one column that remembers its last value (a batch often shares one, e.g. the
    ``last_updated`` of a sync). The memo is one tuple, replaced in one step, so threads may share it."""
    memo: list[tuple[Any, str | None]] = [(None, None)]

    def encode(value: Any) -> str | None:
        last = memo[0]
        if value is last[0]:
            return last[1]
        text = _encode_datetime(value)
        memo[0] = (value, text)
        return text

    return encode


def _compile_to_row() -> Callable[[InactiveMailbox], tuple[Any, ...]]:
    """Build ``mailbox_to_row`` as one tuple expression (several times faster than a loop over encoders).

    Booleans need no encoding: sqlite3 stores Python bools as the integers 0 and 1.
    """
    namespace: dict[str, Any] = {"_js": _encode_json}
    parts = []
    for name, enc in zip(COLUMNS, _ENCODERS, strict=True):
        if enc is None or enc is _encode_bool:
            parts.append(f"d[{name!r}]")
        elif enc is _encode_datetime:
            namespace[f"_dt_{name}"] = _memo_datetime()
            parts.append(f"_dt_{name}(d[{name!r}])")
        else:
            parts.append(f"_js(d[{name!r}])")
    source = "def mailbox_to_row(mailbox):\n    d = mailbox.__dict__\n    return (" + ", ".join(parts) + ",)\n"
    exec(compile(source, "<imm.data.database.mailbox_to_row>", "exec"), namespace)  # noqa: S102 - our own text
    func: Callable[[InactiveMailbox], tuple[Any, ...]] = namespace["mailbox_to_row"]
    func.__doc__ = "The stored values of one mailbox, in :data:`COLUMNS` order."
    return func


mailbox_to_row = _compile_to_row()


def row_to_mailbox(row: Sequence[Any]) -> InactiveMailbox:
    """An InactiveMailbox from a row selected with :data:`COLUMNS` in order."""
    values = list(row)
    for i, dec in _DECODE_PLAN:
        values[i] = dec(values[i])
    return InactiveMailbox(*values)


def iso_text(text: str | None) -> str | None:
    """A stored datetime as ``datetime.isoformat()`` writes it (without ``.000000``), without building one."""
    if text is None or text == "":
        return None
    if len(text) == 32 and text.endswith("+00:00") and text[10] == "T":  # the stored form: the common case
        return text[:19] + "+00:00" if text[19:26] == ".000000" else text
    moment = parse_datetime(text)
    return None if moment is None else moment.isoformat()


def _compile_row_reader(columns: Sequence[str]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A function from a stored row (rowid first, then ``columns``) to output-ready values: lists and dicts
    decoded, booleans as bool, datetimes as ISO 8601 text (:func:`iso_text`); nothing else is touched."""
    namespace: dict[str, Any] = {"_b": _decoder_bool, "_l": _decode_list, "_d": _decode_dict, "_t": iso_text}
    short = {_decoder_bool: "_b", _decode_list: "_l", _decode_dict: "_d", parse_datetime: "_t"}
    parts = []
    for i, name in enumerate(columns, start=1):
        dec = _DECODERS[COLUMNS.index(name)]
        parts.append(f"r[{i}]" if dec is None else f"{short[dec]}(r[{i}])")
    source = "def read(r):\n    return (" + ", ".join(parts) + ",)\n"
    exec(compile(source, "<imm.data.database.row_reader>", "exec"), namespace)  # noqa: S102 - our own text
    func: Callable[[Sequence[Any]], tuple[Any, ...]] = namespace["read"]
    return func


STREAM_BATCH = 500  # rows fetched by rowid at a time while streaming
STREAM_CACHE_KIB = 8192  # page cache of a streaming connection: a scan of 1M rows stays small


# --------------------------------------------------------------------------------------------- filtering
# InactiveMailbox.total_size_mb in SQL: the one size quantity of the table, the filters, the sort and cost.
TOTAL_SIZE_SQL = (
    "round(coalesce(m.size_mb, 0) + coalesce(m.recoverable_items_mb, 0) + coalesce(m.archive_size_mb, 0) "
    "+ coalesce(m.archive_recoverable_items_mb, 0), 2)"
)


@dataclass(frozen=True)
class MailboxFilter:
    """What ``imm list`` filters on; ``None`` means "any". Text matches ignore case (ASCII).

    Sizes are ``total_size_mb``, the whole mailbox: primary and archive, items and Recoverable Items, as cost
    counts them (:data:`TOTAL_SIZE_SQL`).
    ``older_than_days`` compares WhenSoftDeleted with ``now`` (default: the current time).
    """

    company: str | None = None
    department: str | None = None
    hold_type: str | None = None
    older_than_days: int | None = None
    min_size_mb: float | None = None
    max_size_mb: float | None = None
    recovery_eligible: bool | None = None
    releasable: bool | None = None
    lifecycle_state: str | None = None  # inactive | pending-delay | soft-deleted (imm.domain.lifecycle)
    leaver_retention_ended: bool | None = None  # the leaver retention schedule ended, only its holds remain
    tenant: str | None = None
    now: datetime | None = None

    def where(self) -> tuple[str, list[Any]]:
        """A SQL WHERE clause (or "") over ``inactive_mailboxes`` aliased ``m`` and its parameters."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.company is not None:
            clauses.append("m.operating_company = ? COLLATE NOCASE")
            params.append(self.company)
        if self.department is not None:
            clauses.append("m.department = ? COLLATE NOCASE")
            params.append(self.department)
        if self.hold_type is not None:
            clauses.append("EXISTS (SELECT 1 FROM json_each(m.hold_types) WHERE lower(json_each.value) = lower(?))")
            params.append(self.hold_type)
        if self.older_than_days is not None:
            cutoff = (self.now or datetime.now(UTC)) - timedelta(days=self.older_than_days)
            clauses.append("m.when_soft_deleted < ?")
            params.append(format_datetime(cutoff))
        if self.min_size_mb is not None:
            clauses.append(f"{TOTAL_SIZE_SQL} >= ?")
            params.append(float(self.min_size_mb))
        if self.max_size_mb is not None:
            clauses.append(f"{TOTAL_SIZE_SQL} <= ?")
            params.append(float(self.max_size_mb))
        if self.recovery_eligible is not None:
            clauses.append("m.recovery_eligible = ?")
            params.append(int(self.recovery_eligible))
        if self.releasable is not None:
            # A releasable selection never holds a mailbox under a delay hold or past its last hold (pending
            # delay, soft-deleted): analysis sets releasable only for "inactive", and this says so again.
            clauses.append("m.releasable = ?" + (" AND m.lifecycle_state = 'inactive'" if self.releasable else ""))
            params.append(int(self.releasable))
        if self.lifecycle_state is not None:
            clauses.append("m.lifecycle_state = ?")
            params.append(self.lifecycle_state.lower())
        if self.leaver_retention_ended is not None:
            clauses.append(
                "m.leaver_retention_ended = ?"
                + (" AND m.lifecycle_state = 'inactive'" if self.leaver_retention_ended else "")
            )
            params.append(int(self.leaver_retention_ended))
        if self.tenant is not None:
            clauses.append("m.tenant = ? COLLATE NOCASE")
            params.append(self.tenant)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


# Sort names → SQL expressions (ascending). "age" ascending = most recently deleted first.
SORT_KEYS: dict[str, str] = {
    "name": "m.display_name COLLATE NOCASE",
    "smtp": "m.primary_smtp COLLATE NOCASE",
    "company": "m.operating_company COLLATE NOCASE",
    "department": "m.department COLLATE NOCASE",
    "size": TOTAL_SIZE_SQL,
    "total_size_mb": TOTAL_SIZE_SQL,
    "age": "m.when_soft_deleted DESC",
    "deleted": "m.when_soft_deleted",
    "items": "m.item_count",
    "cost": "m.monthly_cost",
    "expiry": "m.holds_expire_on",
    "identity": "m.identity",
}
DEFAULT_SORT = "name"


def _order_by(sort: str, descending: bool, postgresql: bool = False) -> str:
    """ORDER BY for a sort name. ``postgresql``: in SQLite's order (:func:`pg_order`), and NULLs where SQLite
    puts them (first ascending, last descending; PostgreSQL puts them the other way round)."""
    key = sort.strip().lower().replace("-", "_")
    if key in SORT_KEYS:
        expression = SORT_KEYS[key]
    elif key in COLUMNS:
        expression = f"m.{key} COLLATE NOCASE" if key in _TEXT_COLUMNS else f"m.{key}"
    else:
        choices = ", ".join(SORT_KEYS)
        raise InputError(f"cannot sort by '{sort}': use one of {choices}, or a field name of the JSON output")
    if descending:
        expression = expression[: -len(" DESC")] if expression.endswith(" DESC") else expression + " DESC"
    if postgresql:
        expression = pg_order(expression) + (" NULLS LAST" if expression.endswith(" DESC") else " NULLS FIRST")
    return f" ORDER BY {expression}, m.identity"


def pg_order(expression: str) -> str:
    """SQLite's NOCASE order in PostgreSQL: ASCII letters folded (``lower`` under the C collation folds only
    those), then code point order, as SQLite compares. (Equality uses the ICU collation ``nocase``.)"""
    if " COLLATE NOCASE" not in expression:
        return expression
    column, _, rest = expression.partition(" COLLATE NOCASE")
    return f'lower({column} COLLATE "C"){rest}'


def fts_phrase(text: str) -> str:
    """``text`` as one FTS5 string: every character literal (operators, ``*``, ``-``, quotes are plain text)."""
    return '"' + text.replace('"', '""') + '"'


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, with ``%``, ``_`` and the escape character made literal."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def cached_identities(path: Path, prefix: str, limit: int) -> list[str]:
    """UPNs and primary SMTP addresses of cached mailboxes starting with ``prefix`` (case-insensitive), sorted, at
    most ``limit``: shell completion. The file is opened read only and never created or migrated; a missing file
    has none. Two bounded range scans, over the address index and the UPN index (UPNs that differ from the
    address), both ``COLLATE NOCASE``."""
    if not path.is_file():
        return []
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=1.0)
    try:
        bounds = (prefix, prefix + "\U0010ffff", limit)
        found = [
            row[0]
            for row in conn.execute(
                "SELECT primary_smtp FROM inactive_mailboxes WHERE primary_smtp >= ? COLLATE NOCASE "
                "AND primary_smtp < ? COLLATE NOCASE ORDER BY primary_smtp COLLATE NOCASE LIMIT ?",
                bounds,
            )
        ]
        found += [
            row[0]
            for row in conn.execute(
                "SELECT user_principal_name FROM inactive_mailboxes WHERE user_principal_name >= ? COLLATE NOCASE "
                "AND user_principal_name < ? COLLATE NOCASE AND lower(user_principal_name) <> lower(primary_smtp) "
                "ORDER BY user_principal_name COLLATE NOCASE LIMIT ?",
                bounds,
            )
        ]
        return sorted(set(found), key=str.lower)[:limit]
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------ error mapping
_LOCKED = ("database is locked", "database table is locked", "database schema is locked")
_READ_ONLY = ("attempt to write a readonly database", "readonly database", "unable to open database file")
_CORRUPT = ("file is not a database", "database disk image is malformed", "file is encrypted or is not a database")
# A file that opens but whose schema or text is damaged (a dropped table, bytes overwritten in place).
_DAMAGED = (
    "no such table",
    "no such column",
    "could not decode to utf-8",
    "malformed database schema",
    "no such index",
)
DAMAGED_HINT = (
    "keep the file (it also holds the audit log): restore it from a backup, or move it "
    "aside and run `imm sync` to build a new cache"
)


def store_error(exc: BaseException, path: str) -> StoreError | None:
    """The user-facing StoreError for a SQLite failure, or None when it is not one a user can act on."""
    if isinstance(exc, postgres.DatabaseError):
        return postgres.store_error(exc, path)
    if isinstance(exc, PermissionError):
        return StoreError(
            f"{path} is in a read-only location: choose a writable one with --db PATH or IMM_DB",
            code="store_read_only",
        )
    if isinstance(exc, UnicodeDecodeError):  # SQLite's own message held bytes that are not UTF-8: damaged schema
        reason = exc.object.decode("utf-8", "replace") if isinstance(exc.object, bytes) else str(exc)
        return damaged(path, reason)
    if not isinstance(exc, sqlite3.Error):
        return None
    message = str(exc).lower()
    if any(s in message for s in _DAMAGED):
        return damaged(path, str(exc))
    if any(s in message for s in _LOCKED):
        return StoreError(
            f"{path} is locked by another process (another imm?); wait for it to finish or close it",
            code="store_locked",
        )
    if any(s in message for s in _CORRUPT):
        return StoreError(
            f"{path} is not a valid imm database: move it aside (it is kept) and run `imm sync` to rebuild the cache",
            code="store_corrupt",
        )
    if any(s in message for s in _READ_ONLY):
        return StoreError(
            f"{path} cannot be written (read-only file or folder): make it writable, or choose another file "
            "with --db PATH or IMM_DB",
            code="store_read_only",
        )
    if "disk i/o error" in message:
        return StoreError(f"{path}: disk I/O error: check the disk and the file", code="store_io")
    if "database or disk is full" in message:
        return StoreError(f"{path}: the disk is full: free some space and try again", code="store_full")
    return None


def damaged(path: str, reason: str) -> StoreError:
    """The store opens but fails its schema or text check: say which, and how to repair."""
    reason = reason.split(" with text ", 1)[0]  # SQLite quotes the undecodable text itself
    return StoreError(f"the store {path} is damaged ({shorten(reason, 200)})", hint=DAMAGED_HINT, code="store_damaged")


def _mapped(method: Callable[P, R]) -> Callable[P, R]:
    """Turn actionable SQLite failures inside a DatabaseManager method into StoreError."""

    @wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except ImmError:
            raise
        except (sqlite3.Error, PermissionError, UnicodeDecodeError, postgres.DatabaseError) as exc:
            mapped = store_error(exc, args[0].display_path)  # type: ignore[attr-defined]
            if mapped is None:
                raise
            log.debug("store error", exc_info=True)
            raise mapped from exc

    return wrapper


# ----------------------------------------------------------------------------------------------- manager
class DatabaseManager:
    """The SQLite cache of one profile (and the home of the audit log and bulk jobs' tables).

    ``db_path`` is a file path, or an SQLite URI (``file:/path/imm.db?mode=ro``).
    """

    def __init__(
        self, db_path: Path | str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT, local_path: Path | None = None
    ) -> None:
        text = str(db_path)
        self.dialect = "sqlite"
        self._pg: postgres.PgPool | None = None
        self.is_uri = text.startswith("file:")
        self.db_path: Path = Path(text.split("?", 1)[0][len("file:") :] if self.is_uri else text)
        self.display_path = text if self.is_uri else str(self.db_path)
        if postgres.is_store_url(text):
            # A team store; ``local_path`` names this machine's side files (the audit key, job locks).
            self.dialect = "postgresql"
            self._pg = postgres.PgPool(postgres.check_store_url(text))
            self.is_uri = False
            self.db_path = Path(local_path) if local_path is not None else Path("imm-team-store")
            self.display_path = postgres.display_url(text)
        self._target = text
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._savepoints = itertools.count(1)

    @property
    def is_postgresql(self) -> bool:
        return self._pg is not None

    def __repr__(self) -> str:
        return f"DatabaseManager({self.display_path!r})"

    # ----- connections -----
    def _connect(self) -> sqlite3.Connection:
        if self._pg is not None:
            return self._pg.connect()  # type: ignore[return-value]
        if not self.is_uri and self._target != ":memory:":
            if self.db_path.is_dir():
                raise StoreError(f"{self.db_path} is a folder: give the database file's path with --db PATH or IMM_DB")
            if not self.db_path.exists():
                try:
                    self.db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    # the file holds the audit log: readable by its owner only
                    os.close(os.open(self.db_path, os.O_CREAT | os.O_WRONLY, 0o600))
                except PermissionError:
                    raise
                except OSError as exc:
                    parent = next((p for p in self.db_path.parents if p.exists()), None)
                    reason = f"{parent} is not a folder" if parent and not parent.is_dir() else exc.strerror or exc
                    raise StoreError(
                        f"{self.db_path} cannot be created ({reason}): choose another file with --db PATH or IMM_DB",
                        code="store_create",
                    ) from None
        conn = sqlite3.connect(
            self._target,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=self.is_uri,
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache per connection
        except BaseException:
            conn.close()
            raise
        return conn

    @_mapped
    def get_connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use; ``row_factory`` is ``sqlite3.Row``)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect() if self._pg is None else cast(sqlite3.Connection, self._pg.getconn())
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def limit_page_cache(self, kib: int) -> None:
        """Give this thread's SQLite connection a page cache of at most ``kib`` KiB (a long writer such as a sync
        of 100K mailboxes, whose file outgrows the 64 MiB default: its memory stays flat; PostgreSQL: nothing)."""
        if self._pg is None:
            self.get_connection().execute(f"PRAGMA cache_size = -{int(kib)}")

    def close(self) -> None:
        """Close every thread's connection (the next use opens a new one)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                if self._pg is not None:
                    self._pg.putconn(conn)
                else:
                    conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                log.debug("closing a connection failed", exc_info=True)
        self._local = threading.local()
        if self._pg is not None:
            self._pg.close()

    def __enter__(self) -> DatabaseManager:
        self.initialize()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- schema -----
    @_mapped
    def initialize(self) -> None:
        """Create or migrate the schema (WAL mode). Refuses corrupt, foreign and newer databases."""
        conn = self.get_connection()
        try:
            if self._pg is None:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
            applied = migrations.migrate(conn)
        except migrations.NewerSchemaError as exc:
            raise StoreError(
                f"{self.display_path} was created by a newer imm (unknown migrations: {', '.join(exc.unknown)}): "
                "upgrade imm, or use another file with --db PATH",
                code="store_newer",
            ) from None
        except migrations.NotImmDatabaseError as exc:
            raise StoreError(
                f"{self.display_path} is not a valid imm database (it holds other tables: {exc}): move it aside "
                "(it is kept) and run `imm sync` to rebuild the cache",
                code="store_corrupt",
            ) from None
        if applied:
            log.info("database %s: applied %s", self.display_path, ", ".join(applied))

    def applied_migrations(self) -> list[str]:
        return migrations.applied_migrations(self.get_connection())

    # ----- transactions -----
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE … COMMIT`` on this thread's connection (ROLLBACK on error); nested: a SAVEPOINT."""
        conn = self.get_connection()
        if conn.in_transaction:
            name = f"imm_sp_{next(self._savepoints)}"
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield conn
            except BaseException:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
                raise
            conn.execute(f"RELEASE {name}")
            return
        try:
            if self._pg is not None:  # BEGIN IMMEDIATE's meaning: one writer at a time, for the whole store
                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(?)", (postgres.WRITE_LOCK_KEY,))
            else:
                conn.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, postgres.DatabaseError) as exc:
            mapped = store_error(exc, self.display_path)
            if mapped is None:
                raise
            raise mapped from exc
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except (sqlite3.Error, postgres.DatabaseError) as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            mapped = store_error(exc, self.display_path)
            if mapped is None:
                raise
            raise mapped from exc

    # ----- writing -----
    @_mapped
    def upsert_mailbox(self, mailbox: InactiveMailbox) -> None:
        """Insert or replace one mailbox (keyed by ``identity``)."""
        self.upsert_mailboxes([mailbox])

    @_mapped
    def upsert_mailboxes(self, mailboxes: Iterable[InactiveMailbox]) -> int:
        """Insert or replace many mailboxes in one transaction; returns how many were written.

        The search index is updated in two set-based statements, for the rows that are new or whose searched
        text changed, while the per-row triggers are switched off (much faster than a trigger per row).
        """
        if self._pg is not None:  # the trigram index keeps itself in step
            given = list(mailboxes)
            if not given:
                return 0
            latest = {m.identity: m for m in given}  # the last of a repeated identity wins
            with self.transaction() as conn:
                postgres.upsert_rows(
                    conn,  # type: ignore[arg-type]
                    "inactive_mailboxes",
                    COLUMNS,
                    list(latest),
                    (mailbox_to_row(m) for m in latest.values()),  # made while COPY sends them
                )
            return len(given)
        rows = [mailbox_to_row(m) for m in mailboxes]
        if not rows:
            return 0
        with self.transaction() as conn, self._search_guard(conn):
            for start in range(0, len(rows), 50_000):
                self._upsert_chunk(conn, rows[start : start + 50_000])
        return len(rows)

    def _upsert_chunk(self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        by_id = {row[0]: row for row in rows}  # the last one wins, as executemany would leave it
        ids = to_json(list(by_id))
        cursor = conn.execute(
            f"SELECT {_COLUMN_LIST_SEARCH} FROM inactive_mailboxes WHERE identity IN (SELECT value FROM json_each(?))",
            (ids,),
        )
        cursor.row_factory = None
        changed: list[str] = []
        existing: set[str] = set()
        for old in cursor:
            identity = old[0]
            existing.add(identity)
            new = by_id[identity]
            if any(old[k + 1] != new[p] for k, p in enumerate(_SEARCH_POSITIONS)):
                changed.append(identity)
        if changed:
            conn.execute(_FTS_DELETE_SQL, (to_json(changed),))
        # New rows get rowids above the current largest (updates keep theirs), so they are indexed by a range scan
        # in rowid order rather than looked up one by one.
        watermark = conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM inactive_mailboxes").fetchone()[0]
        if existing or len(by_id) != len(rows):
            conn.executemany(_UPSERT_SQL, rows)
        else:  # all new (a first sync): a plain INSERT is a little cheaper
            conn.executemany(_INSERT_SQL, rows)
        if changed:
            conn.execute(_FTS_INSERT_SQL, (to_json(changed),))
        if len(existing) < len(by_id):
            conn.execute(_FTS_INSERT_NEW_SQL, (watermark,))

    @contextmanager
    def _search_guard(self, conn: sqlite3.Connection) -> Iterator[None]:
        """Switch the search-index triggers off inside the current transaction (the caller keeps the index)."""
        if self._pg is not None:  # no triggers to switch off: the index is PostgreSQL's
            yield
            return
        conn.execute(f"INSERT INTO {_SEARCH_GUARD} (active) VALUES (1)")
        yield
        conn.execute(f"DELETE FROM {_SEARCH_GUARD}")

    @_mapped
    def delete_mailboxes(self, identities: Iterable[str]) -> int:
        """Remove mailboxes by identity; returns how many were removed."""
        ids = list(dict.fromkeys(identities))
        if not ids:
            return 0
        removed = 0
        with self.transaction() as conn, self._search_guard(conn):
            for start in range(0, len(ids), 50_000):
                chunk = to_json(ids[start : start + 50_000])
                if self._pg is None:
                    conn.execute(_FTS_DELETE_SQL, (chunk,))
                cursor = conn.execute(
                    "DELETE FROM inactive_mailboxes WHERE identity IN (SELECT value FROM json_each(?))", (chunk,)
                )
                removed += cursor.rowcount
        return removed

    @_mapped
    def clear_cache(self, *, vacuum: bool = True) -> int:
        """Remove every cached mailbox, org-wide hold and policy (the audit log, jobs, sync history stay).

        Returns the number of mailboxes removed.
        """
        with self.transaction() as conn, self._search_guard(conn):
            count = int(conn.execute("SELECT COUNT(*) FROM inactive_mailboxes").fetchone()[0])
            conn.execute("DELETE FROM inactive_mailboxes")
            if self._pg is None:
                conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('delete-all')")
            conn.execute("DELETE FROM org_holds")
            conn.execute("DELETE FROM policies")
        if vacuum:
            self.vacuum()
        return count

    @_mapped
    def rebuild_search_index(self) -> None:
        """Re-create the search index from the table (after a VACUUM, or to repair it)."""
        if self._pg is not None:
            self.get_connection().execute("REINDEX INDEX idx_mailboxes_search")
            return
        with self.transaction() as conn:
            conn.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")

    @_mapped
    def vacuum(self) -> None:
        """Shrink the file; rebuilds the search index, since VACUUM may renumber the mailboxes' rowids."""
        conn = self.get_connection()
        if self._pg is not None:  # the server's autovacuum looks after a shared store
            return
        conn.execute("VACUUM")
        self.rebuild_search_index()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ----- reading -----
    def _mailboxes(self, sql: str, params: Sequence[Any] = ()) -> list[InactiveMailbox]:
        cursor = self.get_connection().execute(sql, params)
        cursor.row_factory = None  # plain tuples: faster, and the column order is known
        rows = cursor.fetchall()
        try:
            return [row_to_mailbox(row) for row in rows]
        except (ValueError, TypeError):  # a row edited outside imm: find it and name it
            for row in rows:
                try:
                    row_to_mailbox(row)
                except (ValueError, TypeError) as exc:
                    raise StoreError(
                        f"{self.display_path}: the cached mailbox {row[0]} holds unreadable data ({exc}): "
                        "run `imm sync --full` to rewrite it, or `imm cache clear`",
                        code="store_corrupt",
                    ) from None
            raise

    @_mapped
    def get_all_mailboxes(self) -> list[InactiveMailbox]:
        """Every cached mailbox, in identity order."""
        return self._mailboxes(_SELECT_SQL + " ORDER BY identity")

    def iter_mailboxes(self, batch: int = 1000) -> Iterator[InactiveMailbox]:
        """Every cached mailbox in identity order, read ``batch`` at a time (memory flat in the cache size; rows
        written meanwhile, e.g. by a re-analysis of the ones already read, do not disturb the order)."""
        last = ""
        while True:
            page = self._page_after(last, batch)
            yield from page
            if len(page) < batch:
                return
            last = page[-1].identity

    @_mapped
    def _page_after(self, identity: str, batch: int) -> list[InactiveMailbox]:
        return self._mailboxes(_SELECT_SQL + " WHERE identity > ? ORDER BY identity LIMIT ?", (identity, batch))

    @_mapped
    def get_mailbox(self, identity: str) -> InactiveMailbox | None:
        """The mailbox with this ExchangeGuid (any case), or None."""
        found = self._mailboxes(_SELECT_SQL + " WHERE identity IN (?, ?)", (identity, identity.strip().lower()))
        return found[0] if found else None

    @_mapped
    def count_mailboxes(self, filters: MailboxFilter | None = None) -> int:
        where, params = (filters or MailboxFilter()).where()
        return int(
            self.get_connection().execute(f"SELECT COUNT(*) FROM inactive_mailboxes m{where}", params).fetchone()[0]
        )

    @_mapped
    def query_mailboxes(
        self,
        filters: MailboxFilter | None = None,
        sort: str = DEFAULT_SORT,
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[InactiveMailbox]:
        """Mailboxes matching ``filters``, sorted (:data:`SORT_KEYS` or any column), a page at a time."""
        where, params = (filters or MailboxFilter()).where()
        sql = f"SELECT {_SELECT_M} FROM inactive_mailboxes m{where}{_order_by(sort, descending, self.is_postgresql)}"
        if limit is not None or offset:
            if (limit is not None and limit < 0) or offset < 0:
                raise InputError("--limit and --offset must be 0 or more")
            sql += " LIMIT ? OFFSET ?"
            params = [*params, self._no_limit if limit is None else limit, offset]
        return self._mailboxes(sql, params)

    def stream_mailbox_rows(
        self,
        filters: MailboxFilter | None = None,
        sort: str = DEFAULT_SORT,
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
        *,
        columns: Sequence[str] = COLUMNS,
    ) -> Iterator[tuple[Any, ...]]:
        """The mailboxes :meth:`query_mailboxes` would return, as tuples of ``columns`` (output-ready values, see
        :func:`_compile_row_reader`), read from a cursor: constant memory at any size, first row at once.

        The sort runs over rowids only (SQLite's sorter holds a key and a rowid a row, and spills to a temporary
        file), then the rows are read by rowid a batch at a time; no InactiveMailbox is built.
        """
        where, params = (filters or MailboxFilter()).where()
        sql = f"SELECT m.rowid FROM inactive_mailboxes m{where}{_order_by(sort, descending, self.is_postgresql)}"
        if limit is not None or offset:
            if (limit is not None and limit < 0) or offset < 0:
                raise InputError("--limit and --offset must be 0 or more")
            sql += " LIMIT ? OFFSET ?"
            params = [*params, self._no_limit if limit is None else limit, offset]
        return self._stream_rows(sql, params, columns)

    def stream_search_rows(
        self, query: str, limit: int | None = None, *, columns: Sequence[str] = COLUMNS
    ) -> Iterator[tuple[Any, ...]]:
        """:meth:`search_mailboxes` as a stream of tuples of ``columns`` (see :meth:`stream_mailbox_rows`)."""
        sql, params = self._search_sql(query, limit, "m.rowid")
        return self._stream_rows(sql, params, columns)

    @property
    def _no_limit(self) -> int | None:
        return None if self._pg is not None else -1  # LIMIT NULL / LIMIT -1: no limit

    def reader_connection(self) -> sqlite3.Connection:
        """A new connection for one large read (the caller closes it): a small page cache and temporary files on
        disk, so scans, sorts and GROUP BYs over 1M rows keep the process small."""
        conn = self._connect()
        if self._pg is not None:
            return conn
        conn.execute(f"PRAGMA cache_size = -{STREAM_CACHE_KIB}")
        conn.execute("PRAGMA temp_store = FILE")
        return conn

    def _stream_rows(self, rowid_sql: str, params: Sequence[Any], columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        for name in columns:
            if name not in COLUMNS:
                raise InputError(f"unknown mailbox field '{name}'")
        read = _compile_row_reader(columns)
        select = f"SELECT rowid, {', '.join(columns)} FROM inactive_mailboxes WHERE rowid IN "
        try:
            # Its own connection: a small page cache and temporary files on disk, so a sort of 1M rowids spills
            # to a file instead of memory; one read snapshot for the whole listing.
            conn = self.reader_connection()
            # An order an index gives (the default, by name) needs no sort: then one query reads the rows.
            whole = rowid_sql.replace("SELECT m.rowid ", f"SELECT m.rowid, {', '.join('m.' + c for c in columns)} ", 1)
            if self._pg is not None:  # the server streams the rows of one query as it produces them
                return self._stream(conn, conn.stream(whole, params), None, read)  # type: ignore[attr-defined]
            plan = " ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + whole, params))
            if "TEMP B-TREE FOR ORDER BY" not in plan:
                cursor = conn.execute(whole, params)
                cursor.row_factory = None
                return self._stream(conn, cursor, None, read)
            order = conn.execute(rowid_sql, params)
        except (sqlite3.Error, PermissionError, postgres.DatabaseError) as exc:
            mapped = store_error(exc, self.display_path)
            if mapped is None:
                raise
            raise mapped from exc
        return self._stream(conn, order, select, read)

    def _stream(
        self,
        conn: sqlite3.Connection,
        order: sqlite3.Cursor,
        select: str | None,
        read: Callable[[Sequence[Any]], tuple[Any, ...]],
    ) -> Iterator[tuple[Any, ...]]:
        """Rows as ``read`` makes them: from ``order`` itself when ``select`` is None, else ``order`` gives rowids
        and ``select`` (``… WHERE rowid IN``) reads their rows a batch at a time."""
        order.row_factory = None
        statements: dict[int, str] = {}
        row: Sequence[Any] | None = None
        try:
            while True:
                batch = order.fetchmany(STREAM_BATCH)
                if not batch:
                    return
                if select is None:
                    rows: Iterable[Sequence[Any] | None] = batch
                else:
                    rowids = [r[0] for r in batch]
                    n = len(rowids)
                    sql = statements.get(n) or statements.setdefault(n, select + "(" + ",".join("?" * n) + ")")
                    cursor = conn.execute(sql, rowids)
                    cursor.row_factory = None
                    by_rowid = {r[0]: r for r in cursor}
                    rows = [by_rowid.get(rowid) for rowid in rowids]
                for row in rows:
                    if row is not None:  # one snapshot: a listed rowid is there
                        yield read(row)
        except (ValueError, TypeError) as exc:  # a row edited outside imm: name it
            assert row is not None
            found = conn.execute("SELECT identity FROM inactive_mailboxes WHERE rowid = ?", (row[0],)).fetchone()
            raise StoreError(
                f"{self.display_path}: the cached mailbox {found[0] if found else row[0]} holds unreadable "
                f"data ({exc}): run `imm sync --full` to rewrite it, or `imm cache clear`",
                code="store_corrupt",
            ) from None
        except (sqlite3.Error, PermissionError, postgres.DatabaseError) as exc:
            mapped = store_error(exc, self.display_path)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            conn.close()

    @_mapped
    def search_mailboxes(self, query: str, limit: int | None = None) -> list[InactiveMailbox]:
        """Mailboxes whose display name, SMTP address, name, UPN, company or department contain ``query``.

        The text is always taken literally and case-insensitively. Three characters or more use the trigram
        index; shorter text scans the table with an escaped LIKE. Ordered by display name.

        With a ``limit``, the matches are gathered in the index's order up to a window of
        ``max(limit, SEARCH_WINDOW)`` and the first ``limit`` of those by name are returned: the same as sorting
        every match whenever there are no more than the window's size, and fast (a few ms on 1M rows) when a
        broad text matches hundreds of thousands.
        """
        sql, params = self._search_sql(query, limit, _SELECT_M)
        return self._mailboxes(sql, params)

    def _search_sql(self, query: str, limit: int | None, select: str) -> tuple[str, list[Any]]:
        """The search of :meth:`search_mailboxes` selecting ``select`` from ``inactive_mailboxes m``."""
        if query == "":
            raise InputError("the search text is empty")
        if "\x00" in query:  # SQLite's MATCH and LIKE end a pattern at NUL; no command-line argument holds one
            raise InputError("the search text holds a NUL character")
        params: list[Any]
        if self._pg is not None:  # pg_trgm: one GIN index over the searched names serves every length
            inner = f"SELECT rowid FROM inactive_mailboxes WHERE imm_search_text({_FTS_COLUMNS}) LIKE ? ESCAPE '\\'"
            params = [like_pattern(query.lower())]
        elif len(query) >= MIN_FTS_QUERY:
            inner = f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?"
            params = [fts_phrase(query)]
        else:
            inner = "SELECT rowid FROM inactive_mailboxes WHERE " + " OR ".join(
                f"{c} LIKE ? ESCAPE '\\'" for c in _SEARCH_COLUMNS
            )
            params = [like_pattern(query)] * len(_SEARCH_COLUMNS)
        if limit is not None:
            if limit < 0:
                raise InputError("the search limit must be 0 or more")
            inner += " LIMIT ?"
            params.append(max(limit, SEARCH_WINDOW))
        sql = (
            f"SELECT {select} FROM inactive_mailboxes m WHERE m.rowid IN ({inner}) "
            f"ORDER BY {pg_order('m.display_name COLLATE NOCASE') if self._pg else 'm.display_name COLLATE NOCASE'}, "
            "m.identity"
        )
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return sql, params

    @_mapped
    def find_mailbox(self, text: str) -> InactiveMailbox:
        """The one mailbox that ``text`` names: its ExchangeGuid, SMTP address (primary or other), UPN,
        DistinguishedName, LegacyExchangeDN, Name or DisplayName (case-insensitive).

        Raises NotFoundError when nothing matches, InputError (listing the candidates) when several do.
        """
        value = text.strip()
        if not value:
            raise InputError("an empty mailbox identity was given")
        from imm.domain.parsing import canonical_guid

        guid = canonical_guid(value) or value.strip("{}").lower()  # every GUID form Exchange prints
        found = self._mailboxes(_SELECT_SQL + " WHERE identity IN (?, ?)", (value, guid))
        if found:
            return found[0]
        levels: list[list[tuple[str, Sequence[Any]]]] = []
        if "@" in value:
            levels.append(
                [
                    (" WHERE primary_smtp = ? COLLATE NOCASE", (value,)),
                    (
                        " WHERE user_principal_name = ? COLLATE NOCASE"
                        " AND lower(user_principal_name) <> lower(primary_smtp)",  # the partial index
                        (value,),
                    ),
                ]
            )
            levels.append(
                [
                    (
                        " WHERE EXISTS (SELECT 1 FROM json_each(email_addresses) WHERE lower(json_each.value) = ?)",
                        (f"smtp:{value.lower()}",),
                    )
                ]
            )
        if value.lower().startswith("/o="):
            levels.append([(" WHERE legacy_exchange_dn = ? COLLATE NOCASE", (value,))])
        elif "=" in value:
            levels.append([(" WHERE distinguished_name = ? COLLATE NOCASE", (value,))])
        levels.append(
            [(" WHERE name = ? COLLATE NOCASE", (value,)), (" WHERE display_name = ? COLLATE NOCASE", (value,))]
        )
        # One statement says whether anything matches at all (each EXISTS uses its own index): a plan of many
        # unknown identities costs one query per row, not one per level.
        probe = [(f"EXISTS (SELECT 1 FROM inactive_mailboxes{where})", params) for lv in levels for where, params in lv]
        sql = "SELECT " + " OR ".join(p for p, _ in probe)
        if not self.get_connection().execute(sql, [v for _, ps in probe for v in ps]).fetchone()[0]:
            levels = []
        for level in levels:
            matches: dict[str, InactiveMailbox] = {}
            for where, params in level:
                for mailbox in self._mailboxes(_SELECT_SQL + where + " ORDER BY identity", params):
                    matches.setdefault(mailbox.identity, mailbox)
            if len(matches) == 1:
                return next(iter(matches.values()))
            if matches:
                candidates = sorted(matches.values(), key=lambda m: (m.display_name.lower(), m.identity))
                shown = "; ".join(f"{m.identity} ({m.primary_smtp or m.name})" for m in candidates[:10])
                more = f" and {len(candidates) - 10} more" if len(candidates) > 10 else ""
                raise InputError(
                    f"'{shorten(value)}' matches {len(candidates)} mailboxes: {shown}{more}",
                    hint="name one by its ExchangeGuid (the first value shown)",
                    code="ambiguous_identity",
                )
        hint = "run `imm sync` to refresh the cache, or `imm search TEXT` to find it"
        if self.count_mailboxes() == 0:
            hint = "the cache is empty: run `imm sync` (or `imm demo`)"
        raise NotFoundError(f"no mailbox '{shorten(value)}' in the cache", hint=hint)

    @_mapped
    def get_cache_stats(self) -> dict[str, Any]:
        """count; oldest / newest cache write (last_updated); oldest / newest deletion (WhenSoftDeleted);
        size_bytes (the file with its WAL); path; last_sync (the latest sync run, or None)."""
        conn = self.get_connection()
        row = conn.execute(
            "SELECT COUNT(*), MIN(last_updated), MAX(last_updated), MIN(when_soft_deleted), MAX(when_soft_deleted) "
            "FROM inactive_mailboxes"
        ).fetchone()
        run = conn.execute(
            "SELECT id, started_at, finished_at, mode, status, fetched, changed, removed, errors "
            "FROM sync_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        last_sync = None
        if run is not None:
            last_sync = dict(run)
            last_sync["started_at"] = parse_datetime(run["started_at"])
            last_sync["finished_at"] = parse_datetime(run["finished_at"])
        return {
            "path": self.display_path,
            "count": int(row[0]),
            "oldest": parse_datetime(row[1]),
            "newest": parse_datetime(row[2]),
            "oldest_deleted": parse_datetime(row[3]),
            "newest_deleted": parse_datetime(row[4]),
            "size_bytes": self.size_bytes(),
            "last_sync": last_sync,
        }

    def size_bytes(self) -> int:
        """The database file plus its write-ahead log, in bytes (PostgreSQL: the database's size)."""
        if self._pg is not None:
            return int(self.get_connection().execute("SELECT pg_database_size(current_database())").fetchone()[0])
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(f"{self.db_path}{suffix}")
            except OSError:
                pass
        return total
