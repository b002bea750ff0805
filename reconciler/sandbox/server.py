"""A HubSpot-compatible HTTP server on loopback, for demos, CI and tests.

Standard library only: ``ThreadingHTTPServer`` with one handler that turns
HTTP into ``app.Request`` values. The token is checked but never logged.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from reconciler.errors import ReconcilerError, UsageError
from reconciler.properties import (
    Pipeline,
    PropertyDefinition,
    load_definitions,
    load_pipelines,
)
from reconciler.sandbox import shapes
from reconciler.sandbox.app import App, Request, Response
from reconciler.sandbox.batch import Catalog
from reconciler.sandbox.ratelimit import RollingWindow
from reconciler.sandbox.state import DealStore
from reconciler.snapshot import Snapshot, load_snapshot

logger = logging.getLogger("reconciler.sandbox")

LOOPBACK = "127.0.0.1"
JSON_TYPE = "application/json;charset=utf-8"
RATE_TEXT = re.compile(r"\s*([0-9]+)\s*(?:/\s*10\s*s?\s*)?", re.IGNORECASE)


class Sandbox:
    """A HubSpot look-alike serving the given deals, definitions and pipelines.

    The socket is bound on construction, so ``url`` is known before serving.
    Use ``start()``/``stop()`` (or ``with``) to serve from a background
    thread, or ``serve_forever()`` to serve from the calling one.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        properties: Mapping[str, PropertyDefinition],
        pipelines: Mapping[str, Pipeline],
        token: str,
        delay: float = 0.0,
        rate: int | None = None,
        log_path: Path | None = None,
        host: str = LOOPBACK,
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        host = _loopback_host(host)
        if not token:
            raise ValueError("the sandbox needs a token for clients to present")
        if delay < 0:
            raise ValueError(f"the delay must not be negative, not {delay}")
        limiter = RollingWindow(rate, clock) if rate is not None else None
        catalog = Catalog(dict(properties), dict(pipelines))
        self._app = App(DealStore(snapshot, clock), catalog, token, delay, limiter)
        self._log = RequestLog(log_path)
        try:
            self._server = _Server((host, port), self._app, self._log)
        except OSError:
            self._log.close()
            raise
        self._thread: threading.Thread | None = None
        self._serving = False
        self._closed = False

    @property
    def url(self) -> str:
        """The base URL clients use, such as ``http://127.0.0.1:8000``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def deals(self) -> dict[str, dict[str, str]]:
        """A copy of every deal's current values, updates that came due applied."""
        with self._app.lock:
            return self._app.store.all_values()

    def start(self) -> None:
        """Serve from a daemon thread and return at once."""
        if self._thread is not None or self._serving:
            raise RuntimeError("the sandbox is already serving")
        self._serving = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="reconciler-sandbox",
            daemon=True,
        )
        self._thread.start()
        logger.info("sandbox listening on %s", self.url)

    def serve_forever(self) -> None:
        """Serve from this thread until Ctrl-C or ``stop()`` from another thread."""
        if self._serving:
            raise RuntimeError("the sandbox is already serving")
        self._serving = True
        try:
            self._server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            logger.info("sandbox interrupted; stopping")
        finally:
            self._serving = False
            self._close()

    def stop(self) -> None:
        """Stop serving, close the socket and the request log."""
        if self._serving:
            # shutdown() waits for serve_forever() to finish its loop; calling
            # it when nothing serves would wait forever.
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self._serving = False
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._server.server_close()
            self._log.close()

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def _loopback_host(host: str) -> str:
    if host == "localhost":
        return LOOPBACK
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != 4 or not address.is_loopback:
        raise ValueError(
            f"the sandbox only listens on the IPv4 loopback ({LOOPBACK}), not {host!r}"
        )
    return host


# --- HTTP plumbing -----------------------------------------------------------


