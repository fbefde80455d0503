"""Restore: copy an inactive mailbox's items into an active mailbox (X500 + New-MailboxRestoreRequest, domain.md §5).

The preflight plan (target, quota via ``restore_blockers_for``, request name, X500 address), the audited request
creation with reconciliation of an unknown outcome, and finding a request by name in Exchange. Following requests
afterwards is in :mod:`imm.services.restore_status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

from imm.data.audit_logger import AuditResult, OperationType, error_text, is_cancellation
from imm.errors import ImmError
from imm.services.action_base import ActionService, log, send_change
from imm.services.action_support import (
    FAILED,
    RESTORE,
    SUCCESS,
    ActionBlockedError,
    ActionPreview,
    ActionResult,
    addresses,
    blocker_line,
    exchange_guid,
    fingerprint_of,
    first,
    hint_for,
    label_of,
    plain,
    records,
    state_of,
    summary_of,
)
from imm.services.restore_tracking import NOT_CREATED

if TYPE_CHECKING:
    from imm.data.models import InactiveMailbox
    from imm.domain.eligibility import Blocker
    from imm.exchange.cmdlets import ExchangeOperations

DEFAULT_TARGET_ROOT_FOLDER = "Inactive Mailbox"  # primary → archive needs a root folder (domain.md §5)


class RestoreService(ActionService):
    """Create restore requests (tracked in :mod:`imm.services.restore_tracking`)."""

    def preview_restore(
        self,
        identity: str,
        target: str,
        *,
        archive: bool = False,
        target_folder: str | None = None,
        target_archive: bool | None = None,
        request_name: str | None = None,
        exclude_dumpster: bool = False,
    ) -> ActionPreview:
        """Preflight of a restore into ``target``: refresh, the target's mailbox, statistics and restore requests,
        blockers (raises ActionBlockedError). ``archive``: restore the source's archive (-SourceIsArchive);
        ``target_archive`` (default: same as ``archive``): into the target's archive (-TargetIsArchive).
        ``request_name``: a name of the caller's (a bulk item's, stable across retries); else imm-<guid>-<time>.
        ``exclude_dumpster``: leave the source's Recoverable Items out (-ExcludeDumpster)."""
        plan = self._restore_plan(
            identity, target, archive, target_folder, target_archive, request_name, exclude_dumpster
        )
        if plan.blockers:
            raise ActionBlockedError(plan.preview, [b.code for b in plan.blockers], hint=hint_for(plan.blockers))
        return plan.preview

    def _restore_plan(
        self,
        identity: str,
        target: str,
        archive: bool,
        target_folder: str | None,
        target_archive: bool | None,
        request_name: str | None = None,
        exclude_dumpster: bool = False,
    ) -> _RestorePlan:
        from imm.services.action_specs import RestoreSpec

        target = RestoreSpec.of(target).target
        to_archive = archive if target_archive is None else bool(target_archive)
        mailbox, record = self.mailboxes.refresh(identity, full=True)  # the quota check needs the source's size
        ops = self.mailboxes.need_ops()
        target_record = self.mailboxes.lookup_active(target)
        view: dict[str, Any] | None = None
        if target_record is not None:
            target_guid = exchange_guid(target_record)
            view = dict(plain(target_record))
            stats = first(ops.get_mailbox_statistics(target_guid))
            view["TotalItemSize"] = (stats or {}).get("TotalItemSize")
            view["TotalDeletedItemSize"] = (stats or {}).get("TotalDeletedItemSize")
            if to_archive and str(target_record.get("ArchiveStatus") or "").lower() == "active":
                archive_stats = first(ops.get_mailbox_statistics(target_guid, archive=True))
                view["ArchiveTotalItemSize"] = (archive_stats or {}).get("TotalItemSize")
            # imm names every request (-Name), so the 10 auto-generated names do not limit it: no count is needed
        blockers = restore_blockers_for(
            mailbox, view, archive=archive, target_archive=to_archive, exclude_dumpster=exclude_dumpster
        )
        folder = target_folder or (DEFAULT_TARGET_ROOT_FOLDER if to_archive and not archive else None)
        name = request_name or self._request_name(
            mailbox.identity, exchange_guid(target_record) if target_record else None
        )
        x500 = f"X500:{mailbox.legacy_exchange_dn}" if mailbox.legacy_exchange_dn else None
        has_x500 = x500 is not None and x500.lower() in addresses(target_record)
        target_label = (target_record or {}).get("PrimarySmtpAddress") or target
        cmdlets: list[dict[str, Any]] = []
        if target_record is None:
            x500 = None  # nothing will run: the target is missing
        if x500 and not has_x500:
            cmdlets.append(
                {
                    "cmdlet": "Set-Mailbox",
                    "endpoint": "exchange",
                    "parameters": {"Identity": exchange_guid(target_record) or target, "EmailAddresses": {"Add": x500}},
                }
            )
        request_params: dict[str, Any] = {
            "Name": name,
            "SourceMailbox": mailbox.identity,
            "TargetMailbox": exchange_guid(target_record) or target,
        }
        if archive:
            request_params["SourceIsArchive"] = True
        if to_archive:
            request_params["TargetIsArchive"] = True
        if folder:
            request_params["TargetRootFolder"] = folder
        if exclude_dumpster:
            request_params["ExcludeDumpster"] = True
        if target_record is not None:
            cmdlets.append(
                {"cmdlet": "New-MailboxRestoreRequest", "endpoint": "exchange", "parameters": request_params}
            )
        source_part = "archive" if archive else "primary mailbox"
        target_part = "archive" if to_archive else "primary mailbox"
        summary = [
            f"Restore the {source_part} of inactive mailbox {label_of(mailbox)} into the {target_part} of "
            f"{target_label}",
            f"Request name: {name}" + (f"; into folder '{folder}'" if folder else ""),
            "The inactive mailbox stays as it is (a copy is made)",
        ]
        if x500 and not has_x500:
            summary.append(f"First adds {x500} to the target's addresses (remove it later with --remove-x500)")
        elif x500:
            summary.append("The target already has the source's X500 address")
        preview = ActionPreview(
            identity=mailbox.identity,
            action=RESTORE,
            mailbox=summary_of(mailbox),
            summary=summary,
            blockers=[blocker_line(b) for b in blockers],
            consequence="Exchange copies the items into the target over minutes to hours; follow it with "
            "`imm restore status`",
            cmdlets=cmdlets,
            notes=["Put the target on Litigation Hold or Retention Hold first if old restored items must not expire"],
        )
        preview.mailbox["state"] = state_of(record)
        preview.fingerprint = fingerprint_of(record)
        preview.spec = {
            "target": target,
            "archive": archive,
            "target_folder": target_folder,
            "target_archive": target_archive,
            "exclude_dumpster": exclude_dumpster,
        }
        restore_plan = _RestorePlan(
            preview=preview,
            blockers=blockers,
            mailbox=mailbox,
            target_record=target_record,
            archive=archive,
            target_archive=to_archive,
            folder=folder,
            name=name,
            x500=x500,
            has_x500=has_x500,
            stable_name=request_name is not None,
            exclude_dumpster=exclude_dumpster,
        )
        preview.computed = restore_plan
        return restore_plan

    def _request_name(self, source_guid: str, target_guid: str | None) -> str:
        """``imm-<first 8 hex of the source ExchangeGuid>-<yyyymmddHHMM>`` (seconds added if that name is used)."""
        now = self.now().astimezone(UTC)
        base = f"imm-{source_guid.replace('-', '')[:8]}-{now:%Y%m%d%H%M}"
        if target_guid and base.lower() in self.restores.names_for_target(target_guid):
            return f"{base}{now:%S}"
        return base

    def restore(
        self,
        identity: str,
        target: str,
        *,
        archive: bool = False,
        target_folder: str | None = None,
        target_archive: bool | None = None,
        operation_context: dict[str, Any] | None = None,
    ) -> ActionResult:
        """Add the source's LegacyExchangeDN as X500 on the target, then New-MailboxRestoreRequest (domain.md §5):
        the plan computed now, executed at once."""
        context = operation_context or {}
        job, line = context.get("job_id"), context.get("line")
        name = job_request_name(identity, str(job), line) if job and line is not None else None
        preview = self.preview_restore(
            identity,
            target,
            archive=archive,
            target_folder=target_folder,
            target_archive=target_archive,
            request_name=name,
        )
        return self.execute(preview, operation_context=operation_context, check=False)

    def _execute(
        self, preview: ActionPreview, operation_context: dict[str, Any] | None, password: str | None = None
    ) -> ActionResult:
        """Create the restore request of ``preview`` exactly as shown (X500 first when the plan adds one)."""
        plan: _RestorePlan = preview.computed
        mailbox = plan.mailbox
        guid = mailbox.identity
        target_record = plan.target_record or {}
        target_guid = exchange_guid(target_record)
        intent = {
            "action": RESTORE,
            "target": target_guid,
            "target_smtp": target_record.get("PrimarySmtpAddress"),
            "request_name": plan.name,
            "source_is_archive": plan.archive,
            "target_is_archive": plan.target_archive,
            "target_root_folder": plan.folder,
            "x500": plan.x500,
            "fingerprint": preview.fingerprint,
            "before": {"source": plan.preview.mailbox["state"], "target": state_of(target_record)},
        }
        operation_id = self.auditor.begin(OperationType.RESTORE_MAILBOX, guid, intent, operation_context)
        try:
            again = self.restores.by_name(target_guid, plan.name) if plan.stable_name else None
            if again is not None:  # a job item run again (resumed): the same request, tracked once
                self.restores.update(again.id, operation_id=operation_id)
            tracked = again or self.restores.add(
                name=plan.name,
                source_identity=guid,
                source_smtp=mailbox.primary_smtp,
                source_legacy_dn=mailbox.legacy_exchange_dn,
                target=preview.spec["target"],
                target_guid=target_guid,
                target_smtp=target_record.get("PrimarySmtpAddress"),
                source_is_archive=plan.archive,
                target_is_archive=plan.target_archive,
                target_root_folder=plan.folder,
                x500_address=plan.x500,
                operation_id=operation_id,
                job_id=(operation_context or {}).get("job_id"),
            )
        except BaseException as exc:  # the started row must not be left without its result
            outcome = AuditResult.CANCELLED if is_cancellation(exc) else AuditResult.FAILURE  # nothing was sent yet
            self.auditor.finish(operation_id, outcome, {"request_name": plan.name}, operation_context, error_text(exc))
            raise

        def body() -> ActionResult:
            ops = self.mailboxes.need_ops()
            added = False
            x500 = plan.x500
            if x500 and not plan.has_x500:
                send_change(  # a lost reply is read back (does the target have the address?), not resent
                    lambda: ops.add_email_address(target_guid, x500, once=True),
                    lambda: x500.lower() in addresses(self.mailboxes.lookup_active(target_guid)),
                    f"restore {guid} (X500 on {target_guid})",
                )
                added = True
                self.restores.update(tracked.id, x500_added=True)
            request, reconciled = self._create_request(plan, target_guid)
            self.restores.update(
                tracked.id,
                request_identity=request.get("Identity"),
                request_guid=request.get("RequestGuid"),
                status=str(request.get("Status") or "Queued"),
            )
            notes: dict[str, Any] = {}
            after_target = self.auditor.after_change(lambda: self.mailboxes.lookup_active(target_guid), None, notes)
            details = {
                "action": RESTORE,
                "request_name": plan.name,
                "request_identity": request.get("Identity"),
                "request_guid": request.get("RequestGuid"),
                "status": request.get("Status"),
                "x500_added": added,
                "reconciled": reconciled,
                "after": {"target": state_of(after_target)},
                **notes,
            }
            self.auditor.finish(operation_id, AuditResult.SUCCESS, details, operation_context)
            return ActionResult(
                guid,
                RESTORE,
                SUCCESS,
                f"Restore request {request.get('Identity') or plan.name} created "
                f"({request.get('Status') or 'Queued'}); follow it with `imm restore status {guid}`",
                operation_id,
                {k: v for k, v in details.items() if k != "after"} | {"target": target_guid},
            )

        result = self.auditor.run(guid, RESTORE, operation_id, operation_context, intent, body)
        if result.status == FAILED:  # Exchange refused: the request does not exist (an unknown outcome raises)
            self.restores.update(tracked.id, status=NOT_CREATED)
        return result

    def _create_request(self, plan: _RestorePlan, target_guid: str) -> tuple[dict[str, Any], bool]:
        """New-MailboxRestoreRequest; (the request record, True when an ambiguous failure was reconciled)."""
        from imm.exchange import AmbiguousOutcomeError, ExchangeError

        ops = self.mailboxes.need_ops()

        def create() -> dict[str, Any]:
            return first(
                ops.new_restore_request(
                    plan.name,
                    plan.mailbox.identity,
                    target_guid,
                    source_is_archive=plan.archive,
                    target_is_archive=plan.target_archive,
                    target_root_folder=plan.folder,
                    exclude_dumpster=plan.exclude_dumpster,
                )
            ) or {"Name": plan.name}

        from imm.services.action_base import LOST_REPLY_SENDS

        for attempt in range(1, LOST_REPLY_SENDS + 1):
            try:
                return create(), False
            except AmbiguousOutcomeError as exc:
                log.warning("restore %s: outcome unknown (%s); reconciling", plan.mailbox.identity, exc.message)
                try:
                    found = find_request(ops, target_guid, plan.name)
                except ImmError:  # not even the read answers: the outcome stays unknown
                    raise exc from None
                if found is not None:
                    return found, True
                if attempt == LOST_REPLY_SENDS:
                    raise
                # reconciled: not created, so the call is safe to make once more (with the same name)
            except ExchangeError:
                # The name is this attempt's own (a job item's is stable across retries and resumes): when Exchange
                # refuses it because the request exists (an earlier attempt, e.g. of a killed run, got there),
                # that request is this one.
                found = find_request(ops, target_guid, plan.name) if plan.stable_name or attempt > 1 else None
                if found is not None:
                    return found, True
                raise
        raise AssertionError("not reached")


