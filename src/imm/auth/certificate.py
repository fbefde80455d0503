"""The certificate for app-only sign-in: a PEM file with the certificate and its private key, or a PFX/PKCS#12
file; a password (for a PFX or an encrypted PEM key) comes from the environment, never from the command line."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imm.auth.errors import AuthenticationError

_KEY_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.DOTALL)


@dataclass(frozen=True)
class Certificate:
    """A loaded certificate: what msal needs (``client_credential``) and what whoami may show."""

    path: Path
    sha1_thumbprint: str  # hex, upper case, as the Entra portal shows it
    sha256_thumbprint: str
    subject: str
    not_after: datetime
    client_credential: dict[str, Any] = field(repr=False)  # holds the private key: never log or print it


def _error(path: Path, text: str, hint: str | None = None) -> AuthenticationError:
    return AuthenticationError("certificate_error", f"Cannot use the certificate {path}: {text}", hint=hint)


def load_certificate(
    path: Path, password: str | None = None, password_env: str = "IMM_CERTIFICATE_PASSWORD"
) -> Certificate:
    """Read and check a PEM or PFX certificate with its RSA private key (no network)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12

    password_hint = f"set the password in the environment variable {password_env}"
    try:
        data = path.expanduser().read_bytes()
    except OSError as exc:
        raise _error(path, exc.strerror or str(exc)) from None
    secret = password.encode("utf-8") if password else None
    if b"-----BEGIN" in data:
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise _error(path, "it holds no certificate (expected the certificate and its private key)") from None
        block = _KEY_BLOCK.search(data)
        if block is None:
            raise _error(path, "it holds no private key (expected the certificate and its private key)")
        try:
            key: Any = serialization.load_pem_private_key(block.group(0), secret)
        except TypeError:
            raise _error(path, "the private key is encrypted and no password was given", password_hint) from None
        except ValueError:
            raise _error(path, "the private key cannot be read (wrong password?)", password_hint) from None
        cert = next((c for c in certs if c.public_key() == key.public_key()), None) if certs else None
    else:
        try:
            key, cert, _ = pkcs12.load_key_and_certificates(data, secret)
        except ValueError:
            hint = password_hint if not password else f"check the password in {password_env}"
            raise _error(path, "it is not a PFX file or the password is wrong", hint) from None
        if key is None:
            raise _error(path, "the PFX file holds no private key")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _error(path, "the private key is not an RSA key (Entra ID accepts RSA certificates only)")
    if cert is None or cert.public_key() != key.public_key():
        raise _error(path, "no certificate in it matches the private key")
    not_after = cert.not_valid_after_utc
    if not_after < datetime.now(UTC):
        raise _error(path, f"it expired on {not_after:%Y-%m-%d}", "register a new certificate on the app")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return Certificate(
        path=path,
        sha1_thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - Entra's display form
        sha256_thumbprint=cert.fingerprint(hashes.SHA256()).hex().upper(),
        subject=cert.subject.rfc4514_string(),
        not_after=not_after,
        # with the public certificate msal signs the assertion PS256 with an x5t#S256 header (msal >= 1.35)
        client_credential={"private_key": key_pem, "public_certificate": cert_pem},
    )
