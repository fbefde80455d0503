"""Reports: exact figures on a hand-built inventory, every file format read back, and the ``imm report`` CLI.

The inventory (``inventory()``) is six mailboxes whose sizes are whole or tenth GB and whose costs follow
``COST`` (a monthly rate per licence + 0.50 per GB), so every total below is worked out by hand:

    A Contoso/Sales     Plan 2   2.0 GB  9.00  litigation           releasable (ended 10 days ago)
    B Contoso/Finance   Plan 1   3.0 GB  5.50  litigation+org       never ends; auto-expanding archive
    C Fabrikam/Sales    Plan 2   0.5 GB  8.25  ediscovery           never ends; AuxPrimary (recover blocked)
    D (no company/dept) Mystery  2.0 GB  3.00  litigation           ends in 20 days
    E Fabrikam/(empty)  Plan 2  10.0 GB 13.00  retention-policy     ends in 60 days
    F Contoso/Sales     Plan 2   0.1 GB  8.05  (none recorded)      releasable (ended yesterday)
    total                       17.6 GB 46.80; releasable A+F: 2.1 GB, 17.05 a month
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import run_imm
from factories import NOW, make_mailbox, make_mailboxes
from imm.config import CostModel
from imm.data.models import InactiveMailbox
from imm.errors import InputError
from imm.services import reports
from imm.services.reports import UNATTRIBUTED, build_report

RATES = {"Exchange Online Plan 2": 8.0, "Exchange Online Plan 1": 4.0, "Unknown": 2.0}
COST = CostModel(currency="EUR", per_gb_month=0.5, license_month=dict(RATES))
ORG_GUID = "8f3b2c1d4e5f60718293a4b5c6d7e8f9"
LIT = {"kind": "litigation", "raw": "LitigationHold", "preserves": True, "description": "Litigation Hold"}


def inventory() -> list[InactiveMailbox]:
    days = timedelta(days=1)
    return [
        make_mailbox(
            alias="anna",
            display_name="Anna A",
            operating_company="Contoso",
            department="Sales",
            license_type="Exchange Online Plan 2",
            size_mb=1024.0,
            archive_size_mb=1024.0,
            archive_status="Active",
            hold_types=["litigation"],
            hold_details=[LIT],
            litigation_hold_duration="365.00:00:00",
            releasable=True,
            holds_expire_on=NOW - 10 * days,
            expiry_reason="Litigation Hold of 365 days has ended",
            when_soft_deleted=NOW - 400 * days,
        ),
        make_mailbox(
            alias="bert",
            display_name="Bert B",
            operating_company="Contoso",
            department="Finance",
            license_type="Exchange Online Plan 1",
            size_mb=3072.0,
            hold_types=["litigation", "org-policy"],
            hold_details=[
                LIT,
                {"kind": "org-policy", "guid": ORG_GUID, "policy_name": "Org-wide mailbox retention"},
                # an exclusion (Hold.to_dict form) holds no mailbox: never listed as a policy that holds one
                {"kind": "excluded-org-policy", "guid": "ab" * 16, "preserves": False, "policy_name": "Excluded"},
            ],
            releasable=False,
            holds_expire_on=None,
            expiry_reason="Litigation Hold is unlimited",
            recovery_eligible=False,
            recovery_blockers=["auto-expanding-archive: the mailbox has an auto-expanding archive"],
            restore_eligible=False,
            restore_blockers=["auto-expanding-archive: the mailbox has an auto-expanding archive"],
            when_soft_deleted=NOW - 800 * days,
        ),
        make_mailbox(
            alias="cleo",
            display_name="Cleo C",
            operating_company="Fabrikam",
            department="Sales",
            license_type="Exchange Online Plan 2",
            size_mb=512.0,
            hold_types=["ediscovery"],
            hold_details=[{"kind": "ediscovery", "guid": "c0ffee", "policy_name": "Case 42 hold"}],
            litigation_hold_enabled=False,
            releasable=False,
            holds_expire_on=None,
            expiry_reason="eDiscovery holds never expire",
            recovery_eligible=False,
            recovery_blockers=["aux-primary-shards: the mailbox has additional shards"],
            when_soft_deleted=NOW - 100 * days,
        ),
        make_mailbox(
            alias="dora",
            display_name="Dora D",
            operating_company=None,
            department=None,
            license_type="Mystery",
            size_mb=2048.0,
            hold_types=["litigation"],
            hold_details=[LIT],
            releasable=False,
            holds_expire_on=NOW + 20 * days,
            expiry_reason="Litigation Hold of 365 days",
            when_soft_deleted=NOW - 345 * days,
        ),
        make_mailbox(
            alias="emil",
            display_name="Emil E",
            operating_company="Fabrikam",
            department="",
            license_type="Exchange Online Plan 2",
            size_mb=10240.0,
            hold_types=["retention-policy"],
            hold_details=[{"kind": "retention-policy", "guid": "f1", "policy_name": "Finance 7y"}],
            litigation_hold_enabled=False,
            releasable=False,
            holds_expire_on=NOW + 60 * days,
            expiry_reason="Retention policy 'Finance 7y' ends",
            when_soft_deleted=NOW - 4000 * days,
        ),
        make_mailbox(
            alias="finn",
            display_name="Finn F",
            operating_company="Contoso",
            department="Sales",
            license_type="Exchange Online Plan 2",
            size_mb=102.4,
            hold_types=[],
            hold_details=[],
            litigation_hold_enabled=False,
            releasable=True,
            holds_expire_on=NOW - 1 * days,
            expiry_reason="every hold has ended",
            when_soft_deleted=NOW - 30 * days,
        ),
    ]


def build(kind: str, by: str | None = None, mailboxes: list[InactiveMailbox] | None = None) -> reports.Report:
    return build_report(kind, inventory() if mailboxes is None else mailboxes, by=by, cost_model=COST, now=NOW)


def pick(rows: list[dict[str, Any]], *keys: str) -> list[tuple[Any, ...]]:
    return [tuple(r[k] for k in keys) for r in rows]


# ------------------------------------------------------------------------------------------------ figures
def test_cost_of_one_mailbox_follows_the_model() -> None:
    a, _, _, d, *_ = inventory()
    assert reports.mailbox_cost(a, COST) == pytest.approx(9.0)  # 8.00 + 2 GB x 0.50
    assert reports.mailbox_cost(d, COST) == pytest.approx(3.0)  # unknown licence -> "Unknown" rate 2.00 + 1.00
    assert reports.mailbox_cost(a, None) == a.monthly_cost  # no model: the cost the analysis cached


def test_summary_figures() -> None:
    report = build("summary")
    values = {r["metric"]: r["value"] for r in report.rows}
    assert values["mailboxes"] == 6
    assert values["companies"] == 2
    assert values["unattributed"] == 1
    assert values["total_gb"] == 17.6
    assert values["archive_gb"] == 1.0
    assert values["items"] == 6 * 15230
    assert values["monthly_cost"] == 46.8
    assert values["annual_cost"] == 561.6
    assert (values["recoverable"], values["recovery_blocked"]) == (4, 2)
    assert (values["restorable"], values["restore_blocked"]) == (5, 1)
    assert (values["releasable"], values["releasable_gb"]) == (2, 2.1)
    assert (values["monthly_savings"], values["annual_savings"]) == (17.05, 204.6)
    assert values["oldest_deleted"] == (NOW - timedelta(days=4000)).date()
    assert values["newest_deleted"] == (NOW - timedelta(days=30)).date()
    assert values["median_age_days"] == 372  # ages 30, 100, 345, 400, 800, 4000
    assert values["hold_litigation"] == 3
    assert values["hold_ediscovery"] == 1
    assert values["hold_inplace"] == 0
    assert values["hold_(none recorded)"] == 1
    assert report.totals is None
    assert [c.key for c in report.columns] == ["label", "value"]
    assert report.headline["monthly_cost"] == 46.8


def test_summary_by_company() -> None:
    report = build("summary", by="company")
    assert pick(report.rows, "operating_company", "mailboxes", "total_gb", "monthly_cost", "recovery_blocked") == [
        ("Contoso", 3, 5.1, 22.55, 1),
        ("Fabrikam", 2, 10.5, 21.25, 1),
        (UNATTRIBUTED, 1, 2.0, 3.0, 0),
    ]
    assert pick(report.rows, "releasable", "monthly_savings") == [(2, 17.05), (0, 0.0), (0, 0.0)]
    assert report.totals is not None
    assert (report.totals["operating_company"], report.totals["mailboxes"], report.totals["monthly_cost"]) == (
        "Total",
        6,
        46.8,
    )


def test_costs_by_company_with_share_savings_and_unattributed_last() -> None:
    report = build("costs")
    assert report.by == "company"
    keys = ("operating_company", "mailboxes", "total_gb", "monthly_cost", "annual_cost", "share_pct")
    assert pick(report.rows, *keys) == [
        ("Contoso", 3, 5.1, 22.55, 270.6, 48.2),
        ("Fabrikam", 2, 10.5, 21.25, 255.0, 45.4),
        (UNATTRIBUTED, 1, 2.0, 3.0, 36.0, 6.4),
    ]
    assert pick(report.rows, "releasable", "monthly_savings", "annual_savings") == [
        (2, 17.05, 204.6),
        (0, 0.0, 0.0),
        (0, 0.0, 0.0),
    ]
    assert report.totals == {
        "operating_company": "Total",
        "mailboxes": 6,
        "total_gb": 17.6,
        "monthly_cost": 46.8,
        "annual_cost": 561.6,
        "share_pct": 100.0,
        "releasable": 2,
        "monthly_savings": 17.05,
        "annual_savings": 204.6,
    }
    assert any("1 mailbox(es) have no company" in n for n in report.notes)


def test_costs_by_department_within_company() -> None:
    report = build("costs", by="department")
    assert pick(
        report.rows, "operating_company", "department", "mailboxes", "total_gb", "monthly_cost", "share_pct"
    ) == [
        ("Contoso", "Sales", 2, 2.1, 17.05, 36.4),
        ("Fabrikam", "Sales", 1, 0.5, 8.25, 17.6),
        ("Contoso", "Finance", 1, 3.0, 5.5, 11.8),
        ("Fabrikam", UNATTRIBUTED, 1, 10.0, 13.0, 27.8),
        (UNATTRIBUTED, UNATTRIBUTED, 1, 2.0, 3.0, 6.4),
    ]
    assert report.totals is not None and report.totals["monthly_cost"] == 46.8
    assert [c.key for c in report.columns][:2] == ["operating_company", "department"]


def test_holds_per_kind_with_policy_names() -> None:
    report = build("holds")
    keys = ("hold_kind", "mailboxes", "total_gb", "monthly_cost", "only_hold", "releasable", "policies")
    assert pick(report.rows, *keys) == [
        ("litigation", 3, 7.0, 17.5, 2, 1, ""),
        ("ediscovery", 1, 0.5, 8.25, 1, 0, "Case 42 hold"),
        ("retention-policy", 1, 10.0, 13.0, 1, 0, "Finance 7y"),
        ("org-policy", 1, 3.0, 5.5, 0, 0, "Org-wide mailbox retention"),
        ("(none recorded)", 1, 0.1, 8.05, 1, 1, ""),
    ]
    assert report.rows[0]["label"] == "Litigation Hold"
    assert report.totals is not None
    assert pick([report.totals], "mailboxes", "total_gb", "monthly_cost", "only_hold", "releasable") == [
        (6, 17.6, 46.8, 5, 2)
    ]
    policies = report.section("policies")
    assert pick(policies.rows, "hold_kind", "policy_name", "policy_guid", "mailboxes", "total_gb") == [
        ("ediscovery", "Case 42 hold", "c0ffee", 1, 0.5),
        # the GUID column reads the detail key "guid" (dashed), not a "policy_guid" that no hold has
        ("org-policy", "Org-wide mailbox retention", "8f3b2c1d-4e5f-6071-8293-a4b5c6d7e8f9", 1, 3.0),
        ("retention-policy", "Finance 7y", "f1", 1, 10.0),
    ]


def test_holds_by_company_breakdown() -> None:
    section = build("holds", by="company").section("holds_by_company")
    assert pick(section.rows, "operating_company", "hold_kind", "mailboxes", "total_gb") == [
        ("Contoso", "litigation", 2, 5.0),
        ("Contoso", "org-policy", 1, 3.0),
        ("Contoso", "(none recorded)", 1, 0.1),
        ("Fabrikam", "ediscovery", 1, 0.5),
        ("Fabrikam", "retention-policy", 1, 10.0),
        (UNATTRIBUTED, "litigation", 1, 2.0),
    ]


def test_expiry_windows_dates_and_reasons() -> None:
    report = build("expiry")
    keys = ("window", "mailboxes", "total_gb", "monthly_cost", "first_date", "last_date")
    assert pick(report.rows, *keys) == [
        ("now", 2, 2.1, 17.05, date(2026, 11, 18), date(2026, 11, 27)),
        ("30", 1, 2.0, 3.0, date(2026, 12, 18), date(2026, 12, 18)),
        ("90", 1, 10.0, 13.0, date(2027, 1, 27), date(2027, 1, 27)),
        ("365", 0, 0.0, 0.0, None, None),
        ("later", 0, 0.0, 0.0, None, None),
        ("never", 2, 3.5, 13.75, None, None),
    ]
    listed = report.section("mailboxes")
    assert pick(listed.rows, "display_name", "holds_expire_on", "days_left", "window", "expiry_reason") == [
        ("Anna A", date(2026, 11, 18), -10, "Releasable now", "Litigation Hold of 365 days has ended"),
        ("Finn F", date(2026, 11, 27), -1, "Releasable now", "every hold has ended"),
        ("Dora D", date(2026, 12, 18), 20, "Within 30 days", "Litigation Hold of 365 days"),
        ("Emil E", date(2027, 1, 27), 60, "In 31–90 days", "Retention policy 'Finance 7y' ends"),
    ]
    assert pick(report.section("never").rows, "reason", "mailboxes", "total_gb") == [
        ("Litigation Hold is unlimited", 1, 3.0),
        ("eDiscovery holds never expire", 1, 0.5),
    ]


def test_expiry_shows_passed_end_dates_that_are_not_releasable() -> None:
    stuck = make_mailbox(releasable=False, holds_expire_on=NOW - timedelta(days=3), size_mb=1024.0)
    report = build("expiry", mailboxes=[stuck])
    assert pick(report.rows, "window", "mailboxes")[:2] == [("now", 0), ("expired", 1)]
    assert report.section("mailboxes").rows[0]["days_left"] == -3


def test_expiry_by_department() -> None:
    section = build("expiry", by="department").section("expiry_by_department")
    assert pick(section.rows, "operating_company", "department", "releasable", "monthly_savings", "within_30") == [
        ("Contoso", "Sales", 2, 17.05, 0),
        ("Fabrikam", UNATTRIBUTED, 0, 0.0, 0),
        (UNATTRIBUTED, UNATTRIBUTED, 0, 0.0, 1),
    ]
    assert section.rows[1]["within_90"] == 1


def test_eligibility_counts_per_blocker_with_alternatives() -> None:
    report = build("eligibility")
    assert pick(report.rows, "action", "outcome", "mailboxes", "total_gb") == [
        ("recover", "eligible", 4, 14.1),
        ("recover", "auto-expanding-archive", 1, 3.0),
        ("recover", "aux-primary-shards", 1, 0.5),
        ("restore", "eligible", 5, 14.6),
        ("restore", "auto-expanding-archive", 1, 3.0),
    ]
    assert report.rows[1]["description"] == "the mailbox has an auto-expanding archive"
    assert report.rows[1]["alternative"].startswith("Export its content with a Content Search")
    assert report.rows[2]["alternative"].startswith("Restore its content into an existing mailbox")
    blocked = report.section("blocked")
    assert pick(blocked.rows, "display_name", "recovery_eligible", "restore_eligible") == [
        ("Bert B", False, False),
        ("Cleo C", False, True),
    ]
    by = build("eligibility", by="company").section("eligibility_by_company")
    assert pick(by.rows, "operating_company", "mailboxes", "recoverable", "restore_blocked") == [
        ("Contoso", 3, 2, 1),
        ("Fabrikam", 2, 1, 0),
        (UNATTRIBUTED, 1, 1, 0),
    ]


@pytest.mark.parametrize(
    ("blocker", "code", "advice"),
    [
        ("auto-expanding-archive: x", "auto-expanding-archive", "Content Search"),
        ("aux-primary-shards: shards", "aux-primary-shards", "existing mailbox"),
        ("user-restorable: within 30 days", "user-restorable", "Restore the deleted user"),
        ("upn-taken: in use", "upn-taken", "onmicrosoft.com"),
        ("name-taken: in use", "name-taken", "--name"),
        ("no-archive: none", "no-archive", "primary mailbox"),
        ("some-new-code: not known to the report", "some-new-code", ""),
        ("A sentence: with a colon", "A sentence: with a colon", ""),
    ],
)
def test_blocker_codes_and_alternatives(blocker: str, code: str, advice: str) -> None:
    found, _ = reports.blocker_code(blocker)
    assert found == code
    alternative = reports.blocker_alternative(found)
    assert advice in alternative if advice else alternative == ""


def test_invariants_on_a_large_varied_inventory() -> None:
    mailboxes = make_mailboxes(3000, seed=7)
    summary = build("summary", mailboxes=mailboxes)
    costs = build("costs", mailboxes=mailboxes)
    expiry = build("expiry", mailboxes=mailboxes)
    eligibility = build("eligibility", mailboxes=mailboxes)
    assert costs.totals is not None and expiry.totals is not None
    assert sum(r["mailboxes"] for r in costs.rows) == 3000 == costs.totals["mailboxes"]
    assert sum(r["monthly_cost"] for r in costs.rows) == pytest.approx(costs.totals["monthly_cost"], abs=0.05)
    assert sum(r["share_pct"] for r in costs.rows) == pytest.approx(100.0, abs=0.5)
    assert sum(r["mailboxes"] for r in expiry.rows) == 3000
    assert costs.totals["monthly_cost"] == summary.headline["monthly_cost"]
    assert costs.totals["monthly_savings"] == expiry.rows[0]["monthly_cost"]  # releasable now = the saving
    eligible = {r["action"]: r["mailboxes"] for r in eligibility.rows if r["outcome"] == "eligible"}
    assert eligible["recover"] == summary.headline["recoverable"]
    assert sum(b["mailboxes"] for b in summary.overview.age_buckets) == 3000  # type: ignore[union-attr]
    assert sum(b["mailboxes"] for b in summary.overview.size_buckets) == 3000  # type: ignore[union-attr]


def test_empty_inventory_and_bad_arguments() -> None:
    for kind in reports.KINDS:
        report = build(kind, mailboxes=[])
        assert report.headline["mailboxes"] == 0
        assert any("No mailbox matches" in n for n in report.notes)
    with pytest.raises(InputError, match="unknown report 'nope'"):
        build("nope")
    with pytest.raises(InputError, match="cannot group by 'site'"):
        build("costs", by="site")
    with pytest.raises(InputError, match="no section 'x' \\(sections: holds, policies\\)"):
        build("holds").section("x")


# ------------------------------------------------------------------------------------------------ writers
NASTY = '=HYPERLINK("x","click")'


def nasty_inventory() -> list[InactiveMailbox]:
    return [*inventory(), make_mailbox(display_name="-2+3", operating_company=NASTY, license_type="Mystery",
                                       size_mb=1024.0, hold_types=["label"], hold_details=[])]  # fmt: skip


def test_csv_reads_back_with_exact_values(tmp_path: Path) -> None:
    out = tmp_path / "costs.csv"
    reports.write_csv(build("costs"), out)
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [
        "operating_company",
        "mailboxes",
        "total_gb",
        "monthly_cost",
        "annual_cost",
        "share_pct",
        "releasable",
        "monthly_savings",
        "annual_savings",
    ]
    assert rows[1:] == [
        ["Contoso", "3", "5.1", "22.55", "270.6", "48.2", "2", "17.05", "204.6"],
        ["Fabrikam", "2", "10.5", "21.25", "255.0", "45.4", "0", "0.0", "0.0"],
        [UNATTRIBUTED, "1", "2.0", "3.0", "36.0", "6.4", "0", "0.0", "0.0"],
    ]


def test_csv_summary_section_and_injection(tmp_path: Path) -> None:
    stream = io.StringIO()
    reports.write_csv(build("summary"), stream)
    rows = list(csv.reader(io.StringIO(stream.getvalue())))
    assert rows[0] == ["metric", "label", "value"]
    assert ["monthly_cost", "Monthly cost (EUR)", "46.8"] in rows
    assert ["oldest_deleted", "Oldest deletion", "2015-12-16"] in rows
    out = tmp_path / "policies.csv"
    reports.write_csv(build("holds"), out, section="policies")
    assert out.read_text(encoding="utf-8").splitlines()[1] == "ediscovery,Case 42 hold,c0ffee,,1,0.5"
    stream = io.StringIO()
    reports.write_csv(build("costs", mailboxes=nasty_inventory()), stream)
    cells = [row[0] for row in csv.reader(io.StringIO(stream.getvalue()))]
    assert "'" + NASTY in cells and NASTY not in cells


def test_json_reads_back_with_every_section(tmp_path: Path) -> None:
    out = tmp_path / "expiry.json"
    reports.write_json(build("expiry", by="company"), out)
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["kind"] == "expiry" and doc["by"] == "company" and doc["currency"] == "EUR"
    assert doc["generated_at"] == "2026-11-28T12:00:00+00:00"
    assert doc["rows"][0] == {
        "window": "now",
        "label": "Releasable now",
        "mailboxes": 2,
        "total_gb": 2.1,
        "monthly_cost": 17.05,
        "first_date": "2026-11-18",
        "last_date": "2026-11-27",
    }
    assert doc["totals"]["monthly_cost"] == 46.8
    assert [s["name"] for s in doc["sections"]] == ["mailboxes", "never", "expiry_by_company"]
    assert doc["sections"][0]["rows"][0]["display_name"] == "Anna A"
    assert doc["sections"][0]["rows"][0]["holds_expire_on"] == "2026-11-18"
    assert doc["headline"]["monthly_savings"] == 17.05
    assert doc["headline"]["tenants"] == ["contoso.onmicrosoft.com"]
    assert reports.report_json(build("costs"), "totals.monthly_cost") == 46.8


def test_xlsx_reads_back_with_numbers_bold_headers_and_safe_text(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    out = tmp_path / "costs.xlsx"
    reports.write_xlsx(build("costs", by="company", mailboxes=nasty_inventory()), out)
    wb = load_workbook(out)
    assert wb.sheetnames == ["costs", "about"]
    ws = wb["costs"]
    header = [c.value for c in ws[1]]
    assert header[:4] == ["Company", "Mailboxes", "GB", "Monthly cost (EUR)"]
    assert all(c.font.bold for c in ws[1])
    values = [[c.value for c in row] for row in ws.iter_rows(min_row=2)]
    assert values[0] == ["Contoso", 3, 5.1, 22.55, 270.6, 45.7, 2, 17.05, 204.6]
    assert values[-1][:4] == ["Total", 7, 18.6, 49.3]  # the formula-like company adds 1 GB at 2.00 + 0.50
    assert all(c.font.bold for c in ws[ws.max_row])
    assert isinstance(ws["B2"].value, int) and isinstance(ws["C2"].value, float)
    assert ws["D2"].number_format == "#,##0.00"
    companies = [row[0] for row in values]
    assert "'" + NASTY in companies
    assert all(c.data_type != "f" for row in ws.iter_rows() for c in row)
    about = {row[0].value: row[1].value for row in wb["about"].iter_rows()}
    assert about["Report"] == "Inactive mailboxes: monthly cost by company"
    assert about["Currency"] == "EUR"


def test_xlsx_one_sheet_per_section_with_dates(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    out = tmp_path / "expiry.xlsx"
    reports.write_xlsx(build("expiry", by="department"), out)
    wb = load_workbook(out)
    assert wb.sheetnames == ["expiry", "mailboxes", "never", "expiry_by_department", "about"]
    ws = wb["mailboxes"]
    assert ws["A2"].value == "Anna A"
    assert ws["E2"].value.date() == date(2026, 11, 18)  # a real date cell
    assert ws["F2"].value == -10


def test_writers_refuse_an_unwritable_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot write the report to .*missing"):
        reports.write_csv(build("costs"), tmp_path / "missing" / "x.csv")
    with pytest.raises(InputError, match="cannot write the report to"):
        reports.write_xlsx(build("costs"), tmp_path / "missing" / "x.xlsx")
    assert not (tmp_path / "missing").exists()


# ------------------------------------------------------------------------------------------------ the CLI
CONFIG = """default_profile = "t"

