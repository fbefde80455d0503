"""``imm config init|set|validate`` and ``imm profile list``, a missing --config file, and environment variables
named as such in errors; the real ``imm`` process on the test's own imm home."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from tests.conftest import run_imm

from imm.config import load_config


def _config(home: Path) -> Path:
    return home / "config" / "config.toml"


def test_config_init_without_a_terminal_writes_a_commented_file_that_loads(imm_home: Path) -> None:
    result = run_imm("config", "init", "--tenant", "contoso.onmicrosoft.com", input="")
    assert result.exit_code == 0, result.stderr
    path = _config(imm_home)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# imm configuration, written by 'imm config init'")
    assert "# concurrency = 10" in text and 'auth_method = "device_code"' in text
    data = tomllib.loads(text)
    assert data["default_profile"] == "default"
    assert data["profiles"]["default"] == {"tenant_id": "contoso.onmicrosoft.com", "auth_method": "device_code"}
    assert "Next: imm login" in result.stderr
    again = run_imm("config", "init", "--tenant", "other.onmicrosoft.com", input="")
    assert again.exit_code == 2
    assert "profile 'default' is already there" in again.stderr
    assert path.read_text(encoding="utf-8") == text
    forced = run_imm("config", "init", "--tenant", "other.onmicrosoft.com", "--force", input="")
    assert forced.exit_code == 0, forced.stderr
    assert load_config(path, env={}).profile.tenant_id == "other.onmicrosoft.com"


def test_config_init_adds_a_workload_identity_profile_to_an_existing_file(imm_home: Path) -> None:
    assert run_imm("config", "init", "--tenant", "contoso.onmicrosoft.com", input="").exit_code == 0
    result = run_imm(
        "--profile",
        "ci",
        "config",
        "init",
        "--tenant",
        "contoso.onmicrosoft.com",
        "--auth-method",
        "workload_identity",
        "--client-id",
        "11111111-2222-3333-4444-555555555555",
        input="",
    )
    assert result.exit_code == 0, result.stderr
    config = load_config(_config(imm_home), "ci", env={})
    assert config.profile.sign_in_method == "workload_identity"
    assert config.profile.app_only and config.profiles == ("ci", "default")
    assert load_config(_config(imm_home), env={}).profile.name == "default"  # the default is kept
    missing = run_imm("--profile", "c2", "config", "init", "--auth-method", "workload_identity", input="")
    assert missing.exit_code == 2 and "--client-id" in missing.stderr


def test_config_set_checks_the_value_and_keeps_the_file_as_written(imm_home: Path) -> None:
    path = _config(imm_home)
    path.parent.mkdir(parents=True)
    path.write_text('# my notes\ndefault_profile = "a"\n\n[profiles.a]\ntenant_id = "x"  # keep me\n', "utf-8")
    assert run_imm("config", "set", "concurrency", "4").exit_code == 0
    assert run_imm("config", "set", "cost.currency", "USD").exit_code == 0
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# my notes\n") and 'tenant_id = "x"  # keep me' in text
    profile = load_config(path, env={}).profile
    assert (profile.concurrency, profile.cost.currency) == (4, "USD")
    bad = run_imm("config", "set", "concurrency", "lots")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("Error: the value for concurrency: invalid value 'lots'")
    assert run_imm("config", "set", "concurrency", "0").exit_code == 2
    unknown = run_imm("config", "set", "tenant", "y")
    assert unknown.exit_code == 2 and "unknown key 'tenant'" in unknown.stderr and "tenant_id" in unknown.stderr
    method = run_imm("config", "set", "auth_method", "password")
    assert method.exit_code == 2 and "managed_identity" in method.stderr
    assert path.read_text(encoding="utf-8") == text  # refused values change nothing


def test_config_validate_checks_every_profile_not_only_the_one_in_use(imm_home: Path) -> None:
    path = _config(imm_home)
    path.parent.mkdir(parents=True)
    path.write_text('default_profile = "a"\n[profiles.a]\ntenant_id = "x"\n[profiles.b]\ntenat_id = "y"\n', "utf-8")
    assert run_imm("list").exit_code == 0  # the profile in use loads
    result = run_imm("config", "validate", "-o", "json")
    assert result.exit_code == 2
    rows = json.loads(result.stdout)
    assert rows == [
        {"profile": "a", "default": True, "valid": True, "problem": None},
        {
            "profile": "b",
            "default": False,
            "valid": False,
            "problem": f"{path}:5: unknown key 'tenat_id' in profile 'b'",
        },
    ]
    error = json.loads(result.stderr)["error"]
    assert (error["code"], error["exit_code"], error["message"]) == (
        "config_error",
        2,
        "1 problem in the configuration",
    )
    path.write_text('default_profile = "a"\n[profiles.a]\ntenant_id = "x"\n', "utf-8")
    ok = run_imm("config", "validate")
    assert ok.exit_code == 0, ok.stderr
    env = run_imm("config", "validate", "-o", "json", env={"IMM_CONCURRENCY": "abc"})
    assert env.exit_code == 2
    assert json.loads(env.stdout)[-1]["problem"] == (
        "environment variable IMM_CONCURRENCY: invalid value 'abc' "
        "(it must be a whole number in ASCII digits from 1 to 64)"
    )


def test_an_environment_variable_is_named_as_such_not_as_a_key_of_the_file(imm_home: Path) -> None:
    result = run_imm("list", env={"IMM_CONCURRENCY": "abc"})
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: environment variable IMM_CONCURRENCY: invalid value 'abc'")
    assert "config.toml" not in result.stderr


def test_a_missing_config_file_is_an_error_and_creates_nothing(imm_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    result = run_imm("--config", str(missing), "--profile", "foo", "list")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"Error: {missing}: no such configuration file (named by --config)"
    assert f"imm config init --config {missing}" in result.stderr
    assert not (imm_home / "data" / "foo.db").exists() and not missing.exists()
    by_env = run_imm("list", env={"IMM_CONFIG": str(missing)})
    assert by_env.exit_code == 2 and "named by IMM_CONFIG" in by_env.stderr
    assert run_imm("--config", str(missing), "config", "validate").exit_code == 2
    created = run_imm("--config", str(missing), "config", "init", "--tenant", "t.onmicrosoft.com", input="")
    assert created.exit_code == 0 and missing.exists()
    assert run_imm("--config", str(missing), "list").exit_code == 0


def test_profile_list_shows_every_profile_and_the_default(imm_home: Path) -> None:
    path = _config(imm_home)
    path.parent.mkdir(parents=True)
    path.write_text(
        'default_profile = "b"\n[profiles.a]\ntenant_id = "x"\nauth_method = "managed_identity"\n'
        '[profiles.b]\ntenant_id = "y"\n[profiles.c]\nconcurrency = "many"\n',
        "utf-8",
    )
    result = run_imm("profile", "list", "-o", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["name"], r["default"], r["tenant_id"], r["sign_in"]) for r in rows] == [
        ("a", False, "x", "managed_identity"),
        ("b", True, "y", "device_code"),
        ("c", False, None, None),
    ]
    assert rows[1]["database"] == str(imm_home / "data" / "b.db")
    assert "key 'concurrency' has an invalid value 'many'" in rows[2]["problem"]
    names = run_imm("profile", "list", "-o", "json", "--query", "[?default].name")
    assert json.loads(names.stdout) == ["b"]
