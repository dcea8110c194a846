"""Table tests for dnsserver.envvars: FromServices, a pod's service selection, $(VAR) expansion."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnsserver.envvars import EnvVarsError, expand, for_pod, from_services, variable_name


def svc(
    name: str,
    ip: Any = "10.0.0.1",
    ports: Any = ((80, None, None),),
    namespace: str | None = "default",
    **spec: Any,
) -> dict[str, Any]:
    """A Service API dict; ports are (port, name, protocol) with None meaning unset."""
    port_list = None
    if ports is not None:
        port_list = []
        for number, pname, proto in ports:
            p: dict[str, Any] = {"port": number}
            if pname is not None:
                p["name"] = pname
            if proto is not None:
                p["protocol"] = proto
            port_list.append(p)
    s: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}}
    if namespace is not None:
        s["metadata"]["namespace"] = namespace
    s["spec"] = {**spec}
    if ip is not None:
        s["spec"]["clusterIP"] = ip
    if port_list is not None:
        s["spec"]["ports"] = port_list
    return s


def link_vars(prefix: str, ip: str, port: int, proto: str, url_host: str) -> list[tuple[str, str]]:
    p = f"{prefix}_PORT_{port}_{proto.upper()}"
    url = f"{proto}://{url_host}:{port}"
    return [(p, url), (f"{p}_PROTO", proto), (f"{p}_PORT", str(port)), (f"{p}_ADDR", ip)]


# --- from_services ---------------------------------------------------------------------------

FROM_SERVICES_CASES = [
    pytest.param(
        [svc("web-front", "10.1.2.3", [(8080, None, "TCP")])],
        [
            ("WEB_FRONT_SERVICE_HOST", "10.1.2.3"),
            ("WEB_FRONT_SERVICE_PORT", "8080"),
            ("WEB_FRONT_PORT", "tcp://10.1.2.3:8080"),
            *link_vars("WEB_FRONT", "10.1.2.3", 8080, "tcp", "10.1.2.3"),
        ],
        id="single-unnamed-tcp",
    ),
    pytest.param(
        [svc("dns-2", "10.9.0.10", [(53, "dns-udp", "UDP"), (53, "dns-tcp", "TCP")])],
        [
            ("DNS_2_SERVICE_HOST", "10.9.0.10"),
            ("DNS_2_SERVICE_PORT", "53"),
            ("DNS_2_SERVICE_PORT_DNS_UDP", "53"),
            ("DNS_2_SERVICE_PORT_DNS_TCP", "53"),
            ("DNS_2_PORT", "udp://10.9.0.10:53"),
            *link_vars("DNS_2", "10.9.0.10", 53, "udp", "10.9.0.10"),
            *link_vars("DNS_2", "10.9.0.10", 53, "tcp", "10.9.0.10"),
        ],
        id="udp-first-named-ports",
    ),
    pytest.param(
        [svc("num", "10.0.0.7", [(9000, None, None), (9001, "9001", None)])],
        [
            ("NUM_SERVICE_HOST", "10.0.0.7"),
            ("NUM_SERVICE_PORT", "9000"),
            ("NUM_SERVICE_PORT_9001", "9001"),
            ("NUM_PORT", "tcp://10.0.0.7:9000"),
            *link_vars("NUM", "10.0.0.7", 9000, "tcp", "10.0.0.7"),
            *link_vars("NUM", "10.0.0.7", 9001, "tcp", "10.0.0.7"),
        ],
        id="numeric-port-name-no-underscore-prefix",
    ),
    pytest.param(
        [svc("v6", "FD00:10::A", [(443, "https", "TCP")])],
        [
            ("V6_SERVICE_HOST", "FD00:10::A"),
            ("V6_SERVICE_PORT", "443"),
            ("V6_SERVICE_PORT_HTTPS", "443"),
            ("V6_PORT", "tcp://[FD00:10::A]:443"),
            *link_vars("V6", "FD00:10::A", 443, "tcp", "[FD00:10::A]"),
        ],
        id="ipv6-bracketed-in-urls-verbatim-elsewhere",
    ),
    pytest.param(
        [svc("sig", "10.0.0.8", [(3868, None, "SCTP")])],
        [
            ("SIG_SERVICE_HOST", "10.0.0.8"),
            ("SIG_SERVICE_PORT", "3868"),
            ("SIG_PORT", "sctp://10.0.0.8:3868"),
            *link_vars("SIG", "10.0.0.8", 3868, "sctp", "10.0.0.8"),
        ],
        id="sctp",
    ),
    pytest.param(
        [svc("lc", "10.0.0.9", [(7, None, "udp")])],
        [
            ("LC_SERVICE_HOST", "10.0.0.9"),
            ("LC_SERVICE_PORT", "7"),
            ("LC_PORT", "udp://10.0.0.9:7"),
            *link_vars("LC", "10.0.0.9", 7, "udp", "10.0.0.9"),
        ],
        id="protocol-case-normalised",
    ),
    pytest.param(
        [
            svc("ds", "10.0.0.5", [(80, None, None)], clusterIPs=["10.0.0.5", "fd00::5"]),
            svc("ds6", "fd00::6", [(80, None, None)], clusterIPs=["fd00::6", "10.0.0.6"]),
        ],
        [
            ("DS_SERVICE_HOST", "10.0.0.5"),
            ("DS_SERVICE_PORT", "80"),
            ("DS_PORT", "tcp://10.0.0.5:80"),
            *link_vars("DS", "10.0.0.5", 80, "tcp", "10.0.0.5"),
            ("DS6_SERVICE_HOST", "fd00::6"),
            ("DS6_SERVICE_PORT", "80"),
            ("DS6_PORT", "tcp://[fd00::6]:80"),
            *link_vars("DS6", "fd00::6", 80, "tcp", "[fd00::6]"),
        ],
        id="dual-stack-primary-only",
    ),
    pytest.param(
        [svc("only-list", None, [(80, None, None)], clusterIPs=["10.0.0.4", "fd00::4"])],
        [
            ("ONLY_LIST_SERVICE_HOST", "10.0.0.4"),
            ("ONLY_LIST_SERVICE_PORT", "80"),
            ("ONLY_LIST_PORT", "tcp://10.0.0.4:80"),
            *link_vars("ONLY_LIST", "10.0.0.4", 80, "tcp", "10.0.0.4"),
        ],
        id="clusterIPs-without-clusterIP",
    ),
    pytest.param(
        [
            svc("headless", "None", [(80, None, None)]),
            svc("headless-noports", "None", None),
            svc("empty", "", [(80, None, None)]),
            svc("ext", None, None, type="ExternalName", externalName="example.org"),
            svc("headless-list", None, None, clusterIPs=["None"]),
            {"kind": "Service", "metadata": {"name": "nospec"}},
        ],
        [],
        id="no-cluster-ip-skipped",
    ),
]


@pytest.mark.parametrize(("services", "expected"), FROM_SERVICES_CASES)
def test_from_services(services: list[dict[str, Any]], expected: list[tuple[str, str]]) -> None:
    assert from_services(services) == expected


def test_from_services_keeps_input_order_and_duplicates() -> None:
    a = svc("foo", "10.0.0.1", [(80, None, None)])
    b = svc("foo-port-80-tcp", "10.0.0.2", [(81, None, None)])
    names = [n for n, _ in from_services([b, a])]
    assert names[0] == "FOO_PORT_80_TCP_SERVICE_HOST"
    # Both services make FOO_PORT_80_TCP_PORT: FromServices lists it twice.
    assert names.count("FOO_PORT_80_TCP_PORT") == 2


def test_conformance_fooservice() -> None:
    env = dict(from_services([svc("fooservice", "10.96.41.7", [(8765, None, "TCP")])]))
    assert env == {
        "FOOSERVICE_SERVICE_HOST": "10.96.41.7",
        "FOOSERVICE_SERVICE_PORT": "8765",
        "FOOSERVICE_PORT": "tcp://10.96.41.7:8765",
        "FOOSERVICE_PORT_8765_TCP_PORT": "8765",
        "FOOSERVICE_PORT_8765_TCP_PROTO": "tcp",
        "FOOSERVICE_PORT_8765_TCP": "tcp://10.96.41.7:8765",
        "FOOSERVICE_PORT_8765_TCP_ADDR": "10.96.41.7",
    }


def test_activemq_service_seen_by_a_pod() -> None:
    amq = svc("activemq-service", "10.0.12.34", [(8161, "admin", None), (61613, "stomp", None)],
              namespace="shop")
    env = dict(for_pod([amq], "shop"))
    assert env["ACTIVEMQ_SERVICE_SERVICE_HOST"] == "10.0.12.34"
    assert env["ACTIVEMQ_SERVICE_SERVICE_PORT"] == "8161"
    assert env["ACTIVEMQ_SERVICE_SERVICE_PORT_ADMIN"] == "8161"
    assert env["ACTIVEMQ_SERVICE_SERVICE_PORT_STOMP"] == "61613"
    assert env["ACTIVEMQ_SERVICE_PORT"] == "tcp://10.0.12.34:8161"
    assert env["ACTIVEMQ_SERVICE_PORT_8161_TCP_ADDR"] == "10.0.12.34"
    assert env["ACTIVEMQ_SERVICE_PORT_61613_TCP"] == "tcp://10.0.12.34:61613"
    assert env["ACTIVEMQ_SERVICE_PORT_61613_TCP_PROTO"] == "tcp"
    assert env["ACTIVEMQ_SERVICE_PORT_61613_TCP_PORT"] == "61613"
    assert len(env) == 2 + 2 + 1 + 4 * 2


def test_variable_name() -> None:
    assert variable_name("my-svc-2") == "MY_SVC_2"
    assert variable_name("8083") == "8083"


ERROR_CASES = [
    pytest.param(svc("bad-ip", "10.0.0.300"), "Service default/bad-ip: spec.clusterIP '10.0.0.300'"
                 " is not an IP address", id="ip-out-of-range"),
    pytest.param(svc("host-ip", "my.host"), "Service default/host-ip: spec.clusterIP 'my.host'",
                 id="hostname-as-ip"),
    pytest.param(svc("num-ip", 167772161),
                 "Service default/num-ip: spec.clusterIP must be a string", id="ip-not-a-string"),
    pytest.param(svc("p0", ports=[(0, None, None)]), "Service default/p0: spec.ports[0].port 0 is"
                 " outside 1-65535", id="port-zero"),
    pytest.param(svc("big", ports=[(80, "a", None), (65536, "b", None)]),
                 "Service default/big: spec.ports[1].port 65536 is outside 1-65535", id="port-big"),
    pytest.param(svc("strport", ports=[("80", None, None)]),
                 "Service default/strport: spec.ports[0].port must be an integer", id="port-str"),
    pytest.param(svc("boolport", ports=[(True, None, None)]),
                 "Service default/boolport: spec.ports[0].port must be an integer", id="port-bool"),
    pytest.param(svc("noports", ports=None), "Service default/noports: has clusterIP 10.0.0.1 but"
                 " no ports", id="no-ports"),
    pytest.param(svc("emptyports", ports=[]), "Service default/emptyports: has clusterIP",
                 id="empty-ports"),
    pytest.param(svc("icmp", ports=[(80, None, "ICMP")]),
                 "Service default/icmp: spec.ports[0].protocol must be TCP, UDP or SCTP",
                 id="bad-protocol"),
    pytest.param({**svc("pod"), "kind": "Pod"}, "Service default/pod: is a Pod, not a Service",
                 id="not-a-service"),
    pytest.param(svc("", namespace="ns"), "Service <unnamed> with clusterIP 10.0.0.1: metadata.name"
                 " is missing", id="unnamed"),
    pytest.param({"metadata": {"name": "s"}, "spec": "x"}, "Service s: spec must be an object",
                 id="spec-not-object"),
    pytest.param(svc("portlist", ports=None) | {"spec": {"clusterIP": "10.0.0.1", "ports": [80]}},
                 "Service default/portlist: spec.ports[0] must be an object", id="port-not-object"),
]


@pytest.mark.parametrize(("service", "message"), ERROR_CASES)
def test_malformed_service_names_it(service: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvVarsError) as info:
        from_services([service])
    assert str(info.value).startswith(message)


def test_non_service_object_is_an_error() -> None:
    with pytest.raises(EnvVarsError, match="expected a Service"):
        from_services([42])


def test_client_models_give_the_same_variables() -> None:
    client = pytest.importorskip("kubernetes.client")
    model = client.V1Service(
        metadata=client.V1ObjectMeta(name="abc-1", namespace="team"),
        spec=client.V1ServiceSpec(
            cluster_ip="fd00::1:2",
            ports=[
                client.V1ServicePort(name="dns", port=53, protocol="UDP"),
                client.V1ServicePort(name="metrics", port=9153),
            ],
        ),
    )
    as_dict = svc("abc-1", "fd00::1:2", [(53, "dns", "UDP"), (9153, "metrics", None)],
                  namespace="team")
    assert from_services([model]) == from_services([as_dict])
    assert dict(for_pod([model], "team"))["ABC_1_PORT"] == "udp://[fd00::1:2]:53"
    headless = client.V1Service(metadata=client.V1ObjectMeta(name="h"),
                                spec=client.V1ServiceSpec(cluster_ip="None"))
    assert from_services([headless]) == []
    # A model whose clusterIP is unset but whose clusterIPs list is (the primary is used).
    fields = getattr(client.V1ServiceSpec, "model_fields", {})
    field = "cluster_ips" if "cluster_ips" in fields else "cluster_i_ps"
    listed = client.V1Service(
        metadata=client.V1ObjectMeta(name="l"),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)],
                                  **{field: ["10.2.0.1", "fd00::2:1"]}),
    )
    assert dict(from_services([listed]))["L_PORT"] == "tcp://10.2.0.1:80"


# --- for_pod: which services a pod sees -------------------------------------------------------

MASTER = svc("kubernetes", "10.96.0.1", [(443, "https", "TCP")], namespace="default")
MASTER_VARS = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
               "KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": "tcp://10.96.0.1:443",
               "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
               "KUBERNETES_PORT_443_TCP_PROTO": "tcp", "KUBERNETES_PORT_443_TCP_PORT": "443",
               "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1"}
DEFAULT_WEB = svc("web", "10.96.5.5", namespace="default")
APP_DB = svc("db", "10.96.7.7", [(5432, None, None)], namespace="app")
APP_LOCAL_MASTER = svc("kubernetes", "10.96.9.9", [(6443, None, None)], namespace="app")
OTHER_API = svc("api", "10.96.8.8", namespace="other")


def prefixes(env: list[tuple[str, str]]) -> set[str]:
    return {name.split("_", 1)[0] for name, _ in env}


POD_CASES = [
    pytest.param([MASTER, DEFAULT_WEB, APP_DB, OTHER_API], "app", True, {"KUBERNETES", "DB"},
                 id="own-namespace-plus-master"),
    pytest.param([MASTER, DEFAULT_WEB, APP_DB, OTHER_API], "app", False, {"KUBERNETES"},
                 id="links-disabled-master-only"),
    pytest.param([MASTER, DEFAULT_WEB, APP_DB], "default", True, {"KUBERNETES", "WEB"},
                 id="default-namespace"),
    pytest.param([MASTER, DEFAULT_WEB, APP_DB], "default", False, {"KUBERNETES"},
                 id="default-namespace-links-disabled"),
    pytest.param([DEFAULT_WEB, APP_DB], "app", True, {"DB"}, id="no-master-service"),
    pytest.param([APP_DB, OTHER_API], "empty", True, set(), id="foreign-namespaces-only"),
    pytest.param([svc("kubernetes", "None", None), APP_DB], "app", False, set(),
                 id="headless-master-skipped"),
]


@pytest.mark.parametrize(("services", "namespace", "links", "expected"), POD_CASES)
def test_for_pod_selects_services(
    services: list[dict[str, Any]], namespace: str, links: bool, expected: set[str]
) -> None:
    assert prefixes(for_pod(services, namespace, enable_service_links=links)) == expected


def test_master_service_always_present() -> None:
    assert dict(for_pod([APP_DB, MASTER], "app", enable_service_links=False)) == MASTER_VARS


@pytest.mark.parametrize("order", [0, 1], ids=["local-first", "master-first"])
def test_same_namespace_kubernetes_overrides_master(order: int) -> None:
    services = [APP_LOCAL_MASTER, MASTER] if order == 0 else [MASTER, APP_LOCAL_MASTER]
    env = dict(for_pod(services, "app"))
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.9.9"
    assert env["KUBERNETES_PORT"] == "tcp://10.96.9.9:6443"
    # Nothing of the master's own ports leaks through.
    assert "KUBERNETES_SERVICE_PORT_HTTPS" not in env
    assert "KUBERNETES_PORT_443_TCP" not in env


def test_override_needs_service_links() -> None:
    env = dict(for_pod([APP_LOCAL_MASTER, MASTER], "app", enable_service_links=False))
    assert env == MASTER_VARS


def test_service_order_is_by_name_and_later_name_wins_a_clash() -> None:
    zeta = svc("zeta", "10.0.0.26", namespace="ns")
    foo = svc("foo", "10.0.0.1", [(80, None, None)], namespace="ns")
    clash = svc("foo-port-80-tcp", "10.0.0.2", [(81, None, None)], namespace="ns")
    env = for_pod([zeta, clash, foo], "ns")
    names = [n for n, _ in env]
    assert names[0] == "FOO_SERVICE_HOST"
    assert names[-1].startswith("ZETA_")
    assert len(names) == len(set(names))
    assert dict(env)["FOO_PORT_80_TCP_PORT"] == "tcp://10.0.0.2:81"


# --- for_pod: container variables and $(VAR) expansion ---------------------------------------

CONTAINER_CASES = [
    pytest.param([("MODE", "prod")], {"MODE": "prod"}, id="plain"),
    pytest.param([("A", "x"), ("B", "$(A)-y")], {"A": "x", "B": "x-y"}, id="backward-reference"),
    pytest.param([("B", "$(A)-y"), ("A", "x")], {"A": "x", "B": "$(A)-y"},
                 id="forward-reference-left-as-written"),
    pytest.param([("U", "$(NOPE)")], {"U": "$(NOPE)"}, id="unknown-left-as-written"),
    pytest.param([("E", "$$(DB_SERVICE_HOST)")], {"E": "$(DB_SERVICE_HOST)"}, id="escaped"),
    pytest.param([("S", "db at $(DB_SERVICE_HOST):$(DB_SERVICE_PORT)")],
                 {"S": "db at 10.96.7.7:5432"}, id="service-reference"),
    pytest.param([("URL", "$(DB_SERVICE_HOST)"), ("DB_SERVICE_HOST", "override")],
                 {"URL": "10.96.7.7", "DB_SERVICE_HOST": "override"},
                 id="forward-reference-falls-back-to-service-variable"),
    pytest.param([("DB_SERVICE_HOST", "override"), ("URL", "$(DB_SERVICE_HOST)")],
                 {"URL": "override", "DB_SERVICE_HOST": "override"},
                 id="declared-variable-beats-service-variable"),
    pytest.param([("P", "a"), ("P", "$(P)b")], {"P": "ab"}, id="redeclared-self-reference"),
    pytest.param([("Q", "$(Q)")], {"Q": "$(Q)"}, id="self-reference-undefined"),
    pytest.param([("M", "$1 $$ $ $(DB_SERVICE_PORT")], {"M": "$1 $ $ $(DB_SERVICE_PORT"},
                 id="shell-like-text-kept"),
    pytest.param([("K", "")], {"K": ""}, id="empty-value-still-overrides"),
]


@pytest.mark.parametrize(("container_env", "expected"), CONTAINER_CASES)
def test_container_env(container_env: list[tuple[str, str]], expected: dict[str, str]) -> None:
    env = for_pod([MASTER, APP_DB], "app", container_env=container_env)
    got = dict(env)
    for name, value in expected.items():
        assert got[name] == value
    # Container variables come first, in declaration order, each name once.
    declared = list(dict.fromkeys(n for n, _ in container_env))
    assert [n for n, _ in env[: len(declared)]] == declared
    assert len(env) == len(got)


def test_container_variable_wins_over_service_variable_in_place() -> None:
    env = for_pod([MASTER], "app", container_env={"KUBERNETES_SERVICE_HOST": "api.local"})
    assert env[0] == ("KUBERNETES_SERVICE_HOST", "api.local")
    assert [n for n, _ in env].count("KUBERNETES_SERVICE_HOST") == 1
    assert len(env) == len(MASTER_VARS)


def test_container_env_as_api_entries() -> None:
    env = for_pod([MASTER], "app", container_env=[{"name": "A", "value": "1"}, {"name": "B"},
                                                   {"name": "C", "value": "$(A)$(A)"}])
    assert env[:3] == [("A", "1"), ("B", ""), ("C", "11")]


@pytest.mark.parametrize(
    ("container_env", "message"),
    [
        ([{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
         "container env[0] 'POD_IP': valueFrom needs the running pod"),
        ([("", "x")], "container env[0]: name must be a non-empty string"),
        ([("A", 1)], "container env[0] A: value must be a string"),
        (["A=1"], "container env[0]: expected (name, value)"),
        ("A=1", "container_env must be a mapping or a list"),
    ],
)
def test_container_env_errors(container_env: Any, message: str) -> None:
    with pytest.raises(EnvVarsError) as info:
        for_pod([MASTER], "app", container_env=container_env)
    assert str(info.value).startswith(message)


# --- expand, against the kubelet's documented cases ------------------------------------------

CONTEXT = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}

EXPAND_CASES = [
    ("$(VAR_A)", "A"),
    ("$(VAR_A)-$(VAR_A)", "A-A"),
    ("x$(VAR_B)y", "xBy"),
    ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
    ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
    ("v-$$VAR_A", "v-$VAR_A"),
    ("a\\$(VAR_C)b", "a\\Cb"),
    ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
    ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
    ("$(VAR_REF)", "$(VAR_A)"),
    ("a$(VAR_EMPTY)b", "ab"),
    ("a$(VAR_Aoops", "a$(VAR_Aoops"),
    ("$?_$!", "$?_$!"),
    ("$VAR_A", "$VAR_A"),
    ("${VAR_A}", "${VAR_A}"),
    ("$(MISSING)", "$(MISSING)"),
    ("$()", "$()"),
    ("$$$$$$(MISSING)", "$$$(MISSING)"),
    ("$$$$$$(VAR_A)", "$$$(VAR_A)"),
    ("$$$$$$$(MISSING)", "$$$$(MISSING)"),
    ("$$$$$$$(VAR_A)", "$$$A"),
    ("$(VAR_B)___$(", "B___$("),
    ("$(VAR_A)end$", "Aend$"),
    ("--$($($($($--", "--$($($($($--"),
    ("$($($(VAR_A)", "$($($(VAR_A)"),
    ("$(a$$b)", "$(a$$b)"),
    ("\n", "\n"),
    ("€$(VAR_A)€$", "€A€$"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "expected"), EXPAND_CASES)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, CONTEXT.get) == expected


@given(st.text(alphabet="$()AB_x", max_size=30))
def test_doubling_every_dollar_round_trips(text: str) -> None:
    # What the yaml output of the CLI relies on to keep values exact when pasted into a pod.
    assert expand(text.replace("$", "$$"), CONTEXT.get) == text


@given(st.text(max_size=40).filter(lambda t: "$" not in t))
def test_text_without_dollar_is_unchanged(text: str) -> None:
    assert expand(text, CONTEXT.get) == text


def test_for_pod_reads_only_the_services_it_selects() -> None:
    broken = svc("broken", "not-an-ip", namespace="other")
    assert dict(for_pod([MASTER, APP_DB, broken], "app")) == dict(for_pod([MASTER, APP_DB], "app"))
    own = svc("broken", "not-an-ip", namespace="app")
    assert dict(for_pod([MASTER, own], "app", enable_service_links=False)) == MASTER_VARS
    message = "Service app/broken: spec.clusterIP 'not-an-ip'"
    with pytest.raises(EnvVarsError, match=re.escape(message)):
        for_pod([MASTER, own], "app")
    bad_master = svc("kubernetes", "10.96.0.1", [(0, None, None)], namespace="default")
    with pytest.raises(EnvVarsError, match=re.escape("Service default/kubernetes: spec.ports")):
        for_pod([bad_master], "app", enable_service_links=False)


def test_service_without_namespace_counts_as_default() -> None:
    bare = svc("kubernetes", "10.96.0.1", [(443, "https", "TCP")], namespace=None)
    assert dict(for_pod([bare], "app", enable_service_links=False)) == MASTER_VARS


def test_module_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = ("import sys, dnsserver.envvars; "
            "print(sorted(m for m in ('kubernetes', 'yaml', 'dnslib') if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, timeout=30)
    assert shown.stdout.strip() == "[]"
