"""The simulated tenant's deterministic data: same seed same data, every hold kind, realistic spread."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

import pytest

from imm.simulator.generator import COMPANIES, SPECIAL_NAMES, generate
from imm.simulator.model import ACTIVE, INACTIVE, SOFT_DELETED
from imm.simulator.tenant import Tenant

NOW = 1_795_000_000.0  # a fixed "today" (2026-11-18) keeps the assertions independent of the clock
DAY = 86400


@pytest.fixture(scope="module")
def thousand() -> Tenant:
    tenant = Tenant(
        "6f1b7c2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f", "contoso.onmicrosoft.com", seed=1, count=1000, generated_at=NOW
    )
    return tenant


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = generate(7, 300, NOW)
    b = generate(7, 300, NOW)
    c = generate(8, 300, NOW)
    assert [m.to_state() for m in a.mailboxes] == [m.to_state() for m in b.mailboxes]
    assert [p.to_state() for p in a.policies] == [p.to_state() for p in b.policies]
    assert a.org_holds == b.org_holds and a.special == b.special
    assert [m.exchange_guid for m in a.mailboxes] != [m.exchange_guid for m in c.mailboxes]


def test_counts_small_and_large() -> None:
    small = generate(1, 10, NOW)
    states = Counter(m.state for m in small.mailboxes)
    assert states[INACTIVE] == 10 and states[SOFT_DELETED] == 2 and states[ACTIVE] == 12
    assert {"shared_smtp", "full_target", "restore_target", "org_all_policy"} <= set(small.special)
    large = generate(1, 100_000, NOW)
    states = Counter(m.state for m in large.mailboxes)
    assert states[INACTIVE] == 100_000 and states[ACTIVE] == 60 and states[SOFT_DELETED] == 1000
    guids = [m.exchange_guid for m in large.mailboxes]
    assert len(set(guids)) == len(guids)
    aliases = [m.alias for m in large.mailboxes if m.state != ACTIVE]
    assert len(set(aliases)) == len(aliases)
    # Explicit policies are split so that no static location list passes 1,000 mailboxes.
    assert any(p.name.endswith("(2)") for p in large.policies)


def test_every_hold_kind_is_present(thousand: Tenant) -> None:
    boxes = [m for m in thousand.mailboxes.values() if m.state == INACTIVE]
    holds = [h for m in boxes for h in m.in_place_holds]
    assert {m.litigation_hold_duration for m in boxes if m.litigation_hold} == {365, 730, 2555, None}
    assert any(re.fullmatch(r"UniH[0-9a-f-]{36}", h) for h in holds)
    assert any(re.fullmatch(r"[0-9a-f]{32}", h) for h in holds)
    assert any(re.fullmatch(r"cld[0-9a-f]{32}", h) for h in holds)
    for prefix in ("mbx", "skp"):
        for action in "123":
            assert any(re.fullmatch(rf"{prefix}[0-9a-f]{{32}}:{action}", h) for h in holds), (prefix, action)
    assert any(re.fullmatch(r"-mbx[0-9a-f]{32}", h) for h in holds)
    for flag in (
        "compliance_tag_hold",
        "delay_hold",
        "delay_release_hold",
        "retention_hold",
        "elc_processing_disabled",
    ):
        assert any(getattr(m, flag) for m in boxes), flag
    org = thousand.org_holds
    assert [re.sub(r"[0-9a-f]{32}", "<g>", h) for h in org] == ["mbx<g>:3", "grp<g>:2", "mbx<g>:1"]
    assert any(p.restrictive for p in thousand.policies.values())
    assert not any(p.restrictive for p in thousand.org_policies())


def test_every_inactive_mailbox_is_really_held(thousand: Tenant) -> None:
    for mbx in thousand.mailboxes.values():
        if mbx.state == INACTIVE:
            assert thousand.hold_reasons(mbx), mbx.exchange_guid
        elif mbx.state == SOFT_DELETED:
            assert not thousand.hold_reasons(mbx)


def test_expired_candidates_exist(thousand: Tenant) -> None:
    """Deleted long ago, excluded from org holds, only a short Litigation Hold left: releasable."""
    expired = [
        m
        for m in thousand.mailboxes.values()
        if m.state == INACTIVE
        and thousand.hold_reasons(m) == ["LitigationHold"]
        and m.litigation_hold_duration in (365, 730)
        and (m.when_soft_deleted or 0) + m.litigation_hold_duration * DAY < NOW
    ]
    assert len(expired) >= 20


def test_archives_shards_and_directory_ids(thousand: Tenant) -> None:
    boxes = [m for m in thousand.mailboxes.values() if m.state == INACTIVE]
    assert any(m.archive for m in boxes)
    expanding = [m for m in boxes if m.auto_expanding_archive]
    assert expanding and all(m.aux_archive_shards >= 1 and m.archive for m in expanding)
    locations = expanding[0].mailbox_locations(thousand.tenant_domain)
    assert any(";AuxArchive;" in x for x in locations)
    assert any(m.aux_primary_shards for m in boxes)
    recent = [m for m in boxes if NOW - (m.when_soft_deleted or 0) < 30 * DAY]
    assert recent and all(m.external_directory_object_id for m in recent)
    assert all(not m.external_directory_object_id for m in boxes if NOW - (m.when_soft_deleted or 0) > 31 * DAY)


def test_realistic_spread(thousand: Tenant) -> None:
    boxes = [m for m in thousand.mailboxes.values() if m.state == INACTIVE]
    sizes = sorted(m.total_bytes for m in boxes)
    assert sizes[0] < 100 * 1024**2 and sizes[-1] > 20 * 1024**3
    ages = sorted(NOW - (m.when_soft_deleted or 0) for m in boxes)
    assert ages[0] < 30 * DAY and ages[-1] > 8 * 365 * DAY
    assert {m.company for m in boxes} - {""} == {c.name for c in COMPANIES}
    assert len({m.department for m in boxes} - {""}) == 10
    plans = {m.mailbox_plan.rsplit("-", 5)[0] for m in boxes}
    assert plans == {"ExchangeOnlineEnterprise", "ExchangeOnline", "ExchangeOnlineDeskless"}
    assert all(m.when_created <= (m.when_soft_deleted or NOW) <= m.when_changed for m in boxes)


def test_company_and_department_sometimes_only_in_custom_attributes(thousand: Tenant) -> None:
    boxes = [m for m in thousand.mailboxes.values() if m.state == INACTIVE]
    only_attributes = [m for m in boxes if not m.company and "CustomAttribute5" in m.custom]
    both = [m for m in boxes if m.company and "CustomAttribute5" in m.custom]
    neither = [m for m in boxes if not m.company and "CustomAttribute5" not in m.custom]
    assert len(only_attributes) > 100 and both and neither
    assert all(m.custom["CustomAttribute6"] for m in only_attributes)


def test_names_in_many_scripts_and_hostile_names(thousand: Tenant) -> None:
    names = [m.display_name for m in thousand.mailboxes.values()]
    scripts = {unicodedata.name(ch).split()[0] for n in names for ch in n if ord(ch) > 0x24F}
    assert {"CYRILLIC", "GREEK", "CJK", "ARABIC", "HANGUL", "HEBREW", "DEVANAGARI"} <= scripts
    assert any(ch in "äöüéñçøåłšž" for n in names for ch in n.lower())
    for _, _, display, alias in SPECIAL_NAMES:
        assert display in names, display
        assert any(m.alias == alias for m in thousand.mailboxes.values())
    assert all(m.alias.isascii() for m in thousand.mailboxes.values())


def test_conflicts_for_recovery_and_restore(thousand: Tenant) -> None:
    special = thousand.special
    shared = thousand.lookup(special["shared_smtp"])
    assert sorted(m.state for m in shared) == [ACTIVE, INACTIVE]
    full = thousand.mailbox(special["full_target"])
    assert full.state == ACTIVE and full.total_bytes > 0.95 * full.quota_bytes
    roomy = thousand.mailbox(special["restore_target"])
    assert roomy.state == ACTIVE and roomy.quota_bytes == 100 * 1024**3
    assert any(m.upn.endswith("@woodgrovebank.com") for m in thousand.mailboxes.values() if m.state == INACTIVE)
    assert special["federated_domain"] in thousand.federated_domains


def test_mutation_knobs_update_when_changed(thousand: Tenant) -> None:
    tenant = Tenant("t", "contoso.onmicrosoft.com", seed=2, count=30, generated_at=NOW)
    mbx = next(m for m in tenant.mailboxes.values() if m.state == INACTIVE)
    before = mbx.when_changed
    tenant.touch(mbx.exchange_guid)
    assert mbx.when_changed > before
    tenant.add_hold(mbx.exchange_guid, "UniH00000000-0000-0000-0000-000000000001")
    assert "UniH00000000-0000-0000-0000-000000000001" in mbx.in_place_holds
    tenant.update(mbx.exchange_guid, total_bytes=123)
    assert mbx.total_bytes == 123
    tenant.remove_mailbox(mbx.exchange_guid)
    assert mbx.exchange_guid not in tenant.mailboxes and tenant.lookup(mbx.exchange_guid) == []
