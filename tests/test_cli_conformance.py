"""The CLI conformance test: every command's ``--help`` (walked from the Click tree, so a new command is covered
by itself) shows examples that parse and run as written against the demo tenant, and every command that lists
records keeps the shared conventions: ``--limit 0`` is no limit, a bad filter value exits 2 naming the allowed
values, usage errors under ``-o json`` are the JSON error object, ``-o csv`` prints its header even when nothing
matches, a closed pipe (``| head -1``) is a quiet success, and nothing carries colour off a terminal or under
NO_COLOR.

One demo site per test process (xdist worker): a simulated tenant as ``imm demo`` serves it (seed 1; the
examples name its mailboxes, which are the same in a demo of any size), the demo's profile, signed in and synced
once. The examples of one help run in order (a later one may use a file an earlier one wrote) in a copy of that
folder, so what they change stays theirs; the convention checks only read.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conftest import make_simulator, run_imm
from imm.cli.main import cli
from imm.domain.holds import PRESERVING_HOLD_TYPES
from imm.services.demo import write_demo_config
from imm.simulator import Simulator
from test_cli_conventions import run_on_terminal

pytestmark = pytest.mark.slow

ANSI = re.compile(r"\x1b")
COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;)[0-9;]*m")
HEADING = re.compile(r"^(\s*)Examples?:\s*$")
BIN = str(Path(sys.executable).parent)  # where the `imm` the examples name is installed

# Examples that need what a fresh demo does not have (an example holding one of these is not run); each is still
# parsed (its options and values exist).
NEEDS = {
    "imm bulk resume job-": "a bulk job's id (imm bulk list shows them)",
    "imm bulk approve job-": "a bulk job's id awaiting approval, and a second admin",
    "imm bulk reject job-": "a bulk job's id awaiting approval, and a second admin",
    "imm bulk status job-": "a bulk job's id (imm bulk list shows them)",
    "imm bulk work job-": "a bulk job's id, approved or confirmed (tests/test_bulk_workers.py runs workers)",
    "imm bulk submit ": "a profile with approval_required",
    "imm restore remove ": "a restore request (imm restore start … makes one)",
    "imm restore suspend ": "a restore request (imm restore start … makes one)",
    "imm restore resume ": "a restore request (imm restore start … makes one)",
    "imm store grants ": "a team store on PostgreSQL (tests/test_team_store.py runs it)",
    " store migrate --to ": "a team store on PostgreSQL to copy into (tests/test_team_store.py runs it)",
    "IMM_STORE=": "a team store on PostgreSQL (tests/test_team_store.py runs it)",
    "imm simulator serve ": "runs until Ctrl+C (tests/test_sim_exchange.py serves one)",
    "imm --profile sim login": "the tenant imm simulator serve --write-profile sim serves",
}


def command_paths(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group of the tree, depth first."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))


PATHS = list(command_paths())


def command_of(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        found = command.get_command(click.Context(command), name)
        assert found is not None
        command = found
    return command


def help_of(path: tuple[str, ...], width: int = 80) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=width, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def examples_of(text: str) -> list[str]:
    """The lines of each "Example(s):" block (indented under the heading; the block ends at the first line that
    is not)."""
    lines = text.splitlines()
    found: list[str] = []
    for number, line in enumerate(lines):
        match = HEADING.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        for following in lines[number + 1 :]:
            if not following.strip() or len(following) - len(following.lstrip()) <= indent:
                break
            found.append(following.strip())
    return found


def words_of(example: str) -> list[str]:
    """The arguments of the imm an example runs: shell words up to a redirection, pipe or comment."""
    words = shlex.split(example, comments=True)
    while words and re.match(r"^[A-Z_]+=", words[0]):
        words.pop(0)
    assert words and words[0] == "imm", example
    end = next((i for i, w in enumerate(words) if w in {">", ">>", "|", "<"}), len(words))
    return words[1:end]


def needs(example: str) -> str | None:
    return next((why for part, why in NEEDS.items() if part in example), None)


def parse(words: list[str]) -> None:
    """Parse ``imm WORDS`` as Click would, down to the last subcommand (runs no command): a UsageError fails."""
    ctx = cli.make_context("imm", list(words))
    while isinstance(ctx.command, click.Group):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, command, rest = ctx.command.resolve_command(ctx, rest)
        assert command is not None and name is not None
        ctx = command.make_context(name, rest, parent=ctx)


# ------------------------------------------------------------------------------------------ the help, in-process
@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_every_help_shows_examples_that_parse_and_never_wrap(path: tuple[str, ...]) -> None:
    narrow, wide = help_of(path, 80), help_of(path, 200)
    found = examples_of(narrow)
    assert found, f"`imm {' '.join(path)} --help` has no Examples: block"
    assert found == examples_of(wide), "an example is wrapped at 80 columns (put the block under \\b)"
    assert not re.search(r"^\s*Example: ", narrow, re.MULTILINE), "an example left in a paragraph wraps"
    for example in found:
        assert example.startswith("imm ") or re.match(r"^[A-Z_]+=\S+ imm ", example), example
        try:
            parse(words_of(example))
        except click.BadParameter as exc:  # a file an earlier example writes (audit anchor, then verify)
            assert isinstance(exc.param and exc.param.type, click.Path), (example, exc)
            assert "does not exist" in exc.message, (example, exc)


def test_needs_names_only_examples_that_exist() -> None:
    every = [e for p in PATHS for e in examples_of(help_of(p))]
    assert [part for part in NEEDS if not any(part in e for e in every)] == []


def test_the_query_option_help_names_no_fields() -> None:
    assert "operating_company" not in help_of(("profile", "list"))


# ---------------------------------------------------------------------------------------------- the demo site
@dataclass
class Site:
    sim: Simulator
    folder: Path
    home: Path

    def env(self, folder: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in {"NO_COLOR", "FORCE_COLOR", "IMM_RAISE_ERRORS"}}
        env.update(
            IMM_CONFIG=str((folder or self.folder) / "config.toml"),
            IMM_USER_PATH=str(self.home),
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        )
        env.pop("IMM_PROFILE", None)
        env.pop("IMM_DB", None)
        return env

    def copy(self, target: Path) -> Path:
        shutil.copytree(self.folder, target)
        write_demo_config(target, self.sim.profile_values())  # its paths: the copy's own
        return target

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "imm", *args],
            capture_output=True,
            text=True,
            env=self.env(),
            input=input,
            timeout=120,
            cwd=self.folder,
        )


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("demo-site")
    with make_simulator(root, mailboxes=200, seed=1, auto_approve_after=0.0, restore_seconds=1.0) as sim:
        folder = root / "demo"
        folder.mkdir()
        write_demo_config(folder, sim.profile_values())
        made = Site(sim, folder, root / "home")
        for command in (("login",), ("sync",)):
            result = made.run(*command)
            assert result.returncode == 0, result.stderr
        yield made


# ---------------------------------------------------------------------------------------- examples, as written
RUNNABLE = [p for p in PATHS if any(needs(e) is None for e in examples_of(help_of(p)))]


@pytest.mark.parametrize("path", RUNNABLE, ids=[" ".join(p) for p in RUNNABLE])
def test_every_example_runs_as_written_against_the_demo_tenant(
    path: tuple[str, ...], site: Site, tmp_path: Path
) -> None:
    folder = site.copy(tmp_path / "demo")
    for example in examples_of(help_of(path)):
        if needs(example):
            continue
        ran = subprocess.run(
            ["bash", "-c", example],
            capture_output=True,
            text=True,
            env=site.env(folder),
            cwd=folder,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        assert ran.returncode == 0, (example, ran.stderr[-2000:])
        assert "Traceback" not in ran.stderr, example
        assert not ANSI.search(ran.stdout + ran.stderr), (example, "an escape sequence off a terminal")
        if "--query" in example and ">" not in example:
            value = json.loads(ran.stdout)
            assert value not in (None, [], {}), (example, "the query found nothing: its fields do not exist")
            if isinstance(value, dict):
                assert None not in value.values(), (example, value)
            if isinstance(value, list):
                assert any(v is not None for v in value), (example, value)


# ------------------------------------------------------------------------------------ the shared conventions
# The commands that list records, each with arguments that list some and arguments that list none. A command with
# --limit or --company that is missing here fails test_every_listing_command_is_checked.
LISTINGS: dict[tuple[str, ...], tuple[list[str], list[str]]] = {
    ("list",): ([], ["--company", "nobody"]),
    ("search",): (["garcia"], ["zqxjzqxj"]),
    ("audit", "list"): ([], ["--identity", "nobody@example.com"]),
    ("bulk", "list"): ([], []),
    ("restore", "status"): ([], []),
    ("profile", "list"): ([], []),
    ("config", "validate"): ([], []),
    **{("report", kind): ([], ["--company", "nobody"]) for kind in ("summary", "costs", "holds", "expiry")},
    ("report", "eligibility"): ([], ["--company", "nobody"]),
}
LISTING_IDS = [" ".join(p) for p in LISTINGS]


def options_of(path: tuple[str, ...]) -> dict[str, click.Parameter]:
    return {opt: p for p in command_of(path).params for opt in getattr(p, "opts", [])}


def test_every_listing_command_is_checked() -> None:
    listing = {p for p in PATHS if {"--limit", "--company"} & set(options_of(p)) and "--output" in options_of(p)}
    assert listing - set(LISTINGS) == set()
    for path in LISTINGS:
        output = options_of(path)["--output"]
        assert isinstance(output.type, click.Choice) and "csv" in output.type.choices, path


@pytest.mark.parametrize("path", LISTINGS, ids=LISTING_IDS)
def test_usage_errors_under_json_are_the_json_error_object(path: tuple[str, ...]) -> None:
    some, _ = LISTINGS[path]
    for args in ([*path, *some, "-o", "json", "--no-such-option"], ["-o", "json", *path, *some]):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 2, args
        body = json.loads(result.stderr)
        assert body["error"]["code"] == "usage_error" and body["error"]["exit_code"] == 2, body
        assert "No such option" in body["error"]["message"]


@pytest.mark.parametrize("path", LISTINGS, ids=LISTING_IDS)
def test_a_bad_filter_value_exits_2_naming_the_allowed_values(path: tuple[str, ...]) -> None:
    some, _ = LISTINGS[path]
    vocabularies: dict[str, tuple[str, ...]] = {}
    for opt, param in options_of(path).items():
        if opt.startswith("--") and isinstance(param.type, click.Choice) and opt not in {"--output", "--format"}:
            vocabularies[opt] = tuple(str(c) for c in param.type.choices)
    if "--hold-type" in options_of(path):
        vocabularies["--hold-type"] = PRESERVING_HOLD_TYPES
    for opt, allowed in vocabularies.items():
        for output in ("table", "json"):
            result = CliRunner().invoke(cli, [*path, *some, opt, "bogus", "-o", output], catch_exceptions=False)
            assert result.exit_code == 2, (opt, result.output)
            assert all(value in result.stderr for value in allowed), (opt, result.stderr)
            if output == "json":
                assert json.loads(result.stderr)["error"]["exit_code"] == 2


@pytest.mark.parametrize("path", LISTINGS, ids=LISTING_IDS)
def test_csv_header_even_when_empty_limit_0_closed_pipe_and_no_colour(path: tuple[str, ...], site: Site) -> None:
    some, none = LISTINGS[path]
    full = site.run(*path, *some, "-o", "csv")
    assert full.returncode == 0, full.stderr
    header = full.stdout.splitlines()[0]
    assert "," in header, header
    empty = site.run(*path, *none, "-o", "csv")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.splitlines()[0] == header  # the same header, rows or none
    assert "{'" not in full.stdout and "': " not in full.stdout  # nested values are JSON, never Python reprs
    assert not ANSI.search(full.stdout + full.stderr + empty.stdout + empty.stderr)

    if "--limit" in options_of(path):  # 0 is no limit, the same everywhere
        unlimited = site.run(*path, *some, "--limit", "0", "-o", "json")
        everything = site.run(*path, *some, "--limit", "2147483647", "-o", "json")
        assert unlimited.returncode == everything.returncode == 0, unlimited.stderr + everything.stderr
        assert json.loads(unlimited.stdout) == json.loads(everything.stdout)
        if path != ("bulk", "list"):  # the demo has no bulk job
            assert len(json.loads(unlimited.stdout)) > 1
        one = site.run(*path, *some, "--limit", "1", "-o", "json")
        assert len(json.loads(one.stdout)) == (1 if path != ("bulk", "list") else 0)

    # the reader closes the pipe after one line (`| head -1`): a quiet success
    words = [*path, *some, "-o", "jsonl" if "jsonl" in options_of(path)["--output"].type.choices else "csv"]  # type: ignore[attr-defined]
    proc = subprocess.Popen(
        [sys.executable, "-m", "imm", *words],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=site.env(),
        cwd=site.folder,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert (proc.wait(timeout=60), stderr) == (0, "")

    # a person's terminal with NO_COLOR: no colour, in the table or anywhere
    code, shown = run_on_terminal(*path, *some, env={**site.env(), "NO_COLOR": "1"})
    assert code == 0, shown
    assert not COLOUR.search(shown), repr(shown[:500])


def test_nested_values_in_csv_cells_are_json(site: Site) -> None:
    import csv

    shown = site.run("show", "layla.alahmad@northwindtraders.com", "-o", "csv")
    assert shown.returncode == 0, shown.stderr
    row = next(csv.DictReader(shown.stdout.splitlines()))
    holds = json.loads(row["hold_details"])
    assert [h["kind"] for h in holds][:1] == ["litigation"] and "{'" not in shown.stdout
    assert row["hold_types"] == "litigation;org-policy;label"  # a list of words stays one cell of words


def test_limit_and_offset_past_the_end_say_so(site: Site) -> None:
    result = site.run("list", "--offset", "5000", "--limit", "5")
    assert result.returncode == 0
    assert result.stderr == "No mailboxes past --offset 5,000: 200 match.\n"


def test_json_usage_error_of_a_command_run_as_a_process(site: Site) -> None:
    result = run_imm("list", "--limit", "-1", "-o", "json", env=site.env())
    assert result.exit_code == 2
    assert json.loads(result.stderr) == {
        "error": {
            "code": "usage_error",
            "message": "Invalid value for '--limit': '-1' must be a whole number in ASCII digits from 0 to 2147483647.",
            "exit_code": 2,
            "hint": "imm list --help",
        }
    }
