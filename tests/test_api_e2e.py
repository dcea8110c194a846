"""The real server against the fake Kubernetes API, as a user runs it: a kubeconfig, a Corefile,
`python -m dnsserver`, and dnspython asking while the test changes objects and breaks the API.

Each test maps to an item of issue 3: what is listed and watched (2), start-up and readiness (4),
changes showing at once (5), the API going away (6), bad objects (7), one set of watches per
server instance (8), and the 410 relist that must not lose a name (2).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dnsserver.snapshot import load_objects

from fake_apiserver import FakeApiServer, RequestRecord
from helpers import DEMO, ServerProcess, answers, free_port, query, wait_for

ALL_KINDS = ("Service", "EndpointSlice", "Namespace", "Pod")
PATHS = {
    "/api/v1/services": "Service",
    "/apis/discovery.k8s.io/v1/endpointslices": "EndpointSlice",
    "/api/v1/namespaces": "Namespace",
    "/api/v1/pods": "Pod",
}
# Names that exist in the demo cluster and must keep answering whatever the API does.
STABLE = {
    "kubernetes.default.svc.cluster.local": ["10.96.0.1"],
    "kube-dns.kube-system.svc.cluster.local": ["10.96.0.10"],
    "web.shop.svc.cluster.local": ["10.96.10.10"],
    "api.shop.svc.cluster.local": ["10.96.10.20"],
    "db.data.svc.cluster.local": ["10.244.1.30", "10.244.2.31"],
    "db-0.db.data.svc.cluster.local": ["10.244.1.30"],
    "10-244-1-30.data.pod.cluster.local": ["10.244.1.30"],
}


# --- objects ---------------------------------------------------------------------------------


def service(ns: str, name: str, ip: str | None, labels: dict[str, str] | None = None,
            **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "ClusterIP", "clusterIP": ip or "None",
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}], **spec}
    if ip:
        body.setdefault("clusterIPs", [ip])
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": body}


def endpoint_slice(ns: str, svc: str, name: str, ips: dict[str, bool],
                   labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A slice of `svc` with one endpoint per IP; the bool says whether it is ready."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc, **(labels or {})}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}}
                          for ip, ready in ips.items()],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}}}


def pod(ns: str, name: str, ip: str, phase: str = "Running") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {}, "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}}


# --- the server under test -------------------------------------------------------------------


@dataclass
class Cluster:
    """The fake API plus the real server pointed at it through a kubeconfig."""

    fake: FakeApiServer
    dir: Path
    server: ServerProcess | None = None
    arrivals: list[RequestRecord] = field(default_factory=list)  # before any answer or hang
    ready_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)

    def corefile(self, options: str) -> str:
        kubeconfig = self.fake.write_kubeconfig(self.dir / "kubeconfig")
        return f"""
