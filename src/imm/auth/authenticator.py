"""``Authenticator``: sign-in to Entra ID with msal — silent first, then the device code flow — or app-only with
a certificate, a managed identity (msal's ``ManagedIdentityClient``: Azure Automation, App Service, Azure VMs)
or workload identity federation (a federated token file, as GitHub Actions and Kubernetes provide, presented as
the client assertion); tokens persist in the token cache (``imm.auth.token_cache``).

With ``interactive=False`` (``--no-input``, or stdin not a terminal) the device code flow is never started: a
command that has no usable token fails at once (exit 3) naming the command that signs in.

Constructing an Authenticator does no network I/O and creates no file: the msal application (whose constructor
fetches the OIDC discovery document) and the token cache are built on first use. Every method is thread-safe
(the Exchange client asks for tokens from worker threads). No token, assertion or msal result is ever logged.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from imm.auth.errors import LOGIN_HINT, AuthenticationError, from_exception, from_result

if TYPE_CHECKING:
    from imm.auth.certificate import Certificate
    from imm.config import Profile

log = logging.getLogger("imm.auth")

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
EXCHANGE_SCOPES = ["https://outlook.office365.com/.default"]
COMPLIANCE_SCOPES = ["https://ps.compliance.protection.outlook.com/.default"]
CACHE_FILE_NAME = "token_cache.json"
# Entra ID hosts where msal's instance discovery (alias lookup) is meaningful; any other host is an IdP msal
# must not validate against login.microsoftonline.com (a proxy, the simulator).
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login.partner.microsoftonline.cn",
        "login.chinacloudapi.cn",
    }
)
_CLEAR_ON = {"invalid_grant"}  # a dead refresh token: msal keeps it, so imm removes the account (msal.md §5)
T = TypeVar("T")


class _MsalEventFilter(logging.Filter):
    """msal's token cache logs each token event at DEBUG with secrets masked, except the device flow's ``code``
    (a copy of the device code); mask it before any handler sees the record."""

    _CODE = re.compile(r'("code"\s*:\s*)"[^"]*"')

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handlers' SecretFilter
            return True
        record.msg, record.args = self._CODE.sub(r'\1"********"', message), None
        return True


def _mask_msal_events() -> None:
    logger = logging.getLogger("msal.token_cache")
    if not any(isinstance(f, _MsalEventFilter) for f in logger.filters):
        logger.addFilter(_MsalEventFilter())


def _default_prompt(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _http_session(ca_bundle: Path | None, timeout: float) -> Any:
    """A requests Session for msal with a timeout on every request (msal applies none to a session it did not
    build). With ``ca_bundle`` it trusts exactly that file, which REQUESTS_CA_BUNDLE cannot override (msal.md
    pitfall 1: ``trust_env`` off, proxies still taken from the environment); without it, requests' defaults."""
    import requests
    from requests.adapters import HTTPAdapter
    from requests.utils import get_environ_proxies

    class _Session(requests.Session):
        def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout)
            if not self.trust_env and not kwargs.get("proxies"):
                kwargs["proxies"] = get_environ_proxies(str(url), no_proxy=None)
            return super().request(method, url, *args, **kwargs)

    session = _Session()
    if ca_bundle is not None:
        import ssl

        from imm.errors import ConfigError

        try:  # a missing or unreadable file: name the setting (requests would raise a bare OSError per request)
            ssl.create_default_context(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"ca_bundle {ca_bundle}: cannot be used ({exc.__class__.__name__}: {exc})") from None
        session.trust_env = False
        session.verify = str(ca_bundle)
    session.mount("https://", HTTPAdapter(max_retries=1))
    return session


