"""Security & Compliance records → :class:`~imm.domain.holds.PolicyInfo` (names, Preservation Lock, durations).

Get-RetentionCompliancePolicy gives a policy's name, ``RestrictiveRetention`` (Preservation Lock), ``Enabled`` and
``ExchangeLocation``; Get-RetentionComplianceRule gives its ``RetentionDuration`` (days, or ``Unlimited``) and
``RetentionComplianceAction`` (Keep / KeepAndDelete / Delete); Get-CaseHoldPolicy gives eDiscovery case hold
policies. Every value goes through the readers of :mod:`imm.domain.parsing`. The cache's ``policies`` rows are
written and read back through :func:`policy_row` / :func:`policy_from_row`, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from imm.domain.holds import HoldAction, PolicyInfo
from imm.domain.parsing import or_default, parse_bool, parse_guid, parse_strings, parse_timespan_days

__all__ = ["policies_from_records", "policy_action", "policy_from_row", "policy_row", "rule_action"]


def policies_from_records(
    policies: Iterable[Mapping[str, Any]],
    rules: Iterable[Mapping[str, Any]],
    case_holds: Iterable[Mapping[str, Any]],
) -> dict[str, PolicyInfo]:
    """PolicyInfo by normalised GUID from Get-RetentionCompliancePolicy, -Rule and Get-CaseHoldPolicy records."""
    rules_by_policy: dict[str, Mapping[str, Any]] = {}
    for rule in rules:
        for key in (rule.get("Policy"), rule.get("PolicyId"), rule.get("ParentPolicyName")):
            if key:  # a rule names its policy by GUID or by name
                rules_by_policy.setdefault(parse_guid(key) or str(key).strip().lower(), rule)
    out: dict[str, PolicyInfo] = {}
    for policy in policies:
        guid = _policy_guid(policy)
        if not guid:
            continue
        name = str(policy.get("Name") or "")
        rule = rules_by_policy.get(guid) or rules_by_policy.get(name.lower()) or {}
        locations = [v.lower() for v in parse_strings(policy.get("ExchangeLocation"))]
        out[guid] = PolicyInfo(
            guid=guid,
            name=name,
            kind="retention",
            locked=or_default(parse_bool, policy.get("RestrictiveRetention"), False),
            enabled=or_default(parse_bool, policy.get("Enabled"), True),
            retention_days=_days(rule.get("RetentionDuration")),
            action=rule_action(rule.get("RetentionComplianceAction")),
            scope_all="all" in locations,
        )
    for policy in case_holds:
        guid = _policy_guid(policy)
        if not guid:
            continue
        out[guid] = PolicyInfo(
            guid=guid,
            name=str(policy.get("Name") or ""),
            kind="case-hold",
            locked=False,
            enabled=or_default(parse_bool, policy.get("Enabled"), True),
            retention_days=None,
            action=None,
            scope_all=False,
        )
    return out


def _policy_guid(policy: Mapping[str, Any]) -> str:
    return parse_guid(policy.get("Guid") or policy.get("ExchangeObjectId") or policy.get("Identity"))


def _days(value: Any) -> int | None:
    try:
        return parse_timespan_days(value)
    except ValueError:  # InputError is a ValueError too: an unreadable duration is unknown
        return None


def rule_action(value: Any) -> HoldAction | None:
    """Keep → retain, KeepAndDelete → retain then delete, Delete → delete only (the :2/:3/:1 suffixes)."""
    return {
        "keep": HoldAction.RETAIN,
        "keepanddelete": HoldAction.RETAIN_THEN_DELETE,
        "delete": HoldAction.DELETE_ONLY,
    }.get(str(value or "").strip().lower())


def policy_action(value: Any) -> HoldAction | None:
    """A HoldAction from its cached text (``"retain"``…), None when empty or unknown."""
    try:
        return HoldAction(value) if value else None
    except ValueError:
        return None


def policy_row(policy: PolicyInfo) -> dict[str, Any]:
    """The ``policies`` cache row of a policy (what :class:`imm.data.org_state.OrgStateStore` writes)."""
    return {
        "guid": policy.guid,
        "name": policy.name,
        "kind": str(policy.kind),
        "locked": int(bool(policy.locked)),
        "enabled": int(bool(policy.enabled)),
        "retention_days": policy.retention_days,
        "retention_action": None if policy.action is None else str(getattr(policy.action, "value", policy.action)),
        "scope_all": int(bool(policy.scope_all)),
    }


def policy_from_row(row: Mapping[str, Any]) -> PolicyInfo:
    """A policy as the cache holds it (see :func:`policy_row`)."""
    return PolicyInfo(
        guid=str(row["guid"]),
        name=row["name"] or "",
        kind=row["kind"] or "retention",
        locked=bool(row["locked"]),
        enabled=bool(row["enabled"]),
        retention_days=row["retention_days"],
        action=policy_action(row["retention_action"]),
        scope_all=bool(row["scope_all"]),
    )
