"""``imm.auth.Authenticator`` with the real msal against the served simulated Entra ID (nothing mocked).

A fresh Authenticator per case (msal keeps a throttle cache per application, msal.md pitfall 4)."""

from __future__ import annotations

import _thread
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from conftest import make_simulator
from imm.auth import AuthenticationError, Authenticator
from imm.config import Profile
from imm.errors import ExitStatus, SignInError
from imm.simulator import Simulator
from imm.simulator.identity import certificate_pem, make_certificate

TENANT = "6f1b7c2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f"
CLIENT = "fb78d390-0c51-40cd-8e17-fdbfab77341b"
ADMIN = "admin@contoso.onmicrosoft.com"
CODE = re.compile(r"enter the code (\w+) to authenticate")


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    with make_simulator(tmp_path, mailboxes=0, auto_approve_after=0.0, device_code_interval=1) as served:
        yield served


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[Simulator]:
    """A simulator where nobody approves unless the test does."""
    with make_simulator(tmp_path / "manual", mailboxes=0, device_code_interval=1) as served:
        yield served


class Auth:
    """Builds Authenticators for one simulator and one cache file, recording what they prompt."""

    def __init__(self, sim: Simulator, cache: Path) -> None:
        self.sim = sim
        self.cache = cache
        self.prompts: list[str] = []

    def __call__(self, **options: Any) -> Authenticator:
        values: dict[str, Any] = {
            "authority_host": self.sim.base_url,
            "scopes": [f"{self.sim.base_url}/.default"],
            "ca_bundle": self.sim.ca_path,
            "prompt": self.prompts.append,
        }
        values.update(options)
        client_id = values.pop("client_id", CLIENT)
        tenant = values.pop("tenant", TENANT)
        return Authenticator(client_id, tenant, self.cache, **values)

    def cache_json(self) -> dict[str, Any]:
        return dict(json.loads(self.cache.read_text()))


@pytest.fixture
def make(sim: Simulator, tmp_path: Path) -> Auth:
    return Auth(sim, tmp_path / "tokens" / "cache.json")


def counts(sim: Simulator) -> dict[str, int]:
    return dict(sim.identity.counters)


def claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


# ----- construction -----


def test_seed_construction_does_no_io_and_creates_nothing(tmp_path: Path) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    code = "from pathlib import Path; from imm.auth import Authenticator; Authenticator('test', 'test', Path('.'))"
    env = {**os.environ, "IMM_USER_PATH": str(tmp_path / "home")}
    subprocess.run([sys.executable, "-c", code], cwd=work, env=env, check=True, timeout=60)
    assert list(work.iterdir()) == []
    assert not (tmp_path / "home").exists()


def test_construction_is_lazy_even_for_an_unreachable_host(tmp_path: Path) -> None:
    auth = Authenticator("test", "test", tmp_path, authority_host="https://login.invalid")
    assert auth.cache_location == tmp_path / "token_cache.json"
    assert auth.scopes == ["https://outlook.office365.com/.default"]
    assert auth.authority == "https://login.invalid/test"
    assert auth.device_code_timeout == 300
    assert list(tmp_path.iterdir()) == []
    assert Authenticator("test", "test", tmp_path / "my.json").cache_location == tmp_path / "my.json"


def test_from_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PFX_PASSWORD", "s3cret")
    profile = Profile(
        name="p",
        tenant_id="contoso.onmicrosoft.com",
        client_id="app-id",
        authority_host="https://login.example/",
        exchange_url="https://exchange.example",
        ca_bundle=tmp_path / "ca.pem",
        token_cache_path=tmp_path / "t.json",
        certificate_path=tmp_path / "app.pfx",
        certificate_password_env="MY_PFX_PASSWORD",
        device_code_timeout=42,
    )
    auth = Authenticator.from_profile(profile)
    assert (auth.client_id, auth.tenant_id, auth.authority) == (
        "app-id",
        "contoso.onmicrosoft.com",
        "https://login.example/contoso.onmicrosoft.com",
    )
    assert auth.scopes == ["https://exchange.example/.default"]
    assert auth.cache_location == tmp_path / "t.json" and auth.ca_bundle == tmp_path / "ca.pem"
    assert auth.device_code_timeout == 42 and auth.app_only
    assert auth._certificate_password == "s3cret"
    delegated = Authenticator.from_profile(replace(profile, certificate_path=None))
    assert not delegated.app_only and delegated._certificate_password is None
    assert not list(tmp_path.iterdir())


