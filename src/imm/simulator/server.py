"""The simulated tenant's HTTPS server: a threaded stdlib server with a throwaway CA made at start.

Routes are registered by the identity (Entra ID) and Exchange parts; this module knows only HTTP and TLS.
The simulator imports nothing from the rest of imm.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("imm.simulator")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    base_url: str  # https://127.0.0.1:PORT

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8") or "null")

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode("utf-8"), keep_blank_values=True).items()}


@dataclass
class Response:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    reset: bool = False  # fault injection: drop the connection without an answer
    cut_after: int | None = None  # fault injection: announce the whole body, send this many bytes, then close

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, dict | list):
            return (
                json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
                self.content_type or "application/json; charset=utf-8",
            )
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), self.content_type or "text/html; charset=utf-8"
        return self.body, self.content_type or "application/octet-stream"


Handler = Callable[[Request, "re.Match[str]"], Response]


class Router:
    """Method + path regex → handler; first match wins."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method.upper(), re.compile(pattern + r"\Z", re.IGNORECASE), handler))

    def dispatch(self, request: Request) -> Response:
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed = True
                continue
            return handler(request, match)
        if allowed:
            return Response(405, {"error": {"code": "MethodNotAllowed", "message": "Method not allowed"}})
        return Response(404, {"error": {"code": "NotFound", "message": f"No route for {request.path}"}})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TLSServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            base_url=self.server.base_url,
        )
        try:
            response = self.server.router.dispatch(request)
        except Exception:  # the simulator must answer like a server, not die
            log.exception("simulator handler failed for %s %s", self.command, parts.path)
            response = Response(500, {"error": {"code": "InternalServerError", "message": "simulator error"}})
        if response.reset:
            self._reset()
            return
        payload, content_type = response.encoded()
        self.send_response(response.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            if response.cut_after is not None:  # a reply cut off mid-body (Content-Length says more)
                self.wfile.write(payload[: response.cut_after])
                self.wfile.flush()
                self.close_connection = True
                self._reset()
                return
            self.wfile.write(payload)

    def _reset(self) -> None:
        """Abort the connection (RST) so the client sees a reset, as a faulty network path would give."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_DELETE = _serve
    do_PATCH = _serve


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    router: Router
    base_url: str
    tls: ssl.SSLContext

    def get_request(self) -> tuple[Any, Any]:
        """Accept plainly; the TLS handshake runs in the request's own thread, not in the accept loop."""
        sock, address = self.socket.accept()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle + delayed ACK add ~40 ms a reply.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class HttpsServer:
    """Serves a Router over HTTPS on 127.0.0.1 with a CA made at start; ``ca_path`` is what clients trust."""

    def __init__(self, router: Router, tls_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        import trustme

        tls_dir.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="imm simulated tenant")
        cert = self.ca.issue_cert(host, "localhost", "127.0.0.1")
        self.ca_path = tls_dir / "simulator-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._httpd = _TLSServer((host, port), _Handler)
        self._httpd.tls = context
        self._httpd.router = router
        self.host = host
        self.port = self._httpd.server_address[1]
        self.base_url = f"https://{host}:{self.port}"
        self._httpd.base_url = self.base_url
        self._thread: threading.Thread | None = None

    def start(self) -> HttpsServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="imm-simulator", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
