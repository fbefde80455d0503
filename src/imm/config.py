"""Configuration: a TOML file, ``IMM_*`` environment variables over it, and named profiles (one per tenant).

File layout (``imm config path`` prints where it lives)::

    default_profile = "contoso"

    [profiles.contoso]
    tenant_id = "contoso.onmicrosoft.com"
    # every endpoint is a setting, so that one code path serves Microsoft's clouds and the simulator
    authority_host = "https://login.microsoftonline.com"
    exchange_url = "https://outlook.office365.com"
    compliance_url = "https://ps.compliance.protection.outlook.com"

    [profiles.contoso.cost]
    currency = "EUR"
    per_gb_month = 0.02

    [profiles.contoso.cost.license_month]
    "Exchange Online Plan 2" = 7.0

Precedence: command-line flags > ``IMM_*`` environment > the profile in the file > built-in defaults.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from imm.errors import ConfigError, ImmError

APP_NAME = "imm"
DEFAULT_CLIENT_ID = "fb78d390-0c51-40cd-8e17-fdbfab77341b"  # Microsoft Exchange REST API Based Powershell
DEFAULT_PROFILE = "default"
DEFAULT_LICENSE_RATES: dict[str, float] = {
    # Notional monthly chargeback per former licence; inactive mailboxes themselves need no licence.
    "Exchange Online Plan 2": 7.0,
    "Exchange Online Plan 1": 3.5,
    "Exchange Online Kiosk": 1.8,
    "Unknown": 3.5,
}


def user_dir(kind: str) -> Path:
    """The folder for ``kind`` ('config', 'data', 'log'); ``IMM_USER_PATH`` puts them all under one root."""
    root = os.environ.get("IMM_USER_PATH")
    if root:
        return Path(root) / kind
    import platformdirs

    if kind == "config":
        return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
    if kind == "log":
        return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_config_path() -> Path:
    return user_dir("config") / "config.toml"


@dataclass(frozen=True)
class CostModel:
    """Chargeback: a monthly rate per former licence type plus a rate per GB stored (design §6)."""

    currency: str = "EUR"
    per_gb_month: float = 0.02
    license_month: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LICENSE_RATES))


@dataclass(frozen=True)
class OrgMapping:
    """Where Company and Department come from when the directory fields were cleared at deletion."""

    company_attribute: str | None = None  # e.g. "CustomAttribute5"
    department_attribute: str | None = None
    mapping_file: Path | None = None  # CSV keyed by address or ExchangeGuid with company,department columns


@dataclass(frozen=True)
class Profile:
    """Everything imm needs to know about one tenant."""

    name: str = DEFAULT_PROFILE
    tenant_id: str = "organizations"
    client_id: str = DEFAULT_CLIENT_ID
    authority_host: str = "https://login.microsoftonline.com"
    exchange_url: str = "https://outlook.office365.com"
    compliance_url: str = "https://ps.compliance.protection.outlook.com"
    exchange_scope: str | None = None  # default: <exchange_url>/.default
    compliance_scope: str | None = None  # default: <compliance_url>/.default
    ca_bundle: Path | None = None
    db_path: Path | None = None
    # the team store: postgresql://user@host:port/db?sslmode=verify-full… (None: the profile's SQLite file);
    # never a password here (PGPASSWORD / IMM_STORE_PASSWORD, ~/.pgpass or a service file)
    store: str | None = None
    token_cache_path: Path | None = None
    log_file: Path | None = None  # the log file (default: <log folder>/<profile>.log)
    backend: str = "rest"  # rest | powershell
    certificate_path: Path | None = None  # app-only sign-in
    certificate_password_env: str = "IMM_CERTIFICATE_PASSWORD"
    # how to sign in: device_code | certificate | managed_identity | workload_identity (None: certificate when
    # certificate_path is set, else device_code)
    auth_method: str | None = None
    managed_identity_client_id: str | None = None  # a user-assigned identity; None: the system-assigned one
    federated_token_file: Path | None = None  # workload identity; None: $AZURE_FEDERATED_TOKEN_FILE
    password_public_key: str | None = None  # PEM file or XML key for SecureString parameters
    concurrency: int = 10
    # incremental sync also re-reads statistics and recipients read longer ago than this (a slice per run); 0: off
    sync_refresh_days: int = 7
    request_timeout: float = 960.0
    max_retries: int = 5  # retries of a failed Exchange call (5xx, a reset, a refused connection) before giving up
    device_code_timeout: int = 300
    audit_min_retention_days: int = 365
    leaver_retention_days: int = 0  # keep leavers' mailboxes this long after WhenSoftDeleted (0: no schedule)
    # four-eyes: what a second signed-in admin must approve before it runs (APPROVAL_KINDS; empty: nothing)
    approval_required: tuple[str, ...] = ()
    audit_key_path: Path | None = None  # the audit signing key (default: audit-keys/ beside the database)
    audit_witness: str | None = None  # where anchors are also written: a JSON Lines file, "syslog" or "stdout"
    audit_auto_anchor: bool = False  # anchor the audit log after every change
    audit_ingestion_scope: str | None = (
        None  # token scope of the Logs Ingestion sink (https://monitor.azure.com//.default)
    )
    cost: CostModel = field(default_factory=CostModel)
    org: OrgMapping = field(default_factory=OrgMapping)

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    @property
    def sign_in_method(self) -> str:
        """The sign-in this profile uses (``auth_method``, else inferred from ``certificate_path``)."""
        return self.auth_method or ("certificate" if self.certificate_path is not None else "device_code")

    @property
    def app_only(self) -> bool:
        """Signs in as an application (certificate, managed identity, workload identity), not as a person."""
        return self.sign_in_method != "device_code"

    @property
    def exchange_scopes(self) -> list[str]:
        return [self.exchange_scope or f"{self.exchange_url.rstrip('/')}/.default"]

    @property
    def compliance_scopes(self) -> list[str]:
        return [self.compliance_scope or f"{self.compliance_url.rstrip('/')}/.default"]

    @property
    def database_path(self) -> Path:
        return self.db_path or user_dir("data") / f"{self.name}.db"

    @property
    def store_target(self) -> str:
        """What the store opens: the team store's URL, else the SQLite file."""
        return self.store or str(self.database_path)

    @property
    def token_cache(self) -> Path:
        return self.token_cache_path or user_dir("data") / "tokens" / f"{self.name}.json"

    @property
    def log_path(self) -> Path:
        return self.log_file or user_dir("log") / f"{self.name}.log"


