"""The simulated Search-UnifiedAuditLog over the wire, as its cmdlet reference describes it: 100 records without a
session, blocks per SessionId with ResultIndex/ResultCount, ReturnLargeSet unsorted, ResultSize at most 5,000,
records only after the log's delay, AuditData in the Exchange admin schema."""

from __future__ import annotations

import json
from pathlib import Path

from simclient import ADMIN, SimClient, make_sim

SPAN = {"StartDate": "2000-01-01 00:00:00Z", "EndDate": "2100-01-01 00:00:00Z", "RecordType": "ExchangeAdmin"}


def test_a_change_is_recorded_in_the_exchange_admin_schema_after_the_delay(tmp_path: Path) -> None:
    with make_sim(tmp_path, mailboxes=20, audit_delay_seconds=3600) as sim:
        client = SimClient(sim)
        guid = next(m.exchange_guid for m in sim.exchange.tenant.mailboxes.values() if m.litigation_hold)
        client.values("Set-Mailbox", {"Identity": guid, "InactiveMailbox": True, "LitigationHoldEnabled": False})
        client.values("Get-Mailbox", {"Identity": guid, "InactiveMailboxOnly": True})  # reads are not audited
        assert client.values("Search-UnifiedAuditLog", SPAN) == []  # not yet
        sim.exchange.unified_audit.catch_up()
        [row] = client.values("Search-UnifiedAuditLog", SPAN)
        assert (row["RecordType"], row["Operations"], row["UserIds"], row["ResultIndex"], row["ResultCount"]) == (
            "ExchangeAdmin",
            "Set-Mailbox",
            ADMIN,
            1,
            1,
        )
        data = json.loads(row["AuditData"])
        assert (data["RecordType"], data["Workload"], data["Operation"], data["ResultStatus"]) == (
            1,
            "Exchange",
            "Set-Mailbox",
            "True",
        )
        assert data["Parameters"] == [
            {"Name": "Identity", "Value": guid},
            {"Name": "InactiveMailbox", "Value": "True"},
            {"Name": "LitigationHoldEnabled", "Value": "False"},
        ]
        assert data["ObjectId"].endswith(f"/{sim.exchange.tenant.mailboxes[guid].name}")
        assert data["ExternalAccess"] is False


def test_paging_by_session_id(tmp_path: Path) -> None:
    with make_sim(tmp_path, mailboxes=5) as sim:
        client = SimClient(sim)
        log = sim.exchange.unified_audit
        for n in range(250):
            log.record("Set-Mailbox", {"Identity": f"u{n}"}, ADMIN, f"u{n}", when=1_700_000_000 + n)
        assert len(client.values("Search-UnifiedAuditLog", SPAN)) == 100  # no session: one block of 100
        session = {**SPAN, "SessionId": "s1", "SessionCommand": "ReturnLargeSet", "ResultSize": 120}
        blocks = [client.values("Search-UnifiedAuditLog", session) for _ in range(4)]
        assert [len(b) for b in blocks] == [120, 120, 10, 0]
        indexes = [r["ResultIndex"] for b in blocks for r in b]
        assert indexes == list(range(1, 251))
        assert {r["ResultCount"] for b in blocks for r in b} == {250}
        times = [json.loads(r["AuditData"])["CreationTime"] for r in blocks[0]]
        assert times != sorted(times) and times != sorted(times, reverse=True)  # ReturnLargeSet: unsorted
        response = client.post("Search-UnifiedAuditLog", {**SPAN, "ResultSize": 5001})
        assert response.status_code == 400
        assert "between 1 and 5000" in response.text
