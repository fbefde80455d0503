"""The chargeback cost model (design §6 "Cost").

Inactive mailboxes need no licence, so what they "cost" is the organisation's own chargeback: a monthly rate per
former licence type (from ``MailboxPlan``) plus a rate per GB stored (primary + archive), both from the profile's
:class:`imm.config.CostModel`. Money is rounded half-up to cents.

Reports total the cost by operating company, department or licence type (:func:`summarise_costs`) and show what
releasing the mailboxes whose holds have all run out would save (``releasable_*``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from imm.config import CostModel
from imm.data.models import InactiveMailbox
from imm.errors import InputError

__all__ = [
    "COST_GROUPINGS",
    "CostSummary",
    "UNASSIGNED",
    "cost_of",
    "license_type_from_capabilities",
    "license_type_from_plan",
    "former_license",
    "monthly_cost",
    "round_money",
    "summarise_costs",
    "total_costs",
]

PLAN_2 = "Exchange Online Plan 2"
PLAN_1 = "Exchange Online Plan 1"
KIOSK = "Exchange Online Kiosk"
UNKNOWN = "Unknown"
UNASSIGNED = "(none)"  # the group key for mailboxes without a company / department
_CENT = Decimal("0.01")
_NOISE = Decimal("1e-9")


def license_type_from_plan(mailbox_plan: str | None) -> str:
    """The former licence from ``MailboxPlan`` (e.g. ``ExchangeOnlineEnterprise-6f2e…``).

    ExchangeOnlineEnterprise* → Plan 2, ExchangeOnlineDeskless* → Kiosk, other ExchangeOnline* → Plan 1,
    anything else → "Unknown". Case-insensitive.
    """
    plan = (mailbox_plan or "").strip().lower()
    if plan.startswith("exchangeonlineenterprise"):
        return PLAN_2
    if plan.startswith("exchangeonlinedeskless"):
        return KIOSK
    if plan.startswith("exchangeonline"):
        return PLAN_1
    return UNKNOWN


# PersistedCapabilities (Get-Mailbox; filter-properties article: values of the Capability enumeration) names the SKU
# capability a mailbox was licensed with: BPOS_S_Enterprise, BPOS_S_Standard, BPOS_S_Deskless (BPOS_S_Archive and
# BPOS_S_ArchiveAddOn are archiving only, no mailbox plan). The Exchange service plan names of the SKU
# (EXCHANGE_S_ENTERPRISE, _STANDARD, _DESKLESS) are read the same way.
_CAPABILITY_PLANS = {
    "bpos_s_enterprise": PLAN_2,
    "exchange_s_enterprise": PLAN_2,
    "bpos_s_standard": PLAN_1,
    "exchange_s_standard": PLAN_1,
    "bpos_s_deskless": KIOSK,
    "exchange_s_deskless": KIOSK,
}
_PLAN_RANK = {PLAN_2: 3, PLAN_1: 2, KIOSK: 1}


def license_type_from_capabilities(values: Iterable[Any]) -> str:
    """The former licence from ``PersistedCapabilities`` (the highest plan named), "Unknown" when none is."""
    found = [_CAPABILITY_PLANS[key] for key in (str(v).strip().lower() for v in values) if key in _CAPABILITY_PLANS]
    return max(found, key=_PLAN_RANK.__getitem__) if found else UNKNOWN


def former_license(mailbox_plan: str | None, capabilities: Iterable[Any] = ()) -> str:
    """The former licence: from ``MailboxPlan``, else from ``PersistedCapabilities``; "Unknown" only when neither
    says."""
    plan = license_type_from_plan(mailbox_plan)
    return plan if plan != UNKNOWN else license_type_from_capabilities(capabilities)


def round_money(value: float | Decimal) -> float:
    """Half-up to cents (``0.125`` → ``0.13``), in decimal so binary floats do not round down.

    Float noise is removed first (``3.1249999999999996`` is taken as ``3.125``, hence ``3.13``).
    """
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return float(exact.quantize(_NOISE, ROUND_HALF_UP).quantize(_CENT, ROUND_HALF_UP))


def _licence_rate(license_type: str, model: CostModel) -> float:
    rates = model.license_month
    rate = rates.get(license_type)
    if rate is None:
        rate = rates.get(UNKNOWN, 0.0)
    return float(rate)


def monthly_cost(mailbox: InactiveMailbox, model: CostModel) -> float:
    """Licence rate + per-GB rate × ``total_size_mb`` / 1024, rounded to cents.

    ``total_size_mb`` is everything the mailbox occupies: primary and archive, items and Recoverable Items
    (TotalItemSize + TotalDeletedItemSize of each). The licence type is ``mailbox.license_type``; a type missing
    from the model costs the "Unknown" rate.
    """
    return cost_of(mailbox.license_type, mailbox.total_size_mb, model)


def cost_of(license_type: str, total_size_mb: float, model: CostModel) -> float:
    """:func:`monthly_cost` from the two fields it uses (for rows read without building a mailbox)."""
    gigabytes = total_size_mb / 1024
    return round_money(_licence_rate(license_type, model) + model.per_gb_month * gigabytes)


@dataclass(frozen=True)
class CostSummary:
    """One group of a cost report. ``releasable_*`` = the mailboxes whose holds have all run out (the savings)."""

    key: str
    mailboxes: int
    size_gb: float
    monthly_cost: float
    releasable_mailboxes: int
    releasable_size_gb: float
    releasable_monthly_cost: float

    @property
    def savings(self) -> float:
        """Monthly cost saved by releasing the expired ones."""
        return self.releasable_monthly_cost

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "mailboxes": self.mailboxes,
            "size_gb": self.size_gb,
            "monthly_cost": self.monthly_cost,
            "releasable_mailboxes": self.releasable_mailboxes,
            "releasable_size_gb": self.releasable_size_gb,
            "releasable_monthly_cost": self.releasable_monthly_cost,
        }


COST_GROUPINGS: dict[str, Callable[[InactiveMailbox], str | None]] = {
    "company": lambda m: m.operating_company,
    "department": lambda m: m.department,
    "license": lambda m: m.license_type,
    "total": lambda m: "Total",
}


class _Acc:
    __slots__ = ("count", "mb", "cost", "r_count", "r_mb", "r_cost")

    def __init__(self) -> None:
        self.count = 0
        self.mb = 0.0
        self.cost = Decimal(0)
        self.r_count = 0
        self.r_mb = 0.0
        self.r_cost = Decimal(0)

    def add(self, mailbox: InactiveMailbox) -> None:
        mb = mailbox.total_size_mb
        cost = Decimal(repr(float(mailbox.monthly_cost)))
        self.count += 1
        self.mb += mb
        self.cost += cost
        if mailbox.releasable:
            self.r_count += 1
            self.r_mb += mb
            self.r_cost += cost

    def summary(self, key: str) -> CostSummary:
        return CostSummary(
            key=key,
            mailboxes=self.count,
            size_gb=round(self.mb / 1024, 2),
            monthly_cost=round_money(self.cost),
            releasable_mailboxes=self.r_count,
            releasable_size_gb=round(self.r_mb / 1024, 2),
            releasable_monthly_cost=round_money(self.r_cost),
        )


def summarise_costs(mailboxes: Iterable[InactiveMailbox], by: str = "company") -> list[CostSummary]:
    """One :class:`CostSummary` per value of ``by`` ("company", "department", "license" or "total"), sorted by key
    (case-insensitively, :data:`UNASSIGNED` last). Uses each mailbox's stored ``monthly_cost`` and ``releasable``
    (filled by :func:`imm.domain.analyse.analyse`); sums are exact to the cent.
    """
    key_of = COST_GROUPINGS.get(by)
    if key_of is None:
        raise InputError(f"cannot group costs by '{by}' (choose from: {', '.join(COST_GROUPINGS)})")
    groups: dict[str, _Acc] = {}
    for mailbox in mailboxes:
        key = (key_of(mailbox) or "").strip() or UNASSIGNED
        acc = groups.get(key)
        if acc is None:
            acc = groups[key] = _Acc()
        acc.add(mailbox)
    ordered = sorted(groups, key=lambda k: (k == UNASSIGNED, k.casefold(), k))
    return [groups[key].summary(key) for key in ordered]


def total_costs(mailboxes: Iterable[InactiveMailbox]) -> CostSummary:
    """The grand total (key "Total") over ``mailboxes``."""
    acc = _Acc()
    for mailbox in mailboxes:
        acc.add(mailbox)
    return acc.summary("Total")
