"""SecureString parameters for the REST backend: RSA PKCS#1 v1.5 encryption with the service's public key, base64.

How Microsoft's module gets the key: ``Connect-ExchangeOnline`` downloads a generated module from the service
(``GET adminapi/v1.0/{tenant}/EXOModuleFile?Version=…``, the request CIPP-API ``New-ExoRequest.ps1``, monkey365
``Get-PSExoModuleFile`` and ScubaGear ``EXORestHelper.psm1`` also make) and that module carries the key as .NET XML:
``$PublicKey = '<RSAKeyValue><Modulus>…</Modulus><Exponent>AQAB</Exponent></RSAKeyValue>'``, read by its
``Encrypt-Value`` (``RSACryptoServiceProvider.FromXmlString``; ``Encrypt(bytes, $false)`` = PKCS#1 v1.5 over UTF-8;
Calvindd2f/EXO_PROJECT ``.idea/full_modoule_dump.ps1``). GreyCorbel/ExoHelper's README says the same ("public key
embedded into temporary module that dynamically downloads when running Connect-ExchangeOnline"; Microsoft rotates
it) and keeps a copy it refreshes weekly (``PublicKey.xml``, ``Commands/Internal/Init.ps1``). imm does what the
module does: it asks for the module file and takes the key from it (:func:`find_module_key`). Which field of the
reply holds the module, and how it is encoded, is unconfirmed, so every string of the reply is searched, as text
and as base64 (gzip or zip inside included).

``profile.password_public_key`` overrides it (a PEM file path, PEM text, or the RSAKeyValue XML, text or file): for
a tenant whose module file cannot be read. The simulated tenant serves its key the same way.

The clear text is only ever passed to :meth:`PasswordEncryptor.encrypt`; nothing here logs it.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import re
import zipfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from imm.errors import ConfigError, InputError

# The module version imm presents when it asks for the module file (the generated module's key does not depend on
# it as far as public clients show; monkey365 asks with 3.5.0).
MODULE_VERSION = "3.5.0"
_RSA_XML = re.compile(r"<RSAKeyValue>.*?</RSAKeyValue>", re.IGNORECASE | re.DOTALL)
_BASE64 = re.compile(r"[A-Za-z0-9+/=\r\n]+")
MAX_MODULE_BYTES = 64 * 1024 * 1024  # a decoded module larger than this is not read
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


def find_module_key(reply: Any) -> str | None:
    """The ``<RSAKeyValue>`` XML in an EXOModuleFile reply (decoded JSON, text or bytes), or None."""
    return _key_in(reply, 0)


def _key_in(value: Any, depth: int) -> str | None:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _key_in(item, depth)
            if found:
                return found
        return None
    if isinstance(value, bytes):
        return _key_in_bytes(value, depth)
    if not isinstance(value, str):
        return None
    match = _RSA_XML.search(value.replace("\\/", "/"))
    if match:
        return match.group(0)
    text = value.strip()
    if depth < 3 and len(text) >= 64 and _BASE64.fullmatch(text):
        try:
            return _key_in_bytes(base64.b64decode("".join(text.split()), validate=True), depth + 1)
        except (binascii.Error, ValueError):
            return None
    return None


def _key_in_bytes(data: bytes, depth: int) -> str | None:
    try:
        if data[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
                data = handle.read(MAX_MODULE_BYTES)
        if data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.infolist():
                    if member.file_size <= MAX_MODULE_BYTES:
                        found = _key_in_bytes(archive.read(member), depth + 1)
                        if found:
                            return found
            return None
    except (OSError, EOFError, zipfile.BadZipFile):
        return None
    encodings = ("utf-16",) if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",)
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return _key_in(text, depth)
    return None
