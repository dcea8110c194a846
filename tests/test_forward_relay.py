"""forward's kept upstream sockets and its relay of plain UDP queries, against real sockets on
127.0.0.1: answers relayed byte for byte with the client's ID, the pool of 8 UDP sockets with
random IDs, what the relay hands to the slow path (garbage, wrong question, silence, wrong ID,
TC, refusals, max_concurrent) and within which deadline, kept TCP connections and their
metrics, and `check_reply`'s walk over an answer's bytes."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest
from dnslib import (
    EDNS0,
    QTYPE,
    RR,
    A,
    DNSHeader,
    DNSQuestion,
    DNSRecord,
    EDNSOption,
)
from prometheus_client.parser import text_string_to_metric_families
from test_forward import _corefile, _serve

from dnsserver import upstream
from dnsserver.upstream import MISMATCH, POOL_SOCKETS, check_reply, question_span

from helpers import ServerProcess, answers, free_port, query, udp_exchange, wait_for
from upstream_servers import DEFAULT_TABLE, Upstream, big_table

LOOP = "127.0.0.1"


# -- helpers ----------------------------------------------------------------------------------


def _block(zone: str, body: str) -> str:
    """One more server block on the same port as `_corefile`'s root block."""
    return f"{zone}:{{PORT}} {{\n    bind 127.0.0.1\n{body}\n}}\n"


def _warm(port: int, up: Upstream, name: str) -> set[tuple[str, int]]:
    """Ask `name` until the upstream has seen it from all 8 pooled UDP sockets, so that from
    now on (within `expire`) every plain UDP query is relayed: a query that lands on a slot
    whose socket is still opening goes to the slow path instead. The sources seen."""
    def all_open() -> set[tuple[str, int]] | None:
        query(name, "A", port=port, timeout=2)
        sources = {r.source for r in up.queries(name, "udp")}
        return sources if len(sources) >= POOL_SOCKETS else None

    return wait_for(all_open, timeout=10, interval=0, what=f"8 pooled sockets to {up.address}")


def _raw_query(name: str, ident: int, qtype: str = "A", edns: int | None = None) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = ident
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return q.pack()


