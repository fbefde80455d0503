"""Help is part of the product: every command that exists has a description and an example; ``--version`` works;
listing the commands stays fast (command modules import only click and light ``imm.cli`` modules at the top)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata

import click
import pytest
from click.testing import CliRunner

from conftest import run_imm
from imm import __version__
from imm.cli.main import COMMANDS, cli
from imm.data.migrations import MIGRATIONS

HEAVY_MODULES = ["rich", "msal", "httpx", "sqlite3", "jmespath", "openpyxl", "cryptography", "imm.data", "imm.services"]


def command_paths() -> list[list[str]]:
    """["list"], ["cache", "stats"], … for every registered command whose module exists."""
    ctx = click.Context(cli)
    paths: list[list[str]] = []
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        if command is None:
            continue
        paths.append([name])
        if isinstance(command, click.Group):
            paths.extend([name, sub] for sub in command.commands)
    return paths


PATHS = command_paths()


def test_the_cache_and_config_commands_are_registered() -> None:
    assert {"list", "search", "show", "cache", "config"} <= {p[0] for p in PATHS}
    assert ["cache", "stats"] in PATHS and ["cache", "clear"] in PATHS
    assert ["config", "show"] in PATHS and ["config", "path"] in PATHS


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_every_command_has_help_with_an_example(path: list[str]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: cli {' '.join(path)}") or result.stdout.startswith("Usage: ")
    body = result.stdout.split("\n\n", 2)
    assert len(body) > 1 and body[1].strip(), f"`imm {' '.join(path)}` has no description"
    assert "Example" in result.stdout, f"`imm {' '.join(path)} --help` shows no example"
    assert f"imm {path[0]}" in result.stdout.split("Example", 1)[1], "the example should show the command itself"


def test_every_command_takes_the_global_options() -> None:
    result = CliRunner().invoke(cli, ["list", "--help"])
    for option in ("--profile", "--config", "--db", "--verbose", "--quiet", "--output", "--query"):
        assert option in result.stdout


def test_version_and_top_level_help() -> None:
    version = run_imm("--version")
    expected = (
        f"imm, version {__version__}\n"
        f"Python {platform.python_version()}\n"
        f"msal {metadata.version('msal')}\n"
        f"httpx {metadata.version('httpx')}\n"
        f"database schema {MIGRATIONS[-1].name} ({len(MIGRATIONS)} migrations)\n"
    )
    assert (version.exit_code, version.stdout, version.stderr) == (0, expected, "")
    top = run_imm("--help")
    assert top.exit_code == 0
    for name in ("list", "search", "show", "cache", "config"):
        assert f"\n  {name} " in top.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = run_imm("lisst")
    assert result.exit_code == 2
    assert "No such command 'lisst'" in result.stderr


def test_listing_commands_imports_nothing_heavy() -> None:
    """Help must stay fast: loading every command module pulls in none of the heavy libraries."""
    code = (
        "import sys, json\n"
        "from imm.cli.main import COMMANDS, cli\n"
        "import click\n"
        "ctx = click.Context(cli)\n"
        "loaded = [n for n in COMMANDS if cli.get_command(ctx, n) is not None]\n"
        f"heavy = [m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {HEAVY_MODULES!r})]\n"
        "print(json.dumps({'loaded': loaded, 'heavy': sorted(heavy)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "list" in report["loaded"]
    assert report["heavy"] == []
