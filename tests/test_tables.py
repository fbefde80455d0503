"""Terminal tables (issue 15, item 7): they fit the terminal without splitting an identifier over lines (text is
cut with an ellipsis, then the least needed columns are left out; ``--wide`` shows everything), and every
script is measured by the cells a terminal gives it, so the borders line up for Devanagari, CJK and emoji.

Widths are checked against two rulers: wcwidth (what imm measures with), and glibc's own ``wcswidth()``, which
xterm and VTE-based terminals draw with (independent of imm; ``TERM=xterm`` makes imm use wcwidth's xterm
corrections, the ones that agree with it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import locale
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import run_imm
from factories import make_mailbox
from imm.cli.output import _cut, _fold
from imm.data.audit_logger import AuditLogger
from imm.data.database import DatabaseManager

NOW = datetime.now(UTC).replace(microsecond=0)
UPN = "anjali.sharma.finance.department.emea@contoso-international-holdings.example.com"
GUIDS = ("1b4e28ba-2fa1-41d2-883f-0016d3cca427", "6fa459ea-ee8a-4ca4-894e-db77e160355e")
PLAIN_TERMINAL = {"TERM": "xterm-256color", "TERM_PROGRAM": ""}  # no terminal wcwidth knows: its default widths


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    path = tmp_path / "cache.db"
    db = DatabaseManager(path)
    db.initialize()
    db.upsert_mailboxes(
        [
            make_mailbox(
                identity=GUIDS[0],
                alias="anjali",
                display_name="अंजलि शर्मा (वित्त विभाग)",
                primary_smtp=UPN,
                user_principal_name=UPN,
                operating_company="Contoso Pharmaceuticals",
                department="Regulatory Affairs",
                when_soft_deleted=NOW - timedelta(days=400, hours=1),
                size_mb=2048.0,
                hold_types=["litigation", "org-policy"],
            ),
            make_mailbox(
                identity=GUIDS[1],
                alias="wang.xiaoming",
                display_name="王小明（研究开发部门主任）",
                operating_company="株式会社コントソ",
                department="研究開発",
                when_soft_deleted=NOW - timedelta(days=30, hours=1),
                size_mb=512.0,
                hold_types=["ediscovery"],
            ),
        ]
    )
    db.close()
    return path


def imm(cache: Path, *args: str, columns: int = 80, env: dict[str, str] | None = None) -> list[str]:
    result = run_imm("--db", str(cache), *args, env={**PLAIN_TERMINAL, "COLUMNS": str(columns), **(env or {})})
    assert result.exit_code == 0, result.stderr
    return result.stdout.splitlines()


def cells(line: str) -> int:
    from wcwidth import width

    return int(width(line))


def test_list_at_80_columns(cache: Path) -> None:
    lines = imm(cache, "list")
    assert lines == [
        "┏━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━┳━━━━━┳━━━━━━━━━┓",
        "┃Name         ┃ SMTP           ┃ Company ┃ Dept     ┃ Total MB ┃ Age ┃ Holds   ┃",
        "┡━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━╇━━━━━╇━━━━━━━━━┩",
        "│अंजलि शर्मा (…  │ anjali.sharma… │ Contos… │ Regulat… │    2,048 │ 400 │ litigat…│",
        "│王小明（研…  │ wang.xiaoming… │ 株式会… │ 研究開発 │      512 │  30 │ ediscov…│",
        "└─────────────┴────────────────┴─────────┴──────────┴──────────┴─────┴─────────┘",
    ]
    assert {cells(line) for line in lines} == {80}


def test_list_at_100_columns(cache: Path) -> None:
    lines = imm(cache, "list", columns=100)
    assert lines == [
        "┏━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━┳━━━━━━━━━━━━┓",
        "┃Name              ┃ SMTP                ┃ Company     ┃ Dept        ┃ Total MB ┃ Age ┃ Holds      ┃",
        "┡━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━╇━━━━━━━━━━━━┩",
        "│अंजलि शर्मा (वित्त…   │ anjali.sharma.fina… │ Contoso Ph… │ Regulatory… │    2,048 │ 400 │ litigation…│",
        "│王小明（研究开发… │ wang.xiaoming@cont… │ 株式会社コ… │ 研究開発    │      512 │  30 │ ediscovery │",
        "└──────────────────┴─────────────────────┴─────────────┴─────────────┴──────────┴─────┴────────────┘",
    ]
    assert {cells(line) for line in lines} == {100}


def test_wide_shows_every_column_in_full(cache: Path) -> None:
    lines = imm(cache, "list", "--wide")
    header = [c.strip() for c in lines[1].strip("┃").split("┃")]
    assert header == ["Name", "SMTP", "Company", "Dept", "Total MB", "Age", "Holds", "UPN", "ExchangeGuid"]
    first = [c.strip() for c in lines[3].strip("│").split("│")]
    assert first == [
        "अंजलि शर्मा (वित्त विभाग)",
        UPN,
        "Contoso Pharmaceuticals",
        "Regulatory Affairs",
        "2,048",
        "400",
        "litigation, org-policy",
        UPN,
        GUIDS[0],
    ]
    assert len({cells(line) for line in lines}) == 1  # wider than the terminal, borders still in line


def test_a_query_table_folds_at_spaces_and_never_splits_an_identifier(cache: Path) -> None:
    query = "[].{guid: identity, upn: user_principal_name, name: display_name}"
    assert imm(cache, "list", "--query", query, columns=60) == [
        "┏━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┓",
        "┃guid              ┃ upn               ┃ name              ┃",
        "┡━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━┩",
        "│1b4e28ba-2fa1-41… │ anjali.sharma.fi… │ अंजलि शर्मा (वित्त    │",
        "│                  │                   │ विभाग)            │",
        "│6fa459ea-ee8a-4c… │ wang.xiaoming@co… │ 王小明（研究开发部│",
        "│                  │                   │ 门主任）          │",
        "└──────────────────┴───────────────────┴───────────────────┘",
    ]
    wide = imm(cache, "list", "--query", query, "--wide", columns=60)
    assert [line.split("│")[1].strip() for line in wide[3:5]] == list(GUIDS)


def test_audit_list_keeps_guids_and_upns_whole_or_ellipsised(cache: Path) -> None:
    db = DatabaseManager(cache)
    log = AuditLogger(db)
    for guid in GUIDS:
        log.log_operation(
            "RECOVER_MAILBOX",
            guid,
            {"upn": UPN},
            "failure",
            f"could not recover {guid}: the UPN {UPN} is taken",
            user=UPN,
        )
    db.close()
    for columns, left_out in ((80, "User, Error"), (132, "")):
        result = run_imm("--db", str(cache), "audit", "list", env={**PLAIN_TERMINAL, "COLUMNS": str(columns)})
        lines = result.stdout.splitlines()
        assert {cells(line) for line in lines[1:]} == {columns}  # the title line is centred, not padded
        assert result.stderr == (
            f"Left out to fit 80 columns: {left_out} (--wide shows every column).\n" if left_out else ""
        )
        found = [m.group(0) for line in lines for m in re.finditer(r"[0-9a-f]{6}[0-9a-f-]*…?", line)]
        for guid in GUIDS:  # whole or cut, never split: each piece found starts as a GUID starts
            assert any(f == guid or (f.endswith("…") and guid.startswith(f[:-1])) for f in found)
        assert all(any(g.startswith(f.rstrip("…")) for g in GUIDS) for f in found), found
        upns = [m.group(0) for line in lines for m in re.finditer(r"anjali[\w.@-]*…?", line)]
        assert all(u == UPN or (u.endswith("…") and UPN.startswith(u[:-1])) for u in upns), upns
        assert len(upns) == (0 if left_out else 4)  # User and Error columns, two rows


@pytest.fixture
def glibc_wcswidth() -> Iterator[Any]:
    """glibc's wcswidth() under a UTF-8 locale (the locale is put back afterwards)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "wcswidth"):
        pytest.skip("no wcswidth in the C library")
    libc.wcswidth.argtypes = [ctypes.c_wchar_p, ctypes.c_size_t]
    before = locale.setlocale(locale.LC_CTYPE, None)
    try:
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    except locale.Error:
        pytest.skip("no C.UTF-8 locale for glibc's wcswidth")
    yield libc.wcswidth
    locale.setlocale(locale.LC_CTYPE, before)


