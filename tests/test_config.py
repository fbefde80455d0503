"""Configuration: the TOML file, IMM_* environment, flags, profiles; and ``imm config show|path`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_imm
from imm.config import (
    DEFAULT_CLIENT_ID,
    DEFAULT_LICENSE_RATES,
    Profile,
    default_config_path,
    load_config,
    user_dir,
    write_profile,
)
from imm.errors import ConfigError, ExitStatus

FILE = """\
default_profile = "contoso"

[profiles.contoso]
tenant_id = "contoso.onmicrosoft.com"
concurrency = 4
ca_bundle = "~/ca.pem"

[profiles.contoso.cost]
currency = "USD"
per_gb_month = 0.05

[profiles.contoso.cost.license_month]
"Exchange Online Plan 2" = 8.5

[profiles.contoso.org]
company_attribute = "CustomAttribute5"

[profiles.fabrikam]
tenant_id = "fabrikam.onmicrosoft.com"
backend = "powershell"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(FILE, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config = load_config(env={})  # the default file (under the test's IMM_USER_PATH) may be missing
    assert config.file_exists is False
    config = load_config(tmp_path / "none.toml", env={}, allow_missing=True)
    assert config.file_exists is False
    assert config.profiles == ()
    profile = config.profile
    assert profile == Profile()
    assert profile.name == "default"
    assert profile.client_id == DEFAULT_CLIENT_ID == "fb78d390-0c51-40cd-8e17-fdbfab77341b"
    assert profile.authority == "https://login.microsoftonline.com/organizations"
    assert profile.exchange_scopes == ["https://outlook.office365.com/.default"]
    assert profile.compliance_scopes == ["https://ps.compliance.protection.outlook.com/.default"]
    assert profile.cost.license_month == DEFAULT_LICENSE_RATES


def test_default_profile_from_the_file(config_file: Path, imm_home: Path) -> None:
    config = load_config(config_file, env={})
    profile = config.profile
    assert config.file_exists is True
    assert config.profiles == ("contoso", "fabrikam")
    assert (profile.name, profile.tenant_id, profile.concurrency) == ("contoso", "contoso.onmicrosoft.com", 4)
    assert profile.ca_bundle == Path.home() / "ca.pem"
    assert profile.cost.currency == "USD"
    assert profile.cost.per_gb_month == 0.05
    assert profile.cost.license_month == {**DEFAULT_LICENSE_RATES, "Exchange Online Plan 2": 8.5}
    assert profile.org.company_attribute == "CustomAttribute5"
    assert profile.database_path == imm_home / "data" / "contoso.db"
    assert profile.token_cache == imm_home / "data" / "tokens" / "contoso.json"
    assert profile.log_path == imm_home / "log" / "contoso.log"


def test_precedence_flags_over_environment_over_file(config_file: Path) -> None:
    env = {"IMM_PROFILE": "fabrikam", "IMM_CONCURRENCY": "7", "IMM_DB": "/data/x.db"}
    profile = load_config(config_file, env=env).profile
    assert (profile.name, profile.backend, profile.concurrency) == ("fabrikam", "powershell", 7)
    assert profile.database_path == Path("/data/x.db")
    flagged = load_config(config_file, "contoso", env=env, overrides={"db_path": "/flag.db", "concurrency": 2})
    assert flagged.profile.name == "contoso"
    assert flagged.profile.database_path == Path("/flag.db")
    assert flagged.profile.concurrency == 2


def test_config_path_from_environment(config_file: Path) -> None:
    assert load_config(env={"IMM_CONFIG": str(config_file)}).profile.name == "contoso"


def test_user_dir_follows_imm_user_path(imm_home: Path) -> None:
    assert user_dir("config") == imm_home / "config"
    assert user_dir("data") == imm_home / "data"
    assert default_config_path() == imm_home / "config" / "config.toml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('bogus = 1\n[profiles.a]\ntenant_id = "x"\n', "{path}:1: unknown key 'bogus' in the top level"),
        ('[profiles.a]\ntenant_id = "x"\ntennant = "y"\n', "{path}:3: unknown key 'tennant' in profile 'a'"),
        ("[profiles.a.cost]\ncurency = 'EUR'\n", "{path}:2: unknown key 'curency' in [profiles.a.cost]"),
        ("[profiles.a.org]\ncompany = 'x'\n", "{path}:2: unknown key 'company' in [profiles.a.org]"),
        (
            "[profiles.a]\nconcurrency = 'many'\n",
            "{path}:2: key 'concurrency' has an invalid value 'many' "
            "(it must be a whole number in ASCII digits from 1 to 64)",
        ),
        (
            "[profiles.a\ntenant_id = 'x'\n",
            "{path}: malformed TOML: Expected ']' at the end of a table declaration (at line 1, column 12)",
        ),
        ('[profiles.a]\ntenant_id = "x\n', "{path}: malformed TOML: Illegal character '\\n' (at line 2, column 15)"),
        (
            "[profiles.a.cost]\nlicense_month = 5\n",
            "{path}:2: unknown key 'license_month' in [profiles.a.cost] (expected a table)",
        ),
        ("[profiles.a.cost]\ncurrency = 5\n", "{path}:2: key 'currency' has an invalid value 5 (int)"),
        ("[profiles.a.org]\nmapping_file = 5\n", "{path}:2: key 'mapping_file' has an invalid value 5 (int)"),
        (
            "[profiles.a.org]\ncompany_attribute = [1]\n",
            "{path}:2: key 'company_attribute' has an invalid value [1] (list)",
        ),
        ("default_profile = 5\n[profiles.a]\n", "{path}:1: key 'default_profile' has an invalid value 5 (int)"),
        (
            "[profiles.a]\nconcurrency = 0\n",
            "{path}:2: key 'concurrency' has an invalid value 0 (it must be a whole number from 1 to 64)",
        ),
        (
            "[profiles.a]\nrequest_timeout = -1\n",
            "{path}:2: key 'request_timeout' has an invalid value -1 (it must be a number from 1 to 86400)",
        ),
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "{path}: malformed TOML: nested too deeply"),
    ],
)
def test_bad_files_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, "a", env={})
    assert info.value.message == message.format(path=path)
    assert info.value.exit_code == ExitStatus.USAGE


