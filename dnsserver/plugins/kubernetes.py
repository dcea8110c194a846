"""The `kubernetes` plugin: its Corefile options, and serving its zones from the cluster store.

The record logic is `dnsserver.kubernetes_zone`; this module is the thin shell around it: zone
matching, `fallthrough`, and chasing ExternalName targets outside the cluster zone through the
rest of the server (CoreDNS's `upstream`), CNAME first.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnslib import QTYPE, DNSRecord

from dnsserver.corefile import zone_args
from dnsserver.kubernetes_zone import (
    NOERROR,
    KubernetesOptions,
    KubernetesZone,
    ZoneAnswer,
    match_zone,
)
from dnsserver.plugin import PASS, Plugin, Reply, Request, make_reply
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


# What the server's one watch of the Kubernetes API is made of, by the Corefile words that set
# it: every `kubernetes` block must agree on these (each keeps its own record options).
WATCH_SETTINGS = {
    "endpoint": "endpoint", "tls": "tls", "kubeconfig": "kubeconfig",
    "context": "kubeconfig context", "labels": "labels", "namespace_labels": "namespace_labels",
    "namespaces": "namespaces", "watch_pods": "pods verified",
    "startup_timeout": "startup_timeout",
}


def watch_differences(first: ApiSettings, other: ApiSettings) -> list[str]:
    """The settings of `other` that the watch made for `first` would not honour."""
    differs = []
    for attr, words in WATCH_SETTINGS.items():
        a, b = getattr(first, attr), getattr(other, attr)
        if attr == "namespaces":
            a, b = sorted(set(a)), sorted(set(b))
        if a != b:
            differs.append(words)
    return differs


def check_one_watch(first: KubernetesPlugin | None, config: KubernetesConfig,
                    directive: Any) -> None:
    """A Corefile error naming the `kubernetes` line whose API settings the server's one watch,
    made for the first block, cannot honour (rather than ignore them)."""
    if first is None:
        return
    differs = watch_differences(first.config.api, config.api)
    if differs:
        raise directive.error(
            f"{', '.join(differs)}: not as in the kubernetes block at {first.where}; this "
            "server watches the Kubernetes API once, for every kubernetes block: give them all "
            "the same API and selection settings (see corefile-compat.md)")


class KubernetesPlugin(Plugin):
    name = "kubernetes"

    def __init__(self, store: ClusterStore, config: KubernetesConfig,
                 lookup: Lookup | None = None, where: str = "") -> None:
        super().__init__()
        self.config = config
        self.where = where  # FILE:LINE of its Corefile directive, for errors
        self.zone = KubernetesZone(store, config.records)
        self.lookup = lookup

    def falls_through(self, lname: str) -> bool:
        zones = self.config.records.fallthrough
        if zones is None:
            return False
        return not zones or match_zone(lname, zones) is not None

    def relay_step(self, lname: str, qtype: int) -> Any:
        return PASS if match_zone(lname, self.config.records.zones) is None else None

    async def serve(self, req: Request) -> Reply:
        opts = self.config.records
        zone = match_zone(req.lname, opts.zones)
        if zone is None:
            return await self.next.serve(req)
        ans = self.zone.answer(req.qname, req.qtype, zone)
        if ans.name_error and self.falls_through(req.lname):
            return await self.next.serve(req)
        truncated = False
        if ans.chase is not None and self.lookup is not None and ans.rcode == NOERROR:
            truncated = await self._chase(req, ans)
        message = make_reply(req, ans.rcode, ans.answer, ans.authority, ans.additional)
        if truncated and req.proto == "udp":
            # As CoreDNS: the target's answer came truncated, so is ours; the client asks
            # again over TCP. (Our lookups go upstream over UDP whatever the client used, so a
            # TCP client gets what fitted, without a TC it could not act on.)
            message.header.tc = 1
        return Reply(message, self.name, ans.tags)

    async def _chase(self, req: Request, ans: ZoneAnswer) -> bool:
        """Resolve an out-of-zone CNAME target through the server, as CoreDNS's upstream does.
        True when the target's answer was truncated."""
        assert ans.chase is not None and self.lookup is not None
        depth = int(req.meta.get("depth", 0))
        upstream = await self.lookup(ans.chase, req.qtype, depth)
        ans.tags = None  # upstream records have their own TTLs: never keep these bytes
        if upstream is None:
            return False
        if upstream.header.rcode == NOERROR:
            ans.answer.extend(rr for rr in upstream.rr
                              if rr.rtype in (req.qtype, QTYPE.CNAME))
        return bool(upstream.header.tc)


POD_MODES = ("disabled", "insecure", "verified")