def test_authentication_error_shape() -> None:
    error = AuthenticationError("invalid_grant", "revoked", {"error_codes": [50173], "refresh_token": "0.Asecret"})
    assert isinstance(error, SignInError)
    assert (error.error_code, error.code, error.message, error.exit_code) == (
        "invalid_grant",
        "invalid_grant",
        "revoked",
        3,
    )
    assert error.details == {"error_codes": [50173], "refresh_token": "***"}
    assert AuthenticationError("user_cancelled", "Sign-in cancelled.").exit_code == ExitStatus.INTERRUPTED


# ----- device code, silent, refresh -----


def test_device_code_then_silent_from_the_persisted_cache(sim: Simulator, make: Auth) -> None:
    first = make()
    assert first.account() is None
    token = first.authenticate()
    assert first.last_token_source == "device_code"
    assert len(make.prompts) == 1
    code = CODE.search(make.prompts[0])
    assert code and make.prompts[0] == (
        f"To sign in, use a web browser to open the page {sim.base_url}/devicelogin and enter the code "
        f"{code.group(1)} to authenticate."
    )
    assert claims(token)["upn"] == ADMIN and claims(token)["aud"] == sim.base_url
    home = f"{claims(token)['oid']}.{TENANT}"
    assert first.account() == {
        "kind": "user",
        "username": ADMIN,
        "client_id": CLIENT,
        "tenant_id": TENANT,
        "home_account_id": home,
        "object_id": claims(token)["oid"],  # msal's local_account_id: the ID token's oid
    }
    expires = first.token_expires_on()
    assert expires is not None and abs(expires - (datetime.now(UTC) + timedelta(seconds=3600))) < timedelta(seconds=10)
    assert counts(sim) == {"discovery": 1, "device_authorization": 1, "device_code": 1, "token": 1}

    second = make()  # a new msal app, as a new process has: the cache file and the saved discovery
    assert second.get_token() == token
    assert second.last_token_source == "cache"
    assert second.authenticate() == token
    assert second.is_authenticated()
    assert counts(sim) == {"discovery": 1, "device_authorization": 1, "device_code": 1, "token": 1}
    assert len(make.prompts) == 1


def test_expired_access_token_is_refreshed_with_the_rotated_refresh_token(tmp_path: Path) -> None:
    with make_simulator(tmp_path, mailboxes=0, auto_approve_after=0.0, token_lifetime=200) as sim:
        make = Auth(sim, tmp_path / "c.json")
        first = make().authenticate()
        auth = make()
        second = auth.get_token()
        assert auth.last_token_source == "refresh" and second != first
        assert counts(sim)["refresh_token"] == 1
        refresh_tokens = make.cache_json()["RefreshToken"]
        newest = [token for kind, token in sim.identity.issued if kind == "refresh_token"][-1]
        assert [entry["secret"] for entry in refresh_tokens.values()] == [newest]
        forced = make().get_token(force_refresh=True)
        assert forced not in {first, second} and counts(sim)["refresh_token"] == 2


def test_force_refresh_and_a_scope_per_call(sim: Simulator, make: Auth) -> None:
    make().authenticate()
    auth = make()
    compliance = auth.get_token([f"{sim.base_url}/compliance/.default"])
    assert claims(compliance)["aud"] == f"{sim.base_url}/compliance"
    assert auth.last_token_source == "refresh"
    assert auth.get_token([f"{sim.base_url}/compliance/.default"]) == compliance  # now cached
    assert auth.last_token_source == "cache"
    fresh = auth.get_token(force_refresh=True)
    assert claims(fresh)["aud"] == sim.base_url
    assert counts(sim)["refresh_token"] == 2 and counts(sim)["device_code"] == 1


