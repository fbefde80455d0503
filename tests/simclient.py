"""A plain httpx client for the simulated tenant's InvokeCommand endpoints (tests of the simulator itself).

It trusts the simulator's CA explicitly (``trust_env=False``) and gets tokens straight from the simulated
identity provider, so these tests exercise the simulator over real TLS without imm's own client.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

from imm.simulator import Simulator, SimulatorConfig

ADMIN = "admin@contoso.onmicrosoft.com"


def make_sim(tmp_path: Path, **options: Any) -> Simulator:
    """A simulator (not started: use ``with``) with its own data folder; options override SimulatorConfig."""
    config = SimulatorConfig(data_dir=tmp_path / "sim", **options)
    return Simulator(config)


class SimClient:
    """POSTs CmdletInput envelopes to the Exchange or (after its 302) the compliance endpoint."""

    def __init__(self, sim: Simulator, upn: str = ADMIN) -> None:
        self.sim = sim
        self.upn = upn
        context = ssl.create_default_context(cafile=str(sim.ca_path))
        self.http = httpx.Client(verify=context, trust_env=False, timeout=30)
        self.exchange_token = sim.identity.issue_access_token(upn, sim.base_url)
        self.compliance_token = sim.identity.issue_access_token(upn, f"{sim.base_url}/compliance")
        tid = sim.config.tenant_id
        self.exchange_url = f"{sim.base_url}/adminapi/beta/{tid}/InvokeCommand"
        self.compliance_start_url = f"{sim.base_url}/compliance/adminapi/beta/{tid}/InvokeCommand"
        self._compliance_url: str | None = None

    def close(self) -> None:
        self.http.close()

    def headers(self, compliance: bool = False, page_size: int | None = None, **extra: str) -> dict[str, str]:
        token = self.compliance_token if compliance else self.exchange_token
        headers = {"Authorization": f"Bearer {token}", "X-AnchorMailbox": f"UPN:{self.upn}"}
        if page_size:
            headers["Prefer"] = f"odata.maxpagesize={page_size}"
        headers.update(extra)
        return headers

    @staticmethod
    def envelope(cmdlet: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"CmdletInput": {"CmdletName": cmdlet, "Parameters": params or {}}}

    def compliance_url(self) -> str:
        """Follows the regional 302 once, by hand, as the module does."""
        if self._compliance_url is None:
            first = self.http.post(
                self.compliance_start_url,
                json=self.envelope("Get-RetentionCompliancePolicy"),
                headers=self.headers(compliance=True),
            )
            assert first.status_code == 302, first.status_code
            self._compliance_url = first.headers["Location"]
        return self._compliance_url

    def post(
        self,
        cmdlet: str,
        params: dict[str, Any] | None = None,
        *,
        compliance: bool = False,
        url: str | None = None,
        page_size: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        target = url or (self.compliance_url() if compliance else self.exchange_url)
        request = self.http.build_request(
            "POST",
            target,
            json=self.envelope(cmdlet, params),
            headers=headers if headers is not None else self.headers(compliance, page_size),
        )
        response = self.http.send(request, stream=True)
        try:
            if response.status_code == 403 and response.headers.get("content-encoding") == "gzip":
                # Exchange's 403 body is NUL bytes declared gzip: keep the raw bytes, note what was declared
                raw = b"".join(response.iter_raw())
                kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
                return httpx.Response(
                    403, headers=[*kept, ("x-declared-content-encoding", "gzip")], content=raw, request=request
                )
            response.read()
            return response
        finally:
            response.close()

    def invoke(
        self,
        cmdlet: str,
        params: dict[str, Any] | None = None,
        *,
        compliance: bool = False,
        page_size: int | None = None,
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Every value across pages, and every warning; asserts each page is a 200."""
        response = self.post(cmdlet, params, compliance=compliance, page_size=page_size)
        values: list[dict[str, Any]] = []
        warnings: list[str] = []
        while True:
            assert response.status_code == 200, (response.status_code, response.text[:500])
            body = response.json()
            values += body["value"]
            warnings += body["@adminapi.warnings"]
            link = body.get("@odata.nextLink")
            if not link:
                return values, warnings
            response = self.post(cmdlet, params, compliance=compliance, url=link, page_size=page_size)

    def values(self, cmdlet: str, params: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        return self.invoke(cmdlet, params, **kw)[0]


def detail(response: httpx.Response) -> str:
    """``details[0].message`` of an error body."""
    return response.json()["error"]["details"][0]["message"]
