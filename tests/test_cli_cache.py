"""``imm list|search|show`` and ``imm cache stats|clear`` over a real cache file: filters, formats, errors.

CliRunner drives the many option combinations; the real console process (``run_imm``) covers a few end to end.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import run_imm
from factories import make_mailbox
from imm.cli.main import cli
from imm.cli.output import to_jsonable
from imm.data.database import DatabaseManager
from imm.data.models import InactiveMailbox
from imm.services.inventory_view import CSV_FIELDS, JSON_FIELDS

NOW = datetime.now(UTC).replace(microsecond=0)
EMPTY = "The cache is empty: run `imm sync` (or `imm demo`)\n"


def mailboxes() -> dict[str, InactiveMailbox]:
    return {
        "alice": make_mailbox(
            alias="alice",
            display_name="Alice Archer",
            operating_company="Contoso",
            department="Sales",
            hold_types=["litigation"],
            when_soft_deleted=NOW - timedelta(days=30, hours=1),
            size_mb=100.25,
            archive_size_mb=0.0,
            recovery_eligible=True,
            releasable=False,
            monthly_cost=7.0,
        ),
        "bob": make_mailbox(
            alias="bob",
            display_name="Bob Baker",
            operating_company="Contoso",
            department="Legal",
            hold_types=["ediscovery", "org-policy"],
            when_soft_deleted=NOW - timedelta(days=500, hours=1),
            size_mb=1000.0,
            archive_size_mb=1000.0,
            archive_status="Active",
            recovery_eligible=False,
            recovery_blockers=["auto-expanding-archive: The mailbox has an auto-expanding archive"],
            releasable=False,
            monthly_cost=7.04,
        ),
        "dave": make_mailbox(
            alias="dave",
            display_name="Dave Dunn",
            operating_company="Fabrikam",
            department=None,
            hold_types=["litigation", "delay"],
            when_soft_deleted=NOW - timedelta(days=4000, hours=1),
            age_days=4000,
            size_mb=3000.0,
            archive_size_mb=0.0,
            recovery_eligible=True,
            releasable=True,
            monthly_cost=7.06,
        ),
    }


@pytest.fixture
def boxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, InactiveMailbox]]:
    path = tmp_path / "cache.db"
    db = DatabaseManager(path)
    db.initialize()
    data = mailboxes()
    db.upsert_mailboxes(list(data.values()))
    db.close()
    monkeypatch.setenv("IMM_DB", str(path))
    yield data


@pytest.fixture
def empty_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "empty.db"
    monkeypatch.setenv("IMM_DB", str(path))
    return path


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def as_json(result: Result) -> object:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def names(result: Result) -> list[str]:
    data = as_json(result)
    assert isinstance(data, list)
    return [row["display_name"] for row in data]


# ------------------------------------------------------------------------------------------------ list
def test_list_json_has_every_field_exactly(boxes: dict[str, InactiveMailbox]) -> None:
    data = as_json(invoke("list", "--output", "json"))
    assert isinstance(data, list)
    assert [row["display_name"] for row in data] == ["Alice Archer", "Bob Baker", "Dave Dunn"]
    for row in data:
        assert list(row) == list(JSON_FIELDS)
    expected = to_jsonable({**boxes["bob"].__dict__, "total_size_mb": boxes["bob"].total_size_mb})
    assert data[1] == expected
    assert data[1]["when_soft_deleted"] == (NOW - timedelta(days=500, hours=1)).isoformat()
    assert data[1]["hold_types"] == ["ediscovery", "org-policy"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["Alice Archer", "Bob Baker", "Dave Dunn"]),
        (["--company", "contoso"], ["Alice Archer", "Bob Baker"]),
        (["--department", "LEGAL"], ["Bob Baker"]),
        (["--company", "Contoso", "--department", "Sales"], ["Alice Archer"]),
        (["--hold-type", "litigation"], ["Alice Archer", "Dave Dunn"]),
        (["--hold-type", "org-policy"], ["Bob Baker"]),
        (["--older-than", "365"], ["Bob Baker", "Dave Dunn"]),
        (["--older-than", "30"], ["Alice Archer", "Bob Baker", "Dave Dunn"]),
        (["--older-than", "31"], ["Bob Baker", "Dave Dunn"]),
        (["--older-than", "1y"], ["Bob Baker", "Dave Dunn"]),  # a period: 365 days
        (["--older-than", "365D"], ["Bob Baker", "Dave Dunn"]),
        (["--older-than", "1m"], ["Alice Archer", "Bob Baker", "Dave Dunn"]),  # 30 days
        (["--min-size-mb", "2000"], ["Bob Baker", "Dave Dunn"]),  # Bob: 1000 + 1000 archive
        (["--max-size-mb", "1999.5"], ["Alice Archer"]),
        (["--min-size-mb", "100", "--max-size-mb", "2000"], ["Alice Archer", "Bob Baker"]),
        (["--recoverable"], ["Alice Archer", "Dave Dunn"]),
        (["--not-recoverable"], ["Bob Baker"]),
        (["--releasable"], ["Dave Dunn"]),
        (["--not-releasable"], ["Alice Archer", "Bob Baker"]),
        (["--company", "Contoso", "--recoverable"], ["Alice Archer"]),
        (["--company", "Nobody"], []),
        (["--sort", "size", "--desc"], ["Dave Dunn", "Bob Baker", "Alice Archer"]),
        (["--sort", "age"], ["Alice Archer", "Bob Baker", "Dave Dunn"]),
        (["--sort", "age", "--desc"], ["Dave Dunn", "Bob Baker", "Alice Archer"]),
        (["--sort", "monthly_cost", "--desc"], ["Dave Dunn", "Bob Baker", "Alice Archer"]),
        (["--desc"], ["Dave Dunn", "Bob Baker", "Alice Archer"]),
        (["--limit", "2"], ["Alice Archer", "Bob Baker"]),
        (["--limit", "1", "--offset", "1"], ["Bob Baker"]),
        (["--offset", "5"], []),
    ],
)
def test_list_filters_and_sorting(boxes: dict[str, InactiveMailbox], args: list[str], expected: list[str]) -> None:
    assert names(invoke("list", *args, "--output", "json")) == expected


def test_list_table(boxes: dict[str, InactiveMailbox], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    result = invoke("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [c.strip() for c in lines[1].strip("┃").split("┃")] == [
        "Name",
        "SMTP",
        "Company",
        "Dept",
        "Total MB",
        "Age",
        "Holds",
    ]
    bob = next(line for line in lines if "Bob Baker" in line)
    cells = [c.strip() for c in bob.strip("│").split("│")]
    assert cells == ["Bob Baker", "bob@contoso.com", "Contoso", "Legal", "2,000", "500", "ediscovery, org-policy"]
    assert result.stderr == ""


@pytest.mark.parametrize(("width", "left_out"), [(80, []), (66, ["Dept"]), (50, ["Company", "Dept", "Age"])])
def test_list_narrow_terminal_cuts_text_not_numbers(
    boxes: dict[str, InactiveMailbox], monkeypatch: pytest.MonkeyPatch, width: int, left_out: list[str]
) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    result = invoke("list")
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) == width
    bob = next(line for line in lines if "Bob" in line)
    cells = [c.strip() for c in bob.strip("│").split("│")]
    headers = ["Name", "SMTP", "Company", "Dept", "Total MB", "Age", "Holds"]
    full = dict(
        zip(
            headers,
            ["Bob Baker", "bob@contoso.com", "Contoso", "Legal", "2,000", "500", "ediscovery, org-policy"],
            strict=True,
        )
    )
    assert [c.strip() for c in lines[1].strip("┃").split("┃")] == [h for h in headers if h not in left_out]
    assert "2,000" in cells
    if left_out:  # the least needed columns go first (Dept, then Age, then Company), and it is said
        assert result.stderr == f"Left out to fit {width} columns: {', '.join(left_out)} (--wide shows every column).\n"
    for cell, whole in zip(cells, [v for k, v in full.items() if k not in left_out], strict=True):
        assert cell == whole or (cell.endswith("…") and whole.startswith(cell[:-1]))
    assert any(cell.endswith("…") for cell in cells)


def test_list_limit_says_how_many_more(boxes: dict[str, InactiveMailbox]) -> None:
    result = invoke("list", "--limit", "2")
    assert result.exit_code == 0
    assert result.stderr == "Showing 1–2 of 3 mailboxes (--limit / --offset).\n"
    assert invoke("list", "--limit", "5").stderr == ""


def test_list_csv_has_the_fixed_columns(boxes: dict[str, InactiveMailbox]) -> None:
    result = invoke("list", "--output", "csv", "--company", "Fabrikam")
    assert result.exit_code == 0
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == list(CSV_FIELDS)
    dave = boxes["dave"]
    assert dict(zip(rows[0], rows[1], strict=True)) == {
        "identity": dave.identity,
        "display_name": "Dave Dunn",
        "primary_smtp": "dave@contoso.com",
        "user_principal_name": "dave@contoso.com",
        "operating_company": "Fabrikam",
        "department": "",
        "when_soft_deleted": (NOW - timedelta(days=4000, hours=1)).isoformat(),
        "age_days": "4000",
        "total_size_mb": "3000.0",
        "size_mb": "3000.0",
        "item_count": "15230",
        "recoverable_items_mb": "0.0",
        "deleted_item_count": "0",
        "archive_size_mb": "0.0",
        "archive_item_count": "0",
        "archive_recoverable_items_mb": "0.0",
        "archive_deleted_item_count": "0",
        "archive_status": "None",
        "license_type": "Exchange Online Plan 2",
        "monthly_cost": "7.06",
        "hold_types": "litigation;delay",
        "litigation_hold_enabled": "true",
        "litigation_hold_duration": "Unlimited",
        "recovery_eligible": "true",
        "restore_eligible": "true",
        "releasable": "true",
        "holds_expire_on": "",
        "lifecycle_state": "inactive",
        "delay_hold_until": "",
        "purge_on": "",
        "leaver_retention_ends": "",
        "leaver_retention_ended": "false",
        "tenant": "contoso.onmicrosoft.com",
    }
    assert len(rows) == 2


def test_list_query_is_jmespath_over_the_json(boxes: dict[str, InactiveMailbox]) -> None:
    result = invoke("list", "--output", "json", "--query", "[?operating_company=='Contoso'].primary_smtp")
    assert as_json(result) == ["alice@contoso.com", "bob@contoso.com"]
    bad = invoke("list", "--query", "[?")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("Error: invalid --query expression '[?'")


def test_a_bad_query_is_one_short_line(boxes: dict[str, InactiveMailbox]) -> None:
    """JMESPath's own messages span lines (a caret under the expression) or quote a whole mailbox record."""
    parse = run_imm("list", "--query", "foo(")
    assert (parse.exit_code, parse.stdout) == (2, "")
    assert parse.stderr == (
        "Error: invalid --query expression 'foo(': Invalid jmespath expression: Incomplete expression at column 5\n"
    )
    typed = run_imm("list", "-o", "json", "--query", "sort_by(@, &no_such_key)")
    assert (typed.exit_code, typed.stdout) == (2, "")
    assert json.loads(typed.stderr)["error"]["message"] == (
        "invalid --query expression 'sort_by(@, &no_such_key)': in function sort_by(), "
        "a value of type null where string, number was expected"
    )
    assert len(typed.stderr.splitlines()) == 1


