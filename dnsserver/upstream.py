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
from dataclasses import dataclass

from dnslib import DNSRecord

MAX_MESSAGE = 65535
_LEN = struct.Struct("!H")


class UpstreamError(Exception):
    """The upstream did not give a usable answer (timeout, refused, garbage, closed)."""


class QuestionMismatch(UpstreamError):
    """An answer with our ID whose question is not ours: not trusted (CoreDNS answers FORMERR)."""


@dataclass
class Answer:
    """An upstream's answer, its ID set back to the query's, and how it was obtained."""

    message: DNSRecord
    proto: str  # the transport that produced this answer ("tcp" after a TC retry)
    size: int  # bytes on the wire


def hostport(addr: tuple[str, int]) -> str:
    """`127.0.0.1:53` or `[::1]:53`, as Go's net.JoinHostPort writes it."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def question_matches(query: DNSRecord, reply: DNSRecord) -> bool:
    """CoreDNS's request.Match: a response with exactly our question (name case-insensitive)."""
    if not reply.header.qr or len(reply.questions) != 1 or len(query.questions) != 1:
        return False
    asked, got = query.questions[0], reply.questions[0]
    return (str(got.qname).lower() == str(asked.qname).lower() and got.qtype == asked.qtype
            and got.qclass == asked.qclass)


async def exchange(query: DNSRecord, addr: tuple[str, int], proto: str = "udp", *,
                   timeout: float = 2.0, dial_timeout: float | None = None,
                   tcp_on_tc: bool = False) -> Answer:
    """Send `query` to `addr` and return the matching answer.

    `timeout` bounds the whole exchange (connect, write, read); `dial_timeout` additionally
    bounds the TCP connect. With `tcp_on_tc`, a truncated UDP answer is asked again over TCP
    within the same deadline. The query's own ID is left as it was; the answer carries it.
    Raises UpstreamError (or its QuestionMismatch) when there is no trustworthy answer.
    """
    deadline = time.monotonic() + timeout
    original_id = query.header.id
    ident = secrets.randbits(16)
    query.header.id = ident
    try:
        wire = query.pack()
    finally:
        query.header.id = original_id
    if proto == "tcp":
        data = await _tcp(wire, ident, addr, deadline, dial_timeout)
    else:
        data = await _udp(wire, ident, addr, deadline)
    reply = _parse(data, addr, proto)
    if reply.header.tc and proto == "udp" and tcp_on_tc:
        return await exchange(query, addr, "tcp", timeout=max(deadline - time.monotonic(), 0),
                              dial_timeout=dial_timeout)
    if not question_matches(query, reply):
        raise QuestionMismatch(f"dns: wrong reply from {hostport(addr)} for id {ident}")
    reply.header.id = original_id
    return Answer(reply, proto, len(data))


def _parse(data: bytes, addr: tuple[str, int], proto: str) -> DNSRecord:
    try:
        message = DNSRecord.parse(data)
        # Rarely dnslib reads a message it cannot write back; the answer is re-encoded for the
        # client later, so find out now, while another upstream can still be tried.
        message.pack()
    except Exception as exc:  # dnslib raises several types on malformed input
        raise UpstreamError(f"read {proto} {hostport(addr)}: dns: bad message: {exc}") from None
    return message


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
