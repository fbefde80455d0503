"""The PowerShell backend: the generated script text, the JSON line protocol, error mapping, timeouts and killing
the process tree. ``pwsh`` is not installable here, so a stand-in executable named ``pwsh`` (a Python script written
below, put first on PATH) speaks the same protocol: it can answer, warn, fail, hang, spawn a child or die."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from imm.config import Profile
from imm.errors import ConfigError, ExitStatus, InputError
from imm.exchange import (
    AmbiguousIdentityError,
    AmbiguousOutcomeError,
    ExchangeError,
    ExoAuthError,
    ExoNotFoundError,
    NonTerminatingError,
    SecureString,
    ThrottledError,
    TransientError,
    create_backend,
)
from imm.exchange.cmdlets import ExchangeOperations
from imm.exchange.powershell import ALLOWED_CMDLETS, SCRIPT, PowerShellExecutor, request_line

STANDIN = r"""#!__PYTHON__
import json, os, subprocess, sys, time

LOG = os.environ["STANDIN_LOG"]


def note(**entry):
    with open(LOG, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def out(kind, **fields):
    sys.stdout.write("@@IMM@@ " + json.dumps({"kind": kind, **fields}) + "\n")
    sys.stdout.flush()


script = sys.argv[sys.argv.index("-File") + 1]
note(event="start", pid=os.getpid(), argv=sys.argv[1:], script=open(script, encoding="utf-8").read())
hello = json.loads(sys.stdin.readline())
note(event="hello", token=hello["AccessToken"], organization=hello["Organization"], endpoint=hello["Endpoint"],
     allowed=hello["AllowedCmdlets"])
if hello["AccessToken"] == "refused":
    out("fatal", type="System.UnauthorizedAccessException", message="(401) Unauthorized: the token is not valid")
    sys.exit(3)
if hello["AccessToken"] == "broken":
    out("fatal", type="System.IO.FileNotFoundException", message="The module ExchangeOnlineManagement was not found")
    sys.exit(3)
print("Some banner text that is not for imm")
sys.stdout.flush()
out("ready")
for line in sys.stdin:
    request = json.loads(line)
    name, params = request["cmdlet"], request["parameters"]
    note(event="request", cmdlet=name, parameters=params)
    identity = params.get("Identity", "")
    if identity == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        note(event="child", pid=child.pid)
        time.sleep(300)
    elif identity == "die":
        sys.stderr.write("fatal: the runspace broke\n")
        sys.stderr.flush()
        sys.exit(9)
    elif identity == "missing":
        out("error", type="System.Management.Automation.RemoteException", reason="RemoteException",
            message="Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The operation "
                    "couldn't be performed because object 'missing' couldn't be found on 'DC01'.")
    elif identity == "twice":
        out("error", type="Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException",
            reason="ManagementObjectAmbiguousException",
            message="The operation couldn't be performed because 'twice' matches multiple entries.")
    elif identity == "busy":
        out("error", type="System.Exception",
            message="You have reached the maximum number of concurrent requests per tenant.")
    elif identity == "relabelled":  # the module writes a reply's @adminapi.errors with Write-Error
        out("nonterminating", type="Microsoft.PowerShell.Commands.WriteErrorException", reason="WriteErrorException",
            message="The ComplianceTagHoldApplied hold of 'relabelled' was applied again by a published retention "
                    "label policy; no settings have been modified.")
    elif identity == "partly":
        out("record", value={"Name": "mbx0"})
        out("nonterminating", type="Microsoft.PowerShell.Commands.WriteErrorException", reason="WriteErrorException",
            message="One record could not be read.")
    elif identity == "gone":
        out("nonterminating", type="System.Management.Automation.RemoteException", reason="RemoteException",
            message="Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The operation "
                    "couldn't be performed because object 'gone' couldn't be found on 'DC01'.")
    elif identity == "needs-fresh-token" and hello["AccessToken"] == "token-1":
        out("error", type="System.UnauthorizedAccessException", message="(401) Unauthorized")
    else:
        size = params.get("ResultSize", 2)
        count = 3 if size == "Unlimited" else int(size)
        for n in range(count):
            out("record", value={"Name": f"mbx{n}", "Name@odata.type": "#String", "Echo": params})
        out("warning", message=f"{name} warned")
    out("end")
note(event="eof")
"""


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_dead(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


class Tokens:
    def __init__(self, first: str = "token-1") -> None:
        self.calls: list[bool] = []
        self.first = first

    def __call__(self, force_refresh: bool) -> str:
        self.calls.append(force_refresh)
        return f"token-{len(self.calls)}" if self.first == "token-1" else self.first


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``pwsh`` on PATH that speaks the executor's protocol; returns its log file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "pwsh"
    exe.write_text(STANDIN.replace("__PYTHON__", sys.executable), encoding="utf-8")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "standin.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("STANDIN_LOG", str(log))
    return log


def events(log: Path, kind: str | None = None) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if kind is None or r["event"] == kind]


@pytest.fixture
def executor(standin: Path) -> Iterator[PowerShellExecutor]:
    with PowerShellExecutor("pwsh", Tokens(), "contoso.onmicrosoft.com", 10.0, kill_grace=0.5) as ps:
        yield ps


# ---------------------------------------------------------------------------------------------- script text
def test_script_runs_requests_as_data() -> None:
    lines = SCRIPT.splitlines()
    assert (
        lines[0]
        == "# imm PowerShell backend. Requests arrive as JSON lines on stdin and are run as data (splatting); nothing"
    )
    for expected in (
        "$ErrorActionPreference = 'Stop'",
        "$hello = [Console]::In.ReadLine() | ConvertFrom-Json -AsHashtable",
        "    $connect = @{ AccessToken = $hello['AccessToken']; Organization = $hello['Organization']; "
        "ShowBanner = $false }",
        "    if ($hello['Endpoint'] -eq 'compliance') { Connect-IPPSSession @connect } "
        "else { Connect-ExchangeOnline @connect }",
        "while ($null -ne ($line = [Console]::In.ReadLine())) {",
        "        $request = $line | ConvertFrom-Json -AsHashtable",
        "    if ($name -cnotmatch '^[A-Za-z]+-[A-Za-z0-9]+\\z' -or $allowed -notcontains $name) {",
        "        & $name @params @common | ForEach-Object {",
        "            ErrorVariable = 'failures'; ErrorAction = 'SilentlyContinue'",
        "    [Console]::Out.WriteLine('@@IMM@@ ' + ($Message | ConvertTo-Json -Depth 6 -Compress))",
        "            return ConvertTo-SecureString -String ([string]$Value['@imm.secure']) -AsPlainText -Force",
        "Disconnect-ExchangeOnline -Confirm:$false -ErrorAction SilentlyContinue | Out-Null",
    ):
        assert expected in lines, expected
    lowered = SCRIPT.lower()
    for forbidden in ("invoke-expression", "iex ", "[scriptblock]::create", "add-type", "$executioncontext"):
        assert forbidden not in lowered
    assert "$hello = $null" in lines  # the token does not linger in the session


def test_request_line_is_data() -> None:
    line = request_line(
        "New-Mailbox",
        {
            "InactiveMailbox": "guid-1",
            "Password": SecureString("Pa55-word!"),
            "When": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "Bytes": b"\x01\x02",
            "EmailAddresses": {"Add": "X500:/o=x", "@odata.type": "#Exchange.GenericHashTable"},
            "Flag": True,
            "Skip": None,
        },
    )
    assert line == (
        '{"cmdlet":"New-Mailbox","parameters":{"InactiveMailbox":"guid-1","Password":{"@imm.secure":"Pa55-word!"},'
        '"When":"2026-01-02T03:04:05Z","Bytes":{"@imm.bytes":[1,2]},"EmailAddresses":{"Add":"X500:/o=x"},'
        '"Flag":true}}'
    )
    hostile = request_line("Get-Mailbox", {"Identity": "x'; Remove-Mailbox -Identity * ; '"})
    assert json.loads(hostile)["parameters"]["Identity"] == "x'; Remove-Mailbox -Identity * ; '"


def test_argv_and_script_file(executor: PowerShellExecutor, standin: Path) -> None:
    argv = executor.command()
    assert argv[1:4] == ["-NoProfile", "-NonInteractive", "-File"] and Path(argv[0]).name == "pwsh"
    script = Path(argv[4])
    assert script.read_text(encoding="utf-8") == SCRIPT
    assert stat.S_IMODE(script.parent.stat().st_mode) == 0o700
    executor.invoke_all("Get-OrganizationConfig")
    (start,) = events(standin, "start")
    assert start["argv"] == argv[1:] and start["script"] == SCRIPT
    (hello,) = events(standin, "hello")
    assert hello == {
        "event": "hello",
        "token": "token-1",
        "organization": "contoso.onmicrosoft.com",
        "endpoint": "exchange",
        "allowed": list(ALLOWED_CMDLETS),
    }
    executor.close()
    assert not script.parent.exists()


# ------------------------------------------------------------------------------------------------- results
def test_records_warnings_and_one_process_for_many_calls(executor: PowerShellExecutor, standin: Path) -> None:
    records = executor.invoke_all("Get-Mailbox", {"InactiveMailboxOnly": True}, result_size="Unlimited")
    assert records == [
        {"Name": f"mbx{n}", "Echo": {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"}} for n in range(3)
    ]
    assert executor.last_warnings == ["Get-Mailbox warned"]
    assert list(executor.invoke("Get-Mailbox", {"Identity": "a"}, result_size=1, keep_annotations=True)) == [
        {"Name": "mbx0", "Name@odata.type": "#String", "Echo": {"Identity": "a", "ResultSize": 1}}
    ]
    assert executor.warnings == ["Get-Mailbox warned", "Get-Mailbox warned"]
    assert len(events(standin, "start")) == 1
    assert [e["cmdlet"] for e in events(standin, "request")] == ["Get-Mailbox", "Get-Mailbox"]
    assert executor.stats_snapshot()["calls"] == 2


def test_typed_operations_over_powershell(executor: PowerShellExecutor, standin: Path) -> None:
    ops = ExchangeOperations(executor)
    assert ops.get_mailbox_statistics("guid-1")["Echo"] == {"Identity": "guid-1", "IncludeSoftDeletedRecipients": True}
    assert ops.set_inactive_mailbox("guid-1", LitigationHoldEnabled=False) == ["Set-Mailbox warned"]
    assert events(standin, "request")[-1]["parameters"] == {
        "Identity": "guid-1",
        "InactiveMailbox": True,
        "LitigationHoldEnabled": False,
    }


def test_errors_map_to_the_typed_errors(executor: PowerShellExecutor) -> None:
    with pytest.raises(ExoNotFoundError) as missing:
        executor.invoke_all("Get-Mailbox", {"Identity": "missing"})
    assert missing.value.exit_code == ExitStatus.NOT_FOUND and missing.value.status is None
    assert missing.value.exception_type == "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
    assert missing.value.microsoft_message == (
        "The operation couldn't be performed because object 'missing' couldn't be found on 'DC01'."
    )
    with pytest.raises(AmbiguousIdentityError, match="matches multiple entries") as twice:
        executor.invoke_all("Get-Mailbox", {"Identity": "twice"})
    assert twice.value.exit_code == ExitStatus.USAGE
    with pytest.raises(ThrottledError):
        executor.invoke_all("Get-Mailbox", {"Identity": "busy"})
    assert executor.invoke_all("Get-Mailbox", {"Identity": "fine"})  # the session survives cmdlet errors


def test_non_terminating_errors_fail_a_change_and_are_logged_for_a_read(
    executor: PowerShellExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    """As the REST backend reads ``@adminapi.errors``: the script collects each call's non-terminating errors
    (-ErrorVariable; a script's $ErrorActionPreference does not reach into the module's functions) and imm fails a
    change that has any, with Microsoft's message; a read keeps its records; a read or change whose error names a
    missing object is not found."""
    assert "            ErrorVariable = 'failures'; ErrorAction = 'SilentlyContinue'" in SCRIPT.splitlines()
    with pytest.raises(NonTerminatingError) as refused:
        ExchangeOperations(executor).set_inactive_mailbox("relabelled", RemoveComplianceTagHoldApplied=True)
    assert refused.value.exit_code == ExitStatus.FAILED
    assert refused.value.message == (
        "Set-Mailbox failed: Exchange reported an error: The ComplianceTagHoldApplied hold of 'relabelled' was "
        "applied again by a published retention label policy; no settings have been modified."
    )
    assert refused.value.status == 200 and refused.value.code == "non_terminating_error"
    assert executor.invoke_all("Get-Mailbox", {"Identity": "partly"}) == [{"Name": "mbx0"}]
    assert "Exchange reported a non-terminating error from Get-Mailbox: One record could not be read." in caplog.text
    with pytest.raises(ExoNotFoundError):
        executor.invoke_all("Get-Mailbox", {"Identity": "gone"})
    with pytest.raises(ExoNotFoundError):
        executor.invoke_all("Set-Mailbox", {"Identity": "gone", "LitigationHoldEnabled": False})
    assert executor.invoke_all("Set-Mailbox", {"Identity": "fine"})  # the session goes on


def test_names_outside_the_allow_list_never_reach_pwsh(executor: PowerShellExecutor, standin: Path) -> None:
    for name in ("Remove-Mailbox", "Get-Mailbox; Remove-Mailbox", "Invoke-Expression"):
        with pytest.raises(InputError):
            executor.invoke_all(name)
    assert events(standin, "request") == []


# -------------------------------------------------------------------------------------- timeouts and death
def test_timeout_kills_the_process_tree(standin: Path) -> None:
    with PowerShellExecutor("pwsh", Tokens(), "contoso.onmicrosoft.com", 0.5, kill_grace=0.5) as ps:
        ps.invoke_all("Get-OrganizationConfig")
        first_pid = ps.pid
        assert first_pid is not None
        started = time.monotonic()
        with pytest.raises(TransientError, match="Get-Mailbox timed out after 0.5 s"):
            ps.invoke_all("Get-Mailbox", {"Identity": "hang"})
        assert time.monotonic() - started < 4
        (child,) = events(standin, "child")
        assert wait_dead(first_pid) and wait_dead(child["pid"])
        assert ps.pid is None
        assert ps.invoke_all("Get-Mailbox", {"Identity": "again"})  # a new session
        assert ps.pid not in (None, first_pid)
        assert len(events(standin, "start")) == 2


def test_creating_call_that_times_out_is_ambiguous(standin: Path) -> None:
    with PowerShellExecutor("pwsh", Tokens(), "contoso.onmicrosoft.com", 0.4, kill_grace=0.5) as ps:
        with pytest.raises(AmbiguousOutcomeError, match="New-Mailbox timed out after 0.4 s; it may or may not"):
            ps.invoke_all("New-Mailbox", {"Identity": "hang", "Name": "x"})
    assert len([e for e in events(standin, "request") if e["cmdlet"] == "New-Mailbox"]) == 1


def test_process_dying_mid_call(executor: PowerShellExecutor, standin: Path) -> None:
    with pytest.raises(
        TransientError, match=r"PowerShell ended while running Get-Mailbox \(fatal: the runspace broke\)"
    ):
        executor.invoke_all("Get-Mailbox", {"Identity": "die"})
    assert executor.invoke_all("Get-Mailbox", {"Identity": "ok"})
    assert len(events(standin, "start")) == 2


def test_cancel_from_another_thread(standin: Path) -> None:
    with PowerShellExecutor("pwsh", Tokens(), "contoso.onmicrosoft.com", 30.0, kill_grace=0.5) as ps:
        ps.invoke_all("Get-OrganizationConfig")
        pid = ps.pid
        assert pid is not None
        timer = threading.Timer(0.4, ps.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(TransientError, match="Get-Mailbox was cancelled"):
            ps.invoke_all("Get-Mailbox", {"Identity": "hang"})
        assert time.monotonic() - started < 5
        (child,) = events(standin, "child")
        assert wait_dead(pid) and wait_dead(child["pid"])


def test_ctrl_c_kills_the_process_tree(standin: Path) -> None:
    with PowerShellExecutor("pwsh", Tokens(), "contoso.onmicrosoft.com", 30.0, kill_grace=0.5) as ps:
        ps.invoke_all("Get-OrganizationConfig")
        pid = ps.pid
        assert pid is not None
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        timer = threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT))
        try:
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                ps.invoke_all("Get-Mailbox", {"Identity": "hang"})
        finally:
            timer.join()
            signal.signal(signal.SIGINT, previous)
        (child,) = events(standin, "child")
        assert wait_dead(pid) and wait_dead(child["pid"])
        assert ps.pid is None


# ---------------------------------------------------------------------------------------------- sign-in
def test_auth_error_reconnects_once_with_a_fresh_token(standin: Path) -> None:
    tokens = Tokens()
    with PowerShellExecutor("pwsh", tokens, "contoso.onmicrosoft.com", 10.0, kill_grace=0.5) as ps:
        assert ps.invoke_all("Get-Mailbox", {"Identity": "needs-fresh-token"})
        assert ps.stats_snapshot()["token_refreshes"] == 1
    assert tokens.calls == [False, True]
    assert [e["token"] for e in events(standin, "hello")] == ["token-1", "token-2"]


def test_refused_token_at_connect(standin: Path) -> None:
    with PowerShellExecutor("pwsh", Tokens("refused"), "contoso.onmicrosoft.com", 10.0) as ps:
        with pytest.raises(ExoAuthError, match="Connect-ExchangeOnline failed: \\(401\\) Unauthorized") as caught:
            ps.invoke_all("Get-OrganizationConfig")
    assert caught.value.exit_code == ExitStatus.SIGN_IN


def test_connect_failure(standin: Path) -> None:
    with PowerShellExecutor("pwsh", Tokens("broken"), "contoso.onmicrosoft.com", 10.0) as ps:
        with pytest.raises(ExchangeError, match="module ExchangeOnlineManagement was not found"):
            ps.invoke_all("Get-OrganizationConfig")


def test_token_never_in_argv_or_log(
    executor: PowerShellExecutor, standin: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    executor.invoke_all("Get-OrganizationConfig")
    (start,) = events(standin, "start")
    assert "token-1" not in json.dumps(start["argv"]) and "token-1" not in caplog.text


# ---------------------------------------------------------------------------------------------- config
def test_missing_pwsh_is_a_config_error(tmp_path: Path) -> None:
    ps = PowerShellExecutor(str(tmp_path / "no-pwsh"), Tokens(), "contoso.onmicrosoft.com")
    with pytest.raises(ConfigError, match="was not found") as caught:
        ps.invoke_all("Get-OrganizationConfig")
    assert caught.value.exit_code == ExitStatus.USAGE and "backend" in (caught.value.hint or "")
    with pytest.raises(ConfigError, match="needs the organization"):
        PowerShellExecutor("pwsh", Tokens(), "organizations")


def test_create_backend_picks_powershell(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = Profile(name="p", tenant_id="contoso.onmicrosoft.com", backend="powershell", request_timeout=5.0)
    backend = create_backend(profile, Tokens(), "compliance")
    assert isinstance(backend, PowerShellExecutor)
    with backend:
        assert (backend.pwsh_path, backend.organization, backend.timeout, backend.endpoint) == (
            "pwsh",
            "contoso.onmicrosoft.com",
            5.0,
            "compliance",
        )
        backend.invoke_all("Get-RetentionCompliancePolicy")
    assert events(standin, "hello")[0]["endpoint"] == "compliance"
    monkeypatch.setenv("IMM_PWSH", "/opt/pwsh/pwsh")
    assert create_backend(profile, Tokens()).pwsh_path == "/opt/pwsh/pwsh"  # type: ignore[union-attr]
