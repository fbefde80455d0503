"""Realistic test records. Other engineers' tests use these: keep the defaults stable.

``make_mailbox(**overrides)`` gives one analysed inactive mailbox as a sync would cache it (a Contoso sales
mailbox on an unlimited Litigation Hold plus an org-wide retention policy). Every field can be overridden;
``identity`` defaults to a fresh GUID-shaped value, and the addresses follow ``alias`` unless given.
``make_mailboxes(n, seed=...)`` gives ``n`` varied, deterministic ones (companies, departments, sizes, ages,
hold kinds, archives, names in several scripts).
"""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from imm.data.models import InactiveMailbox

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)  # "today" of the project's tests
TENANT = "contoso.onmicrosoft.com"
ORG_POLICY_GUID = "8f3b2c1d4e5f60718293a4b5c6d7e8f9"

_counter = itertools.count(1)


def _guid(n: int, namespace: str = "imm-test") -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{n}"))


def make_mailbox(**overrides: Any) -> InactiveMailbox:
    """One realistic inactive mailbox; keyword arguments override any field."""
    n = next(_counter)
    alias = str(overrides.pop("alias", f"user{n:05d}"))
    identity = overrides.pop("identity", _guid(n))
    domain = overrides.pop("domain", "contoso.com")
    smtp = overrides.get("primary_smtp", f"{alias}@{domain}")
    deleted = overrides.get("when_soft_deleted", NOW - timedelta(days=400))
    values: dict[str, Any] = {
        "identity": identity,
        "display_name": f"User {n:05d}",
        "primary_smtp": smtp,
        "when_soft_deleted": deleted,
        "age_days": (NOW - deleted).days if deleted else None,
        "size_mb": 2048.5,
        "item_count": 15230,
        "license_type": "Exchange Online Plan 2",
        "monthly_cost": 7.04,
        "hold_types": ["litigation", "org-policy"],
        "recovery_eligible": True,
        "recovery_blockers": [],
        "operating_company": "Contoso",
        "department": "Sales",
        "last_updated": NOW,
        "name": alias,
        "distinguished_name": f"CN={alias},OU=Soft Deleted Objects,OU=contoso.onmicrosoft.com,"
        "OU=Microsoft Exchange Hosted Organizations,DC=EURPR02A001,DC=PROD,DC=OUTLOOK,DC=COM",
        "legacy_exchange_dn": "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients"
        f"/cn={alias}",
        "user_principal_name": smtp,
        "external_directory_object_id": "",
        "email_addresses": [f"SMTP:{smtp}", f"smtp:{alias}@contoso.onmicrosoft.com"],
        "archive_status": "None",
        "archive_guid": "00000000-0000-0000-0000-000000000000",
        "archive_size_mb": 0.0,
        "archive_item_count": 0,
        "auto_expanding_archive": False,
        "mailbox_locations": ["Primary"],
        "litigation_hold_enabled": True,
        "litigation_hold_date": deleted - timedelta(days=30) if deleted else None,
        "litigation_hold_duration": "Unlimited",
        "in_place_holds": [],
        "compliance_tag_hold": False,
        "delay_hold": False,
        "delay_release_hold": False,
        "retention_hold_enabled": False,
        "when_changed": deleted,
        "inactive_mailbox_retire_time": None,
        "mailbox_plan": "ExchangeOnlineEnterprise",
        "custom_attributes": {},
        "tenant": TENANT,
        "restore_eligible": True,
        "restore_blockers": [],
        "holds_expire_on": None,
        "expiry_reason": "Litigation Hold is unlimited",
        "releasable": False,
        "hold_details": [
            {
                "kind": "litigation",
                "raw": "LitigationHold",
                "preserves": True,
                "duration_days": None,
                "description": "Litigation Hold, unlimited",
            },
            {
                "kind": "org-policy",
                "raw": f"mbx{ORG_POLICY_GUID}:2",
                "preserves": True,
                "policy_guid": ORG_POLICY_GUID,
                "policy_name": "Org-wide mailbox retention",
                "description": "Org-wide retention policy 'Org-wide mailbox retention' (retain)",
            },
        ],
    }
    values.update(overrides)
    return InactiveMailbox(**values)


