"""Simulated Entra ID: OIDC discovery, the device code flow with a verification page, refresh tokens, app-only
sign-in with a certificate (client assertion), signed JWT access tokens and revocation.

Served on the simulator's HTTPS server (``base`` is ``https://127.0.0.1:PORT``, ``{t}`` the tenant GUID, its
``.onmicrosoft.com`` name, ``organizations`` or ``common``):

- ``GET  {base}/{t}/v2.0/.well-known/openid-configuration`` (Entra's v2.0 layout; endpoints carry the tenant GUID)
- ``GET  {base}/{t}/discovery/v2.0/keys`` (JWKS)
- ``POST {base}/{t}/oauth2/v2.0/devicecode`` and ``POST {base}/{t}/oauth2/v2.0/token``
- ``GET|POST {base}/devicelogin``: the page where a person types the code and approves or declines.

Interface other parts rely on (the Exchange simulator checks bearer tokens with it):
- ``IdentityProvider(config, base_url)``; ``register(router)`` adds the routes.
- ``issue_access_token(subject_upn, audience, lifetime=None, app_only=False) -> str`` (with ``app_only`` the
  subject is the application's client id).
- ``verify_access_token(token, audience) -> dict``: the claims, or raises ``TokenRejected(reason)`` for a bad
  signature, audience or issuer, an expired token, or a user whose sessions were revoked or who is disabled.

Knobs for tests: ``add_user``, ``revoke_user``, ``disable_user``, ``revoke_refresh_tokens``, ``approve``,
``decline``, ``expire_device_codes``, ``pending_user_codes``, ``counters`` (requests per grant type),
``issued_secrets()`` (every token, assertion and device code handed out or received, to grep logs for).

AADSTS codes and texts follow Entra's where known; the rest are illustrative (msal branches only on ``error``).
Imports nothing from the rest of imm.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import os
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from imm.simulator.server import Request, Response, Router

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})
# The delegated permission in the access token's ``scp`` and the application role for app-only (exo-rest.md §5).
# The exact delegated ``scp`` value Exchange Online issues to the EXO module's client is unconfirmed.
DELEGATED_SCP = "Exchange.Manage"
APP_ROLE = "Exchange.ManageAsApp"
AUTOMATION_APP_NAME = "imm-automation"
CLOCK_SKEW = 300  # seconds Entra tolerates on client assertion times
_CLAIMS_SUPPORTED = (
    "sub iss aud exp iat auth_time acr nonce preferred_username name tid ver at_hash c_hash email".split()
)
_NEEDS_CREDENTIAL = "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ23456789"  # no vowels, no look-alikes


class TokenRejected(Exception):
    """An access token the simulated service refuses; ``reason`` is Microsoft-like text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OAuthError(Exception):
    """An OAuth error answered as Entra does: HTTP 400 with ``error``, ``error_description`` (AADSTS…)."""

    def __init__(self, error: str, code: int, text: str, suberror: str | None = None, status: int = 400) -> None:
        super().__init__(f"{error}: AADSTS{code}: {text}")
        self.error = error
        self.code = code
        self.text = text
        self.suberror = suberror
        self.status = status


@dataclass
class User:
    upn: str
    name: str
    oid: str
    enabled: bool = True
    sessions_valid_after: float = 0.0  # revokeSignInSessions: grants and tokens issued before are dead


@dataclass
class App:
    client_id: str
    name: str
    public: bool  # public client (device code) or confidential (certificate)
    certificates: list[x509.Certificate] = field(default_factory=list)


@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scopes: list[str]  # resource scopes as requested
    resource: str
    created: float
    expires_at: float
    interval: int
    status: str = "pending"  # pending | approved | declined | redeemed
    upn: str | None = None
    first_poll: float | None = None
    last_poll: float | None = None


