"""A Corefile served in-process: parsed, assembled over a store of the demo cluster, one query
engine per listener, asked with wire queries as a client asks (the fast path first)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dns.message

from dnsserver import corefile
from dnsserver.assembly import Assembly, assemble
from dnsserver.engine import QueryEngine
from dnsserver.snapshot import load_objects
from dnsserver.store import ClusterStore

from helpers import DEMO
from upstream_servers import Upstream

CLIENT = ("10.244.9.9", 40000)


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

    def ask_wire(self, name: str, rdtype: str = "A", **kw: Any) -> bytes:
        """The answer's bytes as a client gets them: the fast path's when kept, else the slow
        path's."""
        wire = dns.message.make_query(name, rdtype, **kw).to_wire()
        kept = self.engine.fast.lookup(wire, False)
        if kept is None:
            kept = self.loop.run_until_complete(self.engine.resolve(wire, CLIENT, False))
        assert kept is not None
        return bytes(kept)

    def ask(self, name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
        return dns.message.from_wire(self.ask_wire(name, rdtype, **kw))

    def kept(self, name: str, rdtype: str = "A") -> bool:
        wire = dns.message.make_query(name, rdtype).to_wire()
        self.ask(name, rdtype)
        return self.engine.fast.lookup(wire, False) is not None


def demo_store(extra: Sequence[dict[str, Any]] = ()) -> ClusterStore:
    store = ClusterStore(clock=lambda: 1_700_000_000.0)
    store.load([*load_objects(DEMO), *extra])
    return store


@contextmanager
def served(text: str, extra: Sequence[dict[str, Any]] = (),
           upstream_mode: str = "answer") -> Iterator[Served]:
    """`text` served over the demo cluster plus `extra`; `%s` in it is a test upstream."""
    with Upstream(upstream_mode) as upstream:
        s = Served(text % upstream.address if "%s" in text else text, demo_store(extra))
        try:
            yield s
        finally:
            s.close()
