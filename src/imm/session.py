"""SessionManager: sign-in plus the Exchange Online and Security & Compliance connections, audited (seed Task 3).

::

    with SessionManager(config, db, authenticator) as session:
        mailboxes = session.connection.get_inactive_mailboxes()
    # both clients closed, DISCONNECT audited

``start_session`` signs in silently when a valid token (or refresh token) is cached and runs the device code flow
otherwise (``Authenticator.authenticate``); app-only profiles (a certificate) sign in without a person. CONNECT and
DISCONNECT are audit rows; a failed or cancelled sign-in is a CONNECT row with result ``failure``/``cancelled`` and
the error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from imm.config import Config, Profile
from imm.data.audit_logger import AuditLogger, AuditResult, OperationType, error_text, is_cancellation
from imm.errors import ImmError, SignInError
from imm.exchange.throttle import AdaptiveLimiter

if TYPE_CHECKING:
    from imm.data.database import DatabaseManager
    from imm.exchange.cmdlets import Backend, ExchangeOperations

# X-AnchorMailbox for app-only sign-in, as public clients of the admin API send it (exo-rest.md §2; the module's
# own value lives in its DLL: unconfirmed). Delegated sign-in anchors on the signed-in user: UPN:<user>.
log = logging.getLogger("imm.session")

APP_ONLY_ANCHOR_MAILBOX = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"


class AuthenticatorLike(Protocol):
    """What the session needs from ``imm.auth.Authenticator``."""

    def authenticate(self, scopes: list[str] | None = None) -> str: ...

    def get_token(
        self, scopes: list[str] | None = None, force_refresh: bool = False, claims_challenge: str | None = None
    ) -> str: ...

    def account(self) -> dict[str, Any] | None: ...

    def token_expires_on(self, scopes: list[str] | None = None) -> datetime | None: ...


class Closeable(Protocol):
    def close(self) -> None: ...


def anchor_mailbox(profile: Profile, username: str | None, tenant_guid: str | None = None) -> str | None:
    """``UPN:<user>`` for delegated sign-in, ``APP:SystemMailbox{…}@<tenant GUID>`` for app-only (a certificate, a
    managed identity, workload identity federation). The GUID is the token's ``tid``, as CIPP-API
    (``New-ExoRequest.ps1``: ``APP:SystemMailbox{…}@$($tenant.customerId)``) and DrollRobot/azure-auth
    (``invoke_command.py``: ``tenant_id_from_token``) send it; the configured tenant only when the token has none."""
    if profile.app_only:
        return f"APP:{APP_ONLY_ANCHOR_MAILBOX}@{tenant_guid or profile.tenant_id}"
    return f"UPN:{username}" if username else None


def token_claim(token: str, name: str) -> str | None:
    """One claim of a JWT access token (read, not verified: the token came from Entra ID over TLS)."""
    import base64
    import binascii
    import json

    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    value = claims.get(name) if isinstance(claims, dict) else None
    return str(value) if value else None


def token_tenant(token: str) -> str | None:
    """The ``tid`` claim of a JWT access token (only to address the tenant)."""
    return token_claim(token, "tid")


class SessionManager:
    """Owns one signed-in session: the authenticator's tokens and the two Exchange clients built on them.

    ``config`` is the loaded ``Config`` (or a ``Profile``). Clients come from ``imm.exchange.create_backend`` (REST
    ``ExchangeClient`` or PowerShell, as the profile says), one per endpoint; ``connection`` is
    ``imm.exchange.cmdlets.ExchangeOperations`` over both.
    """

    def __init__(
        self,
        config: Config | Profile,
        db: DatabaseManager,
        authenticator: AuthenticatorLike,
    ) -> None:
        self.config = config
        self.profile: Profile = config.profile if isinstance(config, Config) else config
        self.db = db
        self.authenticator = authenticator
        self._connection: ExchangeOperations | None = None
        self._clients: list[Closeable] = []
        self._user: str | None = None
        self._object_id: str | None = None
        self._tenant: str | None = None
        self._method: str | None = None
        self._started_at: float | None = None

    # ----- state -----

    @property
    def is_active(self) -> bool:
        return self._connection is not None

    @property
    def connection(self) -> ExchangeOperations:
        """The ``ExchangeOperations`` (typed cmdlets on both endpoints) of the running session."""
        if self._connection is None:
            raise SignInError("no Exchange session is open", hint="start the session first (imm login)")
        return self._connection

    @property
    def user(self) -> str | None:
        return self._user

    @property
    def object_id(self) -> str | None:
        """The signed-in identity's object id in Entra ID (the ``oid`` claim): the user's, or for app-only sign-in
        the service principal's. What four-eyes approval compares, never a typed or display name."""
        return self._object_id

    @property
    def tenant(self) -> str:
        return self._tenant or self.profile.tenant_id

    @property
    def audit(self) -> AuditLogger:
        """An audit logger that records the signed-in user and tenant (for the services this session serves)."""
        from imm.data.audit_signing import AuditKeying

        return AuditLogger(self.db, tenant=self.tenant, user=self._user, keying=AuditKeying.from_profile(self.profile))

    def get_session_info(self) -> dict[str, Any]:
        """``connected``, ``tenant``, ``user``, ``token_expires`` (UTC datetime or None), plus profile and method."""
        expires: datetime | None = None
        if self.is_active:
            try:
                expires = self.authenticator.token_expires_on(self.profile.exchange_scopes)
            except SignInError:
                expires = None
        return {
            "connected": self.is_active,
            "tenant": self.tenant,
            "user": self._user,
            "token_expires": expires,
            "profile": self.profile.name,
            "sign_in": self._method,
        }

    # ----- lifecycle -----

    def start_session(self) -> None:
        """Sign in (silently if possible, else device code) and open both Exchange clients. Audited."""
        if self.is_active:
            return
        profile = self.profile
        scopes = profile.exchange_scopes
        details: dict[str, Any] = {"profile": profile.name, "exchange_url": profile.exchange_url}
        try:
            self._method = self._sign_in(scopes)
            account = self.authenticator.account() or {}
            self._user = account.get("username") or None
            if account.get("kind") == "app" and account.get("client_id"):
                self._user = f"app:{account['client_id']}"  # app-only: the application is who acts
            self._tenant = account.get("tenant_id") or profile.tenant_id
            self._object_id = account.get("object_id") or None
            tenant_guid = None
            if profile.app_only:
                token = self.authenticator.get_token(scopes)
                tenant_guid = token_tenant(token)
                self._tenant = tenant_guid or self._tenant
                self._object_id = token_claim(token, "oid")  # the service principal (an app token's oid)
            anchor = anchor_mailbox(profile, account.get("username") or None, tenant_guid)
            limiter = AdaptiveLimiter(profile.concurrency)  # one tenant, one throttling budget for both endpoints
            exchange = self._build_client(
                profile, self._token_provider(profile.exchange_scopes), "exchange", anchor, limiter
            )
            self._clients.append(exchange)
            compliance = self._build_client(
                profile, self._token_provider(profile.compliance_scopes), "compliance", anchor, limiter
            )
            self._clients.append(compliance)
            connection = self._build_operations(exchange, compliance)
            expires = self.authenticator.token_expires_on(scopes)
        except BaseException as exc:
            self._close_clients()
            result = AuditResult.CANCELLED if is_cancellation(exc) else AuditResult.FAILURE
            details["sign_in"] = self._method
            if isinstance(exc, ImmError):
                details["error_code"] = exc.code
            try:
                self.audit.log_operation(OperationType.CONNECT, None, details, result, error_text(exc))
            except Exception:  # the sign-in error is what the user needs to see
                log.error("could not record the failed sign-in in the audit log", exc_info=True)
            self._user = self._method = self._object_id = None
            raise
        self._connection = connection
        self._started_at = time.monotonic()
        details.update(sign_in=self._method, anchor_mailbox=anchor, token_expires=expires)
        self.audit.log_operation(OperationType.CONNECT, None, details, AuditResult.SUCCESS)

    def end_session(self) -> None:
        """Close both clients and record DISCONNECT. Safe to call more than once."""
        if not self.is_active:
            return
        duration = time.monotonic() - (self._started_at or time.monotonic())
        errors = self._close_clients()
        details: dict[str, Any] = {"profile": self.profile.name, "duration_seconds": round(duration, 3)}
        if errors:
            details["close_errors"] = errors
        try:
            self.audit.log_operation(OperationType.DISCONNECT, None, details, AuditResult.SUCCESS)
        finally:
            self._connection = None
            self._started_at = None

    def __enter__(self) -> SessionManager:
        self.start_session()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.end_session()
            return
        try:
            self.end_session()
        except Exception:  # the block's own error matters more than a failed DISCONNECT row
            log.error("could not end the session cleanly", exc_info=True)

    # ----- parts -----

    def _sign_in(self, scopes: list[str]) -> str:
        """Sign in; returns how: 'cache', 'refresh', 'device_code' or 'certificate' (the authenticator's word)."""
        self.authenticator.authenticate(scopes)
        source = getattr(self.authenticator, "last_token_source", None)
        if source:
            return str(source)
        return self.profile.sign_in_method if self.profile.app_only else "silent_or_device_code"

    def _token_provider(self, scopes: list[str]) -> Callable[[bool], str]:
        authenticator = self.authenticator

        def provide(force_refresh: bool = False, claims: str | None = None) -> str:
            return authenticator.get_token(scopes, force_refresh=force_refresh, claims_challenge=claims)

        return provide

    def _build_client(
        self,
        profile: Profile,
        provider: Callable[[bool], str],
        endpoint: str,
        anchor: str | None,
        limiter: AdaptiveLimiter,
    ) -> Backend:
        from imm.exchange import create_backend

        # profile.backend picks REST (ExchangeClient, the default) or PowerShell. The tenant is the signed-in
        # account's, so a profile left at the authority default ("organizations") still addresses Exchange.
        return create_backend(
            profile, provider, endpoint=endpoint, anchor_mailbox=anchor, tenant=self.tenant, limiter=limiter
        )

    def _build_operations(self, exchange: Backend, compliance: Backend | None) -> ExchangeOperations:
        from imm.exchange.cmdlets import ExchangeOperations

        return ExchangeOperations(exchange, compliance)

    def _close_clients(self) -> list[str]:
        errors: list[str] = []
        while self._clients:
            client = self._clients.pop()
            try:
                client.close()
            except Exception as exc:
                errors.append(error_text(exc))
        return errors