def test_revoked_refresh_token_clears_the_account_then_signs_in_again(tmp_path: Path) -> None:
    with make_simulator(tmp_path, mailboxes=0, auto_approve_after=0.0, token_lifetime=120) as sim:
        make = Auth(sim, tmp_path / "c.json")
        make().authenticate()
        sim.identity.revoke_refresh_tokens(ADMIN)
        auth = make()
        with pytest.raises(AuthenticationError) as caught:
            auth.get_token()
        error = caught.value
        assert (error.error_code, error.exit_code) == ("invalid_grant", ExitStatus.SIGN_IN)
        assert error.message == (
            f"The saved sign-in for {ADMIN} is no longer valid (revoked or expired); "
            "it was removed from the token cache."
        )
        assert error.hint == "run 'imm login' to sign in again"
        assert error.details["error_codes"] == [50173] and error.details["suberror"] == "bad_token"
        assert auth.account() is None
        cache = make.cache_json()
        assert not cache.get("Account") and not cache.get("RefreshToken") and not cache.get("AccessToken")
        with pytest.raises(AuthenticationError) as same_process:  # e.g. another sync thread: still says why
            auth.get_token()
        assert same_process.value.error_code == "invalid_grant"
        with pytest.raises(AuthenticationError) as again:  # a new process only knows nobody is signed in
            make().get_token()
        assert again.value.error_code == "login_required"
        # authenticate() asks to sign in again, with a new device code
        make.prompts.clear()
        sim.identity.revoke_refresh_tokens()
        fresh = make()
        fresh.authenticate()
        assert fresh.last_token_source == "device_code"
        assert CODE.search(make.prompts[-1])


def test_invalid_grant_during_authenticate_asks_to_sign_in_again(tmp_path: Path) -> None:
    with make_simulator(tmp_path, mailboxes=0, auto_approve_after=0.0, token_lifetime=120) as sim:
        make = Auth(sim, tmp_path / "c.json")
        make().authenticate()
        sim.identity.revoke_user(ADMIN)
        make.prompts.clear()
        auth = make()
        token = auth.authenticate()
        assert auth.last_token_source == "device_code"
        assert make.prompts[0].startswith(f"The saved sign-in for {ADMIN} is no longer valid")
        assert make.prompts[0].endswith("Sign in again.")
        assert CODE.search(make.prompts[1])
        assert sim.identity.verify_access_token(token, sim.base_url)["upn"] == ADMIN


# ----- device code outcomes -----


def test_declined(manual: Simulator, tmp_path: Path) -> None:
    make = Auth(manual, tmp_path / "c.json")

    def decline(message: str) -> None:
        make.prompts.append(message)
        manual.identity.decline(CODE.search(message).group(1))  # type: ignore[union-attr]

    with pytest.raises(AuthenticationError) as caught:
        make(prompt=decline).authenticate()
    assert (caught.value.error_code, caught.value.exit_code) == ("authorization_declined", 3)
    assert caught.value.message == "The sign-in request was declined."
    assert make().account() is None


def test_approved_by_a_person_after_a_wait(manual: Simulator, tmp_path: Path) -> None:
    make = Auth(manual, tmp_path / "c.json")

    def approve_later(message: str) -> None:
        code = CODE.search(message).group(1)  # type: ignore[union-attr]
        threading.Timer(1.2, manual.identity.approve, args=(code, ADMIN)).start()

    auth = make(prompt=approve_later)
    token = auth.authenticate()
    assert claims(token)["upn"] == ADMIN
    assert counts(manual)["device_code"] >= 2  # pending first, then the tokens


def test_expired_code(manual: Simulator, tmp_path: Path) -> None:
    make = Auth(manual, tmp_path / "c.json")
    with pytest.raises(AuthenticationError) as caught:
        make(prompt=lambda message: manual.identity.expire_device_codes()).authenticate()
    error = caught.value
    assert (error.error_code, error.exit_code) == ("expired_token", 3)
    assert error.message == "The sign-in code expired before it was used (AADSTS70019: Verification code expired.)."
    assert error.hint == "run 'imm login' again and enter the new code before it expires"


def test_the_wait_is_bounded(manual: Simulator, tmp_path: Path) -> None:
    make = Auth(manual, tmp_path / "c.json")
    started = time.monotonic()
    with pytest.raises(AuthenticationError) as caught:
        make(device_code_timeout=1.5).authenticate()
    assert time.monotonic() - started < 5
    assert caught.value.error_code == "timeout"
    assert caught.value.message == "The sign-in code was not used within 1.5 seconds."
    assert Authenticator._seconds(300) == "5 minutes"


def test_cancel_from_another_thread(manual: Simulator, tmp_path: Path) -> None:
    make = Auth(manual, tmp_path / "c.json")
    holder: list[Authenticator] = []
    auth = make(prompt=lambda message: threading.Timer(0.3, holder[0].cancel).start())
    holder.append(auth)
    with pytest.raises(AuthenticationError) as caught:
        auth.authenticate()
    assert (caught.value.error_code, caught.value.exit_code) == ("user_cancelled", ExitStatus.INTERRUPTED)


