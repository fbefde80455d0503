"""Hostile input never breaks imm: a fixed corpus and Hypothesis over every input class.

Plans, arguments, configuration files, token caches, corrupt stores and hostile directory data from the simulated
tenant (``SimulatorConfig.hostile_data``). For each input the suite asserts what the README promises: an exit code
in the documented set, exactly one ``Error:`` line (capped problem lists for plans), no traceback and no "defect"
message, nothing on the terminal that a terminal would act on (escape sequences, control characters), and the
store and audit log unchanged.

Most cases run in-process through Click's CliRunner (the same ``imm`` group, a few ms each); the ones where the
process matters run the real ``imm`` (arguments that are not UTF-8 as the OS hands them over, a FIFO that must not
hang). The large cases (100,000-row plans, a 10,000-column header, a 100 MB file) are run, bounded, not skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_imm
from imm.cli.main import cli
from imm.config import write_profile
from imm.simulator import Simulator, SimulatorConfig
from imm.simulator.generator import HOSTILE_VALUES
from imm.textsafe import is_safe, terminal_safe

DOCUMENTED = {0, 1, 2, 3, 4, 5, 130}
FAILURE = {1, 2, 3, 4, 5}
MAX_STDERR_LINES = 25  # one error line, its hint, and at most 20 plan problems with their count
MAX_LINE = 1100
# Deterministic in the merge queue (the same examples every run); IMM_FUZZ=N explores N fresh examples per test.
FUZZ = int(os.environ.get("IMM_FUZZ", "0") or 0)
FAST = settings(
    max_examples=FUZZ or 25,
    deadline=None,
    derandomize=not FUZZ,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ------------------------------------------------------------------------------------------------ fixtures
@dataclass
class Place:
    """A synced store against a hostile tenant: the config file, a private copy of the database, the tenant."""

    config: Path
    db: Path
    sim: Simulator
    hostile: list[str]  # ExchangeGuids of the mailboxes with hostile directory values

    def imm(self, *args: str, input: str | None = None) -> Result:
        return invoke("--config", str(self.config), "--db", str(self.db), *args, input=input)

    def read_only(self, *args: str, codes: set[int] = FAILURE) -> Result:
        """A command that must not change the store, whatever its input: checked, and the store compared."""
        before = self.snapshot()
        result = self.imm(*args)
        check(result, codes)
        assert self.snapshot() == before
        return result

    def snapshot(self) -> str:
        return store_digest(self.db)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def invoke(*args: str, input: str | None = None) -> Result:
    """The imm group in-process, as a user runs it (stdin is not a terminal)."""
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"imm raised {result.exception!r}") from result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def store_digest(db: Path) -> str:
    """Every row of every table (FTS shadow tables aside), so a change anywhere shows."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.text_factory = bytes
    try:
        digest = hashlib.sha256()
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            if not r[0].startswith((b"sqlite_", b"inactive_mailboxes_fts"))
        ]
        for table in tables:
            name = table.decode()
            for row in conn.execute(f'SELECT * FROM "{name}" ORDER BY rowid'):
                digest.update(repr((name, row)).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check(result: Result, codes: set[int] = FAILURE, *, problems: bool = False) -> list[str]:
    """The promise for one hostile input; returns stderr's lines."""
    assert result.exit_code in codes, (result.exit_code, result.stderr[-2000:])
    for text in (result.stdout, result.stderr):
        assert "Traceback" not in text
        assert "defect in imm" not in text, result.stderr
    lines = result.stderr.splitlines()
    if result.exit_code != 0:
        errors = [line for line in lines if line.startswith(("Error:", '{"error": '))]
        assert len(errors) == 1, lines[:30]
    assert len(lines) <= (MAX_STDERR_LINES if problems else 4), lines[:30]
    for line in lines:
        assert len(line) <= MAX_LINE, line[:200]
        assert is_safe(line.replace("\t", " ")), line[:200]
    return lines


@pytest.fixture(scope="module")
def hostile_tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Simulator]]:
    """One hostile simulated tenant, signed in and synced once for the module."""
    root = tmp_path_factory.mktemp("hostile")
    config = SimulatorConfig(data_dir=root / "sim", mailboxes=60, auto_approve_after=0.0, hostile_data=True)
    with Simulator(config) as sim:
        path = root / "config.toml"
        values = {**sim.profile_values(), "db_path": root / "template.db", "token_cache_path": root / "tokens.json"}
        write_profile(path, "sim", values, make_default=True)
        saved = os.environ.get("IMM_USER_PATH")
        os.environ["IMM_USER_PATH"] = str(root / "home")
        try:
            assert invoke("--config", str(path), "login").exit_code == 0
            synced = invoke("--config", str(path), "sync")
            assert synced.exit_code == 0, synced.stderr
        finally:
            if saved is None:
                os.environ.pop("IMM_USER_PATH", None)
            else:
                os.environ["IMM_USER_PATH"] = saved
        yield path, root / "template.db", sim


