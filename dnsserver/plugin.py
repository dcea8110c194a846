"""The plugin interface: a request as plugins see it, the reply they give, and chaining.

As in CoreDNS each plugin either answers or hands the request to `self.next`; the chain of a
server block is built in CoreDNS's fixed plugin order. The end of every chain answers REFUSED
(CoreDNS answers SERVFAIL there; see corefile-compat.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from dnslib import RR, DNSHeader, DNSQuestion, DNSRecord

from dnsserver.store import Tag

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

# The exit status of a fatal plugin error (CoreDNS's log.Fatal exits 1). A worker process
# exits with WORKER_FATAL_EXIT instead, so that its supervisor stops the whole server rather
# than start it again (dnsserver.workers).
FATAL_EXIT = 1
WORKER_FATAL_EXIT = 78


def fatal_exit_status() -> int:
    import os

    return WORKER_FATAL_EXIT if os.environ.get("DNSSERVER_WORKER") else FATAL_EXIT


class Request:
    """One query on its way through a server block's chain.

    A plain query is read from its bytes without building a message (`dnsserver.wire`);
    `message` decodes the bytes the first time a plugin asks for it, so a query that is
    only relayed upstream is never decoded at all.
    """

    __slots__ = ("_message", "_wire", "client", "do", "flags", "max_size", "meta", "proto",
                 "qclass", "qname", "qtype", "server_zone")

    def __init__(self, message: DNSRecord | None, qname: str, qtype: int, proto: str,
                 client: tuple[str, int], server_zone: str, max_size: int, do: bool = False,
                 meta: dict[str, Any] | None = None, *, wire: bytes | None = None,
                 qclass: int = 1, flags: int | None = None) -> None:
        self._message = message
        # The query's bytes as received, while `message` is still what they say.
        self._wire = wire
        self.qname = qname  # as asked, with the trailing dot, case kept
        self.qtype = qtype
        self.qclass = qclass
        self.proto = proto  # "udp" or "tcp"
        self.client = client
        self.server_zone = server_zone  # the server block zone that took the query
        self.max_size = max_size
        self.do = do
        # Free-form per-request data plugins pass each other (rewrite, metadata).
        self.meta: dict[str, Any] = {} if meta is None else meta
        if flags is None:
            flags = (wire[2] << 8 | wire[3]) if wire is not None else _flags(message)
        self.flags = flags  # the query header's flags word (RD, CD, AD, opcode)

    @property
    def message(self) -> DNSRecord:
        if self._message is None:
            assert self._wire is not None
            self._message = DNSRecord.parse(self._wire)
        return self._message

    @message.setter
    def message(self, value: DNSRecord) -> None:
        self._message = value
        self._wire = None

    @property
    def lname(self) -> str:
        return self.qname.lower()

    @property
    def cd(self) -> bool:
        return bool(self.flags & 0x0010)

    @property
    def ad(self) -> bool:
        return bool(self.flags & 0x0020)

    def received_wire(self) -> bytes | None:
        """The client's query bytes, unless a plugin replaced the message (rewrite, autopath)."""
        return self._wire

    def replace(self, **changes: Any) -> Request:
        """A copy with some attributes changed; a new `message` leaves the bytes behind."""
        values = {name: getattr(self, name) for name in (
            "qname", "qtype", "proto", "client", "server_zone", "max_size", "do", "meta",
            "qclass", "flags")}
        message = changes.pop("message", None)
        values.update(changes)
        if message is not None:
            return Request(message, **values)
        return Request(self._message, wire=self._wire, **values)


def _flags(message: DNSRecord | None) -> int:
    if message is None:
        return 0
    return int(message.header.bitmap)


@dataclass(eq=False, slots=True)
class Lease:
    """How long the kept bytes of an answer that ages stay good (the cache's answers).

    At `birth` every record of the answer had TTL `ttl`; with `countdown` they count down one
    per second from there (CoreDNS's cache), without it they stay (`keepttl`). The bytes are
    kept until `until` on `clock`, or until `source.live` turns false (the cache dropped the
    entry they came from), whichever comes first; `source.stored` is the entry's birth, which
    moves when the entry is stored again. Each answer from kept bytes adds one to
    `hits[0]` (the plugin's hit counter); `on_expire(hits, last_hit)` is told at `until` how
    often the bytes were used, so prefetch popularity survives answers the plugin never saw.
    """

    birth: float
    ttl: int
    shown: int  # the TTL the answer's records carry now
    until: float
    clock: Callable[[], float]
    source: Any
    hits: list[int]
    countdown: bool = True
    on_expire: Callable[[int, float], None] | None = None
    # When `source` left only to make room (the cache was full) and the answer is still good
    # (a cluster answer whose tags have not changed), `revive()` stores it again as new and
    # returns its new birth, as a cache miss answered by the same plugin would; else None.
    revive: Callable[[], float | None] | None = None