def test_borders_line_up_as_glibc_draws_devanagari_cjk_and_emoji(cache: Path, glibc_wcswidth: Any) -> None:
    db = DatabaseManager(cache)
    db.upsert_mailboxes([make_mailbox(alias="zoe", display_name="Zoë 👩‍💻 मानवाधिकार", department="R&D 🚀")])
    db.close()
    for columns in (80, 100):
        lines = imm(cache, "list", columns=columns, env={"TERM": "xterm"})
        widths = {glibc_wcswidth(line, len(line)) for line in lines}
        assert widths == {columns}, lines


def test_cut_and_fold_keep_grapheme_clusters_and_words_whole() -> None:
    assert _cut("अंजलि शर्मा", 5) == "अंजलि…"  # not "अंजल…", which would strip the vowel sign from its consonant
    assert _cut("王小明", 4) == "王…"
    assert _cut("Zoë 👩‍💻", 6) == "Zoë…"  # the emoji sequence whole or not at all
    text = f"could not recover {GUIDS[0]} now"
    assert _fold(text, 20) == ["could not recover", "1b4e28ba-2fa1-41d2-…", "now"]
    assert _fold(text, 20, keep_long=True) == ["could not recover", GUIDS[0], "now"]


# ------------------------------------------------------------------------------------------------ the pager
PAGER_SCRIPT = """import sys
data = sys.stdin.buffer.read()
with open(sys.argv[1], "ab") as f:
    f.write(data)
"""


def on_a_terminal(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """The real ``imm`` with stdout on a pseudo-terminal: (exit code, what the terminal showed)."""
    full = {k: v for k, v in os.environ.items() if k not in {"IMM_PAGER", "PAGER"}}
    full.update({**PLAIN_TERMINAL, "COLUMNS": "80", "LINES": "12", **env})
    full.pop("IMM_RAISE_ERRORS", None)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "imm", *args], env=full, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=60)
    finally:
        os.close(leader)
    return proc.returncode, b"".join(chunks).decode("utf-8").replace("\r\n", "\n")


