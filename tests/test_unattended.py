"""Unattended runs: no interactive sign-in without a terminal, managed identity and workload identity federation
against the simulated Entra ID, progress as log lines off a terminal. Every run is the real ``imm`` process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import run_imm

from imm.config import write_profile
from imm.simulator import Simulator
from imm.simulator.workload import DEFAULT_FEDERATED_SUBJECT


def _config(home: Path) -> Path:
    return home / "config" / "config.toml"


def _run_closed_stdin(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``imm`` with stdin closed (/dev/null, as cron and CI give it) and the time it took."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "imm", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.monotonic() - started


@pytest.mark.parametrize("flag", [(), ("--no-input",)])
def test_no_token_and_no_terminal_exits_3_at_once_naming_the_login_command(
    simulator: Simulator, sim_profile: str, flag: tuple[str, ...]
) -> None:
    proc, seconds = _run_closed_stdin(*flag, "--profile", "sim", "sync")
    assert proc.returncode == 3, proc.stderr
    assert "does not start an interactive sign-in" in proc.stderr
    assert "imm --profile sim login" in proc.stderr
    # no device code was asked for, so nothing waited for a person (the device code wait is 300 s)
    assert simulator.identity.counters["device_authorization"] == 0
    assert seconds < 10, f"took {seconds:.1f} s"
    assert "To sign in" not in proc.stderr


def test_no_input_also_stops_imm_login(simulator: Simulator, sim_profile: str) -> None:
    result = run_imm("login", "--no-input")
    assert result.exit_code == 3
    assert "imm login" in result.stderr
    assert simulator.identity.counters["device_authorization"] == 0


def test_imm_login_without_a_terminal_still_runs_the_device_code_flow(simulator: Simulator, sim_profile: str) -> None:
    """``imm login`` is the command that signs in: a piped stdin does not stop it (only --no-input does)."""
    result = run_imm("login", input="")
    assert result.exit_code == 0, result.stderr
    assert simulator.identity.counters["device_authorization"] == 1
    again, _ = _run_closed_stdin("sync")
    assert again.returncode == 0, again.stderr


def _app_only_profile(simulator: Simulator, home: Path, **values: object) -> None:
    write_profile(_config(home), "auto", {**simulator.profile_values(), **values}, make_default=True)


def _callers(simulator: Simulator) -> set[str]:
    return {str(e["caller"]) for e in simulator.exchange.request_log if e.get("caller")}


def test_managed_identity_of_azure_automation_runs_a_sync(simulator: Simulator, imm_home: Path) -> None:
    """Azure Automation and App Service name their endpoint in IDENTITY_ENDPOINT / IDENTITY_HEADER (msal)."""
    _app_only_profile(simulator, imm_home, auth_method="managed_identity")
    env = {
        "IDENTITY_ENDPOINT": f"{simulator.base_url}/msi/token",
        "IDENTITY_HEADER": simulator.workloads.identity_header,
    }
    result = run_imm("sync", "--no-input", env=env)
    assert result.exit_code == 0, result.stderr
    assert simulator.workloads.counters["msi"] >= 1
    assert simulator.identity.counters["token"] == 0  # no OAuth grant: the platform's endpoint issued the tokens
    assert _callers(simulator) == {f"app:{simulator.workloads.system_assigned.client_id}"}
    anchors = {str(e["anchor"]) for e in simulator.exchange.request_log}
    assert all(a.startswith("APP:") for a in anchors), anchors
    listed = run_imm("list", "--limit", "1", "-o", "json")
    assert listed.exit_code == 0 and listed.stdout.strip() not in {"", "[]"}


def test_managed_identity_wrong_identity_header_is_a_sign_in_error(simulator: Simulator, imm_home: Path) -> None:
    _app_only_profile(simulator, imm_home, auth_method="managed_identity")
    env = {"IDENTITY_ENDPOINT": f"{simulator.base_url}/msi/token", "IDENTITY_HEADER": "not-the-secret"}
    result = run_imm("sync", "--no-input", env=env)
    assert result.exit_code == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert not _callers(simulator)


def test_user_assigned_managed_identity_on_an_azure_vm_runs_a_sync(simulator: Simulator, imm_home: Path) -> None:
    """The VM's instance metadata service; msal moves it from 169.254.169.254 with AZURE_POD_IDENTITY_AUTHORITY_HOST."""
    user_assigned = simulator.workloads.user_assigned.client_id
    _app_only_profile(simulator, imm_home, auth_method="managed_identity", managed_identity_client_id=user_assigned)
    env = {"AZURE_POD_IDENTITY_AUTHORITY_HOST": simulator.base_url}
    result = run_imm("sync", "--no-input", env=env)
    assert result.exit_code == 0, result.stderr
    assert simulator.workloads.counters["imds"] >= 1
    assert _callers(simulator) == {f"app:{user_assigned}"}