.:{{PORT}} {{
    bind 127.0.0.1
    ready 127.0.0.1:{self.ready_port}
    prometheus 127.0.0.1:{self.metrics_port}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        startup_timeout 2s
        {options}
    }}
}}
"""

    def start(self, options: str = "pods verified", wait: bool = True,
              ready_name: str = "kubernetes.default.svc.cluster.local",
              args: list[str] | None = None) -> ServerProcess:
        self.server = ServerProcess(self.corefile(options), snapshot=None, wait=wait,
                                    ready_name=ready_name, ready_type="A", args=args).start()
        return self.server

    # -- asking it ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def ask(self, name: str, rdtype: str = "A") -> dns.message.Message:
        return query(name, rdtype, port=self.port, timeout=1.0)

    def a(self, name: str) -> list[str]:
        """The A records of `name`, or the rcode's name when it is not NOERROR."""
        msg = self.ask(name)
        if msg.rcode() != dns.rcode.NOERROR:
            return [dns.rcode.to_text(msg.rcode())]
        return answers(msg, "A")

    def serial(self) -> int:
        msg = self.ask("cluster.local", "SOA")
        return int(msg.answer[0][0].serial)

    def http(self, port: int, path: str) -> tuple[int | None, str]:
        """(status, body) of GET 127.0.0.1:port/path; (None, "") while nothing listens."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return None, ""

    def ready(self) -> int | None:
        return self.http(self.ready_port, "/ready")[0]

    def metric(self, name: str, **labels: str) -> float | None:
        _, text = self.http(self.metrics_port, "/metrics")
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            m = re.fullmatch(r"([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)", line)
            if m and m.group(1) == name and (m.group(2) or "") == want:
                return float(m.group(3))
        return None

    # -- what the API saw ---------------------------------------------------------------------

    def requests(self, since: float = 0.0) -> list[tuple[str, bool, RequestRecord]]:
        """(kind, is_watch, record) of every API request made at or after `since`."""
        out = []
        for rec in list(self.fake.request_log):
            if rec.time >= since and rec.path in PATHS:
                out.append((PATHS[rec.path], rec.query.get("watch") == "1", rec))
        return out

    def log_count(self, text: str) -> int:
        assert self.server is not None
        return sum(text in line for line in list(self.server.lines))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    fake = FakeApiServer(load_objects(DEMO))
    fake.start()
    c = Cluster(fake, tmp_path)
    fake.on_request = c.arrivals.append
    try:
        yield c
    finally:
        if c.server is not None:
            c.server.stop()
        fake.hang(False)  # a hung handler thread would otherwise outlive the test
        fake.stop()


def stable_answers(c: Cluster) -> dict[str, list[str]]:
    return {name: c.a(name) for name in STABLE}


# --- 8. one set of watches per server instance -------------------------------------------------


# However many worker processes answer, the API sees exactly one list and one watch per kind:
# the supervisor watches, the workers get the state from it.
@pytest.mark.parametrize("workers", [1, 2])
def test_one_set_of_watches_per_server_instance(cluster: Cluster, workers: int) -> None:
    cluster.start(args=["--workers", str(workers)])
    # Changes of every kind answered prove all four watches are live and delivering.
    cluster.fake.upsert(namespace("probe"))
    cluster.fake.upsert(service("probe", "svc", "10.96.50.1"))
    cluster.fake.upsert(endpoint_slice("data", "db", "db-extra", {"10.244.9.9": True}))
    cluster.fake.upsert(pod("probe", "p", "10.244.9.10"))
    wait_for(lambda: cluster.a("svc.probe.svc.cluster.local") == ["10.96.50.1"], 5,
             what="the new service")
    wait_for(lambda: "10.244.9.9" in cluster.a("db.data.svc.cluster.local"), 5,
             what="the new endpoint")
    wait_for(lambda: cluster.a("10-244-9-10.probe.pod.cluster.local") == ["10.244.9.10"], 5,
             what="the new pod")
    # Every worker has every change: each query comes from a new source port, so the kernel
    # spreads them over the workers.
    for _ in range(20):
        assert cluster.a("svc.probe.svc.cluster.local") == ["10.96.50.1"]
        assert "10.244.9.9" in cluster.a("db.data.svc.cluster.local")
    reqs = cluster.requests()
    for kind in ALL_KINDS:
        lists = [r for k, w, r in reqs if k == kind and not w]
        watches = [r for k, w, r in reqs if k == kind and w]
        assert (len(lists), len(watches)) == (1, 1), (kind, reqs)
        assert lists[0].status == 200


# --- 2. what is listed and watched, with which selectors ----------------------------------------


def test_pods_are_watched_only_when_verified(cluster: Cluster) -> None:
    cluster.start(options="pods insecure")
    wait_for(lambda: {k for k, w, _ in cluster.requests() if w} >= {"Service", "EndpointSlice",
                                                                      "Namespace"}, 5,
             what="three watches")
    assert "Pod" not in {k for k, _, _ in cluster.requests()}
    # `pods insecure` answers any pod-shaped name without looking pods up.
    assert cluster.a("10-9-9-9.shop.pod.cluster.local") == ["10.9.9.9"]


def test_label_selectors_choose_services_and_namespaces(cluster: Cluster) -> None:
    fake = cluster.fake
    for obj in (namespace("team-a", {"team": "a"}), namespace("team-b", {"team": "b"}),
                service("team-a", "in", "10.96.60.1", {"dns": "on"}),
                service("team-a", "out", "10.96.60.2"),
                service("team-b", "other", "10.96.60.3", {"dns": "on"}),
                endpoint_slice("team-a", "in", "in-1", {"10.244.60.1": True}, {"dns": "on"})):
        fake.upsert(obj)
    cluster.start(options="pods verified\n        labels dns=on\n"
                          "        namespace_labels team=a",
                  ready_name="in.team-a.svc.cluster.local")
    assert cluster.a("in.team-a.svc.cluster.local") == ["10.96.60.1"]
    assert cluster.a("out.team-a.svc.cluster.local") == ["NXDOMAIN"]  # label missing
    assert cluster.a("other.team-b.svc.cluster.local") == ["NXDOMAIN"]  # namespace not chosen
    assert cluster.a("kubernetes.default.svc.cluster.local") == ["NXDOMAIN"]
    selectors = {(k, w): r.query.get("labelSelector") for k, w, r in cluster.requests()}
    for kind in ("Service", "EndpointSlice", "Pod"):
        assert selectors[(kind, False)] == selectors[(kind, True)] == "dns=on", kind
    assert selectors[("Namespace", False)] == selectors[("Namespace", True)] == "team=a"
    # Gaining the label on the watch brings a service in; losing it takes it out again.
    fake.upsert(service("team-a", "out", "10.96.60.2", {"dns": "on"}))
    wait_for(lambda: cluster.a("out.team-a.svc.cluster.local") == ["10.96.60.2"], 5,
             what="a service that gained the label")
    fake.upsert(service("team-a", "in", "10.96.60.1"))
    wait_for(lambda: cluster.a("in.team-a.svc.cluster.local") == ["NXDOMAIN"], 5,
             what="a service that lost the label")
    fake.upsert(namespace("team-b", {"team": "a"}))
    wait_for(lambda: cluster.a("other.team-b.svc.cluster.local") == ["10.96.60.3"], 5,
             what="a namespace that gained the label")


# --- 4. start-up as CoreDNS --------------------------------------------------------------------


def test_ready_only_after_first_sync_and_servfail_until_then(cluster: Cluster) -> None:
    fake = cluster.fake
    fake.hang(True)
    started = time.monotonic()
    cluster.start(wait=False)
    wait_for(lambda: cluster.ready() == 503, 10, what="/ready answering 503 before the sync")
    # After startup_timeout (2s) it serves anyway; what would be NXDOMAIN is SERVFAIL.
    wait_for(lambda: cluster.server is not None and cluster.server._answers(), 10,
             what="DNS served after startup_timeout")
    assert time.monotonic() - started >= 1.9
    assert cluster.a("web.shop.svc.cluster.local") == ["SERVFAIL"]
    assert cluster.a("nothing-here.shop.svc.cluster.local") == ["SERVFAIL"]
    assert cluster.ready() == 503
    assert cluster.log_count("starting server with unsynced Kubernetes API") == 1
    fake.hang(False)
    wait_for(lambda: cluster.ready() == 200, 10, what="/ready 200 after the sync")
    assert stable_answers(cluster) == STABLE
    assert cluster.a("nothing-here.shop.svc.cluster.local") == ["NXDOMAIN"]


def test_ready_at_once_when_the_api_answers(cluster: Cluster) -> None:
    cluster.start()
    assert cluster.ready() == 200
    assert cluster.log_count("unsynced") == 0


# --- 5. changes show in answers at once ---------------------------------------------------------


def test_changes_show_in_answers_at_once(cluster: Cluster) -> None:
    fake = cluster.fake
    cluster.start()
    fast = {"timeout": 2.0, "interval": 0.002}

    fake.upsert(service("shop", "cart", "10.96.10.77"))
    wait_for(lambda: cluster.a("cart.shop.svc.cluster.local") == ["10.96.10.77"], **fast,
             what="a new service")

    # A new ready endpoint of a headless service, and a not-ready one that stays out.
    fake.upsert(service("data", "queue", None))
    fake.upsert(endpoint_slice("data", "queue", "queue-1", {"10.244.7.1": True}))
    wait_for(lambda: cluster.a("queue.data.svc.cluster.local") == ["10.244.7.1"], **fast,
             what="the first endpoint")
    fake.upsert(endpoint_slice("data", "queue", "queue-1",
                               {"10.244.7.1": True, "10.244.7.2": True, "10.244.7.3": False}))
    wait_for(lambda: cluster.a("queue.data.svc.cluster.local") == ["10.244.7.1", "10.244.7.2"],
             **fast, what="a new ready endpoint")
    fake.upsert(endpoint_slice("data", "queue", "queue-1",
                               {"10.244.7.1": True, "10.244.7.2": True, "10.244.7.3": True}))
    wait_for(lambda: cluster.a("queue.data.svc.cluster.local")
             == ["10.244.7.1", "10.244.7.2", "10.244.7.3"], **fast,
             what="an endpoint turning ready")

    # The reverse lookup follows the service.
    assert answers(cluster.ask("77.10.96.10.in-addr.arpa", "PTR"), "PTR") == [
        "cart.shop.svc.cluster.local."]
    fake.delete("Service", "shop", "cart")
    wait_for(lambda: cluster.a("cart.shop.svc.cluster.local") == ["NXDOMAIN"], **fast,
             what="a deleted service")
    assert cluster.ask("77.10.96.10.in-addr.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN

    fake.upsert(pod("shop", "worker", "10.244.7.9"))
    wait_for(lambda: cluster.a("10-244-7-9.shop.pod.cluster.local") == ["10.244.7.9"], **fast,
             what="a new pod (pods verified)")
    fake.upsert(pod("shop", "worker", "10.244.7.9", phase="Succeeded"))
    wait_for(lambda: cluster.a("10-244-7-9.shop.pod.cluster.local") == ["NXDOMAIN"], **fast,
             what="a finished pod")
    assert stable_answers(cluster) == STABLE


def test_clusterip_to_externalname_replaces_the_a_with_a_cname(cluster: Cluster) -> None:
    fake = cluster.fake
    cluster.start()
    name = "api.shop.svc.cluster.local"
    assert cluster.a(name) == ["10.96.10.20"]
    seen: list[tuple[list[str], list[str]]] = []

    def flipped() -> bool:
        msg = cluster.ask(name)
        assert msg.rcode() == dns.rcode.NOERROR
        got = (answers(msg, "A"), answers(msg, "CNAME"))
        seen.append(got)
        # One or the other, never both and never neither.
        assert got in ((["10.96.10.20"], []), ([], ["api.example.net."])), seen
        return got[1] != []

    fake.upsert(service("shop", "api", None, type="ExternalName", externalName="api.example.net",
                        clusterIP=None))
    wait_for(flipped, timeout=2.0, interval=0.002, what="the CNAME")
    # And back: the A returns, the CNAME goes.
    fake.upsert(service("shop", "api", "10.96.10.20", type="NodePort"))
    wait_for(lambda: not flipped(), timeout=2.0, interval=0.002, what="the A again")


# --- 2. a 410 or an ERROR event relists without losing a name -----------------------------------


class ListGate:
    """Holds the fake's list (and optionally watch) requests until the test lets them through,
    so the server's queries land in the gap between losing a watch and the relist."""

    def __init__(self, fake: FakeApiServer) -> None:
        self.fake = fake
        self.lists_open = threading.Event()
        self.watches_open = threading.Event()
        self.held: dict[bool, set[str]] = {True: set(), False: set()}  # is_watch -> kinds
        self.armed_at: float | None = None
        self._next = fake.on_request
        fake.on_request = self._hook

    def arm(self, hold_watches: bool) -> None:
        self.lists_open.clear()
        if hold_watches:
            self.watches_open.clear()
        else:
            self.watches_open.set()
        self.armed_at = time.monotonic()

    def release(self) -> None:
        self.watches_open.set()
        self.lists_open.set()

    def _hook(self, rec: RequestRecord) -> None:
        if self._next is not None:
            self._next(rec)
        if self.armed_at is None or rec.path not in PATHS:
            return
        is_watch = rec.query.get("watch") == "1"
        gate = self.watches_open if is_watch else self.lists_open
        if gate.is_set():
            return
        self.held[is_watch].add(PATHS[rec.path])
        gate.wait(10.0)  # the deadline keeps a failing test from hanging the fake