@pytest.fixture
def place(hostile_tenant: tuple[Path, Path, Simulator], tmp_path: Path) -> Place:
    config, template, sim = hostile_tenant
    db = tmp_path / "imm.db"
    shutil.copyfile(template, db)
    return Place(config, db, sim, sim.exchange.tenant.special["hostile"].split(","))


# ------------------------------------------------------------------------------------------------ numbers
NUMBER_CORPUS = ["²", "¹", "٣", "１", "99999999999999999999", "-1", "1e400", "nan", "inf", "-inf", "0x10", "1_000", ""]


@pytest.mark.parametrize("value", NUMBER_CORPUS)
@pytest.mark.parametrize("option", [("list", "--limit"), ("list", "--older-than"), ("list", "--min-size-mb")])
def test_numbers_are_ascii_digits_in_range(place: Place, option: tuple[str, str], value: str) -> None:
    before = place.snapshot()
    lines = check(place.imm(*option, value), {2})
    assert "Invalid value for" in lines[-1]
    assert place.snapshot() == before


@given(value=st.text(max_size=25))
@FAST
def test_any_text_for_a_number_option_is_taken_or_refused(place: Place, value: str) -> None:
    result = place.read_only("list", "--limit", value, "-o", "json", codes={0, 2})
    if result.exit_code == 0:
        assert value.strip().isascii() and value.strip().lstrip("+").isdigit()


@pytest.mark.parametrize("since", ["9999999d", "99999999999w", "٣d", "²h", "１d", "9999-99-99", "\x1b]0;x\x07"])
def test_audit_since_out_of_range_or_not_ascii_is_a_usage_error(place: Place, since: str) -> None:
    place.read_only("audit", "list", "--since", since, codes={2})


# ------------------------------------------------------------------------------------------------ arguments
UNDECODABLE = "\udcff\udcfe"  # what Python makes of the bytes ff fe on a POSIX command line


@pytest.mark.parametrize("args", [("search", UNDECODABLE), ("show", UNDECODABLE), ("list", "--company", UNDECODABLE)])
def test_an_argument_that_is_not_utf8_is_a_usage_error(place: Place, args: tuple[str, ...]) -> None:
    result = place.read_only(*args, codes={2})
    assert "not valid UTF-8 text (byte 0xff at position 1)" in result.stderr.splitlines()[-1]


def test_a_real_process_given_bytes_that_are_not_utf8(place: Place) -> None:
    raw = os.fsdecode(b"\xff\xfe")
    result = run_imm("--config", str(place.config), "--db", str(place.db), "search", raw)
    check(Result(result.exit_code, result.stdout, result.stderr), {2})


