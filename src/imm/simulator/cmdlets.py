"""The Exchange Online cmdlets the simulated tenant serves (design §5), over :class:`Tenant` semantics."""

from __future__ import annotations

from functools import partial
from typing import Any

from imm.simulator import render
from imm.simulator.binding import Cmdlet, Invocation, Param, Result
from imm.simulator.filters import FilterError, compile_filter
from imm.simulator.model import INACTIVE, CmdletError, Mailbox, binding, invalid, not_found
from imm.simulator.tenant import (
    SCOPE_ACTIVE,
    SCOPE_ALL,
    SCOPE_INACTIVE,
    SCOPE_SOFT_DELETED,
    SCOPE_WITH_INACTIVE,
)

DEFAULT_RESULT_SIZE = 1000
TRUNCATION_WARNING = (
    "There are more results available than are currently displayed. To view them, increase the value for the "
    "ResultSize parameter."
)
LEGACY_DN_MISMATCH_WARNING = "The AllowLegacyDNMismatch parameter is being deprecated in the cloud."  # unconfirmed


def _filter_properties(tenant_domain: str) -> dict[str, tuple[str, Any]]:
    return {
        "WhenChanged": ("date", lambda m: m.when_changed),
        "WhenChangedUTC": ("date", lambda m: m.when_changed),
        "WhenCreated": ("date", lambda m: m.when_created),
        "WhenCreatedUTC": ("date", lambda m: m.when_created),
        "WhenSoftDeleted": ("date", lambda m: m.when_soft_deleted),
        "Name": ("str", lambda m: m.name),
        "Alias": ("str", lambda m: m.alias),
        "DisplayName": ("str", lambda m: m.display_name),
        "PrimarySmtpAddress": ("str", lambda m: m.primary_smtp),
        "UserPrincipalName": ("str", lambda m: m.upn),
        "ExchangeGuid": ("str", lambda m: m.exchange_guid),
        "ExternalDirectoryObjectId": ("str", lambda m: m.external_directory_object_id),
        "RecipientTypeDetails": ("str", lambda m: m.recipient_type_details),
        "Company": ("str", lambda m: m.company),
        "Department": ("str", lambda m: m.department),
        "Office": ("str", lambda m: m.office),
        "IsInactiveMailbox": ("bool", lambda m: m.state == INACTIVE),
        "LitigationHoldEnabled": ("bool", lambda m: m.litigation_hold),
        "AutoExpandingArchiveEnabled": ("bool", lambda m: m.auto_expanding_archive),
        "ArchiveStatus": ("str", lambda m: "Active" if m.archive else "None"),
        **{
            f"CustomAttribute{n}": ("str", partial(lambda n, m: m.custom.get(f"CustomAttribute{n}", ""), n))
            for n in range(1, 16)
        },
    }


def _apply_filter(items: list[Mailbox], text: str | None, tenant_domain: str) -> list[Mailbox]:
    if not text:
        return items
    try:
        predicate = compile_filter(text, _filter_properties(tenant_domain))
    except FilterError as exc:
        raise binding(str(exc)) from None
    return [m for m in items if predicate(m)]


def _limit(items: list[Any], result_size: int | None) -> tuple[list[Any], bool]:
    if result_size is not None and len(items) > result_size:
        return items[:result_size], True
    return items, False


def _mailbox_scope(inv: Invocation) -> frozenset[str]:
    chosen = [n for n in ("InactiveMailboxOnly", "SoftDeletedMailbox", "IncludeInactiveMailbox") if inv.get(n)]
    if len(chosen) > 1:
        raise binding("Parameter set cannot be resolved using the specified named parameters.")
    return {
        "InactiveMailboxOnly": SCOPE_INACTIVE,
        "SoftDeletedMailbox": SCOPE_SOFT_DELETED,
        "IncludeInactiveMailbox": SCOPE_WITH_INACTIVE,
    }.get(chosen[0] if chosen else "", SCOPE_ACTIVE)


def get_mailbox(inv: Invocation) -> Result:
    tenant = inv.tenant
    scope = _mailbox_scope(inv)
    identity = inv.get("Identity")
    if identity is not None and inv.get("Filter"):
        raise binding("Parameter set cannot be resolved using the specified named parameters.")
    if identity is not None:
        items = [tenant.find(identity, scope)]
    else:
        items = _apply_filter(tenant.listing(scope), inv.get("Filter"), tenant.tenant_domain)
    types = {t.lower() for t in inv.get("RecipientTypeDetails") or []}
    if types:
        items = [m for m in items if m.recipient_type_details.lower() in types]
    items, truncated = _limit(items, inv.get("ResultSize", DEFAULT_RESULT_SIZE))
    return Result(items, partial(render.mailbox, tenant), truncated=truncated)