@pytest.mark.parametrize("trigger", ["compaction", "error_event"])
def test_relist_replaces_state_in_one_step_without_nxdomain(cluster: Cluster,
                                                            trigger: str) -> None:
    fake = cluster.fake
    cluster.start()

    def relists() -> list[float | None]:
        return [cluster.metric("dnsserver_kubernetes_relists_total", kind=k) for k in ALL_KINDS]

    # The metric counts lists after the first (no sample at all until there is one), and is
    # published at each flush (1 s): wait for one flush to have happened.
    wait_for(lambda: cluster.metric("dnsserver_kubernetes_synced", kind="Pod") == 1.0, 5,
             what="the first metrics flush")
    assert set(relists()) <= {None, 0.0}, relists()
    gate = ListGate(fake)
    rounds = {"n": 0, "bad": []}

    def hammer() -> None:
        """One round over every stable name; an NXDOMAIN (or any change) is recorded."""
        rounds["n"] += 1
        got = stable_answers(cluster)
        if got != STABLE:
            rounds["bad"].append(got)

    def hammer_until(pred: Callable[[], bool], what: str, extra_rounds: int = 0) -> None:
        """Query in a bounded loop until `pred`, then `extra_rounds` more."""
        deadline = time.monotonic() + 15.0
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            hammer()
        for _ in range(extra_rounds):
            hammer()

    try:
        if trigger == "compaction":
            gate.arm(hold_watches=True)
            fake.drop_watches()
            hammer_until(lambda: gate.held[True] >= set(ALL_KINDS), "watches to be retried")
            # Meanwhile one service goes and one comes; then history is compacted, so the
            # held watches resume from a resourceVersion that is too old: ERROR 410.
            fake.delete("Service", "shop", "web")
            fake.upsert(service("shop", "late", "10.96.10.88"))
            fake.compact()
            hammer_until(lambda: True, "", extra_rounds=5)
            gate.watches_open.set()
            hammer_until(lambda: gate.held[False] >= set(ALL_KINDS), "the relists")
        else:
            gate.arm(hold_watches=False)
            fake.watch_error(500)
            hammer_until(lambda: gate.held[False] >= set(ALL_KINDS), "the relists")
            fake.delete("Service", "shop", "web")
            fake.upsert(service("shop", "late", "10.96.10.88"))
        relist_from = time.monotonic()
        hammer_until(lambda: True, "", extra_rounds=5)
    finally:
        gate.release()
    assert rounds["bad"] == [], rounds["bad"][:3]

    # Each kind listed after the gate and watched again after that list: the replace is in.
    def relisted() -> bool:
        reqs = cluster.requests(since=relist_from - 30)
        ok = True
        for kind in ALL_KINDS:
            lists = [r.time for k, w, r in reqs if k == kind and not w and r.status == 200
                     and gate.armed_at is not None and r.time >= gate.armed_at]
            watches = [r.time for k, w, r in reqs if k == kind and w]
            ok = ok and bool(lists) and any(t > lists[-1] for t in watches)
        return ok

    stable = {k: v for k, v in STABLE.items() if k != "web.shop.svc.cluster.local"}
    hammer_until(relisted, "every kind to be relisted and watched again")
    wait_for(lambda: cluster.a("late.shop.svc.cluster.local") == ["10.96.10.88"], 2,
             what="the service added while the watch was away")
    assert cluster.a("web.shop.svc.cluster.local") == ["NXDOMAIN"]
    assert {n: cluster.a(n) for n in stable} == stable
    # Nothing but the held requests happened: one list per kind after arming, no busy loop.
    lists_after = [k for k, w, r in cluster.requests(since=gate.armed_at or 0) if not w]
    assert sorted(lists_after) == sorted(ALL_KINDS), lists_after
    wait_for(lambda: relists() == [1.0] * 4, 5, what="relists_total 1 for every kind")


