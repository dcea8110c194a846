"""kubeadm's default Corefile, and the same with a stub domain, run unchanged.

They listen on :53 and forward to /etc/resolv.conf, so they run in a network namespace this test
creates: `ip netns exec` puts /etc/netns/NAME/resolv.conf in place of /etc/resolv.conf, pointing
at a test upstream on 127.0.0.53 inside the namespace, and the namespace has nothing but its own
loopback: no query can leave it. The demo cluster stands in for the API (`--snapshot`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import DEMO, ROOT, wait_for

KUBEADM = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""

STUB = """\
example.local:53 {
    errors
    cache 30
    forward . 127.0.0.1:5300
}
"""

# A small authoritative upstream: the "recursive resolver" of resolv.conf (127.0.0.53:53) and
# the stub domain's server (127.0.0.1:5300), each counting what it is asked.
UPSTREAM = textwrap.dedent("""
    import socket, sys
    from dnslib import DNSRecord, RR, QTYPE, A, RCODE
    host, port, zone = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    table = {"www.example.com.": "192.0.2.80", "payments.example.com.": "192.0.2.81",
             "db.example.local.": "192.0.2.53"}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    print("ready", flush=True)
    count = 0
    while True:
        data, addr = s.recvfrom(4096)
        q = DNSRecord.parse(data)
        name = str(q.q.qname).lower()
        reply = q.reply(ra=1, aa=0)
        if name in table and q.q.qtype == QTYPE.A:
            reply.add_answer(RR(q.q.qname, QTYPE.A, ttl=60, rdata=A(table[name])))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        count += 1
        print(f"asked {name} {QTYPE.get(q.q.qtype)} #{count}", flush=True)
        s.sendto(reply.pack(), addr)
