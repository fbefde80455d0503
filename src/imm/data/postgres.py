"""The PostgreSQL dialect of the store: a team store shared by several admins, workers and a nightly sync.

imm's stores speak one SQL vocabulary written for SQLite's DB-API shape (``?`` placeholders, rows readable by
index and by name, autocommit with explicit ``BEGIN``). :class:`PgConnection` gives a psycopg 3 connection that
shape, so the stores' ordinary statements run unchanged on both databases; what really differs (schema DDL, the
search index, write serialisation, sequences, streaming, bulk loading) is written per dialect and chosen by
``DatabaseManager.dialect``. Values are stored in the same encodings on both (datetimes as fixed-width ISO 8601
UTC text, JSON as text, booleans as 0/1), so a row copied from SQLite keeps its audit hash byte for byte.

SQLite's scalar functions the shared SQL uses (``json_each``, ``json_extract``, ``instr``, two-argument ``round``
of a double) and its case-insensitive collation (``COLLATE NOCASE``: an ICU collation named ``nocase``) are
created in the database by migration ``0001_cache`` (:mod:`imm.data.pg_schema`).

Connections come from one ``psycopg_pool.ConnectionPool`` per store; the password never comes from the config
file: libpq reads ``PGPASSWORD``, ``~/.pgpass`` and service files (``PGSERVICE`` / ``service=`` in the URL)
itself, and imm adds ``IMM_STORE_PASSWORD``. TLS options in the URL (``sslmode``, ``sslrootcert``, ``sslcert``,
``sslkey``…) go to libpq as they are.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from imm.errors import InputError, StoreError

log = logging.getLogger(__name__)

SCHEMES = ("postgresql://", "postgres://")
# One key for every writer: a transaction that writes takes it first, as SQLite's BEGIN IMMEDIATE takes the
# file's write lock, so read-then-write steps (the audit chain's head, a job's next item) stay serial across
# every machine that writes to the store. 0x696D6D ("imm").
WRITE_LOCK_KEY = 0x696D6D
# work_mem of a bulk upsert's transaction (the trigram index's pending entries are sorted in it).
UPSERT_WORK_MEM = "64MB"


class DatabaseError(Exception):
    """A psycopg error as the stores see it (psycopg itself is imported only when a team store is used).

    ``sqlstate`` is the server's SQLSTATE (``42501``: not permitted), or None for a client-side failure."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class IntegrityError(DatabaseError):
    """A constraint refused the statement (SQLSTATE class 23)."""


def _wrapped(exc: Exception) -> DatabaseError:
    sqlstate = getattr(exc, "sqlstate", None)
    cls = IntegrityError if sqlstate and sqlstate.startswith("23") else DatabaseError
    return cls(first_line(exc), sqlstate)


@contextmanager
def _errors() -> Iterator[None]:
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise _wrapped(exc) from exc


def is_store_url(text: str | os.PathLike[str] | None) -> bool:
    """True for a ``postgresql://`` store URL (anything else is an SQLite file)."""
    return isinstance(text, str) and text.lower().startswith(SCHEMES)


def check_store_url(url: str, *, source: str = "the store setting") -> str:
    """``url`` when it names a PostgreSQL store without a password; else a one-line InputError."""
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError as exc:
        raise InputError(f"{source} is not a valid postgresql:// URL ({exc})") from None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if parts.password is not None or "password" in query:
        raise InputError(
            f"{source} holds a password: remove it from the URL",
            hint="give the password in PGPASSWORD or IMM_STORE_PASSWORD, ~/.pgpass or a service file",
            code="store_password_in_config",
        )
    return url


def display_url(url: str) -> str:
    """The URL as shown in messages: never a password (should one have come from the environment)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(":" + parts.password + "@", ":***@", 1)
    query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/:"), parts.fragment))


# ------------------------------------------------------------------------------------------- SQL shape
@lru_cache(maxsize=4096)
def translate(sql: str, placeholders: bool = True) -> str:
    """The shared SQL as PostgreSQL reads it, outside quoted text and comments: ``?`` placeholders as ``%s`` and
    a literal ``%`` doubled (when there are parameters), and the column name ``user`` quoted (bare, PostgreSQL
    reads it as CURRENT_USER; imm's tables have a ``user`` column and imm never means the function)."""
    out: list[str] = []
    quote: str | None = None
    percent = "%%" if placeholders else "%"
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if quote is not None:
            out.append(percent if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end].replace("%", percent))
            i = end
            continue
        elif ch == "?" and placeholders:
            out.append("%s")
        elif ch == "%":
            out.append(percent)
        elif (ch == "u" or ch == "U") and sql[i : i + 4].lower() == "user" and _word_at(sql, i, 4):
            out.append('"user"')
            i += 4
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _word_at(sql: str, i: int, length: int) -> bool:
    """True when sql[i:i+length] is a whole word that is not a qualified name's second part (``a.user``)."""
    before = sql[i - 1] if i > 0 else " "
    after = sql[i + length] if i + length < len(sql) else " "
    return not (before.isalnum() or before in "_.") and not (after.isalnum() or after == "_")