def get_mailbox_statistics(inv: Invocation) -> Result:
    tenant = inv.tenant
    scope = SCOPE_ALL if inv.get("IncludeSoftDeletedRecipients") else SCOPE_ACTIVE
    identity = inv.params["Identity"]
    mbx = tenant.find(identity, scope)
    archive = bool(inv.get("Archive"))
    if archive and not mbx.archive:
        raise invalid(f"The mailbox '{identity}' doesn't have an archive mailbox.")  # wording unconfirmed
    return Result([mbx], lambda m: render.statistics(m, archive))


def get_recipient(inv: Invocation) -> Result:
    tenant = inv.tenant
    scope = SCOPE_ALL if inv.get("IncludeSoftDeletedRecipients") else SCOPE_ACTIVE
    identity = inv.get("Identity")
    if identity is not None:
        items = [tenant.find(identity, scope)]
    else:
        items = _apply_filter(tenant.listing(scope), inv.get("Filter"), tenant.tenant_domain)
    types = {t.lower() for t in inv.get("RecipientTypeDetails") or []}
    if types:
        items = [m for m in items if m.recipient_type_details.lower() in types]
    items, truncated = _limit(items, inv.get("ResultSize", DEFAULT_RESULT_SIZE))
    return Result(items, partial(render.recipient, tenant), truncated=truncated)


# Export-MailboxDiagnosticLogs.md lists these ComponentName values among others; only HoldTracking has content here.
_DIAGNOSTIC_COMPONENTS = {"holdtracking", "substrateholdtracking", "oof", "calendarpermissions", "mrm"}


def export_mailbox_diagnostic_logs(inv: Invocation) -> Result:
    """HoldTracking history (-IncludeInactiveMailboxes reaches inactive ones; Export-MailboxDiagnosticLogs.md)."""
    tenant = inv.tenant
    component = str(inv.params["ComponentName"]).strip().lower()
    if component not in _DIAGNOSTIC_COMPONENTS:
        raise invalid(f"The component '{inv.params['ComponentName']}' isn't valid.")  # wording unconfirmed
    scope = SCOPE_WITH_INACTIVE if inv.get("IncludeInactiveMailboxes") else SCOPE_ACTIVE
    mbx = tenant.find(inv.params["Identity"], scope)
    if component != "holdtracking":
        return Result([mbx], lambda m: {"Identity": m.name, "MailboxLog": "[]"})
    return Result([mbx], partial(render.hold_tracking, tenant))


def get_organization_config(inv: Invocation) -> Result:
    return Result([render.organization(inv.tenant)])


def get_accepted_domain(inv: Invocation) -> Result:
    tenant = inv.tenant
    domains = list(tenant.accepted_domains)
    identity = inv.get("Identity")
    if identity is not None:
        domains = [d for d in domains if d.lower() == str(identity).strip().lower()]
        if not domains:
            raise not_found(str(identity))
    return Result(domains, partial(render.accepted_domain, tenant))


def new_mailbox(inv: Invocation) -> Result:
    inactive = inv.get("InactiveMailbox")
    if not inactive:
        raise invalid("The simulated tenant creates mailboxes only from inactive ones: use -InactiveMailbox.")
    online_id = inv.get("MicrosoftOnlineServicesID")
    password = inv.get("Password")
    if online_id and password is None:
        raise binding("Cannot process command because of one or more missing mandatory parameters: Password.")
    if password is not None:
        try:
            clear = inv.decrypt(password)
        except ValueError:
            raise binding(
                "Cannot process argument transformation on parameter 'Password'. The encrypted value couldn't be "
                "decrypted with the current public key."
            ) from None
        if len(clear) < 8:
            raise CmdletError(
                400,
                "Microsoft.Exchange.Management.RecipientTasks.PasswordComplexityException",
                "The specified password doesn't comply with password complexity requirements. Please provide a "
                "different password.",
            )  # wording unconfirmed
        del clear
    mbx, warnings = inv.tenant.recover(
        inactive,
        inv.params["Name"],
        inv.caller,
        online_id=online_id,
        display_name=inv.get("DisplayName"),
        first_name=inv.get("FirstName"),
        last_name=inv.get("LastName"),
    )
    return Result([mbx], partial(render.mailbox, inv.tenant), warnings=warnings)


