"""Azure Monitor Logs Ingestion API, as a data collection rule's ingestion endpoint answers it.

``POST {base}/ingest/dataCollectionRules/{dcrImmutableId}/streams/{streamName}?api-version=2023-01-01``
(Microsoft Learn, "Logs Ingestion API in Azure Monitor": URI, request headers, body; "Azure Monitor service
limits", Logs Ingestion API):

- ``Authorization: Bearer`` with a token for ``https://monitor.azure.com`` (else 401); ``api-version`` required;
  ``Content-Type: application/json``; ``Content-Encoding: gzip`` optional; the body a JSON array of objects;
- at most 1 MB per call, compressed or not (else 413); an unknown DCR or stream is 404;
- success is ``204 No Content``; throttling is ``429`` with ``Retry-After`` (knob ``throttle_every``: every Nth
  call is refused);
- errors carry Azure's body ``{"error": {"code": ..., "message": ...}}``.

Accepted records are kept in ``records`` (in order) for tests to read. Nothing is deduplicated: Azure does not.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
from typing import Any

from imm.simulator.identity import IdentityProvider, TokenRejected
from imm.simulator.server import Request, Response, Router

AUDIENCE = "https://monitor.azure.com"
MAX_BYTES = 1_048_576


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"error": {"code": code, "message": message}}, headers=headers or {})


class LogsIngestion:
    def __init__(
        self,
        identity: IdentityProvider,
        dcr_id: str = "dcr-00000000000000000000000000000001",
        stream: str = "Custom-ImmAudit_CL",
    ) -> None:
        self.identity = identity
        identity.resources.add(AUDIENCE)  # the Monitor resource principal exists in every tenant
        self.dcr_id = dcr_id
        self.stream = stream
        self.records: list[dict[str, Any]] = []
        self.calls = 0
        self.throttled = 0
        self.throttle_every = 0  # every Nth call answers 429 (0: never)
        self.retry_after = 1
        self.delay_seconds = 0.0  # time taken to accept a call (before the records are stored)
        self._lock = threading.Lock()

    def register(self, router: Router) -> None:
        router.add("POST", r"/ingest/dataCollectionRules/(?P<dcr>[^/]+)/streams/(?P<stream>[^/]+)", self._ingest)

    def stream_url(self, base_url: str) -> str:
        return f"{base_url}/ingest/dataCollectionRules/{self.dcr_id}/streams/{self.stream}"

    def _ingest(self, request: Request, match: re.Match[str]) -> Response:
        auth = request.header("authorization")
        if not auth.lower().startswith("bearer "):
            return _error(401, "InvalidToken", "The request is missing an authorization token.")
        try:
            self.identity.verify_access_token(auth[7:].strip(), AUDIENCE)
        except TokenRejected as exc:
            return _error(401, "InvalidToken", f"The provided authentication is not valid: {exc.reason}")
        if (request.query.get("api-version") or [""])[-1] != "2023-01-01":
            return _error(400, "InvalidApiVersion", "The api-version query parameter is missing or not supported.")
        if match.group("dcr") != self.dcr_id:
            return _error(404, "NotFound", f"Data collection rule with immutable Id '{match.group('dcr')}' not found.")
        if match.group("stream") != self.stream:
            return _error(404, "InvalidStream", f"Stream '{match.group('stream')}' is not declared in the rule.")
        if len(request.body) > MAX_BYTES:
            return _error(413, "ContentLengthLimitExceeded", "Maximum allowed content length: 1048576 bytes.")
        with self._lock:
            self.calls += 1
            throttle = self.throttle_every > 0 and self.calls % self.throttle_every == 0
            if throttle:
                self.throttled += 1
        if throttle:
            return _error(
                429,
                "TooManyRequests",
                "Request rate is too high for the data collection rule.",
                {"Retry-After": str(self.retry_after)},
            )
        body = request.body
        if request.header("content-encoding").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                return _error(400, "InvalidContentEncoding", "The body is not valid gzip.")
            if len(body) > MAX_BYTES:
                return _error(413, "ContentLengthLimitExceeded", "Maximum allowed content length: 1048576 bytes.")
        if not request.header("content-type").lower().startswith("application/json"):
            return _error(415, "UnsupportedMediaType", "Content-Type must be application/json.")
        try:
            records = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return _error(400, "InvalidPayload", "The body is not valid JSON.")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            return _error(400, "InvalidPayload", "The body must be a JSON array of objects.")
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        with self._lock:
            self.records.extend(records)
        return Response(204, b"")
