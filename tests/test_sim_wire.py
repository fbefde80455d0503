"""The simulator's wire format against the exact texts and shapes of exo-rest.md §4 and domain.md."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from imm.simulator.formats import datetime_string, size_string, timespan_string
from imm.simulator.model import INACTIVE
from simclient import SimClient, detail, make_sim

CONTENT_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
TRUNCATION = (
    "There are more results available than are currently displayed. To view them, increase the value for the "
    "ResultSize parameter."
)
EXPIRED = "Expired or Invalid pagination request. Default Expiry time is 00:30:00"
DC = "AM0PR02A001DC01.EURPR02A001.PROD.OUTLOOK.COM"
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}\+00:00$")
DATETIME_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
SIZE = re.compile(r"^\d+(\.\d{1,2})? (B|KB|MB|GB|TB) \(\d{1,3}(,\d{3})* bytes\)$")
GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with make_sim(tmp_path_factory.mktemp("wire"), mailboxes=1100, page_link_expiry=0.3, retry_after_seconds=0.5) as s:
        yield s


@pytest.fixture(scope="module")
def client(sim: object) -> Iterator[SimClient]:
    c = SimClient(sim)  # type: ignore[arg-type]
    yield c
    c.close()


def test_size_strings_match_exchange() -> None:
    assert size_string(16_873_043) == "16.09 MB (16,873,043 bytes)"
    assert size_string(106_300_440_576) == "99 GB (106,300,440,576 bytes)"
    assert size_string(0) == "0 B (0 bytes)"
    assert size_string(1023) == "1023 B (1,023 bytes)"
    assert size_string(1536) == "1.5 KB (1,536 bytes)"


def test_datetime_and_timespan_strings() -> None:
    moment = datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC).timestamp()
    assert datetime_string(moment) == "2022-09-21T08:07:47.0000000+00:00"
    assert datetime_string(moment, utc_z=True) == "2022-09-21T08:07:47.0000000Z"
    assert datetime_string(None) is None
    assert timespan_string(14) == "14.00:00:00"
    assert timespan_string(365) == "365.00:00:00"
    assert timespan_string(1 / 24 * 1.5) == "01:30:00"


def test_success_envelope_headers_and_annotations(client: SimClient) -> None:
    response = client.post(
        "Get-Mailbox",
        {"InactiveMailboxOnly": True, "ResultSize": 3},
        headers={**client.headers(), "client-request-id": "4c7d1f9e-0000-4000-8000-000000000001"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.headers["client-request-id"] == "4c7d1f9e-0000-4000-8000-000000000001"
    assert re.fullmatch(GUID, response.headers["request-id"])
    body = response.json()
    assert list(body) == ["@odata.context", "@adminapi.warnings", "value"]
    tid = client.sim.config.tenant_id
    assert body["@odata.context"] == (
        f"{client.sim.base_url}/adminapi/beta/{tid}/$metadata#Collection(Exchange.GenericHashTable)"
    )
    assert body["@adminapi.warnings"] == [TRUNCATION]
    record = body["value"][0]
    keys = list(record)
    # GUID annotations come first, then the value.
    i = keys.index("ExchangeGuid")
    assert keys[i - 2 : i] == ["ExchangeGuid@data.type", "ExchangeGuid@odata.type"]
    assert record["ExchangeGuid@data.type"] == "System.Guid"
    assert record["ExchangeGuid@odata.type"] == "#Guid"
    assert re.fullmatch(GUID, record["ExchangeGuid"])
    assert record["Guid@odata.type"] == "#Guid"
    assert record["WhenSoftDeleted@data.type"] == "System.DateTime"
    assert DATETIME.match(record["WhenSoftDeleted"])
    assert DATETIME.match(record["WhenChanged"])
    assert DATETIME_UTC.match(record["WhenChangedUTC"])
    assert record["InPlaceHolds@odata.type"] == "#Collection(String)"
    assert record["IsInactiveMailbox"] is True
    assert "OU=Soft Deleted Objects" in record["DistinguishedName"]
    assert SIZE.match(record["ProhibitSendReceiveQuota"])
    assert record["RetainDeletedItemsFor"] == "14.00:00:00"


def test_values_equal_ground_truth(client: SimClient) -> None:
    tenant = client.sim.exchange.tenant
    mbx = next(
        m
        for m in tenant.mailboxes.values()
        if m.state == INACTIVE and m.litigation_hold and m.litigation_hold_duration == 365
    )
    (record,) = client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": mbx.exchange_guid})
    assert record["LitigationHoldDuration"] == "365.00:00:00"
    assert record["LitigationHoldEnabled"] is True
    assert record["WhenSoftDeleted"] == datetime_string(mbx.when_soft_deleted)
    assert record["InPlaceHolds"] == mbx.in_place_holds
    unlimited = next(
        m
        for m in tenant.mailboxes.values()
        if m.state == INACTIVE and m.litigation_hold and m.litigation_hold_duration is None
    )
    (record,) = client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": unlimited.exchange_guid})
    assert record["LitigationHoldDuration"] == "Unlimited"
    (stats,) = client.values(
        "Get-MailboxStatistics", {"Identity": mbx.exchange_guid, "IncludeSoftDeletedRecipients": True}
    )
    assert stats["TotalItemSize"] == size_string(mbx.total_bytes)
    assert SIZE.match(stats["TotalItemSize"]) and SIZE.match(stats["TotalDeletedItemSize"])
    assert stats["ItemCount"] == mbx.item_count
    assert stats["MailboxGuid"] == mbx.exchange_guid


def test_mailbox_locations_format(client: SimClient) -> None:
    tenant = client.sim.exchange.tenant
    mbx = next(m for m in tenant.mailboxes.values() if m.state == INACTIVE and m.aux_archive_shards)
    (record,) = client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": mbx.exchange_guid})
    pattern = re.compile(rf"^1;{GUID};(Primary|MainArchive|AuxArchive|AuxPrimary);eurprd02\.prod\.outlook\.com;{GUID}$")
    assert all(pattern.match(x) for x in record["MailboxLocations"])
    kinds = [x.split(";")[2] for x in record["MailboxLocations"]]
    assert kinds[:2] == ["Primary", "MainArchive"] and kinds.count("AuxArchive") == mbx.aux_archive_shards
    assert record["MailboxLocations"][0].split(";")[1] == mbx.exchange_guid
    assert record["AutoExpandingArchiveEnabled"] is True


def test_default_result_size_truncates_with_the_exact_warning(client: SimClient) -> None:
    values, warnings = client.invoke("Get-Mailbox", {"InactiveMailboxOnly": True})
    assert len(values) == 1000
    assert warnings == [TRUNCATION]
    values, warnings = client.invoke("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"})
    assert len(values) == 1100
    assert warnings == [TRUNCATION]  # on the first page only: another followed it


def test_expired_and_invalid_links(client: SimClient) -> None:
    params = {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"}
    first = client.post("Get-Mailbox", params, page_size=400).json()
    link = first["@odata.nextLink"]
    assert re.fullmatch(re.escape(client.exchange_url) + r"\?\$skiptoken=[A-Za-z0-9_\-]+", link)
    time.sleep(0.4)  # page_link_expiry is 0.3 s in this tenant
    for url in (link, client.exchange_url + "?$skiptoken=bogus"):
        response = client.post("Get-Mailbox", params, url=url, page_size=400)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "BadRequest"
        assert detail(response).endswith("|" + EXPIRED)
        assert detail(response).split("|")[0].startswith("Ex")
        assert error["innererror"]["internalexception"]["message"] == EXPIRED


def test_not_found_error_body(client: SimClient) -> None:
    response = client.post("Get-Mailbox", {"Identity": "nobody@contoso.com"})
    assert response.status_code == 404
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.headers["x-ExceptionType"] == "ManagementObjectNotFoundException"
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details", "innererror"}
    assert error["code"] == "NotFound"
    assert error["message"] == "Error executing cmdlet"
    assert error["details"][0]["code"] == "Context" and error["details"][0]["target"] == ""
    text = f"The operation couldn't be performed because object 'nobody@contoso.com' couldn't be found on '{DC}'."
    assert error["details"][0]["message"] == (
        f"Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|{text}"
    )
    assert error["innererror"]["internalexception"] == {
        "message": text,
        "type": "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        "stacktrace": "",
    }


def test_ambiguous_identity_text(client: SimClient) -> None:
    shared = client.sim.exchange.tenant.special["shared_smtp"]
    response = client.post("Get-Mailbox", {"IncludeInactiveMailbox": True, "Identity": shared})
    assert response.status_code == 400
    assert detail(response).endswith(
        "|Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException|"
        f"The operation couldn't be performed because '{shared}' matches multiple entries."
    )
    # Each scope alone finds one.
    assert len(client.values("Get-Mailbox", {"Identity": shared})) == 1
    assert len(client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": shared})) == 1


def test_unknown_cmdlet_is_403_with_a_nul_body(client: SimClient) -> None:
    response = client.post("Get-NoSuchThing")
    assert response.status_code == 403
    assert response.content and set(response.content) == {0}
    assert response.headers["x-declared-content-encoding"] == "gzip"  # as Exchange declares it (exo-rest.md §4)


def test_throttle_reply(client: SimClient) -> None:
    client.sim.exchange.fail_next("Get-OrganizationConfig", "429")
    response = client.post("Get-OrganizationConfig")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0.5"
    assert "You have reached the maximum number of concurrent requests per tenant" in detail(response)
    assert response.json()["error"]["code"] == "TooManyRequests"


def test_unauthorized_reply_carries_a_bearer_challenge(client: SimClient) -> None:
    response = client.post("Get-OrganizationConfig", headers={"X-AnchorMailbox": f"UPN:{client.upn}"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer client_id="00000002-0000-0ff1-ce00-000000000000"')


def test_parameter_binding_error_text(client: SimClient) -> None:
    response = client.post("Get-Mailbox", {"Bogus": 1})
    assert response.status_code == 400
    assert detail(response).endswith(
        "|System.Management.Automation.ParameterBindingException|"
        "A parameter cannot be found that matches parameter name 'Bogus'."
    )


def test_request_annotations_are_accepted(client: SimClient) -> None:
    """The module's encoding: ``<P>@odata.type`` siblings and ``@odata.type`` inside hashtables."""
    params = {"Identity": "x", "Identity@odata.type": "#String", "InactiveMailboxOnly": True}
    response = client.post("Get-Mailbox", params)
    assert response.status_code == 404


def test_select_trims_properties(client: SimClient) -> None:
    url = client.exchange_url + "?$select=ExchangeGuid,WhenChanged"
    response = client.post("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": 2}, url=url)
    record = response.json()["value"][0]
    assert set(record) == {
        "ExchangeGuid@data.type",
        "ExchangeGuid@odata.type",
        "ExchangeGuid",
        "WhenChanged@data.type",
        "WhenChanged@odata.type",
        "WhenChanged",
    }


def test_state_file_is_plain_json(tmp_path: Path) -> None:
    import json

    with make_sim(tmp_path, mailboxes=10, state_file=tmp_path / "state.json") as s:
        s.exchange.tenant.touch(next(iter(s.exchange.tenant.mailboxes)))
    data = json.loads((tmp_path / "state.json").read_text(encoding="utf-8"))
    assert data["format"] == "imm-simulator-state" and data["mailboxes"] == 10 and len(data["changed"]) == 1
