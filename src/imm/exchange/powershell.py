"""PowerShell backend: the ExchangeOnlineManagement module in a ``pwsh`` child process (design §5).

One long-lived process per executor: ``pwsh -NoProfile -NonInteractive -File <imm script>``. The script (the fixed
text :data:`SCRIPT`, written to a private temp file) reads a hello line with the access token from stdin, runs
``Connect-ExchangeOnline -AccessToken … -Organization … -ShowBanner:$false`` (``Connect-IPPSSession`` for the
compliance endpoint), then one JSON request per line ``{"cmdlet": …, "parameters": {…}}``. Requests are data: the
script parses them with ``ConvertFrom-Json -AsHashtable``, checks the name is an allowed ``Verb-Noun`` cmdlet and
runs ``& $name @params``; nothing from a request is ever spliced into script text. Output lines start with
``@@IMM@@`` and carry JSON: ``record`` (``ConvertTo-Json -Depth 6 -Compress``), ``warning``, ``error`` (exception
type and message), ``nonterminating`` (each error the call wrote without stopping, from ``-ErrorVariable``: the
module writes a reply's ``@adminapi.errors`` so), ``end``; ``ready`` / ``fatal`` after connecting. Other output is
ignored (logged at DEBUG).

Errors map to the same typed errors as the REST backend (:func:`imm.exchange.errors.classify`); non-terminating
errors fail a change (NonTerminatingError) and are logged for a read, as the REST backend reads them. Each call has a
timeout; on timeout, cancel (Ctrl+C) or close the whole process group is killed (``start_new_session`` +
``killpg``) and the next call starts a new process. Access tokens are not refreshed by the module: the executor
reconnects with a fresh token when the one it connected with is about to expire, and once after an auth error.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from imm.errors import ConfigError, InputError
from imm.exchange.client import CREATING_CMDLETS, READ_VERBS, TOKEN_SKEW, TokenProvider, _jwt_expiry
from imm.exchange.encoding import (
    SecureString,
    check_cmdlet_name,
    format_datetime,
    format_timespan,
    result_size_value,
    strip_annotations,
)
from imm.exchange.errors import (
    _EX_DETAIL,
    AmbiguousOutcomeError,
    ExchangeError,
    ExoAuthError,
    TransientError,
    classify,
    non_terminating_error,
)
from imm.exchange.throttle import ClientStats
from imm.logs import redact

log = logging.getLogger("imm.exchange.powershell")

T = TypeVar("T")
R = TypeVar("R")

PREFIX = "@@IMM@@ "
# The cmdlets imm runs (design §5); the script refuses any other name.
ALLOWED_CMDLETS = (
    "Get-Mailbox",
    "Get-MailboxStatistics",
    "Get-Recipient",
    "Get-OrganizationConfig",
    "Get-AcceptedDomain",
    "New-Mailbox",
    "Set-Mailbox",
    "New-MailboxRestoreRequest",
    "Get-MailboxRestoreRequest",
    "Get-MailboxRestoreRequestStatistics",
    "Remove-MailboxRestoreRequest",
    "Get-RetentionCompliancePolicy",
    "Get-RetentionComplianceRule",
    "Set-RetentionCompliancePolicy",
    "Get-CaseHoldPolicy",
    "Set-CaseHoldPolicy",
    "Get-AppRetentionCompliancePolicy",
    "Get-AppRetentionComplianceRule",
    "Set-AppRetentionCompliancePolicy",
)
_AUTH_HINTS = ("(401)", "Unauthorized", "UnauthorizedAccessException", "token is expired", "AADSTS")

SCRIPT = r"""# imm PowerShell backend. Requests arrive as JSON lines on stdin and are run as data (splatting); nothing
# from a request is spliced into script text. Every line for imm starts with '@@IMM@@ '.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$InformationPreference = 'SilentlyContinue'
[Console]::OutputEncoding = [System.Text.Encoding]::UTF8
[Console]::InputEncoding = [System.Text.Encoding]::UTF8

function Send-ImmMessage([hashtable]$Message) {
    [Console]::Out.WriteLine('@@IMM@@ ' + ($Message | ConvertTo-Json -Depth 6 -Compress))
    [Console]::Out.Flush()
}

