"""The InvokeCommand wire format (exo-rest.md §2–§4): exact bodies, headers on the wire, error parsing, retry policy,
the adaptive limiter and SecureString keys.

Wire checks use a capture route on the simulated tenant's own HTTPS server (the only fake): imm's real client sends
over real TLS, and the route records exactly what arrived.
"""

from __future__ import annotations

import base64
import enum
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from conftest import make_simulator
from imm.errors import ConfigError, ExitStatus, InputError
from imm.exchange import (
    AccessDeniedError,
    AdaptiveLimiter,
    AmbiguousIdentityError,
    ExchangeClient,
    ExchangeError,
    ExoAuthError,
    ExoNotFoundError,
    InvalidParameterError,
    NonTerminatingError,
    PagingExpiredError,
    SecureString,
    ThrottledError,
    TransientError,
)
from imm.exchange.encoding import (
    encode_parameters,
    encode_value,
    envelope,
    format_timespan,
    page_size_for,
    result_size_value,
    strip_annotations,
)
from imm.exchange.errors import classify, parse_error_body
from imm.exchange.secure import PasswordEncryptor, load_public_key
from imm.exchange.throttle import RetryPolicy, parse_retry_after
from imm.simulator import Simulator
from imm.simulator.server import Request, Response

ADMIN = "admin@contoso.onmicrosoft.com"


def compact(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------------------------------- parameter encoding
class Colour(enum.Enum):
    RED = "Red"


def test_switches_and_booleans() -> None:
    assert compact(encode_parameters({"InactiveMailboxOnly": True, "Confirm": False})) == (
        '{"InactiveMailboxOnly":true,"Confirm":false}'
    )


def test_hashtables_carry_their_type_recursively() -> None:
    body = encode_parameters({"EmailAddresses": {"Add": "X500:/o=ExchangeLabs/cn=abc", "Remove": {"Nested": 1}}})
    assert compact(body) == (
        '{"EmailAddresses":{"Add":"X500:/o=ExchangeLabs/cn=abc","Remove":{"Nested":1,'
        '"@odata.type":"#Exchange.GenericHashTable"},"@odata.type":"#Exchange.GenericHashTable"}}'
    )


def test_hashtable_arrays_get_the_sibling_collection_annotation() -> None:
    body = encode_parameters({"Rules": [{"A": 1}, {"B": "x"}]})
    assert compact(body) == (
        '{"Rules":[{"A":1,"@odata.type":"#Exchange.GenericHashTable"},{"B":"x","@odata.type":'
        '"#Exchange.GenericHashTable"}],"Rules@odata.type":"#Collection(Exchange.GenericHashTable)"}'
    )


def test_byte_arrays() -> None:
    assert encode_parameters({"Photo": b"\x00\x01\xff"}) == {
        "Photo": {"@odata.type": "#Exchange.ByteArrayType", "Data": [0, 1, 255]}
    }


def test_dates_are_utc_without_fraction() -> None:
    cet = timezone(timedelta(hours=1))
    assert encode_parameters(
        {
            "A": datetime(2026, 11, 28, 13, 5, 9, 123456, tzinfo=cet),
            "B": datetime(2026, 1, 2, 3, 4, 5),  # naive: taken as UTC
            "C": date(2025, 12, 31),
            "D": datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
        }
    ) == {
        "A": "2026-11-28T12:05:09",
        "B": "2026-01-02T03:04:05",
        "C": "2025-12-31T00:00:00",
        "D": "2026-03-01T00:00:00",
    }


def test_timespans_arrays_and_strings() -> None:
    guid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert encode_parameters(
        {
            "Duration": timedelta(days=14),
            "Short": timedelta(hours=1, minutes=30),
            "Tags": ["a", "b"],
            "Tuple": ("x",),
            "Set": {"b", "a"},
            "Guid": guid,
            "Path": PurePosixPath("/tmp/x"),
            "Colour": Colour.RED,
            "Count": 3,
            "Ratio": 0.5,
            "Skip": None,
        }
    ) == {
        "Duration": "14.00:00:00",
        "Short": "01:30:00",
        "Tags": ["a", "b"],
        "Tuple": ["x"],
        "Set": ["a", "b"],
        "Guid": "12345678-1234-5678-1234-567812345678",
        "Path": "/tmp/x",
        "Colour": "Red",
        "Count": 3,
        "Ratio": 0.5,
    }
    assert format_timespan(timedelta(days=-1)) == "-1.00:00:00"


def test_filter_booleans_become_quoted_words() -> None:
    body = encode_parameters({"Filter": "IsInactiveMailbox -eq $true -and X -ne $False", "Other": "$true"})
    assert body == {"Filter": "IsInactiveMailbox -eq 'True' -and X -ne 'False'", "Other": "$true"}


@pytest.mark.parametrize(
    ("given", "sent"), [(25, 25), ("Unlimited", "Unlimited"), ("unlimited", "Unlimited"), ("40", 40)]
)
def test_result_size_values(given: int | str, sent: int | str) -> None:
    assert result_size_value(given) == sent


@pytest.mark.parametrize("bad", [0, -1, True, "lots", "", 2.5])
def test_result_size_rejects_nonsense(bad: Any) -> None:
    with pytest.raises(InputError, match="ResultSize must be a positive number or 'Unlimited'"):
        result_size_value(bad)


def test_page_size_is_min_of_result_size_and_1000() -> None:
    assert page_size_for(5) == 5
    assert page_size_for(5000) == 1000
    assert page_size_for("Unlimited") == 1000
    assert page_size_for(None) == 1000
    assert page_size_for("Unlimited", cap=50) == 50
    assert page_size_for(20, cap=50) == 20


def test_envelope_is_exact() -> None:
    data = envelope("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"})
    assert compact(data) == (
        '{"CmdletInput":{"CmdletName":"Get-Mailbox","Parameters":{"InactiveMailboxOnly":true,"ResultSize":"Unlimited"}}}'
    )
    assert envelope("Get-OrganizationConfig", None) == {
        "CmdletInput": {"CmdletName": "Get-OrganizationConfig", "Parameters": {}}
    }


