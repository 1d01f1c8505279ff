"""HTTP endpoints the cluster calls on ironlb: admission webhooks, metrics, health probes.

A deliberately small HTTP/1.1 server on asyncio streams (keep-alive, Content-Length bodies
only), because these endpoints need nothing more and a web framework would be the largest
dependency in the tree. Bounded: headers 16 KiB, bodies 4 MiB, 30 s to read a request; a
malformed request gets a 400 and the connection is closed, never an exception in the loop.
TLS contexts may have their certificate reloaded in place (`load_cert_chain`): new
connections use the new certificate, which is how the webhook certificate rotates.

An empty host (or `::`) binds one dual-stack socket (IPV6_V6ONLY off), so probes, scrapes and
webhook calls arrive over IPv4 and IPv6 alike; where the kernel has no IPv6, an empty host
falls back to IPv4 alone.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest

log = logging.getLogger(__name__)

MAX_HEADER = 16 * 1024
MAX_BODY = 4 * 1024 * 1024
READ_TIMEOUT = 30.0

# Both daemons serve their metrics here: a task leak (a watch, a session, a timer never
# cancelled) shows as a count that grows while the work does not (bench/soak.py reads it).
ASYNCIO_TASKS = Gauge(
    "ironlb_asyncio_tasks",
    "asyncio tasks alive in the process when scraped (the scrape's own connection included)",
)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[Request], Awaitable[Response]]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class BadRequest(Exception):
    pass


def _dual_stack_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
    except BaseException:
        sock.close()
        raise
    return sock


def listening_socket(host: str, port: int) -> socket.socket | None:
    """The socket for `host`:`port` when it means "every address" (empty or `::`): one
    dual-stack socket; IPv4 only on a kernel without IPv6, for an empty host. None: an
    ordinary address, left to asyncio."""
    if host not in ("", "::"):
        return None
    try:
        return _dual_stack_socket(port)
    except OSError as e:
        if host or e.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            raise
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise BadRequest("truncated request") from e
        return None  # the client closed an idle keep-alive connection
    except asyncio.LimitOverrunError as e:
        raise BadRequest("request header too large") from e
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest("malformed header")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        raise BadRequest("chunked bodies are not supported")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError as e:
        raise BadRequest("bad content-length") from e
    if length < 0 or length > MAX_BODY:
        raise BadRequest("body too large")
    body = await reader.readexactly(length) if length else b""
    path, _, query = target.partition("?")
    if parts[2] == "HTTP/1.0" and "keep-alive" not in headers.get("connection", "").lower():
        headers["connection"] = "close"  # HTTP/1.0 closes unless asked not to
    return Request(method, path, query, headers, body)


def _encode(resp: Response, keep_alive: bool) -> bytes:
    reason = _REASONS.get(resp.status, "Unknown")
    head = (
        f"HTTP/1.1 {resp.status} {reason}\r\n"
        f"Content-Type: {resp.content_type}\r\n"
        f"Content-Length: {len(resp.body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + resp.body


@dataclass
class Server:
    """Serves `routes` (path -> handler) on host:port, optionally over TLS."""

    host: str
    port: int
    routes: dict[str, Handler]
    tls: ssl.SSLContext | None = None
    bound: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self) -> None:
        sock = listening_socket(self.host, self.port)
        if sock is not None:
            server = await asyncio.start_server(
                self._connection, sock=sock, ssl=self.tls, limit=MAX_HEADER
            )
        else:
            server = await asyncio.start_server(
                self._connection,
                self.host,
                self.port,
                ssl=self.tls,
                limit=MAX_HEADER,
                reuse_address=True,
            )
        self.bound.set()
        where = ", ".join(str(s.getsockname()[:2]) for s in server.sockets)
        log.info("serving %s on %s", "https" if self.tls else "http", where)
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(READ_TIMEOUT):
                        req = await _read_request(reader)
                except (BadRequest, TimeoutError, asyncio.IncompleteReadError) as e:
                    writer.write(_encode(Response(400, f"{e}\n".encode()), keep_alive=False))
                    await writer.drain()
                    return
                if req is None:
                    return
                resp = await self._dispatch(req)
                keep = req.headers.get("connection", "").lower() != "close"
                writer.write(_encode(resp, keep))
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, ssl.SSLError, OSError):
            return
        except asyncio.CancelledError:
            # The server is shutting down. A connection task must not end cancelled: Python
            # 3.11's stream server then logs a spurious error for it. Its work is done either way.
            return
        finally:
            writer.close()

    async def _dispatch(self, req: Request) -> Response:
        handler = self.routes.get(req.path)
        if handler is None:
            return Response(404, b"not found\n")
        try:
            return await handler(req)
        except Exception:
            log.exception("handler for %s failed", req.path)
            return Response(500, b"internal error\n")


async def metrics(_req: Request) -> Response:
    ASYNCIO_TASKS.set(len(asyncio.all_tasks()))
    return Response(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)


def probe(check: Callable[[], str | None]) -> Handler:
    """A health endpoint: `check` returns None when healthy, else the reason."""

    async def handler(_req: Request) -> Response:
        problem = check()
        if problem is None:
            return Response(200, b"ok\n")
        return Response(503, f"{problem}\n".encode())

    return handler
