"""imm.domain.compliance and the lenient readers of imm.domain.parsing it uses: one reading of each value."""

from __future__ import annotations

import pytest

from imm.domain.compliance import policies_from_records, policy_from_row, policy_row
from imm.domain.holds import HoldAction, PolicyInfo
from imm.domain.parsing import (
    or_default,
    parse_bool,
    parse_count,
    parse_guid,
    parse_list,
    parse_strings,
    parse_timespan_days,
)
from imm.errors import InputError

GUID = "7cfb3034-5d45-4ac0-a989-ab3041051209"
BARE = "7cfb30345d454ac0a989ab3041051209"


@pytest.mark.parametrize("value", [GUID, BARE, GUID.upper(), "{" + GUID + "}", BARE.upper()])
def test_parse_guid_reads_every_form_exchange_prints(value: str) -> None:
    assert parse_guid(value) == BARE


@pytest.mark.parametrize("value", ["", None, "Sales Policy", BARE[:-1], BARE + "0", "mbx" + BARE])
def test_parse_guid_is_empty_for_what_is_not_a_guid(value: str | None) -> None:
    assert parse_guid(value) == ""


def test_lists_and_strings() -> None:
    assert parse_list(None) == []
    assert parse_list("") == []
    assert parse_list("All") == ["All"]
    assert parse_list(("a", None)) == ["a", None]
    assert parse_strings(["a", None, "", 3]) == ["a", "3"]


def test_counts() -> None:
    assert parse_count("1,234") == 1234
    assert parse_count(7) == 7
    assert parse_count("") is None
    with pytest.raises(InputError):
        parse_count("many")


def test_or_default_turns_unreadable_and_empty_values_into_the_default() -> None:
    assert or_default(parse_bool, "$true", False) is True
    assert or_default(parse_bool, "maybe", False) is False
    assert or_default(parse_bool, None, True) is True
    assert or_default(parse_timespan_days, "23:00:00", None) == 0
    assert or_default(parse_timespan_days, "Unlimited", None) is None
    assert or_default(parse_timespan_days, "soon", 5) == 5


def test_policies_from_records_reads_lock_duration_and_action_with_the_one_readers() -> None:
    policies = [
        {
            "Guid": GUID,
            "Name": "Seven years",
            "RestrictiveRetention": "$true",
            "Enabled": "True",
            "ExchangeLocation": ["All"],
        },
        {
            "Guid": "{11111111-2222-3333-4444-555555555555}",
            "Name": "Short",
            "RestrictiveRetention": False,
            "Enabled": "$false",
            "ExchangeLocation": "someone@contoso.com",
        },
        {"Name": "no guid"},
    ]
    rules = [
        {"Policy": BARE, "RetentionDuration": "2555", "RetentionComplianceAction": "KeepAndDelete"},
        {"ParentPolicyName": "Short", "RetentionDuration": "23:00:00", "RetentionComplianceAction": "Keep"},
    ]
    case_holds = [{"Guid": "AAAAAAAA-2222-3333-4444-555555555555", "Name": "Case 42", "Enabled": "$true"}]
    got = policies_from_records(policies, rules, case_holds)
    assert got == {
        BARE: PolicyInfo(
            BARE, "Seven years", "retention", True, True, 2555, HoldAction.RETAIN_THEN_DELETE, True, ("exchange",)
        ),
        "11111111222233334444555555555555": PolicyInfo(
            "11111111222233334444555555555555",
            "Short",
            "retention",
            False,
            False,
            0,
            HoldAction.RETAIN,
            False,
            ("exchange",),
        ),
        "aaaaaaaa222233334444555555555555": PolicyInfo(
            "aaaaaaaa222233334444555555555555", "Case 42", "case-hold", False, True, None, None, False
        ),
    }


def test_a_policy_survives_the_cache_row_round_trip() -> None:
    policy = PolicyInfo(BARE, "Seven years", "retention", True, True, 2555, HoldAction.RETAIN_THEN_DELETE, True)
    assert policy_from_row(policy_row(policy)) == policy


# ------------------------------------------------------------------------------------- policies of every kind
G2 = "1a0e3347f7f343a7aaad92e4e8a9066f"


def test_locations_adaptive_scopes_labels_and_app_policies_are_read() -> None:
    """Get-RetentionCompliancePolicy location properties (an org mbx entry covers mailboxes, public folders and Teams
    1xN chats: identify-a-hold article); IsAdaptivePolicy / AdaptiveScopeLocation (Set-RetentionCompliancePolicy
    AdaptiveScopeLocation set); a label policy's rule -PublishComplianceTag (New-RetentionComplianceRule);
    Get-AppRetentionCompliancePolicy -Applications (New-AppRetentionCompliancePolicy)."""
    policies = [
        {"Guid": GUID, "Name": "Chats", "TeamsChatLocation": ["All"], "ExchangeLocation": []},
        {"Guid": G2, "Name": "Leavers", "IsAdaptivePolicy": True, "AdaptiveScopeLocation": ["Leavers scope"]},
        {"Guid": "c0ba3ce811b6432a8751430937152491", "Name": "Labels", "ExchangeLocation": ["All"]},
        {"Guid": "d0ba3ce811b6432a8751430937152491", "Name": "PF", "PublicFolderLocation": ["All"]},
    ]
    rules = [{"Policy": "c0ba3ce811b6432a8751430937152491", "PublishComplianceTag": "Contracts 10y"}]
    apps = [{"Guid": "e0ba3ce811b6432a8751430937152491", "Name": "Channels", "Applications": ["User:MicrosoftTeams"]}]
    app_rules = [{"Policy": "e0ba3ce811b6432a8751430937152491", "RetentionDuration": 2555}]
    out = policies_from_records(policies, rules, [], apps, app_rules)
    assert out[BARE].teams_chat_only and out[BARE].workloads == ("teams-chat",)
    assert out[G2].adaptive and out[G2].scopes == ("Leavers scope",)
    assert out["c0ba3ce811b6432a8751430937152491"].label
    assert out["d0ba3ce811b6432a8751430937152491"].public_folders_only
    app = out["e0ba3ce811b6432a8751430937152491"]
    assert (app.kind, app.workloads, app.retention_days) == ("app", ("User:MicrosoftTeams",), 2555)
    for policy in out.values():  # the cache keeps all of it
        assert policy_from_row(policy_row(policy)) == policy