def test_workload_identity_federation_runs_a_sync(simulator: Simulator, imm_home: Path, tmp_path: Path) -> None:
    """A federated token file (as the Kubernetes webhook or a CI step writes it) is the client assertion."""
    token_file = tmp_path / "federated-token"
    token_file.write_text(simulator.workloads.issue_federated_token(DEFAULT_FEDERATED_SUBJECT), encoding="utf-8")
    app_id = simulator.identity.automation_client_id
    _app_only_profile(simulator, imm_home, auth_method="workload_identity", client_id=app_id)
    result = run_imm("sync", "--no-input", env={"AZURE_FEDERATED_TOKEN_FILE": str(token_file)})
    assert result.exit_code == 0, result.stderr
    assert simulator.workloads.counters["federated"] >= 1
    assert simulator.identity.counters["client_credentials"] >= 1
    assert _callers(simulator) == {f"app:{app_id}"}
    assert token_file.read_text(encoding="utf-8") not in (result.stdout + result.stderr)


def test_workload_identity_with_a_subject_not_trusted_is_refused(
    simulator: Simulator, imm_home: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "federated-token"
    token_file.write_text(simulator.workloads.issue_federated_token("repo:evil/fork:ref:refs/heads/main"))
    _app_only_profile(
        simulator,
        imm_home,
        auth_method="workload_identity",
        client_id=simulator.identity.automation_client_id,
        federated_token_file=str(token_file),
    )
    result = run_imm("sync", "--no-input")
    assert result.exit_code == 3, result.stderr
    assert "AADSTS700213" in result.stderr
    assert not _callers(simulator)


def test_workload_identity_without_a_token_file_says_which_setting(simulator: Simulator, imm_home: Path) -> None:
    _app_only_profile(
        simulator, imm_home, auth_method="workload_identity", client_id=simulator.identity.automation_client_id
    )
    result = run_imm("sync", "--no-input", env={"AZURE_FEDERATED_TOKEN_FILE": ""})
    assert result.exit_code == 3, result.stderr
    assert "federated_token_file" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_auth_method_is_a_config_error_naming_the_choices(imm_home: Path) -> None:
    write_profile(_config(imm_home), "x", {"auth_method": "password"}, make_default=True)
    result = run_imm("whoami")
    assert result.exit_code == 2
    assert "auth_method" in result.stderr and "managed_identity, workload_identity" in result.stderr


def test_a_sync_off_a_terminal_logs_progress_lines(simulator: Simulator, sim_profile: str, imm_home: Path) -> None:
    """No bar without a terminal: progress is logged (the log file always; stderr with -v) every interval."""
    assert run_imm("login").exit_code == 0
    result = run_imm("sync", "-v", env={"IMM_PROGRESS_INTERVAL": "0"})
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("INFO: progress: ")]
    assert any("Fetching mailbox details: " in line and "/200" in line for line in lines), result.stderr
    assert lines[-1].startswith("INFO: progress: Done: ")
    logged = (imm_home / "log" / "sim.log").read_text(encoding="utf-8")
    assert "imm.progress INFO progress: Fetching mailbox details: " in logged
    plain = run_imm("sync", env={"IMM_PROGRESS_INTERVAL": "0"})
    assert plain.exit_code == 0 and "progress:" not in plain.stderr
