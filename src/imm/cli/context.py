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
    output: str = "table"
    _db: DatabaseManager | None = None

    @cached_property
    def config(self) -> Config:
        config = load_config(self.config_path, self.profile_name, overrides=self.overrides)
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

            db = DatabaseManager(self.profile.database_path)
            db.initialize()
            self._db = db
        return self._db

    def audit(self) -> AuditLogger:
        from imm.data.audit_logger import AuditLogger

        return AuditLogger(self.database(), tenant=self.profile.tenant_id)

    def authenticator(self) -> Authenticator:
        from imm.auth import Authenticator

        return Authenticator.from_profile(self.profile)

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
