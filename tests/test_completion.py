"""Shell completion through the real protocol: the ``imm`` process called back with ``_IMM_COMPLETE`` and the words
typed so far (``COMP_WORDS``/``COMP_CWORD``), as the installed scripts do; and the bash script itself, sourced
into a real bash and asked for candidates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_imm
from factories import make_mailbox
from imm.data.database import DatabaseManager

HOLD_KINDS = [
    "litigation",
    "ediscovery",
    "inplace",
    "retention-policy",
    "skype-policy",
    "org-policy",
    "label",
    "delay",
    "delay-release",
    "unknown",
]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A config with two profiles; 'alpha' (the default) caches three mailboxes, one with a UPN of its own."""
    db = tmp_path / "alpha.db"
    manager = DatabaseManager(str(db), local_path=db)
    manager.initialize()
    manager.upsert_mailboxes(
        [
            make_mailbox(alias="anna.smith"),
            make_mailbox(alias="anders.berg", user_principal_name="anders.berg@contoso.onmicrosoft.com"),
            make_mailbox(alias="bob.jones", domain="fabrikam.com"),
        ]
    )
    manager.close()
    config = tmp_path / "config.toml"
    config.write_text(
        f'default_profile = "alpha"\n[profiles.alpha]\ndb_path = "{db}"\n'
        f'[profiles.beta]\ndb_path = "{tmp_path / "beta.db"}"\n[profiles.azure-ci]\ntenant_id = "x"\n',
        encoding="utf-8",
    )
    return config


def complete(words: str, shell: str = "bash", env: dict[str, str] | None = None) -> list[str]:
    """The candidates imm gives for the last word of ``words`` (a trailing space: a new, empty word)."""
    parts = words.split()
    cword = len(parts) if words.endswith(" ") else len(parts) - 1
    full = {**os.environ, "COMP_WORDS": words, "COMP_CWORD": str(cword), "_IMM_COMPLETE": f"{shell}_complete"}
    full.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "imm"], capture_output=True, text=True, env=full, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line]  # no candidates: one empty line
    if shell == "bash":
        return [line.split(",", 1)[1] for line in lines]
    return [line.split("\t", 1)[0] for line in lines]  # pwsh: value<TAB>help


def test_hold_kinds_release_types_and_report_kinds_complete() -> None:
    assert complete("imm list --hold-type ") == HOLD_KINDS
    assert complete("imm report costs --hold-type de") == ["delay", "delay-release"]
    assert complete("imm bulk plan --hold-type li") == ["litigation"]
    assert complete("imm holds release x --type ") == [
        "litigation",
        "delay",
        "delay-release",
        "label",
        "org-policy",
        "policy",
        "ediscovery",
        "all-unlocked",
    ]
    assert complete("imm bulk plan --action release --type all") == ["all-unlocked"]
    assert complete("imm report ") == ["costs", "eligibility", "expiry", "holds", "summary"]
    assert complete("imm report e") == ["eligibility", "expiry"]
    assert complete("imm completion ") == ["bash", "zsh", "fish", "pwsh"]


def test_profiles_complete_from_the_config_on_the_command_line_or_imm_config(store: Path) -> None:
    assert complete(f"imm --config {store} --profile ") == ["alpha", "azure-ci", "beta"]
    assert complete(f"imm --config {store} list --profile a") == ["alpha", "azure-ci"]
    assert complete("imm --profile ", env={"IMM_CONFIG": str(store)}) == ["alpha", "azure-ci", "beta"]
    # a broken configuration gives no candidates and no error
    store.write_text("[profiles\n", encoding="utf-8")
    assert complete(f"imm --config {store} --profile ") == []


def test_identities_complete_from_the_profiles_store(store: Path, tmp_path: Path) -> None:
    assert complete(f"imm --config {store} show an") == [
        "anders.berg@contoso.com",
        "anders.berg@contoso.onmicrosoft.com",
        "anna.smith@contoso.com",
    ]
    assert complete(f"imm --config {store} holds release ANNA") == ["anna.smith@contoso.com"]
    assert complete(f"imm --config {store} recover b") == ["bob.jones@fabrikam.com"]
    assert complete("imm show bo", env={"IMM_CONFIG": str(store)}) == ["bob.jones@fabrikam.com"]
    assert complete(f"imm --config {store} show %") == []  # LIKE's wildcards are plain characters
    # another profile's store (a missing file: nothing, and it is not created)
    assert complete(f"imm --config {store} --profile beta show a") == []
    assert not (tmp_path / "beta.db").exists()
    # the same candidates through the PowerShell variant of the protocol
    assert complete(f"imm --config {store} show an", shell="pwsh") == [
        "anders.berg@contoso.com",
        "anders.berg@contoso.onmicrosoft.com",
        "anna.smith@contoso.com",
    ]


def test_every_shell_gets_an_installable_script() -> None:
    for shell, marker in {
        "bash": "complete -o nosort -F _imm_completion imm",
        "zsh": "compdef _imm_completion imm",
        "fish": "complete --no-files --command imm",
        "pwsh": "Register-ArgumentCompleter -Native -CommandName imm",
    }.items():
        result = run_imm("completion", shell)
        assert result.exit_code == 0, result.stderr
        assert marker in result.stdout and "_IMM_COMPLETE" in result.stdout, shell
    bad = run_imm("completion", "tcsh")
    assert bad.exit_code == 2 and "'tcsh' is not one of 'bash', 'zsh', 'fish', 'pwsh'" in bad.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_bash_script_completes_in_a_real_bash(store: Path, tmp_path: Path) -> None:
    script = tmp_path / "imm.bash"
    script.write_text(run_imm("completion", "bash").stdout, encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "imm").write_text(f'#!/bin/sh\nexec {sys.executable} -m imm "$@"\n', encoding="utf-8")
    (bin_dir / "imm").chmod(0o755)
    probe = (
        f"source {script}\n"
        f"COMP_WORDS=(imm --config {store} show an); COMP_CWORD=4\n"
        "_imm_completion imm an show\n"  # as bash calls it: the command, the word, the word before
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "anders.berg@contoso.com",
        "anders.berg@contoso.onmicrosoft.com",
        "anna.smith@contoso.com",
    ]
