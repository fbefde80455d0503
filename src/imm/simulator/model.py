"""The simulated tenant's records (ground truth) and the error a cmdlet raises.

Records hold base facts only; derived Exchange properties (DistinguishedName, LegacyExchangeDN, EmailAddresses,
MailboxLocations, …) are computed from them so that a million mailboxes stay cheap in memory.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

# Where this tenant's directory lives (unconfirmed shapes, consistent across every record).
FOREST = "EURPR02A001.PROD.OUTLOOK.COM"
FOREST_FQDN = "eurprd02.prod.outlook.com"
DOMAIN_CONTROLLER = "AM0PR02A001DC01.EURPR02A001.PROD.OUTLOOK.COM"
LEGACY_DN_ROOT = "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients"

ACTIVE = "active"
INACTIVE = "inactive"
SOFT_DELETED = "softdeleted"

GB = 1024**3


def derived_guid(seed: str, kind: str) -> str:
    """A stable GUID derived from another (the AD object Guid, ArchiveGuid, …)."""
    digest = hashlib.md5(f"{kind}:{seed}".encode()).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


class CmdletError(Exception):
    """A terminating cmdlet error as Exchange reports it: HTTP status, .NET exception type, message text."""

    def __init__(self, status: int, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.exception_type = exception_type
        self.message = message


class NonTerminatingError(Exception):
    """The cmdlet ran but wrote an error instead of making the change: HTTP 200 with the text in
    ``@adminapi.errors`` (exo-rest.md §4; the module marks the command failed, domain.md §9)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def not_found(identity: str) -> CmdletError:
    return CmdletError(
        404,
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
        f"The operation couldn't be performed because object '{identity}' couldn't be found on '{DOMAIN_CONTROLLER}'.",
    )


def ambiguous(identity: str) -> CmdletError:
    return CmdletError(
        400,
        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException",
        f"The operation couldn't be performed because '{identity}' matches multiple entries.",
    )


def invalid(
    message: str, exception_type: str = "Microsoft.Exchange.Configuration.Tasks.TaskArgumentException"
) -> CmdletError:
    return CmdletError(400, exception_type, message)


def binding(message: str) -> CmdletError:
    return CmdletError(400, "System.Management.Automation.ParameterBindingException", message)