@pytest.mark.parametrize(
    "identity",
    ["x" * 100_000, "\x1b]0;pwned\x07", "\x9b31m", "a\u202eb", "line\nbreak", "\x00", "%", "' OR 1=1 --", "*"],
)
def test_an_identity_is_echoed_short_and_terminal_safe(place: Place, identity: str) -> None:
    result = place.read_only("show", identity, codes={0, 2, 4})
    lines = result.stderr.splitlines()  # "line\nbreak" names a hostile mailbox (display names ignore case)
    assert all(is_safe(line) for line in result.stdout.splitlines())
    if lines:
        assert len(lines[0]) < 300


ESCAPES = ["\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "\x9b31m", "a\u202eb", "\x1bP+q\x1b\\", "back\x08\x08\r!"]


@pytest.mark.parametrize("value", ESCAPES)
@pytest.mark.parametrize(
    "command", [("search",), ("list", "--company"), ("list", "--department"), ("audit", "list", "--identity")]
)
def test_escape_sequences_in_an_argument_never_reach_the_terminal(
    place: Place, command: tuple[str, ...], value: str
) -> None:
    """An argument is echoed ("no mailbox matches …", an error line) neutralised, on stdout and stderr alike."""
    result = place.read_only(*command, value, codes={0, 2, 4})
    for line in (result.stdout + result.stderr).splitlines():
        assert is_safe(line.replace("\t", " ")), line[:200]


@given(text=st.text(max_size=60))
@FAST
def test_any_search_text_is_answered_or_refused_in_one_line(place: Place, text: str) -> None:
    result = place.read_only("search", text, codes={0, 2})
    assert all(is_safe(line.replace("\t", " ")) for line in result.stdout.splitlines())


# ------------------------------------------------------------------------------------------------ JMESPath
@pytest.mark.parametrize(
    "query", ['length(@) > `"x"`', "sort_by(@, &hold_types)", "max_by(@, &hold_types)", "sum(@)", "abs(@)"]
)
def test_a_query_that_fails_while_evaluated_is_a_usage_error(place: Place, query: str) -> None:
    place.read_only("list", "--query", query, codes={2})


@given(query=st.text(alphabet="@[]?.*&|!=<>`'\"(){}:,0123456789abclmnstxyz_ -", max_size=30))
@FAST
def test_any_query_is_answered_or_refused(place: Place, query: str) -> None:
    place.read_only("list", "--query", query, "-o", "json", codes={0, 2})


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "line",
    [
        "request_timeout = nan",
        "request_timeout = inf",
        "request_timeout = -inf",
        "request_timeout = true",
        "concurrency = true",
        "concurrency = 2.5",
        "concurrency = 1000000000",
        "concurrency = '٣'",
        "device_code_timeout = 1e308",
        "audit_min_retention_days = -1",
        "exchange_scope = 5",
        "certificate_path = []",
    ],
)
def test_config_values_are_type_and_range_checked(place: Place, tmp_path: Path, line: str) -> None:
    path = tmp_path / "config.toml"
    text = place.config.read_text(encoding="utf-8")
    path.write_text(text.replace("[profiles.sim]\n", f"[profiles.sim]\n{line}\n"), encoding="utf-8")
    before = place.snapshot()
    lines = check(invoke("--config", str(path), "--db", str(place.db), "cache", "stats"), {2})
    assert f"{path}:" in lines[0] and "invalid value" in lines[0]
    assert place.snapshot() == before


@pytest.mark.parametrize("rate", ["per_gb_month = -1", "per_gb_month = nan", "'Exchange Online Plan 2' = inf"])
def test_cost_rates_are_range_checked(place: Place, tmp_path: Path, rate: str) -> None:
    path = tmp_path / "config.toml"
    table = "[profiles.sim.cost]" if rate.startswith("per_gb") else "[profiles.sim.cost.license_month]"
    path.write_text(place.config.read_text(encoding="utf-8") + f"\n{table}\n{rate}\n", encoding="utf-8")
    check(invoke("--config", str(path), "--db", str(place.db), "cache", "stats"), {2})


