"""Sign-in without a person for the simulated tenant: managed identity endpoints and workload identity federation.

**Managed identity** (what msal's ``ManagedIdentityClient`` calls; msal ``managed_identity.py``):

- ``GET {base}/msi/token?api-version=2019-08-01&resource=R`` with ``X-IDENTITY-HEADER``: the App Service /
  Azure Functions / **Azure Automation** endpoint, which the platform names in ``IDENTITY_ENDPOINT`` and
  ``IDENTITY_HEADER``. Reply as documented (Learn, "How to use managed identities for App Service and Azure
  Functions", REST endpoint reference): ``access_token``, ``expires_on`` (seconds since the epoch, a string),
  ``resource``, ``token_type``, ``client_id``. A user-assigned identity is picked with ``client_id``,
  ``object_id`` or ``mi_res_id``.
- ``GET {base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=R`` with ``Metadata: true``: the
  Azure VM instance metadata service (IMDS, ``http://169.254.169.254`` in Azure; msal lets
  ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` move it, which is how a test points msal here). Reply as documented
  (Learn, "How to use managed identities for Azure resources on an Azure VM to acquire an access token"):
  ``access_token``, ``client_id``, ``expires_in`` and ``expires_on`` (strings), ``ext_expires_in``,
  ``not_before``, ``resource``, ``token_type``; without ``Metadata: true`` a 400 ``invalid_request``. A
  user-assigned identity is picked with ``client_id``, ``object_id`` or ``msi_res_id``.

**Workload identity federation** (Learn, "Workload identity federation"): an external identity provider
(GitHub Actions, a Kubernetes service account issuer) signs a JWT for the audience ``api://AzureADTokenExchange``;
the workload presents it as the ``client_assertion`` of a client-credentials grant, and Entra ID accepts it when a
federated identity credential of the app names its issuer and subject exactly (case-sensitive since 2025) and
the audience. This module is also that external issuer: ``{base}/federation`` serves its OIDC discovery and
keys, and ``issue_federated_token(subject)`` mints what GitHub or Kubernetes would write into
``AZURE_FEDERATED_TOKEN_FILE``. Refusals use Entra's codes: AADSTS700211 (issuer), AADSTS700213 (subject),
AADSTS700212 (audience), AADSTS700024 (expired).

Imports nothing from the rest of imm.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from imm.simulator.server import Request, Response, Router

FEDERATION_AUDIENCE = "api://AzureADTokenExchange"
DEFAULT_FEDERATED_SUBJECT = "repo:contoso/imm-jobs:ref:refs/heads/main"


@dataclass
class ManagedIdentity:
    client_id: str
    object_id: str
    resource_id: str
    name: str


@dataclass
class FederatedCredential:
    issuer: str
    subject: str
    audiences: list[str] = field(default_factory=lambda: [FEDERATION_AUDIENCE])


class FederatedAssertionRejected(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Workloads:
    """Managed identities of the tenant, the federation issuer and the apps' federated credentials."""

    def __init__(self, identity: Any, base_url: str) -> None:
        self.identity = identity
        self.base_url = base_url.rstrip("/")
        tenant = identity.tenant_id
        self._lock = threading.Lock()
        self.identity_header = secrets.token_urlsafe(24)  # what the platform puts in IDENTITY_HEADER
        self.system_assigned = self._make_identity(tenant, "system-assigned", "automation-account")
        self.user_assigned = self._make_identity(tenant, "user-assigned", "imm-jobs-identity")
        self.issuer = f"{self.base_url}/federation"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        # the automation app trusts the default subject from this issuer (like a GitHub repository's main branch)
        self.federated: dict[str, list[FederatedCredential]] = {
            identity.automation_client_id.lower(): [FederatedCredential(self.issuer, DEFAULT_FEDERATED_SUBJECT)]
        }
        self.counters: dict[str, int] = {"msi": 0, "imds": 0, "federated": 0}

    def _make_identity(self, tenant: str, kind: str, name: str) -> ManagedIdentity:
        client_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"imm-simulator:{tenant}:{kind}:client"))
        object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"imm-simulator:{tenant}:{kind}:object"))
        resource_id = (
            f"/subscriptions/{uuid.uuid5(uuid.NAMESPACE_URL, tenant)}/resourceGroups/imm/providers/"
            f"Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        )
        return ManagedIdentity(client_id, object_id, resource_id, name)

    # ----- knobs -----

    def issue_federated_token(
        self, subject: str = DEFAULT_FEDERATED_SUBJECT, *, audience: str = FEDERATION_AUDIENCE, lifetime: int = 600
    ) -> str:
        """A JWT as GitHub Actions or a Kubernetes service account issuer would write it to the token file."""
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": audience, "iat": now, "nbf": now, "exp": now + lifetime}
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})
        with self._lock:
            self.identity.issued.append(("federated_token", token))
        return token

    def add_federated_credential(self, client_id: str, subject: str, issuer: str | None = None) -> None:
        with self._lock:
            self.federated.setdefault(client_id.lower(), []).append(FederatedCredential(issuer or self.issuer, subject))

    # ----- federated assertions (called by the token endpoint) -----

    def is_federated(self, client_id: str, assertion: str) -> bool:
        """An assertion from an external issuer rather than one the app signed with its certificate: not issued
        by the app itself, and either from an issuer one of its federated credentials names or carrying no
        certificate thumbprint."""
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.InvalidTokenError:
            return False
        issuer = claims.get("iss")
        if issuer == client_id:
            return False
        with self._lock:
            known = {c.issuer for c in self.federated.get(client_id.lower(), [])}
        return issuer in known or not (header.get("x5t") or header.get("x5t#S256"))

    def check_federated(self, client_id: str, assertion: str) -> None:
        """Accept the assertion when a federated credential of the app matches it; else raise with Entra's code."""
        with self._lock:
            self.counters["federated"] += 1
            credentials = list(self.federated.get(client_id.lower(), []))
        unverified = jwt.decode(assertion, options={"verify_signature": False})
        issuer, subject = str(unverified.get("iss", "")), str(unverified.get("sub", ""))
        docs = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
        by_issuer = [c for c in credentials if c.issuer == issuer]
        if not by_issuer:
            raise FederatedAssertionRejected(
                700211,
                f"No matching federated identity record found for presented assertion issuer '{issuer}'. "
                f"Please note that the matching is done using case-sensitive comparison. {docs}",
            )
        matching = [c for c in by_issuer if c.subject == subject]
        if not matching:
            raise FederatedAssertionRejected(
                700213,
                f"No matching federated identity record found for presented assertion subject '{subject}'. Check "
                f"your federated identity credential Subject, Audience and Issuer against the presented assertion. "
                f"{docs}",
            )
        if issuer != self.issuer:  # an issuer whose keys the simulated Entra ID cannot fetch
            raise FederatedAssertionRejected(700211, f"Unable to fetch the signing keys of issuer '{issuer}'.")
        audiences = sorted({a for c in matching for a in c.audiences})
        try:
            jwt.decode(
                assertion,
                self._key.public_key(),
                algorithms=["RS256"],
                audience=audiences,
                issuer=issuer,
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise FederatedAssertionRejected(700024, "Client assertion is not within its valid time range.") from None
        except jwt.InvalidAudienceError:
            raise FederatedAssertionRejected(
                700212,
                f"No matching federated identity record found for presented assertion audience "
                f"'{unverified.get('aud')}'. {docs}",
            ) from None
        except jwt.InvalidTokenError as exc:
            raise FederatedAssertionRejected(700027, f"Client assertion failed signature validation: {exc}.") from None

    # ----- HTTP -----

    def register(self, router: Router) -> None:
        router.add("GET", r"/msi/token", self._app_service)
        router.add("GET", r"/metadata/identity/oauth2/token", self._imds)
        router.add("GET", r"/federation/\.well-known/openid-configuration", self._issuer_discovery)
        router.add("GET", r"/federation/keys", self._issuer_keys)

    def _pick(self, request: Request, resource_id_param: str) -> ManagedIdentity | None:
        def param(name: str) -> str:
            return (request.query.get(name) or [""])[-1]

        wanted = {
            "client_id": param("client_id"),
            "object_id": param("object_id") or param("principal_id"),
            "resource_id": param(resource_id_param),
        }
        if not any(wanted.values()):
            return self.system_assigned
        for candidate in (self.system_assigned, self.user_assigned):
            if (
                wanted["client_id"].lower() == candidate.client_id
                or wanted["object_id"].lower() == candidate.object_id
                or (wanted["resource_id"] and wanted["resource_id"].lower() == candidate.resource_id.lower())
            ):
                return candidate
        return None

    def _resource(self, request: Request) -> str | None:
        resource = (request.query.get("resource") or [""])[-1].rstrip("/")
        return resource if resource in {r.rstrip("/") for r in self.identity.resources} else None

    def _token_for(self, managed: ManagedIdentity, resource: str) -> tuple[str, int]:
        lifetime = int(self.identity.config.token_lifetime)
        self.identity.apps.setdefault(managed.client_id, _app_record(managed))
        return self.identity.issue_access_token(managed.client_id, resource, app_only=True), lifetime

    def _app_service(self, request: Request, match: Any) -> Response:
        with self._lock:
            self.counters["msi"] += 1
        if request.header("X-IDENTITY-HEADER") != self.identity_header:
            return Response(401, {"statusCode": 401, "message": "Unauthorized. X-IDENTITY-HEADER is missing or wrong."})
        managed = self._pick(request, "mi_res_id")
        if managed is None:
            return Response(400, {"statusCode": 400, "message": "No managed identity found for the given identifier."})
        resource = self._resource(request)
        if resource is None:
            return Response(
                500, {"statusCode": 500, "message": "An unexpected error occured while fetching the AAD Token."}
            )
        token, lifetime = self._token_for(managed, resource)
        return Response(
            200,
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + lifetime),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": managed.client_id,
            },
        )

    def _imds(self, request: Request, match: Any) -> Response:
        with self._lock:
            self.counters["imds"] += 1
        if request.header("Metadata").lower() != "true":
            return Response(
                400, {"error": "invalid_request", "error_description": "Required metadata header not specified"}
            )
        managed = self._pick(request, "msi_res_id")
        if managed is None:
            return Response(400, {"error": "invalid_request", "error_description": "Identity not found"})
        resource = self._resource(request)
        if resource is None:
            return Response(
                400,
                {
                    "error": "invalid_resource",
                    "error_description": "AADSTS500011: The resource principal named was not found in the tenant.",
                },
            )
        token, lifetime = self._token_for(managed, resource)
        now = int(time.time())
        return Response(
            200,
            {
                "access_token": token,
                "client_id": managed.client_id,
                "expires_in": str(lifetime),
                "expires_on": str(now + lifetime),
                "ext_expires_in": str(lifetime),
                "not_before": str(now),
                "resource": resource,
                "token_type": "Bearer",
            },
        )

    def _issuer_discovery(self, request: Request, match: Any) -> Response:
        return Response(
            200,
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}/keys",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public", "pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
            },
        )

    def _issuer_keys(self, request: Request, match: Any) -> Response:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return Response(200, {"keys": [jwk]})


def _app_record(managed: ManagedIdentity) -> Any:
    from imm.simulator.identity import App

    return App(managed.client_id, managed.name, False)
