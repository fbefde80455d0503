"""imm.domain.analyse over records built by hand, and the purity rule of imm.domain."""

from __future__ import annotations

import ast
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imm.config import CostModel, OrgMapping
from imm.data.models import InactiveMailbox
from imm.domain.analyse import analyse
from imm.domain.holds import HoldAction, PolicyInfo
from imm.domain.records import mailbox_from_records

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
G_ORG = "7cfb30345d454ac0a989ab3041051209"
G_CASE = "1a0e3347f7f343a7aaad92e4e8a9066f"
POLICIES = {
    G_ORG: PolicyInfo(
        guid=G_ORG, name="All mailboxes 7y", retention_days=2555, action=HoldAction.RETAIN_THEN_DELETE, scope_all=True
    ),
    G_CASE: PolicyInfo(guid=G_CASE, name="Case 2024-17", kind="case-hold"),
}
ORG_HOLDS = [f"mbx{G_ORG}:3", "grp" + "e" * 32 + ":3"]
DB = "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d"


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ExchangeGuid@data.type": "System.Guid",
        "ExchangeGuid": "5c8b9f0e-3d2a-4b1c-9e8f-7a6b5c4d3e2f",
        "DisplayName": "Anna Berg",
        "PrimarySmtpAddress": "anna.berg@contoso.com",
        "WhenSoftDeleted": "2024-03-01T00:00:00.0000000+00:00",
        "WhenChangedUTC": "2026-11-01T10:00:00Z",
        "LitigationHoldEnabled": True,
        "LitigationHoldDuration": "365.00:00:00",
        "LitigationHoldDate": "2020-01-15T00:00:00.0000000+00:00",
        "InPlaceHolds": [],
        "ArchiveStatus": "Active",
        "MailboxLocations": [
            f"1;5c8b9f0e-3d2a-4b1c-9e8f-7a6b5c4d3e2f;Primary;contoso.onmicrosoft.com;{DB}",
            f"1;d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6;MainArchive;contoso.onmicrosoft.com;{DB}",
        ],
        "MailboxPlan": "ExchangeOnlineEnterprise-6f2e8ba4-4b0b-4c1b-8ab3-7f8b3c2a1d00",
    }
    return {**base, **changes}


STATS = {"ItemCount": 100, "TotalItemSize": "3 GB (3,221,225,472 bytes)", "TotalDeletedItemSize": "0 B (0 bytes)"}
ARCHIVE = {"ItemCount": 10, "TotalItemSize": "1 GB (1,073,741,824 bytes)", "TotalDeletedItemSize": "0 B (0 bytes)"}


def run(rec: dict[str, Any], org_holds: list[str] | None = None) -> InactiveMailbox:
    mailbox = mailbox_from_records(rec, STATS, ARCHIVE, None, OrgMapping(), None, "contoso", NOW)
    return analyse(
        mailbox,
        org_holds=ORG_HOLDS if org_holds is None else org_holds,
        policies=POLICIES,
        cost_model=CostModel(),
        now=NOW,
    )


def test_litigation_and_org_policy() -> None:
    m = run(record())
    assert m.hold_types == ["litigation", "org-policy"]
    assert [d["description"] for d in m.hold_details] == [
        "Litigation Hold for 365 days from 2020-01-15",
        "Org-wide retention policy 'All mailboxes 7y' that covers every mailbox (retain for 2,555 days, then delete)",
    ]
    assert m.recovery_eligible is True and m.recovery_blockers == []
    assert m.restore_eligible is True and m.restore_blockers == []
    assert m.holds_expire_on == datetime(2031, 2, 28, tzinfo=UTC)  # 2024-03-01 + 2,555 days
    assert m.expiry_reason == (
        "every hold runs out by 2031-02-28 (retention policy 'All mailboxes 7y': 2,555 days from each "
        "item's creation or last change;"
        " the newest items date from about the deletion on "
        "2024-03-01)"
    )
    assert m.releasable is False
    assert m.age_days == 1002
    assert m.license_type == "Exchange Online Plan 2"
    assert m.monthly_cost == 7.08  # 7.00 + 0.02 x 4 GB
    assert m.size_mb == 3072.0 and m.archive_size_mb == 1024.0


def test_excluded_from_org_policy_and_litigation_run_out() -> None:
    m = run(record(InPlaceHolds=[f"-mbx{G_ORG}"]))
    assert m.hold_types == ["litigation"]
    assert [d["kind"] for d in m.hold_details] == ["litigation", "excluded-org-policy"]
    assert m.holds_expire_on == datetime(2025, 3, 1, tzinfo=UTC)
    assert m.releasable is True
    assert m.expiry_reason == (
        "every hold has run out; the last on 2025-03-01 (Litigation Hold: 365 days from each item's "
        "received or created date;"
        " the newest items date from about the deletion on 2024-03-01)"
    )