[profiles.t]
db_path = "{db}"

[profiles.t.cost]
currency = "EUR"
per_gb_month = 0.5

[profiles.t.cost.license_month]
"Exchange Online Plan 2" = 8.0
"Exchange Online Plan 1" = 4.0
"Unknown" = 2.0
"""


@pytest.fixture
def cache(imm_home: Path, tmp_path: Path) -> Path:
    """A profile 't' with COST's rates and a cache holding ``inventory()``."""
    from imm.data.database import DatabaseManager

    db_path = tmp_path / "cache.db"
    config = imm_home / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(CONFIG.format(db=db_path.as_posix()), encoding="utf-8")
    db = DatabaseManager(db_path)
    db.initialize()
    db.upsert_mailboxes(inventory())
    db.close()
    return db_path


def audit_rows(db_path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute("SELECT operation, result, details FROM audit_log ORDER BY id").fetchall()
    finally:
        conn.close()
    return [(op, result, json.loads(details or "{}")) for op, result, details in rows]


def test_cli_json_output_and_audit_row(cache: Path) -> None:
    result = run_imm("report", "costs", "--by", "company", "--output", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert pick(doc["rows"], "operating_company", "monthly_cost") == [
        ("Contoso", 22.55),
        ("Fabrikam", 21.25),
        (UNATTRIBUTED, 3.0),
    ]
    assert doc["totals"]["monthly_savings"] == 17.05
    assert [(op, outcome) for op, outcome, _ in audit_rows(cache)] == [("REPORT", "success")]
    assert audit_rows(cache)[0][2] == {"kind": "costs", "format": "json", "out": "-", "by": "company", "mailboxes": 6}


def test_cli_table_shows_rows_and_totals(cache: Path) -> None:
    result = run_imm("report", "costs", env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "monthly cost by company (amounts in EUR)" in lines[0]
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in lines if line.startswith("│")]
    assert ["Contoso", "3", "5.10", "22.55", "48.2"] == rows[0][:5]
    assert ["Total", "6", "17.60", "46.80"] == rows[-1][:4]
    assert lines[-4].startswith("├") and lines[-2].startswith("└")  # the totals row under a rule, at the end
    assert "Note: Cost model (per month, EUR)" in result.stderr


def test_cli_writes_each_file_format(cache: Path, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    csv_out, xlsx_out, html_out = tmp_path / "c.csv", tmp_path / "h.xlsx", tmp_path / "e.html"
    result = run_imm("report", "costs", "--format", "csv", "--out", str(csv_out))
    assert result.exit_code == 0, result.stderr
    assert f"Wrote the costs report (csv, 6 mailboxes) to {csv_out}" in result.stderr
    assert csv_out.read_text(encoding="utf-8").splitlines()[1] == "Contoso,3,5.1,22.55,270.6,48.2,2,17.05,204.6"
    result = run_imm("report", "holds", "--out", str(xlsx_out))  # the format follows the suffix
    assert result.exit_code == 0, result.stderr
    assert load_workbook(xlsx_out).sheetnames == ["holds", "policies", "about"]
    result = run_imm("report", "expiry", "--format", "html", "--out", str(html_out), "--company", "contoso")
    assert result.exit_code == 0, result.stderr
    page = html_out.read_text(encoding="utf-8")
    assert page.count("<svg") == 7 and "Anna A" in page and "Dora D" not in page
    formats = [(d["format"], d["out"], d.get("filters")) for op, _, d in audit_rows(cache) if op == "REPORT"]
    assert formats == [
        ("csv", str(csv_out), None),
        ("xlsx", str(xlsx_out), None),
        ("html", str(html_out), {"company": "contoso"}),
    ]
    # an existing file is replaced only with --force (as audit export and bulk plan)
    csv_out.write_text("kept\n", encoding="utf-8")
    result = run_imm("report", "costs", "--format", "csv", "--out", str(csv_out))
    assert (result.exit_code, result.stderr.splitlines()[0]) == (
        2,
        f"Error: --out {csv_out} exists: choose a new file, or add --force to replace it",
    )
    assert csv_out.read_text(encoding="utf-8") == "kept\n"
    result = run_imm("report", "costs", "--format", "csv", "--out", str(csv_out), "--force")
    assert result.exit_code == 0, result.stderr
    assert csv_out.read_text(encoding="utf-8").splitlines()[1] == "Contoso,3,5.1,22.55,270.6,48.2,2,17.05,204.6"


def test_cli_csv_to_stdout_and_sections(cache: Path) -> None:
    result = run_imm("report", "expiry", "--format", "csv", "--out", "-", "--section", "mailboxes")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    # in end-date order (the windows themselves count days from the real today)
    assert [(r["display_name"], r["holds_expire_on"]) for r in rows] == [
        ("Anna A", "2026-11-18"),
        ("Finn F", "2026-11-27"),
        ("Dora D", "2026-12-18"),
        ("Emil E", "2027-01-27"),
    ]
    assert rows[0]["window"] == "Releasable now"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "xlsx"], "Error: --format xlsx writes a file: add --out FILE"),
        (["--format", "csv"], "Error: --format csv needs --out FILE (or --out - for stdout)"),
        (["--out", "report.txt"], "Error: cannot tell the format of report.txt: add --format csv, json, xlsx or html"),
        (["--format", "csv", "--out", "-", "--query", "rows"], "Error: --query selects from the JSON form"),
        (["--output", "csv", "--query", "rows"], "Error: --query selects from the JSON form"),
        (["--format", "xlsx", "--out", "x.xlsx", "--section", "costs"], "Error: --section picks one table"),
        (["--format", "json", "--output", "csv", "--out", "-"], "Error: --format json and --output csv disagree"),
        (["--section", "nope"], "Error: the costs report has no section 'nope' (sections: costs)"),
        (["--format", "html", "--out", "/nonexistent-dir/x.html"], "Error: cannot write the report to"),
        (["--output", "json", "--query", "rows[?"], '"message": "invalid --query expression'),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(cache: Path, args: list[str], message: str) -> None:
    result = run_imm("report", "costs", *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # the error line and perhaps a hint
    assert "Traceback" not in result.stderr


def test_cli_bad_choice_and_empty_cache(imm_home: Path, tmp_path: Path) -> None:
    result = run_imm("report", "costs", "--by", "site", "--db", str(tmp_path / "x.db"))
    assert result.exit_code == 2 and "Invalid value for '--by'" in result.stderr
    result = run_imm("report", "summary", "--db", str(tmp_path / "empty.db"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.strip() == "The cache is empty: run `imm sync` (or `imm demo`)"


def test_cli_query_over_the_json_document(cache: Path) -> None:
    result = run_imm("report", "eligibility", "--output", "json", "--query", "rows[?outcome!='eligible'].outcome")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == ["auto-expanding-archive", "aux-primary-shards", "auto-expanding-archive"]
    result = run_imm("report", "costs", "--query", "rows[].{c: operating_company, m: mailboxes}")
    assert result.exit_code == 0, result.stderr
    assert "Contoso" in result.stdout and "(unattributed)" in result.stdout


def test_cli_a_long_section_is_written_as_it_is_read(cache: Path) -> None:
    from imm.data.database import DatabaseManager

    db = DatabaseManager(cache)
    blocked = [
        make_mailbox(display_name=f"Blocked {i:04d}", recovery_eligible=False, recovery_blockers=["x: y"])
        for i in range(1100)
    ]
    db.upsert_mailboxes(blocked)
    db.close()
    result = run_imm("report", "eligibility", "--section", "blocked", env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.stderr
    names = [line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│Blocked ")]
    assert names == [f"Blocked {i:04d}" for i in range(1100)]
    assert result.stdout.splitlines()[0].strip() == "Mailboxes that cannot be recovered or restored as they are"


def test_size_bands_and_total_size_count_the_whole_mailbox() -> None:
    """Item 1 of issue 12: cost and the size bands use the total (TotalItemSize + TotalDeletedItemSize of primary
    and archive, Get-MailboxStatistics), and say so."""
    small_items_big_dumpster = make_mailbox(
        alias="rita", size_mb=50.0, recoverable_items_mb=2048.0, archive_recoverable_items_mb=1024.0
    )
    summary = build_report("summary", [small_items_big_dumpster], now=NOW, cost_model=None)
    bands = {b["label"]: b["mailboxes"] for b in summary.overview.size_buckets}  # type: ignore[union-attr]
    assert bands["1–5 GB"] == 1 and bands["< 100 MB"] == 0  # 3,122 MB in all, though only 50 MB of items
    values = {r["metric"]: (r["value"], r["label"]) for r in summary.rows}
    assert values["total_gb"] == (
        round(3122 / 1024, 2),
        "Total size: items and Recoverable Items, primary and archive (GB)",
    )