def test_unknown_profile_lists_the_known_ones(config_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config_file, "nope", env={})
    assert info.value.message == f"{config_file}: no profile named 'nope' (profiles: contoso, fabrikam)"


def test_a_default_profile_naming_no_profile_is_an_error_not_microsofts_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('default_profile = "prod"\n\n[profiles.sim]\ntenant_id = "t"\n', encoding="utf-8")
    result = run_imm("list", "--config", str(path))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"Error: {path}:1: default_profile 'prod' names no profile (profiles: sim)",
        "Hint: fix default_profile in the file, or choose one with --profile NAME",
    ]
    assert run_imm("list", "--config", str(path), "--profile", "sim").exit_code == 0  # --profile still works


def test_write_profile_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    write_profile(
        path, "sim", {"tenant_id": "t", "ca_bundle": tmp_path / "ca.pem", "concurrency": 3}, make_default=True
    )
    write_profile(path, "other", {"tenant_id": 'quote"d'})
    config = load_config(path, env={})
    assert config.profiles == ("other", "sim")
    assert (config.profile.name, config.profile.tenant_id, config.profile.concurrency) == ("sim", "t", 3)
    assert config.profile.ca_bundle == tmp_path / "ca.pem"
    assert load_config(path, "other", env={}).profile.tenant_id == 'quote"d'


