"""SecureString parameters: the simulated tenant's RSA key pair (PKCS#1 v1.5, as the EXO module's Encrypt-Value).

The public key goes to ``<data_dir>/password-key.pem`` (the profile's ``password_public_key``); the private key
stays beside it (mode 0600) so a restarted tenant with the same data folder keeps accepting what clients encrypt.
Decrypted values are returned to the caller only and never logged.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_LOCK = threading.Lock()
_PROCESS_KEY: rsa.RSAPrivateKey | None = None  # one generated key per process keeps test start-up fast


def _new_key() -> rsa.RSAPrivateKey:
    global _PROCESS_KEY
    with _LOCK:
        if _PROCESS_KEY is None:
            _PROCESS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _PROCESS_KEY


class PasswordKey:
    """Loads or makes the key pair in ``data_dir``; ``decrypt(b64)`` returns the UTF-8 text or raises ValueError."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.public_path = data_dir / "password-key.pem"
        self.private_path = data_dir / "password-key-private.pem"
        key: rsa.RSAPrivateKey | None = None
        if self.private_path.exists():
            try:
                loaded = serialization.load_pem_private_key(self.private_path.read_bytes(), password=None)
                if isinstance(loaded, rsa.RSAPrivateKey):
                    key = loaded
            except (ValueError, TypeError):
                key = None
        if key is None:
            key = _new_key()
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            fd = os.open(self.private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        self._key = key
        self.public_path.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    def decrypt(self, value: str) -> str:
        try:
            blob = base64.b64decode(value, validate=True)
            text = self._key.decrypt(blob, padding.PKCS1v15()).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise ValueError("the value does not decrypt with the tenant's key") from None
        # OpenSSL's implicit rejection returns random bytes for a foreign ciphertext instead of failing.
        if not text or any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise ValueError("the value does not decrypt with the tenant's key")
        return text

    def public_xml(self) -> str:
        """The public key as .NET ``RSAKeyValue`` XML, the form the module's ``$PublicKey`` carries."""
        numbers = self._key.public_key().public_numbers()

        def b64(n: int) -> str:
            return base64.b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).decode("ascii")

        return f"<RSAKeyValue><Modulus>{b64(numbers.n)}</Modulus><Exponent>{b64(numbers.e)}</Exponent></RSAKeyValue>"

    def encrypt(self, text: str) -> str:
        """What a client does (for tests and the demo): RSA PKCS#1 v1.5 over UTF-8, base64."""
        blob = self._key.public_key().encrypt(text.encode("utf-8"), padding.PKCS1v15())
        return base64.b64encode(blob).decode("ascii")
