"""SessionManager against the served simulated tenant: real msal, real httpx over TLS, a real SQLite audit log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import make_simulator
from imm.auth import AuthenticationError, Authenticator
from imm.config import Config, Profile, load_config, write_profile
from imm.data.audit_logger import AuditLogger
from imm.data.database import DatabaseManager
from imm.errors import ExitStatus, SignInError
from imm.session import APP_ONLY_ANCHOR_MAILBOX, SessionManager, anchor_mailbox
from imm.simulator import Simulator

ADMIN = "admin@contoso.onmicrosoft.com"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[DatabaseManager]:
    manager = DatabaseManager(tmp_path / "imm.db")
    manager.initialize()
    yield manager
    manager.close()


def sim_config(simulator: Simulator, imm_home: Path, **values: object) -> Config:
    path = imm_home / "config" / "config.toml"
    write_profile(path, "sim", {**simulator.profile_values(), **values}, make_default=True)
    return load_config(path, "sim", env={})


def rows(db: DatabaseManager) -> list[tuple[str, str, str | None]]:
    return [(e.operation, e.result, e.error_message) for e in AuditLogger(db).get_operations()]


def test_anchor_mailbox() -> None:
    assert anchor_mailbox(Profile(), "ana@contoso.com") == "UPN:ana@contoso.com"
    assert anchor_mailbox(Profile(), None) is None
    app_only = Profile(tenant_id="contoso.onmicrosoft.com", certificate_path=Path("/x/cert.pem"))
    assert anchor_mailbox(app_only, None) == (
        "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@contoso.onmicrosoft.com"
    )
    assert APP_ONLY_ANCHOR_MAILBOX == "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"


def test_not_started(simulator: Simulator, imm_home: Path, db: DatabaseManager) -> None:
    config = sim_config(simulator, imm_home)
    session = SessionManager(config, db, Authenticator.from_profile(config.profile, prompt=lambda m: None))
    assert not session.is_active
    with pytest.raises(SignInError, match="no Exchange session is open"):
        _ = session.connection
    session.end_session()  # nothing to end: no row
    info = session.get_session_info()
    assert info == {
        "connected": False,
        "tenant": simulator.config.tenant_id,
        "user": None,
        "token_expires": None,
        "profile": "sim",
        "sign_in": None,
    }
    assert rows(db) == []


def test_device_code_then_cached_sign_in(simulator: Simulator, imm_home: Path, db: DatabaseManager) -> None:
    config = sim_config(simulator, imm_home)
    prompts: list[str] = []
    with SessionManager(config, db, Authenticator.from_profile(config.profile, prompt=prompts.append)) as session:
        assert session.is_active
        info = session.get_session_info()
        assert (info["connected"], info["user"], info["tenant"], info["sign_in"]) == (
            True,
            ADMIN,
            simulator.config.tenant_id,
            "device_code",
        )
        assert isinstance(info["token_expires"], datetime)
        assert info["token_expires"] > datetime.now(UTC)
        from imm.exchange.cmdlets import ExchangeOperations

        assert isinstance(session.connection, ExchangeOperations)
        assert session.connection.get_organization_config()["Name"]
        session.connection.get_retention_policies()
    calls = [(e["endpoint"], e["anchor"], e["status"]) for e in simulator.exchange.request_log]
    assert ("exchange", f"UPN:{ADMIN}", 200) in calls
    assert ("compliance", f"UPN:{ADMIN}", 200) in calls
    assert len(prompts) == 1
    assert not session.is_active
    with pytest.raises(SignInError):
        _ = session.connection
    # a new process: the token cache signs in without a device code
    again = SessionManager(config, db, Authenticator.from_profile(config.profile, prompt=prompts.append))
    again.start_session()
    again.end_session()
    again.end_session()  # idempotent
    assert len(prompts) == 1
    entries = AuditLogger(db).get_operations()
    assert [(e.operation, e.result, e.user) for e in entries] == [
        ("CONNECT", "success", ADMIN),
        ("DISCONNECT", "success", ADMIN),
        ("CONNECT", "success", ADMIN),
        ("DISCONNECT", "success", ADMIN),
    ]
    assert entries[0].details["sign_in"] == "device_code"
    assert entries[0].details["anchor_mailbox"] == f"UPN:{ADMIN}"
    assert entries[2].details["sign_in"] == "cache"
    assert entries[0].tenant == simulator.config.tenant_id
    assert AuditLogger(db).verify().ok
    db.close()
    stored = b"".join(p.read_bytes() for p in db.db_path.parent.iterdir() if p.name.startswith("imm.db"))
    secrets = simulator.identity.issued_secrets()
    assert secrets
    for secret in secrets:
        assert secret.encode() not in stored


def test_an_error_in_the_block_still_ends_the_session(
    simulator: Simulator, imm_home: Path, db: DatabaseManager
) -> None:
    config = sim_config(simulator, imm_home)
    with pytest.raises(RuntimeError, match="boom"):
        with SessionManager(config, db, Authenticator.from_profile(config.profile, prompt=lambda m: None)) as s:
            raise RuntimeError("boom")
    assert not s.is_active
    assert [(op, result) for op, result, _ in rows(db)] == [("CONNECT", "success"), ("DISCONNECT", "success")]


def test_app_only_sign_in_with_a_certificate(simulator: Simulator, imm_home: Path, db: DatabaseManager) -> None:
    config = sim_config(
        simulator,
        imm_home,
        client_id=simulator.identity.automation_client_id,
        certificate_path=str(simulator.identity.app_certificate_path),
    )
    with SessionManager(config, db, Authenticator.from_profile(config.profile)) as session:
        assert session.get_session_info()["sign_in"] == "certificate"
        session.connection.get_organization_config()
    assert [(e["anchor"], e["status"]) for e in simulator.exchange.request_log] == [
        (f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{simulator.config.tenant_id}", 200)
    ]
    connect = AuditLogger(db).get_operations()[0]
    assert (connect.operation, connect.result) == ("CONNECT", "success")
    assert connect.user == f"app:{simulator.identity.automation_client_id}"
    assert connect.details["anchor_mailbox"] == (
        f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{simulator.config.tenant_id}"
    )


def test_app_only_anchors_on_the_tenant_guid_of_the_token(
    simulator: Simulator, imm_home: Path, db: DatabaseManager
) -> None:
    """A profile naming the tenant by its onmicrosoft.com name still anchors (and addresses) by the GUID, as
    CIPP-API and DrollRobot/azure-auth do."""
    config = sim_config(
        simulator,
        imm_home,
        tenant_id=simulator.config.tenant_domain,
        client_id=simulator.identity.automation_client_id,
        certificate_path=str(simulator.identity.app_certificate_path),
    )
    with SessionManager(config, db, Authenticator.from_profile(config.profile)) as session:
        session.connection.get_organization_config()
        assert session.tenant == simulator.config.tenant_id
        url = session.connection.exchange.url
    guid = simulator.config.tenant_id
    assert [(e["anchor"], e["status"]) for e in simulator.exchange.request_log] == [
        (f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{guid}", 200)
    ]
    assert url.endswith(f"/adminapi/beta/{guid}/InvokeCommand")


def _when_code_pending(simulator: Simulator, action: object) -> threading.Thread:
    def run() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            codes = simulator.identity.pending_user_codes()
            if codes:
                action(codes[0])  # type: ignore[operator]
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def manual_simulator(tmp_path: Path) -> Iterator[Simulator]:
    """Sign-in waits for a person (no auto-approve); polls every second."""
    with make_simulator(tmp_path, mailboxes=5, auto_approve_after=None, device_code_interval=1) as sim:
        yield sim


def test_declined_sign_in_is_an_audited_failure(
    manual_simulator: Simulator, imm_home: Path, db: DatabaseManager
) -> None:
    config = sim_config(manual_simulator, imm_home)
    session = SessionManager(config, db, Authenticator.from_profile(config.profile, prompt=lambda m: None))
    thread = _when_code_pending(manual_simulator, manual_simulator.identity.decline)
    with pytest.raises(AuthenticationError) as raised:
        session.start_session()
    thread.join()
    assert raised.value.exit_code == ExitStatus.SIGN_IN
    assert not session.is_active
    [connect] = AuditLogger(db).get_operations()
    assert (connect.operation, connect.result, connect.error_message) == (
        "CONNECT",
        "failure",
        "The sign-in request was declined.",
    )
    assert connect.details["error_code"] == "authorization_declined"
    assert connect.user is not None and connect.user.startswith("local:")


def test_cancelled_sign_in_is_audited_as_cancelled(
    manual_simulator: Simulator, imm_home: Path, db: DatabaseManager
) -> None:
    config = sim_config(manual_simulator, imm_home)
    authenticator = Authenticator.from_profile(config.profile, prompt=lambda m: None)
    session = SessionManager(config, db, authenticator)
    thread = _when_code_pending(manual_simulator, lambda code: authenticator.cancel())
    with pytest.raises(AuthenticationError) as raised:
        session.start_session()
    thread.join()
    assert raised.value.exit_code == ExitStatus.INTERRUPTED
    assert rows(db) == [("CONNECT", "cancelled", "Sign-in cancelled.")]


def test_unreachable_identity_provider_is_an_audited_failure(
    simulator: Simulator, imm_home: Path, db: DatabaseManager
) -> None:
    config = sim_config(simulator, imm_home, authority_host="https://127.0.0.1:9")
    session = SessionManager(config, db, Authenticator.from_profile(config.profile, prompt=lambda m: None))
    with pytest.raises(SignInError):
        session.start_session()
    [(operation, result, error)] = rows(db)
    assert (operation, result) == ("CONNECT", "failure")
    assert error


def test_a_profile_at_the_organizations_authority_addresses_the_signed_in_tenant(
    simulator: Simulator, imm_home: Path, db: DatabaseManager
) -> None:
    config = sim_config(simulator, imm_home, tenant_id="organizations")
    with SessionManager(config, db, Authenticator.from_profile(config.profile, prompt=lambda m: None)) as session:
        assert session.tenant == simulator.config.tenant_id
        exchange, compliance = session._clients
        assert exchange.tenant == compliance.tenant == simulator.config.tenant_id
        assert exchange.limiter is compliance.limiter  # one throttling budget per tenant
        assert session.connection.get_organization_config()["Name"]
