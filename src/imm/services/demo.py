"""``imm demo``: everything against a fresh simulated tenant, in one command (design §7).

The CLI command starts the simulated tenant (only it imports ``imm.simulator``) and hands this module the profile
settings that point at it. Here: one folder, ``demo`` in imm's data folder (:func:`demo_folder`; a new demo
replaces the last one, ``imm demo --clean`` removes it), holds the demo's config.toml, database, token cache, log
(``log_file``: also the log of the commands run against it afterwards) and the simulator's files; nothing is left
in the system temp dir; sign-in runs the real device code flow (the simulator approves it after
about a second), the sync fills the cache, and the summary report is printed and written as HTML to a file that
outlives the demo. The offline commands (list, search, show, report, audit) keep working on that folder afterwards.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imm.config import Config, load_config, user_dir, write_profile

DEMO_PROFILE = "demo"
DEFAULT_REPORT = Path("imm-demo-report.html")


@dataclass
class DemoResult:
    """What the demo made and where it is."""

    workdir: Path
    config_path: Path
    db_path: Path
    report_path: Path
    user: str = ""
    sync: Any = None  # imm.services.sync.SyncResult
    summary: Any = None  # imm.services.reports.Report
    next_commands: list[str] = field(default_factory=list)  # against the cache: offline, after the demo too
    online_commands: list[str] = field(default_factory=list)  # against the tenant (with --keep)


DEMO_MARKER = ".imm-demo"  # the file that says a folder is a demo's (only such a folder is ever removed)


def demo_folder() -> Path:
    """Where the demo keeps everything: ``demo`` in imm's data folder (``IMM_USER_PATH``/data/demo when set)."""
    return user_dir("data") / "demo"


def make_workdir() -> Path:
    """The demo folder, emptied: the last demo's files (if any) are removed first."""
    folder = demo_folder()
    clean_workdir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEMO_MARKER).write_text("made by imm demo; imm demo --clean removes this folder\n", encoding="utf-8")
    return folder


def clean_workdir() -> Path | None:
    """Remove the demo folder; returns it, or None when there was none. A folder that is not a demo's (no
    :data:`DEMO_MARKER`, or a symbolic link) is refused rather than removed."""
    from imm.errors import InputError

    folder = demo_folder()
    if not folder.exists() and not folder.is_symlink():
        return None
    if folder.is_symlink() or not (folder / DEMO_MARKER).is_file():
        raise InputError(
            f"{folder} is not a folder imm demo made: not removed", hint="remove it yourself if you are sure"
        )
    shutil.rmtree(folder)
    return folder


def write_demo_config(workdir: Path, profile_values: dict[str, Any]) -> Path:
    """config.toml in ``workdir`` with the 'demo' profile (the default) pointing at the simulated tenant."""
    config_path = workdir / "config.toml"
    values = {
        **profile_values,
        "db_path": workdir / "imm.db",
        "token_cache_path": workdir / "tokens" / "token_cache.json",
        "log_file": workdir / "imm.log",
        # The simulated tenant, like many real ones, keeps Company/Department of some deleted users only in
        # custom attributes: show the profile setting that finds them.
        "org": {"company_attribute": "CustomAttribute5", "department_attribute": "CustomAttribute6"},
    }
    write_profile(config_path, DEMO_PROFILE, values, make_default=True)
    return config_path


def imm_command() -> str:
    """How to run imm from here: ``imm`` when it is on PATH as this interpreter's script, else ``python -m imm``."""
    import shutil

    script = Path(sys.executable).with_name("imm")
    found = shutil.which("imm")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "imm"
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m imm"


def _base(config_path: Path) -> str:
    return f"{imm_command()} --config {shlex.quote(str(config_path))}"


def next_commands(config_path: Path, company: str | None, mailbox: str | None) -> list[str]:
    """The commands to try against the demo's cache (offline, also after the demo ended); each runs as printed
    (tests/test_demo.py runs every one)."""
    base = _base(config_path)
    commands = [
        f"{base} list --company {shlex.quote(company)}" if company else f"{base} list",
        f"{base} search smith",
        f"{base} report costs --by company",
        f"{base} report expiry",
        f"{base} list --releasable --output csv",
        f"{base} audit list",
    ]
    if mailbox:
        commands.insert(1, f"{base} show {shlex.quote(mailbox)}")
    return commands


