"""Sync asks Exchange for the properties it reads only (``$select``, exo-rest.md §2) and loses nothing by it: every
simulated mailbox builds into the same record from its full Get-Mailbox record and from the selected one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from conftest import run_imm
from imm.config import OrgMapping, write_profile
from imm.domain.records import (
    ACTIVE_RECIPIENT_PROPERTIES,
    MAILBOX_PROPERTIES,
    RECIPIENT_PROPERTIES,
    STATISTICS_PROPERTIES,
    mailbox_from_records,
    mailbox_properties,
)
from imm.exchange.encoding import strip_annotations
from imm.simulator import Simulator
from simclient import SimClient

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ORG = OrgMapping(company_attribute="CustomAttribute7", department_attribute="Office")


def _selected(client: SimClient, properties: tuple[str, ...]) -> list[dict[str, object]]:
    url: str | None = f"{client.exchange_url}?$select={','.join(properties)}"
    values: list[dict[str, object]] = []
    while url:
        response = client.post("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"}, url=url)
        assert response.status_code == 200, response.text[:300]
        body = response.json()
        values += body["value"]
        link = body.get("@odata.nextLink")
        url = f"{link}&$select={','.join(properties)}" if link else None
    return values


def test_a_mailbox_builds_the_same_from_the_selected_properties(simulator: Simulator) -> None:
    client = SimClient(simulator)
    try:
        full = client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"})
        properties = mailbox_properties(ORG)
        selected = _selected(client, properties)
    finally:
        client.close()
    assert "Office" in properties and properties[: len(MAILBOX_PROPERTIES)] == MAILBOX_PROPERTIES
    assert len(full) == len(selected) > 100
    sent, whole = len(json.dumps(selected)), len(json.dumps(full))
    assert sent < 0.75 * whole, (sent, whole)  # less is sent and kept

    def build(record: dict[str, object]) -> object:
        return mailbox_from_records(strip_annotations(record), None, None, None, ORG, None, "t", NOW)

    assert [build(s) for s in selected] == [build(f) for f in full]


def test_sync_sends_select_on_every_listing_page(simulator: Simulator, imm_home: Path) -> None:
    write_profile(imm_home / "config" / "config.toml", "sim", simulator.profile_values(), make_default=True)
    assert run_imm("login").exit_code == 0
    simulator.exchange.request_log.clear()
    result = run_imm("sync", "--full")
    assert result.exit_code == 0, result.stderr
    log = list(simulator.exchange.request_log)
    mailboxes = [e["select"] for e in log if e["cmdlet"] == "Get-Mailbox"]
    assert mailboxes and set(mailboxes) == {",".join(MAILBOX_PROPERTIES)}
    recipients = {e["select"] for e in log if e["cmdlet"] == "Get-Recipient"}  # the two listings
    assert recipients == {",".join(RECIPIENT_PROPERTIES), ",".join(ACTIVE_RECIPIENT_PROPERTIES)}
    statistics = {e["select"] for e in log if e["cmdlet"] == "Get-MailboxStatistics"}  # primary and archive
    assert statistics == {",".join(STATISTICS_PROPERTIES)}


class _Recording(dict[str, object]):
    """A record that notes every property read from it."""

    seen: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        _Recording.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> object:
        _Recording.seen.add(key)
        return super().__getitem__(key)


def test_sync_reads_no_property_it_does_not_select(simulator: Simulator) -> None:
    from imm.domain.records import address_conflicts

    client = SimClient(simulator)
    try:
        full = client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"})
    finally:
        client.close()
    _Recording.seen = set()
    for n, raw in enumerate(full):
        record = _Recording(strip_annotations(raw))
        if n % 2:
            record["MailboxPlan"] = ""  # the former licence then comes from PersistedCapabilities
        mailbox_from_records(record, None, None, None, ORG, None, "t", NOW)
        address_conflicts(record, lambda address: [])
    assert _Recording.seen and _Recording.seen <= set(mailbox_properties(ORG)), _Recording.seen - set(
        mailbox_properties(ORG)
    )


def test_sync_reads_no_statistics_property_it_does_not_select(simulator: Simulator) -> None:
    """The primary's and the archive's Get-MailboxStatistics records: what the reader touches is selected."""
    client = SimClient(simulator)
    try:
        full = client.values("Get-Mailbox", {"InactiveMailboxOnly": True, "ResultSize": "Unlimited"})
        guid = next(str(r["ExchangeGuid"]) for r in full if r.get("ArchiveStatus") == "Active")
        record = strip_annotations(next(r for r in full if r["ExchangeGuid"] == guid))
        params = {"Identity": guid, "IncludeSoftDeletedRecipients": True}
        (stats,) = client.values("Get-MailboxStatistics", params)
        (archive,) = client.values("Get-MailboxStatistics", {**params, "Archive": True})
    finally:
        client.close()
    _Recording.seen = set()
    built = mailbox_from_records(
        record, _Recording(strip_annotations(stats)), _Recording(strip_annotations(archive)), None, ORG, None, "t", NOW
    )
    assert _Recording.seen == set(STATISTICS_PROPERTIES)
    assert built.item_count == stats["ItemCount"] and built.archive_item_count == archive["ItemCount"]