def interface_addresses() -> list[str]:
    """The addresses of this network namespace's interfaces (a pod's own IPs), from Linux's
    /proc/net/fib_trie (IPv4) and /proc/net/if_inet6; nothing where those cannot be read."""
    found: list[str] = []
    try:
        trie = Path("/proc/net/fib_trie").read_text(encoding="ascii")
    except OSError:
        trie = ""
    last = ""
    for line in trie.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("|--", "+--"):
            last = words[1]
        elif words[:3] == ["/32", "host", "LOCAL"] and last:
            found.append(last)  # a /32 host route in a LOCAL table is an address of ours
    try:
        inet6 = Path("/proc/net/if_inet6").read_text(encoding="ascii")
    except OSError:
        inet6 = ""
    for line in inet6.splitlines():
        words = line.split()
        if words and len(words[0]) == 32:
            found.append(str(ipaddress.IPv6Address(bytes.fromhex(words[0]))))
    return list(dict.fromkeys(found))


def own_addresses(binds: Iterable[str], interfaces: Iterable[str] | None = None
                  ) -> tuple[str, ...]:
    """This server's own addresses, as CoreDNS's kubernetes plugin finds them for the NS
    records: the block's `bind` addresses, or with none (or an unspecified one) the pod's
    interface addresses; never loopback (nor link-local, which no endpoint has)."""
    bound: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in binds:
        try:
            bound.append(ipaddress.ip_address(text))
        except ValueError:
            continue  # an interface name: not resolved (see corefile-compat.md, bind)
    if bound and not any(ip.is_unspecified for ip in bound):
        return _routable(str(ip) for ip in bound)
    return _routable(interface_addresses() if interfaces is None else interfaces)


def _routable(addresses: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for text in addresses:
        ip = ipaddress.ip_address(text)
        if not (ip.is_loopback or ip.is_link_local) and str(ip) not in out:
            out.append(str(ip))
    return tuple(out)


def parse_config(directive: Any, block_zones: tuple[str, ...],
                 binds: Iterable[str] = ()) -> KubernetesConfig:
    """The `kubernetes [ZONES…] { … }` stanza, with CoreDNS's checks and error messages.
    `binds` are the server block's `bind` addresses (for the NS records)."""
    zones = zone_args(directive.args) or block_zones
    records: dict[str, Any] = {"zones": zones, "local_ips": own_addresses(binds)}
    api: dict[str, Any] = {}
    for opt in directive.block:
        args = opt.args
        name = opt.name
        if name == "endpoint":
            opt.arg_count(1, 1)
            api["endpoint"] = args[0]
        elif name == "tls":
            opt.arg_count(3, 3)
            api["tls"] = (args[0], args[1], args[2])
        elif name == "kubeconfig":
            opt.arg_count(1, 2)
            api["kubeconfig"] = args[0]
            api["context"] = args[1] if len(args) > 1 else None
        elif name == "namespaces":
            opt.arg_count(1, None)
            records["namespaces"] = frozenset(a.lower() for a in args)
            api["namespaces"] = tuple(a.lower() for a in args)
        elif name == "labels":
            opt.arg_count(1, None)
            api["labels"] = " ".join(args)
        elif name == "namespace_labels":
            opt.arg_count(1, None)
            api["namespace_labels"] = " ".join(args)
        elif name == "pods":
            opt.arg_count(1, 1)
            if args[0] not in POD_MODES:
                raise opt.error(f"value for pods must be one of: "
                                f"{', '.join(POD_MODES)}")
            records["pods"] = args[0]
            api["watch_pods"] = args[0] == "verified"
        elif name == "endpoint_pod_names":
            opt.arg_count(0, 0)
            records["endpoint_pod_names"] = True
        elif name == "ttl":
            opt.arg_count(1, 1)
            ttl = _int(opt, args[0])
            if not 0 <= ttl <= 3600:
                raise opt.error(f"ttl must be in range [0, 3600]: {ttl}")
            records["ttl"] = ttl
        elif name == "noendpoints":
            opt.arg_count(0, 0)
            records["noendpoints"] = True
        elif name == "fallthrough":
            records["fallthrough"] = zone_args(args)
        elif name == "ignore":
            opt.arg_count(1, 1)
            if args[0] != "empty_service":
                raise opt.error(f"unable to parse ignore value: '{args[0]}'")
            records["ignore_empty_service"] = True
        elif name == "startup_timeout":
            opt.arg_count(1, 1)
            api["startup_timeout"] = parse_duration(opt, args[0])
        elif name in ("apiserver_qps", "apiserver_burst", "apiserver_max_inflight"):
            opt.arg_count(1, 1)  # client-go rate limits: our watcher makes one watch per kind
        elif name == "multicluster":
            raise opt.error("multicluster is not supported (see corefile-compat.md)")
        else:
            raise opt.error(f"unknown property '{name}'")
    return KubernetesConfig(KubernetesOptions(**records), ApiSettings(**api))


def _int(opt: Any, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise opt.error(f"{opt.name} must be an integer: {text!r}") from None


def parse_duration(opt: Any, text: str) -> float:
    """A Go duration (`5s`, `1m30s`, `500ms`) in seconds."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise opt.error(f"{opt.name}: invalid duration {text!r}")
    for number, unit in parts:
        total += float(number) * units[unit]
    return total