class Authenticator:
    """Signs in to one tenant and hands out access tokens.

    ``cache_path`` is a folder (the file is ``<folder>/token_cache.json``) or the cache file itself;
    ``private_cache_folder`` says the folder is imm's alone (made 0700 even when it exists). ``prompt`` shows the
    device code message (default: stderr); ``warn`` shows one-line token cache warnings (default: logging).
    """

    def __init__(
        self,
        client_id: str,
        tenant_id: str,
        cache_path: Path,
        *,
        authority_host: str = DEFAULT_AUTHORITY_HOST,
        scopes: Sequence[str] | None = None,
        ca_bundle: Path | None = None,
        device_code_timeout: float = 300,
        certificate_path: Path | None = None,
        certificate_password: str | None = None,
        certificate_password_env: str = "IMM_CERTIFICATE_PASSWORD",
        prompt: Callable[[str], None] | None = None,
        private_cache_folder: bool = False,
        request_timeout: float = 30.0,
        warn: Callable[[str], None] | None = None,
        method: str | None = None,
        managed_identity_client_id: str | None = None,
        federated_token_file: Path | None = None,
        interactive: bool = True,
        login_command: str = "imm login",
    ) -> None:
        self.client_id = client_id
        # device_code | certificate | managed_identity | workload_identity
        self.method = method or ("certificate" if certificate_path is not None else "device_code")
        self.managed_identity_client_id = managed_identity_client_id
        self.federated_token_file = federated_token_file
        self.interactive = interactive
        self.login_command = login_command
        self._managed: Any = None  # msal.ManagedIdentityClient
        self._managed_expires: datetime | None = None
        self.tenant_id = tenant_id
        self.authority_host = authority_host.rstrip("/")
        self.scopes = list(scopes or EXCHANGE_SCOPES)
        self.ca_bundle = ca_bundle
        self.device_code_timeout = device_code_timeout
        self.certificate_path = certificate_path
        self._certificate_password = certificate_password
        self._certificate_password_env = certificate_password_env
        self.prompt = prompt or _default_prompt
        self.request_timeout = request_timeout
        self._private_cache_folder = private_cache_folder
        self._warn = warn  # one-line warnings about the token cache (default: the imm.auth logger)
        path = Path(cache_path)
        self._cache_location = path / CACHE_FILE_NAME if path.is_dir() else path
        self._lock = threading.RLock()
        self._cancel = threading.Event()
        self._app: Any = None
        self._opened: Any = None  # token_cache.OpenedCache
        self._http_cache: dict[str, Any] | None = None
        self._certificate: Certificate | None = None
        self._revoked: AuthenticationError | None = None  # why this process removed the account, if it did
        # cache | refresh | device_code | certificate | managed_identity | workload_identity
        self.last_token_source: str | None = None

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        *,
        prompt: Callable[[str], None] | None = None,
        interactive: bool = True,
        login_command: str = "imm login",
    ) -> Authenticator:
        """The profile's sign-in: endpoints, CA bundle, cache file, timeout, and the app-only credential if set."""
        import os

        password = os.environ.get(profile.certificate_password_env) if profile.certificate_path else None
        token_file = profile.federated_token_file
        if token_file is None and os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):
            token_file = Path(os.environ["AZURE_FEDERATED_TOKEN_FILE"])
        return cls(
            profile.client_id,
            profile.tenant_id,
            profile.token_cache,
            authority_host=profile.authority_host,
            scopes=profile.exchange_scopes,
            ca_bundle=profile.ca_bundle,
            device_code_timeout=profile.device_code_timeout,
            certificate_path=profile.certificate_path,
            certificate_password=password,
            certificate_password_env=profile.certificate_password_env,
            prompt=prompt,
            private_cache_folder=profile.token_cache_path is None,  # the default folder is imm's alone
            method=profile.sign_in_method,
            managed_identity_client_id=profile.managed_identity_client_id,
            federated_token_file=token_file,
            interactive=interactive,
            login_command=login_command,
        )

    # ----- properties -----

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def app_only(self) -> bool:
        return self.method != "device_code"

    @property
    def environment(self) -> str:
        """The cache's "environment" for this authority: the host name without the port (msal.md §3)."""
        return (urlsplit(self.authority_host).hostname or "").lower()

    @property
    def cache_location(self) -> Path:
        return self._cache_location

    @property
    def cache_encrypted(self) -> bool:
        return bool(self._token_cache_opened().encrypted)

    # ----- building msal's parts lazily -----

    def _token_cache_opened(self) -> Any:
        with self._lock:
            if self._opened is None:
                from imm.auth.token_cache import open_token_cache

                self._opened = open_token_cache(
                    self._cache_location, private_folder=self._private_cache_folder, warn=self._warn
                )
            return self._opened

    def _token_cache(self) -> Any:
        return self._token_cache_opened().cache

    @property
    def _http_cache_path(self) -> Path:
        return self._cache_location.with_name(self._cache_location.name + ".http.json")

    def certificate(self) -> Certificate:
        """The app-only certificate, loaded and checked (no network)."""
        with self._lock:
            if self._certificate is None:
                if self.certificate_path is None:
                    raise AuthenticationError("certificate_error", "No certificate is configured for this profile.")
                from imm.auth.certificate import load_certificate

                self._certificate = load_certificate(
                    self.certificate_path, self._certificate_password, self._certificate_password_env
                )
            return self._certificate

    def _msal_app(self) -> Any:
        with self._lock:
            if self._app is not None:
                return self._app
            import msal

            from imm.auth.token_cache import load_http_cache, save_http_cache

            _mask_msal_events()

            if urlsplit(self.authority_host).scheme != "https":
                raise AuthenticationError(
                    "invalid_authority",
                    f"The sign-in authority '{self.authority_host}' is not an https URL.",
                    hint="set authority_host in the profile to an https URL",
                )
            cache = self._token_cache()
            self._http_cache = load_http_cache(self._http_cache_path)
            options: dict[str, Any] = {
                "authority": self.authority,
                "token_cache": cache,
                "http_client": _http_session(self.ca_bundle, self.request_timeout),
                "http_cache": self._http_cache,
                "instance_discovery": self.environment in MICROSOFT_AUTHORITY_HOSTS,
            }
            if self.method == "workload_identity":
                credential: Any = {"client_assertion": self._federated_assertion}  # read again on every grant
                factory: Any = lambda: msal.ConfidentialClientApplication(  # noqa: E731
                    self.client_id, client_credential=credential, **options
                )
            elif self.app_only:
                credential = self.certificate().client_credential
                factory = lambda: msal.ConfidentialClientApplication(  # noqa: E731
                    self.client_id, client_credential=credential, **options
                )
            else:
                factory = lambda: msal.PublicClientApplication(self.client_id, **options)  # noqa: E731
            self._app = self._call(factory)
            save_http_cache(self._http_cache_path, self._http_cache)
            return self._app

    def _federated_assertion(self) -> str:
        """The federated token file's JWT, read on each grant (Kubernetes rotates the file; GitHub writes it once)."""
        path = self.federated_token_file
        if path is None:
            raise AuthenticationError(
                "federated_token_missing",
                "Workload identity sign-in needs a federated token file and none is set.",
                hint="set federated_token_file in the profile, or AZURE_FEDERATED_TOKEN_FILE",
            )
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthenticationError(
                "federated_token_missing",
                f"The federated token file {path} cannot be read ({exc.__class__.__name__}).",
                hint="check federated_token_file in the profile (or AZURE_FEDERATED_TOKEN_FILE)",
            ) from None
        if token.count(".") != 2:
            raise AuthenticationError(
                "federated_token_invalid",
                f"The federated token file {path} does not hold a JWT.",
                hint="the file should hold the token your CI or cluster issues for api://AzureADTokenExchange",
            )
        return token

    def _managed_identity_token(self, scopes: list[str]) -> str:
        """A token from the platform's managed identity endpoint (IDENTITY_ENDPOINT/IDENTITY_HEADER in Azure
        Automation and App Service, the instance metadata service on an Azure VM), as msal finds it."""
        import msal

        with self._lock:
            if self._managed is None:
                identity: Any = (
                    msal.UserAssignedManagedIdentity(client_id=self.managed_identity_client_id)
                    if self.managed_identity_client_id
                    else msal.SystemAssignedManagedIdentity()
                )
                self._managed = self._call(
                    lambda: msal.ManagedIdentityClient(
                        identity,
                        http_client=_http_session(self.ca_bundle, self.request_timeout),
                        token_cache=msal.TokenCache(),
                    )
                )
            # a managed identity asks for a resource, not a scope: https://outlook.office365.com/.default -> …com
            resource = scopes[0].removesuffix("/.default")
            result = self._call(lambda: self._managed.acquire_token_for_client(resource=resource))
            if "access_token" in result:
                self.last_token_source = "cache" if result.get("token_source") == "cache" else "managed_identity"
                self._managed_expires = datetime.fromtimestamp(time.time() + int(result.get("expires_in", 0)), UTC)
                return str(result["access_token"])
            raise from_result(result, client_id=self.client_id, tenant_id=self.tenant_id, authority=self.authority)

    def _call(self, fn: Callable[[], T]) -> T:
        """Run an msal call, turning network, TLS and service failures into AuthenticationError."""
        try:
            return fn()
        except AuthenticationError:
            raise
        except Exception as exc:
            mapped = from_exception(exc, authority=self.authority, tenant_id=self.tenant_id)
            if mapped is None:
                raise
            log.debug("sign-in call failed: %s: %s", type(exc).__name__, mapped.message)
            raise mapped from None

    # ----- the cache, read without network -----

    def _accounts(self) -> list[dict[str, Any]]:
        import msal

        entries = list(
            self._token_cache().search(msal.TokenCache.CredentialType.ACCOUNT, query={"environment": self.environment})
        )
        # the profile's tenant first when it is a GUID (the cache realm), then the rest
        return sorted(entries, key=lambda e: str(e.get("realm", "")).lower() != self.tenant_id.lower())

    def account(self) -> dict[str, Any] | None:
        """Who is signed in, from the cache (no network): username, tenant_id, home_account_id, object_id (the
        ``oid`` claim); None if nobody.

        For app-only sign-in: the application (``username`` None, ``kind`` "app").
        """
        with self._lock:
            if self.app_only:
                client = self.client_id
                if self.method == "managed_identity":
                    client = self.managed_identity_client_id or "system-assigned managed identity"
                return {
                    "kind": "app",
                    "username": None,
                    "client_id": client,
                    "tenant_id": self.tenant_id,
                    "home_account_id": None,
                }
            accounts = self._accounts()
            if not accounts:
                return None
            entry = accounts[0]
            home = str(entry.get("home_account_id") or "")
            tenant = home.split(".", 1)[1] if "." in home else str(entry.get("realm") or self.tenant_id)
            return {
                "kind": "user",
                "username": entry.get("username") or None,
                "client_id": self.client_id,
                "tenant_id": tenant,
                "home_account_id": home or None,
                # the user's object id in Entra ID: msal keeps the ID token's `oid` claim as local_account_id
                # (msal's TokenCache, "local_account_id": id_token_claims.get("oid", ...)); never a typed name
                "object_id": entry.get("local_account_id") or None,
            }

    def token_expires_on(self, scopes: Sequence[str] | None = None) -> datetime | None:
        """When the cached access token for ``scopes`` expires (UTC), from the cache; None if there is none."""
        import msal

        if self.method == "managed_identity":
            return self._managed_expires
        with self._lock:
            query: dict[str, Any] = {"client_id": self.client_id, "environment": self.environment}
            if self.app_only:
                query["home_account_id"] = None
            else:
                account = self.account()
                if account is None:
                    return None
                query["home_account_id"] = account["home_account_id"]
            tokens = list(
                self._token_cache().search(
                    msal.TokenCache.CredentialType.ACCESS_TOKEN, target=list(scopes or self.scopes), query=query
                )
            )
            if not tokens:
                return None
            return datetime.fromtimestamp(max(int(t["expires_on"]) for t in tokens), UTC)

    # ----- getting tokens -----

    def get_token_silent(
        self, scopes: Sequence[str] | None = None, force_refresh: bool = False, claims_challenge: str | None = None
    ) -> str | None:
        """A token without asking anyone: from the cache, or refreshed with the refresh token; None if there is no
        saved sign-in. A revoked refresh token (``invalid_grant``) removes that account from the cache and raises
        AuthenticationError("invalid_grant"). ``claims_challenge`` (the JSON of a 401's ``claims``, e.g. a
        conditional-access authentication context) goes to msal, which asks Entra for a token that satisfies it."""
        if self.app_only:
            return self._client_credentials(scopes, force_refresh, claims_challenge)
        wanted = list(scopes or self.scopes)
        with self._lock:
            if not self._accounts():
                return None
            app = self._msal_app()
            accounts = self._call(app.get_accounts)
            if not accounts:
                return None
            account = next((a for a in accounts if str(a.get("realm", "")).lower() == self.tenant_id.lower()), None)
            account = account or accounts[0]
            result = self._call(
                lambda: app.acquire_token_silent_with_error(
                    wanted, account=account, force_refresh=force_refresh, claims_challenge=claims_challenge
                )
            )
            self._save_http_cache()
            if not result:
                return None
            if "access_token" in result:
                self.last_token_source = "cache" if result.get("token_source") == "cache" else "refresh"
                return str(result["access_token"])
            error = from_result(result, client_id=self.client_id, tenant_id=self.tenant_id, authority=self.authority)
            if error.error_code in _CLEAR_ON:
                app.remove_account(account)
                log.info("removed the account %s from the token cache after %s", account.get("username"), error.code)
                error = AuthenticationError(
                    error.error_code,
                    f"The saved sign-in for {account.get('username') or 'this account'} is no longer valid "
                    "(revoked or expired); it was removed from the token cache.",
                    error.details,
                    hint=LOGIN_HINT,
                )
                self._revoked = error
            raise error

    def get_token(
        self, scopes: Sequence[str] | None = None, force_refresh: bool = False, claims_challenge: str | None = None
    ) -> str:
        """A token for ``scopes`` without interaction (the Exchange client's token provider; ``force_refresh``
        after a 401, ``claims_challenge`` after a 401 carrying one). Raises AuthenticationError("login_required")
        when nobody is signed in."""
        token = self.get_token_silent(scopes, force_refresh=force_refresh, claims_challenge=claims_challenge)
        if token is None and self._revoked is not None:  # another thread already found the sign-in revoked
            raise self._revoked
        if token is None:
            raise AuthenticationError(
                "login_required",
                f"Not signed in to tenant '{self.tenant_id}'.",
                hint="run 'imm login'",
            )
        return token

    def authenticate(self, scopes: Sequence[str] | None = None, *, force: bool = False) -> str:
        """Sign in: silently when the cache allows, else with the device code flow (or the certificate)."""
        if self.app_only:
            return self._client_credentials(scopes, force_refresh=force)
        if not force:
            try:
                token = self.get_token_silent(scopes)
            except AuthenticationError as exc:
                if exc.error_code not in _CLEAR_ON | {"interaction_required", "login_required", "consent_required"}:
                    raise
                self.prompt(f"{exc.message} Sign in again.")
                token = None
            if token is not None:
                return token
        if not self.interactive:
            raise AuthenticationError(
                "login_required",
                f"Not signed in to tenant '{self.tenant_id}', and imm does not start an interactive sign-in without "
                "a terminal (--no-input, or stdin is not a terminal).",
                hint=f"sign in first with '{self.login_command}' in a terminal, or set auth_method to certificate, "
                "managed_identity or workload_identity for unattended runs",
            )
        token = self._device_code_flow(scopes)
        self._revoked = None  # signed in again
        return token

    def is_authenticated(self) -> bool:
        """True when a token can be had without asking anyone (may refresh it over the network)."""
        try:
            return self.get_token_silent() is not None
        except AuthenticationError:
            return False

    def cancel(self) -> None:
        """Stop a device code flow waiting in another thread (it raises AuthenticationError("user_cancelled"))."""
        self._cancel.set()

    def _device_code_flow(self, scopes: Sequence[str] | None = None) -> str:
        """Show the device code message exactly as msal gives it and wait (at most ``device_code_timeout``)."""
        wanted = list(scopes or self.scopes)
        with self._lock:
            app = self._msal_app()
            self._cancel.clear()
            try:
                flow = self._call(lambda: app.initiate_device_flow(scopes=wanted))
                if "user_code" not in flow:  # an error dict (msal.md §6)
                    raise from_result(
                        flow, client_id=self.client_id, tenant_id=self.tenant_id, authority=self.authority
                    )
                flow["expires_at"] = min(float(flow["expires_at"]), time.time() + float(self.device_code_timeout))
                self.prompt(str(flow["message"]))
                result = self._call(
                    lambda: app.acquire_token_by_device_flow(
                        flow, exit_condition=lambda f: self._cancel.is_set() or f["expires_at"] < time.time()
                    )
                )
            except KeyboardInterrupt:
                raise AuthenticationError(
                    "user_cancelled", "Sign-in cancelled.", hint="run 'imm login' to try again"
                ) from None
            if "access_token" in result:
                self.last_token_source = "device_code"
                return str(result["access_token"])
            if result.get("error") in {"authorization_pending", "slow_down"}:
                if self._cancel.is_set():
                    raise AuthenticationError(
                        "user_cancelled", "Sign-in cancelled.", hint="run 'imm login' to try again"
                    )
                raise AuthenticationError(
                    "timeout",
                    f"The sign-in code was not used within {self._seconds(self.device_code_timeout)}.",
                    hint="run 'imm login' again and enter the code on the page it names",
                )
            raise from_result(result, client_id=self.client_id, tenant_id=self.tenant_id, authority=self.authority)

    @staticmethod
    def _seconds(value: float) -> str:
        value = float(value)
        if value >= 60 and value % 60 == 0:
            minutes = int(value // 60)
            return f"{minutes} minute{'s' if minutes != 1 else ''}"
        return f"{value:g} seconds"

    def _client_credentials(
        self, scopes: Sequence[str] | None, force_refresh: bool = False, claims_challenge: str | None = None
    ) -> str:
        """App-only: a token for the app from the cache, or a new one signed for with the certificate."""
        wanted = list(scopes or self.scopes)
        if self.tenant_id.lower() in {"common", "organizations", "consumers"}:
            raise AuthenticationError(
                "invalid_tenant",
                f"App-only sign-in needs a specific tenant, not '{self.tenant_id}'.",
                hint="set tenant_id in the profile (or pass --tenant) to the tenant GUID or name.onmicrosoft.com",
            )
        if self.method == "managed_identity":
            return self._managed_identity_token(wanted)
        with self._lock:
            app = self._msal_app()
            if force_refresh:
                app.remove_tokens_for_client()
            result = self._call(lambda: app.acquire_token_for_client(wanted, claims_challenge=claims_challenge))
            self._save_http_cache()
            if "access_token" in result:
                fresh = "workload_identity" if self.method == "workload_identity" else "certificate"
                self.last_token_source = "cache" if result.get("token_source") == "cache" else fresh
                return str(result["access_token"])
            raise from_result(result, client_id=self.client_id, tenant_id=self.tenant_id, authority=self.authority)

    def _save_http_cache(self) -> None:
        if self._http_cache is not None:
            from imm.auth.token_cache import save_http_cache

            save_http_cache(self._http_cache_path, self._http_cache)

    # ----- signing out -----

    def logout(self) -> list[str]:
        """Remove every account and token of this authority from the cache (no network); returns who was removed
        (usernames; ``app:<client id>`` for app-only tokens)."""
        import msal

        kinds = msal.TokenCache.CredentialType
        with self._lock:
            cache = self._token_cache()
            removed = [str(a.get("username") or a.get("home_account_id")) for a in self._accounts()]
            app_tokens = list(
                cache.search(
                    kinds.ACCESS_TOKEN,
                    query={"environment": self.environment, "client_id": self.client_id, "home_account_id": None},
                )
            )
            if app_tokens:
                removed.append(f"app:{self.client_id}")
            for kind in (kinds.ACCESS_TOKEN, kinds.REFRESH_TOKEN, kinds.ID_TOKEN, kinds.ACCOUNT):
                for entry in list(cache.search(kind, query={"environment": self.environment})):
                    cache.modify(kind, entry)
            self.last_token_source = None
            return removed


__all__ = ["COMPLIANCE_SCOPES", "EXCHANGE_SCOPES", "AuthenticationError", "Authenticator"]