def _metric(port: int, name: str) -> list[tuple[dict[str, str], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return [(s.labels, s.value) for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == name]


def _timed(name: str, port: int, timeout: float = 8.0, **kw: Any) -> tuple[int, float]:
    start = time.monotonic()
    msg = query(name, "A", port=port, timeout=timeout, **kw)
    return msg.rcode(), time.monotonic() - start


class _Scripted:
    """A UDP-only upstream on 127.0.0.1 answering with the bytes `make(query)` returns; each
    exchange is recorded as (source, query bytes, reply bytes)."""

    def __init__(self, make: Callable[[bytes], bytes]) -> None:
        self.make = make
        self.port = free_port()
        self.address = f"{LOOP}:{self.port}"
        self.seen: list[tuple[tuple[str, int], bytes, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LOOP, self.port))
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Scripted:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def exchanges(self, qname: str) -> list[tuple[tuple[str, int], bytes, bytes]]:
        with self._lock:
            return [e for e in self.seen
                    if str(DNSRecord.parse(e[1]).q.qname).lower() == qname.lower()]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.make(data)
            with self._lock:
                self.seen.append((source, data, reply))
            self._sock.sendto(reply, source)


def _crafted(data: bytes) -> bytes:
    """An answer no server of ours would write: AA set, RA clear, the question echoed in
    swapped case (0x20), an unusual TTL, and an OPT with its own size and an option."""
    q = DNSRecord.parse(data)
    name = str(q.q.qname).swapcase()
    reply = DNSRecord(DNSHeader(id=q.header.id, qr=1, aa=1, ra=0, rd=q.header.rd),
                      q=DNSQuestion(name, q.q.qtype))
    reply.add_answer(RR(name, QTYPE.A, rdata=A("127.0.0.77"), ttl=4321))
    reply.add_ar(EDNS0(udp_len=1400, opts=[EDNSOption(65001, b"relayed")]))
    return reply.pack()


# -- 1. answers relayed byte for byte, through the real server over UDP ----------------------


def test_relay_answers_are_the_upstreams_bytes_with_the_clients_id() -> None:
    with Upstream() as up, _Scripted(_crafted) as scripted:
        text = (_corefile(f"    forward . {up.address}")
                + _block("scripted.test.", f"    forward . {scripted.address}"))
        with ServerProcess(text, snapshot=None, ready_name="example.org",
                           ready_type="A") as srv:
            # Warm the scripted upstream's pool, so the queries below are relayed.
            def all_open() -> bool:
                udp_exchange(srv.port, _raw_query("warm.scripted.test.", 1), timeout=2)
                return len({e[0] for e in scripted.exchanges("warm.scripted.test.")}) >= 8

            wait_for(all_open, timeout=10, interval=0, what="8 pooled sockets")
            for i, edns in enumerate((None, 1232, 4096)):
                name = f"q{i}.Scripted.test."
                ident = 0xBEE0 + i
                got = udp_exchange(srv.port, _raw_query(name, ident, edns=edns))
                assert got is not None
                [(_, sent, wrote)] = scripted.exchanges(name)
                assert got[:2] == struct.pack("!H", ident)  # the client's ID
                assert sent[:2] != got[:2]  # a fresh one went upstream
                assert sent[2:] == _raw_query(name, ident, edns=edns)[2:]  # else as it came
                assert got[2:] == wrote[2:]  # the upstream's bytes: AA, no RA, case, OPT
                msg = dns.message.from_wire(got)
                assert msg.flags & dns.flags.AA and not msg.flags & dns.flags.RA
                assert msg.edns == 0 and msg.payload == 1400
                assert [o.otype for o in msg.options] == [65001]
                assert msg.answer[0].ttl == 4321
                assert str(msg.question[0].name) == name.swapcase()


def test_relay_pools_sockets_and_randomises_ids() -> None:
    body = "    forward . {up} {\n        expire 60s\n    }"
    with Upstream() as up, _serve(body.replace("{up}", up.address)) as srv:
        warm = _warm(srv.port, up, "warm.example.org.")
        for _ in range(40):
            msg = query("www.example.org", "A", port=srv.port, id=4242)
            assert msg.id == 4242
            assert answers(msg, "A") == ["127.0.0.10"]
            assert answers(msg, "CNAME") == ["example.org."]
            assert msg.flags & dns.flags.RA and not msg.flags & dns.flags.AA  # as it wrote
        seen = up.queries("www.example.org.", "udp")
        assert len(seen) == 40  # each asked once: none went to the slow path after the relay
        ports = {r.source for r in seen}
        assert 1 < len(ports) <= POOL_SOCKETS and ports <= warm
        ids = [r.id for r in seen]
        assert sum(i == 4242 for i in ids) <= 1
        assert len(set(ids)) >= 36  # random 16-bit IDs: a few collisions at most


def test_relay_edns_query_gets_an_opt_even_when_the_upstream_wrote_none() -> None:
    # CoreDNS's ScrubWriter (request.SizeAndDo) puts the client's OPT on a forwarded answer
    # that has none; an EDNS client must see EDNS in the answer (RFC 6891 7).
    with Upstream() as up, _serve(f"    forward . {up.address}") as srv:
        _warm(srv.port, up, "warm.example.org.")
        without_opt = []
        for tcp in (False, True):
            msg = query("example.org", "A", port=srv.port, tcp=tcp, use_edns=0, payload=1232)
            assert answers(msg, "A") == ["127.0.0.10"]
            if msg.edns != 0:
                without_opt.append("tcp" if tcp else "udp")
        assert not without_opt, f"forwarded answers to EDNS queries without an OPT: {without_opt}"


# -- 2. what the relay hands to the slow path, over UDP ----------------------------------------

MODES = {  # zone -> (upstream mode, forward options)
    "garbage.test.": ("garbage", ""),
    "wrongq.test.": ("wrong_question", ""),
    "silent.test.": ("silent", ""),
    "wrongid.test.": ("wrong_id", ""),
    "trunc.test.": ("truncate", ""),
    "prefer.test.": ("truncate", "        prefer_udp\n"),
}


@pytest.fixture(scope="module")
def modes() -> Iterator[tuple[ServerProcess, dict[str, Upstream]]]:
    """One server with a block per misbehaving upstream; each upstream answers until the
    block's pool is warm, and a test then switches it to its mode."""
    ups = {zone: Upstream(table=DEFAULT_TABLE + big_table(f"big.{zone}")) for zone in MODES}
    live = Upstream()
    for up in (*ups.values(), live):
        up.__enter__()
    try:
        text = _corefile(f"    forward . {live.address}") + "".join(
            _block(zone, f"    forward . {up.address} {{\n        expire 60s\n"
                   f"{MODES[zone][1]}    }}") for zone, up in ups.items())
        with ServerProcess(text, snapshot=None, ready_name="example.org",
                           ready_type="A") as srv:
            for zone, up in ups.items():
                _warm(srv.port, up, f"warm.{zone}")
            yield srv, ups
    finally:
        for up in (*ups.values(), live):
            up.close()


def _switch(modes: tuple[ServerProcess, dict[str, Upstream]], zone: str) -> tuple[int, Upstream]:
    srv, ups = modes
    ups[zone].mode = MODES[zone][0]
    return srv.port, ups[zone]


def test_relay_garbage_is_servfail(modes: Any) -> None:
    port, up = _switch(modes, "garbage.test.")
    rcode, took = _timed("q.garbage.test", port)
    assert rcode == dns.rcode.SERVFAIL
    assert took < 6.0
    assert up.queries("q.garbage.test.", "udp")
    wait_for(lambda: "plugin/errors: 2 q.garbage.test. A:" in modes[0].output, timeout=5,
             what="the error logged")


def test_relay_wrong_question_is_formerr(modes: Any) -> None:
    port, up = _switch(modes, "wrongq.test.")
    start = time.monotonic()
    msg = query("q.wrongq.test", "A", port=port, timeout=5)
    assert time.monotonic() - start < 1.0
    assert msg.rcode() == dns.rcode.FORMERR
    assert str(msg.question[0].name) == "q.wrongq.test."
    # The relay's answer does not check, the slow path asks once more and answers FORMERR.
    assert [r.proto for r in up.queries("q.wrongq.test.")] == ["udp", "udp"]


def test_relay_silent_and_wrong_id_servfail_at_coredns_deadline(modes: Any) -> None:
    results: dict[str, tuple[int, float]] = {}
    targets = {"silent.test.": "q.silent.test", "wrongid.test.": "q.wrongid.test"}
    for zone in targets:
        _switch(modes, zone)

    def ask(zone: str) -> None:
        results[zone] = _timed(targets[zone], modes[0].port)

    threads = [threading.Thread(target=ask, args=(zone,)) for zone in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert {zone: rcode for zone, (rcode, _) in results.items()} == dict.fromkeys(
        targets, dns.rcode.SERVFAIL)
    # The relay hands the query over with the deadline it started with: 5 s in all, not the
    # relay's 2 s try and then 5 s more.
    took = {zone: round(t, 2) for zone, (_, t) in results.items()}
    assert all(4.5 < t < 6.0 for t in took.values()), took
    for zone in targets:
        # The relay's try (2 s), then the slow path's within what was left of the 5 s.
        assert len(modes[1][zone].queries(targets[zone] + ".", "udp")) >= 2, zone


def test_relay_passes_tc_to_the_client_without_prefer_udp(modes: Any) -> None:
    port, up = _switch(modes, "trunc.test.")
    for i, kw in enumerate(({}, {"use_edns": 0, "payload": 4096})):
        msg = query("big.trunc.test", "A", port=port, **kw)
        assert msg.flags & dns.flags.TC and not msg.answer
        assert msg.rcode() == dns.rcode.NOERROR
        # Relayed as it came, not asked again (over TCP or otherwise).
        assert [r.proto for r in up.queries("big.trunc.test.")] == ["udp"] * (i + 1)


def test_relay_prefer_udp_gets_the_full_answer_over_tcp(modes: Any) -> None:
    port, up = _switch(modes, "prefer.test.")
    msg = query("big.prefer.test", "A", port=port, use_edns=0, payload=4096)
    assert not msg.flags & dns.flags.TC
    assert len(answers(msg, "A")) == 60
    # The relay's TC answer goes to the slow path, which asks over UDP and then over TCP.
    assert [r.proto for r in up.queries("big.prefer.test.")] == ["udp", "udp", "tcp"]


def test_relay_refused_port_then_live_upstream_quickly() -> None:
    dead = free_port()
    body = f"    forward . 127.0.0.1:{dead} {{up}} {{\n        policy sequential\n    }}"
    with Upstream() as up, _serve(body.replace("{up}", up.address)) as srv:
        took = []
        for i in range(20):
            start = time.monotonic()
            msg = query("example.org", "A", port=srv.port, id=i + 1)
            took.append(time.monotonic() - start)
            assert msg.id == i + 1
            assert answers(msg, "A") == ["127.0.0.10"]
        assert max(took) < 1.0, took


def test_relay_max_concurrent_refuses_the_second_query() -> None:
    body = "    forward . {up} {\n        max_concurrent 1\n        expire 60s\n    }"
    with Upstream() as up, _serve(body.replace("{up}", up.address)) as srv:
        _warm(srv.port, up, "warm.example.org.")  # the held query below is relayed
        up.mode = "hold"
        results: list[int] = []
        held = threading.Thread(target=lambda: results.append(
            query("www.example.org", "A", port=srv.port, timeout=4).rcode()))
        held.start()
        try:
            up.wait_queries(1, "www.example.org.", proto="udp", timeout=5)
            start = time.monotonic()
            over = query("example.org", "A", port=srv.port, timeout=2)
            assert over.rcode() == dns.rcode.REFUSED
            assert time.monotonic() - start < 1.0
        finally:
            up.release()
            held.join(timeout=5)
        assert results == [dns.rcode.NOERROR]
        wait_for(lambda: "concurrent queries exceeded maximum 1" in srv.output, timeout=5,
                 what="the refusal logged")
        # The held query was relayed and asked once: the refusal came from the limit alone.
        assert len(up.queries("www.example.org.")) == 1


# -- 3. kept TCP connections ---------------------------------------------------------------------


def test_force_tcp_reuses_one_connection_and_counts_hits() -> None:
    metrics = free_port()
    body = (f"    prometheus 127.0.0.1:{metrics}\n"
            "    forward . {up} {\n        force_tcp\n        expire 60s\n    }")
    with Upstream() as up, _serve(body.replace("{up}", up.address)) as srv:
        for _ in range(6):
            assert answers(query("www.example.org", "A", port=srv.port), "A") == ["127.0.0.10"]
        seen = up.queries("www.example.org.")
        assert [r.proto for r in seen] == ["tcp"] * 6
        assert len({r.source for r in seen}) == 1  # one connection
        assert not up.queries(proto="udp")

        def counted() -> tuple[float, float] | None:
            hits = {lb["proto"]: v for lb, v in _metric(
                metrics, "coredns_proxy_conn_cache_hits_total") if lb["to"] == up.address}
            misses = {lb["proto"]: v for lb, v in _metric(
                metrics, "coredns_proxy_conn_cache_misses_total") if lb["to"] == up.address}
            if hits.get("tcp", 0) >= 6:
                return hits["tcp"], misses.get("tcp", 0)
            return None

        hits, misses = wait_for(counted, timeout=10, what="conn cache hits on /metrics")
        # Every exchange (the server's readiness queries too) is a hit or a miss, and a miss
        # is a connection the upstream saw.
        tcp = up.queries(proto="tcp")
        assert hits >= 6 and hits + misses == len(tcp)
        assert misses == len({r.source for r in tcp})
        samples = _metric(metrics, "coredns_proxy_conn_cache_hits_total")
        assert any(lb.get("proxy_name") == "forward" and lb["proto"] == "tcp"
                   for lb, _ in samples)


def test_tcp_connection_replaced_once_idle_for_expire() -> None:
    body = "    forward . {up} {\n        force_tcp\n        expire 1s\n    }"
    with Upstream() as up, _serve(body.replace("{up}", up.address)) as srv:
        def ask(name: str) -> None:
            assert answers(query(name, "A", port=srv.port), "A") == ["127.0.0.10"]

        ask("www.example.org")
        ask("example.org")
        first = [r.source for r in up.queries(proto="tcp")][-2:]
        done = time.monotonic()
        assert first[0] == first[1]  # reused while idle for less than expire
        wait_for(lambda: time.monotonic() - done > 1.5, what="expire to pass")
        ask("www.example.org")
        ask("example.org")
        later = [r.source for r in up.queries(proto="tcp")][-2:]
        assert later[0] == later[1]
        assert later[0] != first[1]  # a new connection after expire


# -- 4. the pooled sockets in-process --------------------------------------------------------------


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((LOOP, port))
        except OSError:
            return False
    return True


async def _until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_pooled_udp_exchanges_share_8_sockets_with_random_ids() -> None:
    with Upstream() as up:
        async def go() -> None:
            c = upstream.Connections((LOOP, up.port), expire=60)
            for i in range(50):
                q = DNSRecord.question("example.org.", "A")
                q.header.id = 1000 + i
                answer = await upstream.exchange(q, (LOOP, up.port), timeout=2.0, connections=c)
                assert answer.wire[:2] == struct.pack("!H", 1000 + i)
                assert answer.message.header.id == 1000 + i
                assert [str(rr.rdata) for rr in answer.message.rr] == ["127.0.0.10"]
                assert answer.proto == "udp"
            assert c.hits.get("udp", 0) + c.misses.get("udp", 0) == 50
            assert 1 <= c.misses["udp"] <= POOL_SOCKETS
            socks = [s for s in c._udp if s is not None]
            ports = {int(s.local.rsplit(":", 1)[1]) for s in socks}
            assert ports == {r.source[1] for r in up.queries("example.org.")}
            assert not any(_bindable(p) for p in ports)  # open while kept
            c.close()
            assert all(s.transport is not None and s.transport.is_closing() for s in socks)
            await _until(lambda: all(_bindable(p) for p in ports), 2.0, "the sockets closed")

        asyncio.run(go())
        seen = up.queries("example.org.")
        assert len(seen) == 50
        assert 1 < len({r.source for r in seen}) <= POOL_SOCKETS
        ids = [r.id for r in seen]
        assert len(set(ids)) >= 40
        assert sum(r.id == 1000 + i for i, r in enumerate(seen)) <= 1


def test_pooled_udp_sockets_replaced_once_older_than_expire() -> None:
    with Upstream() as up:
        async def go() -> None:
            c = upstream.Connections((LOOP, up.port), expire=0.3)
            for _ in range(30):
                await upstream.exchange(DNSRecord.question("one.example.org.", "A"),
                                        (LOOP, up.port), timeout=2.0, connections=c)
            await _until(lambda: not any(s.usable(c.expire) for s in c._udp if s), 3.0,
                         "the sockets to age past expire")
            for _ in range(30):
                await upstream.exchange(DNSRecord.question("two.example.org.", "A"),
                                        (LOOP, up.port), timeout=2.0, connections=c)
            c.close()

        asyncio.run(go())
        before = {r.source for r in up.queries("one.example.org.")}
        after = {r.source for r in up.queries("two.example.org.")}
        assert len(before) <= POOL_SOCKETS and len(after) <= POOL_SOCKETS
        # Every socket was replaced: the kernel may hand out a freed port again, rarely.
        assert len(after - before) >= len(after) - 1


def test_pooled_tcp_connection_reused_then_counted() -> None:
    with Upstream() as up:
        async def go() -> upstream.Connections:
            c = upstream.Connections((LOOP, up.port), expire=60)
            for i in range(10):
                q = DNSRecord.question("example.org.", "A")
                q.header.id = 77 + i
                answer = await upstream.exchange(q, (LOOP, up.port), "tcp", timeout=2.0,
                                                 connections=c)
                assert answer.message.header.id == 77 + i and answer.proto == "tcp"
            c.close()
            return c

        c = asyncio.run(go())
        seen = up.queries("example.org.", "tcp")
        assert len(seen) == 10 and len({r.source for r in seen}) == 1
        assert len({r.id for r in seen}) >= 9
        assert c.hits == {"tcp": 9} and c.misses == {"tcp": 1}


def test_kept_tcp_connection_closed_by_the_upstream_is_replaced() -> None:
    # An upstream that closes every connection after one answer: each kept connection is
    # stale by the next query, which must still be answered (on a fresh connection).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOP, 0))
    listener.listen(8)
    listener.settimeout(0.05)
    port = listener.getsockname()[1]
    stop = threading.Event()
    conns: list[tuple[str, int]] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            conns.append(peer)
            with conn:
                conn.settimeout(2)
                size = struct.unpack("!H", conn.recv(2))[0]
                data = b""
                while len(data) < size:
                    data += conn.recv(size - len(data))
                reply = DNSRecord.parse(data).reply()
                reply.add_answer(*RR.fromZone("example.org. 60 IN A 127.0.0.9"))
                wire = reply.pack()
                conn.sendall(struct.pack("!H", len(wire)) + wire)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        async def go() -> list[str]:
            c = upstream.Connections((LOOP, port), expire=60)
            out = []
            for _ in range(5):
                answer = await upstream.exchange(DNSRecord.question("example.org.", "A"),
                                                 (LOOP, port), "tcp", timeout=2.0,
                                                 connections=c)
                out.append(str(answer.message.rr[0].rdata))
            c.close()
            return out

        assert asyncio.run(go()) == ["127.0.0.9"] * 5
        assert len(conns) == 5  # a connection per query: each kept one had gone stale
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


# -- 5. check_reply: the walk over an answer's bytes -----------------------------------------------


def _pair(name: str = "example.org.", qtype: str = "A") -> tuple[bytes, int, DNSRecord]:
    q = DNSRecord.question(name, qtype)
    q.header.id = 99
    wire = q.pack()
    reply = q.reply(ra=1, aa=0)
    reply.add_answer(*RR.fromZone(f"{name} 60 IN A 127.0.0.10"))
    return wire, question_span(wire), reply


def _check(reply: DNSRecord | bytes | bytearray, name: str = "example.org.",
           qtype: str = "A") -> Any:
    wire, end, _ = _pair(name, qtype)
    return check_reply(wire, end, bytes(reply.pack() if isinstance(reply, DNSRecord) else reply))


def test_check_reply_accepts_a_reply_to_its_question() -> None:
    wire, end, reply = _pair()
    assert check_reply(wire, end, reply.pack()) is None
    reply.add_ar(EDNS0(udp_len=1232))
    reply.add_auth(*RR.fromZone("example.org. 60 IN NS ns.example.org."))
    assert check_reply(wire, end, reply.pack()) is None
    # The ID is not check_reply's business (the socket matched it); trailing bytes are left.
    assert check_reply(wire, end, b"\x00\x01" + reply.pack()[2:]) is None


@pytest.mark.parametrize("echoed", ["EXAMPLE.ORG.", "eXaMpLe.OrG.", "example.org."])
def test_check_reply_compares_the_name_without_case(echoed: str) -> None:
    # 0x20 randomisation: the query goes in mixed case, the upstream may echo any case.
    for asked in ("ExAmple.ORG.", "example.org."):
        wire, end, _ = _pair(asked)
        q = DNSRecord.question(echoed, "A")
        reply = q.reply()
        reply.add_answer(*RR.fromZone(f"{echoed} 60 IN A 127.0.0.10"))
        assert check_reply(wire, end, reply.pack()) is None, (asked, echoed)


def test_check_reply_mismatch_for_another_question() -> None:
    _, _, reply = _pair()
    other_name = _pair("example.com.")[2]
    assert _check(other_name) == MISMATCH
    other_type = _pair(qtype="AAAA")[2]
    assert _check(other_type) == MISMATCH
    other_class = _pair()[2]
    other_class.q.qclass = 3  # CH
    assert _check(other_class) == MISMATCH
    not_a_response = bytearray(reply.pack())
    not_a_response[2] &= 0x7F
    assert _check(bytes(not_a_response)) == MISMATCH
    two = _pair()[2]
    two.add_question(DNSQuestion("example.org.", QTYPE.AAAA))
    assert _check(two) == MISMATCH
    none = _pair()[2]
    none.questions = []
    assert _check(none) == MISMATCH


def test_check_reply_mismatch_for_a_type_differing_only_in_ascii_case() -> None:
    # The question's type and class bytes are no letters: HTTPS (65 = 0x0041, "A") asked,
    # type 97 (0x0061, "a") echoed is another question.
    wire, end, _ = _pair(qtype="HTTPS")
    reply = DNSRecord.parse(wire).reply()
    reply.q.qtype = 97
    assert check_reply(wire, end, reply.pack()) == MISMATCH


def test_check_reply_reasons_for_bytes_that_do_not_walk() -> None:
    _, _, reply = _pair()
    good = reply.pack()
    assert _check(good[:11]) == "short header"
    assert _check(good[:-2]) == "record data past the end"
    answer_at = 12 + len(b"\x07example\x03org\x00") + 4
    assert _check(good[:answer_at + 2 + 5]) == "record header past the end"
    assert _check(good[:20]) == "name past the end"
    assert _check(good[:answer_at - 2]) == "question past the end"
    # The answer's owner, a pointer to the question's name (12): pointed forward instead.
    assert good[answer_at:answer_at + 2] == b"\xc0\x0c"
    forward = good[:answer_at] + b"\xc0\x40" + good[answer_at + 2:]
    assert _check(forward) == "compression pointer forward"
    itself = good[:answer_at] + struct.pack("!H", 0xC000 | answer_at) + good[answer_at + 2:]
    assert _check(itself) == "compression pointer forward"
    for reserved in (0x40, 0x80):
        bad = good[:answer_at] + bytes([reserved | 3]) + b"abc\x00" + good[answer_at + 2:]
        verdict = _check(bad)
        assert verdict == "reserved label type", hex(reserved)
    for verdict in ("short header", "record data past the end"):
        assert verdict != MISMATCH
