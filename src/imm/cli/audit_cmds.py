"""``imm audit``: list, export, verify and prune the tamper-evident audit log."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import click

from imm.cli.context import app
from imm.cli.output import Column, output_options, render, render_object, stream_output_options
from imm.errors import InputError, StoreError

RESULTS = ("started", "success", "failure", "cancelled", "partial", "preview", "skipped", "unknown", "interrupted")
_RELATIVE = re.compile(r"^\s*(\d{1,9})\s*([mhdw])\s*$", re.IGNORECASE | re.ASCII)
MAX_SPAN = timedelta(days=36500)  # a hundred years back: older than any audit row
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str | None, option: str, *, end: bool = False) -> datetime | None:
    """A date (``2026-11-01``: the whole day), an ISO datetime, or a span back from now (``7d``, ``12h``).

    Times without an offset are UTC, as audit timestamps are.
    """
    from imm.textsafe import shown

    if text is None:
        return None
    match = _RELATIVE.match(text)
    if match:
        span = timedelta(**{_UNITS[match.group(2).lower()]: int(match.group(1))})
        if span > MAX_SPAN:
            raise InputError(f"{option}: {shown(text)} reaches back more than 100 years (use at most 36500d)")
        return datetime.now(UTC) - span
    value = text.strip()
    try:
        if not value.isascii():
            raise ValueError(value)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = datetime.fromisoformat(value).date()
            return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{option}: {shown(text)!r} is not a date or time (use 2026-11-01, 2026-11-01T09:30:00Z or 7d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _operation_names(values: tuple[str, ...]) -> list[str] | None:
    if not values:
        return None
    from imm.data.audit_logger import OperationType

    known = {o.value for o in OperationType}
    names = [v.strip().upper().replace("-", "_") for v in values]
    for name, raw in zip(names, values, strict=True):
        if name not in known:
            raise InputError(f"--operation: unknown operation {raw!r} (one of: {', '.join(sorted(known))})")
    return names


@click.group()
def audit() -> None:
    """The tamper-evident audit log: who did what, when, and the result.

    Every change to Exchange is recorded before it is made and again with its result; each row carries the hash
    of the previous one, so edits, deletions and reordering are detected by 'imm audit verify'.

    \b
    Examples:
      imm audit list --since 7d --result failure
    """


def _identities(identity: str) -> list[str]:
    """Every identity the rows of this mailbox may carry: as given, its ExchangeGuid and addresses from the cache,
    and the ExchangeGuids whose recorded state names it (rows written before or after it was cached)."""
    from imm.errors import ImmError

    text = identity.strip()
    out = [text]
    obj = app()
    try:
        mailbox = obj.database().find_mailbox(text)
    except ImmError:  # not cached, or the text names several mailboxes: the rows that carry it as written
        mailbox = None
    if mailbox is not None:
        out += [mailbox.identity, mailbox.primary_smtp, mailbox.user_principal_name]
    if "@" in text:
        out += obj.audit().identities_recorded_for(text)
    return [i for i in dict.fromkeys(out) if i]


@audit.command("list")
@click.option("--since", metavar="WHEN", help="From this date/time (2026-11-01, 2026-11-01T09:30Z, 7d); UTC.")
@click.option("--until", metavar="WHEN", help="Up to this date/time (a date includes the whole day); UTC.")
@click.option(
    "--identity", metavar="ID", help="Only rows for this mailbox: ExchangeGuid, address, UPN or name (via the cache)."
)
@click.option("--operation", multiple=True, metavar="NAME", help="Only this operation, e.g. RECOVER_MAILBOX.")
@click.option("--result", multiple=True, type=click.Choice(RESULTS, case_sensitive=False), help="Only this result.")
@click.option("--incomplete", is_flag=True, help="Only operations that started and never recorded a result.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True, help="Latest N rows (0: all).")
@stream_output_options
def list_entries(
    since: str | None,
    until: str | None,
    identity: str | None,
    operation: tuple[str, ...],
    result: tuple[str, ...],
    incomplete: bool,
    limit: int,
    output: str,
    query: str | None,
) -> None:
    """List audit rows, newest first.

    \b
    Examples:
      imm audit list --incomplete --output json
      imm audit list --limit 5 --output json --query "[].operation"
    """
    start = parse_when(since, "--since")
    stop = parse_when(until, "--until", end=True)
    operations = _operation_names(operation)
    entries = (
        app()
        .audit()
        .iter_operations(
            start,
            stop,
            identity=None if identity is None else _identities(identity),
            operation=operations,
            result=[r.lower() for r in result] or None,
            incomplete=incomplete,
            limit=limit or None,
            newest_first=True,
        )
    )
    rows: Iterator[dict[str, Any]] = (_row(e, output) for e in entries)
    first = next(rows, None)
    if first is not None:
        rows = itertools.chain([first], rows)
    if output == "table":
        columns = [
            Column("id", "ID", justify="right", no_wrap=True),
            Column("time", "Time (UTC)", no_wrap=True, min_width=19),
            Column("operation", "Operation", no_wrap=True, min_width=15),
            Column("identity", "Mailbox", max_width=40, no_wrap=True, min_width=12),
            Column("user", "User", max_width=30, no_wrap=True, min_width=12, priority=3),
            Column("result", "Result", no_wrap=True),
            Column("error_message", "Error", max_width=50, min_width=20, priority=2),
        ]
    else:
        columns = [Column(key, key) for key in first or _row_keys()]  # every header, rows or none
    shown = render(rows, columns, output, query, title="Audit log")
    if output == "table" and limit and shown == limit:
        click.echo(f"Showing the latest {limit} rows; --limit 0 shows all.", err=True)


def _row_keys() -> list[str]:
    """The keys of a listed audit row (an empty CSV still has the full header)."""
    from imm.data.audit_logger import entry_to_dict
    from imm.data.models import AuditLogEntry

    return list(entry_to_dict(AuditLogEntry(id=None, timestamp=datetime.now(UTC), operation="")))


def _row(entry: Any, output: str) -> dict[str, Any]:
    from imm.data.audit_logger import entry_to_dict

    row = entry_to_dict(entry)
    if output == "table":
        row["time"] = entry.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return row


@audit.command("export")
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), help="JSON file (--format json).")
@click.option("--since", metavar="WHEN", help="From this date/time (2026-11-01, 7d); UTC.")
@click.option("--until", metavar="WHEN", help="Up to this date/time (a date includes the whole day); UTC.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "jsonl"], case_sensitive=False),
    default="json",
    show_default=True,
    help="json: one document (--out); jsonl: events (schema imm.audit.v1) to a sink (--since-last).",
)
@click.option(
    "--since-last",
    "sink",
    metavar="SINK",
    help="Send only rows not yet sent to SINK: a JSON Lines file, or a Logs Ingestion stream URL "
    "(https://ENDPOINT/dataCollectionRules/DCR-ID/streams/STREAM).",
)
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True, help="Rows per batch.")
def export(
    out: Path | None, since: str | None, until: str | None, force: bool, fmt: str, sink: str | None, batch_size: int
) -> None:
    """Export audit rows with their hashes and the prune checkpoints, for an auditor to verify independently.

    The export itself is recorded as an EXPORT_DATA row carrying the file's SHA-256. The file is readable
    only by you, and an existing one is not replaced without --force. With --format jsonl --since-last SINK,
    rows stream to a file or to Azure Monitor (Logs Ingestion API) exactly once, resuming where the last run
    stopped (a cursor per sink in the database).

    \b
    Examples:
      imm audit export --out audit-2026.json --since 2026-01-01 --until 2026-12-31
      imm audit export --format jsonl --since-last audit.jsonl
    """
    from imm.errors import InputError

    if fmt.lower() == "jsonl" or sink is not None:
        if sink is None:
            raise InputError("--format jsonl streams to a sink: add --since-last SINK (a file or a Logs Ingestion URL)")
        if out is not None or since or until or force:
            raise InputError("--since-last sends every row after the sink's cursor: drop --out/--since/--until/--force")
        _export_since_last(sink, batch_size)
        return
    if out is None:
        raise InputError("--out FILE is required for --format json")
    if out.exists() and not force:  # an earlier export may be the evidence someone keeps
        raise InputError(f"--out {out} exists: choose a new file, or add --force to replace it")
    start = parse_when(since, "--since")
    stop = parse_when(until, "--until", end=True)
    count = app().audit().export_to_json(out, start, stop)
    click.echo(f"Exported {count} audit row{'s' if count != 1 else ''} to {out}")


def _export_since_last(target: str, batch_size: int) -> None:
    from imm.services.audit_export import INGESTION_SCOPE, FileSink, LogsIngestionSink, Sink, export_since_last

    obj = app()
    sink: Sink
    if target.lower().startswith(("https://", "http://")):
        authenticator = obj.authenticator()
        scopes = [obj.profile.audit_ingestion_scope or INGESTION_SCOPE]
        sink = LogsIngestionSink(
            target,
            lambda refresh: authenticator.get_token(scopes, force_refresh=refresh),
            ca_bundle=obj.profile.ca_bundle,
        )
    else:
        sink = FileSink(Path(target))
    try:
        run = export_since_last(obj.audit(), sink, batch_size=batch_size)
    finally:
        if isinstance(sink, LogsIngestionSink):
            sink.close()
    if run.rows == 0:
        click.echo(f"Nothing to export: {target} already has every audit row.")
        return
    again = f" ({run.redelivered} sent again: an earlier attempt may have arrived)" if run.redelivered else ""
    click.echo(f"Exported {run.rows} audit rows (ids {run.first_id}-{run.last_id}) to {target}{again}")


@audit.command("verify")
@click.option(
    "--anchors",
    "anchors",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Also check the log against this witness file of signed anchors (JSON Lines).",
)
@output_options
def verify(anchors: Path | None, output: str, query: str | None) -> None:
    """Recompute every hash: exit 0 if the log is intact, 1 naming the first row edited, deleted or moved.

    Once the log is keyed (imm audit anchor), every row imm writes is signed, so a forged row or a fake prune
    is caught too; --anchors FILE also catches a recomputed chain, a truncated tail, a missing anchor or a bad
    signature, and names which.

    \b
    Examples:
      imm audit verify
      imm audit anchor --witness anchors.jsonl
      imm audit verify --anchors anchors.jsonl
    """
    from imm.data.audit_logger import AuditIntegrityError

    audit_log = app().audit()
    report = audit_log.verify_against(anchors) if anchors is not None else audit_log.verify()
    if not report.ok:
        raise AuditIntegrityError(report)
    if output != "table" or query:
        render_object(report.as_dict(), output, query)
        return
    if report.rows_checked == 0:
        click.echo(f"Audit log intact: no rows ({report.checkpoints_checked} checkpoints verified).")
        return
    checkpoints = report.checkpoints_checked
    click.echo(
        f"Audit log intact: {report.rows_checked} rows verified (ids {report.first_id}-{report.last_id}), "
        f"{checkpoints} checkpoint{'s' if checkpoints != 1 else ''}."
    )
    click.echo(f"Head: row {report.last_id} {report.head_hash}")
    if not report.keyed:
        click.echo("Not keyed: no signature covers these rows (imm audit anchor keys the log).")
        return
    witnessed = " against the witness" if anchors is not None else ""
    click.echo(
        f"Signed: {report.signed_rows} rows carry a valid signature; {report.anchors_checked} anchors "
        f"verified{witnessed}; {report.uncovered_rows} rows after the last signature or anchor."
    )


@audit.command("anchor")
@click.option(
    "--witness",
    metavar="TARGET",
    help="Where the anchor also goes: a JSON Lines file, 'syslog' or '-' (stdout). Default: audit_witness.",
)
def anchor(witness: str | None) -> None:
    """Sign the head of the audit log and record it in the database and an external witness.

    The first run creates this profile's Ed25519 signing key (a 0600 file outside the database, see
    audit_key_path); from then on every row imm writes is signed. With audit_auto_anchor = true every change is
    anchored. 'imm audit verify --anchors FILE' checks the log against the witness.

    \b
    Examples:
      imm audit anchor --witness anchors.jsonl
    """
    audit_log = app().audit()
    if audit_log.key is None:
        key = audit_log.init_key()
        click.echo(
            f"Created this profile's audit signing key {key.key_id} at {key.path}: keep a copy somewhere safe; "
            "rows written from now on are signed.",
            err=True,
        )
    target = witness if witness is not None else audit_log.keying.witness
    result = audit_log.anchor(target)
    if target in ("-", "stdout"):
        return
    where = f"; witness {target}" if target else " (no witness configured: set audit_witness or use --witness)"
    click.echo(
        f"Anchor {result['anchor_id']}: row {result['head_id']} {result['head_hash']}, "
        f"{result['row_count']} rows, signed by key {result['key_id']}{where}."
    )


@audit.command("key")
@output_options
def key_info(output: str, query: str | None) -> None:
    """Show this profile's audit signing key: its id, public half and where it is kept (never the private half).

    \b
    Examples:
      imm audit anchor
      imm audit key --output json
    """
    audit_log = app().audit()
    key = audit_log.key
    if key is None:
        raise InputError(
            f"this profile's audit log is not keyed (no key at {audit_log.keying.key_path})",
            hint="imm audit anchor creates the key and the first anchor",
        )
    info = {
        "key_id": key.key_id,
        "algorithm": "Ed25519",
        "public_key": key.b64,
        "path": str(key.path),
        "keyed_from_row": key.keyed_from_row,
        "keyed_from_checkpoint": key.keyed_from_checkpoint,
    }
    render_object(info, output, query)


@audit.command("reconcile")
@click.option("--since", metavar="WHEN", default="7d", show_default=True, help="Changes from this date/time (7d).")
@click.option(
    "--delay",
    metavar="SPAN",
    default="24h",
    show_default=True,
    help="How long Microsoft may take to show a change in its log: younger unconfirmed changes are 'not yet'.",
)
@output_options
def reconcile(since: str, delay: str, output: str, query: str | None) -> None:
    """Check imm's changes against Microsoft's unified audit log, and find changes imm did not make.

    Reads Search-UnifiedAuditLog -RecordType ExchangeAdmin (paged with a session id) and matches each imm change
    by cmdlet, mailbox and time: confirmed, not yet (the log lags), missing; and changes to inactive mailboxes in
    the cache that imm did not make ("outside": who, when, cmdlet, parameters). Exit 1 when anything is missing
    or changed outside imm. Needs the View-Only Audit Logs (or Audit Logs) role.

    \b
    Examples:
      imm audit reconcile --since 7d --output json
    """
    from imm.services.audit_reconcile import reconcile as run_reconcile
    from imm.session import SessionManager

    start = parse_when(since, "--since")
    match = _RELATIVE.match(delay)
    if not match:
        raise InputError(f"--delay: {delay!r} is not a span (use 90m, 24h, 2d)")
    lag = timedelta(**{_UNITS[match.group(2).lower()]: int(match.group(1))})
    obj = app()
    db = obj.database()
    with SessionManager(obj.config, db, obj.authenticator()) as session:
        report = run_reconcile(session.audit, db, session.connection, start or datetime.now(UTC), delay=lag)
    rows = [f.as_dict() for f in report.findings]
    columns = [
        Column("status", "Status", no_wrap=True),
        Column("when", "When (UTC)", no_wrap=True),
        Column("cmdlet", "Cmdlet", no_wrap=True),
        Column("mailbox", "Mailbox", max_width=40, no_wrap=True, min_width=12),
        Column("user", "By", max_width=30, no_wrap=True, min_width=12, priority=2),
        Column("audit_row", "imm row", justify="right"),
    ]
    if output != "table":
        columns = [Column(key, key) for key in (rows[0] if rows else {"status": None})]
    render(rows, columns, output, query, title="imm changes and Microsoft's audit log")
    counts = report.counts()
    click.echo(
        f"{counts['confirmed']} confirmed, {counts['not_yet']} not yet in Microsoft's log, {counts['missing']} "
        f"missing, {counts['outside']} outside changes, {counts['not_checked']} not checked "
        f"({report.records_read} Exchange admin records read).",
        err=True,
    )
    for finding in report.findings:
        if finding.status == "outside" and output == "table":
            params = " ".join(f"-{k} {v}" for k, v in finding.parameters.items())
            click.echo(f"Outside imm: {finding.when} {finding.user} ran {finding.cmdlet} {params}", err=True)
    if counts["missing"] or counts["outside"]:
        raise click.exceptions.Exit(1)


@audit.command("prune")
@click.option(
    "--retention-days", type=click.IntRange(min=0), required=True, help="Keep rows newer than this many days."
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def prune(retention_days: int, yes: bool) -> None:
    """Remove audit rows older than the retention, keeping a checkpoint so the rest still verifies.

    Refuses a retention shorter than the profile's audit_min_retention_days (365 by default).

    \b
    Examples:
      imm audit prune --retention-days 730 --yes
    """
    obj = app()
    minimum = obj.profile.audit_min_retention_days
    if retention_days < minimum:
        raise InputError(
            f"--retention-days {retention_days} is shorter than this profile's minimum of {minimum} days",
            hint="audit_min_retention_days in the profile sets the minimum",
        )
    audit_log = obj.audit()
    plan = audit_log.prune_preview(retention_days)
    cutoff = plan.cutoff.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if plan.count == 0:
        click.echo(f"Nothing to prune: no audit rows older than {cutoff}.")
        return
    from imm.cli.context import confirm

    confirm(
        f"Remove {plan.count} audit rows (ids {plan.first_id}-{plan.last_id}, older than {cutoff})? "
        "A checkpoint keeps the rest verifiable",
        yes=yes,
    )
    try:
        removed = audit_log.prune_old_entries(retention_days, min_retention_days=minimum)
    except StoreError as exc:
        db = audit_log.db
        if exc.code != "store_permission" or not db.is_postgresql:
            raise
        # The team store's operator may not DELETE audit rows: the server refused, the transaction rolled back.
        role = db.get_connection().execute("SELECT current_user").fetchone()[0]
        reason = exc.message.rsplit("(", 1)[-1].rstrip(")")
        raise StoreError(
            f"imm audit prune runs only as the team store's owner: the server refused it to {role} ({reason}); "
            "nothing was removed",
            hint="run it connected as the owner role (IMM_STORE=postgresql://OWNER@…); `imm store check` names "
            "the role a profile connects as",
            code="store_permission",
        ) from None
    click.echo(f"Pruned {removed} audit row{'s' if removed != 1 else ''} older than {cutoff}; checkpoint recorded.")
