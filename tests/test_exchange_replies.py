"""Exchange's real replies, including the ugly ones, read by imm's real client and the real ``imm`` process.

Shapes (exo-rest.md §4): the 403 of NUL bytes declared ``Content-Encoding: gzip`` (DrollRobot/azure-auth, measured),
the concurrency-limit text with a 4xx status (GreyCorbel/ExoHelper), 408, a proxy's HTML page, a body that is not
JSON, a JSON body cut in the middle, a reply cut off before its Content-Length, a wrong content type. Each is served
by the simulated tenant over TLS and must become one typed error with a one-line message, never a traceback.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import make_simulator, run_imm
from imm.config import write_profile
from imm.errors import ExitStatus
from imm.exchange import (
    AccessDeniedError,
    AmbiguousOutcomeError,
    ExchangeClient,
    ThrottledError,
    TransientError,
    UnreadableReplyError,
)
from imm.simulator import Simulator
from imm.simulator.model import INACTIVE
from test_exchange_contract import ADMIN, Tokens, exchange, requests_for

MAIL_RECIPIENTS = (
    "Mail Recipients or View-Only Recipients (Exchange role groups Recipient Management, View-Only Organization "
    "Management)"
)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Simulator]:
    with make_simulator(tmp_path, mailboxes=30, retry_after_seconds=0.02) as s:
        yield s


@pytest.fixture
def client(sim: Simulator, tmp_path: Path) -> Iterator[ExchangeClient]:
    with exchange(sim, tmp_path, max_retries=2, max_throttle_retries=2) as c:
        yield c


def _statuses(sim: Simulator, cmdlet: str) -> list[Any]:
    return [e["status"] for e in requests_for(sim, cmdlet)]


# ------------------------------------------------------------------------------------- the real 403 shape
def test_the_real_403_is_access_denied_naming_the_role(sim: Simulator, client: ExchangeClient) -> None:
    """NUL bytes declared gzip: no DecodingError, one line naming the cmdlet and the role, not retried."""
    sim.exchange.deny_cmdlet("Get-Mailbox")
    with pytest.raises(AccessDeniedError) as caught:
        client.invoke_all("Get-Mailbox", {"InactiveMailboxOnly": True})
    error = caught.value
    assert str(error) == (
        f"access denied for Get-Mailbox (HTTP 403): it needs the {MAIL_RECIPIENTS} role, or this endpoint does not "
        "know the cmdlet"
    )
    assert (error.status, error.role, error.exit_code, error.microsoft_message) == (
        403,
        MAIL_RECIPIENTS,
        ExitStatus.FAILED,
        None,
    )
    assert error.hint == f"ask an administrator to assign {MAIL_RECIPIENTS}"
    assert _statuses(sim, "Get-Mailbox") == [403]
    # the denial is per cmdlet: the next one runs
    assert client.invoke_all("Get-OrganizationConfig")


def test_the_403_really_is_declared_gzip(sim: Simulator, tmp_path: Path) -> None:
    """The simulator serves what Microsoft serves: a plain httpx read of it fails to decode (the original crash)."""
    import ssl

    import httpx

    sim.exchange.deny_cmdlet("Get-Mailbox")
    token = Tokens(sim, sim.base_url)(False)
    request: dict[str, Any] = {
        "url": f"{sim.base_url}/adminapi/beta/{sim.config.tenant_id}/InvokeCommand",
        "json": {"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {}}},
        "headers": {"Authorization": f"Bearer {token}", "X-AnchorMailbox": f"UPN:{ADMIN}"},
    }
    with httpx.Client(verify=ssl.create_default_context(cafile=str(sim.ca_path)), trust_env=False) as http:
        with http.stream("POST", **request) as response:
            assert (response.status_code, response.headers["content-encoding"]) == (403, "gzip")
            assert b"".join(response.iter_raw()) == b"\x00\x00\x00\x00"
        with pytest.raises(httpx.DecodingError):
            http.post(**request)


def test_an_unknown_cmdlet_names_no_role(sim: Simulator, client: ExchangeClient) -> None:
    with pytest.raises(AccessDeniedError) as caught:
        client.invoke_all("Get-Nothing")
    assert str(caught.value) == (
        "access denied for Get-Nothing (HTTP 403): the account lacks the role that grants it, or this endpoint does "
        "not know the cmdlet"
    )
    assert caught.value.role is None


# ------------------------------------------------------------------------------- replies that are not JSON
@pytest.mark.parametrize(
    ("kind", "error_kind", "message", "statuses"),
    [
        (
            "html_200",
            "html",
            "Get-OrganizationConfig failed: an HTML page ('Sign in to continue') came back instead of Exchange's "
            "reply: a proxy or gateway answered (HTTP 200)",
            [200],
        ),
        (
            "not_json",
            "not_json",
            "Get-OrganizationConfig failed: the reply is not JSON: Service is starting, try later (HTTP 200)",
            [200],
        ),
        (
            "content_type",
            "content_type",
            "Get-OrganizationConfig failed: the reply is application/xml, not JSON (HTTP 200)",
            [200],
        ),
        (
            "truncated_json",
            "truncated",
            "Get-OrganizationConfig failed: the JSON reply is cut off or malformed (40 bytes) (HTTP 200)",
            [200],
        ),
    ],
)
def test_a_reply_that_is_not_exchanges_json_is_a_typed_one_line_error(
    sim: Simulator, client: ExchangeClient, kind: str, error_kind: str, message: str, statuses: list[Any]
) -> None:
    sim.exchange.fail_next("Get-OrganizationConfig", kind)
    with pytest.raises(UnreadableReplyError) as caught:
        client.invoke_all("Get-OrganizationConfig")
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)
    assert (caught.value.kind, caught.value.status, caught.value.exit_code) == (error_kind, 200, ExitStatus.FAILED)
    assert caught.value.details()["kind"] == error_kind
    assert _statuses(sim, "Get-OrganizationConfig") == statuses


def test_a_proxy_error_page_is_retried_then_named(sim: Simulator, client: ExchangeClient) -> None:
    sim.exchange.fail_next("Get-OrganizationConfig", "html_502")
    assert client.invoke_all("Get-OrganizationConfig")  # a passing gateway hiccup
    sim.exchange.fail_next("Get-OrganizationConfig", "html_502", 3)
    with pytest.raises(TransientError) as caught:
        client.invoke_all("Get-OrganizationConfig")
    assert str(caught.value) == (
        "Get-OrganizationConfig failed: an HTML page ('502 Bad Gateway') came back instead of Exchange's reply: a "
        "proxy or gateway answered"
    )
    assert _statuses(sim, "Get-OrganizationConfig") == [502, 200, 502, 502, 502]


def test_a_reply_cut_off_before_its_end(sim: Simulator, client: ExchangeClient) -> None:
    """Content-Length announces more than arrives: retried for a read, then named as a cut-off reply."""
    sim.exchange.fail_next("Get-OrganizationConfig", "cut_off")
    assert client.invoke_all("Get-OrganizationConfig")
    sim.exchange.fail_next("Get-OrganizationConfig", "cut_off", 3)
    with pytest.raises(TransientError) as caught:
        client.invoke_all("Get-OrganizationConfig")
    assert str(caught.value).startswith(
        "Get-OrganizationConfig failed: the reply from Exchange Online was cut off before its end ("
    )
    assert str(caught.value).endswith(") after 3 attempts")


def test_a_creating_call_cut_off_is_not_repeated(sim: Simulator, client: ExchangeClient) -> None:
    sim.exchange.fail_next("New-MailboxRestoreRequest", "cut_off")
    with pytest.raises(AmbiguousOutcomeError, match="New-MailboxRestoreRequest got a cut-off reply after the request"):
        client.invoke_all("New-MailboxRestoreRequest", {"SourceMailbox": "x", "TargetMailbox": "y"})
    assert _statuses(sim, "New-MailboxRestoreRequest") == [200]


# ---------------------------------------------------------------------------------------- throttling
def test_the_concurrency_message_is_throttling_whatever_the_status(sim: Simulator, client: ExchangeClient) -> None:
    sim.exchange.fail_next("Get-OrganizationConfig", "concurrency", 2)
    assert client.invoke_all("Get-OrganizationConfig")
    assert _statuses(sim, "Get-OrganizationConfig") == [400, 400, 200]
    assert client.stats_snapshot()["throttled"] == 2
    assert client.limiter.limit < client.limiter.maximum  # the limiter heard it as throttling

    sim.exchange.fail_next("Get-OrganizationConfig", "concurrency", 3)
    with pytest.raises(ThrottledError) as caught:
        client.invoke_all("Get-OrganizationConfig")
    assert str(caught.value) == (
        "Get-OrganizationConfig failed: still throttled by Exchange Online after 3 attempts (You have reached the "
        "maximum number of concurrent requests per tenant. Please wait and try again.)"
    )
    assert caught.value.status == 400


def test_a_creating_call_may_repeat_after_the_concurrency_message(sim: Simulator, client: ExchangeClient) -> None:
    """Like a 429, the message says the request was turned away before it ran."""
    sim.exchange.fail_next("Get-Mailbox", "concurrency")
    assert client.invoke_all("Get-Mailbox", {"InactiveMailboxOnly": True})
    assert _statuses(sim, "Get-Mailbox") == [400, 200]


def test_408_is_transient(sim: Simulator, client: ExchangeClient) -> None:
    sim.exchange.fail_next("Get-OrganizationConfig", "408")
    assert client.invoke_all("Get-OrganizationConfig")
    sim.exchange.fail_next("Get-OrganizationConfig", "408", 3)
    with pytest.raises(TransientError, match=r"^Get-OrganizationConfig failed: The request timed out\.$"):
        client.invoke_all("Get-OrganizationConfig")
    assert _statuses(sim, "Get-OrganizationConfig") == [408, 200, 408, 408, 408]


def test_a_tenant_that_throttles_with_the_4xx_message_is_followed(tmp_path: Path) -> None:
    """Over-budget requests answered with the plain text and a 400 instead of 429: slowed down, nothing lost."""
    with make_simulator(tmp_path, mailboxes=40, concurrency_budget=2, throttle_status=400, latency_ms=20) as sim:
        with exchange(sim, tmp_path, concurrency=8) as client:
            guids = sorted(m.exchange_guid for m in sim.exchange.tenant.mailboxes.values() if m.state == INACTIVE)
            results = list(
                client.map(
                    lambda g: client.invoke_all(
                        "Get-MailboxStatistics", {"Identity": g, "IncludeSoftDeletedRecipients": True}
                    ),
                    guids,
                    workers=8,
                )
            )
        assert [r for _, r in results if isinstance(r, BaseException)] == []
        assert 400 in _statuses(sim, "Get-MailboxStatistics")
        assert sim.exchange.max_in_flight <= 2


# -------------------------------------------------------------------------------------- paging warning
TRUNCATION = (
    "There are more results available than are currently displayed. To view them, increase the value for the "
    "ResultSize parameter."
)


def test_the_pagination_warning_is_not_a_warning_while_pages_follow(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Exchange says "more results" on every page with a next one; imm pages on, so, as Microsoft's module does,
    it keeps only a warning that is still true at the end (a ResultSize reached)."""
    caplog.set_level(logging.DEBUG, logger="imm.exchange")
    with make_simulator(tmp_path, mailboxes=40) as sim:
        with exchange(sim, tmp_path, page_size=10) as client:
            everything = client.invoke_all("Get-Mailbox", {"InactiveMailboxOnly": True}, result_size="Unlimited")
            assert len(everything) > 10 and client.warnings == [] and client.last_warnings == []
            assert {r.levelno for r in caplog.records if "more results" in r.getMessage()} == {logging.DEBUG}
            caplog.clear()
            # a ResultSize that cuts the listing: the last page's warning is true and kept, at WARNING
            assert len(client.invoke_all("Get-Mailbox", {"InactiveMailboxOnly": True}, result_size=25)) == 25
            assert client.last_warnings == [TRUNCATION]
            assert [r.levelno for r in caplog.records if "more results" in r.getMessage()][-1] == logging.WARNING
        pages = [e["page"] for e in sim.exchange.request_log if e["cmdlet"] == "Get-Mailbox"]
        assert pages.count(True) >= 3  # the listings were paged


