"""The cache plugin as it runs: in-process with a hand-moved clock in front of a table-driven
source plugin (TTL countdown, keepttl, prefetch, serve_stale, DO/CD keys, tags), and end to end
as the real server in front of `forward` to a counting upstream on 127.0.0.1 and of
`kubernetes` (kubeadm's Corefile)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord

from dnsserver import answer_cache as ac
from dnsserver.plugin import Plugin, Reply, Request, make_reply
from dnsserver.plugins.cache import CachePlugin

from helpers import ServerProcess, query, wait_for
from upstream_servers import Upstream

# -- in process ------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Source(Plugin):
    """The end of the chain for these tests: answers from a zone-file table, counts questions.

    `mode` "answer" (NXDOMAIN with an SOA for unknown names), "servfail", or "fail" (raises,
    as a plugin whose upstream is gone would).
    """

    name = "source"

    def __init__(self, table: str, tags: set | None = None) -> None:
        super().__init__()
        self.records = RR.fromZone(table)
        self.mode = "answer"
        self.tags = tags
        self.asked: list[Request] = []

    async def serve(self, req: Request) -> Reply:
        self.asked.append(req)
        if self.mode == "fail":
            raise ConnectionError("upstream gone")
        if self.mode == "servfail":
            return Reply(make_reply(req, RCODE.SERVFAIL, aa=False), self.name)
        found = [rr for rr in self.records if str(rr.rname).lower() == req.lname]
        answer = [rr for rr in found if rr.rtype == req.qtype]
        if found:
            return Reply(make_reply(req, 0, answer, aa=True), self.name, self.tags)
        soa = RR.fromZone("example.org. 60 IN SOA ns.example.org. host.example.org. "
                          "1 7200 1800 86400 30")
        return Reply(make_reply(req, RCODE.NXDOMAIN, authority=soa), self.name, self.tags)


TABLE = """\
example.org. 300 IN A 127.0.0.10
signed.example.org. 300 IN A 127.0.0.11
"""


def request(name: str, qtype: str = "A", do: bool = False, cd: bool = False,
            ad: bool = False, proto: str = "udp") -> Request:
    msg = DNSRecord.question(name, qtype)
    msg.header.cd = int(cd)
    msg.header.ad = int(ad)
    return Request(msg, name, getattr(QTYPE, qtype), proto, ("127.0.0.1", 5353), ".", 1232, do)


def make_cache(clock: Clock, source: Source, zones: tuple[str, ...] = (".",),
               **settings: Any) -> CachePlugin:
    plugin = CachePlugin(zones, ac.CacheSettings(**settings), clock)
    plugin.next = source
    return plugin


def ask(plugin: CachePlugin, *args: Any, **kw: Any) -> Reply:
    async def go() -> Reply:
        reply = await plugin.serve(request(*args, **kw))
        await plugin.drain()
        return reply

    return asyncio.run(go())


def ttls(reply: Reply) -> set[int]:
    msg = reply.message
    return {rr.ttl for rr in (*msg.rr, *msg.auth, *msg.ar)}


def test_second_question_comes_from_the_cache_with_a_counting_down_ttl() -> None:
    clock, source = Clock(), Source(TABLE)
    cache = make_cache(clock, source, success_max_ttl=30)
    first = ask(cache, "example.org.")
    assert ttls(first) == {30} and len(source.asked) == 1
    clock.now += 10.5
    second = ask(cache, "EXAMPLE.org.")
    assert ttls(second) == {20} and len(source.asked) == 1
    assert [str(rr.rdata) for rr in second.message.rr] == ["127.0.0.10"]
    assert str(second.message.q.qname) == "EXAMPLE.org."  # the asker's spelling
    # Kept by the fast path under a lease that ages its TTLs and ends when the entry does.
    assert second.plugin == "cache" and second.tags == set()
    assert second.lease is not None and second.lease.until == 1000.0 + 30
    assert (second.lease.birth, second.lease.ttl, second.lease.shown) == (1000.0, 30, 20)
    assert (cache.requests, cache.hits_success, cache.misses) == (2, 1, 1)
    clock.now += 20
    ask(cache, "example.org.")
    assert len(source.asked) == 2 and cache.misses == 2


def test_keepttl_serves_the_ttl_it_stored() -> None:
    clock, source = Clock(), Source(TABLE)
    cache = make_cache(clock, source, keepttl=True, success_max_ttl=30)
    ask(cache, "example.org.")
    clock.now += 29
    assert ttls(ask(cache, "example.org.")) == {30}
    assert len(source.asked) == 1


def test_do_and_cd_are_part_of_the_key() -> None:
    clock, source = Clock(), Source(TABLE)
    cache = make_cache(clock, source)
    for do, cd in ((False, False), (True, False), (False, True), (True, True)):
        ask(cache, "example.org.", do=do, cd=cd)
        ask(cache, "example.org.", do=do, cd=cd)
    assert len(source.asked) == 4 and cache.hits_success == 4


def test_ad_bit_only_for_clients_that_do_dnssec_or_asked_for_it() -> None:
    clock = Clock()

    class Validating(Source):
        async def serve(self, req: Request) -> Reply:
            reply = await super().serve(req)
            reply.message.header.ad = 1
            return reply

    cache = make_cache(clock, Validating(TABLE))
    assert ask(cache, "example.org.").message.header.ad == 0  # the miss
    assert ask(cache, "example.org.", do=True).message.header.ad == 1
    assert ask(cache, "example.org.", do=True).message.header.ad == 1  # a hit
    assert ask(cache, "example.org.", ad=True).message.header.ad == 1
    assert ask(cache, "example.org.").message.header.ad == 0  # a hit


def test_denial_and_its_ttl() -> None:
    clock, source = Clock(), Source(TABLE)
    cache = make_cache(clock, source)
    first = ask(cache, "nope.example.org.")
    assert first.message.header.rcode == RCODE.NXDOMAIN
    assert ttls(first) == {30}  # the SOA's MINIMUM, below its TTL of 60
    clock.now += 5
    second = ask(cache, "nope.example.org.")
    assert second.message.header.rcode == RCODE.NXDOMAIN and ttls(second) == {25}
    assert second.message.auth[0].rtype == QTYPE.SOA
    assert len(source.asked) == 1 and cache.hits_denial == 1


def test_answers_outside_the_zones_or_not_kept_keep_their_tags() -> None:
    clock, source = Clock(), Source(TABLE, tags={"svc"})
    cache = make_cache(clock, source, zones=("example.net.",))
    assert ask(cache, "example.org.").tags == {"svc"}
    assert cache.requests == 0
    disabled = make_cache(clock, source, success_disabled=(".",))
    first = ask(disabled, "example.org.")
    assert first.tags == {"svc"} and ttls(first) == {300}
    assert ask(disabled, "example.org.").tags == {"svc"}
    kept = make_cache(clock, source)
    held = ask(kept, "example.org.")
    # Its TTL counts down from now on: kept with a lease, and still under the source's tags.
    assert held.tags == {"svc"} and held.lease is not None and held.lease.countdown


def test_a_zero_ttl_is_raised_to_the_minimum_on_the_way_out_too() -> None:
    clock, source = Clock(), Source("zero.example.org. 0 IN A 127.0.0.12", tags={"t"})
    cache = make_cache(clock, source, success_disabled=(".",))
    reply = ask(cache, "zero.example.org.")
    assert ttls(reply) == {5} and reply.tags == {"t"}  # changed the same way every time


def test_prefetch_refreshes_popular_entries_in_the_background() -> None:
    clock, source = Clock(), Source(TABLE)
    cache = make_cache(clock, source, success_max_ttl=100, prefetch_amount=2,
                       prefetch_percentage=10)
    ask(cache, "example.org.")
    clock.now += 50
    ask(cache, "example.org.")  # 1st hit, 50 s left
    clock.now += 41
    reply = ask(cache, "example.org.")  # 2nd hit, 9 s left: prefetch, this one still cached
    assert ttls(reply) == {9}
    assert len(source.asked) == 2 and source.asked[1].proto == "tcp"
    assert cache.prefetches == 1
    clock.now += 5
    assert ttls(ask(cache, "example.org.")) == {95}  # the refreshed entry
    assert len(source.asked) == 2


def test_serve_stale_immediate_answers_ttl_zero_and_refreshes() -> None:
    clock, source = Clock(), Source(TABLE)
    cache = make_cache(clock, source, success_max_ttl=10, stale_up_to=60)
    ask(cache, "example.org.")
    source.mode = "fail"
    clock.now += 15
    stale = ask(cache, "example.org.")
    assert ttls(stale) == {0} and stale.message.header.rcode == 0
    assert len(source.asked) == 2 and cache.served_stale == 1
    source.mode = "servfail"  # a SERVFAIL refresh is cached, but must not hide the answer
    assert ttls(ask(cache, "example.org.")) == {0}
    assert ttls(ask(cache, "example.org.")) == {0}
    assert len(source.asked) == 4
    source.mode = "answer"
    ask(cache, "example.org.")  # stale once more, and the refresh works
    assert ttls(ask(cache, "example.org.")) == {10}
    clock.now += 60 + 10
    source.mode = "fail"
    with pytest.raises(ConnectionError):
        ask(cache, "example.org.")  # past the stale window: a miss, and the source's error


def test_serve_stale_verify_asks_first() -> None:
    clock, source = Clock(), Source(TABLE)
    cache = make_cache(clock, source, success_max_ttl=10, stale_up_to=60, verify_stale=True)
    ask(cache, "example.org.")
    clock.now += 15
    fresh = ask(cache, "example.org.")
    assert ttls(fresh) == {10} and cache.served_stale == 0 and len(source.asked) == 2
    clock.now += 15
    source.mode = "servfail"
    stale = ask(cache, "example.org.")
    assert ttls(stale) == {0} and stale.message.header.rcode == 0
    assert cache.served_stale == 1 and len(source.asked) == 3
    source.mode = "fail"
    assert ttls(ask(cache, "example.org.")) == {0}
    assert cache.entries_denial == 0  # a failed verification is not cached


def test_truncated_and_mismatched_answers_are_not_kept() -> None:
    clock = Clock()

    class Odd(Source):
        async def serve(self, req: Request) -> Reply:
            reply = await super().serve(req)
            if req.lname.startswith("tc."):
                reply.message.header.tc = 1
            else:
                reply.message.questions[0].qname = "elsewhere.example.org."
            return reply

    source = Odd("tc.example.org. 60 IN A 127.0.0.1\nother.example.org. 60 IN A 127.0.0.2")
    cache = make_cache(clock, source)
    for name in ("tc.example.org.", "other.example.org."):
        ask(cache, name)
        ask(cache, name)
    assert len(source.asked) == 4
    assert cache.drops == 2 and cache.entries_success == 0


# -- end to end ------------------------------------------------------------------------------

UP_TABLE = """\
example.org. 300 IN A 127.0.0.10
short.example.org. 300 IN A 127.0.0.13
"""
SOA_TEXT = "example.org. 120 IN SOA ns.example.org. host.example.org. 1 7200 1800 86400 40"


class SoaUpstream(Upstream):
    """The test upstream, with an SOA in its denials as a real authority would send."""

    def _reply(self, query: DNSRecord, proto: str, mode: str) -> bytes:
        data = super()._reply(query, proto, mode)
        msg = DNSRecord.parse(data)
        if msg.header.rcode == RCODE.NXDOMAIN:
            msg.auth = RR.fromZone(SOA_TEXT)
            return msg.pack()
        return data


def ttl_of(msg: dns.message.Message) -> int:
    return min(rrset.ttl for rrset in (*msg.answer, *msg.authority))


def ask_until(name: str, port: int, ttl_ok: Callable[[int], bool], what: str,
              timeout: float = 3.0) -> dns.message.Message:
    """Ask `name` again and again until the answer's TTL passes `ttl_ok`; that answer."""
    def attempt() -> dns.message.Message | None:
        msg = query(name, port=port)
        return msg if ttl_ok(ttl_of(msg)) else None

    return wait_for(attempt, timeout=timeout, what=what)