def test_a_config_file_with_a_bom_is_read(place: Place, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf" + place.config.read_bytes())
    assert invoke("--config", str(path), "--db", str(place.db), "cache", "stats").exit_code == 0


@given(
    key=st.sampled_from(["concurrency", "request_timeout", "device_code_timeout", "audit_min_retention_days"]),
    value=st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=12)),
)
@FAST
def test_any_config_value_is_taken_or_named(place: Place, tmp_path: Path, key: str, value: object) -> None:
    import tomlkit

    path = tmp_path / "config.toml"
    document = tomlkit.parse(place.config.read_text(encoding="utf-8"))
    document["profiles"]["sim"][key] = value  # type: ignore[index]
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    check(invoke("--config", str(path), "--db", str(place.db), "cache", "stats"), {0, 2})


@given(data=st.binary(max_size=200))
@FAST
def test_any_config_bytes_are_read_or_named(place: Place, tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(data)
    check(invoke("--config", str(path), "--db", str(place.db), "cache", "stats"), {0, 2})


# ------------------------------------------------------------------------------------------------ token caches
@pytest.mark.parametrize(
    "content", [b"", b"garbage", b"\xff\xfe\x00", b"[" * 100_000, b'{"AccessToken": 5}', b"null", b"\x00" * 4096]
)
def test_an_unreadable_token_cache_off_a_terminal_exits_3_without_a_device_code(
    place: Place, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "config.toml"
    cache = tmp_path / "tokens.json"
    cache.write_bytes(content)
    text = place.config.read_text(encoding="utf-8")
    old = str(place.config.parent / "tokens.json")
    path.write_text(text.replace(old, str(cache)), encoding="utf-8")
    runs, audited = store_rows(place.db, "sync_runs"), audit_operations(place.db)
    result = invoke("--config", str(path), "--db", str(place.db), "sync")
    lines = [line for line in check(result, {3}) if not line.startswith("WARNING: The token cache")]
    assert "devicelogin" not in result.stderr and "enter the code" not in result.stderr
    assert lines[0].startswith("Error: Not signed in")
    assert store_rows(place.db, "sync_runs") == runs  # no sync started
    assert set(audit_operations(place.db)[len(audited) :]) <= {("CONNECT", "failure")}  # only the refused sign-in


def store_rows(db: Path, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def audit_operations(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return [(r[0], r[1]) for r in conn.execute("SELECT operation, result FROM audit_log ORDER BY id")]
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------------ stores
READ_COMMANDS = [("list",), ("search", "anna"), ("show", "anna"), ("cache", "stats"), ("audit", "list")]


def _damage(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("command", [*READ_COMMANDS, ("sync",)])
@pytest.mark.parametrize("table", ["inactive_mailboxes", "audit_log", "sync_runs"])
def test_a_dropped_table_says_the_store_is_damaged(place: Place, table: str, command: tuple[str, ...]) -> None:
    _damage(place.db, "DROP TRIGGER IF EXISTS audit_log_no_delete", f"DROP TABLE {table}")
    before = file_digest(place.db)
    result = place.imm(*command)
    if result.exit_code in (0, 4) and "damaged" not in result.stderr:  # the command does not use that table
        return
    lines = check(result, {1})
    assert lines[0].startswith("Error: the store ") and f"damaged (no such table: {table})" in lines[0]
    assert lines[1].startswith("Hint: keep the file")
    if command != ("sync",):
        assert file_digest(place.db) == before


@pytest.mark.parametrize("command", [*READ_COMMANDS, ("sync",)])
def test_text_that_is_not_utf8_says_the_store_is_damaged(place: Place, command: tuple[str, ...]) -> None:
    _damage(
        place.db,
        "DROP TRIGGER IF EXISTS inactive_mailboxes_fts_update",
        "UPDATE inactive_mailboxes SET display_name = CAST(x'41ff1b5d30' AS TEXT)",
        "DROP TRIGGER IF EXISTS audit_log_no_update",
        "UPDATE audit_log SET user = CAST(x'ff' AS TEXT)",
    )
    before = file_digest(place.db)
    result = place.imm(*command)
    check(result, {0, 1, 4})
    if result.exit_code == 1:
        assert "is damaged (Could not decode to UTF-8 column" in result.stderr
    if command != ("sync",):
        assert file_digest(place.db) == before


@pytest.mark.parametrize("seed", range(6))
def test_bytes_overwritten_in_place(place: Place, seed: int) -> None:
    import random

    data = bytearray(place.db.read_bytes())
    rng = random.Random(seed)
    for _ in range(2000):
        data[rng.randrange(100, len(data))] = rng.randrange(256)
    place.db.write_bytes(bytes(data))
    for command in [*READ_COMMANDS, ("sync",)]:
        check(place.imm(*command), DOCUMENTED)


@pytest.mark.parametrize(
    "content", [b"", b"SQLite format 3\x00" + b"\x00" * 84, b"\xff" * 8192, b"not a database at all\n" * 100]
)
def test_files_that_are_not_stores(place: Place, content: bytes) -> None:
    place.db.write_bytes(content)
    for command in READ_COMMANDS[:2]:
        check(place.imm(*command), DOCUMENTED)


def test_a_truncated_store(place: Place) -> None:
    data = place.db.read_bytes()
    place.db.write_bytes(data[: len(data) // 2])
    for command in READ_COMMANDS:
        check(place.imm(*command), DOCUMENTED)


def test_a_store_from_a_future_imm(place: Place) -> None:
    _damage(place.db, "INSERT INTO _imm_migrations (name, applied_at) VALUES ('9999_future', '2099-01-01')")
    lines = check(place.imm("list"), {1})
    assert "created by a newer imm" in lines[0]


def test_blob_details_are_named_by_audit_verify(place: Place) -> None:
    _damage(
        place.db,
        "DROP TRIGGER IF EXISTS audit_log_no_update",
        "UPDATE audit_log SET details = CAST(details AS BLOB) WHERE id = 2",
    )
    lines = check(place.imm("audit", "verify"), {1})
    assert lines[0].startswith("Error: audit log verification failed at row 2: ")
    assert "row 2 was edited: its details is stored as binary data (a BLOB)" in lines[0]
    out = place.db.parent / "export.json"
    check(place.imm("audit", "export", "--out", str(out)), {0})
    row = next(e for e in json.loads(out.read_text(encoding="utf-8"))["entries"] if e["id"] == 2)
    assert set(row["details_json"]) == {"blob_hex"}
    check(place.imm("audit", "list"), {0})


# ------------------------------------------------------------------------------------------------ plans
def _plan(tmp_path: Path, text: str | bytes, name: str = "plan.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _run_plan(place: Place, path: Path | str, *extra: str) -> tuple[Result, list[str]]:
    before = place.snapshot()
    result = place.imm("bulk", "run", str(path), *extra)
    lines = check(result, {2}, problems=True)
    assert place.snapshot() == before  # a refused plan leaves no job, no audit row
    return result, lines


@pytest.mark.parametrize("days", ["²", "¹", "٣", "１", "0", "36501", "1e3", "3.0", "99999999999999999999999"])
def test_plan_days_are_ascii_digits_in_range(place: Place, tmp_path: Path, days: str) -> None:
    plan = _plan(tmp_path, f"action,identity,days\nset-duration,{place.hostile[0]},{days}\n")
    _, lines = _run_plan(place, plan)
    assert "days must be a whole number from 1 to 36500 or 'unlimited'" in lines[0]


def test_a_device_is_not_a_plan(place: Place) -> None:
    _, lines = _run_plan(place, "/dev/zero")
    assert (
        lines[0]
        == "Error: /dev/zero is not a regular file (a FIFO, a device or a socket): a plan must be a regular file"
    )


def test_a_fifo_is_refused_at_once(place: Place, tmp_path: Path) -> None:
    fifo = tmp_path / "plan.csv"
    os.mkfifo(fifo)
    result = run_imm("--config", str(place.config), "--db", str(place.db), "bulk", "run", str(fifo), timeout=60)
    lines = check(Result(result.exit_code, result.stdout, result.stderr), {2})
    assert "is not a regular file" in lines[0]


def test_a_huge_file_is_refused_before_it_is_read(place: Place, tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as stream:
        stream.truncate(100 * 1024 * 1024)  # sparse: 100 MB of NUL bytes
    _, lines = _run_plan(place, path)
    assert "104,857,600 bytes: a plan is at most 67,108,864 bytes" in lines[0]


def test_a_10000_column_header(place: Place, tmp_path: Path) -> None:
    plan = _plan(tmp_path, ",".join(["action", "identity", *(f"c{i}" for i in range(9998))]) + "\n")
    _, lines = _run_plan(place, plan)
    assert "line 1 is longer than 32,768 characters" in lines[-2]
    short = _plan(tmp_path, ",".join(["action", "identity", *("x" for _ in range(9998))]) + "\n", "short.csv")
    _, lines = _run_plan(place, short)
    assert "the header has 10,000 columns (at most 64)" in lines[-2]


def test_100k_unknown_identities_report_20_problems_and_a_count(place: Place, tmp_path: Path) -> None:
    rows = "".join(f"release,nobody{i}@example.com,litigation\n" for i in range(100_000))
    plan = _plan(tmp_path, "action,identity,type\n" + rows)
    everything = tmp_path / "problems.txt"
    result, lines = _run_plan(place, plan, "--problems", str(everything))
    assert len(result.stderr) < 5000
    assert lines[20] == f"  … and 99,980 more problems (all of them are in {everything})"
    assert lines[21] == f"Error: {plan}: 100000 invalid rows; nothing was run"
    assert sum(1 for _ in everything.open(encoding="utf-8")) == 100_000


def test_100k_duplicate_rows(place: Place, tmp_path: Path) -> None:
    row = f"release,{place.hostile[0]},litigation\n"
    plan = _plan(tmp_path, "action,identity,type\n" + row * 100_000)
    result, lines = _run_plan(place, plan)
    assert lines[-2] == f"Error: {plan}: 99999 invalid rows; nothing was run"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xef\xbb\xbf",
        "action,identity\nrelease,x\n".encode("utf-16"),
        b"action,identity,type\nrelease,\x00,litigation\n",
        b"action,identity,type\nrelease,=cmd|' /C calc'!A0,litigation\n",
        b"action,identity,type\nrelease,\x1b]0;pwned\x07,litigation\n",
        b'action,identity,type\nrelease,"unterminated,litigation\n',
        b"action,identity,type\n" + b"release,x," + b"y" * 40_000 + b"\n",
        b"action,identity,type\r\r\n\x9b31m,\xe2\x80\xae,\n",
        b"\x1b]0;title\x07,identity\n",
    ],
)
def test_broken_plans_are_refused_in_a_few_lines(place: Place, tmp_path: Path, content: bytes) -> None:
    _run_plan(place, _plan(tmp_path, content))


VALID_PLAN_HEADER = ["action", "identity", "type"]


@given(
    column=st.integers(0, 2),
    row=st.integers(0, 2),
    cell=st.text(max_size=40),
)
@FAST
def test_one_cell_mutations_of_a_valid_plan(place: Place, tmp_path: Path, column: int, row: int, cell: str) -> None:
    rows = [VALID_PLAN_HEADER] + [["release", guid, "litigation"] for guid in place.hostile[:2]]
    rows[row][column] = cell
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    plan = _plan(tmp_path, out.getvalue())
    before = place.snapshot()
    result = place.imm("bulk", "run", str(plan))
    check(result, DOCUMENTED, problems=True)
    if result.exit_code == 2:
        assert place.snapshot() == before


@given(data=st.binary(max_size=300))
@FAST
def test_any_plan_bytes_are_refused_or_previewed(place: Place, tmp_path: Path, data: bytes) -> None:
    plan = _plan(tmp_path, b"action,identity,type\n" + data)
    before = place.snapshot()
    result = place.imm("bulk", "run", str(plan))
    check(result, DOCUMENTED, problems=True)
    if result.exit_code == 2:
        assert place.snapshot() == before


@given(since=st.text(max_size=20), until=st.text(max_size=20))
@FAST
def test_any_audit_window_is_taken_or_refused(place: Place, since: str, until: str) -> None:
    place.read_only("audit", "list", "--since", since, "--until", until, codes={0, 2})


@given(identity=st.text(min_size=1, max_size=80))
@FAST
def test_any_identity_for_show_and_holds(place: Place, identity: str) -> None:
    for command in ("show", "holds show"):
        result = place.read_only(*command.split(), identity, codes={0, 2, 4})
        assert all(is_safe(line) for line in result.stdout.splitlines())


# ------------------------------------------------------------------------------------------------ directory data
def test_hostile_directory_values_are_neutralised_in_tables(place: Place) -> None:
    for args in (("list",), ("search", "Title"), ("search", "Hidden"), ("audit", "list")):
        result = place.imm(*args)
        assert result.exit_code == 0, result.stderr
        for line in result.stdout.splitlines():
            assert is_safe(line), line[:120]
    table = place.imm("list").stdout
    assert "\\x1b]0;pwne" in table and "\\x9b31" in table


@pytest.mark.parametrize("index", range(len(HOSTILE_VALUES)))
def test_show_neutralises_every_hostile_value(place: Place, index: int) -> None:
    result = place.imm("show", place.hostile[index])
    assert result.exit_code == 0, result.stderr
    assert all(is_safe(line) for line in result.stdout.splitlines())
    assert terminal_safe(HOSTILE_VALUES[index]) in result.stdout


def test_json_and_csv_keep_the_exact_text(place: Place) -> None:
    records = json.loads(place.imm("list", "-o", "json").stdout)
    by_id = {r["identity"]: r for r in records}
    for guid, value in zip(place.hostile, HOSTILE_VALUES, strict=False):
        assert by_id[guid]["display_name"] == value
    shown = json.loads(place.imm("show", place.hostile[0], "-o", "json").stdout)
    assert shown["display_name"] == HOSTILE_VALUES[0]
    import csv
    import io

    csv_rows = list(csv.DictReader(io.StringIO(place.imm("list", "-o", "csv").stdout, newline="")))
    names = {r["display_name"] for r in csv_rows}
    assert "'" + '=cmd|"/C calc"!A0' in names  # a formula is made inert, the rest exact
    assert "\x1b]0;pwned\x07Eve Title" in names and "Nul\x00Byte" in names


def test_a_bulk_preview_on_hostile_mailboxes_is_terminal_safe(place: Place, tmp_path: Path) -> None:
    rows = "".join(f"release,{guid},litigation\n" for guid in place.hostile)
    plan = _plan(tmp_path, "action,identity,type\n" + rows)
    for extra in ((), ("--show-cmdlets",)):
        result = place.imm("bulk", "run", str(plan), *extra)
        check(result, {0, 1}, problems=True)  # the what-if's consequences and counts: every line terminal safe
        assert all(is_safe(line) for line in result.stdout.splitlines())


def test_holds_show_on_a_hostile_mailbox(place: Place) -> None:
    result = place.imm("holds", "show", place.hostile[0])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("\\x1b]0;pwned\\x07Eve Title <")


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip("POSIX file types and argument bytes")
