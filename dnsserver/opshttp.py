"""The operations HTTP server: CoreDNS's /health, /ready and /metrics, on one small asyncio
listener per address.

Deliberately tiny: GET and HEAD only, bounded request head, a read timeout, one request per
connection, no other pages. Works on the stock asyncio loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_HEALTH = ":8080"
DEFAULT_READY = ":8181"
DEFAULT_METRICS = "localhost:9153"

MAX_HEAD = 8192  # request line plus headers, bytes
MAX_HEADERS = 100
READ_TIMEOUT = 5.0  # seconds to receive the whole request head (CoreDNS ready: 5s)
MAX_CONNECTIONS = 64  # concurrent connections per server; more are closed at once

TEXT = "text/plain; charset=utf-8"

log = logging.getLogger("dnsserver.opshttp")
health_log = logging.getLogger("plugin/health")
ready_log = logging.getLogger("plugin/ready")

_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable",
}


class AddressError(ValueError):
    """An ops listen address that is not in CoreDNS's `[HOST]:PORT` form."""


def parse_address(addr: str) -> tuple[str | None, int]:
    """Split a CoreDNS listen address: ":8080", "127.0.0.1:8080", "[::1]:8080", "localhost:9153".

    Returns (host, port); host None means every local address.
    """
    text = addr.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1:].startswith(":"):
            raise AddressError(f"bad address {addr!r}: expected [IPv6]:PORT")
        host, port_text = text[1:end], text[end + 2:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise AddressError(f"bad address {addr!r}: missing port, expected HOST:PORT or :PORT")
        if ":" in host:
            raise AddressError(f"bad address {addr!r}: put an IPv6 address in brackets")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise AddressError(f"bad address {addr!r}: port must be a number from 0 to 65535")
    if host == "":
        return None, int(port_text)
    if host == "localhost":
        # CoreDNS's default metrics address; resolve it here rather than ask a resolver.
        return "127.0.0.1", int(port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(
            f"bad address {addr!r}: host must be an IP address or localhost"
        ) from None
    return host, int(port_text)


def _response(status: int, body: bytes, content_type: str = TEXT, head_only: bool = False,
              extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in extra),
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return head if head_only else head + body


class _BadRequest(Exception):
    def __init__(self, status: int = 400, message: str = "Bad Request") -> None:
        super().__init__(message)
        self.status = status


def parse_request_head(head: bytes) -> tuple[str, str]:
    """Parse a request head (through the blank line) into (method, path). Sans-IO.

    Raises `_BadRequest` on anything malformed; the path has its query string removed.
    """
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise _BadRequest(400, "malformed request line")
    method_b, target_b, version = parts
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise _BadRequest(400, "unsupported HTTP version")
    if not method_b.isalpha() or not method_b.isupper() or len(method_b) > 16:
        raise _BadRequest(400, "malformed method")
    try:
        target = target_b.decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(400, "non-ASCII request target") from None
    if target.startswith(("http://", "https://")):
        # absolute-form: keep only the path.
        slash = target.find("/", target.find("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    if not target.startswith("/") or any(c <= " " or c == "\x7f" for c in target):
        raise _BadRequest(400, "malformed request target")
    headers = [ln for ln in lines[1:] if ln]
    if len(headers) > MAX_HEADERS:
        raise _BadRequest(431, "too many headers")
    for ln in headers:
        name, colon, _ = ln.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            raise _BadRequest(400, "malformed header line")
    return method_b.decode("ascii"), target.split("?", 1)[0]


@dataclass
class _Listener:
    host: str | None
    port: int
    routes: set[str] = field(default_factory=set)  # "health", "ready", "metrics"
    server: asyncio.AbstractServer | None = None


class OpsServer:
    """Serves /health, /ready and /metrics on the addresses given (None: not served).

    Routes that share an address share one listener. After `await start()`, `addresses` maps
    each route name to the (host, port) actually bound, so port 0 works in tests.
    """

    def __init__(
        self,
        health: str | None = None,
        ready: str | None = None,
        metrics: str | None = None,
        *,
        registry: object | None = None,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        health_check_interval: float | None = 1.0,
        health_observer: Callable[[float, bool], None] | None = None,
        ready_keep_polling: bool = False,
    ) -> None:
        """`registry` is what /metrics renders (a prometheus_client CollectorRegistry; default
        the global one). `health_check_interval`: as CoreDNS's health plugin, GET our own
        /health this often and report (seconds, ok) to `health_observer`; None turns it off.
        `ready_keep_polling`: keep asking checks that once said ready (CoreDNS's default is
        to stop asking them).
        """
        self._listeners: dict[tuple[str | None, int], _Listener] = {}
        for route, addr in (("health", health), ("ready", ready), ("metrics", metrics)):
            if addr is None:
                continue
            host, port = parse_address(addr)
            lst = self._listeners.setdefault((host, port), _Listener(host, port))
            lst.routes.add(route)
        self._registry = registry
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._health_interval = health_check_interval
        self._health_observer = health_observer
        self._keep_polling = ready_keep_polling
        self._checks: dict[str, Callable[[], bool]] = {}
        self._health_checks: dict[str, Callable[[], bool]] = {}
        self._ready_latched: set[str] = set()
        self._lameduck = False
        self._flush_hooks: list[Callable[[], None]] = []
        self._active = 0
        self._tasks: set[asyncio.Task] = set()
        self._self_check: asyncio.Task | None = None
        self.addresses: dict[str, tuple[str, int]] = {}

    # -- configuration ------------------------------------------------------------------

    def register_readiness(self, name: str, fn: Callable[[], bool]) -> None:
        """Add a readiness check; /ready is 200 only when every check returns True."""
        self._checks[name] = fn
        self._ready_latched.discard(name)

    def register_health(self, name: str, fn: Callable[[], bool]) -> None:
        """Add a liveness check: /health answers 503 with the names of the failing checks while
        one returns False (a supervisor none of whose workers answers DNS). Without checks
        /health is 200 while the process runs, as CoreDNS's."""
        self._health_checks[name] = fn

    def set_lameduck(self, on: bool = True) -> None:
        """In lame duck /ready answers 503 "Shutting down"; /health stays 200."""
        self._lameduck = on

    def add_flush_hook(self, fn: Callable[[], None]) -> None:
        """Call `fn` before rendering each /metrics scrape (e.g. `Metrics.flush`)."""
        self._flush_hooks.append(fn)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        for lst in self._listeners.values():
            routes = frozenset(lst.routes)

            async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                              routes: frozenset[str] = routes) -> None:
                await self._serve(r, w, routes)

            lst.server = await asyncio.start_server(
                handler, lst.host, lst.port, limit=MAX_HEAD, reuse_address=True)
            sockname = lst.server.sockets[0].getsockname()
            for route in lst.routes:
                self.addresses[route] = (sockname[0], sockname[1])
        if "health" in self.addresses and self._health_interval:
            self._self_check = asyncio.create_task(self._health_loop())

    async def stop(self) -> None:
        if self._self_check is not None:
            self._self_check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._self_check
            self._self_check = None
        for lst in self._listeners.values():
            if lst.server is not None:
                lst.server.close()
        # Requests in flight finish within the read timeout; do not wait longer than that.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self._read_timeout + 1)
        for lst in self._listeners.values():
            if lst.server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(lst.server.wait_closed(), 1.0)
                lst.server = None

    # -- request handling ---------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     routes: frozenset[str]) -> None:
        task = asyncio.current_task()
        if self._active >= self._max_connections:
            writer.close()
            return
        self._active += 1
        if task is not None:
            self._tasks.add(task)
        try:
            data = await self._respond(reader, routes)
            if data is not None:
                writer.write(data)
                await asyncio.wait_for(writer.drain(), self._read_timeout)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception:  # never let one bad request take the listener down
            log.exception("ops HTTP request failed")
        finally:
            self._active -= 1
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader,
                       routes: frozenset[str]) -> bytes | None:
        """Read one request and return the whole response, or None to just close."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._read_timeout)
        except asyncio.LimitOverrunError:
            return _response(431, b"Request Header Fields Too Large\n")
        except asyncio.IncompleteReadError:
            return None  # the client went away before finishing its request
        except TimeoutError:
            return _response(408, b"Request Timeout\n")
        try:
            method, path = parse_request_head(head)
        except _BadRequest as e:
            return _response(e.status, (_REASONS.get(e.status, "Bad Request") + "\n").encode())
        return self._route(method, path, routes)

    def _route(self, method: str, path: str, routes: frozenset[str]) -> bytes:
        name = {"/health": "health", "/ready": "ready", "/metrics": "metrics"}.get(path)
        if name is None or name not in routes:
            return _response(404, b"404 page not found\n")
        if method not in ("GET", "HEAD"):
            return _response(405, b"Method Not Allowed\n", extra=(("Allow", "GET, HEAD"),))
        head_only = method == "HEAD"
        try:
            if name == "health":
                failing = sorted(n for n, fn in self._health_checks.items() if not fn())
                if failing:
                    return _response(503, ",".join(failing).encode(), head_only=head_only)
                return _response(200, b"OK", head_only=head_only)
            if name == "ready":
                status, body = self._ready()
                return _response(status, body, head_only=head_only)
            body, ctype = self._metrics()
            return _response(200, body, ctype, head_only=head_only)
        except Exception:
            log.exception("ops HTTP handler for %s failed", path)
            return _response(500, b"Internal Server Error\n")

    def _ready(self) -> tuple[int, bytes]:
        if self._lameduck:
            return 503, b"Shutting down"
        waiting = []
        for name, fn in self._checks.items():
            if name in self._ready_latched:
                continue
            try:
                ok = bool(fn())
            except Exception as e:
                ready_log.error("Readiness check %s failed: %s", name, e)
                ok = False
            if ok:
                if not self._keep_polling:
                    self._ready_latched.add(name)
            else:
                waiting.append(name)
        if not waiting:
            return 200, b"OK"
        names = ",".join(sorted(waiting))
        ready_log.info("Plugins not ready: %s", '"' + names + '"')
        return 503, names.encode()

    def _metrics(self) -> tuple[bytes, str]:
        from prometheus_client import REGISTRY
        from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

        for fn in self._flush_hooks:
            fn()
        return generate_latest(self._registry or REGISTRY), CONTENT_TYPE_PLAIN_0_0_4

    # -- CoreDNS's health self-check ----------------------------------------------------

    async def _health_loop(self) -> None:
        host, port = self.addresses["health"]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        url = f"http://{host}:{port}/health"
        assert self._health_interval is not None
        while True:
            await asyncio.sleep(self._health_interval)
            start = time.perf_counter()
            ok = True
            try:
                await asyncio.wait_for(self._probe(host, port), 3.0)
            except Exception as e:
                ok = False
                reason = str(e) or type(e).__name__
                health_log.warning("Local health request to %r failed: %s", url, reason)
            elapsed = time.perf_counter() - start
            if ok and elapsed > 1.0:
                health_log.warning("Local health request to %r took more than 1s: %.3fs",
                                   url, elapsed)
            if self._health_observer is not None:
                self._health_observer(elapsed, ok)

    @staticmethod
    async def _probe(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            status = await reader.readline()
            if not status.startswith(b"HTTP/1.1 200 "):
                raise ConnectionError(f"status {status.decode(errors='replace').strip()!r}")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