# --- 6. the API going away loses nothing --------------------------------------------------------


UNREACHABLE = "serving the last known state until it is back"
REACHABLE = "is reachable again"


@pytest.mark.parametrize("outage", ["http_500", "hang", "stopped"])
def test_api_outage_keeps_answers_and_serial_then_catches_up(cluster: Cluster,
                                                             outage: str) -> None:
    fake = cluster.fake
    cluster.start()
    before, serial = stable_answers(cluster), cluster.serial()
    assert before == STABLE
    broke_at = time.monotonic()
    if outage == "http_500":
        fake.fail(500)
        fake.drop_watches()
    elif outage == "hang":
        fake.hang(True)
        fake.drop_watches()
    else:
        fake.stop()

    # Keep asking while the API is down, until the server has seen it fail (or, hanging, has
    # every kind's request stuck), and then for one more second.
    def noticed() -> bool:
        if outage == "http_500":
            failed = [k for k, _, r in cluster.requests(broke_at) if r.status == 500]
            return all(failed.count(kind) >= 3 for kind in ALL_KINDS)
        if outage == "hang":
            return {PATHS[r.path] for r in cluster.arrivals if r.time >= broke_at} >= set(
                ALL_KINDS)
        return cluster.log_count(UNREACHABLE) >= 1

    deadline = time.monotonic() + 20
    quiet_until = None
    while quiet_until is None or time.monotonic() < quiet_until:
        assert time.monotonic() < deadline, "the outage was not noticed"
        assert stable_answers(cluster) == before
        assert cluster.serial() == serial
        if quiet_until is None and noticed():
            quiet_until = time.monotonic() + 1.0
    assert cluster.log_count(UNREACHABLE) <= 1

    if outage == "http_500":
        # Backoff: never more than a few requests a second, per kind, against a failing API.
        failed = [(k, r.time) for k, _, r in cluster.requests(broke_at) if r.status == 500]
        for kind in ALL_KINDS:
            times = [t for k, t in failed if k == kind]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert gaps and min(gaps) >= 0.4, (kind, gaps)
        assert cluster.log_count(UNREACHABLE) == 1

    # What changes while the API is down arrives when it is back.
    fake.delete("Service", "shop", "web")
    fake.upsert(service("shop", "meanwhile", "10.96.10.99"))
    fake.upsert(endpoint_slice("data", "db", "db-extra", {"10.244.8.8": True}))
    if outage == "http_500":
        fake.fail(None)
    elif outage == "hang":
        fake.hang(False)
    else:
        fake.start()
    wait_for(lambda: cluster.a("meanwhile.shop.svc.cluster.local") == ["10.96.10.99"], 20,
             what="the service added during the outage")
    wait_for(lambda: cluster.a("web.shop.svc.cluster.local") == ["NXDOMAIN"], 5,
             what="the service deleted during the outage")
    # Each kind backs off on its own (full jitter, doubling): the EndpointSlice watch may be
    # asleep for a few seconds more than the Service watch when the API comes back.
    wait_for(lambda: "10.244.8.8" in cluster.a("db.data.svc.cluster.local"), 20,
             what="the endpoint added during the outage")
    assert cluster.serial() >= serial
    wait_for(lambda: cluster.log_count(REACHABLE) == 1, 20, what="the reachable-again line")
    assert cluster.log_count(UNREACHABLE) == 1
    # Metrics are published about once a second.
    wait_for(lambda: cluster.metric("dnsserver_kubernetes_api_up") == 1.0, 5,
             what="api_up back to 1 on /metrics")


