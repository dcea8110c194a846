"""Several worker processes behind one address: answers, summed metrics, restarts, shutdown,
start-up failures, signals at every stage, and a worker that stops reading its feed."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dnsserver.snapshot import load_objects
from dnsserver.workers import CRASH_LIMIT, RESTART_FIRST_DELAY

from fake_apiserver import FakeApiServer
from helpers import DEMO, ServerProcess, answers, free_port, query, wait_for


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "multiprocessing.spawn"],
                         capture_output=True, text=True, check=False).stdout
    workers = []
    for child in out.split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"resource_tracker" not in cmdline:
            workers.append(int(child))
    return workers


def status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of GET url; None while nothing listens there."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def metric(port: int, name: str, **labels: str) -> float | None:
    """One sample of the supervisor's /metrics; None when it is not there (yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def replaced(supervisor: int, old: int) -> bool:
    """Two workers again, and `old` not one of them."""
    pids = children(supervisor)
    return len(pids) == 2 and old not in pids


def logged(server: ServerProcess, text: str) -> int:
    return sum(text in line for line in list(server.lines))


def wait_until_up(server: ServerProcess, workers: int = 2) -> list[int]:
    """Wait for the line the supervisor prints once every worker answers; the worker pids.
    (ServerProcess's first answer may come from the first worker while another still starts.)"""
    assert server.proc is not None
    wait_for(lambda: logged(server, f"workers: {workers}"), what="every worker serving")
    return children(server.proc.pid)


def group_alive(pgid: int) -> list[str]:
    """Command lines of the processes still in the server's process group (ServerProcess starts
    a new session)."""
    out = subprocess.run(["pgrep", "-a", "-g", str(pgid)], capture_output=True, text=True,
                         check=False).stdout
    return out.splitlines()


def wait_all_gone(pgid: int) -> None:
    # multiprocessing's resource tracker leaves on its own when it sees the supervisor's end of
    # its pipe close, a moment after the supervisor exits; workers are gone before that.
    wait_for(lambda: not group_alive(pgid), timeout=5,
             what=f"no process of the server left: {group_alive(pgid)}")


def answers_from_many_ports(name: str, port: int, senders: int = 16,
                            timeout: float = 0.2) -> list[list[str]]:
    """Ask `name` once from each of `senders` fresh source ports at the same time; the kernel
    spreads them over the workers by port. Returns the A records of each reply that came."""
    wire = dns.message.make_query(name, "A").to_wire()
    sockets = []
    replies: list[list[str]] = []
    try:
        for _ in range(senders):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.sendto(wire, ("127.0.0.1", port))
            sockets.append(s)
        waiting = set(sockets)
        deadline = time.monotonic() + timeout
        while waiting and (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select(list(waiting), [], [], left)
            for s in readable:
                waiting.discard(s)
                replies.append(answers(dns.message.from_wire(s.recv(65535)), "A"))
    finally:
        for s in sockets:
            s.close()
    return replies


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
        pids = wait_until_up(server)
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


# -- start-up failures, crashes, signals, a worker that stops reading ---------------------------


@pytest.fixture
def port_taken() -> Iterator[int]:
    """A loopback port that another program holds for UDP and TCP (another DNS server)."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", port))
        tcp.bind(("127.0.0.1", port))
        tcp.listen()
        yield port


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_a_port_already_bound_stops_the_server_with_the_bind_error(port_taken: int,
                                                                   workers: int) -> None:
    # The demo Corefile on a port someone else has: every worker fails to bind. However many
    # workers, the server exits 1 with the reason, as CoreDNS does, instead of restarting them.
    server = ServerProcess(port=port_taken, args=["--workers", str(workers)], wait=False)
    started = time.monotonic()
    server.start()
    try:
        assert server.proc is not None
        assert server.proc.wait(timeout=5) == 1
        assert time.monotonic() - started < 5
        server.stop()
        assert f"dnsserver: listen udp 127.0.0.1:{port_taken}: Address already in use" in (
            server.lines), server.output
        # Not a word about serving, and no worker left behind.
        assert not any(line.startswith(("workers:", "dnsserver-")) for line in server.lines)
        wait_all_gone(server.proc.pid)
    finally:
        server.stop()


def api_corefile(fake: FakeApiServer, tmp_path: Path, ops: str, options: str = "") -> str:
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    return f"""
.:{{PORT}} {{
    bind 127.0.0.1
    {ops}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        {options}
    }}
}}
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_during_the_api_sync_wait_stops_within_the_lame_duck_period(
        tmp_path: Path, workers: int) -> None:
    lameduck = 3.0
    health = free_port()
    with FakeApiServer(load_objects(DEMO)) as fake:
        fake.hang(True)  # the API takes the requests and never answers: no sync
        corefile = api_corefile(fake, tmp_path, f"health 127.0.0.1:{health} {{ lameduck 3s }}",
                                "startup_timeout 60s")
        server = ServerProcess(corefile, snapshot=None, args=["--workers", str(workers)],
                               wait=False)
        server.start()
        try:
            assert server.proc is not None
            wait_for(lambda: logged(server, "waiting for Kubernetes API"),
                     what="the sync wait")
            if workers > 1:
                # Nothing answers DNS yet, so /health must not say it is fine.
                assert status(f"http://127.0.0.1:{health}/health") != 200
            server.signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert server.proc.wait(timeout=lameduck + 5) == 0
            assert time.monotonic() - signalled < lameduck
            wait_all_gone(server.proc.pid)
        finally:
            server.stop()
            fake.hang(False)


