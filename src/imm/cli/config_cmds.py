"""``imm config init|set|validate|show|path`` and ``imm profile list``: writing, checking and showing the
configuration (file + ``IMM_*`` environment + flags)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from imm.cli.context import app
from imm.cli.output import output_options

if TYPE_CHECKING:
    from imm.config import ProfileCheck

# Keys whose values are names or public material, though their names sound secret.
_NOT_SECRET = {"certificate_password_env", "password_public_key"}
_SECRET_WORDS = ("secret", "password", "token_value", "private_key", "assertion")


def _config_path() -> Path:
    """Where the configuration file is (or would be), without reading it."""
    from imm.config import default_config_path

    obj = app()
    return Path(obj.config_path or os.environ.get("IMM_CONFIG") or default_config_path())


def _mask(key: str, value: Any) -> Any:
    if key in _NOT_SECRET or value in (None, ""):
        return value
    if any(word in key.lower() for word in _SECRET_WORDS):
        return "***"
    return value


def effective_config() -> dict[str, Any]:
    """The active profile as data: every setting plus the paths and scopes derived from it; secrets masked."""
    from dataclasses import fields

    from imm.logs import redact_data

    config = app().config
    profile = config.profile
    data: dict[str, Any] = {
        "config_file": str(config.path),
        "config_file_exists": config.file_exists,
        "profile": profile.name,
        "profiles": list(config.profiles),
    }
    for f in fields(profile):
        if f.name in {"name", "cost", "org"}:
            continue
        value = getattr(profile, f.name)
        data[f.name] = _mask(f.name, str(value) if isinstance(value, Path) else value)
    data["authority"] = profile.authority
    data["exchange_scopes"] = profile.exchange_scopes
    data["compliance_scopes"] = profile.compliance_scopes
    data["database"] = str(profile.database_path)
    data["token_cache"] = str(profile.token_cache)
    data["log_file"] = str(profile.log_path)
    password_env = profile.certificate_password_env
    data["certificate_password_set"] = bool(os.environ.get(password_env))  # never the value
    data["cost"] = {
        "currency": profile.cost.currency,
        "per_gb_month": profile.cost.per_gb_month,
        "license_month": dict(profile.cost.license_month),
    }
    data["org"] = {
        "company_attribute": profile.org.company_attribute,
        "department_attribute": profile.org.department_attribute,
        "mapping_file": str(profile.org.mapping_file) if profile.org.mapping_file else None,
    }
    masked: dict[str, Any] = redact_data(data)
    return masked


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, float):
            out[name] = f"{value:g}"  # as written in the file (the table would round to one decimal)
        else:
            out[name] = value
    return out


@click.group()
def config() -> None:
    """Create, change, check and show the configuration.

    Settings come from the configuration file (one [profiles.NAME] table per tenant), then IMM_* environment
    variables (e.g. IMM_TENANT_ID, IMM_DB), then command-line flags.

    \b
    Examples:
      imm config set concurrency 4
      imm config validate
      imm config show --profile demo
      imm config path
    """


@config.command("show")
@output_options
def show(output: str, query: str | None) -> None:
    """Show the profile in effect, with every setting and the paths derived from it (secrets masked).

    \b
    Example:
      imm config show --output json
    """
    from imm.cli.output import render_object

    data = effective_config()
    if output == "table" and not query:
        data = _flatten(data)
    render_object(data, output, query)


@config.command("path")
def path() -> None:
    """Print the path of the configuration file (it may not exist yet).

    \b
    Example:
      imm config path
    """
    click.echo(str(_config_path()))


def _profile_name(path: Path) -> str:
    """The profile a config command works on: --profile / IMM_PROFILE, else the file's default, else 'default'."""
    from imm.config import DEFAULT_PROFILE, check_file

    obj = app()
    explicit = obj.profile_name or os.environ.get("IMM_PROFILE")
    if explicit:
        return explicit
    if path.exists():
        default, _, _ = check_file(path)
        if default:
            return default
    return DEFAULT_PROFILE


def _toml(value: Any) -> str:
    import tomlkit

    return tomlkit.item(value).as_string()


