"""The Kubernetes DNS schema (specification 1.1.0) as CoreDNS's `kubernetes` plugin serves it.

A pure function: (question, store view, options) -> rcode and sections, plus the cache tags the
answer depends on. No sockets, no clock, no API. Deliberate differences from CoreDNS are listed in
`corefile-compat.md`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import NamedTuple

from dnslib import AAAA, CNAME, NS, PTR, QTYPE, RR, SOA, SRV, TXT, A, DNSLabel

from dnsserver.objects import EndpointAddress, is_ip
from dnsserver.store import ClusterStore, Tag

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
SCHEMA_VERSION = "1.1.0"
DNS_VERSION_TTL = 28800
_MAX_CHASE = 8
MAX_LABEL = 63


@dataclass(frozen=True)
class KubernetesOptions:
    """What a Corefile `kubernetes` block says about the records (the API side lives apart)."""

    zones: tuple[str, ...] = ("cluster.local.", "in-addr.arpa.", "ip6.arpa.")
    ttl: int = 5
    pods: str = "disabled"  # disabled | insecure | verified
    endpoint_pod_names: bool = False
    ignore_empty_service: bool = False
    noendpoints: bool = False
    namespaces: frozenset[str] = frozenset()
    # None: no fallthrough; (): fall through for every zone; else only for these zones.
    fallthrough: tuple[str, ...] | None = None
    # This server's own addresses (listeners, else the pod's interfaces; never loopback): the
    # service with one of them as an endpoint is the zone's NS, as CoreDNS finds it.
    local_ips: tuple[str, ...] = ()

    @property
    def primary_zone(self) -> str:
        for zone in self.zones:
            if not is_reverse_zone(zone):
                return zone
        return self.zones[0]


@dataclass
class ZoneAnswer:
    rcode: int
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    # What the answer depends on; None means "do not cache these bytes".
    tags: set[Tag] | None = field(default_factory=set)
    # A CNAME target outside our zones that the rest of the chain should resolve.
    chase: str | None = None
    # NXDOMAIN that a `fallthrough` may hand on to the next plugin.
    name_error: bool = False


class Target(NamedTuple):
    """One backend record, as CoreDNS's msg.Service: an address or a name, a port, its own name."""

    host: str  # an IP address, or a DNS name for ExternalName
    port: int
    domain: str  # the record's own name, e.g. "svc.ns.svc.cluster.local."
    is_name: bool


class Request(NamedTuple):
    """A query name inside the zone, split as CoreDNS's parseRequest does."""

    port: str
    protocol: str
    endpoint: str
    service: str
    namespace: str
    pod_or_svc: str


class _NameError(Exception):
    """The name does not exist (NXDOMAIN), as CoreDNS's errNoItems/errNsNotExposed."""


def is_reverse_zone(zone: str) -> bool:
    return zone.endswith(("in-addr.arpa.", "ip6.arpa."))


def match_zone(qname_lower: str, zones: tuple[str, ...]) -> str | None:
    """The longest of `zones` that contains the name, or None."""
    best = None
    for zone in zones:
        if (zone == "." or qname_lower == zone or qname_lower.endswith("." + zone)) and (
                best is None or len(zone) > len(best)):
            best = zone
    return best


def parse_request(base: str) -> Request | None:
    """Split the part of the name before the zone; None for a name the schema can never have."""
    labels = base.split(".") if base else []
    if not labels or labels[-1] not in ("svc", "pod"):
        return None
    pod_or_svc = labels.pop()
    namespace = labels.pop() if labels else ""
    service = labels.pop() if labels else ""
    port = protocol = endpoint = ""
    if len(labels) == 1:
        endpoint = labels[0]
    elif len(labels) == 2:
        protocol = labels[1].removeprefix("_")
        port = labels[0].removeprefix("_")
    elif len(labels) > 2:
        return None
    return Request(port, protocol, endpoint, service, namespace, pod_or_svc)


def endpoint_hostname(addr: EndpointAddress, pod_names: bool) -> str:
    """The endpoint's label: its hostname, else the pod name (option), else the dashed IP.

    A pod name longer than a DNS label (StatefulSet pods can have one) is not used, as in
    CoreDNS: the endpoint keeps its dashed-IP name."""
    if addr.hostname:
        return addr.hostname
    if pod_names and addr.target_name and len(addr.target_name) <= MAX_LABEL:
        return addr.target_name
    return addr.ip.replace(".", "-").replace(":", "-")


