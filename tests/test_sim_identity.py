"""The simulated Entra ID on the wire: discovery, device code, verification page, refresh, client assertions,
access token checks. Driven with httpx over real TLS (trusting the simulator's CA explicitly)."""

from __future__ import annotations

import base64
import json
import os
import ssl
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from conftest import make_simulator
from imm.simulator import Simulator
from imm.simulator.identity import TokenRejected, make_certificate

TENANT = "6f1b7c2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f"
CLIENT = "fb78d390-0c51-40cd-8e17-fdbfab77341b"
ADMIN = "admin@contoso.onmicrosoft.com"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    with make_simulator(tmp_path, mailboxes=0, device_code_interval=1, device_code_expires_in=30) as served:
        yield served


@pytest.fixture
def http(sim: Simulator) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(sim.ca_path))
    with httpx.Client(base_url=sim.base_url, verify=context, trust_env=False, timeout=10) as client:
        yield client


def scope(sim: Simulator, resource: str = "") -> str:
    return f"{sim.base_url}{resource}/.default offline_access openid profile"


def start_device_code(http: httpx.Client, sim: Simulator, client_id: str = CLIENT) -> dict[str, Any]:
    reply = http.post(f"/{TENANT}/oauth2/v2.0/devicecode", data={"client_id": client_id, "scope": scope(sim)})
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def poll(http: httpx.Client, device_code: str, client_id: str = CLIENT) -> httpx.Response:
    return http.post(
        f"/{TENANT}/oauth2/v2.0/token",
        data={
            "client_id": client_id,
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": device_code,
            "code": device_code,
            "client_info": "1",
        },
    )


def assert_error(reply: httpx.Response, error: str, code: int, status: int = 400) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    body = dict(reply.json())
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)
    return body


def signed_in(http: httpx.Client, sim: Simulator, upn: str | None = None) -> dict[str, Any]:
    flow = start_device_code(http, sim)
    sim.identity.approve(flow["user_code"], upn)
    reply = poll(http, flow["device_code"])
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def unverified(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


# ----- discovery -----


def test_discovery_has_entra_v2_layout_with_the_tenant_guid(sim: Simulator, http: httpx.Client) -> None:
    base = sim.base_url
    for segment in (TENANT, "contoso.onmicrosoft.com", "CONTOSO.onmicrosoft.com"):
        doc = http.get(f"/{segment}/v2.0/.well-known/openid-configuration").json()
        assert doc["issuer"] == f"{base}/{TENANT}/v2.0"
        assert doc["authorization_endpoint"] == f"{base}/{TENANT}/oauth2/v2.0/authorize"
        assert doc["token_endpoint"] == f"{base}/{TENANT}/oauth2/v2.0/token"
        assert doc["device_authorization_endpoint"] == f"{base}/{TENANT}/oauth2/v2.0/devicecode"
        assert doc["jwks_uri"] == f"{base}/{TENANT}/discovery/v2.0/keys"
    organizations = http.get("/organizations/v2.0/.well-known/openid-configuration").json()
    assert organizations["token_endpoint"] == f"{base}/organizations/oauth2/v2.0/token"
    assert organizations["issuer"] == f"{base}/{{tenantid}}/v2.0"
    assert sim.identity.counters["discovery"] == 4


def test_discovery_of_an_unknown_tenant_is_invalid_tenant(http: httpx.Client) -> None:
    reply = http.get("/fabrikam.onmicrosoft.com/v2.0/.well-known/openid-configuration")
    body = assert_error(reply, "invalid_tenant", 90002)
    assert "Tenant 'fabrikam.onmicrosoft.com' not found" in body["error_description"]


def test_jwks_verifies_issued_tokens(sim: Simulator, http: httpx.Client) -> None:
    keys = http.get(f"/{TENANT}/discovery/v2.0/keys").json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and keys[0]["use"] == "sig"
    public = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(keys[0]))
    token = sim.identity.issue_access_token(ADMIN, sim.base_url)
    assert jwt.get_unverified_header(token)["kid"] == keys[0]["kid"]
    claims = jwt.decode(token, public, algorithms=["RS256"], audience=sim.base_url)  # type: ignore[arg-type]
    assert claims["upn"] == ADMIN


# ----- device code flow and the verification page -----


def test_device_code_response_and_message(sim: Simulator, http: httpx.Client) -> None:
    flow = start_device_code(http, sim)
    assert set(flow) == {"user_code", "device_code", "verification_uri", "expires_in", "interval", "message"}
    assert flow["verification_uri"] == f"{sim.base_url}/devicelogin"
    assert flow["expires_in"] == 30 and flow["interval"] == 1
    assert len(flow["user_code"]) == 9 and flow["user_code"].isalnum() and flow["user_code"].isupper()
    assert flow["message"] == (
        f"To sign in, use a web browser to open the page {sim.base_url}/devicelogin and enter the code "
        f"{flow['user_code']} to authenticate."
    )
    assert sim.identity.pending_user_codes() == [flow["user_code"]]


