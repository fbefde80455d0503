"""``imm config show|path``: the effective profile (file + ``IMM_*`` environment + flags) and the file's location."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from imm.cli.context import app
from imm.cli.output import output_options

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
    """Show the effective configuration, or where its file is.

    Settings come from the configuration file (one [profiles.NAME] table per tenant), then IMM_* environment
    variables (e.g. IMM_TENANT_ID, IMM_DB), then command-line flags.

    \b
    Examples:
      imm config show --profile contoso
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