@dataclass(slots=True)
class Mailbox:
    """One mailbox of the tenant (active, inactive or soft-deleted). Times are epoch seconds (UTC)."""

    exchange_guid: str
    name: str
    alias: str
    display_name: str
    first_name: str
    last_name: str
    primary_smtp: str
    upn: str
    company: str
    department: str
    office: str
    title: str
    state: str  # ACTIVE | INACTIVE | SOFT_DELETED
    recipient_type_details: str = "UserMailbox"
    object_guid: str = ""  # the AD object's Guid ("" = derived from the ExchangeGuid)
    external_directory_object_id: str = ""
    when_created: float = 0.0
    when_changed: float = 0.0
    when_soft_deleted: float | None = None
    retire_time: float | None = None  # InactiveMailboxRetireTime
    was_inactive: bool = False
    litigation_hold: bool = False
    litigation_hold_date: float | None = None
    litigation_hold_duration: int | None = None  # days; None = Unlimited
    litigation_hold_owner: str = ""
    in_place_holds: list[str] = field(default_factory=list)
    compliance_tag_hold: bool = False
    # items carry retention labels of a published label policy, which stamps ComplianceTagHoldApplied again at once
    label_policy_reapplies: bool = False
    delay_hold: bool = False
    delay_release_hold: bool = False
    retention_hold: bool = False
    elc_processing_disabled: bool = False
    single_item_recovery: bool = True
    retain_deleted_items_for: int = 14  # days
    archive: bool = False
    auto_expanding_archive: bool = False
    aux_archive_shards: int = 0
    aux_primary_shards: int = 0
    mailbox_plan: str = "ExchangeOnlineEnterprise"
    capabilities: list[str] = field(default_factory=list)  # PersistedCapabilities (BPOS_S_Enterprise…)
    quota_bytes: int = 100 * GB  # ProhibitSendReceiveQuota
    archive_quota_bytes: int = 100 * GB
    item_count: int = 0
    total_bytes: int = 0
    deleted_item_count: int = 0
    deleted_bytes: int = 0
    archive_item_count: int = 0
    archive_bytes: int = 0
    extra_addresses: list[str] = field(default_factory=list)  # X500 and secondary proxies
    custom: dict[str, str] = field(default_factory=dict)  # "CustomAttribute5" -> value (sparse)
    database: str = ""  # database GUID
    last_logon: float | None = None
    delay_hold_since: float | None = None  # when the delay hold was applied after a hold's removal
    # Ended holds for Export-MailboxDiagnosticLogs -ComponentName HoldTracking: {"hid", "ht", "osd", "ed"} (epoch
    # seconds); None until a hold ends (a million mailboxes carry no empty lists).
    hold_history: list[dict[str, Any]] | None = None

    # Derived properties (not stored) -------------------------------------------------------------------

    @property
    def guid(self) -> str:
        """The AD object's Guid (``Guid`` on the wire)."""
        return self.object_guid or derived_guid(self.exchange_guid, "object")

    @property
    def is_inactive(self) -> bool:
        return self.state == INACTIVE

    def distinguished_name(self, tenant_domain: str) -> str:
        """``CN=<name>[,OU=Soft Deleted Objects],OU=<tenant>,OU=Microsoft Exchange Hosted Organizations,DC=…``."""
        ou = ",OU=Soft Deleted Objects" if self.state != ACTIVE else ""
        cn = self.name.replace("\\", "\\\\").replace(",", "\\,").replace("+", "\\+").replace('"', '\\"')
        dc = FOREST.replace(".", ",DC=")
        return f"CN={cn}{ou},OU={tenant_domain},OU=Microsoft Exchange Hosted Organizations,DC={dc}"

    @property
    def legacy_dn(self) -> str:
        return f"{LEGACY_DN_ROOT}/cn={self.exchange_guid.replace('-', '')}-{self.alias[:8]}"

    @property
    def archive_guid(self) -> str:
        return derived_guid(self.exchange_guid, "archive") if self.archive else "00000000-0000-0000-0000-000000000000"

    def email_addresses(self, tenant_domain: str) -> list[str]:
        routing = f"{self.alias}@{tenant_domain}"
        out = [f"SMTP:{self.primary_smtp}"]
        if routing.lower() != self.primary_smtp.lower():
            out.append(f"smtp:{routing}")
        out.extend(self.extra_addresses)
        return out

    def mailbox_locations(self, tenant_domain: str) -> list[str]:
        """``1;<mailbox guid>;<kind>;<forest fqdn>;<database guid>`` per location (format **unconfirmed**)."""
        out = [f"1;{self.exchange_guid};Primary;{FOREST_FQDN};{self.database}"]
        if self.archive:
            out.append(f"1;{self.archive_guid};MainArchive;{FOREST_FQDN};{derived_guid(self.database, 'archive-db')}")
        for i in range(self.aux_archive_shards):
            guid = derived_guid(self.exchange_guid, f"auxarchive{i}")
            out.append(f"1;{guid};AuxArchive;{FOREST_FQDN};{derived_guid(self.database, f'aux{i}')}")
        for i in range(self.aux_primary_shards):
            guid = derived_guid(self.exchange_guid, f"auxprimary{i}")
            out.append(f"1;{guid};AuxPrimary;{FOREST_FQDN};{derived_guid(self.database, f'auxp{i}')}")
        return out

    def to_state(self) -> dict[str, Any]:
        """A detached copy of every field (lists and dicts copied), for the state file and change checks."""
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Mailbox:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(slots=True)
class Policy:
    """A retention policy (``kind='retention'``) or an eDiscovery case hold policy (``kind='casehold'``).

    Explicit policies hold the mailboxes whose InPlaceHolds carry ``mbx<hex>:n`` / ``UniH<guid>``; org-wide
    ones (``org_wide``) hold every mailbox not excluded (``-mbx<hex>`` or ExchangeLocationException).
    """

    guid: str
    name: str
    kind: str = "retention"
    enabled: bool = True
    mode: str = "Enforce"
    restrictive: bool = False  # Preservation Lock
    org_wide: bool = False
    target: str = "mbx"  # mbx (mailboxes) | grp (Groups/Teams) | skp (Skype)
    action: int = 2  # 1 delete only, 2 retain only, 3 retain then delete
    duration_days: int | None = 2555  # None = Unlimited
    exceptions: list[str] = field(default_factory=list)  # ExchangeLocationException (SMTP addresses)
    initial_locations: list[str] = field(default_factory=list)  # what is shown without -DistributionDetail
    case_id: str = ""
    comment: str = ""
    when_created: float = 0.0
    when_changed: float = 0.0
    # What the policy covers (Get-RetentionCompliancePolicy location properties): "exchange" (ExchangeLocation),
    # "teams-chat" (TeamsChatLocation) or "public-folders" (PublicFolderLocation); an app policy (kind "app",
    # Get-AppRetentionCompliancePolicy) names its -Applications; adaptive scopes replace the static locations.
    location_kind: str = "exchange"
    applications: list[str] = field(default_factory=list)
    adaptive_scopes: list[str] = field(default_factory=list)
    published_label: str = ""  # a retention label policy: its rule's PublishComplianceTag

    @property
    def hex(self) -> str:
        return self.guid.replace("-", "")

    @property
    def hold_tag(self) -> str:
        """The InPlaceHolds entry this policy puts on a mailbox (or on the organization)."""
        if self.kind == "casehold":
            return f"UniH{self.guid}"
        return f"{self.target}{self.hex}:{self.action}"

    @property
    def rule_action(self) -> str:
        return {1: "Delete", 2: "Keep", 3: "KeepAndDelete"}[self.action]

    def to_state(self) -> dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Policy:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(slots=True)
class RestoreRequest:
    """A New-MailboxRestoreRequest; its status follows the wall clock (Queued → InProgress → Completed)."""

    request_guid: str
    name: str
    source_guid: str
    target_guid: str
    target_alias: str
    created: float
    estimated_bytes: int
    estimated_items: int
    source_is_archive: bool = False
    target_is_archive: bool = False
    target_root_folder: str = ""
    allow_legacy_dn_mismatch: bool = False
    batch_name: str = ""
    fail: bool = False  # test knob: the request ends Failed / FailedOther
    # Test knobs of the outcome: DataConsistencyScore grade (Perfect | Good | Investigate | Poor; the
    # track-prevent-data-loss-dcs article) and the items skipped (counted as BadItemsEncountered).
    consistency: str = "Perfect"
    skipped_items: int = 0
    exclude_dumpster: bool = False  # -ExcludeDumpster: the source's Recoverable Items are not copied
    dumpster_bytes: int = 0  # Recoverable Items copied into the target's Recoverable Items folder
    applied: bool = False  # the copied content has been added to the target
    suspended_at: float | None = None  # Suspend-MailboxRestoreRequest: progress stops until Resume-
    paused_seconds: float = 0.0  # time spent suspended (progress follows the clock less this)
    suspend_comment: str = ""

    @property
    def identity(self) -> str:
        return f"{self.target_alias}\\{self.name}"

    def to_state(self) -> dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> RestoreRequest:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