def online_commands(
    config_path: Path, mailbox: str | None, recoverable: str | None, upn_domain: str | None = None
) -> list[str]:
    """The commands to try against the running tenant (``imm demo --keep``): reads, and changes as previews
    (--what-if: nothing is changed); each runs as printed."""
    base = _base(config_path)
    commands = [f"{base} whoami"]
    if mailbox:
        commands.append(f"{base} holds show {shlex.quote(mailbox)} --refresh")
        commands.append(f"{base} holds release {shlex.quote(mailbox)} --type all-unlocked --what-if")
    if recoverable:
        local, _, domain = recoverable.partition("@")
        upn = f"{local}.recovered@{upn_domain or domain}"
        commands.append(f"{base} recover {shlex.quote(recoverable)} --upn {shlex.quote(upn)} --what-if")
    commands.append(f"{base} sync")
    return commands


def run_demo(
    config_path: Path,
    *,
    report_path: Path,
    prompt: Callable[[str], None] | None = None,
    progress: Callable[[Any], None] | None = None,
    cancel: threading.Event | None = None,
    keep: bool = False,
    now: datetime | None = None,
) -> DemoResult:
    """Sign in (device code), sync, build the summary report and write the HTML report."""
    from imm.auth import Authenticator
    from imm.data.database import DatabaseManager
    from imm.services.sync import SyncService
    from imm.session import SessionManager

    config = load_config(config_path, DEMO_PROFILE, env={})
    profile = config.profile
    db = DatabaseManager(profile.store_target, local_path=profile.database_path)
    db.initialize()
    try:
        authenticator = Authenticator.from_profile(profile, prompt=prompt)
        result = DemoResult(config_path.parent, config_path, profile.database_path, report_path)
        with SessionManager(config, db, authenticator) as session:
            result.user = session.user or ""
            audit = session.audit
            service = SyncService(db, session.connection, profile, audit, now=now)
            result.sync = service.run(full=True, progress=progress, cancel=cancel)
        mailboxes = db.get_all_mailboxes()
        result.summary = write_reports(config, mailboxes, report_path, now or datetime.now(UTC), audit)
        company = _busiest_company(mailboxes)
        sample = _sample_mailbox(mailboxes)
        result.next_commands = next_commands(config_path, company, sample)
        if keep:
            result.online_commands = online_commands(
                config_path, sample, _recoverable_mailbox(mailboxes), _managed_domain(mailboxes)
            )
        return result
    finally:
        db.close()


def write_reports(config: Config, mailboxes: list[Any], report_path: Path, now: datetime, audit: Any) -> Any:
    """The summary report (returned, for the terminal) and the HTML report with charts (written)."""
    from imm.services import reports

    cost_model = config.profile.cost
    summary = reports.build_report("summary", mailboxes, cost_model=cost_model, now=now)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    reports.write_html(summary, report_path, mailboxes=mailboxes, cost_model=cost_model, now=now)
    audit.log_operation(
        "REPORT", None, {"kind": "summary", "format": "html", "out": str(report_path), "source": "demo"}, "success"
    )
    return summary


def _busiest_company(mailboxes: list[Any]) -> str | None:
    counts: dict[str, int] = {}
    for mailbox in mailboxes:
        if mailbox.operating_company:
            counts[mailbox.operating_company] = counts.get(mailbox.operating_company, 0) + 1
    return max(sorted(counts), key=lambda c: counts[c]) if counts else None


def _managed_domain(mailboxes: list[Any]) -> str | None:
    """The tenant's onmicrosoft.com domain, as the cached UPNs show it: a new user's UPN there is always managed
    (a federated domain's is refused by New-Mailbox: the recover preflight's federated-upn blocker)."""
    for mailbox in mailboxes:
        domain = (mailbox.user_principal_name or "").rpartition("@")[2].lower()
        if domain.endswith(".onmicrosoft.com") and domain.isascii():
            return str(domain)
    return None


def _recoverable_mailbox(mailboxes: list[Any]) -> str | None:
    """The first (by address) mailbox the cache says can be recovered as it is, with a plain ASCII address."""
    for mailbox in sorted(mailboxes, key=lambda m: m.primary_smtp or ""):
        smtp = mailbox.primary_smtp or ""
        if mailbox.recovery_eligible and smtp.isascii() and "'" not in smtp and "@" in smtp:
            return str(smtp)
    return None


def _sample_mailbox(mailboxes: list[Any]) -> str | None:
    """An address worth showing: a mailbox with several holds and a plain ASCII address."""
    best = None
    for mailbox in sorted(mailboxes, key=lambda m: (-len(m.hold_types), m.primary_smtp)):
        if mailbox.primary_smtp and mailbox.primary_smtp.isascii() and "'" not in mailbox.primary_smtp:
            best = mailbox.primary_smtp
            break
    return best