# ------------------------------------------------------------------------------------------------ CLI
def test_config_path_command(imm_home: Path, tmp_path: Path) -> None:
    result = run_imm("config", "path")
    assert (result.exit_code, result.stdout) == (0, f"{imm_home / 'config' / 'config.toml'}\n")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[[", encoding="utf-8")
    # the path is shown even when the file cannot be read, so the user can find and fix it
    assert run_imm("config", "path", "--config", str(broken)).stdout == f"{broken}\n"
    assert run_imm("config", "path", env={"IMM_CONFIG": str(broken)}).stdout == f"{broken}\n"


def test_config_show_json(config_file: Path, imm_home: Path) -> None:
    result = run_imm("config", "show", "--config", str(config_file), "--output", "json", env={"IMM_CONCURRENCY": "9"})
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["config_file"] == str(config_file)
    assert data["profile"] == "contoso"
    assert data["profiles"] == ["contoso", "fabrikam"]
    assert data["tenant_id"] == "contoso.onmicrosoft.com"
    assert data["concurrency"] == 9
    assert data["authority"] == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    assert data["database"] == str(imm_home / "data" / "contoso.db")
    assert data["cost"]["license_month"]["Exchange Online Plan 2"] == 8.5
    assert data["certificate_password_env"] == "IMM_CERTIFICATE_PASSWORD"
    assert data["certificate_password_set"] is False


def test_config_show_never_prints_the_certificate_password(config_file: Path) -> None:
    secret = "Sup3r-Secret-Pfx-Pass!"
    result = run_imm("config", "show", "--config", str(config_file), env={"IMM_CERTIFICATE_PASSWORD": secret})
    assert result.exit_code == 0
    assert secret not in result.stdout + result.stderr
    assert "certificate_password_set                   yes" in result.stdout
    assert "cost.per_gb_month                          0.05" in result.stdout


def test_config_show_with_a_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('default_profile = "a"\n[profiles.a\ntenant_id = "x"\n', encoding="utf-8")
    result = run_imm("config", "show", "--config", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"Error: {path}: malformed TOML: Expected ']' at the end of a table declaration (at line 2, column 12)",
        "Hint: fix the file or run with --config",
    ]


def test_unknown_key_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('default_profile = "a"\n\n[profiles.a]\ntenant_id = "x"\ncolour = "blue"\n', encoding="utf-8")
    result = run_imm("list", "--config", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"Error: {path}:5: unknown key 'colour' in profile 'a'"
    assert "Traceback" not in result.stderr
    as_json = run_imm("config", "show", "--config", str(path), "--output", "json")
    assert as_json.exit_code == 2
    assert json.loads(as_json.stderr)["error"] == {
        "code": "config_error",
        "message": f"{path}:5: unknown key 'colour' in profile 'a'",
        "exit_code": 2,
        "hint": "see README 'Configuration' for the keys a profile takes",
    }


def test_wrong_value_types_through_the_cli_are_one_line(tmp_path: Path) -> None:
    """A table where a number belongs, a number where a path belongs, or 0 workers: exit 2, no traceback."""
    path = tmp_path / "config.toml"
    path.write_text('default_profile = "a"\n[profiles.a.cost]\nlicense_month = 7\n', encoding="utf-8")
    result = run_imm("list", "--config", str(path))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"Error: {path}:3: unknown key 'license_month' in [profiles.a.cost] (expected a table)",
        "Hint: see README 'Configuration' for the keys a profile takes",
    ]
    path.write_text('default_profile = "a"\n[profiles.a]\n', encoding="utf-8")
    workers = run_imm("list", "--config", str(path), env={"IMM_CONCURRENCY": "0"})
    assert (workers.exit_code, workers.stdout) == (2, "")
    assert workers.stderr == (
        "Error: environment variable IMM_CONCURRENCY: invalid value '0' "
        "(it must be a whole number in ASCII digits from 1 to 64)\n"
    )


def test_the_readme_example_configuration_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in readme.split("```toml\n")[1:]]
    example = next(b for b in blocks if "[profiles.contoso]" in b)  # the configuration section's example
    path = tmp_path / "config.toml"
    path.write_text(example, encoding="utf-8")
    config = load_config(path, None, env={})
    assert (config.profile.name, config.profile.tenant_id, config.profile.concurrency) == (
        "contoso",
        "contoso.onmicrosoft.com",
        10,
    )
    assert config.profile.cost.license_month["Exchange Online Plan 2"] == 7.0
    assert config.profile.org.company_attribute == "CustomAttribute5"


def test_write_profile_keeps_the_rest_of_the_file_as_written(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '# my tenants\n[profiles.contoso]\ntenant_id = "contoso.onmicrosoft.com"  # prod\n\n'
        '[profiles.contoso.cost]\ncurrency = "USD"\n',
        encoding="utf-8",
    )
    write_profile(path, "contoso", {"tenant_id": "6f1b7c2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f"})
    write_profile(
        path,
        "sim",
        {"ca_bundle": tmp_path / "ca.pem", "org": {"company_attribute": "CustomAttribute5"}},
        make_default=True,
    )

    assert path.read_text(encoding="utf-8") == (
        '# my tenants\ndefault_profile = "sim"\n\n[profiles.contoso]\n'
        'tenant_id = "6f1b7c2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f"  # prod\n\n[profiles.contoso.cost]\ncurrency = "USD"\n\n'
        f'[profiles.sim]\nca_bundle = "{tmp_path / "ca.pem"}"\n\n'
        '[profiles.sim.org]\ncompany_attribute = "CustomAttribute5"\n'
    )
    config = load_config(path, None, env={})
    assert (config.profile.name, config.profile.org.company_attribute) == ("sim", "CustomAttribute5")
    assert load_config(path, "contoso", env={}).profile.cost.currency == "USD"


def test_approval_required_takes_the_vocabulary_only(tmp_path: Path) -> None:
    from imm.config import ConfigError, load_config

    config = tmp_path / "config.toml"
    config.write_text('[profiles.default]\napproval_required = ["recover", "bulk", "recover"]\n', encoding="utf-8")
    assert load_config(config).profile.approval_required == ("bulk", "recover")
    env = {"IMM_APPROVAL_REQUIRED": "last-hold, ediscovery"}
    assert load_config(config, env=env).profile.approval_required == ("last-hold", "ediscovery")
    config.write_text('[profiles.default]\napproval_required = ["bulk", "purge"]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert info.value.message == (
        f"{config}:2: key 'approval_required' has an invalid value ['bulk', 'purge'] (unknown 'purge'; expected any "
        "of: bulk, recover, restore, release, set-duration, last-hold, unlimited, ediscovery)"
    )
