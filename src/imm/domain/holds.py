"""Hold decoding (domain.md §2): what keeps an inactive mailbox, in words an administrator understands.

Sources of holds on one mailbox:

- ``LitigationHoldEnabled`` (+ ``LitigationHoldDuration``, ``LitigationHoldDate``) → ``litigation``;
- each mailbox ``InPlaceHolds`` value, by prefix: ``UniH<guid>`` eDiscovery case hold, bare 32-hex or
  ``cld<hex>`` legacy In-Place Hold, ``mbx<hex>:n`` / ``skp<hex>:n`` retention policy naming the mailbox
  (Exchange / Skype for Business locations), ``-mbx<hex>`` exclusion from an org-wide policy;
- each ``Get-OrganizationConfig`` ``InPlaceHolds`` value ``mbx…:n`` / ``skp…:n`` (org-wide policy that holds every
  mailbox unless the mailbox carries the matching ``-mbx`` exclusion); ``grp…:n`` org entries are for Groups and
  Teams channel messages and are not applied to user mailboxes;
- the flags ``ComplianceTagHoldApplied`` (retain-type label), ``DelayHoldApplied``, ``DelayReleaseHoldApplied``.

``RetentionHoldEnabled`` (MRM suspended) and ``ElcProcessingDisabled`` are **not** holds and never appear here.

The action suffix ``:1``/``:2``/``:3`` is delete only / retain only / retain then delete; a delete-only policy does
not keep a mailbox inactive (domain.md §1), so its hold has ``preserves=False``.

Stable short names (:func:`hold_types`, stored in the cache's ``hold_types`` and accepted by ``--hold-type``) are
the :class:`HoldKind` values of the holds that preserve the mailbox:
``litigation``, ``ediscovery``, ``inplace``, ``retention-policy``, ``skype-policy``, ``org-policy``, ``label``,
``delay``, ``delay-release``, ``unknown``. (``org-policy-group`` and ``excluded-org-policy`` never preserve a
mailbox and so never appear in ``hold_types``; they do appear in ``hold_details``.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from imm.data.models import InactiveMailbox
from imm.domain.parsing import normalise_guid, parse_datetime, parse_timespan_days, strip_prefix_guid
from imm.errors import InputError

__all__ = [
    "Hold",
    "HoldAction",
    "HoldKind",
    "PolicyInfo",
    "decode_hold",
    "decode_holds",
    "dashed_guid",
    "hold_types",
    "HOLD_TYPE_NAMES",
    "PRESERVING_HOLD_TYPES",
]


class HoldKind(StrEnum):
    """What a hold is. The value is the stable short name used in ``hold_types`` and ``--hold-type``."""

    LITIGATION = "litigation"
    EDISCOVERY = "ediscovery"
    INPLACE_LEGACY = "inplace"
    RETENTION_POLICY = "retention-policy"
    SKYPE_POLICY = "skype-policy"
    ORG_POLICY = "org-policy"
    ORG_POLICY_GROUP = "org-policy-group"
    EXCLUDED_ORG_POLICY = "excluded-org-policy"
    COMPLIANCE_TAG = "label"
    DELAY = "delay"
    DELAY_RELEASE = "delay-release"
    UNKNOWN = "unknown"


HOLD_TYPE_NAMES: tuple[str, ...] = tuple(kind.value for kind in HoldKind)
# The kinds that can keep a mailbox, so appear in ``hold_types`` (what ``--hold-type`` completes and names).
PRESERVING_HOLD_TYPES: tuple[str, ...] = tuple(
    name for name in HOLD_TYPE_NAMES if name not in {HoldKind.ORG_POLICY_GROUP, HoldKind.EXCLUDED_ORG_POLICY}
)


class HoldAction(StrEnum):
    """The retention action of a policy hold, from the ``:1``/``:2``/``:3`` suffix."""

    DELETE_ONLY = "delete-only"  # :1
    RETAIN = "retain"  # :2
    RETAIN_THEN_DELETE = "retain-then-delete"  # :3


_ACTION_BY_SUFFIX = {"1": HoldAction.DELETE_ONLY, "2": HoldAction.RETAIN, "3": HoldAction.RETAIN_THEN_DELETE}
_ACTION_TEXT = {
    HoldAction.DELETE_ONLY: "delete only, which does not keep the mailbox",
    HoldAction.RETAIN: "retain only",
    HoldAction.RETAIN_THEN_DELETE: "retain then delete",
}


@dataclass(frozen=True)
class PolicyInfo:
    """What the compliance endpoint says about one policy (retention or case hold), keyed by normalised GUID.

    ``kind`` is "retention" (Get-RetentionCompliancePolicy), "app" (Get-AppRetentionCompliancePolicy: Teams private
    channels, Viva Engage and other apps) or "case-hold" (Get-CaseHoldPolicy); other strings are kept as given.
    ``locked`` is Preservation Lock (RestrictiveRetention); None when it could not be read (the policy cmdlet was
    refused): unknown, never "not locked". ``retention_days`` None = unlimited, unless ``duration_known`` is False
    (the rule cmdlet was refused). ``name`` "" = not known.
    ``scope_all`` = the Exchange location is "All" (an org-wide policy). ``workloads``: the locations it covers
    (``exchange``, ``teams-chat``, ``public-folders``, ``skype``, ``groups``, or an app policy's applications such as
    ``User:MicrosoftTeams``); empty = not known. ``adaptive``: IsAdaptivePolicy (its members come from adaptive
    scopes, ``scopes``). ``label``: a retention label policy (its rule publishes or applies a label).
    """

    guid: str
    name: str = ""
    kind: str = "retention"
    locked: bool | None = False
    enabled: bool = True
    retention_days: int | None = None
    action: HoldAction | None = None
    scope_all: bool = False
    workloads: tuple[str, ...] = ()
    adaptive: bool = False
    label: bool = False
    scopes: tuple[str, ...] = ()
    duration_known: bool = True

    @property
    def teams_chat_only(self) -> bool:
        """Covers Teams chats and no Exchange mail (its hold stays on the mailbox that stores the chats)."""
        return "teams-chat" in self.workloads and "exchange" not in self.workloads

    @property
    def public_folders_only(self) -> bool:
        """Covers Exchange public folders and nothing a user mailbox holds."""
        return bool(self.workloads) and set(self.workloads) <= {"public-folders"}


@dataclass(frozen=True)
class Hold:
    """One decoded hold. ``guid`` is the normalised policy GUID (32 lower-case hex) or None (litigation, flags).

    ``preserves``: does this hold keep the mailbox inactive. ``org_wide``: it came from the organization config.
    ``policy_known``: the policy was found in the compliance endpoint's list (so ``policy_name``, ``locked`` and
    ``retention_days`` are facts, not defaults). ``locked`` is None for a retention policy whose Preservation
    Lock could not be read (unknown, not unlocked). ``since``: when the hold was placed, if known (litigation).
    ``duration_days``: litigation duration, or the policy's retention duration when known; None = unlimited or
    unknown (``policy_known`` tells which for policies).
    """

    kind: HoldKind
    raw: str
    guid: str | None = None
    action: HoldAction | None = None
    preserves: bool = True
    duration_days: int | None = None
    description: str = ""
    policy_name: str | None = None
    locked: bool | None = False
    org_wide: bool = False
    policy_known: bool = False
    since: datetime | None = None
    # how the policy is released: "" a static retention policy, "adaptive" (change its scope), "app" (an app
    # retention policy: Set-AppRetentionCompliancePolicy), "teams-chat" (a Teams chats policy: a chat exception)
    policy_scope: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form stored in ``InactiveMailbox.hold_details``."""
        return {
            "kind": self.kind.value,
            "raw": self.raw,
            "guid": self.guid,
            "action": None if self.action is None else self.action.value,
            "preserves": self.preserves,
            "duration_days": self.duration_days,
            "description": self.description,
            "policy_name": self.policy_name,
            "locked": self.locked,
            "org_wide": self.org_wide,
            "policy_known": self.policy_known,
            "since": None if self.since is None else self.since.isoformat(),
            "policy_scope": self.policy_scope,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Hold:
        """The inverse of :meth:`to_dict` (for holds read back from the cache)."""
        try:
            kind = HoldKind(data.get("kind", "unknown"))
        except ValueError:
            kind = HoldKind.UNKNOWN
        action_value = data.get("action")
        try:
            action = HoldAction(action_value) if action_value else None
        except ValueError:
            action = None
        duration = data.get("duration_days")
        return cls(
            kind=kind,
            raw=str(data.get("raw") or ""),
            guid=data.get("guid") or None,
            action=action,
            preserves=bool(data.get("preserves", True)),
            duration_days=None if duration is None else int(duration),
            description=str(data.get("description") or ""),
            policy_name=data.get("policy_name") or None,
            locked=None if data.get("locked", False) is None else bool(data.get("locked")),
            org_wide=bool(data.get("org_wide", False)),
            policy_known=bool(data.get("policy_known", False)),
            since=parse_datetime(data.get("since")),
            policy_scope=str(data.get("policy_scope") or ""),
        )


def dashed_guid(guid: str) -> str:
    """``7cfb3034…`` (32 hex) → ``7cfb3034-5d45-4ac0-a989-ab3041051209``; other text unchanged."""
    g = normalise_guid(guid)
    if len(g) == 32 and _HEX32.fullmatch(g):
        return f"{g[:8]}-{g[8:12]}-{g[12:16]}-{g[16:20]}-{g[20:]}"
    return guid


_HEX32 = re.compile(r"[0-9a-f]{32}")
_GUID_TEXT = re.compile(r"^\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$")


def _label(name: str | None, guid: str | None) -> str:
    if name:
        return f"'{name}'"
    return dashed_guid(guid) if guid else "(unknown policy)"


def _unnamed(guid: str | None) -> str:
    """The label of a policy whose name could not be read: its GUID and that the name is unknown."""
    return f"{_label(None, guid)} (policy name unknown)"


def _days(days: int) -> str:
    return f"{days:,} day" + ("" if days == 1 else "s")


# App names of -Applications (New-AppRetentionCompliancePolicy.md: "User:MicrosoftTeams" is set up for Teams private
# channel messages in its examples; "User:Yammer" / VivaEngage are Viva Engage messages).
_APP_WORDS = {
    "microsoftteams": "Teams private channel messages",
    "yammer": "Viva Engage messages",
    "vivaengage": "Viva Engage messages",
    "exchange": "Exchange mail",
    "microsoftteamscalllog": "Teams call logs",
}


def app_words(applications: Iterable[str]) -> str:
    """``User:MicrosoftTeams,Group:VivaEngage`` → "Teams private channel messages, Viva Engage messages"."""
    names: list[str] = []
    for value in applications:
        for part in str(value).split(","):
            app = part.split(":", 1)[-1].strip()
            if app:
                names.append(_APP_WORDS.get(app.lower(), app))
    return ", ".join(dict.fromkeys(names)) or "apps"


def _policy_head(kind: HoldKind, label: str, info: PolicyInfo | None) -> str | None:
    """The description's head for the policy kinds Microsoft distinguishes by their locations and kind
    (identify-a-hold article: an ``mbx`` entry covers mailboxes, public folders and Teams 1xN chats; label policies
    show as ``mbx…:1``), or None for a plain retention policy."""
    if info is None:
        return None
    scope = "Org-wide " if kind is HoldKind.ORG_POLICY else ""
    if info.kind == "app":
        return f"{scope}App retention policy {label} for {app_words(info.workloads)} (Get-AppRetentionCompliancePolicy)"
    if info.label:
        return (
            f"{scope}Retention label policy {label}: it publishes or applies retention labels (the hold a label "
            "places shows as ComplianceTagHoldApplied), it is not a delete-only retention policy"
        )
    if info.public_folders_only:
        return f"{scope}Retention policy {label} for Exchange public folders, not user mailboxes"
    if info.teams_chat_only:
        return f"{scope}Retention policy {label} for the Teams chats stored in this mailbox, not its mail"
    return None


def _policy_description(
    kind: HoldKind, guid: str, action: HoldAction | None, info: PolicyInfo | None, looked_up: bool = False
) -> str:
    """The hold in words; ``looked_up``: the policy list was consulted, so a missing name or lock is unknown."""
    if info and info.name:
        label = _label(info.name, guid)
    else:
        label = _unnamed(guid) if looked_up else _label(None, guid)
    special = _policy_head(kind, label, info) if kind is not HoldKind.ORG_POLICY_GROUP else None
    if special is not None:
        head = special
    elif kind is HoldKind.RETENTION_POLICY:
        head = f"Retention policy {label} that includes this mailbox"
    elif kind is HoldKind.SKYPE_POLICY:
        head = f"Retention policy {label} for this user's Skype for Business conversations"
    elif kind is HoldKind.ORG_POLICY:
        head = f"Org-wide retention policy {label} that covers every mailbox"
    else:  # ORG_POLICY_GROUP
        head = f"Org-wide retention policy {label} for Microsoft 365 Groups and Teams channels, not user mailboxes"
    if action is None:
        what = "action unknown, treated as retaining"
    elif action is HoldAction.DELETE_ONLY:
        what = _ACTION_TEXT[action]
    elif info is not None and info.duration_known:
        span = "without limit" if info.retention_days is None else f"for {_days(info.retention_days)}"
        what = f"retain {span}" + (", then delete" if action is HoldAction.RETAIN_THEN_DELETE else "")
    else:
        what = _ACTION_TEXT[action]
    text = head if info is not None and info.label else f"{head} ({what})"
    if info is not None and info.adaptive:
        scopes = ", ".join(f"'{s}'" for s in info.scopes)
        text += f"; adaptive scope {scopes}" if scopes else "; adaptive scopes"
    if info is not None and info.locked:
        text += "; Preservation Lock: it cannot be removed"
    elif looked_up and (info is None or info.locked is None) and kind is not HoldKind.ORG_POLICY_GROUP:
        text += "; Preservation Lock unknown"
    if info is not None and not info.enabled:
        text += "; the policy is disabled"
    return text


@lru_cache(maxsize=65536)
def decode_hold(raw: str) -> Hold:
    """Decode one InPlaceHolds value (mailbox or organization) without policy details.

    Mailbox-level ``mbx``/``skp`` values are policies that name the mailbox; :func:`decode_holds` turns org
    config values into ``ORG_POLICY``. Anything unrecognised is ``UNKNOWN`` and, to be safe, preserving.
    """
    text = str(raw).strip()
    lower = text.lower()
    if lower.startswith("-"):
        guid = strip_prefix_guid(text)
        return Hold(
            kind=HoldKind.EXCLUDED_ORG_POLICY,
            raw=text,
            guid=guid,
            preserves=False,
            description=f"Excluded from org-wide retention policy {_label(None, guid)}",
        )
    if lower.startswith("unih"):
        guid = strip_prefix_guid(text)
        return Hold(
            kind=HoldKind.EDISCOVERY,
            raw=text,
            guid=guid,
            description=f"eDiscovery case hold {_label(None, guid)}: kept until the case hold is released",
        )
    if lower.startswith(("mbx", "skp", "grp")):
        guid = strip_prefix_guid(text)
        kind = {"mbx": HoldKind.RETENTION_POLICY, "skp": HoldKind.SKYPE_POLICY, "grp": HoldKind.ORG_POLICY_GROUP}[
            lower[:3]
        ]
        suffix = lower.rsplit(":", 1)[1].strip() if ":" in lower else ""
        action = _ACTION_BY_SUFFIX.get(suffix)
        preserves = kind is not HoldKind.ORG_POLICY_GROUP and action is not HoldAction.DELETE_ONLY
        return Hold(
            kind=kind,
            raw=text,
            guid=guid,
            action=action,
            preserves=preserves,
            description=_policy_description(kind, guid, action, None),
        )
    if lower.startswith("cld") or _GUID_TEXT.match(lower):
        guid = strip_prefix_guid(text)
        return Hold(
            kind=HoldKind.INPLACE_LEGACY,
            raw=text,
            guid=guid,
            # the cld prefix is kept: Get-MailboxSearch -InPlaceHoldIdentity takes the GUID with it (domain.md §2)
            description=f"Legacy In-Place Hold {text if lower.startswith('cld') else dashed_guid(guid)} (a retired "
            "feature: it can only be removed)",
        )
    return Hold(
        kind=HoldKind.UNKNOWN,
        raw=text,
        description=f"Unrecognised hold value '{text}' (treated as keeping the mailbox)",
    )


def litigation_hold(mailbox: InactiveMailbox) -> Hold | None:
    """The Litigation Hold of a mailbox, or None when it is off."""
    if not mailbox.litigation_hold_enabled:
        return None
    return _litigation(mailbox.litigation_hold_duration, mailbox.litigation_hold_date)


@lru_cache(maxsize=65536)
def _litigation(raw_duration: str | None, since: datetime | None) -> Hold:
    try:
        days = parse_timespan_days(raw_duration)
    except InputError:
        days = None  # an unreadable duration is treated as unlimited (the safe reading)
    start = f" from {since.date().isoformat()}" if since else ""
    if days is None:
        description = f"Unlimited Litigation Hold{start}: kept until the hold is removed"
    else:
        description = f"Litigation Hold for {_days(days)}{start}"
    return Hold(
        kind=HoldKind.LITIGATION,
        raw=f"LitigationHoldEnabled=True; LitigationHoldDuration={raw_duration or 'Unlimited'}",
        duration_days=days,
        description=description,
        since=since,
    )


_FLAG_HOLDS = (
    (
        "compliance_tag_hold",
        HoldKind.COMPLIANCE_TAG,
        "ComplianceTagHoldApplied=True",
        "Retention label hold: some items carry a retain-type retention label",
    ),
    (
        "delay_hold",
        HoldKind.DELAY,
        "DelayHoldApplied=True",
        "Delay hold: a hold was removed and Exchange keeps the Outlook data for 30 more days",
    ),
    (
        "delay_release_hold",
        HoldKind.DELAY_RELEASE,
        "DelayReleaseHoldApplied=True",
        "Delay release hold: a hold was removed and Exchange keeps Teams, Forms and Viva Engage data for 30 more days",
    ),
)
_FLAG_HOLD_OBJECTS = {
    attr: Hold(kind=kind, raw=raw, description=description) for attr, kind, raw, description in _FLAG_HOLDS
}


def _with_policy(hold: Hold, info: PolicyInfo | None, org_wide: bool) -> Hold:
    """:func:`_apply_policy`, cached (the same few policies recur across every mailbox)."""
    try:
        return _apply_policy_cached(hold, info, org_wide)
    except TypeError:  # a PolicyInfo built with an unhashable value: still correct, just not cached
        return _apply_policy(hold, info, org_wide)


def _apply_policy(hold: Hold, info: PolicyInfo | None, org_wide: bool) -> Hold:
    """The hold with what the policy list knows (name, lock, duration, action when the suffix is missing).

    ``org_wide`` marks a value from the organization config: ``mbx``/``skp`` there become ``ORG_POLICY``.
    """
    kind = hold.kind
    if org_wide and kind in (HoldKind.RETENTION_POLICY, HoldKind.SKYPE_POLICY):
        kind = HoldKind.ORG_POLICY
    if kind in _POLICY_KINDS:
        action = hold.action if hold.action is not None else (info.action if info else None)
        return replace(
            hold,
            kind=kind,
            action=action,
            preserves=kind is not HoldKind.ORG_POLICY_GROUP
            and action is not HoldAction.DELETE_ONLY
            and not (info is not None and info.public_folders_only),
            policy_scope=_scope_of(info),
            duration_days=info.retention_days if info else None,
            policy_name=(info.name or None) if info else None,
            locked=(None if info.locked is None else bool(info.locked)) if info else None,
            org_wide=org_wide,
            policy_known=info is not None,
            description=_policy_description(kind, hold.guid or "", action, info, looked_up=True),
        )
    named = _label(info.name, hold.guid) if info and info.name else None
    if named is None and hold.kind is HoldKind.EDISCOVERY and hold.guid:
        named = _unnamed(hold.guid)  # the case hold policy was not in the list (or could not be read)
    description = hold.description.replace(_label(None, hold.guid), named, 1) if named else hold.description
    if info is None:
        return replace(hold, org_wide=org_wide, description=description)
    if hold.kind is HoldKind.INPLACE_LEGACY and hold.raw.lower().startswith("cld") and info.name:
        description = description.replace(hold.raw, f"'{info.name}' ({hold.raw})", 1)
    if not info.enabled:
        description += "; the policy is disabled"
    return replace(
        hold,
        policy_name=info.name or None,
        policy_known=True,
        locked=bool(info.locked),
        org_wide=org_wide,
        description=description,
    )


def _scope_of(info: PolicyInfo | None) -> str:
    """How a policy hold is released (see :attr:`Hold.policy_scope`)."""
    if info is None:
        return ""
    if info.adaptive:
        return "adaptive"
    if info.kind == "app":
        return "app"
    if info.teams_chat_only:
        return "teams-chat"
    return ""


_apply_policy_cached = lru_cache(maxsize=65536)(_apply_policy)
_POLICY_KINDS = frozenset(
    {HoldKind.RETENTION_POLICY, HoldKind.SKYPE_POLICY, HoldKind.ORG_POLICY, HoldKind.ORG_POLICY_GROUP}
)


def decode_holds(mailbox: InactiveMailbox, org_holds: Iterable[str], policies: Mapping[str, PolicyInfo]) -> list[Hold]:
    """Every hold on ``mailbox``: litigation, its InPlaceHolds, the org-wide policies not excluded, the flags.

    ``org_holds`` are the ``Get-OrganizationConfig`` InPlaceHolds values; ``policies`` maps normalised policy GUIDs
    (see :func:`imm.domain.parsing.normalise_guid`) to what the compliance endpoint said. A value repeated on
    the mailbox, or at org level and on the mailbox, is listed once (the mailbox entry wins). ``-mbx<guid>``
    excludes the org's ``mbx<guid>`` entry, ``-skp<guid>`` its ``skp<guid>`` entry. A policy with both Exchange and
    Skype locations gives two holds (``mbx`` and ``skp``): each needs its own location removed.
    """
    holds: list[Hold] = []
    lit = litigation_hold(mailbox)
    if lit is not None:
        holds.append(lit)
    excluded: set[tuple[str, str]] = set()
    seen: set[tuple[str, str]] = set()
    for raw in mailbox.in_place_holds:
        if not raw or not str(raw).strip():
            continue
        hold = decode_hold(str(raw))
        guid = hold.guid
        if guid:
            key = _family(hold), guid
            if hold.kind is HoldKind.EXCLUDED_ORG_POLICY:
                excluded.add(key)
            elif key in seen:
                continue
            seen.add(key)
            hold = _with_policy(hold, policies.get(guid), False)
        holds.append(hold)
    for raw in org_holds:
        if not raw or not str(raw).strip():
            continue
        hold = decode_hold(str(raw))
        if hold.kind in (HoldKind.ORG_POLICY_GROUP, HoldKind.EXCLUDED_ORG_POLICY):
            continue  # grp policies hold Groups and Teams channels, not user mailboxes
        guid = hold.guid or ""
        key = _family(hold), guid
        if guid and (key in excluded or key in seen):
            continue
        seen.add(key)
        # Unrecognised org values are kept as preserving holds: calling a mailbox deletable is the risky side.
        holds.append(_with_policy(hold, policies.get(guid) if guid else None, True))
    for attr, _kind, _raw, _description in _FLAG_HOLDS:
        if getattr(mailbox, attr):
            holds.append(_FLAG_HOLD_OBJECTS[attr])
    return holds


@lru_cache(maxsize=65536)
def _family(hold: Hold) -> str:
    """``mbx``/``skp``/``grp`` for policy values (with or without the exclusion mark), else the kind."""
    text = hold.raw.lstrip("-")[:3].lower()
    return text if text in ("mbx", "skp", "grp") else hold.kind.value


_KIND_ORDER = {kind: (index, kind.value) for index, kind in enumerate(HoldKind)}


def hold_types(holds: Iterable[Hold]) -> list[str]:
    """The short names of the kinds of preserving holds, each once, in :class:`HoldKind` order."""
    present = sorted({_KIND_ORDER[hold.kind] for hold in holds if hold.preserves})
    return [name for _index, name in present]
