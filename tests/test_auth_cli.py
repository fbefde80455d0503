"""``imm login`` / ``logout`` / ``whoami`` as real processes against the served simulated tenant."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sqlite3
import ssl
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from conftest import make_simulator, run_imm
from imm.config import write_profile
from imm.simulator import Simulator
from imm.simulator.identity import certificate_pem, make_certificate

TENANT = "6f1b7c2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f"
ADMIN = "admin@contoso.onmicrosoft.com"
CODE = re.compile(r"enter the code (\w+) to authenticate")
SIGNED_IN = re.compile(
    rf"Signed in as (\S+(?: \S+)?) \(tenant {TENANT}\); token valid until \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d \S+\n"
)
HAVE_AUDIT = importlib.util.find_spec("imm.data.database") is not None


@contextmanager
def served(tmp_path: Path, home: Path, **options: Any) -> Iterator[Simulator]:
    """A simulator with these options and the default profile 'sim' pointing at it."""
    with make_simulator(tmp_path, mailboxes=0, **options) as sim:
        write_profile(config_path(home), "sim", sim.profile_values(), make_default=True)
        yield sim


def config_path(home: Path) -> Path:
    return home / "config" / "config.toml"


def profile(home: Path) -> dict[str, Any]:
    return dict(tomllib.loads(config_path(home).read_text())["profiles"]["sim"])


def cache_file(home: Path) -> Path:
    return home / "data" / "tokens" / "sim.json"


def counts(sim: Simulator) -> dict[str, int]:
    return dict(sim.identity.counters)


def audit_rows(home: Path) -> list[tuple[str, str, str, str | None, dict[str, Any]]]:
    db = home / "data" / "sim.db"
    if not db.exists():
        return []
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT operation, user, result, error_message, details FROM audit_log "
            "WHERE operation IN ('LOGIN', 'LOGOUT') ORDER BY id"
        ).fetchall()
    return [(op, user, result, error, json.loads(details)) for op, user, result, error, details in rows]


def start_login(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str, list[str]]:
    """Start ``imm login`` and read its stderr until the device code message; returns the process and code."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("IMM_RAISE_ERRORS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "imm", "login", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        match = CODE.search(line)
        if match:
            return proc, match.group(1), lines
    proc.wait(timeout=30)
    raise AssertionError("imm login ended without a device code: " + "".join(lines))