def test_csv_with_query_is_csv(boxes: dict[str, InactiveMailbox]) -> None:
    """``--output csv --query`` prints CSV: objects as rows under a header, values one per line."""
    rows = run_imm("list", "-o", "csv", "--query", "[?operating_company=='Contoso'].{smtp: primary_smtp, gb: size_mb}")
    assert rows.exit_code == 0, rows.stderr
    assert rows.stdout == "smtp,gb\nalice@contoso.com,100.25\nbob@contoso.com,1000.0\n"
    one = invoke("list", "-o", "csv", "--query", "[?operating_company=='Fabrikam'] | [0]")
    assert list(csv.DictReader(io.StringIO(one.stdout)))[0]["primary_smtp"] == "dave@contoso.com"
    values = invoke("list", "-o", "csv", "--query", "[?operating_company=='Contoso'].primary_smtp")
    assert values.stdout == "alice@contoso.com\nbob@contoso.com\n"
    shown = invoke(
        "show", "dave@contoso.com", "-o", "csv", "--query", "{name: display_name, company: operating_company}"
    )
    assert shown.stdout == "name,company\nDave Dunn,Fabrikam\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sort", "colour"], "Error: cannot sort by 'colour': use one of name, smtp, company, department, size, "),
        (["--min-size-mb", "10", "--max-size-mb", "5"], "Error: --min-size-mb (10) is larger than --max-size-mb (5)"),
    ],
)
def test_list_bad_input_is_one_line_and_exit_2(
    boxes: dict[str, InactiveMailbox], args: list[str], message: str
) -> None:
    result = invoke("list", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bulk_plan_checks_its_filters_as_list_does(boxes: dict[str, InactiveMailbox]) -> None:
    result = invoke("bulk", "plan", "--min-size-mb", "10", "--max-size-mb", "5")
    assert result.exit_code == 2
    assert result.stderr == "Error: --min-size-mb (10) is larger than --max-size-mb (5)\n"
    filtered = invoke("bulk", "plan", "--company", "fabrikam", "--action", "set-duration", "--days", "30")
    assert filtered.exit_code == 0, filtered.stderr
    rows = filtered.stdout.splitlines()[1:]
    assert rows and all("Fabrikam" in row for row in rows)


@pytest.mark.parametrize(
    "args",
    [
        ["--older-than", "-1"],
        ["--older-than", "2x"],
        ["--older-than", "101y"],
        ["--limit", "x"],
        ["--min-size-mb", "-3"],
    ],
)
def test_list_invalid_option_values(boxes: dict[str, InactiveMailbox], args: list[str]) -> None:
    result = invoke("list", *args)
    assert result.exit_code == 2
    assert "Invalid value" in result.stderr


# ------------------------------------------------------------------------------------------------ empty cache
@pytest.mark.parametrize(
    ("args", "stdout"),
    [
        (["list"], ""),
        (["list", "--output", "json"], "[]\n"),
        (["list", "--output", "csv"], ",".join(CSV_FIELDS) + "\n"),
        (["search", "smith"], ""),
        (["search", "smith", "--output", "json"], "[]\n"),
    ],
)
def test_empty_cache_says_what_to_do(empty_db: Path, args: list[str], stdout: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 0
    assert result.stderr == EMPTY
    assert result.stdout == stdout


def test_show_in_empty_cache(empty_db: Path) -> None:
    result = invoke("show", "x@contoso.com")
    assert result.exit_code == 4
    assert result.stderr == (
        "Error: no mailbox 'x@contoso.com' in the cache\nHint: the cache is empty: run `imm sync` (or `imm demo`)\n"
    )


# ------------------------------------------------------------------------------------------------ search
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("arch", ["Alice Archer"]),
        ("@contoso.com", ["Alice Archer", "Bob Baker", "Dave Dunn"]),
        ("FABRIKAM", ["Dave Dunn"]),
        ("legal", ["Bob Baker"]),
        ("b", ["Bob Baker", "Dave Dunn"]),  # short: LIKE (Dave's company is Fabrikam)
        ("%", []),
        ('"', []),
        ("Bob AND", []),
        ("NEAR(", []),
    ],
)
def test_search(boxes: dict[str, InactiveMailbox], text: str, expected: list[str]) -> None:
    assert names(invoke("search", text, "--output", "json")) == expected


