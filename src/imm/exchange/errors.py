"""Typed Exchange Online errors and the parser that turns an ``InvokeCommand`` error reply into one (exo-rest.md §4).

Both backends (REST and PowerShell) raise these. Each carries Microsoft's own message (``microsoft_message``), the
.NET exception type (``exception_type``), the HTTP status (``status``, None for PowerShell), the cmdlet and the
request id, so that a support case can quote them. The exit codes follow design §7 through ``imm.errors``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from imm.errors import ExitStatus, ImmError, NotFoundError
from imm.logs import redact

# Exception names that mean "try again" (exo-rest.md §4, [DUMP] Execute-Command's retry list).
TRANSIENT_EXCEPTIONS = (
    "DCOverloadedException",
    "SuitabilityDirectoryException",
    "ServerInMMException",
    "ADServerSettingsChangedException",
    "StorageTransientException",
)
_NOT_FOUND = ("ManagementObjectNotFoundException", "ObjectNotFoundException", "RecipientNotFoundException")
_AMBIGUOUS = ("ManagementObjectAmbiguousException",)
_INVALID = (
    "ParameterBindingException",
    "ParameterBindingValidationException",
    "ParameterBindingArgumentTransformationException",
    "TaskArgumentException",
    "ArgumentException",
    "ArgumentOutOfRangeException",
    "ArgumentNullException",
    "ValidationArgumentException",
    "DataValidationException",
    "RecipientTaskException",
    "PasswordComplexityException",
)
_THROTTLE_TEXT = re.compile(r"maximum number of concurrent requests|throttl|too many requests|micro delay", re.I)
# "You have reached the maximum number of concurrent requests per tenant. Please wait and try again": ExoHelper
# (GreyCorbel/ExoHelper Commands/Public/Invoke-ExoCommand.ps1) retries it whatever the HTTP status, as a plain-text
# body next to a status outside its retryable list; imm reads it as throttling at any status too.
CONCURRENCY_TEXT = re.compile(r"maximum number of concurrent requests", re.I)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)

# The role that grants each cmdlet imm runs, for "access denied" (an unknown cmdlet or a missing role both give a
# 403 with an empty body). Exchange: Get-ManagementRole -Cmdlet <name> ("Find the permissions required to run any
# Exchange cmdlet", learn.microsoft.com/powershell/exchange/find-exchange-cmdlet-permissions); the Mail Recipients /
# View-Only Recipients and Legal Hold rows are those of the Exchange role reference. Security & Compliance: the
# Retention Management / View-Only Retention Management and Hold roles of "Permissions in the Microsoft Purview
# portal" (learn.microsoft.com/purview/purview-compliance-portal-permissions). Unlisted cmdlets get the generic text.
CMDLET_ROLES: dict[str, str] = {
    "get-mailbox": "Mail Recipients or View-Only Recipients (Exchange role groups Recipient Management, View-Only "
    "Organization Management)",
    "get-recipient": "Mail Recipients or View-Only Recipients (Exchange role groups Recipient Management, "
    "View-Only Organization Management)",
    "get-mailboxstatistics": "Mail Recipients or View-Only Recipients (Exchange role groups Recipient Management, "
    "View-Only Organization Management)",
    "get-organizationconfig": "Organization Configuration or View-Only Configuration (Exchange)",
    "get-accepteddomain": "Remote and Accepted Domains or View-Only Configuration (Exchange)",
    "set-mailbox": "Mail Recipients, and Legal Hold for hold parameters (Exchange role groups Recipient "
    "Management, Discovery Management)",
    "new-mailbox": "Mail Recipient Creation (Exchange role group Recipient Management)",
    "new-mailboxrestorerequest": "Mailbox Import Export or Mail Recipients (Exchange role group Recipient Management)",
    "get-mailboxrestorerequest": "Mail Recipients (Exchange role group Recipient Management)",
    "get-mailboxrestorerequeststatistics": "Mail Recipients (Exchange role group Recipient Management)",
    "remove-mailboxrestorerequest": "Mail Recipients (Exchange role group Recipient Management)",
    "get-retentioncompliancepolicy": "Retention Management or View-Only Retention Management (Purview role groups "
    "Compliance Administrator, Records Management)",
    "get-retentioncompliancerule": "Retention Management or View-Only Retention Management (Purview role groups "
    "Compliance Administrator, Records Management)",
    "get-compliancetag": "Retention Management or View-Only Retention Management (Purview role groups Compliance "
    "Administrator, Records Management)",
    "get-caseholdpolicy": "Hold (Purview role group eDiscovery Manager)",
    "get-caseholdrule": "Hold (Purview role group eDiscovery Manager)",
    "set-retentioncompliancepolicy": "Retention Management (Purview role groups Compliance Administrator, Records "
    "Management)",
    "set-caseholdpolicy": "Hold (Purview role group eDiscovery Manager)",
    "get-appretentioncompliancepolicy": "Retention Management or View-Only Retention Management (Purview role "
    "groups Compliance Administrator, Records Management)",
    "get-appretentioncompliancerule": "Retention Management or View-Only Retention Management (Purview role groups "
    "Compliance Administrator, Records Management)",
    "set-appretentioncompliancepolicy": "Retention Management (Purview role groups Compliance Administrator, Records "
    "Management)",
}


def role_for(cmdlet: str | None) -> str | None:
    """The role that grants ``cmdlet`` (see :data:`CMDLET_ROLES`), or None when imm does not know it."""
    return CMDLET_ROLES.get((cmdlet or "").lower())


_PAGING_TEXT = re.compile(r"Expired or Invalid pagination request", re.I)
_EX_DETAIL = re.compile(r"^(Ex[0-9A-F]{6})\|([^|]*)\|(.*)$", re.S)
MAX_MESSAGE = 500  # characters of Microsoft's text kept in the one-line message


class ExchangeError(ImmError):
    """An Exchange Online call failed. ``str(err)`` is one line: what failed and Microsoft's words."""

    code = "exchange_error"

    def __init__(
        self,
        message: str,
        *,
        cmdlet: str | None = None,
        status: int | None = None,
        exception_type: str | None = None,
        microsoft_message: str | None = None,
        request_id: str | None = None,
        client_request_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(redact(message), hint=hint)
        self.cmdlet = cmdlet
        self.status = status
        self.exception_type = exception_type
        self.microsoft_message = redact(microsoft_message) if microsoft_message else microsoft_message
        self.request_id = request_id
        self.client_request_id = client_request_id

    def details(self) -> dict[str, Any]:
        """What a log line, an audit row or ``--output json`` shows about the failure (no secrets)."""
        return {
            "code": self.code,
            "cmdlet": self.cmdlet,
            "status": self.status,
            "exception_type": self.exception_type,
            "microsoft_message": self.microsoft_message,
            "request_id": self.request_id,
            "client_request_id": self.client_request_id,
        }


class ExoNotFoundError(ExchangeError, NotFoundError):
    """The identity does not exist (ManagementObjectNotFoundException, HTTP 404). Exit 4."""

    exit_code = ExitStatus.NOT_FOUND
    code = "not_found"


class AmbiguousIdentityError(ExchangeError):
    """The identity matches several objects (e.g. an active and an inactive mailbox share an address). Exit 2;
    use the ExchangeGuid or DistinguishedName instead."""

    exit_code = ExitStatus.USAGE
    code = "ambiguous_identity"


class InvalidParameterError(ExchangeError):
    """Exchange refused the parameters (binding, validation or a task argument). Exit 2."""

    exit_code = ExitStatus.USAGE
    code = "invalid_parameter"


class AccessDeniedError(ExchangeError):
    """HTTP 403 with an empty or NUL body: the cmdlet is unknown to the endpoint or the account lacks the role.
    ``role`` names the role that grants the cmdlet (None when imm does not know it)."""

    code = "access_denied"
    role: str | None = None

    def details(self) -> dict[str, Any]:
        return {**super().details(), "role": self.role}


class UnreadableReplyError(ExchangeError):
    """A reply that is not Exchange's JSON: not JSON, an HTML page (a proxy or gateway answered), cut off, of the
    wrong content type, or a body its declared ``Content-Encoding`` cannot decode. ``kind`` says which."""

    code = "unreadable_reply"

    def __init__(self, message: str, *, kind: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.kind = kind  # not_json | html | truncated | content_type | undecodable

    def details(self) -> dict[str, Any]:
        return {**super().details(), "kind": self.kind}


class ExoAuthError(ExchangeError):
    """HTTP 401 even after a fresh token: the token is refused (revoked, wrong audience, no app role). Exit 3."""

    exit_code = ExitStatus.SIGN_IN
    code = "sign_in_required"


class ThrottledError(ExchangeError):
    """Still throttled (HTTP 429) after every retry."""

    code = "throttled"


class TransientError(ExchangeError):
    """A failure that may pass (5xx, a transient exception, a reset, a timeout) that outlasted every retry."""

    code = "transient"


class PagingExpiredError(ExchangeError):
    """An ``@odata.nextLink`` expired (the service keeps them ~30 minutes); the listing must start again."""

    code = "paging_expired"


class ConfirmationRequiredError(ExchangeError):
    """Exchange answered with ``@adminapi.confirmationmessage`` instead of running the cmdlet (nothing changed)."""

    code = "confirmation_required"


class AmbiguousOutcomeError(ExchangeError):
    """A creating call (New-Mailbox, New-MailboxRestoreRequest) may or may not have run: the connection broke or
    timed out after the request was sent, or the service failed after receiving it. It is NOT retried; the caller
    must reconcile (does the new mailbox / the named request exist now?) before trying again."""

    code = "ambiguous_outcome"


class NonTerminatingError(ExchangeError):
    """A change that Exchange answered with HTTP 200 but whose reply carries ``@adminapi.errors``: Microsoft's
    module writes each as an error and marks the command failed (``EXO_LastExecutionStatus = false``,
    PrintResultAndCheckForNextPage; domain.md §9, exo-rest.md §4), so imm treats the change as failed too."""

    code = "non_terminating_error"


def non_terminating_error(cmdlet: str, texts: list[str], client_request_id: str | None = None) -> NonTerminatingError:
    """The typed error for the ``@adminapi.errors`` texts of one call (``Ex…|<type>|<text>`` read as a detail)."""
    first = texts[0]
    match = _EX_DETAIL.match(first)
    exception_type, message = (match.group(2) or None, match.group(3)) if match else (None, first)
    more = f" (and {len(texts) - 1} more)" if len(texts) > 1 else ""
    return NonTerminatingError(
        f"{cmdlet} failed: Exchange reported an error: {_clip(message)}{more}",
        cmdlet=cmdlet,
        status=200,
        exception_type=exception_type,
        microsoft_message="\n".join(texts),
        client_request_id=client_request_id,
    )


def _short_type(exception_type: str | None) -> str:
    return (exception_type or "").rsplit(".", 1)[-1]


def parse_error_body(body: bytes | str | None) -> tuple[str | None, str | None, str | None]:
    """(exception type, Microsoft's message, the top-level error message) from an error reply body.

    The module reads ``details[0].message`` (``Ex6F9304|<type>|<text>``), else ``innererror.internalexception``.
    A body that is empty, NUL bytes or not JSON gives (None, None, None) or the text itself as the message.
    """
    if body is None:
        return None, None, None
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    if not text.strip("\x00 \r\n\t"):
        return None, None, None
    try:
        data = json.loads(text)
    except ValueError:
        kind, what = describe_unreadable(body)
        if kind == "not_json":  # plain text (the concurrency message comes so): Microsoft's words
            return None, text.strip()[:MAX_MESSAGE], None
        return None, what, None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None, None
    top = error.get("message") if isinstance(error.get("message"), str) else None
    exception_type: str | None = None
    message: str | None = None
    details = error.get("details")
    if isinstance(details, list) and details and isinstance(details[0], dict):
        detail = str(details[0].get("message") or "")
        match = _EX_DETAIL.match(detail)
        if match:
            exception_type, message = match.group(2) or None, match.group(3)
        elif detail:
            message = detail
    inner = error.get("innererror")
    internal = inner.get("internalexception") if isinstance(inner, dict) else None
    if isinstance(internal, dict):
        if message is None and internal.get("message"):
            message = str(internal["message"])
        if exception_type is None and internal.get("type"):
            exception_type = str(internal["type"])
    if message is None and isinstance(inner, dict) and inner.get("message"):
        message = str(inner["message"])
    return exception_type, message, top


def describe_unreadable(body: bytes | str, content_type: str | None = None) -> tuple[str, str]:
    """(kind, one-line description) of a reply body that is not Exchange's JSON (:class:`UnreadableReplyError`)."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    size = len(body)
    stripped = text.strip("\x00 \r\n\t\ufeff")
    head = stripped[:512].lower()
    if head.startswith("<!doctype html") or "<html" in head or (content_type or "").lower().startswith("text/html"):
        match = _HTML_TITLE.search(stripped)
        title = _clip(match.group(1)) if match and match.group(1).strip() else None
        named = f" ('{title}')" if title else ""
        return "html", f"an HTML page{named} came back instead of Exchange's reply: a proxy or gateway answered"
    if stripped[:1] in ("{", "["):
        return "truncated", f"the JSON reply is cut off or malformed ({size:,} bytes)"
    if content_type is not None and "json" not in content_type.lower():
        return "content_type", f"the reply is {content_type.split(';')[0].strip() or 'untyped'}, not JSON"
    if not stripped:
        return "not_json", f"the reply body is empty ({size:,} bytes)"
    return "not_json", f"the reply is not JSON: {_clip(stripped[:120])}"


def is_concurrency_text(message: str | None) -> bool:
    """True for Exchange's "maximum number of concurrent requests per tenant" (throttling, at any HTTP status)."""
    return bool(message and CONCURRENCY_TEXT.search(message))


def is_transient_text(exception_type: str | None, message: str | None) -> bool:
    """True when the exception name (or the text) names one of the transient exceptions of exo-rest.md §4."""
    haystack = f"{exception_type or ''} {message or ''}"
    return any(name in haystack for name in TRANSIENT_EXCEPTIONS)


def classify(
    *,
    cmdlet: str | None,
    status: int | None,
    exception_type: str | None,
    microsoft_message: str | None,
    request_id: str | None = None,
    client_request_id: str | None = None,
    top_message: str | None = None,
) -> ExchangeError:
    """The typed error for a failure, from the HTTP status (REST) and/or the .NET exception type (both backends)."""
    short = _short_type(exception_type)
    text = microsoft_message or top_message or ""
    what = cmdlet or "the Exchange call"
    kwargs: dict[str, Any] = {
        "cmdlet": cmdlet,
        "status": status,
        "exception_type": exception_type,
        "microsoft_message": microsoft_message,
        "request_id": request_id,
        "client_request_id": client_request_id,
    }

    def line(default: str) -> str:
        return f"{what} failed: {_clip(text) if text else default}"

    if status == 403:
        role = role_for(cmdlet)
        error = AccessDeniedError(
            f"access denied for {what} (HTTP 403): "
            + (f"it needs the {role} role" if role else "the account lacks the role that grants it")
            + ", or this endpoint does not know the cmdlet",
            hint=f"ask an administrator to assign {role}" if role else "ask for the role this cmdlet needs",
            **kwargs,
        )
        error.role = role
        return error
    if status == 401:
        return ExoAuthError(
            line("the access token was refused (HTTP 401)"), hint="sign in again with 'imm login'", **kwargs
        )
    if short in _NOT_FOUND or (status == 404 and short not in _AMBIGUOUS):
        return ExoNotFoundError(line("not found"), **kwargs)
    if short in _AMBIGUOUS:
        return AmbiguousIdentityError(
            line("the identity matches several objects"),
            hint="use the ExchangeGuid or DistinguishedName as the identity",
            **kwargs,
        )
    if status == 429 or CONCURRENCY_TEXT.search(text) or (status is None and _THROTTLE_TEXT.search(text)):
        return ThrottledError(line("throttled by Exchange Online (HTTP 429)"), hint="try again later", **kwargs)
    if _PAGING_TEXT.search(text):
        return PagingExpiredError(line("the paging link expired"), hint="run the listing again", **kwargs)
    if is_transient_text(exception_type, text) or (status is not None and status in (408, 502, 503, 504)):
        return TransientError(line(f"a transient service error (HTTP {status})"), hint="try again", **kwargs)
    if status == 400 or (status is None and short in _INVALID):
        return InvalidParameterError(line("Exchange refused the parameters"), **kwargs)
    return ExchangeError(line(f"HTTP {status}" if status else "an unexpected error"), **kwargs)


def _clip(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= MAX_MESSAGE else one_line[: MAX_MESSAGE - 1] + "…"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header value, case-insensitively, or None."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None
