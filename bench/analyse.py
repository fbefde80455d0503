"""Analysis benchmark (task: < 20–50 µs per mailbox): not part of the test suite.

    python bench/analyse.py [--count 100000] [--seed 1]

Builds ``count`` varied cached mailboxes (every hold kind, org-wide policies with exclusions, archives, locked and
case-hold policies) and times :func:`imm.domain.analyse.analyse` over all of them, best of three passes (fresh
copies each pass, the hold-decoding caches warm as in a real sync after its first thousand mailboxes).
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from datetime import UTC, datetime, timedelta

from imm.config import CostModel
from imm.data.models import InactiveMailbox
from imm.domain.analyse import analyse
from imm.domain.holds import HoldAction, PolicyInfo

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def guid(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def build(count: int, seed: int) -> tuple[list[InactiveMailbox], list[str], dict[str, PolicyInfo]]:
    rng = random.Random(seed)
    org = [guid(rng) for _ in range(3)]
    named = [guid(rng) for _ in range(40)]
    cases = [guid(rng) for _ in range(20)]
    policies = {
        g: PolicyInfo(guid=g, name=f"Org {i}", retention_days=2555, action=HoldAction.RETAIN, scope_all=True)
        for i, g in enumerate(org)
    }
    for i, g in enumerate(named):
        policies[g] = PolicyInfo(guid=g, name=f"Policy {i}", retention_days=rng.choice([365, 2555, None]), locked=i < 4)
    for i, g in enumerate(cases):
        policies[g] = PolicyInfo(guid=g, name=f"Case {i}", kind="case-hold")
    org_holds = [f"mbx{org[0]}:2", f"mbx{org[1]}:3", f"grp{org[2]}:3"]
    out: list[InactiveMailbox] = []
    for i in range(count):
        holds: list[str] = []
        if rng.random() < 0.3:
            holds.append(f"mbx{rng.choice(named)}:{rng.choice('123')}")
        if rng.random() < 0.1:
            holds.append(f"UniH{rng.choice(cases)}")
        if rng.random() < 0.05:
            holds.append(guid(rng))  # legacy In-Place
        if rng.random() < 0.2:
            holds.append(f"-mbx{org[0]}")
        archive = rng.random() < 0.3
        out.append(
            InactiveMailbox(
                identity=f"{i:08x}-0000-4000-8000-{seed:012x}",
                when_soft_deleted=NOW - timedelta(days=rng.randint(1, 3650)),
                when_changed=NOW - timedelta(days=rng.randint(1, 60)),
                size_mb=round(rng.lognormvariate(7.0, 1.2), 2),
                archive_status="Active" if archive else "None",
                archive_size_mb=round(rng.lognormvariate(7.5, 1.0), 2) if archive else 0.0,
                mailbox_locations=["Primary", "MainArchive"] + (["AuxArchive"] if rng.random() < 0.05 else []),
                litigation_hold_enabled=rng.random() < 0.5,
                litigation_hold_duration=rng.choice(["Unlimited", "365.00:00:00", "2555.00:00:00"]),
                in_place_holds=holds,
                compliance_tag_hold=rng.random() < 0.1,
                delay_hold=rng.random() < 0.05,
                mailbox_plan=rng.choice(["ExchangeOnlineEnterprise-1", "ExchangeOnline-2", "ExchangeOnlineDeskless-3"]),
            )
        )
    return out, org_holds, policies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    mailboxes, org_holds, policies = build(args.count, args.seed)
    model = CostModel()
    best = float("inf")
    for _ in range(3):
        batch = copy.deepcopy(mailboxes)
        start = time.perf_counter()
        for mailbox in batch:
            analyse(mailbox, org_holds=org_holds, policies=policies, cost_model=model, now=NOW)
        best = min(best, time.perf_counter() - start)
    per = best / args.count * 1e6
    print(f"analyse: {args.count:,} mailboxes in {best:.2f} s = {per:.1f} µs per mailbox (target < 20–50 µs)")


if __name__ == "__main__":
    main()
