"""Resource bounds set from the Corefile, each with a metric, and RFC 8482 answers to ANY."""

from __future__ import annotations

import socket
import struct
import urllib.request

import dns.message
import dns.rdatatype
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dnsserver.corefile import CorefileError, parse
from dnsserver.server import EXTENSIONS
from dnsserver.store import ClusterStore

from helpers import ServerProcess, free_port, query, wait_for


def metric(port: int, name: str, limit: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels.get("limit") == limit:
                return s.value
    return None


def test_any_gets_the_rfc8482_answer() -> None:
    with ServerProcess() as server:
        msg = query("web.shop.svc.cluster.local", "ANY", port=server.port)
        (rrset,) = msg.answer
        assert rrset.rdtype == dns.rdatatype.HINFO and rrset.ttl == 8482
        assert rrset[0].cpu == b"ANY obsoleted" and rrset[0].os == b"See RFC 8482"


def test_tcp_limits_from_the_corefile_cut_off_idle_and_excess_connections() -> None:
    metrics = free_port()
    corefile = f"""
.:{{PORT}} {{
    bind 127.0.0.1
    prometheus 127.0.0.1:{metrics}
    timeouts {{
        read 1s
        idle 1s
    }}
    limits {{
        tcp_connections 3
        fast_path_entries 50
    }}
    kubernetes cluster.local
}}
"""
    with ServerProcess(corefile) as server:
        assert metric(metrics, "dnsserver_limit", "tcp_connections") == 3
        assert metric(metrics, "dnsserver_limit", "fast_path_entries") == 50
        # A slow-loris client: half a length prefix, then nothing. It is cut off.
        loris = socket.create_connection(("127.0.0.1", server.port))
        loris.sendall(b"\x00")
        loris.settimeout(5)
        assert loris.recv(10) == b""  # closed by the server within the read timeout
        loris.close()
        # More connections than allowed: the idle ones are closed to make room, never a crash.
        conns = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(6)]
        wire = dns.message.make_query("web.shop.svc.cluster.local", "A").to_wire()
        last = conns[-1]
        last.sendall(struct.pack("!H", len(wire)) + wire)
        last.settimeout(5)
        size = struct.unpack("!H", last.recv(2))[0]
        assert dns.message.from_wire(last.recv(size)).answer
        for c in conns:
            c.close()
        wait_for(lambda: (metric(metrics, "dnsserver_limit_rejections_total",
                                 "tcp_connections") or 0) >= 1, what="rejections counted")
        assert (metric(metrics, "dnsserver_limit_rejections_total", "tcp_read_timeout")
                or 0) >= 1
        # The fast path stays within its bound whatever the queries.
        for i in range(120):
            query(f"n{i}.shop.svc.cluster.local", port=server.port)
        wait_for(lambda: metric(metrics, "dnsserver_limit_in_use", "fast_path_entries")
                 is not None, what="fast path size published")
        assert metric(metrics, "dnsserver_limit_in_use", "fast_path_entries") <= 50


@pytest.mark.parametrize(("stanza", "message"), [
    ("limits {\n tcp_connections 0\n }", "tcp_connections must be in [1, 1000000]: 0"),
    ("limits {\n tcp_connections many\n }", "must be a whole number: many"),
    ("limits {\n sockets 3\n }", "unknown property 'sockets'"),
    ("timeouts {\n read 0s\n }", "read timeout must be between 1s and 24h"),
    ("timeouts {\n }", "timeouts block with no timeouts specified"),
])
def test_bad_limits_name_the_line(stanza: str, message: str) -> None:
    from dnsserver.assembly import assemble

    text = f".:53 {{\n{stanza}\n}}\n"
    with pytest.raises(CorefileError) as err:
        from dnsserver import corefile

        assemble(parse(text, known=(*corefile.PLUGIN_ORDER, *EXTENSIONS)), ClusterStore())
    assert message in str(err.value) and "Corefile:" in str(err.value)