def finish(proc: subprocess.Popen[str], lines: list[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, "".join(lines) + err


def page_client(sim: Simulator) -> httpx.Client:
    return httpx.Client(
        base_url=sim.base_url, verify=ssl.create_default_context(cafile=str(sim.ca_path)), trust_env=False
    )


# ----- device code, silent sign-in in new processes, whoami, logout -----


def test_login_then_silent_in_new_processes(simulator: Simulator, sim_profile: str, imm_home: Path) -> None:
    first = run_imm("login")
    assert first.exit_code == 0, first.stderr
    message = [line for line in first.stderr.splitlines() if CODE.search(line)]
    code = CODE.search(message[0]).group(1)  # type: ignore[union-attr]
    assert message == [
        f"To sign in, use a web browser to open the page {simulator.base_url}/devicelogin and enter the code "
        f"{code} to authenticate."
    ]
    assert SIGNED_IN.fullmatch(first.stdout) and first.stdout.startswith(f"Signed in as {ADMIN} ")
    after_login = counts(simulator)
    assert after_login["device_authorization"] == 1 and after_login["token"] == 1

    second = run_imm("login")
    assert second.exit_code == 0 and SIGNED_IN.fullmatch(second.stdout)
    assert not CODE.search(second.stderr)
    shown = run_imm("whoami", "--output", "json")
    assert shown.exit_code == 0, shown.stderr
    assert counts(simulator) == after_login  # no device code, no token request, no discovery again
    data = json.loads(shown.stdout)
    assert set(data) == {
        "account", "kind", "tenant", "client_id", "authority", "token_expires", "token_source", "cache",
        "cache_encrypted",
    }  # fmt: skip
    assert data["account"] == ADMIN and data["kind"] == "user" and data["tenant"] == TENANT
    assert data["token_source"] == "cache" and data["authority"] == f"{simulator.base_url}/{TENANT}"
    assert data["cache"] == str(cache_file(imm_home))
    assert stat.S_IMODE(cache_file(imm_home).stat().st_mode) == 0o600
    assert stat.S_IMODE(cache_file(imm_home).parent.stat().st_mode) == 0o700
    assert data["client_id"] == "fb78d390-0c51-40cd-8e17-fdbfab77341b"
    table = run_imm("whoami")
    assert table.exit_code == 0 and re.search(rf"^account\s+{ADMIN}$", table.stdout, re.M)
    assert "eyJ" not in shown.stdout + table.stdout
    if not data["cache_encrypted"]:  # the plaintext warning: in the first process only
        warning = f"WARNING: The token cache {cache_file(imm_home)} is stored unencrypted"
        assert first.stderr.count(warning) == 1
        assert all(warning not in r.stderr for r in (second, shown, table))
    if HAVE_AUDIT:
        rows = audit_rows(imm_home)
        assert [(op, user, result) for op, user, result, _, _ in rows] == [
            ("LOGIN", ADMIN, "success"),
            ("LOGIN", ADMIN, "success"),
        ]
        assert rows[0][4]["token_source"] == "device_code" and rows[1][4]["token_source"] == "cache"


def test_whoami_and_logout_when_signed_out(simulator: Simulator, sim_profile: str) -> None:
    result = run_imm("whoami")
    assert result.exit_code == 3
    assert result.stderr.endswith(f"Error: Not signed in to tenant '{TENANT}'.\nHint: run 'imm login'\n")
    assert "Traceback" not in result.stderr
    as_json = run_imm("whoami", "-o", "json")
    assert as_json.exit_code == 3
    assert json.loads(as_json.stderr.strip().splitlines()[-1]) == {
        "error": {
            "code": "login_required",
            "message": f"Not signed in to tenant '{TENANT}'.",
            "exit_code": 3,
            "hint": "run 'imm login'",
        }
    }
    out = run_imm("logout")
    assert out.exit_code == 0 and out.stdout == "Not signed in; nothing to remove.\n"
    assert counts(simulator) == {}  # none of it needed the network


def test_logout(simulator: Simulator, sim_profile: str, imm_home: Path) -> None:
    assert run_imm("login").exit_code == 0
    out = run_imm("logout")
    assert out.exit_code == 0
    assert out.stdout == f"Signed out {ADMIN}; removed the cached tokens from {cache_file(imm_home)}.\n"
    assert run_imm("whoami").exit_code == 3
    assert run_imm("logout").stdout == "Not signed in; nothing to remove.\n"
    if HAVE_AUDIT:
        ops = [(op, user, result) for op, user, result, _, _ in audit_rows(imm_home)]
        assert ops[:2] == [("LOGIN", ADMIN, "success"), ("LOGOUT", ADMIN, "success")]


def test_refresh_and_revocation_in_new_processes(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home, auto_approve_after=0.0, token_lifetime=120) as sim:
        assert run_imm("login").exit_code == 0
        refreshed = run_imm("whoami", "-o", "json")
        assert refreshed.exit_code == 0, refreshed.stderr
        assert json.loads(refreshed.stdout)["token_source"] == "refresh"
        assert counts(sim)["refresh_token"] == 1

        sim.identity.revoke_refresh_tokens(ADMIN)
        revoked = run_imm("whoami")
        assert revoked.exit_code == 3
        assert revoked.stderr.endswith(
            f"Error: The saved sign-in for {ADMIN} is no longer valid (revoked or expired); it was removed from the "
            "token cache.\nHint: run 'imm login' to sign in again\n"
        )
        cache = json.loads(cache_file(imm_home).read_text())
        assert not cache.get("Account") and not cache.get("RefreshToken")
        again = run_imm("whoami")
        assert again.exit_code == 3 and "Not signed in" in again.stderr
        assert run_imm("whoami", "--offline").exit_code == 3
        relogin = run_imm("login")
        assert relogin.exit_code == 0 and CODE.search(relogin.stderr)


def test_whoami_offline_reads_the_cache_without_the_service(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home, auto_approve_after=0.0):
        assert run_imm("login").exit_code == 0
    offline = run_imm("whoami", "--offline", "-o", "json")  # the simulator is gone
    assert offline.exit_code == 0, offline.stderr
    data = json.loads(offline.stdout)
    assert data["account"] == ADMIN and data["token_source"] is None and data["token_expires"]
    online = run_imm("whoami")
    assert online.exit_code == 0  # the access token is still valid: no request needed


def test_network_error_is_one_line(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home, auto_approve_after=0.0) as sim:
        base = sim.base_url
    result = run_imm("login")
    assert result.exit_code == 3
    assert f"Error: Cannot reach the sign-in service at {base.removeprefix('https://')} (" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_or_bad_ca_bundle_is_named_with_exit_2(tmp_path: Path, imm_home: Path) -> None:
    """A ca_bundle that is not there, or is not a certificate file, is a setting to fix: one line, exit 2."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n", encoding="utf-8")
    missing = tmp_path / "missing.pem"
    with served(tmp_path, imm_home, auto_approve_after=0.0):
        for bundle, reason in (
            (missing, "FileNotFoundError: [Errno 2] No such file or directory"),
            (garbage, "SSLError: [X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found"),
        ):
            result = run_imm("login", env={"IMM_CA_BUNDLE": str(bundle)})
            assert (result.exit_code, result.stdout) == (2, ""), result.stderr
            (line,) = [x for x in result.stderr.splitlines() if not x.startswith("WARNING:")]
            assert line.startswith(f"Error: ca_bundle {bundle}: cannot be used ({reason}")


# ----- device code outcomes a person causes -----


def test_approved_on_the_verification_page(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home, device_code_interval=1) as sim:
        proc, code, lines = start_login()
        with page_client(sim) as page:
            assert page.get("/devicelogin").status_code == 200
            assert page.post("/devicelogin", data={"code": code, "action": "approve"}).status_code == 200
        status, out, err = finish(proc, lines)
        assert status == 0, err
        assert SIGNED_IN.fullmatch(out)


def test_declined_gives_exit_3(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home, device_code_interval=1) as sim:
        proc, code, lines = start_login()
        with page_client(sim) as page:
            assert page.post("/devicelogin", data={"code": code, "action": "decline"}).status_code == 200
        status, out, err = finish(proc, lines)
    assert status == 3 and out == ""
    assert err.endswith(
        "Error: The sign-in request was declined.\nHint: run 'imm login' again and approve the request\n"
    )
    if HAVE_AUDIT:
        [(op, user, result, error, details)] = audit_rows(imm_home)
        assert (op, result, error) == ("LOGIN", "failure", "The sign-in request was declined.")
        assert details["error_code"] == "authorization_declined" and details["method"] == "device_code"


def test_expired_code_gives_exit_3(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home, device_code_interval=1) as sim:
        proc, code, lines = start_login()
        sim.identity.expire_device_codes()
        status, out, err = finish(proc, lines)
    assert status == 3
    assert "Error: The sign-in code expired before it was used (AADSTS70019: Verification code expired.).\n" in err
    assert err.endswith("Hint: run 'imm login' again and enter the new code before it expires\n")


def test_the_wait_is_bounded_by_the_profile(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home, device_code_interval=1):
        write_profile(config_path(imm_home), "sim", {"device_code_timeout": 2})
        result = run_imm("login", timeout=30)
    assert result.exit_code == 3
    assert "Error: The sign-in code was not used within 2 seconds.\n" in result.stderr


def test_ctrl_c_cancels_without_a_traceback(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home, device_code_interval=1):
        proc, _, lines = start_login()
        proc.send_signal(signal.SIGINT)
        status, out, err = finish(proc, lines)
    assert status == 130
    assert err.endswith("Error: Sign-in cancelled.\nHint: run 'imm login' to try again\n")
    assert "Traceback" not in err
    if HAVE_AUDIT:
        [(op, _, result, error, _)] = audit_rows(imm_home)
        assert (op, result, error) == ("LOGIN", "cancelled", "Sign-in cancelled.")


# ----- app-only with a certificate -----


def test_certificate_login_with_pem_is_saved_to_the_profile(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home) as sim:
        app_id = sim.identity.automation_client_id
        pem = sim.identity.app_certificate_path
        result = run_imm("login", "--certificate", str(pem), "--client-id", app_id)
        assert result.exit_code == 0, result.stderr
        assert SIGNED_IN.fullmatch(result.stdout) and result.stdout.startswith(f"Signed in as app {app_id} ")
        assert f"Saved certificate_path, client_id to profile 'sim' in {config_path(imm_home)}." in result.stderr
        saved = profile(imm_home)
        assert saved["certificate_path"] == str(pem.resolve()) and saved["client_id"] == app_id
        shown = run_imm("whoami", "-o", "json")
        assert shown.exit_code == 0, shown.stderr
        data = json.loads(shown.stdout)
        assert data["kind"] == "app" and data["account"] == f"app {app_id}" and data["token_source"] == "cache"
        cert = x509.load_pem_x509_certificate(pem.read_bytes())
        assert data["certificate_thumbprint"] == cert.fingerprint(hashes.SHA1()).hex().upper()
        assert counts(sim)["client_credentials"] == 1 and "device_authorization" not in counts(sim)
        if HAVE_AUDIT:
            [(op, user, result_, _, details)] = audit_rows(imm_home)
            assert (op, user, result_, details["method"]) == ("LOGIN", f"app {app_id}", "success", "certificate")


def test_certificate_login_with_pfx_password_from_the_environment(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home) as sim:
        data = sim.identity.app_certificate_path.read_bytes()
        key = serialization.load_pem_private_key(data, None)
        cert = x509.load_pem_x509_certificate(data)
        pfx = tmp_path / "app.pfx"
        encryption = serialization.BestAvailableEncryption(b"correct horse")
        pfx.write_bytes(pkcs12.serialize_key_and_certificates(b"imm", key, cert, None, encryption))  # type: ignore[arg-type]
        args = ("login", "--certificate", str(pfx), "--client-id", sim.identity.automation_client_id)
        missing = run_imm(*args, env={"IMM_CERTIFICATE_PASSWORD": ""})
        assert missing.exit_code == 3
        assert f"Error: Cannot use the certificate {pfx}: it is not a PFX file or the password is wrong" in (
            missing.stderr
        )
        assert "Hint: set the password in the environment variable IMM_CERTIFICATE_PASSWORD" in missing.stderr
        assert "certificate_path" not in profile(imm_home)  # nothing saved after a failure
        ok = run_imm(*args, env={"IMM_CERTIFICATE_PASSWORD": "correct horse"})
        assert ok.exit_code == 0, ok.stderr
        assert "correct horse" not in ok.stdout + ok.stderr


def test_wrong_certificate_is_refused(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home) as sim:
        key, cert = make_certificate("imposter")
        wrong = tmp_path / "wrong.pem"
        wrong.write_bytes(certificate_pem(key, cert))
        result = run_imm("login", "--certificate", str(wrong), "--client-id", sim.identity.automation_client_id)
    assert result.exit_code == 3
    assert (
        f"Error: The sign-in service refused the application '{sim.identity.automation_client_id}' (AADSTS700027: "
        in result.stderr
    )
    assert "Traceback" not in result.stderr and "PRIVATE KEY" not in result.stderr
    assert "certificate_path" not in profile(imm_home)


def test_certificate_needs_a_client_id(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home) as sim:
        result = run_imm("login", "--certificate", str(sim.identity.app_certificate_path))
    assert result.exit_code == 2
    assert "Error: --certificate needs --client-id" in result.stderr


def test_login_with_tenant_domain_is_saved_and_silent_afterwards(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home, auto_approve_after=0.0) as sim:
        result = run_imm("login", "--tenant", "contoso.onmicrosoft.com")
        assert result.exit_code == 0, result.stderr
        assert profile(imm_home)["tenant_id"] == "contoso.onmicrosoft.com"
        shown = run_imm("whoami", "-o", "json")
        assert shown.exit_code == 0, shown.stderr
        assert json.loads(shown.stdout)["tenant"] == TENANT
        assert counts(sim)["token"] == 1


# ----- the token cache across processes -----


def test_damaged_cache_is_set_aside_by_the_cli(simulator: Simulator, sim_profile: str, imm_home: Path) -> None:
    cache = cache_file(imm_home)
    cache.parent.mkdir(parents=True)
    cache.write_text("{ this is not json")
    result = run_imm("login")
    assert result.exit_code == 0, result.stderr
    [aside] = cache.parent.glob("sim.json.corrupt-*")
    assert aside.read_text() == "{ this is not json"
    warning = f"WARNING: The token cache {cache} was damaged (it is not valid JSON); it was set aside as {aside.name}."
    assert warning in result.stderr


def test_concurrent_processes_do_not_corrupt_the_cache(tmp_path: Path, imm_home: Path) -> None:
    with served(tmp_path, imm_home, auto_approve_after=0.0, token_lifetime=120) as sim:
        assert run_imm("login").exit_code == 0
        env = {**os.environ}
        env.pop("IMM_RAISE_ERRORS", None)
        for _ in range(3):
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "imm", "whoami", "-o", "json"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                for _ in range(3)
            ]
            for proc in procs:
                out, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, err
                assert json.loads(out)["token_source"] == "refresh"
        cache = json.loads(cache_file(imm_home).read_text())
        assert len(cache["Account"]) == 1 and len(cache["RefreshToken"]) == 1
        issued = [token for kind, token in sim.identity.issued if kind == "refresh_token"]
        assert next(iter(cache["RefreshToken"].values()))["secret"] in issued
        assert counts(sim)["refresh_token"] == 9
        assert not list(cache_file(imm_home).parent.glob("*.tmp"))
        assert run_imm("whoami").exit_code == 0


# ----- no secret anywhere -----


def test_no_token_or_assertion_reaches_logs_output_or_database(tmp_path: Path, imm_home: Path) -> None:
    outputs: list[str] = []
    with served(tmp_path, imm_home, auto_approve_after=0.0, token_lifetime=120) as sim:
        for args in (("login", "-vv"), ("whoami", "-vvv", "-o", "json"), ("login", "--force", "-vvv")):
            result = run_imm(*args)
            assert result.exit_code == 0, result.stderr
            outputs += [result.stdout, result.stderr]
        app = run_imm(
            "--profile", "sim", "login", "-vvv",
            "--certificate", str(sim.identity.app_certificate_path),
            "--client-id", sim.identity.automation_client_id,
        )  # fmt: skip
        assert app.exit_code == 0, app.stderr
        outputs += [app.stdout, app.stderr, run_imm("whoami", "-vv").stdout]
        secrets = sim.identity.issued_secrets()
    kinds = {kind for kind, _ in sim.identity.issued}
    assert kinds == {"access_token", "refresh_token", "id_token"} and sim.identity.received_assertions
    places = {f"output {i}": text for i, text in enumerate(outputs)}
    for path in (imm_home / "log").rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_text(errors="replace")
    for path in (imm_home / "data").glob("*.db*"):
        places[str(path)] = path.read_bytes().decode("latin-1")
    assert str(imm_home / "log" / "sim.log") in places and str(imm_home / "data" / "sim.db") in places
    key_text = sim.identity.app_certificate_path.read_text().split("-----BEGIN PRIVATE KEY-----")[1][:60]
    for secret in secrets:
        pieces = [secret] + ([secret.rsplit(".", 1)[1]] if secret.count(".") == 2 else [])
        for name, text in places.items():
            for piece in pieces:
                assert piece not in text, f"a secret ({piece[:12]}…) is in {name}"
    for name, text in places.items():
        assert key_text.strip() not in text, f"the private key is in {name}"