@pytest.fixture(scope="module")
def upstream() -> Iterator[SoaUpstream]:
    with SoaUpstream(table=UP_TABLE) as up:
        yield up


@pytest.fixture(scope="module")
def server(upstream: SoaUpstream) -> Iterator[ServerProcess]:
    corefile = f"""
.:{{PORT}} {{
    bind 127.0.0.1
    cache 60 {{
        servfail 1s
    }}
    kubernetes cluster.local
    forward . {upstream.address}
}}
"""
    with ServerProcess(corefile) as s:
        yield s


def test_e2e_answers_come_from_the_cache_and_count_down(server: ServerProcess,
                                                        upstream: SoaUpstream) -> None:
    first = query("example.org.", "A", port=server.port)
    assert ttl_of(first) == 60
    again = query("Example.ORG.", "A", port=server.port, tcp=True)
    assert [rr.to_text() for rrset in again.answer for rr in rrset] == ["127.0.0.10"]
    assert len(upstream.queries("example.org.")) == 1
    # A client that speaks DNSSEC has its own entry.
    query("example.org.", "A", port=server.port, want_dnssec=True)
    assert len(upstream.queries("example.org.")) == 2
    later = ask_until("example.org.", server.port, lambda t: t < 60, "the TTL to count down")
    assert 58 <= ttl_of(later) <= 59
    assert len(upstream.queries("example.org.")) == 2


