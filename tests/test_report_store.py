"""Reports computed in the store (SQL aggregates) are the reports computed from records: the record path of
``build_report`` is the oracle, over hand-made edge cases and a large varied inventory, with and without a cost
model, grouping and filters."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from factories import NOW, make_mailbox, make_mailboxes
from imm.config import CostModel
from imm.data.database import DatabaseManager, MailboxFilter
from imm.data.models import InactiveMailbox
from imm.services.reports import build_report, build_report_from_store
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


@pytest.mark.parametrize("kind", ["summary", "costs"])
@pytest.mark.parametrize("by", [None, "company", "department"])
@pytest.mark.parametrize("cost", [COST, CostModel(), None], ids=["model", "default", "cached"])
def test_store_reports_equal_record_reports(tmp_path: Path, kind: str, by: str | None, cost: CostModel | None) -> None:
    db = store_of(tmp_path, [*inventory(), *edge_cases(), *make_mailboxes(400, seed=3)])
    expected, stored = both(db, kind, by, cost)
    assert stored == expected


@pytest.mark.parametrize(
    "selection",
    [MailboxFilter(company="contoso"), MailboxFilter(hold_type="litigation"), MailboxFilter(company="Nobody")],
)
def test_store_reports_follow_the_filters(tmp_path: Path, selection: MailboxFilter) -> None:
    db = store_of(tmp_path, [*inventory(), *edge_cases(), *make_mailboxes(200, seed=5)])
    for kind, by in (("summary", None), ("costs", "department")):
        expected, stored = both(db, kind, by, COST, selection)
        assert stored == expected


def test_an_empty_store_gives_the_empty_report(tmp_path: Path) -> None:
    db = store_of(tmp_path, [])
    expected, stored = both(db, "summary", None, COST)
    assert stored == expected
    assert stored["overview"]["headline"]["median_age_days"] is None