def test_interval_is_at_least_one_second(tmp_path: Path) -> None:
    with make_simulator(tmp_path, mailboxes=0, device_code_interval=0) as sim:
        context = ssl.create_default_context(cafile=str(sim.ca_path))
        with httpx.Client(base_url=sim.base_url, verify=context, trust_env=False) as client:
            assert start_device_code(client, sim)["interval"] == 1


def test_pending_then_slow_down_then_approved_on_the_page(sim: Simulator, http: httpx.Client) -> None:
    flow = start_device_code(http, sim)
    assert_error(poll(http, flow["device_code"]), "authorization_pending", 70016)
    assert_error(poll(http, flow["device_code"]), "slow_down", 70016)  # polled again at once

    page = http.get("/devicelogin", params={"otc": flow["user_code"]})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/devicelogin">' in page.text
    assert f'name="code" value="{flow["user_code"]}"' in page.text
    assert '<select id="username" name="username">' in page.text and ADMIN in page.text
    assert 'name="action" value="approve"' in page.text and 'name="action" value="decline"' in page.text

    done = http.post("/devicelogin", data={"code": flow["user_code"].lower(), "username": ADMIN, "action": "approve"})
    assert done.status_code == 200 and "You have signed in" in done.text

    tokens = poll(http, flow["device_code"])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert set(body) == {
        "token_type", "scope", "expires_in", "ext_expires_in", "access_token", "refresh_token", "id_token",
        "client_info",
    }  # fmt: skip
    assert body["token_type"] == "Bearer" and body["scope"] == f"{sim.base_url}/.default"
    assert body["expires_in"] == 3600
    access = sim.identity.verify_access_token(body["access_token"], sim.base_url)
    assert access["aud"] == sim.base_url and access["upn"] == ADMIN and access["tid"] == TENANT
    assert access["scp"] == "Exchange.Manage" and access["appid"] == CLIENT and access["idtyp"] == "user"
    assert access["exp"] - access["iat"] == 3600
    id_claims = unverified(body["id_token"])
    assert id_claims["aud"] == CLIENT and id_claims["iss"] == f"{sim.base_url}/{TENANT}/v2.0"
    assert id_claims["preferred_username"] == ADMIN and id_claims["tid"] == TENANT and id_claims["ver"] == "2.0"
    assert id_claims["oid"] == access["oid"]
    info = json.loads(base64.urlsafe_b64decode(body["client_info"] + "=" * (-len(body["client_info"]) % 4)))
    assert info == {"uid": access["oid"], "utid": TENANT}
    # a device code is redeemed once
    assert_error(poll(http, flow["device_code"]), "invalid_grant", 54005)
    assert sim.identity.counters["device_authorization"] == 1
    assert sim.identity.counters["device_code"] == 4
    assert sim.identity.pending_user_codes() == []


def test_declined_on_the_page(sim: Simulator, http: httpx.Client) -> None:
    flow = start_device_code(http, sim)
    page = http.post("/devicelogin", data={"code": flow["user_code"], "action": "decline"})
    assert page.status_code == 200 and "You declined" in page.text
    assert_error(poll(http, flow["device_code"]), "authorization_declined", 70000)


def test_expired_code(sim: Simulator, http: httpx.Client) -> None:
    flow = start_device_code(http, sim)
    sim.identity.expire_device_codes()
    assert_error(poll(http, flow["device_code"]), "expired_token", 70019)
    page = http.post("/devicelogin", data={"code": flow["user_code"], "action": "approve"})
    assert page.status_code == 400 and "expired or was already used" in page.text


def test_page_refuses_an_unknown_code_and_escapes_input(http: httpx.Client) -> None:
    page = http.post("/devicelogin", data={"code": "<script>x</script>", "action": "approve"})
    assert page.status_code == 400 and "That code is not valid" in page.text
    assert "<script>x</script>" not in page.text and "&lt;script&gt;" in page.text


def test_approve_as_another_user(sim: Simulator, http: httpx.Client) -> None:
    sim.identity.add_user("ops@contoso.onmicrosoft.com", "Ops")
    body = signed_in(http, sim, "ops@contoso.onmicrosoft.com")
    assert sim.identity.verify_access_token(body["access_token"], sim.base_url)["upn"] == "ops@contoso.onmicrosoft.com"


