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
def demo(mailboxes: int, seed: int, report_path: Path, keep: bool, latency_ms: float) -> None:
    """Try imm against a fresh simulated tenant: sign in, sync, report.

    Starts a simulated Exchange Online tenant on this machine, signs in with the device code flow (the simulated
    tenant approves it by itself after a second), syncs its inactive mailboxes into a cache in a new folder under
    the system temp dir, prints the summary report, writes the HTML report, and tells which commands to try next.
    Nothing touches your own configuration or any real tenant.

    Example: imm demo --mailboxes 500 --report /tmp/report.html
    """
    import threading

    from imm.cli.progress import SyncProgressBar, interrupt_sets
    from imm.errors import ExitStatus
    from imm.logs import setup_logging
    from imm.services.demo import make_workdir, run_demo, write_demo_config
    from imm.simulator import Simulator, SimulatorConfig

    obj = app()
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
