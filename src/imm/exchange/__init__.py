"""Exchange Online access: the REST ``InvokeCommand`` client, the PowerShell backend and their typed errors.

- :class:`ExchangeClient` (``imm.exchange.client``): REST backend (default).
- :class:`PowerShellExecutor` (``imm.exchange.powershell``): ``pwsh`` + ExchangeOnlineManagement.
- :func:`create_backend`: the backend a profile asks for (``profile.backend``: "rest" or "powershell").
- :class:`ExchangeOperations` (``imm.exchange.cmdlets``): one typed method per cmdlet imm uses.
- Errors (``imm.exchange.errors``): :class:`ExchangeError` and its subclasses.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from imm.errors import ConfigError
from imm.exchange.client import ExchangeClient, TokenProvider
from imm.exchange.encoding import SecureString
from imm.exchange.errors import (
    AccessDeniedError,
    AmbiguousIdentityError,
    AmbiguousOutcomeError,
    ConfirmationRequiredError,
    ExchangeError,
    ExoAuthError,
    ExoNotFoundError,
    InvalidParameterError,
    NonTerminatingError,
    PagingExpiredError,
    ThrottledError,
    TransientError,
    UnreadableReplyError,
)
from imm.exchange.throttle import AdaptiveLimiter, ClientStats, RetryPolicy

if TYPE_CHECKING:
    from imm.config import Profile
    from imm.exchange.cmdlets import Backend

__all__ = [
    "AccessDeniedError",
    "AdaptiveLimiter",
    "AmbiguousIdentityError",
    "AmbiguousOutcomeError",
    "ClientStats",
    "ConfirmationRequiredError",
    "ExchangeClient",
    "ExchangeError",
    "ExoAuthError",
    "ExoNotFoundError",
    "InvalidParameterError",
    "NonTerminatingError",
    "PagingExpiredError",
    "RetryPolicy",
    "SecureString",
    "ThrottledError",
    "TransientError",
    "UnreadableReplyError",
    "create_backend",
]


def create_backend(
    profile: Profile,
    token_provider: TokenProvider,
    endpoint: str = "exchange",
    anchor_mailbox: str | None = None,
    **options: Any,
) -> Backend:
    """The backend ``profile.backend`` names: "rest" (ExchangeClient) or "powershell" (PowerShellExecutor, with
    ``pwsh`` from ``IMM_PWSH`` or the PATH). ``tenant`` (default: the profile's tenant_id) and, for REST,
    ``limiter`` (an AdaptiveLimiter shared by a session's clients) are among the ``options``. Both satisfy the
    :class:`~imm.exchange.cmdlets.Backend` protocol (mypy checks this return type)."""
    backend = (profile.backend or "rest").strip().lower()
    if backend == "rest":
        return ExchangeClient.from_profile(
            profile, token_provider, endpoint=endpoint, anchor_mailbox=anchor_mailbox, **options
        )
    if backend == "powershell":
        from imm.exchange.powershell import PowerShellExecutor

        options.pop("limiter", None)  # one pwsh process runs one command at a time
        return PowerShellExecutor(
            os.environ.get("IMM_PWSH") or "pwsh",
            token_provider,
            options.pop("tenant", None) or profile.tenant_id,
            profile.request_timeout,
            endpoint=endpoint,
            **options,
        )
    raise ConfigError(f'unknown backend \'{profile.backend}\' (use "rest" or "powershell")')