@pytest.mark.parametrize("workers", [2, 4])
def test_a_port_taken_during_the_sync_wait_stops_the_server_with_the_workers_bind_error(
        tmp_path: Path, workers: int) -> None:
    # The supervisor finds a port that is taken before it waits for the API; one taken while it
    # waits is found by the workers, and the first one's error stops the server all the same.
    port = free_port()
    with FakeApiServer(load_objects(DEMO)) as fake:
        fake.hang(True)
        corefile = api_corefile(fake, tmp_path, "", "startup_timeout 2s")
        server = ServerProcess(corefile, snapshot=None, port=port,
                               args=["--workers", str(workers)], wait=False)
        server.start()
        try:
            assert server.proc is not None
            wait_for(lambda: logged(server, "waiting for Kubernetes API"), what="the sync wait")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
                assert server.proc.wait(timeout=2 + 5) == 1
            server.stop()
            assert f"dnsserver: listen udp 127.0.0.1:{port}: Address already in use" in (
                server.lines), server.output
            assert logged(server, "starting server with unsynced Kubernetes API")
            assert not logged(server, "workers:")
            wait_all_gone(server.proc.pid)
        finally:
            server.stop()
            fake.hang(False)


def test_a_stopped_worker_stalls_neither_the_others_nor_health_and_is_replaced(
        tmp_path: Path) -> None:
    health, metrics = free_port(), free_port()
    backlog = 200
    with FakeApiServer(load_objects(DEMO)) as fake:
        corefile = api_corefile(fake, tmp_path, f"health 127.0.0.1:{health}\n"
                                f"    prometheus 127.0.0.1:{metrics}")
        with ServerProcess(corefile, snapshot=None, ready_name="web.shop.svc.cluster.local",
                           ready_type="A", args=["--workers", "2", "--worker-backlog",
                                                 str(backlog)]) as server:
            assert server.proc is not None
            supervisor = server.proc.pid
            stopped = wait_until_up(server)[0]
            os.kill(stopped, signal.SIGSTOP)
            try:
                # A change through the API reaches the worker that still reads within 1 s.
                fake.upsert(service("shop", "first", "10.96.50.1"))
                changed = time.monotonic()
                wait_for(lambda: ["10.96.50.1"] in answers_from_many_ports(
                    "first.shop.svc.cluster.local", server.port), timeout=1.0,
                    what="the change answered by the running worker")
                assert time.monotonic() - changed < 1.0
                # The supervisor's own listeners answer at once too.
                asked = time.monotonic()
                assert status(f"http://127.0.0.1:{health}/health", timeout=1.0) == 200
                assert time.monotonic() - asked < 1.0
                # Changes pile up for the stopped worker until it is past its bound: then it
                # is replaced, and the replacement gets the whole state.
                for i in range(20 * backlog):
                    fake.upsert(service("shop", f"churn-{i}", f"10.96.51.{i % 250}"))
                    if i % 20 == 0 and stopped not in children(supervisor):
                        break
                wait_for(lambda: replaced(supervisor, stopped) and metric(
                    metrics, "dnsserver_workers_serving") == 2, what="a replacement serving")
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stopped, signal.SIGCONT)
            assert logged(server, "messages behind the cluster state; replacing it") == 1, (
                server.output)
            assert metric(metrics, "dnsserver_worker_restarts_total", reason="fell_behind") == 1
            fake.upsert(service("shop", "last", "10.96.52.1"))

            def all_answer_the_latest() -> bool:
                got = answers_from_many_ports("last.shop.svc.cluster.local", server.port,
                                              timeout=1.0)
                return len(got) == 16 and all(a == ["10.96.52.1"] for a in got)

            wait_for(all_answer_the_latest, what="every worker answering the latest change")
            assert server.stop() == 0


