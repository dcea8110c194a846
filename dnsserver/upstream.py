"""A small asyncio DNS client for talking to upstream servers: one query, one answer, over UDP or
TCP, with a fresh socket (random source port) and a random ID per query, and deadlines.

An answer is only trusted when its ID matches (others are dropped and we keep waiting, as
miekg/dns does) and its question is the one we asked (`QuestionMismatch` otherwise). Errors read
like Go's net errors, because CoreDNS's `errors` plugin lines show them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from typing import Any

from dnslib import DNSRecord

MAX_MESSAGE = 65535
_LEN = struct.Struct("!H")


class UpstreamError(Exception):
    """The upstream did not give a usable answer (timeout, refused, garbage, closed)."""


class QuestionMismatch(UpstreamError):
    """An answer with our ID whose question is not ours: not trusted (CoreDNS answers FORMERR)."""


class Answer:
    """An upstream's answer, its ID set back to the query's, and how it was obtained.

    `wire` holds the bytes as the upstream wrote them (but for the ID); `message` decodes them
    on first use.
    """

    __slots__ = ("_message", "proto", "wire")

    def __init__(self, wire: bytes, proto: str) -> None:
        self.wire = wire
        self.proto = proto  # the transport that produced this answer ("tcp" after a TC retry)
        self._message: DNSRecord | None = None

    @property
    def size(self) -> int:
        """Bytes on the wire."""
        return len(self.wire)

    @property
    def rcode(self) -> int:
        return self.wire[3] & 0xF

    @property
    def message(self) -> DNSRecord:
        if self._message is None:
            self._message = DNSRecord.parse(self.wire)
        return self._message


def hostport(addr: tuple[str, int]) -> str:
    """`127.0.0.1:53` or `[::1]:53`, as Go's net.JoinHostPort writes it."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def exchange(query: DNSRecord | bytes, addr: tuple[str, int], proto: str = "udp", *,
                   timeout: float = 2.0, dial_timeout: float | None = None,
                   tcp_on_tc: bool = False, connections: Connections | None = None) -> Answer:
    """Send `query` (a message, or a query's bytes) to `addr` and return the matching answer.

    `timeout` bounds the whole exchange (connect, write, read); `dial_timeout` additionally
    bounds the TCP connect. With `tcp_on_tc`, a truncated UDP answer is asked again over TCP
    within the same deadline. The query goes out with a fresh random ID (and, without
    `connections` to reuse, from a fresh socket); the answer comes back with the query's own.
    Raises UpstreamError (or its QuestionMismatch) when there is no trustworthy answer: one
    that does not walk as a DNS message, or not for our question.
    """
    deadline = time.monotonic() + timeout
    data = query if isinstance(query, bytes) else query.pack()
    question_end = question_span(data)
    while True:
        if connections is not None:
            if proto == "tcp":
                reply = await connections.tcp(data, deadline, dial_timeout)
            else:
                reply = await connections.udp(data, deadline)
        else:
            ident = random_id()
            sent = _LEN.pack(ident) + data[2:]
            if proto == "tcp":
                reply = await _tcp(sent, ident, addr, deadline, dial_timeout)
            else:
                reply = await _udp(sent, ident, addr, deadline)
        verdict = check_reply(data, question_end, reply)
        if verdict is not None:
            if verdict == MISMATCH:
                raise QuestionMismatch(
                    f"dns: wrong reply from {hostport(addr)} for id {_LEN.unpack_from(reply)[0]}")
            raise UpstreamError(f"read {proto} {hostport(addr)}: dns: bad message: {verdict}")
        if reply[2] & _TC and proto == "udp" and tcp_on_tc:
            proto = "tcp"
            continue
        return Answer(data[:2] + reply[2:], proto)


def question_span(query: bytes) -> int:
    """Where the one question of an encoded query ends (its name is never compressed)."""
    offset = 12
    while True:
        length = query[offset]
        if length == 0:
            return offset + 5
        if length > 63:
            raise ValueError("a compressed or extended label in the question")
        offset += length + 1


_QR, _TC = 0x80, 0x02
MISMATCH = "mismatch"