def test_e2e_denial_is_cached_with_the_soa_rules(server: ServerProcess,
                                                 upstream: SoaUpstream) -> None:
    for _ in range(3):
        msg = query("gone.example.org.", "A", port=server.port)
        assert msg.rcode() == dns.rcode.NXDOMAIN and ttl_of(msg) == 40
    assert len(upstream.queries("gone.example.org.")) == 1


def test_e2e_servfail_is_cached_for_its_duration(server: ServerProcess,
                                                 upstream: SoaUpstream) -> None:
    upstream.mode = "servfail"
    try:
        for _ in range(3):
            assert query("broken.example.org.", port=server.port).rcode() == dns.rcode.SERVFAIL
        assert len(upstream.queries("broken.example.org.")) == 1
        wait_for(lambda: query("broken.example.org.", port=server.port) and
                 len(upstream.queries("broken.example.org.")) == 2, timeout=3,
                 what="the SERVFAIL entry to expire after 1s")
    finally:
        upstream.mode = "answer"


def test_e2e_truncated_answers_are_not_cached(server: ServerProcess,
                                              upstream: SoaUpstream) -> None:
    upstream.mode = "truncate"
    try:
        for _ in range(2):
            msg = query("short.example.org.", port=server.port)
            assert msg.flags & dns.flags.TC
        assert len(upstream.queries("short.example.org.", proto="udp")) == 2
    finally:
        upstream.mode = "answer"


