"""Synthetic cluster for the benchmark: one model written three ways that must agree.

Writes a `kubectl get -o json` style snapshot, the same DNS records as an RFC 1035 zone for
`cluster.local.` (CoreDNS's schema), and dnsperf query files for mixes (a) to (c).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ZONE = "cluster.local"
TTL = 5
SERVICE_CIDR_BASE = int(ipaddress.IPv4Address("10.96.0.0"))
POD_CIDR = ipaddress.IPv4Network("10.244.0.0/14")  # 262k addresses: room for 150k pods
KUBE_DNS_IP = "10.96.0.10"
SERVICES_PER_NAMESPACE = 20
HEADLESS_EVERY = 10  # 10% of services are headless
HEADLESS_ENDPOINTS = 20
CLUSTERIP_ENDPOINTS = 3
# (name, protocol, port, targetPort): CoreDNS answers ClusterIP SRV with the service port and
# headless SRV with the endpoint port, so the two differ on purpose to catch a mix-up.
PORT_CHOICES = (
    ("http", "TCP", 80, 8080),
    ("https", "TCP", 443, 8443),
    ("grpc", "TCP", 9090, 9091),
    ("metrics", "TCP", 9100, 9100),
    ("dns", "UDP", 53, 5353),
)
# What a pod in namespace `default` tries first for a name with fewer than 5 dots (ndots:5).
SEARCH_SUFFIXES = ("default.svc.cluster.local", "svc.cluster.local", "cluster.local")
CREATED = "2026-01-01T00:00:00Z"


@dataclass
class Endpoint:
    ip: str
    pod: str
    node: str
    hostname: str | None = None

    @property
    def dns_label(self) -> str:
        return self.hostname or self.ip.replace(".", "-")


@dataclass
class Service:
    name: str
    namespace: str
    cluster_ip: str | None  # None: headless
    ports: list[tuple[str, str, int, int]]
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{ZONE}."


@dataclass
class Cluster:
    namespaces: list[str]
    services: list[Service]
    extra_pods: list[tuple[str, str, str, str]]  # (namespace, name, ip, node) not behind a service


class _PodIPs:
    """Hands out pod IPs in order from the pod CIDR, skipping .0 and .255 for realism."""

    def __init__(self) -> None:
        self._next = int(POD_CIDR.network_address) + 1

    def take(self) -> tuple[str, str]:
        while self._next & 0xFF in (0, 255):
            self._next += 1
        ip = ipaddress.IPv4Address(self._next)
        self._next += 1
        if ip not in POD_CIDR:
            raise ValueError("pod CIDR exhausted")
        # One node per /24, as a node IPAM allocator would hand out.
        return str(ip), f"node-{(self._next >> 8) & 0x3FF:04d}"


def build_cluster(
    services: int, endpoints: int | None = None, pods: int | None = None, seed: int = 1
) -> Cluster:
    """Model a cluster of `services` generated services plus `default/kubernetes`.

    `endpoints` is the total endpoint count to spread over ClusterIP services (headless ones
    always get 20); `pods` pads with pods no service selects. Both default to the bench shape.
    """
    rng = random.Random(seed)
    n_ns = max(1, services // SERVICES_PER_NAMESPACE)
    namespaces = ["default", "kube-system"] + [f"ns-{i:04d}" for i in range(n_ns)]
    n_headless = sum(1 for i in range(services) if i % HEADLESS_EVERY == HEADLESS_EVERY // 2)
    n_clusterip = services - n_headless
    if endpoints is None:
        per_cip = [CLUSTERIP_ENDPOINTS] * n_clusterip
    else:
        rest = max(0, endpoints - n_headless * HEADLESS_ENDPOINTS)
        base, extra = divmod(rest, max(1, n_clusterip))
        per_cip = [base + (1 if k < extra else 0) for k in range(n_clusterip)]
    ips = _PodIPs()
    svcs: list[Service] = [
        Service("kubernetes", "default", "10.96.0.1", [("https", "TCP", 443, 6443)],
                [Endpoint("10.0.0.10", "", "control-plane")]),
    ]
    cip_index = 0
    for i in range(services):
        ns = namespaces[2 + i % n_ns]
        headless = i % HEADLESS_EVERY == HEADLESS_EVERY // 2
        n_ports = 1 + rng.randrange(2 if headless else 3)
        ports = sorted(rng.sample(PORT_CHOICES, n_ports))
        name = f"svc-{i:05d}"
        if headless:
            svc = Service(name, ns, None, ports)
            count = HEADLESS_ENDPOINTS
            # A third of headless services are StatefulSet-like: endpoints carry hostnames.
            stateful = (i // HEADLESS_EVERY) % 3 == 0
        else:
            addr = ipaddress.IPv4Address(SERVICE_CIDR_BASE + 256 + i)
            svc = Service(name, ns, str(addr), ports)
            count = per_cip[cip_index]
            cip_index += 1
            stateful = False
        for k in range(count):
            ip, node = ips.take()
            pod = f"{name}-{k}" if stateful else f"{name}-{rng.getrandbits(40):010x}"
            svc.endpoints.append(Endpoint(ip, pod, node, f"{name}-{k}" if stateful else None))
        svcs.append(svc)
    extra: list[tuple[str, str, str, str]] = []
    behind = sum(len(s.endpoints) for s in svcs[1:])
    for k in range(max(0, (pods or 0) - behind)):
        ip, node = ips.take()
        extra.append((namespaces[2 + k % n_ns], f"job-{k:06d}", ip, node))
    return Cluster(namespaces, svcs, extra)


# --- snapshot -------------------------------------------------------------------------------


def _meta(name: str, namespace: str | None, uid: int, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "uid": f"00000000-0000-4000-8000-{uid:012x}",
        "resourceVersion": str(1000 + uid),
        "creationTimestamp": CREATED,
    }
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def _pod(ns: str, name: str, ip: str, node: str, uid: int, labels: dict[str, str],
         hostname: str | None = None, subdomain: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeName": node,
        "containers": [{
            "name": "app",
            "image": "registry.example/app:1.0",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        }],
        "dnsPolicy": "ClusterFirst",
        "restartPolicy": "Always",
    }
    if hostname:
        spec["hostname"] = hostname
        spec["subdomain"] = subdomain
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(name, ns, uid, labels=labels),
        "spec": spec,
        "status": {
            "phase": "Running",
            "hostIP": "172.18.0.2",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def snapshot_items(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """Yield every API object of the cluster, in the shape `kubectl get -o json` prints."""
    uid = 0
    for ns in cluster.namespaces:
        uid += 1
        yield {"apiVersion": "v1", "kind": "Namespace",
               "metadata": _meta(ns, None, uid, labels={"kubernetes.io/metadata.name": ns}),
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
    for svc in cluster.services:
        uid += 1
        labels = {"app": svc.name}
        spec: dict[str, Any] = {
            "type": "ClusterIP",
            "clusterIP": svc.cluster_ip or "None",
            "clusterIPs": [svc.cluster_ip or "None"],
            "ipFamilies": ["IPv4"],
            "ports": [{"name": n, "protocol": p, "port": port, "targetPort": tp}
                      for n, p, port, tp in svc.ports],
            "selector": labels,
            "sessionAffinity": "None",
        }
        yield {"apiVersion": "v1", "kind": "Service",
               "metadata": _meta(svc.name, svc.namespace, uid, labels=labels),
               "spec": spec, "status": {"loadBalancer": {}}}
        uid += 1
        svc_uid = uid - 1
        eps = []
        for ep in svc.endpoints:
            e: dict[str, Any] = {"addresses": [ep.ip],
                                 "conditions": {"ready": True, "serving": True,
                                                "terminating": False}}
            if ep.node != "control-plane":
                e["nodeName"] = ep.node
                e["targetRef"] = {"kind": "Pod", "namespace": svc.namespace, "name": ep.pod}
            if ep.hostname:
                e["hostname"] = ep.hostname
            eps.append(e)
        owner = [{"apiVersion": "v1", "kind": "Service", "name": svc.name, "controller": True,
                  "blockOwnerDeletion": True,
                  "uid": f"00000000-0000-4000-8000-{svc_uid:012x}"}]
        yield {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": _meta(f"{svc.name}-{uid:05x}"[-63:], svc.namespace, uid, labels={
                   "kubernetes.io/service-name": svc.name,
                   "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
               }, ownerReferences=owner),
               "addressType": "IPv4",
               "endpoints": eps,
               "ports": [{"name": n, "protocol": p, "port": tp} for n, p, _, tp in svc.ports]}
    for svc in cluster.services:
        for ep in svc.endpoints:
            if ep.node == "control-plane":
                continue
            uid += 1
            yield _pod(svc.namespace, ep.pod, ep.ip, ep.node, uid, {"app": svc.name},
                       ep.hostname, svc.name if ep.hostname else None)
    for ns, name, ip, node in cluster.extra_pods:
        uid += 1
        yield _pod(ns, name, ip, node, uid, {"app": "batch"})


def write_snapshot(cluster: Cluster, path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write('{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[\n')
        for n, item in enumerate(snapshot_items(cluster)):
            if n:
                f.write(",\n")
            f.write(json.dumps(item, separators=(",", ":")))
        f.write("\n]}\n")


# --- zone -----------------------------------------------------------------------------------


def srv_weight(n: int) -> int:
    # CoreDNS splits 100 evenly over the records sharing a priority.
    return 100 // n


def zone_lines(cluster: Cluster, ttl: int = TTL) -> Iterator[str]:
    """The cluster's records as CoreDNS would answer them, relative to $ORIGIN cluster.local.

    `ttl` is the kubernetes plugin's `ttl` (CoreDNS's default 5; kubeadm's Corefile says 30).
    """
    yield f"$ORIGIN {ZONE}."
    yield f"$TTL {ttl}"
    yield f"@ IN SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 {ttl}"
    yield f"@ IN NS ns.dns.{ZONE}."
    yield f"ns.dns IN A {KUBE_DNS_IP}"
    for svc in cluster.services:
        rel = f"{svc.name}.{svc.namespace}.svc"
        if svc.cluster_ip:
            yield f"{rel} IN A {svc.cluster_ip}"
            for name, proto, port, _ in svc.ports:
                yield f"_{name}._{proto.lower()}.{rel} IN SRV 0 100 {port} {svc.fqdn}"
        else:
            for ep in svc.endpoints:
                yield f"{rel} IN A {ep.ip}"
            w = srv_weight(len(svc.endpoints))
            for name, proto, _, target_port in svc.ports:
                for ep in svc.endpoints:
                    yield (f"_{name}._{proto.lower()}.{rel} IN SRV 0 {w} {target_port} "
                           f"{ep.dns_label}.{svc.fqdn}")
        # CoreDNS answers endpoint names of ClusterIP services too, not only headless ones.
        for ep in svc.endpoints:
            yield f"{ep.dns_label}.{rel} IN A {ep.ip}"


def write_zone(cluster: Cluster, path: Path, ttl: int = TTL) -> None:
    path.write_text("\n".join(zone_lines(cluster, ttl)) + "\n", encoding="utf-8")


# --- query files ----------------------------------------------------------------------------


def hot_query(cluster: Cluster) -> str:
    svc = next(s for s in cluster.services[1:] if s.cluster_ip)
    return f"{svc.fqdn[:-1]} A"


def mix_queries(cluster: Cluster, count: int, seed: int = 2) -> list[str]:
    """70% A of ClusterIP services, 10% SRV of named ports, 10% search-path NXDOMAIN,
    10% A of headless services (20 records each)."""
    rng = random.Random(seed)
    generated = cluster.services[1:]
    cip = [s for s in generated if s.cluster_ip]
    headless = [s for s in generated if not s.cluster_ip]
    lines = []
    for _ in range(count):
        r = rng.random()
        if r < 0.7:
            lines.append(f"{rng.choice(cip).fqdn[:-1]} A")
        elif r < 0.8:
            svc = rng.choice(cip)
            name, proto, _, _ = rng.choice(svc.ports)
            lines.append(f"_{name}._{proto.lower()}.{svc.fqdn[:-1]} SRV")
        elif r < 0.9:
            svc = rng.choice(generated)
            lines.append(f"{svc.fqdn[:-1]}.{rng.choice(SEARCH_SUFFIXES)} A")
        else:
            lines.append(f"{rng.choice(headless).fqdn[:-1]} A")
    return lines


def write_queries(lines: list[str], path: Path) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- command line ---------------------------------------------------------------------------


def generate(out: Path, services: int, endpoints: int | None = None, pods: int | None = None,
             queries: int = 100_000, seed: int = 1, zone: bool = True) -> dict[str, Path]:
    """Write snapshot.json, cluster.local.zone, mix-hot.txt and mix-real.txt under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    cluster = build_cluster(services, endpoints, pods, seed)
    paths = {"snapshot": out / "snapshot.json"}
    write_snapshot(cluster, paths["snapshot"])
    if zone:
        paths["zone"] = out / f"{ZONE}.zone"
        write_zone(cluster, paths["zone"])
        paths["hot"] = out / "mix-hot.txt"
        write_queries([hot_query(cluster)], paths["hot"])
        paths["real"] = out / "mix-real.txt"
        write_queries(mix_queries(cluster, queries, seed + 1), paths["real"])
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, help="total endpoints (default: 3 per ClusterIP)")
    ap.add_argument("--pods", type=int, help="total pods (default: one per endpoint)")
    ap.add_argument("--scale", action="store_true",
                    help="item 5 shape: 10k services, 100k endpoints, 150k pods, no zone")
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "c1000")
    args = ap.parse_args(argv)
    if args.scale:
        args.services, args.endpoints, args.pods = 10_000, 100_000, 150_000
    t0 = time.monotonic()
    paths = generate(args.out, args.services, args.endpoints, args.pods, args.queries,
                     args.seed, zone=not args.scale)
    for kind, p in paths.items():
        print(f"{kind:9} {p} ({p.stat().st_size / 1e6:.1f} MB)")
    print(f"generated in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
