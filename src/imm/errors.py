"""Exit codes and the error hierarchy that the CLI turns into one clear line and an exit code.

Every layer raises a subclass of :class:`ImmError`; only ``imm.cli`` translates it for the user.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Documented exit codes (design §7)."""

    OK = 0
    FAILED = 1  # failed or partly failed
    USAGE = 2  # usage or input error
    SIGN_IN = 3  # sign-in needed or failed
    NOT_FOUND = 4
    BLOCKED = 5  # blocked by a preflight check
    DECLINED = 6  # a confirmation was declined (or there was no answer): nothing was changed
    INTERRUPTED = 130


class ImmError(Exception):
    """Base of every error imm reports to the user.

    ``message`` is one line saying what went wrong; ``hint`` says what to do next.
    """

    exit_code: ExitStatus = ExitStatus.FAILED
    code: str = "failed"

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InputError(ImmError):
    """Bad input from the user: a flag, a file, a CSV row, a config key."""

    exit_code = ExitStatus.USAGE
    code = "input_error"


class ConfigError(InputError):
    """A malformed configuration file or an unknown key."""

    code = "config_error"


class NotFoundError(ImmError):
    """An identity, job or request that does not exist."""

    exit_code = ExitStatus.NOT_FOUND
    code = "not_found"


class BlockedError(ImmError):
    """A preflight check stopped a change; ``blockers`` names each reason."""

    exit_code = ExitStatus.BLOCKED
    code = "blocked"

    def __init__(self, message: str, *, blockers: list[str] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.blockers = list(blockers or [])


class SignInError(ImmError):
    """Sign-in is needed or failed (``imm.auth.AuthenticationError`` derives from it)."""

    exit_code = ExitStatus.SIGN_IN
    code = "sign_in_required"


class Interrupted(ImmError):
    """Ctrl+C before anything was changed (exit 130)."""

    exit_code = ExitStatus.INTERRUPTED
    code = "interrupted"


class InterruptedChange(ImmError):
    """Ctrl+C while a change was in flight: Exchange may or may not have made it (exit 130)."""

    exit_code = ExitStatus.INTERRUPTED
    code = "interrupted_change"


class StoreError(ImmError):
    """The local database cannot be used: corrupt, locked, read-only, or too new."""

    code = "store_error"


DECLINED_MESSAGE = "not confirmed: nothing was changed"


class DeclinedError(ImmError):
    """A confirmation was declined, left unanswered, or could not be asked (``--no-input`` without ``--yes``):
    nothing was changed (exit 6, one wording everywhere)."""

    exit_code = ExitStatus.DECLINED
    code = "not_confirmed"

    def __init__(self, reason: str | None = None, *, hint: str | None = None) -> None:
        message = f"not confirmed ({reason}): nothing was changed" if reason else DECLINED_MESSAGE
        super().__init__(message, hint=hint)
