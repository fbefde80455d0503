"""Deterministic tenant data: the same ``(seed, count, now)`` gives the same mailboxes, holds and policies.

What it makes (``count`` inactive mailboxes, 10 to 1,000,000; one shared RNG so 100K take about a second):
- five operating companies (Woodgrove Bank's domain is federated), ten departments, offices per company;
- names in many scripts (Latin with diacritics, Cyrillic, Greek, CJK, Korean, Arabic, Hebrew, Devanagari) and
  names that look like spreadsheet formulas or SQL, placed at fixed low indexes so every tenant of 60+ has them;
- sizes from a few MB to ~99 GB (log-normal), deletion ages from days to ten years, mailbox plans and quotas;
- every hold kind of domain.md §2: Litigation Hold (365/730/2555 days, Unlimited), ``UniH`` case holds,
  legacy 32-hex and ``cld`` In-Place holds, ``mbx``/``skp`` policies with ``:1``/``:2``/``:3``, org-wide
  exclusions ``-mbx``, label holds, delay and delay-release holds, RetentionHold, ElcProcessingDisabled;
- org-wide policies in OrganizationConfig (an unlocked "All mailboxes" retain-then-delete policy, a Teams
  ``grp`` policy, a delete-only policy), a Preservation-Locked explicit policy;
- archives, auto-expanding archives (AuxArchive locations), AuxPrimary shards, ExternalDirectoryObjectId for
  mailboxes deleted under 30 days ago, a share of "expired" mailboxes (deleted long ago, excluded from org
  holds, only a short Litigation Hold), a few plain soft-deleted ones;
- some dozens of active mailboxes (restore targets), one sharing its SMTP address and UPN with an inactive one,
  one nearly at its quota.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from imm.simulator.model import ACTIVE, GB, INACTIVE, SOFT_DELETED, Mailbox, Policy, derived_guid

GENERATOR_VERSION = 1
DAY = 86400.0
MB = 1024**2


@dataclass(frozen=True)
class Company:
    name: str
    domain: str
    offices: tuple[str, ...]


COMPANIES = (
    Company("Contoso", "contoso.com", ("Seattle", "London", "Amsterdam")),
    Company("Fabrikam", "fabrikam.com", ("München", "Paris", "Madrid")),
    Company("Northwind Traders", "northwindtraders.com", ("Oslo", "Stockholm", "København")),
    Company("Tailspin Toys", "tailspintoys.com", ("Tokyo", "Seoul", "Singapore")),
    Company("Woodgrove Bank", "woodgrovebank.com", ("Zürich", "Dubai", "Athens")),
)
COMPANY_WEIGHTS = (0.34, 0.22, 0.18, 0.14, 0.12)
FEDERATED_DOMAINS = ("woodgrovebank.com",)
DEPARTMENTS = (
    "Finance",
    "Sales",
    "Marketing",
    "Legal",
    "Human Resources",
    "IT",
    "Operations",
    "Research & Development",
    "Customer Service",
    "Procurement",
)
TITLES = ("Analyst", "Manager", "Engineer", "Consultant", "Assistant", "Director", "Specialist", "Clerk")

# (first, ascii), (last, ascii), and how a display name is written, per script.
_NAMES: dict[str, tuple[list[tuple[str, str]], list[tuple[str, str]], str]] = {
    "latin": (
        [
            ("Anna", "anna"),
            ("José", "jose"),
            ("Zoë", "zoe"),
            ("Łukasz", "lukasz"),
            ("Søren", "soren"),
            ("François", "francois"),
            ("Ægir", "aegir"),
            ("Renée", "renee"),
            ("Jürgen", "jurgen"),
            ("Inés", "ines"),
            ("Björn", "bjorn"),
            ("Çağla", "cagla"),
            ("Tomáš", "tomas"),
            ("Siobhán", "siobhan"),
            ("Mary", "mary"),
            ("John", "john"),
            ("Emma", "emma"),
            ("Liam", "liam"),
            ("Olivia", "olivia"),
            ("Noah", "noah"),
            ("Sophie", "sophie"),
            ("Lucas", "lucas"),
            ("Mia", "mia"),
            ("David", "david"),
        ],
        [
            ("Müller", "muller"),
            ("Núñez", "nunez"),
            ("Dvořák", "dvorak"),
            ("Gonçalves", "goncalves"),
            ("Öztürk", "ozturk"),
            ("Ólafsdóttir", "olafsdottir"),
            ("Nguyễn", "nguyen"),
            ("Kowalczyk", "kowalczyk"),
            ("Ångström", "angstrom"),
            ("O'Brien", "obrien"),
            ("Smith", "smith"),
            ("Johnson", "johnson"),
            ("de la Cruz", "delacruz"),
            ("van den Berg", "vandenberg"),
            ("Rossi", "rossi"),
            ("Brown", "brown"),
            ("Martin", "martin"),
            ("Garcia", "garcia"),
            ("Schneider", "schneider"),
            ("Dubois", "dubois"),
        ],
        "{first} {last}",
    ),
    "cyrillic": (
        [("Дмитрий", "dmitriy"), ("Ольга", "olga"), ("Сергей", "sergey"), ("Наталья", "natalya"), ("Иван", "ivan")],
        [("Иванов", "ivanov"), ("Смирнова", "smirnova"), ("Кузнецов", "kuznetsov"), ("Попова", "popova")],
        "{first} {last}",
    ),
    "greek": (
        [("Αλέξανδρος", "alexandros"), ("Ελένη", "eleni"), ("Γιώργος", "giorgos"), ("Μαρία", "maria")],
        [("Παπαδόπουλος", "papadopoulos"), ("Γεωργίου", "georgiou"), ("Νικολάου", "nikolaou")],
        "{first} {last}",
    ),
    "chinese": (
        [("伟", "wei"), ("娜", "na"), ("芳", "fang"), ("强", "qiang"), ("静", "jing")],
        [("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen")],
        "{last}{first}",
    ),
    "japanese": (
        [("健", "ken"), ("陽子", "yoko"), ("翔太", "shota"), ("さくら", "sakura")],
        [("佐藤", "sato"), ("鈴木", "suzuki"), ("高橋", "takahashi"), ("田中", "tanaka")],
        "{last} {first}",
    ),
    "korean": (
        [("민준", "minjun"), ("서연", "seoyeon"), ("지호", "jiho")],
        [("김", "kim"), ("이", "lee"), ("박", "park")],
        "{last}{first}",
    ),
    "arabic": (
        [("محمد", "mohammed"), ("فاطمة", "fatima"), ("أحمد", "ahmed"), ("ليلى", "layla")],
        [("الأحمد", "alahmad"), ("الزهراني", "alzahrani"), ("حداد", "haddad")],
        "{first} {last}",
    ),
    "hebrew": ([("נועה", "noa"), ("דוד", "david")], [("כהן", "cohen"), ("לוי", "levi")], "{first} {last}"),
    "devanagari": ([("अमित", "amit"), ("प्रिया", "priya")], [("शर्मा", "sharma"), ("पटेल", "patel")], "{first} {last}"),
}
_SCRIPTS = tuple(_NAMES)
_SCRIPT_CUM = list(itertools.accumulate([0.62, 0.07, 0.05, 0.06, 0.05, 0.04, 0.05, 0.03, 0.03]))
_COMPANY_CUM = list(itertools.accumulate(COMPANY_WEIGHTS))

# Names a spreadsheet or a SQL string builder would misread: (first, last, display name, alias).
SPECIAL_NAMES = (
    ("Click", "Me", '=HYPERLINK("http://example.com/x","Click me")', "hyperlink.test"),
    ("Phone", "Number", "+1-555-0100", "plus.phone"),
    ("Sum", "Total", "@SUM(A1:A10)", "at.sum"),
    ("Minus", "Command", "-2+3+cmd|' /C calc'!A0", "minus.cmd"),
    ("Robert", "Tables", "Robert'); DROP TABLE mailboxes;--", "robert.tables"),
    ("Zoë", "O'Brien", 'Zoë "Zed" O\'Brien, Jr.', "zoe.obrien"),
)
SPECIAL_INDEXES = tuple(3 + 9 * k for k in range(len(SPECIAL_NAMES)))

PLANS = (
    # name, weight, ProhibitSendReceiveQuota, ArchiveQuota
    ("ExchangeOnlineEnterprise", 0.70, 100 * GB, 100 * GB),
    ("ExchangeOnline", 0.20, 50 * GB, 50 * GB),
    ("ExchangeOnlineDeskless", 0.10, 2 * GB, 0),
)
PLAN_GUIDS = {name: derived_guid(name, "mailboxplan") for name, *_ in PLANS}
PLAN_NAMES = {name: f"{name}-{guid}" for name, guid in PLAN_GUIDS.items()}  # MailboxPlan: "<plan>-<guid>"
_PLAN_CUM = list(itertools.accumulate(p[1] for p in PLANS))
_LIT_DAYS = (365, 730, 2555, None)
_LIT_CUM = list(itertools.accumulate((0.3, 0.2, 0.2, 0.3)))


@dataclass
class GeneratedTenant:
    mailboxes: list[Mailbox]
    policies: list[Policy]
    org_holds: list[str]  # OrganizationConfig.InPlaceHolds
    accepted_domains: list[str]
    federated_domains: list[str]
    special: dict[str, str] = field(default_factory=dict)  # notable identities for tests and the demo


class _Gen:
    def __init__(self, seed: int, now: float, tenant_domain: str) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.tenant_domain = tenant_domain
        self.aliases: dict[str, int] = {}
        self.databases = [self.guid() for _ in range(40)]

    def guid(self) -> str:
        """A random version-4 GUID string (formatted by hand: uuid.UUID is slow at a million)."""
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def pick(self, items: tuple[Any, ...], cumulative: list[float]) -> Any:
        """A weighted choice from precomputed cumulative weights (random.choices is slow in a hot loop)."""
        return items[bisect.bisect(cumulative, self.rng.random() * cumulative[-1])]

    def one(self, items: Sequence[Any]) -> Any:
        return items[int(self.rng.random() * len(items))]

    def alias(self, base: str) -> str:
        n = self.aliases.get(base, 0)
        self.aliases[base] = n + 1
        return base if n == 0 else f"{base}{n}"


def _policies(g: _Gen, count: int) -> tuple[list[Policy], dict[str, list[Policy]]]:
    """Org-wide, explicit and case-hold policies; explicit ones split so no static list passes 1,000."""
    t0 = g.now - 9 * 365 * DAY
    org = [
        Policy(g.guid(), "All mailboxes - 7 years", org_wide=True, action=3, duration_days=2555),
        Policy(g.guid(), "Teams and Groups - 3 years", org_wide=True, target="grp", action=2, duration_days=1095),
        Policy(g.guid(), "Deleted Items cleanup - 1 year", org_wide=True, action=1, duration_days=365),
    ]
    # kind -> (name, target, action, days, locked, probability per inactive mailbox)
    explicit_kinds = {
        "legal": ("Legal - Finance Records 10y", "mbx", 2, 3650, True, 0.06),
        "hr": ("HR Records 5y", "mbx", 3, 1825, False, 0.10),
        "exec": ("Executives - Unlimited", "mbx", 2, None, False, 0.04),
        "cleanup": ("Mailbox cleanup 2y", "mbx", 1, 730, False, 0.05),
        "skype3": ("Skype conversations 3y", "skp", 3, 1095, False, 0.03),
        "skype2": ("Skype compliance 1y", "skp", 2, 365, False, 0.02),
        "skype1": ("Skype purge 90d", "skp", 1, 90, False, 0.01),
    }
    pools: dict[str, list[Policy]] = {}
    policies = list(org)
    for kind, (name, target, action, days, locked, p) in explicit_kinds.items():
        copies = max(1, math.ceil(count * p / 1000))
        pool = []
        for k in range(copies):
            suffix = f" ({k + 1})" if copies > 1 else ""
            pool.append(
                Policy(g.guid(), name + suffix, target=target, action=action, duration_days=days, restrictive=locked)
            )
        pools[kind] = pool
        policies.extend(pool)
    cases = [
        ("Contoso v. Fabrikam (2019-014)", "Litigation hold for case 2019-014"),
        ("Internal investigation 2021-007", "HR investigation"),
        ("Regulatory inquiry 2023-002", "Regulator request"),
    ]
    pools["case"] = []
    for name, comment in cases:
        policy = Policy(g.guid(), f"{name} hold", kind="casehold", case_id=g.guid(), comment=comment)
        policy.duration_days = None
        pools["case"].append(policy)
        policies.append(policy)
    for policy in policies:
        policy.when_created = round(t0 + g.rng.random() * 365 * DAY)
        policy.when_changed = policy.when_created
    pools["org"] = org
    pools["legacy"] = [Policy(g.rng.getrandbits(128).to_bytes(16, "big").hex(), "legacy") for _ in range(5)]
    return policies, pools


def _lognormal_bytes(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return int(min(high, max(low, math.exp(rng.gauss(math.log(median), sigma)))))


def _person(g: _Gen, index: int) -> tuple[str, str, str, str]:
    """(first, last, display name, alias base)."""
    if index in SPECIAL_INDEXES:
        first, last, display, alias = SPECIAL_NAMES[SPECIAL_INDEXES.index(index)]
        return first, last, display, alias
    rng = g.rng
    firsts, lasts, fmt = _NAMES[g.pick(_SCRIPTS, _SCRIPT_CUM)]
    first, first_a = firsts[int(rng.random() * len(firsts))]
    last, last_a = lasts[int(rng.random() * len(lasts))]
    return first, last, fmt.format(first=first, last=last), f"{first_a}.{last_a}"


def _base_mailbox(g: _Gen, index: int, state: str) -> Mailbox:
    rng = g.rng
    first, last, display, alias_base = _person(g, index)
    company: Company = g.pick(COMPANIES, _COMPANY_CUM)
    alias = g.alias(alias_base)
    primary = f"{alias}@{company.domain}"
    upn = primary if rng.random() < 0.9 else f"{alias}@{g.tenant_domain}"
    exchange_guid = g.guid()
    plan, _, quota, archive_quota = g.pick(PLANS, _PLAN_CUM)
    shared = rng.random() < 0.05
    total = _lognormal_bytes(rng, 1.5 * GB, 1.6, 3 * MB, int(quota * 0.97))
    avg_item = 40_000 + int(rng.random() * 110_000)
    deleted = int(total * rng.random() * 0.15)
    name = alias if rng.random() < 0.8 else derived_guid(exchange_guid, "name")  # newer objects: GUID names
    mbx = Mailbox(
        exchange_guid=exchange_guid,
        name=name,
        alias=alias,
        display_name=display,
        first_name=first,
        last_name=last,
        primary_smtp=primary,
        upn=upn,
        company=company.name,
        department=g.one(DEPARTMENTS),
        office=g.one(company.offices),
        title=g.one(TITLES),
        state=state,
        recipient_type_details="SharedMailbox" if shared else "UserMailbox",
        mailbox_plan=PLAN_NAMES[plan],
        quota_bytes=quota,
        archive_quota_bytes=archive_quota,
        total_bytes=total,
        item_count=max(1, total // avg_item),
        deleted_bytes=deleted,
        deleted_item_count=deleted // avg_item,
        database=g.databases[int(rng.random() * len(g.databases))],
        custom={"CustomAttribute1": f"E{100000 + index:06d}"},
    )
    # Where Company/Department live: directory only (60%), custom attributes only (25%), both (10%), none (5%).
    where = rng.random()
    if where >= 0.60:
        if where < 0.95:
            mbx.custom["CustomAttribute5"] = mbx.company
            mbx.custom["CustomAttribute6"] = mbx.department
        if where < 0.85 or where >= 0.95:
            mbx.company = ""
            mbx.department = ""
    if archive_quota and rng.random() < 0.40:
        mbx.archive = True
        mbx.archive_bytes = _lognormal_bytes(rng, 3 * GB, 1.4, 1 * MB, int(archive_quota * 0.97))
        mbx.archive_item_count = max(1, mbx.archive_bytes // avg_item)
        if rng.random() < 0.08:
            mbx.auto_expanding_archive = True
            mbx.aux_archive_shards = 1 + int(rng.random() * 4)
            mbx.archive_bytes = int(archive_quota * (1 + rng.random() * 2))
            mbx.archive_item_count = mbx.archive_bytes // avg_item
    return mbx


def _inactive(g: _Gen, index: int, pools: dict[str, list[Policy]], admin: str) -> Mailbox:
    rng = g.rng
    mbx = _base_mailbox(g, index, INACTIVE)
    u = rng.random()
    age = 1 + rng.random() * 28 if u < 0.03 else 30 + 3620 * rng.random() ** 1.3
    deleted_at = round(g.now - age * DAY)
    tenure = 60 + rng.random() * 4900
    mbx.when_soft_deleted = deleted_at
    mbx.when_created = round(max(g.now - 15 * 365 * DAY, deleted_at - tenure * DAY))
    mbx.when_changed = round(deleted_at + rng.random() * min(age, 30) * DAY)
    mbx.last_logon = round(deleted_at - rng.random() * 20 * DAY)
    if age < 30:
        mbx.external_directory_object_id = derived_guid(mbx.exchange_guid, "user")
    if rng.random() < 0.01:
        mbx.aux_primary_shards = 1 + int(rng.random() * 2)
    holds = mbx.in_place_holds
    org_all = pools["org"][0]
    if rng.random() < 0.10 and age > 3 * 365:
        # An "expired" mailbox: excluded from org holds, only a short Litigation Hold long run out.
        holds.append(f"-mbx{org_all.hex}")
        _litigation(mbx, rng.choice((365, 730)), admin, rng)
        return mbx
    if rng.random() < 0.35:
        _litigation(mbx, g.pick(_LIT_DAYS, _LIT_CUM), admin, rng)
    if rng.random() < 0.15:
        holds.append(f"-mbx{org_all.hex}")
    for kind, p in (
        ("legal", 0.06),
        ("hr", 0.10),
        ("exec", 0.04),
        ("cleanup", 0.05),
        ("skype3", 0.03),
        ("skype2", 0.02),
        ("skype1", 0.01),
    ):
        if rng.random() < p:
            pool = pools[kind]
            holds.append(pool[int(rng.random() * len(pool))].hold_tag)
    if rng.random() < 0.08:
        holds.append(g.one(pools["case"]).hold_tag)
    r = rng.random()
    if r < 0.04:
        holds.append(g.one(pools["legacy"]).guid)
    elif r < 0.06:
        holds.append("cld" + g.one(pools["legacy"]).guid)
    mbx.compliance_tag_hold = rng.random() < 0.15
    recent = age < 30
    mbx.delay_hold = rng.random() < (0.4 if recent else 0.01)
    mbx.delay_release_hold = rng.random() < (0.2 if recent else 0.005)
    mbx.retention_hold = rng.random() < 0.05
    mbx.elc_processing_disabled = rng.random() < 0.02
    if not _held(mbx, pools):
        _litigation(mbx, None, admin, rng)
    return mbx


def _litigation(mbx: Mailbox, days: int | None, admin: str, rng: random.Random) -> None:
    end = mbx.when_soft_deleted or mbx.when_created
    mbx.litigation_hold = True
    mbx.litigation_hold_duration = days
    mbx.litigation_hold_owner = admin
    mbx.litigation_hold_date = round(max(mbx.when_created, end - rng.random() * 400 * DAY))


def _held(mbx: Mailbox, pools: dict[str, list[Policy]]) -> bool:
    """Cheap check used while generating (the tenant has the full evaluation)."""
    if mbx.litigation_hold or mbx.compliance_tag_hold or mbx.delay_hold or mbx.delay_release_hold:
        return True
    if any(not h.startswith("-") and not h.endswith(":1") for h in mbx.in_place_holds):
        return True
    return f"-mbx{pools['org'][0].hex}" not in mbx.in_place_holds


# Directory values a hostile or careless admin can type (SimulatorConfig.hostile_data): terminal escape sequences
# (an OSC window title, CSI colours, a C1 CSI), NUL, a bidirectional override, overwriting controls, a newline,
# a formula and a value far longer than a table cell. imm must show them neutralised and keep them exact in JSON.
HOSTILE_VALUES = (
    "\x1b]0;pwned\x07Eve Title",
    "\x1b[31mRed\x1b[0m \x1b[8mHidden",
    "\x9b31mC1 Csi",
    "Nul\x00Byte",
    "Ali\u202egnp.exe",
    "Over\rwrite\x08\x08!",
    "Line\nBreak",
    '=cmd|"/C calc"!A0',
    "L" * 5000,
)


def make_hostile(mailboxes: Sequence[Mailbox]) -> list[str]:
    """Give some inactive mailboxes hostile display names, companies and departments; returns their GUIDs."""
    chosen = [m for i, m in enumerate(mailboxes) if m.state == INACTIVE and i not in SPECIAL_INDEXES]
    changed = []
    for k, (mbx, value) in enumerate(zip(chosen, HOSTILE_VALUES, strict=False)):
        mbx.display_name = value
        mbx.company = HOSTILE_VALUES[(k + 1) % len(HOSTILE_VALUES)]
        mbx.department = HOSTILE_VALUES[(k + 2) % len(HOSTILE_VALUES)]
        changed.append(mbx.exchange_guid)
    return changed


def generate(seed: int, count: int, now: float, tenant_domain: str = "contoso.onmicrosoft.com") -> GeneratedTenant:
    """The whole tenant for ``seed``: ``count`` inactive mailboxes plus soft-deleted and active ones."""
    if count < 0:
        raise ValueError("count must be >= 0")
    enabled = gc.isenabled()
    gc.disable()  # a million small objects: the cyclic collector would rescan them again and again
    try:
        return _generate(seed, count, now, tenant_domain)
    finally:
        if enabled:
            gc.enable()


def _generate(seed: int, count: int, now: float, tenant_domain: str) -> GeneratedTenant:
    g = _Gen(seed, now, tenant_domain)
    admin = f"admin@{tenant_domain}"
    policies, pools = _policies(g, count)
    org_all = pools["org"][0]
    mailboxes = [_inactive(g, i, pools, admin) for i in range(count)]

    # Plain soft-deleted mailboxes (deleted under 30 days ago, no hold) and a few released former inactive ones.
    for i in range(max(2, count // 100)):
        mbx = _base_mailbox(g, count + i, SOFT_DELETED)
        age = 1 + g.rng.random() * 28
        mbx.when_soft_deleted = round(now - age * DAY)
        mbx.when_created = round(mbx.when_soft_deleted - (100 + g.rng.random() * 2000) * DAY)
        mbx.when_changed = mbx.when_soft_deleted
        mbx.in_place_holds.append(f"-mbx{org_all.hex}")
        if i % 3 == 2:
            mbx.was_inactive = True
            mbx.when_soft_deleted = round(now - (400 + g.rng.random() * 2000) * DAY)
            mbx.retire_time = round(now - g.rng.random() * 150 * DAY)
            mbx.when_changed = mbx.retire_time
        else:
            mbx.external_directory_object_id = derived_guid(mbx.exchange_guid, "user")
        mailboxes.append(mbx)

    # Active mailboxes: restore targets.
    n_active = max(12, min(60, count // 5))
    special: dict[str, str] = {}
    for i in range(n_active):
        mbx = _base_mailbox(g, count + 10_000_000 + i, ACTIVE)
        mbx.when_created = round(now - (30 + g.rng.random() * 3000) * DAY)
        mbx.when_changed = round(now - g.rng.random() * 30 * DAY)
        mbx.last_logon = round(now - g.rng.random() * 3 * DAY)
        mbx.external_directory_object_id = derived_guid(mbx.exchange_guid, "user")
        mbx.recipient_type_details = "UserMailbox"
        mbx.litigation_hold = g.rng.random() < 0.1
        if mbx.litigation_hold:
            mbx.litigation_hold_date = mbx.when_created
            mbx.litigation_hold_owner = admin
        mailboxes.append(mbx)
    actives = mailboxes[-n_active:]
    # The first active mailbox is a roomy restore target (Enterprise plan, archive).
    roomy = actives[0]
    roomy.mailbox_plan = f"ExchangeOnlineEnterprise-{PLAN_GUIDS['ExchangeOnlineEnterprise']}"
    roomy.quota_bytes = roomy.archive_quota_bytes = 100 * GB
    roomy.archive = True
    roomy.archive_bytes = min(roomy.archive_bytes or 2 * GB, 10 * GB)
    roomy.auto_expanding_archive = False
    roomy.aux_archive_shards = 0
    roomy.total_bytes = min(roomy.total_bytes, 20 * GB)
    special["restore_target"] = roomy.primary_smtp

    # One active mailbox shares its SMTP address and UPN with an inactive one (a rehire with the same name).
    candidates = [m for m in mailboxes[:count] if m.upn == m.primary_smtp]
    if candidates:
        twin_of = candidates[min(len(candidates) - 1, 1)]
        twin = actives[1]
        twin.first_name, twin.last_name, twin.display_name = twin_of.first_name, twin_of.last_name, twin_of.display_name
        twin.primary_smtp = twin.upn = twin_of.primary_smtp
        twin.company = twin_of.company or twin.company
        special["shared_smtp"] = twin_of.primary_smtp
        special["shared_smtp_inactive"] = twin_of.exchange_guid
        special["shared_smtp_active"] = twin.exchange_guid
    # One small-plan active mailbox nearly at its quota (a restore into it fails).
    full = actives[2]
    full.mailbox_plan = f"ExchangeOnlineDeskless-{PLAN_GUIDS['ExchangeOnlineDeskless']}"
    full.quota_bytes = 2 * GB
    full.archive_quota_bytes = 0
    full.archive = False
    full.auto_expanding_archive = False
    full.aux_archive_shards = 0
    full.archive_bytes = full.archive_item_count = 0
    full.total_bytes = int(1.95 * GB)
    full.item_count = full.total_bytes // 70_000
    special["full_target"] = full.primary_smtp
    special["federated_domain"] = FEDERATED_DOMAINS[0]
    special["org_all_policy"] = org_all.guid

    org_holds = [p.hold_tag for p in pools["org"]]
    accepted = [c.domain for c in COMPANIES] + [tenant_domain]
    return GeneratedTenant(mailboxes, policies, org_holds, accepted, list(FEDERATED_DOMAINS), special)
