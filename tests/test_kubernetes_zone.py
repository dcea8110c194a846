"""The Kubernetes DNS schema, row by row, against the pure record logic and the demo cluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from dnslib import QTYPE, DNSRecord

from dnsserver.kubernetes_zone import (
    NOERROR,
    NXDOMAIN,
    SERVFAIL,
    KubernetesOptions,
    KubernetesZone,
    endpoint_hostname,
    parse_request,
    reverse_to_ip,
)
from dnsserver.objects import EndpointAddress
from dnsserver.snapshot import load_objects
from dnsserver.store import ClusterStore

from helpers import DEMO

ZONES = ("cluster.local.", "in-addr.arpa.", "ip6.arpa.")


def make_store(objs: list[dict[str, Any]] | None = None) -> ClusterStore:
    store = ClusterStore(clock=lambda: 1_700_000_000.0)
    store.load(load_objects(DEMO) if objs is None else objs)
    return store


@pytest.fixture(scope="module")
def demo() -> ClusterStore:
    return make_store()


def ask(store: ClusterStore, name: str, qtype: str = "A", **options: Any):
    opts = KubernetesOptions(**{"zones": ZONES, "pods": "insecure", **options})
    zone = KubernetesZone(store, opts)
    lname = name.lower()
    matched = max((z for z in opts.zones if lname == z or lname.endswith("." + z)), key=len)
    return zone.answer(name, getattr(QTYPE, qtype), matched)


def rrs(section: list) -> list[tuple[str, str, str]]:
    return sorted((str(rr.rname), QTYPE.get(rr.rtype), str(rr.rdata)) for rr in section)


def rdata(section: list, qtype: str | None = None) -> list[str]:
    return sorted(str(rr.rdata) for rr in section if qtype is None or QTYPE.get(rr.rtype) == qtype)


# -- names and their answers ---------------------------------------------------------------------

ROWS = [
    # (name, type, rcode, answer rdata)
    ("kubernetes.default.svc.cluster.local.", "A", NOERROR, ["10.96.0.1"]),
    ("kube-dns.kube-system.svc.cluster.local.", "A", NOERROR, ["10.96.0.10"]),
    ("web.shop.svc.cluster.local.", "A", NOERROR, ["10.96.10.10"]),
    ("api.shop.svc.cluster.local.", "A", NOERROR, ["10.96.10.20"]),  # NodePort
    ("frontend.shop.svc.cluster.local.", "A", NOERROR, ["10.96.10.30"]),  # LoadBalancer
    ("dual.shop.svc.cluster.local.", "A", NOERROR, ["10.96.10.40"]),
    ("dual.shop.svc.cluster.local.", "AAAA", NOERROR, ["fd00:10:96::40"]),
    ("v6only.shop.svc.cluster.local.", "AAAA", NOERROR, ["fd00:10:96::50"]),
    ("v6only.shop.svc.cluster.local.", "A", NOERROR, []),  # NODATA: the family it lacks
    ("web.shop.svc.cluster.local.", "AAAA", NOERROR, []),
    ("web.shop.svc.cluster.local.", "MX", NOERROR, []),
    ("web.shop.svc.cluster.local.", "TXT", NOERROR, []),
    ("nope.shop.svc.cluster.local.", "A", NXDOMAIN, []),
    ("nope.shop.svc.cluster.local.", "TXT", NXDOMAIN, []),
    ("nope.shop.svc.cluster.local.", "AAAA", NXDOMAIN, []),
    ("web.nons.svc.cluster.local.", "A", NXDOMAIN, []),
    # Headless: every ready endpoint, not the others; per-endpoint names.
    ("db.data.svc.cluster.local.", "A", NOERROR, ["10.244.1.30", "10.244.2.31"]),
    ("db-0.db.data.svc.cluster.local.", "A", NOERROR, ["10.244.1.30"]),
    ("db-1.db.data.svc.cluster.local.", "A", NOERROR, ["10.244.2.31"]),
    ("db-2.db.data.svc.cluster.local.", "A", NXDOMAIN, []),  # not ready
    ("search.data.svc.cluster.local.", "A", NOERROR, ["10.10.0.5", "10.10.0.6"]),
    ("10-10-0-5.search.data.svc.cluster.local.", "A", NOERROR, ["10.10.0.5"]),
    ("10-10-0-7.search.data.svc.cluster.local.", "A", NXDOMAIN, []),
    # Endpoint names work for ClusterIP services too.
    ("10-244-1-10.web.shop.svc.cluster.local.", "A", NOERROR, ["10.244.1.10"]),
    ("10-244-3-12.web.shop.svc.cluster.local.", "A", NXDOMAIN, []),
    ("fd00-10-244-2--40.dual.shop.svc.cluster.local.", "AAAA", NOERROR, ["fd00:10:244:2::40"]),
    # ExternalName.
    ("payments.shop.svc.cluster.local.", "CNAME", NOERROR, ["payments.example.com."]),
    ("payments.shop.svc.cluster.local.", "A", NOERROR, ["payments.example.com."]),
    ("www.shop.svc.cluster.local.", "A", NOERROR, ["10.96.10.10", "web.shop.svc.cluster.local."]),
    ("www.shop.svc.cluster.local.", "CNAME", NOERROR, ["web.shop.svc.cluster.local."]),
    ("_https._tcp.payments.shop.svc.cluster.local.", "SRV", NXDOMAIN, []),  # a named port
    # data/events: one pod's name is too long for a label; endpoints keep dashed-IP names.
    ("events.data.svc.cluster.local.", "A", NOERROR, ["10.244.1.51", "10.244.2.50"]),
    ("50.2.244.10.in-addr.arpa.", "PTR", NOERROR, ["10-244-2-50.events.data.svc.cluster.local."]),
    ("web.shop.svc.cluster.local.", "CNAME", NOERROR, []),
    # Namespaces, the apex and names the schema can't have.
    ("shop.svc.cluster.local.", "A", NOERROR, []),
    ("nons.svc.cluster.local.", "A", NXDOMAIN, []),
    ("svc.cluster.local.", "A", NOERROR, []),
    ("pod.cluster.local.", "A", NOERROR, []),
    ("cluster.local.", "A", NOERROR, []),
    ("foo.cluster.local.", "A", NXDOMAIN, []),
    ("a.b.c.web.shop.svc.cluster.local.", "A", NXDOMAIN, []),  # too many labels
    ("dns-version.cluster.local.", "TXT", NOERROR, ['"1.1.0"']),
    ("dns-version.cluster.local.", "A", NOERROR, []),
    # Pods, insecure mode.
    ("10-244-1-10.shop.pod.cluster.local.", "A", NOERROR, ["10.244.1.10"]),
    ("1-2-3-4.shop.pod.cluster.local.", "A", NOERROR, ["1.2.3.4"]),
    ("fd00--1.shop.pod.cluster.local.", "AAAA", NOERROR, ["fd00::1"]),
    ("1-2-3-4.shop.pod.cluster.local.", "AAAA", NOERROR, []),
    ("not-an-ip.shop.pod.cluster.local.", "A", NXDOMAIN, []),
    ("1-2-3-4.nons.pod.cluster.local.", "A", NXDOMAIN, []),
    ("shop.pod.cluster.local.", "A", NOERROR, []),
    # Reverse.
    ("1.0.96.10.in-addr.arpa.", "PTR", NOERROR, ["kubernetes.default.svc.cluster.local."]),
    ("10.0.96.10.in-addr.arpa.", "PTR", NOERROR, ["kube-dns.kube-system.svc.cluster.local."]),
    ("30.1.244.10.in-addr.arpa.", "PTR", NOERROR, ["db-0.db.data.svc.cluster.local."]),
    ("10.1.244.10.in-addr.arpa.", "PTR", NOERROR, ["10-244-1-10.web.shop.svc.cluster.local."]),
    ("12.3.244.10.in-addr.arpa.", "PTR", NXDOMAIN, []),  # not-ready endpoint
    ("9.9.9.10.in-addr.arpa.", "PTR", NXDOMAIN, []),
    ("10.in-addr.arpa.", "PTR", NXDOMAIN, []),
    ("1.0.96.10.in-addr.arpa.", "A", NOERROR, []),
    ("0.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.", "PTR",
     NOERROR, ["dual.shop.svc.cluster.local."]),
    ("0.4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa.", "PTR",
     NOERROR, ["fd00-10-244-2--40.dual.shop.svc.cluster.local."]),
]


@pytest.mark.parametrize(("name", "qtype", "rcode", "expected"), ROWS,
                         ids=[f"{r[0]}{r[1]}" for r in ROWS])
def test_schema_row(demo: ClusterStore, name: str, qtype: str, rcode: int,
                    expected: list[str]) -> None:
    ans = ask(demo, name, qtype)
    assert ans.rcode == rcode
    assert rdata(ans.answer) == sorted(expected)
    if not expected:
        # Negative answers carry the zone's SOA in the authority section.
        assert [QTYPE.get(rr.rtype) for rr in ans.authority] == ["SOA"]


def test_answers_are_authoritative_echo_case_and_use_ttl(demo: ClusterStore) -> None:
    ans = ask(demo, "Kubernetes.Default.SVC.Cluster.Local.", ttl=30)
    assert [(str(rr.rname), rr.ttl) for rr in ans.answer] == [
        ("Kubernetes.Default.SVC.Cluster.Local.", 30)]


def test_synthesised_names_carry_the_zone_as_asked(demo: ClusterStore) -> None:
    # CoreDNS takes the zone from the question (`qname[len(qname)-len(zone):]`).
    (soa,) = ask(demo, "Cluster.local.", "SOA").answer
    assert str(soa.rname) == "Cluster.local."
    assert str(soa.rdata).split()[:2] == ["ns.dns.Cluster.local.", "hostmaster.Cluster.local."]
    nx = ask(demo, "nope.shop.svc.CLUSTER.Local.")
    assert [(str(rr.rname), str(rr.rdata).split()[0]) for rr in nx.authority] == [
        ("CLUSTER.Local.", "ns.dns.CLUSTER.Local.")]
    srv = ask(demo, "_https._tcp.Web.shop.svc.Cluster.Local.", "SRV")
    assert rdata(srv.answer) == ["0 100 443 web.shop.svc.Cluster.Local."]
    assert rrs(srv.additional) == [("web.shop.svc.Cluster.Local.", "A", "10.96.10.10")]
    headless = ask(demo, "db.data.svc.cluster.LOCAL.", "SRV")
    assert rdata(headless.answer) == ["0 50 5432 db-0.db.data.svc.cluster.LOCAL.",
                                      "0 50 5432 db-1.db.data.svc.cluster.LOCAL."]
    ns = ask(demo, "Cluster.Local.", "NS", local_ips=("192.0.2.7",))
    assert [str(rr.rname) for rr in ns.answer] == ["Cluster.Local."]
    assert all(str(rr.rdata).endswith(".Cluster.Local.") for rr in ns.answer)
    assert all(str(rr.rname).endswith(".Cluster.Local.") for rr in ns.additional)
    reverse = ask(demo, "1.0.96.10.In-Addr.Arpa.", "A")
    assert [str(rr.rname) for rr in reverse.authority] == ["In-Addr.Arpa."]
    # PTR targets are names in the primary zone as configured, not the reverse zone's case.
    ptr = ask(demo, "1.0.96.10.IN-ADDR.ARPA.", "PTR")
    assert rdata(ptr.answer) == ["kubernetes.default.svc.cluster.local."]


def test_srv_named_port_clusterip(demo: ClusterStore) -> None:
    ans = ask(demo, "_https._tcp.web.shop.svc.cluster.local.", "SRV")
    assert rdata(ans.answer) == ["0 100 443 web.shop.svc.cluster.local."]
    assert rrs(ans.additional) == [("web.shop.svc.cluster.local.", "A", "10.96.10.10")]
    udp = ask(demo, "_syslog._udp.web.shop.svc.cluster.local.", "SRV")
    assert rdata(udp.answer) == ["0 100 514 web.shop.svc.cluster.local."]
    wrong_proto = ask(demo, "_syslog._tcp.web.shop.svc.cluster.local.", "SRV")
    assert wrong_proto.rcode == NXDOMAIN


def test_srv_bare_name_lists_all_ports_with_split_weight(demo: ClusterStore) -> None:
    ans = ask(demo, "web.shop.svc.cluster.local.", "SRV")
    assert rdata(ans.answer) == [f"0 33 {p} web.shop.svc.cluster.local." for p in (443, 514, 80)]
    assert rdata(ans.additional) == ["10.96.10.10"]


def test_srv_headless_targets_each_endpoint_with_glue(demo: ClusterStore) -> None:
    ans = ask(demo, "_postgres._tcp.db.data.svc.cluster.local.", "SRV")
    assert rdata(ans.answer) == ["0 50 5432 db-0.db.data.svc.cluster.local.",
                                 "0 50 5432 db-1.db.data.svc.cluster.local."]
    assert rrs(ans.additional) == [("db-0.db.data.svc.cluster.local.", "A", "10.244.1.30"),
                                   ("db-1.db.data.svc.cluster.local.", "A", "10.244.2.31")]


def test_srv_dual_stack_counts_both_addresses_in_the_weight(demo: ClusterStore) -> None:
    ans = ask(demo, "_http._tcp.dual.shop.svc.cluster.local.", "SRV")
    # One SRV (duplicates dropped) but weight split over both cluster IPs, as CoreDNS.
    assert rdata(ans.answer) == ["0 50 80 dual.shop.svc.cluster.local."]
    assert rdata(ans.additional) == ["10.96.10.40", "fd00:10:96::40"]


def test_srv_for_external_name_is_nodata(demo: ClusterStore) -> None:
    ans = ask(demo, "payments.shop.svc.cluster.local.", "SRV")
    assert ans.rcode == NOERROR and ans.answer == []


@pytest.mark.parametrize("name", [
    "_http._tcp.payments.shop.svc.cluster.local.", "_http._tcp.www.shop.svc.cluster.local.",
    "a.b.payments.shop.svc.cluster.local.", "x.payments.shop.svc.cluster.local.",
])
@pytest.mark.parametrize("qtype", ["A", "AAAA", "SRV", "CNAME", "TXT"])
def test_external_name_exists_only_at_the_service_name(demo: ClusterStore, name: str,
                                                       qtype: str) -> None:
    # CoreDNS skips an ExternalName when the query has an endpoint, port or protocol label.
    ans = ask(demo, name, qtype)
    assert (ans.rcode, ans.answer, ans.chase) == (NXDOMAIN, [], None)
    assert ans.name_error and ("svc", "shop", name.split(".")[-6]) in ans.tags


def test_external_name_outside_zone_is_chased_by_the_chain(demo: ClusterStore) -> None:
    ans = ask(demo, "payments.shop.svc.cluster.local.", "A")
    assert ans.chase == "payments.example.com."
    inside = ask(demo, "www.shop.svc.cluster.local.", "A")
    assert inside.chase is None
    # The CNAME comes first, then the target's records.
    assert [QTYPE.get(rr.rtype) for rr in inside.answer] == ["CNAME", "A"]


def test_soa_at_apex(demo: ClusterStore) -> None:
    soa = ask(demo, "cluster.local.", "SOA", ttl=30)
    (rr,) = soa.answer
    assert str(rr.rdata).split()[:2] == ["ns.dns.cluster.local.", "hostmaster.cluster.local."]
    assert str(rr.rdata).split()[2:] == [str(demo.serial), "7200", "1800", "86400", "30"]
    assert rr.ttl == 30
    big = ask(demo, "cluster.local.", "SOA", ttl=3600)
    assert big.answer[0].ttl == 300  # SOA TTL is min(ttl, 300)


# 10.244.0.2 is an endpoint of kube-system/kube-dns (10.96.0.10) in the demo cluster.
OURS = {"local_ips": ("10.244.0.2",)}


def test_ns_is_our_own_service_with_its_cluster_ip_as_glue(demo: ClusterStore) -> None:
    ns = ask(demo, "cluster.local.", "NS", **OURS)
    assert rrs(ns.answer) == [("cluster.local.", "NS", "kube-dns.kube-system.svc.cluster.local.")]
    assert rrs(ns.additional) == [("kube-dns.kube-system.svc.cluster.local.", "A", "10.96.0.10")]
    assert ns.tags == {("ip", "10.244.0.2"), ("svc", "kube-system", "kube-dns")}
    assert rdata(ask(demo, "ns.dns.cluster.local.", "A", **OURS).answer) == ["10.96.0.10"]
    nodata = ask(demo, "ns.dns.cluster.local.", "AAAA", **OURS)
    assert (nodata.rcode, nodata.answer) == (NOERROR, [])
    # The zone part as asked; the reverse zones name the same server, in the primary zone.
    upper = ask(demo, "Cluster.LOCAL.", "NS", **OURS)
    assert rdata(upper.answer) == ["kube-dns.kube-system.svc.Cluster.LOCAL."]
    reverse = ask(demo, "in-addr.arpa.", "NS", **OURS)
    assert rrs(reverse.answer) == [("in-addr.arpa.", "NS",
                                    "kube-dns.kube-system.svc.cluster.local.")]
    assert rdata(reverse.additional) == ["10.96.0.10"]


def test_ns_of_a_dual_stack_server_has_both_glue_addresses() -> None:
    objs = load_objects(DEMO)
    dns_svc = next(o for o in objs if o.get("kind") == "Service"
                   and o["metadata"]["name"] == "kube-dns")
    dns_svc["spec"]["clusterIPs"] = ["10.96.0.10", "fd00:10:96::a"]
    ns = ask(make_store(objs), "cluster.local.", "NS", **OURS)
    assert rdata(ns.answer) == ["kube-dns.kube-system.svc.cluster.local."]
    assert rrs(ns.additional) == [("kube-dns.kube-system.svc.cluster.local.", "A", "10.96.0.10"),
                                  ("kube-dns.kube-system.svc.cluster.local.", "AAAA",
                                   "fd00:10:96::a")]


def test_ns_of_a_headless_own_service_names_its_endpoints() -> None:
    objs = load_objects(DEMO)
    dns_svc = next(o for o in objs if o.get("kind") == "Service"
                   and o["metadata"]["name"] == "kube-dns")
    dns_svc["spec"]["clusterIP"], dns_svc["spec"]["clusterIPs"] = "None", ["None"]
    ns = ask(make_store(objs), "cluster.local.", "NS", **OURS)
    names = ["10-244-0-2.kube-dns.kube-system.svc.cluster.local.",
             "10-244-1-2.kube-dns.kube-system.svc.cluster.local."]
    assert rdata(ns.answer) == names
    assert rrs(ns.additional) == [(names[0], "A", "10.244.0.2"), (names[1], "A", "10.244.1.2")]
    # An endpoint of ours whose service is gone: no NS records, as CoreDNS (not ns.dns.ZONE).
    gone = make_store([o for o in objs if o is not dns_svc])
    assert ask(gone, "cluster.local.", "NS", **OURS).answer == []


def test_ns_without_our_own_service(demo: ClusterStore) -> None:
    # Not an endpoint of any service: ns.dns.ZONE with our own addresses, as CoreDNS.
    alone = {"local_ips": ("192.0.2.7",)}
    ns = ask(demo, "cluster.local.", "NS", **alone)
    assert rrs(ns.answer) == [("cluster.local.", "NS", "ns.dns.cluster.local.")]
    assert rrs(ns.additional) == [("ns.dns.cluster.local.", "A", "192.0.2.7")]
    assert rdata(ask(demo, "ns.dns.cluster.local.", "A", **alone).answer) == ["192.0.2.7"]
    # No address of our own (loopback only): no NS records and no glue, NODATA.
    for name, qtype in (("cluster.local.", "NS"), ("ns.dns.cluster.local.", "A")):
        empty = ask(demo, name, qtype, local_ips=())
        assert (empty.rcode, empty.answer, empty.additional) == (NOERROR, [], [])
        assert [QTYPE.get(rr.rtype) for rr in empty.authority] == ["SOA"]


SELF_REFERENCE = {"kind": "Service", "metadata": {"name": "self", "namespace": "shop"},
                  "spec": {"type": "ExternalName", "externalName": "ns.dns.cluster.local"}}


def test_external_name_to_a_synthesised_name_is_tagged_with_the_service() -> None:
    store = make_store([*load_objects(DEMO), SELF_REFERENCE])
    ans = ask(store, "self.shop.svc.cluster.local.", local_ips=("10.244.0.2",))
    assert [(str(rr.rname), QTYPE.get(rr.rtype), str(rr.rdata)) for rr in ans.answer] == [
        ("self.shop.svc.cluster.local.", "CNAME", "ns.dns.cluster.local."),
        ("ns.dns.cluster.local.", "A", "10.96.0.10")]
    # Kept, and dropped when the ExternalName or what the target's answer reads changes.
    assert ans.tags is not None and ("svc", "shop", "self") in ans.tags
    assert {("ip", "10.244.0.2"), ("svc", "kube-system", "kube-dns")} <= ans.tags
    ns = ask(store, "ns.dns.cluster.local.", local_ips=("10.244.0.2",))
    assert ns.tags == {("ip", "10.244.0.2"), ("svc", "kube-system", "kube-dns")}


def test_pods_disabled_and_verified(demo: ClusterStore) -> None:
    assert ask(demo, "10-244-1-10.shop.pod.cluster.local.", pods="disabled").rcode == NXDOMAIN
    verified = ask(demo, "10-244-1-10.shop.pod.cluster.local.", pods="verified")
    assert rdata(verified.answer) == ["10.244.1.10"]
    # Verified: the pod must exist in that namespace, and be running.
    assert ask(demo, "10-244-1-10.data.pod.cluster.local.", pods="verified").rcode == NXDOMAIN
    assert ask(demo, "1-2-3-4.shop.pod.cluster.local.", pods="verified").rcode == NXDOMAIN
    assert ask(demo, "10-244-1-99.shop.pod.cluster.local.", pods="verified").rcode == NXDOMAIN


def test_endpoint_pod_names(demo: ClusterStore) -> None:
    ans = ask(demo, "web-6f7d8c-aaaaa.web.shop.svc.cluster.local.", endpoint_pod_names=True)
    assert rdata(ans.answer) == ["10.244.1.10"]
    # A hostname still wins over the pod name.
    assert ask(demo, "db-0.db.data.svc.cluster.local.", endpoint_pod_names=True).rcode == NOERROR
    srv = ask(demo, "_http._tcp.api.shop.svc.cluster.local.", "SRV", endpoint_pod_names=True)
    assert rdata(srv.answer) == ["0 100 8080 api.shop.svc.cluster.local."]


# The demo's data/events has a pod whose name is longer than a DNS label, and events-0.
LONG_POD = "events-aggregator-for-the-shop-and-data-namespaces-7d9f8c6b5-qwert"


def test_endpoint_pod_names_longer_than_a_label_fall_back_to_the_dashed_ip(
        demo: ClusterStore) -> None:
    assert len(LONG_POD) > 63 and LONG_POD in {p[1] for p in demo.pods}
    store = demo
    srv = ask(store, "_http._tcp.events.data.svc.cluster.local.", "SRV", endpoint_pod_names=True)
    assert rdata(srv.answer) == ["0 50 8080 10-244-2-50.events.data.svc.cluster.local.",
                                 "0 50 8080 events-0.events.data.svc.cluster.local."]
    ptr = ask(store, "50.2.244.10.in-addr.arpa.", "PTR", endpoint_pod_names=True)
    assert rdata(ptr.answer) == ["10-244-2-50.events.data.svc.cluster.local."]
    by_ip = ask(store, "10-244-2-50.events.data.svc.cluster.local.", endpoint_pod_names=True)
    assert rdata(by_ip.answer) == ["10.244.2.50"]
    for ans in (srv, ptr, by_ip):  # every name in it encodes (a long label would not)
        message = DNSRecord()
        message.rr, message.ar = ans.answer, ans.additional
        message.pack()
    assert endpoint_hostname(EndpointAddress("10.0.0.1", "", "p" * 63, ""), True) == "p" * 63
    assert endpoint_hostname(EndpointAddress("10.0.0.1", "", "p" * 64, ""), True) == "10-0-0-1"


def test_namespaces_option_hides_other_namespaces(demo: ClusterStore) -> None:
    only = {"namespaces": frozenset({"shop"})}
    assert ask(demo, "web.shop.svc.cluster.local.", **only).rcode == NOERROR
    assert ask(demo, "kubernetes.default.svc.cluster.local.", **only).rcode == NXDOMAIN
    assert ask(demo, "default.svc.cluster.local.", **only).rcode == NXDOMAIN
    assert ask(demo, "1.0.96.10.in-addr.arpa.", "PTR", **only).rcode == NXDOMAIN


def test_noendpoints(demo: ClusterStore) -> None:
    assert ask(demo, "web.shop.svc.cluster.local.", noendpoints=True).rcode == NOERROR
    assert ask(demo, "db.data.svc.cluster.local.", noendpoints=True).rcode == NXDOMAIN
    assert ask(demo, "10-244-1-10.web.shop.svc.cluster.local.",
               noendpoints=True).rcode == NXDOMAIN


def test_ignore_empty_service(demo: ClusterStore) -> None:
    # shop/frontend has no endpoints at all.
    assert ask(demo, "frontend.shop.svc.cluster.local.").rcode == NOERROR
    empty = ask(demo, "frontend.shop.svc.cluster.local.", ignore_empty_service=True)
    assert empty.rcode == NXDOMAIN
    assert ask(demo, "web.shop.svc.cluster.local.", ignore_empty_service=True).rcode == NOERROR


def test_headless_without_ready_endpoints_is_nxdomain() -> None:
    objs = load_objects(DEMO)
    for obj in objs:
        if obj.get("kind") == "EndpointSlice" and obj["metadata"]["name"] == "db-4hxkz":
            for ep in obj["endpoints"]:
                ep["conditions"] = {"ready": False}
    store = make_store(objs)
    assert ask(store, "db.data.svc.cluster.local.").rcode == NXDOMAIN


def test_external_name_that_is_an_ip_is_nxdomain() -> None:
    objs = load_objects(DEMO) + [{
        "kind": "Service", "metadata": {"name": "ipext", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "192.0.2.1"}}]
    store = make_store(objs)
    assert ask(store, "ipext.shop.svc.cluster.local.").rcode == NXDOMAIN


def test_until_synced_nxdomain_is_servfail() -> None:
    store = ClusterStore()
    store.required_kinds = {"Service", "EndpointSlice", "Namespace"}
    assert ask(store, "nope.default.svc.cluster.local.").rcode == SERVFAIL
    for kind in store.required_kinds:
        store.mark_synced(kind)
    assert ask(store, "nope.default.svc.cluster.local.").rcode == NXDOMAIN


def test_headless_many_endpoints() -> None:
    endpoints = [{"addresses": [f"10.1.{i // 250}.{i % 250 + 1}"]} for i in range(200)]
    objs = [
        {"kind": "Namespace", "metadata": {"name": "big"}},
        {"kind": "Service", "metadata": {"name": "many", "namespace": "big"},
         "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
        {"kind": "EndpointSlice", "metadata": {
            "name": "many-1", "namespace": "big",
            "labels": {"kubernetes.io/service-name": "many"}},
         "addressType": "IPv4", "endpoints": endpoints, "ports": [{"name": "http", "port": 80}]},
    ]
    ans = ask(make_store(objs), "many.big.svc.cluster.local.")
    assert len(ans.answer) == 200
    srv = ask(make_store(objs), "many.big.svc.cluster.local.", "SRV")
    assert len(srv.answer) == 200 and {str(rr.rdata).split()[1] for rr in srv.answer} == {"1"}


# -- cache tags --------------------------------------------------------------------------------

def test_tags_name_what_an_answer_depends_on(demo: ClusterStore) -> None:
    assert ask(demo, "web.shop.svc.cluster.local.").tags == {("ns", "shop"),
                                                             ("svc", "shop", "web")}
    assert ask(demo, "nope.shop.svc.cluster.local.").tags == {("ns", "shop"),
                                                              ("svc", "shop", "nope")}
    assert ask(demo, "1.0.96.10.in-addr.arpa.", "PTR").tags == {("ip", "10.96.0.1")}
    chased = ask(demo, "www.shop.svc.cluster.local.")
    assert ("svc", "shop", "web") in chased.tags and ("svc", "shop", "www") in chased.tags


def test_store_changes_notify_exactly_the_affected_tags() -> None:
    store = make_store()
    seen: list[set] = []
    store.add_listener(seen.append)
    objs = load_objects(DEMO)
    web = copy.deepcopy(next(o for o in objs if o.get("kind") == "Service"
                             and o["metadata"]["name"] == "web"))
    store.apply("Service", "MODIFIED", web)  # unchanged: no notification at all
    assert seen == []
    web["spec"]["clusterIPs"] = web["spec"]["clusterIP"] = "10.96.10.11"
    web["spec"]["clusterIPs"] = ["10.96.10.11"]
    store.apply("Service", "MODIFIED", web)
    assert seen == [{("svc", "shop", "web"), ("ip", "10.96.10.10"), ("ip", "10.96.10.11")}]
    assert rdata(ask(store, "web.shop.svc.cluster.local.").answer) == ["10.96.10.11"]


def test_replace_swaps_in_one_step_and_keeps_unchanged_objects_quiet() -> None:
    store = make_store()
    seen: list[set] = []
    store.add_listener(seen.append)
    services = [o for o in load_objects(DEMO) if o.get("kind") == "Service"]
    store.replace("Service", [s for s in services if s["metadata"]["name"] != "api"])
    assert seen == [{("svc", "shop", "api"), ("ip", "10.96.10.20")}]
    assert ask(store, "api.shop.svc.cluster.local.").rcode == NXDOMAIN
    assert ask(store, "web.shop.svc.cluster.local.").rcode == NOERROR


def test_invalid_objects_are_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    objs = load_objects(DEMO) + [
        {"kind": "Service", "metadata": {"name": "badip", "namespace": "shop"},
         "spec": {"clusterIP": "10.96.999.1", "ports": [{"port": 80}]}},
        {"kind": "Service", "metadata": {"namespace": "shop"}, "spec": {}},
        {"kind": "EndpointSlice", "metadata": {"name": "orphan", "namespace": "shop"},
         "addressType": "IPv4", "endpoints": []},
    ]
    store = make_store(objs)
    assert store.skipped["Service"] == 2 and store.skipped["EndpointSlice"] == 1
    assert "shop/badip" in caplog.text and "10.96.999.1" in caplog.text
    assert "kubernetes.io/service-name" in caplog.text
    assert ask(store, "web.shop.svc.cluster.local.").rcode == NOERROR


# -- helpers -------------------------------------------------------------------------------------

def test_parse_request_shapes() -> None:
    assert parse_request("svc") is not None and parse_request("svc").namespace == ""
    r = parse_request("_http._tcp.web.shop.svc")
    assert (r.port, r.protocol, r.service, r.namespace) == ("http", "tcp", "web", "shop")
    assert parse_request("db-0.db.data.svc").endpoint == "db-0"
    assert parse_request("x.y.z.web.shop.svc") is None
    assert parse_request("web.shop.nope") is None


def test_endpoint_hostname_forms() -> None:
    assert endpoint_hostname(EndpointAddress("10.0.0.1", "", "", ""), False) == "10-0-0-1"
    assert endpoint_hostname(EndpointAddress("fd00::1", "", "", ""), False) == "fd00--1"
    assert endpoint_hostname(EndpointAddress("10.0.0.1", "h", "p", ""), True) == "h"
    assert endpoint_hostname(EndpointAddress("10.0.0.1", "", "p", ""), True) == "p"


def test_reverse_names() -> None:
    assert reverse_to_ip("4.3.2.1.in-addr.arpa.") == "1.2.3.4"
    assert reverse_to_ip("3.2.1.in-addr.arpa.") is None
    assert reverse_to_ip("x.3.2.1.in-addr.arpa.") is None
    name = ".".join(reversed("fd000000000000000000000000000001")) + ".ip6.arpa."
    assert reverse_to_ip(name) == "fd00::1"


def test_an_ip_in_two_services_answers_both_and_survives_one_deletion() -> None:
    def eps(service: str) -> dict[str, Any]:
        return {"kind": "EndpointSlice",
                "metadata": {"name": f"{service}-x", "namespace": "shop",
                             "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.9.9"]}],
                "ports": [{"name": "http", "port": 80}]}

    store = make_store([*load_objects(DEMO), eps("web"), eps("api")])
    ptr = "9.9.244.10.in-addr.arpa."
    assert rdata(ask(store, ptr, "PTR").answer) == [
        "10-244-9-9.api.shop.svc.cluster.local.", "10-244-9-9.web.shop.svc.cluster.local."]
    store.apply("EndpointSlice", "DELETED", eps("api"))
    assert rdata(ask(store, ptr, "PTR").answer) == ["10-244-9-9.web.shop.svc.cluster.local."]
    store.apply("EndpointSlice", "DELETED", eps("web"))
    assert ask(store, ptr, "PTR").rcode == NXDOMAIN
    assert "10.244.9.9" not in store.slices_by_ip


def test_programming_delay_from_the_trigger_time_annotation() -> None:
    from dnsserver.k8s_source import programming_delay

    obj = {"metadata": {"annotations": {
        "endpoints.kubernetes.io/last-change-trigger-time": "2026-11-22T10:00:00Z"}}}
    import datetime

    now = datetime.datetime(2026, 11, 22, 10, 0, 2, 500000,
                            tzinfo=datetime.UTC).timestamp()
    assert abs(programming_delay(obj, now) - 2.5) < 1e-6
    assert programming_delay({"metadata": {}}, now) is None
    assert programming_delay({"metadata": {"annotations": {
        "endpoints.kubernetes.io/last-change-trigger-time": "soon"}}}, now) is None


def test_an_unindexed_store_keeps_the_tables_a_worker_can_be_rebuilt_from() -> None:
    supervisor = ClusterStore(indexed=False)
    supervisor.load(load_objects(DEMO))
    assert supervisor.slices and not supervisor.slices_by_ip and not supervisor.slices_by_service
    worker = ClusterStore()
    replayed: list[tuple] = []
    supervisor.record_listeners.append(lambda *m: replayed.append(m))
    for kind, table in (("Namespace", supervisor.namespaces), ("Service", supervisor.services),
                        ("EndpointSlice", supervisor.slices), ("Pod", supervisor.pods)):
        worker.replace_records(kind, list(table.values()))
        worker.mark_synced(kind)
    assert rdata(ask(worker, "db.data.svc.cluster.local.").answer) == ["10.244.1.30",
                                                                       "10.244.2.31"]
    assert rdata(ask(worker, "10.0.96.10.in-addr.arpa.", "PTR").answer) == [
        "kube-dns.kube-system.svc.cluster.local."]
    # A deletion on the supervisor reaches the worker as a key it can apply.
    supervisor.apply("Service", "DELETED", {"metadata": {"name": "web", "namespace": "shop"}})
    ((op, kind, event, key),) = replayed
    assert op == "apply"
    worker.apply_record(kind, event, key)
    assert ask(worker, "web.shop.svc.cluster.local.").rcode == NXDOMAIN