# ------------------------------------------------------------------------------------- the imm process
def _profile(sim: Simulator, home: Path) -> None:
    write_profile(home / "config" / "config.toml", "sim", sim.profile_values(), make_default=True)
    result = run_imm("login")
    assert result.exit_code == 0, result.stderr


def _cached(home: Path) -> int:
    path = home / "data" / "sim.db"
    if not path.exists():
        return 0
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM inactive_mailboxes").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_imm_sync_refused_get_mailbox_says_access_denied_and_the_role(tmp_path: Path, imm_home: Path) -> None:
    with make_simulator(tmp_path, mailboxes=10, auto_approve_after=0.0) as sim:
        _profile(sim, imm_home)
        sim.exchange.deny_cmdlet("Get-Mailbox")
        result = run_imm("sync")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [
        f"Error: access denied for Get-Mailbox (HTTP 403): it needs the {MAIL_RECIPIENTS} role, or this endpoint "
        "does not know the cmdlet",
        f"Hint: ask an administrator to assign {MAIL_RECIPIENTS}",
    ]
    assert "Traceback" not in result.stderr and "DecodingError" not in result.stderr


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        (
            "html_200",
            "Error: Get-Mailbox failed: an HTML page ('Sign in to continue') came back instead of Exchange's reply: a "
            "proxy or gateway answered (HTTP 200)",
        ),
        ("content_type", "Error: Get-Mailbox failed: the reply is application/xml, not JSON (HTTP 200)"),
    ],
)
def test_imm_sync_on_a_reply_that_is_not_json_says_what_came(
    tmp_path: Path, imm_home: Path, kind: str, line: str
) -> None:
    with make_simulator(tmp_path, mailboxes=10, auto_approve_after=0.0) as sim:
        _profile(sim, imm_home)
        sim.exchange.fail_next("Get-Mailbox", kind)
        result = run_imm("sync")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        line,
        "Hint: if a proxy sits between imm and Exchange Online, check it; otherwise try again later",
    ]
    assert _cached(imm_home) == 0


