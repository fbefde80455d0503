"""The cache filters shared by ``imm list`` and ``imm bulk plan``: the options, and the MailboxFilter they make."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from imm.cli.completion import complete_hold_kinds
from imm.cli.params import PERIOD

_NAMES = (
    "company",
    "department",
    "hold_type",
    "older_than",
    "min_size_mb",
    "max_size_mb",
    "recoverable",
    "releasable",
    "state",
)


def check_hold_kind(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--hold-type``: one of the hold kinds the cache records (lower case), else exit 2 naming them."""
    if value is None:
        return None
    from imm.domain.holds import PRESERVING_HOLD_TYPES

    kind = value.strip().lower()
    if kind not in PRESERVING_HOLD_TYPES:
        from imm.textsafe import shown

        raise click.BadParameter(f"{shown(value, 80)!r} is not one of: {', '.join(PRESERVING_HOLD_TYPES)}")
    return kind


def mailbox_filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the filter options; the command receives them as one ``filters`` argument (a MailboxFilter)."""

    @functools.wraps(f)
    def with_filters(*args: Any, **kwargs: Any) -> Any:
        from imm.data.database import MailboxFilter
        from imm.errors import InputError

        values = {name: kwargs.pop(name) for name in _NAMES}
        low, high = values["min_size_mb"], values["max_size_mb"]
        if low is not None and high is not None and low > high:
            raise InputError(f"--min-size-mb ({low:g}) is larger than --max-size-mb ({high:g})")
        kwargs["filters"] = MailboxFilter(
            company=values["company"],
            department=values["department"],
            hold_type=values["hold_type"],
            older_than_days=values["older_than"],
            min_size_mb=low,
            max_size_mb=high,
            recovery_eligible=values["recoverable"],
            releasable=values["releasable"],
            lifecycle_state=values["state"],
        )
        return f(*args, **kwargs)

    options = (
        click.option("--company", metavar="NAME", help="Only this operating company (ignores case)."),
        click.option("--department", metavar="NAME", help="Only this department (ignores case)."),
        click.option(
            "--hold-type",
            metavar="KIND",
            shell_complete=complete_hold_kinds,
            callback=check_hold_kind,
            help="Only mailboxes with this kind of hold: litigation, ediscovery, inplace, retention-policy, "
            "skype-policy, org-policy, label, delay, delay-release, unknown.",
        ),
        click.option(
            "--older-than",
            type=PERIOD,
            metavar="PERIOD",
            help="Only mailboxes deleted longer ago than PERIOD: days (365 or 365d), weeks (12w), months (6m: 30 "
            "days each) or years (2y: 365 days each).",
        ),
        click.option(
            "--min-size-mb",
            type=click.FloatRange(min=0),
            metavar="MB",
            help="Only mailboxes of at least MB (with archive).",
        ),
        click.option(
            "--max-size-mb",
            type=click.FloatRange(min=0),
            metavar="MB",
            help="Only mailboxes of at most MB (with archive).",
        ),
        click.option(
            "--recoverable/--not-recoverable",
            default=None,
            help="Only mailboxes that can (or cannot) be recovered as they are.",
        ),
        click.option(
            "--releasable/--not-releasable",
            default=None,
            help="Only mailboxes whose holds have all expired and that no delay hold or purge schedule holds (or not).",
        ),
        click.option(
            "--state",
            type=click.Choice(["inactive", "pending-delay", "soft-deleted"], case_sensitive=False),
            default=None,
            help="Only mailboxes in this lifecycle state: inactive (kept by holds), pending-delay (only a delay "
            "hold left), soft-deleted (no hold left: restorable until the purge date).",
        ),
    )
    command: Callable[..., Any] = with_filters
    for option in reversed(options):
        command = option(command)
    return command