def profile_template(name: str, values: dict[str, Any], *, make_default: bool) -> str:
    """A profile written as a commented TOML block: the chosen values set, the common ones shown commented."""

    def line(key: str, comment: str, example: Any) -> str:
        if key in values and values[key] not in (None, ""):
            return f"{key} = {_toml(values[key])}  # {comment}"
        return f"# {key} = {_toml(example)}  # {comment}"

    head = [
        "# imm configuration, written by 'imm config init' (README: 'Configuration and profiles').",
        "# Precedence: command-line flags > IMM_* environment variables > this file > built-in defaults.",
        "# Change a value with: imm config set KEY VALUE;  check the file with: imm config validate",
        "",
    ]
    lines = [*head, f"default_profile = {_toml(name)}", ""] if make_default else []
    lines += [
        f"[profiles.{_toml(name) if not name.replace('-', '').replace('_', '').isalnum() else name}]",
        line("tenant_id", "tenant GUID or name.onmicrosoft.com", "contoso.onmicrosoft.com"),
        line("auth_method", "device_code | certificate | managed_identity | workload_identity", "device_code"),
        line("client_id", "app registration (default: Microsoft's Exchange REST PowerShell client)", "…"),
        line("certificate_path", "auth_method certificate: PEM with its key, or PFX", "app.pem"),
        line("managed_identity_client_id", "a user-assigned managed identity (unset: system-assigned)", "…"),
        line("federated_token_file", "workload identity (default: $AZURE_FEDERATED_TOKEN_FILE)", "/path/token"),
        "# concurrency = 10  # Exchange calls in flight; backs off on 429",
        "# audit_min_retention_days = 365  # imm audit prune refuses a shorter retention",
        "# leaver_retention_days = 2555  # keep leavers' mailboxes this long after deletion (imm bulk plan "
        "--leaver-retention-ended)",
        '# db_path = "imm.db"  # default: per profile in the data folder',
        "",
        f"# [profiles.{name}.cost]  # chargeback model",
        '# currency = "EUR"',
        "# per_gb_month = 0.02",
        "",
    ]
    return "\n".join(lines)


@config.command("init")
@click.option("--tenant", metavar="TENANT", help="Tenant GUID or name.onmicrosoft.com.")
@click.option(
    "--auth-method",
    type=click.Choice(["device_code", "certificate", "managed_identity", "workload_identity"]),
    help="How to sign in (default: device_code, a person with a code).",
)
@click.option("--client-id", metavar="ID", help="Application (client) id: certificate and workload identity.")
@click.option("--certificate", type=click.Path(dir_okay=False, path_type=Path), help="Certificate file (PEM/PFX).")
@click.option("--managed-identity-client-id", metavar="ID", help="A user-assigned managed identity's client id.")
@click.option(
    "--federated-token-file", type=click.Path(dir_okay=False, path_type=Path), help="Workload identity token file."
)
@click.option("--force", is_flag=True, help="Replace the profile if it is already in the file.")
def init(
    tenant: str | None,
    auth_method: str | None,
    client_id: str | None,
    certificate: Path | None,
    managed_identity_client_id: str | None,
    federated_token_file: Path | None,
    force: bool,
) -> None:
    """Write a commented configuration file with one profile (asks what is not given as an option).

    Without a terminal (or with --no-input) nothing is asked: options not given keep their defaults. An
    existing file keeps its content; the profile is added to it (--force replaces a profile of that name).

    \b
    Examples:
      imm config init --config new.toml --tenant contoso.onmicrosoft.com
      imm --profile ci config init --tenant contoso.onmicrosoft.com --auth-method workload_identity --client-id 1a2b3c4d
    """
    from imm.config import SIGN_IN_METHODS, check_file
    from imm.errors import ConfigError, InputError

    obj = app()
    path = _config_path()
    name = obj.profile_name or os.environ.get("IMM_PROFILE") or "default"
    existing = path.read_text(encoding="utf-8") if path.exists() else None
    if existing is not None:
        _, checks, problems = check_file(path)
        if any(c.name == name for c in checks) and not force:
            raise InputError(
                f"{path}: profile '{name}' is already there",
                hint="change it with 'imm config set KEY VALUE', or replace it with --force",
            )
    ask = obj.input_allowed
    if ask and tenant is None:
        tenant = click.prompt("Tenant (GUID or name.onmicrosoft.com)", default="organizations", err=True)
    if ask and auth_method is None:
        auth_method = click.prompt("Sign-in", type=click.Choice(list(SIGN_IN_METHODS)), default="device_code", err=True)
    method = auth_method or ("certificate" if certificate else "device_code")
    if ask and method in {"certificate", "workload_identity"} and client_id is None:
        client_id = click.prompt("Application (client) id", err=True)
    if ask and method == "certificate" and certificate is None:
        certificate = click.prompt("Certificate file", type=click.Path(dir_okay=False, path_type=Path), err=True)
    if method == "certificate" and certificate is None:
        raise InputError("auth_method certificate needs --certificate PATH")
    if method in {"certificate", "workload_identity"} and not client_id:
        raise InputError(f"auth_method {method} needs --client-id: the app registration's id")
    values: dict[str, Any] = {
        "tenant_id": (tenant or "organizations").strip(),
        "auth_method": method,
        "client_id": client_id,
        "certificate_path": str(certificate.expanduser().resolve()) if certificate else None,
        "managed_identity_client_id": managed_identity_client_id,
        "federated_token_file": str(federated_token_file.expanduser().resolve()) if federated_token_file else None,
    }
    block = profile_template(name, values, make_default=existing is None)
    if existing is None:
        text = block
    else:
        text = _without_profile(existing, name) if force else existing
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    _, checks, problems = check_file(path)
    errors = [c.error for c in checks if c.name == name and c.error] + problems
    if errors:
        if existing is None:
            path.unlink()
        else:
            path.write_text(existing, encoding="utf-8")
        raise ConfigError(errors[0])
    click.echo(f"Wrote profile '{name}' to {path}.", err=True)
    login = "imm login" if name == "default" else f"imm --profile {name} login"
    if method == "device_code":
        click.echo(f"Next: {login}", err=True)
    else:
        click.echo(
            f"Next: imm --profile {name} sync (check the sign-in first with: imm --profile {name} whoami)", err=True
        )


