"""Streaming output: every format writes rows as they come (never gathering the result), ``list``/``search``
stream from the store without building mailboxes and give what the mailbox records give, ``jsonl``/``tsv``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from factories import NOW, make_mailbox, make_mailboxes
from imm.cli.main import cli
from imm.cli.output import TABLE_SAMPLE, Column, render
from imm.data.database import STREAM_BATCH, DatabaseManager
from imm.data.models import InactiveMailbox
from imm.services.inventory_view import CSV_FIELDS, JSON_FIELDS, mailbox_record, mailbox_table_row, table_rows

COLUMNS = [Column("n", "N", justify="right", no_wrap=True), Column("text", "Text", max_width=12)]


class Stop(Exception):
    pass


def rows_then_fail(count: int) -> Iterator[dict[str, Any]]:
    """``count`` rows, then an error: what a renderer wrote before it shows that it did not gather the rows."""
    for n in range(count):
        yield {"n": n, "text": f"row {n}"}
    raise Stop


@pytest.mark.parametrize("output", ["json", "jsonl", "csv", "tsv", "table"])
def test_every_format_writes_rows_as_they_come(output: str) -> None:
    count = TABLE_SAMPLE + 5  # a table fixes its widths on the first TABLE_SAMPLE rows, then streams
    out = io.StringIO()
    with pytest.raises(Stop):
        render(rows_then_fail(count), COLUMNS, output, stream=out)
    text = out.getvalue()
    assert f"row {count - 1}" in text
    assert text.count("row ") == count


def test_jsonl_query_applies_to_each_row_and_streams() -> None:
    out = io.StringIO()
    with pytest.raises(Stop):
        render(rows_then_fail(4), COLUMNS, "jsonl", query="n > `1` && text || null", stream=out)
    assert out.getvalue() == '"row 2"\n"row 3"\n'


def test_a_table_keeps_sampled_widths_folds_later_text_at_spaces_and_never_cuts_numbers() -> None:
    long = "a longer text than the sample"
    rows = [{"n": n, "text": "ab"} for n in range(TABLE_SAMPLE)] + [{"n": 7, "text": long}, {"n": 10**6, "text": "x"}]
    out = io.StringIO()
    render(rows, COLUMNS, "table", stream=out)
    lines = out.getvalue().splitlines()
    assert lines[1] == "┃  N ┃ Text┃"
    assert len({len(line) for line in lines[:-2]}) == 1  # one width, the folded row included
    folded = [line.split("│")[2].strip() for line in lines[3 + TABLE_SAMPLE : -2]]
    assert folded == ["a", "lon…", "text", "than", "the", "sam…"]  # words are never split over lines
    assert lines[-2] == "│1,000,000 │ x   │"  # wider than the sample: shown whole, not cut


def test_table_cells_cannot_drive_the_terminal() -> None:
    out = io.StringIO()
    render([{"n": 1, "text": "a\x1b[31mred\x07"}], COLUMNS, "table", stream=out)
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()


# ---------------------------------------------------------------------------------------- from the store
@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DatabaseManager, list[InactiveMailbox]]]:
    db = DatabaseManager(tmp_path / "cache.db")
    db.initialize()
    boxes = make_mailboxes(STREAM_BATCH * 2 + 37, seed=7)
    boxes[0].last_updated = NOW + timedelta(microseconds=123)  # a datetime with microseconds
    boxes[1].display_name = "=cmd|' /C calc'!A0"
    db.upsert_mailboxes(boxes)
    monkeypatch.setenv("IMM_DB", str(db.db_path))
    yield db, boxes
    db.close()


@pytest.mark.parametrize(
    ("sort", "desc", "limit", "offset"),
    [("name", False, None, 0), ("size", True, None, 0), ("age", False, 600, 5), ("cost", True, 3, 1001)],
)
def test_the_stream_has_the_rows_of_the_query_in_its_order(
    cache: tuple[DatabaseManager, list[InactiveMailbox]], sort: str, desc: bool, limit: int | None, offset: int
) -> None:
    db, _ = cache
    expected = [m.identity for m in db.query_mailboxes(sort=sort, descending=desc, limit=limit, offset=offset)]
    stream = db.stream_mailbox_rows(sort=sort, descending=desc, limit=limit, offset=offset, columns=("identity",))
    assert [row[0] for row in stream] == expected


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_list_json_and_jsonl_are_the_mailbox_records(cache: tuple[DatabaseManager, list[InactiveMailbox]]) -> None:
    db, _ = cache
    from imm.cli.output import to_jsonable

    expected = [to_jsonable(mailbox_record(m)) for m in db.query_mailboxes()]
    assert list(expected[0]) == list(JSON_FIELDS)
    array = invoke("list", "-o", "json")
    assert array.exit_code == 0, array.stderr
    assert json.loads(array.stdout) == expected
    lines = invoke("list", "-o", "jsonl").stdout.splitlines()
    assert [json.loads(line) for line in lines] == expected
    assert any(".000123+00:00" in line for line in lines)


def test_list_tsv_and_csv_have_the_fixed_columns(cache: tuple[DatabaseManager, list[InactiveMailbox]]) -> None:
    db, _ = cache
    tsv = list(csv.reader(io.StringIO(invoke("list", "-o", "tsv").stdout), dialect=csv.excel_tab))
    comma = list(csv.reader(io.StringIO(invoke("list", "-o", "csv").stdout)))
    assert tsv == comma
    assert tsv[0] == list(CSV_FIELDS)
    assert len(tsv) == db.count_mailboxes() + 1
    assert ["'=cmd|' /C calc'!A0"] == [row[1] for row in tsv if row[1].startswith("'")]


def test_table_rows_from_the_store_match_the_mailbox_rows(
    cache: tuple[DatabaseManager, list[InactiveMailbox]],
) -> None:
    from imm.services.inventory_view import TABLE_FIELDS, WIDE_TABLE_FIELDS

    db, _ = cache
    expected = [mailbox_table_row(m, now=NOW) for m in db.query_mailboxes()]
    wide = list(table_rows(db.stream_mailbox_rows(columns=WIDE_TABLE_FIELDS), now=NOW))
    assert wide == expected
    streamed = list(table_rows(db.stream_mailbox_rows(columns=TABLE_FIELDS), now=NOW))
    assert streamed == [
        {k: v for k, v in row.items() if k not in {"identity", "user_principal_name"}} for row in expected
    ]


def test_search_streams_in_name_order(cache: tuple[DatabaseManager, list[InactiveMailbox]]) -> None:
    db, _ = cache
    for text, limit in (("smith", None), ("co", 5), ("fabrikam", 40)):
        expected = [m.identity for m in db.search_mailboxes(text, limit=limit)]
        assert [r[0] for r in db.stream_search_rows(text, limit=limit, columns=("identity",))] == expected
    result = invoke("search", "fabrikam", "-o", "jsonl", "--limit", "3", "--query", "primary_smtp")
    assert [json.loads(line).endswith("@fabrikam.com") for line in result.stdout.splitlines()] == [True] * 3


def test_an_unreadable_row_is_named_mid_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = DatabaseManager(tmp_path / "bad.db")
    db.initialize()
    db.upsert_mailboxes([make_mailbox(alias="a", display_name="A"), make_mailbox(alias="b", display_name="B")])
    bad = db.find_mailbox("b@contoso.com").identity
    db.get_connection().execute("UPDATE inactive_mailboxes SET hold_types = '[broken' WHERE identity = ?", (bad,))
    db.close()
    monkeypatch.setenv("IMM_DB", str(tmp_path / "bad.db"))
    result = CliRunner().invoke(cli, ["list", "-o", "jsonl"])
    assert result.exit_code == 1
    assert f"the cached mailbox {bad} holds unreadable data" in result.stderr
    assert result.stdout.count("\n") == 1  # the good row came first and was written


def test_audit_list_streams_jsonl_and_tsv(tmp_path: Path) -> None:
    from conftest import run_imm
    from imm.data.audit_logger import AuditLogger, OperationType

    db = DatabaseManager(tmp_path / "audit.db")
    db.initialize()
    audit = AuditLogger(db, tenant="contoso", user="admin@contoso.com")
    for n in range(3):
        audit.log_operation(OperationType.SYNC, None, {"n": n}, "success")
    db.close()
    lines = run_imm("audit", "list", "-o", "jsonl", "--db", str(tmp_path / "audit.db")).stdout.splitlines()
    assert [json.loads(line)["details"] for line in lines] == [{"n": 2}, {"n": 1}, {"n": 0}]
    tsv = run_imm("audit", "list", "-o", "tsv", "--db", str(tmp_path / "audit.db")).stdout.splitlines()
    assert tsv[0].split("\t")[:3] == ["id", "timestamp", "operation"]
    assert [line.split("\t")[0] for line in tsv[1:]] == ["3", "2", "1"]