@dataclass(frozen=True)
class Config:
    """The loaded configuration: the file it came from and the active profile."""

    path: Path
    profile: Profile
    profiles: tuple[str, ...] = ()
    file_exists: bool = False


# What a profile's approval_required can name (four-eyes, imm bulk submit/approve): "bulk" is every executed bulk
# job; an action name is every bulk row or single change of that action; a consequence is every release that has
# it (by the cache, as the typed confirmations count them).
APPROVAL_KINDS = ("bulk", "recover", "restore", "release", "set-duration", "last-hold", "unlimited", "ediscovery")
_PATH_KEYS = {
    "ca_bundle",
    "db_path",
    "token_cache_path",
    "log_file",
    "certificate_path",
    "federated_token_file",
    "audit_key_path",
}
SIGN_IN_METHODS = ("device_code", "certificate", "managed_identity", "workload_identity")
_CHOICES = {"auth_method": SIGN_IN_METHODS}
_SCALAR_KEYS = {f.name for f in fields(Profile)} - {"name", "cost", "org"}
_COST_KEYS = {"currency", "per_gb_month", "license_month"}
_ORG_KEYS = {"company_attribute", "department_attribute", "mapping_file"}
_TOP_KEYS = {"default_profile", "profiles"}
# The range of each number key (0 workers would run nothing; a timeout of 0 fails every call; more than 64 calls
# in flight is more than Exchange's budget for one tenant; a timeout of more than a day is a typing error).
_RANGE: dict[str, tuple[float | None, float | None]] = {
    "concurrency": (1, 64),
    "sync_refresh_days": (0, 3650),
    "request_timeout": (1.0, 86400.0),
    "max_retries": (0, 20),
    "device_code_timeout": (1, 3600),
    "audit_min_retention_days": (0, 36500),
    "leaver_retention_days": (0, 36500),
    "per_gb_month": (0.0, 1e6),
    "license_month": (0.0, 1e6),
}


