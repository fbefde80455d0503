"""``imm simulator serve``: run the simulated tenant (Entra ID, Exchange Online, Security & Compliance) locally."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.group()
def simulator() -> None:
    """The simulated tenant: a local HTTPS server speaking Entra ID and Exchange Online's REST protocol.

    \b
    Example:
      imm simulator serve --mailboxes 200 --write-profile sim
    """


@simulator.command()
@click.option(
    "--mailboxes",
    type=click.IntRange(0, 1_000_000),
    default=1000,
    show_default=True,
    help="Inactive mailboxes to generate.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the generated data.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port; 0 picks a free one.")
@click.option(
    "--latency-ms", type=click.FloatRange(0), default=0.0, show_default=True, help="Added to every Exchange call."
)
@click.option(
    "--budget",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="Concurrent Exchange requests per tenant before 429.",
)
@click.option(
    "--retry-after", type=click.FloatRange(0), default=1.0, show_default=True, help="Retry-After seconds sent with 429."
)
@click.option(
    "--auto-approve",
    type=click.FloatRange(0),
    default=None,
    metavar="SECONDS",
    help="Approve device-code sign-ins after SECONDS (default: a person approves on the sign-in page).",
)
@click.option(
    "--token-lifetime",
    type=click.IntRange(1),
    default=3600,
    show_default=True,
    help="Access token lifetime in seconds.",
)
@click.option(
    "--restore-seconds",
    type=click.FloatRange(0),
    default=6.0,
    show_default=True,
    help="How long a restore request takes from Queued to Completed.",
)
@click.option(
    "--lifecycle-day-seconds",
    type=click.FloatRange(0.001),
    default=86400.0,
    show_default=True,
    metavar="SECONDS",
    help="Length of a lifecycle day: the 30-day delay hold after a release and the 183 days to the purge pass "
    "this fast (e.g. 1 for a day a second).",
)
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON file keeping the tenant's changes across restarts.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the CA, TLS and password keys (default: imm's data folder).",
)
@click.option(
    "--fault-5xx",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    metavar="RATE",
    help="Share of Exchange calls answered 503/504.",
)
@click.option(
    "--fault-reset",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    metavar="RATE",
    help="Share of Exchange calls whose connection is reset.",
)
@click.option(
    "--hostile-data",
    is_flag=True,
    help="Give some mailboxes hostile directory values (escape sequences, NUL, RTL, formulas, very long text).",
)
@click.option(
    "--write-profile", metavar="NAME", help="Write a profile NAME pointing at this tenant into the config file."
)
def serve(
    mailboxes: int,
    seed: int,
    port: int,
    latency_ms: float,
    budget: int,
    retry_after: float,
    auto_approve: float | None,
    token_lifetime: int,
    restore_seconds: float,
    lifecycle_day_seconds: float,
    state_file: Path | None,
    data_dir: Path | None,
    fault_5xx: float,
    fault_reset: float,
    hostile_data: bool,
    write_profile: str | None,
) -> None:
    """Serve a simulated tenant until Ctrl+C.

    \b
    Example:
      imm simulator serve --mailboxes 10000 --latency-ms 50 --write-profile sim
      imm --profile sim login
    """
    import signal
    import threading

    from imm.cli.context import app
    from imm.config import default_config_path, user_dir
    from imm.config import write_profile as save_profile
    from imm.errors import InputError
    from imm.simulator import FaultConfig, Simulator, SimulatorConfig

    config = SimulatorConfig(
        mailboxes=mailboxes,
        seed=seed,
        latency_ms=latency_ms,
        concurrency_budget=budget,
        retry_after_seconds=retry_after,
        token_lifetime=token_lifetime,
        auto_approve_after=auto_approve,
        restore_seconds=restore_seconds,
        lifecycle_day_seconds=lifecycle_day_seconds,
        state_file=state_file,
        data_dir=data_dir or user_dir("data") / "simulator",
        faults=FaultConfig(error_5xx_rate=fault_5xx, reset_rate=fault_reset),
        hostile_data=hostile_data,
    )
    try:
        sim = Simulator(config, port=port)
    except OSError as exc:
        raise InputError(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    except ValueError as exc:  # an unreadable state file
        raise InputError(str(exc), hint="delete the state file or pick another --state-file") from None
    values: dict[str, Any] = sim.profile_values()
    obj = app()
    config_path = Path(obj.config_path or _env_config() or default_config_path())
    if write_profile:
        save_profile(config_path, write_profile, values)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    interrupted = False
    try:
        sim.start()
        _announce(sim, values, write_profile, config_path, state_file)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        sim.stop()
        saved = f"; state saved to {state_file}" if state_file else ""
        click.echo(f"Simulator stopped{saved}.", err=True)
    if interrupted:
        raise KeyboardInterrupt


def _env_config() -> str | None:
    import os

    return os.environ.get("IMM_CONFIG") or None


def _announce(
    sim: Any, values: dict[str, Any], profile: str | None, config_path: Path, state_file: Path | None
) -> None:
    cfg = sim.config
    tenant = sim.exchange.tenant  # a state file's seed and count win over the options
    lines = [
        f"Simulated tenant running at {sim.base_url}",
        f"  tenant:      {cfg.tenant_id} ({cfg.tenant_domain})",
        f"  mailboxes:   {tenant.count:,} inactive (seed {tenant.seed})",
        f"  CA bundle:   {sim.ca_path}",
        f"  sign-in:     {sim.base_url}/devicelogin",
    ]
    if tenant.lifecycle_day_seconds != 86400.0:
        lines.append(
            f"  lifecycle:   1 day = {tenant.lifecycle_day_seconds:g} s (delay hold 30 days, purge 183 days after)"
        )
    if state_file:
        lines.append(f"  state file:  {state_file}")
    if profile:
        lines += [f"Profile '{profile}' written to {config_path}.", f"  Next: imm --profile {profile} login"]
    else:
        lines.append("Point a profile at it (or rerun with --write-profile NAME):")
        lines.append("  [profiles.sim]")
        for key, value in values.items():
            lines.append(f'  {key} = "{value}"')
    lines.append("Press Ctrl+C to stop.")
    click.echo("\n".join(lines))