def find_request(ops: ExchangeOperations, target_guid: str, name: str) -> dict[str, Any] | None:
    """The restore request named ``name`` on the target, as Get-MailboxRestoreRequest lists it, or None."""
    from imm.exchange import ExoNotFoundError

    try:
        requests = records(ops.get_restore_requests(target=target_guid, name=name))
    except ExoNotFoundError:
        return None
    for request in requests:
        if str(request.get("Name") or "").lower() == name.lower():
            return request
    return None


@dataclass
class _RestorePlan:
    preview: ActionPreview
    blockers: list[Blocker]
    mailbox: InactiveMailbox
    target_record: dict[str, Any] | None
    archive: bool
    target_archive: bool
    folder: str | None
    name: str
    x500: str | None
    has_x500: bool
    stable_name: bool = False  # derived from a bulk job item: the same on every retry and resume
    exclude_dumpster: bool = False  # -ExcludeDumpster: the source's Recoverable Items are not copied


# ------------------------------------------------------------------------------------------------- helpers
def job_request_name(source: str, job_id: str, line: Any) -> str:
    """The restore request name of a bulk job item: ``imm-<8 hex of the source>-<job>-<line>``, the same on every
    retry and resume, so a request a killed run created is found (or refused as a duplicate) instead of doubled."""
    tail = str(job_id).removeprefix("job-").replace("-", "")
    return f"imm-{source.replace('-', '')[:8].lower()}-{tail}-{line}"


