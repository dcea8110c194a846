"""Upstream DNS servers for tests, on 127.0.0.1 only, each on its own UDP+TCP port in a thread.

`Upstream(mode)` answers from a small table (`answer`), or misbehaves: `silent` (never answers),
`truncate` (TC over UDP, the full answer over TCP), `garbage`, `wrong_id`, `wrong_question`,
`refused`, `servfail`, or `hold` (answers only once `release()` is called). The mode can be
changed while it runs; every query it receives is recorded. `closed_port()` is a port where
nothing listens (queries there are refused by the kernel at once).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from dataclasses import dataclass

from dnslib import QTYPE, RCODE, RR, DNSRecord

from helpers import free_port, wait_for

HOST = "127.0.0.1"
MODES = ("answer", "silent", "truncate", "garbage", "wrong_id", "wrong_question", "refused",
         "servfail", "hold")

# Names the `answer` mode knows, in zone-file syntax; anything else is NXDOMAIN. Loopback only.
DEFAULT_TABLE = """\
example.org. 300 IN A 127.0.0.10
example.org. 300 IN AAAA ::1
www.example.org. 300 IN CNAME example.org.
www.example.org. 300 IN A 127.0.0.10
. 300 IN NS ns.example.org.
"""


@dataclass
class Received:
    """One query as the upstream saw it."""

    proto: str
    source: tuple[str, int]
    id: int
    qname: str
    qtype: int
    rd: bool


def big_table(name: str = "big.example.org.", count: int = 60) -> str:
    """A name with enough A records that the answer never fits in 512 bytes."""
    return "".join(f"{name} 300 IN A 127.0.1.{i}\n" for i in range(1, count + 1))


class Upstream:
    """A DNS server on 127.0.0.1:<port> (UDP and TCP) for one test; a context manager."""

    def __init__(self, mode: str = "answer", table: str = DEFAULT_TABLE,
                 port: int | None = None, host: str = HOST) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown upstream mode {mode!r}")
        self.mode = mode
        self.records = RR.fromZone(table)
        self.host = host
        self.port = port or free_port(host)
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._held: list[tuple[str, DNSRecord, object]] = []
        self._stop = threading.Event()
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind((host, self.port))
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind((host, self.port))
        self._tcp.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._released.set()
        self._thread.join(timeout=5)
        self._udp.close()
        self._tcp.close()

    # -- what tests look at -------------------------------------------------------------------

    def queries(self, qname: str | None = None, proto: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received
                    if (qname is None or r.qname.lower() == qname.lower())
                    and (proto is None or r.proto == proto)]

    def wait_queries(self, count: int, qname: str | None = None, timeout: float = 5.0,
                     proto: str | None = None) -> list[Received]:
        wait_for(lambda: len(self.queries(qname, proto)) >= count, timeout=timeout,
                 what=f"{count} queries for {qname or 'any name'} at {self.address}")
        return self.queries(qname, proto)

    def release(self) -> None:
        """Answer every held query (mode `hold`) and stop holding."""
        self._released.set()

    # -- the server ---------------------------------------------------------------------------

    def _serve(self) -> None:
        conns: list[socket.socket] = []
        try:
            while not self._stop.is_set():
                if self._released.is_set() and self._held:
                    self._flush_held()
                readable, _, _ = select.select([self._udp, self._tcp, *conns], [], [], 0.05)
                for sock in readable:
                    if sock is self._udp:
                        self._on_udp()
                    elif sock is self._tcp:
                        conn, _ = self._tcp.accept()
                        conns.append(conn)
                    elif not self._on_tcp(sock):
                        conns.remove(sock)
                        sock.close()
        finally:
            for conn in conns:
                conn.close()

    def _on_udp(self) -> None:
        try:
            data, source = self._udp.recvfrom(65535)
        except OSError:
            return
        reply = self._handle(data, "udp", source, self._udp)
        if reply is not None:
            with contextlib.suppress(OSError):
                self._udp.sendto(reply, source)

    def _on_tcp(self, conn: socket.socket) -> bool:
        try:
            head = _recv_exact(conn, 2)
            if head is None:
                return False
            data = _recv_exact(conn, struct.unpack("!H", head)[0])
            if data is None:
                return False
            reply = self._handle(data, "tcp", conn.getpeername(), conn)
            if reply is not None:
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return False
        return True

    def _handle(self, data: bytes, proto: str, source: tuple, sock: object) -> bytes | None:
        try:
            query = DNSRecord.parse(data)
        except Exception:
            return None
        q = query.q
        with self._lock:
            self.received.append(Received(proto, source[:2], query.header.id, str(q.qname),
                                          q.qtype, bool(query.header.rd)))
        mode = self.mode
        if mode == "silent":
            return None
        if mode == "hold" and not self._released.is_set():
            self._held.append((proto, query, (sock, source)))
            return None
        return self._reply(query, proto, mode)

    def _flush_held(self) -> None:
        held, self._held = self._held, []
        for proto, query, (sock, source) in held:
            reply = self._reply(query, proto, "answer")
            with contextlib.suppress(OSError):
                if proto == "udp":
                    sock.sendto(reply, source)  # type: ignore[attr-defined]
                else:
                    sock.sendall(struct.pack("!H", len(reply)) + reply)  # type: ignore[attr-defined]

    def _reply(self, query: DNSRecord, proto: str, mode: str) -> bytes:
        if mode == "garbage":
            # Our ID, then bytes that are not a DNS message.
            return query.pack()[:2] + b"\xff\xfe garbage"
        reply = query.reply(ra=1, aa=0)
        if mode in ("refused", "servfail"):
            reply.header.rcode = RCODE.REFUSED if mode == "refused" else RCODE.SERVFAIL
            return reply.pack()
        name = str(query.q.qname).lower()
        matches = [rr for rr in self.records if str(rr.rname).lower() == name]
        if not matches:
            reply.header.rcode = RCODE.NXDOMAIN
        for rr in matches:
            if rr.rtype == query.q.qtype or rr.rtype == QTYPE.CNAME:
                reply.add_answer(rr)
        if mode == "truncate" and proto == "udp":
            reply.rr = []
            reply.header.tc = 1
        elif mode == "wrong_id":
            reply.header.id = (query.header.id + 1) & 0xFFFF
        elif mode == "wrong_question":
            reply.questions[0].qname = "not-what-you-asked.example.org."
        return reply.pack()


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        chunk = conn.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def closed_port() -> int:
    """A loopback port where nothing listens right now: queries there are refused at once."""
    return free_port(HOST)
