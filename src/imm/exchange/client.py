"""``ExchangeClient``: the REST ``InvokeCommand`` backend (exo-rest.md) over one keep-alive ``httpx.Client``.

::

    with ExchangeClient.from_profile(profile, token_provider, anchor_mailbox="UPN:admin@contoso.com") as client:
        for record in client.invoke("Get-Mailbox", {"InactiveMailboxOnly": True}, result_size="Unlimited"):
            ...

One call (:meth:`ExchangeClient.invoke`) is one cmdlet run: the same ``client-request-id`` on every page and every
retry; ``@odata.nextLink`` pages are fetched by re-POSTing the same body; ``@adminapi.warnings`` are collected in
:attr:`ExchangeClient.warnings` and logged at WARNING; a failure raises a typed :mod:`imm.exchange.errors` error
carrying Microsoft's message.

Records are yielded as Exchange writes them (dates, sizes and GUIDs stay strings) with the OData annotation keys
(``P@odata.type``, ``P@data.type``) removed; pass ``keep_annotations=True`` to get them too.

Retries: 429 (``Retry-After``), 502/503/504, connection errors and resets, and the transient exception names of
exo-rest.md §4 are retried with exponential backoff and jitter; a 401 fetches a fresh token once
(``token_provider(True)``) and repeats the request. **Creating calls** (New-Mailbox, New-MailboxRestoreRequest) are
retried only when the failure proves nothing ran (a 429, a 401, a connection that never opened); any other failure
after the request left raises :class:`AmbiguousOutcomeError` for the caller to reconcile.

The request body (it may hold an encrypted password) and the Authorization header are never logged.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from imm import __version__
from imm.errors import ConfigError
from imm.exchange.encoding import (
    SecureString,
    check_cmdlet_name,
    envelope,
    page_size_for,
    result_size_value,
    strip_annotations,
)
from imm.exchange.errors import (
    AmbiguousOutcomeError,
    ConfirmationRequiredError,
    ExchangeError,
    ThrottledError,
    TransientError,
    UnreadableReplyError,
    classify,
    describe_unreadable,
    header,
    is_concurrency_text,
    is_transient_text,
    non_terminating_error,
    parse_error_body,
)
from imm.exchange.throttle import RETRY_STATUSES, AdaptiveLimiter, ClientStats, RetryPolicy, parse_retry_after

if TYPE_CHECKING:
    from imm.config import Profile

log = logging.getLogger("imm.exchange")

T = TypeVar("T")
R = TypeVar("R")
# provider(force_refresh) -> access token; a provider may also take ``claims=`` (a 401's claims challenge, JSON)
TokenProvider = Callable[..., str]

# Cmdlets that create something: never repeated after a failure that leaves their outcome unknown.
CREATING_CMDLETS = frozenset({"new-mailbox", "new-mailboxrestorerequest"})
# Reads keep their records when a reply carries @adminapi.errors (the errors are logged and kept); a change fails.
READ_VERBS = ("get-", "test-", "search-")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# The regional 302 of Security & Compliance names <region>.admin.protection.outlook.com while clients call
# <region>.ps.compliance.protection.outlook.com (exo-rest.md §1: CIPP, SCUBA, AA) and a :446 port appears in
# public clients' rewrites. Which rewrite Microsoft expects today is unconfirmed: ``redirect_host_map`` overrides.
DEFAULT_REDIRECT_HOST_MAP: dict[str, str] = {
    ".admin.protection.outlook.com": ".ps.compliance.protection.outlook.com",
    ".admin.protection.office365.us": ".ps.compliance.protection.office365.us",
}
REWRITE_PORTS = {446: 443}
UNDECODABLE = "imm_undecodable"  # response extension: the Content-Encoding that could not decode the body
# The truncation warning (exo-rest.md §4); the module filters it while another page follows.
PAGINATION_WARNING = "There are more results available than are currently displayed"
TOKEN_SKEW = 120.0  # seconds before a cached token's expiry at which a fresh one is asked for


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT access token (not verified: only to know when to ask for a new one)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


@dataclass
class _Attempts:
    """Retries used so far for one request: failures and 429s are counted apart (a 429 proves nothing ran)."""

    errors: int = 0
    throttled: int = 0


@dataclass
class _Call:
    cmdlet: str
    body: bytes
    headers: dict[str, str]
    creating: bool
    client_request_id: str
    limit: int | None  # stop after this many records (ResultSize); None = all pages
    select: str | None = None  # ``$select`` on every page's URL: the properties wanted (exo-rest.md §2)


class ExchangeClient:
    """REST ``InvokeCommand`` client for one endpoint ("exchange" or "compliance") of one tenant. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        tenant: str,
        token_provider: TokenProvider,
        *,
        anchor_mailbox: str | None,
        ca_bundle: Path | str | None = None,
        timeout: float = 960.0,
        max_retries: int = 5,
        max_throttle_retries: int = 10,
        backoff_base: float = 2.0,
        max_backoff: float = 60.0,
        concurrency: int = 10,
        endpoint: str = "exchange",
        user_agent: str | None = None,
        page_size: int = 1000,
        password_public_key: str | None = None,
        accept_language: str = "en-US",
        client_application: str = "ExoManagementModule",
        api_path: str = "adminapi/beta",
        redirect_host_map: Mapping[str, str] | None = None,
        decrease_interval: float = 1.0,
        limiter: AdaptiveLimiter | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if endpoint not in ("exchange", "compliance"):
            raise ConfigError(f"unknown Exchange endpoint '{endpoint}' (use 'exchange' or 'compliance')")
        tenant = (tenant or "").strip()
        if not tenant or tenant.lower() in ("organizations", "common", "consumers"):
            raise ConfigError(
                f"tenant_id '{tenant}' cannot address Exchange Online",
                hint="set tenant_id in the profile to the tenant GUID or its x.onmicrosoft.com name",
            )
        base = httpx.URL(base_url.rstrip("/"))
        if base.scheme != "https":
            raise ConfigError(f"the {endpoint} URL must be https: {base_url}")
        self.endpoint = endpoint
        self.tenant = tenant
        self.base_url = str(base)
        self.start_url = f"{self.base_url}/{api_path.strip('/')}/{tenant}/InvokeCommand"
        self._url = self.start_url  # becomes the regional URL after a redirect
        self._url_lock = threading.Lock()
        self._token_provider = token_provider
        self._token: str | None = None
        self._token_expiry = 0.0
        self._token_lock = threading.Lock()
        self.anchor_mailbox = anchor_mailbox
        self.concurrency = max(1, int(concurrency))
        self.page_size = page_size
        self.timeout = float(timeout)
        self.policy = RetryPolicy(
            max_retries=max(0, int(max_retries)),
            max_throttle_retries=max(0, int(max_throttle_retries)),
            backoff_base=backoff_base,
            max_backoff=max_backoff,
        )
        # one limiter may be shared by the Exchange and compliance clients of a session (one tenant budget)
        self.limiter = limiter or AdaptiveLimiter(self.concurrency, decrease_interval=decrease_interval)
        self.stats = ClientStats()
        self.redirect_host_map = dict(DEFAULT_REDIRECT_HOST_MAP if redirect_host_map is None else redirect_host_map)
        self.connection_id = str(uuid.uuid4())
        self.warnings: list[str] = []
        self.non_terminating_errors: list[str] = []
        self._local = threading.local()
        self._closed = threading.Event()
        self._encryptor: Callable[[str], str] | None = None
        self._key_lock = threading.Lock()
        self._password_public_key = password_public_key
        self._base_headers = {
            "Accept": "application/json",
            "Accept-Charset": "UTF-8",
            "Content-Type": "application/json",
            "Accept-Language": accept_language,
            "connection-id": self.connection_id,
            "X-ResponseFormat": "json",
            # the module's own value; whether the service treats other values differently is unconfirmed
            "X-ClientApplication": client_application,
            "User-Agent": user_agent or f"imm/{__version__} (python-httpx/{httpx.__version__})",
        }
        if anchor_mailbox:
            self._base_headers["X-AnchorMailbox"] = anchor_mailbox
        verify: ssl.SSLContext | bool = True
        if ca_bundle:
            try:
                verify = ssl.create_default_context(cafile=str(ca_bundle))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"ca_bundle {ca_bundle}: cannot be used ({exc.__class__.__name__}: {exc})") from None
        self._http = httpx.Client(
            verify=verify,
            # With a ca_bundle, trust exactly that file (not SSL_CERT_FILE) and go direct; without one, the usual
            # environment applies: HTTPS_PROXY / NO_PROXY and SSL_CERT_FILE, as for any command-line tool.
            trust_env=not ca_bundle,
            http2=False,
            follow_redirects=False,
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 30.0)),
            limits=httpx.Limits(
                max_connections=self.concurrency + 2,
                max_keepalive_connections=self.concurrency + 2,
                keepalive_expiry=60.0,
            ),
            transport=transport,
        )

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        token_provider: TokenProvider,
        endpoint: str = "exchange",
        anchor_mailbox: str | None = None,
        **options: Any,
    ) -> ExchangeClient:
        """A client for ``profile``'s ``exchange_url`` or ``compliance_url`` with its CA bundle, timeout,
        concurrency and SecureString key; ``options`` override any other constructor argument."""
        base = profile.exchange_url if endpoint == "exchange" else profile.compliance_url
        settings: dict[str, Any] = {
            "anchor_mailbox": anchor_mailbox,
            "ca_bundle": profile.ca_bundle,
            "timeout": profile.request_timeout,
            "max_retries": profile.max_retries,
            "concurrency": profile.concurrency,
            "endpoint": endpoint,
            "password_public_key": profile.password_public_key,
        }
        settings.update(options)
        tenant = settings.pop("tenant", None) or profile.tenant_id
        return cls(base, tenant, token_provider, **settings)

    # --------------------------------------------------------------------------------------------- public
    @property
    def url(self) -> str:
        """The InvokeCommand URL in use (the regional one once the service redirected)."""
        return self._url

    @property
    def last_warnings(self) -> list[str]:
        """The warnings of the last call made on this thread."""
        return list(getattr(self._local, "warnings", []))

    def invoke(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        result_size: int | str | None = None,
        keep_annotations: bool = False,
        creating: bool | None = None,
        select: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Run ``cmdlet`` and yield its records page by page.

        ``result_size`` sets ``ResultSize`` (an int or ``"Unlimited"``; also taken from ``parameters``); the
        records stop there. ``creating`` marks a non-idempotent call (default: New-Mailbox and
        New-MailboxRestoreRequest). ``select`` asks for these properties only (``?$select=A,B`` on the URL of
        every page, as CIPP and ExoHelper send it, exo-rest.md §2; a reply with more is taken as it is).
        Bad parameters raise here, before anything is sent.
        """
        call = self._prepare(cmdlet, parameters, result_size, creating)
        if select:
            call.select = ",".join(select)
        return self._run(call, keep_annotations)

    def invoke_all(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        result_size: int | str | None = None,
        keep_annotations: bool = False,
        creating: bool | None = None,
        select: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """:meth:`invoke`, collected into a list."""
        return list(
            self.invoke(
                cmdlet,
                parameters,
                result_size=result_size,
                keep_annotations=keep_annotations,
                creating=creating,
                select=select,
            )
        )

    def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        workers: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[T, R | BaseException]]:
        """Run ``fn(item)`` on a thread pool and yield ``(item, result or exception)`` as each finishes.

        Each HTTP request waits for this client's adaptive limiter, so at most ``limiter.limit`` are in flight
        whatever the pool size (``workers``, default the concurrency). At most two items per worker are queued;
        a set ``cancel`` stops submitting new ones.
        """
        size = max(1, workers or self.concurrency)
        iterator = iter(items)
        pending: dict[Future[R], T] = {}
        with ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"imm-{self.endpoint}") as pool:

            def submit_more() -> None:
                while len(pending) < size * 2 and not (cancel is not None and cancel.is_set()):
                    try:
                        item = next(iterator)
                    except StopIteration:
                        return
                    pending[pool.submit(fn, item)] = item

            submit_more()
            while pending:
                done, _ = wait(list(pending), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    item = pending.pop(future)
                    error = future.exception()
                    yield item, (error if error is not None else future.result())
                submit_more()

    def stats_snapshot(self) -> dict[str, Any]:
        """Counters (requests, retries, 429s, …) plus the limiter's state."""
        data = self.stats.as_dict()
        data.update(
            max_in_flight=self.limiter.max_in_flight,
            limit=self.limiter.limit,
            min_limit=self.limiter.min_limit_seen,
            limit_decreases=self.limiter.decreases,
        )
        return data

    def close(self) -> None:
        self._closed.set()
        self._http.close()

    def __enter__(self) -> ExchangeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ExchangeClient({self.endpoint}, {self._url})"

    # ------------------------------------------------------------------------------------------- one call
    def _prepare(
        self, cmdlet: str, parameters: Mapping[str, Any] | None, result_size: int | str | None, creating: bool | None
    ) -> _Call:
        check_cmdlet_name(cmdlet)
        params = dict(parameters or {})
        if result_size is not None:
            params["ResultSize"] = result_size
        size = result_size_value(params["ResultSize"]) if params.get("ResultSize") is not None else None
        if size is not None:
            params["ResultSize"] = size
        body = json.dumps(
            envelope(cmdlet, params, self._encrypt_callable(params)), ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        client_request_id = str(uuid.uuid4())
        headers = {
            **self._base_headers,
            "X-CmdletName": cmdlet,
            "client-request-id": client_request_id,
            "Prefer": f"odata.maxpagesize={page_size_for(size, self.page_size)}",
        }
        is_creating = cmdlet.lower() in CREATING_CMDLETS if creating is None else creating
        limit = size if isinstance(size, int) else None
        return _Call(cmdlet, body, headers, is_creating, client_request_id, limit)

    def _encrypt_callable(self, params: Mapping[str, Any]) -> Callable[[str], str] | None:
        if not any(isinstance(v, SecureString) for v in params.values()):
            return None
        return self.prepare_secure_strings()

    def prepare_secure_strings(self) -> Callable[[str], str]:
        """The SecureString encryptor: the profile's ``password_public_key``, else the key Exchange hands out in its
        module file, as Microsoft's module gets it (:mod:`imm.exchange.secure`). Fetched once; a ConfigError with
        the fix when neither is there. Call it before asking for a confirmation."""
        from imm.exchange.secure import PasswordEncryptor

        with self._key_lock:
            if self._encryptor is None:
                setting = self._password_public_key or self._module_key()
                self._encryptor = PasswordEncryptor.from_setting(setting)
            return self._encryptor

    def _module_key(self) -> str:
        """The ``<RSAKeyValue>`` of the module file (``GET adminapi/v1.0/{tenant}/EXOModuleFile``)."""
        from imm.exchange.secure import MODULE_VERSION, find_module_key

        url = f"{self.base_url}/adminapi/v1.0/{self.tenant}/EXOModuleFile?Version={MODULE_VERSION}"
        headers = {
            "Accept": "application/json",
            "User-Agent": self._base_headers["User-Agent"],
            "connection-id": self.connection_id,
            "client-request-id": str(uuid.uuid4()),
            "CommandName": "*",  # as CIPP-API asks (its -AvailableCmdlets); the module sends its -CommandName list
        }
        if self.anchor_mailbox:
            headers["X-AnchorMailbox"] = self.anchor_mailbox
        reason = "no key in the reply"
        try:
            for attempt in range(3):  # a fresh token after a 401, one regional redirect
                token = self._get_token(force=attempt > 0 and reason == "HTTP 401")
                with self.limiter.slot():
                    response = self._http.get(url, headers={**headers, "Authorization": f"Bearer {token}"})
                if response.status_code in REDIRECTS and header(response.headers, "Location"):
                    url = self._checked_link(str(header(response.headers, "Location")), url, rewrite=True)
                    reason = f"HTTP {response.status_code}"
                    continue
                if response.status_code != 200:
                    reason = f"HTTP {response.status_code}"
                    if response.status_code == 401:
                        continue
                    break
                try:
                    found = find_module_key(response.json())
                except ValueError:
                    found = find_module_key(response.content)
                if found:
                    log.info("SecureString key taken from Exchange's module file")
                    return found
                reason = "no key in the reply"
                break
        except httpx.HTTPError as exc:
            reason = exc.__class__.__name__
        raise ConfigError(
            f"Exchange Online's SecureString key is needed to send the password, and its module file did not give "
            f"one ({reason})",
            hint="set password_public_key in the profile to the <RSAKeyValue> key of the current "
            "ExchangeOnlineManagement module (see the README, 'The SecureString key')",
        )

    def _run(self, call: _Call, keep_annotations: bool) -> Iterator[dict[str, Any]]:
        self._local.warnings = []
        self._local.errors = []
        yield from self._records(call, keep_annotations)
        if self._local.errors and not call.cmdlet.lower().startswith(READ_VERBS):
            # a change with @adminapi.errors failed, as Microsoft's module marks it (domain.md §9)
            raise non_terminating_error(call.cmdlet, list(self._local.errors), call.client_request_id)

    def _records(self, call: _Call, keep_annotations: bool) -> Iterator[dict[str, Any]]:
        self.stats.add(calls=1)
        url: str | None = None
        count = 0
        while True:
            data, url = self._page(call, url)
            for record in data.get("value") or []:
                if call.limit is not None and count >= call.limit:
                    return
                count += 1
                if isinstance(record, dict):
                    yield record if keep_annotations else strip_annotations(record)
                else:
                    yield {"Value": record}
            next_link = data.get("@odata.nextLink")
            if not next_link or (call.limit is not None and count >= call.limit):
                return
            url = self._checked_link(str(next_link), url)
            self.stats.add(pages=1)

    def _page(self, call: _Call, url: str | None) -> tuple[dict[str, Any], str]:
        """POST the body to ``url`` (the endpoint when None) and return the decoded reply and the URL used."""
        response, used = self._request(call, url)
        data = self._json_reply(call, response)
        self._note(call, data)
        if data.get("@adminapi.confirmationmessage") and not data.get("value"):
            message = str(data["@adminapi.confirmationmessage"])
            raise ConfirmationRequiredError(
                f"{call.cmdlet} was not run: Exchange asked for a confirmation ({' '.join(message.split())})",
                cmdlet=call.cmdlet,
                status=response.status_code,
                microsoft_message=message,
                request_id=header(response.headers, "request-id"),
                client_request_id=call.client_request_id,
            )
        return data, used

    def _json_reply(self, call: _Call, response: httpx.Response) -> dict[str, Any]:
        """The JSON object of a 2xx reply, or :class:`UnreadableReplyError` saying what came instead (exo-rest.md §4:
        Exchange answers ``application/json;odata.metadata=minimal…`` with an object holding ``value``)."""
        content_type = header(response.headers, "content-type") or ""
        undecodable = response.extensions.get(UNDECODABLE)
        data: Any = None
        if undecodable:
            kind, what = "undecodable", f"the reply body cannot be decoded as its declared {undecodable} encoding"
        elif "json" not in content_type.lower():
            kind, what = describe_unreadable(response.content, content_type or "no content type")
        else:
            try:
                data = response.json()
            except ValueError:
                kind, what = describe_unreadable(response.content)
            else:
                kind, what = "not_json", "the reply is JSON but not an object"
        if isinstance(data, dict):
            return data
        raise UnreadableReplyError(
            f"{call.cmdlet} failed: {what} (HTTP {response.status_code})",
            kind=kind,
            cmdlet=call.cmdlet,
            status=response.status_code,
            request_id=header(response.headers, "request-id"),
            client_request_id=call.client_request_id,
            hint="if a proxy sits between imm and Exchange Online, check it; otherwise try again later",
        )

    def _note(self, call: _Call, data: dict[str, Any]) -> None:
        next_page = bool(data.get("@odata.nextLink"))
        for warning in data.get("@adminapi.warnings") or []:
            text = str(warning)
            if next_page and PAGINATION_WARNING in text:
                # Microsoft's module drops this warning while another page follows (Execute-Command,
                # $FilterWarningsInPagination in the [DUMP] of exo-rest.md): imm pages on, so it is not news.
                log.debug("%s: %s (another page follows)", call.cmdlet, text)
                continue
            self.warnings.append(text)
            self._local.warnings.append(text)
            log.warning("Exchange warning from %s: %s", call.cmdlet, text)
        for error in data.get("@adminapi.errors") or []:
            text = error if isinstance(error, str) else json.dumps(error, ensure_ascii=False)
            self.non_terminating_errors.append(text)
            self._local.errors.append(text)
            log.warning("Exchange reported a non-terminating error from %s: %s", call.cmdlet, text)

    # --------------------------------------------------------------------------------------- HTTP + retries
    def _request(self, call: _Call, url: str | None) -> tuple[httpx.Response, str]:
        """One page: send, and retry / refresh / follow the regional redirect as the reply says."""
        target = url or self._url
        attempts = _Attempts()
        refreshed = False
        redirected = False
        while True:
            if self._closed.is_set():
                raise TransientError(f"{call.cmdlet} was cancelled: the client is closed", cmdlet=call.cmdlet)
            token = self._get_token()
            headers = {**call.headers, "Authorization": f"Bearer {token}"}
            started = time.monotonic()
            in_body = False
            try:
                with self.limiter.slot():
                    self.stats.add(requests=1)
                    # $select joins the URL's own query (a page link's $skiptoken), never replaces it
                    page_url = httpx.URL(target).copy_merge_params({"$select": call.select}) if call.select else target
                    request = self._http.build_request("POST", page_url, content=call.body, headers=headers)
                    response = self._http.send(request, stream=True)
                    in_body = True
                    response = _read_body(response)
                    # ours in flight as the reply came, this one included: when it is throttled, the tenant had its
                    # budget in flight, all still counted here, so the budget is at most this - 1 (throttle.py)
                    in_flight = self.limiter.in_flight
            except httpx.TransportError as exc:
                self._after_transport_error(call, exc, attempts, in_body=in_body)
                continue
            status = response.status_code
            if log.isEnabledFor(logging.DEBUG):  # the header lookups cost more than the check (one per request)
                log.debug(
                    "%s %s -> %d in %.0f ms (request-id %s, client-request-id %s)",
                    call.cmdlet,
                    "page" if url else "call",
                    status,
                    (time.monotonic() - started) * 1000,
                    header(response.headers, "request-id"),
                    call.client_request_id,
                )
            if 200 <= status < 300:
                self.limiter.succeeded()
                return response, target
            if status in REDIRECTS and not redirected:
                target = self._follow_redirect(call, response, was_page=url is not None)
                redirected = True
                continue
            if status == 401 and not refreshed:
                refreshed = True
                self.stats.add(token_refreshes=1)
                # a claims challenge (conditional access, continuous access evaluation) goes to msal as it came
                self._get_token(force=True, failed=token, claims=claims_challenge(response.headers))
                continue
            self._after_error_reply(call, response, attempts, in_flight)

    def _after_transport_error(
        self, call: _Call, exc: httpx.TransportError, attempts: _Attempts, in_body: bool = False
    ) -> None:
        """Wait before retrying a connection failure (``in_body``: the reply was cut off after its headers), or
        raise."""
        self.stats.add(connection_errors=1)
        reason = _certificate_failure(exc)
        if reason is not None:  # no retry can fix an untrusted certificate; nothing was sent
            try:
                host = exc.request.url.host
            except RuntimeError:  # an error raised without its request
                host = httpx.URL(self.base_url).host
            raise TransientError(
                f"{call.cmdlet} failed: the TLS certificate of Exchange Online at {host} is not trusted ({reason})",
                cmdlet=call.cmdlet,
                client_request_id=call.client_request_id,
                hint="if a proxy inspects TLS or you use the simulator, set ca_bundle in the profile to its CA file",
            ) from exc
        never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "lost its connection"
        if in_body:
            kind = "timed out reading its reply" if isinstance(exc, httpx.TimeoutException) else "got a cut-off reply"
        if call.creating and not never_sent:
            raise AmbiguousOutcomeError(
                f"{call.cmdlet} {kind} after the request was sent ({exc.__class__.__name__}); it may or may not "
                "have run, so it is not repeated",
                cmdlet=call.cmdlet,
                client_request_id=call.client_request_id,
                hint="check whether it took effect before trying again",
            ) from exc
        if attempts.errors >= self.policy.max_retries:
            what = (
                f"could not connect to {httpx.URL(self.base_url).host}"
                if isinstance(exc, httpx.ConnectError)
                else "the reply from Exchange Online was cut off before its end"
                if in_body and not isinstance(exc, httpx.TimeoutException)
                else f"the connection to Exchange Online {kind}"
            )
            raise TransientError(
                f"{call.cmdlet} failed: {what} ({exc.__class__.__name__}) after {attempts.errors + 1} attempts",
                cmdlet=call.cmdlet,
                client_request_id=call.client_request_id,
                hint="check the network and try again",
            ) from exc
        self._wait(call, self.policy.backoff(attempts.errors), f"{exc.__class__.__name__}")
        attempts.errors += 1

    def _after_error_reply(
        self, call: _Call, response: httpx.Response, attempts: _Attempts, in_flight: int | None = None
    ) -> None:
        """Wait before retrying a 429 / transient reply, or raise its typed error."""
        status = response.status_code
        error = self._error_from(call, response)
        if status == 429 or is_concurrency_text(error.microsoft_message):
            self.stats.add(throttled=1)
            if self.limiter.throttled(in_flight):
                log.info("throttled: %s requests in flight allowed now", self.limiter.limit)
            # A 429 comes before the cmdlet runs, so even a creating call may be repeated; 429s have their own,
            # larger budget so that throttling slows a bulk run down (the limiter) rather than failing items.
            if attempts.throttled >= self.policy.max_throttle_retries:
                raise ThrottledError(
                    f"{call.cmdlet} failed: still throttled by Exchange Online after {attempts.throttled + 1} attempts"
                    + (f" ({error.microsoft_message})" if error.microsoft_message else ""),
                    cmdlet=call.cmdlet,
                    status=status,
                    exception_type=error.exception_type,
                    microsoft_message=error.microsoft_message,
                    request_id=error.request_id,
                    client_request_id=call.client_request_id,
                    hint="try again later or lower the concurrency",
                )
            retry_after = parse_retry_after(header(response.headers, "Retry-After"))
            self._wait(call, self.policy.wait_for(attempts.throttled, retry_after), f"throttled (HTTP {status})")
            attempts.throttled += 1
            return
        if status >= 500:
            self.stats.add(server_errors=1)
        transient = status in RETRY_STATUSES or is_transient_text(error.exception_type, error.microsoft_message)
        if call.creating and (status >= 500 or transient):
            raise AmbiguousOutcomeError(
                f"{call.cmdlet} may or may not have run: Exchange answered HTTP {status}"
                + (f" ({error.microsoft_message})" if error.microsoft_message else "")
                + "; it is not repeated",
                cmdlet=call.cmdlet,
                status=status,
                exception_type=error.exception_type,
                microsoft_message=error.microsoft_message,
                request_id=error.request_id,
                client_request_id=call.client_request_id,
                hint="check whether it took effect before trying again",
            )
        if transient and attempts.errors < self.policy.max_retries:
            retry_after = parse_retry_after(header(response.headers, "Retry-After"))
            self._wait(call, self.policy.wait_for(attempts.errors, retry_after), f"HTTP {status}")
            attempts.errors += 1
            return
        raise error

    def _error_from(self, call: _Call, response: httpx.Response) -> ExchangeError:
        # a body its Content-Encoding cannot decode (the 403 of NUL bytes declared gzip) reads as no body
        body = b"" if response.extensions.get(UNDECODABLE) else response.content
        exception_type, message, top = parse_error_body(body)
        if exception_type is None:
            short = header(response.headers, "x-ExceptionType")
            exception_type = short or None
        if response.status_code == 401 and message is None:
            message = _www_authenticate_reason(header(response.headers, "WWW-Authenticate"))
        return classify(
            cmdlet=call.cmdlet,
            status=response.status_code,
            exception_type=exception_type,
            microsoft_message=message,
            request_id=header(response.headers, "request-id"),
            client_request_id=call.client_request_id,
            top_message=top,
        )

    def _wait(self, call: _Call, seconds: float, reason: str) -> None:
        self.stats.add(retries=1)
        log.info("%s: %s, retrying in %.2f s", call.cmdlet, reason, seconds)
        if self._closed.wait(seconds):
            raise TransientError(f"{call.cmdlet} was cancelled: the client is closed", cmdlet=call.cmdlet)

    # -------------------------------------------------------------------------------------------- tokens
    def _get_token(self, force: bool = False, failed: str | None = None, claims: str | None = None) -> str:
        """The cached token while it is valid; the provider otherwise. After a 401 (``force``) a fresh one, unless
        another thread already replaced the token that failed; ``claims`` (a 401's claims challenge) is passed to a
        provider that takes it (``provider(True, claims=…)``)."""
        with self._token_lock:
            now = time.time()
            if force and failed is not None and self._token is not None and self._token != failed:
                return self._token
            if not force and self._token is not None and now < self._token_expiry - TOKEN_SKEW:
                return self._token
            if claims and _takes_claims(self._token_provider):
                token = self._token_provider(force, claims=claims)
            else:
                token = self._token_provider(force)
            self._token = token
            self._token_expiry = _jwt_expiry(token) or now + TOKEN_SKEW + 60
            return token

    # ------------------------------------------------------------------------------------------ redirects
    def _follow_redirect(self, call: _Call, response: httpx.Response, was_page: bool) -> str:
        location = header(response.headers, "Location")
        if not location:
            raise ExchangeError(
                f"{call.cmdlet} failed: Exchange redirected (HTTP {response.status_code}) without a Location",
                cmdlet=call.cmdlet,
                status=response.status_code,
                client_request_id=call.client_request_id,
            )
        target = self._checked_link(location, str(response.request.url), rewrite=True)
        if not was_page:
            with self._url_lock:
                if self._url != target:
                    log.info("%s endpoint redirected to %s", self.endpoint, target)
                self._url = target
        return target

    def _checked_link(self, link: str, current: str, rewrite: bool = False) -> str:
        """An absolute https URL on a host that may receive this client's token (same host or a sibling host of
        the configured one); a redirect is also rewritten by ``redirect_host_map`` and the port map."""
        url = httpx.URL(current).join(link)
        if rewrite:
            host = url.host
            for suffix, replacement in self.redirect_host_map.items():
                if host.endswith(suffix):
                    url = url.copy_with(host=host[: -len(suffix)] + replacement)
                    break
            if url.port in REWRITE_PORTS:
                url = url.copy_with(port=REWRITE_PORTS[url.port])
        if url.scheme != "https" or not _trusted_host(url.host, httpx.URL(self.base_url).host):
            raise ExchangeError(
                f"refusing to send the Exchange token to {url.scheme}://{url.host}: not the configured endpoint",
                hint="check exchange_url / compliance_url in the profile",
            )
        return str(url)


def _read_body(response: httpx.Response) -> httpx.Response:
    """Read a streamed reply. A body its declared ``Content-Encoding`` cannot decode (Exchange's 403 is NUL bytes
    declared gzip, measured by DrollRobot/azure-auth ``clients/invoke_command.py``; exo-rest.md §4) gives the same
    reply without a body, marked with the encoding in ``extensions[UNDECODABLE]``, instead of a DecodingError."""
    try:
        response.read()
        return response
    except httpx.DecodingError:
        encoding = header(response.headers, "content-encoding") or "content"
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=b"",
            request=response.request,
            extensions={**response.extensions, UNDECODABLE: encoding},
        )
    finally:
        response.close()


def _trusted_host(host: str, configured: str) -> bool:
    """The configured host itself, or a host sharing its last three labels (regional Microsoft hosts)."""
    host, configured = host.lower().rstrip("."), configured.lower().rstrip(".")
    if host == configured:
        return True
    try:
        ipaddress.ip_address(configured)
        return False  # an IP address has no sibling hosts
    except ValueError:
        pass
    parent = configured.split(".")[-3:]
    return len(parent) == 3 and host.split(".")[-3:] == parent


def claims_challenge(headers: Mapping[str, str]) -> str | None:
    """The ``claims`` of a ``WWW-Authenticate: Bearer … error="insufficient_claims", claims="<base64url JSON>"``
    challenge, as the JSON msal's ``claims_challenge`` takes ("Claims challenges, claims requests and client
    capabilities", learn.microsoft.com/entra/identity-platform/claims-challenge); None without one. The module
    names a 401 with WWW-Authenticate claims too (exo-rest.md §4)."""
    import re

    value = header(headers, "WWW-Authenticate") or ""
    match = re.search(r'claims="([^"]+)"', value)
    if not match:
        return None
    raw = match.group(1).strip()
    if raw.startswith("{"):
        return raw
    try:
        decoded = base64.urlsafe_b64decode(raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4))
        text = decoded.decode("utf-8")
        json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    return text


def _takes_claims(provider: Callable[..., str]) -> bool:
    import inspect

    try:
        parameters = inspect.signature(provider).parameters
    except (TypeError, ValueError):
        return False
    return "claims" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _www_authenticate_reason(value: str | None) -> str | None:
    """``error_description`` from a ``WWW-Authenticate: Bearer …`` challenge."""
    if not value:
        return None
    import re

    match = re.search(r'error_description="([^"]*)"', value)
    return f"the access token was refused: {match.group(1)}" if match else None


def _certificate_failure(exc: BaseException) -> str | None:
    """The verification error when ``exc`` (or what caused it) is a TLS certificate the client does not trust."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(current.verify_message or current.reason or current)
        current = current.__cause__ or current.__context__
    return None