function ConvertTo-ImmValue($Value) {
    if ($Value -is [System.Collections.IDictionary]) {
        if ($Value.Contains('@imm.secure')) {
            return ConvertTo-SecureString -String ([string]$Value['@imm.secure']) -AsPlainText -Force
        }
        if ($Value.Contains('@imm.bytes')) { return [byte[]]@($Value['@imm.bytes']) }
        $table = @{}
        foreach ($key in $Value.Keys) { $table[$key] = ConvertTo-ImmValue $Value[$key] }
        return $table
    }
    if ($Value -is [System.Collections.IList]) { return ,@($Value | ForEach-Object { ConvertTo-ImmValue $_ }) }
    return $Value
}

$hello = [Console]::In.ReadLine() | ConvertFrom-Json -AsHashtable
$allowed = @($hello['AllowedCmdlets'])
try {
    Import-Module ExchangeOnlineManagement -ErrorAction Stop
    $connect = @{ AccessToken = $hello['AccessToken']; Organization = $hello['Organization']; ShowBanner = $false }
    if ($hello['ConnectionUri']) { $connect['ConnectionUri'] = $hello['ConnectionUri'] }
    if ($hello['Endpoint'] -eq 'compliance') { Connect-IPPSSession @connect } else { Connect-ExchangeOnline @connect }
} catch {
    Send-ImmMessage @{ kind = 'fatal'; type = $_.Exception.GetType().FullName; message = [string]$_.Exception.Message }
    exit 3
}
$hello = $null
Send-ImmMessage @{ kind = 'ready' }

while ($null -ne ($line = [Console]::In.ReadLine())) {
    try {
        $request = $line | ConvertFrom-Json -AsHashtable
        $name = [string]$request['cmdlet']
    } catch {
        Send-ImmMessage @{
            kind = 'error'; type = 'System.ArgumentException'; message = 'The request is not valid JSON.'
        }
        Send-ImmMessage @{ kind = 'end' }
        continue
    }
    if ($name -cnotmatch '^[A-Za-z]+-[A-Za-z0-9]+\z' -or $allowed -notcontains $name) {
        Send-ImmMessage @{
            kind = 'error'; type = 'System.Management.Automation.CommandNotFoundException'
            message = "The cmdlet '$name' is not allowed."
        }
        Send-ImmMessage @{ kind = 'end' }
        continue
    }
    $params = @{}
    if ($request['parameters']) {
        foreach ($key in $request['parameters'].Keys) {
            $params[$key] = ConvertTo-ImmValue $request['parameters'][$key]
        }
    }
    $warnings = $null
    $failures = $null
    $stopped = $false
    try {
        # -ErrorVariable: the module writes the @adminapi.errors of a reply as non-terminating errors, which a
        # script's $ErrorActionPreference does not reach inside a module (about_Preference_Variables); each
        # call collects its own and reports them after its records.
        $common = @{
            WarningVariable = 'warnings'; WarningAction = 'SilentlyContinue'
            ErrorVariable = 'failures'; ErrorAction = 'SilentlyContinue'
        }
        & $name @params @common | ForEach-Object {
            Send-ImmMessage @{ kind = 'record'; value = $_ }
        }
    } catch {
        $stopped = $true
        Send-ImmMessage @{
            kind = 'error'; type = $_.Exception.GetType().FullName; reason = [string]$_.CategoryInfo.Reason
            message = [string]$_.Exception.Message
        }
    }
    if (-not $stopped) {
        foreach ($failure in @($failures)) {
            if ($null -eq $failure) { continue }
            $exception = $failure.Exception
            if ($null -eq $exception) { $exception = [System.Exception]::new([string]$failure) }
            Send-ImmMessage @{
                kind = 'nonterminating'; type = $exception.GetType().FullName
                reason = [string]$failure.CategoryInfo.Reason; message = [string]$exception.Message
            }
        }
    }
    foreach ($warning in @($warnings)) {
        if ($null -ne $warning) { Send-ImmMessage @{ kind = 'warning'; message = [string]$warning } }
    }
    Send-ImmMessage @{ kind = 'end' }
}
Disconnect-ExchangeOnline -Confirm:$false -ErrorAction SilentlyContinue | Out-Null
"""


def encode_ps_value(value: Any) -> Any:
    """A parameter value as JSON data the script turns back into PowerShell values (SecureString, byte[])."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, SecureString):
        # Over the private stdin pipe to our own child only; the script makes it a SecureString at once.
        return {"@imm.secure": value.reveal()}
    if isinstance(value, datetime | date):
        return format_datetime(value) + "Z"
    if isinstance(value, timedelta):
        return format_timespan(value)
    if isinstance(value, bytes | bytearray):
        return {"@imm.bytes": list(bytes(value))}
    if isinstance(value, Mapping):
        return {str(k): encode_ps_value(v) for k, v in value.items() if k != "@odata.type"}
    if isinstance(value, list | tuple | set | frozenset):
        return [encode_ps_value(v) for v in value]
    if hasattr(value, "value") and hasattr(value, "name"):  # an Enum
        return encode_ps_value(value.value)
    return str(value)