def reverse_to_ip(name: str) -> str | None:
    """The address a full reverse name stands for (canonical text), or None."""
    if name.endswith(".in-addr.arpa."):
        labels = name[: -len(".in-addr.arpa.")].split(".")
        if len(labels) != 4:
            return None
        text = ".".join(reversed(labels))
    elif name.endswith(".ip6.arpa."):
        nibbles = name[: -len(".ip6.arpa.")].split(".")
        if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
            return None
        hexdigits = "".join(reversed(nibbles))
        text = ":".join(hexdigits[i : i + 4] for i in range(0, 32, 4))
    else:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class KubernetesZone:
    """Answers for one `kubernetes` block, over a store it only reads."""

    def __init__(self, store: ClusterStore, options: KubernetesOptions) -> None:
        self.store = store
        self.options = options

    # -- public -------------------------------------------------------------------------------

    def answer(self, qname: str, qtype: int, zone: str) -> ZoneAnswer:
        """Answer `qname` (as asked, any case, trailing dot) of `qtype` within `zone`."""
        tags: set[Tag] = set()
        result = self._answer(qname, qtype, zone, tags, depth=0)
        if result.tags is not None:
            result.tags |= tags
        if result.rcode == NXDOMAIN and not self.store.synced:
            # Until the first sync an NXDOMAIN may be wrong; CoreDNS answers SERVFAIL then.
            result.rcode, result.tags, result.name_error = SERVFAIL, None, False
        return result

    def soa(self, zone: str) -> RR:
        ttl = self.options.ttl
        return RR(zone, QTYPE.SOA, ttl=min(ttl, 300), rdata=SOA(
            "ns.dns." + zone, "hostmaster." + zone,
            (self.store.serial & 0xFFFFFFFF, 7200, 1800, 86400, ttl)))

    # -- internals ----------------------------------------------------------------------------

    def _negative(self, rcode: int, zone: str) -> ZoneAnswer:
        return ZoneAnswer(rcode, authority=[self.soa(zone)], name_error=rcode == NXDOMAIN)

    def _answer(self, qname: str, qtype: int, zone: str, tags: set[Tag], depth: int) -> ZoneAnswer:
        name = qname.lower()
        base = name[: -len(zone) - 1] if name != zone and zone != "." else (
            name[:-1] if zone == "." else "")
        ttl = self.options.ttl
        reverse = is_reverse_zone(zone)
        # From here `zone` is spelt as in the question: CoreDNS keeps the asker's case in the
        # zone part of every name it makes (SOA, NS, SRV targets and their glue).
        zone = qname[len(qname) - len(zone):]

        if base == "":
            if qtype == QTYPE.SOA:
                return ZoneAnswer(NOERROR, answer=[_rename(self.soa(zone), qname)])
            if qtype == QTYPE.NS:
                return self._ns_records(qname, zone, reverse, tags)
            return self._negative(NOERROR, zone)

        if base == "dns-version" and not reverse:
            if qtype == QTYPE.TXT:
                return ZoneAnswer(NOERROR, answer=[
                    RR(qname, QTYPE.TXT, ttl=DNS_VERSION_TTL, rdata=TXT(SCHEMA_VERSION))])
            return self._negative(NOERROR, zone)

        if base == "ns.dns" and not reverse:
            if qtype in (QTYPE.A, QTYPE.AAAA):
                want = 4 if qtype == QTYPE.A else 6
                answer = [_address(qname, ip, ttl)
                          for ip in dict.fromkeys(ip for _, ip in self._name_servers(zone, tags))
                          if _family(ip) == want]
                if answer:
                    return ZoneAnswer(NOERROR, answer=answer)
            return self._negative(NOERROR, zone)

        if reverse:
            return self._reverse(qname, name, qtype, zone, tags)

        try:
            targets = self._records(base, zone, tags)
        except _NameError:
            return self._negative(NXDOMAIN, zone)

        if qtype in (QTYPE.A, QTYPE.AAAA):
            return self._addresses(qname, qtype, zone, targets, tags, depth)
        if qtype == QTYPE.CNAME:
            answer = [RR(qname, QTYPE.CNAME, ttl=ttl, rdata=CNAME(t.host + "."))
                      for t in targets if t.is_name]
            return ZoneAnswer(NOERROR, answer=answer) if answer else self._negative(NOERROR, zone)
        if qtype == QTYPE.SRV:
            return self._srv(qname, zone, targets)
        # Any other type of an existing name: NODATA.
        return self._negative(NOERROR, zone)

    def _records(self, base: str, zone: str, tags: set[Tag]) -> list[Target]:
        """CoreDNS's Records: the backend records for a name, or _NameError when it has none."""
        r = parse_request(base)
        if r is None:
            raise _NameError
        if r.namespace == "":
            return []  # "svc.zone" / "pod.zone": the name exists, with no records
        if not self._namespace_exposed(r.namespace, tags):
            raise _NameError
        if r.pod_or_svc == "pod":
            return self._pods(r, zone, tags)
        return self._services(r, zone, tags)

    def _namespace_exposed(self, namespace: str, tags: set[Tag]) -> bool:
        tags.add(("ns", namespace))
        allowed = self.options.namespaces
        return (not allowed or namespace in allowed) and namespace in self.store.namespaces

    def _pods(self, r: Request, zone: str, tags: set[Tag]) -> list[Target]:
        mode = self.options.pods
        if mode == "disabled":
            raise _NameError
        podname = r.service
        if podname == "":
            return []
        if podname.count("-") == 3 and "--" not in podname:
            text = podname.replace("-", ".")
        else:
            text = podname.replace("-", ":")
        try:
            ip = str(ipaddress.ip_address(text))
        except ValueError:
            raise _NameError from None
        domain = f"{podname}.{r.namespace}.pod.{zone}"
        if mode == "verified":
            tags.add(("pod", ip))
            keys = self.store.keys_for(self.store.pods_by_ip, ip)
            if not any(ns == r.namespace for ns, _ in keys):
                raise _NameError
        return [Target(ip, 0, domain, False)]

    def _services(self, r: Request, zone: str, tags: set[Tag]) -> list[Target]:
        if r.service == "":
            return []
        tags.add(("svc", r.namespace, r.service))
        svc = self.store.services.get((r.namespace, r.service))
        if svc is None:
            raise _NameError
        opts = self.options
        slices = () if opts.noendpoints else self.store.endpoint_slices(svc.namespace, svc.name)
        plain_cluster_ip = svc.type != "ExternalName" and not svc.headless
        if opts.ignore_empty_service and plain_cluster_ip and not any(s.addresses for s in slices):
            raise _NameError
        svc_domain = f"{svc.name}.{svc.namespace}.svc.{zone}"
        if svc.type == "ExternalName":
            # The CNAME lives at the service name only: no endpoint, port or protocol labels in
            # front of it (CoreDNS skips the service then), and never to an IP address.
            if r.endpoint or r.port or r.protocol or is_ip(svc.external_name):
                raise _NameError
            return [Target(svc.external_name, 0, svc_domain, True)]
        targets: list[Target] = []
        if svc.headless or r.endpoint:
            for eps in slices:
                for addr in eps.addresses:
                    host = endpoint_hostname(addr, opts.endpoint_pod_names)
                    if r.endpoint and r.endpoint != host:
                        continue
                    for p in eps.ports:
                        if _port_matches(r, p.name, p.protocol):
                            targets.append(Target(addr.ip, p.port, f"{host}.{svc_domain}", False))
            if not targets:
                raise _NameError
            return targets
        found = False
        for p in svc.ports:
            if _port_matches(r, p.name, p.protocol):
                found = True
                targets.extend(Target(ip, p.port, svc_domain, False) for ip in svc.cluster_ips)
        if not found:
            raise _NameError
        return targets

    def _addresses(self, qname: str, qtype: int, zone: str, targets: list[Target],
                   tags: set[Tag], depth: int) -> ZoneAnswer:
        want = 4 if qtype == QTYPE.A else 6
        ttl = self.options.ttl
        answer: list[RR] = []
        seen: set[str] = set()
        chase = None
        keep = True
        for t in targets:
            if t.is_name:
                target = t.host + "."
                if target == qname.lower():
                    continue  # a CNAME to itself would loop
                answer.append(RR(qname, QTYPE.CNAME, ttl=ttl, rdata=CNAME(target)))
                inner_zone = match_zone(target, self.options.zones)
                if inner_zone is not None and depth < _MAX_CHASE:
                    inner = self._answer(target, qtype, inner_zone, tags, depth + 1)
                    # The chain is kept only if every answer in it may be; the tags the
                    # target's answer depends on are collected in `tags` on the way.
                    keep = keep and inner.tags is not None
                    answer.extend(inner.answer)
                else:
                    chase = target
            elif _family(t.host) == want and t.host not in seen:
                seen.add(t.host)
                answer.append(_address(qname, t.host, ttl))
        if not answer:
            return self._negative(NOERROR, zone)
        return ZoneAnswer(NOERROR, answer=answer, chase=chase, tags=set() if keep else None)

    def _srv(self, qname: str, zone: str, targets: list[Target]) -> ZoneAnswer:
        ttl = self.options.ttl
        # ExternalName services have no SRV records (as in CoreDNS).
        targets = [t for t in targets if not t.is_name]
        if not targets:
            return self._negative(NOERROR, zone)
        # Weight as CoreDNS: 100 split over every backend record of the (single) priority,
        # counted before duplicates and port-less sentinels are dropped.
        weight = max(1, 100 // len(targets))
        answer: list[RR] = []
        extra: list[RR] = []
        seen_srv: set[tuple[str, int]] = set()
        seen_addr: set[tuple[str, str]] = set()
        for t in targets:
            if t.port == -1:
                continue
            if (t.domain, t.port) not in seen_srv:
                seen_srv.add((t.domain, t.port))
                srv = SRV(priority=0, weight=weight, port=t.port, target=t.domain)
                answer.append(RR(qname, QTYPE.SRV, ttl=ttl, rdata=srv))
            if (t.domain, t.host) not in seen_addr:
                seen_addr.add((t.domain, t.host))
                extra.append(_address(t.domain, t.host, ttl))
        if not answer:
            return self._negative(NOERROR, zone)
        return ZoneAnswer(NOERROR, answer=answer, additional=extra)

    def _reverse(self, qname: str, name: str, qtype: int, zone: str, tags: set[Tag]) -> ZoneAnswer:
        ip = reverse_to_ip(name)
        if ip is None:
            # Not a whole address: CoreDNS parses it as a forward name, which never exists.
            return self._negative(NXDOMAIN, zone)
        tags.add(("ip", ip))
        names = self._names_for_ip(ip, tags)
        if not names:
            return self._negative(NXDOMAIN, zone)
        if qtype != QTYPE.PTR:
            return self._negative(NOERROR, zone)
        ttl = self.options.ttl
        return ZoneAnswer(NOERROR, answer=[RR(qname, QTYPE.PTR, ttl=ttl, rdata=PTR(n))
                                           for n in names])

    def _names_for_ip(self, ip: str, tags: set[Tag]) -> list[str]:
        opts = self.options
        primary = opts.primary_zone
        store = self.store
        for key in store.keys_for(store.services_by_ip, ip):
            if opts.namespaces and not self._namespace_exposed(key[0], tags):
                continue
            return [f"{key[1]}.{key[0]}.svc.{primary}"]
        names: list[str] = []
        for key in store.keys_for(store.slices_by_ip, ip):
            eps = store.slices[key]
            if opts.namespaces and not self._namespace_exposed(eps.namespace, tags):
                continue
            for addr in eps.addresses:
                if addr.ip == ip:
                    host = endpoint_hostname(addr, opts.endpoint_pod_names)
                    name = f"{host}.{eps.service}.{eps.namespace}.svc.{primary}"
                    if name not in names:
                        names.append(name)
        return names

    def _name_servers(self, zone: str, tags: set[Tag]) -> list[tuple[str, str]]:
        """(name, address) of this server, as CoreDNS's nsAddrs: each service whose endpoints
        include one of our own addresses, by its name in `zone` with its cluster IPs (a headless
        one: its endpoints); when none of our addresses is an endpoint, `ns.dns.ZONE` with our
        own addresses (none: no records at all)."""
        store = self.store
        found: list[tuple[str, str]] = []
        endpoint = False
        for local in self.options.local_ips:
            tags.add(("ip", local))  # a slice that gains or loses our address
            for key in store.keys_for(store.slices_by_ip, local):
                endpoint = True
                eps = store.slices[key]
                tags.add(("svc", eps.namespace, eps.service))  # that service, as it changes
                svc = store.services.get((eps.namespace, eps.service))
                if svc is None:
                    continue
                name = f"{svc.name}.{svc.namespace}.svc.{zone}"
                if svc.headless:  # its endpoints, by their own names (as CoreDNS)
                    pod_names = self.options.endpoint_pod_names
                    pairs = [(f"{endpoint_hostname(a, pod_names)}.{name}", a.ip)
                             for a in eps.addresses]
                else:
                    pairs = [(name, ip) for ip in svc.cluster_ips]
                found.extend(pair for pair in pairs if pair not in found)
        if endpoint:
            return found
        return [("ns.dns." + zone, ip) for ip in self.options.local_ips]

    def _ns_records(self, qname: str, zone: str, reverse: bool, tags: set[Tag]) -> ZoneAnswer:
        # The reverse zones name their server in the primary zone, where its name resolves
        # (CoreDNS puts the reverse zone itself there: kube-dns.kube-system.svc.in-addr.arpa.).
        servers = self._name_servers(self.options.primary_zone if reverse else zone, tags)
        if not servers:
            return self._negative(NOERROR, zone)
        ttl = self.options.ttl
        answer = [RR(qname, QTYPE.NS, ttl=ttl, rdata=NS(name))
                  for name in dict.fromkeys(name for name, _ in servers)]
        extra = [_address(name, ip, ttl) for name, ip in servers]
        return ZoneAnswer(NOERROR, answer=answer, additional=extra)


def _port_matches(r: Request, name: str, protocol: str) -> bool:
    return (r.port == "" or r.port == name) and (r.protocol == "" or r.protocol == protocol.lower())


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4


def _address(name: str, ip: str, ttl: int) -> RR:
    if ":" in ip:
        return RR(name, QTYPE.AAAA, ttl=ttl, rdata=AAAA(ip))
    return RR(name, QTYPE.A, ttl=ttl, rdata=A(ip))


def _rename(rr: RR, name: str) -> RR:
    rr.rname = DNSLabel(name)
    return rr
