"""The HTML report: self-contained, escaped, and rendered by a real headless Chromium (DOM and screenshot).

Chromium comes from the system (``apt-get install chromium``; CI installs it). Without it the rendering tests
are skipped locally, with the reason; under ``CI`` they must run.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from factories import NOW, make_mailbox, make_mailboxes
from imm.data.models import InactiveMailbox
from imm.services import reports
from imm.services.report_html import hbar_chart, vbar_chart
from test_reports import COST, inventory

SCRIPT_NAME = '<script>alert("pwned")</script>'
IMG_COMPANY = "<img src=x onerror=alert(1)> & \"Quotes\" 'R&D'"
CHART_IDS = ["company-mailboxes", "company-cost", "age", "size", "savings", "expiry", "holds"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def browser() -> str:
    found = chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no chromium binary was found (apt-get install -y chromium)")
        pytest.skip("no chromium binary on PATH (apt-get install -y chromium); CI runs these tests")
    return found


def run_chromium(binary: str, tmp_path: Path, page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1200,2000",
        *extra,
        page.resolve().as_uri(),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def hostile_inventory() -> list[InactiveMailbox]:
    return [
        *inventory(),
        make_mailbox(
            display_name=SCRIPT_NAME,
            operating_company=IMG_COMPANY,
            department="=cmd|' /C calc'!A0",
            license_type="Mystery",
            size_mb=1024.0,
            hold_types=["label"],
            hold_details=[{"kind": "label", "policy_name": "</title><script>x()</script>"}],
            recovery_eligible=False,
            recovery_blockers=['weird-<b>blocker</b>: "quoted" & <i>tagged</i>'],
        ),
    ]


@pytest.fixture
def page(tmp_path: Path) -> Path:
    out = tmp_path / "report.html"
    report = reports.build_report("eligibility", hostile_inventory(), by="company", cost_model=COST, now=NOW)
    reports.write_html(report, out)
    return out


def test_page_is_self_contained_and_escaped(page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html  # no script at all: the names are text
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;Quotes&quot; &#x27;R&amp;D&#x27;" in html
    assert "<img" not in html and "<b>blocker" not in html
    assert not re.search(r"\b(src|href)\s*=", html.replace("&lt;img src=x", ""))
    assert "http://" not in html and "https://" not in html and "@import" not in html
    assert "default-src 'none'" in html  # the CSP forbids scripts and remote content even if one slipped in
    for chart in CHART_IDS:
        assert f'id="chart-{chart}"' in html and f'id="svg-{chart}"' in html
    assert html.count("<svg") == len(CHART_IDS)


def test_headline_and_tables_carry_the_totals(page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    kpi = dict(re.findall(r'id="kpi-([a-z-]+)" data-value="([^"]*)"', html))
    # inventory() plus the hostile mailbox: 7 mailboxes, 18.60 GB, 46.80 + 2.50 EUR
    assert kpi == {
        "mailboxes": "7",
        "total-gb": "18.60",
        "monthly-cost": "49.30",
        "recoverable": "4",
        "releasable": "2",
        "monthly-savings": "17.05",
    }
    assert 'id="section-eligibility"' in html and 'id="section-blocked"' in html
    assert 'id="section-eligibility_by_company"' in html
    assert "<tfoot><tr><td>Total</td>" in html


def test_chromium_renders_the_charts_and_totals(browser: str, page: Path, tmp_path: Path) -> None:
    result = run_chromium(browser, tmp_path, page, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    for chart in CHART_IDS:
        assert f'<svg id="svg-{chart}"' in dom
    assert dom.count("<rect") >= 20  # bars were drawn
    assert "<script" not in dom  # the hostile name stayed text
    assert '&lt;script&gt;alert("pwned")&lt;/script&gt;' in dom
    assert '<div class="value">49.30<span class="unit"> EUR</span></div>' in dom
    assert '<div class="value">18.60<span class="unit"> GB</span></div>' in dom
    assert "Export its content with a Content Search" in dom


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_chromium_screenshot_is_a_real_picture(browser: str, tmp_path: Path) -> None:
    out = tmp_path / "costs.html"
    mailboxes = make_mailboxes(400, seed=11)
    report = reports.build_report("costs", mailboxes, by="company", cost_model=COST, now=NOW)
    reports.write_html(report, out)
    shot = tmp_path / "costs.png"
    result = run_chromium(browser, tmp_path, out, f"--screenshot={shot}")
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert png_size(data) == (1200, 2000)
    assert len(data) > 60_000  # charts, text and tables, not a blank page


def test_demo_call_charts_another_set(tmp_path: Path) -> None:
    """``imm demo`` passes the mailboxes and cost model to write_html (see imm.services.demo.write_reports)."""
    out = tmp_path / "demo.html"
    mailboxes = inventory()
    summary = reports.build_report("summary", mailboxes[:1], cost_model=COST, now=NOW)
    reports.write_html(summary, out, mailboxes=mailboxes, cost_model=COST, now=NOW)
    html = out.read_text(encoding="utf-8")
    assert 'id="kpi-mailboxes" data-value="6"' in html


def test_the_page_counts_the_soft_deleted_apart(tmp_path: Path) -> None:
    out = tmp_path / "summary.html"
    mailboxes = [*inventory(), make_mailbox(alias="gone", lifecycle_state="soft-deleted", is_inactive_mailbox=False)]
    reports.write_html(reports.build_report("summary", mailboxes, cost_model=COST, now=NOW), out)
    html = out.read_text(encoding="utf-8")
    assert 'id="kpi-mailboxes" data-value="6"' in html
    assert html.count("1 soft-deleted, awaiting purge") == 2  # the subtitle and the figure's line
    assert " · 6 inactive mailboxes · " in html


def test_empty_report_page(tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    reports.write_html(reports.build_report("expiry", [], cost_model=COST, now=NOW), out)
    html = out.read_text(encoding="utf-8")
    assert html.count("No mailboxes to chart.") == len(CHART_IDS)
    assert "No mailbox matches" in html


def test_charts_scale_to_the_largest_value() -> None:
    svg = hbar_chart("t", "T", [("a", 10.0), ("b", 5.0)], str, "#000")
    widths = [float(w) for w in re.findall(r'<rect x="\d+" y="[\d.]+" width="([\d.]+)"', svg)]
    assert widths[0] == pytest.approx(2 * widths[1])
    ages = [(label, 1.0) for label, _ in reports.AGE_BUCKETS]
    svg = vbar_chart("v", "V", ages, str, "#000")
    assert ">&lt; 6<" in svg and ">months<" in svg  # eight long labels: split over two lines, escaped
    svg = vbar_chart("v", "V", ages[:2], str, "#000")
    assert ">&lt; 6 months<" in svg  # two fit on one line
