"""The real server on loopback, asked by `dig` and dnspython over UDP and TCP."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import pytest

from dnsserver.snapshot import load_objects

from helpers import DEMO, ServerProcess, answers, query, tcp_message, udp_exchange

BIG = 200


def big_snapshot(path: Path) -> Path:
    """The demo cluster plus big/many: a headless service with BIG ready endpoints."""
    endpoints = [{"addresses": [f"10.1.{i // 250}.{i % 250 + 1}"]} for i in range(BIG)]
    objs = [*load_objects(DEMO),
            {"kind": "Namespace", "metadata": {"name": "big"}},
            {"kind": "Service", "metadata": {"name": "many", "namespace": "big"},
             "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
            {"kind": "EndpointSlice",
             "metadata": {"name": "many-1", "namespace": "big",
                          "labels": {"kubernetes.io/service-name": "many"}},
             "addressType": "IPv4", "endpoints": endpoints,
             "ports": [{"name": "http", "port": 80}]}]
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    snap = big_snapshot(tmp_path_factory.mktemp("snap") / "cluster.json")
    corefile = """
.:{PORT} {
    bind 127.0.0.1
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        ttl 30
    }
}
"""
    with ServerProcess(corefile, snapshot=snap) as s:
        yield s


def dig(server: ServerProcess, *args: str) -> str:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(server.port), "+time=2", "+tries=1",
                          *args], capture_output=True, text=True, timeout=20, check=True)
    return out.stdout


def test_dig_udp_and_tcp(server: ServerProcess) -> None:
    for transport in ("+notcp", "+tcp"):
        out = dig(server, transport, "kubernetes.default.svc.cluster.local")
        assert "status: NOERROR" in out
        assert "flags: qr aa rd;" in out  # no RA, as CoreDNS: dig warns
        assert "recursion requested but not available" in out
        assert "kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1" in " ".join(out.split())


def test_dig_short_forms(server: ServerProcess) -> None:
    assert dig(server, "+short", "db.data.svc.cluster.local").split() == [
        "10.244.1.30", "10.244.2.31"]
    assert dig(server, "+short", "-x", "10.96.0.10").split() == [
        "kube-dns.kube-system.svc.cluster.local."]
    assert dig(server, "+short", "SRV", "_https._tcp.web.shop.svc.cluster.local").split() == [
        "0", "100", "443", "web.shop.svc.cluster.local."]
    assert dig(server, "+short", "TXT", "dns-version.cluster.local").split() == ['"1.1.0"']


def test_nxdomain_and_nodata_carry_the_soa(server: ServerProcess) -> None:
    nx = query("nope.shop.svc.cluster.local", port=server.port)
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.AA
    assert [rrset.rdtype for rrset in nx.authority] == [dns.rdatatype.SOA]
    soa = nx.authority[0][0]
    assert (str(soa.mname), str(soa.rname)) == ("ns.dns.cluster.local.",
                                                "hostmaster.cluster.local.")
    assert (soa.refresh, soa.retry, soa.expire, soa.minimum) == (7200, 1800, 86400, 30)
    nodata = query("v6only.shop.svc.cluster.local", "A", port=server.port)
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority


def test_case_is_echoed(server: ServerProcess) -> None:
    msg = query("KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.lOcAl", port=server.port)
    assert msg.answer[0].name.to_text() == "KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.lOcAl."
    assert msg.question[0].name.to_text() == "KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.lOcAl."
    # The same query again comes from the fast path, with the case still echoed.
    again = query("KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.lOcAl", port=server.port)
    assert again.answer[0].name.to_text() == "KuBeRnEtEs.DeFaUlT.sVc.ClUsTeR.lOcAl."


def test_edns_opt_is_echoed_only_when_asked(server: ServerProcess) -> None:
    plain = query("web.shop.svc.cluster.local", port=server.port)
    assert plain.edns == -1
    edns = query("web.shop.svc.cluster.local", port=server.port, use_edns=0, payload=1232)
    assert edns.edns == 0 and edns.payload == 1232
    huge = query("web.shop.svc.cluster.local", port=server.port, use_edns=0, payload=65000)
    assert huge.payload == 4096


def test_big_answer_truncates_over_udp_and_is_whole_over_tcp(server: ServerProcess) -> None:
    name = "many.big.svc.cluster.local"
    udp = query(name, port=server.port)
    assert udp.flags & dns.flags.TC
    wire = udp.to_wire()
    assert len(wire) <= 512
    # 200 compressed A records take about 3.3 kB: they fit the 4096 a client may ask for.
    edns = query(name, port=server.port, use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(answers(edns)) == BIG
    small = query(name, port=server.port, use_edns=0, payload=1232)
    assert small.flags & dns.flags.TC and len(small.to_wire()) <= 1232
    tcp = query(name, port=server.port, tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert len(answers(tcp)) == BIG
    # dig retries over TCP by itself on TC and gets them all.
    assert len(dig(server, "+short", name).split()) == BIG


def test_refused_outside_every_zone(server: ServerProcess) -> None:
    msg = query("example.com", port=server.port)
    assert msg.rcode() == dns.rcode.REFUSED


def test_notimp_for_other_opcodes(server: ServerProcess) -> None:
    q = dns.message.make_query("web.shop.svc.cluster.local", "A")
    q.set_opcode(dns.opcode.STATUS)
    reply = dns.query.udp(q, "127.0.0.1", port=server.port, timeout=2)
    assert reply.rcode() == dns.rcode.NOTIMP


def raw_udp(server: ServerProcess, payload: bytes, timeout: float = 1.0) -> bytes | None:
    return udp_exchange(server.port, payload, timeout)


def good(server: ServerProcess) -> None:
    assert answers(query("web.shop.svc.cluster.local", port=server.port)) == ["10.96.10.10"]


def header(ident: int = 0x1234, flags: int = 0x0100, qd: int = 1) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, 0, 0, 0)


def test_formerr_for_an_undecodable_query(server: ServerProcess) -> None:
    reply = raw_udp(server, header() + b"\x05abc")  # a label that runs off the end
    assert reply is not None
    ident, flags = struct.unpack("!HH", reply[:4])
    assert ident == 0x1234 and flags & 0x8000 and flags & 0xF == 1
    good(server)


@pytest.mark.parametrize("payload", [
    b"",
    b"\x01",
    header(qd=0),
    header(qd=2) + b"\x00\x00\x01\x00\x01" * 2,
    b"\xff" * 12,
    header() + b"\xc0\x0c\x00\x01\x00\x01",  # a compression pointer to itself
    header() + b"\x3f" + b"a" * 63 + b"\xc0\x0c",
], ids=["empty", "one-byte", "qdcount0", "qdcount2", "all-ones", "pointer-loop", "pointer-back"])
def test_malformed_datagrams_never_stop_the_server(server: ServerProcess, payload: bytes) -> None:
    reply = raw_udp(server, payload, timeout=0.3)
    if reply is not None:
        assert reply[2] & 0x80  # whatever comes back is a response...
        assert reply[3] & 0xF in (1, 4, 5)  # ...with FORMERR, NOTIMP or REFUSED
    good(server)


def test_a_response_sent_to_the_server_is_dropped(server: ServerProcess) -> None:
    msg = dns.message.make_query("web.shop.svc.cluster.local", "A")
    msg.flags |= dns.flags.QR
    assert raw_udp(server, msg.to_wire(), timeout=0.5) is None
    good(server)


def test_oversized_datagram(server: ServerProcess) -> None:
    msg = dns.message.make_query("web.shop.svc.cluster.local", "A").to_wire()
    raw_udp(server, msg + b"\x00" * 60000, timeout=0.5)
    good(server)


def tcp_connect(server: ServerProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=3)
    return s




def test_several_queries_on_one_tcp_connection(server: ServerProcess) -> None:
    names = ["web.shop.svc.cluster.local", "api.shop.svc.cluster.local",
             "kubernetes.default.svc.cluster.local"]
    with tcp_connect(server) as s:
        for i, name in enumerate(names):
            wire = dns.message.make_query(name, "A", id=i).to_wire()
            s.sendall(struct.pack("!H", len(wire)) + wire)
        got = {}
        for _ in names:
            msg = dns.message.from_wire(tcp_message(s))
            got[msg.id] = answers(msg)
    assert got == {0: ["10.96.10.10"], 1: ["10.96.10.20"], 2: ["10.96.0.1"]}


def test_thousands_of_pipelined_tcp_queries(server: ServerProcess) -> None:
    count = 3000
    blob = bytearray()
    for i in range(count):
        name = ("web", "api", "nope")[i % 3] + ".shop.svc.cluster.local"
        wire = dns.message.make_query(name, "A", id=i).to_wire()
        blob += struct.pack("!H", len(wire)) + wire
    with tcp_connect(server) as s:
        s.settimeout(10)
        s.sendall(blob)
        ids = {dns.message.from_wire(tcp_message(s)).id for _ in range(count)}
    assert ids == set(range(count))
    good(server)


def test_tcp_length_prefix_that_lies_and_a_silent_connection(server: ServerProcess) -> None:
    liar = tcp_connect(server)
    liar.sendall(b"\xff\xff" + b"abc")
    silent = tcp_connect(server)
    try:
        good(server)
        msg = query("api.shop.svc.cluster.local", port=server.port, tcp=True)
        assert answers(msg) == ["10.96.10.20"]
    finally:
        liar.close()
        silent.close()