_INACTIVE_ONLY = (
    "RemoveDelayHoldApplied",
    "RemoveDelayReleaseHoldApplied",
    "RemoveComplianceTagHoldApplied",
    "ExcludeFromOrgHolds",
    "ExcludeFromAllOrgHolds",
    "ExcludeFromAllHolds",
    "RemoveOrphanedHolds",
    "RecalculateInactiveMailbox",
    "ElcProcessingDisabled",
)
_ACTIVE_ONLY = (
    "EmailAddresses",
    "SingleItemRecoveryEnabled",
    "RetainDeletedItemsFor",
    "DisplayName",
    *(f"CustomAttribute{n}" for n in range(1, 16)),
)


def set_mailbox(inv: Invocation) -> Result:
    identity = inv.params["Identity"]
    if inv.get("InactiveMailbox"):
        for name in _ACTIVE_ONLY:
            if name in inv.params:
                raise binding(f"The parameter '{name}' can't be used together with the InactiveMailbox parameter.")
        warnings = inv.tenant.set_inactive_mailbox(identity, inv.caller, inv.params)
    else:
        for name in _INACTIVE_ONLY:
            if name in inv.params:
                raise binding(
                    f"The parameter '{name}' can only be used together with the InactiveMailbox parameter."
                )  # Exchange also takes some of them on active mailboxes; the simulator does not
        warnings = inv.tenant.set_mailbox(identity, inv.params)
    return Result([], warnings=warnings)


def new_restore_request(inv: Invocation) -> Result:
    tenant = inv.tenant
    request = tenant.new_restore_request(
        inv.params["SourceMailbox"],
        inv.params["TargetMailbox"],
        name=inv.get("Name"),
        source_is_archive=bool(inv.get("SourceIsArchive")),
        target_is_archive=bool(inv.get("TargetIsArchive")),
        target_root_folder=inv.get("TargetRootFolder") or "",
        allow_legacy_dn_mismatch=bool(inv.get("AllowLegacyDNMismatch")),
        batch_name=inv.get("BatchName") or "",
        exclude_dumpster=bool(inv.get("ExcludeDumpster")),
    )
    warnings = [LEGACY_DN_MISMATCH_WARNING] if inv.get("AllowLegacyDNMismatch") else []
    return Result([request], lambda r: render.restore_request(tenant, r, tenant.progress(r)), warnings=warnings)


def get_restore_request(inv: Invocation) -> Result:
    tenant = inv.tenant
    identity = inv.get("Identity")
    requests = tenant.find_restore_requests(identity)
    if identity is not None and not requests:
        tenant.find_restore_request(identity)  # raises the not-found error
    if inv.get("TargetMailbox"):
        target = tenant.find(inv.params["TargetMailbox"], SCOPE_ACTIVE)
        requests = [r for r in requests if r.target_guid == target.exchange_guid]
    if inv.get("SourceMailbox"):
        source = tenant.find(inv.params["SourceMailbox"], SCOPE_ALL)
        requests = [r for r in requests if r.source_guid == source.exchange_guid]
    if inv.get("Name"):
        requests = [r for r in requests if r.name.lower() == inv.params["Name"].lower()]
    if inv.get("BatchName"):
        requests = [r for r in requests if r.batch_name.lower() == inv.params["BatchName"].lower()]
    pairs = [(r, tenant.progress(r)) for r in requests]
    if inv.get("Status"):
        wanted = inv.params["Status"].lower()
        pairs = [(r, p) for r, p in pairs if p.status.lower() == wanted]
    items, truncated = _limit(pairs, inv.get("ResultSize", DEFAULT_RESULT_SIZE))
    return Result(items, lambda pair: render.restore_request(tenant, pair[0], pair[1]), truncated=truncated)


def get_restore_request_statistics(inv: Invocation) -> Result:
    tenant = inv.tenant
    request = tenant.find_restore_request(inv.params["Identity"])
    report = bool(inv.get("IncludeReport"))
    return Result([request], lambda r: render.restore_statistics(tenant, r, tenant.progress(r), report))


def remove_restore_request(inv: Invocation) -> Result:
    inv.tenant.remove_restore_request(inv.params["Identity"])
    return Result([])


def suspend_restore_request(inv: Invocation) -> Result:
    inv.tenant.suspend_restore_request(inv.params["Identity"], inv.get("SuspendComment") or "")
    return Result([])


def resume_restore_request(inv: Invocation) -> Result:
    inv.tenant.resume_restore_request(inv.params["Identity"])
    return Result([])


def _confirm_remove(params: dict[str, Any]) -> str:
    return f'Are you sure you want to perform this action?\nRemoving request "{params.get("Identity")}".'