def test_search_limit_and_table(boxes: dict[str, InactiveMailbox]) -> None:
    assert names(invoke("search", "contoso", "--limit", "1", "--output", "json")) == ["Alice Archer"]
    limited = invoke("search", "contoso", "--limit", "2")
    assert limited.stderr == "Showing the first 2 matches (--limit N for more, --limit 0 for all).\n"
    assert names(invoke("search", "contoso", "--limit", "0", "--output", "json")) == [
        "Alice Archer",
        "Bob Baker",
        "Dave Dunn",
    ]
    table = invoke("search", "baker")
    assert table.exit_code == 0
    assert "Bob Baker" in table.stdout and "Alice" not in table.stdout


def test_search_empty_text(boxes: dict[str, InactiveMailbox]) -> None:
    result = invoke("search", "")
    assert result.exit_code == 2
    assert result.stderr == "Error: the search text is empty\n"


# ------------------------------------------------------------------------------------------------ show
def test_show_table_has_every_section(boxes: dict[str, InactiveMailbox]) -> None:
    result = invoke("show", "BOB@contoso.com")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    titles = [line for line in lines if line and not line.startswith(" ")]
    sections = ["Identity", "Organisation", "Lifecycle", "Size", "Holds", "Eligibility", "Expiry", "Cost"]
    assert titles[:8] == sections  # the inventory engineer adds the audit history after them
    text = result.stdout
    for expected in [
        f"ExchangeGuid               {boxes['bob'].identity}",
        "Primary SMTP               bob@contoso.com",
        "Total MB                   2,000.00",
        "Hold types                 ediscovery",
        "                           org-policy",
        "Recovery blockers          auto-expanding-archive: The mailbox has an auto-expanding archive",
        "Hold details               Litigation Hold, unlimited",
        "Monthly cost               7.04",
    ]:
        assert expected in text, expected


