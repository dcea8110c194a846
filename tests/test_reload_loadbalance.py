"""`reload` swaps a changed Corefile in without dropping queries and keeps the old one when the
new one is bad; `loadbalance` changes the order of address records, on the fast path too."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import dns.rcode

from dnsserver.snapshot import load_objects

from helpers import DEMO, ServerProcess, answers, query, wait_for

COREFILE = """
.:{PORT} {
    bind 127.0.0.1
    reload 2s 1s
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        ttl %d
    }
}
"""


def test_reload_swaps_in_a_new_corefile_and_keeps_the_old_when_broken() -> None:
    with ServerProcess(COREFILE % 5) as server:
        conf = server.dir / "Corefile"
        stop = threading.Event()
        failures: list[str] = []

        def hammer() -> None:
            # Every query must be answered while the Corefile is swapped.
            for _ in range(20000):
                if stop.is_set():
                    return
                try:
                    msg = query("web.shop.svc.cluster.local", port=server.port, timeout=1)
                    if msg.rcode() != dns.rcode.NOERROR:
                        failures.append(dns.rcode.to_text(msg.rcode()))
                except Exception as exc:
                    failures.append(repr(exc))

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            conf.write_text(COREFILE.replace("{PORT}", str(server.port)) % 42)

            def ttl() -> int:
                return query("web.shop.svc.cluster.local", port=server.port).answer[0].ttl

            wait_for(lambda: ttl() == 42, timeout=15, what="the reloaded ttl")
            # A broken Corefile: the error is logged, the running one stays.
            conf.write_text(COREFILE.replace("{PORT}", str(server.port)).replace(
                "kubernetes", "kubernets") % 7)
            wait_for(lambda: any("reload failed" in ln for ln in server.lines), timeout=15,
                     what="the reload failure logged")
            assert any("Unknown directive 'kubernets'" in ln for ln in server.lines)
            assert ttl() == 42
        finally:
            stop.set()
            thread.join(timeout=30)
        assert failures == []


def test_loadbalance_rotates_addresses_on_every_path(tmp_path: Path) -> None:
    corefile = """
.:{PORT} {
    bind 127.0.0.1
    loadbalance
    kubernetes cluster.local
}
"""
    objs = load_objects(DEMO)
    for obj in objs:
        if obj.get("kind") == "EndpointSlice" and obj["metadata"]["name"] == "search-1":
            obj["endpoints"] = [{"addresses": [f"10.10.0.{i}"]} for i in range(1, 5)]
    snap = tmp_path / "cluster.json"
    snap.write_text(json.dumps({"kind": "List", "items": objs}))
    with ServerProcess(corefile, snapshot=snap) as server:
        orders = set()
        for _ in range(12):
            for tcp in (False, True):
                msg = query("search.data.svc.cluster.local", port=server.port, tcp=tcp)
                order = tuple(rd.to_text() for rr in msg.answer for rd in rr)
                assert sorted(order) == [f"10.10.0.{i}" for i in range(1, 5)]
                orders.add((tcp, order))
        assert len({o for tcp, o in orders if not tcp}) >= 3
        assert len({o for tcp, o in orders if tcp}) >= 3
        # A single address is never touched.
        assert answers(query("web.shop.svc.cluster.local", port=server.port)) == ["10.96.10.10"]
