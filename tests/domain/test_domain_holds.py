"""imm.domain.holds: every hold kind and suffix, org-wide application, exclusions, policy details.

Sources: the InPlaceHolds prefixes and suffixes (UniH, cld / bare GUID, mbx/skp/grp, -mbx, :1 :2 :3), the flags
and the organisation's holds are those of the Learn article *Identify the type of hold placed on an Exchange Online
mailbox* (domain.md §2, §9); Litigation Hold's duration and date: Set-Mailbox.md (-LitigationHoldDuration);
RetentionHoldEnabled is no preservation hold: Set-Mailbox.md (-RetentionHoldEnabled).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imm.data.models import InactiveMailbox
from imm.domain.holds import (
    HOLD_TYPE_NAMES,
    Hold,
    HoldAction,
    HoldKind,
    PolicyInfo,
    dashed_guid,
    decode_hold,
    decode_holds,
    hold_types,
)

G1 = "7cfb30345d454ac0a989ab3041051209"
G1_DASHED = "7cfb3034-5d45-4ac0-a989-ab3041051209"
G2 = "1a0e3347f7f343a7aaad92e4e8a9066f"
G2_DASHED = "1a0e3347-f7f3-43a7-aaad-92e4e8a9066f"
G3 = "c0ba3ce811b6432a8751430937152491"
G3_DASHED = "c0ba3ce8-11b6-432a-8751-430937152491"


def mbx(**fields: object) -> InactiveMailbox:
    return InactiveMailbox(identity="5c8b9f0e-3d2a-4b1c-9e8f-7a6b5c4d3e2f", **fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- decode_hold


@pytest.mark.parametrize(
    ("raw", "kind", "action", "preserves"),
    [
        (f"mbx{G1}:1", HoldKind.RETENTION_POLICY, HoldAction.DELETE_ONLY, False),
        (f"mbx{G1}:2", HoldKind.RETENTION_POLICY, HoldAction.RETAIN, True),
        (f"mbx{G1}:3", HoldKind.RETENTION_POLICY, HoldAction.RETAIN_THEN_DELETE, True),
        (f"mbx{G1}", HoldKind.RETENTION_POLICY, None, True),
        (f"mbx{G1}:9", HoldKind.RETENTION_POLICY, None, True),
        (f"skp{G1}:1", HoldKind.SKYPE_POLICY, HoldAction.DELETE_ONLY, False),
        (f"skp{G1}:2", HoldKind.SKYPE_POLICY, HoldAction.RETAIN, True),
        (f"skp{G1}:3", HoldKind.SKYPE_POLICY, HoldAction.RETAIN_THEN_DELETE, True),
        (f"grp{G1}:1", HoldKind.ORG_POLICY_GROUP, HoldAction.DELETE_ONLY, False),
        (f"grp{G1}:2", HoldKind.ORG_POLICY_GROUP, HoldAction.RETAIN, False),
        (f"grp{G1}:3", HoldKind.ORG_POLICY_GROUP, HoldAction.RETAIN_THEN_DELETE, False),
        (f"MBX{G1.upper()}:2", HoldKind.RETENTION_POLICY, HoldAction.RETAIN, True),
        (f"-mbx{G1}", HoldKind.EXCLUDED_ORG_POLICY, None, False),
        (f"-skp{G1}", HoldKind.EXCLUDED_ORG_POLICY, None, False),
        (f"UniH{G1}", HoldKind.EDISCOVERY, None, True),
        (f"UniH{G1_DASHED}", HoldKind.EDISCOVERY, None, True),
        (f"unih{G1}", HoldKind.EDISCOVERY, None, True),
        (G1, HoldKind.INPLACE_LEGACY, None, True),
        (G1_DASHED, HoldKind.INPLACE_LEGACY, None, True),
        (f"cld{G1}", HoldKind.INPLACE_LEGACY, None, True),
    ],
)
def test_decode_hold_kinds_and_suffixes(raw: str, kind: HoldKind, action: HoldAction | None, preserves: bool) -> None:
    hold = decode_hold(raw)
    assert hold.kind is kind
    assert hold.action is action
    assert hold.preserves is preserves
    assert hold.guid == G1
    assert hold.raw == raw
    assert hold.policy_name is None
    assert hold.locked is False
    assert hold.org_wide is False


@pytest.mark.parametrize(
    ("raw", "description"),
    [
        (
            f"mbx{G1}:1",
            f"Retention policy {G1_DASHED} that includes this mailbox (delete only, which does not keep the mailbox)",
        ),
        (f"mbx{G1}:2", f"Retention policy {G1_DASHED} that includes this mailbox (retain only)"),
        (f"mbx{G1}:3", f"Retention policy {G1_DASHED} that includes this mailbox (retain then delete)"),
        (f"mbx{G1}", f"Retention policy {G1_DASHED} that includes this mailbox (action unknown, treated as retaining)"),
        (
            f"skp{G1}:2",
            f"Retention policy {G1_DASHED} for this user's Skype for Business conversations (retain only)",
        ),
        (
            f"grp{G1}:3",
            f"Org-wide retention policy {G1_DASHED} for Microsoft 365 Groups and Teams channels, not user mailboxes "
            "(retain then delete)",
        ),
        (f"-mbx{G1}", f"Excluded from org-wide retention policy {G1_DASHED}"),
        (f"UniH{G1}", f"eDiscovery case hold {G1_DASHED}: kept until the case hold is released"),
        (G1, f"Legacy In-Place Hold {G1_DASHED} (a retired feature: it can only be removed)"),
        (f"cld{G1}", f"Legacy In-Place Hold cld{G1} (a retired feature: it can only be removed)"),  # cld kept
    ],
)
def test_decode_hold_descriptions(raw: str, description: str) -> None:
    assert decode_hold(raw).description == description


@pytest.mark.parametrize("raw", ["Something", "xyz123:2", "UniX1234", "12345"])
def test_unrecognised_values_are_unknown_and_preserving(raw: str) -> None:
    hold = decode_hold(raw)
    assert hold.kind is HoldKind.UNKNOWN
    assert hold.preserves is True
    assert hold.guid is None
    assert hold.description == f"Unrecognised hold value '{raw}' (treated as keeping the mailbox)"


def test_dashed_guid() -> None:
    assert dashed_guid(G1) == G1_DASHED
    assert dashed_guid(G1_DASHED) == G1_DASHED
    assert dashed_guid("not-a-guid") == "not-a-guid"


# -------------------------------------------------------------------------------------------- decode_holds


def test_litigation_hold_with_duration_and_date() -> None:
    mailbox = mbx(
        litigation_hold_enabled=True,
        litigation_hold_duration="2555.00:00:00",
        litigation_hold_date=datetime(2019, 4, 1, 9, 30, tzinfo=UTC),
    )
    [hold] = decode_holds(mailbox, [], {})
    assert hold == Hold(
        kind=HoldKind.LITIGATION,
        raw="LitigationHoldEnabled=True; LitigationHoldDuration=2555.00:00:00",
        duration_days=2555,
        description="Litigation Hold for 2,555 days from 2019-04-01",
        since=datetime(2019, 4, 1, 9, 30, tzinfo=UTC),
    )


@pytest.mark.parametrize("duration", ["Unlimited", None, "", "garbage"])
def test_litigation_hold_unlimited(duration: str | None) -> None:
    mailbox = mbx(
        litigation_hold_enabled=True,
        litigation_hold_duration=duration,
        litigation_hold_date=datetime(2019, 4, 1, tzinfo=UTC),
    )
    [hold] = decode_holds(mailbox, [], {})
    assert hold.duration_days is None
    assert hold.description == "Unlimited Litigation Hold from 2019-04-01: kept until the hold is removed"


def test_litigation_hold_one_day_without_date() -> None:
    [hold] = decode_holds(mbx(litigation_hold_enabled=True, litigation_hold_duration="1.00:00:00"), [], {})
    assert hold.description == "Litigation Hold for 1 day"


def test_litigation_hold_disabled_is_no_hold() -> None:
    assert decode_holds(mbx(litigation_hold_enabled=False, litigation_hold_duration="365.00:00:00"), [], {}) == []


def test_flags_are_holds_but_retention_hold_is_not() -> None:
    mailbox = mbx(compliance_tag_hold=True, delay_hold=True, delay_release_hold=True, retention_hold_enabled=True)
    holds = decode_holds(mailbox, [], {})
    assert [(h.kind, h.raw, h.description) for h in holds] == [
        (
            HoldKind.COMPLIANCE_TAG,
            "ComplianceTagHoldApplied=True",
            "Retention label hold: some items carry a retain-type retention label",
        ),
        (
            HoldKind.DELAY,
            "DelayHoldApplied=True",
            "Delay hold: a hold was removed and Exchange keeps the Outlook data for 30 more days",
        ),
        (
            HoldKind.DELAY_RELEASE,
            "DelayReleaseHoldApplied=True",
            "Delay release hold: a hold was removed and Exchange keeps Teams, Forms and Viva Engage data "
            "for 30 more days",
        ),
    ]
    assert all(h.preserves for h in holds)
    assert decode_holds(mbx(retention_hold_enabled=True), [], {}) == []


def test_org_wide_policy_applies_to_every_mailbox() -> None:
    holds = decode_holds(mbx(), [f"mbx{G1}:2", f"skp{G2}:3"], {})
    assert [(h.kind, h.guid, h.action, h.org_wide, h.preserves) for h in holds] == [
        (HoldKind.ORG_POLICY, G1, HoldAction.RETAIN, True, True),
        (HoldKind.ORG_POLICY, G2, HoldAction.RETAIN_THEN_DELETE, True, True),
    ]
    assert holds[0].description == (
        f"Org-wide retention policy {G1_DASHED} (policy name unknown) that covers every mailbox (retain only); "
        "Preservation Lock unknown"
    )
    assert holds[0].locked is None  # not in the policy list: its lock is unknown, not absent
    assert hold_types(holds) == ["org-policy"]


def test_exclusion_removes_the_org_wide_policy() -> None:
    holds = decode_holds(mbx(in_place_holds=[f"-mbx{G1}"]), [f"mbx{G1}:2", f"mbx{G2}:3"], {})
    assert [(h.kind, h.guid, h.preserves) for h in holds] == [
        (HoldKind.EXCLUDED_ORG_POLICY, G1, False),
        (HoldKind.ORG_POLICY, G2, True),
    ]
    assert hold_types(holds) == ["org-policy"]


def test_excluded_from_the_only_org_policy_leaves_no_preserving_hold() -> None:
    holds = decode_holds(mbx(in_place_holds=[f"-mbx{G1}"]), [f"mbx{G1}:2"], {})
    assert [h.kind for h in holds] == [HoldKind.EXCLUDED_ORG_POLICY]
    assert hold_types(holds) == []


def test_exclusion_matches_the_location_family() -> None:
    holds = decode_holds(mbx(in_place_holds=[f"-skp{G1}"]), [f"mbx{G1}:2", f"skp{G1}:2"], {})
    assert [(h.kind, h.raw, h.preserves) for h in holds] == [
        (HoldKind.EXCLUDED_ORG_POLICY, f"-skp{G1}", False),
        (HoldKind.ORG_POLICY, f"mbx{G1}:2", True),
    ]


def test_group_policies_and_delete_only_org_policies() -> None:
    holds = decode_holds(mbx(), [f"grp{G1}:3", f"mbx{G2}:1"], {})
    assert [(h.kind, h.preserves) for h in holds] == [(HoldKind.ORG_POLICY, False)]
    assert hold_types(holds) == []


def test_unknown_org_value_is_kept_as_preserving() -> None:
    holds = decode_holds(mbx(), ["FutureHold123"], {})
    assert [(h.kind, h.preserves, h.org_wide) for h in holds] == [(HoldKind.UNKNOWN, True, True)]


def test_policy_on_mailbox_and_org_is_listed_once() -> None:
    holds = decode_holds(mbx(in_place_holds=[f"mbx{G1}:2", f"mbx{G1}:2"]), [f"mbx{G1}:2"], {})
    assert [(h.kind, h.org_wide) for h in holds] == [(HoldKind.RETENTION_POLICY, False)]


def test_policy_details_fill_name_lock_duration() -> None:
    policies = {
        G1: PolicyInfo(guid=G1, name="Finance 10y", kind="retention", locked=True, retention_days=3650),
        G2: PolicyInfo(guid=G2, name="All mail", kind="retention", retention_days=None, scope_all=True),
        G3: PolicyInfo(guid=G3, name="Case 42 hold", kind="case-hold", enabled=False),
    }
    mailbox = mbx(in_place_holds=[f"mbx{G1}:3", f"UniH{G3_DASHED}"])
    holds = decode_holds(mailbox, [f"mbx{G2}:2"], policies)
    finance, case, org = holds
    assert finance == Hold(
        kind=HoldKind.RETENTION_POLICY,
        raw=f"mbx{G1}:3",
        guid=G1,
        action=HoldAction.RETAIN_THEN_DELETE,
        preserves=True,
        duration_days=3650,
        description="Retention policy 'Finance 10y' that includes this mailbox (retain for 3,650 days, then delete); "
        "Preservation Lock: it cannot be removed",
        policy_name="Finance 10y",
        locked=True,
        org_wide=False,
        policy_known=True,
    )
    assert case.kind is HoldKind.EDISCOVERY
    assert case.policy_name == "Case 42 hold"
    assert case.policy_known is True
    assert case.description == (
        "eDiscovery case hold 'Case 42 hold': kept until the case hold is released; the policy is disabled"
    )
    assert org.kind is HoldKind.ORG_POLICY
    assert org.duration_days is None
    assert org.description == "Org-wide retention policy 'All mail' that covers every mailbox (retain without limit)"


def test_policy_action_fills_a_missing_suffix() -> None:
    policies = {G1: PolicyInfo(guid=G1, name="Purge", action=HoldAction.DELETE_ONLY)}
    [hold] = decode_holds(mbx(in_place_holds=[f"mbx{G1}"]), [], policies)
    assert hold.action is HoldAction.DELETE_ONLY
    assert hold.preserves is False
    assert hold.description == (
        "Retention policy 'Purge' that includes this mailbox (delete only, which does not keep the mailbox)"
    )


def test_suffix_wins_over_policy_action() -> None:
    policies = {G1: PolicyInfo(guid=G1, name="P", action=HoldAction.DELETE_ONLY, retention_days=30)}
    [hold] = decode_holds(mbx(in_place_holds=[f"mbx{G1}:2"]), [], policies)
    assert hold.action is HoldAction.RETAIN
    assert hold.preserves is True
    assert hold.description == "Retention policy 'P' that includes this mailbox (retain for 30 days)"


def test_legacy_inplace_with_a_known_name() -> None:
    policies = {G1: PolicyInfo(guid=G1, name="Old search", kind="inplace")}
    [hold] = decode_holds(mbx(in_place_holds=[f"cld{G1}"]), [], policies)
    assert hold.description == (
        f"Legacy In-Place Hold 'Old search' (cld{G1}) (a retired feature: it can only be removed)"
    )


def test_full_order_and_hold_types() -> None:
    mailbox = mbx(
        litigation_hold_enabled=True,
        in_place_holds=[f"UniH{G1}", G2, f"mbx{G3}:2", "  ", f"skp{G3}:3"],
        compliance_tag_hold=True,
        delay_hold=True,
        delay_release_hold=True,
    )
    holds = decode_holds(mailbox, ["mbx" + "a" * 32 + ":3", "grp" + "b" * 32 + ":3"], {})
    assert [h.kind.value for h in holds] == [
        "litigation",
        "ediscovery",
        "inplace",
        "retention-policy",
        "skype-policy",
        "org-policy",
        "label",
        "delay",
        "delay-release",
    ]
    # a policy with Exchange and Skype locations gives two holds (each location is removed on its own)
    assert [h.guid for h in holds[3:5]] == [G3, G3]
    assert hold_types(holds) == [
        "litigation",
        "ediscovery",
        "inplace",
        "retention-policy",
        "skype-policy",
        "org-policy",
        "label",
        "delay",
        "delay-release",
    ]


def test_hold_types_names_are_stable() -> None:
    assert HOLD_TYPE_NAMES == (
        "litigation",
        "ediscovery",
        "inplace",
        "retention-policy",
        "skype-policy",
        "org-policy",
        "org-policy-group",
        "excluded-org-policy",
        "label",
        "delay",
        "delay-release",
        "unknown",
    )
    assert hold_types([decode_hold(f"skp{G1}:2"), decode_hold(f"skp{G2}:2"), decode_hold("odd")]) == [
        "skype-policy",
        "unknown",
    ]


def test_hold_dict_round_trip() -> None:
    policies = {G1: PolicyInfo(guid=G1, name="Finance", locked=True, retention_days=10)}
    mailbox = mbx(
        litigation_hold_enabled=True,
        litigation_hold_duration="30.00:00:00",
        litigation_hold_date=datetime(2020, 1, 2, tzinfo=UTC),
        in_place_holds=[f"mbx{G1}:3", f"-mbx{G2}", "weird"],
        delay_hold=True,
    )
    for hold in decode_holds(mailbox, [f"skp{G3}:2"], policies):
        assert Hold.from_dict(hold.to_dict()) == hold


def test_hold_from_dict_tolerates_unknown_values() -> None:
    hold = Hold.from_dict({"kind": "future", "action": "shred", "raw": "x"})
    assert hold.kind is HoldKind.UNKNOWN
    assert hold.action is None
    assert hold.preserves is True


def test_policy_info_as_the_sync_builds_it() -> None:
    info = PolicyInfo(
        guid=G1,
        name="n",
        kind="case-hold",
        locked=False,
        enabled=True,
        retention_days=None,
        action=HoldAction("retain"),
        scope_all=False,
    )
    assert HoldAction[info.action.name] is HoldAction.RETAIN  # type: ignore[union-attr]
    assert str(HoldAction.RETAIN_THEN_DELETE) == "retain-then-delete"
    assert str(HoldKind.COMPLIANCE_TAG) == "label"
    assert hash(info) == hash(PolicyInfo(**{**info.__dict__}))


def test_policy_info_with_an_unhashable_value_still_decodes() -> None:
    policies = {G1: PolicyInfo(guid=G1, name="Odd", retention_days=30, action=["retain"])}  # type: ignore[arg-type]
    [hold] = decode_holds(mbx(in_place_holds=[f"mbx{G1}:2"]), [], policies)
    assert hold.policy_name == "Odd"
    assert hold.description == "Retention policy 'Odd' that includes this mailbox (retain for 30 days)"
