"""``imm bulk``: plan, run, resume, inspect bulk jobs (thousands of recover / restore / release / set-duration).

The work lives in :mod:`imm.services.bulk` (engine, journal) and :mod:`imm.services.bulk_plan` (the CSV plan);
this module parses options, asks the one confirmation, shows progress and prints the outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from imm.cli.completion import complete_release_types
from imm.cli.context import app
from imm.cli.filters import mailbox_filter_options
from imm.cli.output import output_options

if TYPE_CHECKING:
    from imm.cli.context import AppContext
    from imm.data.database import MailboxFilter
    from imm.data.jobs import Item, Job
    from imm.services.bulk import RunOutcome

SAMPLE = 3  # mailboxes named in a confirmation
SHOWN_FAILURES = 10  # failed items printed after a run (all are in the results file)
MAX_SHOWN = 20  # plan problems shown on the terminal; --problems FILE has them all
_VERBS = {
    "recover": "recover into new mailboxes",
    "restore": "restore into their target mailboxes",
    "release": "release holds on",
    "set-duration": "change the Litigation Hold duration of",
}
_STAGE = {
    "recover": "Recovering",
    "restore": "Restoring",
    "release": "Releasing holds",
    "set-duration": "Setting durations",
}


@click.group()
def bulk() -> None:
    """Run recover, restore, release or set-duration on many mailboxes from a CSV plan, resumably.

    A plan is checked as a whole before anything runs; runs are previews (--what-if) until --execute is given; a
    job interrupted at any moment (Ctrl+C, a crash, a reboot) is finished by 'imm bulk resume JOB', every item
    exactly once.

    \b
    Examples:
      imm bulk plan --releasable --company Contoso --action release --type all-unlocked --out plan.csv
      imm bulk run plan.csv                      # what-if: previews, changes nothing
      imm bulk list
    Then for real: imm bulk run plan.csv --execute --yes
    """


# --------------------------------------------------------------------------------------------------- plan
@bulk.command("plan")
@click.option(
    "--action",
    type=click.Choice(["recover", "restore", "release", "set-duration"], case_sensitive=False),
    default="release",
    show_default=True,
    help="What each row will do.",
)
@click.option(
    "--type",
    "release_type",
    metavar="TYPE",
    shell_complete=complete_release_types,
    help="release: which holds (default all-unlocked).",
)
@click.option("--days", type=click.IntRange(1, 36500), metavar="N", help="set-duration: the new duration in days.")
@click.option("--unlimited", is_flag=True, help="set-duration: an unlimited duration.")
@click.option("--target", metavar="MAILBOX", help="restore: the target mailbox for every row.")
@click.option("--archive", is_flag=True, help="restore: restore the archive.")
@click.option("--target-folder", metavar="FOLDER", help="restore: the folder of the target to restore into.")
@mailbox_filter_options
@click.option(
    "--include-unexpired",
    is_flag=True,
    help="release: also mailboxes whose holds have not all expired (by default a release plan selects only "
    "mailboxes whose every hold has run out, as --releasable).",
)
@click.option(
    "--leaver-retention-ended",
    "leaver_ended",
    is_flag=True,
    help="release: the mailboxes whose leaver retention schedule (profile leaver_retention_days, from "
    "WhenSoftDeleted) has ended and whose only holds left are the ones the schedule covers.",
)
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="At most N rows (0: all).")
@click.option(
    "--out", "out", type=click.Path(path_type=Path), metavar="FILE", help="Write the plan here (default: stdout)."
)
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def plan_cmd(
    action: str,
    release_type: str | None,
    days: int | None,
    unlimited: bool,
    target: str | None,
    archive: bool,
    target_folder: str | None,
    filters: MailboxFilter,
    include_unexpired: bool,
    leaver_ended: bool,
    limit: int | None,
    out: Path | None,
    force: bool,
) -> None:
    """Write a plan (CSV) for the cached mailboxes that match the filters, to review and edit before running it.

    recover rows propose each mailbox's own UPN and name (change them where those are taken); restore rows need a
    target (--target, or fill the column). The 'note' column names each mailbox and is ignored when run.

    \b
    Examples:
      imm bulk plan --releasable --company Contoso --action release --type all-unlocked --out plan.csv
    """
    import dataclasses
    import sys

    from imm.errors import InputError
    from imm.services.bulk_plan import plan_rows, write_plan
    from imm.services.reports import atomic_write

    action = action.lower()
    if include_unexpired and action != "release":
        raise InputError("--include-unexpired is for --action release")
    obj = app()
    if leaver_ended:
        if action != "release":
            raise InputError("--leaver-retention-ended is for --action release")
        if obj.profile.leaver_retention_days <= 0:
            raise InputError(
                f"profile '{obj.profile.name}' has no leaver retention schedule",
                hint="set one with `imm config set leaver_retention_days 2555`, then `imm sync`",
            )
        # the schedule decides instead of the holds' own expiry (its holds are released once it has passed)
        filters = dataclasses.replace(filters, leaver_retention_ended=True)
    elif action == "release" and filters.releasable is None and not include_unexpired:
        filters = dataclasses.replace(filters, releasable=True)  # never an unexpired hold unless asked
    if action != "release" and release_type:
        raise InputError("--type is for --action release")
    if action == "set-duration" and days is None and not unlimited:
        raise InputError("--action set-duration needs --days N or --unlimited")
    if days is not None and unlimited:
        raise InputError("give --days N or --unlimited, not both")
    if action != "set-duration" and (days is not None or unlimited):
        raise InputError("--days and --unlimited are for --action set-duration")
    if action != "restore" and (target or archive or target_folder):
        raise InputError("--target, --archive and --target-folder are for --action restore")
    if out is not None and out.exists() and not force:
        raise InputError(f"{out} exists; use --force to replace it")
    rows = plan_rows(
        obj.database(),
        filters,
        action,
        release_type=release_type,
        days=days,
        target=target,
        archive=archive,
        target_folder=target_folder,
        limit=limit or None,  # 0 is no limit, as everywhere
    )
    if out is None:
        write_plan(rows, action, sys.stdout)
        return
    written = 0

    def write(tmp: Path) -> None:  # row by row into a file beside FILE, renamed into place when complete
        nonlocal written
        with tmp.open("w", encoding="utf-8", newline="") as stream:
            written = write_plan(rows, action, stream)

    atomic_write(out, write, "the plan")
    if not obj.quiet:
        click.echo(f"Wrote a plan of {written:,} {action} rows to {out}", err=True)
        click.echo(f"Preview it (changes nothing): imm bulk run {out}", err=True)


# ---------------------------------------------------------------------------------------------------- run
def _understood_options(f: Any) -> Any:
    """The explicit per-consequence flags that replace the typed count (for scripts)."""
    for flag, dest, what in (
        ("--i-understand-ediscovery", "understood_ediscovery", "removing mailboxes from an eDiscovery case hold"),
        ("--i-understand-unlimited", "understood_unlimited", "releasing Unlimited Litigation Holds"),
        ("--i-understand-last-hold", "understood_last_hold", "releasing last holds (soft-delete, purge)"),
    ):
        f = click.option(flag, dest, is_flag=True, help=f"--execute: confirm {what} without typing the count.")(f)
    return f


def _flagged(last_hold: bool, unlimited: bool, ediscovery: bool) -> set[str]:
    from imm.services.action_support import EDISCOVERY, LAST_HOLD, UNLIMITED

    return {k for k, on in ((LAST_HOLD, last_hold), (UNLIMITED, unlimited), (EDISCOVERY, ediscovery)) if on}


def _consequences(obj: AppContext, db: Any, rows: Sequence[tuple[int, str, str, Any, str]]) -> Any:
    """Count and show what the release rows would do that needs a typed confirmation (from the cache)."""
    from imm.services.action_support import CONSEQUENCE_WORDS, TYPED_CONSEQUENCES
    from imm.services.actions import MailboxActions
    from imm.services.bulk import count_consequences
    from imm.textsafe import terminal_safe

    found = count_consequences(MailboxActions(db, None, obj.audit(), obj.profile), rows)
    if found.labels and not obj.quiet:
        click.echo("Consequences, by the cache (each row is checked against Exchange again before it runs):", err=True)
        for kind in TYPED_CONSEQUENCES:
            labels = found.labels.get(kind) or []
            if labels:
                sample = terminal_safe(", ".join(labels[:SAMPLE]))
                more = f" and {len(labels) - SAMPLE:,} more" if len(labels) > SAMPLE else ""
                rows_word = "row" if len(labels) == 1 else "rows"
                click.echo(f"  {len(labels):,} {rows_word} {CONSEQUENCE_WORDS[kind]}: {sample}{more}", err=True)
    return found


def _confirm_consequences(
    obj: AppContext, found: Any, flagged: set[str], audit_as: tuple[str, str, dict[str, Any]], counts: dict[str, int]
) -> tuple[Any, bool]:
    """The typed confirmation of the counted consequences (even with --yes, and refused when stdin is closed)
    unless each present one is flagged. Returns (what was confirmed, per line; whether a count was typed)."""
    from imm.services.action_support import TYPED_CONSEQUENCES

    present = [k for k in TYPED_CONSEQUENCES if found.labels.get(k)]
    unflagged = [k for k in present if k not in flagged]
    if not unflagged:
        return found.confirmed([], flagged), False
    word = f"release {found.rows_with(unflagged)}"
    try:
        typed = click.prompt(
            f'These consequences need a typed confirmation: type "{word}" to go on', default="", show_default=False,
            err=True,
        )  # fmt: skip
    except click.Abort:
        typed = ""
    if " ".join(str(typed).split()).lower() != word:
        reason = f"the typed confirmation was not '{word}'"
        _refused(obj, audit_as, counts, sum(counts.values()), reason)
    return found.confirmed(unflagged, flagged), True


def _refused(obj: AppContext, audit_as: tuple[str, str, dict[str, Any]], counts: dict[str, int], total: int,
             reason: str | None = None) -> NoReturn:  # fmt: skip
    """A declined batch: audited as cancelled, then DeclinedError (exit 6, the one wording)."""
    from imm.data.audit_logger import AuditResult
    from imm.errors import DeclinedError

    declined = DeclinedError(reason)
    operation, identity, details = audit_as
    obj.audit().log_operation(
        operation, identity, {**details, "actions": counts, "items": total}, AuditResult.CANCELLED, declined.message
    )
    raise declined


def _show_cmdlets(previews: dict[int, tuple[Item, Any]]) -> None:
    """--show-cmdlets: each row's cmdlets, as a single --what-if prints them (stdout)."""
    from imm.cli.action_cmds import _cmdlet_text
    from imm.textsafe import terminal_safe

    for line in sorted(previews):
        item, preview = previews[line]
        click.echo(terminal_safe(f"line {line} {item.action} {item.label or item.identity}:"))
        cmdlets = getattr(preview, "cmdlets", None) or []
        if not cmdlets:
            click.echo("    (nothing to run)")
        for cmdlet in cmdlets:
            click.echo(f"    {terminal_safe(_cmdlet_text(cmdlet))}")


