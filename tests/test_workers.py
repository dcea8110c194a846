"""Several worker processes behind one address: answers, summed metrics, restarts, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from helpers import ServerProcess, answers, free_port, query, wait_for


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "multiprocessing.spawn"],
                         capture_output=True, text=True, check=False).stdout
    workers = []
    for child in out.split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"resource_tracker" not in cmdline:
            workers.append(int(child))
    return workers


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def requests_total(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "coredns_dns_requests_total")


def test_two_workers_answer_add_up_and_recover() -> None:
    ready, metrics = free_port(), free_port()
    corefile = f"""
.:{{PORT}} {{
    bind 127.0.0.1
    ready 127.0.0.1:{ready}
    prometheus 127.0.0.1:{metrics}
    kubernetes cluster.local in-addr.arpa ip6.arpa
}}
"""
    with ServerProcess(corefile, args=["--workers", "2"]) as server:
        assert server.proc is not None
        pids = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(children(server.proc.pid)),
                        what="two workers")
        sent = 1  # the readiness probe of ServerProcess
        for i in range(200):
            name = ("web", "api")[i % 2] + ".shop.svc.cluster.local"
            assert answers(query(name, port=server.port))  # new socket, new source port
            sent += 1
        # Every worker's counts reach the one /metrics of the supervisor.
        wait_for(lambda: requests_total(metrics) >= sent, what="summed request counts")
        # A worker that dies is replaced; the others keep answering meanwhile.
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: (lambda c: len(c) == 2 and pids[0] not in c)(
            children(server.proc.pid)), what="the worker restarted")
        wait_for(lambda: status(f"http://127.0.0.1:{ready}/ready") == 200, what="ready again")
        for _ in range(50):
            assert answers(query("web.shop.svc.cluster.local", port=server.port)) == [
                "10.96.10.10"]
        parent = server.proc.pid
        current = children(parent)
        assert server.stop() == 0
        for pid in current:
            stat = Path(f"/proc/{pid}/stat")
            assert not stat.exists() or stat.read_text().split()[2] == "Z"


def test_a_fatal_error_in_a_worker_stops_the_whole_server() -> None:
    # A forwarding loop (the server forwards to itself): CoreDNS exits 1, so must we, rather
    # than have the supervisor restart workers that find the loop again and again.
    corefile = """
.:{PORT} {
    bind 127.0.0.1
    loop
    forward . 127.0.0.1:{PORT}
}
"""
    server = ServerProcess(corefile, snapshot=None, args=["--workers", "2"], wait=False)
    server.start()
    try:
        assert server.proc is not None
        assert server.proc.wait(timeout=30) == 1
        assert any("Loop (" in line and "detected for zone" in line for line in server.lines)
    finally:
        server.stop()


def test_default_worker_count_honours_a_cgroup_cpu_limit(tmp_path: Path) -> None:
    from dnsserver.workers import cgroup_cpu_quota

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) == 1
