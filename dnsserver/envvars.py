"""Service environment variables exactly as the kubelet renders them into a container.

Owns the docker-link-style variables (`FOO_SERVICE_HOST`, `FOO_PORT_80_TCP`, ...), which
services a pod in a namespace sees, and the kubelet's `$(VAR)` expansion. Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EnvVarsError",
    "expand",
    "for_pod",
    "from_services",
    "service_map",
    "variable_name",
]

# The kubelet injects these from the master service namespace even when service links are off.
MASTER_NAMESPACE = "default"
MASTER_SERVICES = frozenset({"kubernetes"})

PROTOCOLS = ("TCP", "UDP", "SCTP")


class EnvVarsError(ValueError):
    """A Service or container variable that cannot be rendered; the message names it."""


@dataclass(frozen=True, slots=True)
class _Port:
    name: str
    port: int
    protocol: str  # upper case, one of PROTOCOLS


@dataclass(frozen=True, slots=True)
class _Service:
    namespace: str
    name: str
    cluster_ip: str  # verbatim, as the API has it: "2001:DB8::" stays upper case
    ports: tuple[_Port, ...]


# --- reading Service objects (API dicts or kubernetes client models) --------------------------


def _field(obj: Any, key: str, attr: str) -> Any:
    """One field of an API dict (camelCase key) or of a client model (snake_case attribute)."""
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, attr, None)


def _identity(obj: Any) -> tuple[str | None, str | None]:
    """(namespace, name) of an object, each None where missing or not a non-empty string."""
    meta = _field(obj, "metadata", "metadata")
    if meta is None:
        return None, None
    namespace, name = _field(meta, "namespace", "namespace"), _field(meta, "name", "name")
    return (
        namespace if isinstance(namespace, str) and namespace else None,
        name if isinstance(name, str) and name else None,
    )


def _label(obj: Any) -> str:
    """How an error names a Service: namespace/name, as far as the object tells."""
    namespace, name = _identity(obj)
    if name is None:
        return "Service <unnamed>"
    return f"Service {namespace}/{name}" if namespace else f"Service {name}"


def _cluster_ip(spec: Any, label: str) -> str:
    ip = _field(spec, "clusterIP", "cluster_ip")
    if ip is None:
        # spec.clusterIP always equals clusterIPs[0] on an API server; a hand-written
        # snapshot may carry only the list, so read its primary entry.
        ips = _field(spec, "clusterIPs", "cluster_ips")
        if ips is None and not isinstance(spec, Mapping):
            ips = getattr(spec, "cluster_i_ps", None)  # the client's older generated name
        if isinstance(ips, list | tuple) and ips:
            ip = ips[0]
    if ip is None:
        return ""
    if not isinstance(ip, str):
        raise EnvVarsError(f"{label}: spec.clusterIP must be a string, got {ip!r}")
    return ip


def _port(raw: Any, index: int, label: str) -> _Port:
    where = f"{label}: spec.ports[{index}]"
    if raw is None or isinstance(raw, str | int | list):
        raise EnvVarsError(f"{where} must be an object with a port, got {raw!r}")
    number = _field(raw, "port", "port")
    # bool is an int subclass; `port: true` in YAML is a mistake, not port 1.
    if not isinstance(number, int) or isinstance(number, bool):
        raise EnvVarsError(f"{where}.port must be an integer, got {number!r}")
    if not 1 <= number <= 65535:
        raise EnvVarsError(f"{where}.port {number} is outside 1-65535")
    name = _field(raw, "name", "name") or ""
    if not isinstance(name, str):
        raise EnvVarsError(f"{where}.name must be a string, got {name!r}")
    protocol = _field(raw, "protocol", "protocol") or "TCP"
    if not isinstance(protocol, str) or protocol.upper() not in PROTOCOLS:
        raise EnvVarsError(f"{where}.protocol must be TCP, UDP or SCTP, got {protocol!r}")
    return _Port(name=name, port=number, protocol=protocol.upper())


def _read_service(obj: Any) -> _Service | None:
    """Trim one Service to what the variables need; None when it has no ClusterIP."""
    label = _label(obj)
    if isinstance(obj, Mapping):
        kind = obj.get("kind")
        if kind is not None and kind != "Service":
            raise EnvVarsError(f"{label}: is a {kind}, not a Service")
    elif not hasattr(obj, "spec"):
        raise EnvVarsError(f"expected a Service (dict or client model), got {type(obj).__name__}")
    spec = _field(obj, "spec", "spec")
    if spec is None:
        spec = {}
    elif isinstance(spec, str | int | list):
        raise EnvVarsError(f"{label}: spec must be an object, got {spec!r}")
    ip = _cluster_ip(spec, label)
    # The kubelet's IsServiceIPSet: headless ("None") and ExternalName ("") services have none.
    if ip in ("", "None"):
        return None
    namespace, name = _identity(obj)
    if name is None:
        raise EnvVarsError(f"{label} with clusterIP {ip}: metadata.name is missing")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise EnvVarsError(f"{label}: spec.clusterIP {ip!r} is not an IP address") from None
    raw_ports = _field(spec, "ports", "ports")
    if raw_ports is not None and not isinstance(raw_ports, list | tuple):
        raise EnvVarsError(f"{label}: spec.ports must be a list, got {raw_ports!r}")
    if not raw_ports:
        # The kubelet would index ports[0] and crash; the API server never allows this.
        raise EnvVarsError(f"{label}: has clusterIP {ip} but no ports")
    return _Service(
        namespace=namespace or MASTER_NAMESPACE,
        name=name,
        cluster_ip=ip,
        ports=tuple(_port(p, i, label) for i, p in enumerate(raw_ports)),
    )


# --- FromServices ---------------------------------------------------------------------------


def variable_name(name: str) -> str:
    """A Service or port name as it appears in a variable name: upper case, dashes made `_`."""
    return name.replace("-", "_").upper()


def _host_port(ip: str, port: int) -> str:
    # Go's net.JoinHostPort: brackets exactly when the host contains a colon.
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _service_variables(svc: _Service) -> list[tuple[str, str]]:
    prefix = variable_name(svc.name)
    first = svc.ports[0]
    out = [
        (f"{prefix}_SERVICE_HOST", svc.cluster_ip),
        (f"{prefix}_SERVICE_PORT", str(first.port)),
    ]
    # Only the first port may be unnamed (API validation), but any unnamed one is skipped here.
    out += [
        (f"{prefix}_SERVICE_PORT_{variable_name(p.name)}", str(p.port))
        for p in svc.ports
        if p.name
    ]
    for i, p in enumerate(svc.ports):
        url = f"{p.protocol.lower()}://{_host_port(svc.cluster_ip, p.port)}"
        if i == 0:
            out.append((f"{prefix}_PORT", url))  # docker's special case for the first port
        port_prefix = f"{prefix}_PORT_{p.port}_{p.protocol}"
        out += [
            (port_prefix, url),
            (f"{port_prefix}_PROTO", p.protocol.lower()),
            (f"{port_prefix}_PORT", str(p.port)),
            (f"{port_prefix}_ADDR", svc.cluster_ip),
        ]
    return out


def from_services(services: Iterable[Any]) -> list[tuple[str, str]]:
    """The kubelet's `FromServices`: (name, value) pairs for each Service, in input order.

    Services without a ClusterIP are skipped. Duplicate names are kept, as the kubelet's list
    keeps them; `for_pod` resolves them. Raises EnvVarsError naming a malformed Service.
    """
    result: list[tuple[str, str]] = []
    for obj in services:
        svc = _read_service(obj)
        if svc is not None:
            result += _service_variables(svc)
    return result


# --- $(VAR) expansion -----------------------------------------------------------------------


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Expand `$(NAME)` references as the kubelet does (its forked `expansion.Expand`).

    `$$` is a literal `$`; a reference `lookup` returns None for stays as written, as do a `$`
    before anything else, an unterminated `$(` and a `$` at the end.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0 or j == n - 1:
            out.append(text[i:])
            break
        out.append(text[i:j])
        nxt = text[j + 1]
        if nxt == "$":
            out.append("$")
            i = j + 2
        elif nxt == "(":
            close = text.find(")", j + 2)
            if close < 0:
                # Unterminated: emit "$(" and go on scanning right after it.
                out.append("$(")
                i = j + 2
            else:
                ref = text[j + 2 : close]
                value = lookup(ref)
                out.append(f"$({ref})" if value is None else value)
                i = close + 1
        else:
            out.append("$" + nxt)
            i = j + 2
    return "".join(out)


# --- what a pod sees ------------------------------------------------------------------------


def _container_pairs(container_env: Any) -> list[tuple[str, str]]:
    """Container variables as (name, value): a mapping, pairs, or API `env` entries."""
    if container_env is None:
        return []
    if isinstance(container_env, Mapping):
        items: Iterable[Any] = container_env.items()
    elif isinstance(container_env, str | bytes):
        raise EnvVarsError("container_env must be a mapping or a list, not a string")
    else:
        items = container_env
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            name, value = item.get("name"), item.get("value")
            if item.get("valueFrom") is not None:
                raise EnvVarsError(
                    f"container env[{i}] {name!r}: valueFrom needs the running pod; "
                    "give its value instead"
                )
            value = "" if value is None else value
        elif isinstance(item, tuple | list) and len(item) == 2:
            name, value = item
        else:
            raise EnvVarsError(f"container env[{i}]: expected (name, value) or {{name, value}}")
        if not isinstance(name, str) or not name:
            raise EnvVarsError(f"container env[{i}]: name must be a non-empty string")
        if not isinstance(value, str):
            raise EnvVarsError(f"container env[{i}] {name}: value must be a string, got {value!r}")
        pairs.append((name, value))
    return pairs


def service_map(
    services: Iterable[Any], namespace: str, enable_service_links: bool = True
) -> dict[str, str]:
    """The kubelet's `getServiceEnvVarMap`: service variables for a pod in `namespace`.

    Order (the kubelet's is Go map order, i.e. random): services by name, each in
    `from_services` order. Where two services produce one name the later service wins.
    """
    chosen: dict[str, _Service] = {}
    for obj in services:
        # Choose by identity before reading the rest: a malformed Service in a namespace this
        # pod never sees must not stop it (and reading is most of the cost in big clusters).
        # An object written without a namespace counts as "default", as `kubectl create` does.
        ns, name = _identity(obj)
        ns = ns or MASTER_NAMESPACE
        is_master = ns == MASTER_NAMESPACE and name in MASTER_SERVICES
        if not is_master and not (ns == namespace and enable_service_links):
            continue
        svc = _read_service(obj)
        if svc is None:
            continue
        if is_master:
            # Always present, but a same-namespace service of that name takes precedence.
            chosen.setdefault(svc.name, svc)
        else:
            chosen[svc.name] = svc
    env: dict[str, str] = {}
    for name in sorted(chosen):
        env.update(_service_variables(chosen[name]))
    return env


def for_pod(
    services: Iterable[Any],
    namespace: str,
    enable_service_links: bool = True,
    container_env: Any = None,
) -> list[tuple[str, str]]:
    """The (name, value) environment a container in `namespace` starts with.

    `services` are all the cluster's Services (every namespace). `container_env` holds the
    container's own literal variables (mapping, pairs or API `env` entries); they win over
    service variables and have their `$(VAR)` references expanded against the variables
    declared before them, then the service variables. Container variables come first, in
    declaration order, then the remaining service variables.
    """
    services_env = service_map(services, namespace, enable_service_links)
    declared: dict[str, str] = {}

    def lookup(ref: str) -> str | None:
        # The kubelet's mapping: earlier container variables first, then service variables.
        if ref in declared:
            return declared[ref]
        return services_env.get(ref)

    for name, value in _container_pairs(container_env):
        declared[name] = expand(value, lookup)
    result = list(declared.items())
    result += [(k, v) for k, v in services_env.items() if k not in declared]
    return result
