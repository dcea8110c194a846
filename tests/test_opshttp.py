"""The ops HTTP server over real loopback sockets: health, ready, metrics, and bad requests."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from dnsserver.opshttp import AddressError, OpsServer, parse_address, parse_request_head

LOOP = "127.0.0.1:0"


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 20))


async def raw(addr: tuple[str, int], data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data`, then read until the server closes; b"" if it closed without answering."""
    reader, writer = await asyncio.open_connection(*addr)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1])


def body(resp: bytes) -> bytes:
    return resp.split(b"\r\n\r\n", 1)[1]


async def get(addr: tuple[str, int], path: str) -> tuple[int, bytes]:
    """GET with urllib, the standard client, in a thread."""
    url = f"http://{addr[0]}:{addr[1]}{path}"

    def fetch() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    return await asyncio.to_thread(fetch)


def test_parse_address_coredns_forms() -> None:
    assert parse_address(":8080") == (None, 8080)
    assert parse_address("127.0.0.1:8181") == ("127.0.0.1", 8181)
    assert parse_address("[::1]:9153") == ("::1", 9153)
    assert parse_address("localhost:9153") == ("127.0.0.1", 9153)
    for bad in ("8080", "::1:80", "[::1]80", "host.example:80", "127.0.0.1:99999", ":x"):
        with pytest.raises(AddressError, match="bad address"):
            parse_address(bad)


def test_parse_request_head() -> None:
    assert parse_request_head(b"GET /ready?x=1 HTTP/1.1\r\nHost: a\r\n\r\n") == ("GET", "/ready")
    assert parse_request_head(b"GET http://h:1/metrics HTTP/1.0\r\n\r\n") == ("GET", "/metrics")


def test_health_ready_metrics_share_one_listener() -> None:
    async def main() -> None:
        reg = CollectorRegistry()
        c = Counter("coredns_panics", "A metrics that counts the number of panics.", registry=reg)
        flushed = []
        ops = OpsServer(LOOP, LOOP, LOOP, registry=reg, health_check_interval=None)
        ops.add_flush_hook(lambda: (flushed.append(1), c.inc()))
        await ops.start()
        try:
            addr = ops.addresses["health"]
            assert ops.addresses["ready"] == addr == ops.addresses["metrics"]
            assert await get(addr, "/health") == (200, b"OK")
            assert await get(addr, "/ready") == (200, b"OK")
            code, text = await get(addr, "/metrics")
            assert code == 200 and flushed == [1]
            fams = {f.name: f for f in text_string_to_metric_families(text.decode())}
            # The flush hook ran before rendering: the scrape already shows its increment.
            assert fams["coredns_panics"].samples[0].value == 1.0
            resp = await raw(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"Content-Length: 2\r\n" in resp and b"Connection: close\r\n" in resp
            head = await raw(addr, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status(head) == 200 and body(head) == b""
        finally:
            await ops.stop()

    run(main)


def test_separate_listeners_serve_only_their_route() -> None:
    async def main() -> None:
        ops = OpsServer("127.0.0.1:0", "127.0.0.2:0", None, health_check_interval=None)
        await ops.start()
        try:
            h, r = ops.addresses["health"], ops.addresses["ready"]
            assert h != r and "metrics" not in ops.addresses
            assert (await get(h, "/ready"))[0] == 404
            assert (await get(r, "/health"))[0] == 404
            assert (await get(r, "/metrics"))[0] == 404
            assert await get(r, "/ready") == (200, b"OK")
        finally:
            await ops.stop()
        with pytest.raises(OSError):
            await raw(h, b"GET /health HTTP/1.1\r\n\r\n")

    run(main)


def test_ready_names_waiting_sources_and_lameduck() -> None:
    async def main() -> None:
        state = {"kubernetes": False, "zones": False}
        ops = OpsServer(None, LOOP, None, health_check_interval=None)
        ops.register_readiness("zones", lambda: state["zones"])
        ops.register_readiness("kubernetes", lambda: state["kubernetes"])
        ops.register_readiness("broken", lambda: 1 / 0)  # type: ignore[arg-type,return-value]
        await ops.start()
        addr = ops.addresses["ready"]
        try:
            # CoreDNS lists the plugins not ready, sorted, comma-separated.
            assert await get(addr, "/ready") == (503, b"broken,kubernetes,zones")
            state["zones"] = True
            ops.register_readiness("broken", lambda: True)
            assert await get(addr, "/ready") == (503, b"kubernetes")
            state["kubernetes"] = True
            assert await get(addr, "/ready") == (200, b"OK")
            # Once ready, a check is not asked again (CoreDNS's default).
            state["kubernetes"] = False
            assert await get(addr, "/ready") == (200, b"OK")
            ops.set_lameduck(True)
            assert await get(addr, "/ready") == (503, b"Shutting down")
        finally:
            await ops.stop()

    run(main)


def test_ready_keep_polling_and_health_in_lameduck() -> None:
    async def main() -> None:
        state = {"ok": True}
        ops = OpsServer(LOOP, LOOP, None, health_check_interval=None, ready_keep_polling=True)
        ops.register_readiness("kubernetes", lambda: state["ok"])
        await ops.start()
        addr = ops.addresses["ready"]
        try:
            assert (await get(addr, "/ready"))[0] == 200
            state["ok"] = False
            assert await get(addr, "/ready") == (503, b"kubernetes")
            ops.set_lameduck(True)
            # Lame duck keeps /health answering 200 while /ready turns traffic away.
            assert await get(addr, "/health") == (200, b"OK")
        finally:
            await ops.stop()

    run(main)


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"DELETE /ready HTTP/1.1\r\n\r\n", 405),
        (b"GET /debug/pprof HTTP/1.1\r\n\r\n", 404),
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"GET /../etc/passwd HTTP/1.1\r\n\r\n", 404),
        (b"GET /health HTTP/2.0\r\n\r\n", 400),
        (b"GET /health\r\n\r\n", 400),
        (b"get /health HTTP/1.1\r\n\r\n", 400),
        (b"GET health HTTP/1.1\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nno-colon-header\r\n\r\n", 400),
        (b"GET /he\xffalth HTTP/1.1\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
    ],
)
def test_bad_requests_get_4xx_and_server_survives(request_bytes: bytes, expected: int) -> None:
    async def main() -> None:
        ops = OpsServer(LOOP, LOOP, LOOP, registry=CollectorRegistry(), health_check_interval=None)
        await ops.start()
        addr = ops.addresses["health"]
        try:
            resp = await raw(addr, request_bytes)
            assert status(resp) == expected
            assert b"Traceback" not in resp and b"Connection: close" in resp
            if expected == 405:
                assert b"Allow: GET, HEAD\r\n" in resp
            assert await get(addr, "/health") == (200, b"OK")
        finally:
            await ops.stop()

    run(main)