def _passwords_option(f: Any) -> Any:
    return click.option(
        "--passwords-out",
        type=click.Path(path_type=Path),
        metavar="FILE",
        help="recover rows: write each new mailbox's password here (created with mode 0600). Required for them.",
    )(f)


@bulk.command("run")
@click.argument("plan_path", metavar="PLAN.csv", type=click.Path(path_type=Path))
@click.option("--what-if/--execute", "what_if", default=True, help="Preview only (the default), or make the changes.")
@click.option(
    "--concurrency", type=click.IntRange(1, 64), metavar="N", help="Items in flight (default: the profile's)."
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--results", type=click.Path(path_type=Path), metavar="FILE", help="Where to write the results CSV.")
@click.option("--show-cmdlets", is_flag=True, help="What-if: print each row's cmdlets and parameters.")
@_understood_options
@click.option(
    "--problems",
    "problems_out",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help=f"When the plan is invalid, write every problem to FILE (the terminal shows the first {MAX_SHOWN}).",
)
@_passwords_option
def run_cmd(
    plan_path: Path,
    what_if: bool,
    concurrency: int | None,
    yes: bool,
    results: Path | None,
    show_cmdlets: bool,
    understood_last_hold: bool,
    understood_unlimited: bool,
    understood_ediscovery: bool,
    problems_out: Path | None,
    passwords_out: Path | None,
) -> None:
    """Run a plan: check every row, then preview (default) or execute each one, with a progress bar.

    \b
    Plan columns (CSV with a header; 'imm bulk plan' writes one):
      action, identity        recover | restore | release | set-duration, and the mailbox
      recover                 upn, name [, display_name]
      restore                 target [, archive (true/false), target_folder]
      release                 type (litigation, delay, delay-release, label, org-policy, policy, all-unlocked)
      set-duration            days (a number, or unlimited)

    Nothing runs when any row is invalid (exit 2: each bad line is named). The consequences are counted first
    (rows that remove a last hold, release an Unlimited Litigation Hold or an eDiscovery case hold, with some
    mailboxes of each). --execute asks one confirmation naming the count and some mailboxes (--yes skips it); rows
    with those consequences need the count typed (e.g. "release 510"), even with --yes, unless the matching
    --i-understand-* flag is given; a row whose consequence was not confirmed is blocked when it runs. A results
    CSV (line, action, identity, status, message, operation id) is written at the end and on interrupt. Ctrl+C
    stops cleanly (exit 130): finish the job with 'imm bulk resume JOB'. Exit 1 when some items failed or were blocked.

    \b
    Examples:
      imm bulk plan --recoverable --company Contoso --action recover --limit 5 --out recover.csv
      imm bulk run recover.csv --concurrency 8
    Then for real: imm bulk run recover.csv --execute --passwords-out passwords.csv
    """
    from imm.data.jobs import EXECUTE, WHAT_IF
    from imm.errors import InputError
    from imm.services.bulk import check_writable_file, default_results_path
    from imm.services.bulk_plan import PlanError, read_plan

    obj = app()
    db = obj.database()
    try:
        plan = read_plan(plan_path, db)
    except PlanError as exc:
        _report_problems(plan_path, exc.problems, problems_out)
        raise
    mode = WHAT_IF if what_if else EXECUTE
    if results is not None:
        check_writable_file(results, "--results")
    else:
        check_writable_file(default_results_path(plan_path, "job"), "the results file")
    if mode != EXECUTE or not plan.has_recover:
        passwords_out = None  # no password will be made
    else:
        if passwords_out is None:
            raise InputError(
                "the plan has recover rows: give --passwords-out FILE for the new mailboxes' passwords",
                hint="the file is created with mode 0600; passwords are shown or stored nowhere else",
            )
        check_writable_file(passwords_out, "--passwords-out")
        if passwords_out.exists() and passwords_out.stat().st_size > 0:
            raise InputError(f"--passwords-out {passwords_out} already exists; choose a new file")
    if concurrency is not None:
        obj.overrides["concurrency"] = concurrency  # the Exchange clients' limit too
    workers = concurrency or obj.profile.concurrency
    labels = [row.label for row in plan.rows]
    found = _consequences(obj, db, [(r.line, r.action, r.mailbox_guid, r.params, r.label) for r in plan.rows])
    audit_as = (
        "BULK_OPERATION",
        str(plan.path.resolve()),
        {"mode": mode, "plan_path": str(plan.path.resolve()), "plan_sha256": plan.sha256},
    )
    confirmed = None
    approved = None
    if mode == EXECUTE:
        approved = _approved_job(obj, db, plan, found)
        flagged = _flagged(understood_last_hold, understood_unlimited, understood_ediscovery)
        confirmed, typed = _confirm_consequences(obj, found, flagged, audit_as, plan.counts())
        if not yes and not typed:
            _confirm(
                obj,
                plan.counts(),
                labels,
                release_types={str(r.params.get("type")) for r in plan.rows},
                audit_as=audit_as,
            )
    previews: dict[int, tuple[Item, Any]] = {}
    _run(
        obj,
        db,
        plan=plan if approved is None else None,
        job=approved,
        mode=mode,
        workers=workers,
        results=results,
        passwords_out=passwords_out,
        confirmed=confirmed,
        on_preview=(lambda item, preview: previews.__setitem__(item.line_no, (item, preview)))
        if show_cmdlets
        else None,
        after=(lambda: _show_cmdlets(previews)) if show_cmdlets else None,
    )


def _report_problems(plan_path: Path, problems: list[str], out: Path | None) -> None:
    """The first MAX_SHOWN problems and how many more (the error line follows); all of them to ``out``."""
    from imm.textsafe import shown

    if out is not None:
        try:
            with out.open("w", encoding="utf-8", errors="backslashreplace", newline="") as stream:
                stream.writelines(f"{plan_path}: {problem}\n" for problem in problems)
        except OSError as exc:
            from imm.errors import InputError

            raise InputError(f"--problems {shown(out, 200)}: cannot write it ({exc.strerror or exc})") from None
    for problem in problems[:MAX_SHOWN]:
        click.echo(f"  {shown(plan_path, 200)}: {shown(problem, 400)}", err=True)
    if len(problems) > MAX_SHOWN:
        where = f"all of them are in {shown(out, 200)}" if out else "--problems FILE writes all of them"
        click.echo(f"  … and {len(problems) - MAX_SHOWN:,} more problems ({where})", err=True)


@bulk.command("resume")
@click.argument("job_id", metavar="JOB")
@click.option("--concurrency", type=click.IntRange(1, 64), metavar="N", help="Items in flight (default: the job's).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--retry-failed", is_flag=True, help="Also run the items that failed or were blocked again.")
@click.option("--results", type=click.Path(path_type=Path), metavar="FILE", help="Where to write the results CSV.")
@_understood_options
@_passwords_option
def resume_cmd(
    job_id: str,
    concurrency: int | None,
    yes: bool,
    retry_failed: bool,
    results: Path | None,
    understood_last_hold: bool,
    understood_unlimited: bool,
    understood_ediscovery: bool,
    passwords_out: Path | None,
) -> None:
    """Finish an interrupted job: every item not done yet, exactly once.

    Items whose outcome is unknown (the run stopped while they were in flight) are first checked against Exchange:
    done ones are recorded as already-done, the others run. Recover items reuse the passwords file of the run
    (or --passwords-out).

    \b
    Examples:
      imm bulk resume job-20261128-123456-ab12
    """
    from imm.data.audit_logger import OperationType
    from imm.data.jobs import EXECUTE
    from imm.errors import InputError
    from imm.services.bulk import BulkEngine, check_writable_file, summary_counts

    obj = app()
    db = obj.database()
    engine = BulkEngine(db, obj.audit())
    job = engine.store.get(job_id)
    engine.check_not_busy(job.id)
    todo = engine.remaining(job, retry_failed=retry_failed)
    if not todo:
        counts = engine.store.counts(job.id)
        click.echo(f"Job {job.id} has nothing left to run ({summary_counts(counts)}).", err=True)
        if any(counts.get(s) for s in ("failed", "blocked")):
            click.echo(f"Run the failed items again with: {_resume_command(obj, job.id)} --retry-failed", err=True)
            click.get_current_context().exit(1)
        return
    if results is not None:
        check_writable_file(results, "--results")
    if job.mode != EXECUTE or not any(i.action == "recover" for i in todo):
        passwords_out = None  # no password will be made
    else:
        path = passwords_out or (Path(job.passwords_path) if job.passwords_path else None)
        if path is None:
            raise InputError(
                f"job {job.id} has recover rows left: give --passwords-out FILE for their passwords",
                hint="the file is created with mode 0600",
            )
        passwords_out = path
        check_writable_file(passwords_out, "--passwords-out")
    if concurrency is not None:
        obj.overrides["concurrency"] = concurrency
    workers = concurrency or job.concurrency
    flagged = _flagged(understood_last_hold, understood_unlimited, understood_ediscovery)
    confirmed = _authorise(obj, db, job, todo, OperationType.BULK_RESUME, flagged, yes, f"Resume job {job.id}")
    _run(
        obj,
        db,
        job=job,
        mode=job.mode,
        workers=workers,
        results=results,
        passwords_out=passwords_out,
        retry_failed=retry_failed,
        confirmed=confirmed,
    )


def _authorise(obj: AppContext, db: Any, job: Job, todo: Sequence[Item], operation: Any, flagged: set[str],
               yes: bool, lead: str) -> Any:  # fmt: skip
    """What ``bulk resume`` and ``bulk work`` ask before an executed job goes on: the four-eyes check (refused,
    audited as ``operation``, exit 5), the typed count of the consequences (unless flagged), then the one
    confirmation (unless --yes). Returns what was confirmed, per line (None for a what-if job)."""
    from imm.data.jobs import EXECUTE, RUNNING, UNKNOWN

    if job.mode != EXECUTE:
        return None
    audit_as = (str(operation), job.id, {"job_id": job.id, "mode": job.mode})
    found = _consequences(obj, db, [(i.line_no, i.action, i.mailbox_guid, i.params, i.label or i.identity)
                                    for i in todo])  # fmt: skip
    _approvals(obj, db).check_runnable(job, needs=_needs(obj, [i.action for i in todo], found), operation=operation)
    by_action: dict[str, int] = {}
    for item in todo:
        by_action[item.action] = by_action.get(item.action, 0) + 1
    confirmed, typed = _confirm_consequences(obj, found, flagged, audit_as, by_action)
    if not yes and not typed:
        unknown = sum(1 for i in todo if i.status in (RUNNING, UNKNOWN))
        note = f" ({unknown:,} of them checked against Exchange first)" if unknown else ""
        _confirm(
            obj,
            by_action,
            [i.label or i.identity for i in todo],
            release_types={str(i.params.get("type")) for i in todo},
            lead=f"{lead}{note}: ",
            audit_as=audit_as,
        )
    return confirmed


@bulk.command("work")
@click.argument("job_id", metavar="JOB")
@click.option("--concurrency", type=click.IntRange(1, 64), metavar="N", help="Items in flight (default: the job's).")
@click.option(
    "--lease",
    type=click.IntRange(1, 3600),
    default=60,
    show_default=True,
    metavar="SECONDS",
    help="How long a claimed item stays this worker's without a renewal (renewed every third of it).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--results", type=click.Path(path_type=Path), metavar="FILE", help="Where to write the results CSV.")
@_understood_options
@_passwords_option
def work_cmd(
    job_id: str,
    concurrency: int | None,
    lease: int,
    yes: bool,
    results: Path | None,
    understood_last_hold: bool,
    understood_unlimited: bool,
    understood_ediscovery: bool,
    passwords_out: Path | None,
) -> None:
    """Work on a job together with other workers: any number of 'imm bulk work JOB' processes, on this machine
    or others sharing the team store, split the job between them, every item exactly once.

    Each worker claims items with a lease it renews while it runs them. A worker that is killed leaves its items
    leased until the lease runs out; after that and the profile's request_timeout (its last call may still be
    running in Exchange) another worker takes each over and first checks it against Exchange, as a resume does.
    A worker asks what 'imm bulk resume' asks (the four-eyes approval, the typed count of last-hold, Unlimited
    and eDiscovery releases or --i-understand-*, one confirmation: --yes for unattended workers) and ends when
    nothing is left that could come back to it. Items left failed, blocked or unknown are for 'imm bulk resume'.

    \b
    Example:
      imm bulk submit plan.csv                        # a second admin approves it, then on each machine:
      imm bulk work job-20261128-123456-ab12 --yes --i-understand-last-hold
    """
    from imm.data.audit_logger import OperationType
    from imm.data.jobs import EXECUTE, PENDING, RUNNING
    from imm.errors import InputError
    from imm.services.bulk import BulkEngine, check_writable_file, summary_counts

    obj = app()
    db = obj.database()
    engine = BulkEngine(db, obj.audit())
    job = engine.store.get(job_id)
    todo = engine.store.items(job.id, (PENDING, RUNNING))
    if not todo:
        counts = engine.store.counts(job.id)
        click.echo(f"Job {job.id} has nothing left for a worker ({summary_counts(counts)}).", err=True)
        if any(counts.get(s) for s in ("failed", "blocked", "unknown")):
            click.echo(f"Check and finish the rest with: {_resume_command(obj, job.id)}", err=True)
            click.get_current_context().exit(1)
        return
    if results is not None:
        check_writable_file(results, "--results")
    if job.mode != EXECUTE or not any(i.action == "recover" for i in todo):
        passwords_out = None  # no password will be made
    elif passwords_out is None:
        raise InputError(
            f"job {job.id} has recover rows left: give --passwords-out FILE for the passwords of the mailboxes "
            "this worker recovers",
            hint="each worker keeps its own file (mode 0600)",
        )
    else:
        check_writable_file(passwords_out, "--passwords-out")
    if concurrency is not None:
        obj.overrides["concurrency"] = concurrency
    workers = concurrency or job.concurrency
    flagged = _flagged(understood_last_hold, understood_unlimited, understood_ediscovery)
    confirmed = _authorise(obj, db, job, todo, OperationType.BULK_WORK, flagged, yes, f"Work on job {job.id}")
    _run(obj, db, job=job, mode=job.mode, workers=workers, results=results, passwords_out=passwords_out,
         confirmed=confirmed, lease=float(lease))  # fmt: skip


# --------------------------------------------------------------------------------- four-eyes approval
def _needs(obj: AppContext, actions: Sequence[str], found: Any) -> list[str]:
    """What of the profile's approval_required an executed bulk job of these actions and consequences matches."""
    from imm.services.approval import needed

    return needed(obj.profile.approval_required, actions, [k for k, v in found.labels.items() if v], bulk=True)


def _approvals(obj: AppContext, db: Any, audit: Any = None) -> Any:
    """The store's approvals; refusals before a sign-in are audited as the account of the token cache."""
    from imm.data.audit_logger import AuditLogger
    from imm.data.audit_signing import AuditKeying
    from imm.data.jobs import JobStore
    from imm.services.approval import Approvals

    if audit is None:
        account = obj.authenticator().account() or {}  # who is signed in, from the cache (no network)
        user = account.get("username") or (f"app:{account['client_id']}" if account.get("client_id") and
                                            account.get("kind") == "app" else None)  # fmt: skip
        keying = AuditKeying.from_profile(obj.profile)
        audit = AuditLogger(db, tenant=obj.profile.tenant_id, user=user, keying=keying)
    return Approvals(JobStore(db), audit)


def _approved_job(obj: AppContext, db: Any, plan: Any, found: Any) -> Job | None:
    """``bulk run PLAN --execute`` of a plan the policy covers: its approved, not yet run job (None when the
    policy does not cover the plan); refused (audited, exit 5) otherwise."""
    from imm.data.audit_logger import OperationType
    from imm.errors import InputError

    needs = _needs(obj, list(plan.counts()), found)
    if not needs:
        return None
    approvals = _approvals(obj, db)
    submission = approvals.latest_for_plan(plan.path)
    if submission is None:
        approvals.refuse_unsubmitted_plan(plan.path, plan.sha256, needs)
    job = approvals.store.get(submission.job_id)
    approvals.check_runnable(job, needs=needs, operation=OperationType.BULK_OPERATION, plan_sha256=plan.sha256)
    if job.runs:
        raise InputError(
            f"the approved job {job.id} of this plan has run already",
            hint=f"finish it with: {_resume_command(obj, job.id)}",
        )
    return job


@bulk.command("submit")
@click.argument("plan_path", metavar="PLAN.csv", type=click.Path(path_type=Path))
@click.option(
    "--concurrency", type=click.IntRange(1, 64), metavar="N", help="Items in flight (default: the profile's)."
)
@click.option(
    "--problems",
    "problems_out",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help=f"When the plan is invalid, write every problem to FILE (the terminal shows the first {MAX_SHOWN}).",
)
def submit_cmd(plan_path: Path, concurrency: int | None, problems_out: Path | None) -> None:
    """Submit a plan for four-eyes approval: checked as 'bulk run' checks it, stored as a job (with the plan's
    SHA-256) that waits until a different signed-in admin approves it ('imm bulk approve JOB').

    The profile's approval_required names what needs the second person (bulk, recover, restore, release,
    set-duration, last-hold, unlimited, ediscovery). Once approved, 'imm bulk run PLAN.csv --execute' runs that
    job, and only while the plan file is unchanged. Who submitted and who approved are the Entra ID object ids of
    the signed-in accounts (the token's oid), recorded in the audit log.

    \b
    Examples:
      imm bulk submit plan.csv
    """
    from imm.data.jobs import EXECUTE
    from imm.services.approval import require_object_id
    from imm.services.bulk import BulkEngine
    from imm.services.bulk_plan import PlanError, read_plan
    from imm.session import SessionManager

    obj = app()
    db = obj.database()
    try:
        plan = read_plan(plan_path, db)
    except PlanError as exc:
        _report_problems(plan_path, exc.problems, problems_out)
        raise
    found = _consequences(obj, db, [(r.line, r.action, r.mailbox_guid, r.params, r.label) for r in plan.rows])
    counts = plan.counts()
    needs = _needs(obj, list(counts), found)
    with SessionManager(obj.config, db, obj.authenticator()) as session:
        oid = require_object_id(session.object_id)
        engine = BulkEngine(db, session.audit)
        job = engine.create_job(
            plan, mode=EXECUTE, concurrency=concurrency or obj.profile.concurrency, user=session.user,
            tenant=session.tenant,
        )  # fmt: skip
        consequences = {k: len(v) for k, v in found.labels.items() if v}
        _approvals(obj, db, session.audit).submit(job, object_id=oid, needs=needs, counts=counts,
                                                  consequences=consequences)  # fmt: skip
    click.echo(job.id)  # stdout: the job id, for scripts
    if not obj.quiet:
        what = ", ".join(needs) if needs else "nothing in this plan (it was submitted anyway)"
        click.echo(
            f"Submitted job {job.id}: {len(plan.rows):,} items of {plan.path}; the profile's policy requires "
            f"approval for: {what}.",
            err=True,
        )
        click.echo(f"A different admin approves it with: imm bulk approve {job.id}", err=True)


@bulk.command("approve")
@click.argument("job_id", metavar="JOB")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def approve_cmd(job_id: str, yes: bool) -> None:
    """Approve a submitted job as a second person: refused (exit 5, audited) for your own submission, or when the
    plan or the stored items changed since it was submitted. The decision is final and in the audit log.

    'imm bulk status JOB --all' shows every item first; 'imm bulk run PLAN.csv' (what-if) previews them.

    \b
    Examples:
      imm bulk approve job-20261128-123456-ab12
    """
    from imm.cli.context import confirm
    from imm.errors import DeclinedError
    from imm.session import SessionManager
    from imm.textsafe import terminal_safe

    obj = app()
    db = obj.database()
    with SessionManager(obj.config, db, obj.authenticator()) as session:
        approvals = _approvals(obj, db, session.audit)
        job, submission = approvals.check_approvable(job_id, object_id=session.object_id)
        counts = approvals.store.counts(job.id)
        if not obj.quiet or not yes:
            by = terminal_safe(submission.user or submission.object_id)
            needs = ", ".join(submission.needs) or "nothing (submitted anyway)"
            click.echo(
                f"Job {job.id}, submitted by {by} at {submission.timestamp}: {sum(counts.values()):,} items of "
                f"{terminal_safe(submission.plan_path)} (SHA-256 {submission.plan_sha256[:12]}…); approval "
                f"required for: {needs}.",
                err=True,
            )
        if not yes:
            try:
                confirm(f"Approve job {job.id}?")
            except DeclinedError as exc:
                approvals.declined(job.id, object_id=session.object_id, message=exc.message)
                raise
        approvals.approve(job.id, object_id=session.object_id)
    if not obj.quiet:
        click.echo(f"Approved job {job.id}. It runs with: imm bulk run {submission.plan_path} --execute", err=True)


@bulk.command("reject")
@click.argument("job_id", metavar="JOB")
@click.option("--reason", metavar="TEXT", help="Why (recorded in the audit log and shown to whoever runs it).")
def reject_cmd(job_id: str, reason: str | None) -> None:
    """Reject a submitted job: it never runs (the submitter may reject their own, to withdraw it). Audited.

    \b
    Examples:
      imm bulk reject job-20261128-123456-ab12 --reason "line 14 is a current employee"
    """
    from imm.session import SessionManager
    from imm.textsafe import shown

    obj = app()
    db = obj.database()
    text = " ".join(reason.split())[:500] if reason else None  # one line, bounded; rendered safe when shown
    with SessionManager(obj.config, db, obj.authenticator()) as session:
        decision = _approvals(obj, db, session.audit).reject(job_id, object_id=session.object_id, reason=text)
    if not obj.quiet:
        withdrawn = " (withdrawn by its submitter)" if decision.withdrawn else ""
        click.echo(f"Rejected job {shown(job_id.strip(), 80)}{withdrawn}.", err=True)


def _confirm(
    obj: AppContext,
    counts: dict[str, int],
    labels: Sequence[str],
    *,
    release_types: set[str],
    lead: str = "",
    audit_as: tuple[str, str, dict[str, Any]],
) -> None:
    """The one confirmation for the batch: the count, what it does, a sample of mailboxes. A refusal is audited
    (``audit_as``: operation, identity, details) as ``cancelled``."""
    from imm.textsafe import terminal_safe

    total = sum(counts.values())
    if len(counts) == 1:
        action = next(iter(counts))
        what = _VERBS[action]
        if action == "release":
            kinds = sorted(t for t in release_types if t and t != "None")
            what = f"release {', '.join(kinds)} holds on"
        text = f"{what} {total:,} {'mailbox' if total == 1 else 'mailboxes'}"
    else:
        parts = ", ".join(f"{n:,} {a}" for a, n in counts.items())
        text = f"run {total:,} actions ({parts})"
    sample = terminal_safe(", ".join(labels[:SAMPLE]))
    more = f" and {len(labels) - SAMPLE:,} more" if len(labels) > SAMPLE else ""
    click.echo(f"{lead}{text[0].upper()}{text[1:]} in tenant {obj.profile.tenant_id}: {sample}{more}.", err=True)
    if "release" in counts:
        click.echo(
            "Releasing a mailbox's last hold starts Exchange's schedule: a 30-day delay hold, then soft-deleted and "
            "purged 183 days after the removal, restorable with imm restore until then "
            "(a what-if run shows which mailboxes lose their last hold).",
            err=True,
        )
    from imm.cli.context import confirm
    from imm.errors import DeclinedError

    try:
        confirm("Continue?")
    except DeclinedError:
        _refused(obj, audit_as, counts, total)


def _resume_command(obj: AppContext, job_id: str) -> str:
    parts = ["imm bulk resume", job_id]
    if obj.profile_name:
        parts.append(f"--profile {obj.profile_name}")
    if obj.overrides.get("db_path"):
        parts.append(f"--db {obj.overrides['db_path']}")
    return " ".join(parts)


def _run(
    obj: AppContext,
    db: Any,
    *,
    mode: str,
    workers: int,
    results: Path | None,
    passwords_out: Path | None,
    plan: Any = None,
    job: Job | None = None,
    retry_failed: bool = False,
    confirmed: Any = None,
    on_preview: Any = None,
    after: Any = None,
    lease: float | None = None,
) -> None:
    """Sign in, create the job (for a plan), run it with a progress bar (with ``lease``: as one of the job's
    workers, ``bulk work``), print the outcome, exit."""
    from imm.cli.progress import BulkProgressBar, interrupt_sets
    from imm.errors import ExitStatus
    from imm.services.actions import MailboxActions
    from imm.services.bulk import BulkEngine, PasswordFile
    from imm.session import SessionManager

    ctx = click.get_current_context()
    cancel = threading.Event()
    with SessionManager(obj.config, db, obj.authenticator()) as session:
        engine = BulkEngine(db, session.audit)
        passwords = None
        if plan is not None:
            if passwords_out is not None:
                passwords = PasswordFile(passwords_out, new=True)
            job = engine.create_job(
                plan,
                mode=mode,
                concurrency=workers,
                user=session.user,
                tenant=session.tenant,
                results_path=results,
                passwords_path=passwords_out,
            )
        elif passwords_out is not None:
            passwords = PasswordFile(passwords_out, new=False)
        assert job is not None
        resume = _resume_command(obj, job.id)
        if lease is not None:  # a worker takes what is pending or in flight (unknown ones are for a resume)
            total = len(engine.store.items(job.id, ("pending", "running")))
        else:
            total = len(engine.remaining(job, retry_failed=retry_failed))
        if not obj.quiet:
            verb = "Previewing" if mode == "what-if" else "Running"
            share = f", a worker among others (lease {lease:g} s)" if lease is not None else ""
            click.echo(f"Job {job.id}: {verb} {total:,} items ({mode}, {workers} at a time{share})", err=True)

        def factory() -> MailboxActions:
            return MailboxActions(db, session.connection, session.audit, obj.profile)

        stage = _stage(engine.remaining(job, retry_failed=retry_failed), mode)
        try:
            with BulkProgressBar(stage, enabled=not obj.quiet) as bar:

                def say(_text: str) -> None:
                    bar.note("Stopping: the items in flight finish and no new one starts (Ctrl+C again to stop now)…")

                with interrupt_sets(cancel, say):
                    if lease is not None:
                        outcome = engine.work(
                            job.id,
                            factory,
                            concurrency=workers,
                            cancel=cancel,
                            progress=bar.update,
                            passwords=passwords,
                            results_path=results,
                            confirmed=confirmed,
                            lease_seconds=lease,
                            in_flight_seconds=obj.profile.request_timeout,
                        )
                    else:
                        outcome = engine.run(
                            job.id,
                            factory,
                            concurrency=workers,
                            cancel=cancel,
                            progress=bar.update,
                            passwords=passwords,
                            retry_failed=retry_failed,
                            results_path=results,
                            confirmed=confirmed,
                            on_preview=on_preview,
                            in_flight_seconds=obj.profile.request_timeout,
                            on_wait=bar.note,
                        )
        except KeyboardInterrupt:
            click.echo(f"\nInterrupted: job {job.id} can be finished with: {resume}", err=True)
            ctx.exit(int(ExitStatus.INTERRUPTED))
        finally:
            if passwords is not None:
                passwords.close()
    if after is not None:
        after()
    _report(obj, outcome, resume)
    ctx.exit(int(outcome.exit_code))


def _stage(items: Sequence[Item], mode: str) -> str:
    actions = {i.action for i in items}
    if mode == "what-if":
        return "Previewing"
    return _STAGE[next(iter(actions))] if len(actions) == 1 else "Running"


def _report(obj: AppContext, outcome: RunOutcome, resume: str) -> None:
    """The outcome on stderr (stdout stays clean for scripts): counts, failures, results file, what next."""
    from imm.services.bulk import summary_counts
    from imm.textsafe import terminal_safe

    job = outcome.job
    echo = click.echo
    # what went wrong; then, when nothing else says why the job is unfinished, what was tried and is left to do
    left = outcome.not_done if not (outcome.interrupted or outcome.stop_error) else []
    shown = [*outcome.failures, *left]
    for item in shown[:SHOWN_FAILURES]:
        text = f"  line {item.line_no} {item.action} {item.label or item.identity}: {item.status}: {item.message}"
        echo(terminal_safe(text), err=True)
    if len(shown) > SHOWN_FAILURES:
        echo(f"  … and {len(shown) - SHOWN_FAILURES:,} more (in the results file)", err=True)
    line = f"Job {job.id} ({job.mode}): {summary_counts(outcome.counts)} in {outcome.duration:.1f} s"
    if job.mode == "what-if":
        line += "; nothing was changed in Exchange"
    echo(line, err=True)
    if outcome.results_path is not None and outcome.results_error is None:
        echo(f"Results: {outcome.results_path}", err=True)
    if outcome.results_error:
        echo(f"Warning: could not write the results file {outcome.results_error}", err=True)
    if outcome.stop_error is not None:
        echo(f"Error: the job stopped: {outcome.stop_error.message}", err=True)
        if outcome.stop_error.hint:
            echo(f"Hint: {outcome.stop_error.hint}", err=True)
        echo(f"Then finish it with: {resume}", err=True)
    elif outcome.interrupted:
        echo(f"Interrupted: finish the job with: {resume}", err=True)
    elif outcome.unfinished:  # not stopped by anyone: items were put back, each with its reason above
        echo(f"Not finished: {outcome.unfinished:,} left to do; finish the job with: {resume}", err=True)
    elif outcome.counts.get("unknown"):
        echo(f"Some outcomes are unknown: check them against Exchange with: {resume}", err=True)
    elif job.mode == "execute" and outcome.errors:
        echo(f"After fixing the causes, run the failed items again with: {resume} --retry-failed", err=True)
    elif job.mode == "what-if" and not outcome.errors:
        echo(f"To make these changes: imm bulk run {job.plan_path} --execute", err=True)


# ------------------------------------------------------------------------------------------- status, list
@bulk.command("status")
@click.argument("job_id", metavar="JOB")
@click.option("--all", "show_all", is_flag=True, help="Every item, not only the failed, blocked and unknown ones.")
@output_options
def status_cmd(job_id: str, show_all: bool, output: str, query: str | None) -> None:
    """A job's state: items by status and the ones that failed (every item with --all).

    \b
    Examples:
      imm bulk status job-20261128-123456-ab12 --output json
    """
    from imm.cli.output import Column, render, render_object
    from imm.data.jobs import ERRORS
    from imm.services.bulk import BulkEngine, summary_counts

    obj = app()
    engine = BulkEngine(obj.database(), obj.audit())
    job, counts = engine.status(job_id)
    items = engine.store.items(job.id, None if show_all else sorted(ERRORS))
    rows = [_item_row(i) for i in items]
    approval = _approval_text(obj, job.id)
    if output == "json" or query:
        data = {"job": {**_job_record(job, counts), "approval": approval}, "items": rows}
        render_object(data, "json", query)
        return
    columns = [
        Column("line", "Line", justify="right", no_wrap=True),
        Column("action", "Action", no_wrap=True),
        Column("mailbox", "Mailbox", max_width=40, no_wrap=True, min_width=12),
        Column("status", "Status", no_wrap=True),
        Column("message", "Message", max_width=80, min_width=20, priority=2),
        Column("operation_id", "Operation", no_wrap=True, min_width=12, priority=3),
    ]
    if output == "csv":
        render(rows, columns, "csv")
        return
    total = sum(counts.values())
    render_object(
        {
            "Job": job.id,
            "Status": job.status,
            "Mode": job.mode,
            "Items": f"{total:,}: {summary_counts(counts)}",
            "Plan": f"{job.plan_path} (SHA-256 {job.plan_sha256[:12]}…)",
            "Created": job.created_at,
            "Finished": job.finished_at or "",
            "By": job.user or "",
            "Results": job.results_path or "",
            **({"Approval": approval} if approval else {}),
        }
    )
    if rows:
        click.echo()
        render(rows, columns, "table", title="Items" if show_all else "Failed, blocked and unknown items")
    if job.status in ("interrupted", "running", "planned"):
        click.echo(f"\nFinish it with: {_resume_command(obj, job.id)}")


def _approval_text(obj: AppContext, job_id: str) -> str | None:
    """``awaiting approval`` / ``approved by U at T`` / ``rejected by U at T: reason`` (None: never submitted)."""
    from imm.services.approval import Approvals

    approvals = Approvals(_store(obj), obj.audit())
    if approvals.submission(job_id) is None:
        return None
    decision = approvals.decision(job_id)
    if decision is None:
        return "awaiting approval"
    why = f": {decision.reason}" if decision.reason else ""
    return f"{decision.kind} by {decision.user or decision.object_id} at {decision.timestamp}{why}"


def _store(obj: AppContext) -> Any:
    from imm.data.jobs import JobStore

    return JobStore(obj.database())


@bulk.command("list")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Latest N jobs (0: all).")
@output_options
def list_cmd(limit: int, output: str, query: str | None) -> None:
    """The bulk jobs of this profile, newest first.

    \b
    Examples:
      imm bulk plan --releasable --company Contoso --action release --out plan.csv
      imm bulk run plan.csv
      imm bulk list --limit 5
      imm bulk list --output json --query "[].{id: id, status: status}"
    """
    from imm.cli.output import Column, render
    from imm.services.bulk import BulkEngine

    obj = app()
    engine = BulkEngine(obj.database(), obj.audit())
    rows = [_job_record(job, counts) for job, counts in engine.list_jobs(limit or None)]
    if output == "json" and not query:
        render(rows, [], "json")
        return
    if output == "table" and not query:
        _jobs_table(rows)
        return
    columns = [
        Column(key, key)
        for key in ("id", "created_at", "mode", "status", "items", "done", "not_done", "left", "plan", "plan_path")
    ]
    render(rows, columns, output, query)


def _jobs_table(rows: list[dict[str, Any]]) -> None:
    """The jobs as a table that stays legible in 80 columns: ids and counts are never squeezed; the creation time
    (also in the job id) and the plan's name are shown when there is room."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    wide = console.width >= 110
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, expand=False)
    table.add_column("Job", no_wrap=True, min_width=24)
    if wide:
        table.add_column("Created (UTC)", no_wrap=True, min_width=16)
    table.add_column("Mode", no_wrap=True, min_width=7)
    table.add_column("Status", overflow="fold", min_width=9)
    for header in ("Items", "Done", "Failed", "Left"):
        table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    if wide:
        table.add_column("Plan", no_wrap=True, max_width=40, overflow="ellipsis")
    for row in rows:
        cells = [row["id"]]
        if wide:
            cells.append(str(row["created_at"])[:16].replace("T", " "))
        cells += [
            row["mode"],
            row["status"],
            f"{row['items']:,}",
            f"{row['done']:,}",
            f"{row['not_done']:,}",
            f"{row['left']:,}",
        ]
        if wide:
            cells.append(row["plan"])
        table.add_row(*cells)
    console.print(table)
    if not rows:
        console.print("[dim]No bulk jobs yet: `imm bulk plan` writes a plan, `imm bulk run PLAN.csv` runs it.[/dim]")


def _job_record(job: Job, counts: dict[str, int]) -> dict[str, Any]:
    from imm.data.jobs import ERRORS

    done = sum(counts.get(s, 0) for s in ("succeeded", "already-done", "skipped", "would-run"))
    return {
        "id": job.id,
        "created_at": job.created_at,
        "mode": job.mode,
        "status": job.status,
        "items": sum(counts.values()),
        "done": done,
        "not_done": sum(counts.get(s, 0) for s in ERRORS),
        "left": counts.get("pending", 0) + counts.get("running", 0),
        "counts": counts,
        "plan": Path(job.plan_path).name,
        "plan_path": job.plan_path,
        "plan_sha256": job.plan_sha256,
        "concurrency": job.concurrency,
        "user": job.user,
        "tenant": job.tenant,
        "finished_at": job.finished_at,
        "results_path": job.results_path,
        "runs": job.runs,
    }


def _item_row(item: Item) -> dict[str, Any]:
    return {
        "line": item.line_no,
        "action": item.action,
        "identity": item.identity,
        "mailbox": item.label or item.mailbox_guid,
        "exchange_guid": item.mailbox_guid,
        "params": item.params,
        "status": item.status,
        "message": item.message,
        "operation_id": item.operation_id,
        "attempts": item.attempts,
        "started_at": item.started_at,
        "finished_at": item.finished_at,
    }
