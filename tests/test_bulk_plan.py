"""Bulk plans: the whole CSV is checked before anything runs, each bad row named with its line and reason (exit 2,
nothing run, no job, no audit row); ``imm bulk plan`` writes plans from cache queries that read back unchanged.

These run the real CLI process against a real cache file; a plan that fails validation never signs in, so no tenant
is needed here (tests/test_bulk_e2e.py runs plans against the simulated tenant).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import run_imm
from factories import make_mailbox
from imm.data.database import DatabaseManager
from imm.errors import InputError, NotFoundError
from imm.services.bulk_plan import PlanError, PlanRow, csv_safe, read_plan, unescape_cell

GUID_A = "0a1b2c3d-0000-4000-8000-00000000000a"
GUID_B = "0a1b2c3d-0000-4000-8000-00000000000b"
GUID_C = "0a1b2c3d-0000-4000-8000-00000000000c"
GUID_D = "0a1b2c3d-0000-4000-8000-00000000000d"
EXPIRED = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def db_path(tmp_path: Path) -> Iterator[Path]:
    """A cache of four mailboxes: alice and bob (Contoso, releasable), carol (Fabrikam), and '=dave' whose display
    name looks like a spreadsheet formula; plus two mailboxes that share the name 'twin'."""
    path = tmp_path / "cache.db"
    db = DatabaseManager(path)
    db.initialize()
    db.upsert_mailboxes(
        [
            make_mailbox(identity=GUID_A, alias="alice", display_name="Alice Archer", releasable=True,
                         holds_expire_on=EXPIRED, hold_types=["litigation"]),
            make_mailbox(identity=GUID_B, alias="bob", display_name="Bob Baker", releasable=True,
                         holds_expire_on=EXPIRED, hold_types=["litigation"]),
            make_mailbox(identity=GUID_C, alias="carol", display_name="Carol Cruz", operating_company="Fabrikam",
                         department="Legal", hold_types=["ediscovery"]),
            make_mailbox(identity=GUID_D, alias="dave", display_name="=HYPERLINK(\"x\")", operating_company="Contoso",
                         department=None, hold_types=["label"]),
            make_mailbox(alias="twin1", name="twin", display_name="Twin One"),
            make_mailbox(alias="twin2", name="twin", display_name="Twin Two"),
        ]
    )  # fmt: skip
    db.close()
    yield path


def write(tmp_path: Path, text: str | bytes, name: str = "plan.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def db_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def assert_nothing_ran(db_path: Path) -> None:
    assert db_rows(db_path, "SELECT COUNT(*) FROM bulk_jobs") == [(0,)]
    assert db_rows(db_path, "SELECT COUNT(*) FROM bulk_items") == [(0,)]
    assert db_rows(db_path, "SELECT COUNT(*) FROM audit_log") == [(0,)]


# ------------------------------------------------------------------------------------------ invalid plans
def test_every_bad_row_is_named_and_nothing_runs(tmp_path: Path, db_path: Path) -> None:
    plan = write(
        tmp_path,
        "action,identity,type,days,upn,name,target,archive,note\n"
        f"release,{GUID_A},litigation,,,,,,fine\n"  # 2
        "delete,alice@contoso.com,,,,,,,\n"  # 3 unknown action
        ",bob@contoso.com,litigation,,,,,,\n"  # 4 no action
        "release,,litigation,,,,,,\n"  # 5 no identity
        "release,nobody@contoso.com,litigation,,,,,,\n"  # 6 not in cache
        "release,bob@contoso.com,,,,,,,\n"  # 7 missing type value
        "release,bob@contoso.com,everything,,,,,,\n"  # 8 bad type
        "set-duration,carol@contoso.com,,0,,,,,\n"  # 9 bad days
        "set-duration,carol@contoso.com,,12x,,,,,\n"  # 10 bad days
        "recover,carol@contoso.com,,,not-an-address,carol2,,,\n"  # 11 bad upn
        "restore,carol@contoso.com,,,,,target@contoso.com,maybe,\n"  # 12 bad archive
        "release,ALICE@contoso.com,all-unlocked,,,,,,\n"  # 13 duplicate of line 2 (same mailbox, action)
        "release,twin,litigation,,,,,,\n"  # 14 ambiguous
        "release,carol@contoso.com,litigation,30,,,,,\n"  # 15 a value that does not apply
        "recover,bob@contoso.com,,,new@contoso.com,bob2,,,\n"  # 16 fine
        "recover,carol@contoso.com,,,NEW@contoso.com,carol2,,,\n"  # 17 upn used twice
        "release,bob@contoso.com,litigation,,,,,,,extra\n",  # 18 too many values
    )
    result = run_imm("bulk", "run", str(plan), "--execute", "--yes", "--db", str(db_path))
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    expected = [
        "line 3: unknown action 'delete' (use recover, restore, release or set-duration)",
        "line 4: no action (use recover, restore, release or set-duration)",
        "line 5: no identity (give the mailbox's ExchangeGuid, address or name)",
        "line 6: no mailbox 'nobody@contoso.com' in the cache (run `imm sync` if it is new)",
        "line 7: release needs a value in 'type'",
        "line 8: unknown hold type 'everything' for release (use litigation, delay, delay-release, label, "
        "org-policy, policy, ediscovery, all-unlocked)",
        "line 9: days must be a whole number from 1 to 36500 or 'unlimited' (it is '0')",
        "line 10: days must be a whole number from 1 to 36500 or 'unlimited' (it is '12x')",
        "line 11: upn 'not-an-address' is not a user@domain address",
        "line 12: archive must be true or false (it is 'maybe')",
        "line 13: the same mailbox and action as line 2 (Alice Archer <alice@contoso.com>, release)",
        "line 14: 'twin' matches 2 mailboxes: ",
        "line 15: 'days' does not apply to release (it has '30')",
        "line 17: upn 'new@contoso.com' is also used on line 16",
        "line 18: 10 values but the header has 9 columns",
    ]
    problems = [line.removeprefix(f"  {plan}: ") for line in lines if line.startswith(f"  {plan}: ")]
    assert len(problems) == len(expected)
    for got, want in zip(problems, expected, strict=True):
        if want.endswith(": "):
            assert got.startswith(want) and got.endswith("; use the ExchangeGuid"), got
        else:
            assert got == want
    assert f"Error: {plan}: 15 invalid rows; nothing was run" in lines
    assert "Hint: fix the rows above and run the plan again" in lines
    assert_nothing_ran(db_path)


@pytest.mark.parametrize(
    ("content", "message", "problem"),
    [
        (b"", "the plan is empty; nothing was run", "line 1: the file is empty"),
        (b"  \n\n", "the plan is empty; nothing was run", "line 1: the file is empty"),
        (
            b"action,identity,type\nrelease,caf\xe9,litigation\n",
            "line 2: the plan is not UTF-8 text (byte 0xe9); nothing was run",
            "line 2: not UTF-8 text (byte 0xe9)",
        ),
        (
            f"release,{GUID_A},litigation\n".encode(),
            "the header row is missing (the first row must name the columns action and identity; it has release, "
            f"{GUID_A}, litigation); nothing was run",
            None,
        ),
        (
            b"action,identity,typ\nrelease,alice@contoso.com,litigation\n",
            "unknown column 'typ' (the columns are: action, identity, upn, name, display_name, target, archive, "
            "target_folder, type, days, note); nothing was run",
            None,
        ),
        (
            b"action,identity,type,type\n",
            "the column 'type' appears 2 times; nothing was run",
            None,
        ),
        (b"action,identity,type\n", "the plan has no rows, only a header; nothing was run", "the plan has no rows"),
        (
            b'action,identity,type\nrelease,"alice@contoso.com,litigation\n',
            "line 2: not valid CSV (unexpected end of data); nothing was run",
            None,
        ),
    ],
    ids=["empty", "blank", "not-utf8", "no-header", "unknown-column", "duplicate-column", "no-rows", "bad-quote"],
)
def test_unusable_files_are_refused_whole(
    tmp_path: Path, db_path: Path, content: bytes, message: str, problem: str | None
) -> None:
    plan = write(tmp_path, content)
    result = run_imm("bulk", "run", str(plan), "--db", str(db_path))
    assert result.exit_code == 2
    assert f"Error: {plan}: {message}\n" in result.stderr
    assert "Traceback" not in result.stderr
    if problem is not None:
        assert f"  {plan}: {problem}\n" in result.stderr
    assert_nothing_ran(db_path)


def test_a_missing_plan_file_and_a_folder(tmp_path: Path, db_path: Path) -> None:
    missing = run_imm("bulk", "run", str(tmp_path / "nope.csv"), "--db", str(db_path))
    assert (missing.exit_code, missing.stderr) == (2, f"Error: {tmp_path / 'nope.csv'}: no such plan file\n")
    folder = run_imm("bulk", "run", str(tmp_path), "--db", str(db_path))
    assert (folder.exit_code, folder.stderr) == (2, f"Error: {tmp_path} is a folder, not a plan file\n")


def test_an_empty_cache_says_to_sync(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    plan = write(tmp_path, "action,identity,type\nrelease,alice@contoso.com,litigation\n")
    result = run_imm("bulk", "run", str(plan), "--db", str(empty))
    assert result.exit_code == 2
    assert result.stderr == (
        f"  {plan}: line 2: no mailbox 'alice@contoso.com' in the cache (run `imm sync` if it is new)\n"
        f"Error: {plan}: 1 invalid row; nothing was run\n"
        "Hint: the cache is empty: run `imm sync` first\n"
    )


def test_recover_rows_need_a_passwords_file_before_anything_runs(tmp_path: Path, db_path: Path) -> None:
    plan = write(tmp_path, "action,identity,upn,name\nrecover,alice@contoso.com,alice.new@contoso.com,alice-new\n")
    result = run_imm("bulk", "run", str(plan), "--execute", "--yes", "--db", str(db_path))
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "Error: the plan has recover rows: give --passwords-out FILE for the new mailboxes' passwords\n"
    )
    existing = write(tmp_path, "line,identity,upn,password\n1,x,y,z\n", "old-passwords.csv")
    again = run_imm(
        "bulk", "run", str(plan), "--execute", "--yes", "--passwords-out", str(existing), "--db", str(db_path)
    )
    assert again.exit_code == 2
    assert again.stderr.startswith(f"Error: --passwords-out {existing} already exists; choose a new file\n")
    assert_nothing_ran(db_path)


def test_a_declined_confirmation_runs_nothing(tmp_path: Path, db_path: Path) -> None:
    plan = write(tmp_path, f"action,identity,days\nset-duration,{GUID_A},365\nset-duration,{GUID_B},365\n")
    result = run_imm("bulk", "run", str(plan), "--execute", "--db", str(db_path), input="n\n")
    assert result.exit_code == 6
    assert result.stderr.startswith(
        "Change the Litigation Hold duration of 2 mailboxes in tenant organizations: "
        "Alice Archer <alice@contoso.com>, Bob Baker <bob@contoso.com>.\n"
        "Continue? [y/N]: "
    )
    assert result.stderr.endswith("Error: not confirmed: nothing was changed\n")
    assert db_rows(db_path, "SELECT COUNT(*) FROM bulk_jobs") == [(0,)]
    # the refusal is on record: one row, nothing started
    rows = db_rows(db_path, "SELECT operation, identity, result, error_message, details FROM audit_log")
    assert [r[:4] for r in rows] == [
        ("BULK_OPERATION", str(plan.resolve()), "cancelled", "not confirmed: nothing was changed")
    ]
    details = json.loads(rows[0][4])
    assert (details["mode"], details["items"], details["actions"]) == ("execute", 2, {"set-duration": 2})
    assert details["plan_sha256"] == hashlib.sha256(plan.read_bytes()).hexdigest()


LAST_HOLD_PLAN = (
    f"action,identity,type\nrelease,{GUID_A},litigation\nrelease,{GUID_B},litigation\n"
    f"release,{GUID_C},litigation\nrelease,{GUID_D},all-unlocked\n"
)


@pytest.mark.parametrize(
    ("flags", "stdin"),
    [((), "n\n"), ((), "release 3\n"), (("--yes",), ""), (("--yes", "--i-understand-unlimited"), "")],
)
def test_last_holds_need_the_count_typed_even_with_yes_and_closed_stdin(
    tmp_path: Path, db_path: Path, flags: tuple[str, ...], stdin: str | None
) -> None:
    plan = write(tmp_path, LAST_HOLD_PLAN)
    result = run_imm("bulk", "run", str(plan), "--execute", *flags, "--db", str(db_path), input=stdin)
    assert result.exit_code == 6, result.stderr  # declined
    lines = result.stderr.splitlines()
    assert lines[:2] == [
        "Consequences, by the cache (each row is checked against Exchange again before it runs):",
        "  4 rows remove the last hold (a 30-day delay hold, then soft-deleted, purged 183 days after the removal): "
        "Alice Archer <alice@contoso.com>, Bob Baker <bob@contoso.com>, Carol Cruz <carol@contoso.com> and 1 more",
    ]
    assert 'type "release 4" to go on' in result.stderr
    reason = "not confirmed (the typed confirmation was not 'release 4'): nothing was changed"
    assert lines[-1].endswith(f"Error: {reason}")
    assert db_rows(db_path, "SELECT COUNT(*) FROM bulk_jobs") == [(0,)]
    rows = db_rows(db_path, "SELECT operation, result, error_message FROM audit_log")
    assert rows == [("BULK_OPERATION", "cancelled", reason)]


@pytest.mark.parametrize(
    ("flags", "stdin"), [((), "y\n"), (("--yes",), ""), (("--yes", "--i-understand-last-hold"), "")]
)
def test_unlimited_releases_need_the_count_typed_even_with_yes_and_closed_stdin(
    tmp_path: Path, flags: tuple[str, ...], stdin: str
) -> None:
    """Rows that release an Unlimited Litigation Hold and keep a label hold (not the last hold): a y, --yes or the
    flag of another consequence is not the typed count; only --i-understand-unlimited goes on (to the sign-in)."""
    path = tmp_path / "unlimited.db"
    db = DatabaseManager(path)
    db.initialize()
    guids = ("0a1b2c3d-0000-4000-8000-0000000000e1", "0a1b2c3d-0000-4000-8000-0000000000e2")
    db.upsert_mailboxes(
        [
            make_mailbox(identity=guids[0], alias="erin", display_name="Erin Eads", compliance_tag_hold=True,
                         hold_types=["litigation", "label"]),
            make_mailbox(identity=guids[1], alias="finn", display_name="Finn Ford", compliance_tag_hold=True,
                         hold_types=["litigation", "label"]),
        ]
    )  # fmt: skip
    db.close()
    plan = write(tmp_path, "action,identity,type\n" + "".join(f"release,{g},litigation\n" for g in guids))
    result = run_imm("bulk", "run", str(plan), "--execute", *flags, "--db", str(path), input=stdin)
    assert result.exit_code == 6, result.stderr  # declined
    lines = result.stderr.splitlines()
    assert lines[1] == (
        "  2 rows release an Unlimited Litigation Hold: Erin Eads <erin@contoso.com>, Finn Ford <finn@contoso.com>"
    )
    assert 'type "release 2" to go on' in result.stderr and "remove the last hold" not in result.stderr
    reason = "not confirmed (the typed confirmation was not 'release 2'): nothing was changed"
    assert lines[-1].endswith(f"Error: {reason}")
    assert db_rows(path, "SELECT COUNT(*) FROM bulk_jobs") == [(0,)]
    assert db_rows(path, "SELECT operation, result, error_message FROM audit_log") == [
        ("BULK_OPERATION", "cancelled", reason)
    ]
    understood = run_imm("bulk", "run", str(plan), "--execute", "--yes", "--i-understand-unlimited", "--db", str(path))
    assert understood.exit_code == 3, understood.stderr  # past the confirmation: it needs a sign-in now
    assert "Error: Not signed in" in understood.stderr


# ------------------------------------------------------------------------------------------- valid plans
def test_a_valid_plan_reads_into_rows(tmp_path: Path, db_path: Path) -> None:
    plan = write(
        tmp_path,
        "\ufeffAction;Identity;Type;Days;UPN;Name;Display Name;Target;Archive;Target-Folder;Note\n"
        "# a comment line\n"
        f"RELEASE;{GUID_A.upper()};Litigation;;;;;;;;first\n"
        "\n"
        "set-duration;bob@contoso.com;;Unlimited;;;;;;;\n"
        "set_duration;carol@contoso.com;;730;;;;;;;\n"
        'recover;carol@contoso.com;;;carol.new@contoso.com;carol-new;\'=Carol "C";;;;\n'
        'restore;\'=HYPERLINK("x");;;;;;shared@contoso.com;yes;Old mail;\n',
    )
    db = DatabaseManager(db_path)
    parsed = read_plan(plan, db)
    db.close()
    assert parsed.counts() == {"recover": 1, "restore": 1, "release": 1, "set-duration": 2}
    assert parsed.has_recover
    assert parsed.rows == [
        PlanRow(3, "release", GUID_A.upper(), GUID_A, {"type": "litigation"}, "Alice Archer <alice@contoso.com>"),
        PlanRow(5, "set-duration", "bob@contoso.com", GUID_B, {"days": None}, "Bob Baker <bob@contoso.com>"),
        PlanRow(6, "set-duration", "carol@contoso.com", GUID_C, {"days": 730}, "Carol Cruz <carol@contoso.com>"),
        PlanRow(
            7,
            "recover",
            "carol@contoso.com",
            GUID_C,
            {"upn": "carol.new@contoso.com", "name": "carol-new", "display_name": '=Carol "C"'},
            "Carol Cruz <carol@contoso.com>",
        ),
        PlanRow(
            8,
            "restore",
            '=HYPERLINK("x")',
            GUID_D,
            {"target": "shared@contoso.com", "archive": True, "target_folder": "Old mail"},
            '=HYPERLINK("x") <dave@contoso.com>',
        ),
    ]


def test_formula_cells_round_trip() -> None:
    for text in ("=SUM(A1)", "+1+1", "-x", "@cmd", "plain", "-3.5", "'quoted", ""):
        assert unescape_cell(csv_safe(text)) == text
    assert csv_safe("=SUM(A1)") == "'=SUM(A1)"
    assert csv_safe("-3.5") == "-3.5"
    assert csv_safe(None) == "" and csv_safe(True) == "true"


# ----------------------------------------------------------------------------------------- imm bulk plan
def test_plan_from_a_cache_query_writes_a_plan_that_reads_back(tmp_path: Path, db_path: Path) -> None:
    out = tmp_path / "release.csv"
    result = run_imm(
        "bulk", "plan", "--releasable", "--company", "contoso", "--action", "release", "--type", "all-unlocked",
        "--out", str(out), "--db", str(db_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stderr == (
        f"Wrote a plan of 2 release rows to {out}\nPreview it (changes nothing): imm bulk run {out}\n"
    )
    assert out.read_text(encoding="utf-8") == (
        "action,identity,type,note\n"
        f"release,{GUID_A},all-unlocked,Alice Archer <alice@contoso.com>; Contoso / Sales; holds: litigation; "
        "holds expired 2025-01-01\n"
        f"release,{GUID_B},all-unlocked,Bob Baker <bob@contoso.com>; Contoso / Sales; holds: litigation; "
        "holds expired 2025-01-01\n"
    )
    db = DatabaseManager(db_path)
    assert [(r.line, r.mailbox_guid, r.params) for r in read_plan(out, db).rows] == [
        (2, GUID_A, {"type": "all-unlocked"}),
        (3, GUID_B, {"type": "all-unlocked"}),
    ]
    db.close()
    again = run_imm("bulk", "plan", "--releasable", "--out", str(out), "--db", str(db_path))
    assert (again.exit_code, again.stderr) == (2, f"Error: {out} exists; use --force to replace it\n")


def test_a_release_plan_with_no_options_selects_only_mailboxes_whose_holds_all_expired(db_path: Path) -> None:
    result = run_imm("bulk", "plan", "--db", str(db_path))
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["identity"], r["type"]) for r in rows] == [(GUID_A, "all-unlocked"), (GUID_B, "all-unlocked")]
    everyone = run_imm("bulk", "plan", "--include-unexpired", "--db", str(db_path))
    assert everyone.exit_code == 0, everyone.stderr
    assert len(list(csv.DictReader(io.StringIO(everyone.stdout)))) == 6
    wrong = run_imm("bulk", "plan", "--action", "recover", "--include-unexpired", "--db", str(db_path))
    assert (wrong.exit_code, wrong.stderr) == (2, "Error: --include-unexpired is for --action release\n")


def test_the_old_type_word_all_releasable_is_refused_with_a_hint(tmp_path: Path, db_path: Path) -> None:
    result = run_imm("bulk", "plan", "--type", "all-releasable", "--db", str(db_path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: hold type 'all-releasable' was renamed 'all-unlocked': it removes every unlocked hold, expired or not",
        "Hint: to act only on mailboxes whose holds have all expired, select them with --releasable (imm list "
        "--releasable, imm bulk plan --releasable); then use --type all-unlocked",
    ]
    plan = write(tmp_path, f"action,identity,type\nrelease,{GUID_A},all-releasable\n")
    run = run_imm("bulk", "run", str(plan), "--db", str(db_path))
    assert run.exit_code == 2
    assert f"  {plan}: line 2: release: hold type 'all-releasable' was renamed 'all-unlocked'" in run.stderr


def test_plan_for_recover_and_set_duration_on_stdout(tmp_path: Path, db_path: Path) -> None:
    recover = run_imm("bulk", "plan", "--action", "recover", "--hold-type", "label", "--db", str(db_path))
    assert recover.exit_code == 0, recover.stderr
    assert recover.stdout == (
        "action,identity,upn,name,display_name,note\n"
        f'recover,{GUID_D},dave@contoso.com,dave,"\'=HYPERLINK(""x"")","\'=HYPERLINK(""x"") '
        '<dave@contoso.com>; Contoso; holds: label"\n'
    )
    plan = write(tmp_path, recover.stdout)
    db = DatabaseManager(db_path)
    rows = read_plan(plan, db).rows
    db.close()
    assert rows[0].params == {"upn": "dave@contoso.com", "name": "dave", "display_name": '=HYPERLINK("x")'}
    duration = run_imm(
        "bulk", "plan", "--action", "set-duration", "--unlimited", "--company", "Fabrikam", "--db", str(db_path)
    )
    assert duration.stdout == (
        "action,identity,days,note\n"
        f"set-duration,{GUID_C},unlimited,Carol Cruz <carol@contoso.com>; Fabrikam / Legal; holds: ediscovery\n"
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--company", "Nobody"], 4, "no cached mailbox matches these filters; no plan was written"),
        (["--action", "set-duration"], 2, "--action set-duration needs --days N or --unlimited"),
        (["--action", "set-duration", "--days", "5", "--unlimited"], 2, "give --days N or --unlimited, not both"),
        (["--days", "5"], 2, "--days and --unlimited are for --action set-duration"),
        (["--action", "recover", "--type", "litigation"], 2, "--type is for --action release"),
        (["--target", "x@contoso.com"], 2, "--target, --archive and --target-folder are for --action restore"),
        (["--type", "everything"], 2, "unknown hold type 'everything' (choose from: litigation, delay, "
         "delay-release, label, org-policy, policy, ediscovery, all-unlocked)"),
    ],
)  # fmt: skip
def test_plan_option_errors(db_path: Path, args: list[str], code: int, message: str) -> None:
    result = run_imm("bulk", "plan", *args, "--db", str(db_path))
    assert result.exit_code == code
    assert result.stderr.splitlines()[0] == f"Error: {message}"


def test_unknown_jobs_are_not_found(db_path: Path) -> None:
    for command in (["status", "job-20260101-000000-0000"], ["resume", "job-20260101-000000-0000"]):
        result = run_imm("bulk", *command, "--db", str(db_path))
        assert result.exit_code == 4
        assert result.stderr.splitlines()[0] == "Error: no bulk job 'job-20260101-000000-0000'"
    listing = run_imm("bulk", "list", "--output", "json", "--db", str(db_path))
    assert (listing.exit_code, listing.stdout) == (0, "[]\n")


def test_read_plan_errors_are_input_errors(tmp_path: Path, db_path: Path) -> None:
    db = DatabaseManager(db_path)
    with pytest.raises(PlanError) as caught:
        read_plan(write(tmp_path, "action,identity\nrelease,alice@contoso.com\n"), db)
    assert isinstance(caught.value, InputError) and caught.value.exit_code == 2
    assert caught.value.problems == ["line 2: release needs the column 'type', which the header does not have"]
    assert not isinstance(caught.value, NotFoundError)
    db.close()


def test_old_deletions_plan_limit(db_path: Path) -> None:
    result = run_imm("bulk", "plan", "--older-than", "1", "--limit", "1", "--db", str(db_path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith(f"release,{GUID_A},all-unlocked,")
    assert len(result.stdout.splitlines()) == 2


# ------------------------------------------------------------------------------------------ the journal
def test_migration_0003_creates_the_journal_tables(tmp_path: Path) -> None:
    db = DatabaseManager(tmp_path / "imm.db")
    db.initialize()
    conn = db.get_connection()
    columns = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ("bulk_jobs", "bulk_items")}
    assert columns == {
        "bulk_jobs": ["id", "created_at", "updated_at", "finished_at", "plan_path", "plan_sha256", "status", "mode",
                      "concurrency", "user", "tenant", "totals", "audit_operation_id", "results_path",
                      "passwords_path", "runs"],
        "bulk_items": ["job_id", "line_no", "action", "identity", "mailbox_guid", "label", "params", "status",
                       "operation_id", "message", "attempts", "started_at", "finished_at", "lease_owner",
                       "lease_expires"],
    }  # fmt: skip
    assert "restore_requests" in {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert [r[2] for r in conn.execute("PRAGMA foreign_key_list(bulk_items)")] == ["bulk_jobs"]
    db.close()


def test_the_journal_claims_each_item_once_and_refuses_unknown_states(tmp_path: Path, db_path: Path) -> None:
    from imm.data.jobs import Item, Job, JobStore, new_job_id

    db = DatabaseManager(db_path)
    store = JobStore(db)
    job_id = new_job_id(datetime(2026, 11, 28, 12, 34, 56, tzinfo=UTC))
    assert job_id.startswith("job-20261128-123456-") and len(job_id) == len("job-20261128-123456-ab12")
    now = store.now()
    store.create(
        Job(job_id, now, now, None, "/plan.csv", "ab" * 32, "planned", "execute", 4, "admin@contoso.com", "t"),
        [Item(job_id, 2, "release", "alice@contoso.com", GUID_A, "Alice", {"type": "litigation"})],
    )
    assert store.claim(job_id, 2, ["pending"]) is True
    assert store.claim(job_id, 2, ["pending"]) is False  # already running: nobody else takes it
    store.finish(job_id, 2, "succeeded", "done", "op-1")
    item = store.items(job_id)[0]
    assert (item.status, item.attempts, item.message, item.operation_id) == ("succeeded", 1, "done", "op-1")
    assert store.counts(job_id) == {"succeeded": 1}
    with pytest.raises(ValueError):
        store.finish(job_id, 2, "half-done", None)
    with pytest.raises(sqlite3.IntegrityError):
        with db.transaction() as conn:
            conn.execute("UPDATE bulk_items SET status = 'half-done'")
    with pytest.raises(NotFoundError):
        store.get("job-nope")
    db.close()


@pytest.mark.parametrize("upn", ["jane@contoso", "jane doe@contoso.com", "@contoso.com"])
def test_a_upn_is_checked_by_the_same_words_singly_and_in_a_plan(tmp_path: Path, db_path: Path, upn: str) -> None:
    single = run_imm("recover", GUID_A, "--upn", upn, "--name", "jane", "--what-if", "--db", str(db_path))
    assert (single.exit_code, single.stderr.splitlines()[0]) == (2, f"Error: upn '{upn}' is not a user@domain address")
    plan = write(tmp_path, f"action,identity,upn,name\nrecover,{GUID_A},{upn},jane\n")
    planned = run_imm("bulk", "run", str(plan), "--db", str(db_path))
    assert planned.exit_code == 2
    assert f"  {plan}: line 2: upn '{upn}' is not a user@domain address" in planned.stderr.splitlines()


def test_a_plan_is_written_whole_or_not_at_all(tmp_path: Path, db_path: Path) -> None:
    missing = tmp_path / "no such folder" / "plan.csv"
    result = run_imm("bulk", "plan", "--include-unexpired", "--out", str(missing), "--db", str(db_path))
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: cannot write the plan to {missing}: No such file or directory\n",
    )
    assert not missing.parent.exists()
    out = tmp_path / "all.csv"
    result = run_imm("bulk", "plan", "--include-unexpired", "--out", str(out), "--db", str(db_path))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(f"Wrote a plan of 6 release rows to {out}\n")
    assert len(out.read_text(encoding="utf-8").splitlines()) == 7
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".all.csv")] == []  # no temporary file left
