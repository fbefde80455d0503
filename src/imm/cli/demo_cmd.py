"""``imm demo``: a simulated tenant, sign-in, sync and reports in one command."""

from __future__ import annotations

from pathlib import Path

import click

from imm.cli.context import app


@click.command()
@click.option(
    "--mailboxes",
    type=click.IntRange(10, 200_000),
    default=2000,
    show_default=True,
    help="Inactive mailboxes in the simulated tenant.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the simulated tenant's data.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="imm-demo-report.html",
    show_default=True,
    help="Where to write the HTML report (kept after the demo).",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Keep the simulated tenant running until Ctrl+C, to try recover, restore and holds release against it.",
)
@click.option("--latency-ms", type=click.FloatRange(0, 5000), default=0.0, help="Simulated latency per call.")
@click.option("--clean", is_flag=True, help="Remove the demo folder (profile, cache, audit log, logs) and exit.")
def demo(mailboxes: int, seed: int, report_path: Path, keep: bool, latency_ms: float, clean: bool) -> None:
    """Try imm against a fresh simulated tenant: sign in, sync, report.

    Starts a simulated Exchange Online tenant on this machine, signs in with the device code flow (the simulated
    tenant approves it by itself after a second), syncs its inactive mailboxes into a cache, prints the summary
    report, writes the HTML report, and prints commands to try next (each runs as printed). Nothing touches your
    own configuration or any real tenant.

    Everything but the HTML report is kept in one folder, "demo" in imm's data folder (printed at the start;
    e.g. ~/.local/share/imm/demo on Linux): its profile (config.toml), cache and audit log (imm.db), tokens, log
    (imm.log) and the simulated tenant's files. A new demo replaces it; imm demo --clean removes it.

    \b
    Examples:
      imm demo --mailboxes 500 --report demo-report.html
      imm demo --clean
    """
    import shlex
    import threading

    from imm.cli.progress import SyncProgressBar, interrupt_sets
    from imm.errors import ExitStatus
    from imm.logs import setup_logging
    from imm.services.demo import imm_command, make_workdir, run_demo, write_demo_config
    from imm.simulator import Simulator, SimulatorConfig

    obj = app()
    if clean:
        from imm.services.demo import clean_workdir, demo_folder

        removed = clean_workdir()
        click.echo(f"Removed the demo folder {removed}" if removed else f"No demo folder at {demo_folder()}")
        return
    workdir = make_workdir()
    setup_logging(workdir / "imm.log", obj.verbose, obj.quiet)
    say = _Say(obj.quiet)
    say(f"Demo folder: {workdir}")
    say(f"Starting a simulated tenant with {mailboxes:,} inactive mailboxes…")
    simulator = Simulator(
        SimulatorConfig(
            mailboxes=mailboxes,
            seed=seed,
            latency_ms=latency_ms,
            auto_approve_after=1.0,
            data_dir=workdir / "simulator",
        )
    )
    simulator.start()
    try:
        say(f"Simulated tenant at {simulator.base_url} (its CA: {simulator.ca_path})")
        config_path = write_demo_config(workdir, simulator.profile_values())
        say("Signing in with the device code flow (the simulated tenant approves it after about a second):")
        cancel = threading.Event()
        with SyncProgressBar(enabled=not obj.quiet) as bar, interrupt_sets(cancel, bar.note):
            result = run_demo(
                config_path,
                report_path=report_path.resolve(),
                prompt=lambda message: click.echo(message, err=True),
                progress=bar.update,
                cancel=cancel,
                keep=keep,
            )
        sync = result.sync
        click.echo(sync.summary(), err=True)
        if sync.cancelled:
            click.echo(f"The cache so far is in {workdir}", err=True)
            click.get_current_context().exit(int(ExitStatus.INTERRUPTED))
        _print_summary(result.summary)
        click.echo("")
        click.echo(f"HTML report with charts: {result.report_path}")
        click.echo(f"Demo profile, cache and audit log: {workdir}")
        click.echo("Try next (these work offline, after the demo ends):")
        for command in result.next_commands:
            click.echo(f"  {command}")
        if result.online_commands:
            click.echo("Against the simulated tenant while it runs (changes as previews, --what-if):")
            for command in result.online_commands:
                click.echo(f"  {command}")
        variable = f"IMM_CONFIG={shlex.quote(str(config_path))}"
        click.echo(f"Every --help example runs against the demo with: export {variable}")
        click.echo(f"Remove the demo folder when done: {imm_command()} demo --clean")
        if keep:
            _serve_until_interrupted(simulator, say)
    finally:
        simulator.stop()


class _Say:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)


def _print_summary(report: object) -> None:
    """The summary report as the ``imm report summary`` command prints it."""
    from imm.cli.report_cmds import print_report

    print_report(report, None, None)  # type: ignore[arg-type]


def _serve_until_interrupted(simulator: object, say: _Say) -> None:
    import time

    say(f"The simulated tenant keeps running at {getattr(simulator, 'base_url', '')}; press Ctrl+C to stop it.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("Stopped the simulated tenant.")
