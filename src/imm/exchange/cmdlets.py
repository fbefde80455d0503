"""Typed cmdlet calls imm needs (design §5), over an Exchange backend and an optional compliance backend.

Every method returns plain records (dicts with Exchange's property names and value texts, annotations removed):
single-object getters return one dict (an unknown identity raises :class:`ExoNotFoundError`), listings return a
list (always ``ResultSize Unlimited``: never the silent 1,000 default), and changing calls return the warnings
Exchange gave (a list of texts; also in ``backend.warnings`` and the log). Identities should be ExchangeGuid or
DistinguishedName values (an SMTP address can match an active and an inactive mailbox at once).

Calls that Exchange would confirm interactively (Remove-*, Set-RetentionCompliancePolicy, Set-CaseHoldPolicy) are
sent with ``Confirm: false``: imm asks its own confirmation before calling, and never passes ``-WhatIf``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from imm.domain.parsing import or_default, parse_bool
from imm.errors import ConfigError
from imm.exchange.encoding import UNLIMITED, SecureString
from imm.exchange.errors import ExchangeError


class Backend(Protocol):
    """The Exchange seam: what ExchangeOperations and the session need from a backend. Both backends satisfy it
    (:class:`imm.exchange.client.ExchangeClient` over REST, :class:`imm.exchange.powershell.PowerShellExecutor`
    over ``pwsh``; mypy checks it in :mod:`imm.exchange`)."""

    @property
    def last_warnings(self) -> list[str]: ...

    def invoke(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        result_size: int | str | None = None,
        keep_annotations: bool = False,
        creating: bool | None = None,
        select: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]: ...

    def invoke_all(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        result_size: int | str | None = None,
        keep_annotations: bool = False,
        creating: bool | None = None,
        select: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def filter_datetime(moment: datetime) -> str:
    """An OPATH date literal: ``MM/dd/yyyy HH:mm:ss`` in UTC, the invariant-culture text PowerShell puts in a
    filter string. Used against ``WhenChangedUTC`` so the server's time zone does not matter (unconfirmed: Exchange
    may read the text in the server's culture)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%m/%d/%Y %H:%M:%S")


