"""`autopath @kubernetes`: the asking pod's search path walked on the server."""

from __future__ import annotations

import json
from pathlib import Path

import dns.message
import dns.rcode
from dnslib import QTYPE, DNSRecord
from served import CLIENT, served

from dnsserver.snapshot import load_objects

from helpers import DEMO, ServerProcess, query
from upstream_servers import Upstream

COREFILE = """
.:{PORT} {
    bind 127.0.0.1
    autopath @kubernetes
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods verified
    }
    forward . %s
}
"""


def test_autopath_walks_the_pods_search_path(tmp_path: Path) -> None:
    # The test client (127.0.0.1) is a pod in namespace `shop`.
    pod = {"kind": "Pod", "metadata": {"name": "client", "namespace": "shop"},
           "status": {"phase": "Running", "podIP": "127.0.0.1"}}
    snap = tmp_path / "cluster.json"
    snap.write_text(json.dumps({"kind": "List", "items": [*load_objects(DEMO), pod]}))
    with Upstream() as upstream, ServerProcess(COREFILE % upstream.address,
                                               snapshot=snap) as server:
        # `example.org` with ndots:5: the first name the pod asks is in its own namespace.
        msg = query("example.org.shop.svc.cluster.local", port=server.port)
        assert msg.rcode() == dns.rcode.NOERROR
        cname, a = msg.answer[0], msg.answer[1]
        assert cname.name.to_text() == "example.org.shop.svc.cluster.local."
        assert cname[0].target.to_text() == "example.org."
        assert [rd.to_text() for rd in a] == ["127.0.0.10"]
        # `api.data` from `shop`: found at the second element, svc.cluster.local.
        msg = query("api.data.shop.svc.cluster.local", port=server.port)
        assert msg.rcode() == dns.rcode.NXDOMAIN  # `api` lives in shop, not in data
        msg = query("db.data.shop.svc.cluster.local", port=server.port)
        assert msg.answer[0][0].target.to_text() == "db.data.svc.cluster.local."
        # A name in the pod's own namespace is answered directly, without a CNAME.
        msg = query("web.shop.svc.cluster.local", port=server.port)
        assert [rr.rdtype for rr in msg.answer] == [dns.rdatatype.A]
        # Nothing anywhere: the first reply (NXDOMAIN) as is.
        assert query("nothing.shop.svc.cluster.local",
                     port=server.port).rcode() == dns.rcode.NXDOMAIN


def records(wire: bytes) -> list[tuple[str, str, str]]:
    """Every answer record, duplicates kept (dnspython's rrsets would merge them)."""
    parsed = DNSRecord.parse(wire)
    return [(str(rr.rname), QTYPE.get(rr.rtype), str(rr.rdata)) for rr in parsed.rr]


def test_an_external_names_cname_appears_once() -> None:
    # The asking pod lives in `shop`; shop/ext points outside, shop/www inside the cluster.
    pod = {"kind": "Pod", "metadata": {"name": "client", "namespace": "shop"},
           "status": {"phase": "Running", "podIP": CLIENT[0]}}
    ext = {"kind": "Service", "metadata": {"name": "ext", "namespace": "shop"},
           "spec": {"type": "ExternalName", "externalName": "www.example.org"}}
    with served(COREFILE.replace("{PORT}", "53"), [pod, ext]) as s:
        assert records(s.ask_wire("ext.shop.svc.cluster.local")) == [
            ("ext.shop.svc.cluster.local.", "CNAME", "www.example.org."),
            ("www.example.org.", "CNAME", "example.org."),
            ("www.example.org.", "A", "127.0.0.10")]
        assert records(s.ask_wire("www.shop.svc.cluster.local")) == [
            ("www.shop.svc.cluster.local.", "CNAME", "web.shop.svc.cluster.local."),
            ("web.shop.svc.cluster.local.", "A", "10.96.10.10")]
        # Found further down the path, the bridge from the name asked is still added, once.
        assert records(s.ask_wire("www.shop.shop.svc.cluster.local")) == [
            ("www.shop.shop.svc.cluster.local.", "CNAME", "www.shop.svc.cluster.local."),
            ("www.shop.svc.cluster.local.", "CNAME", "web.shop.svc.cluster.local."),
            ("web.shop.svc.cluster.local.", "A", "10.96.10.10")]
