"""UDP and TCP listeners: bytes in, bytes out, with the fast path inlined on the hot path.

TCP follows RFC 7766: two-byte length prefixes, several queries per connection answered as they
complete, an idle timeout between queries, a read timeout inside one, and a bound on connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from dnsserver.engine import QueryEngine
from dnsserver.plugins.forward import DEADLINE as FORWARD_DEADLINE

log = logging.getLogger("dnsserver")


class Limits:
    """Resource bounds of the listeners, each settable from the Corefile (`limits`,
    `timeouts`), with counters of what each bound turned away."""

    def __init__(self, tcp_connections: int = 1000, tcp_idle_timeout: float = 10.0,
                 tcp_read_timeout: float = 3.0, tcp_queries_in_flight: int = 100,
                 udp_in_flight: int = 10_000) -> None:
        self.tcp_connections = tcp_connections
        self.tcp_idle_timeout = tcp_idle_timeout
        self.tcp_read_timeout = tcp_read_timeout
        self.tcp_queries_in_flight = tcp_queries_in_flight
        self.udp_in_flight = udp_in_flight
        # Plain counters for the metrics flush: {bound name: times it refused or cut off}.
        self.rejections: dict[str, int] = {
            "tcp_connections": 0, "tcp_idle_timeout": 0, "tcp_read_timeout": 0,
            "tcp_queries_in_flight": 0, "udp_in_flight": 0}


class InFlight:
    """The slow-path tasks under way, so shutdown can wait for them to answer."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.relayed = 0  # queries `forward` relays without a task, waiting upstream

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def drain(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.relayed > 0 and loop.time() < deadline:
            await asyncio.sleep(0.01)  # relayed queries have no task to wait on
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=max(deadline - loop.time(), 0))


class UDPListener(asyncio.DatagramProtocol):
    def __init__(self, engine: QueryEngine, inflight: InFlight, limits: Limits) -> None:
        self.engine = engine
        self.inflight = inflight
        self.limits = limits
        self.transport: asyncio.DatagramTransport | None = None
        # Bound locals for the hot path.
        self._table = engine.fast.udp
        self._current = engine.fast.current
        self._find = engine.fast.find

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def set_engine(self, engine: QueryEngine) -> None:
        """Serve from another engine from the next datagram on (Corefile reload)."""
        self.engine = engine
        self._table = engine.fast.udp
        self._current = engine.fast.current
        self._find = engine.fast.find

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        entry = self._table.get(data[2:])
        if entry is None and len(data) > 12 and data[11]:
            entry = self._find(data, False)  # with an EDNS record: maybe only a cookie differs
        if entry is not None:
            # Indexes as engine.TAIL, SPECIAL, HITS, LOGGER (literals: this is the hot path).
            tail = entry[0] if not entry[1] else self._current(entry)
            if tail is not None:  # None: the kept answer's lease ran out
                entry[2][0] += 1
                answer = data[:2] + tail
                self.transport.sendto(answer, addr)  # type: ignore[union-attr]
                if entry[3] is not None:  # the block has `log`
                    entry[3].write(addr, "udp", data, answer, 0)
                return
        if len(self.inflight.tasks) + self.inflight.relayed >= self.limits.udp_in_flight:
            self.limits.rejections["udp_in_flight"] += 1  # shed rather than queue without bound
            return
        if self.engine.relays and self.engine.relay(data, addr, self._relayed, self._hand_over):
            self.inflight.relayed += 1
            return
        self.inflight.spawn(self._slow(data, addr))

    def _relayed(self, answer: bytes, addr: tuple[str, int]) -> None:
        self.inflight.relayed -= 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(answer, addr)

    def _hand_over(self, data: bytes, addr: tuple[str, int], deadline: float) -> None:
        # The relay could not finish this query: the slow path does, within its deadline.
        self.inflight.relayed -= 1
        self.inflight.spawn(self._slow(data, addr, {FORWARD_DEADLINE: deadline}))

    async def _slow(self, data: bytes, addr: tuple[str, int],
                    meta: dict[str, Any] | None = None) -> None:
        answer = await self.engine.resolve(data, addr[:2], tcp=False, meta=meta)
        if answer is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier answers (client went away): nothing to do, keep serving.
        log.debug("udp error: %s", exc)


class TCPConnection(asyncio.Protocol):
    def __init__(self, engine: QueryEngine, inflight: InFlight, limits: Limits,
                 connections: set[TCPConnection], listener: Any = None) -> None:
        self.engine = engine
        self.listener = listener
        self.inflight = inflight
        self.limits = limits
        self.connections = connections
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.pending = 0
        self._partial = False  # a message has begun and is not complete yet
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = tuple(peer[:2]) if peer else ("", 0)  # type: ignore[assignment]
        if len(self.connections) >= self.limits.tcp_connections:
            self._close_idlest()
        self.connections.add(self)
        self._arm(self.limits.tcp_idle_timeout)

    def _close_idlest(self) -> None:
        # Over the bound: make room by closing a connection with nothing in flight.
        self.limits.rejections["tcp_connections"] += 1
        for conn in self.connections:
            if conn.pending == 0 and not conn.buffer:
                conn.close()
                return
        self.close()

    def _arm(self, timeout: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(timeout, self._timed_out)

    def _timed_out(self) -> None:
        if self.pending:
            self._arm(self.limits.tcp_idle_timeout)  # answers still on their way
            return
        which = "tcp_read_timeout" if self.buffer else "tcp_idle_timeout"
        self.limits.rejections[which] += 1
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        fast = self.engine.fast
        while len(buffer) >= 2:
            size = (buffer[0] << 8) | buffer[1]
            if len(buffer) < 2 + size:
                break
            query = bytes(buffer[2 : 2 + size])
            del buffer[: 2 + size]
            entry = fast.find(query, True)
            if entry is not None:
                tail = entry[0] if not entry[1] else fast.current(entry)
                if tail is not None:
                    entry[2][0] += 1
                    answer = query[:2] + tail
                    self._send(answer)
                    if entry[3] is not None:
                        entry[3].write(self.peer, "tcp", query, answer, 0)
                    continue
            if self.pending >= self.limits.tcp_queries_in_flight:
                # A client pipelining faster than we answer: stop reading until we catch up.
                self.limits.rejections["tcp_queries_in_flight"] += 1
                self.transport.pause_reading()  # type: ignore[union-attr]
            self.pending += 1
            self.inflight.spawn(self._slow(query))
        # A message must be complete within the read timeout of its first byte, however slowly
        # it trickles in (a slow-loris client); between messages the idle timeout runs.
        if not buffer:
            self._partial = False
            self._arm(self.limits.tcp_idle_timeout)
        elif not self._partial:
            self._partial = True
            self._arm(self.limits.tcp_read_timeout)

    async def _slow(self, query: bytes) -> None:
        try:
            answer = await self.engine.resolve(query, self.peer, tcp=True)
        finally:
            self.pending -= 1
        if answer is not None:
            self._send(answer)
        else:
            self.close()  # not a query we can answer: on a stream, stop reading from it
        if self.transport is not None and self.pending < self.limits.tcp_queries_in_flight:
            self.transport.resume_reading()

    def _send(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(len(answer).to_bytes(2, "big") + answer)


def reuseport_socket(host: str, port: int, kind: int) -> socket.socket:
    """A bound socket with SO_REUSEPORT, so several worker processes can share one address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if kind == socket.SOCK_DGRAM:
        # Room for bursts: the kernel drops what does not fit while Python is busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((host, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(1024)
    sock.setblocking(False)
    return sock