def test_bad_names_and_values_are_input_errors() -> None:
    for name in ("Get Mailbox", "Get-Mailbox; rm", "Mailbox", "", "Get-Mailbox\n"):
        with pytest.raises(InputError, match="is not a cmdlet name"):
            envelope(name, {})
    with pytest.raises(InputError, match="is not a parameter name"):
        encode_parameters({"Identity@odata.type": "x"})
    with pytest.raises(InputError, match="a value of type object that cannot be sent"):
        encode_value(object(), name="Thing")


def test_secure_strings_need_a_key_and_never_print() -> None:
    secret = SecureString("Pa55-word!")
    assert repr(secret) == str(secret) == "SecureString(***)"
    assert "Pa55" not in repr({"Password": secret})
    with pytest.raises(InputError, match="'Password' is a SecureString, but no public key is configured"):
        encode_parameters({"Password": secret})
    assert encode_parameters({"Password": secret}, lambda text: f"enc({len(text)})") == {"Password": "enc(10)"}
    with pytest.raises(InputError):
        SecureString("")


def test_strip_annotations() -> None:
    record = {
        "ExchangeGuid@data.type": "System.Guid",
        "ExchangeGuid@odata.type": "#Guid",
        "ExchangeGuid": "a",
        "Nested": {"X@odata.type": "#Int16", "X": 1, "@odata.type": "#Exchange.GenericHashTable"},
        "List": [{"Y@odata.type": "#String", "Y": "z"}],
    }
    assert strip_annotations(record) == {"ExchangeGuid": "a", "Nested": {"X": 1}, "List": [{"Y": "z"}]}