def test_show_json(boxes: dict[str, InactiveMailbox]) -> None:
    data = as_json(invoke("show", boxes["alice"].identity, "--output", "json"))
    assert isinstance(data, dict)
    assert {*JSON_FIELDS, "total_size_mb"} <= set(data)
    assert data["total_size_mb"] == 100.25
    assert data["primary_smtp"] == "alice@contoso.com"
    assert list(data)[:3] == ["identity", "display_name", "name"]
    assert as_json(invoke("show", "alice", "--output", "json", "--query", "hold_types")) == ["litigation"]


def test_show_not_found_and_ambiguous(boxes: dict[str, InactiveMailbox], tmp_path: Path) -> None:
    missing = invoke("show", "nobody@contoso.com")
    assert missing.exit_code == 4
    assert missing.stderr == (
        "Error: no mailbox 'nobody@contoso.com' in the cache\n"
        "Hint: run `imm sync` to refresh the cache, or `imm search TEXT` to find it\n"
    )
    as_json_error = invoke("show", "nobody@contoso.com", "--output", "json")
    assert as_json_error.exit_code == 4
    assert json.loads(as_json_error.stderr) == {
        "error": {
            "code": "not_found",
            "message": "no mailbox 'nobody@contoso.com' in the cache",
            "exit_code": 4,
            "hint": "run `imm sync` to refresh the cache, or `imm search TEXT` to find it",
        }
    }
    db = DatabaseManager(tmp_path / "cache.db")
    twin = make_mailbox(alias="bob2", display_name="Bob Baker")
    db.upsert_mailbox(twin)
    db.close()
    ambiguous = invoke("show", "bob baker")
    assert ambiguous.exit_code == 2
    first, second = sorted([boxes["bob"], twin], key=lambda m: m.identity)
    assert ambiguous.stderr.splitlines()[0] == (
        f"Error: 'bob baker' matches 2 mailboxes: {first.identity} ({first.primary_smtp}); "
        f"{second.identity} ({second.primary_smtp})"
    )