def test_unknown_client_and_unknown_resource(sim: Simulator, http: httpx.Client) -> None:
    unknown = http.post(f"/{TENANT}/oauth2/v2.0/devicecode", data={"client_id": str(uuid.uuid4()), "scope": scope(sim)})
    assert_error(unknown, "unauthorized_client", 700016)
    confidential = http.post(
        f"/{TENANT}/oauth2/v2.0/devicecode", data={"client_id": sim.identity.automation_client_id, "scope": scope(sim)}
    )
    assert_error(confidential, "invalid_client", 7000218, status=401)
    resource = http.post(
        f"/{TENANT}/oauth2/v2.0/devicecode",
        data={"client_id": CLIENT, "scope": "https://outlook.office365.com/.default offline_access"},
    )
    assert_error(resource, "invalid_resource", 500011)
    grant = http.post(f"/{TENANT}/oauth2/v2.0/token", data={"client_id": CLIENT, "grant_type": "password"})
    assert_error(grant, "unsupported_grant_type", 70003)


# ----- refresh tokens and revocation -----


def refresh(http: httpx.Client, sim: Simulator, token: str, resource: str = "") -> httpx.Response:
    return http.post(
        f"/{TENANT}/oauth2/v2.0/token",
        data={
            "client_id": CLIENT,
            "grant_type": "refresh_token",
            "refresh_token": token,
            "scope": scope(sim, resource),
        },
    )


def test_refresh_rotates_and_serves_another_resource(sim: Simulator, http: httpx.Client) -> None:
    first = signed_in(http, sim)
    reply = refresh(http, sim, first["refresh_token"], "/compliance")
    assert reply.status_code == 200, reply.text
    second = reply.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == f"{sim.base_url}/compliance/.default"
    assert sim.identity.verify_access_token(second["access_token"], f"{sim.base_url}/compliance")["upn"] == ADMIN
    with pytest.raises(TokenRejected):
        sim.identity.verify_access_token(second["access_token"], sim.base_url)
    # as in Entra, the previous refresh token stays valid until it is revoked or expires
    assert refresh(http, sim, first["refresh_token"]).status_code == 200
    assert sim.identity.counters["refresh_token"] == 2


def test_revoked_refresh_token_is_invalid_grant(sim: Simulator, http: httpx.Client) -> None:
    tokens = signed_in(http, sim)
    assert sim.identity.revoke_refresh_tokens(ADMIN) == 1
    body = assert_error(refresh(http, sim, tokens["refresh_token"]), "invalid_grant", 50173)
    assert body["suberror"] == "bad_token"
    assert_error(refresh(http, sim, "0.Anot-a-token"), "invalid_grant", 9002313)


def test_revoked_user_loses_tokens_but_can_sign_in_again(sim: Simulator, http: httpx.Client) -> None:
    before = signed_in(http, sim)
    sim.identity.revoke_user(ADMIN)
    with pytest.raises(TokenRejected, match="revoked"):
        sim.identity.verify_access_token(before["access_token"], sim.base_url)
    assert_error(refresh(http, sim, before["refresh_token"]), "invalid_grant", 50173)
    after = signed_in(http, sim)
    assert sim.identity.verify_access_token(after["access_token"], sim.base_url)["upn"] == ADMIN


def test_disabled_user_is_refused(sim: Simulator, http: httpx.Client) -> None:
    tokens = signed_in(http, sim)
    sim.identity.disable_user(ADMIN)
    assert_error(refresh(http, sim, tokens["refresh_token"]), "invalid_grant", 50057)
    with pytest.raises(TokenRejected, match="disabled"):
        sim.identity.verify_access_token(tokens["access_token"], sim.base_url)


def test_verify_access_token_checks_signature_audience_and_expiry(sim: Simulator, tmp_path: Path) -> None:
    token = sim.identity.issue_access_token(ADMIN, sim.base_url)
    assert sim.identity.verify_access_token(token, sim.base_url + "/")["upn"] == ADMIN
    with pytest.raises(TokenRejected):
        sim.identity.verify_access_token(token, f"{sim.base_url}/compliance")
    with pytest.raises(TokenRejected, match="token expired"):
        sim.identity.verify_access_token(
            sim.identity.issue_access_token(ADMIN, sim.base_url, lifetime=-60), sim.base_url
        )
    head, payload, signature = token.split(".")
    forged = ".".join([head, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")])
    with pytest.raises(TokenRejected):
        sim.identity.verify_access_token(forged, sim.base_url)
    with make_simulator(tmp_path / "other", mailboxes=0) as other:
        with pytest.raises(TokenRejected):
            sim.identity.verify_access_token(other.identity.issue_access_token(ADMIN, sim.base_url), sim.base_url)


# ----- app-only: the registered certificate and client assertions -----


def assertion(
    sim: Simulator,
    key: Any,
    cert: x509.Certificate,
    *,
    alg: str = "RS256",
    aud: str | None = None,
    iss: str | None = None,
    exp_in: int = 600,
) -> str:
    client_id = sim.identity.automation_client_id
    now = int(time.time())
    claims = {
        "aud": aud or f"{sim.base_url}/{TENANT}/oauth2/v2.0/token",
        "iss": iss or client_id,
        "sub": client_id,
        "jti": str(uuid.uuid4()),
        "nbf": now,
        "iat": now,
        "exp": now + exp_in,
    }
    if alg == "RS256":
        header = {"x5t": base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).decode()}
    else:
        header = {"x5t#S256": base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).decode().rstrip("=")}
    return jwt.encode(claims, key, algorithm=alg, headers=header)


