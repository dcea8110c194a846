"""A small asyncio DNS client for talking to upstream servers: one query, one answer, over UDP or
TCP, with a fresh socket (random source port) and a random ID per query, and deadlines.

An answer is only trusted when its ID matches (others are dropped and we keep waiting, as
miekg/dns does) and its question is the one we asked (`QuestionMismatch` otherwise). Errors read
like Go's net errors, because CoreDNS's `errors` plugin lines show them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import struct
import time

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
                   tcp_on_tc: bool = False) -> Answer:
    """Send `query` (a message, or a query's bytes) to `addr` and return the matching answer.

    `timeout` bounds the whole exchange (connect, write, read); `dial_timeout` additionally
    bounds the TCP connect. With `tcp_on_tc`, a truncated UDP answer is asked again over TCP
    within the same deadline. The query goes out with a fresh random ID; the answer comes back
    with the query's own. Raises UpstreamError (or its QuestionMismatch) when there is no
    trustworthy answer: one that does not walk as a DNS message, or not for our question.
    """
    deadline = time.monotonic() + timeout
    data = query if isinstance(query, bytes) else query.pack()
    question_end = question_span(data)
    ident = secrets.randbits(16)
    sent = _LEN.pack(ident) + data[2:]
    while True:
        if proto == "tcp":
            reply = await _tcp(sent, ident, addr, deadline, dial_timeout)
        else:
            reply = await _udp(sent, ident, addr, deadline)
        verdict = check_reply(data, question_end, reply)
        if verdict is not None:
            if verdict == MISMATCH:
                raise QuestionMismatch(f"dns: wrong reply from {hostport(addr)} for id {ident}")
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
    if reply[12:question_end].lower() != query[12:question_end].lower():
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


def _loop_deadline(loop: asyncio.AbstractEventLoop, deadline: float) -> float:
    # asyncio's clock is time.monotonic on every loop we use, but don't rely on it.
    return loop.time() + (deadline - time.monotonic())


def _strerror(exc: OSError) -> str:
    # asyncio words refusals its own way ("Connect call failed ..."); the errno is what counts.
    text = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
    return text.lower()