# ------------------------------------------------------------------------------------------------ cache
def test_cache_stats(boxes: dict[str, InactiveMailbox], tmp_path: Path) -> None:
    data = as_json(invoke("cache", "stats", "--output", "json"))
    assert isinstance(data, dict)
    assert data["path"] == str(tmp_path / "cache.db")
    assert data["count"] == 3
    assert data["oldest_deleted"] == (NOW - timedelta(days=4000, hours=1)).isoformat()
    assert data["last_sync"] is None
    assert data["size_bytes"] > 0
    table = invoke("cache", "stats")
    assert table.exit_code == 0
    assert f"Database         {tmp_path / 'cache.db'}\n" in table.stdout
    assert "Mailboxes        3\n" in table.stdout
    assert "Last sync        never\n" in table.stdout


def test_cache_clear_asks_first(boxes: dict[str, InactiveMailbox], tmp_path: Path) -> None:
    declined = invoke("cache", "clear", input="n\n")
    assert declined.exit_code == 6
    assert declined.stderr.endswith("Error: not confirmed: nothing was changed\n")
    assert f"Remove 3 cached mailboxes from {tmp_path / 'cache.db'}? The audit log is kept." in declined.stderr
    db = DatabaseManager(tmp_path / "cache.db")
    assert db.count_mailboxes() == 3
    accepted = invoke("cache", "clear", input="y\n")
    assert accepted.exit_code == 0, accepted.stderr
    assert accepted.stderr.endswith("Removed 3 mailboxes from the cache.\n")
    assert db.count_mailboxes() == 0
    assert invoke("cache", "clear", "--yes").stderr == "Removed 0 mailboxes from the cache.\n"
    rows = db.get_connection().execute(
        "SELECT operation, result, details FROM audit_log WHERE operation = 'CACHE_CLEAR' ORDER BY id"
    )
    assert [(r[0], r[1], json.loads(r[2])["removed"]) for r in rows] == [
        ("CACHE_CLEAR", "success", 3),
        ("CACHE_CLEAR", "success", 0),
    ]
    db.close()