# --- 7. bad objects are skipped, named and counted ----------------------------------------------


def test_bad_objects_are_skipped_named_and_counted(cluster: Cluster) -> None:
    fake = cluster.fake
    bad_ip = service("shop", "bad-ip", "10.96.999.1")
    no_spec = service("shop", "no-spec", "10.96.10.41")
    del no_spec["spec"]
    orphan = endpoint_slice("shop", "x", "orphan-slice", {"10.244.5.5": True})
    del orphan["metadata"]["labels"]["kubernetes.io/service-name"]
    for obj in (bad_ip, no_spec, orphan, pod("shop", "bad-pod", "not-an-ip")):
        fake.upsert(obj)
    cluster.start()
    assert stable_answers(cluster) == STABLE
    for name in ("shop/bad-ip", "shop/no-spec", "shop/orphan-slice", "shop/bad-pod"):
        assert any("skipping invalid" in line and name in line
                   for line in cluster.server.lines), (name, cluster.server.output)

    def skipped(kind: str) -> float | None:
        return cluster.metric("dnsserver_kubernetes_objects_skipped_total", kind=kind)

    wait_for(lambda: (skipped("Service"), skipped("EndpointSlice"), skipped("Pod"))
             == (2.0, 1.0, 1.0), 5, what="the skipped-objects metric")

    # Through the watch too, and the good change right after it still applies.
    fake.upsert(service("shop", "worse", "10.96.10.42", clusterIPs=["10.96.10.42", "zzz"]))
    fake.upsert(service("shop", "fine", "10.96.10.43"))
    wait_for(lambda: cluster.a("fine.shop.svc.cluster.local") == ["10.96.10.43"], 5,
             what="a good service after a bad one")
    assert cluster.a("worse.shop.svc.cluster.local") == ["NXDOMAIN"]
    assert cluster.a("bad-ip.shop.svc.cluster.local") == ["NXDOMAIN"]
    wait_for(lambda: skipped("Service") == 3.0, 5, what="the watched bad service counted")
    assert any("shop/worse" in line for line in cluster.server.lines)
    assert stable_answers(cluster) == STABLE
