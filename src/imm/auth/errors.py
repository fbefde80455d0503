"""``AuthenticationError`` and the mapping from what msal returns or raises to one clear line and a hint."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from imm.errors import ExitStatus, SignInError
from imm.logs import redact, redact_data

LOGIN_HINT = "run 'imm login' to sign in again"

# Safe fields of an msal error result worth keeping for -v output and audit details (never tokens).
_DETAIL_KEYS = ("error", "error_codes", "suberror", "correlation_id", "trace_id", "timestamp")


class AuthenticationError(SignInError):
    """Sign-in is needed or failed (exit 3; 130 when the person cancelled with Ctrl+C).

    ``error_code`` is msal's/Entra's ``error`` where there is one (``invalid_grant``, ``expired_token``,
    ``authorization_declined``, ``unauthorized_client``…) or imm's own (``login_required``, ``timeout``,
    ``user_cancelled``, ``network_error``, ``certificate_error``, ``token_cache_error``…).
    ``details`` holds safe diagnostic fields (AADSTS codes, correlation id), never a token.
    """

    def __init__(
        self, error_code: str, message: str, details: dict[str, Any] | None = None, *, hint: str | None = None
    ) -> None:
        super().__init__(redact(message), hint=hint, code=error_code)
        self.error_code = error_code
        self.details: dict[str, Any] = redact_data(dict(details or {}))
        if error_code == "user_cancelled":
            self.exit_code = ExitStatus.INTERRUPTED


def first_line(description: str | None) -> str:
    """Entra's error_description up to its 'Trace ID' part: 'AADSTS70019: Verification code expired.'"""
    text = (description or "").strip().splitlines()[0] if (description or "").strip() else ""
    for marker in (" Trace ID:", " Trace ID :"):
        if marker in text:
            text = text.split(marker, 1)[0]
    return text.strip()


def from_result(result: dict[str, Any], *, client_id: str, tenant_id: str, authority: str) -> AuthenticationError:
    """An msal error result (a dict with ``error``) as an AuthenticationError that says what to do next."""
    error = str(result.get("error") or "sign_in_failed")
    reason = first_line(result.get("error_description")) or error
    details = {k: result[k] for k in _DETAIL_KEYS if k in result}
    host = urlsplit(authority).netloc or authority
    if error == "authorization_declined":
        return AuthenticationError(
            error, "The sign-in request was declined.", details, hint="run 'imm login' again and approve the request"
        )
    if error in {"expired_token", "bad_verification_code"}:
        return AuthenticationError(
            "expired_token",
            f"The sign-in code expired before it was used ({reason}).",
            details,
            hint="run 'imm login' again and enter the new code before it expires",
        )
    if error == "invalid_grant":
        return AuthenticationError(
            error,
            f"The saved sign-in is no longer valid: it was revoked or has expired ({reason}).",
            details,
            hint=LOGIN_HINT,
        )
    if error in {"interaction_required", "login_required", "consent_required"}:
        return AuthenticationError(
            error, f"The sign-in needs you to sign in again ({reason}).", details, hint=LOGIN_HINT
        )
    if error in {"unauthorized_client", "invalid_client"}:
        return AuthenticationError(
            error,
            f"The sign-in service refused the application '{client_id}' ({reason}).",
            details,
            hint="check client_id (and for app-only sign-in the certificate registered on the app) in the profile",
        )
    if error in {"invalid_tenant", "invalid_authority"} or "AADSTS90002" in reason:
        return bad_tenant(tenant_id, host, reason, details)
    if error in {"invalid_scope", "invalid_resource"}:
        return AuthenticationError(
            error,
            f"The sign-in service refused the requested access ({reason}).",
            details,
            hint="check exchange_url / exchange_scope (and compliance_url) in the profile",
        )
    if error in {"temporarily_unavailable", "server_error"}:
        return AuthenticationError(
            "service_error",
            f"The sign-in service at {host} is unavailable ({reason}).",
            details,
            hint="try again later",
        )
    return AuthenticationError(error, f"Sign-in failed: {reason}", details, hint=LOGIN_HINT)


def bad_tenant(
    tenant_id: str, host: str, reason: str = "", details: dict[str, Any] | None = None
) -> AuthenticationError:
    suffix = f" ({reason})" if reason else ""
    return AuthenticationError(
        "invalid_tenant",
        f"The sign-in service at {host} does not know the tenant '{tenant_id}'{suffix}.",
        details,
        hint="check tenant_id in the profile (a GUID or name.onmicrosoft.com), or pass --tenant",
    )


def from_exception(exc: BaseException, *, authority: str, tenant_id: str) -> AuthenticationError | None:
    """A network, TLS or service failure raised inside msal as an AuthenticationError (None: not ours to map)."""
    import json

    import requests
    from msal.exceptions import MsalServiceError
    from msal_extensions import LockError

    host = urlsplit(authority).netloc or authority
    text = _short(exc)
    if isinstance(exc, LockError):
        return AuthenticationError(
            "token_cache_error",
            f"The token cache is locked by another process ({text}).",
            hint="wait for the other imm command to finish, then try again",
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return AuthenticationError(
            "network_error",
            f"The TLS certificate of the sign-in service at {host} is not trusted ({text}).",
            hint="if a proxy inspects TLS or you use the simulator, set ca_bundle in the profile to its CA file",
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return AuthenticationError(
            "network_error",
            f"The sign-in service at {host} did not answer in time.",
            hint="check the network and proxy settings, then try again",
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return AuthenticationError(
            "network_error",
            f"Cannot reach the sign-in service at {host} ({text}).",
            hint="check the network, proxy settings and authority_host in the profile",
        )
    if isinstance(exc, MsalServiceError):
        return AuthenticationError(
            "service_error", f"The sign-in service at {host} failed ({text}).", hint="try again in a minute"
        )
    if isinstance(exc, json.JSONDecodeError):
        return AuthenticationError(
            "service_error",
            f"The sign-in service at {host} answered with something that is not JSON.",
            hint="check authority_host in the profile",
        )
    if isinstance(exc, ValueError) and "authority configuration" in str(exc):
        return bad_tenant(tenant_id, host)
    if isinstance(exc, ValueError | KeyError) and ("https" in str(exc) or isinstance(exc, KeyError)):
        return AuthenticationError(
            "invalid_authority",
            f"'{authority}' is not a usable sign-in authority ({text}).",
            hint="authority_host must be an https URL of an Entra ID (or the simulator)",
        )
    return None


def _short(exc: BaseException) -> str:
    """The innermost useful line of a requests/urllib3 error, without the long wrapper text."""
    text = str(exc) or type(exc).__name__
    for marker in ("Caused by ", "(Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1].rstrip(")")
    text = " ".join(text.split())
    return redact(text[:300])