def _without_profile(text: str, name: str) -> str:
    import tomlkit

    document = tomlkit.parse(text)
    profiles: Any = document.get("profiles")
    if profiles is not None and name in profiles:
        del profiles[name]
    return tomlkit.dumps(document)


@config.command("set")
@click.argument("key")
@click.argument("value")
def set_value(key: str, value: str) -> None:
    """Set one setting of the profile in the file (the rest of the file is kept as written).

    KEY is a profile setting (tenant_id, auth_method, concurrency…) or cost.currency, cost.per_gb_month,
    org.company_attribute, org.department_attribute, org.mapping_file. The value is checked before it is saved.

    \b
    Examples:
      imm config set concurrency 4
      imm --profile demo config set cost.currency USD
    """
    from imm.config import parse_setting, set_profile_value

    path = _config_path()
    app().allow_missing_config = True
    name = _profile_name(path)
    converted = parse_setting(key, value)
    set_profile_value(path, name, key, converted)
    click.echo(f"Set {key} = {_toml(converted)} in profile '{name}' ({path}).", err=True)


@config.command("validate")
@output_options
def validate(output: str, query: str | None) -> None:
    """Check the whole configuration file: every profile (not only the one in use) and IMM_* variables.

    Exit 0 when everything loads, 2 when something does not (each problem named with its file, line and key,
    or its environment variable).

    \b
    Examples:
      imm config validate
      imm config validate --output json
    """
    from imm.cli.output import Column, render
    from imm.config import check_file, env_problems
    from imm.errors import ConfigError

    obj = app()
    path = _config_path()
    explicit = obj.config_path is not None or bool(os.environ.get("IMM_CONFIG"))
    default: str | None = None
    checks: list[ProfileCheck] = []
    problems: list[str] = []
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: no such configuration file", hint=f"imm config init --config {path}")
    else:
        default, checks, problems = check_file(path)
    problems = problems + env_problems()
    rows = [
        {
            "profile": c.name,
            "default": c.name == default,
            "valid": c.error is None,
            "problem": c.error,
        }
        for c in checks
    ]
    rows += [{"profile": None, "default": False, "valid": False, "problem": p} for p in problems]
    columns = [
        Column("profile", "Profile"),
        Column("default", "Default"),
        Column("valid", "Valid"),
        Column("problem", "Problem"),
    ]
    bad = [r for r in rows if not r["valid"]]
    if output == "table" and not query:
        where = str(path) if path.exists() else f"{path} (not there: built-in defaults)"
        click.echo(f"Configuration file: {where}", err=True)
    render(rows, columns, output, query)
    if bad:
        raise ConfigError(
            f"{len(bad)} problem{'s' if len(bad) != 1 else ''} in the configuration",
            hint="fix them in the file (imm config set KEY VALUE), or unset the environment variable named",
        )


@click.group()
def profile() -> None:
    """The profiles of the configuration file (one per tenant).

    \b
    Example:
      imm profile list
    """


@profile.command("list")
@output_options
def list_profiles(output: str, query: str | None) -> None:
    """List the profiles: which is the default, the tenant, how each signs in, and its database.

    \b
    Examples:
      imm profile list
      imm profile list --output json --query "[?default].name"
    """
    from imm.cli.output import Column, render
    from imm.config import check_file

    obj = app()
    path = _config_path()
    default: str | None = None
    checks: list[ProfileCheck] = []
    if not path.exists():
        explicit = obj.config_path is not None or bool(os.environ.get("IMM_CONFIG"))
        if explicit:
            from imm.errors import ConfigError

            raise ConfigError(f"{path}: no such configuration file", hint=f"imm config init --config {path}")
    else:
        default, checks, _ = check_file(path)
    rows = []
    for check in checks:
        p = check.profile
        rows.append(
            {
                "name": check.name,
                "default": check.name == default,
                "tenant_id": p.tenant_id if p else None,
                "sign_in": p.sign_in_method if p else None,
                "database": str(p.database_path) if p else None,
                "problem": check.error,
            }
        )
    columns = [
        Column("name", "Profile"),
        Column("default", "Default"),
        Column("tenant_id", "Tenant"),
        Column("sign_in", "Sign-in"),
        Column("database", "Database"),
    ]
    if any(r["problem"] for r in rows):
        columns.append(Column("problem", "Problem"))
    render(rows, columns, output, query)
