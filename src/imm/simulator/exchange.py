"""Simulated Exchange Online and Security & Compliance: the REST ``InvokeCommand`` layer (exo-rest.md).

Routes (``base`` = ``https://127.0.0.1:PORT``; ``{tenant}`` = the tenant GUID or its ``*.onmicrosoft.com`` name):
- ``POST {base}/adminapi/beta/{tenant}/InvokeCommand``: Exchange cmdlets (token audience ``{base}``).
- ``POST {base}/compliance/adminapi/beta/{tenant}/InvokeCommand``: 302 to the regional
  ``{base}/compliance/eur02/adminapi/beta/{tenant}/InvokeCommand`` (audience ``{base}/compliance``).
- ``POST {base}/adminapi/v1.0/{tenant}/InvokeCommand``: 405, as observed.
- ``GET {base}/adminapi/v1.0/{tenant}/EXOModuleFile?Version=…``: the generated module with the SecureString key
  (``$PublicKey = '<RSAKeyValue>…'``), as Connect-ExchangeOnline downloads it; ``module_key_served`` switches the
  key off.

Each call: tenant segment → ``Authorization: Bearer`` (identity.verify_access_token; 401 + WWW-Authenticate) →
``X-AnchorMailbox`` (400 when missing) → body → cmdlet known and role granted (403, NUL bytes declared gzip) →
concurrency budget (429 + Retry-After, or the plain concurrency-limit text with ``throttle_status``) → latency,
fault injection → the cmdlet → a page of ``value`` with ``@odata.nextLink``.

Test knobs on :class:`ExchangeService`: ``tenant`` (ground truth), ``fail_next(cmdlet, kind, count)``, ``counters``
(requests per cmdlet), ``executed`` (cmdlet runs per cmdlet, continuation pages excluded), ``request_log``,
``max_in_flight``, ``deny_role(upn, endpoint)`` / ``grant_role``, ``deny_cmdlet(cmdlet, caller)`` /
``allow_cmdlet`` (the real 403 for one cmdlet), ``require_auth_context(context, caller)`` (a claims challenge),
``module_key_served``, ``encrypt_password(text)``,
``reset_counters()``. Revoking a user is the identity provider's knob (``identity.revoke_user``): its tokens then
get 401 here.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from imm.simulator import cmdlets as exchange_cmdlets
from imm.simulator import compliance as compliance_cmdlets
from imm.simulator.binding import Cmdlet, Invocation, Result
from imm.simulator.formats import ex_code
from imm.simulator.generator import make_hostile
from imm.simulator.identity import TokenRejected
from imm.simulator.model import CmdletError, NonTerminatingError
from imm.simulator.secure import PasswordKey
from imm.simulator.server import Request, Response, Router
from imm.simulator.tenant import Tenant
from imm.simulator.unified_audit import UnifiedAuditLog, is_change, search_cmdlet

log = logging.getLogger("imm.simulator.exchange")

CONTENT_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
EXPIRED_TEXT = "Expired or Invalid pagination request. Default Expiry time is 00:30:00"
# GreyCorbel/ExoHelper Commands/Public/Invoke-ExoCommand.ps1 matches 'You have reached the maximum number of
# concurrent requests per tenant. Please wait and try again*' against the raw reply text, at any status.
THROTTLE_TEXT = "You have reached the maximum number of concurrent requests per tenant. Please wait and try again."
# The 403 of a cmdlet the caller may not run (or the endpoint does not know): NUL bytes declared gzip, so an HTTP
# client that decodes bodies fails on it (DrollRobot/azure-auth clients/invoke_command.py, measured; exo-rest.md §4).
NUL_BODY = b"\x00" * 4  # count unconfirmed
PROXY_PAGE = (
    "<!DOCTYPE html>\r\n<html><head><title>502 Bad Gateway</title></head>\r\n<body><h1>Bad Gateway</h1>\r\n"
    "<p>The proxy server received an invalid response from an upstream server.</p></body></html>\r\n"
)
REGION = "eur02"
BE_TARGET = "AM0PR02MB1234.eurprd02.prod.outlook.com"  # X-CalculatedBETarget (shape only)
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 1000  # the service caps odata.maxpagesize (unconfirmed; the module never asks for more)
FAULT_KINDS = frozenset(
    {
        "reset",
        "reset_after_commit",
        "429",
        "500",
        "503",
        "504",
        "401",
        "slow",
        "pass",
        # ugly replies (exo-rest.md §4; what a proxy in between can send)
        "408",  # Request Timeout, JSON error body
        "concurrency",  # the concurrency-limit text, plain, with config.throttle_status (a 4xx when not 429)
        "html_502",  # a proxy's HTML error page
        "html_200",  # a proxy's HTML page with 200 (a captive or sign-in page)
        "not_json",  # 200 declared JSON, plain text body
        "content_type",  # 200 application/xml
        "truncated_json",  # 200, a JSON body cut in the middle (framing intact)
        "cut_off",  # 200, Content-Length announces more than is sent before the connection closes
        "gzip_403",  # the real 403 shape for this one call
    }
)
_CHANGING = ("Set-", "New-", "Remove-", "Add-", "Enable-", "Disable-", "Start-", "Suspend-", "Resume-")
_ANCHOR = re.compile(r"^(UPN|SMTP|APP|MBX|OID):\S+@\S+$", re.IGNORECASE)
_PREFER = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)
_TRANSIENT = {
    500: ("Microsoft.Exchange.Data.Directory.ADServerSettingsChangedException", "The AD server settings changed."),
    503: (
        "Microsoft.Exchange.Data.Storage.StorageTransientException",
        "Cannot open mailbox. The server is temporarily unavailable; retry the operation.",
    ),
    504: (
        "Microsoft.Exchange.Data.Directory.DCOverloadedException",
        "The domain controller is overloaded; retry the operation.",
    ),
}
_STATUS_CODE = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


@dataclass
class _Cursor:
    """A listing being paged: the items, how to render one, the body that must come back, warnings."""

    body_key: str
    cmdlet: str
    items: list[Any]
    render: Any
    page_size: int
    warnings: list[str]
    truncated: bool
    created: float


def error_body(
    status: int, exception_type: str, message: str, detail_code: str = "Context", top: str = "Error executing cmdlet"
) -> dict[str, Any]:
    """The error JSON of exo-rest.md §4; ``details[0].message`` is ``Ex…|<exception type>|<text>``."""
    return {
        "error": {
            "code": _STATUS_CODE.get(status, "BadRequest"),
            "message": top,
            "details": [
                {"code": detail_code, "target": "", "message": f"{ex_code(exception_type)}|{exception_type}|{message}"}
            ],
            "innererror": {
                "message": message,
                "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                "stacktrace": "",
                "internalexception": {"message": message, "type": exception_type, "stacktrace": ""},
            },
        }
    }


def _error(status: int, exception_type: str, message: str, **kw: Any) -> Response:
    return Response(
        status,
        error_body(status, exception_type, message, **kw),
        headers={"x-ExceptionType": exception_type.rsplit(".", 1)[-1]},
        content_type=CONTENT_TYPE,
    )


def _request_error(message: str) -> Response:
    """A malformed request (not a cmdlet failure): 400 "Invalid Operation"."""
    return _error(
        400,
        "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
        message,
        detail_code="Client",
        top="Invalid Operation",
    )


def _forbidden() -> Response:
    return Response(403, NUL_BODY, headers={"Content-Encoding": "gzip"}, content_type=CONTENT_TYPE)


def _concurrency_reply(config: Any) -> Response:
    """The concurrency-limit text as a plain body with a 4xx status (``config.throttle_status``; 400 when it is
    429, i.e. the fault was asked for explicitly). Whether Exchange adds a Retry-After here is unconfirmed: none."""
    status = config.throttle_status if config.throttle_status != 429 else 400
    return Response(status, THROTTLE_TEXT, content_type="text/plain; charset=utf-8")


def _json_cut(config: Any) -> bytes:
    body = json.dumps({"@odata.context": "$metadata#Collection(Exchange.GenericHashTable)", "value": [{"A": 1}]})
    return body.encode("utf-8")[:40]


_UGLY: dict[str, Any] = {
    "408": lambda config: _error(408, "System.TimeoutException", "The request timed out."),
    "concurrency": _concurrency_reply,
    "html_502": lambda config: Response(502, PROXY_PAGE, content_type="text/html; charset=utf-8"),
    "html_200": lambda config: Response(200, PROXY_PAGE.replace("502 Bad Gateway", "Sign in to continue")),
    "not_json": lambda config: Response(200, b"Service is starting, try later", content_type=CONTENT_TYPE),
    "content_type": lambda config: Response(200, b"<Objs><Obj/></Objs>", content_type="application/xml; charset=utf-8"),
    "truncated_json": lambda config: Response(200, _json_cut(config), content_type=CONTENT_TYPE),
    "cut_off": lambda config: Response(
        200,
        {"@odata.context": "x", "@adminapi.warnings": [], "value": [{"Name": "x" * 200}]},
        content_type=CONTENT_TYPE,
        cut_after=60,
    ),
    "gzip_403": lambda config: _forbidden(),
}


def _redacted(params: Any) -> Any:
    if not isinstance(params, dict):
        return params
    return {k: ("***" if k.lower() in ("password", "credential") else v) for k, v in params.items()}


class ExchangeService:
    """Exchange Online + Security & Compliance for one tenant; see the module docstring for the knobs."""

    def __init__(self, config: Any, base_url: str, identity: Any) -> None:
        self.config = config
        self.base_url = base_url
        self.identity = identity
        self.tenant = Tenant(
            config.tenant_id,
            config.tenant_domain,
            seed=config.seed,
            count=config.mailboxes,
            state_file=Path(config.state_file) if config.state_file else None,
            restore_seconds=config.restore_seconds,
        )
        self.tenant.lifecycle_day_seconds = float(getattr(config, "lifecycle_day_seconds", 86400.0))
        if getattr(config, "hostile_data", False):
            self.tenant.special["hostile"] = ",".join(make_hostile(list(self.tenant.mailboxes.values())))
        self.password_key = PasswordKey(Path(config.data_dir))
        self.cmdlets: dict[str, dict[str, Cmdlet]] = {
            "exchange": {k.lower(): v for k, v in exchange_cmdlets.CMDLETS.items()},
            "compliance": {k.lower(): v for k, v in compliance_cmdlets.CMDLETS.items()},
        }
        self.unified_audit = UnifiedAuditLog(config.tenant_id, config.tenant_domain, config.audit_delay_seconds)
        self.cmdlets["exchange"]["search-unifiedauditlog"] = search_cmdlet(self.unified_audit)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._rng = random.Random(f"faults:{config.seed}")
        self._fail_next: dict[str, deque[str]] = {}
        self.counters: Counter[str] = Counter()
        self.executed: Counter[str] = Counter()
        self.request_log: deque[dict[str, Any]] = deque(maxlen=100_000)
        self.statuses: Counter[str] = Counter()  # every reply's status ("reset": a dropped connection), uncapped
        self.denied: dict[str, set[str]] = {}
        self.required_acrs: dict[str, str] = {}  # caller (lower case, "*" = anyone) -> authentication context
        self.module_key_served = True  # False: the module file carries no $PublicKey (a key clients cannot get)
        self.denied_cmdlets: dict[str, set[str]] = {}  # caller (lower case, "*" = anyone) -> cmdlets (lower case)
        self._paging = threading.Lock()  # guards _cursors and _links
        self._cursors: dict[str, _Cursor] = {}
        self._links: dict[str, tuple[str, int, float]] = {}

    # ------------------------------------------------------------------ interface

    def register(self, router: Router) -> None:
        router.add(
            "POST", r"/adminapi/beta/(?P<tenant>[^/]+)/InvokeCommand", partial(self._invoke, endpoint="exchange")
        )
        router.add("POST", r"/compliance/adminapi/beta/(?P<tenant>[^/]+)/InvokeCommand", self._redirect)
        router.add(
            "POST",
            rf"/compliance/{REGION}/adminapi/beta/(?P<tenant>[^/]+)/InvokeCommand",
            partial(self._invoke, endpoint="compliance"),
        )
        router.add("POST", r"/adminapi/v1\.0/(?P<tenant>[^/]+)/InvokeCommand", self._v1)
        router.add("GET", r"/adminapi/v1\.0/(?P<tenant>[^/]+)/EXOModuleFile", self._module_file)

    def profile_extras(self) -> dict[str, Any]:
        # no password_public_key: clients take the key from the module file, as Microsoft's module does
        return {}

    def close(self) -> None:
        self.tenant.save()

    # ------------------------------------------------------------------ test knobs

    def fail_next(self, cmdlet: str, kind: str, count: int = 1) -> None:
        """The next ``count`` calls of ``cmdlet`` ('*' = any) fail with ``kind``: 'reset', 'reset_after_commit'
        (run the cmdlet, then drop the connection), '429', '500', '503', '504', '401', 'slow'; 'pass' lets one call
        through as it is (to aim a later fault at the n-th call)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of {sorted(FAULT_KINDS)}")
        with self._lock:
            self._fail_next.setdefault(cmdlet.lower(), deque()).extend([kind] * count)

    def deny_role(self, upn: str, endpoint: str = "compliance") -> None:
        """``upn`` lacks the role for ``endpoint`` ('exchange' or 'compliance'): its calls get 403."""
        self.denied.setdefault(upn.lower(), set()).add(endpoint)

    def grant_role(self, upn: str, endpoint: str = "compliance") -> None:
        self.denied.get(upn.lower(), set()).discard(endpoint)

    def deny_cmdlet(self, cmdlet: str, caller: str = "*") -> None:
        """``caller`` (a UPN, ``app:<id>``, or '*' for anyone) lacks the role for ``cmdlet``: it gets the real 403
        (NUL bytes declared gzip) for that cmdlet only, as a role assignment missing one cmdlet gives."""
        self.denied_cmdlets.setdefault(caller.lower(), set()).add(cmdlet.lower())

    def allow_cmdlet(self, cmdlet: str, caller: str = "*") -> None:
        self.denied_cmdlets.get(caller.lower(), set()).discard(cmdlet.lower())

    def _cmdlet_denied(self, caller: str, cmdlet: str) -> bool:
        name = cmdlet.lower()
        return any(name in self.denied_cmdlets.get(who, ()) for who in (caller.lower(), "*"))

    def encrypt_password(self, text: str) -> str:
        """Encrypt as a client would (tests, demo)."""
        return self.password_key.encrypt(text)

    def reset_counters(self) -> None:
        with self._lock:
            self.counters.clear()
            self.executed.clear()
            self.request_log.clear()
            self.statuses.clear()
            self.max_in_flight = 0

    # ------------------------------------------------------------------ routes

    def _v1(self, request: Request, match: re.Match[str]) -> Response:
        return Response(
            405,
            {
                "error": {
                    "code": "MethodNotAllowed",
                    "message": "The requested resource does not support http method 'POST'.",
                }
            },
        )

    def _module_file(self, request: Request, match: re.Match[str]) -> Response:
        """``GET adminapi/v1.0/{tenant}/EXOModuleFile?Version=…``: the generated module Connect-ExchangeOnline
        downloads, with the SecureString key in it as ``$PublicKey = '<RSAKeyValue>…'`` (exo-rest.md §1, §3;
        Calvindd2f/EXO_PROJECT dump; GreyCorbel/ExoHelper README). ``value[].exportedCmdlets`` is what CIPP-API
        reads; the field holding the module text (``EncodedModule``, base64 UTF-8 here) is unconfirmed."""
        config = self.config
        if match.group("tenant").lower() not in (config.tenant_id.lower(), config.tenant_domain.lower()):
            return self._unauthorized(f"the tenant '{match.group('tenant')}' isn't served here")
        auth = request.header("Authorization")
        try:
            self.identity.verify_access_token(auth[7:].strip(), self.base_url)
        except TokenRejected as exc:
            return self._unauthorized(exc.reason)
        with self._lock:
            self.counters["EXOModuleFile"] += 1
        names = sorted(c.name for c in self.cmdlets["exchange"].values())
        key = f"$PublicKey = '{self.password_key.public_xml()}'\n" if self.module_key_served else ""
        module = (
            "#region Constants\n$DefaultHTTPTimeout = 960\n#endregion\n"
            + "".join(f"function {name} {{ Execute-Command -CmdletName '{name}' }}\n" for name in names)
            + key
            + f"Export-ModuleMember -Function @({', '.join(repr(n) for n in names)})\n"
        )
        version = (request.query.get("Version") or [""])[-1]
        body = {
            "@odata.context": f"{self.base_url}/adminapi/v1.0/{config.tenant_id}/$metadata#EXOModuleFile",
            "value": [
                {
                    "Version": version,
                    "exportedCmdlets": ",".join(names),
                    "EncodedModule": base64.b64encode(module.encode("utf-8")).decode("ascii"),
                }
            ],
        }
        return Response(200, body, content_type=CONTENT_TYPE)

    def _redirect(self, request: Request, match: re.Match[str]) -> Response:
        location = f"{request.base_url}/compliance/{REGION}/adminapi/beta/{match.group('tenant')}/InvokeCommand"
        return Response(302, b"", headers={"Location": location}, content_type="text/html; charset=utf-8")

    def _invoke(self, request: Request, match: re.Match[str], endpoint: str) -> Response:
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        headers = {
            "request-id": request_id,
            "client-request-id": request.header("client-request-id") or request_id,
            "X-CalculatedBETarget": BE_TARGET,
        }
        entry: dict[str, Any] = {
            "time": time.time(),
            "endpoint": endpoint,
            "cmdlet": None,
            "parameters": None,
            "page": "$skiptoken" in request.query,
            "select": (request.query.get("$select") or [""])[-1] or None,
            "client_request_id": headers["client-request-id"],
            "anchor": request.header("X-AnchorMailbox"),
            "caller": None,
            "fault": None,
        }
        try:
            response = self._handle(request, match, endpoint, entry)
        except Exception:
            log.exception("simulated Exchange failed")
            response = _error(500, "System.InvalidOperationException", "The simulated service failed.")
        response.headers.update(headers)
        entry["status"] = "reset" if response.reset else response.status
        entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        with self._lock:
            self.counters[entry["cmdlet"] or "?"] += 1
            self.statuses[str(entry["status"])] += 1
            self.request_log.append(entry)
        return response

    def _handle(self, request: Request, match: re.Match[str], endpoint: str, entry: dict[str, Any]) -> Response:
        config = self.config
        tenant_segment = match.group("tenant").lower()
        if tenant_segment not in (config.tenant_id.lower(), config.tenant_domain.lower()):
            return self._unauthorized(f"the tenant '{match.group('tenant')}' isn't served here")
        audience = self.base_url if endpoint == "exchange" else f"{self.base_url}/compliance"
        auth = request.header("Authorization")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            return self._unauthorized("no bearer token")
        try:
            claims = self.identity.verify_access_token(auth[7:].strip(), audience)
        except TokenRejected as exc:
            return self._unauthorized(exc.reason)
        if str(claims.get("tid", config.tenant_id)).lower() != config.tenant_id.lower():
            return self._unauthorized("the token was issued for another tenant")
        caller = str(
            claims.get("upn")
            or claims.get("preferred_username")
            or claims.get("unique_name")
            or f"app:{claims.get('appid') or claims.get('azp') or claims.get('oid')}"
        )
        entry["caller"] = caller
        context = self.required_acrs.get(caller.lower()) or self.required_acrs.get("*")
        if context and context not in (claims.get("acrs") or []):
            return self._claims_challenge(context)
        anchor = request.header("X-AnchorMailbox")
        if not anchor or not _ANCHOR.match(anchor.strip()):
            return _request_error(
                "The X-AnchorMailbox header is missing or invalid; expected UPN:, SMTP:, MBX: or APP: and an address."
            )
        try:
            body = request.json()
            envelope = body["CmdletInput"]
            name = envelope["CmdletName"]
            raw_params = envelope.get("Parameters") or {}
            if not isinstance(name, str) or not isinstance(raw_params, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
            return _request_error("The request body isn't a valid CmdletInput.")
        entry["cmdlet"] = name
        entry["parameters"] = _redacted(raw_params)
        cmdlet = self.cmdlets[endpoint].get(name.lower())
        if cmdlet is not None:
            entry["cmdlet"] = cmdlet.name  # counters use the canonical spelling
        if (
            cmdlet is None
            or endpoint in self.denied.get(caller.lower(), set())
            or self._cmdlet_denied(caller, cmdlet.name)
        ):
            return _forbidden()
        if not self._acquire():
            return self._throttled()
        try:
            return self._run(request, cmdlet, raw_params, body, caller, endpoint, entry)
        finally:
            self._release()

    def _run(
        self,
        request: Request,
        cmdlet: Cmdlet,
        raw_params: dict[str, Any],
        body: Any,
        caller: str,
        endpoint: str,
        entry: dict[str, Any],
    ) -> Response:
        config = self.config
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)
        fault = self._next_fault(cmdlet.name)
        entry["fault"] = fault
        if fault == "slow":
            time.sleep(config.faults.slow_seconds or 1.0)
        elif fault in ("reset",):
            return Response(reset=True)
        elif fault == "429":
            return self._throttled()
        elif fault == "401":
            return self._unauthorized("token expired")
        elif fault in ("500", "503", "504"):
            exception_type, text = _TRANSIENT[int(fault)]
            return _error(int(fault), exception_type, text)
        elif fault is not None and fault in _UGLY:
            return _UGLY[fault](self.config)
        root = request.path.rsplit("/InvokeCommand", 1)[0]
        context = f"{self.base_url}{root}/$metadata#Collection(Exchange.GenericHashTable)"
        token = (request.query.get("$skiptoken") or [""])[-1]
        body_key = json.dumps(body, sort_keys=True, ensure_ascii=False)
        if token:
            response = self._continue(token, body_key, context, request)
        else:
            response = self._execute(cmdlet, raw_params, caller, body_key, context, request)
        if fault == "reset_after_commit":
            return Response(reset=True)
        return response

    def _execute(
        self, cmdlet: Cmdlet, raw_params: dict[str, Any], caller: str, body_key: str, context: str, request: Request
    ) -> Response:
        try:
            params = cmdlet.bind(raw_params)
            if cmdlet.confirm is not None and params.get("Confirm") is True:
                return self._page_response(context, [], [], None, cmdlet.confirm(params))
            invocation = Invocation(self.tenant, caller, params, self.password_key.decrypt)
            with self.tenant.lock:
                result: Result = cmdlet.run(invocation)
                with self._lock:
                    self.executed[cmdlet.name] += 1
                self._audit_change(cmdlet.name, raw_params, caller, result)
                items = list(result.items)
                page_size = self._page_size(request)
                warnings = list(result.warnings)
                if len(items) <= page_size:
                    if result.truncated:
                        warnings.append(exchange_cmdlets.TRUNCATION_WARNING)
                    return self._page_response(context, self._render(items, result.render, request), warnings, None)
                cursor = _Cursor(
                    body_key, cmdlet.name, items, result.render, page_size, warnings, result.truncated, time.monotonic()
                )
                page = self._render(items[:page_size], result.render, request)
            with self._paging:
                cursor_id = secrets.token_hex(8)
                self._cursors[cursor_id] = cursor
                link = self._link(cursor_id, page_size, request)
            # A page with another after it carries the "more results" warning too: Microsoft's module drops it
            # there (Execute-Command filters $FilterWarningsInPagination while a next page exists; exo-rest.md [DUMP]).
            return self._page_response(context, page, [*warnings, exchange_cmdlets.TRUNCATION_WARNING], link)
        except CmdletError as exc:
            return _error(exc.status, exc.exception_type, exc.message)
        except NonTerminatingError as exc:  # 200, nothing changed, the error in @adminapi.errors (exo-rest.md §4)
            return self._page_response(context, [], [], None, errors=[exc.message])

    def _audit_change(self, name: str, raw_params: dict[str, Any], caller: str, result: Result) -> None:
        """A unified audit log record for a change (``unified_audit``); reads are not recorded."""
        if not is_change(name):
            return
        params = {k: v for k, v in raw_params.items() if "@" not in k}
        first = result.items[0] if result.items else None
        object_name = getattr(first, "name", None)
        if not isinstance(object_name, str):
            target = params.get("Identity") or params.get("TargetMailbox") or params.get("InactiveMailbox")
            try:
                object_name = self.tenant.find(str(target)).name if target else None
            except Exception:  # an identity that no longer resolves: the record still names what was passed
                object_name = str(target) if target else None
        self.unified_audit.record(name, params, caller, object_name)

    def outside_change(self, name: str, params: dict[str, Any], caller: str) -> None:
        """A change made by someone other than imm (another admin, a script), audited as Exchange audits it."""
        cmdlet = self.cmdlets["exchange"][name.lower()]
        invocation = Invocation(self.tenant, caller, cmdlet.bind(params), self.password_key.decrypt)
        with self.tenant.lock:
            result = cmdlet.run(invocation)
            self._audit_change(cmdlet.name, params, caller, result)

    def _continue(self, token: str, body_key: str, context: str, request: Request) -> Response:
        with self._paging:
            self._purge(time.monotonic())
            link = self._links.get(token)
            cursor = self._cursors.get(link[0]) if link else None
            if link is None or cursor is None or cursor.body_key != body_key:
                return _request_error(EXPIRED_TEXT)
            cursor_id, offset, _ = link
            end = offset + cursor.page_size
            next_link = self._link(cursor_id, end, request) if end < len(cursor.items) else None
        with self.tenant.lock:
            page = self._render(cursor.items[offset:end], cursor.render, request)
        if next_link:
            return self._page_response(context, page, [exchange_cmdlets.TRUNCATION_WARNING], next_link)
        warnings = [exchange_cmdlets.TRUNCATION_WARNING] if cursor.truncated else []
        return self._page_response(context, page, warnings, None)

    # ------------------------------------------------------------------ helpers

    def _page_size(self, request: Request) -> int:
        match = _PREFER.search(request.header("Prefer"))
        if match and int(match.group(1)) > 0:
            return min(int(match.group(1)), MAX_PAGE_SIZE)
        return DEFAULT_PAGE_SIZE

    def _link(self, cursor_id: str, offset: int, request: Request) -> str:
        token = secrets.token_urlsafe(24)
        self._links[token] = (cursor_id, offset, time.monotonic())
        return f"{self.base_url}{request.path}?$skiptoken={token}"

    def _purge(self, now: float) -> None:
        expiry = self.config.page_link_expiry
        for token, (_, _, issued) in list(self._links.items()):
            if now - issued > expiry:
                self._links.pop(token, None)
        live = {cursor_id for cursor_id, _, _ in self._links.values()}
        for cursor_id in list(self._cursors):
            if cursor_id not in live:
                self._cursors.pop(cursor_id, None)

    def _render(self, items: list[Any], render: Any, request: Request) -> list[dict[str, Any]]:
        rows = [render(item) for item in items] if render is not None else list(items)
        select = (request.query.get("$select") or [""])[-1]
        if select:
            wanted = {s.strip().lower() for s in select.split(",") if s.strip()}
            rows = [{k: v for k, v in row.items() if k.split("@", 1)[0].lower() in wanted} for row in rows]
        return rows

    def _page_response(
        self,
        context: str,
        value: list[dict[str, Any]],
        warnings: list[str],
        next_link: str | None,
        confirmation: str | None = None,
        errors: list[str] | None = None,
    ) -> Response:
        body: dict[str, Any] = {"@odata.context": context, "@adminapi.warnings": warnings, "value": value}
        if errors:
            body["@adminapi.errors"] = errors
        if next_link:
            body["@odata.nextLink"] = next_link
        if confirmation:
            body["@adminapi.confirmationmessage"] = confirmation
        return Response(200, body, content_type=CONTENT_TYPE)

    def _acquire(self) -> bool:
        with self._lock:
            if self.in_flight >= self.config.concurrency_budget:
                return False
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return True

    def _release(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _next_fault(self, cmdlet: str) -> str | None:
        with self._lock:
            for key in (cmdlet.lower(), "*"):
                queue = self._fail_next.get(key)
                if queue:
                    return queue.popleft()
            faults = self.config.faults
            roll = self._rng.random
            if faults.throttle_rate and roll() < faults.throttle_rate:
                return "429"
            if faults.error_5xx_rate and roll() < faults.error_5xx_rate:
                return "503" if roll() < 0.7 else "504"
            if faults.reset_rate and roll() < faults.reset_rate:
                return "reset"
            if (
                faults.reset_after_commit_rate
                and cmdlet.startswith(_CHANGING)
                and roll() < faults.reset_after_commit_rate
            ):
                return "reset_after_commit"
            if faults.slow_rate and roll() < faults.slow_rate:
                return "slow"
        return None

    def _throttled(self) -> Response:
        if self.config.throttle_status != 429:
            return _concurrency_reply(self.config)
        retry = self.config.retry_after_seconds
        response = _error(429, "Microsoft.Exchange.Admin.OData.Core.ODataServiceException", THROTTLE_TEXT)
        response.headers["Retry-After"] = f"{retry:g}"
        return response

    def require_auth_context(self, context: str, caller: str = "*") -> None:
        """Conditional access asks ``caller`` for the authentication context ``context`` (e.g. "c1"): a token
        without it in its ``acrs`` claim gets a 401 with a claims challenge until the client gets one that has."""
        self.required_acrs[caller.lower()] = context

    def _claims_challenge(self, context: str) -> Response:
        """The 401 of "Claims challenges, claims requests and client capabilities" (Microsoft identity platform):
        ``error="insufficient_claims"`` and the claims to ask for, base64-encoded."""
        wanted = json.dumps({"access_token": {"acrs": {"essential": True, "value": context}}}, separators=(",", ":"))
        claims = base64.b64encode(wanted.encode("utf-8")).decode("ascii")
        challenge = (
            f'Bearer realm="", authorization_uri="{self.base_url}/common/oauth2/authorize", '
            f'error="insufficient_claims", claims="{claims}"'
        )
        return Response(401, b"", headers={"WWW-Authenticate": challenge}, content_type="text/plain; charset=utf-8")

    def _unauthorized(self, reason: str) -> Response:
        reason = reason.replace('"', "'")
        challenge = (
            f'Bearer client_id="{EXCHANGE_APP_ID}", trusted_issuers="00000001-0000-0000-c000-000000000000@*", '
            f'token_types="app_asserted_user_v1 service_asserted_app_v1", '
            f'authorization_uri="{self.base_url}/common/oauth2/authorize", error="invalid_token", '
            f'error_description="{reason}"'
        )
        return Response(
            401,
            b"",
            headers={
                "WWW-Authenticate": challenge,
                "x-ms-diagnostics": f'2000001;reason="{reason}";error_category="invalid_token"',
            },
            content_type="text/plain; charset=utf-8",
        )
