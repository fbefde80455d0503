"""``imm``: the top-level command group, global options, and the one place errors become exit codes."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from imm import __version__
from imm.cli.completion import COMPLETE_VAR, complete_profiles
from imm.cli.context import AppContext, app
from imm.cli.params import harden
from imm.errors import ExitStatus, ImmError

# name -> "module:attribute"; modules import only click at the top, so listing them for --help stays fast.
COMMANDS: dict[str, str] = {
    "demo": "imm.cli.demo_cmd:demo",
    "login": "imm.cli.auth_cmds:login",
    "logout": "imm.cli.auth_cmds:logout",
    "whoami": "imm.cli.auth_cmds:whoami",
    "sync": "imm.cli.sync_cmd:sync",
    "list": "imm.cli.cache_cmds:list_mailboxes",
    "search": "imm.cli.cache_cmds:search",
    "show": "imm.cli.cache_cmds:show",
    "report": "imm.cli.report_cmds:report",
    "recover": "imm.cli.action_cmds:recover",
    "restore": "imm.cli.action_cmds:restore",
    "holds": "imm.cli.action_cmds:holds",
    "bulk": "imm.cli.bulk_cmds:bulk",
    "audit": "imm.cli.audit_cmds:audit",
    "cache": "imm.cli.cache_cmds:cache",
    "store": "imm.cli.store_cmds:store",
    "config": "imm.cli.config_cmds:config",
    "profile": "imm.cli.config_cmds:profile",
    "simulator": "imm.cli.simulator_cmds:simulator",
    "completion": "imm.cli.completion:completion",
}

MAX_LINE = 1000  # characters of one error line on the terminal; longer ones are shortened (values are, at source)
log = logging.getLogger("imm")
# Until setup_logging runs (it needs the configuration, which may be what failed), records go nowhere rather than
# to Python's last-resort handler, which would print an unexpected error's traceback on the console.
log.addHandler(logging.NullHandler())


def _set(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None or value == () or (attr in {"verbose", "quiet", "no_input"} and not value):
            return
        obj = app(ctx)
        if attr == "db":
            obj.overrides["db_path"] = value
        elif attr == "verbose":
            obj.verbose = max(obj.verbose, value)
        else:
            setattr(obj, attr, value)

    return callback


def global_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--profile, --config, --db, --verbose, --quiet, --no-input: accepted by the group and by every command."""
    options = [
        click.option(
            "--profile",
            "profile_name",
            metavar="NAME",
            help="Tenant profile to use (IMM_PROFILE).",
            shell_complete=complete_profiles,
            expose_value=False,
            callback=_set("profile_name"),
        ),
        click.option(
            "--config",
            "config_path",
            metavar="PATH",
            type=click.Path(path_type=Path),
            help="Configuration file (IMM_CONFIG).",
            expose_value=False,
            callback=_set("config_path"),
        ),
        click.option(
            "--db",
            metavar="PATH",
            type=click.Path(path_type=Path),
            help="Database file (IMM_DB).",
            expose_value=False,
            callback=_set("db"),
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            help="More detail (-vv for debug).",
            expose_value=False,
            callback=_set("verbose"),
        ),
        click.option("-q", "--quiet", is_flag=True, help="Only errors.", expose_value=False, callback=_set("quiet")),
        click.option(
            "--no-input",
            is_flag=True,
            help="Never ask anything: no interactive sign-in, no prompt (IMM_NO_INPUT; also when stdin is not a "
            "terminal).",
            expose_value=False,
            callback=_set("no_input"),
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _add_global_options(command: click.Command) -> click.Command:
    if getattr(command, "_imm_global", False):
        return command
    names = {p.name for p in command.params}
    if "profile_name" not in names:
        holder = global_options(lambda: None)  # build the params on a throwaway function
        command.params.extend(getattr(holder, "__click_params__", []))
    harden(command)  # ASCII numbers with bounds, UTF-8 text: for every option of every command
    command._imm_global = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_global_options(sub)
    return command


def report_error(exc: ImmError) -> None:
    """One clear line (JSON-shaped under --output json) and the hint, on stderr.

    Messages may quote values from Exchange, files or arguments: on the terminal every line is made safe
    (:func:`imm.textsafe.terminal_safe`) and capped; the JSON form keeps the exact text, ASCII-escaped when it
    holds anything a terminal would act on.
    """
    from imm.textsafe import is_safe, shown

    obj = app()
    if obj.output in ("json", "jsonl"):
        body = {"error": {"code": exc.code, "message": exc.message, "exit_code": int(exc.exit_code)}}
        if exc.hint:
            body["error"]["hint"] = exc.hint
        blockers = getattr(exc, "blockers", None)
        if blockers:
            body["error"]["blockers"] = blockers
        line = json.dumps(body, ensure_ascii=False)
        click.echo(line if is_safe(line) else json.dumps(body), err=True)
        return
    click.secho(f"Error: {shown(exc.message, MAX_LINE)}", fg="red", err=True)
    for blocker in getattr(exc, "blockers", None) or []:
        click.echo(f"  - {shown(blocker, MAX_LINE)}", err=True)
    if exc.hint:
        click.echo(f"Hint: {shown(exc.hint, MAX_LINE)}", err=True)


def _store_failure(ctx: click.Context, exc: Exception) -> ImmError | None:
    """The StoreError for a SQLite failure (or a message SQLite could not decode), else None."""
    if "sqlite3" not in sys.modules:
        return None
    import sqlite3

    if not isinstance(exc, sqlite3.Error | UnicodeDecodeError):
        return None
    from imm.data.database import store_error

    obj = ctx.find_object(AppContext)
    db = obj._db if obj is not None else None
    path = db.display_path if db is not None else "the database"
    return store_error(exc, path)


def _json_wanted(args: list[str]) -> bool:
    """Do these words ask for JSON output (``-o json``, ``--output=jsonl``, ``-ojson``…)? Read from the raw words,
    as a usage error can come before (or instead of) the parsed option."""
    words = iter(args)
    for word in words:
        if word == "--":
            break
        if word in {"-o", "--output"}:
            value = next(words, "")
        elif word.startswith("--output="):
            value = word.split("=", 1)[1]
        elif word.startswith("-o") and not word.startswith("--"):
            value = word[2:]
        else:
            continue
        if value.lower() in {"json", "jsonl"}:
            return True
    return False


def _usage_error_as_json(exc: click.UsageError, args: list[str]) -> None:
    """Under ``-o json`` a usage error is the same JSON error object as every other error (stderr, exit 2)."""
    if not _json_wanted(args):
        return
    body: dict[str, Any] = {"code": "usage_error", "message": exc.format_message(), "exit_code": exc.exit_code}
    if exc.ctx is not None:
        body["hint"] = f"{exc.ctx.command_path} --help"
    click.echo(json.dumps({"error": body}), err=True)
    raise click.exceptions.Exit(exc.exit_code)


def _quiet_closed_pipe() -> None:
    """stdout was closed by the reader (``imm list -o csv | head -1``): that is the reader's choice, a quiet
    success. Point stdout at /dev/null so the interpreter's final flush cannot fail again (Python's docs:
    https://docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class ImmGroup(click.Group):
    """Loads commands lazily and turns every ImmError into one line and its exit code."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        words = list(args)  # parsing consumes the list
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:  # a bad global option or subcommand name
            if not extra.get("resilient_parsing"):
                _usage_error_as_json(exc, words)
            raise

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self.get_command(ctx, name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command whose module is not built yet
            if exc.name != module_name:
                raise
            return None
        command = getattr(module, attr)
        return _add_global_options(command)

    def invoke(self, ctx: click.Context) -> Any:
        words = [*ctx._protected_args, *ctx.args]
        try:
            return super().invoke(ctx)
        except ImmError as exc:
            log.debug("error", exc_info=True)
            report_error(exc)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            click.echo("\nInterrupted.", err=True)
            ctx.exit(int(ExitStatus.INTERRUPTED))
        except click.UsageError as exc:  # a command's bad option or value
            _usage_error_as_json(exc, words)
            raise
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # e.g. `imm list -o csv | head -1`: quiet success
            _quiet_closed_pipe()
            ctx.exit(0)
        except Exception as exc:  # an imm defect: one line, the traceback only on request
            if os.environ.get("IMM_RAISE_ERRORS"):
                raise
            mapped = _store_failure(ctx, exc)
            if mapped is not None:  # SQLite failed outside DatabaseManager's own methods (a damaged store)
                log.debug("store error", exc_info=True)
                report_error(mapped)
                ctx.exit(int(mapped.exit_code))
            log.error("unexpected error", exc_info=True, extra={"file_only": True})
            from imm.textsafe import shown

            click.secho(f"Error: unexpected {type(exc).__name__}: {shown(exc, MAX_LINE)}", fg="red", err=True)
            click.echo("Hint: this is a defect in imm; run with -vv for details and report it.", err=True)
            ctx.exit(int(ExitStatus.FAILED))
        finally:
            obj = ctx.find_object(AppContext)
            if obj is not None:
                obj.close()


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``imm --version``: imm's version, then what a defect report needs (Python, msal, httpx and the database
    schema this imm writes: the name of its newest migration). Imported only when asked, so listing commands
    stays light."""
    if not value or ctx.resilient_parsing:
        return
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from imm.data.migrations import MIGRATIONS

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    lines = (
        f"imm, version {__version__}",
        f"Python {platform.python_version()}",
        f"msal {installed('msal')}",
        f"httpx {installed('httpx')}",
        f"database schema {MIGRATIONS[-1].name} ({len(MIGRATIONS)} migrations)",
    )
    click.echo("\n".join(lines))
    ctx.exit(0)


@click.group(cls=ImmGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show imm's version with the Python, msal, httpx and database schema versions, and exit.",
)
@global_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """imm, the Inactive Mailbox Manager for Exchange Online.

    Inventory every inactive mailbox into a local cache, see which holds keep each one and what it costs,
    then recover, restore or release them safely, with a tamper-evident audit log.

    \b
    Try it against a simulated tenant:   imm demo
    Sign in to your tenant:              imm login
    Fetch the inventory:                 imm sync
    """
    ctx.ensure_object(AppContext)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    # NO_COLOR (https://no-color.org): no colour anywhere, the red "Error:" included; click already drops styles
    # off a terminal, and Rich honours NO_COLOR and non-terminals by itself.
    color = False if os.environ.get("NO_COLOR") else None
    try:
        cli.main(args=argv, prog_name="imm", complete_var=COMPLETE_VAR, standalone_mode=True, color=color)
    except KeyboardInterrupt:  # raised outside a command (e.g. while parsing)
        sys.exit(int(ExitStatus.INTERRUPTED))
