"""One parameters dataclass per action, with the one validator that the CLI options, the bulk plan reader and the
services all use: a value accepted singly is accepted in a plan, and refused with the same words everywhere.

Each spec's ``problems(...)`` lists every problem (a plan reports them all, by line); ``of(...)`` returns the
checked spec or raises :class:`imm.errors.InputError` with the first one (a single command). No I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from imm.errors import InputError
from imm.textsafe import shorten

MAX_DAYS = 36500  # a hundred years: anything longer is a typing error, not a retention period
MAX_NAME = 64  # Exchange's limit for Name
MAX_DISPLAY_NAME = 256
_UPN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _raise_first(problems: list[str]) -> None:
    if problems:
        raise InputError(problems[0])


@dataclass(frozen=True)
class RecoverSpec:
    """recover: the new account's UPN, the new mailbox's Name and (optional) DisplayName."""

    upn: str
    name: str
    display_name: str | None = None

    @staticmethod
    def problems(upn: str | None, name: str | None, display_name: str | None = None) -> list[str]:
        upn, name, display = (upn or "").strip(), (name or "").strip(), (display_name or "").strip()
        out = []
        if not _UPN.match(upn):
            out.append(f"upn '{upn}' is not a user@domain address")
        if not name:
            out.append("the new mailbox needs a name")
        elif len(name) > MAX_NAME:
            out.append(f"name is {len(name)} characters long (at most {MAX_NAME})")
        if len(display) > MAX_DISPLAY_NAME:
            out.append(f"display_name is {len(display)} characters long (at most {MAX_DISPLAY_NAME})")
        return out

    @classmethod
    def of(cls, upn: str | None, name: str | None, display_name: str | None = None) -> RecoverSpec:
        _raise_first(cls.problems(upn, name, display_name))
        return cls((upn or "").strip(), (name or "").strip(), (display_name or "").strip() or None)


@dataclass(frozen=True)
class RestoreSpec:
    """restore: the target mailbox, the source's archive or primary, the target's folder and archive."""

    target: str
    archive: bool = False
    target_folder: str | None = None
    target_archive: bool | None = None

    @staticmethod
    def problems(target: str | None) -> list[str]:
        return [] if (target or "").strip() else ["a restore needs a target mailbox"]

    @classmethod
    def of(
        cls,
        target: str | None,
        archive: bool = False,
        target_folder: str | None = None,
        target_archive: bool | None = None,
    ) -> RestoreSpec:
        _raise_first(cls.problems(target))
        return cls((target or "").strip(), bool(archive), (target_folder or "").strip() or None, target_archive)


@dataclass(frozen=True)
class ReleaseSpec:
    """release: the hold type (``imm.domain.eligibility.RELEASE_TYPES``) and whether eDiscovery is forced."""

    type: str
    force_ediscovery: bool = False

    @staticmethod
    def problems(kind: str | None) -> list[str]:
        try:
            ReleaseSpec.of(kind)
        except InputError as exc:
            return [exc.message + (f" ({exc.hint})" if exc.hint else "")]
        return []

    @classmethod
    def of(cls, kind: str | None, force_ediscovery: bool = False) -> ReleaseSpec:
        from imm.domain.eligibility import check_release_type

        return cls(check_release_type(kind), bool(force_ediscovery))


@dataclass(frozen=True)
class SetDurationSpec:
    """set-duration: the Litigation Hold duration in days, None for Unlimited."""

    days: int | None

    @staticmethod
    def problems(days: Any) -> list[str]:
        try:
            SetDurationSpec.of(days)
        except InputError as exc:
            return [exc.message]
        return []

    @classmethod
    def of(cls, days: Any) -> SetDurationSpec:
        if days is None or (isinstance(days, str) and days.strip().lower() == "unlimited"):
            return cls(None)
        from imm.numbers import NumberError, read_whole

        text = str(days).strip()
        try:
            if isinstance(days, bool):
                raise NumberError("a boolean")
            return cls(read_whole(text, 1, MAX_DAYS))  # ASCII digits only: '²' and '٣' are not days
        except NumberError:
            raise InputError(
                f"days must be a whole number from 1 to {MAX_DAYS} or 'unlimited' (it is '{shorten(text, 40)}')"
            ) from None
