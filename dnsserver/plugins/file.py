"""The `file` plugin: an RFC 1035 zone file served authoritatively, as CoreDNS's plugin/file does
(referrals, glue, wildcards, CNAME chasing, NXDOMAIN/NODATA with the SOA), reloaded when the
file's SOA serial changes.

`Zone` is the pure part (records in, answers out); `FilePlugin` is the shell: zone matching,
`fallthrough`, out-of-zone CNAME targets through the server's own blocks, and the reload task.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RR, DNSLabel, DNSRecord

from dnsserver.corefile import zone_args
from dnsserver.kubernetes_zone import match_zone
from dnsserver.plugin import (
    NOERROR,
    NXDOMAIN,
    SERVFAIL,
    Plugin,
    Poller,
    Reply,
    Request,
    make_reply,
)
from dnsserver.plugins._zonedata import (
    Fallthrough,
    ZoneFileError,
    falls_through,
    fqdn,
    is_subdomain,
    parse_records,
    rdata_name,
)
from dnsserver.plugins.kubernetes import parse_duration

log = logging.getLogger("dnsserver.file")

Lookup = Callable[[str, int, int], Awaitable[DNSRecord | None]]
A, NS, CNAME, SOA, MX, AAAA, SRV, DS = (QTYPE.A, QTYPE.NS, QTYPE.CNAME, QTYPE.SOA, QTYPE.MX,
                                        QTYPE.AAAA, QTYPE.SRV, QTYPE.DS)
MAX_CHAIN = 8  # CNAMEs followed inside the zone, as CoreDNS's maxChain
DEFAULT_RELOAD = 60.0


@dataclass
class ZoneAnswer:
    rcode: int = NOERROR
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    aa: bool = True
    chase: str | None = None  # a CNAME target not in the zone: resolve it elsewhere


class Zone:
    """One zone's records, indexed for lookups; immutable once built."""

    def __init__(self, origin: str, records: list[RR], filename: str,
                 lines: list[int] | None = None) -> None:
        self.origin = fqdn(origin)
        self.filename = filename
        self.soa: RR | None = None
        self.ns: list[RR] = []
        self.nodes: dict[str, dict[int, list[RR]]] = {self.origin: {}}
        self.ancestors: set[str] = set()
        for i, rr in enumerate(records):
            name = str(rr.rname).lower()
            if not is_subdomain(name, self.origin):
                line = f":{lines[i]}" if lines else ""
                raise ZoneFileError(f"{filename}{line}: out of zone data: {rr.rname} is not in "
                                    f"zone {self.origin}")
            if rr.rtype == SOA:
                if name != self.origin:
                    line = f":{lines[i]}" if lines else ""
                    raise ZoneFileError(f"{filename}{line}: SOA record for {rr.rname} is not at "
                                        f"the zone apex {self.origin}")
                if self.soa is None:
                    self.soa = rr
                continue
            if rr.rtype == NS and name == self.origin:
                self.ns.append(rr)
                continue
            self.nodes.setdefault(name, {}).setdefault(rr.rtype, []).append(rr)
            parent = name
            while parent != self.origin:
                parent = parent.split(".", 1)[1] or "."
                if parent in self.ancestors:
                    break
                self.ancestors.add(parent)
        if self.soa is None:
            raise ZoneFileError(f"file {filename!r} has no SOA record for origin {self.origin}")

    @property
    def serial(self) -> int:
        assert self.soa is not None
        return int(self.soa.rdata.times[0])

    def __len__(self) -> int:
        return 1 + len(self.ns) + sum(len(v) for node in self.nodes.values() for v in node.values())

    # -- lookup -------------------------------------------------------------------------------

    def lookup(self, qname: str, qtype: int) -> ZoneAnswer:
        """The answer for a lower-case name inside the zone, as CoreDNS's file plugin gives it."""
        soa = [self.soa]
        if qname == self.origin and qtype == SOA:
            return ZoneAnswer(answer=soa, authority=list(self.ns))
        if qname == self.origin and qtype == NS:
            return ZoneAnswer(answer=list(self.ns), additional=self._glue(self.ns))
        wild: tuple[str, dict[int, list[RR]]] | None = None
        node: dict[int, list[RR]] | None = None
        # From the apex down to the name: a delegation on the way wins; remember the wildcard
        # of the deepest missing level in case the name itself does not exist.
        labels = qname[: -len(self.origin)].rstrip(".").split(".") if qname != self.origin else []
        name = self.origin
        for label in reversed(labels):
            parent, name = name, f"{label}.{name}" if name != "." else f"{label}."
            node = self.nodes.get(name)
            if node is None:
                star = f"*.{parent}" if parent != "." else "*."
                if star in self.nodes:
                    wild = (star, self.nodes[star])
                continue
            if NS in node and not (qtype == DS and name == qname):
                delegation = node[NS]
                return ZoneAnswer(authority=list(delegation), additional=self._glue(delegation),
                                  aa=False)
        if not labels:
            node = self.nodes[self.origin]
        if node is not None:
            return self._found(qname, qtype, node)
        if wild is not None:
            return self._wildcard(qname, qtype, wild[1])
        # An empty non-terminal exists (names below it do): NODATA, not NXDOMAIN.
        rcode = NOERROR if qname in self.ancestors else NXDOMAIN
        return ZoneAnswer(rcode=rcode, authority=soa)

    def _found(self, qname: str, qtype: int, node: dict[int, list[RR]]) -> ZoneAnswer:
        if CNAME in node and qtype != CNAME:
            return self._chase(list(node[CNAME]), qtype)
        rrs = node.get(qtype)
        if not rrs:
            return ZoneAnswer(authority=[self.soa])
        return ZoneAnswer(answer=list(rrs), authority=list(self.ns),
                          additional=self._additional(rrs))

    def _wildcard(self, qname: str, qtype: int, node: dict[int, list[RR]]) -> ZoneAnswer:
        def synth(rrs: list[RR]) -> list[RR]:
            return [RR(DNSLabel(qname), rr.rtype, rr.rclass, rr.ttl, rr.rdata) for rr in rrs]

        if CNAME in node and qtype != CNAME:
            return self._chase(synth(node[CNAME]), qtype)
        rrs = node.get(qtype)
        if not rrs:
            return ZoneAnswer(authority=[self.soa])
        return ZoneAnswer(answer=synth(rrs), authority=list(self.ns))

    def _chase(self, rrs: list[RR], qtype: int) -> ZoneAnswer:
        target = rdata_name(rrs[0]) or "."
        for _ in range(MAX_CHAIN + 1):
            node = self.nodes.get(target)
            if node is None:
                return ZoneAnswer(answer=rrs, authority=list(self.ns), chase=target)
            if CNAME not in node:
                rrs = rrs + list(node.get(qtype, ()))
                break
            rrs = rrs + list(node[CNAME])
            target = rdata_name(node[CNAME][0]) or "."
        return ZoneAnswer(answer=rrs, authority=list(self.ns))

    def _addresses(self, name: str) -> list[RR]:
        node = self.nodes.get(name)
        if node is None:
            return []
        return list(node.get(A, ())) + list(node.get(AAAA, ()))

    def _glue(self, nsrrs: list[RR]) -> list[RR]:
        glue: list[RR] = []
        for rr in nsrrs:
            target = rdata_name(rr)
            if target and is_subdomain(target, str(rr.rname).lower()):
                glue.extend(self._addresses(target))
        return glue

    def _additional(self, rrs: list[RR]) -> list[RR]:
        extra: list[RR] = []
        for rr in rrs:
            if rr.rtype in (MX, SRV):
                target = rdata_name(rr)
                if target and is_subdomain(target, self.origin):
                    extra.extend(self._addresses(target))
        return extra


