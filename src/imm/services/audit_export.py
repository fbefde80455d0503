"""``imm audit export --format jsonl --since-last SINK``: stream audit rows not yet sent to a sink, exactly once.

A sink is a JSON Lines file or an Azure Monitor Logs Ingestion stream (an ``https://`` URL
``{endpoint}/dataCollectionRules/{dcrImmutableId}/streams/{streamName}``). A cursor per sink in the database
(``audit_export_cursors``) says how far it has been sent; events are ``imm.data.audit_stream`` schema v1.

Exactly once across interruptions:

- **File**: a batch is appended and fsynced, then the cursor moves. If the process dies in between, the next run
  reads the file's last complete line (``ImmRowId``) and moves the cursor there first; a torn last line is cut off.
- **Logs Ingestion**: before a batch is sent the cursor records it as *in flight*; a definite refusal (429, 5xx,
  a dropped connection before the request was sent) records it as *rejected*; a 204 moves the cursor. A batch
  found *rejected* on the next run was not taken and is simply sent again. A batch found *in flight* (the process
  died while Microsoft was answering) may or may not have arrived: the Logs Ingestion API has no idempotency key,
  so it is sent again with ``Redelivered: true`` on each event, for the receiver to drop duplicates by
  ``ImmRowId``.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from imm.data.audit_logger import AuditLogger, AuditResult, OperationType
from imm.data.audit_stream import Cursor, ExportStore, event_of
from imm.errors import ImmError, InputError

log = logging.getLogger("imm.audit.export")

# Microsoft Learn, "Azure Monitor service limits" (Logs Ingestion API): a call is at most 1 MB (compressed or
# not); field values over 64 KB are truncated; 12,000 requests/minute per DCR, 429 with Retry-After beyond.
MAX_CALL_BYTES = 1_000_000
DEFAULT_BATCH = 500
INGESTION_SCOPE = "https://monitor.azure.com//.default"  # audience https://monitor.azure.com (Learn, "Request headers")
API_VERSION = "2023-01-01"


class ExportError(ImmError):
    code = "export_failed"


class Sink(Protocol):
    key: str

    def recover(self, cursor: Cursor) -> int | None:
        """The last row id the sink itself shows as delivered, when it can tell (a file can)."""

    def send(self, events: list[dict[str, Any]], store: ExportStore, cursor: Cursor) -> None:
        """Deliver one batch or raise; records in-flight/rejected states through ``store``."""


class FileSink:
    """An append-only JSON Lines file (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()
        self.key = f"file:{self.path}"

    def recover(self, cursor: Cursor) -> int | None:
        try:
            with open(self.path, "rb+") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size == 0:
                    return None
                tail_start = max(0, size - 1_048_576)
                handle.seek(tail_start)
                tail = handle.read()
                if not tail.endswith(b"\n"):  # a line torn by a kill: cut it, it was never counted
                    cut = tail.rfind(b"\n")
                    handle.truncate(tail_start + cut + 1 if cut >= 0 else tail_start)
                    tail = tail[: cut + 1] if cut >= 0 else b""
                lines = tail.splitlines()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise InputError(f"cannot read the sink {self.path}: {exc.strerror or exc}") from None
        for line in reversed(lines):
            try:
                return int(json.loads(line)["ImmRowId"])
            except (ValueError, KeyError, TypeError):
                continue
        return None

    def send(self, events: list[dict[str, Any]], store: ExportStore, cursor: Cursor) -> None:
        data = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in events)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise InputError(f"cannot write to the sink {self.path}: {exc.strerror or exc}") from None


