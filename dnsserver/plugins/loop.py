"""The `loop` plugin: at start-up, send ourselves `<random>.<random>.<zone> HINFO`; if that query
comes back through this server more than twice, a forwarding loop exists: log CoreDNS's fatal
message and exit with status 1, as CoreDNS does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import sys
import time
from typing import Any

from dnslib import QTYPE, DNSRecord

from dnsserver import upstream
from dnsserver.plugin import PASS, Plugin, Reply, Request, fatal_exit_status

log = logging.getLogger("plugin/loop")

# CoreDNS's plugin/loop timings: keep trying to send the probe for this long, wait this long
# after a failed try, and stop watching this long after the probe was answered.
PROBE_PERIOD = 30.0
RETRY_DELAY = 1.0
DISABLE_AFTER = 2.0
EXCHANGE_TIMEOUT = 2.0  # miekg/dns's default read timeout for dns.Exchange


def probe_name(zone: str) -> str:
    """`<n>.<n>.<zone>` with two random non-negative 63-bit numbers, as CoreDNS's qname()."""
    first, second = secrets.randbits(63), secrets.randbits(63)
    return f"{first}.{second}." + ("" if zone == "." else zone)


class LoopPlugin(Plugin):
    """Counts the start-up probe as it passes; the third sighting means a loop."""

    name = "loop"

    def __init__(self, zone: str, target: tuple[str, int], listen_text: str) -> None:
        super().__init__()
        self.zone = zone
        self.qname = probe_name(zone)
        self.target = target  # where the probe is sent: this server block's listener
        self.listen_text = listen_text  # how CoreDNS names that listener, e.g. ":53"
        self.seen = 0
        self.disabled = False
        self._task: asyncio.Task[None] | None = None

    def relay_step(self, lname: str, qtype: int) -> Any:
        return PASS if qtype != QTYPE.HINFO or self.disabled else None

    async def serve(self, req: Request) -> Reply:
        if req.qtype != QTYPE.HINFO or self.disabled:
            return await self.next.serve(req)
        lname = req.lname
        if not (self.zone == "." or lname == self.zone or lname.endswith("." + self.zone)):
            return await self.next.serve(req)
        if lname == self.qname:
            self.seen += 1
        if self.seen > 2:
            self.fatal(req.client)
        return await self.next.serve(req)

    def fatal(self, client: tuple[str, int]) -> None:
        """Log CoreDNS's message and end the process at once, as Go's log.Fatal does."""
        log.critical('Loop (%s -> %s) detected for zone "%s", see '
                     'https://coredns.io/plugins/loop#troubleshooting. Query: "HINFO %s"',
                     upstream.hostport(client), self.listen_text, self.zone, self.qname)
        for handler in logging.getLogger().handlers + log.handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(fatal_exit_status())

    async def start(self) -> None:
        # In the background: start-up must finish for the probe to be answered at all.
        self._task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        deadline = time.monotonic() + PROBE_PERIOD
        try:
            while time.monotonic() < deadline:
                query = DNSRecord.question(self.qname, "HINFO")
                try:
                    await upstream.exchange(query, self.target, "udp", timeout=EXCHANGE_TIMEOUT)
                except upstream.QuestionMismatch:
                    pass  # an answer all the same: the query went through
                except upstream.UpstreamError:
                    self.seen = 0
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                await asyncio.sleep(DISABLE_AFTER)
                break
        finally:
            self.disabled = True

    async def stop(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def probe_target(binds: list[str], port: int) -> tuple[tuple[str, int], str]:
    """Where to send the probe for a block with these `bind` addresses, and how CoreDNS
    writes that listener in its message (`:53` when the block binds every address)."""
    host = binds[0] if binds else ""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0]) if host else None
    except ValueError:
        ip = None  # an interface name: the probe goes to loopback
    if ip is None or ip.is_unspecified:
        target = ("::1" if ip is not None and ip.version == 6 else "127.0.0.1", port)
    else:
        target = (str(ip), port)
    text = upstream.hostport((host, port)) if host else f":{port}"
    return target, text


def setup(d: Any, ctx: Any) -> LoopPlugin:
    """`loop` (no arguments) for the block's first zone."""
    d.arg_count(0, 0)
    if d.block:
        raise d.block[0].error(f"unknown property '{d.block[0].name}'")
    target, text = probe_target(list(ctx.binds), ctx.port)
    return LoopPlugin(ctx.zones[0] if ctx.zones else ".", target, text)


SETUPS = {"loop": setup}
