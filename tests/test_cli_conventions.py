"""Conventions every command shares: the declined exit code and wording, no colour under NO_COLOR or off a
terminal (a real pseudo-terminal stands in for a person's terminal)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import run_imm

COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def run_on_terminal(*args: str, env: dict[str, str] | None = None, input: bytes = b"") -> tuple[int, str]:
    """``imm`` with stdin, stdout and stderr on a pseudo-terminal, as a person runs it: (exit code, output)."""
    master, slave = pty.openpty()
    full_env = {k: v for k, v in os.environ.items() if k not in {"NO_COLOR", "FORCE_COLOR", "IMM_RAISE_ERRORS"}}
    # IMM_PAGER empty: no pager, which would wait for keys this test never types (tests/test_tables.py pages)
    full_env.update({"TERM": "xterm-256color", "COLUMNS": "100", "IMM_PAGER": "", **(env or {})})
    proc = subprocess.Popen([sys.executable, "-m", "imm", *args], stdin=slave, stdout=slave, stderr=slave, env=full_env)
    os.close(slave)
    if input:
        os.write(master, input)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def test_the_error_line_is_red_on_a_terminal_and_plain_with_no_color(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.toml")
    code, shown = run_on_terminal("--config", missing, "list")
    assert code == 2
    assert "\x1b[31mError: " in shown  # the test can tell colour from none
    code, plain = run_on_terminal("--config", missing, "list", env={"NO_COLOR": "1"})
    assert code == 2
    assert "Error: " in plain and not COLOUR.search(plain), repr(plain)


def test_no_colour_off_a_terminal(tmp_path: Path) -> None:
    result = run_imm("--config", str(tmp_path / "missing.toml"), "list")
    assert result.exit_code == 2
    assert not COLOUR.search(result.stderr + result.stdout)


def test_tables_on_a_terminal_have_no_colour_with_no_color(imm_home: Path) -> None:
    path = imm_home / "config" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('[profiles.a]\ntenant_id = "x"\n', encoding="utf-8")
    code, shown = run_on_terminal("profile", "list", env={"NO_COLOR": "1"})
    assert code == 0 and "Profile" in shown
    assert not re.search(r"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;)[0-9;]*m", shown), repr(shown)


@pytest.mark.parametrize("answer", [b"n\r", b"\r"])
def test_a_declined_confirmation_is_exit_6_with_one_wording(imm_home: Path, tmp_path: Path, answer: bytes) -> None:
    db = str(tmp_path / "x.db")
    code, shown = run_on_terminal("cache", "clear", "--db", db, input=answer, env={"NO_COLOR": "1"})
    assert code == 6
    assert shown.rstrip().endswith("Error: not confirmed: nothing was changed")


def test_no_input_declines_a_question_and_says_to_pass_yes(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    result = run_imm("--no-input", "cache", "clear", "--db", db)
    assert result.exit_code == 6
    assert result.stderr.splitlines() == [
        "Error: not confirmed (--no-input and no --yes): nothing was changed",
        "Hint: check the preview (or --what-if), then pass --yes",
    ]
    json_error = run_imm("--no-input", "cache", "clear", "--db", db, "-o", "json")
    assert json_error.exit_code in {2, 6}
