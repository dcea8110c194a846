"""The loop plugin: a server that forwards to itself exits with CoreDNS's message and status 1;
one that forwards to a real (loopback) upstream sends its probe once and keeps serving."""

from __future__ import annotations

import asyncio
import re

import pytest
from dnslib import QTYPE, DNSRecord

from dnsserver import corefile
from dnsserver.assembly import assemble
from dnsserver.plugin import Request
from dnsserver.plugins.loop import LoopPlugin, probe_name, probe_target
from dnsserver.store import ClusterStore

from helpers import ServerProcess, answers, query, wait_for
from upstream_servers import Upstream

MESSAGE = (r'\[FATAL\] plugin/loop: Loop \(127\.0\.0\.1:\d+ -> {listen}\) detected for zone '
           r'"\.", see https://coredns\.io/plugins/loop#troubleshooting\. '
           r'Query: "HINFO \d+\.\d+\."')


def test_forwarding_to_itself_is_detected_and_the_server_exits() -> None:
    corefile_text = ".:{PORT} {\n    bind 127.0.0.1\n    loop\n    forward . 127.0.0.1:{PORT}\n}\n"
    srv = ServerProcess(corefile_text, snapshot=None, wait=False)
    with srv:
        assert srv.proc is not None
        wait_for(lambda: srv.proc.poll() is not None, timeout=15, what="the server to exit")
        assert srv.proc.returncode == 1
        wait_for(lambda: "plugin/loop" in srv.output, timeout=5, what="the loop message")
        expected = MESSAGE.format(listen=re.escape(f"127.0.0.1:{srv.port}"))
        assert re.search(expected, srv.output), srv.output


def test_no_loop_probe_sent_once_and_the_server_keeps_serving() -> None:
    with Upstream() as up:
        text = (".:{PORT} {\n    bind 127.0.0.1\n    loop\n"
                f"    forward . {up.address}\n}}\n")
        with ServerProcess(text, snapshot=None, ready_name="example.org", ready_type="A") as srv:
            probe = wait_for(lambda: [r for r in up.received if r.qtype == QTYPE.HINFO],
                             timeout=10, what="the loop probe at the upstream")
            assert re.fullmatch(r"\d+\.\d+\.", probe[0].qname)
            assert answers(query("example.org", "A", port=srv.port), "A") == ["127.0.0.10"]
            assert srv.proc is not None and srv.proc.poll() is None
            assert len([r for r in up.received if r.qtype == QTYPE.HINFO]) == 1
            assert "plugin/loop" not in srv.output


def test_probe_name_is_two_random_numbers_under_the_zone() -> None:
    assert re.fullmatch(r"\d+\.\d+\.", probe_name("."))
    assert re.fullmatch(r"\d+\.\d+\.example\.org\.", probe_name("example.org."))
    assert probe_name(".") != probe_name(".")


@pytest.mark.parametrize(("binds", "target", "text"), [
    ([], ("127.0.0.1", 53), ":53"),
    (["127.0.0.5"], ("127.0.0.5", 53), "127.0.0.5:53"),
    (["::1"], ("::1", 53), "[::1]:53"),
    (["0.0.0.0"], ("127.0.0.1", 53), "0.0.0.0:53"),
    (["::"], ("::1", 53), "[::]:53"),
])
def test_probe_target_and_listener_text(binds: list[str], target: tuple[str, int],
                                        text: str) -> None:
    assert probe_target(binds, 53) == (target, text)


def test_two_sightings_are_not_a_loop() -> None:
    plugin = LoopPlugin(".", ("127.0.0.1", 53), ":53")

    async def see(name: str, qtype: str = "HINFO") -> None:
        msg = DNSRecord.question(name, qtype)
        req = Request(msg, name, getattr(QTYPE, qtype), "udp", ("127.0.0.1", 5353), ".", 512)
        await plugin.serve(req)

    async def scenario() -> None:
        await see(plugin.qname, "A")  # not HINFO: not counted
        await see("other.example.org.")
        await see(plugin.qname)
        await see(plugin.qname.upper())

    asyncio.run(scenario())
    assert plugin.seen == 2


def test_loop_takes_no_arguments() -> None:
    text = ".:53 {\n    loop now\n    forward . 127.0.0.1\n}\n"
    with pytest.raises(corefile.CorefileError, match=r"Corefile:2 - .*loop: Wrong argument"):
        assemble(corefile.parse(text, "Corefile"), ClusterStore())