def test_e2e_prefetch_over_tcp_before_expiry(upstream: SoaUpstream) -> None:
    corefile = f"""
.:{{PORT}} {{
    bind 127.0.0.1
    cache {{
        success 1024 3 0
        prefetch 1 1m 50%
    }}
    kubernetes cluster.local
    forward . {upstream.address}
}}
"""
    name = "example.org."
    with ServerProcess(corefile) as s:
        before = len(upstream.queries(name))
        query(name, port=s.port)
        # Hits before 1 s has passed leave 3 s: no prefetch. Once 2 s are left, the first hit
        # starts one, over TCP, and is still answered from the cache.
        wait_for(lambda: query(name, port=s.port) and
                 len(upstream.queries(name)) >= before + 2, timeout=4, what="a prefetch")
        refresh = upstream.queries(name)[before + 1]
        assert refresh.proto == "tcp"


def test_e2e_serve_stale_while_the_upstream_fails(upstream: SoaUpstream) -> None:
    corefile = f"""
.:{{PORT}} {{
    bind 127.0.0.1
    cache {{
        success 1024 1 0
        serve_stale 1h
    }}
    kubernetes cluster.local
    forward . {upstream.address} {{
        max_fails 0
    }}
}}
"""
    name = "short.example.org."
    with ServerProcess(corefile) as s:
        assert ttl_of(query(name, port=s.port)) == 1
        upstream.mode = "servfail"
        try:
            stale = ask_until(name, s.port, lambda t: t == 0, "a stale answer")
            assert stale.rcode() == dns.rcode.NOERROR
            assert [rr.to_text() for rrset in stale.answer for rr in rrset] == ["127.0.0.13"]
            upstream.wait_queries(2, name)  # the background refresh
        finally:
            upstream.mode = "answer"
        fresh = ask_until(name, s.port, lambda t: t == 1, "a refreshed answer")
        assert fresh.rcode() == dns.rcode.NOERROR


def test_e2e_kubeadm_corefile_leaves_cluster_answers_alone(upstream: SoaUpstream) -> None:
    corefile = f"""
.:{{PORT}} {{
    bind 127.0.0.1
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        pods insecure
        ttl 20
    }}
    forward . {upstream.address}
    cache 30 {{
        disable success cluster.local
        disable denial cluster.local
    }}
}}
"""
    name = "kubernetes.default.svc.cluster.local."
    with ServerProcess(corefile) as s:
        assert ttl_of(query(name, port=s.port)) == 20
        assert ttl_of(query("example.org.", port=s.port)) == 30
        wait_for(lambda: ttl_of(query("example.org.", port=s.port)) < 30, timeout=3,
                 what="the forwarded answer's TTL to count down")
        assert ttl_of(query(name, port=s.port)) == 20
        nx = query("nope.default.svc.cluster.local.", port=s.port)
        assert nx.rcode() == dns.rcode.NXDOMAIN


def test_e2e_bad_stanza_is_a_clear_error() -> None:
    corefile = """
.:{PORT} {
    cache {
        servfail 10m
    }
    kubernetes cluster.local
}
"""
    s = ServerProcess(corefile, wait=False).start()
    try:
        code = s.proc.wait(timeout=20) if s.proc else None
        wait_for(lambda: "not permitted" in s.output, timeout=5, what="the error line")
    finally:
        s.stop()
    assert code not in (None, 0)
    assert "Corefile:4 - Error during parsing: cache: caching SERVFAIL responses over " \
           "5 minutes is not permitted" in s.output
    assert "Traceback" not in s.output