def check_reply(query: bytes, question_end: int, reply: bytes) -> str | None:
    """What is wrong with `reply` as the answer to `query`, read without decoding it into
    objects: None for a response with our question (name compared without case) whose records
    all lie within the message; MISMATCH for a response to another question (CoreDNS's
    request.Match); else why it is not a DNS message we could relay."""
    if len(reply) < 12:
        return "short header"
    qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", reply, 4)
    offset = 12
    size = len(reply)
    try:
        for _ in range(qdcount):
            offset = _walk_name(reply, offset) + 4
        if offset > size:
            return "question past the end"
        for _ in range(ancount + nscount + arcount):
            offset = _walk_name(reply, offset)
            if offset + 10 > size:
                return "record header past the end"
            offset += 10 + ((reply[offset + 8] << 8) | reply[offset + 9])
            if offset > size:
                return "record data past the end"
    except IndexError:
        return "name past the end"
    except ValueError as exc:
        return str(exc)
    if not reply[2] & _QR or qdcount != 1:
        return MISMATCH
    # The name without case (0x20 randomisation), the type and class exactly.
    name_end = question_end - 4
    if (reply[12:name_end].lower() != query[12:name_end].lower()
            or reply[name_end:question_end] != query[name_end:question_end]):
        return MISMATCH
    return None


def _walk_name(data: bytes, offset: int) -> int:
    """The offset after the name at `offset`; compression pointers must point back."""
    total = 0
    while True:
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if (((length & 0x3F) << 8) | data[offset + 1]) >= offset:
                raise ValueError("compression pointer forward")
            return offset + 2
        if length & 0xC0:
            raise ValueError("reserved label type")
        if length == 0:
            return offset + 1
        total += length + 1
        if total > 255:
            raise ValueError("name too long")
        offset += length + 1


def _family(addr: tuple[str, int]) -> int:
    return socket.AF_INET6 if ":" in addr[0] else socket.AF_INET


async def _udp(wire: bytes, ident: int, addr: tuple[str, int], deadline: float) -> bytes:
    loop = asyncio.get_running_loop()
    # A new socket per query: the kernel picks a random ephemeral source port each time, and a
    # connected socket only accepts datagrams from the upstream (and reports ICMP refusals).
    sock = socket.socket(_family(addr), socket.SOCK_DGRAM)
    sock.setblocking(False)
    local = "?"
    try:
        try:
            sock.connect(addr)
            local = hostport(sock.getsockname()[:2])
            await loop.sock_sendall(sock, wire)
            async with asyncio.timeout_at(_loop_deadline(loop, deadline)):
                while True:
                    data = await loop.sock_recv(sock, MAX_MESSAGE)
                    # Another ID (a late answer to an earlier query, or a forgery): keep waiting.
                    if len(data) >= 2 and _LEN.unpack_from(data)[0] == ident:
                        return data
        except TimeoutError:
            raise UpstreamError(f"read udp {local}->{hostport(addr)}: i/o timeout") from None
        except OSError as exc:
            raise UpstreamError(
                f"read udp {local}->{hostport(addr)}: {_strerror(exc)}") from None
    finally:
        sock.close()


