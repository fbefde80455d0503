"""``imm sync``: the inventory of inactive mailboxes into the local cache, with a progress bar."""

from __future__ import annotations

import click

from imm.cli.context import app
from imm.cli.output import output_options


@click.command()
@click.option("--full", is_flag=True, help="Fetch every mailbox again, not only the new and changed ones.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    metavar="N",
    help="Exchange calls in flight at once (default: the profile's 'concurrency', 10).",
)
@click.option(
    "--wait",
    is_flag=True,
    help="When another imm process syncs this profile, wait for it to finish instead of exiting (exit 5).",
)
@output_options
def sync(full: bool, concurrency: int | None, wait: bool, output: str, query: str | None) -> None:
    """Fetch the inventory of inactive mailboxes into the local cache.

    Incremental by default: only mailboxes that are new or changed since the last sync are read in detail, and
    mailboxes that are no longer inactive leave the cache. Signs in first when needed (device code). Ctrl+C stops
    cleanly and keeps what was fetched (exit 130); exit 1 when some mailboxes could not be read. One sync per
    profile at a time: a second one names the process that holds it and exits 5, or waits with --wait.
    With --output json or csv the run's record (counts, duration, warnings, failures) goes to stdout, the
    summary line to stderr; the exit codes are the same.

    \b
    Examples:
      imm sync
      imm sync --full
      imm sync --output json --query "{listed: listed, fetched: fetched, status: status}"
    """
    import threading

    from imm.cli.progress import SyncProgressBar, interrupt_sets
    from imm.errors import ExitStatus
    from imm.services.sync import SyncService
    from imm.session import SessionManager
    from imm.textsafe import terminal_safe

    obj = app()
    if concurrency is not None:
        obj.overrides["concurrency"] = concurrency  # the Exchange clients' limit too
    db = obj.database()
    cancel = threading.Event()
    with SessionManager(obj.config, db, obj.authenticator()) as session:
        service = SyncService(db, session.connection, obj.profile, session.audit, concurrency=concurrency)
        with SyncProgressBar(enabled=not obj.quiet) as bar, interrupt_sets(cancel, bar.note):
            result = service.run(
                full=full,
                progress=bar.update,
                cancel=cancel,
                wait=wait,
                on_wait=lambda holder: click.echo(f"Waiting for the running sync: {terminal_safe(holder)}", err=True),
            )
    for warning in result.warnings:
        click.echo(f"Warning: {terminal_safe(warning)}", err=True)
    shown = result.error_details[:10]
    for detail in shown:
        click.echo(f"  failed: {terminal_safe(detail)}", err=True)
    if result.errors > len(shown):
        click.echo(f"  … and {result.errors - len(shown):,} more (in the log file)", err=True)
    structured = output != "table" or query is not None
    if not obj.quiet or result.errors or result.cancelled:
        click.echo(result.summary(), err=structured or result.cancelled or result.errors > 0)
    if structured:
        from imm.cli.output import render_object

        record = {
            **result.counts(),
            "run_id": result.run_id,
            "warnings": list(result.warnings),
            "failures": list(result.error_details),
        }
        render_object(record, output, query)
    if result.cancelled:
        click.get_current_context().exit(int(ExitStatus.INTERRUPTED))
    if result.errors:
        click.get_current_context().exit(int(ExitStatus.FAILED))
