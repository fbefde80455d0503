"""Reports computed in the store (SQL aggregates) are the reports computed from records: the record path of
``build_report`` is the oracle, over hand-made edge cases and a large varied inventory, with and without a cost
model, grouping and filters."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from factories import NOW, make_mailbox, make_mailboxes
from imm.config import CostModel
from imm.data.database import DatabaseManager, MailboxFilter
from imm.data.models import InactiveMailbox
from imm.services.report_model import StreamedRows
from imm.services.reports import build_report, build_report_from_store, report_json, write_json
from test_reports import COST, inventory

DAY = timedelta(days=1)


def edge_cases() -> list[InactiveMailbox]:
    return [
        make_mailbox(alias="ws", operating_company="  Contoso ", department="Sales\t", hold_types=["litigation"] * 2),
        make_mailbox(alias="none", operating_company="", department=None, hold_types=[], hold_details=[]),
        make_mailbox(alias="noage", when_soft_deleted=None, age_days=77, operating_company="Fabrikam"),
        make_mailbox(alias="nodate", when_soft_deleted=None, age_days=None, operating_company="Fabrikam"),
        make_mailbox(alias="future", when_soft_deleted=NOW + 3 * DAY, license_type="Exchange Online Plan 1"),
        make_mailbox(alias="exact", when_soft_deleted=NOW - 182 * DAY, size_mb=100.0, archive_size_mb=0.0),
        make_mailbox(alias="micro", when_soft_deleted=NOW - 183 * DAY + timedelta(microseconds=1)),
        make_mailbox(alias="half", size_mb=0.25 * 1024 / 0.5, license_type="Nobody", releasable=True),
        make_mailbox(alias="today", holds_expire_on=NOW, releasable=False),
        make_mailbox(alias="d30", holds_expire_on=NOW + 30 * DAY + timedelta(hours=11), releasable=False),
        make_mailbox(alias="d31", holds_expire_on=NOW + 31 * DAY, releasable=False),
        make_mailbox(alias="d365", holds_expire_on=NOW + 365 * DAY, releasable=False),
        make_mailbox(alias="later", holds_expire_on=NOW + 366 * DAY, releasable=False, tenant=""),
        make_mailbox(alias="other", tenant="fabrikam.onmicrosoft.com", recovery_eligible=False),
        # what the holds, expiry and eligibility reports read per mailbox
        make_mailbox(alias="ri", recoverable_items_mb=700.25, archive_recoverable_items_mb=12.5, releasable=True),
        make_mailbox(alias="noname", display_name="", name="", holds_expire_on=NOW + 5 * DAY, releasable=False),
        make_mailbox(alias="accent", display_name="Émile Zola", recovery_eligible=False, restore_eligible=False),
        make_mailbox(alias="lower", display_name="émile zola", restore_eligible=False, restore_blockers=[]),
        make_mailbox(
            alias="twice",
            recovery_eligible=False,
            recovery_blockers=["ediscovery-hold: case 'A'", "ediscovery-hold: case 'B'", "a sentence without code"],
        ),
        # formerly inactive, soft-deleted (awaiting the purge) and on their way (a delay hold): one is not inactive
        make_mailbox(alias="gone", lifecycle_state="soft-deleted", is_inactive_mailbox=False, hold_types=[]),
        make_mailbox(alias="delay", lifecycle_state="pending-delay", hold_types=["delay"]),
        make_mailbox(alias="reason", holds_expire_on=None, releasable=False, expiry_reason="  Unlimited hold "),
        make_mailbox(
            alias="policies",
            hold_details=[
                {"kind": "retention-policy", "policy_name": "Keep 7y", "guid": "mbx" + "a" * 32, "locked": True},
                {"kind": "retention-policy", "policy_name": "Keep 7y", "guid": "mbx" + "a" * 32},
                {"kind": "retention-policy", "policy_name": "", "guid": "b" * 32, "preserves": True},
                {"kind": "retention-policy", "policy_name": "Excluded", "guid": "c" * 32, "preserves": False},
                {"kind": "ediscovery", "policy_name": None, "guid": None},
            ],
        ),
    ]


def store_of(tmp_path: Path, mailboxes: list[InactiveMailbox]) -> DatabaseManager:
    db = DatabaseManager(tmp_path / "reports.db")
    db.initialize()
    db.upsert_mailboxes(mailboxes)
    return db


def both(
    db: DatabaseManager, kind: str, by: str | None, cost: CostModel | None, selection: MailboxFilter | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    records = db.query_mailboxes(selection, sort="identity")
    expected = build_report(kind, records, by=by, cost_model=cost, now=NOW, filters={"x": 1})
    stored = build_report_from_store(kind, db, selection, by=by, cost_model=cost, now=NOW, filters={"x": 1})
    assert stored.overview is not None and expected.overview is not None
    return (
        {**expected.to_dict(), "overview": expected.overview.__dict__},
        {**stored.to_dict(), "overview": stored.overview.__dict__},
    )


@pytest.mark.parametrize("kind", ["summary", "costs", "holds", "expiry", "eligibility"])
@pytest.mark.parametrize("by", [None, "company", "department"])
@pytest.mark.parametrize("cost", [COST, CostModel(), None], ids=["model", "default", "cached"])
def test_store_reports_equal_record_reports(tmp_path: Path, kind: str, by: str | None, cost: CostModel | None) -> None:
    db = store_of(tmp_path, [*inventory(), *edge_cases(), *make_mailboxes(400, seed=3)])
    expected, stored = both(db, kind, by, cost)
    assert stored == expected
    sections = {s["name"]: s["rows"] for s in stored["sections"]}
    listed = {"holds": "policies", "expiry": "mailboxes", "eligibility": "blocked"}.get(kind)
    if listed:  # the per-mailbox tables are there to compare
        assert len(sections[listed]) >= 5


def test_store_listing_tables_stream_in_order(tmp_path: Path) -> None:
    db = store_of(tmp_path, [*edge_cases(), *make_mailboxes(50, seed=9)])
    report = build_report_from_store("eligibility", db, cost_model=None, now=NOW)
    blocked = report.section("blocked").rows
    assert isinstance(blocked, StreamedRows)
    names = [r["display_name"] for r in blocked]
    assert (
        len(names)
        == len(blocked)
        == db.count_mailboxes(MailboxFilter())
        - sum(1 for m in db.query_mailboxes() if m.recovery_eligible and m.restore_eligible)
    )
    assert names == sorted(names, key=str.lower)
    assert blocked[0] == next(iter(blocked)) and blocked[-1]["display_name"] == names[-1]
    assert blocked[1:3] == list(blocked)[1:3]
    accented = [r["identity"] for r in blocked if r["display_name"].lower() == "émile zola"]
    assert accented == sorted(accented)  # Python's lower case, then the identity


@pytest.mark.parametrize(
    "selection",
    [MailboxFilter(company="contoso"), MailboxFilter(hold_type="litigation"), MailboxFilter(company="Nobody")],
)
def test_store_reports_follow_the_filters(tmp_path: Path, selection: MailboxFilter) -> None:
    db = store_of(tmp_path, [*inventory(), *edge_cases(), *make_mailboxes(200, seed=5)])
    for kind, by in (("summary", None), ("costs", "department")):
        expected, stored = both(db, kind, by, COST, selection)
        assert stored == expected


def test_the_summary_counts_inactive_mailboxes_and_the_soft_deleted_apart(tmp_path: Path) -> None:
    mailboxes = [*edge_cases(), *make_mailboxes(30, seed=8)]
    soft = [m.identity for m in mailboxes if m.lifecycle_state == "soft-deleted"]
    assert len(soft) == 1
    db = store_of(tmp_path, mailboxes)
    expected, stored = both(db, "summary", None, COST)
    assert stored == expected
    values = {r["metric"]: r["value"] for r in stored["rows"]}
    assert (values["mailboxes"], values["soft_deleted"]) == (len(mailboxes) - 1, 1)
    headline = stored["headline"]  # every cached mailbox the report covers, then the two apart
    assert (headline["mailboxes"], headline["inactive"], headline["soft_deleted"]) == (
        len(mailboxes),
        len(mailboxes) - 1,
        1,
    )


def test_an_empty_store_gives_the_empty_report(tmp_path: Path) -> None:
    db = store_of(tmp_path, [])
    expected, stored = both(db, "summary", None, COST)
    assert stored == expected
    assert stored["overview"]["headline"]["median_age_days"] is None


@pytest.mark.parametrize("kind", ["summary", "holds", "expiry", "eligibility"])
def test_streamed_json_is_the_json_document(tmp_path: Path, kind: str) -> None:
    db = store_of(tmp_path, [*inventory(), *edge_cases(), *make_mailboxes(60, seed=4)])
    report = build_report_from_store(kind, db, by="department", cost_model=COST, now=NOW)
    out = io.StringIO()
    write_json(report, out)
    assert out.getvalue() == json.dumps(report_json(report), ensure_ascii=False, indent=2) + "\n"
    assert json.loads(out.getvalue())["sections"] or kind == "summary"
