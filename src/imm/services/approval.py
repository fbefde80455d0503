"""Four-eyes approval of bulk jobs: a profile policy names what needs a second person; a plan is submitted as a job
that waits; a *different* signed-in identity approves or rejects it; a run refuses a job that needs an approval and
lacks it, or whose content changed after it was approved.

Microsoft offers such a review for Purview's priority cleanup only (a second admin approves the deletion); for
inactive mailboxes imm supplies it. Who is who is the Entra ID object id of the signed-in account (the ID token's
``oid`` claim, msal's ``local_account_id``; for app-only sign-in the access token's ``oid``), never a typed name.

The state lives in the audit chain, not in a table an operator could edit: a ``BULK_SUBMIT`` row (the plan's path
and SHA-256, the SHA-256 of the job's items as stored, what the policy matched, the submitter's object id), then
one ``BULK_APPROVE`` or ``BULK_REJECT`` row (the approver's object id and the hashes approved). A refused approval
(one's own submission, a changed plan) and a refused run are rows too (result ``failure``, the reason in
``details.refused``). On a team store the operator role can INSERT audit rows but never UPDATE or DELETE them, so
an approval cannot be forged after the fact without breaking the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imm.config import APPROVAL_KINDS
from imm.data.audit_logger import AuditResult, OperationType
from imm.errors import BlockedError, InputError, NotFoundError
from imm.services.action_support import EDISCOVERY, LAST_HOLD, UNLIMITED

if TYPE_CHECKING:
    from imm.data.audit_logger import AuditLogger
    from imm.data.jobs import Item, Job, JobStore
    from imm.data.models import AuditLogEntry

APPROVED = "approved"
REJECTED = "rejected"
# the consequences the typed confirmations count -> the policy's word for them
_CONSEQUENCE_KIND = {LAST_HOLD: "last-hold", UNLIMITED: "unlimited", EDISCOVERY: "ediscovery"}


class ApprovalError(BlockedError):
    """A run (or an approval) that four-eyes refuses: exit 5, one line, what to do next in the hint."""

    code = "approval_required"


# ------------------------------------------------------------------------------------------------ the policy
def needed(policy: Collection[str], actions: Iterable[str], consequences: Iterable[str], *, bulk: bool) -> list[str]:
    """What of ``policy`` (a profile's ``approval_required``) a change matches, in the vocabulary's order:
    ``bulk`` for a bulk job, each action it runs, each consequence one of its releases has (``last-hold``,
    ``unlimited-litigation``, ``ediscovery`` as :mod:`imm.services.action_support` names them)."""
    found = {"bulk"} if bulk else set()
    found |= set(actions)
    found |= {_CONSEQUENCE_KIND[c] for c in consequences if c in _CONSEQUENCE_KIND}
    wanted = set(policy)
    return [kind for kind in APPROVAL_KINDS if kind in found and kind in wanted]


def single_refusal(policy: Collection[str], action: str, consequences: Iterable[str]) -> ApprovalError | None:
    """The error for a single change the policy reserves for four-eyes (None when it may run): it runs as a
    one-row plan, submitted and approved like any other."""
    kinds = needed(policy, [action], consequences, bulk=False)
    if not kinds:
        return None
    return ApprovalError(
        f"this {action} needs a second admin's approval (approval_required: {', '.join(kinds)})",
        hint="write it as a one-row plan (imm bulk plan … --out plan.csv), then `imm bulk submit plan.csv`; "
        "once another admin has run `imm bulk approve JOB`, `imm bulk run plan.csv --execute` runs it",
    )


def content_sha256(items: Iterable[Item]) -> str:
    """The SHA-256 of what a job will do, as its journal stores it (line, action, mailbox as named, ExchangeGuid,
    parameters), in line order: an edit of the stored items after the approval changes it."""
    hasher = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.line_no):
        row = [item.line_no, item.action, item.identity, item.mailbox_guid, item.params]
        hasher.update(json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
    return hasher.hexdigest()


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a plan file's bytes (as :func:`imm.services.bulk_plan.read_plan` hashes it); None when it
    cannot be read."""
    hasher = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                hasher.update(block)
    except OSError:
        return None
    return hasher.hexdigest()


# ------------------------------------------------------------------------------------------------ the records
@dataclass(frozen=True)
class Submission:
    """A ``BULK_SUBMIT`` row: a job waiting for (or given) a second person's decision."""

    job_id: str
    user: str | None
    object_id: str
    plan_path: str
    plan_sha256: str
    content_sha256: str
    needs: tuple[str, ...]
    timestamp: str

    @classmethod
    def of(cls, row: AuditLogEntry) -> Submission:
        d = row.details
        return cls(
            job_id=str(row.identity),
            user=row.user,
            object_id=str(d.get("object_id") or ""),
            plan_path=str(d.get("plan_path") or ""),
            plan_sha256=str(d.get("plan_sha256") or ""),
            content_sha256=str(d.get("content_sha256") or ""),
            needs=tuple(str(k) for k in d.get("needs") or ()),
            timestamp=row.timestamp.isoformat(timespec="seconds"),
        )


@dataclass(frozen=True)
class Decision:
    """A ``BULK_APPROVE`` or ``BULK_REJECT`` row."""

    kind: str  # approved | rejected
    user: str | None
    object_id: str
    plan_sha256: str
    content_sha256: str
    reason: str | None
    timestamp: str
    withdrawn: bool = False  # a rejection by the submitter

    @classmethod
    def of(cls, row: AuditLogEntry) -> Decision:
        d = row.details
        return cls(
            kind=APPROVED if row.operation == OperationType.BULK_APPROVE else REJECTED,
            user=row.user,
            object_id=str(d.get("object_id") or ""),
            plan_sha256=str(d.get("plan_sha256") or ""),
            content_sha256=str(d.get("content_sha256") or ""),
            reason=d.get("reason"),
            timestamp=row.timestamp.isoformat(timespec="seconds"),
            withdrawn=bool(d.get("withdrawn")),
        )


class Approvals:
    """Submissions and decisions of one store, read from and written to its audit chain. ``audit`` carries the
    signed-in user (a session's logger) for the rows it writes."""

    def __init__(self, store: JobStore, audit: AuditLogger) -> None:
        self.store = store
        self.audit = audit

    # ----- reading -----
    def submission(self, job_id: str) -> Submission | None:
        rows = self.audit.get_operations(
            identity=job_id, operation=OperationType.BULK_SUBMIT, result=AuditResult.SUCCESS, limit=1
        )
        return Submission.of(rows[0]) if rows else None

    def decision(self, job_id: str) -> Decision | None:
        """The first decision on the job (a decision is final)."""
        rows = self.audit.get_operations(
            identity=job_id,
            operation=[OperationType.BULK_APPROVE, OperationType.BULK_REJECT],
            result=AuditResult.SUCCESS,
            limit=1,
        )
        return Decision.of(rows[0]) if rows else None

    def latest_for_plan(self, plan_path: Path) -> Submission | None:
        """The newest submission of the plan file at ``plan_path`` (resolved), whatever its content was."""
        wanted = str(plan_path.resolve())
        for row in self.audit.iter_operations(
            operation=OperationType.BULK_SUBMIT, result=AuditResult.SUCCESS, newest_first=True
        ):
            if row.details.get("plan_path") == wanted:
                return Submission.of(row)
        return None

    def state(self, job_id: str) -> str | None:
        """``awaiting approval``, ``approved``, ``rejected``, or None for a job never submitted."""
        if self.submission(job_id) is None:
            return None
        decision = self.decision(job_id)
        return decision.kind if decision else "awaiting approval"

    # ----- writing -----
    def submit(self, job: Job, *, object_id: str | None, needs: Collection[str], counts: Mapping[str, int],
               consequences: Mapping[str, int]) -> Submission:  # fmt: skip
        """Record ``job`` (just created from the validated plan) as waiting for a second person."""
        oid = require_object_id(object_id)
        details = {
            "job_id": job.id,
            "plan_path": job.plan_path,
            "plan_sha256": job.plan_sha256,
            "content_sha256": content_sha256(self.store.items(job.id)),
            "items": sum(counts.values()),
            "actions": dict(counts),
            "consequences": dict(consequences),
            "needs": list(needs),
            "object_id": oid,
        }
        row = self.audit.log_operation(OperationType.BULK_SUBMIT, job.id, details, AuditResult.SUCCESS)
        return Submission.of(row)

    def approve(self, job_id: str, *, object_id: str | None) -> Decision:
        """A second person's approval, after the checks of :meth:`check_approvable`."""
        job, submission = self.check_approvable(job_id, object_id=object_id)
        details = self._details(job, submission, require_object_id(object_id))
        row = self.audit.log_operation(OperationType.BULK_APPROVE, job.id, details, AuditResult.SUCCESS)
        return Decision.of(row)

    def reject(self, job_id: str, *, object_id: str | None, reason: str | None) -> Decision:
        """A rejection (by a second person, or the submitter withdrawing it): the job never runs."""
        job, submission = self._open(job_id)
        oid = require_object_id(object_id)
        details = self._details(job, submission, oid)
        details["reason"] = reason
        details["withdrawn"] = oid.lower() == submission.object_id.lower()
        row = self.audit.log_operation(OperationType.BULK_REJECT, job.id, details, AuditResult.SUCCESS)
        return Decision.of(row)

    def check_runnable(self, job: Job, *, needs: Collection[str], operation: OperationType,
                       plan_sha256: str | None = None) -> None:  # fmt: skip
        """Refuse (audited as ``operation`` ``failure``, then ApprovalError) a run of ``job`` that four-eyes
        does not allow: a submitted job without an approval, or one whose items (or plan, when ``plan_sha256`` is
        given: ``bulk run PLAN``) differ from what was approved; a job the policy covers (``needs``) that was never
        submitted. Returns when it may run."""
        submission = self.submission(job.id)
        if submission is None:
            if not needs:
                return
            self._refuse_run(
                operation, job, None, list(needs), "not-submitted",
                f"job {job.id} needs a second admin's approval (approval_required: {', '.join(needs)}) "
                "and was never submitted",
                f"submit its plan: imm bulk submit {job.plan_path}",
            )  # fmt: skip
            return
        decision = self.decision(job.id)
        kinds = list(submission.needs) or list(needs)
        if decision is None:
            self._refuse_run(operation, job, submission, kinds, "awaiting-approval",
                             f"job {job.id} is waiting for a second admin's approval",
                             f"another admin runs: imm bulk approve {job.id}")  # fmt: skip
        elif decision.kind == REJECTED:
            why = f": {decision.reason}" if decision.reason else ""
            self._refuse_run(operation, job, submission, kinds, "rejected",
                             f"job {job.id} was rejected by {decision.user or decision.object_id}{why}",
                             "correct the plan and submit it again (imm bulk submit PLAN)")  # fmt: skip
        else:
            now = content_sha256(self.store.items(job.id))
            changed = now != decision.content_sha256 or job.plan_sha256 != decision.plan_sha256
            if plan_sha256 is not None and plan_sha256 != decision.plan_sha256:
                self._refuse_run(
                    operation, job, submission, kinds, "plan-changed",
                    f"the plan {job.plan_path} changed after job {job.id} was approved "
                    f"(SHA-256 {plan_sha256[:12]}…, approved {decision.plan_sha256[:12]}…)",
                    "submit the changed plan (imm bulk submit PLAN) for a new approval",
                )  # fmt: skip
            elif changed:
                self._refuse_run(operation, job, submission, kinds, "content-changed",
                                 f"job {job.id}'s stored items changed after it was approved",
                                 "submit the plan again (imm bulk submit PLAN) for a new approval")  # fmt: skip

    def refuse_unsubmitted_plan(self, plan_path: Path, plan_sha256: str, needs: list[str]) -> None:
        """``bulk run PLAN --execute`` of a plan the policy covers that was never submitted: audited, refused."""
        message = (
            f"the plan {plan_path.resolve()} needs a second admin's approval (approval_required: {', '.join(needs)})"
        )
        details = {"plan_path": str(plan_path.resolve()), "plan_sha256": plan_sha256, "needs": needs,
                   "refused": "not-submitted"}  # fmt: skip
        self.audit.log_operation(OperationType.BULK_OPERATION, str(plan_path.resolve()), details,
                                 AuditResult.FAILURE, message)  # fmt: skip
        raise ApprovalError(message, hint=f"submit it: imm bulk submit {plan_path}; another admin approves the job")

    def check_approvable(self, job_id: str, *, object_id: str | None) -> tuple[Job, Submission]:
        """What :meth:`approve` checks before it writes (each refusal audited, then raised)."""
        job, submission = self._open(job_id)
        oid = require_object_id(object_id)
        refuse = self._refuser(OperationType.BULK_APPROVE, job, submission, oid)
        if oid.lower() == submission.object_id.lower():
            refuse(
                "own-submission",
                f"job {job.id} was submitted by you ({submission.user or oid}): a different admin must approve it",
                "ask another admin to sign in (imm login) and run `imm bulk approve` on their own account",
            )
        now = content_sha256(self.store.items(job.id))
        if now != submission.content_sha256 or job.plan_sha256 != submission.plan_sha256:
            refuse("content-changed", f"job {job.id}'s stored items changed after it was submitted",
                   "submit the plan again (imm bulk submit PLAN)")  # fmt: skip
        current = file_sha256(Path(submission.plan_path))
        if current is not None and current != submission.plan_sha256:
            refuse(
                "plan-changed",
                f"the plan {submission.plan_path} changed after job {job.id} was submitted "
                f"(SHA-256 {current[:12]}…, submitted {submission.plan_sha256[:12]}…)",
                "the submitter submits the plan again (imm bulk submit PLAN), and that job is approved",
            )
        return job, submission

    def declined(self, job_id: str, *, object_id: str | None, message: str) -> None:
        """The approver answered no (or there was no answer): a ``cancelled`` BULK_APPROVE row, no decision."""
        job, submission = self._open(job_id)
        details = self._details(job, submission, require_object_id(object_id))
        self.audit.log_operation(OperationType.BULK_APPROVE, job.id, details, AuditResult.CANCELLED, message)

    # ----- helpers -----
    def _open(self, job_id: str) -> tuple[Job, Submission]:
        job = self.store.get(job_id)
        submission = self.submission(job.id)
        if submission is None:
            raise NotFoundError(
                f"job {job.id} was not submitted for approval",
                hint="`imm bulk submit PLAN` submits a plan; `imm bulk list` shows the jobs",
            )
        decision = self.decision(job.id)
        if decision is not None:
            by = decision.user or decision.object_id
            raise ApprovalError(
                f"job {job.id} was already {decision.kind} by {by} at {decision.timestamp}",
                hint="a decision is final: submit the plan again for a new one",
            )
        return job, submission

    @staticmethod
    def _details(job: Job, submission: Submission, oid: str) -> dict[str, Any]:
        return {
            "job_id": job.id,
            "plan_path": submission.plan_path,
            "plan_sha256": submission.plan_sha256,
            "content_sha256": submission.content_sha256,
            "needs": list(submission.needs),
            "submitted_by": submission.user,
            "submitted_by_object_id": submission.object_id,
            "object_id": oid,
        }

    def _refuser(self, operation: OperationType, job: Job, submission: Submission, oid: str) -> Any:
        def refuse(reason: str, message: str, hint: str) -> None:
            details = self._details(job, submission, oid)
            details["refused"] = reason
            self.audit.log_operation(operation, job.id, details, AuditResult.FAILURE, message)
            raise ApprovalError(message, hint=hint)

        return refuse

    def _refuse_run(self, operation: OperationType, job: Job, submission: Submission | None, needs: list[str],
                    reason: str, message: str, hint: str) -> None:  # fmt: skip
        details: dict[str, Any] = {
            "job_id": job.id,
            "mode": job.mode,
            "plan_path": job.plan_path,
            "plan_sha256": job.plan_sha256,
            "needs": needs,
            "refused": reason,
        }
        self.audit.log_operation(operation, job.id, details, AuditResult.FAILURE, message)
        raise ApprovalError(message, hint=hint)


def require_object_id(object_id: str | None) -> str:
    if not object_id:
        raise InputError(
            "the signed-in account has no Entra ID object id (oid) to tell two people apart",
            hint="sign in again (imm login); four-eyes approval compares object ids, never names",
        )
    return object_id
