"""Security & Compliance records → :class:`~imm.domain.holds.PolicyInfo` (names, Preservation Lock, durations).

Get-RetentionCompliancePolicy gives a policy's name, ``RestrictiveRetention`` (Preservation Lock), ``Enabled`` and
``ExchangeLocation``; Get-RetentionComplianceRule gives its ``RetentionDuration`` (days, or ``Unlimited``) and
``RetentionComplianceAction`` (Keep / KeepAndDelete / Delete); Get-CaseHoldPolicy gives eDiscovery case hold
policies. Every value goes through the readers of :mod:`imm.domain.parsing`. The cache's ``policies`` rows are
written and read back through :func:`policy_row` / :func:`policy_from_row`, so the two never disagree.

Each read stands alone (an account may hold Retention Management but not Hold, or the reverse): what was read is
used, and for what was refused the last known facts stay, marked as such. A Preservation Lock once seen stays (no
one can turn it off: "Use Preservation Lock to restrict changes to retention policies",
learn.microsoft.com/purview/retention-preservation-lock); one never read, or seen absent before, is unknown
(``locked`` None), never shown as absent. Durations and actions not read are unknown (``duration_known``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from imm.domain.holds import HoldAction, PolicyInfo
from imm.domain.parsing import or_default, parse_bool, parse_guid, parse_strings, parse_timespan_days

__all__ = ["policies_from_records", "policy_action", "policy_from_row", "policy_row", "rule_action"]


# The location properties of Get-RetentionCompliancePolicy and what each covers: an org-level ``mbx`` entry holds
# "Exchange mailboxes, Exchange public folders, and 1xN chats in Microsoft Teams" (identify-a-hold article), so the
# policy's own locations tell a mailbox policy from a Teams chats or a public folders one.
_LOCATIONS = (
    ("ExchangeLocation", "exchange"),
    ("TeamsChatLocation", "teams-chat"),
    ("PublicFolderLocation", "public-folders"),
    ("SkypeLocation", "skype"),
    ("ModernGroupLocation", "groups"),
    ("TeamsChannelLocation", "teams-channel"),
)


def _rules_by_policy(rules: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for rule in rules:
        for key in (rule.get("Policy"), rule.get("PolicyId"), rule.get("ParentPolicyName")):
            if key:  # a rule names its policy by GUID or by name
                out.setdefault(parse_guid(key) or str(key).strip().lower(), rule)
    return out


def _policy_info(policy: Mapping[str, Any], rule: Mapping[str, Any], guid: str, kind: str) -> PolicyInfo:
    locations = [v.lower() for v in parse_strings(policy.get("ExchangeLocation"))]
    if kind == "app":  # New-AppRetentionCompliancePolicy -Applications "User:MicrosoftTeams", "User:Yammer"…
        workloads = tuple(str(v) for v in parse_strings(policy.get("Applications")))
    else:
        workloads = tuple(name for key, name in _LOCATIONS if parse_strings(policy.get(key)))
    scopes = tuple(str(v) for v in parse_strings(policy.get("AdaptiveScopeLocation")))
    # A label policy's rule publishes or auto-applies a label (New-RetentionComplianceRule -PublishComplianceTag,
    # -ApplyComplianceTag); its InPlaceHolds entry is mbx…:1 though it is no delete-only policy.
    label = any(str(rule.get(key) or "").strip() for key in ("PublishComplianceTag", "ApplyComplianceTag"))
    return PolicyInfo(
        guid=guid,
        name=str(policy.get("Name") or ""),
        kind=kind,
        locked=or_default(parse_bool, policy.get("RestrictiveRetention"), False),
        enabled=or_default(parse_bool, policy.get("Enabled"), True),
        retention_days=_days(rule.get("RetentionDuration")),
        action=rule_action(rule.get("RetentionComplianceAction")),
        scope_all="all" in locations,
        workloads=workloads,
        adaptive=or_default(parse_bool, policy.get("IsAdaptivePolicy"), False) or bool(scopes),
        label=label,
        scopes=scopes,
    )


def policies_from_records(
    policies: Iterable[Mapping[str, Any]] | None,
    rules: Iterable[Mapping[str, Any]] | None,
    case_holds: Iterable[Mapping[str, Any]] | None,
    app_policies: Iterable[Mapping[str, Any]] | None = (),
    app_rules: Iterable[Mapping[str, Any]] | None = (),
    known: Mapping[str, PolicyInfo] | None = None,
) -> dict[str, PolicyInfo]:
    """PolicyInfo by normalised GUID from Get-RetentionCompliancePolicy, -Rule, Get-CaseHoldPolicy and
    Get-AppRetentionCompliancePolicy, -Rule records (app policies: Teams private channels, Viva Engage; their
    holds can keep an inactive mailbox, domain.md §9).

    A read that was refused is None: its part comes from ``known`` (what an earlier run cached), with what could
    not be read marked unknown (see the module text)."""
    known = known or {}
    out: dict[str, PolicyInfo] = {}
    for kind, records, rule_records in (("retention", policies, rules), ("app", app_policies, app_rules)):
        rules_by_policy = _rules_by_policy(rule_records or ())
        if records is None:
            out.update(_unread(kind, known, rules_by_policy if rule_records is not None else None))
        for policy in records or ():
            guid = _policy_guid(policy)
            if not guid:
                continue
            name = str(policy.get("Name") or "")
            rule = rules_by_policy.get(guid) or rules_by_policy.get(name.lower()) or {}
            info = _policy_info(policy, rule, guid, kind)
            if rule_records is None:  # durations not read now: the last known, else unknown
                before = known.get(guid)
                if before is not None and before.duration_known:
                    info = replace(info, retention_days=before.retention_days, action=before.action)
                else:
                    info = replace(info, retention_days=None, action=None, duration_known=False)
            out[guid] = info
    if case_holds is None:
        out.update({guid: p for guid, p in known.items() if p.kind == "case-hold"})
    for policy in case_holds or ():
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


def _unread(
    kind: str, known: Mapping[str, PolicyInfo], rules_by_policy: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, PolicyInfo]:
    """Policies of ``kind`` when their cmdlet was refused: the names known before, a lock seen before (it cannot
    be turned off), every other lock unknown; durations from the rules when they were read."""
    out: dict[str, PolicyInfo] = {}
    for guid, before in known.items():
        if before.kind != kind:
            continue
        out[guid] = replace(before, locked=True if before.locked else None)
    for key, rule in (rules_by_policy or {}).items():
        if len(key) != 32 or any(c not in "0123456789abcdef" for c in key):
            continue  # a rule naming its policy by name: no GUID to hang it on
        info = out.get(key) or PolicyInfo(guid=key, name="", kind=kind, locked=None)
        out[key] = replace(
            info,
            retention_days=_days(rule.get("RetentionDuration")),
            action=rule_action(rule.get("RetentionComplianceAction")),
            duration_known=True,
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
        "details": {
            "workloads": list(policy.workloads),
            "adaptive": policy.adaptive,
            "label": policy.label,
            "scopes": list(policy.scopes),
            "locked_unknown": policy.locked is None,
            "duration_unknown": not policy.duration_known,
        },
    }


def policy_from_row(row: Mapping[str, Any]) -> PolicyInfo:
    """A policy as the cache holds it (see :func:`policy_row`); ``details`` is a mapping or its JSON text."""
    details: Any = row.get("details") or {}
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            details = {}
    if not isinstance(details, Mapping):
        details = {}
    return PolicyInfo(
        guid=str(row["guid"]),
        name=row["name"] or "",
        kind=row["kind"] or "retention",
        locked=None if details.get("locked_unknown") else bool(row["locked"]),
        duration_known=not details.get("duration_unknown"),
        enabled=bool(row["enabled"]),
        retention_days=row["retention_days"],
        action=policy_action(row["retention_action"]),
        scope_all=bool(row["scope_all"]),
        workloads=tuple(str(v) for v in details.get("workloads") or ()),
        adaptive=bool(details.get("adaptive")),
        label=bool(details.get("label")),
        scopes=tuple(str(v) for v in details.get("scopes") or ()),
    )