class LogsIngestionSink:
    """Azure Monitor Logs Ingestion API (data collection rule + stream), Microsoft Learn "Logs Ingestion API in
    Azure Monitor": ``POST {endpoint}/dataCollectionRules/{dcrImmutableId}/streams/{streamName}?api-version=
    2023-01-01`` with ``Authorization: Bearer`` (audience https://monitor.azure.com), ``Content-Type:
    application/json``, optional ``Content-Encoding: gzip``, ``x-ms-client-request-id``; the body a JSON array;
    success is 204."""

    def __init__(
        self,
        url: str,
        token: Callable[[bool], str],
        *,
        ca_bundle: Path | None = None,
        timeout: float = 60.0,
        max_attempts: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or "/dataCollectionRules/" not in parts.path or "/streams/" not in parts.path:
            raise InputError(
                f"sink {url!r} is not a Logs Ingestion stream URL "
                "(https://ENDPOINT/dataCollectionRules/DCR-IMMUTABLE-ID/streams/STREAM)"
            )
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.key = self.url
        self.token = token
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.sleep = sleep
        self._client: Any = None

    def recover(self, cursor: Cursor) -> int | None:
        return None  # the API cannot be asked what it holds

    def _http(self) -> Any:
        if self._client is None:
            import ssl

            import httpx

            verify: ssl.SSLContext | bool = True
            if self.ca_bundle:
                verify = ssl.create_default_context(cafile=str(self.ca_bundle))
            self._client = httpx.Client(verify=verify, timeout=self.timeout, trust_env=not self.ca_bundle)
        return self._client

    def send(self, events: list[dict[str, Any]], store: ExportStore, cursor: Cursor) -> None:
        import httpx

        from imm.exchange.throttle import RetryPolicy, parse_retry_after

        body = gzip.compress(json.dumps(events, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        first, last = int(events[0]["ImmRowId"]), int(events[-1]["ImmRowId"])
        policy = RetryPolicy()
        refreshed = False
        for attempt in range(self.max_attempts):
            headers = {
                "Authorization": f"Bearer {self.token(refreshed)}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "x-ms-client-request-id": str(uuid.uuid4()),
            }
            store.sending(cursor, first, last)
            try:
                response = self._http().post(
                    self.url, params={"api-version": API_VERSION}, content=body, headers=headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached Microsoft
                store.rejected(cursor, first, last)
                wait = policy.backoff(attempt)
                log.warning("Logs Ingestion unreachable (%s); retrying in %.1f s", type(exc).__name__, wait)
                self.sleep(wait)
                continue
            except httpx.HTTPError as exc:  # it may have arrived: stay in flight, retry marks it redelivered
                raise ExportError(
                    f"Logs Ingestion call failed mid-request ({type(exc).__name__}); rerun to resume"
                ) from None
            if response.status_code == 204:
                return
            if response.status_code == 401 and not refreshed:
                store.rejected(cursor, first, last)
                refreshed = True
                continue
            if response.status_code in (429, 500, 502, 503, 504):
                store.rejected(cursor, first, last)
                wait = policy.wait_for(attempt, parse_retry_after(response.headers.get("Retry-After")))
                log.warning("Logs Ingestion answered %d; retrying in %.1f s", response.status_code, wait)
                self.sleep(wait)
                continue
            store.rejected(cursor, first, last)
            raise ExportError(
                f"Logs Ingestion refused the batch of rows {first}-{last}: HTTP {response.status_code} "
                f"{_error_text(response)}"
            )
        raise ExportError(f"Logs Ingestion kept refusing rows {first}-{last} after {self.max_attempts} attempts")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _error_text(response: Any) -> str:
    """Azure's error body ``{"error": {"code", "message"}}``, else the start of the text."""
    try:
        error = response.json().get("error") or {}
        return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        return str(response.text)[:200]


def batches(events: list[dict[str, Any]], max_bytes: int = MAX_CALL_BYTES) -> list[list[dict[str, Any]]]:
    """Split events so each call's JSON stays within ``max_bytes`` (uncompressed, so compressed is too)."""
    out: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 2
    for event in events:
        length = len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")) + 1
        if length + 2 > max_bytes:
            raise ExportError(f"audit row {event['ImmRowId']} is larger than one Logs Ingestion call allows (1 MB)")
        if current and size + length > max_bytes:
            out.append(current)
            current, size = [], 2
        current.append(event)
        size += length
    if current:
        out.append(current)
    return out


@dataclass(frozen=True)
class ExportRun:
    sink: str
    rows: int
    first_id: int | None
    last_id: int | None
    redelivered: int
    recovered_to: int | None


def export_since_last(
    audit: AuditLogger, sink: Sink, *, batch_size: int = DEFAULT_BATCH, progress: Callable[[int], None] | None = None
) -> ExportRun:
    """Send every row after the sink's cursor, in batches; returns what was sent. Audited as EXPORT_DATA."""
    store = ExportStore(audit.db)
    cursor = store.cursor(sink.key)
    recovered = sink.recover(cursor)
    if recovered is not None and recovered > cursor.last_id:
        log.info("sink %s already holds rows up to %d: cursor moved there", sink.key, recovered)
        store.delivered(sink.key, recovered)
        cursor = store.cursor(sink.key)
    in_doubt = cursor.pending_last if cursor.in_doubt else None
    sent = 0
    redelivered = 0
    first_id: int | None = None
    last_id: int | None = None
    for rows in store.iter_events(cursor.last_id, batch_size):
        events = [event_of(r, redelivered=in_doubt is not None and int(r["id"]) <= in_doubt) for r in rows]
        for batch in batches(events):
            sink.send(batch, store, cursor)
            last_id = int(batch[-1]["ImmRowId"])
            store.delivered(sink.key, last_id)
            cursor = store.cursor(sink.key)
            first_id = first_id if first_id is not None else int(batch[0]["ImmRowId"])
            sent += len(batch)
            redelivered += sum(1 for e in batch if e["Redelivered"])
            if progress:
                progress(sent)
    audit.log_operation(
        OperationType.EXPORT_DATA,
        None,
        {
            "sink": sink.key,
            "format": "jsonl",
            "rows": sent,
            "first_id": first_id,
            "last_id": last_id,
            "redelivered": redelivered,
        },
        AuditResult.SUCCESS,
    )
    return ExportRun(sink.key, sent, first_id, last_id, redelivered, recovered)
