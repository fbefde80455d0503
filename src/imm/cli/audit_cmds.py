"""``imm audit``: list, export, verify and prune the tamper-evident audit log."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import click

from imm.cli.context import app
from imm.cli.output import Column, output_options, render, render_object
from imm.errors import InputError

RESULTS = ("started", "success", "failure", "cancelled", "partial", "preview", "skipped", "unknown")
_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str | None, option: str, *, end: bool = False) -> datetime | None:
    """A date (``2026-11-01``: the whole day), an ISO datetime, or a span back from now (``7d``, ``12h``).

    Times without an offset are UTC, as audit timestamps are.
    """
    if text is None:
        return None
    match = _RELATIVE.match(text)
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match.group(2).lower()]: int(match.group(1))})
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            day = datetime.fromisoformat(value).date()
            return datetime.combine(day, time.max if end else time.min, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{option}: {text!r} is not a date or time (use 2026-11-01, 2026-11-01T09:30:00Z or 7d)"
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

    Example: imm audit list --since 7d --result failure
    """


@audit.command("list")
@click.option("--since", metavar="WHEN", help="From this date/time (2026-11-01, 2026-11-01T09:30Z, 7d); UTC.")
@click.option("--until", metavar="WHEN", help="Up to this date/time (a date includes the whole day); UTC.")
@click.option("--identity", metavar="ID", help="Only rows for this mailbox (ExchangeGuid or address).")
@click.option("--operation", multiple=True, metavar="NAME", help="Only this operation, e.g. RECOVER_MAILBOX.")
@click.option("--result", multiple=True, type=click.Choice(RESULTS, case_sensitive=False), help="Only this result.")
@click.option("--incomplete", is_flag=True, help="Only operations that started and never recorded a result.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True, help="Latest N rows (0: all).")
@output_options
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

    Example: imm audit list --incomplete --output json
    """
    start = parse_when(since, "--since")
    stop = parse_when(until, "--until", end=True)
    operations = _operation_names(operation)
    from imm.data.audit_logger import entry_to_dict

    entries = (
        app()
        .audit()
        .get_operations(
            start,
            stop,
            identity=identity,
            operation=operations,
            result=[r.lower() for r in result] or None,
            incomplete=incomplete,
            limit=limit or None,
            newest_first=True,
        )
    )
    rows: list[dict[str, Any]] = [entry_to_dict(e) for e in entries]
    if output == "table":
        for row, entry in zip(rows, entries, strict=True):
            row["time"] = entry.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        columns = [
            Column("id", "ID", justify="right", no_wrap=True),
            Column("time", "Time (UTC)", no_wrap=True),
            Column("operation", "Operation", no_wrap=True),
            Column("identity", "Mailbox", max_width=40),
            Column("user", "User", max_width=30),
            Column("result", "Result", no_wrap=True),
            Column("error_message", "Error", max_width=50),
        ]
    else:
        columns = [Column(key, key) for key in rows[0]] if rows else [Column("id", "id")]
    render(rows, columns, output, query, title="Audit log")
    if output == "table" and limit and len(rows) == limit:
        click.echo(f"Showing the latest {limit} rows; --limit 0 shows all.", err=True)


@audit.command("export")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False), help="JSON file.")
@click.option("--since", metavar="WHEN", help="From this date/time (2026-11-01, 7d); UTC.")
@click.option("--until", metavar="WHEN", help="Up to this date/time (a date includes the whole day); UTC.")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def export(out: Path, since: str | None, until: str | None, force: bool) -> None:
    """Export audit rows with their hashes and the prune checkpoints, for an auditor to verify independently.

    The export itself is recorded as an EXPORT_DATA row carrying the file's SHA-256. The file is readable
    only by you, and an existing one is not replaced without --force.

    Example: imm audit export --out audit-2026.json --since 2026-01-01 --until 2026-12-31
    """
    from imm.errors import InputError

    if out.exists() and not force:  # an earlier export may be the evidence someone keeps
        raise InputError(f"--out {out} exists: choose a new file, or add --force to replace it")
    start = parse_when(since, "--since")
    stop = parse_when(until, "--until", end=True)
    count = app().audit().export_to_json(out, start, stop)
    click.echo(f"Exported {count} audit row{'s' if count != 1 else ''} to {out}")


@audit.command("verify")
@output_options
def verify(output: str, query: str | None) -> None:
    """Recompute every hash: exit 0 if the log is intact, 1 naming the first row edited, deleted or moved.

    Example: imm audit verify
    """
    from imm.data.audit_logger import AuditIntegrityError

    report = app().audit().verify()
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


@audit.command("prune")
@click.option(
    "--retention-days", type=click.IntRange(min=0), required=True, help="Keep rows newer than this many days."
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def prune(retention_days: int, yes: bool) -> None:
    """Remove audit rows older than the retention, keeping a checkpoint so the rest still verifies.

    Refuses a retention shorter than the profile's audit_min_retention_days (365 by default).

    Example: imm audit prune --retention-days 730 --yes
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
    if not yes:
        try:
            confirmed = click.confirm(
                f"Remove {plan.count} audit rows (ids {plan.first_id}-{plan.last_id}, older than {cutoff})? "
                "A checkpoint keeps the rest verifiable",
                default=False,
                err=True,
            )
        except click.Abort:
            confirmed = False
        if not confirmed:
            click.echo("Nothing pruned.", err=True)
            raise click.exceptions.Exit(1)
    removed = audit_log.prune_old_entries(retention_days, min_retention_days=minimum)
    click.echo(f"Pruned {removed} audit row{'s' if removed != 1 else ''} older than {cutoff}; checkpoint recorded.")