class ExchangeOperations:
    """One method per cmdlet of design §5. ``compliance`` is the Security & Compliance backend (None: not
    connected; its methods then raise ConfigError)."""

    def __init__(self, exchange: Backend, compliance: Backend | None = None) -> None:
        self.exchange = exchange
        self.compliance = compliance

    # ------------------------------------------------------------------------------------------- helpers
    def _scc(self) -> Backend:
        if self.compliance is None:
            raise ConfigError("the Security & Compliance endpoint is not connected for this profile")
        return self.compliance

    @staticmethod
    def _one(backend: Backend, cmdlet: str, parameters: Mapping[str, Any], **options: Any) -> dict[str, Any]:
        records = backend.invoke_all(cmdlet, parameters, **options)
        if not records:
            raise ExchangeError(f"{cmdlet} returned no record", cmdlet=cmdlet)
        return records[0]

    @staticmethod
    def _change(backend: Backend, cmdlet: str, parameters: Mapping[str, Any], once: bool = False) -> list[str]:
        """Run a change; ``once``: not repeated after a lost reply (the backend's ``creating``)."""
        backend.invoke_all(cmdlet, parameters, creating=True if once else None)
        return backend.last_warnings

    def prepare_secure_strings(self) -> None:
        """Make sure a SecureString (the recover password) can be sent: the REST backend gets Exchange's public key
        now (ConfigError with the fix if it cannot); the PowerShell backend's module has its own."""
        prepare = getattr(self.exchange, "prepare_secure_strings", None)
        if prepare is not None:
            prepare()

    # ----------------------------------------------------------------------------------------- mailboxes
    def get_inactive_mailboxes(
        self, changed_since: datetime | None = None, select: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """``Get-Mailbox -InactiveMailboxOnly -ResultSize Unlimited`` (optionally only those changed since a time;
        ``select``: only these properties, where the backend can ask for them)."""
        return list(self.iter_inactive_mailboxes(changed_since, select))

    def iter_inactive_mailboxes(
        self, changed_since: datetime | None = None, select: Sequence[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """:meth:`get_inactive_mailboxes` page by page (a listing of 100K is never held whole)."""
        parameters: dict[str, Any] = {"InactiveMailboxOnly": True}
        if changed_since is not None:
            parameters["Filter"] = f"WhenChangedUTC -gt '{filter_datetime(changed_since)}'"
        return self.exchange.invoke("Get-Mailbox", parameters, result_size=UNLIMITED, select=select)

    def get_mailbox(self, identity: str, inactive: bool | None = True, soft_deleted: bool = False) -> dict[str, Any]:
        """One mailbox: ``inactive=True`` only inactive ones (-InactiveMailboxOnly), ``None`` active or inactive
        (-IncludeInactiveMailbox), ``False`` active only; ``soft_deleted`` searches soft-deleted ones instead."""
        parameters: dict[str, Any] = {"Identity": identity}
        if soft_deleted:
            parameters["SoftDeletedMailbox"] = True
        elif inactive is True:
            parameters["InactiveMailboxOnly"] = True
        elif inactive is None:
            parameters["IncludeInactiveMailbox"] = True
        return self._one(self.exchange, "Get-Mailbox", parameters)

    def get_soft_deleted_mailboxes(
        self, formerly_inactive: bool = False, select: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """``Get-Mailbox -SoftDeletedMailbox -ResultSize Unlimited`` (inactive ones included, as documented).

        ``formerly_inactive``: only those no longer inactive that were (``-Filter "IsInactiveMailbox -eq $false"``
        server-side, filter-properties.md; WasInactiveMailbox checked here): the mailboxes between the last hold's
        removal and their purge (delete-an-inactive-mailbox)."""
        return list(self.iter_soft_deleted_mailboxes(formerly_inactive, select))

    def iter_soft_deleted_mailboxes(
        self, formerly_inactive: bool = False, select: Sequence[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """:meth:`get_soft_deleted_mailboxes` page by page."""
        parameters: dict[str, Any] = {"SoftDeletedMailbox": True}
        if formerly_inactive:
            parameters["Filter"] = "IsInactiveMailbox -eq $false"
        records = self.exchange.invoke("Get-Mailbox", parameters, result_size=UNLIMITED, select=select)
        if not formerly_inactive:
            return records
        return (r for r in records if or_default(parse_bool, r.get("WasInactiveMailbox"), False))

    def export_hold_tracking(self, identity: str) -> list[dict[str, Any]]:
        """``Export-MailboxDiagnosticLogs -Identity X -ComponentName HoldTracking -IncludeInactiveMailboxes``: the
        hold history (``MailboxLog`` JSON; identify-a-hold article, Export-MailboxDiagnosticLogs.md)."""
        parameters = {"Identity": identity, "ComponentName": "HoldTracking", "IncludeInactiveMailboxes": True}
        return self.exchange.invoke_all("Export-MailboxDiagnosticLogs", parameters)

    def get_mailbox_statistics(
        self, identity: str, archive: bool = False, select: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """``Get-MailboxStatistics -Identity X -IncludeSoftDeletedRecipients [-Archive]`` (``select``: only these
        properties, where the backend can ask for them)."""
        parameters: dict[str, Any] = {"Identity": identity, "IncludeSoftDeletedRecipients": True}
        if archive:
            parameters["Archive"] = True
        return self._one(self.exchange, "Get-MailboxStatistics", parameters, select=select)

    def get_recipient(self, identity: str, soft_deleted: bool = True) -> dict[str, Any]:
        """``Get-Recipient -Identity X -IncludeSoftDeletedRecipients`` (Company, Department, Office…); without
        ``soft_deleted`` only active recipients answer."""
        parameters: dict[str, Any] = {"Identity": identity}
        if soft_deleted:
            parameters["IncludeSoftDeletedRecipients"] = True
        return self._one(self.exchange, "Get-Recipient", parameters)

    def get_recipients(
        self,
        recipient_type_details: Sequence[str] | None = ("UserMailbox", "SharedMailbox"),
        filter: str | None = None,  # noqa: A002 - the cmdlet's parameter name
        include_soft_deleted: bool = True,
        select: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """``Get-Recipient -IncludeSoftDeletedRecipients -RecipientTypeDetails … -ResultSize Unlimited``.

        Soft-deleted recipients are listed only with -Identity or -RecipientTypeDetails (domain.md §3), hence the
        default mailbox types."""
        return list(self.iter_recipients(recipient_type_details, filter, include_soft_deleted, select))

    def iter_recipients(
        self,
        recipient_type_details: Sequence[str] | None = ("UserMailbox", "SharedMailbox"),
        filter: str | None = None,  # noqa: A002 - the cmdlet's parameter name
        include_soft_deleted: bool = True,
        select: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """:meth:`get_recipients` page by page (``select``: only these properties, where the backend can)."""
        parameters: dict[str, Any] = {}
        if include_soft_deleted:
            parameters["IncludeSoftDeletedRecipients"] = True
        if recipient_type_details:
            parameters["RecipientTypeDetails"] = list(recipient_type_details)
        if filter:
            parameters["Filter"] = filter
        return self.exchange.invoke("Get-Recipient", parameters, result_size=UNLIMITED, select=select)

    def get_organization_config(self) -> dict[str, Any]:
        """``Get-OrganizationConfig`` (its InPlaceHolds hold the org-wide retention policies)."""
        return self._one(self.exchange, "Get-OrganizationConfig", {})

    def get_accepted_domains(self) -> list[dict[str, Any]]:
        """``Get-AcceptedDomain``: each domain's ``DomainName`` and ``AuthenticationType`` (Managed / Federated)."""
        return self.exchange.invoke_all("Get-AcceptedDomain", {})

    # ------------------------------------------------------------------------------------------- recover
    def new_mailbox_from_inactive(
        self,
        inactive_identity: str,
        name: str,
        upn: str,
        password: str | SecureString,
        display_name: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        reset_password_on_next_logon: bool = True,
    ) -> dict[str, Any]:
        """``New-Mailbox -InactiveMailbox X -Name -MicrosoftOnlineServicesID -Password`` (the recover). The password
        is sent only as an encrypted SecureString. Non-idempotent: an unknown outcome raises AmbiguousOutcomeError."""
        secret = password if isinstance(password, SecureString) else SecureString(password)
        parameters: dict[str, Any] = {
            "InactiveMailbox": inactive_identity,
            "Name": name,
            "MicrosoftOnlineServicesID": upn,
            "Password": secret,
            "DisplayName": display_name,
            "FirstName": first_name,
            "LastName": last_name,
            "ResetPasswordOnNextLogon": bool(reset_password_on_next_logon),
        }
        return self._one(self.exchange, "New-Mailbox", parameters, creating=True)

    # ------------------------------------------------------------------------------------------ set mailbox
    def set_inactive_mailbox(self, identity: str, *, once: bool = False, **parameters: Any) -> list[str]:
        """``Set-Mailbox -InactiveMailbox -Identity X`` with hold switches (LitigationHoldEnabled=False,
        RemoveDelayHoldApplied=True, ExcludeFromOrgHolds=[…], LitigationHoldDuration=…); returns the warnings.

        ``once`` (on every change method): sent once, not repeated by the client after a lost reply (a reset, a
        timeout, a 5xx): AmbiguousOutcomeError lets the caller read Exchange and send it again only when it did not
        take effect (:func:`imm.services.action_base.send_change`)."""
        return self._change(
            self.exchange, "Set-Mailbox", {"Identity": identity, "InactiveMailbox": True, **parameters}, once
        )

    def set_mailbox(self, identity: str, **parameters: Any) -> list[str]:
        """``Set-Mailbox -Identity X`` on an active mailbox; returns the warnings."""
        return self._change(self.exchange, "Set-Mailbox", {"Identity": identity, **parameters})

    def add_email_address(self, target: str, address: str, *, once: bool = False) -> list[str]:
        """``Set-Mailbox T -EmailAddresses @{Add="X500:…"}`` (restore needs the source's LegacyExchangeDN)."""
        parameters = {"Identity": target, "EmailAddresses": {"Add": address}}
        return self._change(self.exchange, "Set-Mailbox", parameters, once)

    def remove_email_address(self, target: str, address: str, *, once: bool = False) -> list[str]:
        """``Set-Mailbox T -EmailAddresses @{Remove="X500:…"}``."""
        parameters = {"Identity": target, "EmailAddresses": {"Remove": address}}
        return self._change(self.exchange, "Set-Mailbox", parameters, once)

    # -------------------------------------------------------------------------------------------- restore
    def new_restore_request(
        self,
        name: str,
        source: str,
        target: str,
        source_is_archive: bool = False,
        target_is_archive: bool = False,
        target_root_folder: str | None = None,
        allow_legacy_dn_mismatch: bool = False,
        batch_name: str | None = None,
        exclude_dumpster: bool = False,
    ) -> dict[str, Any]:
        """``New-MailboxRestoreRequest -Name -SourceMailbox -TargetMailbox […]``; non-idempotent (a named request
        lets the caller find out whether an ambiguous attempt created it)."""
        parameters: dict[str, Any] = {
            "Name": name,
            "SourceMailbox": source,
            "TargetMailbox": target,
            "TargetRootFolder": target_root_folder,
            "BatchName": batch_name,
        }
        for key, on in (
            ("SourceIsArchive", source_is_archive),
            ("TargetIsArchive", target_is_archive),
            ("AllowLegacyDNMismatch", allow_legacy_dn_mismatch),
            ("ExcludeDumpster", exclude_dumpster),
        ):
            if on:
                parameters[key] = True
        return self._one(self.exchange, "New-MailboxRestoreRequest", parameters, creating=True)

    def get_restore_requests(self, target: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """``Get-MailboxRestoreRequest [-TargetMailbox T] [-Name N] -ResultSize Unlimited``."""
        parameters = {"TargetMailbox": target, "Name": name}
        return self.exchange.invoke_all("Get-MailboxRestoreRequest", parameters, result_size=UNLIMITED)

    def get_restore_request_statistics(self, identity: str, include_report: bool = False) -> dict[str, Any]:
        """``Get-MailboxRestoreRequestStatistics -Identity <target\\name or RequestGuid>``."""
        parameters: dict[str, Any] = {"Identity": identity}
        if include_report:
            parameters["IncludeReport"] = True
        return self._one(self.exchange, "Get-MailboxRestoreRequestStatistics", parameters)

    def remove_restore_request(self, identity: str, *, once: bool = False) -> list[str]:
        """``Remove-MailboxRestoreRequest -Identity X -Confirm:$false``."""
        parameters = {"Identity": identity, "Confirm": False}
        return self._change(self.exchange, "Remove-MailboxRestoreRequest", parameters, once)

    def suspend_restore_request(self, identity: str, comment: str | None = None, *, once: bool = False) -> list[str]:
        """``Suspend-MailboxRestoreRequest -Identity X [-SuspendComment C]``."""
        parameters = {"Identity": identity, **({"SuspendComment": comment} if comment else {})}
        return self._change(self.exchange, "Suspend-MailboxRestoreRequest", parameters, once)

    def resume_restore_request(self, identity: str, *, once: bool = False) -> list[str]:
        """``Resume-MailboxRestoreRequest -Identity X`` (a suspended or failed request)."""
        return self._change(self.exchange, "Resume-MailboxRestoreRequest", {"Identity": identity}, once)

    # ----------------------------------------------------------------------------------------- compliance
    def get_retention_policies(self, distribution_detail: bool = True) -> list[dict[str, Any]]:
        """``Get-RetentionCompliancePolicy -DistributionDetail`` (without it the *Location values are inaccurate)."""
        parameters = {"DistributionDetail": True} if distribution_detail else {}
        return self._scc().invoke_all("Get-RetentionCompliancePolicy", parameters)

    def get_app_retention_policies(self) -> list[dict[str, Any]]:
        """``Get-AppRetentionCompliancePolicy -DistributionDetail``: policies for Teams private channels, Viva Engage
        and other apps (Get-AppRetentionCompliancePolicy.md)."""
        return self._scc().invoke_all("Get-AppRetentionCompliancePolicy", {"DistributionDetail": True})

    def get_app_retention_rules(self) -> list[dict[str, Any]]:
        """``Get-AppRetentionComplianceRule``: the durations and actions of the app retention policies."""
        return self._scc().invoke_all("Get-AppRetentionComplianceRule", {})

    def get_retention_rules(self) -> list[dict[str, Any]]:
        """``Get-RetentionComplianceRule`` (durations and actions of the policies)."""
        return self._scc().invoke_all("Get-RetentionComplianceRule", {})

    def set_retention_policy(self, identity: str, *, once: bool = False, **parameters: Any) -> list[str]:
        """``Set-RetentionCompliancePolicy X -RemoveExchangeLocation … / -AddExchangeLocationException …``."""
        parameters = {"Identity": identity, **parameters, "Confirm": False}
        return self._change(self._scc(), "Set-RetentionCompliancePolicy", parameters, once)

    def get_case_hold_policies(self, distribution_detail: bool = True) -> list[dict[str, Any]]:
        """``Get-CaseHoldPolicy -DistributionDetail``."""
        parameters = {"DistributionDetail": True} if distribution_detail else {}
        return self._scc().invoke_all("Get-CaseHoldPolicy", parameters)

    def set_app_retention_policy(self, identity: str, *, once: bool = False, **parameters: Any) -> list[str]:
        """``Set-AppRetentionCompliancePolicy -Identity <guid> …`` (e.g. -AddExchangeLocationException with
        -DeletedResources for a soft-deleted mailbox, its Example 2)."""
        parameters = {"Identity": identity, **parameters, "Confirm": False}
        return self._change(self._scc(), "Set-AppRetentionCompliancePolicy", parameters, once)

    def set_case_hold_policy(self, identity: str, *, once: bool = False, **parameters: Any) -> list[str]:
        """``Set-CaseHoldPolicy X -RemoveExchangeLocation …``."""
        parameters = {"Identity": identity, **parameters, "Confirm": False}
        return self._change(self._scc(), "Set-CaseHoldPolicy", parameters, once)

    # --------------------------------------------------------------------------------- unified audit log
    def search_unified_audit_log(
        self, start: datetime, end: datetime, session_id: str, *, record_type: str = "ExchangeAdmin", size: int = 5000
    ) -> list[dict[str, Any]]:
        """One block of ``Search-UnifiedAuditLog -SessionCommand ReturnLargeSet`` (cmdlet reference: rerun with the
        same ``SessionId`` for the next block, up to 50,000 records, unsorted; an empty block ends the set;
        ``ResultSize`` at most 5,000). Dates are sent as UTC text (``2026-12-03 14:30:00Z``)."""

        def utc(moment: datetime) -> str:
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")

        parameters = {
            "StartDate": utc(start),
            "EndDate": utc(end),
            "RecordType": record_type,
            "SessionId": session_id,
            "SessionCommand": "ReturnLargeSet",
            "ResultSize": size,
        }
        return self.exchange.invoke_all("Search-UnifiedAuditLog", parameters)
