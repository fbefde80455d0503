"""Offline commands over the local cache: ``imm list``, ``imm search``, ``imm show``,
``imm cache stats|clear|check|rebuild`` (rebuild signs in to sync the inventory again).

They read the SQLite cache only (no sign-in, no Exchange call). Record shapes live in
:mod:`imm.services.inventory_view`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import click

from imm.cli.completion import complete_identities
from imm.cli.context import app
from imm.cli.filters import mailbox_filter_options
from imm.cli.output import output_options, stream_output_options

if TYPE_CHECKING:
    from imm.cli.output import Column
    from imm.data.database import MailboxFilter

EMPTY_CACHE = "The cache is empty: run `imm sync` (or `imm demo`)"
SEARCH_LIMIT = 100

SORT_HELP = (
    "Sort by name, smtp, company, department, size, age, deleted, items, cost, expiry, identity, "
    "or any field of the JSON output."
)


def _columns(output: str, query: str | None) -> list[Column]:
    """The table's columns; CSV/TSV: the fixed documented columns; otherwise (JSON, --query) every field."""
    from imm.cli.output import Column
    from imm.services.inventory_view import (
        TABLE_COLUMNS,
        TABLE_PRIORITIES,
        TABLE_WEIGHTS,
        WIDE_TABLE_COLUMNS,
        fields_for,
    )

    if output == "table" and not query:
        return [
            Column(
                key,
                header,
                max_width=most,
                justify="right" if right else "left",
                no_wrap=True,
                min_width=least,
                weight=TABLE_WEIGHTS.get(key, 1.0),
                priority=TABLE_PRIORITIES.get(key, 1),
                wide_only=(key, header, most, least, right) in WIDE_TABLE_COLUMNS,
            )
            for key, header, most, least, right in (*TABLE_COLUMNS, *WIDE_TABLE_COLUMNS)
        ]
    return [Column(name, name) for name in fields_for(output, query)]


def _render_mailboxes(rows: Iterable[tuple[Any, ...]], output: str, query: str | None) -> int:
    """The list/search result streamed in the chosen format (JSON and --query see every field); ``rows`` come
    from the store with :func:`imm.services.inventory_view.fields_for` (output, query). Returns the row count."""
    from imm.cli.output import render
    from imm.services.inventory_view import fields_for, records, table_rows

    table = output == "table" and not query
    shaped = table_rows(rows) if table else records(rows, fields_for(output, query))
    return render(shaped, _columns(output, query), output, query)


def _first(rows: Iterator[tuple[Any, ...]]) -> tuple[tuple[Any, ...] | None, Iterator[tuple[Any, ...]]]:
    """The first row (None when there is none) and the whole stream, first row included."""
    first = next(rows, None)
    return first, (rows if first is None else itertools.chain([first], rows))


def _empty_cache(output: str, query: str | None) -> None:
    """Say so on stderr; machine formats still get a valid (empty) document on stdout."""
    click.echo(EMPTY_CACHE, err=True)
    if output != "table" or query:
        _render_mailboxes([], output, query)


@click.command("list")
@mailbox_filter_options
@click.option("--sort", default="name", show_default=True, metavar="FIELD", help=SORT_HELP)
@click.option("--desc", is_flag=True, help="Sort in descending order.")
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="Show at most N mailboxes (0: all).")
@click.option("--offset", type=click.IntRange(min=0), default=0, metavar="N", help="Skip the first N mailboxes.")
@stream_output_options
def list_mailboxes(
    filters: MailboxFilter,
    sort: str,
    desc: bool,
    limit: int | None,
    offset: int,
    output: str,
    query: str | None,
) -> None:
    """List the inactive mailboxes in the local cache, filtered and sorted.

    Size is the whole mailbox (primary plus archive) in MB; Age is days since deletion. JSON has every field of
    each mailbox; CSV a fixed set of columns; --query filters the JSON with JMESPath.

    \b
    Examples:
      imm list --company Contoso --older-than 1y --sort size --desc --limit 20
      imm list --hold-type litigation --releasable --output csv > releasable.csv
    """
    obj = app()
    db = obj.database()
    from imm.services.inventory_view import fields_for, stored_fields

    first, rows = _first(
        db.stream_mailbox_rows(
            filters,
            sort=sort,
            descending=desc,
            limit=limit or None,  # 0 is no limit, as on every command that takes --limit
            offset=offset,
            columns=stored_fields(fields_for(output, query, obj.wide)),
        )
    )
    if first is None and db.count_mailboxes() == 0:
        _empty_cache(output, query)
        return
    shown = _render_mailboxes(rows, output, query)
    if output == "table" and not query and not obj.quiet and (limit or offset):
        total = db.count_mailboxes(filters)
        if shown == 0 and offset:
            click.echo(f"No mailboxes past --offset {offset:,}: {total:,} match.", err=True)
        elif total > shown:
            start = offset + 1 if shown else offset
            click.echo(
                f"Showing {start:,}–{offset + shown:,} of {total:,} mailboxes (--limit / --offset).",
                err=True,
            )