def request_line(cmdlet: str, parameters: Mapping[str, Any] | None) -> str:
    """The JSON line sent for one call."""
    params = {k: encode_ps_value(v) for k, v in (parameters or {}).items() if v is not None}
    return json.dumps({"cmdlet": cmdlet, "parameters": params}, ensure_ascii=False, separators=(",", ":"))


class PowerShellExecutor:
    """Runs cmdlets through ``pwsh`` + ExchangeOnlineManagement with the same interface as ExchangeClient."""

    def __init__(
        self,
        pwsh_path: str = "pwsh",
        token_provider: TokenProvider | None = None,
        organization: str = "",
        timeout: float = 960.0,
        *,
        endpoint: str = "exchange",
        connection_uri: str | None = None,
        startup_timeout: float = 180.0,
        allowed_cmdlets: Iterable[str] = ALLOWED_CMDLETS,
        kill_grace: float = 2.0,
    ) -> None:
        if token_provider is None:
            raise ConfigError("the PowerShell backend needs a token provider")
        if not organization or organization.lower() in ("organizations", "common"):
            raise ConfigError(
                "the PowerShell backend needs the organization (tenant_id as x.onmicrosoft.com)",
                hint="set tenant_id in the profile",
            )
        self.pwsh_path = pwsh_path
        self.token_provider = token_provider
        self.organization = organization
        self.timeout = float(timeout)
        self.endpoint = endpoint
        self.connection_uri = connection_uri
        self.startup_timeout = float(startup_timeout)
        self.allowed_cmdlets = tuple(allowed_cmdlets)
        self.kill_grace = kill_grace
        self.concurrency = 1
        self.warnings: list[str] = []
        self.stats = ClientStats()
        self._lock = threading.RLock()
        self._local = threading.local()
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=20)
        self._token_expiry = 0.0
        self._workdir: Path | None = None
        self._cancelled = False
        self._stderr_reader: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ interface
    @property
    def last_warnings(self) -> list[str]:
        return list(getattr(self._local, "warnings", []))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def invoke(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        result_size: int | str | None = None,
        keep_annotations: bool = False,
        creating: bool | None = None,
        select: Sequence[str] | None = None,  # the REST $select; here every property comes (callers take theirs)
    ) -> Iterator[dict[str, Any]]:
        """Run ``cmdlet`` and yield its records (collected from the process first)."""
        return iter(
            self.invoke_all(
                cmdlet, parameters, result_size=result_size, keep_annotations=keep_annotations, creating=creating
            )
        )

    def invoke_all(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        result_size: int | str | None = None,
        keep_annotations: bool = False,
        creating: bool | None = None,
        select: Sequence[str] | None = None,  # the REST $select; here every property comes (callers take theirs)
    ) -> list[dict[str, Any]]:
        check_cmdlet_name(cmdlet)
        if cmdlet.lower() not in {c.lower() for c in self.allowed_cmdlets}:
            raise InputError(f"the PowerShell backend does not run '{cmdlet}'")
        params = dict(parameters or {})
        if result_size is not None:
            params["ResultSize"] = result_size
        if params.get("ResultSize") is not None:
            params["ResultSize"] = result_size_value(params["ResultSize"])
        line = request_line(cmdlet, params)
        is_creating = cmdlet.lower() in CREATING_CMDLETS if creating is None else creating
        self._local.warnings = []
        self.stats.add(calls=1)
        with self._lock:
            records = self._call(cmdlet, line, is_creating, reconnected=False)
        if keep_annotations:
            return records
        return [strip_annotations(r) for r in records]

    def map(
        self,
        fn: Callable[[T], R],
        items: Iterable[T],
        *,
        workers: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[tuple[T, R | BaseException]]:
        """``(item, result or exception)`` one at a time: one PowerShell session runs one cmdlet at a time."""
        for item in items:
            if cancel is not None and cancel.is_set():
                return
            try:
                yield item, fn(item)
            except Exception as exc:
                yield item, exc

    def stats_snapshot(self) -> dict[str, Any]:
        return self.stats.as_dict()

    def close(self) -> None:
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                try:
                    if proc.stdin:
                        proc.stdin.close()  # the script disconnects and ends at EOF
                    proc.wait(timeout=self.kill_grace)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self._kill()
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def __enter__(self) -> PowerShellExecutor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --------------------------------------------------------------------------------------------- process
    def _script_path(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="imm-pwsh-"))  # mode 0700
        path = self._workdir / "imm-exchange.ps1"
        if not path.exists():
            path.write_text(SCRIPT, encoding="utf-8")
        return path

    def command(self) -> list[str]:
        """The argv of the child process."""
        resolved = shutil.which(self.pwsh_path)
        if resolved is None:
            raise ConfigError(
                f"PowerShell '{self.pwsh_path}' was not found",
                hint='install PowerShell 7 with the ExchangeOnlineManagement module, or set backend = "rest"',
            )
        return [resolved, "-NoProfile", "-NonInteractive", "-File", str(self._script_path())]

    def _start(self, force_token: bool) -> None:
        token = self.token_provider(force_token)
        argv = self.command()
        kwargs: dict[str, Any] = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            kwargs["start_new_session"] = True
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                **kwargs,
            )
        except OSError as exc:
            raise ConfigError(f"cannot start PowerShell '{argv[0]}': {exc.strerror or exc}") from None
        self._proc = proc
        self._lines = queue.Queue()
        self._stderr.clear()
        threading.Thread(target=self._read_stdout, args=(proc, self._lines), daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, args=(proc,), daemon=True)
        self._stderr_reader.start()
        hello = {
            "AccessToken": token,
            "Organization": self.organization,
            "Endpoint": self.endpoint,
            "ConnectionUri": self.connection_uri,
            "AllowedCmdlets": list(self.allowed_cmdlets),
        }
        try:
            self._send(json.dumps(hello, separators=(",", ":")))
            message = self._next_message(time.monotonic() + self.startup_timeout, "connecting")
        except BaseException:
            self._kill()
            raise
        self._token_expiry = _jwt_expiry(token) or time.time() + 3000
        if message.get("kind") == "ready":
            log.info("PowerShell %s session ready (pid %d)", self.endpoint, proc.pid)
            return
        self._kill()
        text = str(message.get("message") or "PowerShell did not connect")
        if any(hint in text for hint in _AUTH_HINTS):
            raise ExoAuthError(
                f"Connect-ExchangeOnline failed: {text}",
                exception_type=message.get("type"),
                microsoft_message=text,
                hint="sign in again with 'imm login'",
            )
        raise ExchangeError(
            f"Connect-ExchangeOnline failed: {text}", exception_type=message.get("type"), microsoft_message=text
        )

    def _ensure_started(self, force_token: bool = False) -> None:
        alive = self._proc is not None and self._proc.poll() is None
        if alive and not force_token and time.time() < self._token_expiry - TOKEN_SKEW:
            return
        if alive:
            self._stop_gracefully()
        self._start(force_token)

    def _stop_gracefully(self) -> None:
        proc = self._proc
        if proc is not None and proc.stdin:
            try:
                proc.stdin.close()
                proc.wait(timeout=self.kill_grace)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()

    def cancel(self) -> None:
        """From any thread (e.g. a Ctrl+C handler): kill the process tree now; the running call raises."""
        self._cancelled = True
        proc = self._proc
        if proc is not None:
            self._kill_process(proc)

    def _kill(self) -> None:
        """End the process and everything it started (its process group)."""
        proc = self._proc
        self._proc = None
        if proc is not None:
            self._kill_process(proc)

    def _kill_process(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            try:
                if sys.platform == "win32":
                    subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, check=False)
                else:
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=self.kill_grace)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if sys.platform != "win32":
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left in the group (children included)
            except OSError:
                pass
        try:
            proc.wait(timeout=self.kill_grace)
        except subprocess.TimeoutExpired:
            pass
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass

    @staticmethod
    def _read_stdout(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.put(line)
        except (OSError, ValueError):
            pass
        lines.put(None)

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                text = redact(line.rstrip())
                if text:
                    self._stderr.append(text)
                    log.debug("pwsh stderr: %s", text)
        except (OSError, ValueError):
            pass

    def _send(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise TransientError("the PowerShell session is not running")
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise TransientError(f"the PowerShell session ended unexpectedly ({exc.__class__.__name__})") from None

    def _next_message(self, deadline: float, doing: str) -> dict[str, Any]:
        """The next protocol message (other output is logged and skipped); EOF and timeouts raise."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(doing)
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                raise TimeoutError(doing) from None
            if line is None:
                if self._stderr_reader is not None:
                    self._stderr_reader.join(timeout=1.0)  # the last words on stderr explain the exit
                detail = "; ".join(list(self._stderr)[-3:]) or "no error output"
                raise EOFError(f"PowerShell ended while {doing} ({detail})")
            line = line.rstrip("\r\n")
            if not line.startswith(PREFIX):
                if line.strip():
                    log.debug("pwsh: %s", redact(line))
                continue
            try:
                message = json.loads(line[len(PREFIX) :])
            except ValueError:
                log.debug("pwsh sent an unreadable protocol line")
                continue
            if isinstance(message, dict):
                return message

    # ------------------------------------------------------------------------------------------------ calls
    def _call(self, cmdlet: str, line: str, creating: bool, reconnected: bool) -> list[dict[str, Any]]:
        try:
            self._ensure_started(force_token=reconnected)
        except (TimeoutError, EOFError) as exc:
            self._kill()
            raise TransientError(f"PowerShell could not connect: {exc}", cmdlet=cmdlet) from None
        self.stats.add(requests=1)
        self._cancelled = False
        records: list[dict[str, Any]] = []
        error: dict[str, Any] | None = None
        others: list[dict[str, Any]] = []  # non-terminating errors
        try:
            self._send(line)
            deadline = time.monotonic() + self.timeout
            while True:
                message = self._next_message(deadline, f"running {cmdlet}")
                kind = message.get("kind")
                if kind == "record":
                    value = message.get("value")
                    records.append(value if isinstance(value, dict) else {"Value": value})
                elif kind == "warning":
                    self._warn(cmdlet, str(message.get("message") or ""))
                elif kind == "error":
                    error = message
                elif kind == "nonterminating":
                    others.append(message)
                elif kind == "end":
                    break
        except (TimeoutError, EOFError, TransientError) as exc:
            self._kill()
            if self._cancelled:
                what = "was cancelled"
            elif isinstance(exc, TimeoutError):
                what = f"timed out after {self.timeout:g} s"
            else:
                what = f"failed: {exc}"
            if creating:
                raise AmbiguousOutcomeError(
                    f"{cmdlet} {what}; it may or may not have run, so it is not repeated",
                    cmdlet=cmdlet,
                    hint="check whether it took effect before trying again",
                ) from None
            raise TransientError(f"{cmdlet} {what}", cmdlet=cmdlet, hint="try again") from None
        except BaseException:
            self._kill()  # interrupted mid-call (Ctrl+C): the process state is unknown, start afresh next time
            raise
        if error is None and others:
            error = self._non_terminating(cmdlet, others, bool(records))
        if error is not None:
            failure = self._error(cmdlet, error)
            if isinstance(failure, ExoAuthError) and not reconnected:
                self.stats.add(token_refreshes=1)
                return self._call(cmdlet, line, creating, reconnected=True)
            raise failure
        return records

    def _non_terminating(self, cmdlet: str, errors: list[dict[str, Any]], has_records: bool) -> dict[str, Any] | None:
        """What the non-terminating errors of one call mean, as the REST backend reads ``@adminapi.errors``: a
        read keeps its records (the errors are logged); a read with no record fails with its first error (a
        missing object: not found); a change fails: with the typed error of the first when it has one (not found,
        ambiguous, …), else as a :class:`NonTerminatingError` carrying Microsoft's messages."""
        texts = [str(e.get("message") or "") for e in errors]
        for text in texts:
            log.warning("Exchange reported a non-terminating error from %s: %s", cmdlet, text)
        if cmdlet.lower().startswith(READ_VERBS):
            return None if has_records else errors[0]
        first = self._error(cmdlet, errors[0])
        if type(first) is not ExchangeError:
            return errors[0]
        raise non_terminating_error(cmdlet, texts)

    def _warn(self, cmdlet: str, text: str) -> None:
        self.warnings.append(text)
        self._local.warnings.append(text)
        log.warning("Exchange warning from %s: %s", cmdlet, text)

    @staticmethod
    def _error(cmdlet: str, message: dict[str, Any]) -> ExchangeError:
        exception_type = str(message.get("type") or "") or None
        text = str(message.get("message") or "")
        match = _EX_DETAIL.match(text.strip())
        if match:  # EXO V3 wraps the server error as "Ex…|<type>|<text>"
            exception_type, text = match.group(2) or exception_type, match.group(3)
        reason = str(message.get("reason") or "")
        if reason and (exception_type is None or exception_type.endswith("RuntimeException")):
            exception_type = reason
        status = 401 if any(hint in f"{exception_type} {text}" for hint in _AUTH_HINTS) else None
        return classify(cmdlet=cmdlet, status=status, exception_type=exception_type, microsoft_message=text or None)