def test_a_worker_that_keeps_crashing_is_restarted_with_backoff_then_stops_the_server(
        ) -> None:
    metrics, health = free_port(), free_port()
    corefile = f"""
.:{{PORT}} {{
    bind 127.0.0.1
    health 127.0.0.1:{health}
    prometheus 127.0.0.1:{metrics}
    kubernetes cluster.local in-addr.arpa ip6.arpa
}}
"""
    server = ServerProcess(corefile, args=["--workers", "2"])
    server.start()
    try:
        assert server.proc is not None
        supervisor = server.proc.pid
        for crash in range(1, CRASH_LIMIT + 2):
            wait_for(lambda: metric(metrics, "dnsserver_workers_serving") == 2,
                     what="both workers serving")
            victim = children(supervisor)[0]
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            if crash > CRASH_LIMIT:
                break
            wait_for(lambda: logged(server, "starting it again in") == crash,  # noqa: B023
                     what=f"crash {crash} noticed")
            # The other worker answers, and /health says so, while this one waits to restart.
            assert answers(query("web.shop.svc.cluster.local", port=server.port)) == [
                "10.96.10.10"]
            assert status(f"http://127.0.0.1:{health}/health") == 200
            wait_for(lambda: replaced(supervisor, victim), what=f"restart {crash}")  # noqa: B023
            assert time.monotonic() - killed >= RESTART_FIRST_DELAY * 2 ** (crash - 1)
        assert server.proc.wait(timeout=10) == 1
        assert logged(server, "worker restarts within 60s, stopping") == 1, server.output
        assert logged(server, "starting it again in") == CRASH_LIMIT
        wait_all_gone(supervisor)
    finally:
        server.stop()


def test_health_and_ready_fail_while_no_worker_answers() -> None:
    health, ready = free_port(), free_port()
    corefile = f"""
.:{{PORT}} {{
    bind 127.0.0.1
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa
}}
"""
    with ServerProcess(corefile, args=["--workers", "2"]) as server:
        assert server.proc is not None
        wait_for(lambda: status(f"http://127.0.0.1:{ready}/ready") == 200, what="ready")
        for pid in children(server.proc.pid):
            os.kill(pid, signal.SIGKILL)
        # Until a restarted worker answers, neither probe may say the server is fine.
        wait_for(lambda: status(f"http://127.0.0.1:{health}/health") == 503, interval=0.005,
                 what="/health failing")
        assert status(f"http://127.0.0.1:{ready}/ready") == 503
        wait_for(lambda: status(f"http://127.0.0.1:{health}/health") == 200, what="healthy")
        wait_for(lambda: status(f"http://127.0.0.1:{ready}/ready") == 200, what="ready again")
        assert answers(query("web.shop.svc.cluster.local", port=server.port)) == ["10.96.10.10"]


def test_sigterm_while_a_worker_waits_to_restart_stops_after_the_lame_duck() -> None:
    corefile = """
.:{PORT} {
    bind 127.0.0.1
    health 127.0.0.1:0 {
        lameduck 1s
    }
    kubernetes cluster.local in-addr.arpa ip6.arpa
}
"""
    with ServerProcess(corefile, args=["--workers", "2"]) as server:
        assert server.proc is not None
        victim = wait_until_up(server)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: logged(server, "starting it again in"), what="the restart scheduled")
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()
        # The survivor keeps answering through its lame duck; then everything stops.
        assert answers(query("web.shop.svc.cluster.local", port=server.port)) == ["10.96.10.10"]
        assert server.proc.wait(timeout=10) == 0
        assert time.monotonic() - signalled < 1.0 + 1.5
        wait_all_gone(server.proc.pid)
        assert not logged(server, "serving again")


def service(ns: str, name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
