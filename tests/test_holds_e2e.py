"""``imm holds show|release`` end to end against the simulated tenant (real CLI process, TLS, SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from action_support import (
    USER,
    ActEnv,
    hold_kind,
    locked_policy_tags,
    make_env,
    only_litigation,
    unlocked_policy_tags,
)
from imm.simulator.model import INACTIVE, Mailbox, Policy
from imm.simulator.tenant import Tenant

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def act(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActEnv]:
    yield from make_env(tmp_path_factory.mktemp("holds"))


def _others_than(mbx: Mailbox, tenant: Tenant, *kinds: str) -> list[str]:
    return [r for r in tenant.hold_reasons(mbx) if hold_kind(r) not in kinds]


def _has_case_hold(mbx: Mailbox) -> bool:
    return any(h.lower().startswith("unih") for h in mbx.in_place_holds)


# ---------------------------------------------------------------------------------------------------- show
def test_holds_show_lists_every_hold_as_exchange_has_them(act: ActEnv) -> None:
    mbx = act.pick(lambda m, t: len(t.hold_reasons(m)) >= 2 and any(h.startswith("-") for h in m.in_place_holds)
                   or len(t.hold_reasons(m)) >= 3, "mailbox with several holds")  # fmt: skip
    expected = sorted(hold_kind(r) for r in act.tenant.hold_reasons(mbx))

    result, data = act.json("holds", "show", mbx.primary_smtp)

    assert result.exit_code == 0, result.stderr
    assert data["mailbox"]["identity"] == mbx.exchange_guid
    assert data["source"] == "cache"
    assert sorted(h["kind"] for h in data["holds"] if h["preserves"]) == expected
    raws = {h["raw"] for h in data["holds"]}
    for entry in mbx.in_place_holds:
        assert entry in raws
    for hold in data["holds"]:
        assert hold["meaning"]
        if hold["preserves"]:
            assert hold["release"]
            assert hold["expires"] == "never" or len(hold["expires"]) == 10
    lock = [h for h in data["holds"] if h["locked"]]
    for hold in lock:
        assert hold["release"].startswith("cannot: Policy '")
    text = act.run("holds", "show", mbx.exchange_guid)
    assert text.exit_code == 0
    assert f"<{mbx.primary_smtp}> ({mbx.exchange_guid})" in text.stdout
    assert "Source: cache (use --refresh to read Exchange now)" in text.stdout


def test_holds_show_refresh_reads_exchange(act: ActEnv) -> None:
    mbx = act.pick(lambda m, t: not m.compliance_tag_hold, "mailbox without a label hold")
    act.tenant.update(mbx.exchange_guid, compliance_tag_hold=True)  # changed after the sync

    stale = act.json("holds", "show", mbx.exchange_guid)[1]
    result, fresh = act.json("holds", "show", mbx.exchange_guid, "--refresh")

    assert result.exit_code == 0, result.stderr
    assert "label" not in [h["kind"] for h in stale["holds"]]
    assert "label" in [h["kind"] for h in fresh["holds"]]
    assert fresh["source"] == "exchange"
    assert "label" in act.cached_row(mbx.exchange_guid)["hold_types"]


def test_holds_show_unknown_identity_exits_4(act: ActEnv) -> None:
    result = act.run("holds", "show", "no.such.person@contoso.com")
    assert result.exit_code == 4
    assert result.stderr.splitlines()[0] == "Error: no mailbox 'no.such.person@contoso.com' in the cache"


# ------------------------------------------------------------------------------------------------- release
def test_release_litigation_keeps_other_holds_and_the_cache_follows(act: ActEnv) -> None:
    mbx = act.pick(
        lambda m, t: m.litigation_hold and bool(_others_than(m, t, "litigation", "delay", "delay-release")),
        "mailbox on Litigation Hold with other holds",
    )
    guid = mbx.exchange_guid

    result, data = act.json("holds", "release", guid, "--type", "litigation", "--yes")

    assert result.exit_code == 0, result.stderr
    assert data["status"] == "success"
    now = act.tenant.mailboxes[guid]
    assert now.litigation_hold is False
    assert now.state == INACTIVE
    cached = act.cached(guid)
    assert cached is not None and cached["litigation_hold_enabled"] == 0
    assert "litigation" not in cached["hold_types"]
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["started", "success"]
    assert rows[0]["operation_id"] == rows[1]["operation_id"]
    assert rows[0]["user"] == USER
    assert rows[0]["details"]["before"]["LitigationHoldEnabled"] is True
    assert rows[0]["details"]["holds"][0].startswith("LitigationHoldEnabled=True")
    assert rows[0]["details"]["removes_last_hold"] is False
    assert rows[0]["details"]["cmdlets"][0]["parameters"] == {
        "Identity": guid,
        "InactiveMailbox": True,
        "LitigationHoldEnabled": False,
    }
    assert rows[1]["details"]["after"]["LitigationHoldEnabled"] is False
    assert rows[1]["details"]["soft_deleted"] is False


def test_release_what_if_changes_nothing(act: ActEnv) -> None:
    mbx = act.pick(lambda m, t: m.litigation_hold, "mailbox on Litigation Hold")
    before = mbx.to_state()
    executed = act.sim.exchange.executed["Set-Mailbox"]

    result = act.run("holds", "release", mbx.exchange_guid, "--type", "litigation", "--what-if")

    assert result.exit_code == 0, result.stderr
    assert "Preview: release" in result.stdout
    assert f"Set-Mailbox -Identity {mbx.exchange_guid} -InactiveMailbox -LitigationHoldEnabled $false" in result.stdout
    after = act.tenant.mailboxes[mbx.exchange_guid].to_state()
    assert {k: v for k, v in after.items() if k != "when_changed"} == {
        k: v for k, v in before.items() if k != "when_changed"
    }
    assert act.sim.exchange.executed["Set-Mailbox"] == executed
    rows = act.audit(mbx.exchange_guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["preview"]
    assert rows[0]["details"]["cmdlets"][0]["cmdlet"] == "Set-Mailbox"


def test_release_of_the_last_hold_needs_the_address_typed_even_with_yes(act: ActEnv) -> None:
    mbx = act.pick(only_litigation, "mailbox held only by Litigation Hold")
    guid = mbx.exchange_guid

    wrong = act.run("holds", "release", guid, "--type", "litigation", "--yes", input="someone@else.com\n")

    assert wrong.exit_code == 6  # declined
    assert (
        "Consequence: this removes the last hold: Exchange keeps the mailbox under a 30-day delay hold (applied at its "
        "next Managed Folder Assistant run), then soft-deletes it and purges it 183 days after the hold's removal; "
        "until the purge its content can still be restored into another mailbox (imm restore)"
    ) in " ".join(wrong.stdout.split())
    assert f"Type the mailbox's primary SMTP address ({mbx.primary_smtp}) to confirm" in wrong.stderr
    assert "Error: not confirmed (the typed address does not match): nothing was changed" in wrong.stderr
    assert act.tenant.mailboxes[guid].litigation_hold is True
    assert [(r["result"], r["error_message"]) for r in act.audit(guid, "REMOVE_HOLD")] == [
        ("cancelled", "not confirmed (the typed address does not match): nothing was changed")
    ]

    typed = act.run("holds", "release", guid, "--type", "litigation", "--yes", input=mbx.primary_smtp.upper() + "\n")

    assert typed.exit_code == 0, typed.stderr
    # identify-a-hold article: a delay hold follows the removal; the mailbox stays inactive until it ends.
    assert "it was the last hold: Exchange keeps the mailbox under a delay hold until ≈ " in typed.stdout
    assert "restorable with imm restore until then" in typed.stdout
    now = act.tenant.mailboxes[guid]
    assert (now.state, now.delay_hold, now.litigation_hold) == (INACTIVE, True, False)
    cached = act.cached_row(guid)
    assert (cached["lifecycle_state"], cached["releasable"]) == ("pending-delay", 0)
    assert cached["delay_hold_until"] and cached["purge_on"]
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["cancelled", "started", "success"]  # the mistyped attempt, then this one
    assert rows[1]["details"]["removes_last_hold"] is True
    assert rows[2]["details"]["soft_deleted"] is False
    assert rows[2]["details"]["after"]["IsInactiveMailbox"] is True
    assert rows[2]["details"]["after"]["DelayHoldApplied"] is True


def test_release_of_the_last_hold_in_scripts(act: ActEnv) -> None:
    mbx = act.pick(only_litigation, "mailbox held only by Litigation Hold")

    result, data = act.json(
        "holds", "release", mbx.exchange_guid, "--type", "all-unlocked", "--yes", "--i-understand-last-hold"
    )

    assert result.exit_code == 0, result.stderr
    assert data["status"] == "success"
    assert data["preview"]["removes_last_hold"] is True
    assert act.tenant.mailboxes[mbx.exchange_guid].delay_hold is True  # a delay hold follows the last removal


def test_release_org_policy_excludes_the_mailbox(act: ActEnv) -> None:
    org = act.tenant.special["org_all_policy"].replace("-", "")
    mbx = act.pick(
        lambda m, t: (
            f"org:mbx{org}:3" in [r.lower() for r in t.hold_reasons(m)]
            and bool(_others_than(m, t, "org-policy", "delay", "delay-release"))
        ),
        "mailbox under the org-wide policy with other holds",
    )

    result = act.run("holds", "release", mbx.exchange_guid, "--type", "org-policy", "--yes")

    assert result.exit_code == 0, result.stderr
    now = act.tenant.mailboxes[mbx.exchange_guid]
    assert f"-mbx{org}" in now.in_place_holds
    assert not any(r.startswith("org:") for r in act.tenant.hold_reasons(now))
    assert act.tenant.org_holds  # the policy itself is untouched
    assert "org-policy" not in act.cached_row(mbx.exchange_guid)["hold_types"]


def test_release_policy_removes_the_mailbox_from_the_policy(act: ActEnv) -> None:
    mbx = act.pick(
        lambda m, t: (
            bool(unlocked_policy_tags(m, t))
            and not locked_policy_tags(m, t)
            and bool(_others_than(m, t, "retention-policy", "skype-policy", "delay", "delay-release"))
        ),
        "mailbox in an unlocked retention policy",
    )
    tags = unlocked_policy_tags(mbx, act.tenant)
    executed = act.sim.exchange.executed["Set-RetentionCompliancePolicy"]

    result = act.run("holds", "release", mbx.exchange_guid, "--type", "policy", "--yes")

    assert result.exit_code == 0, result.stderr
    assert "(Security & Compliance)" in result.stdout
    now = act.tenant.mailboxes[mbx.exchange_guid]
    assert not any(tag in now.in_place_holds for tag in tags)
    assert act.sim.exchange.executed["Set-RetentionCompliancePolicy"] >= executed + len(tags)


def test_release_locked_policy_is_blocked(act: ActEnv) -> None:
    mbx = act.pick(lambda m, t: bool(locked_policy_tags(m, t)), "mailbox in a Preservation-Locked policy")
    executed = act.sim.exchange.executed["Set-RetentionCompliancePolicy"]

    result = act.run("holds", "release", mbx.exchange_guid, "--type", "policy", "--yes")

    assert result.exit_code == 5
    assert "preservation-lock: Policy '" in result.stderr
    assert "is under Preservation Lock: the mailbox cannot be removed from it" in result.stderr
    assert act.sim.exchange.executed["Set-RetentionCompliancePolicy"] == executed
    assert all(
        tag in act.tenant.mailboxes[mbx.exchange_guid].in_place_holds for tag in locked_policy_tags(mbx, act.tenant)
    )
    assert [r["result"] for r in act.audit(mbx.exchange_guid, "REMOVE_HOLD")] == ["failure"]


def test_release_ediscovery_is_blocked_unless_forced_and_typed(act: ActEnv) -> None:
    mbx = act.pick(lambda m, t: _has_case_hold(m) and len(t.hold_reasons(m)) >= 2, "mailbox on an eDiscovery hold")
    guid = mbx.exchange_guid
    case = next(h for h in mbx.in_place_holds if h.lower().startswith("unih"))

    blocked = act.run("holds", "release", guid, "--type", "ediscovery", "--yes")
    assert blocked.exit_code == 5
    assert "ediscovery-case-hold: eDiscovery case hold '" in blocked.stderr
    assert "releasing or closing the case deletes the inactive mailboxes that depend on it" in blocked.stderr
    assert "Hint: an eDiscovery case hold can be released with --force-ediscovery" in blocked.stderr

    untyped = act.run("holds", "release", guid, "--type", "ediscovery", "--force-ediscovery", "--yes", input="\n")
    assert untyped.exit_code == 6
    assert case in act.tenant.mailboxes[guid].in_place_holds

    forced = act.run(
        "holds", "release", guid, "--type", "ediscovery", "--force-ediscovery", "--yes", input=mbx.primary_smtp + "\n"
    )
    assert forced.exit_code == 0, forced.stderr
    assert case not in act.tenant.mailboxes[guid].in_place_holds
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["failure", "cancelled", "started", "success"]  # blocked, untyped, forced
    assert rows[2]["details"]["force_ediscovery"] is True
    assert rows[2]["details"]["cmdlets"][0]["cmdlet"] == "Set-CaseHoldPolicy"


def test_release_with_nothing_of_that_type_does_nothing(act: ActEnv) -> None:
    mbx = act.pick(lambda m, t: not m.compliance_tag_hold, "mailbox without a label hold")

    result, data = act.json("holds", "release", mbx.exchange_guid, "--type", "label", "--yes")

    assert result.exit_code == 0, result.stderr
    assert data["status"] == "skipped"
    assert data["message"] == "Nothing to do: the mailbox has no label hold imm can release"
    assert [(r["result"], r["error_message"]) for r in act.audit(mbx.exchange_guid, "REMOVE_HOLD")] == [
        ("skipped", "Nothing to do: the mailbox has no label hold imm can release")
    ]


def test_release_refused_by_exchange_records_microsofts_message(act: ActEnv) -> None:
    mbx = act.pick(
        lambda m, t: bool(unlocked_policy_tags(m, t)) and not locked_policy_tags(m, t),
        "mailbox in an unlocked retention policy",
    )
    act.sim.exchange.deny_role(USER, "compliance")
    try:
        result, data = act.json("holds", "release", mbx.exchange_guid, "--type", "policy", "--yes")
    finally:
        act.sim.exchange.grant_role(USER, "compliance")

    assert result.exit_code == 1
    assert data["status"] == "failed"
    assert "access denied for Set-RetentionCompliancePolicy (HTTP 403)" in data["message"]
    rows = act.audit(mbx.exchange_guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["started", "failure"]
    assert "access denied for Set-RetentionCompliancePolicy (HTTP 403)" in rows[1]["error_message"]
    assert rows[1]["details"]["steps_done"] == []
    assert rows[1]["details"]["error_code"] == "access_denied"
    assert all(
        tag in act.tenant.mailboxes[mbx.exchange_guid].in_place_holds for tag in unlocked_policy_tags(mbx, act.tenant)
    )


def test_ctrl_c_during_a_release_is_recorded_with_an_unknown_outcome(act: ActEnv) -> None:
    mbx = act.pick(
        lambda m, t: m.litigation_hold and bool(_others_than(m, t, "litigation", "delay", "delay-release")),
        "mailbox on Litigation Hold with other holds",
    )
    act.sim.config.faults.slow_seconds = 2.0
    act.sim.exchange.fail_next("Set-Mailbox", "slow")
    env = {**os.environ, **act.env}
    env.pop("IMM_RAISE_ERRORS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "imm", "holds", "release", mbx.exchange_guid, "--type", "litigation", "--yes"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not act.audit(mbx.exchange_guid, "REMOVE_HOLD"):
            assert time.monotonic() < deadline, "the release never started"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        time.sleep(0.2)  # inside the slow Set-Mailbox call
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    message = "interrupted by the user while the change was in progress: it may or may not have been made"
    assert stderr.splitlines()[0] == f"Error: {message}"
    assert "Hint: check the mailbox in Exchange" in stderr
    rows = act.audit(mbx.exchange_guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["started", "unknown"]
    assert (rows[1]["error_message"], rows[1]["details"]["outcome"]) == (message, "unknown")
    deadline = time.monotonic() + 10  # the call had reached Exchange: the hold goes all the same
    while act.tenant.mailboxes[mbx.exchange_guid].litigation_hold and time.monotonic() < deadline:
        time.sleep(0.05)
    assert act.tenant.mailboxes[mbx.exchange_guid].litigation_hold is False


def test_a_change_exchange_answers_with_adminapi_errors_is_a_failure(act: ActEnv) -> None:
    """HTTP 200 with ``@adminapi.errors`` (domain.md §9): output, exit code and audit all say failure."""
    mbx = act.pick(
        lambda m, t: m.compliance_tag_hold and not m.litigation_hold and len(t.hold_reasons(m)) >= 2,
        "mailbox with a label hold and another hold",
    )
    guid = mbx.exchange_guid
    with act.tenant.lock:
        mbx.label_policy_reapplies = True  # a published label policy stamps the hold again at once

    result, data = act.json("holds", "release", guid, "--type", "label", "--yes")

    assert result.exit_code == 1, result.stderr
    assert data["status"] == "failed"
    expected = (
        f"Set-Mailbox failed: Exchange reported an error: The ComplianceTagHoldApplied hold of '{guid}' was "
        "applied again by a published retention label policy; no settings have been modified."
    )
    assert data["message"] == expected
    assert data["details"]["error_code"] == "non_terminating_error"
    rows = act.audit(guid, "REMOVE_HOLD")
    assert [r["result"] for r in rows] == ["started", "failure"]
    assert rows[1]["error_message"] == expected
    assert rows[1]["details"]["error_code"] == "non_terminating_error"
    assert rows[1]["details"]["exchange_error"]["status"] == 200
    assert act.tenant.mailboxes[guid].compliance_tag_hold is True


def test_policies_of_every_kind_are_named_and_released_the_way_microsoft_documents(act: ActEnv) -> None:
    """App retention policies (Get-/Set-AppRetentionCompliancePolicy, Example 2: -AddExchangeLocationException with
    -DeletedResources), Teams chats policies (Set-RetentionCompliancePolicy Example 5), adaptive-scope policies
    (-RemoveExchangeLocation is in the static parameter set only) and label policies (mbx…:1 from a label policy)."""
    tenant = act.tenant

    def new(**fields: Any) -> Policy:
        return tenant.add_policy(Policy(guid=str(uuid.uuid4()), **fields))

    app = new(name="Teams private channels 7y", kind="app", applications=["User:MicrosoftTeams"], duration_days=2555)
    chats = new(name="Teams chats 3y", location_kind="teams-chat", duration_days=1095)
    adaptive = new(name="Leavers adaptive", adaptive_scopes=["Leavers scope"])
    labels = new(name="Publish contract labels", action=1, published_label="Contracts 10y")
    held = [
        act.pick(
            lambda m, t: m.litigation_hold and not unlocked_policy_tags(m, t) and not locked_policy_tags(m, t),
            "mailbox on Litigation Hold in no retention policy",
        )
        for _ in range(3)
    ]
    for mbx, policy in zip(held, (app, chats, adaptive), strict=True):
        tenant.add_hold(mbx.exchange_guid, policy.hold_tag)
    tenant.add_hold(held[0].exchange_guid, labels.hold_tag)
    assert act.run("sync").exit_code == 0

    result, shown = act.json("holds", "show", held[0].exchange_guid)
    assert result.exit_code == 0, result.stderr
    meanings = {h["raw"]: (h["meaning"], h["preserves"]) for h in shown["holds"]}
    assert meanings[app.hold_tag][0].startswith(
        "App retention policy 'Teams private channels 7y' for Teams private channel messages"
    )
    assert meanings[labels.hold_tag] == (
        "Retention label policy 'Publish contract labels': it publishes or applies retention labels (the hold a "
        "label places shows as ComplianceTagHoldApplied), it is not a delete-only retention policy",
        False,
    )

    released = act.run("holds", "release", held[0].exchange_guid, "--type", "policy", "--yes")
    assert released.exit_code == 0, released.stderr
    assert "Set-AppRetentionCompliancePolicy" in released.stdout
    assert app.hold_tag not in tenant.mailboxes[held[0].exchange_guid].in_place_holds
    assert held[0].primary_smtp in app.exceptions

    chat = act.run("holds", "release", held[1].exchange_guid, "--type", "policy", "--yes")
    assert chat.exit_code == 0, chat.stderr
    assert "-AddTeamsChatLocationException" in chat.stdout
    assert chats.hold_tag not in tenant.mailboxes[held[1].exchange_guid].in_place_holds

    blocked = act.run("holds", "release", held[2].exchange_guid, "--type", "policy", "--yes")
    assert blocked.exit_code == 5
    assert "adaptive-policy: Policy 'Leavers adaptive' uses adaptive scopes" in blocked.stderr
    assert "Set-AdaptiveScope" in blocked.stderr
    assert adaptive.hold_tag in tenant.mailboxes[held[2].exchange_guid].in_place_holds