@click.command()
@click.argument("text")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=SEARCH_LIMIT,
    show_default=True,
    metavar="N",
    help="Show at most N mailboxes (0: all).",
)
@stream_output_options
def search(text: str, limit: int, output: str, query: str | None) -> None:
    """Find cached mailboxes by part of a name, address, UPN, company or department.

    TEXT is matched literally, anywhere, ignoring case: quotes, %, _, *, -, AND, NEAR( are plain characters.
    Matches come in display-name order (when a text matches more than 2,000 mailboxes, the limit is taken from
    the first 2,000 found: narrow the text, or use --limit 0 for every match).

    \b
    Examples:
      imm search garcia
      imm search "@fabrikam.com" --output json --query "[].primary_smtp"
    """
    obj = app()
    db = obj.database()
    from imm.services.inventory_view import fields_for, stored_fields

    first, rows = _first(
        db.stream_search_rows(text, limit=limit or None, columns=stored_fields(fields_for(output, query, obj.wide)))
    )
    if first is None and db.count_mailboxes() == 0:
        _empty_cache(output, query)
        return
    shown = _render_mailboxes(rows, output, query)
    if limit and shown == limit and not obj.quiet:
        click.echo(f"Showing the first {limit:,} matches (--limit N for more, --limit 0 for all).", err=True)


@click.command()
@click.argument("identity", metavar="ID", shell_complete=complete_identities)
@output_options
def show(identity: str, output: str, query: str | None) -> None:
    """Show everything the cache knows about one inactive mailbox.

    ID is its ExchangeGuid, an SMTP address, UPN, DistinguishedName, LegacyExchangeDN, Name or display name.
    Identities, sizes, every hold (raw and decoded), eligibility and blockers, expiry and cost.

    \b
    Examples:
      imm show liam.obrien@contoso.com
      imm show lucas.muller@contoso.onmicrosoft.com --output json --query "{holds: hold_types, size_mb: total_size_mb}"
    """
    from imm.cli.output import paged, render_object
    from imm.services.inventory_view import mailbox_detail

    detail = mailbox_detail(app().database(), identity)
    if output == "table" and not query:
        with paged() as out:
            render_detail(detail, out)
    else:
        render_object(detail, output, query)


def render_detail(detail: dict[str, Any], out: Any = None) -> None:
    """The record in titled sections; keys no section names come last, under "More"."""
    from imm.services.inventory_view import DETAIL_SECTIONS, label
    from imm.textsafe import terminal_safe

    sections: list[tuple[str, list[str]]] = [
        (title, [k for k in keys if k in detail]) for title, keys in DETAIL_SECTIONS
    ]
    extra = [k for k in detail if not any(k in keys for _, keys in DETAIL_SECTIONS)]
    if extra:
        sections.append(("More", extra))
    width = max((len(label(k)) for _, keys in sections for k in keys), default=0)
    first = True
    for title, keys in sections:
        if not keys:
            continue
        if not first:
            click.echo("", file=out)
        first = False
        click.secho(title, bold=True, file=out)
        for key in keys:
            lines = [terminal_safe(line) for line in _detail_lines(detail[key])]
            click.echo(f"  {label(key):<{width}}  {lines[0] if lines else ''}", file=out)
            for line in lines[1:]:
                click.echo(f"  {'':<{width}}  {line}", file=out)


def _detail_lines(value: Any) -> list[str]:
    """A value as one or more lines: lists one item a line, dicts as key=value, holds by description."""
    import json

    from imm.cli.output import _cell_text, to_jsonable

    if isinstance(value, list):
        if not value:
            return ["(none)"]
        out = []
        for item in value:
            if isinstance(item, dict):
                text = item.get("description") or item.get("summary")
                out.append(str(text) if text else json.dumps(to_jsonable(item), ensure_ascii=False, sort_keys=True))
            else:
                out.append(_cell_text(item))
        return out
    if isinstance(value, dict):
        return [f"{k}={_cell_text(v)}" for k, v in value.items()] or ["(none)"]
    if isinstance(value, float):
        return [f"{value:,.2f}"]
    if hasattr(value, "isoformat") and not isinstance(value, str):
        return [value.isoformat()]
    return [_cell_text(value)]


@click.group()
def cache() -> None:
    """Inspect or empty the local cache of inactive mailboxes.

    \b
    Examples:
      imm cache stats
      imm cache check
      imm cache rebuild --yes
    """


