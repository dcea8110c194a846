"""The kubernetes plugin inside a real server block (Corefile -> assembly -> query engine), asked
with wire queries in-process: header flags, ExternalName chasing, kept answers and their tags."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from dnsserver import corefile
from dnsserver.assembly import Assembly, assemble
from dnsserver.engine import QueryEngine
from dnsserver.snapshot import load_objects
from dnsserver.store import ClusterStore

from helpers import DEMO
from upstream_servers import Upstream

KUBERNETES = """
.:53 {
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
    }
    forward . %s
}
"""


class Served:
    """A Corefile assembled over a store, one query engine per listener, run on a private loop."""

    def __init__(self, text: str, store: ClusterStore) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = store
        parsed = corefile.parse(text, "Corefile", default_port=53, known=corefile.PLUGIN_ORDER)
        self.assembly: Assembly = assemble(parsed, store)
        self.engines: dict[int, QueryEngine] = {}
        for (_host, port), blocks in self.assembly.listeners.items():
            engine = QueryEngine(blocks, store)
            self.assembly.lookups[port] = engine.lookup
            self.engines[port] = engine
        self.engine = next(iter(self.engines.values()))
        for plugin in self.assembly.plugins:
            self.loop.run_until_complete(plugin.start())

    def close(self) -> None:
        for plugin in self.assembly.plugins:
            self.loop.run_until_complete(plugin.stop())
        self.loop.close()

    def ask(self, name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
        """The answer as a client gets it: from the fast path when kept, else the slow path."""
        query = dns.message.make_query(name, rdtype, **kw)
        wire = query.to_wire()
        kept = self.engine.fast.lookup(wire, False)
        if kept is None:
            kept = self.loop.run_until_complete(
                self.engine.resolve(wire, ("10.244.9.9", 40000), False))
        assert kept is not None
        return dns.message.from_wire(bytes(kept))

    def kept(self, name: str, rdtype: str = "A") -> bool:
        wire = dns.message.make_query(name, rdtype).to_wire()
        self.ask(name, rdtype)
        return self.engine.fast.lookup(wire, False) is not None


def demo_store(extra: list[dict[str, Any]] = ()) -> ClusterStore:  # type: ignore[assignment]
    store = ClusterStore(clock=lambda: 1_700_000_000.0)
    store.load([*load_objects(DEMO), *extra])
    return store


@contextmanager
def served(text: str = KUBERNETES, extra: list[dict[str, Any]] = ()  # type: ignore[assignment]
           ) -> Iterator[Served]:
    with Upstream() as upstream:
        s = Served(text % upstream.address if "%s" in text else text, demo_store(extra))
        try:
            yield s
        finally:
            s.close()


def rdtypes(msg: dns.message.Message) -> list[str]:
    return [dns.rdatatype.to_text(rrset.rdtype) for rrset in msg.answer]


# -- item 1: RA ------------------------------------------------------------------------------------

def test_answers_from_the_cluster_zone_never_set_ra() -> None:
    with served() as s:
        cases = [
            ("web.shop.svc.cluster.local", "A", dns.rcode.NOERROR),
            ("nope.shop.svc.cluster.local", "A", dns.rcode.NXDOMAIN),
            ("v6only.shop.svc.cluster.local", "A", dns.rcode.NOERROR),
            ("cluster.local", "SOA", dns.rcode.NOERROR),
            ("cluster.local", "NS", dns.rcode.NOERROR),
            ("10.0.96.10.in-addr.arpa", "PTR", dns.rcode.NOERROR),
            ("payments.shop.svc.cluster.local", "A", dns.rcode.NOERROR),  # chased upstream
        ]
        for name, rdtype, rcode in cases:
            for _ in range(2):  # the slow path, then the kept answer
                msg = s.ask(name, rdtype)
                assert msg.rcode() == rcode, (name, rdtype)
                assert msg.flags & dns.flags.AA, (name, rdtype)
                assert not msg.flags & dns.flags.RA, (name, rdtype)
        # A forwarded answer keeps the upstream's flags (the test upstream sets RA).
        fwd = s.ask("example.org", "A")
        assert fwd.flags & dns.flags.RA and not fwd.flags & dns.flags.AA


# -- item 4: endpoint_pod_names with a pod name longer than a label ---------------------------------

LONG_POD = "events-writer-" + "x" * 50 + "-7d9f8c6b5-qwert"
EVENTS = [
    {"kind": "Service", "metadata": {"name": "events", "namespace": "data"},
     "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
    {"kind": "EndpointSlice",
     "metadata": {"name": "events-1", "namespace": "data",
                  "labels": {"kubernetes.io/service-name": "events"}},
     "addressType": "IPv4",
     "endpoints": [{"addresses": ["10.244.2.50"],
                    "targetRef": {"kind": "Pod", "name": LONG_POD, "namespace": "data"}}],
     "ports": [{"name": "http", "port": 8080}]},
]


def test_a_pod_name_longer_than_a_label_answers_srv_and_ptr_with_the_dashed_ip() -> None:
    text = KUBERNETES.replace("pods insecure", "pods insecure\n        endpoint_pod_names")
    with served(text, EVENTS) as s:
        srv = s.ask("_http._tcp.events.data.svc.cluster.local", "SRV")
        assert srv.rcode() == dns.rcode.NOERROR
        assert [rd.target.to_text() for rd in srv.answer[0]] == [
            "10-244-2-50.events.data.svc.cluster.local."]
        ptr = s.ask("50.2.244.10.in-addr.arpa", "PTR")
        assert ptr.rcode() == dns.rcode.NOERROR
        assert [rd.to_text() for rd in ptr.answer[0]] == [
            "10-244-2-50.events.data.svc.cluster.local."]
