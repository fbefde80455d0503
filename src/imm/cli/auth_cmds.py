"""``imm login``, ``imm logout``, ``imm whoami``: sign-in for the current profile (device code or certificate)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from imm.cli.context import AppContext, app, echo_err
from imm.cli.output import output_options, render_object
from imm.errors import ImmError, InputError

if TYPE_CHECKING:
    from imm.auth import Authenticator


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "unknown"
    local = moment.astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or local.strftime("%z"))


def _who(account: dict[str, Any] | None, auth: Authenticator) -> str:
    if account is None:
        return "nobody"
    if account["kind"] == "app":
        return f"app {auth.client_id}"
    return str(account.get("username") or account.get("home_account_id") or "unknown account")


def _audit(
    obj: AppContext, operation: str, *, user: str | None, details: dict[str, Any], result: str, error: str | None = None
) -> None:
    """Write a LOGIN/LOGOUT row; a missing audit module is skipped, a failing store is a warning (the sign-in
    itself already happened and changed nothing in Exchange)."""
    import sqlite3

    try:
        from imm.data.audit_logger import OperationType

        obj.audit().log_operation(OperationType(operation), None, details, result, error, user=user)
    except ModuleNotFoundError as exc:  # the store is not part of this build
        if not (exc.name or "").startswith("imm.data"):
            raise
    except (ImmError, sqlite3.Error, OSError) as exc:
        echo_err(f"Warning: the {operation.lower()} was not recorded in the audit log: {exc}")


def _fresh_config(obj: AppContext, changes: dict[str, Any]) -> None:
    """Apply --tenant/--client-id/--certificate as command-line overrides before the profile is read."""
    obj.overrides.update(changes)
    obj.__dict__.pop("config", None)  # a cached Config from before the overrides


@click.command()
@click.option("--tenant", metavar="TENANT", help="Tenant GUID or name.onmicrosoft.com (saved to the profile).")
@click.option(
    "--certificate",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="PATH",
    help="App-only sign-in with this certificate: PEM with its private key, or PFX whose password is read from "
    "IMM_CERTIFICATE_PASSWORD (saved to the profile).",
)
@click.option("--client-id", metavar="ID", help="Application (client) id; needed with --certificate (saved).")
@click.option("--force", is_flag=True, help="Sign in again even when the saved sign-in still works.")
def login(tenant: str | None, certificate: Path | None, client_id: str | None, force: bool) -> None:
    """Sign in to the profile's tenant.

    Uses the saved sign-in when it still works; otherwise shows a code to enter at the sign-in page (device
    code flow; 5 minutes to complete, device_code_timeout in the profile; Ctrl+C cancels). With --certificate,
    signs in as an application for unattended runs.

    \b
    Examples:
      imm login
      imm --profile demo login
    With a certificate (app-only): imm login --certificate app.pfx --client-id APP-ID --tenant contoso.onmicrosoft.com
    (the PFX password in IMM_CERTIFICATE_PASSWORD).
    """
    from imm.auth import AuthenticationError, Authenticator
    from imm.config import DEFAULT_CLIENT_ID, write_profile

    obj = app()
    obj.allow_missing_config = True  # login may start a new file (it saves --tenant and the rest to it)
    changes: dict[str, Any] = {}
    if tenant:
        changes["tenant_id"] = tenant.strip()
    if client_id:
        changes["client_id"] = client_id.strip()
    if certificate is not None:
        changes["certificate_path"] = certificate.expanduser().resolve()
    _fresh_config(obj, changes)
    profile = obj.profile
    if profile.certificate_path is not None and profile.client_id == DEFAULT_CLIENT_ID:
        raise InputError(
            "--certificate needs --client-id: the id of the app registration that holds the certificate",
            hint="imm login --certificate PATH --client-id APP_ID --tenant TENANT",
        )
    # imm login is the command that signs in: only an explicit --no-input (IMM_NO_INPUT) stops its device code
    auth = Authenticator.from_profile(
        profile, prompt=echo_err, interactive=not obj.no_input_explicit, login_command=obj.login_command()
    )
    method = auth.method
    try:
        auth.authenticate(force=force)
    except AuthenticationError as exc:
        result = "cancelled" if exc.error_code == "user_cancelled" else "failure"
        details: dict[str, Any] = {"method": method, "client_id": auth.client_id, "error_code": exc.error_code}
        _audit(obj, "LOGIN", user=None, details=details, result=result, error=exc.message)
        raise
    account = auth.account()
    tenant_shown = (account or {}).get("tenant_id") or profile.tenant_id
    if changes:
        write_profile(obj.config.path, profile.name, changes)
        echo_err(f"Saved {', '.join(sorted(changes))} to profile '{profile.name}' in {obj.config.path}.")
    details = {
        "method": method,
        "token_source": auth.last_token_source,
        "client_id": auth.client_id,
        "tenant": tenant_shown,
        "account": _who(account, auth),
    }
    _audit(obj, "LOGIN", user=_who(account, auth), details=details, result="success")
    until = _when(auth.token_expires_on())
    click.echo(f"Signed in as {_who(account, auth)} (tenant {tenant_shown}); token valid until {until}")


@click.command()
def logout() -> None:
    """Sign out: remove the profile's accounts and tokens from the token cache (no network needed).

    \b
    Examples:
      imm logout
      imm logout --profile demo
    """
    from imm.auth import Authenticator

    obj = app()
    auth = Authenticator.from_profile(obj.profile, prompt=echo_err)
    removed = auth.logout()
    _audit(
        obj,
        "LOGOUT",
        user=removed[0] if removed else None,
        details={"removed": removed, "cache": str(auth.cache_location)},
        result="success",
    )
    if not removed:
        click.echo("Not signed in; nothing to remove.")
        return
    click.echo(f"Signed out {', '.join(removed)}; removed the cached tokens from {auth.cache_location}.")
    if auth.app_only:
        echo_err("Note: the profile still names a certificate, so the next command signs in with it again.")


@click.command()
@click.option("--offline", is_flag=True, help="Only read the token cache: do not refresh or check the sign-in.")
@output_options
def whoami(offline: bool, output: str, query: str | None) -> None:
    """Show who is signed in: account, tenant, token expiry and the token cache (never a token).

    Checks the saved sign-in (refreshing the token when it is about to expire) unless --offline.

    \b
    Examples:
      imm whoami
      imm whoami --output json --query account
    """
    from imm.auth import AuthenticationError, Authenticator

    obj = app()
    auth = Authenticator.from_profile(obj.profile, prompt=echo_err)
    if not offline:
        auth.get_token()
    account = auth.account()
    if account is None:
        raise AuthenticationError(
            "login_required", f"Not signed in to tenant '{auth.tenant_id}'.", hint="run 'imm login'"
        )
    expires = auth.token_expires_on()
    data: dict[str, Any] = {
        "account": _who(account, auth),
        "kind": account["kind"],
        "tenant": account["tenant_id"],
        "client_id": auth.client_id,
        "authority": auth.authority,
        "token_expires": expires.isoformat() if expires else None,
        "token_source": auth.last_token_source,
        "cache": str(auth.cache_location),
        "cache_encrypted": auth.cache_encrypted,
    }
    if auth.app_only:
        cert = auth.certificate()
        data["certificate"] = str(cert.path)
        data["certificate_thumbprint"] = cert.sha1_thumbprint
        data["certificate_expires"] = cert.not_after.isoformat()
    render_object(data, output, query)