class Row(tuple[Any, ...]):
    """A row read by position or by column name, like ``sqlite3.Row`` (``dict(row)`` works)."""

    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"_index": {name: i for i, name in enumerate(names)}, "__slots__": ()})


def _row_factory(cursor: Any) -> Any:
    description = cursor.description
    if description is None:
        return tuple
    cls = _row_class(tuple(d.name for d in description))
    return cls


class PgCursor:
    """The part of ``sqlite3.Cursor`` the stores use, over a psycopg cursor (or a stream of rows)."""

    lastrowid = None
    row_factory: Any = None  # accepted and ignored: rows are tuples readable by name as well

    def __init__(self, cursor: Any, rows: Iterator[Any] | None = None) -> None:
        self._cursor = cursor
        self._rows = rows

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @property
    def description(self) -> Any:
        return self._cursor.description

    def fetchone(self) -> Any:
        if self._rows is not None:
            return next(self._rows, None)
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        if self._rows is not None:
            return list(self._rows)
        return list(self._cursor.fetchall())

    def fetchmany(self, size: int) -> list[Any]:
        if self._rows is not None:
            out = []
            for row in self._rows:
                out.append(row)
                if len(out) >= size:
                    break
            return out
        return list(self._cursor.fetchmany(size))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows) if self._rows is not None else iter(self._cursor)

    def close(self) -> None:
        self._cursor.close()


class PgConnection:
    """A psycopg connection in autocommit mode with the ``sqlite3.Connection`` calls the stores make."""

    dialect = "postgresql"

    def __init__(self, conn: Any) -> None:
        self.raw = conn

    @property
    def in_transaction(self) -> bool:
        from psycopg import pq

        return bool(self.raw.info.transaction_status != pq.TransactionStatus.IDLE)

    def execute(self, sql: str, params: Sequence[Any] | None = ()) -> PgCursor:
        with _errors():
            cursor = self.raw.cursor()
            if params:
                cursor.execute(translate(sql), tuple(params))
            else:
                cursor.execute(translate(sql, False))
        return PgCursor(cursor)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        with _errors():
            cursor = self.raw.cursor()
            cursor.executemany(translate(sql), list(rows))
        return PgCursor(cursor)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        """Rows as the server sends them (constant memory for any size of result)."""
        cursor = self.raw.cursor()

        def rows() -> Iterator[Any]:
            with _errors():
                yield from cursor.stream(translate(sql, bool(params)), tuple(params) or None)

        return PgCursor(cursor, rows())

    def copy_rows(self, sql: str, rows: Iterable[Sequence[Any]], *, queued: bool = False) -> None:
        """``COPY … FROM STDIN`` of ``rows`` (the fastest way in). ``queued``: a thread of psycopg's sends the data
        (``QueuedLibpqWriter``) while this one goes on making rows, so building the rows (a generator) and the
        server's work on them overlap."""
        from psycopg.copy import QueuedLibpqWriter

        with _errors(), self.raw.cursor() as cursor:
            writer = QueuedLibpqWriter(cursor) if queued else None
            with cursor.copy(sql, writer=writer) as copy:
                for row in rows:
                    copy.write_row(row)

    def close(self) -> None:
        self.raw.close()


def _configure(conn: Any) -> None:
    """Each pooled connection: autocommit, bools as 0/1, numeric as int or float, rows by name."""
    from psycopg.adapt import Dumper, Loader
    from psycopg.postgres import types

    class BoolAsInt(Dumper):
        oid = types["int4"].oid

        def dump(self, obj: Any) -> bytes:
            return b"1" if obj else b"0"

    class NumericAsNumber(Loader):
        def load(self, data: Any) -> Any:
            text = bytes(data).decode()
            return float(text) if any(c in text for c in ".eEN") else int(text)

    conn.autocommit = True
    conn.adapters.register_dumper(bool, BoolAsInt)
    conn.adapters.register_loader("numeric", NumericAsNumber)
    conn.row_factory = _row_factory


def connect_kwargs() -> dict[str, Any]:
    password = os.environ.get("IMM_STORE_PASSWORD")
    return {"password": password} if password else {}