@pytest.fixture
def long_cache(cache: Path) -> Path:
    db = DatabaseManager(cache)
    db.upsert_mailboxes([make_mailbox(alias=f"user{n:02d}", display_name=f"User {n:02d}") for n in range(30)])
    db.close()
    return cache


def test_a_long_table_on_a_terminal_goes_through_imm_pager(long_cache: Path, tmp_path: Path) -> None:
    script, record = tmp_path / "pager.py", tmp_path / "paged.txt"
    script.write_text(PAGER_SCRIPT)
    env = {"IMM_PAGER": f"{sys.executable} {script} {record}", "PAGER": "false"}
    code, shown = on_a_terminal("--db", str(long_cache), "list", env=env)
    assert code == 0, shown
    paged = record.read_text(encoding="utf-8")
    piped = imm(long_cache, "list", env={"IMM_PAGER": env["IMM_PAGER"]})  # not a terminal: no pager
    assert paged.splitlines() == piped and len(piped) == 32 + 4  # the whole table, as it is off a terminal
    assert "User 29" not in shown  # the terminal got it from the pager, not from imm
    record.unlink()
    code, shown = on_a_terminal("--db", str(long_cache), "list", "--no-pager", env=env)
    assert code == 0 and not record.exists()
    assert shown.splitlines() == piped
    code, shown = on_a_terminal("--db", str(long_cache), "list", "--limit", "3", env=env)  # fits the screen
    assert code == 0 and not record.exists() and "User 01" in shown
    code, shown = on_a_terminal("--db", str(long_cache), "list", "-o", "json", env=env)
    assert code == 0 and not record.exists() and '"display_name": "User 29"' in shown


def test_pager_falls_back_to_pager_and_quitting_it_ends_quietly(cache: Path, tmp_path: Path) -> None:
    db = DatabaseManager(cache)
    db.upsert_mailboxes([make_mailbox(alias=f"user{n:04d}", display_name=f"User {n:04d}") for n in range(1500)])
    db.close()
    script, record = tmp_path / "pager.py", tmp_path / "paged.txt"
    script.write_text("import sys\nsys.stdin.readline()\nopen(sys.argv[1], 'w').write('quit')\n")
    env = {"PAGER": f"{sys.executable} {script} {record}"}
    code, shown = on_a_terminal("--db", str(cache), "list", env={**env, "IMM_PAGER": ""})
    assert code == 0 and not record.exists() and "User 1499" in shown  # IMM_PAGER empty: no pager at all
    code, shown = on_a_terminal("--db", str(cache), "list", env=env)
    # PAGER read one line and quit while imm still had 100 KB to write: imm stops, exit 0, nothing said
    assert (code, shown, record.read_text()) == (0, "", "quit")
    code, shown = on_a_terminal("--db", str(cache), "list", "--limit", "40", env={"IMM_PAGER": str(tmp_path / "none")})
    assert code == 0 and "User 0039" in shown  # a pager that cannot start: said once, the table as it is
    assert shown.startswith(f"Warning: could not start the pager {tmp_path / 'none'}: No such file or directory\n")
    code, shown = on_a_terminal("--db", str(cache), "list", env={"IMM_PAGER": "less 'unclosed", "NO_COLOR": "1"})
    assert code == 2 and shown.startswith("Error: environment variable IMM_PAGER: No closing quotation\n"), shown


def test_the_expiry_reasons_fold_so_rows_that_differ_late_stay_distinct(tmp_path: Path) -> None:
    reasons = [
        f"never by itself: legacy In-Place Hold {guid.replace('-', '')} has no duration imm can read" for guid in GUIDS
    ] + ["never by itself: Litigation Hold is unlimited"]
    path = tmp_path / "expiry.db"
    db = DatabaseManager(path)
    db.initialize()
    db.upsert_mailboxes([make_mailbox(alias=f"m{n}", expiry_reason=r) for n, r in enumerate(reasons)])
    db.close()
    lines = imm(path, "report", "expiry", "--section", "never")
    assert lines == [
        "                  Why the other holds never end by themselves                   ",
        "┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━┳━━━━━┓",
        "┃Reason                                                      ┃ Mailboxes ┃   GB┃",
        "┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━╇━━━━━┩",
        "│never by itself: Litigation Hold is unlimited               │         1 │ 2.00│",
        "│never by itself: legacy In-Place Hold                       │         1 │ 2.00│",
        "│1b4e28ba2fa141d2883f0016d3cca427 has no duration imm can    │           │     │",
        "│read                                                        │           │     │",
        "│never by itself: legacy In-Place Hold                       │         1 │ 2.00│",
        "│6fa459eaee8a4ca4894edb77e160355e has no duration imm can    │           │     │",
        "│read                                                        │           │     │",
        "└────────────────────────────────────────────────────────────┴───────────┴─────┘",
        "",
    ]  # each reason whole (folded at spaces, the hold's GUID intact), so the rows are told apart