# ------------------------------------------------------------------------------------------------ error parsing
EXO_404 = {
    "error": {
        "code": "NotFound",
        "message": "Error executing cmdlet",
        "details": [
            {
                "code": "Context",
                "target": "",
                "message": "Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|The "
                "operation couldn't be performed because object 'x' couldn't be found on 'DC'.",
            }
        ],
        "innererror": {
            "message": "inner",
            "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
            "stacktrace": "",
            "internalexception": {"message": "internal text", "type": "Some.InternalType", "stacktrace": ""},
        },
    }
}


def test_details_message_is_split_into_type_and_text() -> None:
    assert parse_error_body(json.dumps(EXO_404).encode()) == (
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        "The operation couldn't be performed because object 'x' couldn't be found on 'DC'.",
        "Error executing cmdlet",
    )


def test_internal_exception_is_the_fallback() -> None:
    body = json.loads(json.dumps(EXO_404))
    body["error"]["details"] = []
    assert parse_error_body(json.dumps(body)) == ("Some.InternalType", "internal text", "Error executing cmdlet")


@pytest.mark.parametrize("body", [b"", b"\x00\x00\x00\x00", None, b"  \r\n"])
def test_empty_and_nul_bodies(body: bytes | None) -> None:
    assert parse_error_body(body) == (None, None, None)


def test_non_json_body_is_kept_as_text() -> None:
    assert parse_error_body(b"Bad gateway") == (None, "Bad gateway", None)
    assert parse_error_body(b"<html><title>502 Bad Gateway</title></html>") == (
        None,
        "an HTML page ('502 Bad Gateway') came back instead of Exchange's reply: a proxy or gateway answered",
        None,
    )
    assert parse_error_body(b'{"unexpected": 1}') == (None, None, None)


@pytest.mark.parametrize(
    ("status", "exception_type", "message", "kind", "exit_code"),
    [
        (404, "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException", "gone", ExoNotFoundError, 4),
        (404, None, None, ExoNotFoundError, 4),
        (
            400,
            "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException",
            "two",
            AmbiguousIdentityError,
            2,
        ),
        (400, "System.Management.Automation.ParameterBindingException", "bad", InvalidParameterError, 2),
        (403, None, None, AccessDeniedError, 1),
        (401, None, None, ExoAuthError, 3),
        (429, None, "You have reached the maximum number of concurrent requests per tenant.", ThrottledError, 1),
        (503, "Microsoft.Exchange.Data.Storage.StorageTransientException", "busy", TransientError, 1),
        (500, "Microsoft.Exchange.Data.Directory.ADServerSettingsChangedException", "changed", TransientError, 1),
        (400, None, "Expired or Invalid pagination request. Default Expiry time is 00:30:00", PagingExpiredError, 1),
        (500, "System.InvalidOperationException", "broken", ExchangeError, 1),
        (None, "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException", "gone", ExoNotFoundError, 4),
        (None, "System.Management.Automation.ParameterBindingException", "bad", InvalidParameterError, 2),
        (None, "X.Other", "The domain controller DCOverloadedException", TransientError, 1),
    ],
)
def test_classification(
    status: int | None, exception_type: str | None, message: str | None, kind: type, exit_code: int
) -> None:
    error = classify(
        cmdlet="Get-Mailbox", status=status, exception_type=exception_type, microsoft_message=message, request_id="r1"
    )
    assert type(error) is kind
    assert error.exit_code == exit_code
    assert (error.cmdlet, error.status, error.exception_type, error.microsoft_message, error.request_id) == (
        "Get-Mailbox",
        status,
        exception_type,
        message,
        "r1",
    )
    assert "\n" not in str(error) and str(error).startswith(
        "access denied for Get-Mailbox" if status == 403 else "Get-Mailbox"
    )


def test_not_found_is_also_imm_not_found() -> None:
    from imm.errors import NotFoundError

    error = classify(cmdlet="Get-Mailbox", status=404, exception_type=None, microsoft_message="gone")
    assert isinstance(error, NotFoundError) and error.exit_code == ExitStatus.NOT_FOUND
    assert str(error) == "Get-Mailbox failed: gone"


