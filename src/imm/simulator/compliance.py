"""The Security & Compliance cmdlets the simulated tenant serves (retention and case hold policies)."""

from __future__ import annotations

from typing import Any

from imm.simulator import render
from imm.simulator.binding import Cmdlet, Invocation, Param, Result
from imm.simulator.model import Policy, invalid, not_found


def _retention(inv: Invocation) -> list[Policy]:
    tenant = inv.tenant
    identity = inv.get("Identity")
    if identity is not None:
        return [tenant.find_policy(identity, "retention")]
    return [p for p in tenant.policies.values() if p.kind == "retention"]


def get_retention_policy(inv: Invocation) -> Result:
    detail = bool(inv.get("DistributionDetail"))
    tenant = inv.tenant
    return Result(_retention(inv), lambda p: render.retention_policy(tenant, p, detail))


def get_retention_rule(inv: Invocation) -> Result:
    tenant = inv.tenant
    policies = [p for p in tenant.policies.values() if p.kind == "retention"]
    if inv.get("Policy"):
        policies = [tenant.find_policy(inv.params["Policy"], "retention")]
    if inv.get("Identity"):
        wanted = inv.params["Identity"].strip().lower()
        policies = [
            p for p in policies if wanted in (f"{p.name} rule".lower(), render.retention_rule(p)["Guid"].lower())
        ]
        if not policies:
            raise not_found(inv.params["Identity"])
    return Result(policies, render.retention_rule)


def set_retention_policy(inv: Invocation) -> Result:
    tenant = inv.tenant
    policy = tenant.find_policy(inv.params["Identity"], "retention")
    warnings: list[str] = []
    if inv.get("AddTeamsChatLocationException"):
        if policy.location_kind != "teams-chat":
            raise invalid(f"The policy '{policy.name}' has no Teams chat locations.")  # wording unconfirmed
        warnings += tenant.exclude_deleted(
            policy, inv.params["AddTeamsChatLocationException"], inv.get("DeletedResources")
        )
    if inv.get("RemoveExchangeLocation") and policy.adaptive_scopes:
        # -RemoveExchangeLocation is in the static ("Identity") parameter set only (Set-RetentionCompliancePolicy.md)
        raise invalid(
            f"The policy '{policy.name}' uses adaptive scopes: change its scopes instead of its Exchange locations."
        )  # wording unconfirmed
    if inv.get("RemoveExchangeLocation"):
        if policy.target != "mbx" or policy.location_kind != "exchange":
            warnings.append(f"The policy '{policy.name}' has no Exchange locations.")
        else:
            warnings += tenant.remove_policy_location(policy, inv.params["RemoveExchangeLocation"])
    if inv.get("RemoveSkypeLocation"):
        if policy.target != "skp":
            warnings.append(f"The policy '{policy.name}' has no Skype locations.")
        else:
            warnings += tenant.remove_policy_location(policy, inv.params["RemoveSkypeLocation"])
    if inv.get("AddExchangeLocationException"):
        warnings += tenant.add_policy_exception(policy, inv.params["AddExchangeLocationException"])
    return Result([], warnings=warnings)


def get_app_retention_policy(inv: Invocation) -> Result:
    tenant = inv.tenant
    detail = bool(inv.get("DistributionDetail"))
    identity = inv.get("Identity")
    policies = (
        [tenant.find_policy(identity, "app")]
        if identity is not None
        else [p for p in tenant.policies.values() if p.kind == "app"]
    )
    return Result(policies, lambda p: render.retention_policy(tenant, p, detail))


def get_app_retention_rule(inv: Invocation) -> Result:
    tenant = inv.tenant
    return Result([p for p in tenant.policies.values() if p.kind == "app"], render.retention_rule)


def set_app_retention_policy(inv: Invocation) -> Result:
    tenant = inv.tenant
    policy = tenant.find_policy(inv.params["Identity"], "app")
    warnings: list[str] = []
    if inv.get("AddExchangeLocationException"):
        warnings += tenant.exclude_deleted(
            policy, inv.params["AddExchangeLocationException"], inv.get("DeletedResources")
        )
    return Result([], warnings=warnings)


def _case_holds(inv: Invocation) -> list[Policy]:
    tenant = inv.tenant
    policies = [p for p in tenant.policies.values() if p.kind == "casehold"]
    if inv.get("Identity"):
        policies = [tenant.find_policy(inv.params["Identity"], "casehold")]
    if inv.get("Case"):
        wanted = inv.params["Case"].strip().lower()
        policies = [p for p in policies if wanted in (p.case_id.lower(), p.name.lower())]
    return policies


def get_case_hold_policy(inv: Invocation) -> Result:
    detail = bool(inv.get("DistributionDetail"))
    tenant = inv.tenant
    return Result(_case_holds(inv), lambda p: render.case_hold_policy(tenant, p, detail))


def set_case_hold_policy(inv: Invocation) -> Result:
    tenant = inv.tenant
    policy = tenant.find_policy(inv.params["Identity"], "casehold")
    warnings: list[str] = []
    if inv.get("RemoveExchangeLocation"):
        warnings += tenant.remove_policy_location(policy, inv.params["RemoveExchangeLocation"])
    return Result([], warnings=warnings)


def _confirm_set(params: dict[str, Any]) -> str:
    return f'Are you sure you want to perform this action?\nModifying policy "{params.get("Identity")}".'


CMDLETS: dict[str, Cmdlet] = {
    c.name: c
    for c in (
        Cmdlet(
            "Get-RetentionCompliancePolicy",
            (Param("Identity"), Param("DistributionDetail", "switch"), Param("ExcludeTeamsPolicy", "switch")),
            get_retention_policy,
        ),
        Cmdlet("Get-RetentionComplianceRule", (Param("Identity"), Param("Policy")), get_retention_rule),
        Cmdlet(
            "Set-RetentionCompliancePolicy",
            (
                Param("Identity", "string", True),
                Param("RemoveExchangeLocation", "strings"),
                Param("AddExchangeLocationException", "strings"),
                Param("RemoveSkypeLocation", "strings"),
                Param("AddTeamsChatLocationException", "strings"),
                Param("DeletedResources"),
            ),
            set_retention_policy,
            confirm=_confirm_set,
        ),
        Cmdlet(
            "Get-AppRetentionCompliancePolicy",
            (Param("Identity"), Param("DistributionDetail", "switch"), Param("RetentionRuleTypes", "switch")),
            get_app_retention_policy,
        ),
        Cmdlet("Get-AppRetentionComplianceRule", (Param("Identity"), Param("Policy")), get_app_retention_rule),
        Cmdlet(
            "Set-AppRetentionCompliancePolicy",
            (
                Param("Identity", "string", True),
                Param("AddExchangeLocationException", "strings"),
                Param("DeletedResources"),
            ),
            set_app_retention_policy,
            confirm=_confirm_set,
        ),
        Cmdlet(
            "Get-CaseHoldPolicy",
            (Param("Identity"), Param("Case"), Param("DistributionDetail", "switch")),
            get_case_hold_policy,
        ),
        Cmdlet(
            "Set-CaseHoldPolicy",
            (Param("Identity", "string", True), Param("RemoveExchangeLocation", "strings")),
            set_case_hold_policy,
            confirm=_confirm_set,
        ),
    )
}
