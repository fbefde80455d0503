"""What the single-mailbox actions (:mod:`imm.services.actions`) share: action names and result statuses, their
results and previews, passwords, and the small readers of Exchange records and writers of text more than one action
uses. Helpers of one action live in its module (:mod:`imm.services.recover`, :mod:`imm.services.restore`,
:mod:`imm.services.holds`). No I/O here.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imm.domain.parsing import or_default, parse_bool, parse_list, parse_timespan_days
from imm.errors import BlockedError, InputError

if TYPE_CHECKING:
    from imm.data.models import InactiveMailbox
    from imm.domain.eligibility import Blocker

RECOVER = "recover"
RESTORE = "restore"
RELEASE = "release"
SET_DURATION = "set-duration"
ACTIONS = (RECOVER, RESTORE, RELEASE, SET_DURATION)
# Actions on a restore request imm started (Remove-, Suspend-, Resume-MailboxRestoreRequest).
RESTORE_REMOVE = "restore-remove"
RESTORE_SUSPEND = "restore-suspend"
RESTORE_RESUME = "restore-resume"
REQUEST_ACTIONS = (RESTORE_REMOVE, RESTORE_SUSPEND, RESTORE_RESUME)

# Consequences of a plan that need a typed confirmation (ActionPreview.consequences).
LAST_HOLD = "last-hold"
UNLIMITED = "unlimited-litigation"
EDISCOVERY = "ediscovery"
TYPED_CONSEQUENCES = (LAST_HOLD, UNLIMITED, EDISCOVERY)
CONSEQUENCE_WORDS = {
    LAST_HOLD: "remove the last hold (a 30-day delay hold, then soft-deleted, purged 183 days after the removal)",
    UNLIMITED: "release an Unlimited Litigation Hold",
    EDISCOVERY: "remove the mailbox from an eDiscovery case hold",
}

SUCCESS = "success"
FAILED = "failed"
SKIPPED = "skipped"
ALREADY_DONE = "already-done"

PASSWORD_LENGTH = 20
_PASSWORD_SYMBOLS = "!#%+-=?@^_*"
# Get-Mailbox properties recorded in audit rows as the mailbox's state (holds and addresses).
STATE_KEYS = (
    "ExchangeGuid",
    "DistinguishedName",
    "PrimarySmtpAddress",
    "UserPrincipalName",
    "IsInactiveMailbox",
    "WasInactiveMailbox",
    "InactiveMailboxRetireTime",
    "LitigationHoldEnabled",
    "LitigationHoldDuration",
    "LitigationHoldDate",
    "InPlaceHolds",
    "ComplianceTagHoldApplied",
    "DelayHoldApplied",
    "DelayReleaseHoldApplied",
    "RetentionHoldEnabled",
    "SingleItemRecoveryEnabled",
    "RetainDeletedItemsFor",
    "EmailAddresses",
)


# ------------------------------------------------------------------------------------------------- results
@dataclass
class ActionPreview:
    """What an action would do, computed by imm (never by ``-WhatIf``).

    ``cmdlets`` are the calls that would run, as data (``{"cmdlet", "endpoint", "parameters"}``; a password shows as
    ``***``). ``nothing_to_do``: the action would change nothing (e.g. no hold of that type).
    """

    identity: str
    action: str
    summary: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    removes_last_hold: bool = False
    consequence: str = ""
    cmdlets: list[dict[str, Any]] = field(default_factory=list)
    mailbox: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    nothing_to_do: bool = False
    # The plan: the mailbox state it was computed from (``fingerprint_of`` its Get-Mailbox record), the action's
    # parameters (``spec``) and what execute needs of the computation (not shown, not compared).
    fingerprint: str = ""
    # what decides the confirmation: ``last-hold``, ``unlimited-litigation``, ``ediscovery`` (typed, even with --yes)
    consequences: list[str] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)
    computed: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "action": self.action,
            "mailbox": self.mailbox,
            "summary": list(self.summary),
            "blockers": list(self.blockers),
            "removes_last_hold": self.removes_last_hold,
            "consequence": self.consequence,
            "cmdlets": [dict(c) for c in self.cmdlets],
            "notes": list(self.notes),
            "nothing_to_do": self.nothing_to_do,
            "consequences": list(self.consequences),
            "fingerprint": self.fingerprint,
        }


def fingerprint_of(record: Mapping[str, Any] | None) -> str:
    """The state a plan was computed from: holds, addresses, lifecycle (``STATE_KEYS``) and WhenChanged of a
    Get-Mailbox record, hashed. A plan is executed only while the mailbox still has this fingerprint."""
    import hashlib
    import json

    values = plain(record)
    state = {key: values.get(key) for key in (*STATE_KEYS, "WhenChangedUTC", "WhenChanged")}
    for key, value in state.items():
        if isinstance(value, list):
            state[key] = sorted(str(v) for v in value)
    text = json.dumps(state, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class ActionResult:
    """The outcome of one action: ``status`` is success | failed | skipped | already-done."""

    identity: str
    action: str
    status: str
    message: str
    operation_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in (SUCCESS, SKIPPED, ALREADY_DONE)

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "action": self.action,
            "status": self.status,
            "message": self.message,
            "operation_id": self.operation_id,
            "details": self.details,
        }


class ActionBlockedError(BlockedError):
    """A preflight check stopped the action (exit 5). ``preview`` is the preview with its blockers filled in;
    ``codes`` are the blocker codes (e.g. ``auto-expanding-archive``)."""

    def __init__(self, preview: ActionPreview, codes: list[str], *, hint: str | None = None) -> None:
        name = preview.mailbox.get("primary_smtp") or preview.identity
        count = len(preview.blockers)
        what = "blocker" if count == 1 else "blockers"
        super().__init__(
            f"{preview.action} of {name} is blocked ({count} {what}): {'; '.join(codes)}",
            blockers=list(preview.blockers),
            hint=hint,
        )
        self.preview = preview
        self.codes = codes


class PlanChangedError(BlockedError):
    """The mailbox changed between the preview a person confirmed and the execution: nothing was run (exit 5)."""

    code = "plan_changed"


# ----------------------------------------------------------------------------------------------- passwords
def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """A random password that meets Entra ID complexity (upper, lower, digit and symbol; 8–256 characters).

    Look-alike characters (I, l, O, 0, 1) are left out so a person can type it from the screen.
    """
    if not 8 <= length <= 256:
        raise InputError("a password must be 8 to 256 characters long")
    upper = "".join(c for c in string.ascii_uppercase if c not in "IO")
    lower = "".join(c for c in string.ascii_lowercase if c != "l")
    digits = "23456789"
    groups = (upper, lower, digits, _PASSWORD_SYMBOLS)
    chars = [secrets.choice(group) for group in groups]
    alphabet = "".join(groups)
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def check_password(password: str) -> None:
    """InputError unless ``password`` meets Entra ID's rules (8–256 characters, 3 of 4 character classes)."""
    if not isinstance(password, str) or not 8 <= len(password) <= 256:
        raise InputError("the password must be 8 to 256 characters long")
    classes = sum(
        (
            any(c.isupper() for c in password),
            any(c.islower() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if classes < 3:
        raise InputError("the password needs 3 of: upper-case letters, lower-case letters, digits, symbols")


# ------------------------------------------------------------------------------------------------- helpers
def first(value: Any) -> dict[str, Any] | None:
    """A cmdlet result may be a record, a list of records, an iterator, or nothing."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, list | tuple):
        return value[0] if value else None
    try:
        for item in value:
            return item if isinstance(item, dict) else None
    except TypeError:
        return None
    return None


def records(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return [item for item in value if isinstance(item, dict)]


def plain(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """A record without OData annotation keys."""
    return {k: v for k, v in (record or {}).items() if "@" not in k}


def exchange_guid(record: Mapping[str, Any] | None) -> str:
    return str((record or {}).get("ExchangeGuid") or "").strip().lower()


def as_list(value: Any) -> list[Any]:
    return parse_list(value)  # the one reader of lists: imm.domain.parsing


def state_of(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The audit-relevant state of a Get-Mailbox record (holds, addresses, lifecycle)."""
    values = plain(record)
    return {key: values[key] for key in STATE_KEYS if key in values}


def truthy(value: Any) -> bool:
    """An Exchange boolean (``True``, ``"True"``, ``"$true"``…); empty or unreadable → False."""
    return or_default(parse_bool, value, False)


def addresses(record: Mapping[str, Any] | None) -> set[str]:
    return {str(a).lower() for a in as_list((record or {}).get("EmailAddresses"))}


def summary_of(mailbox: InactiveMailbox) -> dict[str, Any]:
    return {
        "identity": mailbox.identity,
        "display_name": mailbox.display_name,
        "primary_smtp": mailbox.primary_smtp,
        "user_principal_name": mailbox.user_principal_name,
        "when_soft_deleted": mailbox.when_soft_deleted,
        "hold_types": list(mailbox.hold_types),
    }


def label_of(mailbox: InactiveMailbox) -> str:
    name = mailbox.display_name or mailbox.name
    smtp = mailbox.primary_smtp
    return f"'{name}' <{smtp}>" if smtp and name else (smtp or name or mailbox.identity)


def blocker_line(blocker: Blocker) -> str:
    line = f"{blocker.code}: {blocker.message}"
    return f"{line} (instead: {blocker.alternative})" if blocker.alternative else line


def duration_text(days: int | None) -> str:
    return "Unlimited" if days is None else f"{days} days"


def days_of(value: Any) -> int | None:
    """Whole days of an Exchange duration (``"365.00:00:00"``); Unlimited, empty or unreadable → None."""
    return or_default(parse_timespan_days, value, None)


def is_exchange_item_error(exc: BaseException) -> bool:
    """An Exchange failure that concerns this one mailbox (returned as ``failed``), not the session (raised)."""
    from imm.exchange import AmbiguousOutcomeError, ExchangeError, ExoAuthError

    return isinstance(exc, ExchangeError) and not isinstance(exc, ExoAuthError | AmbiguousOutcomeError)


class ItemFailed(Exception):
    """Internal: an Exchange failure about this mailbox, already recorded in the audit log."""

    def __init__(self, error: BaseException, operation_id: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.operation_id = operation_id


def parse_days(value: Any) -> int | None:
    """A hold duration from a plan or an option: an int ≥ 1, or "unlimited" (None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in {"unlimited", ""}):
        return None
    try:
        days = int(str(value).strip())
    except ValueError:
        raise InputError(f"'{value}' is not a number of days (or 'unlimited')") from None
    if days < 1:
        raise InputError(f"the hold duration must be 1 day or more (got {days})")
    return days


def hint_for(blockers: Iterable[Blocker]) -> str | None:
    if any(b.forceable for b in blockers):
        return "an eDiscovery case hold can be released with --force-ediscovery (ask the case owner first)"
    return None