def load_zone(path: str, origin: str) -> Zone:
    """Read and index a zone file; OSError if it cannot be read, ZoneFileError if it is bad."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    lines: list[int] = []
    records = parse_records(text, origin, path, lines=lines)
    return Zone(origin, records, path, lines)


def _file_state(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FilePlugin(Plugin):
    name = "file"

    def __init__(self, path: str, origins: tuple[str, ...], zones: dict[str, Zone | None],
                 reload: float = DEFAULT_RELOAD, fall: Fallthrough = None,
                 lookup: Lookup | None = None, notify: Callable[[set], None] | None = None):
        super().__init__()
        self.path = path
        self.origins = origins
        self.zones = zones
        self.reload = reload
        self.fall = fall
        self.lookup = lookup
        self.notify = notify
        self.tag = ("file", path)
        self._state = _file_state(path)
        self._poller = Poller(reload, self.check, f"plugin/file: reloading {path}", log)

    async def serve(self, req: Request) -> Reply:
        origin = match_zone(req.lname, self.origins)
        if origin is None:
            return await self.next.serve(req)
        zone = self.zones.get(origin)
        if zone is None:  # the file could not be read yet
            return Reply(make_reply(req, SERVFAIL, aa=False, ra=False), self.name, {self.tag})
        ans = zone.lookup(req.lname, req.qtype)
        if ans.rcode == NXDOMAIN and falls_through(self.fall, req.lname):
            inner = await self.next.serve(req)
            tags = None if inner.tags is None else inner.tags | {self.tag}
            return Reply(inner.message, inner.plugin, tags)
        tags: set | None = {self.tag}
        if ans.chase is not None:
            tags = None  # the answer now depends on data elsewhere
            if self.lookup is not None:
                depth = int(req.meta.get("depth", 0))
                found = await self.lookup(ans.chase, req.qtype, depth)
                if found is not None:
                    ans.answer.extend(found.rr)
        message = make_reply(req, ans.rcode, ans.answer, ans.authority, ans.additional,
                             aa=ans.aa, ra=False)
        return Reply(message, self.name, tags)

    # -- reload -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()

    async def check(self) -> bool:
        """Reload the zones from the file if it changed and its SOA serial differs."""
        state = _file_state(self.path)
        if state is None:
            log.error("plugin/file: Failed to open zone file \"%s\"", self.path)
            return False
        if state == self._state:
            return False
        self._state = state
        changed = False
        for origin in self.origins:
            try:
                zone = await asyncio.to_thread(load_zone, self.path, origin)
            except (OSError, ZoneFileError, UnicodeError) as exc:
                log.error("plugin/file: Parsing zone \"%s\": %s", origin, exc)
                continue
            old = self.zones.get(origin)
            if old is not None and old.serial == zone.serial:
                continue  # as CoreDNS: only a new SOA serial makes a reload
            self.zones[origin] = zone
            changed = True
            log.info("plugin/file: Successfully reloaded zone \"%s\" in \"%s\" with %d SOA serial",
                     origin, self.path, zone.serial)
        if changed and self.notify is not None:
            self.notify({self.tag})
        return changed


def parse_config(d: Any, block_zones: tuple[str, ...]) -> tuple[str, tuple[str, ...], float,
                                                                 Fallthrough]:
    d.arg_count(1, None)
    path = d.args[0]
    origins = zone_args(d.args[1:]) if len(d.args) > 1 else tuple(block_zones)
    reload = DEFAULT_RELOAD
    fall: Fallthrough = None
    for opt in d.block:
        if opt.name == "reload":
            opt.arg_count(1, 1)
            reload = parse_duration(opt, opt.args[0])
        elif opt.name == "fallthrough":
            fall = zone_args(opt.args)
        elif opt.name == "upstream":
            pass  # accepted and ignored, as by CoreDNS: out-of-zone targets always use it
        else:
            raise opt.error(f"unknown property '{opt.name}'")
    return path, origins, reload, fall


def setup(d: Any, ctx: Any) -> Plugin:
    path, origins, reload, fall = parse_config(d, ctx.zones)
    zones: dict[str, Zone | None] = {}
    for origin in origins:
        try:
            zones[origin] = load_zone(path, origin)
        except ZoneFileError as exc:
            raise d.error(str(exc)) from None
        except (OSError, UnicodeError) as exc:
            if reload == 0:
                raise d.error(f"unable to read zone file {path!r}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
            log.warning("plugin/file: Failed to open \"%s\": trying again in %ss", path, reload)
            zones[origin] = None
    port = ctx.port

    async def lookup(name: str, qtype: int, depth: int) -> DNSRecord | None:
        resolve = ctx.assembly.lookups.get(port)
        return None if resolve is None else await resolve(name, qtype, depth)

    return FilePlugin(path, origins, zones, reload, fall, lookup, ctx.assembly.store.notify)


SETUPS = {"file": setup}