def restore_blockers_for(
    mailbox: InactiveMailbox,
    target: Mapping[str, Any] | None,
    *,
    archive: bool,
    target_archive: bool,
    exclude_dumpster: bool = False,
) -> list[Blocker]:
    """:func:`imm.domain.eligibility.restore_blockers` for every source/target combination.

    The domain check models primary → primary and archive → archive; for archive → primary and primary → archive
    the target-side checks run for the target part chosen and the quota check uses the source part's size.
    """
    from imm.domain.eligibility import Blocker, recoverable_items_blocker, restore_blockers, restore_source_blockers
    from imm.domain.parsing import format_size, parse_size

    if archive == target_archive:
        return restore_blockers(mailbox, target, archive=archive, exclude_dumpster=exclude_dumpster)
    blockers = restore_source_blockers(mailbox, archive=archive)
    codes = {b.code for b in blockers}
    quota_codes = {
        "target-over-quota",
        "target-archive-over-quota",
        "no-archive",
        "target-recoverable-items-over-quota",
    }
    for blocker in restore_blockers(mailbox, target, archive=target_archive):
        if blocker.code not in codes and blocker.code not in quota_codes:
            blockers.append(blocker)
            codes.add(blocker.code)
    if target is None:
        return blockers
    if not target_archive and not exclude_dumpster:  # the archive's Recoverable Items into the primary's
        found = recoverable_items_blocker(round(mailbox.archive_recoverable_items_mb * 1024 * 1024), target)
        if found is not None:
            blockers.append(found)
    incoming = round((mailbox.archive_size_mb if archive else mailbox.size_mb) * 1024 * 1024)
    quota_key, used_key = (
        ("ArchiveQuota", "ArchiveTotalItemSize") if target_archive else ("ProhibitSendReceiveQuota", "TotalItemSize")
    )
    try:
        quota, used = parse_size(target.get(quota_key)), parse_size(target.get(used_key))
    except ImmError:
        return blockers
    if quota is not None and used is not None and used + incoming > quota:
        blockers.append(
            Blocker(
                "target-archive-over-quota" if target_archive else "target-over-quota",
                f"The target's {quota_key} is {format_size(quota)}: {format_size(used)} used + "
                f"{format_size(incoming)} to restore would exceed it",
                "Raise the target's quota, restore into its archive, or choose another target",
            )
        )
    return blockers