# ------------------------------------------------------------------------------------------------ real process
def test_csv_neutralises_formula_like_cells(tmp_path: Path) -> None:
    path = tmp_path / "formulas.db"
    db = DatabaseManager(path)
    db.initialize()
    db.upsert_mailboxes(
        [
            make_mailbox(
                alias="f1",
                display_name='=HYPERLINK("http://evil.example","click")',
                operating_company="+Contoso",
                department="-Sales",
            ),
            make_mailbox(alias="f2", display_name="@SUM(A1:A9)", operating_company="Contoso", department="Ops"),
        ]
    )
    db.close()
    result = run_imm("list", "--output", "csv", env={"IMM_DB": str(path)})
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["display_name"], r["operating_company"], r["department"]) for r in rows] == [
        ('\'=HYPERLINK("http://evil.example","click")', "'+Contoso", "'-Sales"),
        ("'@SUM(A1:A9)", "Contoso", "Ops"),
    ]


def test_real_process_list_and_show(boxes: dict[str, InactiveMailbox]) -> None:
    result = run_imm("list", "--output", "json", "--company", "Fabrikam")
    assert result.exit_code == 0, result.stderr
    assert [r["identity"] for r in json.loads(result.stdout)] == [boxes["dave"].identity]
    shown = run_imm("show", "dave@contoso.com", "-o", "json")
    assert json.loads(shown.stdout)["display_name"] == "Dave Dunn"


def test_real_process_corrupt_database(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"\x00garbage" * 1000)
    result = run_imm("list", env={"IMM_DB": str(path)})
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: {path} is not a valid imm database: move it aside (it is kept) and run `imm sync` to rebuild "
        "the cache\n"
    )
    assert path.read_bytes() == b"\x00garbage" * 1000


def test_real_process_empty_cache(tmp_path: Path) -> None:
    result = run_imm("list", env={"IMM_DB": str(tmp_path / "new.db")})
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", EMPTY)
