"""Records kept in the local store (seed Task 1), extended with what analysis needs (design §3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class InactiveMailbox:
    """One inactive mailbox as cached. ``identity`` is the ExchangeGuid (the stable key).

    Sizes are in MB (1 MB = 1,048,576 bytes) as Get-MailboxStatistics reports them: ``size_mb`` is
    ``TotalItemSize`` and ``item_count`` ``ItemCount`` of the primary mailbox; its Recoverable Items folder is
    ``recoverable_items_mb`` (``TotalDeletedItemSize``) and ``deleted_item_count`` (``DeletedItemCount``); the
    archive likewise (``archive_size_mb``, ``archive_item_count``, ``archive_recoverable_items_mb``,
    ``archive_deleted_item_count``). Cost and the size filters use ``total_size_mb`` (all four sizes).
    """

    # --- the seed's fields ---
    identity: str
    display_name: str = ""
    primary_smtp: str = ""
    when_soft_deleted: datetime | None = None
    age_days: int | None = None
    size_mb: float = 0.0
    item_count: int = 0
    license_type: str = "Unknown"
    monthly_cost: float = 0.0
    hold_types: list[str] = field(default_factory=list)
    recovery_eligible: bool = False
    recovery_blockers: list[str] = field(default_factory=list)
    operating_company: str | None = None
    department: str | None = None
    last_updated: datetime | None = None
    # --- identities ---
    name: str = ""
    distinguished_name: str = ""
    legacy_exchange_dn: str = ""
    user_principal_name: str = ""
    external_directory_object_id: str = ""
    email_addresses: list[str] = field(default_factory=list)
    # --- archive and locations ---
    archive_status: str = "None"
    archive_guid: str = ""
    archive_size_mb: float = 0.0
    archive_item_count: int = 0
    auto_expanding_archive: bool = False
    mailbox_locations: list[str] = field(default_factory=list)  # location kinds: Primary, MainArchive, AuxArchive…
    # --- holds, raw as Exchange reports them ---
    litigation_hold_enabled: bool = False
    litigation_hold_date: datetime | None = None
    litigation_hold_duration: str | None = None  # "Unlimited" or "365.00:00:00"
    in_place_holds: list[str] = field(default_factory=list)
    compliance_tag_hold: bool = False
    delay_hold: bool = False
    delay_release_hold: bool = False
    retention_hold_enabled: bool = False
    # --- lifecycle ---
    when_changed: datetime | None = None
    inactive_mailbox_retire_time: datetime | None = None
    mailbox_plan: str = ""
    custom_attributes: dict[str, str] = field(default_factory=dict)
    tenant: str = ""
    # --- analysis (filled by imm.domain) ---
    restore_eligible: bool = False
    restore_blockers: list[str] = field(default_factory=list)
    holds_expire_on: datetime | None = None  # when every hold has run out; None with expiry_reason when never
    expiry_reason: str = ""
    releasable: bool = False  # every hold has expired and can be released
    hold_details: list[dict[str, Any]] = field(default_factory=list)  # decoded holds (imm.domain.holds)
    # --- sizes as Exchange reports them: the Recoverable Items folders beside the items ---
    recoverable_items_mb: float = 0.0  # TotalDeletedItemSize
    deleted_item_count: int = 0  # DeletedItemCount
    archive_recoverable_items_mb: float = 0.0
    archive_deleted_item_count: int = 0
    # --- lifecycle after the last hold (imm.domain.lifecycle) ---
    is_inactive_mailbox: bool = True  # IsInactiveMailbox (False: soft-deleted, formerly inactive)
    was_inactive_mailbox: bool = False  # WasInactiveMailbox
    last_hold_removed: datetime | None = None  # latest hold end date in the HoldTracking log
    lifecycle_state: str = "inactive"  # inactive | pending-delay | soft-deleted
    delay_hold_until: datetime | None = None  # when a present or expected delay hold ends at the latest
    purge_on: datetime | None = None  # earliest documented purge date (soft-deleted / pending delay)
    # --- conflicts found at sync: the active recipient that uses this mailbox's primary SMTP / UPN ("" = none) ---
    smtp_conflict: str = ""
    upn_conflict: str = ""
    # --- the profile's leaver retention schedule (leaver_retention_days from WhenSoftDeleted; imm.domain.expiry) ---
    leaver_retention_ends: datetime | None = None
    leaver_holds_after: list[str] = field(default_factory=list)  # hold kinds still in force when it ends
    leaver_retention_ended: bool = False  # ended, and only holds the schedule covers remain: release them

    @property
    def total_size_mb(self) -> float:
        """Primary and archive, items and Recoverable Items: what the mailbox occupies (cost, size bands)."""
        return round(
            self.size_mb + self.recoverable_items_mb + self.archive_size_mb + self.archive_recoverable_items_mb, 2
        )


@dataclass
class AuditLogEntry:
    """One row of the tamper-evident audit log (seed Task 3 plus the chain fields of design §3)."""

    id: int | None
    timestamp: datetime
    operation: str
    identity: str | None = None
    user: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    result: str = "success"  # started | success | failure | cancelled | checkpoint
    error_message: str | None = None
    operation_id: str | None = None
    tenant: str | None = None
    prev_hash: str = ""
    row_hash: str = ""
