"""The simulated tenant: Entra ID (device code, tokens) and Exchange Online / Security & Compliance
(REST ``InvokeCommand``) on one local HTTPS server. Imports nothing from the rest of imm (design §2, §8).

Layout on the server (``base`` is ``https://127.0.0.1:PORT``):

- Entra ID: ``{base}/{tenant}/v2.0/.well-known/openid-configuration``, ``{base}/{tenant}/oauth2/v2.0/devicecode``,
  ``{base}/{tenant}/oauth2/v2.0/token``, ``{base}/devicelogin`` (the page where a person types the code).
- Exchange Online: ``{base}/adminapi/beta/{tenant}/InvokeCommand`` (token audience ``{base}``).
- Azure Monitor Logs Ingestion: ``{base}/ingest/dataCollectionRules/{dcr}/streams/{stream}`` (``monitor``).
- Security & Compliance: ``{base}/compliance/adminapi/beta/{tenant}/InvokeCommand`` answers 302 to the
  regional ``{base}/compliance/eur02/adminapi/beta/{tenant}/InvokeCommand`` (token audience ``{base}/compliance``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imm.simulator.server import HttpsServer, Router

DEFAULT_TENANT_ID = "6f1b7c2e-3d4a-4b5c-9e8f-0a1b2c3d4e5f"
DEFAULT_TENANT_DOMAIN = "contoso.onmicrosoft.com"
DEFAULT_CLIENT_ID = "fb78d390-0c51-40cd-8e17-fdbfab77341b"


@dataclass
class FaultConfig:
    """Fault injection for Exchange calls: each a probability (0..1) or a duration."""

    error_5xx_rate: float = 0.0  # answer 503 (or 500/504) instead of running the cmdlet
    reset_rate: float = 0.0  # drop the connection without an answer
    # run the cmdlet, then drop the connection: the change is made and its reply lost (a changing cmdlet only:
    # Set-/New-/Remove-/Add-/Enable-/Disable-/Start-/Suspend-/Resume-*; a lost read reply is a plain reset)
    reset_after_commit_rate: float = 0.0
    slow_rate: float = 0.0  # add slow_seconds to the reply
    slow_seconds: float = 0.0
    throttle_rate: float = 0.0  # answer 429 with Retry-After even under the budget


@dataclass
class SimulatorConfig:
    tenant_id: str = DEFAULT_TENANT_ID
    tenant_domain: str = DEFAULT_TENANT_DOMAIN
    client_id: str = DEFAULT_CLIENT_ID
    mailboxes: int = 200
    seed: int = 1
    latency_ms: float = 0.0  # added to every Exchange call
    concurrency_budget: int = 10  # concurrent Exchange requests per tenant before 429
    retry_after_seconds: float = 1.0
    # The status of an over-budget reply: 429 (+ Retry-After, JSON error), or another 4xx carrying only the plain
    # text "You have reached the maximum number of concurrent requests per tenant…" (the shape ExoHelper handles).
    throttle_status: int = 429
    token_lifetime: int = 3600  # seconds; <= 300 makes msal refresh on every silent call
    auto_approve_after: float | None = None  # seconds after the first poll; None: a person approves on the page
    device_code_expires_in: int = 900  # seconds a device code stays usable (Entra: 900)
    device_code_interval: int = 5  # polling interval the device code response asks for (at least 1)
    app_client_id: str | None = None  # the app-only registration "imm-automation"; None: a GUID from tenant_id
    restore_seconds: float = 6.0  # time a restore request takes from Queued to Completed
    # the length of a lifecycle "day": the 30-day delay hold and the 183 days to the purge pass this fast
    lifecycle_day_seconds: float = 86400.0
    page_link_expiry: float = 1800.0  # seconds an @odata.nextLink stays valid
    audit_delay_seconds: float = 0.0  # how long a change takes to show in Search-UnifiedAuditLog
    state_file: Path | None = None
    data_dir: Path = field(default_factory=lambda: Path("."))  # TLS files, keys
    faults: FaultConfig = field(default_factory=FaultConfig)
    hostile_data: bool = False  # some directory values hold escape sequences, NUL, RTL, formulas (generator)


class Simulator:
    """The whole simulated tenant; ``start()`` serves it in a background thread."""

    def __init__(self, config: SimulatorConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        from imm.simulator.exchange import ExchangeService
        from imm.simulator.identity import IdentityProvider

        self.config = config
        self.router = Router()
        self.server = HttpsServer(self.router, config.data_dir, host=host, port=port)
        self.base_url = self.server.base_url
        self.identity = IdentityProvider(config, self.base_url)
        self.identity.register(self.router)
        from imm.simulator.workload import Workloads

        self.workloads = Workloads(self.identity, self.base_url)  # managed identity endpoints, federation issuer
        self.workloads.register(self.router)
        self.identity.workloads = self.workloads
        self.exchange = ExchangeService(config, self.base_url, self.identity)
        self.exchange.register(self.router)
        from imm.simulator.monitor import LogsIngestion

        self.ingestion = LogsIngestion(self.identity)  # Azure Monitor Logs Ingestion API (a DCR's endpoint)
        self.ingestion.register(self.router)

    @property
    def ca_path(self) -> Path:
        return self.server.ca_path

    def profile_values(self) -> dict[str, Any]:
        """The profile settings that point imm at this simulator (what ``imm simulator serve`` prints)."""
        return {
            "tenant_id": self.config.tenant_id,
            "client_id": self.config.client_id,
            "authority_host": self.base_url,
            "exchange_url": self.base_url,
            "compliance_url": f"{self.base_url}/compliance",
            "ca_bundle": str(self.ca_path),
            **self.exchange.profile_extras(),
        }

    def start(self) -> Simulator:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        self.exchange.close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
