"""SecureString parameters for the REST backend: RSA PKCS#1 v1.5 encryption with the service's public key, base64.

The module encrypts ``-Password`` (and PSCredential JSON) with a ``$PublicKey`` shipped in its generated temp module
as .NET ``<RSAKeyValue>`` XML, rotated by Microsoft (exo-rest.md §3, [DUMP] Encrypt-Value). imm cannot know the
current key on its own, so it is configuration: ``profile.password_public_key`` holds a PEM file path, PEM text, or
the ``<RSAKeyValue><Modulus>…</Modulus><Exponent>…</Exponent></RSAKeyValue>`` XML (text or file). The simulated
tenant writes its key as PEM and advertises it as that setting.

The clear text is only ever passed to :meth:`PasswordEncryptor.encrypt`; nothing here logs it.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from imm.errors import ConfigError, InputError

_XML_PART = re.compile(r"<(Modulus|Exponent)>\s*([A-Za-z0-9+/=\s]+?)\s*</\1>", re.IGNORECASE)


def _from_xml(text: str) -> rsa.RSAPublicKey:
    parts = {m.group(1).lower(): m.group(2) for m in _XML_PART.finditer(text)}
    if "modulus" not in parts or "exponent" not in parts:
        raise ConfigError("password_public_key: the RSAKeyValue XML needs a Modulus and an Exponent")
    try:
        modulus = int.from_bytes(base64.b64decode("".join(parts["modulus"].split()), validate=True), "big")
        exponent = int.from_bytes(base64.b64decode("".join(parts["exponent"].split()), validate=True), "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"password_public_key: the RSAKeyValue XML is not a valid RSA key ({exc})") from None


def _from_pem(data: bytes) -> rsa.RSAPublicKey:
    key: object
    try:
        if b"CERTIFICATE" in data:
            from cryptography import x509

            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"password_public_key: not a valid PEM public key ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError("password_public_key: the key must be an RSA key")
    return key


def load_public_key(setting: str) -> rsa.RSAPublicKey:
    """The RSA public key from a PEM/XML text or from a file holding either."""
    text = setting.strip()
    if not text:
        raise ConfigError("password_public_key is empty")
    if not text.startswith("-----BEGIN") and not text.startswith("<"):
        path = Path(text).expanduser()
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"password_public_key: cannot read {path} ({exc.__class__.__name__})") from None
    if text.startswith("<"):
        return _from_xml(text)
    return _from_pem(text.encode("utf-8"))


class PasswordEncryptor:
    """Encrypts SecureString values for one tenant's public key (callable: ``encrypt(text) -> base64``)."""

    def __init__(self, key: rsa.RSAPublicKey) -> None:
        self._key = key
        # PKCS#1 v1.5 carries at most k - 11 bytes.
        self.max_bytes = key.key_size // 8 - 11

    @classmethod
    def from_setting(cls, setting: str) -> PasswordEncryptor:
        return cls(load_public_key(setting))

    def encrypt(self, text: str) -> str:
        data = text.encode("utf-8")
        if len(data) > self.max_bytes:
            raise InputError(f"a SecureString value may be at most {self.max_bytes} bytes for this key")
        return base64.b64encode(self._key.encrypt(data, padding.PKCS1v15())).decode("ascii")

    __call__ = encrypt

    def __repr__(self) -> str:
        return f"PasswordEncryptor(rsa-{self._key.key_size})"
