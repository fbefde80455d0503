"""Shared set-up of the action end-to-end tests (recover, restore, holds): one simulated tenant per test module,
signed in and synced once through the real CLI process; each test claims its own mailboxes from the tenant's
ground truth, so tests do not see each other's changes.

Expectations come from the simulator's records (``sim.exchange.tenant``), read here directly.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import CliResult, make_simulator, run_imm
from imm.config import write_profile
from imm.simulator import Simulator
from imm.simulator.model import ACTIVE, INACTIVE, Mailbox
from imm.simulator.tenant import Tenant

USER = "admin@contoso.onmicrosoft.com"
_POLICY_TAG = re.compile(r"^(mbx|skp)([0-9a-f]{32}):(\d)$", re.IGNORECASE)


@dataclass
class ActEnv:
    """A served tenant plus an imm home that is signed in and synced."""

    sim: Simulator
    home: Path
    env: dict[str, str]
    claimed: set[str] = field(default_factory=set)
    outputs: list[str] = field(default_factory=list)

    @property
    def tenant(self) -> Tenant:
        return self.sim.exchange.tenant

    @property
    def db_path(self) -> Path:
        return self.home / "data" / "sim.db"

    def run(self, *args: str, input: str | None = None, timeout: float = 120) -> CliResult:
        result = run_imm(*args, env=self.env, input=input, timeout=timeout)
        self.outputs += [result.stdout, result.stderr]
        return result

    def json(self, *args: str, input: str | None = None) -> tuple[CliResult, Any]:
        result = self.run(*args, "--output", "json", input=input)
        try:
            data = json.loads(result.stdout) if result.stdout.strip() else None
        except ValueError:
            data = None
        return result, data

    # ----------------------------------------------------------------------------------------- the store
    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.db_path)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def cached(self, guid: str) -> dict[str, Any] | None:
        found = self.rows("SELECT * FROM inactive_mailboxes WHERE identity = ?", (guid,))
        return found[0] if found else None

    def cached_row(self, guid: str) -> dict[str, Any]:
        """The cached row of a mailbox that must be in the cache."""
        row = self.cached(guid)
        assert row is not None, f"{guid} is not in the cache"
        return row

    def audit(self, identity: str | None = None, operation: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit_log WHERE 1 = 1"
        params: list[Any] = []
        if identity is not None:
            sql += " AND identity = ?"
            params.append(identity)
        if operation is not None:
            sql += " AND operation = ?"
            params.append(operation)
        rows = self.rows(sql + " ORDER BY id", tuple(params))
        for row in rows:
            row["details"] = json.loads(row["details"]) if row["details"] else {}
        return rows

    def secret_surfaces(self) -> dict[str, str]:
        """Every place a secret must never reach: command outputs, log files, database files (with WAL)."""
        out = {"outputs": "\n".join(self.outputs)}
        for path in sorted((self.home / "log").glob("*")):
            out[str(path)] = path.read_text(encoding="utf-8", errors="replace")
        for suffix in ("", "-wal"):
            path = Path(f"{self.db_path}{suffix}")
            if path.exists():
                out[str(path)] = path.read_bytes().decode("latin-1")
        for row in self.audit():
            out[f"audit {row['id']}"] = json.dumps(row["details"], ensure_ascii=False) + str(row["error_message"])
        return out

    # ---------------------------------------------------------------------------------------- the tenant
    def pick(self, predicate: Callable[[Mailbox, Tenant], bool], what: str = "mailbox") -> Mailbox:
        """An inactive mailbox (in the synced cache) that no other test of this module claimed."""
        tenant = self.tenant
        cached = {r["identity"] for r in self.rows("SELECT identity FROM inactive_mailboxes")}
        with tenant.lock:
            for mbx in tenant.mailboxes.values():
                if mbx.state != INACTIVE or mbx.exchange_guid in self.claimed or mbx.exchange_guid not in cached:
                    continue
                if predicate(mbx, tenant):
                    self.claimed.add(mbx.exchange_guid)
                    return mbx
        pytest.skip(f"the simulated tenant has no unclaimed {what}")

    def active(self, guid: str) -> Mailbox:
        return self.tenant.mailboxes[guid]

    def active_mailboxes(self) -> list[Mailbox]:
        return [m for m in self.tenant.mailboxes.values() if m.state == ACTIVE]


# -------------------------------------------------------------------------------------------- predicates
def policy_of(tenant: Tenant, entry: str) -> Any:
    match = _POLICY_TAG.match(entry)
    return tenant.policy_by_hex(match.group(2)) if match else None


def recoverable(mbx: Mailbox, tenant: Tenant) -> bool:
    """Nothing would block a recover (domain.md §4)."""
    return (
        not mbx.external_directory_object_id
        and not mbx.aux_primary_shards
        and not mbx.auto_expanding_archive
        and not mbx.aux_archive_shards
    )


def unlocked_policy_tags(mbx: Mailbox, tenant: Tenant) -> list[str]:
    """The mailbox's retain (:2/:3) Exchange policy tags of unlocked policies."""
    out = []
    for entry in mbx.in_place_holds:
        match = _POLICY_TAG.match(entry)
        policy = policy_of(tenant, entry)
        if match and match.group(1).lower() == "mbx" and match.group(3) in "23" and policy and not policy.restrictive:
            out.append(entry)
    return out


def locked_policy_tags(mbx: Mailbox, tenant: Tenant) -> list[str]:
    return [e for e in mbx.in_place_holds if (p := policy_of(tenant, e)) is not None and p.restrictive]


def only_litigation(mbx: Mailbox, tenant: Tenant) -> bool:
    return tenant.hold_reasons(mbx) == ["LitigationHold"]


def state_snapshot(mbx: Mailbox) -> dict[str, Any]:
    return mbx.to_state()


# ------------------------------------------------------------------------------------------------ fixture
def make_env(tmp: Path, **options: Any) -> Iterator[ActEnv]:
    """Serve a tenant, write the 'sim' profile, sign in and sync through the real CLI."""
    settings: dict[str, Any] = {"mailboxes": 120, "seed": 7, "auto_approve_after": 0.0, "restore_seconds": 1.0}
    settings.update(options)
    with make_simulator(tmp, **settings) as sim:
        home = tmp / "imm-home-shared"
        write_profile(home / "config" / "config.toml", "sim", sim.profile_values(), make_default=True)
        act = ActEnv(sim, home, {"IMM_USER_PATH": str(home)})
        for command in (("login",), ("sync",)):
            result = act.run(*command)
            assert result.exit_code == 0, result.stderr
        yield act


def hold_kind(reason: str) -> str:
    """imm's hold kind for each preserving hold the simulator reports (``Tenant.hold_reasons``): the test oracle."""
    low = reason.lower()
    named = {"LitigationHold": "litigation", "ComplianceTagHold": "label", "DelayHold": "delay"}
    if reason in named:
        return named[reason]
    if reason == "DelayReleaseHold":
        return "delay-release"
    if low.startswith("org:"):
        return "org-policy"
    if low.startswith("unih"):
        return "ediscovery"
    if low.startswith("mbx"):
        return "retention-policy"
    if low.startswith("skp"):
        return "skype-policy"
    return "inplace"
