"""Record building of a sync: what :mod:`imm.services.sync_fetch` read becomes analysed
:class:`~imm.data.models.InactiveMailbox` values (:func:`imm.domain.records.mailbox_from_records`, then
:func:`imm.domain.analyse.analyse` with the org holds, policies, cost model and day of the run).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from imm.domain.compliance import policies_from_records, policy_from_row
from imm.errors import InputError
from imm.services.sync_fetch import ComplianceRead, Fetched, lookup_recipient

if TYPE_CHECKING:
    from imm.config import Profile
    from imm.data.models import InactiveMailbox
    from imm.domain.holds import PolicyInfo


def load_mapping(profile: Profile) -> dict[str, tuple[str, str]] | None:
    """The profile's HR mapping CSV (Company/Department by address or ExchangeGuid), if it names one."""
    path = profile.org.mapping_file
    if path is None:
        return None
    from imm.domain.records import load_org_mapping_csv

    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read the org mapping file {path}: {exc.strerror or exc}") from None
    return load_org_mapping_csv(text)


def policies_from_read(read: ComplianceRead, cached_rows: list[dict[str, Any]]) -> dict[str, PolicyInfo]:
    """The policies a run analyses with: what the compliance endpoint gave, and for each refused read what an
    earlier run cached (:func:`imm.domain.compliance.policies_from_records` marks what is unknown)."""
    known = {row["guid"]: policy_from_row(row) for row in cached_rows} if not read.complete else {}
    return policies_from_records(read.policies, read.rules, read.case_holds, read.app_policies, read.app_rules, known)


class RecordBuilder:
    """Everything the analysis needs besides the mailbox: org holds, policies, the profile, the run's time."""

    def __init__(
        self,
        org_holds: list[str],
        policies: dict[str, PolicyInfo],
        profile: Profile,
        now: datetime,
        mapping: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        from imm.domain.analyse import analyse

        self._analyse = analyse
        self.org_holds = org_holds
        self.policies = policies
        self.profile = profile
        self.cost_model = profile.cost
        self.now = now
        self.mapping = mapping

    def analysis_key(self) -> str:
        """Changes when anything analysis reads besides the mailbox itself changes (then the cache is re-analysed)."""
        cost = self.cost_model
        material = {
            "org_holds": sorted(self.org_holds),
            "policies": sorted(repr(p) for p in self.policies.values()),
            "cost": [cost.currency, cost.per_gb_month, sorted(cost.license_month.items())],
            "day": self.now.date().isoformat(),
            "tenant": self.profile.tenant_id,
            "leaver_retention_days": self.profile.leaver_retention_days,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()

    def analyse(self, mailbox: InactiveMailbox) -> InactiveMailbox:
        return self._analyse(
            mailbox,
            org_holds=self.org_holds,
            policies=self.policies,
            cost_model=self.cost_model,
            now=self.now,
            leaver_retention_days=self.profile.leaver_retention_days,
        )

    def build(
        self,
        fetched: Fetched,
        recipients: dict[str, dict[str, Any]] | None,
        active: dict[str, list[dict[str, Any]]] | None = None,
    ) -> InactiveMailbox:
        """The analysed mailbox of one fetch; ``recipients`` is the listing's index when recipients were not read
        per mailbox, ``active`` the active recipients by address (the conflicts at sync) likewise."""
        from imm.domain.records import address_conflicts, mailbox_from_records

        recipient = fetched.recipient
        if recipient is None and recipients is not None:
            recipient = lookup_recipient(recipients, fetched.record)
        mailbox = mailbox_from_records(
            fetched.record,
            fetched.stats,
            fetched.archive,
            recipient,
            self.profile.org,
            self.mapping,
            self.profile.tenant_id,
            self.now,
            fetched.hold_tracking,
        )
        conflicts = fetched.conflicts
        if conflicts is None and active is not None:
            conflicts = address_conflicts(fetched.record, lambda address: active.get(address, []))
        if conflicts is not None:
            mailbox.smtp_conflict, mailbox.upn_conflict = conflicts
        return self.analyse(mailbox)

    def reanalysed(
        self, mailboxes: Iterator[InactiveMailbox] | list[InactiveMailbox], skip: set[str]
    ) -> Iterator[InactiveMailbox]:
        """Cached mailboxes (except those in ``skip``) analysed again (org holds, policies or the day changed)."""
        for mailbox in mailboxes:
            if mailbox.identity.lower() not in skip:
                yield self.analyse(mailbox)
