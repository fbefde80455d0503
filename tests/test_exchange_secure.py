"""The SecureString key on first contact: taken from the module file Exchange hands out, as Microsoft's module does
(``$PublicKey = '<RSAKeyValue>…'`` in the generated module; imm.exchange.secure), or refused before any
confirmation with the fix. Encryption stays that of the module's Encrypt-Value: RSA PKCS#1 v1.5 over UTF-8, base64.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import padding

from action_support import ActEnv, make_env, recoverable
from imm.exchange.secure import PasswordEncryptor, find_module_key, load_public_key
from imm.simulator.model import ACTIVE, INACTIVE

# The key of a published module dump (Calvindd2f/EXO_PROJECT .idea/full_modoule_dump.ps1): public by design.
MODULE_KEY = (
    "<RSAKeyValue><Modulus>31yPXtYRltEiVLHXaiF3nNtXPBqfNd0YNioi9HwVBOv9CPJhVpDE7sfszHZ0W9uHQP3kZE63zn8Dr/zXknMWuEC"
    "GuqYOM170R1dc6FTybvkWYK4uFMuwnnNFfKYrhXTGINSfwvYglhaYuBhQIk3fn4hStf5qBA4Pt8BQyhZmMvov/gMh10yCbWDMi7MuXs7XoIBy"
    "cTreQ7w2knCIrTD7sqtCzIxpowBhP0FyorIVwr+dQNSPhYfxbSlY2k2RrSmva6xgowDdzesUK1p6Y+jZ3PlSB9CuapaCDLMOGyc2tXMEtSjK+"
    "RW8k/8rtTLXaOWvMvfdMbF47S5TzkppcRhYTQ==</Modulus><Exponent>AQAB</Exponent></RSAKeyValue>"
)
MODULE_TEXT = f"function Encrypt-Value {{ }}\r\n$PublicKey = '{MODULE_KEY}'\r\nExport-ModuleMember -Function @()\r\n"
PASSWORD = "Rec0ver-Secret-Pw!"


def _zip(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tmpEXO_x.psm1", text)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "reply",
    [
        MODULE_TEXT,
        {"value": [{"exportedCmdlets": "Get-Mailbox", "Module": MODULE_TEXT}]},
        json.loads(json.dumps({"value": [{"m": MODULE_TEXT.replace("/", "\\/")}]})),
        {"value": [{"EncodedModule": base64.b64encode(MODULE_TEXT.encode()).decode()}]},
        {"value": [{"m": base64.b64encode(gzip.compress(MODULE_TEXT.encode("utf-8"))).decode()}]},
        {"value": [{"m": base64.b64encode(_zip(MODULE_TEXT)).decode()}]},
        MODULE_TEXT.encode("utf-16"),
    ],
    ids=["text", "json", "escaped", "base64", "gzip", "zip", "utf-16"],
)
def test_the_key_is_found_wherever_the_module_file_carries_it(reply: object) -> None:
    assert find_module_key(reply) == MODULE_KEY


@pytest.mark.parametrize("reply", [{"value": [{"exportedCmdlets": "Get-Mailbox"}]}, "", b"\x00\x01", "QUJD" * 40])
def test_no_key_is_none(reply: object) -> None:
    assert find_module_key(reply) is None


def test_the_module_key_encrypts_as_encrypt_value_does() -> None:
    """FromXmlString + Encrypt(bytes, $false): a 2048-bit key, PKCS#1 v1.5, one 256-byte block, base64."""
    key = load_public_key(MODULE_KEY)
    assert (key.key_size, key.public_numbers().e) == (2048, 65537)
    encryptor = PasswordEncryptor(key)
    blob = base64.b64decode(encryptor.encrypt(PASSWORD))
    assert len(blob) == 256
    assert encryptor.encrypt(PASSWORD) != encryptor.encrypt(PASSWORD)  # PKCS#1 v1.5 padding is random
    assert encryptor.max_bytes == 245


def test_the_simulated_tenant_decrypts_what_imm_encrypts_with_the_served_key(tmp_path: Path) -> None:
    from conftest import make_simulator

    with make_simulator(tmp_path, mailboxes=5) as sim:
        served = sim.exchange.password_key.public_xml()
        encrypted = PasswordEncryptor.from_setting(served).encrypt(PASSWORD)
        assert sim.exchange.password_key.decrypt(encrypted) == PASSWORD
        private = sim.exchange.password_key._key  # the tenant's side of PKCS#1 v1.5
        assert private.decrypt(base64.b64decode(encrypted), padding.PKCS1v15()) == PASSWORD.encode("utf-8")


# ------------------------------------------------------------------------------------- the imm process
@pytest.fixture(scope="module")
def act(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActEnv]:
    yield from make_env(tmp_path_factory.mktemp("secure"), mailboxes=60, seed=11)


def _candidate(act: ActEnv) -> str:
    return act.pick(lambda m, t: recoverable(m, t) and not m.litigation_hold, "recoverable mailbox").exchange_guid


def test_recover_needs_no_key_configured(act: ActEnv, tmp_path: Path) -> None:
    config = (act.home / "config" / "config.toml").read_text(encoding="utf-8")
    assert "password_public_key" not in config
    guid = _candidate(act)
    password = tmp_path / "pw.txt"
    password.write_text(PASSWORD, encoding="utf-8")
    before = act.sim.exchange.counters["EXOModuleFile"]
    result = act.run(
        "recover", guid, "--upn", f"first-{guid[:6]}@contoso.onmicrosoft.com", "--name", f"first-{guid[:6]}",
        "--password-file", str(password), "--yes",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert act.sim.exchange.counters["EXOModuleFile"] == before + 1
    assert act.tenant.mailboxes[guid].state == ACTIVE
    assert act.tenant.mailboxes[guid].upn == f"first-{guid[:6]}@contoso.onmicrosoft.com"


def test_without_a_key_recover_is_refused_before_the_confirmation(act: ActEnv, tmp_path: Path) -> None:
    guid = _candidate(act)
    password = tmp_path / "pw.txt"
    password.write_text(PASSWORD, encoding="utf-8")
    act.sim.exchange.module_key_served = False
    try:
        result = act.run(
            "recover", guid, "--upn", f"nokey-{guid[:6]}@contoso.onmicrosoft.com", "--name", f"nokey-{guid[:6]}",
            "--password-file", str(password), input="y\n",
        )  # fmt: skip
    finally:
        act.sim.exchange.module_key_served = True
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "Error: Exchange Online's SecureString key is needed to send the password, and its module file did not "
        "give one (no key in the reply)",
        "Hint: set password_public_key in the profile to the <RSAKeyValue> key of the current "
        "ExchangeOnlineManagement module (see the README, 'The SecureString key')",
    ]
    assert not [e for e in act.sim.exchange.request_log if e["cmdlet"] == "New-Mailbox" and guid in str(e)]
    assert "started" not in [r["result"] for r in act.audit(guid)]  # refused in the preflight
    assert act.tenant.mailboxes[guid].state == INACTIVE
