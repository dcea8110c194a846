"""Trimming Kubernetes API objects (plain dicts) into the few immutable fields DNS needs.

Like CoreDNS's `plugin/kubernetes/object`, memory scales with what DNS serves, not with what the
API sends. Every converter validates what it keeps and raises `InvalidObject` naming the object.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from typing import Any, NamedTuple

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_DNS_NAME = re.compile(r"^(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                       r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?$")
PROTOCOLS = ("TCP", "UDP", "SCTP")


class InvalidObject(ValueError):
    """An API object DNS cannot use; the message names the object and the field."""


class Port(NamedTuple):
    """A service or endpoint port. `port` is -1 for the sentinel of an object without ports."""

    name: str
    protocol: str
    port: int


class Service(NamedTuple):
    namespace: str
    name: str
    type: str
    cluster_ips: tuple[str, ...]  # canonical text; empty for headless and ExternalName
    headless: bool
    external_name: str  # lower-case, no trailing dot; "" unless type ExternalName
    ports: tuple[Port, ...]


class EndpointAddress(NamedTuple):
    ip: str
    hostname: str  # the slice endpoint's `hostname`, or ""
    target_name: str  # the targetRef's name when it is a Pod, or ""
    node_name: str


class EndpointSlice(NamedTuple):
    namespace: str
    name: str
    service: str
    addresses: tuple[EndpointAddress, ...]  # ready endpoints only: nothing else is ever served
    ports: tuple[Port, ...]


class Namespace(NamedTuple):
    name: str
    labels: tuple[tuple[str, str], ...]


class Pod(NamedTuple):
    namespace: str
    name: str
    ips: tuple[str, ...]


# Without ports a service still has A records; CoreDNS keeps a port -1 sentinel for that case.
NO_PORTS = (Port("", "", -1),)

_intern = sys.intern


def object_name(obj: Any) -> str:
    """`namespace/name` of an API dict, as far as it can be read, for messages."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return "<no metadata>"
    ns, name = meta.get("namespace"), meta.get("name")
    name = name if isinstance(name, str) and name else "<no name>"
    return f"{ns}/{name}" if isinstance(ns, str) and ns else name


