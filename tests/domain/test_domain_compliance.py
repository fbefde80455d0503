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
        BARE: PolicyInfo(BARE, "Seven years", "retention", True, True, 2555, HoldAction.RETAIN_THEN_DELETE, True),
        "11111111222233334444555555555555": PolicyInfo(
            "11111111222233334444555555555555", "Short", "retention", False, False, 0, HoldAction.RETAIN, False
        ),
        "aaaaaaaa222233334444555555555555": PolicyInfo(
            "aaaaaaaa222233334444555555555555", "Case 42", "case-hold", False, True, None, None, False
        ),
    }


def test_a_policy_survives_the_cache_row_round_trip() -> None:
    policy = PolicyInfo(BARE, "Seven years", "retention", True, True, 2555, HoldAction.RETAIN_THEN_DELETE, True)
    assert policy_from_row(policy_row(policy)) == policy
