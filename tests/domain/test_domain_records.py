"""imm.domain.records: cached mailboxes from hand-written Exchange records, and the HR mapping CSV.

The records below are written from domain.md §3 and exo-rest.md §4 (property names, annotations, value formats),
independently of the simulator.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imm.config import OrgMapping
from imm.domain.records import load_org_mapping_csv, mailbox_from_records, mapping_key
from imm.errors import ExitStatus, InputError

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
GUID = "5C8B9F0E-3D2A-4B1C-9E8F-7A6B5C4D3E2F"
IDENTITY = GUID.lower()
DB = "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"

MAILBOX: dict[str, Any] = {
    "Name": "Anna Berg",
    "DisplayName": "Anna Berg",
    "Alias": "anna.berg",
    "PrimarySmtpAddress": "anna.berg@contoso.com",
    "UserPrincipalName": "anna.berg@contoso.com",
    "RecipientTypeDetails": "UserMailbox",
    "ExchangeGuid@data.type": "System.Guid",
    "ExchangeGuid@odata.type": "#Guid",
    "ExchangeGuid": GUID,
    "Guid@data.type": "System.Guid",
    "Guid@odata.type": "#Guid",
    "Guid": "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e",
    "DistinguishedName": "CN=Anna Berg5c8b,OU=Soft Deleted Objects,OU=contoso.onmicrosoft.com,"
    "OU=Microsoft Exchange Hosted Organizations,DC=EURPR01A001,DC=prod,DC=outlook,DC=com",
    "LegacyExchangeDN": "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/"
    "cn=5c8b9f0e3d2a4b1c9e8f7a6b5c4d3e2f-Anna Berg",
    "IsInactiveMailbox": True,
    "WasInactiveMailbox": False,
    "WhenSoftDeleted@data.type": "System.DateTime",
    "WhenSoftDeleted@odata.type": "#DateTimeOffset",
    "WhenSoftDeleted": "2022-09-21T08:07:47.0000000+00:00",
    "WhenChanged": "2026-11-01T10:00:00.0000000+00:00",
    "WhenChangedUTC": "2026-11-01T10:00:00Z",
    "InactiveMailboxRetireTime": None,
    "ExternalDirectoryObjectId": "",
    "LitigationHoldEnabled": True,
    "LitigationHoldDate": "2019-04-01T09:30:00.0000000+00:00",
    "LitigationHoldDuration": "2555.00:00:00",
    "LitigationHoldOwner": "admin@contoso.com",
    "InPlaceHolds@odata.type": "#Collection(String)",
    "InPlaceHolds": ["mbx7cfb30345d454ac0a989ab3041051209:2", "UniH1a0e3347-f7f3-43a7-aaad-92e4e8a9066f"],
    "ComplianceTagHoldApplied": False,
    "DelayHoldApplied": True,
    "DelayReleaseHoldApplied": False,
    "RetentionHoldEnabled": False,
    "ElcProcessingDisabled": False,
    "ArchiveStatus": "Active",
    "ArchiveState": "Local",
    "ArchiveGuid@data.type": "System.Guid",
    "ArchiveGuid@odata.type": "#Guid",
    "ArchiveGuid": "D1E2F3A4-B5C6-4D7E-8F90-A1B2C3D4E5F6",
    "AutoExpandingArchiveEnabled": False,
    "MailboxLocations@odata.type": "#Collection(String)",
    "MailboxLocations": [
        f"1;5c8b9f0e-3d2a-4b1c-9e8f-7a6b5c4d3e2f;Primary;contoso.onmicrosoft.com;{DB}",
        f"1;d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6;MainArchive;contoso.onmicrosoft.com;{DB}",
    ],
    "EmailAddresses@odata.type": "#Collection(String)",
    "EmailAddresses": ["SMTP:anna.berg@contoso.com", "smtp:anna@contoso.onmicrosoft.com", "X500:/o=Old/cn=anna"],
    "CustomAttribute1": "",
    "CustomAttribute5": "Contoso Retail",
    "CustomAttribute7": "Store Ops",
    "CustomAttribute15": None,
    "MailboxPlan": "ExchangeOnlineEnterprise-6f2e8ba4-4b0b-4c1b-8ab3-7f8b3c2a1d00",
}
STATS: dict[str, Any] = {
    "DisplayName": "Anna Berg",
    "ItemCount": 12345,
    "DeletedItemCount": 55,
    "TotalItemSize": "1.5 GB (1,610,612,736 bytes)",
    "TotalDeletedItemSize": "100 MB (104,857,600 bytes)",
}
ARCHIVE: dict[str, Any] = {
    "ItemCount": 400,
    "DeletedItemCount": 0,
    "TotalItemSize": "512 MB (536,870,912 bytes)",
    "TotalDeletedItemSize": "0 B (0 bytes)",
}
RECIPIENT: dict[str, Any] = {"Company": "Contoso Ltd", "Department": "Finance", "RecipientType": "UserMailbox"}


def build(
    mailbox: dict[str, Any] | None = None,
    stats: dict[str, Any] | None = STATS,
    archive: dict[str, Any] | None = ARCHIVE,
    recipient: dict[str, Any] | None = RECIPIENT,
    org: OrgMapping | None = None,
    mapping: dict[str, tuple[str, str]] | None = None,
) -> Any:
    return mailbox_from_records(
        MAILBOX if mailbox is None else mailbox, stats, archive, recipient, org or OrgMapping(), mapping, "contoso", NOW
    )


def test_full_record() -> None:
    m = build()
    assert m.identity == IDENTITY
    assert m.display_name == "Anna Berg"
    assert m.name == "Anna Berg"
    assert m.primary_smtp == "anna.berg@contoso.com"
    assert m.user_principal_name == "anna.berg@contoso.com"
    assert m.distinguished_name == MAILBOX["DistinguishedName"]
    assert m.legacy_exchange_dn == MAILBOX["LegacyExchangeDN"]
    assert m.when_soft_deleted == datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)
    assert m.when_changed == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    assert m.inactive_mailbox_retire_time is None
    assert m.external_directory_object_id == ""
    assert m.email_addresses == MAILBOX["EmailAddresses"]
    # Sizes as Get-MailboxStatistics reports them (Get-MailboxStatistics.md; domain.md §3): TotalItemSize and
    # ItemCount, the Recoverable Items folder beside them (TotalDeletedItemSize, DeletedItemCount).
    assert m.size_mb == 1536.0  # 1,610,612,736 / 1,048,576
    assert m.item_count == 12345
    assert m.recoverable_items_mb == 100.0
    assert m.deleted_item_count == 55
    assert m.archive_size_mb == 512.0
    assert m.archive_item_count == 400
    assert m.archive_recoverable_items_mb == 0.0
    assert m.archive_deleted_item_count == 0
    assert m.total_size_mb == 2148.0  # what cost and the size filters use
    assert (m.is_inactive_mailbox, m.was_inactive_mailbox, m.last_hold_removed) == (True, False, None)
    assert m.archive_status == "Active"
    assert m.archive_guid == "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6"
    assert m.auto_expanding_archive is False
    assert m.mailbox_locations == ["Primary", "MainArchive"]
    assert m.litigation_hold_enabled is True
    assert m.litigation_hold_date == datetime(2019, 4, 1, 9, 30, tzinfo=UTC)
    assert m.litigation_hold_duration == "2555.00:00:00"
    assert m.in_place_holds == ["mbx7cfb30345d454ac0a989ab3041051209:2", "UniH1a0e3347-f7f3-43a7-aaad-92e4e8a9066f"]
    assert (m.compliance_tag_hold, m.delay_hold, m.delay_release_hold, m.retention_hold_enabled) == (
        False,
        True,
        False,
        False,
    )
    assert m.mailbox_plan == MAILBOX["MailboxPlan"]
    assert m.license_type == "Exchange Online Plan 2"
    assert m.custom_attributes == {"CustomAttribute5": "Contoso Retail", "CustomAttribute7": "Store Ops"}
    assert m.operating_company == "Contoso Ltd"
    assert m.department == "Finance"
    assert m.tenant == "contoso"
    assert m.last_updated == NOW
    # analysis is left to analyse()
    assert m.hold_types == [] and m.monthly_cost == 0.0 and m.age_days is None


def test_minimal_record_and_missing_statistics() -> None:
    m = build({"ExchangeGuid": GUID}, stats=None, archive=None, recipient=None)
    assert m.identity == IDENTITY
    assert (m.display_name, m.primary_smtp, m.archive_status, m.license_type) == ("", "", "None", "Unknown")
    assert (m.size_mb, m.item_count, m.archive_size_mb, m.archive_item_count) == (0.0, 0, 0.0, 0)
    assert m.when_soft_deleted is None
    assert m.litigation_hold_duration is None
    assert m.in_place_holds == [] and m.mailbox_locations == [] and m.email_addresses == []
    assert (m.operating_company, m.department) == (None, None)


def test_guid_fallback_and_empty_guids() -> None:
    m = build({"Guid": GUID, "ExternalDirectoryObjectId": "00000000-0000-0000-0000-000000000000", "ArchiveGuid": ""})
    assert m.identity == IDENTITY
    assert m.external_directory_object_id == ""
    assert m.archive_guid == ""
    m2 = build({**MAILBOX, "ExternalDirectoryObjectId": "0F9E8D7C-6B5A-4939-8271-605F4E3D2C1B"})
    assert m2.external_directory_object_id == "0f9e8d7c-6b5a-4939-8271-605f4e3d2c1b"


def test_no_identity_is_an_input_error() -> None:
    with pytest.raises(InputError) as err:
        build({"DisplayName": "x"})
    assert err.value.message == "a mailbox record has no ExchangeGuid"


def test_unreadable_values_are_treated_as_absent() -> None:
    record = {
        **MAILBOX,
        "WhenSoftDeleted": "sometime",
        "LitigationHoldEnabled": "perhaps",
        "MailboxLocations": f"1;x;AuxArchive;contoso.onmicrosoft.com;{DB}",
        "InPlaceHolds": "UniH1a0e3347f7f343a7aaad92e4e8a9066f",
        "EmailAddresses": "SMTP:a@b.c",
    }
    m = build(record, stats={"TotalItemSize": "huge", "ItemCount": "n/a", "TotalDeletedItemSize": "1 KB (1,024 bytes)"})
    assert m.when_soft_deleted is None
    assert m.litigation_hold_enabled is False
    assert m.mailbox_locations == ["AuxArchive"]
    assert m.in_place_holds == ["UniH1a0e3347f7f343a7aaad92e4e8a9066f"]
    assert m.email_addresses == ["SMTP:a@b.c"]
    assert m.size_mb == 0.0  # 1 KB rounds to 0.00 MB
    assert m.item_count == 0


def test_other_wire_forms() -> None:
    record = {
        "ExchangeGuid": GUID,
        "WhenSoftDeleted": "/Date(1663747667000)/",
        "WhenChanged": "2026-11-01T12:00:00.0000000+02:00",  # no WhenChangedUTC
        "LitigationHoldEnabled": "True",
        "AutoExpandingArchiveEnabled": "true",
        "InactiveMailboxRetireTime": "2026-12-01T00:00:00Z",
    }
    m = build(record)
    assert m.when_soft_deleted == datetime(2022, 9, 21, 8, 7, 47, tzinfo=UTC)
    assert m.when_changed == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    assert m.litigation_hold_enabled is True
    assert m.auto_expanding_archive is True
    assert m.inactive_mailbox_retire_time == datetime(2026, 12, 1, tzinfo=UTC)


# ----------------------------------------------------------------------------------------- company/department


def test_recipient_wins() -> None:
    org = OrgMapping(company_attribute="CustomAttribute5", department_attribute="CustomAttribute7")
    mapping = {"anna.berg@contoso.com": ("Mapped Co", "Mapped Dept")}
    m = build(org=org, mapping=mapping)
    assert (m.operating_company, m.department) == ("Contoso Ltd", "Finance")


def test_custom_attribute_when_directory_fields_were_cleared() -> None:
    org = OrgMapping(company_attribute="customattribute5", department_attribute="CustomAttribute7")
    m = build(recipient={"Company": "", "Department": None}, org=org)
    assert (m.operating_company, m.department) == ("Contoso Retail", "Store Ops")


def test_each_field_resolves_on_its_own() -> None:
    org = OrgMapping(company_attribute="CustomAttribute1")  # empty on this mailbox
    mapping = {"anna.berg@contoso.com": ("Mapped Co", "Mapped Dept")}
    m = build(recipient={"Company": "Contoso Ltd", "Department": ""}, org=org, mapping=mapping)
    assert (m.operating_company, m.department) == ("Contoso Ltd", "Mapped Dept")


@pytest.mark.parametrize(
    "key",
    ["anna.berg@contoso.com", IDENTITY, "anna@contoso.onmicrosoft.com"],
)
def test_mapping_by_address_guid_or_proxy(key: str) -> None:
    m = build(recipient=None, mapping={key: ("Fabrikam", "")})
    assert (m.operating_company, m.department) == ("Fabrikam", None)


def test_nothing_known() -> None:
    m = build(recipient=None, org=OrgMapping(company_attribute="CustomAttribute9"), mapping={"x@y.z": ("A", "B")})
    assert (m.operating_company, m.department) == (None, None)


# ------------------------------------------------------------------------------------------------ mapping CSV


def test_mapping_csv_by_address_and_guid() -> None:
    text = (
        "\ufeffaddress,ExchangeGuid,company,department,cost centre\n"
        "Anna.Berg@Contoso.com,,Contoso Ltd,Finance,4711\n"
        f",{GUID},Fabrikam,Legal,1\n"
        "\n"
        "bo@contoso.com,{0B1C2D3E-4F5A-4B6C-8D7E-9F0A1B2C3D4E},Adatum,,2\n"
    )
    assert load_org_mapping_csv(text) == {
        "anna.berg@contoso.com": ("Contoso Ltd", "Finance"),
        IDENTITY: ("Fabrikam", "Legal"),
        "bo@contoso.com": ("Adatum", ""),
        "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e": ("Adatum", ""),
    }


def test_mapping_csv_semicolons_and_header_spellings() -> None:
    text = 'E-mail Address;Operating_Company;Dept\nanna@contoso.com;"Contoso; Retail";Ops\n'
    assert load_org_mapping_csv(text) == {"anna@contoso.com": ("Contoso; Retail", "Ops")}


def test_mapping_csv_duplicate_identical_rows_are_fine() -> None:
    text = "address,company\na@b.c,X\nA@B.C,X\n"
    assert load_org_mapping_csv(text) == {"a@b.c": ("X", "")}


def test_mapping_csv_reports_bad_rows_with_line_numbers() -> None:
    text = (
        "address,ExchangeGuid,company,department\n"  # line 1
        "a@contoso.com,,Contoso,Sales\n"  # 2 ok
        "bob,,Contoso,Sales\n"  # 3 not an address
        ",,Contoso,Sales\n"  # 4 no key
        "c@contoso.com,,,\n"  # 5 no values
        ",not-a-guid,Contoso,Sales\n"  # 6 bad guid
        "a@contoso.com,,Fabrikam,Sales\n"  # 7 conflicting duplicate
        "d@contoso.com,,Contoso,Sales,extra\n"  # 8 too many fields
    )
    with pytest.raises(InputError) as err:
        load_org_mapping_csv(text)
    assert err.value.message == (
        "org mapping CSV: 6 bad rows: line 3: 'bob' is neither an email address nor an ExchangeGuid; "
        "line 4: no address or ExchangeGuid; line 5: no company and no department; "
        "line 6: 'not-a-guid' is not an ExchangeGuid; "
        "line 7: 'a@contoso.com' is already mapped on line 2 to different values (and 1 more)"
    )
    assert err.value.exit_code is ExitStatus.USAGE
    assert err.value.hint == "fix or remove the rows"


def test_mapping_csv_counts_lines_of_quoted_multiline_fields() -> None:
    text = 'address,company,department\na@b.c,"Contoso\nLtd",Sales\nbad,X,Y\n'
    with pytest.raises(InputError) as err:
        load_org_mapping_csv(text)
    assert (
        err.value.message == "org mapping CSV: 1 bad row: line 4: 'bad' is neither an email address nor an ExchangeGuid"
    )


def test_mapping_csv_extra_fields_message() -> None:
    with pytest.raises(InputError) as err:
        load_org_mapping_csv("address,company\na@b.c,X,Y,Z\n")
    assert err.value.message == "org mapping CSV: 1 bad row: line 2: 4 fields, the header has 2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "org mapping CSV: the file is empty (expected a header: address,company,department)"),
        ("\ufeff \n", "org mapping CSV: the file is empty (expected a header: address,company,department)"),
        ("name,company\nx,y\n", "org mapping CSV: line 1: no address or ExchangeGuid column (header: name, company)"),
        (
            "address,region\na@b.c,EU\n",
            "org mapping CSV: line 1: no company or department column (header: address, region)",
        ),
    ],
)
def test_mapping_csv_header_errors(text: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        load_org_mapping_csv(text)
    assert err.value.message == message


def test_mapping_csv_nul_byte_is_reported() -> None:
    with pytest.raises(InputError) as err:
        load_org_mapping_csv("address,company\na@b.c,X\x00\n")
    assert err.value.message == "org mapping CSV: 1 bad row: line 2: a control character in column 'company'"


def test_mapping_key() -> None:
    assert mapping_key(" Anna@Contoso.COM ") == "anna@contoso.com"
    assert mapping_key("{5C8B9F0E-3D2A-4B1C-9E8F-7A6B5C4D3E2F}") == IDENTITY
    assert mapping_key("5c8b9f0e3d2a4b1c9e8f7a6b5c4d3e2f") == IDENTITY


@given(st.text(max_size=200))
def test_mapping_csv_never_raises_anything_but_input_error(text: str) -> None:
    try:
        result = load_org_mapping_csv(text)
    except InputError as err:
        assert err.message.startswith("org mapping CSV: ")
        return
    assert all(isinstance(v, tuple) and len(v) == 2 for v in result.values())


_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.lists(st.text(max_size=10)),
)


@given(
    st.dictionaries(st.sampled_from(sorted(MAILBOX)), _ANY_VALUE),
    st.dictionaries(st.sampled_from(sorted(STATS)), _ANY_VALUE),
)
def test_records_with_odd_values_never_crash(changes: dict[str, Any], stats: dict[str, Any]) -> None:
    record = {**MAILBOX, **changes, "ExchangeGuid": GUID}
    m = build(record, stats=stats)
    assert m.identity == IDENTITY
    assert m.size_mb >= 0


# ------------------------------------------------------------------------------------------ conflicts at sync
def test_address_conflicts_name_the_active_recipient_that_answers_to_the_address() -> None:
    """New-Mailbox.md: -MicrosoftOnlineServicesID must be unique ("…is used by another recipient object");
    microsoft-365-docs#2814. Only real address matches count, and the mailbox itself never conflicts."""
    from imm.domain.records import address_conflicts

    inactive = {
        "ExchangeGuid": "aaaaaaaa-0000-0000-0000-000000000001",
        "PrimarySmtpAddress": "Anna.Berg@contoso.com",
        "UserPrincipalName": "anna@contoso.onmicrosoft.com",
    }
    proxy_holder = {
        "Name": "Anna B",
        "PrimarySmtpAddress": "ab@contoso.com",
        "EmailAddresses": ["smtp:anna.berg@contoso.com"],
    }
    itself = {"Name": "self", "ExchangeGuid": inactive["ExchangeGuid"], "PrimarySmtpAddress": "anna.berg@contoso.com"}
    by_alias_only = {"Name": "anna", "PrimarySmtpAddress": "someone.else@contoso.com"}
    table = {"anna.berg@contoso.com": [proxy_holder, itself], "anna@contoso.onmicrosoft.com": [by_alias_only]}
    asked: list[str] = []

    def holders(address: str) -> list[dict[str, Any]]:
        asked.append(address)
        return table.get(address, [])

    assert address_conflicts(inactive, holders) == ("Anna B", "")
    assert asked == ["anna.berg@contoso.com", "anna@contoso.onmicrosoft.com"]
    same = {**inactive, "UserPrincipalName": "anna.berg@contoso.com"}
    asked.clear()
    assert address_conflicts(same, holders) == ("Anna B", "Anna B")
    assert asked == ["anna.berg@contoso.com"]  # asked once