# ------------------------------------------------------------------------------------- claims challenge
def test_a_claims_challenge_is_passed_to_msal_and_answered(tmp_path: Path, imm_home: Path) -> None:
    """Conditional access asks for an authentication context mid-session: the 401's claims go to msal, which gets a
    token carrying it (the acrs claim), and the command goes on instead of failing after a plain refresh."""
    with make_simulator(tmp_path, mailboxes=10, auto_approve_after=0.0) as sim:
        _profile(sim, imm_home)
        sim.exchange.require_auth_context("c1")
        result = run_imm("sync")
        assert result.exit_code == 0, result.stderr
        log = list(sim.exchange.request_log)
        challenged = [e["client_request_id"] for e in log if e["status"] == 401]
        assert 1 <= len(challenged) <= 4  # the first calls (in parallel: org config, the two listings), each once
        for request_id in challenged:  # each answered by the next try of the same call, with the new token
            assert [e["status"] for e in log if e["client_request_id"] == request_id] == [401, 200]
        assert sim.exchange.required_acrs == {"*": "c1"}
    assert _cached(imm_home) == 10


def test_a_claims_challenge_that_cannot_be_met_is_a_sign_in_error(tmp_path: Path) -> None:
    """A provider that cannot meet the claims (the test's plain token source): one refresh, then exit 3."""
    from imm.exchange import ExoAuthError

    with make_simulator(tmp_path, mailboxes=5) as sim:
        sim.exchange.require_auth_context("c1")
        with exchange(sim, tmp_path) as client:
            with pytest.raises(ExoAuthError) as caught:
                client.invoke_all("Get-OrganizationConfig")
        assert caught.value.exit_code == ExitStatus.SIGN_IN
        assert [e["status"] for e in sim.exchange.request_log] == [401, 401]


def test_the_claims_of_a_challenge_are_read_as_json() -> None:
    import base64

    from imm.exchange.client import claims_challenge

    wanted = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'
    encoded = base64.b64encode(wanted.encode()).decode()
    header = (
        f'Bearer realm="", authorization_uri="https://x/authorize", error="insufficient_claims", claims="{encoded}"'
    )
    assert claims_challenge({"WWW-Authenticate": header}) == wanted
    assert claims_challenge({"www-authenticate": header.replace(encoded, encoded.rstrip("="))}) == wanted
    assert claims_challenge({"WWW-Authenticate": 'Bearer error="invalid_token"'}) is None
    assert claims_challenge({"WWW-Authenticate": 'Bearer claims="%%%"'}) is None
    assert claims_challenge({}) is None
