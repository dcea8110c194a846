"""The addresses `health`, `ready` and `prometheus` listen on when the Corefile names none."""

from __future__ import annotations

from dnsserver import corefile
from dnsserver.assembly import assemble
from dnsserver.opshttp import parse_address
from dnsserver.store import ClusterStore


def assembled(text: str):  # type: ignore[no-untyped-def]
    parsed = corefile.parse(text, "Corefile", default_port=53, known=corefile.PLUGIN_ORDER)
    return assemble(parsed, ClusterStore())


def test_bare_prometheus_listens_on_localhost_9153_as_coredns() -> None:
    bare = assembled(".:53 {\n    prometheus\n}\n")
    assert bare.prometheus == "localhost:9153"
    assert parse_address(bare.prometheus) == ("127.0.0.1", 9153)  # loopback, not every address
    # kubeadm's `prometheus :9153` still means every address.
    assert parse_address(assembled(".:53 {\n    prometheus :9153\n}\n").prometheus) == (None, 9153)
    # health and ready keep CoreDNS's every-address defaults.
    both = assembled(".:53 {\n    health\n    ready\n}\n")
    assert (both.health, both.ready) == (":8080", ":8181")