""")


def _can_use_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip`"
    return None


class Namespace:
    """A network namespace with only loopback, its own resolv.conf, and processes in it."""

    def __init__(self) -> None:
        self.name = f"dnsserver-test-{uuid.uuid4().hex[:8]}"
        self.etc = Path("/etc/netns") / self.name
        self.procs: list[subprocess.Popen[str]] = []
        self.outputs: dict[int, list[str]] = {}

    def __enter__(self) -> Namespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=10)
        self.run(["ip", "link", "set", "lo", "up"])
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "resolv.conf").write_text("nameserver 127.0.0.53\n")
        return self

    def run(self, argv: list[str], timeout: float = 10) -> str:
        out = subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True,
                             text=True, timeout=timeout, check=True)
        return out.stdout

    def spawn(self, argv: list[str], cwd: Path | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv], cwd=cwd,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        lines: list[str] = []
        self.outputs[proc.pid] = lines

        import threading

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))

        threading.Thread(target=read, daemon=True).start()
        return proc

    def dig(self, *args: str) -> str:
        return self.run(["dig", "@127.0.0.1", "+time=2", "+tries=1", *args], timeout=20)

    def curl(self, url: str) -> tuple[int, str]:
        code = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            "    r = urllib.request.urlopen(sys.argv[1], timeout=3)\n"
            "    print(r.status); sys.stdout.write(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code); sys.stdout.write(e.read().decode())\n")
        out = self.run([sys.executable, "-c", code, url])
        status, _, body = out.partition("\n")
        return int(status), body

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        subprocess.run(["ip", "netns", "del", self.name], check=False, timeout=10)
        shutil.rmtree(self.etc, ignore_errors=True)


@pytest.fixture(params=["kubeadm", "kubeadm+stub"])
def cluster_dns(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Namespace]:
    reason = _can_use_netns()
    if reason:
        pytest.skip(reason)
    corefile = KUBEADM + ("\n" + STUB if request.param == "kubeadm+stub" else "")
    (tmp_path / "Corefile").write_text(corefile)
    (tmp_path / "upstream.py").write_text(UPSTREAM)
    with Namespace() as ns:
        for host, port, zone in (("127.0.0.53", "53", "."), ("127.0.0.1", "5300", "local")):
            up = ns.spawn([sys.executable, str(tmp_path / "upstream.py"), host, port, zone])
            wait_for(lambda p=up: ns.outputs[p.pid][:1] == ["ready"], what="upstream ready")
        server = ns.spawn([sys.executable, "-m", "dnsserver", "-conf", str(tmp_path / "Corefile"),
                           "--snapshot", str(DEMO)], cwd=ROOT)
        ns.server = server  # type: ignore[attr-defined]
        ns.stub = request.param == "kubeadm+stub"  # type: ignore[attr-defined]

        def answering() -> bool:
            if server.poll() is not None:
                raise AssertionError("\n".join(ns.outputs[server.pid]))
            try:
                return "10.96.0.1" in ns.dig("+short", "kubernetes.default.svc.cluster.local")
            except subprocess.CalledProcessError:
                return False

        wait_for(answering, timeout=30, what="dnsserver answering in the namespace")
        yield ns


def test_kubeadm_corefile_runs_unchanged(cluster_dns: Namespace) -> None:
    ns = cluster_dns
    server = ns.server  # type: ignore[attr-defined]
    # The cluster zone, with kubeadm's ttl.
    out = ns.dig("+noall", "+answer", "web.shop.svc.cluster.local")
    assert out.split()[1:] == ["30", "IN", "A", "10.96.10.10"]
    assert ns.dig("+short", "-x", "10.96.0.10").split() == [
        "kube-dns.kube-system.svc.cluster.local."]
    # Names outside the cluster go to the resolv.conf upstream, and are cached for 30 s: by each
    # worker process (one per CPU by default), so the upstream is asked at most once per worker.
    for _ in range(8):
        assert ns.dig("+short", "www.example.com").split() == ["192.0.2.80"]
    upstream_log = ns.outputs[ns.procs[0].pid]
    asked = [ln for ln in upstream_log if ln.startswith("asked www.example.com.")]
    assert 1 <= len(asked) <= (os.cpu_count() or 1)
    # PTR outside the cluster's addresses falls through to forward (fallthrough in-addr.arpa).
    assert "status: NXDOMAIN" in ns.dig("-x", "192.0.2.1")
    assert any("1.2.0.192.in-addr.arpa" in ln for ln in upstream_log)
    # An ExternalName outside the cluster: the CNAME, then its target through forward.
    chased = ns.dig("+noall", "+answer", "payments.shop.svc.cluster.local").split()
    assert chased[3:5] == ["CNAME", "payments.example.com."]
    assert chased[-2:] == ["A", "192.0.2.81"]
    # The operational endpoints on kubeadm's ports.
    assert ns.curl("http://127.0.0.1:8080/health") == (200, "OK")
    assert ns.curl("http://127.0.0.1:8181/ready")[0] == 200
    # Workers publish their counts about once a second.
    metrics = wait_for(lambda: (lambda r: r[1] if r[0] == 200 and "coredns_dns_requests_total"
                                in r[1] else None)(ns.curl("http://127.0.0.1:9153/metrics")),
                       what="request counts on /metrics")
    assert 'coredns_plugin_enabled{name="loop"' in metrics
    if ns.stub:  # type: ignore[attr-defined]
        assert ns.dig("+short", "db.example.local").split() == ["192.0.2.53"]
        stub_log = ns.outputs[ns.procs[1].pid]
        assert any(ln.startswith("asked db.example.local.") for ln in stub_log)
        assert not any("db.example.local" in ln for ln in upstream_log)
    # The loop probe went to the upstream and came back NXDOMAIN: no loop, still serving.
    assert any(" HINFO " in ln for ln in upstream_log)
    assert server.poll() is None
    # SIGTERM: lame duck (5 s in kubeadm's Corefile), then a clean exit.
    started = time.monotonic()
    server.terminate()
    assert server.wait(timeout=30) == 0
    assert time.monotonic() - started >= 4.5
