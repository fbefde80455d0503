"""The object every command receives: configuration, and the store, audit log and sign-in built on demand."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from imm.config import Config, Profile, load_config

if TYPE_CHECKING:
    from imm.auth import Authenticator
    from imm.data.audit_logger import AuditLogger
    from imm.data.database import DatabaseManager


@dataclass
class AppContext:
    """Carries global options; heavy parts (database, MSAL) are built only when a command asks for them."""

    config_path: Path | None = None
    profile_name: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    verbose: int = 0
    quiet: bool = False
    no_input: bool = False  # --no-input
    allow_missing_config: bool = False  # the commands that create the file named by --config
    output: str = "table"
    wide: bool = False  # --wide: tables show every column in full
    no_pager: bool = False  # --no-pager
    _db: DatabaseManager | None = None

    @cached_property
    def config(self) -> Config:
        config = load_config(
            self.config_path, self.profile_name, overrides=self.overrides, allow_missing=self.allow_missing_config
        )
        from imm.logs import setup_logging

        setup_logging(config.profile.log_path, self.verbose, self.quiet)
        return config

    @property
    def profile(self) -> Profile:
        return self.config.profile

    def database(self) -> DatabaseManager:
        """The profile's database, opened and migrated."""
        if self._db is None:
            from imm.data.database import DatabaseManager

            db = DatabaseManager(self.profile.store_target, local_path=self.profile.database_path)
            db.initialize()
            self._db = db
        return self._db

    def audit(self) -> AuditLogger:
        from imm.data.audit_logger import AuditLogger
        from imm.data.audit_signing import AuditKeying

        return AuditLogger(
            self.database(), tenant=self.profile.tenant_id, keying=AuditKeying.from_profile(self.profile)
        )

    @property
    def input_allowed(self) -> bool:
        """May imm ask a person anything? Not with --no-input or IMM_NO_INPUT, nor when stdin is not a terminal."""
        import os

        if self.no_input or os.environ.get("IMM_NO_INPUT", "").strip().lower() in {"1", "true", "yes", "on"}:
            return False
        return is_interactive()

    @property
    def no_input_explicit(self) -> bool:
        import os

        return self.no_input or os.environ.get("IMM_NO_INPUT", "").strip().lower() in {"1", "true", "yes", "on"}

    def login_command(self) -> str:
        """The command that signs in to this profile, as the user would type it."""
        import shlex

        parts = ["imm"]
        if self.config_path is not None:
            parts += ["--config", shlex.quote(str(self.config_path))]
        if self.profile_name:
            parts += ["--profile", shlex.quote(self.profile_name)]
        return " ".join([*parts, "login"])

    def authenticator(self) -> Authenticator:
        """The profile's sign-in; never interactive when input is off (a command then fails with exit 3)."""
        from imm.auth import Authenticator

        return Authenticator.from_profile(
            self.profile, interactive=self.input_allowed, login_command=self.login_command()
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def app(ctx: click.Context | None = None) -> AppContext:
    """The AppContext of the running command."""
    ctx = ctx or click.get_current_context()
    obj = ctx.find_object(AppContext)
    if obj is None:  # a command invoked on its own (tests of a sub-group)
        obj = ctx.ensure_object(AppContext)
    return obj


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def is_interactive() -> bool:
    return sys.stdin.isatty()


def confirm(question: str, *, yes: bool = False) -> None:
    """Ask a yes/no question on stderr (default no); anything but yes raises DeclinedError (exit 6). With --yes
    nothing is asked; with --no-input (IMM_NO_INPUT) nothing can be, so it is declined and says to pass --yes."""
    from imm.errors import DeclinedError

    if yes:
        return
    if app().no_input_explicit:
        raise DeclinedError("--no-input and no --yes", hint="check the preview (or --what-if), then pass --yes")
    try:
        ok = click.confirm(question, default=False, err=True)
    except click.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl+C at the question, not a closed stdin
            raise KeyboardInterrupt from None
        ok = False
    if not ok:
        raise DeclinedError()