def _line_of(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


def _unknown(path: Path, text: str, key: str, where: str) -> ConfigError:
    line = _line_of(text, key)
    at = f"{path}:{line}" if line else str(path)
    return ConfigError(
        f"{at}: unknown key '{key}' in {where}",
        hint="see README 'Configuration' for the keys a profile takes",
    )


def _number(key: str, value: Any, default: int | float) -> int | float:
    """A number key's value: a TOML number (not a boolean) or ASCII digits from the environment, in range."""
    from imm.numbers import NumberError, check_range, read_decimal, read_whole

    low, high = _RANGE.get(key, (None, None))
    whole = isinstance(default, int)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        kind = "a boolean" if isinstance(value, bool) else type(value).__name__
        words = "a whole number" if whole else "a number"
        raise ValueError(f"it must be {words}, not {kind}")
    try:
        if isinstance(value, str):
            return read_whole(value, low, high) if whole else read_decimal(value, low, high)
        if whole and not isinstance(value, int):
            check_range(value, low, high)  # NaN and infinities are named as such
            raise NumberError("must be a whole number")
        return check_range(value if whole else float(value), low, high, whole=whole)
    except NumberError as exc:
        raise ValueError(f"it {exc.reason}") from None


def _convert(path: Path, text: str, key: str, value: Any, default: Any, *, source: str | None = None) -> Any:
    """Check a file or environment value against the type (and range) of the default, or raise a ConfigError
    naming it (the file, line and key; or ``source``, e.g. "environment variable IMM_CONCURRENCY"). Booleans
    are not numbers, NaN and infinities are refused, numbers are ASCII digits, text must be valid UTF-8."""
    try:
        if isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise ValueError("it is not valid UTF-8 text")
        if key in _PATH_KEYS:
            if value is not None and not isinstance(value, str | Path):
                raise TypeError(type(value).__name__)
            return Path(os.path.expanduser(str(value))) if value not in (None, "") else None
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            words = {"1", "true", "yes", "on", "0", "false", "no", "off"}
            if isinstance(value, str) and value.strip().lower() in words:
                return value.strip().lower() in {"1", "true", "yes", "on"}
            raise ValueError("it must be true or false")
        if isinstance(default, int | float):
            return _number(key, value, default)
        if key == "approval_required":
            return _approval_kinds(value)
        if value is not None and not isinstance(value, str):
            raise TypeError(type(value).__name__)
        if key in _CHOICES and value not in (None, *_CHOICES[key]):
            raise ValueError(f"expected one of: {', '.join(_CHOICES[key])}")
        if key == "store" and value:
            return _store_url(value)
        return value
    except (TypeError, ValueError) as exc:
        if key == "store" and isinstance(value, str):  # never echo a password
            from imm.data.postgres import display_url

            value = display_url(value)
        from imm.textsafe import shorten

        shown = shorten(repr(value), 80)
        if source is not None:
            raise ConfigError(f"{source}: invalid value {shown} ({exc})") from None
        line = _line_of(text, key)
        at = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{at}: key '{shorten(key, 80)}' has an invalid value {shown} ({exc})") from None


def _number_of(path: Path, text: str, range_key: str, key: str, value: Any) -> float:
    """A number under a table key (a licence rate), with the range of ``range_key``."""
    try:
        return float(_number(range_key, value, 0.0))
    except ValueError as exc:
        from imm.textsafe import shorten

        line = _line_of(text, key)
        at = f"{path}:{line}" if line else str(path)
        raise ConfigError(
            f"{at}: key '{shorten(key, 80)}' has an invalid value {shorten(repr(value), 80)} ({exc})"
        ) from None


def _approval_kinds(value: Any) -> tuple[str, ...]:
    """``approval_required``: a TOML array of APPROVAL_KINDS, or the same names separated by commas (the environment,
    ``imm config set``); each once, in the vocabulary's order."""
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        raise ValueError(f"expected a list of: {', '.join(APPROVAL_KINDS)}")
    unknown = [n for n in names if n.lower() not in APPROVAL_KINDS]
    if unknown:
        from imm.textsafe import shorten

        raise ValueError(f"unknown {shorten(repr(unknown[0]), 40)}; expected any of: {', '.join(APPROVAL_KINDS)}")
    wanted = {n.lower() for n in names}
    return tuple(kind for kind in APPROVAL_KINDS if kind in wanted)


def _store_url(value: str) -> str:
    """A team store URL, or ValueError (never one holding a password: the file is no place for it)."""
    from imm.data.postgres import check_store_url, is_store_url

    if not is_store_url(value):
        raise ValueError("expected a postgresql:// URL (leave it out to use the profile's SQLite file)")
    try:
        return check_store_url(value)
    except ImmError as exc:
        raise ValueError(f"{exc.message}; {exc.hint}") from None


def _build_profile(name: str, data: dict[str, Any], path: Path, text: str) -> Profile:
    base = Profile(name=name)
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "cost":
            if not isinstance(value, dict):
                raise _unknown(path, text, key, f"profile '{name}' (expected a table)")
            values["cost"] = _build_cost(value, path, text, name)
        elif key == "org":
            if not isinstance(value, dict):
                raise _unknown(path, text, key, f"profile '{name}' (expected a table)")
            values["org"] = _build_org(value, path, text, name)
        elif key in _SCALAR_KEYS:
            values[key] = _convert(path, text, key, value, getattr(base, key))
        else:
            raise _unknown(path, text, key, f"profile '{name}'")
    return replace(base, **values)


def _build_cost(data: dict[str, Any], path: Path, text: str, name: str) -> CostModel:
    base = CostModel()
    for key in data:
        if key not in _COST_KEYS:
            raise _unknown(path, text, key, f"[profiles.{name}.cost]")
    licences = data.get("license_month") or {}
    if not isinstance(licences, dict):
        raise _unknown(path, text, "license_month", f"[profiles.{name}.cost] (expected a table)")
    rates = dict(base.license_month)
    for licence, rate in licences.items():
        rates[str(licence)] = _number_of(path, text, "license_month", str(licence), rate)
    return CostModel(
        currency=_convert(path, text, "currency", data.get("currency", base.currency), base.currency),
        per_gb_month=float(_convert(path, text, "per_gb_month", data.get("per_gb_month", base.per_gb_month), 0.0)),
        license_month=rates,
    )


def _build_org(data: dict[str, Any], path: Path, text: str, name: str) -> OrgMapping:
    for key in data:
        if key not in _ORG_KEYS:
            raise _unknown(path, text, key, f"[profiles.{name}.org]")
    values = {key: _convert(path, text, key, data.get(key), None) for key in _ORG_KEYS}
    mapping = values["mapping_file"]
    return OrgMapping(
        company_attribute=values["company_attribute"],
        department_attribute=values["department_attribute"],
        mapping_file=Path(os.path.expanduser(mapping)) if mapping else None,
    )


def _read_file(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors write one) is not part of the TOML
    except FileNotFoundError:
        return {}, ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc})") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}", hint="fix the file or run with --config") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(
            f"{path}: malformed TOML: nested too deeply", hint="fix the file or run with --config"
        ) from None