class PgPool:
    """One ``psycopg_pool.ConnectionPool`` per store; a thread keeps the connection it took until ``close``."""

    def __init__(self, url: str, *, max_size: int = 16, timeout: float = 30.0) -> None:
        self.url = url
        self._pool: Any = None
        self._lock = threading.Lock()
        self.max_size = max_size
        self.timeout = timeout

    def _get_pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                # One direct attempt first: an unreachable or refusing server is one clear line at once (the
                # pool would retry until its timeout).
                self.connect().close()

                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.max_size,
                    kwargs={"application_name": "imm", **connect_kwargs()},
                    configure=_configure,
                    timeout=self.timeout,
                    open=False,
                    name="imm-store",
                )
                try:
                    self._pool.open(wait=True, timeout=self.timeout)
                except Exception as exc:
                    self._pool.close()
                    self._pool = None
                    raise unreachable(self.url, exc) from None
            return self._pool

    def getconn(self) -> PgConnection:
        try:
            return PgConnection(self._get_pool().getconn())
        except StoreError:
            raise
        except Exception as exc:
            raise unreachable(self.url, exc) from None

    def connect(self) -> PgConnection:
        """A connection of its own, outside the pool (a long read; the caller closes it)."""
        import psycopg

        try:
            conn = psycopg.connect(self.url, application_name="imm", **connect_kwargs())
        except psycopg.Error as exc:
            raise unreachable(self.url, exc) from None
        _configure(conn)
        return PgConnection(conn)

    def putconn(self, conn: PgConnection) -> None:
        pool = self._pool
        if pool is None:
            conn.close()
            return
        try:
            pool.putconn(conn.raw)
        except Exception:  # pragma: no cover - returning is best effort
            log.debug("returning a connection failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def unreachable(url: str, exc: BaseException) -> StoreError:
    reason = first_line(exc)
    cause = getattr(exc, "__cause__", None) or getattr(exc, "__context__", None)
    if "couldn't get a connection" in reason.lower() and cause is not None:
        reason = first_line(cause)
    return StoreError(
        f"cannot reach the store {display_url(url)}: {reason}",
        hint="check the URL (host, port, database, sslmode), the password (PGPASSWORD, ~/.pgpass) and that the "
        "server runs; `imm store check` tells more",
        code="store_unreachable",
    )


def store_error(exc: BaseException, url: str) -> StoreError | None:
    """The user-facing StoreError for a PostgreSQL failure a user can act on, or None."""
    if not isinstance(exc, DatabaseError):
        return None
    sqlstate = exc.sqlstate
    if sqlstate is None:
        return unreachable(url, exc) if "connection" in str(exc).lower() else None
    if sqlstate == "42501":  # insufficient_privilege
        return StoreError(
            f"{display_url(url)}: the role imm connects as may not do this ({first_line(exc)})",
            hint="ask the store's owner; `imm store grants` shows what each role may do",
            code="store_permission",
        )
    if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"):
        return unreachable(url, exc)
    if sqlstate == "53100":
        return StoreError(f"{display_url(url)}: the server's disk is full", code="store_full")
    return None


def upsert_rows(
    conn: PgConnection, table: str, columns: Sequence[str], keys: Sequence[Any], rows: Iterable[Sequence[Any]]
) -> None:
    """Insert or update ``rows`` (one per key of ``keys``, in that order, no key twice; made as they are sent, so
    a generator's work overlaps the server's) inside the caller's transaction. When none of the keys is in the
    table yet (a first sync), the rows are COPYed straight into it; otherwise COPY into a temporary table, then one
    ``INSERT … SELECT … ON CONFLICT DO UPDATE`` that rewrites only the rows whose values differ (an unchanged row
    is left as it is: no new row version, no index entries to add).

    Most of the server's cost is the trigram index's upkeep (``pg_trgm`` GIN): its pending entries are sorted and
    merged in ``work_mem``, raised for this transaction only (PostgreSQL's documentation, "GIN Tips and Tricks")."""
    key = columns[0]
    names = ", ".join(columns)
    conn.execute(f"SET LOCAL work_mem = '{UPSERT_WORK_MEM}'")
    taken = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {key} = ANY(?))", (list(keys),)).fetchone()
    if not taken[0]:
        conn.copy_rows(f"COPY {table} ({names}) FROM STDIN", rows, queued=True)
        return
    stage = f"_imm_stage_{table}"
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS SELECT {names} FROM {table} WITH NO DATA"
    )
    conn.copy_rows(f"COPY {stage} ({names}) FROM STDIN", rows, queued=True)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    old = ", ".join(f"{table}.{c}" for c in columns[1:])
    new = ", ".join(f"excluded.{c}" for c in columns[1:])
    conn.execute(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} ON CONFLICT ({key}) DO UPDATE SET {updates} "
        f"WHERE ({old}) IS DISTINCT FROM ({new})"
    )
    conn.execute(f"TRUNCATE {stage}")