class Reply:
    """A plugin's answer: the message, who wrote it, and whether its bytes may be kept.

    `tags` is the set of cluster-store tags the answer depends on: the fast path keeps the
    encoded bytes until one of them changes. None means the bytes must not be kept (answers
    from upstream, or anything time-dependent). A `lease` makes the kept bytes age and expire
    (the cache's answers).

    An upstream's answer may come as `wire` bytes only, relayed as they are; asking for
    `message` decodes them once, and from then on the message is the answer (a plugin may
    change it), so the bytes are not relayed any more.
    """

    __slots__ = ("_message", "lease", "plugin", "tags", "wire")

    def __init__(self, message: DNSRecord | None, plugin: str, tags: set[Tag] | None = None, *,
                 wire: bytes | None = None, lease: Lease | None = None) -> None:
        self._message = message
        self.wire = wire if message is None else None
        self.plugin = plugin
        self.tags = tags
        self.lease = lease

    @property
    def message(self) -> DNSRecord:
        if self._message is None:
            assert self.wire is not None
            self._message = DNSRecord.parse(self.wire)
            self.wire = None
        return self._message

    @message.setter
    def message(self, value: DNSRecord) -> None:
        self._message = value
        self.wire = None

    @property
    def rcode(self) -> int:
        """The answer's rcode, read from the bytes when there are only bytes."""
        if self._message is None and self.wire is not None:
            return self.wire[3] & 0xF
        return self.message.header.rcode


def make_reply(req: Request, rcode: int, answer: list[RR] = (), authority: list[RR] = (),  # type: ignore[assignment]
               additional: list[RR] = (), aa: bool = True, ra: bool = False) -> DNSRecord:  # type: ignore[assignment]
    """A reply to `req` written by this server. No RA by default: CoreDNS never sets it on the
    answers its plugins write; a relayed upstream answer keeps the upstream's own flags."""
    header = DNSHeader(id=req.message.header.id, qr=1, aa=int(aa), ra=int(ra),
                       rd=req.message.header.rd, cd=req.message.header.cd, rcode=rcode)
    return DNSRecord(header, questions=[DNSQuestion(req.message.q.qname, req.message.q.qtype,
                                                    req.message.q.qclass)],
                     rr=list(answer), auth=list(authority), ar=list(additional))


# What `Plugin.relay_step` answers for a plugin that only hands a query on.
PASS = "pass"


class Plugin:
    """Base of every plugin: `serve` answers or calls `self.next.serve`."""

    name = "plugin"

    def __init__(self) -> None:
        self.next: Plugin = END

    async def serve(self, req: Request) -> Reply:
        return await self.next.serve(req)

    def relay_step(self, lname: str, qtype: int) -> Any:
        """What this plugin would do with a plain UDP query for `lname`, for the engine's
        relay (a query `forward` can send upstream without the slow path): None when it needs
        the request itself (the default), PASS when it only hands the query on, a function of
        the answer's bytes when it only changes those (returning None when it cannot do that
        on bytes), or itself when it is the `forward` that relays the query."""
        return None

    # Lifecycle hooks for plugins that hold sockets, tasks or files.
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class _End(Plugin):
    """Past the last plugin: nothing in this block answers the name."""

    name = "end"

    def __init__(self) -> None:
        pass

    async def serve(self, req: Request) -> Reply:
        return Reply(make_reply(req, REFUSED, aa=False, ra=False), self.name, tags=set())


END = _End()


def chain(plugins: list[Plugin]) -> Plugin:
    """Link plugins in order and return the first (END when there are none)."""
    for current, following in itertools.pairwise(plugins):
        current.next = following
    if plugins:
        plugins[-1].next = END
        return plugins[0]
    return END


class Poller:
    """Runs `step` every `interval` seconds between `start()` and `stop()`: the reload loop of
    plugins that serve files. A failing step is logged with `what` and never ends the loop."""

    def __init__(self, interval: float, step: Callable[[], Awaitable[object]], what: str,
                 log: logging.Logger) -> None:
        self.interval = interval
        self.step = step
        self.what = what
        self.log = log
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.step()
            except Exception:  # a reload must never stop the server or the loop
                self.log.exception("%s failed", self.what)