def test_blocked_mailbox_with_a_case_hold() -> None:
    rec = record(
        InPlaceHolds=[f"UniH{G_CASE}"],
        AutoExpandingArchiveEnabled=True,
        MailboxLocations=[f"1;a;Primary;c;{DB}", f"1;b;MainArchive;c;{DB}", f"1;c;AuxArchive;c;{DB}"],
        ExternalDirectoryObjectId="0f9e8d7c-6b5a-4939-8271-605f4e3d2c1b",
    )
    m = run(rec, org_holds=[])
    assert m.hold_types == ["litigation", "ediscovery"]
    assert m.recovery_eligible is False
    assert m.recovery_blockers == [
        "auto-expanding-archive: The mailbox has an auto-expanding archive (AuxArchive locations)",
        "user-restorable: The user account is still within its 30-day soft-delete window "
        "(ExternalDirectoryObjectId is set)",
    ]
    assert m.restore_eligible is False
    assert m.restore_blockers == [
        "auto-expanding-archive: The mailbox has an auto-expanding archive (AuxArchive locations)"
    ]
    assert m.holds_expire_on is None
    assert m.expiry_reason == "never by itself: eDiscovery case hold 'Case 2024-17' has no duration"
    assert m.releasable is False


def test_no_hold_at_all() -> None:
    m = run(record(LitigationHoldEnabled=False, MailboxPlan="ExchangeOnlineDeskless-1"), org_holds=[])
    assert m.hold_types == [] and m.hold_details == []
    # Still listed as inactive with no hold: Exchange has yet to process it, and a delay hold follows any removal
    # (identify-a-hold article), so it is pending delay and never in a --releasable selection.
    assert m.releasable is False
    assert m.lifecycle_state == "pending-delay"
    assert m.expiry_reason == "no hold keeps this mailbox inactive"
    assert m.license_type == "Exchange Online Kiosk"
    assert m.monthly_cost == 1.88  # 1.80 + 0.02 x 4 GB


def test_cached_mailbox_with_naive_dates_and_no_plan() -> None:
    mailbox = InactiveMailbox(
        identity="x",
        when_soft_deleted=datetime(2026, 11, 1),  # naive, as an old cache might hold it
        litigation_hold_enabled=True,
        litigation_hold_duration="10.00:00:00",
        license_type="Exchange Online Plan 1",
        size_mb=0.0,
    )
    analyse(mailbox, org_holds=[], policies={}, cost_model=CostModel(), now=NOW)
    assert mailbox.when_soft_deleted == datetime(2026, 11, 1, tzinfo=UTC)
    assert mailbox.age_days == 27
    assert mailbox.holds_expire_on == datetime(2026, 11, 11, tzinfo=UTC)
    assert mailbox.releasable is True
    assert mailbox.license_type == "Exchange Online Plan 1"  # kept: no MailboxPlan to derive it from
    assert mailbox.monthly_cost == 3.5


def test_unknown_deletion_date_and_future_deletion() -> None:
    m = run(record(WhenSoftDeleted=None))
    assert m.age_days is None
    assert m.releasable is False
    future = run(record(WhenSoftDeleted="2026-11-29T00:00:00Z"))  # clock skew: never negative
    assert future.age_days == 0


def test_analyse_is_idempotent_and_returns_the_same_object() -> None:
    mailbox = mailbox_from_records(record(), STATS, ARCHIVE, None, OrgMapping(), None, "contoso", NOW)
    first = analyse(mailbox, org_holds=ORG_HOLDS, policies=POLICIES, cost_model=CostModel(), now=NOW)
    assert first is mailbox
    snapshot = dict(vars(mailbox))
    analyse(mailbox, org_holds=ORG_HOLDS, policies=POLICIES, cost_model=CostModel(), now=NOW)
    assert vars(mailbox) == snapshot
    first.hold_details[0]["kind"] = "tampered"  # each mailbox gets its own dicts
    other = run(record())
    assert other.hold_details[0]["kind"] == "litigation"


def test_domain_imports_only_what_it_may() -> None:
    allowed_imm = {"imm.data.models", "imm.config", "imm.errors"}
    root = Path(__import__("imm.domain").domain.__file__).parent
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top == "imm":
                    assert name in allowed_imm or name.startswith("imm.domain"), f"{path.name} imports {name}"
                else:
                    assert top in sys.stdlib_module_names or top == "__future__", f"{path.name} imports {name}"


def test_a_mailbox_within_its_leaver_retention_schedule_is_never_releasable() -> None:
    """Issue 12 Done-when: no mailbox within its schedule is in a --releasable selection. The 365-day Litigation
    Hold of 2024-03-01 has run out (so without a schedule it is releasable); a 7-year schedule still runs."""
    rec = record()
    mailbox = mailbox_from_records(rec, STATS, ARCHIVE, None, OrgMapping(), None, "contoso", NOW)
    free = analyse(mailbox, org_holds=[], policies=POLICIES, cost_model=CostModel(), now=NOW)
    assert free.releasable is True and free.leaver_retention_ends is None
    mailbox = mailbox_from_records(rec, STATS, ARCHIVE, None, OrgMapping(), None, "contoso", NOW)
    kept = analyse(
        mailbox, org_holds=[], policies=POLICIES, cost_model=CostModel(), now=NOW, leaver_retention_days=2555
    )
    assert kept.releasable is False
    assert kept.leaver_retention_ends == datetime(2031, 2, 28, tzinfo=UTC)
    assert (kept.leaver_retention_ended, kept.leaver_holds_after) == (False, [])
