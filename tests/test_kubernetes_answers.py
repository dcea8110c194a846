"""The kubernetes plugin inside a real server block (Corefile -> assembly -> query engine), asked
with wire queries in-process: header flags, ExternalName chasing, kept answers and their tags."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from served import served

from dnsserver.plugins.kubernetes import interface_addresses, own_addresses

KUBERNETES = """
.:53 {
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
    }
    forward . %s
}
"""


def rdtypes(msg: dns.message.Message) -> list[str]:
    return [dns.rdatatype.to_text(rrset.rdtype) for rrset in msg.answer]


# -- item 1: RA ------------------------------------------------------------------------------------

def test_answers_from_the_cluster_zone_never_set_ra() -> None:
    with served(KUBERNETES) as s:
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


# -- item 4: endpoint_pod_names with a pod name longer than a label -----------------------------

def test_a_pod_name_longer_than_a_label_answers_srv_and_ptr_with_the_dashed_ip() -> None:
    text = KUBERNETES.replace("pods insecure", "pods insecure\n        endpoint_pod_names")
    with served(text) as s:  # the demo's data/events has a pod with a 66-character name
        srv = s.ask("_http._tcp.events.data.svc.cluster.local", "SRV")
        assert srv.rcode() == dns.rcode.NOERROR
        assert sorted(rd.target.to_text() for rd in srv.answer[0]) == [
            "10-244-2-50.events.data.svc.cluster.local.",
            "events-0.events.data.svc.cluster.local."]
        ptr = s.ask("50.2.244.10.in-addr.arpa", "PTR")
        assert ptr.rcode() == dns.rcode.NOERROR
        assert [rd.to_text() for rd in ptr.answer[0]] == [
            "10-244-2-50.events.data.svc.cluster.local."]


# -- item 5: an ExternalName to a name the server makes itself -------------------------------------

def test_a_deleted_external_name_to_our_own_name_stops_answering_at_once() -> None:
    self_ref = {"kind": "Service", "metadata": {"name": "self", "namespace": "shop"},
                "spec": {"type": "ExternalName", "externalName": "ns.dns.cluster.local"}}
    with served(KUBERNETES, [self_ref]) as s:
        first = s.ask("self.shop.svc.cluster.local")
        assert rdtypes(first)[0] == "CNAME"
        assert s.kept("self.shop.svc.cluster.local")
        s.store.apply("Service", "DELETED", self_ref)
        gone = s.ask("self.shop.svc.cluster.local")
        assert gone.rcode() == dns.rcode.NXDOMAIN and not gone.answer


# -- item 3: NS and glue from the server's own addresses -----------------------------------------

def test_own_addresses_are_the_listeners_else_the_interfaces_never_loopback() -> None:
    interfaces = ["127.0.0.1", "10.244.0.2", "::1", "fe80::1", "fd00:10:244::2", "10.244.0.2"]
    assert own_addresses([], interfaces) == ("10.244.0.2", "fd00:10:244::2")
    assert own_addresses(["127.0.0.1"], interfaces) == ()
    assert own_addresses(["10.244.0.9", "::1"], interfaces) == ("10.244.0.9",)
    # An unspecified bind address means every address, as no bind does.
    assert own_addresses(["0.0.0.0"], interfaces) == ("10.244.0.2", "fd00:10:244::2")
    # This machine's own addresses, read from the kernel: real, and never loopback.
    found = own_addresses([])
    assert all(not ipaddress.ip_address(ip).is_loopback for ip in found)
    assert set(found) <= set(interface_addresses())


def test_a_server_bound_to_loopback_has_no_ns_glue_and_a_pod_ip_finds_its_service() -> None:
    loopback = KUBERNETES.replace(".:53 {", ".:53 {\n    bind 127.0.0.1")
    with served(loopback) as s:
        ns = s.ask("cluster.local", "NS")
        assert ns.rcode() == dns.rcode.NOERROR and not ns.answer and not ns.additional
    pod_ip = KUBERNETES.replace(".:53 {", ".:53 {\n    bind 10.244.0.2")
    with served(pod_ip) as s:
        ns = s.ask("cluster.local", "NS")
        assert [rd.to_text() for rd in ns.answer[0]] == ["kube-dns.kube-system.svc.cluster.local."]
        assert [(rrset.name.to_text(), rrset[0].to_text()) for rrset in ns.additional] == [
            ("kube-dns.kube-system.svc.cluster.local.", "10.96.0.10")]
        assert s.kept("cluster.local", "NS")
        # Our own service moves: the kept NS answer goes with it.
        moved = {"kind": "Service", "metadata": {"name": "kube-dns", "namespace": "kube-system"},
                 "spec": {"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"],
                          "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}
        s.store.apply("Service", "MODIFIED", moved)
        assert [rrset[0].to_text() for rrset in s.ask("cluster.local", "NS").additional] == [
            "10.96.0.11"]


# -- item 9: an ExternalName chased through a truncated upstream answer ---------------------------

def test_an_external_name_whose_upstream_answer_is_truncated_gives_the_client_tc() -> None:
    ext = {"kind": "Service", "metadata": {"name": "ext", "namespace": "shop"},
           "spec": {"type": "ExternalName", "externalName": "example.org"}}
    with served(KUBERNETES, [ext], upstream_mode="truncate") as s:
        msg = s.ask("ext.shop.svc.cluster.local")
        assert msg.flags & dns.flags.TC and msg.flags & dns.flags.AA
        assert [rrset.name.to_text() for rrset in msg.answer] == ["ext.shop.svc.cluster.local."]
    with served(KUBERNETES, [ext]) as s:  # a whole upstream answer: no TC
        msg = s.ask("ext.shop.svc.cluster.local")
        assert not msg.flags & dns.flags.TC and rdtypes(msg) == ["CNAME", "A"]
