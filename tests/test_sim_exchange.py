"""The simulated Exchange Online and Security & Compliance, driven with plain httpx over TLS."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imm.simulator import FaultConfig, Simulator
from imm.simulator.formats import datetime_string
from imm.simulator.model import ACTIVE, INACTIVE, SOFT_DELETED, Mailbox
from simclient import ADMIN, SimClient, detail, make_sim

# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """A read-mostly tenant for lookups, paging and auth checks."""
    with make_sim(tmp_path_factory.mktemp("shared"), mailboxes=300) as sim:
        yield sim


@pytest.fixture(scope="module")
def sc(shared: Simulator) -> Iterator[SimClient]:
    client = SimClient(shared)
    yield client
    client.close()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    """A fresh tenant per test for changes."""
    with make_sim(tmp_path, mailboxes=300, restore_seconds=1.0) as s:
        yield s


@pytest.fixture
def client(sim: Simulator) -> Iterator[SimClient]:
    c = SimClient(sim)
    yield c
    c.close()


def inactive(sim: Simulator, **want: Any) -> Mailbox:
    """The first inactive mailbox whose fields match ``want`` (callables are predicates)."""
    for mbx in sim.exchange.tenant.mailboxes.values():
        if mbx.state != INACTIVE:
            continue
        if all(v(getattr(mbx, k)) if callable(v) else getattr(mbx, k) == v for k, v in want.items()):
            return mbx
    raise LookupError(want)


def only_held_by_litigation(sim: Simulator) -> Mailbox:
    tenant = sim.exchange.tenant
    return next(
        m for m in tenant.mailboxes.values() if m.state == INACTIVE and tenant.hold_reasons(m) == ["LitigationHold"]
    )


def recoverable(sim: Simulator) -> Mailbox:
    return inactive(
        sim,
        external_directory_object_id="",
        aux_primary_shards=0,
        auto_expanding_archive=False,
        upn=lambda u: not u.endswith("woodgrovebank.com") and u != sim.exchange.tenant.special["shared_smtp"],
    )


# ----------------------------------------------------------------------------------------------- auth and routing


def test_tokens_are_checked(sc: SimClient, shared: Simulator) -> None:
    anchor = {"X-AnchorMailbox": f"UPN:{ADMIN}"}
    assert sc.post("Get-OrganizationConfig", headers=anchor).status_code == 401
    wrong_audience = {**anchor, "Authorization": f"Bearer {sc.compliance_token}"}
    assert sc.post("Get-OrganizationConfig", headers=wrong_audience).status_code == 401
    tampered = sc.exchange_token[:-4] + ("AAAA" if not sc.exchange_token.endswith("AAAA") else "BBBB")
    response = sc.post("Get-OrganizationConfig", headers={**anchor, "Authorization": f"Bearer {tampered}"})
    assert response.status_code == 401 and "invalid_token" in response.headers["WWW-Authenticate"]
    assert sc.post("Get-OrganizationConfig").status_code == 200


def test_revoked_user_gets_401(sim: Simulator, client: SimClient) -> None:
    assert client.post("Get-OrganizationConfig").status_code == 200
    time.sleep(0.01)
    sim.identity.revoke_user(ADMIN)
    assert client.post("Get-OrganizationConfig").status_code == 401


def test_tenant_segment_accepts_guid_and_domain(sc: SimClient, shared: Simulator) -> None:
    by_domain = sc.exchange_url.replace(shared.config.tenant_id, shared.config.tenant_domain)
    assert sc.post("Get-OrganizationConfig", url=by_domain).status_code == 200
    other = sc.exchange_url.replace(shared.config.tenant_id, "fabrikam.onmicrosoft.com")
    assert sc.post("Get-OrganizationConfig", url=other).status_code == 401


@pytest.mark.parametrize(
    "anchor,status",
    [
        (None, 400),
        ("admin@contoso.onmicrosoft.com", 400),
        ("UPN:admin@contoso.onmicrosoft.com", 200),
        ("SMTP:anyone@contoso.com", 200),
        ("MBX:6f1b7c2e-0000-4000-8000-000000000000@6f1b7c2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f", 200),
        ("APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@6f1b7c2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f", 200),
    ],
)
def test_anchor_mailbox_is_required(sc: SimClient, anchor: str | None, status: int) -> None:
    headers = {"Authorization": f"Bearer {sc.exchange_token}"}
    if anchor:
        headers["X-AnchorMailbox"] = anchor
    response = sc.post("Get-OrganizationConfig", headers=headers)
    assert response.status_code == status
    if status == 400:
        assert "X-AnchorMailbox" in detail(response)


def test_app_only_token_is_served(sc: SimClient, shared: Simulator) -> None:
    token = shared.identity.issue_access_token("imm-automation-app", shared.base_url, app_only=True)
    headers = {
        "Authorization": f"Bearer {token}",
        "X-AnchorMailbox": f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{shared.config.tenant_id}",
    }
    assert sc.post("Get-OrganizationConfig", headers=headers).status_code == 200


def test_malformed_body_is_400(sc: SimClient) -> None:
    response = sc.http.post(sc.exchange_url, content=b"{not json", headers=sc.headers())
    assert response.status_code == 400
    assert "CmdletInput" in detail(response)


def test_v1_invoke_command_is_405(sc: SimClient, shared: Simulator) -> None:
    url = sc.exchange_url.replace("/beta/", "/v1.0/")
    assert sc.post("Get-Mailbox", url=url).status_code == 405


# ----------------------------------------------------------------------------------------------- Get-Mailbox


def test_paging_concatenates_to_the_ground_truth(sc: SimClient, shared: Simulator) -> None:
    params = {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"}
    first = sc.post("Get-Mailbox", params, page_size=70).json()
    assert len(first["value"]) == 70
    values, warnings = sc.invoke("Get-Mailbox", params, page_size=70)
    truth = [m.exchange_guid for m in shared.exchange.tenant.mailboxes.values() if m.state == INACTIVE]
    assert [v["ExchangeGuid"] for v in values] == truth
    # every page with another after it says "more results" (the module filters it there; exo-rest.md [DUMP])
    assert len(warnings) == math.ceil(len(truth) / 70) - 1
    assert all(w.startswith("There are more results available") for w in warnings)
    # A link can be replayed (a retry after a dropped connection) and gives the same page.
    link = first["@odata.nextLink"]
    again = [sc.post("Get-Mailbox", params, url=link, page_size=70).json()["value"] for _ in range(2)]
    assert again[0] == again[1] and again[0][0]["ExchangeGuid"] == truth[70]
    # Another body on the link is refused.
    other = sc.post("Get-Mailbox", {"SoftDeletedMailbox": True}, url=link)
    assert other.status_code == 400


def test_page_size_defaults_to_1000_and_is_capped(tmp_path: Path) -> None:
    with make_sim(tmp_path, mailboxes=1050) as sim:
        client = SimClient(sim)
        params = {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"}
        assert len(client.post("Get-Mailbox", params).json()["value"]) == 1000
        assert len(client.post("Get-Mailbox", params, page_size=5000).json()["value"]) == 1000
        client.close()


def test_result_size_truncates(sc: SimClient) -> None:
    values, warnings = sc.invoke("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": 5})
    assert len(values) == 5 and len(warnings) == 1
    values, warnings = sc.invoke("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": 5}, page_size=2)
    assert len(values) == 5 and len(warnings) == 3  # two pages with a next one, then the truncated last page


def test_scopes(sc: SimClient, shared: Simulator) -> None:
    tenant = shared.exchange.tenant
    by_state = {s: sum(1 for m in tenant.mailboxes.values() if m.state == s) for s in (ACTIVE, INACTIVE, SOFT_DELETED)}
    count = {
        name: len(sc.values("Get-Mailbox", {**params, "ResultSize": "Unlimited"}))
        for name, params in {
            "active": {},
            "inactive": {"InactiveMailboxOnly": True},
            "with": {"IncludeInactiveMailbox": True},
            "soft": {"SoftDeletedMailbox": True},
        }.items()
    }
    assert by_state[INACTIVE] == 300
    assert count == {
        "active": by_state[ACTIVE],
        "inactive": 300,
        "with": by_state[ACTIVE] + 300,
        "soft": 300 + by_state[SOFT_DELETED],
    }
    both = sc.post("Get-Mailbox", {"InactiveMailboxOnly": True, "SoftDeletedMailbox": True})
    assert both.status_code == 400


def test_identity_forms(sc: SimClient, shared: Simulator) -> None:
    tenant = shared.exchange.tenant
    mbx = inactive(shared, upn=lambda u: u.endswith(".com") and "onmicrosoft" not in u)
    forms = [
        mbx.exchange_guid,
        mbx.exchange_guid.upper(),
        "{" + mbx.exchange_guid + "}",
        mbx.guid,
        mbx.distinguished_name(tenant.tenant_domain),
        mbx.primary_smtp.upper(),
        mbx.upn,
        f"{mbx.alias}@{tenant.tenant_domain}",
        mbx.name,
        mbx.alias,
        f"Soft Deleted Objects\\{mbx.name}",
    ]
    for form in forms:
        (record,) = sc.values("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": form})
        assert record["ExchangeGuid"] == mbx.exchange_guid, form
    assert sc.post("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": mbx.legacy_dn}).status_code == 404
    assert sc.post("Get-Mailbox", {"Identity": mbx.exchange_guid}).status_code == 404  # not active


def test_filter_when_changed_finds_changed_mailboxes(sim: Simulator, client: SimClient) -> None:
    tenant = sim.exchange.tenant
    cutoff = max(m.when_changed for m in tenant.mailboxes.values())
    changed = [m for m in tenant.mailboxes.values() if m.state == INACTIVE][5:8]
    for mbx in changed:
        tenant.touch(mbx.exchange_guid)
    since = datetime_string(cutoff, utc_z=True)
    for text in (f"WhenChanged -gt '{since}'", f'WhenChangedUTC -gt "{since}" -and IsInactiveMailbox -eq $true'):
        values = client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": "Unlimited", "Filter": text})
        assert sorted(v["ExchangeGuid"] for v in values) == sorted(m.exchange_guid for m in changed)
    bad = client.post("Get-Mailbox", {"InactiveMailboxOnly": True, "Filter": "WhenChanged -gt"})
    assert bad.status_code == 400 and "Invalid filter syntax" in detail(bad)
    unknown = client.post("Get-Mailbox", {"InactiveMailboxOnly": True, "Filter": "Colour -eq 'blue'"})
    assert unknown.status_code == 400


def test_parameter_errors(sc: SimClient) -> None:
    missing = sc.post("Get-MailboxStatistics", {})
    assert missing.status_code == 400
    assert detail(missing).endswith(
        "Cannot process command because of one or more missing mandatory parameters: Identity."
    )
    wrong = sc.post("Get-Mailbox", {"ResultSize": "lots"})
    assert wrong.status_code == 400 and "ParameterBindingException" in detail(wrong)
    switch = sc.post("Get-Mailbox", {"InactiveMailboxOnly": "yes"})
    assert switch.status_code == 400
    lower = sc.post("Get-Mailbox", {"inactivemailboxonly": True, "resultsize": 1})
    assert lower.status_code == 200


# ----------------------------------------------------------------------------------------------- statistics, recipients


def test_mailbox_statistics(sc: SimClient, shared: Simulator) -> None:
    mbx = inactive(shared, archive=True, auto_expanding_archive=False)
    assert sc.post("Get-MailboxStatistics", {"Identity": mbx.exchange_guid}).status_code == 404
    (primary,) = sc.values(
        "Get-MailboxStatistics", {"Identity": mbx.exchange_guid, "IncludeSoftDeletedRecipients": True}
    )
    assert (primary["ItemCount"], primary["DeletedItemCount"]) == (mbx.item_count, mbx.deleted_item_count)
    (archive,) = sc.values(
        "Get-MailboxStatistics", {"Identity": mbx.exchange_guid, "Archive": True, "IncludeSoftDeletedRecipients": True}
    )
    assert archive["MailboxGuid"] == mbx.archive_guid and archive["ItemCount"] == mbx.archive_item_count
    assert archive["IsArchiveMailbox"] is True
    without = inactive(shared, archive=False)
    response = sc.post(
        "Get-MailboxStatistics",
        {"Identity": without.exchange_guid, "Archive": True, "IncludeSoftDeletedRecipients": True},
    )
    assert response.status_code == 400
    shared_smtp = shared.exchange.tenant.special["shared_smtp"]
    ambiguous = sc.post("Get-MailboxStatistics", {"Identity": shared_smtp, "IncludeSoftDeletedRecipients": True})
    assert ambiguous.status_code == 400 and "matches multiple entries" in detail(ambiguous)


def test_recipients_carry_company_and_department(sc: SimClient, shared: Simulator) -> None:
    in_attributes = inactive(shared, company="", custom=lambda c: "CustomAttribute5" in c)
    (record,) = sc.values(
        "Get-Recipient", {"Identity": in_attributes.exchange_guid, "IncludeSoftDeletedRecipients": True}
    )
    assert record["Company"] == "" and record["Department"] == ""
    assert record["CustomAttribute5"] == in_attributes.custom["CustomAttribute5"]
    assert record["CustomAttribute6"] == in_attributes.custom["CustomAttribute6"]
    directory = inactive(shared, company=lambda c: c != "")
    (record,) = sc.values("Get-Recipient", {"Identity": directory.primary_smtp, "IncludeSoftDeletedRecipients": True})
    assert record["Company"] == directory.company and record["Department"] == directory.department
    assert sc.post("Get-Recipient", {"Identity": directory.exchange_guid}).status_code == 404
    shared_boxes = sc.values(
        "Get-Recipient",
        {"IncludeSoftDeletedRecipients": True, "ResultSize": "Unlimited", "RecipientTypeDetails": ["SharedMailbox"]},
    )
    assert shared_boxes and {r["RecipientTypeDetails"] for r in shared_boxes} == {"SharedMailbox"}


def test_organization_config(sc: SimClient, shared: Simulator) -> None:
    (org,) = sc.values("Get-OrganizationConfig")
    assert org["InPlaceHolds"] == shared.exchange.tenant.org_holds
    suffixes = sorted(h[:3] + h[-2:] for h in org["InPlaceHolds"])
    assert suffixes == ["grp:2", "mbx:1", "mbx:3"]


# ----------------------------------------------------------------------------------------------- hold release


def test_releasing_the_last_hold_starts_the_documented_lifecycle(sim: Simulator, client: SimClient) -> None:
    """identify-a-hold article: a delay hold follows any removal (30 days); delete-an-inactive-mailbox: then
    soft-deleted (IsInactiveMailbox False, WasInactiveMailbox True, InactiveMailboxRetireTime set) and purged once
    InactiveMailboxRetireTime + 183 days has passed. One simulated day lasts lifecycle_day_seconds."""
    tenant = sim.exchange.tenant
    mbx = only_held_by_litigation(sim)
    start = float(math.floor(time.time()))
    tenant.clock = lambda: start
    tenant.lifecycle_day_seconds = 10.0
    before = client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"})
    values, warnings = client.invoke(
        "Set-Mailbox", {"Identity": mbx.exchange_guid, "InactiveMailbox": True, "LitigationHoldEnabled": False}
    )
    assert values == [] and warnings == []
    # Still inactive: the delay hold keeps it, for an unlimited duration while it is on.
    assert (mbx.state, mbx.delay_hold, mbx.delay_hold_since) == (INACTIVE, True, start)
    assert tenant.hold_reasons(mbx) == ["DelayHold"]
    (record,) = client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": mbx.exchange_guid})
    assert record["DelayHoldApplied"] is True and record["LitigationHoldEnabled"] is False
    # HoldTracking dates the removal: ed of the Litigation Hold entry; the delay hold still applies.
    (log,) = client.values(
        "Export-MailboxDiagnosticLogs",
        {"Identity": mbx.exchange_guid, "ComponentName": "HoldTracking", "IncludeInactiveMailboxes": True},
    )
    entries = json.loads(log["MailboxLog"])
    assert [(e["hid"], e["ht"], e["ed"]) for e in entries] == [
        ("LitigationHold", 0, datetime_string(start, utc_z=True)),
        ("DelayHold", 3, "0001-01-01T00:00:00.0000000"),
    ]
    without_switch = client.post(
        "Export-MailboxDiagnosticLogs", {"Identity": mbx.exchange_guid, "ComponentName": "HoldTracking"}
    )
    assert without_switch.status_code == 404  # -IncludeInactiveMailboxes reaches inactive mailboxes
    # 29 days later: still on delay hold. 30 days: soft-deleted, retired at that moment.
    tenant.clock = lambda: start + 29 * 10
    assert client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": mbx.exchange_guid})
    tenant.clock = lambda: start + 30 * 10 + 1
    after = client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"})
    assert len(after) == len(before) - 1
    assert mbx.state == SOFT_DELETED and mbx.was_inactive and mbx.retire_time == start + 300
    assert client.post("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": mbx.exchange_guid}).status_code == 404
    (record,) = client.values("Get-Mailbox", {"SoftDeletedMailbox": True, "Identity": mbx.exchange_guid})
    assert record["IsInactiveMailbox"] is False and record["WasInactiveMailbox"] is True
    assert record["InactiveMailboxRetireTime"] == datetime_string(start + 300)
    assert record["DelayHoldApplied"] is False
    listed = client.values(
        "Get-Mailbox", {"SoftDeletedMailbox": True, "Filter": "IsInactiveMailbox -eq $false", "ResultSize": "Unlimited"}
    )
    assert mbx.exchange_guid in {r["ExchangeGuid"] for r in listed}
    assert all(r["IsInactiveMailbox"] is False for r in listed)
    assert tenant.hold_reasons(mbx) == []
    # Set-Mailbox -InactiveMailbox no longer finds it.
    again = client.post(
        "Set-Mailbox", {"Identity": mbx.exchange_guid, "InactiveMailbox": True, "LitigationHoldEnabled": False}
    )
    assert again.status_code == 404
    # MailboxLifeCycle purges it once InactiveMailboxRetireTime + 183 days has passed.
    tenant.clock = lambda: start + 300 + 182 * 10
    assert client.values("Get-Mailbox", {"SoftDeletedMailbox": True, "Identity": mbx.exchange_guid})
    tenant.clock = lambda: start + 300 + 183 * 10
    gone = client.post("Get-Mailbox", {"SoftDeletedMailbox": True, "Identity": mbx.exchange_guid})
    assert gone.status_code == 404 and mbx.exchange_guid not in tenant.mailboxes


def test_releasing_one_of_several_holds_also_applies_a_delay_hold(sim: Simulator, client: SimClient) -> None:
    """ "After any type of hold is removed from a mailbox, a delay hold is applied" (identify-a-hold article)."""
    tenant = sim.exchange.tenant
    mbx = inactive(sim, litigation_hold=True, delay_hold=False, in_place_holds=lambda h: bool(h))
    client.invoke(
        "Set-Mailbox", {"Identity": mbx.exchange_guid, "InactiveMailbox": True, "LitigationHoldEnabled": False}
    )
    assert mbx.state == INACTIVE and mbx.delay_hold is True
    tenant.clock = lambda: time.time() + 31 * 86400
    assert client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": mbx.exchange_guid})
    assert mbx.delay_hold is False and mbx.state == INACTIVE  # its other holds keep it


def test_hold_switches(sim: Simulator, client: SimClient) -> None:
    tenant = sim.exchange.tenant
    org_all = tenant.special["org_all_policy"]
    mbx = inactive(sim, litigation_hold=True, in_place_holds=[])
    client.invoke(
        "Set-Mailbox", {"Identity": mbx.exchange_guid, "InactiveMailbox": True, "LitigationHoldDuration": 730}
    )
    assert mbx.litigation_hold_duration == 730
    (record,) = client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": mbx.exchange_guid})
    assert record["LitigationHoldDuration"] == "730.00:00:00"
    client.invoke(
        "Set-Mailbox", {"Identity": mbx.exchange_guid, "InactiveMailbox": True, "LitigationHoldDuration": "Unlimited"}
    )
    assert mbx.litigation_hold_duration is None
    # Excluding from the org-wide policy and clearing the other holds releases it.
    _, warnings = client.invoke(
        "Set-Mailbox",
        {
            "Identity": mbx.exchange_guid,
            "InactiveMailbox": True,
            "ExcludeFromOrgHolds": [org_all],
            "RemoveDelayHoldApplied": True,
            "RemoveDelayReleaseHoldApplied": True,
            "RemoveComplianceTagHoldApplied": True,
        },
    )
    assert f"-mbx{org_all.replace('-', '')}" in mbx.in_place_holds
    assert mbx.state == INACTIVE  # Litigation Hold still there
    client.invoke(
        "Set-Mailbox", {"Identity": mbx.exchange_guid, "InactiveMailbox": True, "LitigationHoldEnabled": False}
    )
    assert mbx.state == INACTIVE and tenant.hold_reasons(mbx) == ["DelayHold"]  # a delay hold follows the removal
    client.invoke(
        "Set-Mailbox", {"Identity": mbx.exchange_guid, "InactiveMailbox": True, "RemoveDelayHoldApplied": True}
    )
    assert mbx.state == SOFT_DELETED
    unknown = client.post(
        "Set-Mailbox",
        {"Identity": inactive(sim).exchange_guid, "InactiveMailbox": True, "ExcludeFromOrgHolds": "0" * 32},
    )
    assert unknown.status_code == 400


def test_no_change_warning(sim: Simulator, client: SimClient) -> None:
    mbx = inactive(sim, delay_hold=False)
    _, warnings = client.invoke(
        "Set-Mailbox", {"Identity": mbx.exchange_guid, "InactiveMailbox": True, "RemoveDelayHoldApplied": True}
    )
    assert warnings == [
        f"The command completed successfully but no settings of '{mbx.exchange_guid}' have been modified."
    ]


def test_orphaned_legacy_hold_and_exclude_from_all_holds(sim: Simulator, client: SimClient) -> None:
    tenant = sim.exchange.tenant
    legacy = inactive(sim, in_place_holds=lambda h: any(len(x) == 32 or x.startswith("cld") for x in h))
    entry = next(x for x in legacy.in_place_holds if len(x) == 32 or x.startswith("cld"))
    client.invoke(
        "Set-Mailbox", {"Identity": legacy.exchange_guid, "InactiveMailbox": True, "RemoveOrphanedHolds": [entry]}
    )
    assert entry not in legacy.in_place_holds
    policy_tagged = inactive(sim, in_place_holds=lambda h: any(x.startswith("mbx") for x in h))
    tag = next(x for x in policy_tagged.in_place_holds if x.startswith("mbx"))
    refused = client.post(
        "Set-Mailbox", {"Identity": policy_tagged.exchange_guid, "InactiveMailbox": True, "RemoveOrphanedHolds": [tag]}
    )
    assert refused.status_code == 400 and "isn't orphaned" in detail(refused)
    client.invoke(
        "Set-Mailbox", {"Identity": policy_tagged.exchange_guid, "InactiveMailbox": True, "ExcludeFromAllHolds": True}
    )
    for hold in policy_tagged.in_place_holds:
        if hold.startswith(("mbx", "skp")):
            policy = tenant.policy_by_hex(hold[3:35])
            assert policy is not None and policy.restrictive


def test_set_mailbox_parameter_sets(sim: Simulator, client: SimClient) -> None:
    active = sim.exchange.tenant.actives()[0]
    response = client.post("Set-Mailbox", {"Identity": active.exchange_guid, "RemoveDelayHoldApplied": True})
    assert response.status_code == 400
    mbx = inactive(sim)
    response = client.post(
        "Set-Mailbox",
        {"Identity": mbx.exchange_guid, "InactiveMailbox": True, "EmailAddresses": {"Add": ["X500:/o=x"]}},
    )
    assert response.status_code == 400


# ----------------------------------------------------------------------------------------------- recover


def test_recover_consumes_the_inactive_mailbox(sim: Simulator, client: SimClient) -> None:
    tenant = sim.exchange.tenant
    locked = {p.hex for p in tenant.policies.values() if p.restrictive}
    mbx = inactive(
        sim,
        external_directory_object_id="",
        aux_primary_shards=0,
        auto_expanding_archive=False,
        aux_archive_shards=0,
        in_place_holds=lambda h: any(
            x.startswith("mbx") and x.endswith((":2", ":3")) and x[3:35] not in locked for x in h
        ),
    )
    locked_tags = [h for h in mbx.in_place_holds if h[3:35] in locked]
    old_legacy = mbx.legacy_dn
    password = sim.exchange.encrypt_password("Sup3r-Secret-Passw0rd!")
    values, warnings = client.invoke(
        "New-Mailbox",
        {
            "InactiveMailbox": mbx.exchange_guid,
            "Name": "Recovered One",
            "DisplayName": "Recovered One",
            "MicrosoftOnlineServicesID": "recovered.one@contoso.com",
            "Password": password,
            "ResetPasswordOnNextLogon": True,
            "FirstName": "Recovered",
            "LastName": "One",
        },
    )
    (record,) = values
    assert record["IsInactiveMailbox"] is False and record["RecipientTypeDetails"] == mbx.recipient_type_details
    assert record["UserPrincipalName"] == record["PrimarySmtpAddress"] == "recovered.one@contoso.com"
    assert "OU=Soft Deleted Objects" not in record["DistinguishedName"]
    assert record["LitigationHoldEnabled"] is True  # unlocked policies replaced by Litigation Hold
    assert record["RetainDeletedItemsFor"] == "30.00:00:00" and record["RetentionHoldEnabled"] is True
    assert [h for h in record["InPlaceHolds"] if h.startswith(("mbx", "skp"))] == locked_tags
    assert not any(len(h) == 32 or h.startswith("cld") for h in record["InPlaceHolds"])
    assert f"X500:{old_legacy}" in record["EmailAddresses"]
    assert len(warnings) == 1 and "30 days" in warnings[0] and "license" in warnings[0]
    assert mbx.state == ACTIVE
    assert client.post("Get-Mailbox", {"InactiveMailboxOnly": True, "Identity": mbx.exchange_guid}).status_code == 404
    (again,) = client.values("Get-Mailbox", {"Identity": "recovered.one@contoso.com"})
    assert again["ExchangeGuid"] == mbx.exchange_guid
    # The password never reaches the request log.
    logged = json.dumps(list(sim.exchange.request_log))
    assert password not in logged and "Sup3r-Secret" not in logged and '"Password": "***"' in logged


def test_recover_blockers(sim: Simulator, client: SimClient) -> None:
    tenant = sim.exchange.tenant
    password = sim.exchange.encrypt_password("Another-Passw0rd!")

    def recover(identity: str, name: str = "New Name", upn: str | None = "new.name@contoso.com") -> httpx.Response:
        params = {"InactiveMailbox": identity, "Name": name, "Password": password}
        if upn:
            params["MicrosoftOnlineServicesID"] = upn
        return client.post("New-Mailbox", params)

    shards = inactive(sim, aux_primary_shards=lambda n: n > 0, external_directory_object_id="")
    response = recover(shards.exchange_guid)
    assert response.status_code == 400
    assert detail(response).endswith(
        "cannot be recovered because the mailbox has additional shards that need recovery."
    )
    expanding = inactive(sim, auto_expanding_archive=True, external_directory_object_id="", aux_primary_shards=0)
    assert "auto-expanding archive" in detail(recover(expanding.exchange_guid))
    recent = inactive(sim, external_directory_object_id=lambda v: v != "")
    assert "Restore the deleted user account instead" in detail(recover(recent.exchange_guid))
    target = recoverable(sim)
    active = next(a for a in tenant.actives() if not a.upn.endswith("woodgrovebank.com"))
    name_taken = recover(target.exchange_guid, name=active.name)
    assert detail(name_taken).endswith(f'The name "{active.name}" is already being used. Please try another name.')
    upn_taken = recover(target.exchange_guid, upn=active.upn)
    assert upn_taken.status_code == 400 and "is used by another recipient object" in detail(upn_taken)
    federated = recover(target.exchange_guid, upn="new.name@woodgrovebank.com")
    assert detail(federated).endswith(
        "The parameters passed to the cmdlet represent a managed account, which doesn't match the namespace state, "
        "which is federated."
    )
    shared_smtp = tenant.special["shared_smtp"]
    ambiguous = recover(shared_smtp)
    assert ambiguous.status_code == 400 and "matches multiple entries" in detail(ambiguous)
    bad_password = client.post(
        "New-Mailbox",
        {
            "InactiveMailbox": target.exchange_guid,
            "Name": "X",
            "MicrosoftOnlineServicesID": "x.y@contoso.com",
            "Password": "bm90IGVuY3J5cHRlZA==",
        },
    )
    assert bad_password.status_code == 400 and "password" in detail(bad_password).lower()
    no_password = client.post(
        "New-Mailbox",
        {"InactiveMailbox": target.exchange_guid, "Name": "X", "MicrosoftOnlineServicesID": "x.y@contoso.com"},
    )
    assert detail(no_password).endswith("missing mandatory parameters: Password.")
    assert target.state == INACTIVE  # nothing happened to it


def test_reset_after_commit_changes_then_drops_the_connection(sim: Simulator, client: SimClient) -> None:
    mbx = recoverable(sim)
    sim.exchange.fail_next("New-Mailbox", "reset_after_commit")
    with pytest.raises(httpx.TransportError):
        client.post(
            "New-Mailbox",
            {
                "InactiveMailbox": mbx.exchange_guid,
                "Name": "Ambiguous Outcome",
                "MicrosoftOnlineServicesID": "ambiguous.outcome@contoso.com",
                "Password": sim.exchange.encrypt_password("Passw0rd-Long"),
            },
        )
    assert mbx.state == ACTIVE and mbx.upn == "ambiguous.outcome@contoso.com"
    # Reconciling finds the new mailbox; a blind retry is refused.
    assert client.values("Get-Mailbox", {"Identity": "ambiguous.outcome@contoso.com"})[0]["Name"] == "Ambiguous Outcome"
    retry = client.post("New-Mailbox", {"InactiveMailbox": mbx.exchange_guid, "Name": "Ambiguous Outcome"})
    assert retry.status_code in (400, 404)


# ----------------------------------------------------------------------------------------------- restore


def _add_x500(client: SimClient, target: str, legacy_dn: str) -> None:
    params = {
        "Identity": target,
        "EmailAddresses": {"@odata.type": "#Exchange.GenericHashTable", "Add": [f"X500:{legacy_dn}"]},
    }
    client.invoke("Set-Mailbox", params)


def test_restore_request_lifecycle(sim: Simulator, client: SimClient) -> None:
    tenant = sim.exchange.tenant
    source = inactive(sim, auto_expanding_archive=False, total_bytes=lambda b: b < 5 * 1024**3)
    target = tenant.mailbox(tenant.special["restore_target"])
    blocked = client.post(
        "New-MailboxRestoreRequest", {"SourceMailbox": source.exchange_guid, "TargetMailbox": target.primary_smtp}
    )
    assert blocked.status_code == 400 and "AllowLegacyDNMismatch" in detail(blocked)
    _add_x500(client, target.primary_smtp, source.legacy_dn)
    assert f"X500:{source.legacy_dn}" in target.extra_addresses
    before_items = target.item_count
    (created,), _ = client.invoke(
        "New-MailboxRestoreRequest",
        {
            "SourceMailbox": source.exchange_guid,
            "TargetMailbox": target.primary_smtp,
            "TargetRootFolder": "Inactive Mailbox",
        },
    )
    assert created["Status"] == "Queued" and created["Name"] == "MailboxRestore"
    identity = f"{target.alias}\\MailboxRestore"
    assert created["Identity"] == identity
    seen: list[str] = [created["Status"]]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        (stats,) = client.values("Get-MailboxRestoreRequestStatistics", {"Identity": identity})
        if not seen or seen[-1] != stats["Status"]:
            seen.append(stats["Status"])
        if stats["Status"] == "Completed":
            break
        time.sleep(0.05)
    assert seen[0] == "Queued" and seen[-1] == "Completed" and "InProgress" in seen
    assert stats["PercentComplete"] == 100 and stats["BytesTransferred"] == stats["EstimatedTransferSize"]
    assert stats["TargetRootFolder"] == "Inactive Mailbox" and stats["StatusDetail"] == "Completed"
    assert target.item_count == before_items + source.item_count
    (listed,) = client.values("Get-MailboxRestoreRequest", {"Status": "Completed"})
    assert listed["Identity"] == identity
    confirm = client.invoke("Remove-MailboxRestoreRequest", {"Identity": identity, "Confirm": True})
    assert confirm == ([], [])
    assert client.post("Remove-MailboxRestoreRequest", {"Identity": identity, "Confirm": True}).json()[
        "@adminapi.confirmationmessage"
    ]
    assert len(tenant.restore_requests) == 1
    client.invoke("Remove-MailboxRestoreRequest", {"Identity": identity, "Confirm": False})
    assert client.post("Get-MailboxRestoreRequest", {"Identity": identity}).status_code == 404


def test_restore_blockers_and_name_limit(sim: Simulator, client: SimClient) -> None:
    tenant = sim.exchange.tenant
    source = inactive(sim, auto_expanding_archive=False, total_bytes=lambda b: 200 * 1024**2 < b < 1024**3)
    target = tenant.mailbox(tenant.special["restore_target"])
    missing = client.post(
        "New-MailboxRestoreRequest",
        {"SourceMailbox": source.exchange_guid, "TargetMailbox": "nobody@contoso.com", "AllowLegacyDNMismatch": True},
    )
    assert missing.status_code == 404
    expanding = inactive(sim, auto_expanding_archive=True)
    response = client.post(
        "New-MailboxRestoreRequest",
        {"SourceMailbox": expanding.exchange_guid, "TargetMailbox": target.primary_smtp, "AllowLegacyDNMismatch": True},
    )
    assert response.status_code == 400 and "auto-expanding archive" in detail(response)
    full = client.post(
        "New-MailboxRestoreRequest",
        {
            "SourceMailbox": source.exchange_guid,
            "TargetMailbox": tenant.special["full_target"],
            "AllowLegacyDNMismatch": True,
        },
    )
    assert full.status_code == 400 and "enough space" in detail(full)
    names = []
    for _ in range(10):
        (record,), warnings = client.invoke(
            "New-MailboxRestoreRequest",
            {
                "SourceMailbox": source.exchange_guid,
                "TargetMailbox": target.primary_smtp,
                "AllowLegacyDNMismatch": True,
            },
        )
        names.append(record["Name"])
        assert warnings == ["The AllowLegacyDNMismatch parameter is being deprecated in the cloud."]
    assert names == ["MailboxRestore"] + [f"MailboxRestore{i}" for i in range(1, 10)]
    eleventh = client.post(
        "New-MailboxRestoreRequest",
        {"SourceMailbox": source.exchange_guid, "TargetMailbox": target.primary_smtp, "AllowLegacyDNMismatch": True},
    )
    assert eleventh.status_code == 400
    assert "There isn't a default name available for a new request owned by mailbox" in detail(eleventh)


def test_x500_proxy_conflict(sim: Simulator, client: SimClient) -> None:
    a, b = sim.exchange.tenant.actives()[4:6]
    response = client.post(
        "Set-Mailbox", {"Identity": a.exchange_guid, "EmailAddresses": {"Add": [f"X500:{b.legacy_dn}"]}}
    )
    assert response.status_code == 400 and "is already being used by the proxy addresses" in detail(response)
    client.invoke("Set-Mailbox", {"Identity": a.exchange_guid, "EmailAddresses": {"Add": ["X500:/o=Old/cn=x"]}})
    client.invoke("Set-Mailbox", {"Identity": a.exchange_guid, "EmailAddresses": {"Remove": ["x500:/o=old/cn=X"]}})
    assert a.extra_addresses == []


# ----------------------------------------------------------------------------------------------- compliance


def test_compliance_redirect_and_policies(sim: Simulator, client: SimClient) -> None:
    tenant = sim.exchange.tenant
    first = client.http.post(
        client.compliance_start_url,
        json=client.envelope("Get-RetentionCompliancePolicy"),
        headers=client.headers(compliance=True),
    )
    assert first.status_code == 302
    assert first.headers["Location"] == (
        f"{sim.base_url}/compliance/eur02/adminapi/beta/{sim.config.tenant_id}/InvokeCommand"
    )
    policies = client.values("Get-RetentionCompliancePolicy", {"DistributionDetail": True}, compliance=True)
    by_name = {p["Name"]: p for p in policies}
    assert by_name["Legal - Finance Records 10y"]["RestrictiveRetention"] is True
    assert by_name["All mailboxes - 7 years"]["ExchangeLocation"] == ["All"]
    hr = next(p for p in tenant.policies.values() if p.name.startswith("HR Records"))
    members = sorted(m.primary_smtp for m in tenant.policy_members(hr))
    assert sorted(by_name[hr.name]["ExchangeLocation"]) == members and members
    rules = client.values("Get-RetentionComplianceRule", {"Policy": hr.guid}, compliance=True)
    assert [(r["Policy"], r["RetentionDuration"], r["RetentionComplianceAction"]) for r in rules] == [
        (hr.guid, 1825, "KeepAndDelete")
    ]
    execs = next(p for p in tenant.policies.values() if p.name.startswith("Executives"))
    (rule,) = client.values("Get-RetentionComplianceRule", {"Policy": execs.name}, compliance=True)
    assert rule["RetentionDuration"] == "Unlimited" and rule["RetentionComplianceAction"] == "Keep"
    # An Exchange token is refused on the compliance endpoint, and Exchange cmdlets are unknown there.
    wrong = client.post("Get-CaseHoldPolicy", compliance=True, headers=client.headers())
    assert wrong.status_code == 401
    assert client.post("Get-Mailbox", compliance=True).status_code == 403


def test_policy_location_changes(sim: Simulator, client: SimClient) -> None:
    tenant = sim.exchange.tenant
    hr = next(p for p in tenant.policies.values() if p.name.startswith("HR Records"))
    member = tenant.policy_members(hr)[0]
    client.invoke(
        "Set-RetentionCompliancePolicy",
        {"Identity": hr.name, "RemoveExchangeLocation": [member.primary_smtp]},
        compliance=True,
    )
    assert not any(h.lower().startswith(f"mbx{hr.hex}") for h in member.in_place_holds)
    legal = next(p for p in tenant.policies.values() if p.restrictive)
    legal_member = tenant.policy_members(legal)[0]
    refused = client.post(
        "Set-RetentionCompliancePolicy",
        {"Identity": legal.guid, "RemoveExchangeLocation": [legal_member.exchange_guid]},
        compliance=True,
    )
    assert refused.status_code == 400 and "Preservation Lock" in detail(refused)
    org_all = tenant.policies[tenant.special["org_all_policy"]]
    target = only_held_by_litigation(sim)
    held_by_org = inactive(
        sim,
        in_place_holds=[],
        litigation_hold=False,
        compliance_tag_hold=False,
        delay_hold=False,
        delay_release_hold=False,
    )
    client.invoke(
        "Set-RetentionCompliancePolicy",
        {"Identity": org_all.guid, "AddExchangeLocationException": [held_by_org.primary_smtp]},
        compliance=True,
    )
    assert held_by_org.primary_smtp in org_all.exceptions
    # The exception removes its last hold: a delay hold follows (identify-a-hold article).
    assert held_by_org.state == INACTIVE and held_by_org.delay_hold and target.state == INACTIVE
    (shown,) = client.values("Get-RetentionCompliancePolicy", {"Identity": org_all.guid}, compliance=True)
    assert shown["ExchangeLocationException"] == [held_by_org.primary_smtp]


def test_case_hold_policies(sim: Simulator, client: SimClient) -> None:
    tenant = sim.exchange.tenant
    case = next(p for p in tenant.policies.values() if p.kind == "casehold" and tenant.policy_members(p))
    (shown,) = client.values("Get-CaseHoldPolicy", {"Identity": case.guid, "DistributionDetail": True}, compliance=True)
    assert shown["CaseId"] == case.case_id
    member = tenant.policy_members(case)[0]
    assert member.primary_smtp in shown["ExchangeLocation"]
    client.invoke(
        "Set-CaseHoldPolicy",
        {"Identity": case.name, "RemoveExchangeLocation": [f".{member.primary_smtp}"]},
        compliance=True,
    )
    assert f"UniH{case.guid}" not in member.in_place_holds
    assert len(client.values("Get-CaseHoldPolicy", compliance=True)) == 3


def test_compliance_role_knob(sim: Simulator, client: SimClient) -> None:
    officer = "officer@contoso.onmicrosoft.com"
    sim.identity.add_user(officer)
    sim.exchange.deny_role(officer, "compliance")
    other = SimClient(sim, upn=officer)
    response = other.post("Get-RetentionCompliancePolicy", compliance=True)
    assert response.status_code == 403 and set(response.content) == {0}
    assert other.post("Get-OrganizationConfig").status_code == 200
    sim.exchange.grant_role(officer, "compliance")
    assert other.post("Get-RetentionCompliancePolicy", compliance=True).status_code == 200
    other.close()


# ----------------------------------------------------------------------------------------------- budget and faults


def test_concurrency_budget_gives_429(tmp_path: Path) -> None:
    with make_sim(tmp_path, mailboxes=20, concurrency_budget=2, latency_ms=600, retry_after_seconds=0.25) as sim:
        client = SimClient(sim)
        statuses: list[int] = []
        retry_after: list[str] = []

        def call() -> None:
            response = client.post("Get-OrganizationConfig")
            statuses.append(response.status_code)
            if response.status_code == 429:
                retry_after.append(response.headers["Retry-After"])

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses.count(200) >= 2 and statuses.count(429) >= 1
        assert set(statuses) <= {200, 429} and set(retry_after) == {"0.25"}
        assert sim.exchange.max_in_flight <= 2
        assert sim.exchange.in_flight == 0
        client.close()


def test_injected_faults(sim: Simulator, client: SimClient) -> None:
    exchange = sim.exchange
    exchange.fail_next("Get-OrganizationConfig", "503")
    exchange.fail_next("Get-OrganizationConfig", "504")
    exchange.fail_next("*", "401")
    first = client.post("Get-OrganizationConfig")
    assert first.status_code == 503 and "StorageTransientException" in detail(first)
    second = client.post("Get-OrganizationConfig")
    assert second.status_code == 504 and "DCOverloadedException" in detail(second)
    assert client.post("Get-Recipient", {"ResultSize": 1}).status_code == 401
    exchange.fail_next("Get-OrganizationConfig", "reset", count=2)
    for _ in range(2):
        with pytest.raises(httpx.TransportError):
            client.post("Get-OrganizationConfig")
    assert client.post("Get-OrganizationConfig").status_code == 200
    with pytest.raises(ValueError):
        exchange.fail_next("Get-Mailbox", "explode")
    assert exchange.counters["Get-OrganizationConfig"] == 5
    assert exchange.executed["Get-OrganizationConfig"] == 1
    faults = [e["fault"] for e in exchange.request_log if e["cmdlet"] == "Get-OrganizationConfig"]
    assert faults == ["503", "504", "reset", "reset", None]
    assert [e["status"] for e in exchange.request_log][-1] == 200


def test_random_faults_are_seeded(tmp_path: Path) -> None:
    def run(folder: str) -> list[int | str]:
        faults = FaultConfig(error_5xx_rate=0.3, reset_rate=0.2, throttle_rate=0.1)
        with make_sim(tmp_path / folder, mailboxes=10, seed=5, faults=faults) as sim:
            client = SimClient(sim)
            out: list[int | str] = []
            for _ in range(25):
                try:
                    out.append(client.post("Get-OrganizationConfig").status_code)
                except httpx.TransportError:
                    out.append("reset")
            client.close()
            return out

    first, second = run("a"), run("b")
    assert first == second
    assert {200, "reset"} <= set(first) and set(first) & {503, 504} and 429 in first


# ----------------------------------------------------------------------------------------------- state file


def test_state_file_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "tenant.json"
    with make_sim(tmp_path / "one", mailboxes=120, seed=3, state_file=state, restore_seconds=100) as sim:
        client = SimClient(sim)
        tenant = sim.exchange.tenant
        released = only_held_by_litigation(sim)
        client.invoke(
            "Set-Mailbox", {"Identity": released.exchange_guid, "InactiveMailbox": True, "LitigationHoldEnabled": False}
        )
        recovered = recoverable(sim)
        client.invoke(
            "New-Mailbox",
            {
                "InactiveMailbox": recovered.exchange_guid,
                "Name": "Back Again",
                "MicrosoftOnlineServicesID": "back.again@contoso.com",
                "Password": sim.exchange.encrypt_password("Passw0rd-Long"),
            },
        )
        others = [m for m in tenant.mailboxes.values() if m.state == INACTIVE and not m.auto_expanding_archive]
        source, excepted, gone = others[0], others[1], others[2].exchange_guid
        client.invoke(
            "New-MailboxRestoreRequest",
            {
                "SourceMailbox": source.exchange_guid,
                "TargetMailbox": tenant.special["restore_target"],
                "AllowLegacyDNMismatch": True,
            },
        )
        org_all = tenant.policies[tenant.special["org_all_policy"]]
        client.invoke(
            "Set-RetentionCompliancePolicy",
            {"Identity": org_all.guid, "AddExchangeLocationException": [excepted.exchange_guid]},
            compliance=True,
        )
        tenant.remove_mailbox(gone)
        expected = {g: m.to_state() for g, m in tenant.mailboxes.items()}
        expected_policies = {g: p.to_state() for g, p in tenant.policies.items()}
        expected_requests = [r.to_state() for r in tenant.restore_requests]
        client.close()
    # Restart: the state file wins over the (different) seed and count given.
    with make_sim(tmp_path / "two", mailboxes=999, seed=4, state_file=state) as again:
        tenant = again.exchange.tenant
        assert (tenant.seed, tenant.count) == (3, 120)
        assert {g: m.to_state() for g, m in tenant.mailboxes.items()} == expected
        assert {g: p.to_state() for g, p in tenant.policies.items()} == expected_policies
        assert [r.to_state() for r in tenant.restore_requests] == expected_requests
        client = SimClient(again)
        (record,) = client.values("Get-Mailbox", {"Identity": "back.again@contoso.com"})
        assert record["Name"] == "Back Again"
        (held,) = client.values("Get-Mailbox", {"SoftDeletedMailbox": True, "Identity": released.exchange_guid})
        assert held["DelayHoldApplied"] is True  # the delay hold after the release survives a restart …
        assert released.exchange_guid in tenant._lifecycle  # … and still ends on time
        assert client.post("Get-Mailbox", {"SoftDeletedMailbox": True, "Identity": gone}).status_code == 404
        client.close()


def test_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "broken.json"
    state.write_text("{nope", encoding="utf-8")
    with pytest.raises(ValueError, match="not a readable simulator state file"):
        make_sim(tmp_path, mailboxes=10, state_file=state)


# ----------------------------------------------------------------------------------------------- imm simulator serve


def _serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], list[str]]:
    env = {**os.environ, "IMM_USER_PATH": str(tmp_path / "home")}
    env.pop("IMM_RAISE_ERRORS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "imm", "simulator", "serve", "--mailboxes", "15", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Press Ctrl+C"):
            return proc, lines
    proc.kill()
    raise AssertionError(f"serve did not start: {lines} {proc.stderr.read() if proc.stderr else ''}")


def test_serve_command_writes_a_profile_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "served.json"
    proc, lines = _serve(tmp_path, "--write-profile", "simx", "--state-file", str(state), "--seed", "9")
    try:
        url = lines[0].rsplit(" ", 1)[1]
        assert url.startswith("https://127.0.0.1:")
        ca = next(line.split(":", 1)[1].strip() for line in lines if line.strip().startswith("CA bundle:"))
        config = (tmp_path / "home" / "config" / "config.toml").read_text(encoding="utf-8")
        assert "[profiles.simx]" in config and f'exchange_url = "{url}"' in config
        assert "password_public_key" not in config  # clients take the key from the module file
        import ssl

        ctx = ssl.create_default_context(cafile=ca)
        response = httpx.post(
            f"{url}/adminapi/beta/contoso.onmicrosoft.com/InvokeCommand", json={}, verify=ctx, trust_env=False
        )
        assert response.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in err and "Simulator stopped" in err
    assert json.loads(state.read_text(encoding="utf-8"))["seed"] == 9


def test_serve_takes_a_lifecycle_time_scale(tmp_path: Path) -> None:
    """Issue 12: the delay hold (30 days, identify-a-hold article) and the purge (183 days, delete-an-inactive-
    mailbox) pass at a chosen speed so a demo or test need not wait."""
    proc, lines = _serve(tmp_path, "--lifecycle-day-seconds", "2")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "  lifecycle:   1 day = 2 s (delay hold 30 days, purge 183 days after)" in lines
    with make_sim(tmp_path / "direct", mailboxes=10, lifecycle_day_seconds=0.5) as sim:
        assert sim.exchange.tenant.lifecycle_day_seconds == 0.5


def test_serve_stops_on_sigterm_with_exit_0(tmp_path: Path) -> None:
    proc, _ = _serve(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err


def test_serve_rejects_a_bad_state_file(tmp_path: Path) -> None:
    from conftest import run_imm

    bad = tmp_path / "bad.json"
    bad.write_text("[]", encoding="utf-8")
    result = run_imm(
        "simulator",
        "serve",
        "--mailboxes",
        "10",
        "--state-file",
        str(bad),
        env={"IMM_USER_PATH": str(tmp_path / "home")},
    )
    assert result.exit_code == 2
    assert "not a simulator state file" in result.stderr and "Traceback" not in result.stderr
    wrong = run_imm("simulator", "serve", "--mailboxes", "-5")
    assert wrong.exit_code == 2


def test_generation_time_is_whole_days() -> None:
    from imm.simulator.tenant import Tenant

    tenant = Tenant("t", "contoso.onmicrosoft.com", count=10)
    assert tenant.generated_at % 86400 == 0 and tenant.generated_at <= time.time()
    assert all(m.when_changed == math.floor(m.when_changed) for m in tenant.mailboxes.values())
