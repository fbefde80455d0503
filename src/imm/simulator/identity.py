"""Simulated Entra ID (STUB: the sign-in issue replaces this with the full device-code identity provider).

Interface other parts rely on:
- ``IdentityProvider(config, base_url)``; ``register(router)`` adds its routes.
- ``issue_access_token(subject_upn, audience, lifetime=None, app_only=False) -> str``: a signed RS256 JWT.
- ``verify_access_token(token, audience) -> dict``: the claims, or raises ``TokenRejected(reason)``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from imm.simulator.server import Router


class TokenRejected(Exception):
    """An access token the simulated service refuses; ``reason`` is Microsoft-like text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentityProvider:
    def __init__(self, config: Any, base_url: str) -> None:
        self.config = config
        self.base_url = base_url
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex

    def register(self, router: Router) -> None:
        return None

    def issue_access_token(
        self, subject_upn: str, audience: str, lifetime: int | None = None, app_only: bool = False
    ) -> str:
        now = int(time.time())
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{self.config.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + (lifetime or self.config.token_lifetime),
            "tid": self.config.tenant_id,
            "upn": subject_upn,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, subject_upn)),
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})

    def verify_access_token(self, token: str, audience: str) -> dict[str, Any]:
        try:
            return jwt.decode(token, self._key.public_key(), algorithms=["RS256"], audience=audience)
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(str(exc)) from None