def _env_overrides(env: dict[str, str], path: Path) -> dict[str, tuple[str, Any]]:
    """``IMM_<KEY>`` for each scalar profile key (e.g. ``IMM_TENANT_ID``, ``IMM_CA_BUNDLE``, ``IMM_DB``):
    key -> (the variable's name, its value)."""
    out: dict[str, tuple[str, Any]] = {}
    for key in _SCALAR_KEYS:
        value = env.get(f"IMM_{key.upper()}")
        if value is not None:
            out[key] = (f"IMM_{key.upper()}", value)
    if "IMM_DB" in env:
        out["db_path"] = ("IMM_DB", env["IMM_DB"])
    return out


def load_config(
    config_path: Path | None = None,
    profile_name: str | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    allow_missing: bool = False,
) -> Config:
    """Load the file, pick the profile, apply the environment and then ``overrides`` (command-line flags).

    A file named by ``config_path`` or ``IMM_CONFIG`` must exist (a typo is not silently Microsoft's defaults)
    unless ``allow_missing`` (the commands that create it); the default file may be missing."""
    env = dict(os.environ if env is None else env)
    path = Path(config_path or env.get("IMM_CONFIG") or default_config_path())
    if not allow_missing and (config_path or env.get("IMM_CONFIG")) and not path.exists():
        named = "--config" if config_path else "IMM_CONFIG"
        raise ConfigError(
            f"{path}: no such configuration file (named by {named})",
            hint=f"check the path, or create it with: imm config init --config {path}",
        )
    data, text = _read_file(path)
    for key in data:
        if key not in _TOP_KEYS:
            raise _unknown(path, text, key, "the top level")
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise _unknown(path, text, "profiles", "the top level (expected a table)")
    default_name = _convert(path, text, "default_profile", data.get("default_profile"), None)
    name = profile_name or env.get("IMM_PROFILE") or default_name or DEFAULT_PROFILE
    if name not in profiles and (profile_name or env.get("IMM_PROFILE")) and profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"{path}: no profile named '{name}' (profiles: {known})")
    if name not in profiles and name == default_name and profiles:  # not silently Microsoft's defaults instead
        line = _line_of(text, "default_profile")
        raise ConfigError(
            f"{path}{f':{line}' if line else ''}: default_profile '{name}' names no profile "
            f"(profiles: {', '.join(sorted(profiles))})",
            hint="fix default_profile in the file, or choose one with --profile NAME",
        )
    section = profiles.get(name, {})
    if not isinstance(section, dict):
        raise _unknown(path, text, name, "[profiles] (expected a table)")
    profile = _build_profile(name, section, path, text)
    for key, (variable, value) in _env_overrides(env, path).items():
        source = f"environment variable {variable}"
        profile = replace(profile, **{key: _convert(path, text, key, value, getattr(profile, key), source=source)})
    for key, value in (overrides or {}).items():
        if value is not None:
            source = f"the command-line value for {key}"
            profile = replace(profile, **{key: _convert(path, text, key, value, getattr(profile, key), source=source)})
    return Config(path=path, profile=profile, profiles=tuple(sorted(profiles)), file_exists=bool(text))