def test_oversized_and_slow_requests() -> None:
    async def main() -> None:
        ops = OpsServer(LOOP, None, None, read_timeout=0.3, health_check_interval=None)
        await ops.start()
        addr = ops.addresses["health"]
        try:
            huge = b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
            resp = await raw(addr, huge)
            assert resp == b"" or status(resp) == 431
            # A client that never finishes its head is cut off after the read timeout.
            t0 = time.monotonic()
            resp = await raw(addr, b"GET /health HTTP/1.1\r\nHost:", timeout=5)
            assert time.monotonic() - t0 < 3
            assert resp == b"" or status(resp) == 408
            # A client that connects and leaves at once does no harm.
            _, w = await asyncio.open_connection(*addr)
            w.close()
            assert await get(addr, "/health") == (200, b"OK")
        finally:
            await ops.stop()

    run(main)


def test_connection_limit_closes_extra_connections() -> None:
    async def main() -> None:
        ops = OpsServer(LOOP, None, None, max_connections=2, read_timeout=2,
                        health_check_interval=None)
        await ops.start()
        addr = ops.addresses["health"]
        idle = []
        try:
            for _ in range(2):
                idle.append(await asyncio.open_connection(*addr))
            # Wait until the server has accepted both idle connections.
            deadline = time.monotonic() + 5
            while ops._active < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert await raw(addr, b"GET /health HTTP/1.1\r\n\r\n") == b""
            for _, w in idle:
                w.close()
            deadline = time.monotonic() + 5
            while ops._active:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert await get(addr, "/health") == (200, b"OK")
        finally:
            await ops.stop()

    run(main)


def test_health_self_check_reports_to_observer() -> None:
    async def main() -> None:
        seen: list[tuple[float, bool]] = []
        ops = OpsServer(LOOP, None, None, health_check_interval=0.02,
                        health_observer=lambda s, ok: seen.append((s, ok)))
        await ops.start()
        try:
            deadline = time.monotonic() + 5
            while len(seen) < 2:
                assert time.monotonic() < deadline, "no health self-check within 5s"
                await asyncio.sleep(0.01)
            assert all(ok and 0 <= s < 3 for s, ok in seen)
        finally:
            await ops.stop()

    run(main)


def test_uvloop_serves_too() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        ops = OpsServer(LOOP, LOOP, None, health_check_interval=None)
        await ops.start()
        try:
            assert await get(ops.addresses["ready"], "/ready") == (200, b"OK")
        finally:
            await ops.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