def _meta(obj: Any, kind: str, namespaced: bool = True) -> tuple[str, str]:
    if not isinstance(obj, dict):
        raise InvalidObject(f"{kind}: not an object")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise InvalidObject(f"{kind} {object_name(obj)}: missing metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidObject(f"{kind} {object_name(obj)}: missing metadata.name")
    ns = meta.get("namespace", "")
    if namespaced and (not isinstance(ns, str) or not ns):
        raise InvalidObject(f"{kind} {name}: missing metadata.namespace")
    return _intern(ns.lower()) if namespaced else "", _intern(name.lower())


def canonical_ip(text: Any, what: str) -> str:
    """The canonical text of an IP address, or InvalidObject naming `what`."""
    if not isinstance(text, str):
        raise InvalidObject(f"{what}: not an IP address: {text!r}")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InvalidObject(f"{what}: not an IP address: {text!r}") from None


def _ports(raw: Any, what: str, port_key: str = "port") -> tuple[Port, ...]:
    if raw is None:
        return NO_PORTS
    if not isinstance(raw, list):
        raise InvalidObject(f"{what}: ports is not a list")
    ports = []
    for p in raw:
        if not isinstance(p, dict):
            raise InvalidObject(f"{what}: a port is not an object")
        number = p.get(port_key)
        if number is None:
            number = -1  # an EndpointSlice port may leave it unset: "all ports"
        elif not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            raise InvalidObject(f"{what}: port {number!r} is not in 1-65535")
        protocol = p.get("protocol") or "TCP"
        if protocol not in PROTOCOLS:
            raise InvalidObject(f"{what}: unknown protocol {protocol!r}")
        name = p.get("name") or ""
        if not isinstance(name, str):
            raise InvalidObject(f"{what}: port name {name!r} is not a string")
        ports.append(Port(_intern(name.lower()), _intern(protocol), number))
    return tuple(ports) or NO_PORTS


def to_service(obj: Any) -> Service:
    ns, name = _meta(obj, "Service")
    what = f"Service {ns}/{name}"
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise InvalidObject(f"{what}: missing spec")
    svc_type = spec.get("type") or "ClusterIP"
    ports = _ports(spec.get("ports"), what)
    if svc_type == "ExternalName":
        target = spec.get("externalName")
        if not isinstance(target, str) or not target:
            raise InvalidObject(f"{what}: ExternalName service without externalName")
        target = target.rstrip(".").lower()
        if not _DNS_NAME.match(target) and not is_ip(target):
            raise InvalidObject(f"{what}: externalName {target!r} is not a DNS name")
        return Service(ns, name, svc_type, (), False, target, ports)
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    if not isinstance(ips, list):
        raise InvalidObject(f"{what}: clusterIPs is not a list")
    if ips and ips[0] == "None":
        return Service(ns, name, svc_type, (), True, "", ports)
    cluster_ips = tuple(canonical_ip(ip, f"{what}: clusterIP") for ip in ips)
    return Service(ns, name, svc_type, cluster_ips, False, "", ports)


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def to_endpoint_slice(obj: Any) -> EndpointSlice | None:
    """The slice's ready addresses; None for slices DNS never serves (FQDN address type)."""
    ns, name = _meta(obj, "EndpointSlice")
    what = f"EndpointSlice {ns}/{name}"
    labels = obj["metadata"].get("labels") or {}
    service = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, dict) else None
    if not isinstance(service, str) or not service:
        raise InvalidObject(f"{what}: missing label {SERVICE_NAME_LABEL}")
    address_type = obj.get("addressType", "IPv4")
    if address_type == "FQDN":
        return None
    if address_type not in ("IPv4", "IPv6"):
        raise InvalidObject(f"{what}: unknown addressType {address_type!r}")
    endpoints = obj.get("endpoints") or []
    if not isinstance(endpoints, list):
        raise InvalidObject(f"{what}: endpoints is not a list")
    addresses = []
    for ep in endpoints:
        if not isinstance(ep, dict):
            raise InvalidObject(f"{what}: an endpoint is not an object")
        conditions = ep.get("conditions") or {}
        # `ready` unset means ready (the API's own rule for consumers).
        if isinstance(conditions, dict) and conditions.get("ready") is False:
            continue
        hostname = ep.get("hostname") or ""
        target = ep.get("targetRef") or {}
        target_name = target.get("name", "") if isinstance(target, dict) else ""
        if isinstance(target, dict) and target.get("kind", "Pod") != "Pod":
            target_name = ""
        node = ep.get("nodeName") or ""
        raw_addresses = ep.get("addresses") or []
        if not isinstance(raw_addresses, list):
            raise InvalidObject(f"{what}: addresses is not a list")
        for a in raw_addresses:
            ip = canonical_ip(a, f"{what}: endpoint address")
            if (":" in ip) != (address_type == "IPv6"):
                raise InvalidObject(f"{what}: address {ip} does not match addressType")
            addresses.append(EndpointAddress(ip, _intern(str(hostname).lower()),
                                             str(target_name).lower(), _intern(str(node))))
    ports = _ports(obj.get("ports"), what)
    return EndpointSlice(ns, name, _intern(service.lower()), tuple(addresses), ports)


def to_namespace(obj: Any) -> Namespace:
    _, name = _meta(obj, "Namespace", namespaced=False)
    labels = obj["metadata"].get("labels") or {}
    items = tuple(sorted((str(k), str(v)) for k, v in labels.items())) if isinstance(
        labels, dict) else ()
    return Namespace(name, items)


def to_pod(obj: Any) -> Pod | None:
    """The pod's IPs; None for pods DNS ignores (finished, or without an IP yet)."""
    ns, name = _meta(obj, "Pod")
    what = f"Pod {ns}/{name}"
    status = obj.get("status") or {}
    if not isinstance(status, dict):
        raise InvalidObject(f"{what}: status is not an object")
    if status.get("phase") in ("Succeeded", "Failed", "Unknown"):
        return None
    raw = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
    if not raw and status.get("podIP"):
        raw = [status["podIP"]]
    if not raw:
        return None
    return Pod(ns, name, tuple(canonical_ip(ip, f"{what}: podIP") for ip in raw))


def key_of(kind: str, obj: Any) -> tuple[str, str]:
    """(namespace, name) of an API dict, for deletions, where only the key matters."""
    return _meta(obj, kind, namespaced=kind != "Namespace")


CONVERTERS = {
    "Service": to_service,
    "EndpointSlice": to_endpoint_slice,
    "Namespace": to_namespace,
    "Pod": to_pod,
}