def test_ctrl_c_cancels_cleanly(manual: Simulator, tmp_path: Path) -> None:
    make = Auth(manual, tmp_path / "c.json")
    auth = make(prompt=lambda message: threading.Timer(0.3, _thread.interrupt_main).start())
    with pytest.raises(AuthenticationError) as caught:
        auth.authenticate()
    assert caught.value.error_code == "user_cancelled"
    assert caught.value.message == "Sign-in cancelled."
    assert caught.value.__suppress_context__


# ----- configuration and network errors -----


def test_unknown_client_id(make: Auth) -> None:
    with pytest.raises(AuthenticationError) as caught:
        make(client_id="00000000-1111-2222-3333-444444444444").authenticate()
    error = caught.value
    assert error.error_code == "unauthorized_client" and error.exit_code == 3
    assert error.message.startswith(
        "The sign-in service refused the application '00000000-1111-2222-3333-444444444444' (AADSTS700016: "
    )
    assert "client_id" in (error.hint or "")


def test_unknown_tenant(make: Auth, sim: Simulator) -> None:
    with pytest.raises(AuthenticationError) as caught:
        make(tenant="fabrikam.onmicrosoft.com").authenticate()
    host = sim.base_url.removeprefix("https://")
    assert caught.value.error_code == "invalid_tenant"
    assert caught.value.message == f"The sign-in service at {host} does not know the tenant 'fabrikam.onmicrosoft.com'."


def test_network_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    auth = Authenticator(
        CLIENT, TENANT, tmp_path / "c.json", authority_host=f"https://127.0.0.1:{port}", request_timeout=5
    )
    with pytest.raises(AuthenticationError) as caught:
        auth.authenticate()
    assert caught.value.error_code == "network_error" and caught.value.exit_code == 3
    assert caught.value.message.startswith(f"Cannot reach the sign-in service at 127.0.0.1:{port} (")


def test_untrusted_certificate_without_the_ca_bundle(make: Auth, sim: Simulator) -> None:
    with pytest.raises(AuthenticationError) as caught:
        make(ca_bundle=None).authenticate()
    host = sim.base_url.removeprefix("https://")
    assert caught.value.error_code == "network_error"
    assert caught.value.message.startswith(f"The TLS certificate of the sign-in service at {host} is not trusted")
    assert "ca_bundle" in (caught.value.hint or "")


def test_http_authority_is_refused(tmp_path: Path) -> None:
    auth = Authenticator(CLIENT, TENANT, tmp_path / "c.json", authority_host="http://127.0.0.1:1")
    with pytest.raises(AuthenticationError) as caught:
        auth.authenticate()
    assert caught.value.error_code == "invalid_authority"


def test_get_token_from_many_threads(sim: Simulator, make: Auth) -> None:
    make().authenticate()
    auth = make()
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                results.append(auth.get_token())
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 40 and len(set(results)) == 1
    assert counts(sim)["token"] == 1


def test_logout(sim: Simulator, make: Auth) -> None:
    make().authenticate()
    auth = make()
    assert auth.logout() == [ADMIN]
    assert auth.account() is None and auth.token_expires_on() is None
    cache = make.cache_json()
    assert all(not cache.get(kind) for kind in ("AccessToken", "RefreshToken", "IdToken", "Account"))
    with pytest.raises(AuthenticationError) as caught:
        make().get_token()
    assert caught.value.error_code == "login_required" and caught.value.hint == "run 'imm login'"
    assert make().logout() == []
    assert counts(sim)["token"] == 1  # signing out needs no network


# ----- app-only with a certificate -----


def app_auth(make: Auth, sim: Simulator, path: Path, password: str | None = None, **options: Any) -> Authenticator:
    return make(
        client_id=sim.identity.automation_client_id, certificate_path=path, certificate_password=password, **options
    )