COMPANIES = ["Contoso", "Fabrikam", "Northwind Traders", "Tailspin Toys", "Woodgrove Bank"]
DEPARTMENTS = ["Sales", "Finance", "Legal", "Engineering", "HR", "Marketing", "Support", None]
FIRST = ["Anna", "Björn", "Chloé", "Dmitri", "Émile", "Fatima", "Grace", "Hiroshi", "Ingrid", "José",
         "Kwame", "Léa", "Mohammed", "Nadia", "Oluwaseun", "Priya", "Quentin", "Rui", "Siobhán", "Tomás",
         "Владимир", "Αλέξανδρος", "王伟", "佐藤", "김민준", "محمد", "דוד", "Zoë"]  # fmt: skip
LAST = ["Andersson", "Brown", "Chen", "Dubois", "Esposito", "Fischer", "García", "Hansen", "Ivanova", "Jones",
        "Kowalski", "López", "Müller", "Nguyen", "O'Brien", "Patel", "Quinn", "Rossi", "Smith", "Tanaka",
        "Иванов", "Παπαδόπουλος", "李", "山田", "박", "الحسن", "כהן", "Zhang"]  # fmt: skip
HOLD_SETS = [
    ["litigation"],
    ["litigation", "org-policy"],
    ["retention-policy"],
    ["ediscovery"],
    ["inplace"],
    ["org-policy"],
    ["label"],
    ["delay"],
    ["litigation", "ediscovery", "retention-policy"],
    ["delay-release"],
]


def make_mailboxes(count: int, seed: int = 1, *, now: datetime = NOW, tenant: str = TENANT) -> list[InactiveMailbox]:
    """``count`` varied mailboxes, the same for the same seed (identities depend on the seed and position)."""
    rng = random.Random(seed)
    out: list[InactiveMailbox] = []
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        alias = f"u{seed}x{i:07d}"
        company = rng.choice(COMPANIES)
        domain = company.split()[0].lower() + ".com"
        deleted = now - timedelta(days=rng.randint(1, 3650), seconds=rng.randint(0, 86399))
        size = round(rng.lognormvariate(7.0, 1.2), 2)
        archive = rng.random() < 0.3
        auto_expanding = archive and rng.random() < 0.1
        holds = list(rng.choice(HOLD_SETS))
        litigation = "litigation" in holds
        duration = rng.choice(["Unlimited", "365.00:00:00", "2555.00:00:00"]) if litigation else None
        expires = deleted + timedelta(days=365) if duration == "365.00:00:00" else None
        releasable = expires is not None and expires <= now and holds == ["litigation"]
        blockers = ["auto-expanding-archive: the mailbox has an auto-expanding archive"] if auto_expanding else []
        out.append(
            make_mailbox(
                identity=_guid(i, f"seed-{seed}"),
                alias=alias,
                domain=domain,
                display_name=f"{first} {last}",
                when_soft_deleted=deleted,
                age_days=(now - deleted).days,
                size_mb=size,
                item_count=int(size * 7),
                archive_status="Active" if archive else "None",
                archive_guid=_guid(i, f"archive-{seed}") if archive else "00000000-0000-0000-0000-000000000000",
                archive_size_mb=round(rng.lognormvariate(7.5, 1.0), 2) if archive else 0.0,
                auto_expanding_archive=auto_expanding,
                mailbox_locations=["Primary", "MainArchive", "AuxArchive"]
                if auto_expanding
                else (["Primary", "MainArchive"] if archive else ["Primary"]),
                operating_company=company,
                department=rng.choice(DEPARTMENTS),
                hold_types=holds,
                hold_details=[{"kind": h, "preserves": True, "description": f"{h} hold"} for h in holds],
                litigation_hold_enabled=litigation,
                litigation_hold_duration=duration,
                litigation_hold_date=deleted - timedelta(days=10) if litigation else None,
                recovery_eligible=not auto_expanding,
                recovery_blockers=blockers,
                restore_eligible=not auto_expanding,
                restore_blockers=list(blockers),
                holds_expire_on=expires,
                releasable=releasable,
                expiry_reason="" if expires else "a hold without an end date",
                monthly_cost=round(7.0 + size / 1024 * 0.02, 2),
                tenant=tenant,
                last_updated=now,
                when_changed=deleted,
            )
        )
    return out