async def _tcp(wire: bytes, ident: int, addr: tuple[str, int], deadline: float,
               dial_timeout: float | None) -> bytes:
    loop = asyncio.get_running_loop()
    dial_deadline = deadline if dial_timeout is None else min(deadline,
                                                               time.monotonic() + dial_timeout)
    try:
        async with asyncio.timeout_at(_loop_deadline(loop, dial_deadline)):
            reader, writer = await asyncio.open_connection(addr[0], addr[1])
    except TimeoutError:
        raise UpstreamError(f"dial tcp {hostport(addr)}: i/o timeout") from None
    except OSError as exc:
        raise UpstreamError(f"dial tcp {hostport(addr)}: connect: {_strerror(exc)}") from None
    local = hostport(writer.get_extra_info("sockname")[:2])
    try:
        async with asyncio.timeout_at(_loop_deadline(loop, deadline)):
            writer.write(_LEN.pack(len(wire)) + wire)
            await writer.drain()
            while True:
                size = _LEN.unpack(await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
                if len(data) >= 2 and _LEN.unpack_from(data)[0] == ident:
                    return data
    except TimeoutError:
        raise UpstreamError(f"read tcp {local}->{hostport(addr)}: i/o timeout") from None
    except asyncio.IncompleteReadError:
        raise UpstreamError(f"read tcp {local}->{hostport(addr)}: EOF") from None
    except OSError as exc:
        raise UpstreamError(f"read tcp {local}->{hostport(addr)}: {_strerror(exc)}") from None
    finally:
        # No waiting for the close: an upstream that stopped reading must not hold us.
        writer.transport.abort()


POOL_SOCKETS = 8  # UDP sockets kept per upstream: queries pick one at random


class _RandomIds:
    """Unpredictable 16-bit numbers from the system's CSPRNG, read 256 at a time (one
    getrandom call per 256 queries rather than one per query)."""

    def __init__(self) -> None:
        self._left: list[int] = []

    def next(self) -> int:
        if not self._left:
            raw = os.urandom(512)
            self._left = [raw[i] << 8 | raw[i + 1] for i in range(0, 512, 2)]
        return self._left.pop()


random_id = _RandomIds().next


class Waiter:
    """Told the answer to one query in flight on a pooled socket, or why there is none."""

    __slots__ = ()

    def answered(self, data: bytes) -> None:
        raise NotImplementedError

    def failed(self, exc: BaseException) -> None:
        raise NotImplementedError


class _FutureWaiter(Waiter):
    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[bytes]) -> None:
        self.future = future

    def answered(self, data: bytes) -> None:
        if not self.future.done():
            self.future.set_result(data)

    def failed(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class _UdpSocket(asyncio.DatagramProtocol):
    """One connected UDP socket of a pool, with the queries in flight on it by ID."""

    def __init__(self, remote: str) -> None:
        self.remote = remote
        self.transport: asyncio.DatagramTransport | None = None
        self.local = "?"
        self.born = time.monotonic()
        self.pending: dict[int, Waiter] = {}
        self.retired = False
        self.opening: asyncio.Task[Any] | None = None  # making the transport

    def usable(self, expire: float) -> bool:
        if time.monotonic() - self.born >= expire:
            return False
        if self.transport is None:
            return self.opening is not None and not self.opening.done()
        return not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        name = transport.get_extra_info("sockname")
        if name:
            self.local = hostport(name[:2])

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 2:
            return
        # Another ID (a late answer to a query that gave up, or a forgery): dropped.
        waiter = self.pending.pop((data[0] << 8) | data[1], None)
        if waiter is not None:
            waiter.answered(data)
            if self.retired and not self.pending:
                self.close()

    def error_received(self, exc: Exception) -> None:
        # An ICMP error (port unreachable): every query on this socket has failed.
        self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionAbortedError("closed"))

    def _fail(self, exc: Exception) -> None:
        pending, self.pending = self.pending, {}
        for waiter in pending.values():
            waiter.failed(exc)

    def done_with(self, ident: int) -> None:
        self.pending.pop(ident, None)
        if self.retired and not self.pending:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class Connections:
    """The sockets kept to one upstream (CoreDNS's persistent connections, with its `expire`).

    UDP: a few connected sockets; each query goes out on one picked at random with a random
    ID not in flight there, and a socket older than `expire` is replaced (closed once its last
    query is answered), so the source port keeps changing. A connected socket only hears the
    upstream, and hears its ICMP refusals. TCP: idle connections are reused for one query at a
    time until idle for `expire`.
    """

    def __init__(self, addr: tuple[str, int], expire: float = 10.0,
                 sockets: int = POOL_SOCKETS) -> None:
        self.addr = addr
        self.remote = hostport(addr)
        self.expire = expire
        self._udp: list[_UdpSocket | None] = [None] * max(1, sockets)
        self._idle_tcp: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}

    def _count(self, table: dict[str, int], proto: str) -> None:
        table[proto] = table.get(proto, 0) + 1

    def _udp_socket(self) -> _UdpSocket:
        slot = random_id() % len(self._udp)
        current = self._udp[slot]
        if current is not None and current.usable(self.expire):
            self._count(self.hits, "udp")
            return current
        if current is not None:
            current.retired = True
            if not current.pending:
                current.close()
        self._count(self.misses, "udp")
        sock = socket.socket(_family(self.addr), socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(self.addr)  # the kernel picks a random ephemeral port
        except OSError:
            sock.close()
            raise
        proto = _UdpSocket(self.remote)
        # The transport is made at once around the connected socket (no await): one slot
        # never gets two sockets.
        loop = asyncio.get_running_loop()
        proto.local = hostport(sock.getsockname()[:2])
        proto.opening = loop.create_task(loop.create_datagram_endpoint(lambda: proto, sock=sock))
        self._udp[slot] = proto
        return proto

    def send_udp(self, data: bytes, waiter: Waiter,
                 sock: _UdpSocket | None = None) -> tuple[_UdpSocket, int] | None:
        """Send `data` (a query with any ID) on `sock` or a pooled socket picked at random,
        under a fresh random ID; the answer goes to `waiter`. None when the socket is not
        open yet (it is being opened)."""
        if sock is None:
            sock = self._udp_socket()
        transport = sock.transport
        if transport is None:
            return None
        ident = random_id()
        while ident in sock.pending:
            ident = random_id()
        sock.pending[ident] = waiter
        transport.sendto(_LEN.pack(ident) + data[2:])
        return sock, ident

    async def udp(self, data: bytes, deadline: float) -> bytes:
        """The answer to `data` (a query with any ID) over a pooled UDP socket."""
        loop = asyncio.get_running_loop()
        local = "?"
        sent = None
        future: asyncio.Future[bytes] = loop.create_future()
        timer = loop.call_at(_loop_deadline(loop, deadline), _time_out, future)
        try:
            sock = self._udp_socket()
            local = sock.local
            if sock.transport is None and sock.opening is not None:
                await asyncio.wait_for(asyncio.shield(sock.opening),
                                       max(deadline - time.monotonic(), 0))
            sent = self.send_udp(data, _FutureWaiter(future), sock)
            if sent is None:
                raise ConnectionAbortedError("socket not open")
            return await future
        except TimeoutError:
            raise UpstreamError(f"read udp {local}->{self.remote}: i/o timeout") from None
        except OSError as exc:
            raise UpstreamError(f"read udp {local}->{self.remote}: {_strerror(exc)}") from None
        finally:
            timer.cancel()
            if sent is not None:
                sent[0].done_with(sent[1])

    async def tcp(self, data: bytes, deadline: float, dial_timeout: float | None) -> bytes:
        """The answer to `data` over a kept TCP connection, or a new one."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        while self._idle_tcp:
            since, reader, writer = self._idle_tcp.pop()
            if now - since < self.expire and not writer.is_closing() and not reader.at_eof():
                self._count(self.hits, "tcp")
                try:
                    return await self._tcp_exchange(reader, writer, data, deadline)
                except _StaleConnection:
                    break  # the upstream closed it while it was idle: dial a fresh one
            writer.transport.abort()
        self._count(self.misses, "tcp")
        dial_deadline = deadline if dial_timeout is None else min(deadline, now + dial_timeout)
        try:
            async with asyncio.timeout_at(_loop_deadline(loop, dial_deadline)):
                reader, writer = await asyncio.open_connection(self.addr[0], self.addr[1])
        except TimeoutError:
            raise UpstreamError(f"dial tcp {self.remote}: i/o timeout") from None
        except OSError as exc:
            raise UpstreamError(f"dial tcp {self.remote}: connect: {_strerror(exc)}") from None
        try:
            return await self._tcp_exchange(reader, writer, data, deadline)
        except _StaleConnection:
            raise UpstreamError(f"read tcp {self.remote}: EOF") from None

    async def _tcp_exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            data: bytes, deadline: float) -> bytes:
        loop = asyncio.get_running_loop()
        local = hostport(writer.get_extra_info("sockname")[:2])
        ident = random_id()
        answered = False
        got_any = False
        try:
            async with asyncio.timeout_at(_loop_deadline(loop, deadline)):
                writer.write(_LEN.pack(len(data)) + _LEN.pack(ident) + data[2:])
                await writer.drain()
                while True:
                    size = _LEN.unpack(await reader.readexactly(2))[0]
                    got_any = True
                    reply = await reader.readexactly(size)
                    if len(reply) >= 2 and _LEN.unpack_from(reply)[0] == ident:
                        answered = True
                        return reply
        except TimeoutError:
            raise UpstreamError(f"read tcp {local}->{self.remote}: i/o timeout") from None
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
            if not got_any:
                raise _StaleConnection() from None
            raise UpstreamError(f"read tcp {local}->{self.remote}: EOF") from None
        except OSError as exc:
            raise UpstreamError(f"read tcp {local}->{self.remote}: {_strerror(exc)}") from None
        finally:
            if answered:
                self._idle_tcp.append((time.monotonic(), reader, writer))
            else:
                # No waiting for the close: an upstream that stopped reading must not hold us.
                writer.transport.abort()

    def close(self) -> None:
        for sock in self._udp:
            if sock is not None:
                sock.close()
        self._udp = [None] * len(self._udp)
        for _since, _reader, writer in self._idle_tcp:
            writer.transport.abort()
        self._idle_tcp.clear()


class _StaleConnection(Exception):
    """A kept TCP connection closed before it answered anything."""


def _time_out(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _loop_deadline(loop: asyncio.AbstractEventLoop, deadline: float) -> float:
    # asyncio's clock is time.monotonic on every loop we use, but don't rely on it.
    return loop.time() + (deadline - time.monotonic())


def _strerror(exc: OSError) -> str:
    # asyncio words refusals its own way ("Connect call failed ..."); the errno is what counts.
    text = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return text.lower()
