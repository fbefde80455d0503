"""``imm completion bash|zsh|fish|pwsh``: an installable completion script, and the dynamic candidates.

bash, zsh and fish use Click's shell completion (https://click.palletsprojects.com/en/stable/shell-completion/):
the script calls ``imm`` back with ``_IMM_COMPLETE={shell}_complete`` and the words typed so far
(``COMP_WORDS``/``COMP_CWORD``). PowerShell has no Click support, so :class:`PowerShellComplete` adds ``pwsh`` to
the same protocol: a ``Register-ArgumentCompleter -Native`` script block (Microsoft Learn:
https://learn.microsoft.com/powershell/module/microsoft.powershell.core/register-argumentcompleter) sets the same
variables and turns each line imm prints (value, tab, help) into a ``CompletionResult``.

Beyond commands, options and Click's choices, these complete: hold kinds (``--hold-type``; ``--type`` of a
release), report kinds (``imm report KIND``), profiles (``--profile``, from the configuration file the command
line or ``IMM_CONFIG`` names) and cached identities (the UPNs and addresses in the profile's SQLite store, read
only and at most :data:`MAX_IDENTITIES` of them). A completion never fails: a broken configuration or store gives
no candidates. This module imports only Click at the top (``imm --help`` stays light).
"""

from __future__ import annotations

import os
from typing import Any

import click
from click.shell_completion import CompletionItem, ShellComplete, add_completion_class, split_arg_string

SHELLS = ("bash", "zsh", "fish", "pwsh")
COMPLETE_VAR = "_IMM_COMPLETE"
MAX_IDENTITIES = 50  # candidates read from the store for one completion (a bounded query)

_SOURCE_PWSH = """\
# imm completion for PowerShell: add this line to your profile ($PROFILE):
#   imm completion pwsh | Out-String | Invoke-Expression
Register-ArgumentCompleter -Native -CommandName %(prog_name)s -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)
    $line = $commandAst.Extent.Text
    $upto = $cursorPosition - $commandAst.Extent.StartOffset
    if ($upto -lt $line.Length) { $line = $line.Substring(0, $upto) }
    $words = @($commandAst.CommandElements | Where-Object { $_.Extent.EndOffset -le $cursorPosition })
    $cword = $words.Count
    if ($wordToComplete -ne '') { $cword = $words.Count - 1 }
    $env:COMP_WORDS = $line
    $env:COMP_CWORD = "$cword"
    $env:%(complete_var)s = 'pwsh_complete'
    try {
        & %(prog_name)s | Where-Object { $_ } | ForEach-Object {
            $value, $help = $_ -split "`t", 2
            if (-not $help) { $help = $value }
            [System.Management.Automation.CompletionResult]::new($value, $value, 'ParameterValue', $help)
        }
    } finally {
        Remove-Item Env:\\COMP_WORDS, Env:\\COMP_CWORD, Env:\\%(complete_var)s -ErrorAction SilentlyContinue
    }
}
"""


class PowerShellComplete(ShellComplete):
    """PowerShell over Click's protocol: the words in ``COMP_WORDS``, the index of the word being completed in
    ``COMP_CWORD`` (as bash), one ``value<TAB>help`` line per candidate."""

    name = "pwsh"
    source_template = _SOURCE_PWSH

    def get_completion_args(self) -> tuple[list[str], str]:
        words = split_arg_string(os.environ.get("COMP_WORDS", ""))
        cword = int(os.environ.get("COMP_CWORD") or len(words))
        args = words[1:cword]
        incomplete = words[cword] if cword < len(words) else ""
        return args, incomplete

    def format_completion(self, item: CompletionItem) -> str:
        help_text = " ".join((item.help or "").split())
        return f"{item.value}\t{help_text}" if help_text else item.value


add_completion_class(PowerShellComplete)


def script(shell: str, cli: click.Command) -> str:
    """The completion script of ``shell`` for ``imm``."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # not reached: the argument is a Choice of SHELLS
        raise click.BadParameter(f"unknown shell {shell}")
    return cls(cli, {}, "imm", COMPLETE_VAR).source()


# ------------------------------------------------------------------------------------------------ the candidates
def _matching(values: Any, incomplete: str) -> list[CompletionItem]:
    low = incomplete.lower()
    return [CompletionItem(v) for v in values if str(v).lower().startswith(low)]


def complete_hold_kinds(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The hold kinds of ``--hold-type`` (the short names the cache stores; imm.domain.holds)."""
    from imm.domain.holds import PRESERVING_HOLD_TYPES

    return _matching(PRESERVING_HOLD_TYPES, incomplete)


def complete_release_types(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The ``--type`` of ``holds release`` and ``bulk plan --action release``."""
    from imm.domain.eligibility import RELEASE_TYPES

    return _matching(RELEASE_TYPES, incomplete)


def _app_options(ctx: click.Context) -> tuple[Any, Any, Any]:
    """(config path, profile name, db override) the command line gave so far."""
    from imm.cli.context import AppContext

    obj = ctx.find_object(AppContext)
    if obj is None:
        return None, None, None
    return obj.config_path, obj.profile_name, obj.overrides.get("db_path")


def complete_profiles(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The profiles of the configuration file (``--config``, ``IMM_CONFIG`` or the default file)."""
    try:
        from pathlib import Path

        from imm.config import default_config_path, profile_names

        config_path, _, _ = _app_options(ctx)
        path = Path(config_path or os.environ.get("IMM_CONFIG") or default_config_path())
        return _matching(profile_names(path), incomplete)
    except Exception:  # a completion never fails: no candidates instead
        return []


def complete_identities(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """UPNs (and primary addresses) of the cached mailboxes that start with what was typed: the profile's SQLite
    store, opened read only, at most :data:`MAX_IDENTITIES`; nothing for a team store or a missing file."""
    try:
        from imm.config import load_config
        from imm.data.database import cached_identities

        config_path, profile_name, db_path = _app_options(ctx)
        overrides = {"db_path": db_path} if db_path else None
        profile = load_config(config_path, profile_name, overrides=overrides).profile
        if profile.store_target != str(profile.database_path):
            return []
        return _matching(cached_identities(profile.database_path, incomplete, MAX_IDENTITIES), incomplete)
    except Exception:  # a completion never fails: no candidates instead
        return []


# -------------------------------------------------------------------------------------------------- the command
@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh, fish or PowerShell (pwsh).

    Completes commands, options, hold kinds, report kinds, profiles (from the configuration file) and the
    identities of cached mailboxes (UPNs from the profile's store). Install it once:

    \b
      bash:  echo 'eval "$(imm completion bash)"' >> ~/.bashrc
      zsh:   echo 'eval "$(imm completion zsh)"' >> ~/.zshrc
      fish:  imm completion fish > ~/.config/fish/completions/imm.fish
      pwsh:  Add-Content $PROFILE 'imm completion pwsh | Out-String | Invoke-Expression'

    \b
    Examples:
      imm completion bash
      imm completion pwsh
    """
    from imm.cli.main import cli

    click.echo(script(shell, cli), nl=False)
