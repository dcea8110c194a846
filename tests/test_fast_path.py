"""The fast path serves exactly the bytes the slow path would, before and after cluster changes."""

from __future__ import annotations

import asyncio
import copy
import itertools
from typing import Any

import dns.message
import pytest

from dnsserver.engine import QueryEngine, ServerBlockRuntime
from dnsserver.kubernetes_zone import KubernetesOptions
from dnsserver.plugin import chain
from dnsserver.plugins.kubernetes import KubernetesConfig, KubernetesPlugin
from dnsserver.snapshot import load_objects
from dnsserver.store import ClusterStore

from helpers import DEMO

NAMES = [
    "kubernetes.default.svc.cluster.local", "web.shop.svc.cluster.local",
    "WEB.Shop.svc.cluster.local", "_http._tcp.web.shop.svc.cluster.local",
    "db.data.svc.cluster.local", "db-0.db.data.svc.cluster.local", "nope.shop.svc.cluster.local",
    "shop.svc.cluster.local", "nons.svc.cluster.local", "www.shop.svc.cluster.local",
    "dual.shop.svc.cluster.local", "10-244-1-10.shop.pod.cluster.local",
    "dns-version.cluster.local", "cluster.local", "1.0.96.10.in-addr.arpa",
    "10.10.96.10.in-addr.arpa", "x.y.z.web.shop.svc.cluster.local", "example.com",
    "web.shop.svc.cluster.local.default.svc.cluster.local",
]
TYPES = ["A", "AAAA", "SRV", "TXT", "PTR", "SOA", "CNAME", "MX"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def make_engine() -> tuple[QueryEngine, ClusterStore, Clock]:
    clock = Clock()
    store = ClusterStore(clock=clock)
    store.load(load_objects(DEMO))
    opts = KubernetesOptions(zones=("cluster.local.", "in-addr.arpa.", "ip6.arpa."),
                             pods="insecure")
    plugin = KubernetesPlugin(store, KubernetesConfig(records=opts))
    block = ServerBlockRuntime(opts.zones, chain([plugin]), (plugin,))
    return QueryEngine([block], store), store, clock


def wires() -> list[bytes]:
    out = []
    for i, (name, qtype, edns) in enumerate(itertools.product(NAMES, TYPES, (False, True))):
        kw: dict[str, Any] = {"use_edns": 0, "payload": 1232} if edns else {}
        out.append(dns.message.make_query(name, qtype, id=i % 65536, **kw).to_wire())
    return out


async def check_all(engine: QueryEngine, queries: list[bytes]) -> int:
    """Every query: fast-path bytes (when kept) equal a fresh slow-path encoding. Returns hits."""
    hits = 0
    for q in queries:
        for tcp in (False, True):
            fresh = await engine.resolve(q, ("127.0.0.1", 1), tcp, remember=False)
            kept = engine.fast.lookup(q, tcp)
            if kept is not None:
                hits += 1
                assert kept == fresh, dns.message.from_wire(q).question
    return hits


def test_fast_path_matches_slow_path_before_and_after_changes() -> None:
    engine, store, clock = make_engine()
    queries = wires()

    async def scenario() -> None:
        # Fill the fast path through the normal route.
        for q in queries:
            await engine.resolve(q, ("127.0.0.1", 1), False)
            await engine.resolve(q, ("127.0.0.1", 1), True)
        assert await check_all(engine, queries) > len(queries)
        # A different ID gets the same bytes but for the ID.
        first = queries[0]
        other = b"\xbe\xef" + first[2:]
        assert engine.fast.lookup(other, False)[:2] == b"\xbe\xef"

        objs = load_objects(DEMO)
        web = copy.deepcopy(next(o for o in objs if o.get("kind") == "Service"
                                 and o["metadata"]["name"] == "web"))
        web["spec"]["clusterIPs"] = ["10.96.10.99"]
        clock.now += 10  # the serial moves: kept negative answers must follow it
        store.apply("Service", "MODIFIED", web)
        await check_all(engine, queries)
        store.apply("Service", "ADDED", {
            "kind": "Service", "metadata": {"name": "nope", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.10.77", "ports": [{"port": 80}]}})
        clock.now += 10
        store.apply("Namespace", "DELETED", {"metadata": {"name": "data"}})
        await check_all(engine, queries)

    asyncio.run(scenario())


def test_one_service_changing_leaves_the_others_hot() -> None:
    engine, store, _ = make_engine()
    web = dns.message.make_query("web.shop.svc.cluster.local", "A").to_wire()
    api = dns.message.make_query("api.shop.svc.cluster.local", "A").to_wire()

    async def fill() -> None:
        await engine.resolve(web, ("127.0.0.1", 1), False)
        await engine.resolve(api, ("127.0.0.1", 1), False)

    asyncio.run(fill())
    store.apply("EndpointSlice", "DELETED", {"metadata": {"name": "web-9xq4w",
                                                           "namespace": "shop"}})
    assert engine.fast.lookup(web, False) is None
    assert engine.fast.lookup(api, False) is not None


@pytest.mark.parametrize("entries", [5])
def test_fast_path_is_bounded(entries: int) -> None:
    engine, _, _ = make_engine()
    engine.fast.max_entries = entries
    queries = wires()[:40]

    async def fill() -> None:
        for q in queries:
            await engine.resolve(q, ("127.0.0.1", 1), False)

    asyncio.run(fill())
    assert len(engine.fast) <= entries
    assert engine.fast.evictions > 0


def cookie_query(name: str, cookie: bytes, extra: list | None = None, ident: int = 7) -> bytes:
    import dns.edns

    options = [dns.edns.GenericOption(dns.edns.OptionType.COOKIE, cookie), *(extra or [])]
    return dns.message.make_query(name, "A", id=ident, use_edns=0, payload=1232,
                                  options=options).to_wire()


def test_queries_differing_only_by_a_cookie_share_an_entry() -> None:
    import dns.edns

    from dnsserver import wire

    engine, _, _ = make_engine()
    first = cookie_query("web.shop.svc.cluster.local", b"\x01" * 8)
    other = cookie_query("web.shop.svc.cluster.local", b"\x02" * 8 + b"\x03" * 16, ident=9)
    padded = cookie_query("nope.shop.svc.cluster.local", b"\x04" * 8,
                          [dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\x00" * 5)])

    async def scenario() -> None:
        for q in (first, padded):
            for tcp in (False, True):
                await engine.resolve(q, ("127.0.0.1", 1), tcp)
        for tcp in (False, True):
            kept = engine.fast.lookup(other, tcp)
            assert kept is not None and kept == await engine.resolve(
                other, ("127.0.0.1", 1), tcp, remember=False)
            # A different cookie with the same other options hits too.
            again = cookie_query("nope.shop.svc.cluster.local", b"\x05" * 8,
                                 [dns.edns.GenericOption(dns.edns.OptionType.PADDING,
                                                         b"\x00" * 5)], ident=3)
            assert engine.fast.lookup(again, tcp) == await engine.resolve(
                again, ("127.0.0.1", 1), tcp, remember=False)
        assert len(engine.fast) == 4  # two names x two transports, whatever the cookies

    asyncio.run(scenario())
    bare = wire.without_cookie(first)
    assert bare is not None and len(bare) == len(first) - 12
    assert not dns.message.from_wire(bare).options
    assert wire.without_cookie(dns.message.make_query("x.", "A").to_wire()) is None
    assert wire.without_cookie(first[:-3]) is None  # a truncated option is left alone


# -- answers that age: the cache's, in front of the cluster and of an upstream ----------------

CACHED_NAMES = ["web.shop.svc.cluster.local", "WEB.Shop.svc.cluster.local",
                "nope.shop.svc.cluster.local", "_http._tcp.web.shop.svc.cluster.local",
                "example.org", "Example.ORG", "www.example.org"]


def cached_wires() -> list[bytes]:
    """Every name x A/AAAA/SRV x no EDNS / EDNS / EDNS+DO x CD or not."""
    import dns.flags

    out = []
    shapes = [{}, {"use_edns": 0, "payload": 1232},
              {"use_edns": 0, "payload": 1232, "want_dnssec": True}]
    for i, (name, qtype, kw, cd) in enumerate(itertools.product(
            CACHED_NAMES, ["A", "AAAA", "SRV"], shapes, (False, True))):
        msg = dns.message.make_query(name, qtype, id=i, **kw)
        if cd:
            msg.flags |= dns.flags.CD
        out.append(msg.to_wire())
    return out


def make_cached_engine(upstream_port: int) -> tuple[QueryEngine, ClusterStore, Clock, list]:
    """kubeadm's shape: `cache` in front of `kubernetes` and of `forward`, one shared clock."""
    from dnsserver import answer_cache as ac
    from dnsserver.plugins.cache import CachePlugin
    from dnsserver.plugins.forward import ForwardPlugin, Proxy

    clock = Clock()
    store = ClusterStore(clock=clock)
    store.load(load_objects(DEMO))
    opts = KubernetesOptions(zones=("cluster.local.",), pods="insecure")
    settings = ac.CacheSettings(success_max_ttl=30, denial_max_ttl=30)
    cluster_cache = CachePlugin(("cluster.local.",), settings, clock, store=store)
    kubernetes = KubernetesPlugin(store, KubernetesConfig(records=opts))
    outside_cache = CachePlugin((".",), settings, clock, store=store)
    forward = ForwardPlugin(".", [Proxy(("127.0.0.1", upstream_port))])
    cluster = ServerBlockRuntime(("cluster.local.",), chain([cluster_cache, kubernetes]),
                                 (cluster_cache, kubernetes))
    outside = ServerBlockRuntime((".",), chain([outside_cache, forward]),
                                 (outside_cache, forward))
    return QueryEngine([cluster, outside], store), store, clock, [cluster_cache, outside_cache]


def test_kept_cache_answers_age_and_match_the_slow_path_to_the_second() -> None:
    from upstream_servers import Upstream

    queries = cached_wires()
    with Upstream() as up:
        engine, _store, clock, caches = make_cached_engine(up.port)

        async def scenario() -> None:
            for cache in caches:
                await cache.start()
            for q in queries:
                for tcp in (False, True):
                    await engine.resolve(q, ("127.0.0.1", 1), tcp)
            asked = len(up.received)
            # Upstream denials without an SOA are not cached (CoreDNS's rules), so not kept.
            kept = [q for q in queries if engine.fast.lookup(q, False) is not None]
            assert len(kept) > 0.8 * len(queries)
            # Kept bytes, their TTLs aged, equal what the cache itself says at that age.
            for step in (0.0, 0.4, 0.7, 2.5, 1.3):  # up to 4.9 s of age
                clock.now += step
                assert await check_all(engine, queries) == 2 * len(kept)
            # None of it went upstream again: the cache and the kept bytes answered.
            assert len(up.received) == asked
            # Cluster answers live 5 s (their TTL); the rest 30 s (the cap), to the second.
            clock.now = 1_700_000_000.0 + 5.0
            # (denials without an SOA, like example.org SRV, also live 5 s: CoreDNS's minimum)
            for q in kept:
                question = dns.message.from_wire(q).question[0]
                name = question.name.to_text().lower()
                if question.rdtype == 1:
                    assert (engine.fast.lookup(q, False) is None) == name.endswith(
                        "cluster.local."), name
            assert await check_all(engine, queries) >= 1
            clock.now = 1_700_000_000.0 + 29.99
            assert await check_all(engine, queries) > 0
            clock.now = 1_700_000_000.0 + 30.0
            assert all(engine.fast.lookup(q, False) is None for q in queries
                       if b"example" in q.lower())
            for cache in caches:
                await cache.stop()

        asyncio.run(scenario())


def test_a_cluster_change_drops_the_cached_answers_that_used_it_at_once() -> None:
    from upstream_servers import Upstream

    web = dns.message.make_query("web.shop.svc.cluster.local", "A").to_wire()
    api = dns.message.make_query("api.shop.svc.cluster.local", "A").to_wire()
    with Upstream() as up:
        engine, store, clock, caches = make_cached_engine(up.port)

        async def scenario() -> None:
            for cache in caches:
                await cache.start()
            for q in (web, api):
                await engine.resolve(q, ("127.0.0.1", 1), False)
            assert engine.fast.lookup(web, False) is not None
            changed = copy.deepcopy(next(o for o in load_objects(DEMO)
                                         if o.get("kind") == "Service"
                                         and o["metadata"]["name"] == "web"))
            changed["spec"]["clusterIPs"] = ["10.96.10.99"]
            changed["spec"]["clusterIP"] = "10.96.10.99"
            clock.now += 1
            store.apply("Service", "MODIFIED", changed)
            # Fresher than CoreDNS (which serves the cached answer until its TTL runs out):
            # the kept bytes and the cache's entry both went with the change.
            assert engine.fast.lookup(web, False) is None
            assert engine.fast.lookup(api, False) is not None
            fresh = dns.message.from_wire(await engine.resolve(web, ("127.0.0.1", 1), False))
            assert [rr.address for rr in fresh.answer[0]] == ["10.96.10.99"]
            for cache in caches:
                await cache.stop()

        asyncio.run(scenario())


def test_kept_ttls_are_patched_at_most_once_a_second() -> None:
    from dnsserver.engine import TAIL

    from upstream_servers import Upstream

    q = dns.message.make_query("example.org", "A").to_wire()
    with Upstream() as up:
        engine, _store, clock, _caches = make_cached_engine(up.port)

        async def scenario() -> None:
            await engine.resolve(q, ("127.0.0.1", 1), False)

        asyncio.run(scenario())
        entry = engine.fast.find(q, False)
        assert entry is not None
        seen = []
        for step in [0.1] * 25:  # 2.5 s in tenths
            clock.now += step
            answer = engine.fast.lookup(q, False)
            assert answer is not None
            seen.append((dns.message.from_wire(answer).answer[0].ttl, id(entry[TAIL])))
        ttls = [ttl for ttl, _ in seen]
        assert ttls[0] == 30 and ttls[-1] == 28 and ttls == sorted(ttls, reverse=True)
        # A new bytes object only when the TTL changed: one re-patch per second.
        patches = sum(1 for a, b in itertools.pairwise(seen) if a[1] != b[1])
        assert patches == len(set(ttls)) - 1 == 2


def test_the_tag_index_holds_only_live_entries_after_many_changes() -> None:
    engine, store, clock = make_engine()
    queries = wires()
    base = next(o for o in load_objects(DEMO)
                if o.get("kind") == "Service" and o["metadata"]["name"] == "web")

    async def scenario() -> None:
        for round_ in range(30):
            for q in queries[:120]:
                await engine.resolve(q, ("127.0.0.1", 1), False)
            changed = copy.deepcopy(base)
            changed["spec"]["clusterIPs"] = [f"10.96.10.{100 + round_}"]
            changed["spec"]["clusterIP"] = f"10.96.10.{100 + round_}"
            clock.now += 1
            store.apply("Service", "MODIFIED", changed)
            live = sum(len(entry[7]) for table in (engine.fast.udp, engine.fast.tcp)
                       for entry in table.values())
            assert engine.fast.tag_index_size() == live

    asyncio.run(scenario())
    engine.fast.clear()
    assert engine.fast.tag_index_size() == 0 and len(engine.fast) == 0


def test_hits_from_kept_bytes_count_for_prefetch_and_the_cache_metrics() -> None:
    from dnsserver import answer_cache as ac
    from dnsserver.plugins.cache import CachePlugin
    from dnsserver.plugins.forward import ForwardPlugin, Proxy

    from upstream_servers import Upstream

    q = dns.message.make_query("example.org", "A").to_wire()
    with Upstream() as up:
        clock = Clock()
        settings = ac.CacheSettings(success_max_ttl=100, prefetch_amount=3,
                                    prefetch_percentage=10)
        cache = CachePlugin((".",), settings, clock)
        forward = ForwardPlugin(".", [Proxy(("127.0.0.1", up.port))])
        engine = QueryEngine([ServerBlockRuntime((".",), chain([cache, forward]),
                                                 (cache, forward))], None)

        async def scenario() -> None:
            await engine.resolve(q, ("127.0.0.1", 1), False)
            start = clock.now
            for second in (10, 30, 50, 70, 85):
                clock.now = start + second
                assert engine.fast.lookup(q, False) is not None
            assert cache.hits_success == 5 and cache.requests == 6
            # At 90 s the entry enters its prefetch window: the kept bytes go, and the
            # cache, told of the five hits, prefetches on the first query it sees itself.
            clock.now = start + 90
            assert engine.fast.lookup(q, False) is None
            await engine.resolve(q, ("127.0.0.1", 1), False)
            await cache.drain()
            assert cache.prefetches == 1
            assert len(up.queries("example.org.")) == 2

        asyncio.run(scenario())


def test_a_cluster_answer_evicted_for_room_is_stored_again_as_a_miss_would() -> None:
    from dnsserver import answer_cache as ac
    from dnsserver.plugins.cache import CachePlugin

    clock = Clock()
    store = ClusterStore(clock=clock)
    store.load(load_objects(DEMO))
    opts = KubernetesOptions(zones=("cluster.local.",), pods="insecure")
    cache = CachePlugin(("cluster.local.",), ac.CacheSettings(denial_capacity=2), clock,
                        store=store)
    kubernetes = KubernetesPlugin(store, KubernetesConfig(records=opts))
    engine = QueryEngine([ServerBlockRuntime(("cluster.local.",), chain([cache, kubernetes]),
                                             (cache, kubernetes))], store)
    names = [f"nope{i}.shop.svc.cluster.local" for i in range(5)]
    queries = [dns.message.make_query(n, "A").to_wire() for n in names]

    async def scenario() -> None:
        await cache.start()
        for q in queries:
            await engine.resolve(q, ("127.0.0.1", 1), False)
        assert cache.entries_denial == 2 and cache.evictions_denial == 3
        misses = cache.misses
        clock.now += 3
        # The first name left the full cache; its kept bytes store it again, as the miss
        # the kubernetes plugin would answer the same way: TTL from the top, a miss counted.
        kept = engine.fast.lookup(queries[0], False)
        assert kept is not None
        assert dns.message.from_wire(kept).authority[0].ttl == 5
        assert cache.misses == misses + 1
        assert kept == await engine.resolve(queries[0], ("127.0.0.1", 1), False, remember=False)
        # A cluster change still takes it away at once.
        store.apply("Service", "ADDED", {
            "kind": "Service", "metadata": {"name": "nope0", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.10.77", "ports": [{"port": 80}]}})
        assert engine.fast.lookup(queries[0], False) is None
        await cache.stop()

    asyncio.run(scenario())