_RESTORE_PARAMS = (
    Param("SourceMailbox", "string", True),
    Param("TargetMailbox", "string", True),
    Param("Name"),
    Param("SourceIsArchive", "switch"),
    Param("TargetIsArchive", "switch"),
    Param("TargetRootFolder"),
    Param("AllowLegacyDNMismatch", "switch"),
    Param("BatchName"),
    Param("ExcludeDumpster", "switch"),
    Param("ConflictResolutionOption"),
    Param("BadItemLimit", "int"),
    Param("LargeItemLimit", "int"),
    Param("AcceptLargeDataLoss", "switch"),
    Param("IncludeFolders", "strings"),
    Param("ExcludeFolders", "strings"),
)

CMDLETS: dict[str, Cmdlet] = {
    c.name: c
    for c in (
        Cmdlet(
            "Get-Mailbox",
            (
                Param("Identity"),
                Param("InactiveMailboxOnly", "switch"),
                Param("SoftDeletedMailbox", "switch"),
                Param("IncludeInactiveMailbox", "switch"),
                Param("ResultSize", "resultsize"),
                Param("Filter"),
                Param("RecipientTypeDetails", "strings"),
            ),
            get_mailbox,
        ),
        Cmdlet(
            "Get-MailboxStatistics",
            (
                Param("Identity", "string", True),
                Param("IncludeSoftDeletedRecipients", "switch"),
                Param("Archive", "switch"),
            ),
            get_mailbox_statistics,
        ),
        Cmdlet(
            "Get-Recipient",
            (
                Param("Identity"),
                Param("IncludeSoftDeletedRecipients", "switch"),
                Param("RecipientTypeDetails", "strings"),
                Param("ResultSize", "resultsize"),
                Param("Filter"),
            ),
            get_recipient,
        ),
        Cmdlet("Get-OrganizationConfig", (Param("Identity"),), get_organization_config),
        Cmdlet("Get-AcceptedDomain", (Param("Identity"),), get_accepted_domain),
        Cmdlet(
            "Export-MailboxDiagnosticLogs",
            (
                Param("Identity", "string", True),
                Param("ComponentName", "string", True),
                Param("IncludeInactiveMailboxes", "switch"),
                Param("Archive", "switch"),
            ),
            export_mailbox_diagnostic_logs,
        ),
        Cmdlet(
            "New-Mailbox",
            (
                Param("InactiveMailbox"),
                Param("Name", "string", True),
                Param("MicrosoftOnlineServicesID"),
                Param("Password", "secure"),
                Param("DisplayName"),
                Param("FirstName"),
                Param("LastName"),
                Param("ResetPasswordOnNextLogon", "bool"),
                Param("Alias"),
            ),
            new_mailbox,
        ),
        Cmdlet(
            "Set-Mailbox",
            (
                Param("Identity", "string", True),
                Param("InactiveMailbox", "switch"),
                Param("LitigationHoldEnabled", "bool"),
                Param("LitigationHoldDuration", "duration"),
                Param("RemoveDelayHoldApplied", "switch"),
                Param("RemoveDelayReleaseHoldApplied", "switch"),
                Param("RemoveComplianceTagHoldApplied", "switch"),
                Param("ExcludeFromOrgHolds", "strings"),
                Param("ExcludeFromAllOrgHolds", "switch"),
                Param("ExcludeFromAllHolds", "switch"),
                Param("RemoveOrphanedHolds", "strings"),
                Param("RecalculateInactiveMailbox", "switch"),
                Param("RetentionHoldEnabled", "bool"),
                Param("ElcProcessingDisabled", "bool"),
                Param("EmailAddresses", "proxies"),
                Param("SingleItemRecoveryEnabled", "bool"),
                Param("RetainDeletedItemsFor", "timespan"),
                Param("DisplayName"),
                *(Param(f"CustomAttribute{n}") for n in range(1, 16)),
            ),
            set_mailbox,
        ),
        Cmdlet("New-MailboxRestoreRequest", _RESTORE_PARAMS, new_restore_request),
        Cmdlet(
            "Get-MailboxRestoreRequest",
            (
                Param("Identity"),
                Param("Status"),
                Param("TargetMailbox"),
                Param("SourceMailbox"),
                Param("Name"),
                Param("BatchName"),
                Param("ResultSize", "resultsize"),
            ),
            get_restore_request,
        ),
        Cmdlet(
            "Get-MailboxRestoreRequestStatistics",
            (Param("Identity", "string", True), Param("IncludeReport", "switch")),
            get_restore_request_statistics,
        ),
        Cmdlet(
            "Suspend-MailboxRestoreRequest",
            (Param("Identity", "string", True), Param("SuspendComment")),
            suspend_restore_request,
        ),
        Cmdlet("Resume-MailboxRestoreRequest", (Param("Identity", "string", True),), resume_restore_request),
        Cmdlet(
            "Remove-MailboxRestoreRequest",
            (Param("Identity", "string", True),),
            remove_restore_request,
            confirm=_confirm_remove,
        ),
    )
}
