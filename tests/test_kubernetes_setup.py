"""Several `kubernetes` blocks: one watch serves them all, so what it cannot honour is an error
that names the line."""

from __future__ import annotations

import pytest

from dnsserver import corefile
from dnsserver.assembly import Assembly, assemble
from dnsserver.corefile import CorefileError
from dnsserver.store import ClusterStore


def assembled(text: str) -> Assembly:
    parsed = corefile.parse(text, "Corefile", default_port=53, known=corefile.PLUGIN_ORDER)
    return assemble(parsed, ClusterStore())


def two_blocks(first: str, second: str) -> str:
    return (".:53 {\n    kubernetes cluster.local {\n" + first + "    }\n}\n"
            "example.:53 {\n    kubernetes example. {\n" + second + "    }\n}\n")


def test_blocks_that_agree_on_the_watch_are_served_by_one() -> None:
    same = "        namespaces a b\n        labels app=web\n"
    swapped = "        namespaces b a\n        labels app=web\n        ttl 60\n"
    a = assembled(two_blocks(same, swapped))
    assert len(a.kubernetes) == 2
    assert a.kubernetes[1].config.records.ttl == 60  # record options are each block's own
    # One directive on two ports is one block: no conflict with itself.
    assert len(assembled(".:53 .:54 {\n    kubernetes {\n        pods verified\n    }\n}\n"
                         ).kubernetes) == 2


@pytest.mark.parametrize(("second", "what"), [
    ("        pods verified\n", "pods verified"),
    ("        namespaces a\n", "namespaces"),
    ("        labels app=api\n", "labels"),
    ("        namespace_labels team=x\n", "namespace_labels"),
    ("        endpoint https://10.0.0.1:6443\n", "endpoint"),
    ("        kubeconfig /etc/kube.conf\n", "kubeconfig"),
    ("        startup_timeout 30s\n", "startup_timeout"),
])
def test_a_block_the_one_watch_cannot_honour_is_an_error_naming_its_line(second: str,
                                                                         what: str) -> None:
    with pytest.raises(CorefileError) as err:
        assembled(two_blocks("        pods insecure\n", second))
    assert err.value.line == 7  # the second block's `kubernetes` line
    message = str(err.value)
    assert message.startswith("Corefile:7 - Error during parsing: kubernetes:")
    assert what in message and "Corefile:2" in message  # what differs, and from which block