@dataclass
class RefreshGrant:
    upn: str
    client_id: str
    issued_at: float
    revoked: bool = False


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _thumbprint(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    return _b64url(cert.fingerprint(algorithm))


def make_certificate(common_name: str, days: int = 365) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A self-signed certificate and its RSA key, as an app registration's credential."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def certificate_pem(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> bytes:
    """Certificate then unencrypted PKCS#8 private key, the layout imm's ``--certificate`` takes."""
    return cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    """Mode 0600, written atomically (two simulators starting on one data folder never read half a key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _load_or_make_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if isinstance(key, rsa.RSAPrivateKey):
            return key
    except (OSError, ValueError, TypeError):
        pass
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(
        path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    return key


def _load_or_make_app_cert(path: Path, common_name: str) -> x509.Certificate:
    try:
        data = path.read_bytes()
        cert = x509.load_pem_x509_certificate(data)
        serialization.load_pem_private_key(data, None)
        return cert
    except (OSError, ValueError, TypeError):
        pass
    key, cert = make_certificate(common_name)
    _write_private(path, certificate_pem(key, cert))
    return cert


class IdentityProvider:
    """The simulated Entra ID of one tenant."""

    def __init__(self, config: Any, base_url: str) -> None:
        self.config = config
        self.base_url = base_url.rstrip("/")
        self.tenant_id: str = config.tenant_id
        self.tenant_domain: str = config.tenant_domain
        self._lock = threading.RLock()
        data_dir = Path(config.data_dir)
        # The signing key and the app's certificate survive a restart on the same data folder.
        self._key = _load_or_make_key(data_dir / "identity-signing-key.pem")
        self.kid = _thumbprint_of_key(self._key)
        self.app_certificate_path = data_dir / "app-cert.pem"
        self.automation_client_id: str = getattr(config, "app_client_id", None) or str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"imm-simulator:{self.tenant_id}:{AUTOMATION_APP_NAME}")
        )
        app_cert = _load_or_make_app_cert(self.app_certificate_path, AUTOMATION_APP_NAME)
        self.apps: dict[str, App] = {
            config.client_id.lower(): App(config.client_id, "Microsoft Exchange REST API Based Powershell", True),
            self.automation_client_id.lower(): App(self.automation_client_id, AUTOMATION_APP_NAME, False, [app_cert]),
        }
        self.users: dict[str, User] = {}
        self.admin_upn = f"admin@{self.tenant_domain}"
        self.add_user(self.admin_upn, "Tenant Administrator")
        # who signs in on the verification page when sign-in auto-approves (a knob: a second admin for four-eyes)
        self.auto_approve_upn: str = self.admin_upn
        self.resources: set[str] = {self.base_url, f"{self.base_url}/compliance"}
        self.device_codes: dict[str, DeviceCode] = {}
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self._issued_at: dict[str, float] = {}  # access token uti -> exact issue time
        self.counters: Counter[str] = Counter()
        self.issued: deque[tuple[str, str]] = deque(maxlen=10000)  # (kind, token) handed out
        self.received_assertions: deque[str] = deque(maxlen=1000)
        self.workloads: Any = None  # imm.simulator.workload.Workloads, set by the Simulator

    # ----- users and apps (knobs) -----

    def add_user(self, upn: str, name: str | None = None) -> User:
        with self._lock:
            user = User(upn=upn, name=name or upn.split("@")[0], oid=str(uuid.uuid5(uuid.NAMESPACE_URL, upn.lower())))
            self.users[upn.lower()] = user
            return user

    def user(self, upn: str) -> User:
        try:
            return self.users[upn.lower()]
        except KeyError:
            raise KeyError(f"no user {upn!r} in the simulated tenant") from None

    def revoke_user(self, upn: str) -> None:
        """Like revokeSignInSessions: refresh tokens and access tokens issued until now stop working."""
        with self._lock:
            self.user(upn).sessions_valid_after = time.time()

    def disable_user(self, upn: str, disabled: bool = True) -> None:
        """Block sign-in: every grant for the user fails with invalid_grant and its tokens are refused."""
        with self._lock:
            self.user(upn).enabled = not disabled

    def revoke_refresh_tokens(self, upn: str | None = None) -> int:
        """Revoke the refresh tokens of one user (or of everyone); returns how many."""
        with self._lock:
            count = 0
            for grant in self.refresh_tokens.values():
                if not grant.revoked and (upn is None or grant.upn.lower() == upn.lower()):
                    grant.revoked = True
                    count += 1
            return count

    def add_app_certificate(self, client_id: str, cert: x509.Certificate) -> None:
        with self._lock:
            self.apps[client_id.lower()].certificates.append(cert)

    # ----- device codes (knobs) -----

    def pending_user_codes(self) -> list[str]:
        with self._lock:
            now = time.time()
            return [d.user_code for d in self.device_codes.values() if d.status == "pending" and now < d.expires_at]

    def _by_user_code(self, user_code: str) -> DeviceCode:
        wanted = user_code.replace("-", "").replace(" ", "").upper()
        for entry in self.device_codes.values():
            if entry.user_code == wanted:
                return entry
        raise KeyError(f"no device code with user code {user_code!r}")

    def approve(self, user_code: str, upn: str | None = None) -> None:
        """What the person does on the verification page: sign in as ``upn`` (default: the admin)."""
        with self._lock:
            entry = self._by_user_code(user_code)
            self.user(upn or self.admin_upn)
            if entry.status != "pending" or time.time() >= entry.expires_at:
                raise ValueError(f"the code {user_code} is no longer pending")
            entry.status = "approved"
            entry.upn = upn or self.admin_upn

    def decline(self, user_code: str) -> None:
        with self._lock:
            entry = self._by_user_code(user_code)
            if entry.status != "pending":
                raise ValueError(f"the code {user_code} is no longer pending")
            entry.status = "declined"

    def expire_device_codes(self) -> None:
        with self._lock:
            now = time.time()
            for entry in self.device_codes.values():
                entry.expires_at = min(entry.expires_at, now)

    def issued_secrets(self) -> list[str]:
        """Every access, refresh and id token issued, client assertion received and device code handed out."""
        with self._lock:
            return (
                [token for _, token in self.issued]
                + list(self.received_assertions)
                + list(self.device_codes)
                + list(self.refresh_tokens)
            )

    # ----- tokens -----

    @property
    def issuer_v1(self) -> str:
        return f"https://sts.windows.net/{self.tenant_id}/"

    @property
    def issuer_v2(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/v2.0"

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "x5t": self.kid})

    def issue_access_token(
        self,
        subject_upn: str,
        audience: str,
        lifetime: int | None = None,
        app_only: bool = False,
        acrs: list[str] | None = None,
    ) -> str:
        """A signed RS256 access token for ``audience``; with ``app_only`` the subject is a client id; ``acrs`` are
        the authentication contexts a claims request asked for (conditional access; the ``acrs`` claim)."""
        now = time.time()
        iat = int(now)
        uti = _b64url(secrets.token_bytes(16))
        claims: dict[str, Any] = {
            "aud": audience.rstrip("/"),
            "iss": self.issuer_v1,
            "iat": iat,
            "nbf": iat,
            "exp": iat + int(lifetime or self.config.token_lifetime),
            "tid": self.tenant_id,
            "uti": uti,
            "ver": "1.0",
        }
        if app_only:
            app = self.apps.get(subject_upn.lower())
            sp_oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"sp:{subject_upn.lower()}"))
            claims.update(
                appid=subject_upn,
                app_displayname=app.name if app else subject_upn,
                idtyp="app",
                oid=sp_oid,
                sub=sp_oid,
                roles=[APP_ROLE],
            )
        else:
            user = self.users.get(subject_upn.lower())
            oid = user.oid if user else str(uuid.uuid5(uuid.NAMESPACE_URL, subject_upn.lower()))
            claims.update(
                appid=self.config.client_id,
                idtyp="user",
                name=user.name if user else subject_upn,
                oid=oid,
                sub=_b64url(hashlib.sha256(f"{oid}:{audience}".encode()).digest()[:24]),
                upn=subject_upn,
                unique_name=subject_upn,
                scp=DELEGATED_SCP,
            )
        if acrs:
            claims["acrs"] = list(acrs)
        token = self._sign(claims)
        with self._lock:
            self._issued_at[uti] = now
            self.issued.append(("access_token", token))
        return token

    def verify_access_token(self, token: str, audience: str) -> dict[str, Any]:
        """The token's claims if Exchange would accept it for ``audience``; else raises TokenRejected."""
        aud = audience.rstrip("/")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                audience=[aud, aud + "/"],
                issuer=self.issuer_v1,
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(str(exc)) from None
        upn = claims.get("upn")
        if upn is not None:
            user = self.users.get(str(upn).lower())
            if user is None:  # a token a test issued for someone the directory does not list
                return claims
            if not user.enabled:
                raise TokenRejected("user disabled")
            with self._lock:
                exact = self._issued_at.get(str(claims.get("uti")))
            # the exact issue time when this process issued it; else the whole-second iat (a restart)
            revoked = (
                exact < user.sessions_valid_after
                if exact is not None
                else float(claims["iat"]) <= user.sessions_valid_after
            )
            if revoked:
                raise TokenRejected("token revoked: the user's sign-in sessions were revoked")
        return claims

    def _id_token(self, user: User, client_id: str) -> str:
        now = int(time.time())
        claims = {
            "aud": client_id,
            "iss": self.issuer_v2,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": user.name,
            "oid": user.oid,
            "preferred_username": user.upn,
            "sub": _b64url(hashlib.sha256(f"{user.oid}:{client_id}".encode()).digest()[:24]),
            "tid": self.tenant_id,
            "ver": "2.0",
        }
        return self._sign(claims)

    def _delegated_tokens(
        self, user: User, client_id: str, scopes: list[str], resource: str, acrs: list[str] | None = None
    ) -> dict[str, Any]:
        access_token = self.issue_access_token(user.upn, resource, acrs=acrs)
        id_token = self._id_token(user, client_id)
        refresh_token = "0.A" + secrets.token_urlsafe(96)
        with self._lock:
            self.refresh_tokens[refresh_token] = RefreshGrant(user.upn, client_id, time.time())
            self.issued.append(("id_token", id_token))
            self.issued.append(("refresh_token", refresh_token))
        lifetime = int(self.config.token_lifetime)
        return {
            "token_type": "Bearer",
            # echo the requested resource scopes: msal caches the token under them (msal.md §3)
            "scope": " ".join(scopes),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
            "refresh_token": refresh_token,
            "id_token": id_token,
            "client_info": _b64url(json.dumps({"uid": user.oid, "utid": self.tenant_id}).encode()),
        }

    # ----- HTTP -----

    def register(self, router: Router) -> None:
        t = r"/(?P<tenant>[^/]+)"
        router.add("GET", t + r"/v2\.0/\.well-known/openid-configuration", self._discovery)
        router.add("GET", t + r"/discovery/v2\.0/keys", self._jwks)
        router.add("POST", t + r"/oauth2/v2\.0/devicecode", self._oauth(self._devicecode))
        router.add("POST", t + r"/oauth2/v2\.0/token", self._oauth(self._token))
        router.add("GET", t + r"/oauth2/v2\.0/authorize", self._authorize)
        router.add("GET", r"/devicelogin", self._devicelogin_get)
        router.add("POST", r"/devicelogin", self._devicelogin_post)

    def _tenant(self, segment: str) -> str:
        """The path segment as it appears in endpoints: the GUID for our GUID or domain, or the alias."""
        lowered = segment.lower()
        if lowered in {self.tenant_id.lower(), self.tenant_domain.lower()}:
            return self.tenant_id
        if lowered in {"organizations", "common"}:
            return lowered
        raise OAuthError(
            "invalid_tenant",
            90002,
            f"Tenant '{segment}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud.",
        )

    def _error_response(self, exc: OAuthError, request: Request) -> Response:
        trace_id = str(uuid.uuid4())
        correlation_id = request.header("client-request-id") or str(uuid.uuid4())
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body: dict[str, Any] = {
            "error": exc.error,
            "error_description": f"AADSTS{exc.code}: {exc.text} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {stamp}",
            "error_codes": [exc.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{self.base_url}/error?code={exc.code}",
        }
        if exc.suberror:
            body["suberror"] = exc.suberror
        return Response(exc.status, body, headers={"Cache-Control": "no-store"})

    def _oauth(self, handler: Any) -> Any:
        def wrapped(request: Request, match: Any) -> Response:
            try:
                return handler(request, self._tenant(match["tenant"]))
            except OAuthError as exc:
                return self._error_response(exc, request)

        return wrapped

    def _discovery(self, request: Request, match: Any) -> Response:
        with self._lock:
            self.counters["discovery"] += 1
        try:
            tenant = self._tenant(match["tenant"])
        except OAuthError as exc:
            return self._error_response(exc, request)
        base = f"{self.base_url}/{tenant}"
        issuer_tenant = self.tenant_id if tenant == self.tenant_id else "{tenantid}"
        return Response(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{self.base_url}/{issuer_tenant}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{self.base_url}/oidc/userinfo",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "claims_supported": _CLAIMS_SUPPORTED,
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            },
        )

    def _jwks(self, request: Request, match: Any) -> Response:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update(kid=self.kid, x5t=self.kid, use="sig", issuer=self.issuer_v2)
        return Response(200, {"keys": [jwk]})

    def _authorize(self, request: Request, match: Any) -> Response:
        return Response(
            400,
            _page("Not available", "<p>The simulated tenant signs in with the device code flow only.</p>"),
        )

    def _scopes(self, raw: str, *, app_only: bool = False) -> tuple[list[str], str]:
        """The resource scopes of a request and the resource (token audience) they name."""
        scopes = [s for s in raw.split() if s.lower() not in OIDC_SCOPES]
        if not scopes:
            raise OAuthError("invalid_scope", 70011, "The provided request must include a 'scope' input parameter.")
        resources = {s.rsplit("/", 1)[0] if "/" in s.split("://", 1)[-1] else s for s in scopes}
        if len(resources) > 1:
            raise OAuthError(
                "invalid_scope",
                28000,
                "Provided value for the input parameter scope is not valid because it contains more than one resource.",
            )
        resource = resources.pop().rstrip("/")
        if app_only and not all(s.endswith("/.default") for s in scopes):
            raise OAuthError(
                "invalid_scope",
                1002012,
                f"The provided value for scope {' '.join(scopes)} is not valid. Client credential flows must have "
                "a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        if resource not in self.resources:
            raise OAuthError(
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named {self.tenant_domain}. "
                "This can happen if the application has not been installed by the administrator of the tenant.",
            )
        return scopes, resource

    def _app(self, client_id: str) -> App:
        app = self.apps.get(client_id.lower())
        if app is None:
            raise OAuthError(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.tenant_domain}'. "
                "This can happen if the application has not been installed by the administrator of the tenant or "
                "consented to by any user in the tenant.",
            )
        return app

    def _public_app(self, client_id: str) -> App:
        app = self._app(client_id)
        if not app.public:
            raise OAuthError("invalid_client", 7000218, _NEEDS_CREDENTIAL, status=401)
        return app

    def _devicecode(self, request: Request, tenant: str) -> Response:
        form = request.form()
        with self._lock:
            self.counters["device_authorization"] += 1
        self._public_app(form.get("client_id", ""))
        scopes, resource = self._scopes(form.get("scope", ""))
        now = time.time()
        expires_in = int(getattr(self.config, "device_code_expires_in", 900))
        interval = max(1, int(getattr(self.config, "device_code_interval", 5)))  # 0 makes msal spin (msal.md)
        user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(9))
        entry = DeviceCode(
            device_code=secrets.token_urlsafe(48),
            user_code=user_code,
            client_id=form["client_id"],
            scopes=scopes,
            resource=resource,
            created=now,
            expires_at=now + expires_in,
            interval=interval,
        )
        with self._lock:
            self.device_codes[entry.device_code] = entry
        uri = f"{self.base_url}/devicelogin"
        return Response(
            200,
            {
                "user_code": user_code,
                "device_code": entry.device_code,
                "verification_uri": uri,
                "expires_in": expires_in,
                "interval": interval,
                "message": f"To sign in, use a web browser to open the page {uri} and enter the code {user_code} "
                "to authenticate.",
            },
        )

    def _token(self, request: Request, tenant: str) -> Response:
        form = request.form()
        grant = form.get("grant_type", "")
        kind = {
            DEVICE_CODE_GRANT: "device_code",
            "refresh_token": "refresh_token",
            "client_credentials": "client_credentials",
        }.get(grant)
        with self._lock:
            self.counters[kind or "other_grant"] += 1
            self.counters["token"] += 1
        if kind == "device_code":
            return self._device_code_grant(form)
        if kind == "refresh_token":
            return self._refresh_grant(form)
        if kind == "client_credentials":
            return self._client_credentials_grant(form, tenant)
        raise OAuthError("unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'.")

    def _device_code_grant(self, form: dict[str, str]) -> Response:
        client_id = form.get("client_id", "")
        self._public_app(client_id)
        now = time.time()
        with self._lock:
            entry = self.device_codes.get(form.get("device_code", ""))
            if entry is None or entry.client_id.lower() != client_id.lower():
                raise OAuthError("bad_verification_code", 70000, "The provided value for 'device_code' is not valid.")
            previous, entry.last_poll = entry.last_poll, now
            if entry.first_poll is None:
                entry.first_poll = now
            if entry.status == "redeemed":
                raise OAuthError("invalid_grant", 54005, "OAuth2 Authorization code was already redeemed.")
            if entry.status == "declined":
                raise OAuthError(
                    "authorization_declined", 70000, "The user declined the sign-in request on the verification page."
                )
            if now >= entry.expires_at:
                raise OAuthError("expired_token", 70019, "Verification code expired.")
            auto = self.config.auto_approve_after
            if entry.status == "pending" and auto is not None and now - entry.first_poll >= float(auto):
                entry.status, entry.upn = "approved", self.auto_approve_upn
            if entry.status == "pending":
                if previous is not None and now - previous < max(0.5, entry.interval - 0.5):
                    raise OAuthError("slow_down", 70016, "OAuth 2.0 device flow error. Polling too fast; slow down.")
                raise OAuthError(
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                )
            user = self.user(entry.upn or self.admin_upn)
            if not user.enabled:
                raise OAuthError("invalid_grant", 50057, "The user account is disabled.", suberror="bad_token")
            entry.status = "redeemed"
        return Response(200, self._delegated_tokens(user, client_id, entry.scopes, entry.resource))

    def _refresh_grant(self, form: dict[str, str]) -> Response:
        client_id = form.get("client_id", "")
        self._public_app(client_id)
        with self._lock:
            grant = self.refresh_tokens.get(form.get("refresh_token", ""))
            if grant is None:
                raise OAuthError("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
            if grant.client_id.lower() != client_id.lower():
                raise OAuthError(
                    "invalid_grant", 70000, "Provided grant is invalid or malformed.", suberror="client_mismatch"
                )
            user = self.users.get(grant.upn.lower())
            if user is None or not user.enabled:
                raise OAuthError("invalid_grant", 50057, "The user account is disabled.", suberror="bad_token")
            if grant.revoked or grant.issued_at < user.sessions_valid_after:
                raise OAuthError(
                    "invalid_grant",
                    50173,
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
                    "might have changed or reset their password.",
                    suberror="bad_token",
                )
        scopes, resource = self._scopes(form.get("scope", ""))
        # Entra rotates the refresh token on every use; the old one stays valid until it expires or is revoked.
        return Response(200, self._delegated_tokens(user, client_id, scopes, resource, _requested_acrs(form)))

    def _client_credentials_grant(self, form: dict[str, str], tenant: str) -> Response:
        client_id = form.get("client_id", "")
        app = self._app(client_id)
        if app.public or not app.certificates:
            raise OAuthError("invalid_client", 7000218, _NEEDS_CREDENTIAL, status=401)
        assertion = form.get("client_assertion", "")
        if form.get("client_assertion_type") != JWT_BEARER_ASSERTION or not assertion:
            raise OAuthError("invalid_client", 7000218, _NEEDS_CREDENTIAL, status=401)
        with self._lock:
            self.received_assertions.append(assertion)
        if self.workloads is not None and self.workloads.is_federated(
            app.client_id, assertion
        ):  # workload identity federation
            from imm.simulator.workload import FederatedAssertionRejected

            try:
                self.workloads.check_federated(app.client_id, assertion)
            except FederatedAssertionRejected as exc:
                raise OAuthError("invalid_client", exc.code, exc.text, status=401) from None
        else:
            self._check_assertion(app, assertion, tenant)
        scopes, resource = self._scopes(form.get("scope", ""), app_only=True)
        token = self.issue_access_token(app.client_id, resource, app_only=True, acrs=_requested_acrs(form))
        lifetime = int(self.config.token_lifetime)
        return Response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            },
        )

    def _check_assertion(self, app: App, assertion: str, tenant: str) -> None:
        """A client assertion: RS256 with ``x5t`` or PS256 with ``x5t#S256`` naming a registered certificate."""

        def invalid(code: int, text: str) -> OAuthError:
            return OAuthError("invalid_client", code, text, status=401)

        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            raise invalid(50027, "JWT token is invalid or malformed.") from None
        alg = header.get("alg")
        if alg not in {"RS256", "PS256"}:
            raise invalid(5002738, f"Invalid JWT token. '{alg}' is not a supported signature algorithm.")
        # msal pads the base64url thumbprint, RFC 7515 does not: compare without padding, as Entra does
        sha256 = str(header.get("x5t#S256") or "").rstrip("=")
        sha1 = str(header.get("x5t") or "").rstrip("=")
        cert = next(
            (
                c
                for c in app.certificates
                if (sha256 and sha256 == _thumbprint(c, hashes.SHA256()))
                or (sha1 and sha1 == _thumbprint(c, hashes.SHA1()))
            ),
            None,
        )
        if cert is None:
            thumb = header.get("x5t#S256") or header.get("x5t") or "(none)"
            raise invalid(
                700027,
                f"The certificate with identifier used to sign the client assertion is not registered on application. "
                f"[Reason - The key was not found., Thumbprint of key used by client: '{thumb}', "
                f"Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for "
                f"app Id '{app.client_id}'.]",
            )
        audience = f"{self.base_url}/{tenant}/oauth2/v2.0/token"
        try:
            claims = jwt.decode(
                assertion,
                cert.public_key(),  # type: ignore[arg-type]
                algorithms=[alg],
                audience=[audience, f"{self.base_url}/{self.tenant_id}/oauth2/v2.0/token"],
                leeway=CLOCK_SKEW,
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise invalid(700024, "Client assertion is not within its valid time range.") from None
        except jwt.InvalidAudienceError:
            raise invalid(
                700212, f"The client assertion's audience does not match the token endpoint '{audience}'."
            ) from None
        except jwt.InvalidSignatureError:
            raise invalid(700027, "Client assertion failed signature validation.") from None
        except jwt.InvalidTokenError as exc:
            raise invalid(700023, f"Client assertion is invalid: {exc}.") from None
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            raise invalid(700021, "Client assertion application identifier doesn't match 'client_id' parameter.")

    # ----- the verification page -----

    def _devicelogin_get(self, request: Request, match: Any) -> Response:
        with self._lock:
            self.counters["devicelogin_page"] += 1
        code = (request.query.get("otc") or [""])[-1]
        return Response(200, self._form_page(code))

    def _form_page(self, code: str = "", error: str = "") -> str:
        options = "".join(
            f'<option value="{html.escape(u.upn)}">{html.escape(u.name)} ({html.escape(u.upn)})</option>'
            for u in sorted(self.users.values(), key=lambda u: u.upn != self.admin_upn)
        )
        message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
        body = f"""{message}
<p>Enter the code displayed on your app or device.</p>
<form method="post" action="/devicelogin">
  <p><label for="code">Code</label><br>
  <input id="code" name="code" value="{html.escape(code)}" autocomplete="off" autofocus required
         pattern="[A-Za-z0-9 -]{{6,20}}"></p>
  <p><label for="username">Sign in as</label><br>
  <select id="username" name="username">{options}</select></p>
  <p><button type="submit" name="action" value="approve">Approve</button>
  <button type="submit" name="action" value="decline">Decline</button></p>
</form>"""
        return _page("Enter code", body, tenant=self.tenant_domain)

    def _devicelogin_post(self, request: Request, match: Any) -> Response:
        form = request.form()
        code = form.get("code", "").strip()
        action = form.get("action", "approve")
        with self._lock:
            self.counters["devicelogin_submit"] += 1
            try:
                if action == "decline":
                    self.decline(code)
                else:
                    self.approve(code, form.get("username") or None)
            except KeyError:
                return Response(400, self._form_page(code, "That code is not valid. Check it and try again."))
            except ValueError:
                return Response(400, self._form_page(code, "That code has expired or was already used."))
        if action == "decline":
            text = "<p>You declined the sign-in on the other device. You may now close this window.</p>"
            return Response(200, _page("Sign-in declined", text, tenant=self.tenant_domain))
        text = "<p>You have signed in to imm on your device. You may now close this window.</p>"
        return Response(200, _page("Signed in", text, tenant=self.tenant_domain))


def _requested_acrs(form: dict[str, str]) -> list[str] | None:
    """The authentication contexts of a token request's ``claims`` parameter (what msal sends for a
    ``claims_challenge``): ``{"access_token": {"acrs": {"essential": true, "value": "c1"}}}`` or ``"values"``."""
    try:
        wanted = json.loads(form.get("claims") or "{}").get("access_token", {}).get("acrs", {})
    except (ValueError, AttributeError):
        return None
    if not isinstance(wanted, dict):
        return None
    values = wanted.get("values") or ([wanted["value"]] if wanted.get("value") else [])
    return [str(v) for v in values] or None


def _thumbprint_of_key(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64url(hashlib.sha1(der).digest())  # noqa: S324 - an identifier, like Entra's kid


def _page(title: str, body: str, tenant: str = "") -> str:
    subtitle = f"<p class='tenant'>{html.escape(tenant)} (simulated)</p>" if tenant else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input,select{{font-size:1.1rem;padding:.3rem;width:100%}}button{{font-size:1rem;padding:.4rem 1rem}}
.error{{color:#a4262c}}.tenant{{color:#666}}</style></head>
<body><h1>{html.escape(title)}</h1>{subtitle}{body}</body></html>"""
