"""Records as Exchange writes them in ``value`` (property names and value formats of exo-rest.md §4)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imm.simulator.formats import (
    EMPTY_GUID,
    Record,
    datetime_string,
    hold_duration_string,
    size_string,
    timespan_string,
)
from imm.simulator.model import ACTIVE, FOREST, GB, INACTIVE, Mailbox, Policy, RestoreRequest, derived_guid

if TYPE_CHECKING:
    from imm.simulator.tenant import RestoreProgress, Tenant

EXCHANGE_VERSION = "0.20 (15.0.0.0)"
_CUSTOM = [f"CustomAttribute{n}" for n in range(1, 16)]


def database_name(guid: str) -> str:
    """``EURPR02DG045-db123``: a database name stable per database GUID (shape unconfirmed)."""
    n = int(guid.replace("-", "")[:6], 16)
    return f"{FOREST.split('.')[0][:7]}DG{n % 400:03d}-db{n % 997:03d}"


def _identity(mbx: Mailbox) -> str:
    # Soft-deleted and inactive objects show under "Soft Deleted Objects" (unconfirmed detail).
    return mbx.name if mbx.state == ACTIVE else f"Soft Deleted Objects\\{mbx.name}"


def mailbox(tenant: Tenant, mbx: Mailbox) -> dict[str, Any]:
    """One Get-Mailbox record."""
    held = mbx.state != ACTIVE or mbx.litigation_hold or bool(mbx.in_place_holds)
    recoverable_quota = 100 * GB if held else 30 * GB
    r = Record()
    r.put("Name", mbx.name).put("Alias", mbx.alias).put("DisplayName", mbx.display_name)
    r.put("Identity", _identity(mbx)).put("Id", _identity(mbx))
    r.put("PrimarySmtpAddress", mbx.primary_smtp).put("UserPrincipalName", mbx.upn)
    r.put("WindowsEmailAddress", mbx.primary_smtp).put("MicrosoftOnlineServicesID", mbx.upn)
    r.guid("ExchangeGuid", mbx.exchange_guid).guid("Guid", mbx.guid)
    r.put("DistinguishedName", mbx.distinguished_name(tenant.tenant_domain)).put("LegacyExchangeDN", mbx.legacy_dn)
    r.put("ExternalDirectoryObjectId", mbx.external_directory_object_id)
    r.put("RecipientType", "UserMailbox").put("RecipientTypeDetails", mbx.recipient_type_details)
    r.put("IsInactiveMailbox", mbx.state == INACTIVE).put("WasInactiveMailbox", mbx.was_inactive)
    r.put("IsSoftDeletedByRemove", mbx.state != ACTIVE).put("IsSoftDeletedByDisable", False)
    r.date("WhenSoftDeleted", mbx.when_soft_deleted).date("InactiveMailboxRetireTime", mbx.retire_time)
    r.put("ArchiveStatus", "Active" if mbx.archive else "None")
    r.guid("ArchiveGuid", mbx.archive_guid if mbx.archive else EMPTY_GUID)
    r.put("ArchiveState", "Local" if mbx.archive else "None")
    r.strings("ArchiveName", [f"In-Place Archive - {mbx.display_name}"] if mbx.archive else [])
    r.put("AutoExpandingArchiveEnabled", mbx.auto_expanding_archive)
    r.put("ArchiveQuota", size_string(mbx.archive_quota_bytes))
    r.put("ArchiveWarningQuota", size_string(int(mbx.archive_quota_bytes * 0.9)))
    r.strings("MailboxLocations", mbx.mailbox_locations(tenant.tenant_domain))
    r.put("Database", database_name(mbx.database))
    r.put("LitigationHoldEnabled", mbx.litigation_hold)
    r.date("LitigationHoldDate", mbx.litigation_hold_date if mbx.litigation_hold else None)
    r.put("LitigationHoldDuration", hold_duration_string(mbx.litigation_hold_duration))
    r.put("LitigationHoldOwner", mbx.litigation_hold_owner if mbx.litigation_hold else "")
    r.strings("InPlaceHolds", mbx.in_place_holds)
    r.put("ComplianceTagHoldApplied", mbx.compliance_tag_hold)
    r.put("DelayHoldApplied", mbx.delay_hold).put("DelayReleaseHoldApplied", mbx.delay_release_hold)
    r.put("RetentionHoldEnabled", mbx.retention_hold)
    r.put("ElcProcessingDisabled", mbx.elc_processing_disabled)
    r.put("RetentionPolicy", "Default MRM Policy")
    r.put("SingleItemRecoveryEnabled", mbx.single_item_recovery)
    r.put("RetainDeletedItemsFor", timespan_string(mbx.retain_deleted_items_for))
    r.put("ProhibitSendReceiveQuota", size_string(mbx.quota_bytes))
    r.put("ProhibitSendQuota", size_string(int(mbx.quota_bytes * 0.99)))
    r.put("IssueWarningQuota", size_string(int(mbx.quota_bytes * 0.98)))
    r.put("RecoverableItemsQuota", size_string(recoverable_quota))
    r.put("RecoverableItemsWarningQuota", size_string(int(recoverable_quota * 0.9)))
    r.put("MailboxPlan", mbx.mailbox_plan)
    r.strings("PersistedCapabilities", mbx.capabilities)  # filter-properties: values of the Capability enum
    r.strings("EmailAddresses", mbx.email_addresses(tenant.tenant_domain))
    for name in _CUSTOM:
        r.put(name, mbx.custom.get(name, ""))
    for n in range(1, 6):
        r.strings(f"ExtensionCustomAttribute{n}", [])
    r.put("Office", mbx.office)
    r.put("HiddenFromAddressListsEnabled", mbx.state != ACTIVE)
    r.date("WhenChanged", mbx.when_changed).date("WhenChangedUTC", mbx.when_changed, utc_z=True)
    r.date("WhenCreated", mbx.when_created).date("WhenCreatedUTC", mbx.when_created, utc_z=True)
    r.put("ExchangeVersion", EXCHANGE_VERSION).put("IsValid", True).put("ObjectState", "Unchanged")
    return r.data


def statistics(mbx: Mailbox, archive: bool = False) -> dict[str, Any]:
    """One Get-MailboxStatistics record (primary, or the archive with ``archive``)."""
    r = Record()
    if archive:
        r.put("DisplayName", f"In-Place Archive - {mbx.display_name}")
        r.guid("MailboxGuid", mbx.archive_guid)
        items, size, deleted_items, deleted_size = mbx.archive_item_count, mbx.archive_bytes, 0, 0
    else:
        r.put("DisplayName", mbx.display_name)
        r.guid("MailboxGuid", mbx.exchange_guid)
        items, size = mbx.item_count, mbx.total_bytes
        deleted_items, deleted_size = mbx.deleted_item_count, mbx.deleted_bytes
    r.put("Identity", mbx.archive_guid if archive else mbx.exchange_guid)
    r.put("ItemCount", items).put("TotalItemSize", size_string(size))
    r.put("DeletedItemCount", deleted_items).put("TotalDeletedItemSize", size_string(deleted_size))
    r.put("AssociatedItemCount", min(items, 40 + items // 1000))
    r.put("MailboxTypeDetail", mbx.recipient_type_details)
    r.put("IsArchiveMailbox", archive)
    r.put("DatabaseName", database_name(derived_guid(mbx.database, "archive-db") if archive else mbx.database))
    r.date("LastLogonTime", mbx.last_logon)
    r.date("DisconnectDate", mbx.when_soft_deleted)
    r.put("DisconnectReason", "SoftDeleted" if mbx.state != ACTIVE else None)
    r.guid("OwnerADGuid", mbx.guid)
    r.put("IsValid", True)
    return r.data


def recipient(tenant: Tenant, mbx: Mailbox) -> dict[str, Any]:
    """One Get-Recipient record (Company and Department live here, not on Get-Mailbox)."""
    r = Record()
    r.put("Name", mbx.name).put("Alias", mbx.alias).put("DisplayName", mbx.display_name)
    r.put("FirstName", mbx.first_name).put("LastName", mbx.last_name)
    r.put("Identity", _identity(mbx))
    r.put("PrimarySmtpAddress", mbx.primary_smtp)
    r.put("ExternalDirectoryObjectId", mbx.external_directory_object_id)
    r.guid("Guid", mbx.guid).guid("ExchangeGuid", mbx.exchange_guid)
    r.put("DistinguishedName", mbx.distinguished_name(tenant.tenant_domain))
    r.put("RecipientType", "UserMailbox").put("RecipientTypeDetails", mbx.recipient_type_details)
    r.put("Company", mbx.company).put("Department", mbx.department)
    r.put("Office", mbx.office).put("Title", mbx.title).put("City", mbx.office)
    r.put("Manager", None)
    for name in _CUSTOM:
        r.put(name, mbx.custom.get(name, ""))
    r.strings("EmailAddresses", mbx.email_addresses(tenant.tenant_domain))
    r.date("WhenSoftDeleted", mbx.when_soft_deleted)
    r.date("WhenChanged", mbx.when_changed).date("WhenChangedUTC", mbx.when_changed, utc_z=True)
    r.date("WhenCreated", mbx.when_created).date("WhenCreatedUTC", mbx.when_created, utc_z=True)
    return r.data


def organization(tenant: Tenant) -> dict[str, Any]:
    """Get-OrganizationConfig (org-wide policies show only here)."""
    r = Record()
    r.put("Name", tenant.tenant_domain).put("DisplayName", "Contoso Group").put("Identity", tenant.tenant_domain)
    r.guid("Guid", derived_guid(tenant.tenant_id, "organization"))
    r.put("ExternalDirectoryOrganizationId", tenant.tenant_id)
    r.strings("InPlaceHolds", tenant.org_holds)
    r.put("IsDehydrated", False)
    r.date("WhenChanged", tenant.org_when_changed).date("WhenChangedUTC", tenant.org_when_changed, utc_z=True)
    return r.data


def accepted_domain(tenant: Tenant, domain: str) -> dict[str, Any]:
    """One Get-AcceptedDomain record: ``AuthenticationType`` is Managed or Federated (Set-AcceptedDomain
    ``-AuthenticationType <Managed | Federated>``; the property as Exchange Online prints it, e.g. EvotecIT
    PSWinDocumentation.O365's captured Get-AcceptedDomain output)."""
    federated = domain.lower() in (d.lower() for d in tenant.federated_domains)
    r = Record()
    r.put("DomainName", domain).put("Name", domain).put("Identity", domain)
    r.put("DomainType", "Authoritative").put("Default", domain.lower() == tenant.tenant_domain.lower())
    r.put("AuthenticationType", "Federated" if federated else "Managed")
    r.put("InitialDomain", domain.lower() == tenant.tenant_domain.lower())
    r.put("IsDefaultFederatedDomain", False)
    return r.data


def _workload(policy: Policy) -> str:
    return {"mbx": "Exchange", "skp": "Skype", "grp": "Exchange, ModernGroup"}[policy.target]


def retention_policy(tenant: Tenant, policy: Policy, detail: bool) -> dict[str, Any]:
    """One Get-RetentionCompliancePolicy record."""
    locations = tenant.policy_locations(policy, detail)
    r = Record()
    r.put("Name", policy.name).guid("Guid", policy.guid).put("Identity", policy.guid)
    r.put("Enabled", policy.enabled).put("Mode", policy.mode).put("RestrictiveRetention", policy.restrictive)
    r.put("Workload", _workload(policy)).put("Comment", policy.comment)
    mailboxes = policy.target == "mbx" and not policy.adaptive_scopes
    kind = policy.location_kind
    r.strings("ExchangeLocation", locations if mailboxes and kind == "exchange" else [])
    r.strings("ExchangeLocationException", policy.exceptions if policy.target == "mbx" else [])
    r.strings("TeamsChatLocation", locations if mailboxes and kind == "teams-chat" else [])
    r.strings("PublicFolderLocation", ["All"] if kind == "public-folders" else [])
    r.strings("SkypeLocation", locations if policy.target == "skp" else [])
    r.strings("ModernGroupLocation", ["All"] if policy.target == "grp" else [])
    if policy.kind == "app":  # Get-AppRetentionCompliancePolicy (New-AppRetentionCompliancePolicy -Applications)
        r.strings("Applications", policy.applications)
    # adaptive policies: members from their scopes (Set-RetentionCompliancePolicy AdaptiveScopeLocation set)
    r.put("IsAdaptivePolicy", bool(policy.adaptive_scopes))
    r.strings("AdaptiveScopeLocation", policy.adaptive_scopes)
    r.put("DistributionStatus", "Success" if detail else "Pending")
    r.strings("DistributionResults", [] if detail else [])
    r.date("WhenCreated", policy.when_created).date("WhenCreatedUTC", policy.when_created, utc_z=True)
    r.date("WhenChanged", policy.when_changed).date("WhenChangedUTC", policy.when_changed, utc_z=True)
    return r.data


def retention_rule(policy: Policy) -> dict[str, Any]:
    """The one rule of a retention policy (Get-RetentionComplianceRule)."""
    r = Record()
    r.put("Name", f"{policy.name} rule").guid("Guid", derived_guid(policy.guid, "rule"))
    r.put("Identity", derived_guid(policy.guid, "rule"))
    r.put("Policy", policy.guid)
    r.put("RetentionDuration", "Unlimited" if policy.duration_days is None else policy.duration_days)
    r.put("RetentionDurationDisplayHint", "Days")
    r.put("RetentionComplianceAction", policy.rule_action)
    r.put("ExpirationDateOption", "CreationAgeInDays")
    r.put("PublishComplianceTag", policy.published_label or None)  # New-RetentionComplianceRule -PublishComplianceTag
    r.put("Mode", policy.mode).put("Disabled", False).put("Workload", _workload(policy))
    r.date("WhenCreated", policy.when_created).date("WhenChanged", policy.when_changed)
    return r.data


def case_hold_policy(tenant: Tenant, policy: Policy, detail: bool) -> dict[str, Any]:
    """One Get-CaseHoldPolicy record."""
    r = Record()
    r.put("Name", policy.name).guid("Guid", policy.guid).put("Identity", policy.guid)
    r.put("CaseId", policy.case_id).put("Enabled", policy.enabled).put("Mode", policy.mode)
    r.put("Workload", "Exchange").put("Comment", policy.comment)
    r.strings("ExchangeLocation", tenant.policy_locations(policy, detail))
    r.put("DistributionStatus", "Success" if detail else "Pending")
    r.date("WhenCreated", policy.when_created).date("WhenChanged", policy.when_changed)
    return r.data


def restore_request(tenant: Tenant, request: RestoreRequest, progress: RestoreProgress) -> dict[str, Any]:
    """One Get-MailboxRestoreRequest record."""
    target = tenant.mailboxes.get(request.target_guid)
    r = Record()
    r.put("Name", request.name).put("Identity", request.identity)
    r.put("TargetMailbox", target.name if target else request.target_alias)
    r.put("Status", progress.status)
    r.guid("RequestGuid", request.request_guid)
    r.put("RequestQueue", database_name(target.database) if target else "")
    r.put("BatchName", request.batch_name)
    r.date("WhenCreated", request.created)
    return r.data


def restore_statistics(
    tenant: Tenant, request: RestoreRequest, progress: RestoreProgress, report: bool
) -> dict[str, Any]:
    """One Get-MailboxRestoreRequestStatistics record."""
    source = tenant.mailboxes.get(request.source_guid)
    target = tenant.mailboxes.get(request.target_guid)
    elapsed = max(0.0, (progress.completion or tenant.clock()) - request.created)
    r = Record()
    r.put("Name", request.name).put("Identity", request.identity)
    r.put("Status", progress.status).put("StatusDetail", progress.status_detail)
    r.guid("RequestGuid", request.request_guid)
    r.put("SourceMailboxIdentity", source.name if source else "")
    r.guid("SourceExchangeGuid", request.source_guid).put("SourceIsArchive", request.source_is_archive)
    r.put("TargetMailboxIdentity", target.name if target else request.target_alias)
    r.guid("TargetExchangeGuid", request.target_guid).put("TargetIsArchive", request.target_is_archive)
    r.put("TargetRootFolder", request.target_root_folder or None)
    r.put("PercentComplete", progress.percent)
    r.put("BytesTransferred", size_string(progress.bytes_transferred))
    r.put("EstimatedTransferSize", size_string(request.estimated_bytes))
    r.put("ItemsTransferred", progress.items_transferred)
    r.put("EstimatedTransferItemCount", request.estimated_items)
    done = progress.status in ("Completed", "CompletedWithWarning")
    r.put("BadItemLimit", 0).put("BadItemsEncountered", request.skipped_items if done else 0)
    r.put("LargeItemLimit", 0).put("LargeItemsEncountered", 0).put("MissingItemsEncountered", 0)
    # DataConsistencyScore "exists on … RequestStatistics objects" (track-prevent-data-loss-dcs); graded once done
    r.put("DataConsistencyScore", request.consistency if done else None)
    r.date("QueuedTimestamp", request.created).date("StartTimestamp", progress.start)
    r.date("LastUpdateTimestamp", min(tenant.clock(), progress.completion or tenant.clock()))
    r.date("CompletionTimestamp", progress.completion)
    r.put("OverallDuration", timespan_string(elapsed / 86400))
    r.put("FailureType", "FailedOther" if progress.status == "Failed" else None)
    r.put("Message", "" if progress.status != "Failed" else "Error: The request failed (simulated FailedOther).")
    if report:
        lines = [f"{request.created:.0f} [sim] '{request.identity}' created request."]
        if progress.start:
            lines.append(f"{progress.start:.0f} [sim] Copying messages to the target mailbox.")
        if progress.completion:
            lines.append(f"{progress.completion:.0f} [sim] Request is complete.")
        r.put("Report", "\n".join(lines))
    return r.data


_MIN_DATE = "0001-01-01T00:00:00.0000000"  # DateTime.MinValue: the hold still applies


def hold_tracking(tenant: Tenant, mbx: Mailbox) -> dict[str, Any]:
    """One Export-MailboxDiagnosticLogs -ComponentName HoldTracking record: ``MailboxLog`` is JSON text with one
    ``{ed, hid, ht, lsd, osd}`` entry per hold (identify-a-hold article, "How to confirm that an organization-wide
    retention policy is applied to a mailbox"). The record's other properties are **unconfirmed**."""
    import json

    entries = []
    for entry in tenant.hold_tracking(mbx):
        start = datetime_string(entry["osd"], utc_z=True)
        ended = datetime_string(entry["ed"], utc_z=True) if entry["ed"] is not None else _MIN_DATE
        entries.append({"ed": ended, "hid": entry["hid"], "ht": entry["ht"], "lsd": start, "osd": start})
    r = Record()
    r.put("Identity", _identity(mbx)).put("MailboxLog", json.dumps(entries, separators=(",", ":")))
    return r.data