def app_token(http: httpx.Client, sim: Simulator, signed: str, scopes: str | None = None) -> httpx.Response:
    return http.post(
        f"/{TENANT}/oauth2/v2.0/token",
        data={
            "client_id": sim.identity.automation_client_id,
            "grant_type": "client_credentials",
            "scope": scopes or f"{sim.base_url}/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed,
            "client_info": "1",
        },
    )


def registered(sim: Simulator) -> tuple[Any, x509.Certificate]:
    data = sim.identity.app_certificate_path.read_bytes()
    return serialization.load_pem_private_key(data, None), x509.load_pem_x509_certificate(data)


def test_app_certificate_file_is_private_and_stable(tmp_path: Path) -> None:
    with make_simulator(tmp_path, mailboxes=0) as first:
        path = first.identity.app_certificate_path
        client_id = first.identity.automation_client_id
        assert path == tmp_path / "sim" / "app-cert.pem"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        pem = path.read_bytes()
        assert b"BEGIN CERTIFICATE" in pem and b"BEGIN PRIVATE KEY" in pem
        token = first.identity.issue_access_token(ADMIN, first.base_url)
    uuid.UUID(client_id)
    with make_simulator(tmp_path, mailboxes=0) as again:  # same data folder: same app, cert and signing key
        assert again.identity.automation_client_id == client_id
        assert again.identity.app_certificate_path.read_bytes() == pem
        assert again.identity.verify_access_token(token, first.base_url)["upn"] == ADMIN


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_client_assertion_gets_an_app_token(sim: Simulator, http: httpx.Client, alg: str) -> None:
    key, cert = registered(sim)
    signed = assertion(sim, key, cert, alg=alg)
    reply = app_token(http, sim, signed)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    claims = sim.identity.verify_access_token(body["access_token"], sim.base_url)
    assert claims["roles"] == ["Exchange.ManageAsApp"] and claims["appid"] == sim.identity.automation_client_id
    assert claims["idtyp"] == "app" and "upn" not in claims and "scp" not in claims
    assert signed in sim.identity.issued_secrets()
    assert sim.identity.counters["client_credentials"] == 1


def test_client_assertion_refusals(sim: Simulator, http: httpx.Client) -> None:
    key, cert = registered(sim)
    other_key, other_cert = make_certificate(sim.identity.automation_client_id)
    assert_error(app_token(http, sim, assertion(sim, other_key, other_cert)), "invalid_client", 700027, 401)
    # the registered thumbprint but signed by another key
    forged = assertion(sim, other_key, cert)
    assert_error(app_token(http, sim, forged), "invalid_client", 700027, 401)
    assert_error(
        app_token(http, sim, assertion(sim, key, cert, aud="https://elsewhere/token")), "invalid_client", 700212, 401
    )
    assert_error(app_token(http, sim, assertion(sim, key, cert, exp_in=-900)), "invalid_client", 700024, 401)
    assert_error(app_token(http, sim, assertion(sim, key, cert, iss="someone-else")), "invalid_client", 700021, 401)
    scoped = app_token(http, sim, assertion(sim, key, cert), scopes=f"{sim.base_url}/Exchange.Manage")
    assert_error(scoped, "invalid_scope", 1002012)
    unknown = http.post(
        f"/{TENANT}/oauth2/v2.0/token",
        data={"client_id": str(uuid.uuid4()), "grant_type": "client_credentials", "scope": f"{sim.base_url}/.default"},
    )
    assert_error(unknown, "unauthorized_client", 700016)


def test_issue_app_only_token_directly(sim: Simulator) -> None:
    token = sim.identity.issue_access_token(
        sim.identity.automation_client_id, sim.base_url, lifetime=120, app_only=True
    )
    claims = sim.identity.verify_access_token(token, sim.base_url)
    assert claims["roles"] == ["Exchange.ManageAsApp"] and claims["app_displayname"] == "imm-automation"
    assert claims["exp"] - claims["iat"] == 120
