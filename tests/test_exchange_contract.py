"""imm's real Exchange client against the served simulated tenant over TLS: every cmdlet imm uses, paging, warnings,
each typed error, throttling, injected faults, token expiry mid-paging, creating calls with an unknown outcome, the
compliance redirect and the SecureString round trip. Expectations come from the tenant's ground truth."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import make_simulator
from imm.config import Profile, load_config, write_profile
from imm.errors import ConfigError, ExitStatus
from imm.exchange import (
    AccessDeniedError,
    AmbiguousIdentityError,
    AmbiguousOutcomeError,
    ConfirmationRequiredError,
    ExchangeClient,
    ExoAuthError,
    ExoNotFoundError,
    InvalidParameterError,
    PagingExpiredError,
    ThrottledError,
    TransientError,
    create_backend,
)
from imm.exchange.cmdlets import ExchangeOperations
from imm.simulator import FaultConfig, Simulator
from imm.simulator.model import ACTIVE, INACTIVE, SOFT_DELETED, Mailbox

ADMIN = "admin@contoso.onmicrosoft.com"
TRUNCATION = (
    "There are more results available than are currently displayed. To view them, increase the value for the "
    "ResultSize parameter."
)
PASSWORD = "Sup3r-Secret-Passw0rd!"


# ------------------------------------------------------------------------------------------------- helpers
class Tokens:
    """A token provider backed by the simulated identity provider; records each call's force_refresh flag."""

    def __init__(self, sim: Simulator, audience: str, upn: str = ADMIN, first_lifetime: int | None = None) -> None:
        self.sim, self.audience, self.upn = sim, audience, upn
        self.first_lifetime = first_lifetime
        self.calls: list[bool] = []
        self.token: str | None = None

    def __call__(self, force_refresh: bool) -> str:
        """Like a token cache: the same token until a refresh is forced."""
        self.calls.append(force_refresh)
        if self.token is None:
            self.token = self.sim.identity.issue_access_token(self.upn, self.audience, self.first_lifetime)
        elif force_refresh:
            self.token = self.sim.identity.issue_access_token(self.upn, self.audience)
        return self.token


def profile_for(sim: Simulator, folder: Path, **values: Any) -> Profile:
    path = folder / "config.toml"
    write_profile(path, "sim", {**sim.profile_values(), **values}, make_default=True)
    return load_config(path, "sim", env={}).profile


def exchange(sim: Simulator, folder: Path, tokens: Tokens | None = None, **options: Any) -> ExchangeClient:
    settings: dict[str, Any] = {"backoff_base": 0.01, "decrease_interval": 0.05}
    settings.update(options)
    return ExchangeClient.from_profile(
        profile_for(sim, folder),
        tokens or Tokens(sim, sim.base_url),
        endpoint="exchange",
        anchor_mailbox=f"UPN:{ADMIN}",
        **settings,
    )


def compliance(sim: Simulator, folder: Path, tokens: Tokens | None = None, **options: Any) -> ExchangeClient:
    return ExchangeClient.from_profile(
        profile_for(sim, folder),
        tokens or Tokens(sim, f"{sim.base_url}/compliance"),
        endpoint="compliance",
        anchor_mailbox=f"UPN:{ADMIN}",
        backoff_base=0.01,
        **options,
    )


def inactive(sim: Simulator, **want: Any) -> Mailbox:
    for mbx in sim.exchange.tenant.mailboxes.values():
        if mbx.state != INACTIVE:
            continue
        if all(v(getattr(mbx, k)) if callable(v) else getattr(mbx, k) == v for k, v in want.items()):
            return mbx
    raise LookupError(want)


def recoverable(sim: Simulator) -> Mailbox:
    special = sim.exchange.tenant.special
    return inactive(
        sim,
        external_directory_object_id="",
        aux_primary_shards=0,
        aux_archive_shards=0,
        auto_expanding_archive=False,
        upn=lambda u: not u.endswith(special["federated_domain"]) and u != special["shared_smtp"],
    )


def requests_for(sim: Simulator, cmdlet: str) -> list[dict[str, Any]]:
    return [e for e in list(sim.exchange.request_log) if e["cmdlet"] == cmdlet]


def truth_inactive(sim: Simulator) -> set[str]:
    return {m.exchange_guid for m in sim.exchange.tenant.mailboxes.values() if m.state == INACTIVE}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """A read-only tenant with more than 1,000 inactive mailboxes."""
    with make_simulator(tmp_path_factory.mktemp("shared"), mailboxes=1100) as sim:
        yield sim


@pytest.fixture(scope="module")
def shared_ops(shared: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExchangeOperations]:
    folder = tmp_path_factory.mktemp("shared-config")
    with exchange(shared, folder, page_size=300) as ex, compliance(shared, folder) as scc:
        yield ExchangeOperations(ex, scc)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    """A fresh tenant per test, with quick restore requests and a short Retry-After."""
    with make_simulator(tmp_path, mailboxes=200, restore_seconds=0.5, retry_after_seconds=0.02) as s:
        yield s


