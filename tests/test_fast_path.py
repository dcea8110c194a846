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
