"""The `kubernetes` plugin: its Corefile options, and serving its zones from the cluster store.

The record logic is `dnsserver.kubernetes_zone`; this module is the thin shell around it: zone
matching, `fallthrough`, and chasing ExternalName targets outside the cluster zone through the
rest of the server (CoreDNS's `upstream`), CNAME first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from dnslib import QTYPE, DNSRecord

from dnsserver.kubernetes_zone import (
    NOERROR,
    KubernetesOptions,
    KubernetesZone,
    ZoneAnswer,
    match_zone,
)
from dnsserver.plugin import Plugin, Reply, Request, make_reply
from dnsserver.store import ClusterStore

Lookup = Callable[[str, int, int], Awaitable[DNSRecord | None]]


@dataclass(frozen=True)
class ApiSettings:
    """What a `kubernetes` block says about reaching the API (the watcher's side)."""

    endpoint: str | None = None
    tls: tuple[str, str, str] | None = None
    kubeconfig: str | None = None
    context: str | None = None
    labels: str | None = None
    namespace_labels: str | None = None
    namespaces: tuple[str, ...] = ()
    watch_pods: bool = False
    startup_timeout: float = 5.0


@dataclass(frozen=True)
class KubernetesConfig:
    records: KubernetesOptions = field(default_factory=KubernetesOptions)
    api: ApiSettings = field(default_factory=ApiSettings)


class KubernetesPlugin(Plugin):
    name = "kubernetes"

    def __init__(self, store: ClusterStore, config: KubernetesConfig,
                 lookup: Lookup | None = None) -> None:
        super().__init__()
        self.config = config
        self.zone = KubernetesZone(store, config.records)
        self.lookup = lookup

    def falls_through(self, lname: str) -> bool:
        zones = self.config.records.fallthrough
        if zones is None:
            return False
        return not zones or match_zone(lname, zones) is not None

    async def serve(self, req: Request) -> Reply:
        opts = self.config.records
        zone = match_zone(req.lname, opts.zones)
        if zone is None:
            return await self.next.serve(req)
        ans = self.zone.answer(req.qname, req.qtype, zone)
        if ans.name_error and self.falls_through(req.lname):
            return await self.next.serve(req)
        if ans.chase is not None and self.lookup is not None and ans.rcode == NOERROR:
            await self._chase(req, ans)
        message = make_reply(req, ans.rcode, ans.answer, ans.authority, ans.additional)
        return Reply(message, self.name, ans.tags)

    async def _chase(self, req: Request, ans: ZoneAnswer) -> None:
        """Resolve an out-of-zone CNAME target through the server, as CoreDNS's upstream does."""
        assert ans.chase is not None and self.lookup is not None
        depth = int(req.meta.get("depth", 0))
        upstream = await self.lookup(ans.chase, req.qtype, depth)
        ans.tags = None  # upstream records have their own TTLs: never keep these bytes
        if upstream is not None and upstream.header.rcode == NOERROR:
            ans.answer.extend(rr for rr in upstream.rr
                              if rr.rtype in (req.qtype, QTYPE.CNAME))


def with_zones(config: KubernetesConfig, zones: tuple[str, ...]) -> KubernetesConfig:
    return replace(config, records=replace(config.records, zones=zones))
