"""imm.domain.cost: licence types, monthly cost to the cent, summaries and savings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imm.config import CostModel
from imm.data.models import InactiveMailbox
from imm.domain.cost import (
    UNASSIGNED,
    CostSummary,
    former_license,
    license_type_from_plan,
    monthly_cost,
    round_money,
    summarise_costs,
    total_costs,
)
from imm.errors import InputError


def mbx(**fields: Any) -> InactiveMailbox:
    return InactiveMailbox(identity=str(fields.pop("identity", "id")), **fields)


@pytest.mark.parametrize(
    ("plan", "licence"),
    [
        ("ExchangeOnlineEnterprise-6f2e8ba4-4b0b-4c1b-8ab3-7f8b3c2a1d00", "Exchange Online Plan 2"),
        ("exchangeonlineenterprise", "Exchange Online Plan 2"),
        ("ExchangeOnline-6f2e8ba4-4b0b-4c1b-8ab3-7f8b3c2a1d00", "Exchange Online Plan 1"),
        ("ExchangeOnlineEssentials-1", "Exchange Online Plan 1"),
        ("ExchangeOnlineDeskless-6f2e8ba4", "Exchange Online Kiosk"),
        ("  ExchangeOnlineDeskless ", "Exchange Online Kiosk"),
        ("BusinessMailbox-1", "Unknown"),
        ("", "Unknown"),
        (None, "Unknown"),
    ],
)
def test_license_type_from_plan(plan: str | None, licence: str) -> None:
    assert license_type_from_plan(plan) == licence


def test_monthly_cost_with_default_rates() -> None:
    # 7.00 + 0.02 x (3,072 + 1,024) MB / 1,024 = 7.00 + 0.08
    mailbox = mbx(license_type="Exchange Online Plan 2", size_mb=3072.0, archive_size_mb=1024.0)
    assert monthly_cost(mailbox, CostModel()) == 7.08


def test_monthly_cost_rounds_half_up_to_cents() -> None:
    model = CostModel(per_gb_month=0.005, license_month={"Unknown": 1.0})
    assert monthly_cost(mbx(size_mb=1024.0), model) == 1.01  # 1.005 → 1.01, not the float's 1.00
    assert monthly_cost(mbx(size_mb=1023.0), model) == 1.0  # 1.004995…
    assert monthly_cost(mbx(size_mb=3072.0), model) == 1.02  # 1.015 → 1.02


def test_unknown_licence_type_costs_the_unknown_rate() -> None:
    model = CostModel(per_gb_month=0.0, license_month={"Unknown": 2.5, "Exchange Online Plan 2": 9.0})
    assert monthly_cost(mbx(license_type="Some Future Plan"), model) == 2.5
    assert monthly_cost(mbx(license_type="Exchange Online Plan 2"), model) == 9.0
    assert monthly_cost(mbx(license_type="Exchange Online Plan 2"), CostModel(license_month={})) == 0.0


@pytest.mark.parametrize(
    ("value", "rounded"),
    [(0.125, 0.13), (0.135, 0.14), (2.675, 2.68), (1.005, 1.01), (3.1249999999999996, 3.13), (-0.125, -0.13), (0, 0.0)],
)
def test_round_money(value: float, rounded: float) -> None:
    assert round_money(value) == rounded


@given(st.decimals(min_value=0, max_value=10**9, places=3, allow_nan=False))
def test_round_money_matches_decimal_half_up(value: Decimal) -> None:
    expected = float(value.quantize(Decimal("0.01"), "ROUND_HALF_UP"))
    assert round_money(value) == expected
    assert round_money(float(value)) == expected


def fleet() -> list[InactiveMailbox]:
    return [
        mbx(identity="a", operating_company="Contoso", department="Sales", license_type="Exchange Online Plan 2",
            size_mb=1024.0, monthly_cost=7.02, releasable=True),
        mbx(identity="b", operating_company="Contoso", department="Legal", license_type="Exchange Online Plan 1",
            size_mb=2048.0, archive_size_mb=1024.0, monthly_cost=3.56, releasable=False),
        mbx(identity="c", operating_company="fabrikam", department="Sales", license_type="Exchange Online Plan 2",
            size_mb=512.0, monthly_cost=7.01, releasable=True),
        mbx(identity="d", operating_company=None, department=" ", license_type="Unknown",
            size_mb=0.0, monthly_cost=3.5, releasable=False),
        mbx(identity="e", operating_company="Adatum", department=None, license_type="Unknown",
            size_mb=10240.0, monthly_cost=3.7, releasable=True),
    ]  # fmt: skip


def test_summary_by_company() -> None:
    assert summarise_costs(fleet(), "company") == [
        CostSummary("Adatum", 1, 10.0, 3.7, 1, 10.0, 3.7),
        CostSummary("Contoso", 2, 4.0, 10.58, 1, 1.0, 7.02),
        CostSummary("fabrikam", 1, 0.5, 7.01, 1, 0.5, 7.01),
        CostSummary(UNASSIGNED, 1, 0.0, 3.5, 0, 0.0, 0.0),
    ]


def test_summary_by_department_and_licence() -> None:
    assert summarise_costs(fleet(), "department") == [
        CostSummary("Legal", 1, 3.0, 3.56, 0, 0.0, 0.0),
        CostSummary("Sales", 2, 1.5, 14.03, 2, 1.5, 14.03),
        CostSummary(UNASSIGNED, 2, 10.0, 7.2, 1, 10.0, 3.7),
    ]
    by_licence = summarise_costs(fleet(), "license")
    assert [(s.key, s.mailboxes, s.monthly_cost) for s in by_licence] == [
        ("Exchange Online Plan 1", 1, 3.56),
        ("Exchange Online Plan 2", 2, 14.03),
        ("Unknown", 2, 7.2),
    ]


def test_totals_and_savings() -> None:
    total = total_costs(fleet())
    assert total == CostSummary("Total", 5, 14.5, 24.79, 3, 11.5, 17.73)
    assert total.savings == 17.73
    assert summarise_costs(fleet(), "total") == [total]
    assert total.to_dict() == {
        "key": "Total",
        "mailboxes": 5,
        "size_gb": 14.5,
        "monthly_cost": 24.79,
        "releasable_mailboxes": 3,
        "releasable_size_gb": 11.5,
        "releasable_monthly_cost": 17.73,
    }


def test_sums_are_exact_to_the_cent() -> None:
    many = [mbx(monthly_cost=0.1, releasable=True) for _ in range(1000)]
    assert total_costs(many).monthly_cost == 100.0  # float summing would give 99.9999999999986


def test_empty_and_bad_grouping() -> None:
    assert summarise_costs([], "company") == []
    assert total_costs([]) == CostSummary("Total", 0, 0.0, 0.0, 0, 0.0, 0.0)
    with pytest.raises(InputError) as err:
        summarise_costs(fleet(), "country")
    assert err.value.message == "cannot group costs by 'country' (choose from: company, department, license, total)"


@pytest.mark.parametrize(
    ("plan", "capabilities", "expected"),
    [
        ("ExchangeOnlineDeskless-1b2c", ["BPOS_S_Enterprise"], "Exchange Online Kiosk"),  # the plan says first
        ("", ["BPOS_S_Enterprise"], "Exchange Online Plan 2"),
        ("", ["BPOS_S_Standard", "BPOS_S_ArchiveAddOn"], "Exchange Online Plan 1"),
        ("", ["bpos_s_deskless"], "Exchange Online Kiosk"),
        ("", ["EXCHANGE_S_ENTERPRISE"], "Exchange Online Plan 2"),  # the SKU's service plan name
        ("", ["BPOS_S_Archive"], "Unknown"),  # archiving only: no mailbox plan
        ("", [], "Unknown"),  # nothing says
        ("SomethingElse", ["BPOS_S_Standard", "BPOS_S_Enterprise"], "Exchange Online Plan 2"),  # the highest
    ],
)
def test_former_license_from_the_plan_else_persisted_capabilities(
    plan: str, capabilities: list[str], expected: str
) -> None:
    """filter-properties article: PersistedCapabilities on Get-Mailbox holds values of the Capability enumeration
    (BPOS_S_Deskless, BPOS_S_Standard, BPOS_S_Enterprise, BPOS_S_Archive, BPOS_S_ArchiveAddOn…)."""
    assert former_license(plan, capabilities) == expected
