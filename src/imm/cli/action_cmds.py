"""``imm recover``, ``imm restore`` (start / status) and ``imm holds`` (show / release / set-duration).

Each change previews first (computed by imm: ``--what-if`` prints it and changes nothing), asks a confirmation that
names the mailbox (``--yes`` skips it; the last hold needs the mailbox's address typed, see ``holds release``), then
runs with write-ahead audit rows. Exit codes: 0 done (or nothing to do), 1 failed or not confirmed, 2 bad input,
3 sign-in, 4 unknown identity, 5 blocked by a preflight check, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from imm.cli.completion import complete_identities, complete_release_types
from imm.cli.context import app
from imm.cli.output import output_options

if TYPE_CHECKING:
    from imm.services.actions import ActionPreview, ActionResult, MailboxActions


# ------------------------------------------------------------------------------------------- shared options
def _what_if(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--what-if",
        is_flag=True,
        help="Print the preview (computed by imm from Exchange's current state) and change nothing.",
    )(f)


def _yes(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")(f)


@contextmanager
def _session() -> Iterator[MailboxActions]:
    """Sign in (silently when possible) and yield the actions service of this profile."""
    from imm.services.actions import MailboxActions
    from imm.session import SessionManager

    obj = app()
    db = obj.database()
    with SessionManager(obj.config, db, obj.authenticator()) as session:
        yield MailboxActions(db, session.connection, session.audit, obj.profile)


def _json() -> bool:
    """JSON output (``--output json``, or any ``--query``)."""
    return app().output == "json" or bool(click.get_current_context().params.get("query"))


def _structured() -> bool:
    """Machine output (``--output json|csv`` or any ``--query``): one document on stdout, no text around it."""
    return _json() or app().output == "csv"


def _emit(data: Any) -> None:
    """Print ``data`` (after --query) as JSON, or under ``--output csv`` as CSV (one row per object)."""
    import io
    import json

    from imm.cli.output import apply_query, to_jsonable, write_query_csv

    query = click.get_current_context().params.get("query")
    result = apply_query(data, query)
    if app().output == "csv":
        out = io.StringIO()
        write_query_csv(_flat(to_jsonable(result)), [], out)
        click.echo(out.getvalue(), nl=False)
        return
    click.echo(json.dumps(to_jsonable(result), ensure_ascii=False, indent=2))


def _flat(value: Any) -> Any:
    """For CSV: an object's nested objects, and lists holding them, as compact JSON text in one cell."""
    import json

    def cell(item: Any) -> Any:
        nested = isinstance(item, list) and any(isinstance(i, dict | list) for i in item)
        if isinstance(item, dict) or nested:
            return json.dumps(item, ensure_ascii=False, sort_keys=True)
        return item

    if isinstance(value, dict):
        return {k: cell(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_flat(v) if isinstance(v, dict) else v for v in value]
    return value


# ------------------------------------------------------------------------------------------------ rendering
def _param_text(name: str, value: Any) -> str:
    if value is True:
        return f"-{name}"
    if value is False:
        return f"-{name} $false"
    if isinstance(value, dict):
        inner = "; ".join(f'{k}="{v}"' for k, v in value.items())
        return f"-{name} @{{{inner}}}"
    if isinstance(value, list | tuple):
        return f"-{name} " + ",".join(str(v) for v in value)
    text = str(value)
    return f'-{name} "{text}"' if (" " in text or not text) else f"-{name} {text}"


def _cmdlet_text(cmdlet: dict[str, Any]) -> str:
    parameters = cmdlet.get("parameters") or {}
    parts = [cmdlet.get("cmdlet", "")]
    parts += [_param_text(k, v) for k, v in parameters.items() if v is not None]
    where = " (Security & Compliance)" if cmdlet.get("endpoint") == "compliance" else ""
    return " ".join(parts) + where


def _show_preview(preview: ActionPreview, what_if: bool = True, *, blockers: bool = True) -> None:
    """The preview as text; as JSON only for --what-if (an action prints one JSON document: its result).
    ``blockers=False`` leaves them to the error lines that follow."""
    if _structured():
        if what_if:
            _emit(preview.to_dict())
        return
    from imm.textsafe import terminal_safe as safe

    mailbox = preview.mailbox
    label = mailbox.get("display_name") or mailbox.get("primary_smtp") or preview.identity
    click.secho(
        safe(f"Preview: {preview.action} — {label} <{mailbox.get('primary_smtp', '')}> ({preview.identity})"),
        bold=True,
    )
    for line in preview.summary:
        click.echo(f"  {safe(line)}")
    if preview.blockers and blockers:
        click.secho("  Blocked by:", fg="red")
        for line in preview.blockers:
            click.echo(f"    - {safe(line)}")
    if preview.consequence:
        style = {"fg": "yellow", "bold": True} if preview.removes_last_hold else {}
        click.secho(f"  Consequence: {safe(preview.consequence)}", **style)  # type: ignore[arg-type]
    if preview.cmdlets:
        click.echo("  Exchange calls:")
        for cmdlet in preview.cmdlets:
            click.echo(f"    {safe(_cmdlet_text(cmdlet))}")
    for note in preview.notes:
        click.echo(f"  Note: {safe(note)}")


def _finish(result: ActionResult, lines: list[str] | None = None, preview: ActionPreview | None = None) -> None:
    """Print the result (with the preview under --output json); exit 1 when it failed."""
    from imm.errors import ExitStatus
    from imm.textsafe import terminal_safe

    if _structured():
        _emit({**result.to_dict(), "preview": preview.to_dict() if preview else None})
    elif result.status == "failed":
        click.secho(f"Error: {terminal_safe(result.message)}", fg="red", err=True)
        if result.operation_id:
            click.echo(f"  audit operation {result.operation_id}", err=True)
    else:
        click.secho(terminal_safe(result.message), fg="green" if result.status == "success" else None)
        for line in lines or []:
            click.echo(terminal_safe(line))
        if result.operation_id:
            click.echo(f"Audit operation: {result.operation_id}")
    if result.status == "failed":
        click.get_current_context().exit(int(ExitStatus.FAILED))


def _nothing_to_do(actions: MailboxActions, preview: ActionPreview) -> None:
    """The action would change nothing: a ``skipped`` result (the preview above already says so as text); audited."""
    from imm.services.actions import ActionResult

    actions.record_unchanged(preview, "skipped", preview.summary[-1] if preview.summary else None)
    if _structured():
        _finish(ActionResult(preview.identity, preview.action, "skipped", preview.summary[-1]), preview=preview)


def _confirm(question: str, yes: bool) -> None:
    from imm.cli.context import confirm

    confirm(question, yes=yes)  # declined: DeclinedError, exit 6


def _typed_confirm(address: str, why: str) -> None:
    """Ask for the mailbox's primary SMTP address to be typed (for the last hold and forced eDiscovery)."""
    from imm.errors import DeclinedError

    click.secho(f"{why}.", fg="yellow", bold=True, err=True)
    try:
        typed = click.prompt(
            f"Type the mailbox's primary SMTP address ({address}) to confirm",
            default="",
            show_default=False,
            err=True,
        )
    except click.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        typed = ""
    if str(typed).strip().lower() != address.strip().lower() or not address:
        raise DeclinedError("the typed address does not match")


def _settled() -> None:
    """The outcome is known (and audited): from here a Ctrl+C must not turn what is printed into exit 130."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _act(
    actions: MailboxActions,
    action: str,
    identity: str,
    *,
    preview: Callable[[], ActionPreview],
    execute: Callable[[ActionPreview], ActionResult],
    question: Callable[[ActionPreview], str],
    what_if: bool,
    yes: bool,
    understood: bool = False,
) -> tuple[ActionPreview | None, ActionResult | None]:
    """The one skeleton of every single-mailbox change: preview → (what-if | nothing to do) → confirm → execute.

    The service computes and audits; this only renders and asks. Every attempt leaves one audit row: a blocked
    preflight, an unknown identity or an Exchange that cannot be reached (``failure``), a what-if (``preview``),
    nothing to do (``skipped``), a "no", a mistyped address or Ctrl+C before the change (``cancelled``); a change
    that started records its own result (``success`` / ``failure`` / ``unknown``). The confirmation is decided by
    the preview's consequences: the last hold or an eDiscovery case hold needs the address typed, even with
    ``--yes``, unless ``understood``. Returns (preview, result); result is None when nothing ran (already shown).
    """
    from imm.errors import ImmError, Interrupted
    from imm.services.action_support import ActionBlockedError
    from imm.services.action_support import ActionPreview as Preview

    shown: ActionPreview | None = None
    try:
        shown = preview()
        _show_preview(shown, what_if)
        if what_if:
            actions.record_unchanged(shown, "preview")
            return shown, None
        if shown.nothing_to_do:
            _nothing_to_do(actions, shown)
            return shown, None
        from imm.services.approval import single_refusal

        refusal = single_refusal(actions.profile.approval_required, action, shown.consequences)
        if refusal is not None:  # four-eyes: the profile reserves this change for an approved one-row plan
            raise refusal
        try:
            _confirm_plan(shown, question(shown), yes, understood)
        except ImmError as exc:
            if exc.code == "not_confirmed":
                actions.record_unchanged(shown, "cancelled", exc.message)
            raise
        result = execute(shown)
        _settled()
        return shown, result
    except KeyboardInterrupt:
        # before the change started (a started change turns Ctrl+C into InterruptedChange with its own row)
        message = "interrupted by the user before the change: nothing was changed"
        attempt = shown or Preview(identity=_audited_identity(actions, identity), action=action)
        actions.record_unchanged(attempt, "cancelled", message)
        raise Interrupted(message) from None
    except ImmError as exc:
        if getattr(exc, "audited", False) or exc.code == "not_confirmed":
            raise
        if isinstance(exc, ActionBlockedError):
            if shown is None and not _structured():
                _show_preview(exc.preview, blockers=False)
            actions.record_unchanged(exc.preview, "failure", exc.message)
            raise
        # an unknown identity, or Exchange unreachable or refusing before the change: the attempt is audited
        attempt = shown or Preview(identity=_audited_identity(actions, identity), action=action)
        actions.record_unchanged(attempt, "failure", exc.message)
        raise


def _label(preview: ActionPreview) -> str:
    address = str(preview.mailbox.get("primary_smtp") or "")
    return f"{preview.mailbox.get('display_name') or ''} <{address}>".strip()


def _audited_identity(actions: MailboxActions, identity: str) -> str:
    """The ExchangeGuid when the cache knows the identity (so the mailbox's history finds the row), else as given."""
    from imm.errors import ImmError

    try:
        return actions.db.find_mailbox(identity.strip()).identity
    except ImmError:
        return identity


def _confirm_plan(preview: ActionPreview, question: str, yes: bool, understood: bool) -> None:
    """Ask what this plan's consequences need: y/N, or the address typed (last hold, eDiscovery case hold)."""
    address = str(preview.mailbox.get("primary_smtp") or "")
    label = _label(preview)
    from imm.services.action_support import EDISCOVERY, LAST_HOLD

    typed = {LAST_HOLD, EDISCOVERY} & set(preview.consequences)
    if typed and not (yes and understood):
        if not yes:
            _confirm(question, False)
        why = (
            f"This removes the LAST hold of {label}: after a 30-day delay hold it is soft-deleted and "
            "purged 183 days after the removal (restorable with imm restore until then)"
            if preview.removes_last_hold
            else f"This removes {label} from an eDiscovery case hold"
        )
        _typed_confirm(address, why)
        return
    _confirm(question, yes)


# -------------------------------------------------------------------------------------------------- recover
def _read_password_file(path: Path) -> str:
    from imm.errors import InputError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--password-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--password-file {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    password = text.rstrip("\r\n")
    if not password:
        raise InputError(f"--password-file {path} is empty")
    if "\n" in password:
        raise InputError(f"--password-file {path} must hold the password on one line")
    return password


def _write_secret(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (never overwrite) and write ``text`` and a newline."""
    from imm.errors import InputError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"--password-out {path} exists: choose a new file (imm never overwrites one)") from None
    except OSError as exc:
        raise InputError(f"--password-out {path}: cannot create it ({exc.strerror or exc})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


@click.command()
@click.argument("identity", shell_complete=complete_identities)
@click.option("--upn", required=True, help="User principal name (and primary address) of the new user.")
@click.option("--name", help="Unique Name of the new mailbox (default: the UPN's part before @).")
@click.option("--display-name", help="Display name of the new mailbox (default: the Name).")
@click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read the new user's password from this file (one line).",
)
@click.option(
    "--password-out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Generate a password and write it to this new file (mode 0600) instead of showing it.",
)
@_what_if
@_yes
@output_options
def recover(
    identity: str,
    upn: str,
    name: str | None,
    display_name: str | None,
    password_file: Path | None,
    password_out: Path | None,
    what_if: bool,
    yes: bool,
    output: str,
    query: str | None,
) -> None:
    """Recover an inactive mailbox into a new active mailbox (New-Mailbox -InactiveMailbox).

    The inactive mailbox is consumed. Exchange creates a new user that needs a licence, replaces unlocked retention
    policies with Litigation Hold and sets Retention Hold for 30 days; imm reports these changes afterwards.
    The password is sent only encrypted and never stored: give it with --password-file, or let imm generate one
    and show it once (on a terminal) or write it to --password-out FILE (mode 0600).

    \b
    Examples:
      imm recover liam.obrien@contoso.com --upn liam.obrien@contoso.onmicrosoft.com --what-if
      imm recover liam.obrien@contoso.com --upn liam.obrien@contoso.onmicrosoft.com --password-out pw.txt --what-if
    """
    from imm.errors import InputError
    from imm.services.action_specs import RecoverSpec
    from imm.services.actions import check_password, generate_password

    name = (name or upn.split("@", 1)[0]).strip()
    RecoverSpec.of(upn, name, display_name)  # bad input fails here, before signing in
    if password_file and password_out:
        raise InputError("give either --password-file or --password-out, not both")
    generated = False
    if password_file is not None:
        password = _read_password_file(password_file)
        check_password(password)
    else:
        if password_out is None and not what_if and (_structured() or not sys.stdout.isatty()):
            # JSON/CSV output carries no password: a generated one would be lost with the recovered mailbox.
            raise InputError(
                "a generated password is shown only on a terminal: use --password-out FILE or --password-file FILE"
            )
        if password_out is not None and password_out.exists():
            raise InputError(f"--password-out {password_out} exists: choose a new file (imm never overwrites one)")
        password = generate_password()
        generated = True

    def execute(plan: ActionPreview) -> ActionResult:
        written = False
        if generated and password_out is not None:
            _write_secret(password_out, password)  # before the call: a password Exchange took is never lost
            written = True
        result = None
        try:
            result = actions.execute(plan, password=password)
        finally:
            if written and password_out is not None and (result is None or result.status != "success"):
                password_out.unlink(missing_ok=True)  # the password was never used
        return result

    with _session() as actions:
        preview, result = _act(
            actions,
            "recover",
            identity,
            preview=lambda: actions.preview_recover(identity, upn, name, display_name),
            execute=execute,
            question=lambda p: f"Recover {p.mailbox.get('primary_smtp') or p.identity} as new mailbox {upn}?",
            what_if=what_if,
            yes=yes,
        )
    if result is None:
        return
    lines: list[str] = []
    changes = result.details.get("changes") or []
    if changes:
        lines.append("What Exchange changed:")
        lines += [f"  - {c}" for c in changes]
    for reminder in result.details.get("reminders") or []:
        lines.append(f"Reminder: {reminder}")
    if result.status == "success" and generated:
        if password_out is not None:
            lines.append(f"The new user's password is in {password_out} (mode 0600); it is not stored anywhere else.")
        else:
            lines.append(f"Password for {upn} (shown once, not stored): {password}")
    _finish(result, lines, preview)


# -------------------------------------------------------------------------------------------------- restore
class _DefaultGroup(click.Group):
    """A group whose first argument, when it is not a subcommand, runs ``start`` (``imm restore ID --target T``)."""

    default_command = "start"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultGroup)
def restore() -> None:
    """Restore an inactive mailbox's content into an existing mailbox, and follow the requests.

    \b
    imm restore ID --target T        the same as: imm restore start ID --target T
    imm restore status [ID] --wait   follow the restore requests imm started
    imm restore suspend|resume|remove REQUEST   manage one of them

    \b
    Examples:
      imm restore emma.garcia@contoso.com --target olivia.delacruz@tailspintoys.com --what-if
      imm restore status
    """


@restore.command("start")
@click.argument("identity", shell_complete=complete_identities)
@click.option("--target", required=True, help="The existing (active) mailbox to copy into.")
@click.option("--archive", is_flag=True, help="Restore the inactive mailbox's archive (-SourceIsArchive).")
@click.option(
    "--target-archive/--target-primary",
    default=None,
    help="Into the target's archive (-TargetIsArchive) or primary mailbox (default: archive only with --archive).",
)
@click.option("--target-folder", help="Folder in the target to restore into (-TargetRootFolder).")
@click.option("--exclude-dumpster", is_flag=True, help="Leave the source's Recoverable Items out (-ExcludeDumpster).")
@_what_if
@_yes
@output_options
def restore_start(
    identity: str,
    target: str,
    archive: bool,
    target_archive: bool | None,
    target_folder: str | None,
    exclude_dumpster: bool,
    what_if: bool,
    yes: bool,
    output: str,
    query: str | None,
) -> None:
    """Copy an inactive mailbox into an existing mailbox (X500 address + New-MailboxRestoreRequest).

    The documented method: the source's LegacyExchangeDN is added to the target as an X500 address, then a restore
    request named imm-<guid>-<time> is created. The inactive mailbox stays as it is.

    \b
    Examples:
      imm restore start emma.garcia@contoso.com --target olivia.delacruz@tailspintoys.com --target-folder Emma --what-if
    """
    with _session() as actions:
        options: dict[str, Any] = {
            "archive": archive,
            "target_folder": target_folder,
            "target_archive": target_archive,
            "exclude_dumpster": exclude_dumpster,
        }
        preview, result = _act(
            actions,
            "restore",
            identity,
            preview=lambda: actions.preview_restore(identity, target, **options),
            execute=actions.execute,
            question=lambda p: f"Restore {p.mailbox.get('primary_smtp') or p.identity} into {target}?",
            what_if=what_if,
            yes=yes,
        )
    if result is not None:
        _finish(result, preview=preview)


def _request_command(action: str, request: str, what_if: bool, yes: bool, comment: str | None = None) -> None:
    """restore remove | suspend | resume: one request imm started, through the one plan → confirm → execute path."""
    verb = action.split("-", 1)[1]
    with _session() as actions:
        preview, result = _act(
            actions,
            action,
            request,
            preview=lambda: actions.preview_request_action(action, request, comment=comment),
            execute=actions.execute,
            question=lambda p: f"{verb.capitalize()} restore request {p.spec['request']}?",
            what_if=what_if,
            yes=yes,
        )
    if result is not None:
        _finish(result, preview=preview)


@restore.command("remove")
@click.argument("request")
@_what_if
@_yes
@output_options
def restore_remove(request: str, what_if: bool, yes: bool, output: str, query: str | None) -> None:
    """Remove a restore request imm started (Remove-MailboxRestoreRequest); a running one stops.

    REQUEST is the request's name (imm restore status lists them), Alias\\Name, RequestGuid, or the source
    mailbox when it has one request. Items already copied stay in the target.

    \b
    Examples:
      imm restore remove emma.garcia@contoso.com --what-if
    """
    _request_command("restore-remove", request, what_if, yes)


@restore.command("suspend")
@click.argument("request")
@click.option("--comment", metavar="TEXT", help="Why it is suspended (-SuspendComment).")
@_what_if
@_yes
@output_options
def restore_suspend(
    request: str, comment: str | None, what_if: bool, yes: bool, output: str, query: str | None
) -> None:
    """Suspend a restore request that has not completed (Suspend-MailboxRestoreRequest).

    \b
    Examples:
      imm restore suspend emma.garcia@contoso.com --comment "after hours" --what-if
    """
    _request_command("restore-suspend", request, what_if, yes, comment)


@restore.command("resume")
@click.argument("request")
@_what_if
@_yes
@output_options
def restore_resume(request: str, what_if: bool, yes: bool, output: str, query: str | None) -> None:
    """Resume a suspended or failed restore request (Resume-MailboxRestoreRequest).

    \b
    Examples:
      imm restore resume emma.garcia@contoso.com --what-if
    """
    _request_command("restore-resume", request, what_if, yes)


_STATUS_COLUMNS = (
    ("name", "Request"),
    ("source_smtp", "Source"),
    ("target", "Target"),
    ("status", "Status"),
    ("percent_complete", "%"),
    ("transferred", "Transferred"),
    ("data_consistency_score", "Consistency"),
    ("skipped_items", "Skipped"),
    ("x500", "X500"),
)


def _status_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from imm.domain.parsing import format_size

    out = []
    for row in rows:
        shown = dict(row)
        if row.get("estimated_bytes") is not None:
            shown["transferred"] = (
                f"{format_size(row.get('bytes_transferred') or 0)} of {format_size(row['estimated_bytes'])}"
            )
        else:
            shown["transferred"] = ""
        shown["x500"] = "removed" if row.get("x500_removed") else ("added" if row.get("x500_added") else "")
        out.append(shown)
    return out


@restore.command("status")
@click.argument("identity", required=False, shell_complete=complete_identities)
@click.option("--wait", is_flag=True, help="Follow the requests until each has completed or failed.")
@click.option(
    "--interval",
    type=click.FloatRange(0.05, 3600),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between status reads with --wait.",
)
@click.option("--timeout", type=click.FloatRange(0.1), metavar="SECONDS", help="Give up waiting after this long.")
@click.option(
    "--remove-x500", is_flag=True, help="When a request has completed, remove the X500 address imm added to the target."
)
@output_options
def restore_status(
    identity: str | None,
    wait: bool,
    interval: float,
    timeout: float | None,
    remove_x500: bool,
    output: str,
    query: str | None,
) -> None:
    """Show the restore requests imm started (all, or those of a mailbox or request name), read from Exchange.

    \b
    Examples:
      imm restore status
      imm restore status --wait --remove-x500
    """
    import time

    from imm.cli.output import Column, render
    from imm.errors import ExitStatus
    from imm.services.restore_tracking import RestoreTracker

    obj = app()
    tracked = RestoreTracker(obj.database())
    if not tracked.find() and identity is None:
        if _structured():
            render([], [Column(k, h) for k, h in _STATUS_COLUMNS], output, query)
        else:
            click.echo("No restore requests: start one with `imm restore ID --target T`.")
        return
    with _session() as actions:
        rows = actions.restore_status(identity)
        if wait:
            rows = _wait(actions, identity, rows, interval, timeout, time.monotonic())
        removed: list[ActionResult] = []
        if remove_x500:
            for row in rows:
                if (
                    row["status"].lower() in ("completed", "completedwithwarning")
                    and row["x500_added"]
                    and not row["x500_removed"]
                ):
                    removed.append(actions.remove_x500(row["name"], row["target_guid"]))
            if removed:
                rows = actions.restore_status(identity)
    columns = [Column(k, h) for k, h in _STATUS_COLUMNS]
    render(_status_rows(rows), columns, output, query)
    if not _structured():
        for result in removed:
            click.echo(result.message)
    failed = [r for r in rows if r["status"].lower() == "failed"] + [r for r in removed if r.status == "failed"]
    # a completed request scored below Good lost data (track-prevent-data-loss-dcs): a warning and exit 1
    doubtful = [r for r in rows if r.get("consistency_warning")]
    for row in doubtful:
        click.echo(f"Warning: restore request {row['name']}: {row['consistency_warning']}", err=True)
    if failed or doubtful:
        click.get_current_context().exit(int(ExitStatus.FAILED))


def _wait(
    actions: MailboxActions,
    identity: str | None,
    rows: list[dict[str, Any]],
    interval: float,
    timeout: float | None,
    started: float,
) -> list[dict[str, Any]]:
    """Poll until every request is final, with a Rich progress bar per request on a terminal."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from imm.errors import ImmError
    from imm.services.restore_tracking import FINAL_STATUSES

    console = Console(stderr=True)
    show = console.is_terminal and not app().quiet

    def pending(current: list[dict[str, Any]]) -> bool:
        return any(str(r["status"]).lower() not in FINAL_STATUSES for r in current)

    progress = (
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=False,
        )
        if show
        else None
    )
    tasks: dict[str, Any] = {}
    last: dict[str, str] = {}
    try:
        if progress is not None:
            progress.start()
        while True:
            for row in rows:
                key = row["name"]
                if progress is not None:
                    if key not in tasks:
                        tasks[key] = progress.add_task(key, total=100, status="")
                    progress.update(tasks[key], completed=row["percent_complete"], status=row["status"])
                elif last.get(key) != f"{row['status']}:{row['percent_complete']}":
                    last[key] = f"{row['status']}:{row['percent_complete']}"
                    click.echo(f"{key}: {row['status']} {row['percent_complete']}%", err=True)
            if not pending(rows):
                return rows
            if timeout is not None and time.monotonic() - started >= timeout:
                raise ImmError(
                    f"timed out after {timeout:g} s waiting for the restore requests; they go on in Exchange",
                    hint="follow them later with `imm restore status`",
                    code="timeout",
                )
            time.sleep(interval)
            rows = actions.restore_status(identity)
    finally:
        if progress is not None:
            progress.stop()


# ---------------------------------------------------------------------------------------------------- holds
@click.group()
def holds() -> None:
    """See the holds on an inactive mailbox, release them, or change the Litigation Hold duration.

    \b
    Examples:
      imm holds show layla.alahmad@northwindtraders.com
    """


@holds.command("show")
@click.argument("identity", shell_complete=complete_identities)
@click.option("--refresh", is_flag=True, help="Read the mailbox again from Exchange first (signs in).")
@output_options
def holds_show(identity: str, refresh: bool, output: str, query: str | None) -> None:
    """Every hold on an inactive mailbox: kind, raw value, meaning, policy, lock, expiry, what releasing it takes.

    From the cache (offline) unless --refresh.

    \b
    Examples:
      imm holds show layla.alahmad@northwindtraders.com
      imm holds show layla.alahmad@northwindtraders.com --refresh --output json --query "holds[].kind"
    """
    from imm.cli.output import Column, render, render_object

    obj = app()
    if refresh:
        with _session() as actions:
            report = actions.holds_report(identity, refresh=True)
    else:
        from imm.services.actions import MailboxActions

        report = MailboxActions(obj.database(), None, obj.audit(), obj.profile).holds_report(identity)
    if _json():
        render_object(report, "csv" if output == "csv" else "json", query)
        return
    if output == "csv":
        render(
            report["holds"],
            [Column(k, k) for k in ("kind", "raw", "meaning", "policy", "locked", "preserves", "expires", "release")],
            "csv",
        )
        return
    from imm.textsafe import terminal_safe as safe

    mailbox = report["mailbox"]
    click.secho(safe(f"{mailbox['display_name']} <{mailbox['primary_smtp']}> ({mailbox['identity']})"), bold=True)
    if not report["holds"]:
        click.echo("  No hold found.")
    for number, hold in enumerate(report["holds"], start=1):
        keeps = "" if hold["preserves"] else " (does not keep the mailbox)"
        click.secho(f"{number}. {hold['kind']}{keeps}", bold=bool(hold["preserves"]))
        lines = [("Value", hold["raw"]), ("Meaning", hold["meaning"])]
        if hold["policy"]:
            lines.append(("Policy", hold["policy"] + (" (Preservation Lock)" if hold["locked"] else "")))
        if hold["preserves"]:
            lines.append(("Runs out", f"{hold['expires']}: {hold['expiry']}"))
            lines.append(("To release", hold["release"]))
        for key, value in lines:
            click.echo(f"   {key + ':':<12}{safe(value)}")
    expires = report["holds_expire_on"]
    when = f"{expires:%Y-%m-%d}: " if expires else ""
    click.echo(f"Expiry: {when}{report['expiry_reason']}")
    if report["releasable"]:
        click.echo("Every hold has run out: a candidate for release (imm holds release ID --type all-unlocked).")
    click.echo(f"Source: {report['source']}" + ("" if refresh else " (use --refresh to read Exchange now)"))


@holds.command("release")
@click.argument("identity", shell_complete=complete_identities)
@click.option(
    "--type",
    "kind",
    required=True,
    metavar="TYPE",
    shell_complete=complete_release_types,
    help="Which hold(s) to release (the types below).",
)
@click.option(
    "--force-ediscovery",
    is_flag=True,
    help="Allow removing the mailbox from an eDiscovery case hold (asks a typed confirmation).",
)
@click.option(
    "--i-understand-last-hold",
    "understood",
    is_flag=True,
    help="With --yes: skip the typed confirmation for the last hold or a forced eDiscovery release.",
)
@_what_if
@_yes
@output_options
def holds_release(
    identity: str,
    kind: str,
    force_ediscovery: bool,
    understood: bool,
    what_if: bool,
    yes: bool,
    output: str,
    query: str | None,
) -> None:
    """Release holds on an inactive mailbox with the cmdlet each hold kind needs.

    \b
    Types:
      litigation, delay, delay-release
      label           retention label holds
      org-policy      excludes the mailbox from org-wide policies
      policy          retention policies naming the mailbox
      ediscovery      needs --force-ediscovery
      all-unlocked    every hold imm can remove, expired or not (not eDiscovery,
                      legacy In-Place or Preservation-Locked ones; was
                      'all-releasable')

    Releasing the LAST hold starts Exchange's schedule: a 30-day delay hold, then soft-deleted, purged 183 days
    after the removal (restorable with imm restore until then). That needs the mailbox's primary SMTP address
    typed, even with --yes, unless --i-understand-last-hold is also given (for scripts).

    \b
    Examples:
      imm holds release renee.nguyen@tailspintoys.com --type litigation --what-if
    """
    from imm.services.action_specs import ReleaseSpec

    kind = ReleaseSpec.of(kind, force_ediscovery).type
    with _session() as actions:
        preview, result = _act(
            actions,
            "release",
            identity,
            preview=lambda: actions.preview_release(identity, kind, force_ediscovery=force_ediscovery),
            execute=actions.execute,
            question=lambda p: f"Release the {kind} hold(s) of {_label(p)}?",
            what_if=what_if,
            yes=yes,
            understood=understood,
        )
    if result is not None:
        _finish(result, preview=preview)


@holds.command("set-duration")
@click.argument("identity", shell_complete=complete_identities)
@click.option("--days", type=click.IntRange(1, 36500), metavar="N", help="New Litigation Hold duration in days.")
@click.option("--unlimited", is_flag=True, help="Hold without limit.")
@_what_if
@_yes
@output_options
def holds_set_duration(
    identity: str, days: int | None, unlimited: bool, what_if: bool, yes: bool, output: str, query: str | None
) -> None:
    """Change how long Litigation Hold keeps an inactive mailbox's items (-LitigationHoldDuration).

    \b
    Examples:
      imm holds set-duration lukasz.rossi@fabrikam.com --days 2555 --what-if
    """
    from imm.errors import InputError

    if (days is None) == (not unlimited):
        raise InputError("give exactly one of --days N or --unlimited")
    duration = None if unlimited else days
    with _session() as actions:
        new = "Unlimited" if duration is None else f"{duration} days"
        preview, result = _act(
            actions,
            "set-duration",
            identity,
            preview=lambda: actions.preview_set_duration(identity, duration),
            execute=actions.execute,
            question=lambda p: (
                f"Set the Litigation Hold duration of {p.mailbox.get('primary_smtp') or p.identity} to {new}?"
            ),
            what_if=what_if,
            yes=yes,
        )
    if result is not None:
        _finish(result, preview=preview)