@cache.command()
@output_options
def stats(output: str, query: str | None) -> None:
    """How many mailboxes the cache holds, how fresh it is, and where and how big its file is.

    \b
    Example:
      imm cache stats --output json
    """
    from imm.cli.output import render_object
    from imm.textsafe import terminal_safe

    db = app().database()
    data = db.get_cache_stats()
    if output == "table" and not query:
        last = data.get("last_sync")
        table = {
            "Database": data["path"],
            "File size": _human_bytes(int(data["size_bytes"])),
            "Mailboxes": f"{data['count']:,}",
            "Oldest entry": _when(data["oldest"]),
            "Newest entry": _when(data["newest"]),
            "Deleted between": (
                f"{data['oldest_deleted']:%Y-%m-%d} and {data['newest_deleted']:%Y-%m-%d}"
                if data["oldest_deleted"] and data["newest_deleted"]
                else None
            ),
            "Last sync": (
                f"{_when(last['finished_at'] or last['started_at'])} ({last['mode']}, {last['status']})"
                if last
                else "never"
            ),
        }
        for key, value in table.items():
            click.echo(f"{key:<16} {'' if value is None else terminal_safe(value)}")
        if data["count"] == 0:
            click.echo(EMPTY_CACHE, err=True)
        return
    render_object(data, output, query)


@cache.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def clear(yes: bool) -> None:
    """Remove every cached mailbox, org-wide hold and policy; the audit log and bulk jobs stay.

    The next `imm sync` fetches everything again.

    \b
    Example:
      imm cache clear --yes
    """
    obj = app()
    db = obj.database()
    count = db.count_mailboxes()
    from imm.cli.context import confirm

    confirm(f"Remove {count:,} cached mailboxes from {db.display_path}? The audit log is kept.", yes=yes)
    removed = db.clear_cache()
    _audit_clear(removed, db.display_path)
    if not obj.quiet:
        click.echo(f"Removed {removed:,} mailboxes from the cache.", err=True)


@cache.command()
def check() -> None:
    """Check the store file with SQLite's integrity check (every page and index).

    Exit 0 when the file is sound; exit 1 naming what is damaged, with the repair (`imm cache rebuild`).
    Read only: nothing is changed.

    \b
    Example:
      imm cache check
    """
    from imm.errors import StoreError
    from imm.services.cache_repair import check_store
    from imm.textsafe import terminal_safe

    obj = app()
    path = obj.profile.database_path
    problems = check_store(path)
    if not problems:
        if not obj.quiet:
            click.echo(f"{path}: SQLite's integrity check found no problem.", err=True)
        return
    for problem in problems[1:]:
        click.echo(f"  {terminal_safe(problem)}", err=True)
    more = f" (+{len(problems) - 1} more above)" if len(problems) > 1 else ""
    raise StoreError(
        f"the store {path} is damaged: {terminal_safe(problems[0])}{more}",
        hint="run `imm cache rebuild`: the audit log and bulk jobs move into a fresh file, the inventory is synced "
        "again, and the damaged file is kept",
        code="store_damaged",
    )


@cache.command()
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-sync", is_flag=True, help="Do not sync the inventory afterwards (run `imm sync --full` later).")
def rebuild(yes: bool, no_sync: bool) -> None:
    """Repair a damaged store: a fresh file with the audit log and bulk jobs, then the inventory synced again.

    Every row that is not the inventory (audit log, its checkpoints, signatures and anchors, bulk jobs, restore
    requests, sync runs) is copied unchanged and the audit chain is verified before the fresh file takes the
    damaged one's place; the damaged file is kept beside it (<name>.damaged-<time>). When any such row cannot be
    read, nothing is replaced. Then a full sync fetches the inventory (sign-in as for imm sync).

    \b
    Example:
      imm cache rebuild --yes
    """
    from imm.cli.context import confirm
    from imm.data.database import DatabaseManager
    from imm.services.cache_repair import rebuild_store

    obj = app()
    path = obj.profile.database_path
    confirm(
        f"Rebuild {path}? The audit log and bulk jobs move into a fresh file, the damaged one is kept beside it, "
        "and the inventory is synced again.",
        yes=yes,
    )
    obj.close()  # the store is opened here without its migrations: a damaged file may fail them
    db = DatabaseManager(path)
    outcome = rebuild_store(db, lambda store: _audit_on(obj, store))
    result = outcome.result
    if not obj.quiet:
        found = f"{len(outcome.problems)} problem(s) found" if outcome.problems else "no problem found"
        click.echo(
            f"Rebuilt {path} ({found}): {outcome.audit_rows:,} audit rows verified; the damaged file is kept as "
            f"{result.damaged_path}",
            err=True,
        )
    db.close()  # the sync opens the fresh file as the profile's store
    if no_sync:
        return
    click.get_current_context().invoke(_sync_command(), full=True)


def _audit_on(obj: Any, store: Any) -> Any:
    from imm.data.audit_logger import AuditLogger
    from imm.data.audit_signing import AuditKeying

    return AuditLogger(store, tenant=obj.profile.tenant_id, keying=AuditKeying.from_profile(obj.profile))


def _sync_command() -> Any:
    from imm.cli.sync_cmd import sync

    return sync


def _audit_clear(removed: int, path: str) -> None:
    """A CACHE_CLEAR audit row (when the audit log is available in this build)."""
    try:
        audit = app().audit()
    except ModuleNotFoundError:  # pragma: no cover - the audit module ships with imm
        return
    audit.log_operation("CACHE_CLEAR", None, {"removed": removed, "database": path}, "success")


def _when(value: Any) -> str | None:
    return None if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover
