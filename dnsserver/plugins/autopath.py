"""The `autopath` plugin: the client's search path walked on the server, as CoreDNS does.

With `autopath @kubernetes` the search path is the asking pod's (`NS.svc.ZONE svc.ZONE ZONE`,
then the server's own resolv.conf search domains); with a file, that file's `search` line.
A query whose name lies in the first search domain is tried with each element in turn until
one is not NXDOMAIN; that answer is returned behind a CNAME from the name asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnslib import CNAME, QTYPE, RR, DNSLabel, DNSRecord

from dnsserver.corefile import zone_args
from dnsserver.kubernetes_zone import NXDOMAIN, match_zone
from dnsserver.plugin import Plugin, Reply, Request
from dnsserver.plugins.kubernetes import KubernetesPlugin


def resolv_search(path: str) -> list[str]:
    """The search domains of a resolv.conf (the last `search` or `domain` line wins)."""
    search: list[str] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] in ("search", "domain"):
            search = [w.lower().rstrip(".") + "." for w in words[1:]]
    return search


class AutoPath(Plugin):
    name = "autopath"

    def __init__(self, zones: tuple[str, ...], source: str, resolv_conf: str) -> None:
        super().__init__()
        self.zones = zones
        self.source = source  # "@kubernetes", or the path of a resolv.conf
        self.host_search = resolv_search(resolv_conf)
        self.file_search = resolv_search(source) if source != "@kubernetes" else []
        self.count = 0  # coredns_autopath_success_total

    def _kubernetes(self) -> KubernetesPlugin | None:
        plugin = self.next
        while plugin is not None and plugin.name != "end":
            if isinstance(plugin, KubernetesPlugin):
                return plugin
            plugin = plugin.next
        return None

    def search_path(self, req: Request) -> list[str]:
        if self.source != "@kubernetes":
            return [*self.file_search, ""] if self.file_search else []
        k = self._kubernetes()
        if k is None or k.config.records.pods != "verified":
            return []
        zone = match_zone(req.lname, k.config.records.zones)
        if zone is None:
            return []
        store = k.zone.store
        keys = store.keys_for(store.pods_by_ip, req.client[0])
        if not keys:
            return []
        namespace = keys[0][0]
        if zone == ".":
            first = [f"{namespace}.svc.", "svc.", "."]
        else:
            first = [f"{namespace}.svc.{zone}", f"svc.{zone}", zone]
        return [*first, *self.host_search, ""]

    async def serve(self, req: Request) -> Reply:
        if match_zone(req.lname, self.zones) is None:
            return await self.next.serve(req)
        search = self.search_path(req)
        if not search or not (req.lname == search[0] or req.lname.endswith("." + search[0])):
            return await self.next.serve(req)
        base = req.qname[: -len(search[0]) - 1] if req.lname != search[0] else ""
        first: Reply | None = None
        for domain in search:
            name = f"{base}.{domain}" if domain not in ("", ".") else f"{base}."
            inner = _requery(req, name)
            reply = await self.next.serve(inner)
            if first is None:
                first = reply
            if reply.message.header.rcode == NXDOMAIN:
                continue
            self.count += 1
            msg = reply.message
            _cname_first(msg, req.qname)
            msg.questions = list(req.message.questions)
            # Which pod asked decides the answer: never keep these bytes for others.
            return Reply(msg, reply.plugin, None)
        assert first is not None
        first.message.questions = list(req.message.questions)
        return Reply(first.message, first.plugin, None)


def _requery(req: Request, name: str) -> Request:
    message = DNSRecord(req.message.header, questions=[])
    message.add_question(type(req.message.q)(DNSLabel(name), req.qtype, req.message.q.qclass))
    return Request(message, name, req.qtype, req.proto, req.client, req.server_zone,
                   req.max_size, req.do, dict(req.meta))


def _cname_first(msg: DNSRecord, original: str) -> None:
    """CoreDNS's cnamer: a CNAME from the name asked to the first answer's name, in front.

    When the answer already starts its chain at the name asked (an ExternalName's CNAME), the
    bridge is there: adding it again would repeat that CNAME (RFC 2181 5: no duplicates)."""
    lower = original.lower()
    if any(rr.rtype == QTYPE.CNAME and str(rr.rname).lower() == lower for rr in msg.rr):
        return
    for rr in msg.rr:
        if str(rr.rname).lower() == lower:
            continue
        msg.rr.insert(0, RR(original, QTYPE.CNAME, ttl=rr.ttl, rdata=CNAME(str(rr.rname))))
        return


def setup(d: Any, ctx: Any) -> Plugin:
    args = d.arg_count(1, None)
    source = args[-1]
    if source != "@kubernetes" and source.startswith("@"):
        raise d.error(f"unknown plugin: {source[1:]}")
    if source != "@kubernetes" and not Path(source).is_file():
        raise d.error(f"failed to parse {source!r}: no such file")
    zones = zone_args(tuple(args[:-1])) or ctx.zones
    return AutoPath(zones, source, "/etc/resolv.conf")


SETUPS = {"autopath": setup}
