"""The simulated tenant's state and cmdlet semantics as plain Python (domain.md), without HTTP.

``Tenant`` is the ground truth tests read and change: ``mailboxes`` (ExchangeGuid → :class:`Mailbox`, in listing
order), ``policies`` (Guid → :class:`Policy`), ``org_holds``, ``restore_requests``, ``special`` (notable
identities). Every change goes through a method that updates WhenChanged (whole seconds, as AD keeps it) and
marks the record for the state file. Methods raise :class:`CmdletError` with Microsoft's texts.

State file: JSON with the generator inputs (seed, count, generation time) plus the records that changed since, so
even a million-mailbox tenant saves in milliseconds; on load the tenant is regenerated and the changes applied.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imm.simulator.generator import FEDERATED_DOMAINS, GENERATOR_VERSION, generate
from imm.simulator.model import (
    ACTIVE,
    GB,
    INACTIVE,
    SOFT_DELETED,
    CmdletError,
    Mailbox,
    NonTerminatingError,
    Policy,
    RestoreRequest,
    ambiguous,
    invalid,
    not_found,
)

STATE_FORMAT = "imm-simulator-state"
STATE_VERSION = 1
DAY = 86400.0

# Which mailboxes a lookup sees.
SCOPE_ACTIVE = frozenset({ACTIVE})
SCOPE_INACTIVE = frozenset({INACTIVE})
SCOPE_SOFT_DELETED = frozenset({INACTIVE, SOFT_DELETED})  # -SoftDeletedMailbox shows inactive ones too
SCOPE_WITH_INACTIVE = frozenset({ACTIVE, INACTIVE})  # -IncludeInactiveMailbox, -InactiveMailbox lookups
SCOPE_ALL = frozenset({ACTIVE, INACTIVE, SOFT_DELETED})

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_POLICY_TAG = re.compile(r"^(-?)(mbx|skp|grp)([0-9a-f]{32})(?::(\d))?$", re.IGNORECASE)
_UNIH = re.compile(r"^unih([0-9a-f-]{32,36})$", re.IGNORECASE)

RECOVER_WARNING = (
    "The inactive mailbox has been recovered. Single Item Recovery and Retention Hold are enabled on the new "
    "mailbox for 30 days to preserve data until you obtain a valid license. Assign a license within 30 days."
)  # wording unconfirmed: domain.md §4 quotes only "to preserve data until you obtain a valid license"
# The simulator's own wording (Exchange's text for this case is not documented); the shape is Exchange's.
LABEL_REAPPLIED_ERROR = (
    "The ComplianceTagHoldApplied hold of '{0}' was applied again by a published retention label policy; no "
    "settings have been modified."
)
NO_CHANGE_WARNING = "The command completed successfully but no settings of '{0}' have been modified."
MAX_RESTORE_REQUESTS = (
    10  # auto-generated names: MailboxRestore, MailboxRestore1…9 (New-MailboxRestoreRequest.md -Name)
)
DELAY_HOLD_DAYS = 30  # identify-a-hold article
PURGE_DAYS = 183  # delete-an-inactive-mailbox: InactiveMailboxRetireTime + 183 days
# HoldTracking "ht" codes: community reading (jfrmilner Report-PurviewRetentionPolicies), **unconfirmed**.
_HT_CODES = {"litigationhold": 0, "compliancetaghold": 2, "delayreleasehold": 3, "delayhold": 3}


def _hold_type_code(hid: str) -> int:
    low = hid.lower()
    if low in _HT_CODES:
        return _HT_CODES[low]
    if low.startswith("unih") or low.startswith(("mbx", "skp", "grp")):
        return 5 if low.startswith("unih") else 4
    return 1  # legacy In-Place Hold


def normalize_guid(text: str) -> str:
    """``mbxABC…:2`` / ``UniH…`` / ``{guid}`` / 32-hex → bare lower-case 32-hex ('' when not a GUID)."""
    value = text.strip().lower()
    match = _POLICY_TAG.match(value)
    if match:
        return match.group(3)
    if value.startswith("unih"):
        value = value[4:]
    if value.startswith("cld"):
        value = value[3:]
    value = value.strip("{}").replace("-", "")
    return value if _HEX32.match(value) else ""


@dataclass
class RestoreProgress:
    status: str
    status_detail: str
    percent: int
    bytes_transferred: int
    items_transferred: int
    start: float | None
    completion: float | None


class Tenant:
    """State + semantics. Thread-safe through ``lock`` (the REST layer holds it while running a cmdlet)."""

    def __init__(
        self,
        tenant_id: str,
        tenant_domain: str,
        seed: int = 1,
        count: int = 200,
        state_file: Path | None = None,
        restore_seconds: float = 6.0,
        generated_at: float | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.tenant_id = tenant_id
        self.tenant_domain = tenant_domain
        self.state_file = state_file
        self.restore_seconds = restore_seconds
        self.clock: Callable[[], float] = time.time  # tests may replace it
        # Removing any hold applies a delay hold (DelayHoldApplied) for 30 days, then a mailbox left without holds is
        # soft-deleted (retire time set) and purged 183 days later (identify-a-hold, delete-an-inactive-mailbox).
        self.delay_hold_on_release = True  # knob: False = the older behaviour, no delay hold
        self.lifecycle_day_seconds = DAY  # knob: the length of a lifecycle "day" (tests shrink it to seconds)
        self._lifecycle: set[str] = set()  # mailboxes with a delay hold or a purge still to come
        self._advancing = False
        self.save_interval = 2.0  # seconds between state-file writes while changes arrive
        self.version = 0  # bumps on every change
        saved: dict[str, Any] | None = None
        if state_file is not None and state_file.exists():
            saved = self._read_state(state_file)
            seed, count, generated_at = saved["seed"], saved["mailboxes"], saved["generated_at"]
        self.seed = seed
        self.count = count
        # Generation is anchored to the start of the day so a restart the same day regenerates the same data.
        self.generated_at = generated_at if generated_at is not None else math.floor(time.time() / DAY) * DAY
        data = generate(seed, count, self.generated_at, tenant_domain)
        self.mailboxes: dict[str, Mailbox] = {m.exchange_guid: m for m in data.mailboxes}
        self.policies: dict[str, Policy] = {p.guid: p for p in data.policies}
        self.org_holds: list[str] = data.org_holds
        self.accepted_domains = data.accepted_domains
        self.federated_domains = data.federated_domains or list(FEDERATED_DOMAINS)
        self.special = data.special
        self.restore_requests: list[RestoreRequest] = []
        self.org_when_changed = self.generated_at - 40 * DAY
        self._dirty: set[str] = set()
        self._removed: set[str] = set()
        self._index: dict[str, str | list[str]] | None = None
        self._active_cache: list[Mailbox] | None = None
        self._members: tuple[int, dict[str, list[Mailbox]]] | None = None  # (version, hold tag -> mailboxes)
        self._last_save = 0.0
        if saved is not None:
            self._apply_state(saved)

    # ---------------------------------------------------------------- lookup

    def _keys(self, mbx: Mailbox) -> set[str]:
        """Index keys: GUIDs, name, alias, UPN and SMTP addresses (DNs and routing addresses are derived)."""
        keys = {
            mbx.exchange_guid.lower(),
            mbx.guid.lower(),
            mbx.name.lower(),
            mbx.alias.lower(),
            mbx.upn.lower(),
            mbx.primary_smtp.lower(),
        }
        if mbx.external_directory_object_id:
            keys.add(mbx.external_directory_object_id.lower())
        for address in mbx.extra_addresses:
            kind, _, value = address.partition(":")
            if kind.lower() == "smtp":
                keys.add(value.lower())
        return keys

    def _build_index(self) -> dict[str, str | list[str]]:
        index: dict[str, str | list[str]] = {}
        enabled = gc.isenabled()
        gc.disable()
        try:
            for mbx in self.mailboxes.values():
                for key in self._keys(mbx):
                    _index_add(index, key, mbx.exchange_guid)
        finally:
            if enabled:
                gc.enable()
        return index

    @contextmanager
    def _rekey(self, mbx: Mailbox) -> Iterator[None]:
        """Keep the identity index right across a change of names or addresses."""
        before = self._keys(mbx) if self._index is not None else set()
        yield
        self._active_cache = None
        if self._index is None:
            return
        after = self._keys(mbx)
        for key in before - after:
            _index_remove(self._index, key, mbx.exchange_guid)
        for key in after - before:
            _index_add(self._index, key, mbx.exchange_guid)

    def _candidates(self, key: str) -> list[str]:
        assert self._index is not None
        hit = self._index.get(key)
        if hit is None:
            return []
        return [hit] if isinstance(hit, str) else list(hit)

    def lookup(self, identity: str, scope: frozenset[str] = SCOPE_ALL) -> list[Mailbox]:
        """Every mailbox in ``scope`` that ``identity`` names: ExchangeGuid, Guid, ExternalDirectoryObjectId,
        DistinguishedName, SMTP address (primary, secondary, ``alias@<tenant>``), UPN, Name, alias, or
        ``Soft Deleted Objects\\<name>``. Not LegacyExchangeDN."""
        self.advance()
        key = identity.strip().lower()
        if key.startswith("{") and key.endswith("}"):
            key = key[1:-1]
        if self._index is None:
            self._index = self._build_index()
        guids = self._candidates(key)
        checks: list[tuple[str, Callable[[Mailbox], bool]]] = []
        if key.startswith("cn="):
            name = re.split(r"(?<!\\),", key[3:], maxsplit=1)[0]
            name = re.sub(r"\\(.)", r"\1", name)
            checks.append((name, lambda m: m.distinguished_name(self.tenant_domain).lower() == key))
        if key.startswith("soft deleted objects\\"):
            checks.append((key.split("\\", 1)[1], lambda m: m.state != ACTIVE))
        suffix = "@" + self.tenant_domain.lower()
        if key.endswith(suffix):
            checks.append((key[: -len(suffix)], lambda m: m.alias.lower() == key[: -len(suffix)]))
        for derived, check in checks:
            guids += [g for g in self._candidates(derived) if g in self.mailboxes and check(self.mailboxes[g])]
        out = []
        for guid in dict.fromkeys(guids):
            mbx = self.mailboxes.get(guid)
            if mbx is not None and mbx.state in scope:
                out.append(mbx)
        return out

    def find(self, identity: str, scope: frozenset[str] = SCOPE_ALL) -> Mailbox:
        """Exactly one mailbox, else Microsoft's not-found (404) or matches-multiple-entries (400) error."""
        if not identity or not identity.strip():
            raise invalid("Cannot bind argument to parameter 'Identity' because it is an empty string.")
        matches = self.lookup(identity, scope)
        if not matches:
            raise not_found(identity)
        if len(matches) > 1:
            raise ambiguous(identity)
        return matches[0]

    def mailbox(self, identity: str) -> Mailbox:
        """Ground truth for tests: the one mailbox named by ``identity`` in any state."""
        return self.find(identity, SCOPE_ALL)

    def actives(self) -> list[Mailbox]:
        """The active mailboxes (cached; a change of state clears the cache)."""
        if self._active_cache is None:
            self._active_cache = [m for m in self.mailboxes.values() if m.state == ACTIVE]
        return self._active_cache

    def listing(self, scope: frozenset[str]) -> list[Mailbox]:
        self.advance()
        return [m for m in self.mailboxes.values() if m.state in scope]

    # ---------------------------------------------------------------- holds

    def policy_by_hex(self, hex32: str) -> Policy | None:
        hex32 = hex32.lower()
        for policy in self.policies.values():
            if policy.hex == hex32:
                return policy
        return None

    def find_policy(self, identity: str, kind: str) -> Policy:
        """A policy by Name or Guid (any GUID spelling), or not found."""
        wanted = normalize_guid(identity)
        for policy in self.policies.values():
            if policy.kind != kind:
                continue
            if (wanted and policy.hex == wanted) or policy.name.lower() == identity.strip().lower():
                return policy
        raise not_found(identity)

    def org_policies(self) -> list[Policy]:
        out = []
        for tag in self.org_holds:
            match = _POLICY_TAG.match(tag)
            if match:
                policy = self.policy_by_hex(match.group(3))
                if policy is not None:
                    out.append(policy)
        return out

    def hold_reasons(self, mbx: Mailbox) -> list[str]:
        """Every hold that keeps ``mbx`` (empty: nothing does); names as in domain.md §2."""
        reasons: list[str] = []
        if mbx.litigation_hold:
            reasons.append("LitigationHold")
        if mbx.compliance_tag_hold:
            reasons.append("ComplianceTagHold")
        if mbx.delay_hold:
            reasons.append("DelayHold")
        if mbx.delay_release_hold:
            reasons.append("DelayReleaseHold")
        for entry in mbx.in_place_holds:
            low = entry.lower()
            match = _POLICY_TAG.match(low)
            if match:
                if not match.group(1) and match.group(4) in ("2", "3"):
                    reasons.append(entry)
            elif _UNIH.match(low) or _HEX32.match(low) or (low.startswith("cld") and _HEX32.match(low[3:])):
                reasons.append(entry)
        holds = {h.lower() for h in mbx.in_place_holds}
        for policy in self.org_policies():
            if policy.target != "mbx" or policy.action == 1 or not policy.enabled:
                continue
            if policy.location_kind == "public-folders":  # holds public folders, not user mailboxes
                continue
            if f"-mbx{policy.hex}" in holds or mbx.primary_smtp.lower() in (e.lower() for e in policy.exceptions):
                continue
            reasons.append(f"org:{policy.hold_tag}")
        return reasons

    def is_held(self, mbx: Mailbox) -> bool:
        return bool(self.hold_reasons(mbx))

    def _settle(self, mbx: Mailbox, now: float) -> None:
        """No hold left (the delay hold included) soft-deletes an inactive mailbox (IsInactiveMailbox False, retire
        time set, purged ``PURGE_DAYS`` later)."""
        if mbx.state == INACTIVE and not self.is_held(mbx):
            mbx.state = SOFT_DELETED
            mbx.was_inactive = True
            mbx.retire_time = now
            mbx.delay_hold_since = None
            self._lifecycle.add(mbx.exchange_guid)

    def _released_hold(self, mbx: Mailbox, hold_ids: Iterable[str] = (), now: float | None = None) -> None:
        """A hold was removed: its HoldTracking entry ends, and the Managed Folder Assistant applies a delay hold
        (simulated as running at once; identify-a-hold article, "Managing mailboxes on delay hold")."""
        moment = float(math.floor(now if now is not None else self.clock()))
        for hid in hold_ids:
            start = mbx.litigation_hold_date if hid == "LitigationHold" else mbx.when_soft_deleted
            entry = {"hid": hid, "ht": _hold_type_code(hid), "osd": start or mbx.when_created, "ed": moment}
            mbx.hold_history = [*(mbx.hold_history or []), entry]
        if self.delay_hold_on_release and mbx.state == INACTIVE:
            mbx.delay_hold = True
            mbx.delay_hold_since = moment
            self._lifecycle.add(mbx.exchange_guid)

    def advance(self) -> None:
        """Move mailboxes on as the clock passes: a delay hold ends ``DELAY_HOLD_DAYS`` after it was applied; a
        mailbox left without holds is then soft-deleted (InactiveMailboxRetireTime = that moment) and purged
        ``PURGE_DAYS`` after its retire time (delete-an-inactive-mailbox). Days are ``lifecycle_day_seconds``."""
        if not self._lifecycle or self._advancing:
            return
        with self.lock:
            self._advancing = True
            try:
                self._advance(self.clock())
            finally:
                self._advancing = False

    def _advance(self, now: float) -> None:
        day = self.lifecycle_day_seconds
        for guid in list(self._lifecycle):
            mbx = self.mailboxes.get(guid)
            if mbx is None:
                self._lifecycle.discard(guid)
                continue
            if mbx.state == INACTIVE and mbx.delay_hold and mbx.delay_hold_since is not None:
                ends = mbx.delay_hold_since + DELAY_HOLD_DAYS * day
                if now < ends:
                    continue
                mbx.delay_hold = False
                mbx.delay_hold_since = None
                self._settle(mbx, float(math.floor(ends)))
                self._changed(mbx, now)
            if mbx.state == SOFT_DELETED and mbx.was_inactive and mbx.retire_time is not None:
                if now >= mbx.retire_time + PURGE_DAYS * day:
                    self._lifecycle.discard(guid)
                    self.remove_mailbox(guid)
                continue
            if not (mbx.state == INACTIVE and mbx.delay_hold and mbx.delay_hold_since is not None):
                self._lifecycle.discard(guid)

    def hold_tracking(self, mbx: Mailbox) -> list[dict[str, Any]]:
        """The HoldTracking entries of ``mbx``: ended holds, then the holds that still apply (``ed`` None)."""
        out = [dict(entry) for entry in mbx.hold_history or []]
        for reason in self.hold_reasons(mbx):
            hid = reason[4:] if reason.startswith("org:") else reason
            start = mbx.litigation_hold_date if reason == "LitigationHold" else mbx.when_soft_deleted
            if reason == "DelayHold" and mbx.delay_hold_since is not None:
                start = mbx.delay_hold_since
            out.append({"hid": hid, "ht": _hold_type_code(hid), "osd": start or mbx.when_created, "ed": None})
        return out

    # ---------------------------------------------------------------- change tracking

    def _changed(self, mbx: Mailbox, now: float | None = None) -> None:
        # Whole seconds, never ahead of the clock (a sync's "changed since" watermark must not miss changes).
        mbx.when_changed = max(mbx.when_changed, float(math.floor(now if now is not None else self.clock())))
        self._dirty.add(mbx.exchange_guid)
        self.version += 1
        self._maybe_save()

    def _policy_changed(self, policy: Policy) -> None:
        policy.when_changed = float(math.floor(self.clock()))
        self.version += 1
        self._maybe_save()

    # Test knobs: simulate changes an incremental sync must pick up.

    def touch(self, guid: str) -> Mailbox:
        """Update WhenChanged only."""
        with self.lock:
            mbx = self.mailbox(guid)
            self._changed(mbx)
            return mbx

    def update(self, guid: str, **changes: Any) -> Mailbox:
        """Set record fields (e.g. ``total_bytes=…``), re-index, bump WhenChanged."""
        with self.lock:
            mbx = self.mailbox(guid)
            with self._rekey(mbx):
                for name, value in changes.items():
                    if not hasattr(mbx, name):
                        raise AttributeError(name)
                    setattr(mbx, name, value)
            self._changed(mbx)
            return mbx

    def add_hold(self, guid: str, hold: str) -> Mailbox:
        """Add an InPlaceHolds entry (``UniH…``, ``mbx…:2``, a legacy GUID, ``-mbx…``) or ``LitigationHold``."""
        with self.lock:
            mbx = self.mailbox(guid)
            if hold == "LitigationHold":
                mbx.litigation_hold = True
                mbx.litigation_hold_date = self.clock()
            elif hold not in mbx.in_place_holds:
                mbx.in_place_holds.append(hold)
            self._changed(mbx)
            return mbx

    def remove_hold(self, guid: str, hold: str) -> Mailbox:
        """Remove an InPlaceHolds entry or ``LitigationHold``; the last one soft-deletes an inactive mailbox."""
        with self.lock:
            mbx = self.mailbox(guid)
            if hold == "LitigationHold":
                mbx.litigation_hold = False
            elif hold in mbx.in_place_holds:
                mbx.in_place_holds.remove(hold)
            now = self.clock()
            self._released_hold(mbx, [hold], now)
            self._settle(mbx, now)
            self._changed(mbx, now)
            return mbx

    def remove_mailbox(self, guid: str) -> None:
        """Purge a mailbox (as MailboxLifeCycle does 183 days after retirement)."""
        with self.lock:
            mbx = self.mailbox(guid)
            if self._index is not None:
                for key in self._keys(mbx):
                    _index_remove(self._index, key, mbx.exchange_guid)
            self._active_cache = None
            del self.mailboxes[mbx.exchange_guid]
            self._dirty.discard(mbx.exchange_guid)
            self._removed.add(mbx.exchange_guid)
            self.version += 1
            self._maybe_save()

    def add_mailbox(self, mbx: Mailbox) -> Mailbox:
        """Add a record (e.g. a newly deleted user's inactive mailbox)."""
        with self.lock:
            if mbx.exchange_guid in self.mailboxes:
                raise ValueError(f"mailbox {mbx.exchange_guid} exists")
            self.mailboxes[mbx.exchange_guid] = mbx
            self._removed.discard(mbx.exchange_guid)
            self._active_cache = None
            if self._index is not None:
                for key in self._keys(mbx):
                    _index_add(self._index, key, mbx.exchange_guid)
            self._changed(mbx)
            return mbx

    # ---------------------------------------------------------------- Set-Mailbox -InactiveMailbox

    def set_inactive_mailbox(self, identity: str, caller: str, params: dict[str, Any]) -> list[str]:
        """Hold changes on an inactive mailbox (domain.md §6); returns warnings. Validates before changing."""
        mbx = self.find(identity, SCOPE_WITH_INACTIVE)
        if mbx.state != INACTIVE:
            raise invalid(
                f"The operation couldn't be performed because '{identity}' isn't an inactive mailbox. "
                "Run the command without the InactiveMailbox parameter."
            )
        now = float(math.floor(self.clock()))
        holds = list(mbx.in_place_holds)
        org = {p.hex: p for p in self.org_policies() if p.target == "mbx"}
        exclude: list[str] = []
        for value in params.get("ExcludeFromOrgHolds") or []:
            hex32 = normalize_guid(value)
            policy = org.get(hex32)
            if policy is None:
                raise invalid(f"The value '{value}' isn't the GUID of an organization-wide retention policy.")
            if policy.restrictive:
                raise _locked(policy)
            exclude.append(hex32)
        if params.get("ExcludeFromAllOrgHolds"):
            exclude.extend(p.hex for p in org.values() if not p.restrictive)
        orphaned: list[str] = []
        for value in params.get("RemoveOrphanedHolds") or []:
            entry = self._orphan_entry(holds, value)
            orphaned.append(entry)
        if params.get("RemoveComplianceTagHoldApplied") and mbx.compliance_tag_hold and mbx.label_policy_reapplies:
            raise NonTerminatingError(LABEL_REAPPLIED_ERROR.format(identity))
        before = (mbx.to_state(), self.is_held(mbx))
        # Apply.
        released = False
        ended: list[str] = []  # the holds this call removes (HoldTracking)
        if "LitigationHoldEnabled" in params:
            enabled = bool(params["LitigationHoldEnabled"])
            if mbx.litigation_hold and not enabled:
                released = True
                ended.append("LitigationHold")
                mbx.litigation_hold_date = None
                mbx.litigation_hold_owner = ""
            elif enabled and not mbx.litigation_hold:
                mbx.litigation_hold_date = now
                mbx.litigation_hold_owner = caller
            mbx.litigation_hold = enabled
        if "LitigationHoldDuration" in params:
            mbx.litigation_hold_duration = params["LitigationHoldDuration"]
        if params.get("RemoveDelayHoldApplied"):
            mbx.delay_hold = False
        if params.get("RemoveDelayReleaseHoldApplied"):
            mbx.delay_release_hold = False
        if params.get("RemoveComplianceTagHoldApplied"):
            released |= mbx.compliance_tag_hold
            if mbx.compliance_tag_hold:
                ended.append("ComplianceTagHold")
            mbx.compliance_tag_hold = False
        if "RetentionHoldEnabled" in params:
            mbx.retention_hold = bool(params["RetentionHoldEnabled"])
        if "ElcProcessingDisabled" in params:
            mbx.elc_processing_disabled = bool(params["ElcProcessingDisabled"])
        for hex32 in exclude:
            tag = f"-mbx{hex32}"
            if tag not in (h.lower() for h in mbx.in_place_holds):
                mbx.in_place_holds.append(tag)
                released = True
                ended.append(f"mbx{hex32}:{org[hex32].action}")
        if params.get("ExcludeFromAllHolds"):
            released |= self._exclude_from_all_holds(mbx)
        for entry in orphaned:
            if entry in mbx.in_place_holds:
                mbx.in_place_holds.remove(entry)
                released = True
                ended.append(entry)
        if released:
            self._released_hold(mbx, ended, now)
        # Every change is re-evaluated at once. -RecalculateInactiveMailbox also counts a Litigation Hold whose
        # duration, counted from each item's received date (the newest ≈ the deletion), has passed as expired:
        # "might lead to the soft-deletion of the mailbox if all holds on the mailbox have expired" (Set-Mailbox.md).
        if params.get("RecalculateInactiveMailbox") and self._litigation_expired(mbx, now):
            if self.hold_reasons(mbx) == ["LitigationHold"]:
                mbx.state = SOFT_DELETED
                mbx.was_inactive = True
                mbx.retire_time = now
                self._lifecycle.add(mbx.exchange_guid)
        self._settle(mbx, now)
        if (mbx.to_state(), self.is_held(mbx)) == before:
            return [NO_CHANGE_WARNING.format(identity)]
        self._changed(mbx, now)
        return []

    @staticmethod
    def _litigation_expired(mbx: Mailbox, now: float) -> bool:
        """Litigation Hold with a duration that no item is younger than (the newest items date from the deletion)."""
        days = mbx.litigation_hold_duration
        deleted = mbx.when_soft_deleted
        return mbx.litigation_hold and days is not None and deleted is not None and now >= deleted + days * DAY

    def _orphan_entry(self, holds: list[str], value: str) -> str:
        wanted = value.strip().lower()
        bare = normalize_guid(wanted)
        for entry in holds:
            low = entry.lower()
            if low == wanted or (bare and normalize_guid(low) == bare and not low.startswith("-")):
                match = _POLICY_TAG.match(low)
                unih = _UNIH.match(low)
                if match or unih:
                    hex32 = match.group(3) if match else normalize_guid(low)
                    if self.policy_by_hex(hex32) is not None:
                        raise invalid(
                            f"The hold '{entry}' isn't orphaned: its policy still exists. Remove the mailbox from "
                            "the policy instead."
                        )
                return entry
        raise invalid(f"The hold '{value}' wasn't found on the mailbox.")

    def _exclude_from_all_holds(self, mbx: Mailbox) -> bool:
        """-ExcludeFromAllHolds: unlocked org and user policies, label and delay holds; not eDiscovery, Litigation
        Hold or locked policies (office-docs-powershell PR #13239)."""
        changed = False
        keep = []
        for entry in mbx.in_place_holds:
            match = _POLICY_TAG.match(entry.lower())
            if match and not match.group(1):
                policy = self.policy_by_hex(match.group(3))
                if policy is None or not policy.restrictive:
                    changed = True
                    continue
            keep.append(entry)
        mbx.in_place_holds[:] = keep
        for policy in self.org_policies():
            tag = f"-mbx{policy.hex}"
            if policy.target == "mbx" and not policy.restrictive and tag not in mbx.in_place_holds:
                mbx.in_place_holds.append(tag)
                changed = True
        for flag in ("compliance_tag_hold", "delay_hold", "delay_release_hold"):
            if getattr(mbx, flag):
                setattr(mbx, flag, False)
                changed = True
        return changed

    # ---------------------------------------------------------------- Set-Mailbox (active)

    def set_mailbox(self, identity: str, params: dict[str, Any]) -> list[str]:
        """Set-Mailbox on an active mailbox: EmailAddresses (@{Add=…; Remove=…} or a full list) and a few flags."""
        mbx = self.find(identity, SCOPE_ACTIVE)
        now = float(math.floor(self.clock()))
        before = mbx.to_state()
        if "EmailAddresses" in params:
            new_extra = self._proxy_change(mbx, params["EmailAddresses"])
            with self._rekey(mbx):
                mbx.extra_addresses = new_extra
        if "LitigationHoldEnabled" in params:
            enabled = bool(params["LitigationHoldEnabled"])
            if enabled and not mbx.litigation_hold:
                mbx.litigation_hold_date = now
            mbx.litigation_hold = enabled
        if "LitigationHoldDuration" in params:
            mbx.litigation_hold_duration = params["LitigationHoldDuration"]
        for param, attr in (
            ("RetentionHoldEnabled", "retention_hold"),
            ("SingleItemRecoveryEnabled", "single_item_recovery"),
            ("RetainDeletedItemsFor", "retain_deleted_items_for"),
            ("DisplayName", "display_name"),
        ):
            if param in params:
                setattr(mbx, attr, params[param])
        for n in range(1, 16):
            name = f"CustomAttribute{n}"
            if name in params:
                if params[name]:
                    mbx.custom[name] = str(params[name])
                else:
                    mbx.custom.pop(name, None)
        if mbx.to_state() == before:
            return [NO_CHANGE_WARNING.format(identity)]
        self._changed(mbx, now)
        return []

    def _proxy_change(self, mbx: Mailbox, value: Any) -> list[str]:
        current = mbx.email_addresses(self.tenant_domain)
        fixed = {a.lower() for a in current[: len(current) - len(mbx.extra_addresses)]}
        extra = list(mbx.extra_addresses)
        if isinstance(value, dict):
            adds = _as_list(value.get("Add", value.get("add")))
            removes = _as_list(value.get("Remove", value.get("remove")))
        else:
            adds = [a for a in _as_list(value) if a.lower() not in fixed]
            removes = [a for a in extra if a.lower() not in {x.lower() for x in _as_list(value)}]
        for address in adds:
            _check_proxy(address)
            owner = self._proxy_owner(address, mbx)
            if owner is not None:
                raise CmdletError(
                    400,
                    "Microsoft.Exchange.Management.Tasks.ProxyAddressExistsException",
                    f'The proxy address "{address}" is already being used by the proxy addresses or '
                    f'LegacyExchangeDN of "{owner.name}". Please choose another proxy address.',
                )
            if address.lower() not in fixed and address.lower() not in {a.lower() for a in extra}:
                extra.append(address)
        for address in removes:
            extra = [a for a in extra if a.lower() != address.lower()]
        return extra

    def _proxy_owner(self, address: str, me: Mailbox) -> Mailbox | None:
        """The active recipient already using ``address`` (soft-deleted objects do not conflict)."""
        low = address.lower()
        kind, _, value = low.partition(":")
        for mbx in self.actives():
            if mbx is me:
                continue
            if kind == "x500" and mbx.legacy_dn.lower() == value:
                return mbx
            if any(
                a.lower().partition(":")[2] == value and a.lower().partition(":")[0] == kind
                for a in mbx.email_addresses(self.tenant_domain)
            ):
                return mbx
        return None

    # ---------------------------------------------------------------- New-Mailbox -InactiveMailbox

    def recover(
        self,
        identity: str,
        name: str,
        caller: str,
        online_id: str | None = None,
        display_name: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> tuple[Mailbox, list[str]]:
        """Recover an inactive mailbox into a new active one (domain.md §4); the inactive object is consumed."""
        mbx = self.find(identity, SCOPE_WITH_INACTIVE)
        if mbx.state != INACTIVE:
            raise invalid(f"The mailbox '{identity}' isn't an inactive mailbox.")
        if mbx.external_directory_object_id:
            raise invalid(
                f"The mailbox '{identity}' can't be recovered as an inactive mailbox because its user account was "
                "deleted less than 30 days ago. Restore the deleted user account instead."
            )  # wording unconfirmed (domain.md §4: "restore the user instead")
        if mbx.aux_primary_shards:
            raise invalid(
                f"The inactive mailbox '{identity}' cannot be recovered because the mailbox has additional shards "
                "that need recovery."
            )
        if mbx.auto_expanding_archive or mbx.aux_archive_shards:
            raise invalid(
                f"The inactive mailbox '{identity}' has an auto-expanding archive and can't be recovered or "
                "restored. Use Content Search to export its data."
            )  # wording unconfirmed
        upn = (online_id or mbx.upn).strip()
        if "@" not in upn:
            raise invalid(f"The value '{upn}' isn't a valid Microsoft Online Services ID.")
        domain = upn.rsplit("@", 1)[1].lower()
        if domain not in (d.lower() for d in self.accepted_domains):
            raise invalid(f"The domain '{domain}' isn't an accepted domain for your organization.")
        if domain in (d.lower() for d in self.federated_domains):
            raise CmdletError(
                400,
                "Microsoft.Exchange.Management.RecipientTasks.WLCDManagedMemberExistsException",
                "The parameters passed to the cmdlet represent a managed account, which doesn't match the "
                "namespace state, which is federated.",
            )
        for other in self.actives():
            if other.name.lower() == name.lower():
                raise CmdletError(
                    400,
                    "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException",
                    f'The name "{name}" is already being used. Please try another name.',
                )
            addresses = {other.upn.lower()} | {
                a.partition(":")[2].lower() for a in other.email_addresses(self.tenant_domain)
            }
            if upn.lower() in addresses:
                raise CmdletError(
                    400,
                    "Microsoft.Exchange.Data.DataValidationException",
                    f'The value "{upn}" of property "MicrosoftOnlineServicesID" is used by another recipient '
                    "object. Please specify a unique value.",
                )
        now = float(math.floor(self.clock()))
        old_legacy_dn = mbx.legacy_dn
        with self._rekey(mbx):
            alias = self._free_alias(upn.split("@", 1)[0])
            mbx.state = ACTIVE
            mbx.name = name
            mbx.alias = alias
            mbx.upn = upn
            mbx.primary_smtp = upn
            mbx.display_name = display_name or name
            mbx.first_name = first_name or ""
            mbx.last_name = last_name or ""
            mbx.object_guid = str(uuid.uuid4())
            mbx.external_directory_object_id = str(uuid.uuid4())
            mbx.when_created = now
            mbx.when_soft_deleted = None
            mbx.retire_time = None
            mbx.was_inactive = False
            mbx.last_logon = None
            mbx.extra_addresses = [*mbx.extra_addresses, f"X500:{old_legacy_dn}"]
            keep: list[str] = []
            unlocked_removed = False
            for entry in mbx.in_place_holds:
                low = entry.lower()
                match = _POLICY_TAG.match(low)
                if match and not match.group(1):
                    policy = self.policy_by_hex(match.group(3))
                    if policy is not None and policy.restrictive:
                        keep.append(entry)
                    elif match.group(4) in ("2", "3"):
                        unlocked_removed = True
                elif match or _UNIH.match(low):
                    keep.append(entry)  # org exclusions and eDiscovery holds stay; legacy In-Place holds go
            mbx.in_place_holds = keep
            mbx.litigation_hold = unlocked_removed
            mbx.litigation_hold_date = now if unlocked_removed else None
            mbx.litigation_hold_duration = None
            mbx.litigation_hold_owner = caller if unlocked_removed else ""
            mbx.retain_deleted_items_for = 30
            mbx.retention_hold = True
            mbx.single_item_recovery = True
            mbx.delay_hold = mbx.delay_release_hold = False
        self._changed(mbx, now)
        return mbx, [RECOVER_WARNING]

    def _free_alias(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]", "", base) or "user"
        taken = {m.alias.lower() for m in self.actives()}
        alias, n = base, 1
        while alias.lower() in taken:
            alias, n = f"{base}{n}", n + 1
        return alias

    # ---------------------------------------------------------------- restore requests

    def new_restore_request(
        self,
        source: str,
        target: str,
        name: str | None = None,
        source_is_archive: bool = False,
        target_is_archive: bool = False,
        target_root_folder: str = "",
        allow_legacy_dn_mismatch: bool = False,
        batch_name: str = "",
        exclude_dumpster: bool = False,
    ) -> RestoreRequest:
        """New-MailboxRestoreRequest with the blockers of domain.md §5."""
        src = self.find(source, SCOPE_ALL)
        if src.state == ACTIVE:
            raise invalid(
                f"The source mailbox '{source}' isn't a soft-deleted or inactive mailbox. Only soft-deleted and "
                "inactive mailboxes can be restored."
            )
        tgt = self.find(target, SCOPE_ACTIVE)
        if src.auto_expanding_archive or src.aux_archive_shards:
            raise invalid(
                f"The source mailbox '{source}' has an auto-expanding archive and can't be restored. Use Content "
                "Search to export its data."
            )  # wording unconfirmed
        if source_is_archive and not src.archive:
            raise invalid(f"The source mailbox '{source}' doesn't have an archive.")
        if target_is_archive and not tgt.archive:
            raise invalid(f"The target mailbox '{target}' doesn't have an archive.")
        if not allow_legacy_dn_mismatch:
            wanted = f"x500:{src.legacy_dn}".lower()
            if wanted not in (a.lower() for a in tgt.extra_addresses):
                raise CmdletError(
                    400,
                    "Microsoft.Exchange.MailboxReplicationService.RecipientMissingLegDNAddressPermanentException",
                    f"The target mailbox doesn't have an SMTP proxy matching '{src.legacy_dn}'. Add the X500 address "
                    "of the source's LegacyExchangeDN to the target or use the AllowLegacyDNMismatch parameter.",
                )  # wording unconfirmed
        size = src.archive_bytes if source_is_archive else src.total_bytes
        items = src.archive_item_count if source_is_archive else src.item_count
        used = tgt.archive_bytes if target_is_archive else tgt.total_bytes
        quota = tgt.archive_quota_bytes if target_is_archive else tgt.quota_bytes
        if used + size > quota:
            raise CmdletError(
                400,
                "Microsoft.Exchange.MailboxReplicationService.MailboxIsOverQuotaPermanentException",
                f"The target mailbox '{target}' doesn't have enough space: it holds {used:,} bytes of its "
                f"{quota:,}-byte quota and the source needs {size:,} bytes.",
            )  # wording unconfirmed (domain.md §5: failure when the target is over quota)
        # The Recoverable Items folder has its own quota (30 GB, 100 GB on hold: recoverable-items-folder article);
        # the source's Recoverable Items go there unless -ExcludeDumpster (New-MailboxRestoreRequest.md).
        dumpster = 0 if exclude_dumpster or source_is_archive or target_is_archive else src.deleted_bytes
        held = tgt.litigation_hold or bool(tgt.in_place_holds)
        dumpster_quota = (100 if held else 30) * GB
        if dumpster and tgt.deleted_bytes + dumpster > dumpster_quota:
            raise CmdletError(
                400,
                "Microsoft.Exchange.MailboxReplicationService.MailboxIsOverQuotaPermanentException",
                f"The Recoverable Items folder of the target mailbox '{target}' doesn't have enough space: it holds "
                f"{tgt.deleted_bytes:,} bytes of its {dumpster_quota:,}-byte quota and the source needs "
                f"{dumpster:,} bytes.",
            )  # wording unconfirmed
        existing = [r for r in self.restore_requests if r.target_guid == tgt.exchange_guid]
        names = {r.name.lower() for r in existing}
        if name:
            if name.lower() in names:
                raise invalid(
                    f"The name '{name}' is already used by another request for mailbox '{tgt.alias}'. "
                    "Please specify a unique name."
                )
        else:
            free = [
                n for n in ["MailboxRestore"] + [f"MailboxRestore{i}" for i in range(1, 10)] if n.lower() not in names
            ]
            if not free:
                raise _no_default_name(tgt)
            name = free[0]  # only auto-named requests are limited to 10 (New-MailboxRestoreRequest.md -Name)
        request = RestoreRequest(
            request_guid=str(uuid.uuid4()),
            name=name,
            source_guid=src.exchange_guid,
            target_guid=tgt.exchange_guid,
            target_alias=tgt.alias,
            created=self.clock(),
            estimated_bytes=size,
            estimated_items=items,
            source_is_archive=source_is_archive,
            target_is_archive=target_is_archive,
            target_root_folder=target_root_folder,
            allow_legacy_dn_mismatch=allow_legacy_dn_mismatch,
            batch_name=batch_name,
            exclude_dumpster=exclude_dumpster,
            dumpster_bytes=dumpster,
        )
        self.restore_requests.append(request)
        self.version += 1
        self._maybe_save()
        return request

    def find_restore_requests(self, identity: str | None = None) -> list[RestoreRequest]:
        """By ``Alias\\Name``, RequestGuid, or Name alone (all requests with that name); all when None."""
        if identity is None:
            return list(self.restore_requests)
        key = identity.strip().lower()
        out = []
        for r in self.restore_requests:
            if key in (r.identity.lower(), r.request_guid.lower(), r.name.lower()):
                out.append(r)
        return out

    def find_restore_request(self, identity: str) -> RestoreRequest:
        matches = self.find_restore_requests(identity)
        if not matches:
            raise not_found(identity)
        if len(matches) > 1:
            raise ambiguous(identity)
        return matches[0]

    def progress(self, request: RestoreRequest) -> RestoreProgress:
        """Status from the wall clock: Queued for the first 20% of restore_seconds, InProgress, then Completed."""
        total = max(self.restore_seconds, 0.0)
        elapsed = (request.suspended_at or self.clock()) - request.created - request.paused_seconds
        queued_for = total * 0.2
        if request.fail and elapsed >= total * 0.5:
            done = int(request.estimated_bytes * 0.4)
            return RestoreProgress(
                "Failed",
                "FailedOther",
                40,
                done,
                int(request.estimated_items * 0.4),
                request.created + queued_for,
                None,
            )
        if request.suspended_at is not None:
            share = max(0.0, (elapsed - queued_for) / max(total - queued_for, 1e-9))
            percent = 0 if elapsed < queued_for else min(95, 10 + int(85 * share))
            return RestoreProgress(
                "Suspended",
                "Suspended",
                percent,
                int(request.estimated_bytes * min(share, 1.0)),
                int(request.estimated_items * min(share, 1.0)),
                None,
                None,
            )
        if elapsed >= total:
            self._complete(request)
            return RestoreProgress(
                "Completed",
                "Completed",
                100,
                request.estimated_bytes,
                request.estimated_items,
                request.created + queued_for,
                request.created + total,
            )
        if elapsed < queued_for:
            return RestoreProgress("Queued", "Queued", 0, 0, 0, None, None)
        share = (elapsed - queued_for) / max(total - queued_for, 1e-9)
        percent = min(95, 10 + int(85 * share))
        return RestoreProgress(
            "InProgress",
            "CopyingMessages",
            percent,
            int(request.estimated_bytes * share),
            int(request.estimated_items * share),
            request.created + queued_for,
            None,
        )

    def _complete(self, request: RestoreRequest) -> None:
        if request.applied:
            return
        request.applied = True
        target = self.mailboxes.get(request.target_guid)
        if target is not None:
            if request.target_is_archive:
                target.archive_bytes += request.estimated_bytes
                target.archive_item_count += request.estimated_items
            else:
                target.total_bytes += request.estimated_bytes
                target.item_count += request.estimated_items
            target.deleted_bytes += request.dumpster_bytes
            self._changed(target)  # stamped when the change becomes visible, not when it "happened"

    def suspend_restore_request(self, identity: str, comment: str = "") -> None:
        """Suspend-MailboxRestoreRequest: "any time after the request was created, but before the request reaches
        the status of Completed" (the cmdlet reference); a suspended request stays where it is."""
        request = self.find_restore_request(identity)
        status = self.progress(request).status
        if status in ("Completed", "Failed"):
            raise invalid(
                f"The request '{request.identity}' can't be suspended because its status is {status}."
            )  # wording unconfirmed
        if request.suspended_at is None:
            request.suspended_at = self.clock()
        request.suspend_comment = comment
        self.version += 1
        self._maybe_save()

    def resume_restore_request(self, identity: str) -> None:
        """Resume-MailboxRestoreRequest: resumes "a restore request that was suspended or failed" (the cmdlet
        reference); a failed one starts copying again."""
        request = self.find_restore_request(identity)
        status = self.progress(request).status
        if status not in ("Suspended", "Failed"):
            raise invalid(
                f"The request '{request.identity}' can't be resumed because its status is {status}: only "
                "suspended or failed requests can be resumed."
            )  # wording unconfirmed
        now = self.clock()
        if request.suspended_at is not None:
            request.paused_seconds += now - request.suspended_at
            request.suspended_at = None
        if request.fail:
            request.fail = False
            request.created = now  # copies again from the start
            request.paused_seconds = 0.0
        self.version += 1
        self._maybe_save()

    def remove_restore_request(self, identity: str) -> None:
        request = self.find_restore_request(identity)
        self.restore_requests.remove(request)
        self.version += 1
        self._maybe_save()

    # ---------------------------------------------------------------- compliance

    def policy_members(self, policy: Policy) -> list[Mailbox]:
        """Mailboxes an explicit policy names (their InPlaceHolds carry its tag), in listing order."""
        if self._members is None or self._members[0] != self.version:
            members: dict[str, list[Mailbox]] = {}
            for mbx in self.mailboxes.values():
                for entry in mbx.in_place_holds:
                    if not entry.startswith("-"):
                        members.setdefault(entry.split(":", 1)[0].lower(), []).append(mbx)
            self._members = (self.version, members)
        key = f"unih{policy.guid}" if policy.kind == "casehold" else f"{policy.target}{policy.hex}"
        return list(self._members[1].get(key.lower(), []))

    def policy_locations(self, policy: Policy, detail: bool) -> list[str]:
        """ExchangeLocation: "All" for org-wide; addresses otherwise. Without -DistributionDetail the list is the
        one first distributed (stale after changes), as Microsoft warns it is inaccurate."""
        if policy.org_wide:
            return ["All"]
        current = [m.primary_smtp for m in self.policy_members(policy)]
        if not policy.initial_locations:
            policy.initial_locations = current or ["(none)"]
        if detail:
            return current
        return [x for x in policy.initial_locations if x != "(none)"]

    def _location_mailbox(self, location: str) -> Mailbox:
        value = location.strip()
        if value.startswith("."):
            value = value[1:]  # a leading period marks an inactive mailbox (Set-CaseHoldPolicy docs)
        return self.find(value, SCOPE_ALL)

    def remove_policy_location(self, policy: Policy, locations: Iterable[str], kind: str = "mbx") -> list[str]:
        if policy.restrictive:
            raise _locked(policy)
        targets = [self._location_mailbox(loc) for loc in locations]
        now = float(math.floor(self.clock()))
        warnings = []
        for mbx, location in zip(targets, locations, strict=False):
            if policy.kind == "casehold":
                tag_low = f"unih{policy.guid}".lower()
                keep = [h for h in mbx.in_place_holds if h.lower() != tag_low]
            else:
                prefix = f"{policy.target}{policy.hex}:"
                keep = [h for h in mbx.in_place_holds if not h.lower().startswith(prefix)]
            if len(keep) == len(mbx.in_place_holds):
                warnings.append(f"The location '{location}' isn't included in the policy '{policy.name}'.")
                continue
            gone = [h for h in mbx.in_place_holds if h not in keep]
            mbx.in_place_holds = keep
            self._released_hold(mbx, gone, now)
            self._settle(mbx, now)
            self._changed(mbx, now)
        self._policy_changed(policy)
        return warnings

    def add_policy(self, policy: Policy) -> Policy:
        """Test knob: a new policy (retention, app, case hold) in the compliance endpoint."""
        with self.lock:
            policy.when_created = policy.when_changed = float(math.floor(self.clock()))
            self.policies[policy.guid] = policy
            self.version += 1
            return policy

    def exclude_deleted(self, policy: Policy, locations: Iterable[str], deleted_resources: str | None) -> list[str]:
        """-AddExchangeLocationException (app policies) / -AddTeamsChatLocationException with -DeletedResources: a
        soft-deleted or inactive mailbox named by its address in the JSON list is excluded from the policy
        (Set-AppRetentionCompliancePolicy Example 2, Set-RetentionCompliancePolicy Example 5)."""
        if policy.restrictive:
            raise _locked(policy)
        try:
            entries = json.loads(deleted_resources or "[]")
            named = {str(e["EmailAddress"]).strip().lower() for e in entries}
        except (ValueError, TypeError, KeyError):
            raise invalid("The value of the DeletedResources parameter isn't valid JSON.") from None  # unconfirmed
        now = float(math.floor(self.clock()))
        for location in locations:
            if location.strip().lower() not in named:
                raise invalid(
                    f"The location '{location}' is a deleted mailbox: name it in the DeletedResources parameter."
                )  # wording unconfirmed
            mbx = self._location_mailbox(location)
            prefix = f"{policy.target}{policy.hex}:"
            before = list(mbx.in_place_holds)
            if policy.org_wide:
                if f"-mbx{policy.hex}" not in mbx.in_place_holds:
                    mbx.in_place_holds.append(f"-mbx{policy.hex}")
            else:
                mbx.in_place_holds = [h for h in mbx.in_place_holds if not h.lower().startswith(prefix)]
            if mbx.primary_smtp.lower() not in (e.lower() for e in policy.exceptions):
                policy.exceptions.append(mbx.primary_smtp)
            if mbx.in_place_holds != before:
                self._released_hold(mbx, [policy.hold_tag], now)
                self._settle(mbx, now)
                self._changed(mbx, now)
        self._policy_changed(policy)
        return []

    def add_policy_exception(self, policy: Policy, locations: Iterable[str]) -> list[str]:
        if policy.restrictive:
            raise _locked(policy)
        if not policy.org_wide:
            raise invalid(
                f"ExchangeLocationException can only be used when ExchangeLocation is 'All'; policy '{policy.name}' "
                "names its locations."
            )
        targets = [self._location_mailbox(loc) for loc in locations]
        if len(policy.exceptions) + len(targets) > 1000:
            raise invalid("A policy's ExchangeLocationException list can't hold more than 1000 entries.")
        now = float(math.floor(self.clock()))
        for mbx in targets:
            if mbx.primary_smtp.lower() not in (e.lower() for e in policy.exceptions):
                policy.exceptions.append(mbx.primary_smtp)
            tag = f"-mbx{policy.hex}"
            if tag not in mbx.in_place_holds:
                mbx.in_place_holds.append(tag)
            self._released_hold(mbx, [policy.hold_tag], now)
            self._settle(mbx, now)
            self._changed(mbx, now)
        self._policy_changed(policy)
        return []

    # ---------------------------------------------------------------- state file

    def _read_state(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable simulator state file ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: not a simulator state file")
        if data.get("version") != STATE_VERSION or data.get("generator_version") != GENERATOR_VERSION:
            raise ValueError(f"{path}: written by another simulator version; delete it to start afresh")
        return data

    def _apply_state(self, data: dict[str, Any]) -> None:
        for guid in data.get("removed", []):
            self.mailboxes.pop(guid, None)
            self._removed.add(guid)
        for record in data.get("changed", []):
            mbx = Mailbox.from_state(record)
            self.mailboxes[mbx.exchange_guid] = mbx
            self._dirty.add(mbx.exchange_guid)
            if mbx.delay_hold_since is not None or (mbx.state == SOFT_DELETED and mbx.was_inactive):
                self._lifecycle.add(mbx.exchange_guid)
        for record in data.get("policies", []):
            policy = Policy.from_state(record)
            self.policies[policy.guid] = policy
        self.org_holds = list(data.get("org_holds", self.org_holds))
        self.restore_requests = [RestoreRequest.from_state(r) for r in data.get("restore_requests", [])]
        self._index = None
        self._active_cache = None
        self._members = None

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "format": STATE_FORMAT,
                "version": STATE_VERSION,
                "generator_version": GENERATOR_VERSION,
                "tenant_id": self.tenant_id,
                "tenant_domain": self.tenant_domain,
                "seed": self.seed,
                "mailboxes": self.count,
                "generated_at": self.generated_at,
                "saved_at": time.time(),
                "removed": sorted(self._removed),
                "changed": [self.mailboxes[g].to_state() for g in self._dirty if g in self.mailboxes],
                "policies": [p.to_state() for p in self.policies.values()],
                "org_holds": list(self.org_holds),
                "restore_requests": [r.to_state() for r in self.restore_requests],
            }

    def save(self) -> None:
        """Write the state file atomically (no-op without one)."""
        if self.state_file is None:
            return
        with self.lock:
            payload = json.dumps(self.state(), ensure_ascii=False, separators=(",", ":"))
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_name(self.state_file.name + ".tmp")
            tmp.write_text(payload, encoding="utf-8")
            os.replace(tmp, self.state_file)
            self._last_save = time.monotonic()

    def _maybe_save(self) -> None:
        if self.state_file is not None and time.monotonic() - self._last_save >= self.save_interval:
            self.save()


def _index_add(index: dict[str, str | list[str]], key: str, guid: str) -> None:
    """One GUID per key as a plain string (the common case), a list when a key is shared."""
    current = index.get(key)
    if current is None:
        index[key] = guid
    elif isinstance(current, str):
        if current != guid:
            index[key] = [current, guid]
    elif guid not in current:
        current.append(guid)


def _index_remove(index: dict[str, str | list[str]], key: str, guid: str) -> None:
    current = index.get(key)
    if current == guid:
        del index[key]
    elif isinstance(current, list) and guid in current:
        current.remove(guid)
        if len(current) == 1:
            index[key] = current[0]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _check_proxy(address: str) -> None:
    kind, sep, value = address.partition(":")
    if not sep or not kind or not value or (kind.lower() == "smtp" and "@" not in value):
        raise CmdletError(
            400,
            "Microsoft.Exchange.Data.DataValidationException",
            f'The proxy address "{address}" is invalid. Specify a prefix such as "SMTP:" or "X500:" and a value.',
        )


def _locked(policy: Policy) -> CmdletError:
    return CmdletError(
        400,
        "Microsoft.Office.CompliancePolicy.Tasks.PolicyRestrictiveRetentionException",
        f"The policy '{policy.name}' has Preservation Lock (RestrictiveRetention) turned on: it can't be disabled or "
        "deleted and its locations can't be removed or excluded.",
    )  # wording unconfirmed


def _no_default_name(target: Mailbox) -> CmdletError:
    return CmdletError(
        400,
        "Microsoft.Exchange.Management.RecipientTasks.NoDefaultNameAvailableException",
        "The name must be unique per mailbox. There isn't a default name available for a new request owned by "
        f"mailbox '{target.alias}'.",
    )


__all__ = [
    "SCOPE_ACTIVE",
    "SCOPE_ALL",
    "SCOPE_INACTIVE",
    "SCOPE_SOFT_DELETED",
    "SCOPE_WITH_INACTIVE",
    "RestoreProgress",
    "Tenant",
    "normalize_guid",
]