def test_certificate_pem(sim: Simulator, make: Auth) -> None:
    auth = app_auth(make, sim, sim.identity.app_certificate_path)
    token = auth.authenticate()
    assert auth.last_token_source == "certificate"
    claim = sim.identity.verify_access_token(token, sim.base_url)
    assert claim["roles"] == ["Exchange.ManageAsApp"] and claim["appid"] == sim.identity.automation_client_id
    assert auth.account() == {
        "kind": "app",
        "username": None,
        "client_id": sim.identity.automation_client_id,
        "tenant_id": TENANT,
        "home_account_id": None,
    }
    assert auth.token_expires_on() is not None
    again = app_auth(make, sim, sim.identity.app_certificate_path)
    assert again.get_token() == token and again.last_token_source == "cache"
    assert counts(sim)["client_credentials"] == 1
    assert again.get_token(force_refresh=True) != token and counts(sim)["client_credentials"] == 2
    assert again.logout() == [f"app:{sim.identity.automation_client_id}"]
    cert = again.certificate()
    registered = x509.load_pem_x509_certificate(sim.identity.app_certificate_path.read_bytes())
    assert cert.sha1_thumbprint == registered.fingerprint(hashes.SHA1()).hex().upper()
    assert "private_key" not in repr(cert)


def write_pfx(sim: Simulator, path: Path, password: bytes | None) -> Path:
    data = sim.identity.app_certificate_path.read_bytes()
    key = serialization.load_pem_private_key(data, None)
    cert = x509.load_pem_x509_certificate(data)
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    path.write_bytes(pkcs12.serialize_key_and_certificates(b"imm", key, cert, None, encryption))  # type: ignore[arg-type]
    return path


def test_certificate_pfx_with_password(sim: Simulator, make: Auth, tmp_path: Path) -> None:
    pfx = write_pfx(sim, tmp_path / "app.pfx", b"pfx-pass")
    auth = app_auth(make, sim, pfx, "pfx-pass")
    assert claims(auth.authenticate())["appid"] == sim.identity.automation_client_id
    with pytest.raises(AuthenticationError) as wrong:
        app_auth(make, sim, pfx, "nope").authenticate()
    assert wrong.value.error_code == "certificate_error"
    assert wrong.value.message == f"Cannot use the certificate {pfx}: it is not a PFX file or the password is wrong"
    with pytest.raises(AuthenticationError) as missing:
        app_auth(make, sim, pfx, None).authenticate()
    assert missing.value.hint == "set the password in the environment variable IMM_CERTIFICATE_PASSWORD"


def test_certificate_problems_are_reported(sim: Simulator, make: Auth, tmp_path: Path) -> None:
    key, cert = make_certificate("not registered")
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(certificate_pem(key, cert))
    with pytest.raises(AuthenticationError) as refused:
        app_auth(make, sim, wrong).authenticate()
    assert refused.value.error_code == "invalid_client" and refused.value.exit_code == 3
    assert "AADSTS700027" in refused.value.message

    only_cert = tmp_path / "cert-only.pem"
    only_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
        )
    )
    other_key, _ = make_certificate("other")
    mismatched = tmp_path / "mismatched.pem"
    mismatched.write_bytes(certificate_pem(other_key, cert))
    cases = {
        tmp_path / "missing.pem": "No such file or directory",
        only_cert: "it holds no private key",
        encrypted: "the private key is encrypted and no password was given",
        mismatched: "no certificate in it matches the private key",
        tmp_path / "garbage.pfx": "it is not a PFX file or the password is wrong",
    }
    (tmp_path / "garbage.pfx").write_bytes(b"\x00\x01 not a pfx")
    for path, text in cases.items():
        with pytest.raises(AuthenticationError) as caught:
            app_auth(make, sim, path).authenticate()
        assert caught.value.error_code == "certificate_error"
        assert caught.value.message.startswith(f"Cannot use the certificate {path}: {text}")
    assert counts(sim).get("client_credentials", 0) == 1  # only the wrong (but well-formed) certificate was sent
    # an encrypted PEM key with its password works as far as the service (which refuses the unregistered cert)
    with pytest.raises(AuthenticationError) as encrypted_ok:
        app_auth(make, sim, encrypted, "pw").authenticate()
    assert encrypted_ok.value.error_code == "invalid_client"


def test_app_only_needs_a_specific_tenant(sim: Simulator, make: Auth) -> None:
    with pytest.raises(AuthenticationError) as caught:
        app_auth(make, sim, sim.identity.app_certificate_path, tenant="organizations").authenticate()
    assert caught.value.error_code == "invalid_tenant"
    assert caught.value.message == "App-only sign-in needs a specific tenant, not 'organizations'."