def write_profile(path: Path, name: str, values: dict[str, Any], make_default: bool = False) -> None:
    """Add or replace keys of one profile in the file (``imm login``, the simulator, the demo).

    The rest of the file is kept as written, comments and layout included (tomlkit edits it in place).
    """
    import tomlkit

    _read_file(path)  # a malformed or unknown-key file is reported, not rewritten
    text = path.read_text(encoding="utf-8-sig") if path.exists() else ""
    document = tomlkit.parse(text)
    if "profiles" not in document:
        document["profiles"] = tomlkit.table(is_super_table=True)
    profiles: Any = document["profiles"]
    if name not in profiles:
        profiles[name] = tomlkit.table()
    for key, value in values.items():
        profiles[name][key] = _plain(value)
    if make_default:
        document["default_profile"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomlkit.dumps(document), encoding="utf-8")


def _plain(value: Any) -> Any:
    """A value TOML can hold: paths as text, nested tables as dicts."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ----- reading and checking every profile (imm config validate, imm profile list, imm config set) -----

PROFILE_KEYS: tuple[str, ...] = (
    *sorted(_SCALAR_KEYS),
    *(f"cost.{k}" for k in sorted(_COST_KEYS - {"license_month"})),
    *(f"org.{k}" for k in sorted(_ORG_KEYS)),
)


@dataclass(frozen=True)
class ProfileCheck:
    """One profile of the file, checked: its settings, or the problem that stops it loading."""

    name: str
    profile: Profile | None
    error: str | None = None


def profile_names(path: Path) -> list[str]:
    """The names of the profiles in the file at ``path`` (none when it is missing), sorted."""
    data, _ = _read_file(path)
    profiles = data.get("profiles", {})
    return sorted(profiles) if isinstance(profiles, dict) else []


def check_file(path: Path) -> tuple[str | None, list[ProfileCheck], list[str]]:
    """Every profile of the file, each built and checked on its own (an unknown key in a profile other than the
    one in use is found too): (default_profile, the profiles, problems of the file itself)."""
    data, text = _read_file(path)
    problems: list[str] = []
    for key in data:
        if key not in _TOP_KEYS:
            problems.append(_unknown(path, text, key, "the top level").message)
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        return None, [], [*problems, _unknown(path, text, "profiles", "the top level (expected a table)").message]
    default_name = data.get("default_profile")
    if default_name is not None and (not isinstance(default_name, str) or default_name not in profiles):
        line = _line_of(text, "default_profile")
        problems.append(
            f"{path}{f':{line}' if line else ''}: default_profile {default_name!r} names no profile "
            f"(profiles: {', '.join(sorted(profiles)) or 'none'})"
        )
        default_name = None
    checks: list[ProfileCheck] = []
    for name in sorted(profiles):
        section = profiles[name]
        try:
            if not isinstance(section, dict):
                raise _unknown(path, text, name, "[profiles] (expected a table)")
            checks.append(ProfileCheck(name, _build_profile(name, section, path, text)))
        except ConfigError as exc:
            checks.append(ProfileCheck(name, None, exc.message))
    return default_name, checks, problems


def env_problems(env: dict[str, str] | None = None) -> list[str]:
    """``IMM_*`` variables whose values would not load, each named as the variable it is."""
    env = dict(os.environ if env is None else env)
    problems = []
    base = Profile()
    for key, (variable, value) in _env_overrides(env, Path(".")).items():
        try:
            _convert(Path("."), "", key, value, getattr(base, key), source=f"environment variable {variable}")
        except ConfigError as exc:
            problems.append(exc.message)
    return problems


def parse_setting(key: str, value: str) -> Any:
    """``imm config set``: the value for ``key`` (``tenant_id``, ``concurrency``, ``cost.currency``…) with the
    type the key takes, or a ConfigError naming the known keys."""
    if key not in PROFILE_KEYS:
        raise ConfigError(
            f"unknown key '{key}'",
            hint=f"a profile takes: {', '.join(PROFILE_KEYS)}",
        )
    leaf = key.split(".", 1)[-1]
    if key.startswith("cost."):
        default: Any = getattr(CostModel(), leaf)
    elif key.startswith("org."):
        default = None
    else:
        default = getattr(Profile(), leaf)
    converted = _convert(Path("."), "", leaf, value, default, source=f"the value for {key}")
    if isinstance(converted, Path):
        return str(converted)
    return converted


def set_profile_value(path: Path, name: str, key: str, value: Any) -> None:
    """Set one key (``concurrency``, ``cost.currency``…) of one profile in the file, keeping the rest as written;
    the file must still load afterwards, else it is left as it was and the problem raised."""
    import tomlkit

    _read_file(path)
    before = path.read_text(encoding="utf-8") if path.exists() else None
    document = tomlkit.parse(before or "")
    if "profiles" not in document:
        document["profiles"] = tomlkit.table(is_super_table=True)
    profiles: Any = document["profiles"]
    if name not in profiles:
        profiles[name] = tomlkit.table()
    table: Any = profiles[name]
    *parents, leaf = key.split(".")
    for part in parents:
        if part not in table:
            table[part] = tomlkit.table()
        table = table[part]
    table[leaf] = _plain(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    checks = {c.name: c for c in check_file(path)[1]}
    problem = checks[name].error if name in checks else None
    if problem:
        if before is None:
            path.unlink()
        else:
            path.write_text(before, encoding="utf-8")
        raise ConfigError(problem)