@pytest.fixture
def ops(sim: Simulator, tmp_path: Path) -> Iterator[ExchangeOperations]:
    with exchange(sim, tmp_path) as ex, compliance(sim, tmp_path) as scc:
        yield ExchangeOperations(ex, scc)


# ------------------------------------------------------------------------------------------ listing, paging
def test_inactive_listing_is_complete_across_pages(shared: Simulator, shared_ops: ExchangeOperations) -> None:
    client = shared_ops.exchange
    assert isinstance(client, ExchangeClient)
    before = client.stats_snapshot()
    shared.exchange.reset_counters()
    records = shared_ops.get_inactive_mailboxes()
    guids = [r["ExchangeGuid"] for r in records]
    assert len(guids) == len(set(guids)) == 1100
    assert set(guids) == truth_inactive(shared)
    assert all(r["IsInactiveMailbox"] is True and "ExchangeGuid@odata.type" not in r for r in records)
    log = requests_for(shared, "Get-Mailbox")
    assert [e["page"] for e in log] == [False, True, True, True]  # 1,100 records at 300 a page
    assert len({e["client_request_id"] for e in log}) == 1
    assert log[0]["parameters"] == {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"}
    after = client.stats_snapshot()
    assert after["pages"] - before["pages"] == 3 and after["calls"] - before["calls"] == 1
    assert client.last_warnings == []


def test_truncation_warning_is_surfaced(
    shared: Simulator, shared_ops: ExchangeOperations, caplog: pytest.LogCaptureFixture
) -> None:
    client = shared_ops.exchange
    assert isinstance(client, ExchangeClient)
    caplog.set_level(logging.WARNING, logger="imm.exchange")
    five = client.invoke_all("Get-Mailbox", {"InactiveMailboxOnly": True}, result_size=5)
    assert len(five) == 5
    assert client.last_warnings == [TRUNCATION]
    assert TRUNCATION in client.warnings
    assert f"Exchange warning from Get-Mailbox: {TRUNCATION}" in caplog.text
    # without ResultSize the service stops at its 1,000 default and says so: why imm always sends Unlimited
    default = client.invoke_all("Get-Mailbox", {"InactiveMailboxOnly": True})
    assert len(default) == 1000 and client.last_warnings == [TRUNCATION]


def test_single_object_getters(shared: Simulator, shared_ops: ExchangeOperations) -> None:
    tenant = shared.exchange.tenant
    mbx = inactive(shared, archive=True)
    record = shared_ops.get_mailbox(mbx.exchange_guid)
    assert (record["ExchangeGuid"], record["DistinguishedName"]) == (
        mbx.exchange_guid,
        mbx.distinguished_name(tenant.tenant_domain),
    )
    assert "OU=Soft Deleted Objects" in record["DistinguishedName"]
    stats = shared_ops.get_mailbox_statistics(mbx.exchange_guid)
    assert stats["MailboxGuid"] == mbx.exchange_guid and stats["ItemCount"] == mbx.item_count
    assert stats["TotalItemSize"].endswith(f"({mbx.total_bytes:,} bytes)")
    archive = shared_ops.get_mailbox_statistics(mbx.exchange_guid, archive=True)
    assert archive["MailboxGuid"] == mbx.archive_guid and archive["IsArchiveMailbox"] is True
    recipient = shared_ops.get_recipient(mbx.exchange_guid)
    assert (recipient["Company"], recipient["Department"]) == (mbx.company, mbx.department)
    org = shared_ops.get_organization_config()
    assert org["InPlaceHolds"] == tenant.org_holds
    stats_log = requests_for(shared, "Get-MailboxStatistics")[-2:]
    assert [e["parameters"] for e in stats_log] == [
        {"Identity": mbx.exchange_guid, "IncludeSoftDeletedRecipients": True},
        {"Identity": mbx.exchange_guid, "IncludeSoftDeletedRecipients": True, "Archive": True},
    ]


def test_recipient_listing(shared: Simulator, shared_ops: ExchangeOperations) -> None:
    records = shared_ops.get_recipients()
    truth = {
        m.exchange_guid
        for m in shared.exchange.tenant.mailboxes.values()
        if m.recipient_type_details in ("UserMailbox", "SharedMailbox")
    }
    assert {r["ExchangeGuid"] for r in records} == truth and len(records) == len(truth)
    assert requests_for(shared, "Get-Recipient")[-1]["parameters"] == {
        "IncludeSoftDeletedRecipients": True,
        "RecipientTypeDetails": ["UserMailbox", "SharedMailbox"],
        "ResultSize": "Unlimited",
    }


def test_changed_since_lists_only_changed(sim: Simulator, ops: ExchangeOperations) -> None:
    tenant = sim.exchange.tenant
    cutoff = max(m.when_changed for m in tenant.mailboxes.values())
    changed = sorted(truth_inactive(sim))[3:6]
    time.sleep(max(0.0, cutoff + 1.05 - time.time()))  # the touch lands in a later whole second than the cutoff
    for guid in changed:
        tenant.touch(guid)
    records = ops.get_inactive_mailboxes(changed_since=datetime.fromtimestamp(cutoff, UTC))
    assert sorted(r["ExchangeGuid"] for r in records) == changed
    (entry,) = requests_for(sim, "Get-Mailbox")
    stamp = datetime.fromtimestamp(cutoff, UTC).strftime("%m/%d/%Y %H:%M:%S")
    assert entry["parameters"]["Filter"] == f"WhenChangedUTC -gt '{stamp}'"


# ---------------------------------------------------------------------------------------------- typed errors
def test_not_found(shared_ops: ExchangeOperations) -> None:
    with pytest.raises(ExoNotFoundError) as caught:
        shared_ops.get_mailbox("nobody@contoso.com")
    error = caught.value
    assert error.exit_code == ExitStatus.NOT_FOUND and error.status == 404
    assert error.exception_type == "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
    assert error.microsoft_message == (
        "The operation couldn't be performed because object 'nobody@contoso.com' couldn't be found on "
        "'AM0PR02A001DC01.EURPR02A001.PROD.OUTLOOK.COM'."
    )
    assert str(error) == f"Get-Mailbox failed: {error.microsoft_message}"
    assert error.request_id and error.client_request_id


def test_ambiguous_identity(shared: Simulator, shared_ops: ExchangeOperations) -> None:
    shared_smtp = shared.exchange.tenant.special["shared_smtp"]
    with pytest.raises(AmbiguousIdentityError) as caught:
        shared_ops.get_mailbox(shared_smtp, inactive=None)
    assert caught.value.exit_code == ExitStatus.USAGE and caught.value.status == 400
    assert caught.value.microsoft_message == (
        f"The operation couldn't be performed because '{shared_smtp}' matches multiple entries."
    )
    # by ExchangeGuid the same mailbox is found
    guid = shared.exchange.tenant.special["shared_smtp_inactive"]
    assert shared_ops.get_mailbox(guid, inactive=None)["ExchangeGuid"] == guid


def test_invalid_parameters(shared: Simulator, shared_ops: ExchangeOperations) -> None:
    client = shared_ops.exchange
    with pytest.raises(InvalidParameterError) as caught:
        client.invoke_all("Get-Mailbox", {"NoSuchParameter": 1})
    assert caught.value.exit_code == ExitStatus.USAGE
    assert caught.value.exception_type == "System.Management.Automation.ParameterBindingException"
    assert (
        caught.value.microsoft_message == "A parameter cannot be found that matches parameter name 'NoSuchParameter'."
    )
    no_archive = inactive(shared, archive=False)
    with pytest.raises(InvalidParameterError, match="doesn't have an archive mailbox"):
        shared_ops.get_mailbox_statistics(no_archive.exchange_guid, archive=True)


def test_unknown_cmdlet_is_access_denied(shared: Simulator, shared_ops: ExchangeOperations) -> None:
    before = shared.exchange.counters["Get-Nothing"]
    with pytest.raises(AccessDeniedError) as caught:
        shared_ops.exchange.invoke_all("Get-Nothing")
    assert caught.value.status == 403 and caught.value.exit_code == 1 and caught.value.microsoft_message is None
    assert shared.exchange.counters["Get-Nothing"] == before + 1  # not retried


def test_compliance_role_denied(sim: Simulator, tmp_path: Path) -> None:
    officer = "officer@contoso.onmicrosoft.com"
    sim.identity.add_user(officer)
    sim.exchange.deny_role(officer, "compliance")
    with (
        exchange(sim, tmp_path, Tokens(sim, sim.base_url, upn=officer)) as ex,
        compliance(sim, tmp_path, Tokens(sim, f"{sim.base_url}/compliance", upn=officer)) as scc,
    ):
        ops = ExchangeOperations(ex, scc)
        assert ops.get_organization_config()["Name"]
        with pytest.raises(AccessDeniedError, match="access denied for Get-RetentionCompliancePolicy"):
            ops.get_retention_policies()


def test_refused_token_after_one_refresh_is_a_sign_in_error(sim: Simulator, tmp_path: Path) -> None:
    wrong = Tokens(sim, f"{sim.base_url}/compliance")  # a token for the wrong audience
    with exchange(sim, tmp_path, wrong) as client:
        with pytest.raises(ExoAuthError) as caught:
            client.invoke_all("Get-OrganizationConfig")
    assert wrong.calls == [False, True]
    assert caught.value.exit_code == ExitStatus.SIGN_IN and caught.value.status == 401
    assert caught.value.microsoft_message is not None
    assert caught.value.microsoft_message.startswith("the access token was refused: ")
    assert "eyJ" not in str(caught.value)


def test_confirmation_is_reported_not_ignored(sim: Simulator, ops: ExchangeOperations) -> None:
    with pytest.raises(ConfirmationRequiredError, match="was not run: Exchange asked for a confirmation"):
        ops.exchange.invoke_all("Remove-MailboxRestoreRequest", {"Identity": "x\\y", "Confirm": True})


def test_expired_page_link(tmp_path: Path) -> None:
    with make_simulator(tmp_path, mailboxes=200, page_link_expiry=0.2) as sim:
        with exchange(sim, tmp_path, page_size=50) as client:
            pages = client.invoke("Get-Mailbox", {"InactiveMailboxOnly": True}, result_size="Unlimited")
            assert next(pages)["IsInactiveMailbox"] is True
            time.sleep(0.3)
            with pytest.raises(PagingExpiredError) as caught:
                list(pages)
        assert (
            caught.value.microsoft_message == "Expired or Invalid pagination request. Default Expiry time is 00:30:00"
        )
        assert [e["status"] for e in requests_for(sim, "Get-Mailbox")] == [200, 400]


# ------------------------------------------------------------------------------------ throttling and faults
def test_retry_after_is_honoured(tmp_path: Path) -> None:
    with make_simulator(tmp_path, mailboxes=20, retry_after_seconds=0.3) as sim:
        with exchange(sim, tmp_path, backoff_base=0.001) as client:
            sim.exchange.fail_next("Get-OrganizationConfig", "429")
            started = time.monotonic()
            assert client.invoke_all("Get-OrganizationConfig")
            elapsed = time.monotonic() - started
            assert client.stats_snapshot()["throttled"] == 1
        assert 0.3 <= elapsed < 3
        assert [e["status"] for e in requests_for(sim, "Get-OrganizationConfig")] == [429, 200]


def test_transient_failures_are_retried_with_one_request_id(sim: Simulator, ops: ExchangeOperations) -> None:
    guid = sorted(truth_inactive(sim))[0]
    for kind in ("503", "504", "reset", "500"):
        sim.exchange.fail_next("Get-MailboxStatistics", kind)
    stats = ops.get_mailbox_statistics(guid)
    assert stats["MailboxGuid"] == guid
    log = requests_for(sim, "Get-MailboxStatistics")
    assert [e["status"] for e in log] == [503, 504, "reset", 500, 200]
    assert len({e["client_request_id"] for e in log}) == 1
    snapshot = ops.exchange.stats_snapshot()  # type: ignore[attr-defined]
    assert (snapshot["retries"], snapshot["server_errors"], snapshot["connection_errors"]) == (4, 3, 1)
    assert sim.exchange.executed["Get-MailboxStatistics"] == 1


def test_transient_failures_give_up_after_the_retries(sim: Simulator, tmp_path: Path) -> None:
    sim.exchange.fail_next("Get-OrganizationConfig", "503", 3)
    with exchange(sim, tmp_path, max_retries=2) as client:
        with pytest.raises(TransientError) as caught:
            client.invoke_all("Get-OrganizationConfig")
    assert caught.value.status == 503
    assert caught.value.exception_type == "Microsoft.Exchange.Data.Storage.StorageTransientException"
    assert len(requests_for(sim, "Get-OrganizationConfig")) == 3


def test_a_refused_connection_says_it_could_not_connect(sim: Simulator, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    profile = profile_for(sim, tmp_path, exchange_url=f"https://127.0.0.1:{port}")
    client = ExchangeClient.from_profile(profile, Tokens(sim, sim.base_url), max_retries=1, backoff_base=0.01)
    with (
        client,
        pytest.raises(
            TransientError,
            match=r"Get-OrganizationConfig failed: could not connect to 127\.0\.0\.1 \(ConnectError\) after 2 attempts",
        ),
    ):
        client.invoke_all("Get-OrganizationConfig")


def test_resets_give_up_after_the_retries(sim: Simulator, tmp_path: Path) -> None:
    sim.exchange.fail_next("Get-OrganizationConfig", "reset", 2)
    with exchange(sim, tmp_path, max_retries=1) as client:
        with pytest.raises(TransientError, match="lost its connection .* after 2 attempts"):
            client.invoke_all("Get-OrganizationConfig")


def test_per_call_timeout(tmp_path: Path) -> None:
    faults = FaultConfig(slow_seconds=1.0)
    with make_simulator(tmp_path, mailboxes=20, faults=faults) as sim:
        sim.exchange.fail_next("Get-OrganizationConfig", "slow", 2)
        with exchange(sim, tmp_path, timeout=0.25, max_retries=1) as client:
            started = time.monotonic()
            with pytest.raises(TransientError, match="timed out \\(ReadTimeout\\) after 2 attempts"):
                client.invoke_all("Get-OrganizationConfig")
            assert time.monotonic() - started < 3


def test_persistent_throttling_is_a_throttled_error(tmp_path: Path) -> None:
    with make_simulator(tmp_path, mailboxes=20, retry_after_seconds=0.01, faults=FaultConfig(throttle_rate=1.0)) as sim:
        with exchange(sim, tmp_path, max_retries=0, max_throttle_retries=2) as client:
            with pytest.raises(ThrottledError) as caught:
                client.invoke_all("Get-OrganizationConfig")
            assert client.stats_snapshot()["throttled"] == 3
    assert caught.value.status == 429 and caught.value.exit_code == 1
    assert "still throttled by Exchange Online after 3 attempts" in str(caught.value)
    assert (
        caught.value.microsoft_message
        == "You have reached the maximum number of concurrent requests per tenant. Please wait and try again."
    )


def test_adaptive_concurrency_under_a_small_budget(tmp_path: Path) -> None:
    with make_simulator(tmp_path, mailboxes=60, latency_ms=30, concurrency_budget=2, retry_after_seconds=0.02) as sim:
        guids = sorted(truth_inactive(sim))[:40]
        with exchange(sim, tmp_path, concurrency=8) as client:
            ops = ExchangeOperations(client)
            results = dict(client.map(ops.get_mailbox_statistics, guids))
            snapshot = client.stats_snapshot()
        assert sorted(results) == guids
        failed = {g: r for g, r in results.items() if not isinstance(r, dict)}
        assert failed == {}
        assert all(isinstance(r, dict) and r["MailboxGuid"] == g for g, r in results.items())
        assert snapshot["throttled"] > 0 and snapshot["limit_decreases"] >= 1 and snapshot["min_limit"] <= 4
        assert sim.exchange.max_in_flight <= 2
        assert sim.exchange.executed["Get-MailboxStatistics"] == 40


def test_map_yields_errors_per_item(shared: Simulator, shared_ops: ExchangeOperations) -> None:
    good = sorted(truth_inactive(shared))[0]
    client = shared_ops.exchange
    assert isinstance(client, ExchangeClient)
    results = dict(client.map(shared_ops.get_mailbox_statistics, [good, "missing@contoso.com"], workers=2))
    assert isinstance(results[good], dict) and isinstance(results["missing@contoso.com"], ExoNotFoundError)


# -------------------------------------------------------------------------------------------------- tokens
def test_token_expiring_mid_paging_is_refreshed(sim: Simulator, tmp_path: Path) -> None:
    tokens = Tokens(sim, sim.base_url, first_lifetime=2)
    with exchange(sim, tmp_path, tokens, page_size=50) as client:
        pages = client.invoke("Get-Mailbox", {"InactiveMailboxOnly": True}, result_size="Unlimited")
        first = [next(pages) for _ in range(50)]
        assert tokens.token is not None
        payload = tokens.token.split(".")[1]
        expiry = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
        time.sleep(max(0.0, expiry - time.time()) + 0.05)  # the first token is now expired
        records = first + list(pages)
        assert client.stats_snapshot()["token_refreshes"] == 1
    guids = [r["ExchangeGuid"] for r in records]
    assert len(guids) == len(set(guids)) and set(guids) == truth_inactive(sim)
    assert tokens.calls.count(True) == 1
    log = list(sim.exchange.request_log)  # a 401 is answered before the body is read: no cmdlet in its entry
    assert [e["status"] for e in log] == [200, 401, 200, 200, 200]  # 200 records at 50 a page
    assert len({e["client_request_id"] for e in log}) == 1


def test_cached_token_is_reused(sim: Simulator, tmp_path: Path) -> None:
    tokens = Tokens(sim, sim.base_url)
    with exchange(sim, tmp_path, tokens) as client:
        for _ in range(5):
            client.invoke_all("Get-OrganizationConfig")
    assert tokens.calls == [False]


# ------------------------------------------------------------------------------------------ creating calls
def _recover(ops: ExchangeOperations, mbx: Mailbox, upn: str = "recovered.one@contoso.com") -> dict[str, Any]:
    return ops.new_mailbox_from_inactive(
        mbx.exchange_guid, "Recovered One", upn, PASSWORD, display_name="Recovered One", first_name="R", last_name="O"
    )


def test_recover_round_trips_the_secure_string(
    sim: Simulator, ops: ExchangeOperations, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mbx = recoverable(sim)
    record = _recover(ops, mbx)
    assert record["ExchangeGuid"] == mbx.exchange_guid and record["IsInactiveMailbox"] is False
    assert record["UserPrincipalName"] == "recovered.one@contoso.com"
    assert mbx.state == ACTIVE
    warnings = ops.exchange.last_warnings
    assert len(warnings) == 1 and "30 days" in warnings[0]
    (entry,) = requests_for(sim, "New-Mailbox")
    assert entry["parameters"] == {
        "InactiveMailbox": mbx.exchange_guid,
        "Name": "Recovered One",
        "MicrosoftOnlineServicesID": "recovered.one@contoso.com",
        "Password": "***",
        "DisplayName": "Recovered One",
        "FirstName": "R",
        "LastName": "O",
        "ResetPasswordOnNextLogon": True,
    }
    assert PASSWORD not in caplog.text and "Passw0rd" not in caplog.text
    assert ops.get_mailbox("recovered.one@contoso.com", inactive=False)["ExchangeGuid"] == mbx.exchange_guid


def test_password_key_as_rsa_key_value_xml(sim: Simulator, tmp_path: Path) -> None:
    pem = sim.exchange.password_key.public_path.read_bytes()
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, rsa.RSAPublicKey)
    numbers = key.public_numbers()

    def b64(n: int) -> str:
        return base64.b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).decode()

    xml = f"<RSAKeyValue><Modulus>{b64(numbers.n)}</Modulus><Exponent>{b64(numbers.e)}</Exponent></RSAKeyValue>"
    with exchange(sim, tmp_path, password_public_key=xml) as client:
        record = _recover(ExchangeOperations(client), recoverable(sim))
    assert record["IsInactiveMailbox"] is False


def test_a_foreign_key_is_refused_by_the_tenant(sim: Simulator, tmp_path: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    mbx = recoverable(sim)
    with exchange(sim, tmp_path, password_public_key=pem) as client:
        with pytest.raises(InvalidParameterError, match="couldn't be decrypted"):
            _recover(ExchangeOperations(client), mbx)
    assert mbx.state == INACTIVE


def test_no_key_configured_is_taken_from_the_module_file(sim: Simulator, tmp_path: Path) -> None:
    """As Microsoft's module does: the key comes from the module file Exchange hands out, asked for once."""
    with exchange(sim, tmp_path, password_public_key=None) as client:
        record = _recover(ExchangeOperations(client), recoverable(sim))
        client.prepare_secure_strings()
    assert record["IsInactiveMailbox"] is False
    assert sim.exchange.counters["EXOModuleFile"] == 1


def test_a_module_file_without_a_key_is_a_config_error_before_sending(sim: Simulator, tmp_path: Path) -> None:
    sim.exchange.module_key_served = False
    with exchange(sim, tmp_path, password_public_key=None) as client:
        with pytest.raises(ConfigError) as caught:
            _recover(ExchangeOperations(client), recoverable(sim))
    assert str(caught.value) == (
        "Exchange Online's SecureString key is needed to send the password, and its module file did not give one "
        "(no key in the reply)"
    )
    assert caught.value.exit_code == ExitStatus.USAGE
    assert "password_public_key" in (caught.value.hint or "")
    assert requests_for(sim, "New-Mailbox") == []


def test_recover_with_an_unknown_outcome_is_not_repeated(sim: Simulator, ops: ExchangeOperations) -> None:
    mbx = recoverable(sim)
    sim.exchange.fail_next("New-Mailbox", "reset_after_commit")
    with pytest.raises(AmbiguousOutcomeError) as caught:
        _recover(ops, mbx)
    assert "may or may not have run" in str(caught.value) and caught.value.exit_code == 1
    assert sim.exchange.counters["New-Mailbox"] == 1 and sim.exchange.executed["New-Mailbox"] == 1
    # the caller reconciles: the new mailbox exists
    assert mbx.state == ACTIVE
    assert ops.get_mailbox("recovered.one@contoso.com", inactive=False)["ExchangeGuid"] == mbx.exchange_guid


@pytest.mark.parametrize("fault", ["reset", "503", "504", "500"])
def test_creating_calls_are_not_repeated_after_ambiguous_failures(
    sim: Simulator, ops: ExchangeOperations, fault: str
) -> None:
    mbx = recoverable(sim)
    sim.exchange.fail_next("New-Mailbox", fault)
    with pytest.raises(AmbiguousOutcomeError):
        _recover(ops, mbx)
    assert sim.exchange.counters["New-Mailbox"] == 1 and sim.exchange.executed["New-Mailbox"] == 0
    assert mbx.state == INACTIVE


@pytest.mark.parametrize("fault", ["429", "401"])
def test_creating_calls_are_repeated_when_nothing_ran(sim: Simulator, ops: ExchangeOperations, fault: str) -> None:
    mbx = recoverable(sim)
    sim.exchange.fail_next("New-Mailbox", fault)
    assert _recover(ops, mbx)["IsInactiveMailbox"] is False
    assert sim.exchange.counters["New-Mailbox"] == 2 and sim.exchange.executed["New-Mailbox"] == 1


def test_restore_request_with_an_unknown_outcome(sim: Simulator, ops: ExchangeOperations) -> None:
    tenant = sim.exchange.tenant
    source = inactive(sim, auto_expanding_archive=False, aux_archive_shards=0)
    target = tenant.special["restore_target"]
    ops.add_email_address(target, f"X500:{source.legacy_dn}")
    sim.exchange.fail_next("New-MailboxRestoreRequest", "reset_after_commit")
    with pytest.raises(AmbiguousOutcomeError):
        ops.new_restore_request("imm-ambiguous", source.exchange_guid, target)
    assert sim.exchange.counters["New-MailboxRestoreRequest"] == 1
    (found,) = ops.get_restore_requests(name="imm-ambiguous")  # reconciled by its name
    assert found["Name"] == "imm-ambiguous"


# ------------------------------------------------------------------------------------- changes and restore
def test_restore_flow(sim: Simulator, ops: ExchangeOperations) -> None:
    tenant = sim.exchange.tenant
    source = inactive(sim, auto_expanding_archive=False, aux_archive_shards=0, total_bytes=lambda b: b < 5 * 1024**3)
    target = tenant.mailbox(tenant.special["restore_target"])
    x500 = f"X500:{source.legacy_dn}"
    assert ops.add_email_address(target.primary_smtp, x500) == []
    assert x500 in target.extra_addresses
    created = ops.new_restore_request(
        "imm-1", source.exchange_guid, target.primary_smtp, target_root_folder="Inactive Mailbox"
    )
    identity = f"{target.alias}\\imm-1"
    assert (created["Name"], created["Status"], created["Identity"]) == ("imm-1", "Queued", identity)
    assert requests_for(sim, "New-MailboxRestoreRequest")[0]["parameters"] == {
        "Name": "imm-1",
        "SourceMailbox": source.exchange_guid,
        "TargetMailbox": target.primary_smtp,
        "TargetRootFolder": "Inactive Mailbox",
    }
    (listed,) = ops.get_restore_requests(target=target.primary_smtp)
    assert listed["Identity"] == identity
    deadline = time.monotonic() + 5
    stats = ops.get_restore_request_statistics(identity)
    while stats["Status"] != "Completed" and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = ops.get_restore_request_statistics(identity, include_report=True)
    assert stats["Status"] == "Completed" and stats["PercentComplete"] == 100
    assert ops.remove_restore_request(identity) == []
    assert ops.get_restore_requests(name="imm-1") == []
    ops.remove_email_address(target.primary_smtp, x500)
    assert x500 not in target.extra_addresses


def test_releasing_the_last_hold(sim: Simulator, ops: ExchangeOperations) -> None:
    tenant = sim.exchange.tenant
    mbx = next(
        m for m in tenant.mailboxes.values() if m.state == INACTIVE and tenant.hold_reasons(m) == ["LitigationHold"]
    )
    ops.set_inactive_mailbox(mbx.exchange_guid, LitigationHoldEnabled=False)
    assert mbx.state == INACTIVE and mbx.delay_hold  # a delay hold follows (identify-a-hold article)
    (entry,) = requests_for(sim, "Set-Mailbox")
    assert entry["parameters"] == {
        "Identity": mbx.exchange_guid,
        "InactiveMailbox": True,
        "LitigationHoldEnabled": False,
    }
    [log] = ops.export_hold_tracking(mbx.exchange_guid)
    assert '"hid":"LitigationHold"' in log["MailboxLog"]
    assert requests_for(sim, "Export-MailboxDiagnosticLogs")[0]["parameters"] == {
        "Identity": mbx.exchange_guid,
        "ComponentName": "HoldTracking",
        "IncludeInactiveMailboxes": True,
    }
    assert mbx.exchange_guid not in {r["ExchangeGuid"] for r in ops.get_soft_deleted_mailboxes(formerly_inactive=True)}
    ops.set_inactive_mailbox(mbx.exchange_guid, RemoveDelayHoldApplied=True)
    assert mbx.state == SOFT_DELETED
    assert mbx.exchange_guid in {r["ExchangeGuid"] for r in ops.get_soft_deleted_mailboxes()}
    assert mbx.exchange_guid in {r["ExchangeGuid"] for r in ops.get_soft_deleted_mailboxes(formerly_inactive=True)}
    gone = ops.get_mailbox(mbx.exchange_guid, soft_deleted=True)
    assert (gone["IsInactiveMailbox"], gone["WasInactiveMailbox"]) == (False, True)
    with pytest.raises(ExoNotFoundError):
        ops.get_mailbox(mbx.exchange_guid)


# ------------------------------------------------------------------------------------------------ compliance
def test_compliance_redirect_is_followed_once_and_remembered(sim: Simulator, ops: ExchangeOperations) -> None:
    client = ops.compliance
    assert isinstance(client, ExchangeClient)
    assert client.url == f"{sim.base_url}/compliance/adminapi/beta/{sim.config.tenant_id}/InvokeCommand"
    policies = ops.get_retention_policies()
    assert client.url == f"{sim.base_url}/compliance/eur02/adminapi/beta/{sim.config.tenant_id}/InvokeCommand"
    assert client.stats_snapshot()["requests"] == 2  # the 302, then the regional endpoint
    rules = ops.get_retention_rules()
    cases = ops.get_case_hold_policies()
    assert client.stats_snapshot()["requests"] == 4  # no more redirects
    tenant = sim.exchange.tenant
    assert {p["Guid"] for p in policies} == {p.guid for p in tenant.policies.values() if p.kind == "retention"}
    assert len(rules) == len(policies)
    assert {p["Guid"] for p in cases} == {p.guid for p in tenant.policies.values() if p.kind == "casehold"}
    log = [e for e in list(sim.exchange.request_log) if e["endpoint"] == "compliance"]
    assert [(e["cmdlet"], e["parameters"]) for e in log] == [
        ("Get-RetentionCompliancePolicy", {"DistributionDetail": True}),
        ("Get-RetentionComplianceRule", {}),
        ("Get-CaseHoldPolicy", {"DistributionDetail": True}),
    ]


def test_compliance_changes(sim: Simulator, ops: ExchangeOperations) -> None:
    tenant = sim.exchange.tenant
    case = next(p for p in tenant.policies.values() if p.kind == "casehold" and tenant.policy_members(p))
    member = tenant.policy_members(case)[0]
    ops.set_case_hold_policy(case.guid, RemoveExchangeLocation=[f".{member.primary_smtp}"])
    assert f"UniH{case.guid}" not in member.in_place_holds
    policy = next(
        p
        for p in tenant.policies.values()
        if p.kind == "retention" and p.target == "mbx" and not p.restrictive and tenant.policy_members(p)
    )
    held = tenant.policy_members(policy)[0]
    ops.set_retention_policy(policy.guid, RemoveExchangeLocation=[held.primary_smtp])
    assert held not in tenant.policy_members(policy)
    log = [
        e
        for e in list(sim.exchange.request_log)
        if e["cmdlet"] in ("Set-CaseHoldPolicy", "Set-RetentionCompliancePolicy")
    ]
    assert [e["parameters"]["Confirm"] for e in log] == [False, False]


def test_without_a_compliance_backend(shared_ops: ExchangeOperations) -> None:
    ops = ExchangeOperations(shared_ops.exchange)
    with pytest.raises(ConfigError, match="Security & Compliance endpoint is not connected"):
        ops.get_retention_policies()


# ------------------------------------------------------------------------------------------------- factory
def test_create_backend_from_the_profile(sim: Simulator, tmp_path: Path) -> None:
    profile = profile_for(sim, tmp_path, concurrency=4, request_timeout=30.0)
    client = create_backend(profile, Tokens(sim, sim.base_url), "exchange", f"UPN:{ADMIN}")
    assert isinstance(client, ExchangeClient)
    with client:
        assert (client.concurrency, client.timeout, client.limiter.limit) == (4, 30.0, 4)
        assert client.invoke_all("Get-OrganizationConfig")[0]["Name"]
    from dataclasses import replace

    with pytest.raises(ConfigError, match="unknown backend 'grpc'"):
        create_backend(replace(profile, backend="grpc"), Tokens(sim, sim.base_url))


def test_clients_can_share_one_limiter(sim: Simulator, tmp_path: Path) -> None:
    from imm.exchange import AdaptiveLimiter

    budget = AdaptiveLimiter(3)
    with exchange(sim, tmp_path, limiter=budget) as ex, compliance(sim, tmp_path, limiter=budget) as scc:
        assert ex.limiter is scc.limiter is budget
        ExchangeOperations(ex, scc).get_retention_rules()
        ex.invoke_all("Get-OrganizationConfig")
    assert budget.max_in_flight == 1 and budget.in_flight == 0


def test_missing_anchor_mailbox_is_refused(sim: Simulator, tmp_path: Path) -> None:
    with ExchangeClient.from_profile(profile_for(sim, tmp_path), Tokens(sim, sim.base_url)) as client:
        with pytest.raises(InvalidParameterError, match="X-AnchorMailbox header is missing"):
            client.invoke_all("Get-OrganizationConfig")


def test_secrets_stay_out_of_logs(sim: Simulator, ops: ExchangeOperations, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ops.get_organization_config()
    sim.exchange.fail_next("Get-OrganizationConfig", "503")
    ops.get_organization_config()
    text = caplog.text + json.dumps([r.__dict__.get("args") for r in caplog.records], default=str)
    assert "eyJ" not in text and "Bearer" not in text