def test_secrets_in_microsoft_messages_are_redacted() -> None:
    error = classify(
        cmdlet="New-Mailbox", status=400, exception_type=None, microsoft_message="bad Password=hunter2 here"
    )
    assert "hunter2" not in str(error) and "hunter2" not in str(error.microsoft_message)


# ------------------------------------------------------------------------------------------------ retry policy
def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(backoff_base=2.0, max_backoff=10.0, jitter=(1.0, 1.0))
    assert [policy.backoff(n) for n in range(5)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_jitter_stays_in_range() -> None:
    policy = RetryPolicy(backoff_base=1.0, rng=random.Random(7))
    waits = [policy.backoff(2) for _ in range(200)]
    assert min(waits) >= 2.0 and max(waits) <= 4.0 and len(set(waits)) > 100


def test_retry_after_wins_over_backoff() -> None:
    policy = RetryPolicy(backoff_base=100.0, max_retry_after=30.0, rng=random.Random(1))
    assert 1.5 <= policy.wait_for(3, 1.5) <= 1.65
    assert 30.0 <= policy.wait_for(0, 9999.0) <= 33.0


@pytest.mark.parametrize(
    ("value", "seconds"), [("1.5", 1.5), ("0", 0.0), ("-3", 0.0), ("junk", None), ("", None), (None, None)]
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date() -> None:
    from email.utils import format_datetime

    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = parse_retry_after(later)
    assert seconds is not None and 25 <= seconds <= 31


# ------------------------------------------------------------------------------------------- adaptive limiter
def test_limiter_halves_on_429_once_per_interval_and_recovers_additively() -> None:
    limiter = AdaptiveLimiter(8, decrease_interval=0.05)
    assert limiter.throttled() is True and limiter.limit == 4
    assert limiter.throttled() is False and limiter.limit == 4  # the same burst counts once
    time.sleep(0.06)
    assert limiter.throttled() is True and limiter.limit == 2
    for _ in range(5):
        limiter.succeeded()
    assert limiter.limit == 2  # no increase right after a decrease
    time.sleep(0.06)
    for _ in range(2):
        limiter.succeeded()
    assert limiter.limit == 3
    for _ in range(3):
        limiter.succeeded()
    assert limiter.limit == 4
    for _ in range(100):
        limiter.succeeded()
    assert limiter.limit == 8  # never above the maximum
    assert (limiter.min_limit_seen, limiter.decreases) == (2, 2)


def test_limiter_never_goes_below_one() -> None:
    limiter = AdaptiveLimiter(2, decrease_interval=0)
    limiter.throttled()
    limiter.throttled()
    assert limiter.limit == 1


def test_limiter_bounds_in_flight() -> None:
    limiter = AdaptiveLimiter(3)
    current = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal current, peak
        with limiter.slot():
            with lock:
                current += 1
                peak = max(peak, current)
            time.sleep(0.01)
            with lock:
                current -= 1

    threads = [threading.Thread(target=work) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 3 and limiter.max_in_flight == 3 and limiter.in_flight == 0
    assert limiter.acquire(timeout=0.01) is True
    for _ in range(2):
        limiter.acquire()
    assert limiter.acquire(timeout=0.01) is False


# ----------------------------------------------------------------------------------------- SecureString keys
@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _xml(key: rsa.RSAPrivateKey) -> str:
    numbers = key.public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).decode()

    return f"<RSAKeyValue><Modulus>{b64(numbers.n)}</Modulus><Exponent>{b64(numbers.e)}</Exponent></RSAKeyValue>"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize("form", ["pem-text", "pem-file", "xml-text", "xml-file"])
def test_password_round_trip_with_every_key_form(rsa_key: rsa.RSAPrivateKey, tmp_path: Path, form: str) -> None:
    text = _pem(rsa_key) if form.startswith("pem") else _xml(rsa_key)
    setting = text
    if form.endswith("file"):
        path = tmp_path / "key.txt"
        path.write_text(text)
        setting = str(path)
    encryptor = PasswordEncryptor.from_setting(setting)
    first, second = encryptor.encrypt("Sécret-Passw0rd"), encryptor("Sécret-Passw0rd")
    assert first != second  # PKCS#1 v1.5 padding is random
    for blob in (first, second):
        clear = rsa_key.decrypt(base64.b64decode(blob), padding.PKCS1v15())
        assert clear.decode("utf-8") == "Sécret-Passw0rd"
    assert "Passw0rd" not in repr(encryptor)


def test_bad_keys_are_config_errors(tmp_path: Path) -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    cases = {
        "": "password_public_key is empty",
        str(tmp_path / "missing.pem"): "cannot read",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----": "not a valid PEM public key",
        "<RSAKeyValue><Exponent>AQAB</Exponent></RSAKeyValue>": "needs a Modulus and an Exponent",
        ec_pem: "must be an RSA key",
    }
    for setting, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_public_key(setting)


def test_too_long_secret_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    encryptor = PasswordEncryptor(rsa_key.public_key())
    with pytest.raises(InputError, match="at most 245 bytes"):
        encryptor.encrypt("x" * 300)


# ---------------------------------------------------------------------------------------- headers on the wire
class Capture:
    """A route on the simulator's HTTPS server that records requests and answers from a script of replies."""

    def __init__(self, sim: Simulator) -> None:
        self.requests: list[Request] = []
        self.replies: list[Response] = []
        sim.router.add("POST", r"/capture/adminapi/beta/(?P<tenant>[^/]+)/InvokeCommand", self.handle)
        self.base = f"{sim.base_url}/capture"

    def handle(self, request: Request, match: re.Match[str]) -> Response:
        self.requests.append(request)
        if self.replies:
            return self.replies.pop(0)
        return page([{"Name": "one", "Name@odata.type": "#String"}])


def page(value: list[dict[str, Any]], next_link: str | None = None, warnings: list[str] | None = None) -> Response:
    body: dict[str, Any] = {"@odata.context": "ctx", "@adminapi.warnings": warnings or [], "value": value}
    if next_link:
        body["@odata.nextLink"] = next_link
    return Response(200, body, content_type="application/json;odata.metadata=minimal")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with make_simulator(tmp_path_factory.mktemp("wire"), mailboxes=20) as sim:
        sim.capture = Capture(sim)  # type: ignore[attr-defined]
        yield sim


@pytest.fixture
def capture(served: Simulator) -> Capture:
    """The served capture route, emptied for this test."""
    route: Capture = served.capture  # type: ignore[attr-defined]
    route.requests.clear()
    route.replies.clear()
    return route


def make_client(sim: Simulator, base: str, **options: Any) -> ExchangeClient:
    token = sim.identity.issue_access_token(ADMIN, sim.base_url)
    settings: dict[str, Any] = {"anchor_mailbox": f"UPN:{ADMIN}", "ca_bundle": sim.ca_path, "backoff_base": 0.01}
    settings.update(options)
    return ExchangeClient(base, sim.config.tenant_id, lambda force: token, **settings)


def test_select_goes_on_every_page_beside_the_skiptoken(served: Simulator, capture: Capture) -> None:
    tid = served.config.tenant_id
    capture.replies = [
        page([{"N": 1}], next_link=f"{capture.base}/adminapi/beta/{tid}/InvokeCommand?$skiptoken=abc"),
        page([{"N": 2}]),
    ]
    with make_client(served, capture.base) as client:
        records = client.invoke_all("Get-Mailbox", {"InactiveMailboxOnly": True}, select=["ExchangeGuid", "Name"])
    assert records == [{"N": 1}, {"N": 2}]
    first, second = capture.requests
    assert first.query == {"$select": ["ExchangeGuid,Name"]}
    assert second.query == {"$skiptoken": ["abc"], "$select": ["ExchangeGuid,Name"]}


def test_headers_and_body_on_the_wire(served: Simulator, capture: Capture) -> None:
    tid = served.config.tenant_id
    capture.replies = [
        page([{"N": 1}], next_link=f"{capture.base}/adminapi/beta/{tid}/InvokeCommand?$skiptoken=abc"),
        page([{"N": 2}]),
    ]
    with make_client(served, capture.base) as client:
        records = client.invoke_all("Get-Mailbox", {"InactiveMailboxOnly": True}, result_size=25)
        client.invoke_all("Get-OrganizationConfig")
    assert records == [{"N": 1}, {"N": 2}]
    first, second, other = capture.requests
    assert first.path == f"/capture/adminapi/beta/{tid}/InvokeCommand" and first.query == {}
    assert second.query == {"$skiptoken": ["abc"]}
    expected_body = (
        b'{"CmdletInput":{"CmdletName":"Get-Mailbox","Parameters":{"InactiveMailboxOnly":true,"ResultSize":25}}}'
    )
    assert first.body == second.body == expected_body
    headers = dict(first.headers)
    request_id = headers.pop("client-request-id")
    connection_id = headers.pop("connection-id")
    token = headers.pop("authorization")
    assert token.startswith("Bearer eyJ")
    uuid.UUID(request_id)
    uuid.UUID(connection_id)
    assert {
        k: v for k, v in headers.items() if k not in ("host", "content-length", "accept-encoding", "connection")
    } == {
        "accept": "application/json",
        "accept-charset": "UTF-8",
        "content-type": "application/json",
        "accept-language": "en-US",
        "x-responseformat": "json",
        "x-clientapplication": "ExoManagementModule",
        "user-agent": f"imm/0.1.0 (python-httpx/{__import__('httpx').__version__})",
        "x-anchormailbox": f"UPN:{ADMIN}",
        "x-cmdletname": "Get-Mailbox",
        "prefer": "odata.maxpagesize=25",
    }
    assert "gzip" in first.headers["accept-encoding"]
    # one call: the same client-request-id on every page; another call: a new one; one connection-id per client
    assert second.headers["client-request-id"] == request_id
    assert other.headers["client-request-id"] != request_id
    assert other.headers["connection-id"] == second.headers["connection-id"] == connection_id
    assert other.headers["prefer"] == "odata.maxpagesize=1000"
    assert other.body == b'{"CmdletInput":{"CmdletName":"Get-OrganizationConfig","Parameters":{}}}'


def test_result_size_stops_paging(served: Simulator, capture: Capture) -> None:
    tid = served.config.tenant_id
    link = f"{capture.base}/adminapi/beta/{tid}/InvokeCommand?$skiptoken=more"
    capture.replies = [page([{"N": 1}, {"N": 2}], next_link=link), page([{"N": 3}, {"N": 4}], next_link=link)]
    with make_client(served, capture.base) as client:
        assert client.invoke_all("Get-Mailbox", result_size=3) == [{"N": 1}, {"N": 2}, {"N": 3}]
    assert len(capture.requests) == 2


def test_annotations_kept_on_request(served: Simulator, capture: Capture) -> None:
    with make_client(served, capture.base) as client:
        assert client.invoke_all("Get-Mailbox") == [{"Name": "one"}]
        assert client.invoke_all("Get-Mailbox", keep_annotations=True) == [
            {"Name": "one", "Name@odata.type": "#String"}
        ]


def test_a_page_link_to_another_host_is_refused(served: Simulator, capture: Capture) -> None:
    capture.replies = [page([{"N": 1}], next_link="https://attacker.example.net/adminapi/beta/t/InvokeCommand")]
    with make_client(served, capture.base) as client:
        iterator = client.invoke("Get-Mailbox")
        assert next(iterator) == {"N": 1}
        with pytest.raises(ExchangeError, match="refusing to send the Exchange token to https://attacker.example.net"):
            next(iterator)
    assert len(capture.requests) == 1


def test_a_redirect_to_plain_http_is_refused(served: Simulator, capture: Capture) -> None:
    capture.replies = [Response(302, b"", headers={"Location": "http://127.0.0.1:1/x"})]
    with make_client(served, capture.base) as client:
        with pytest.raises(ExchangeError, match="refusing to send the Exchange token to http://127.0.0.1"):
            client.invoke_all("Get-Mailbox")


def test_a_reply_that_is_not_json(served: Simulator, capture: Capture) -> None:
    capture.replies = [Response(200, "<html>captive portal</html>", content_type="text/html")]
    with make_client(served, capture.base) as client:
        with pytest.raises(ExchangeError, match=r"an HTML page came back .* \(HTTP 200\)") as caught:
            client.invoke_all("Get-Mailbox")
    assert caught.value.status == 200 and caught.value.exit_code == 1


def test_a_403_with_a_nul_body(served: Simulator, capture: Capture) -> None:
    capture.replies = [Response(403, b"\x00\x00", headers={"request-id": "rid-9"})]
    with make_client(served, capture.base) as client:
        with pytest.raises(AccessDeniedError, match="access denied for Get-Mailbox \\(HTTP 403\\)") as caught:
            client.invoke_all("Get-Mailbox")
    assert caught.value.request_id == "rid-9" and caught.value.microsoft_message is None
    assert len(capture.requests) == 1  # not retried


def test_non_terminating_errors_are_kept(served: Simulator, capture: Capture, caplog: pytest.LogCaptureFixture) -> None:
    reply = page([{"N": 1}])
    assert isinstance(reply.body, dict)
    reply.body["@adminapi.errors"] = ["couldn't find 'x'"]
    capture.replies = [reply]
    with make_client(served, capture.base) as client:
        assert client.invoke_all("Get-Mailbox") == [{"N": 1}]
        assert client.non_terminating_errors == ["couldn't find 'x'"]
    assert "non-terminating error from Get-Mailbox: couldn't find 'x'" in caplog.text


def test_non_terminating_errors_fail_a_change(served: Simulator, capture: Capture) -> None:
    reply = page([])
    assert isinstance(reply.body, dict)
    reply.body["@adminapi.errors"] = ["Ex1A2B3C|Microsoft.Exchange.Some.TaskException|no settings were modified"]
    capture.replies = [reply]
    with make_client(served, capture.base) as client:
        with pytest.raises(NonTerminatingError) as caught:
            client.invoke_all("Set-Mailbox", {"Identity": "x", "LitigationHoldEnabled": False})
    error = caught.value
    assert str(error) == "Set-Mailbox failed: Exchange reported an error: no settings were modified"
    assert (error.status, error.exception_type, error.exit_code) == (200, "Microsoft.Exchange.Some.TaskException", 1)
    assert len(capture.requests) == 1  # a 200 is not retried


def test_construction_errors(served: Simulator) -> None:
    with pytest.raises(ConfigError, match="tenant_id 'organizations' cannot address Exchange Online"):
        ExchangeClient(served.base_url, "organizations", lambda f: "t", anchor_mailbox=None)
    with pytest.raises(ConfigError, match="must be https"):
        ExchangeClient("http://127.0.0.1:1", "t", lambda f: "t", anchor_mailbox=None)
    with pytest.raises(ConfigError, match="unknown Exchange endpoint 'graph'"):
        ExchangeClient(served.base_url, "t", lambda f: "t", anchor_mailbox=None, endpoint="graph")
    with pytest.raises(ConfigError, match="ca_bundle .*missing.pem: cannot be used"):
        ExchangeClient(served.base_url, "t", lambda f: "t", anchor_mailbox=None, ca_bundle=Path("/nope/missing.pem"))