class RequestLog:
    """One JSON line per request received, flushed as it is written."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] | None = None
        if path is not None:
            self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def record(self, request: Request, status: int) -> None:
        """Write the request's method, path, query, status and JSON body."""
        if self._file is None:
            return
        entry = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "status": status,
            "body": request.body,
        }
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: App, log: RequestLog) -> None:
        self.app = app
        self.request_log = log
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "reconciler-sandbox"

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_GET
    do_PUT = do_GET
    do_PATCH = do_GET
    do_DELETE = do_GET

    def _serve(self) -> None:
        started = time.monotonic()
        request = self._request()
        try:
            response = self.server.app.handle(request)
        except Exception:
            logger.exception("sandbox failed on %s %s", request.method, request.path)
            response = Response(500, shapes.error("internal error"))
        # Both logs are written before answering, so a client that has its
        # answer can rely on finding the request in them.
        self.server.request_log.record(request, response.status)
        elapsed = (time.monotonic() - started) * 1000
        logger.info(
            "%s %s -> %d (%.0f ms)",
            request.method,
            request.path,
            response.status,
            elapsed,
        )
        self._send(response)

    def _request(self) -> Request:
        url = urlsplit(self.path)
        body, body_error = _parse_json(self._read_body())
        return Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            authorization=self.headers.get("Authorization"),
            body=body,
            body_error=body_error,
        )

    def _read_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else None

    def _send(self, response: Response) -> None:
        payload = b""
        if response.body is not None:
            payload = json.dumps(response.body, ensure_ascii=False).encode("utf-8")
        self.send_response(response.status)
        if response.body is not None:
            self.send_header("Content-Type", JSON_TYPE)
            correlation = (
                response.body.get("correlationId")
                if isinstance(response.body, dict)
                else None
            )
            if correlation:
                self.send_header("X-HubSpot-Correlation-Id", str(correlation))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # The access line is logged in _serve; this only sees protocol errors.
        logger.debug("sandbox: " + format, *args)


def _parse_json(raw: bytes | None) -> tuple[Any, str | None]:
    if raw is None:
        return None, "No content to map due to end-of-input"
    try:
        return json.loads(raw.decode("utf-8")), None
    except UnicodeDecodeError as error:
        return None, f"Invalid input JSON: not UTF-8 ({error.reason})"
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        return None, f"Invalid input JSON on {where}: {error.msg}"


# --- the CLI's entry point ---------------------------------------------------


def parse_rate(text: str) -> int:
    """Requests per rolling 10 seconds from ``"100"`` or ``"100/10s"``."""
    match = RATE_TEXT.fullmatch(text)
    if match is None or int(match[1]) < 1:
        raise ValueError(
            f"rate {text!r} is not a number of requests per 10 seconds,"
            " such as 100 or 100/10s"
        )
    return int(match[1])


def run_sandbox(
    port: int,
    seed_paths: list[Path],
    token: str,
    properties_path: Path | None,
    pipelines_path: Path | None,
    delay: float,
    rate: int | None,
    log_path: Path | None,
) -> None:
    """Load the seed and definitions, then serve on loopback until Ctrl-C."""
    snapshot = load_snapshot(seed_paths) if seed_paths else Snapshot(source="empty")
    properties = load_definitions(properties_path)
    pipelines = load_pipelines(pipelines_path)
    try:
        sandbox = Sandbox(
            snapshot, properties, pipelines, token, delay, rate, log_path, port=port
        )
    except ValueError as error:
        raise UsageError(str(error)) from error
    except OSError as error:
        where = error.filename or f"{LOOPBACK}:{port}"
        raise ReconcilerError(
            f"sandbox cannot use {where}: {error.strerror}"
        ) from error
    count = len(snapshot.deals)
    noun = "deal" if count == 1 else "deals"
    print(
        f"sandbox listening on {sandbox.url} ({count} {noun})",
        file=sys.stderr,
        flush=True,
    )
    sandbox.serve_forever()
