"""The forward plugin and its upstream client against real upstream servers on 127.0.0.1: the
client's checks (ID, question, garbage, truncation), upstream selection and health checks with
shrunken timeouts in-process, the Corefile stanza's options and errors, and the real server
forwarding end to end."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from dnslib import QTYPE, DNSRecord

from dnsserver import corefile, upstream
from dnsserver.assembly import assemble
from dnsserver.plugin import END, FORMERR, NOERROR, NXDOMAIN, REFUSED, SERVFAIL, Request
from dnsserver.plugins.forward import (
    ForwardPlugin,
    Proxy,
    RoundRobinPolicy,
    SequentialPolicy,
)
from dnsserver.store import ClusterStore

from helpers import ServerProcess, answers, query, wait_for
from upstream_servers import DEFAULT_TABLE, Upstream, big_table, closed_port

LOOP = "127.0.0.1"


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def request(name: str, qtype: str = "A", proto: str = "udp") -> Request:
    msg = DNSRecord.question(name, qtype)
    msg.header.id = 4242
    return Request(msg, name, getattr(QTYPE, qtype), proto, (LOOP, 5353), ".", 4096)


# Small timeouts for in-process plugins: a dead upstream costs tenths of a second, not seconds.
FAST = {"timeout": 1.0, "read_timeout": 0.2, "dial_timeout": 0.2}
FAST_HC = {"hc_interval": 0.02, "hc_timeout": 0.1}


def plugin(*ups: Upstream | int, **kw: Any) -> ForwardPlugin:
    proxies = [Proxy((LOOP, u if isinstance(u, int) else u.port), **FAST_HC) for u in ups]
    kw = {**FAST, "policy": SequentialPolicy(), **kw}
    return ForwardPlugin(kw.pop("from_zone", "."), proxies, **kw)


# -- the upstream client ----------------------------------------------------------------------


def test_exchange_uses_a_random_id_and_source_port_and_keeps_the_query_id() -> None:
    with Upstream() as up:
        async def many() -> list[upstream.Answer]:
            out = []
            for _ in range(20):
                q = DNSRecord.question("example.org.", "A")
                q.header.id = 7
                out.append(await upstream.exchange(q, (LOOP, up.port), timeout=1.0))
                assert q.header.id == 7
            return out

        got = run(many())
        assert all(a.message.header.id == 7 for a in got)
        assert [str(a.message.rr[0].rdata) for a in got] == ["127.0.0.10"] * 20
        seen = up.queries("example.org.")
        assert len({r.id for r in seen}) >= 18
        assert len({r.source[1] for r in seen}) >= 18


@pytest.mark.parametrize(("mode", "error", "fast"), [
    ("silent", "i/o timeout", False),
    ("wrong_id", "i/o timeout", False),  # an answer with another ID is dropped, never trusted
    ("garbage", "bad message", True),
])
def test_exchange_rejects_what_it_cannot_trust(mode: str, error: str, fast: bool) -> None:
    with Upstream(mode) as up:
        start = time.monotonic()
        with pytest.raises(upstream.UpstreamError, match=error):
            run(upstream.exchange(DNSRecord.question("example.org.", "A"), (LOOP, up.port),
                                  timeout=0.3))
        took = time.monotonic() - start
        assert took < 0.25 if fast else 0.28 < took < 1.0
        assert up.queries("example.org.")


def test_exchange_wrong_question_is_a_mismatch() -> None:
    with Upstream("wrong_question") as up, pytest.raises(upstream.QuestionMismatch):
        run(upstream.exchange(DNSRecord.question("example.org.", "A"), (LOOP, up.port),
                              timeout=1.0))


def test_exchange_refused_port_fails_at_once_over_udp_and_tcp() -> None:
    port = closed_port()
    for proto, words in (("udp", "read udp"), ("tcp", "dial tcp")):
        start = time.monotonic()
        with pytest.raises(upstream.UpstreamError, match=f"{words} .*refused"):
            run(upstream.exchange(DNSRecord.question("example.org.", "A"), (LOOP, port), proto,
                                  timeout=1.0))
        assert time.monotonic() - start < 0.5


def test_exchange_truncated_udp_answer_retried_over_tcp_only_when_asked() -> None:
    with Upstream("truncate", table=DEFAULT_TABLE + big_table()) as up:
        q = DNSRecord.question("big.example.org.", "A")
        plain = run(upstream.exchange(q, (LOOP, up.port), timeout=1.0))
        assert plain.message.header.tc and not plain.message.rr and plain.proto == "udp"
        full = run(upstream.exchange(q, (LOOP, up.port), timeout=1.0, tcp_on_tc=True))
        assert not full.message.header.tc and len(full.message.rr) == 60
        assert full.proto == "tcp"
        assert [r.proto for r in up.queries("big.example.org.")] == ["udp", "udp", "tcp"]


# -- the plugin in-process, with small timeouts -----------------------------------------------


def test_answer_relayed_as_upstream_wrote_it() -> None:
    with Upstream() as up:
        p = plugin(up)
        reply = run(p.serve(request("www.example.org.", "A")))
        msg = reply.message
        assert reply.tags is None and reply.plugin == "forward"
        assert msg.header.id == 4242 and msg.header.ra == 1 and msg.header.aa == 0
        assert [str(rr.rdata) for rr in msg.rr] == ["example.org.", "127.0.0.10"]
        assert p.proxies[0].requests == 1 and p.proxies[0].rcodes == {NOERROR: 1}
        counts = p.proxies[0].durations["NOERROR"]
        assert sum(counts) == 1 and p.proxies[0].duration_sums["NOERROR"] > 0


def test_dead_upstream_marked_down_then_skipped() -> None:
    with Upstream("silent") as dead, Upstream() as live:
        p = plugin(dead, live)

        async def scenario() -> tuple[list[float], int]:
            first = await p.serve(request("example.org."))
            assert first.message.header.rcode == NOERROR
            # Health checks (every 20 ms, 100 ms each) take the dead one down after 3 fails.
            deadline = time.monotonic() + 3
            while not p.proxies[0].down(p.max_fails):
                assert time.monotonic() < deadline, "dead upstream never marked down"
                await asyncio.sleep(0.01)
            before = len(dead.queries("example.org."))
            took = []
            for _ in range(5):
                start = time.monotonic()
                r = await p.serve(request("example.org."))
                took.append(time.monotonic() - start)
                assert r.message.header.rcode == NOERROR
            await p.stop()
            return took, before

        took, before = run(scenario())
        assert max(took) < 0.15
        assert len(dead.queries("example.org.")) == before  # skipped while down
        hc = dead.queries(".")
        assert len(hc) >= 3 and all(r.qtype == QTYPE.NS and r.rd for r in hc)
        assert p.proxies[0].healthcheck_failures >= 3


def test_all_dead_servfail_within_the_deadline() -> None:
    with Upstream("silent") as a, Upstream("silent") as b:
        p = plugin(a, b, timeout=0.6)

        async def go() -> tuple[Any, float]:
            start = time.monotonic()
            r = await p.serve(request("example.org."))
            took = time.monotonic() - start
            await p.stop()
            return r, took

        reply, took = run(go())
        assert reply.message.header.rcode == SERVFAIL
        assert not reply.message.header.ra  # CoreDNS's error replies carry no RA
        assert 0.55 < took < 0.9


def test_all_down_tries_one_anyway_unless_failfast() -> None:
    port = closed_port()
    with Upstream("silent") as silent:
        for failfast in (False, True):
            p = plugin(port, silent, failfast=failfast)
            for proxy in p.proxies:
                proxy.fails = 3  # as three failed health checks leave it
            start = time.monotonic()
            reply = run(p.serve(request("example.org.")))
            took = time.monotonic() - start
            assert reply.message.header.rcode == SERVFAIL
            assert p.healthcheck_broken >= 1
            tried = sum(proxy.requests for proxy in p.proxies)
            if failfast:
                assert tried == 0 and took < 0.1
            else:
                assert tried >= 1


def test_upstream_recovers_by_itself() -> None:
    with Upstream("silent") as up:
        p = plugin(up, timeout=0.5)

        async def scenario() -> int:
            assert (await p.serve(request("example.org."))).message.header.rcode == SERVFAIL
            deadline = time.monotonic() + 3
            while not p.proxies[0].down(p.max_fails):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            up.mode = "answer"
            while p.proxies[0].fails:  # the running probe sees it answer and resets
                assert time.monotonic() < deadline + 3
                await asyncio.sleep(0.01)
            rcode = (await p.serve(request("example.org."))).message.header.rcode
            await p.stop()
            return rcode

        assert run(scenario()) == NOERROR


@pytest.mark.parametrize(("mode", "rcode"), [("refused", REFUSED), ("servfail", SERVFAIL),
                                             ("wrong_question", FORMERR)])
def test_upstream_rcodes_relayed_and_mismatch_is_formerr(mode: str, rcode: int) -> None:
    with Upstream(mode) as up:
        p = plugin(up)
        reply = run(p.serve(request("example.org.")))
        assert reply.message.header.rcode == rcode
        assert reply.message.header.id == 4242
        if mode == "wrong_question":
            assert str(reply.message.q.qname) == "example.org."


def test_max_concurrent_refuses_the_query_over_the_limit() -> None:
    with Upstream("hold") as up:
        p = plugin(up, max_concurrent=2, timeout=3.0, read_timeout=3.0)

        async def scenario() -> tuple[list[int], int]:
            held = [asyncio.create_task(p.serve(request("example.org."))) for _ in range(2)]
            deadline = time.monotonic() + 3
            while len(up.queries("example.org.")) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert p.inflight == 2
            over = await p.serve(request("example.org."))
            up.release()
            done = [(await t).message.header.rcode for t in held]
            return [over.message.header.rcode, *done], p.inflight

        rcodes, inflight = run(scenario())
        assert rcodes == [REFUSED, NOERROR, NOERROR]
        assert p.max_concurrent_rejects == 1 and inflight == 0
        assert len(up.queries("example.org.")) == 2


def test_failover_and_next_rcodes() -> None:
    with Upstream("servfail") as bad, Upstream() as good:
        p = plugin(bad, good, failover_rcodes=[SERVFAIL])
        assert run(p.serve(request("example.org."))).message.header.rcode == NOERROR
        first = plugin(bad, next_rcodes=[SERVFAIL])
        first.next = plugin(good)
        assert run(first.serve(request("example.org."))).message.header.rcode == NOERROR
        # `next` only hands on to another forward; otherwise the answer stands.
        alone = plugin(bad, next_rcodes=[SERVFAIL])
        assert run(alone.serve(request("example.org."))).message.header.rcode == SERVFAIL


def test_from_and_except_decide_what_is_forwarded() -> None:
    with Upstream() as up:
        p = plugin(up, from_zone="example.org.", ignored=["skip.example.org."])
        assert p.next is END
        for name, forwarded in (("example.org.", True), ("a.Example.org.", True),
                                ("skip.example.org.", False), ("x.skip.example.org.", False),
                                ("example.com.", False), ("notexample.org.", False)):
            reply = run(p.serve(request(name)))
            assert (reply.plugin == "forward") is forwarded, name
        assert {r.qname.lower() for r in up.received} == {"example.org.", "a.example.org."}


def test_policies_order() -> None:
    proxies = [Proxy((LOOP, port)) for port in (1001, 1002, 1003)]
    rr = RoundRobinPolicy()
    firsts = [rr.order(proxies)[0].addr[1] for _ in range(6)]
    assert firsts == [1001, 1002, 1003, 1001, 1002, 1003]
    assert [p.addr[1] for p in SequentialPolicy().order(proxies)] == [1001, 1002, 1003]
    random.seed(1)
    p = plugin(*[1001, 1002, 1003], policy=None)
    seen = {tuple(x.addr[1] for x in p.policy.order(p.proxies)) for _ in range(60)}
    assert len(seen) == 6


def test_health_check_options_reach_the_probe() -> None:
    with Upstream() as up:
        text = (f".:53 {{\n forward . {up.address} {{\n"
                "  health_check 1s no_rec domain example.org\n }\n}\n")
        fwd = _build(text)
        assert run(fwd.proxies[0].check()) is True
        got = up.queries("example.org.")
        assert len(got) == 1 and got[0].qtype == QTYPE.NS and not got[0].rd


# -- the Corefile stanza ----------------------------------------------------------------------


def _build(text: str) -> ForwardPlugin:
    assembly = assemble(corefile.parse(text, "Corefile"), ClusterStore())
    found = [p for p in assembly.plugins if isinstance(p, ForwardPlugin)]
    assert found
    return found[0]


def test_setup_reads_every_option(tmp_path: Any) -> None:
    fwd = _build(""".:53 {
    forward example.ORG 127.0.0.1:5301 dns://127.0.0.2 [::1]:5302 {
        except skip.example.org other.example.org
        force_tcp
        prefer_udp
        expire 30s
        max_fails 5
        health_check 250ms
        policy round_robin
        max_concurrent 100
        next NXDOMAIN servfail
        failover REFUSED
        failfast_all_unhealthy_upstreams
        max_connect_attempts 3
        min_max_dial_timeout 500ms 10s
        tls_servername dns.example.org
    }
}
""")
    assert fwd.from_zone == "example.org."
    assert [p.addr for p in fwd.proxies] == [(LOOP, 5301), ("127.0.0.2", 53), ("::1", 5302)]
    assert [p.label for p in fwd.proxies] == ["127.0.0.1:5301", "127.0.0.2:53", "[::1]:5302"]
    assert fwd.ignored == ("skip.example.org.", "other.example.org.")
    assert fwd.force_tcp and fwd.prefer_udp and fwd.failfast
    assert fwd.expire == 30 and fwd.max_fails == 5 and fwd.max_concurrent == 100
    assert fwd.proxies[0].hc_interval == 0.25 and fwd.proxies[0].hc_proto == "tcp"
    assert isinstance(fwd.policy, RoundRobinPolicy)
    assert fwd.next_rcodes == {NXDOMAIN, SERVFAIL} and fwd.failover_rcodes == {REFUSED}
    assert fwd.max_connect_attempts == 3 and fwd.dial_timeout == 0.5


def test_setup_defaults_are_coredns_defaults() -> None:
    fwd = _build(".:53 {\n forward . 127.0.0.1\n}\n")
    assert fwd.from_zone == "." and fwd.max_fails == 2 and fwd.max_concurrent == 0
    assert fwd.timeout == 5.0 and fwd.read_timeout == 2.0 and fwd.expire == 10.0
    assert fwd.proxies[0].hc_interval == 0.5 and fwd.proxies[0].hc_timeout == 1.0
    assert fwd.proxies[0].hc_domain == "." and fwd.proxies[0].hc_recursion_desired
    assert fwd.policy.name == "random" and fwd.proxies[0].addr == (LOOP, 53)


def test_setup_reads_resolv_conf(tmp_path: Any) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# test\nsearch example.org\nnameserver 127.0.0.53\nnameserver ::1\n"
                    "options ndots:5\nnameserver not-an-ip\n")
    fwd = _build(f".:53 {{\n forward . {conf} 127.0.0.1:5300\n}}\n")
    assert [p.addr for p in fwd.proxies] == [("127.0.0.53", 53), ("::1", 53), (LOOP, 5300)]


@pytest.mark.parametrize(("stanza", "message"), [
    ("forward .", "Wrong argument count"),
    ("forward . tls://127.0.0.1", "DNS-over-TLS upstreams are not supported"),
    ("forward . grpc://127.0.0.1", "'grpc' is not supported as a destination protocol"),
    ("forward . /nonexistent/resolv.conf", "not an IP address or file: '/nonexistent/resolv.conf'"),
    ("forward . 127.0.0.1 {\n  policy fastest\n }", "unknown policy 'fastest'"),
    ("forward . 127.0.0.1 {\n  bogus 1\n }", "unknown property 'bogus'"),
    ("forward . 127.0.0.1 {\n  max_fails -1\n }", "max_fails: invalid number '-1'"),
    ("forward . 127.0.0.1 {\n  max_concurrent x\n }", "max_concurrent: invalid number 'x'"),
    ("forward . 127.0.0.1 {\n  health_check soon\n }", "invalid duration 'soon'"),
    ("forward . 127.0.0.1 {\n  health_check 1s often\n }", "health_check: unknown option often"),
    ("forward . 127.0.0.1 {\n  next NOPE\n }", "NOPE is not a valid rcode"),
    ("forward . 127.0.0.1 {\n  failover NOERROR\n }", "NoError cannot be used in failover"),
    ("forward . 127.0.0.1 {\n  force_tcp yes\n }", "Wrong argument count"),
    ("forward . " + " ".join(f"127.0.0.1:{5300 + i}" for i in range(16)),
     "more than 15 TOs configured: 16"),
])
def test_setup_errors_name_the_line(stanza: str, message: str) -> None:
    text = f".:53 {{\n {stanza}\n}}\n"
    with pytest.raises(corefile.CorefileError) as info:
        _build(text)
    text_of = str(info.value)
    assert message in text_of
    assert re.match(r"Corefile:\d+ - Error during parsing: forward: ", text_of)


# -- end to end through the real server -------------------------------------------------------


def _corefile(body: str) -> str:
    return ".:{PORT} {\n    bind 127.0.0.1\n" + body + "\n}\n"


def _serve(body: str) -> ServerProcess:
    return ServerProcess(_corefile(body), snapshot=None, ready_name="example.org",
                         ready_type="A")


def test_e2e_forward_udp_and_tcp() -> None:
    with Upstream() as up, _serve(f"    forward . {up.address}") as srv:
        for tcp in (False, True):
            msg = query("www.example.org", "A", port=srv.port, tcp=tcp)
            assert msg.rcode() == dns.rcode.NOERROR
            assert answers(msg, "A") == ["127.0.0.10"]
            assert msg.flags & dns.flags.RA and not msg.flags & dns.flags.AA
            assert query("missing.example.org", "A", port=srv.port, tcp=tcp).rcode() == \
                dns.rcode.NXDOMAIN
        protos = {r.proto for r in up.queries("www.example.org.")}
        assert protos == {"udp", "tcp"}  # upstream transport follows the client's


def test_e2e_truncation_tc_relayed_then_tcp_and_prefer_udp() -> None:
    with Upstream("truncate", table=DEFAULT_TABLE + big_table()) as up:
        with _serve(f"    forward . {up.address}") as srv:
            udp = query("big.example.org", "A", port=srv.port)
            assert udp.flags & dns.flags.TC and not udp.answer
            tcp = query("big.example.org", "A", port=srv.port, tcp=True)
            assert len(answers(tcp, "A")) == 60
        assert [r.proto for r in up.queries("big.example.org.")] == ["udp", "tcp"]
        with _serve(f"    forward . {up.address} {{\n        prefer_udp\n    }}") as srv:
            tcp = query("big.example.org", "A", port=srv.port, tcp=True)
            assert len(answers(tcp, "A")) == 60
        # prefer_udp: a TCP client's query goes over UDP first, the TC answer is asked over TCP.
        assert [r.proto for r in up.queries("big.example.org.")][2:] == ["udp", "tcp"]


def test_e2e_force_tcp() -> None:
    with Upstream() as up, _serve(f"    forward . {up.address} {{\n force_tcp\n }}") as srv:
        assert answers(query("example.org", "A", port=srv.port), "A") == ["127.0.0.10"]
        assert {r.proto for r in up.queries("example.org.")} == {"tcp"}


def test_e2e_refusing_upstream_skipped_quickly() -> None:
    dead = closed_port()
    body = (f"    forward . 127.0.0.1:{dead} {{up}} {{\n        policy sequential\n"
            "        health_check 50ms\n    }")
    with Upstream() as up, _serve(body.replace("{up}", up.address)) as srv:
        took = []
        for i in range(10):
            start = time.monotonic()
            msg = query("example.org", "A", port=srv.port, id=i + 1)
            took.append(time.monotonic() - start)
            assert answers(msg, "A") == ["127.0.0.10"]
        assert max(took) < 1.0


def test_e2e_wrong_question_formerr_and_garbage_servfail() -> None:
    with Upstream("wrong_question") as wrong, Upstream("garbage") as garbage:
        with _serve(f"    forward . {wrong.address}") as srv:
            assert query("example.org", "A", port=srv.port).rcode() == dns.rcode.FORMERR
        # One upstream that answers garbage: down after its failed checks, then SERVFAIL.
        body = f"    forward . {garbage.address} {{\n        health_check 50ms\n    }}"
        srv = ServerProcess(_corefile(body), snapshot=None, ready_name="example.org",
                            ready_type="A", wait=False)
        with srv:
            wait_for(lambda: _rcode(srv.port) == dns.rcode.SERVFAIL, timeout=10,
                     what="SERVFAIL from the garbage upstream")
            start = time.monotonic()
            assert _rcode(srv.port, timeout=6) == dns.rcode.SERVFAIL
            assert time.monotonic() - start < 2.0
            assert "plugin/errors: 2 example.org. A:" in srv.output


def _rcode(port: int, timeout: float = 0.5) -> int | None:
    try:
        return query("example.org", "A", port=port, tcp=True, timeout=timeout).rcode()
    except Exception:
        return None


def _listening(port: int) -> bool:
    try:
        socket.create_connection((LOOP, port), timeout=0.2).close()
    except OSError:
        return False
    return True


def test_e2e_except_hands_on_to_the_next_plugin() -> None:
    body = "    forward . {up} {\n        except skip.example.org\n    }"
    with Upstream() as up, _serve(body.replace("{up}", up.address)) as srv:
        assert query("skip.example.org", "A", port=srv.port).rcode() == dns.rcode.REFUSED
        assert query("example.org", "A", port=srv.port).rcode() == dns.rcode.NOERROR
        assert not up.queries("skip.example.org.")


def test_e2e_max_concurrent_refused() -> None:
    body = "    forward . {up} {\n        max_concurrent 2\n    }"
    with Upstream() as up, _serve(body.replace("{up}", up.address)) as srv:
        up.mode = "hold"
        results: list[int] = []

        def ask() -> None:
            results.append(query("example.org", "A", port=srv.port, timeout=4).rcode())

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for t in threads:
            t.start()
        up.wait_queries(2, "example.org.", proto="udp", timeout=5)
        over = query("example.org", "A", port=srv.port, timeout=2)
        assert over.rcode() == dns.rcode.REFUSED
        up.release()
        for t in threads:
            t.join(timeout=5)
        assert results == [dns.rcode.NOERROR, dns.rcode.NOERROR]
        assert "concurrent queries exceeded maximum 2" in srv.output


def test_e2e_resolv_conf_file(tmp_path: Any) -> None:
    # resolv.conf servers are always on port 53: run the upstream on a random 127/8 address.
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((host, 53))
        probe.close()
    except PermissionError:
        pytest.skip("binding port 53 needs root or CAP_NET_BIND_SERVICE")
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"search example.org\nnameserver {host}\noptions ndots:5\n")
    with Upstream(host=host, port=53) as up, _serve(f"    forward . {conf}") as srv:
        assert answers(query("example.org", "A", port=srv.port), "A") == ["127.0.0.10"]
        assert up.queries("example.org.")


def test_e2e_silent_upstream_servfail_after_coredns_deadline() -> None:
    # The real constants: tries of 2 s each, 5 s for the whole query, then SERVFAIL.
    with Upstream("silent") as up:
        srv = ServerProcess(_corefile(f"    forward . {up.address}"), snapshot=None,
                            ready_name="example.org", ready_type="A", wait=False)
        with srv:
            wait_for(lambda: _listening(srv.port), timeout=10, what="the server listening")
            start = time.monotonic()
            msg = dns.query.tcp(dns.message.make_query("example.org", "A"), LOOP,
                                port=srv.port, timeout=8)
            took = time.monotonic() - start
            assert msg.rcode() == dns.rcode.SERVFAIL
            assert 4.5 < took < 6.0
