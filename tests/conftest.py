"""Shared fixtures: every test runs with its own imm home, and end-to-end tests get a served simulated tenant.

Tests that trust the simulator's CA say so explicitly through the profile's ``ca_bundle`` setting (never through
``REQUESTS_CA_BUNDLE``), so the machine's own CA variables cannot leak into what is tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imm.config import write_profile
from imm.simulator import Simulator, SimulatorConfig


@pytest.fixture(autouse=True)
def imm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every platformdirs path of imm at a fresh folder; no test touches real state."""
    home = tmp_path / "imm-home"
    monkeypatch.setenv("IMM_USER_PATH", str(home))
    for name in ("IMM_PROFILE", "IMM_CONFIG", "IMM_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IMM_RAISE_ERRORS", "")
    return home


def make_simulator(tmp_path: Path, **options: object) -> Simulator:
    """A simulator with its own data folder; options override SimulatorConfig fields."""
    config = SimulatorConfig(data_dir=tmp_path / "sim", **options)  # type: ignore[arg-type]
    return Simulator(config)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Simulator]:
    """A small simulated tenant (200 mailboxes, auto-approving sign-in) served for one test."""
    with make_simulator(tmp_path, mailboxes=200, auto_approve_after=0.0) as sim:
        yield sim


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_imm(*args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 120) -> CliResult:
    """Run the real ``imm`` console process (``python -m imm``) with the test's environment."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("IMM_RAISE_ERRORS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "imm", *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def sim_profile(simulator: Simulator, imm_home: Path) -> str:
    """Writes a profile named 'sim' pointing at the served simulator into the test's config file."""
    write_profile(imm_home / "config" / "config.toml", "sim", simulator.profile_values(), make_default=True)
    return "sim"


# ------------------------------------------------------------------------------------------ the store (two dialects)
@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    """One throwaway PostgreSQL cluster per test session (per xdist worker); skipped, with the reason, when this
    machine has no PostgreSQL, unless IMM_TEST_POSTGRESQL=required (CI), where that is a failure."""
    from pgserver import REQUIRED, PgCluster, PgUnavailable

    try:
        cluster = PgCluster().start()
    except PgUnavailable as exc:
        if REQUIRED:
            pytest.fail(f"PostgreSQL is required (IMM_TEST_POSTGRESQL=required) but: {exc}")
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    yield cluster
    cluster.stop()


STORES = ["sqlite", "postgresql"]


@pytest.fixture(params=STORES)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a store test's database lives: an SQLite file, or a fresh database of the session's cluster."""
    if request.param == "sqlite":
        yield str(tmp_path / "imm.db")
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database()
    yield url
    cluster.drop_database(url)
