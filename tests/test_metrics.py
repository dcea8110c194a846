"""Metric names, labels and buckets as CoreDNS has them; hot-path counts reaching the scrape;
worker processes' counts adding up on one scrape."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from dnsserver import metrics as M

SERVER = "dns://:53"
ZONE = "cluster.local."
V4, V6 = socket.AF_INET, socket.AF_INET6


def scrape(m: M.Metrics) -> dict[str, list]:
    """Samples by sample name, from the real text exposition."""
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    hits = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v
                                                          for k, v in labels.items())]
    assert len(hits) == 1, f"{name}{labels}: {len(hits)} samples"
    return hits[0]


def test_labels_as_coredns_renders_them() -> None:
    assert [M.qtype_label(t) for t in (1, 28, 33, 12, 65, 255, 99, 64)] == [
        "A", "AAAA", "SRV", "PTR", "HTTPS", "ANY", "other", "other"]
    assert M.rcode_label(0) == "NOERROR" and M.rcode_label(3) == "NXDOMAIN"
    assert M.rcode_label(4000) == "RCODE4000"
    assert M.family_label(socket.AF_INET) == "1" and M.family_label(socket.AF_INET6) == "2"
    with pytest.raises(ValueError, match="address family"):
        M.family_label(7)


def test_buckets_are_coredns_buckets() -> None:
    assert M.TIME_BUCKETS[0] == 0.00025 and M.TIME_BUCKETS[-1] == pytest.approx(8.192)
    assert len(M.TIME_BUCKETS) == 16
    assert pytest.approx((0.00025, 0.0025, 0.025, 0.25, 2.5)) == M.SLIM_TIME_BUCKETS
    assert M.SIZE_BUCKETS[5] == 511 and M.SIZE_BUCKETS[-1] == 64000
    assert len(M.PROGRAMMING_BUCKETS) == 20
    # Prometheus buckets are "less or equal": a bound belongs to its own bucket.
    assert M.duration_bucket(0.0) == 0
    assert M.duration_bucket(0.00025) == 0
    assert M.duration_bucket(0.000251) == 1
    assert M.duration_bucket(8.192) == 15
    assert M.duration_bucket(100.0) == 16  # +Inf


def test_key_renders_every_label_once() -> None:
    k = M.key(SERVER, ZONE, "udp", socket.AF_INET6, 33, 3, "kubernetes", True, 70, 140)
    assert k == (SERVER, ZONE, "udp", "2", "SRV", "NXDOMAIN", "kubernetes", True, 70, 140)
    hash(k)


def test_flush_moves_counts_into_coredns_series() -> None:
    m = M.setup()
    qc = m.new_query_counts()
    a = M.key(SERVER, ZONE, "udp", V4, 1, 0, "kubernetes", False, 70, 120)
    nx = M.key(SERVER, ZONE, "tcp", V6, 28, 3, "kubernetes", True, 80, 600)
    for _ in range(3):
        qc.record(a, 0.0001)
    qc.record(nx, 0.003)
    qc.record(nx, 30.0)
    s = scrape(m)
    assert value(s, "coredns_dns_requests_total", type="A", proto="udp", family="1",
                 zone=ZONE, server=SERVER, view="") == 3
    assert value(s, "coredns_dns_requests_total", type="AAAA", proto="tcp", family="2") == 2
    assert value(s, "coredns_dns_responses_total", rcode="NOERROR", plugin="kubernetes") == 3
    assert value(s, "coredns_dns_responses_total", rcode="NXDOMAIN") == 2
    assert value(s, "coredns_dns_do_requests_total", zone=ZONE) == 2
    dur = "coredns_dns_request_duration_seconds"
    assert value(s, dur + "_bucket", le="0.00025") == 3
    assert value(s, dur + "_bucket", le="0.004") == 4
    assert value(s, dur + "_bucket", le="8.192") == 4
    assert value(s, dur + "_bucket", le="+Inf") == 5
    assert value(s, dur + "_count") == 5
    assert value(s, dur + "_sum") == pytest.approx(3 * 0.0001 + 0.003 + 30.0)
    rsz = "coredns_dns_response_size_bytes"
    assert value(s, rsz + "_bucket", proto="udp", le="100.0") == 0
    assert value(s, rsz + "_bucket", proto="udp", le="200.0") == 3
    assert value(s, rsz + "_sum", proto="tcp") == 1200
    assert value(s, "coredns_dns_request_size_bytes_sum", proto="udp") == 210
    # Flushed counts are cleared; a second scrape shows the same totals, not double.
    s2 = scrape(m)
    assert value(s2, "coredns_dns_requests_total", type="A") == 3
    assert not qc.data


def test_tally_and_flush_hooks_publish_other_counters() -> None:
    m = M.setup()
    t = m.new_tally()
    labels = (SERVER, "success", ZONE, "")
    for _ in range(4):
        t.data[(m.cache_hits, labels)] += 1
    t.inc(m.cache_requests, (SERVER, ZONE, ""), 6)
    t.inc(m.forward_max_concurrent_rejects)
    m.add_flush_hook(lambda: m.cache_entries.labels(SERVER, "success", ZONE, "").set(42))
    s = scrape(m)
    assert value(s, "coredns_cache_hits_total", type="success", zones=ZONE) == 4
    assert value(s, "coredns_cache_requests_total", zones=ZONE) == 6
    assert value(s, "coredns_forward_max_concurrent_rejects_total") == 1
    assert value(s, "coredns_cache_entries", type="success") == 42


# CoreDNS's metric names and their label names, as its plugins define them.
COREDNS_METRICS: dict[str, set[str]] = {
    "coredns_build_info": {"version", "revision", "goversion"},
    "coredns_panics_total": set(),
    "coredns_dns_requests_total": {"server", "zone", "view", "proto", "family", "type"},
    "coredns_dns_responses_total": {"server", "zone", "view", "rcode", "plugin"},
    "coredns_dns_request_duration_seconds_count": {"server", "zone", "view"},
    "coredns_dns_request_size_bytes_count": {"server", "zone", "view", "proto"},
    "coredns_dns_response_size_bytes_count": {"server", "zone", "view", "proto"},
    "coredns_dns_do_requests_total": {"server", "zone", "view"},
    "coredns_plugin_enabled": {"server", "zone", "view", "name"},
    "coredns_cache_entries": {"server", "type", "zones", "view"},
    "coredns_cache_requests_total": {"server", "zones", "view"},
    "coredns_cache_hits_total": {"server", "type", "zones", "view"},
    "coredns_cache_misses_total": {"server", "zones", "view"},
    "coredns_cache_prefetch_total": {"server", "zones", "view"},
    "coredns_cache_drops_total": {"server", "zones", "view"},
    "coredns_cache_served_stale_total": {"server", "zones", "view"},
    "coredns_cache_evictions_total": {"server", "type", "zones", "view"},
    "coredns_forward_healthcheck_broken_total": set(),
    "coredns_forward_max_concurrent_rejects_total": set(),
    "coredns_proxy_request_duration_seconds_count": {"proxy_name", "to", "rcode"},
    "coredns_proxy_healthcheck_failures_total": {"proxy_name", "to"},
    "coredns_proxy_conn_cache_hits_total": {"proxy_name", "to", "proto"},
    "coredns_proxy_conn_cache_misses_total": {"proxy_name", "to", "proto"},
    "coredns_kubernetes_dns_programming_duration_seconds_count": {"service_kind"},
    "coredns_health_request_duration_seconds_count": set(),
    "coredns_health_request_failures_total": set(),
    "coredns_reload_failed_total": set(),
    "coredns_reload_version_info": {"hash", "value"},
    "dnsserver_kubernetes_watch_restarts_total": {"kind"},
    "dnsserver_kubernetes_relists_total": {"kind"},
    "dnsserver_kubernetes_objects_skipped_total": {"kind"},
    "dnsserver_kubernetes_synced": {"kind"},
    "dnsserver_kubernetes_api_up": set(),
    "process_cpu_seconds_total": set(),
    "process_resident_memory_bytes": set(),
}


def test_every_required_name_with_coredns_label_names() -> None:
    m = M.setup()
    qc = m.new_query_counts()
    qc.record(M.key(SERVER, ZONE, "udp", V4, 1, 0, "kubernetes", True, 70, 120), 0.001)
    m.set_plugin_enabled(SERVER, ZONE, "kubernetes")
    m.set_reload_version("ab" * 64)
    m.observe_health(0.001, False)
    m.dns_programming_duration.labels("headless_with_selector").observe(0.5)
    m.proxy_request_duration.labels("forward", "127.0.0.1:53", "NOERROR").observe(0.01)
    for metric in (m.cache_entries, m.cache_hits, m.cache_evictions):
        metric.labels(SERVER, "success", ZONE, "")
    for metric in (m.cache_requests, m.cache_misses, m.cache_prefetches, m.cache_drops,
                   m.cache_served_stale):
        metric.labels(SERVER, ZONE, "")
    m.proxy_healthcheck_failures.labels("forward", "127.0.0.1:53")
    for metric in (m.proxy_conn_cache_hits, m.proxy_conn_cache_misses):
        metric.labels("forward", "127.0.0.1:53", "udp")
    for metric in (m.api_watch_restarts, m.api_relists, m.api_objects_skipped, m.api_synced):
        metric.labels("Service")
    s = scrape(m)
    for name, label_names in COREDNS_METRICS.items():
        assert name in s, f"{name} missing from the scrape"
        for sample in s[name]:
            assert set(sample.labels) == label_names, name
    assert value(s, "coredns_health_request_failures_total") == 1
    info = s["coredns_build_info"][0]
    assert info.value == 1 and info.labels["goversion"].startswith("python3.")
    # No *_created series: CoreDNS has none, dashboards should see the same shape.
    assert not [n for n in s if n.endswith("_created")]


def test_reload_version_keeps_only_the_running_hash() -> None:
    m = M.setup()
    m.set_reload_version("a" * 128)
    m.set_reload_version("b" * 128)
    hashes = [x.labels["value"] for x in scrape(m)["coredns_reload_version_info"]]
    assert hashes == ["b" * 128]


record_strategy = st.tuples(
    st.sampled_from([1, 28, 33, 12, 99]),
    st.sampled_from([0, 2, 3]),
    st.sampled_from(["udp", "tcp"]),
    st.booleans(),
    st.integers(min_value=17, max_value=70000),
    st.floats(min_value=0, max_value=20, allow_nan=False),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(record_strategy, min_size=1, max_size=60))
def test_scrape_totals_match_what_was_recorded(records: list[tuple]) -> None:
    m = M.setup()
    qc = m.new_query_counts()
    for qtype, rcode, proto, do, size, seconds in records:
        qc.record(M.key(SERVER, ZONE, proto, V4, qtype, rcode, "", do, size, size * 2), seconds)
    s = scrape(m)
    assert sum(x.value for x in s["coredns_dns_requests_total"]) == len(records)
    assert sum(x.value for x in s["coredns_dns_responses_total"]) == len(records)
    assert sum(x.value for x in s.get("coredns_dns_do_requests_total", [])) == sum(
        1 for r in records if r[3])
    assert value(s, "coredns_dns_request_duration_seconds_count") == len(records)
    assert math.isclose(value(s, "coredns_dns_request_duration_seconds_sum"),
                        sum(r[5] for r in records), rel_tol=1e-9, abs_tol=1e-9)
    # Buckets are cumulative and each holds exactly the records at or under its bound.
    for sample in s["coredns_dns_request_duration_seconds_bucket"]:
        le = float(sample.labels["le"])
        assert sample.value == sum(1 for r in records if r[5] <= le)
    sizes = s["coredns_dns_response_size_bytes_sum"]
    assert sum(x.value for x in sizes) == sum(r[4] * 2 for r in records)


PARENT = textwrap.dedent("""
    import asyncio, subprocess, sys
    from dnsserver import metrics as M
    from dnsserver.opshttp import OpsServer

    WORKER = '''
    import sys
    from dnsserver import metrics as M
    m = M.setup(sys.argv[1], worker=True)
    qc = m.new_query_counts()
    n = int(sys.argv[2])
    k = M.key("dns://:53", "cluster.local.", "udp", 2, 1, 0, "kubernetes", False, 70, 120)
    for _ in range(n):
        qc.record(k, 0.0002)
    m.cache_entries.labels("dns://:53", "success", "cluster.local.", "").set(n)
    m.flush()
    '''

    async def main():
        d = sys.argv[1]
        m = M.setup(d)
        m.api_synced.labels("Service").set(1)
        pids = []
        for n in (5, 7):
            p = subprocess.Popen([sys.executable, "-c", WORKER, d, str(n)])
            assert p.wait(timeout=60) == 0
            pids.append(p.pid)
            m.add_worker_pid(p.pid)
        ops = OpsServer(None, None, "127.0.0.1:0", registry=m.registry,
                        health_check_interval=None)
        ops.add_flush_hook(m.flush)
        await ops.start()
        print(ops.addresses["metrics"][1], flush=True)
        loop = asyncio.get_running_loop()
        assert (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "mark"
        m.mark_worker_dead(pids[1])
        print("marked", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        await ops.stop()

    asyncio.run(main())
""")


def _scrape_url(port: int) -> dict[str, list]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_worker_processes_add_up_on_one_scrape(tmp_path: Path) -> None:
    mpdir = tmp_path / "prom"
    mpdir.mkdir()
    (mpdir / "counter_999999.db").write_bytes(b"stale file from an earlier run")
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(mpdir)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdin is not None
        port = int(parent.stdout.readline())
        s = _scrape_url(port)
        assert value(s, "coredns_dns_requests_total", type="A", zone=ZONE) == 12
        assert value(s, "coredns_dns_request_duration_seconds_count") == 12
        assert value(s, "coredns_dns_request_duration_seconds_bucket", le="0.00025") == 12
        assert value(s, "coredns_cache_entries", type="success") == 12
        assert value(s, "dnsserver_kubernetes_synced", kind="Service") == 1
        assert value(s, "coredns_build_info") == 1
        # CPU of the parent and both (exited) workers' reads; at least the parent's is there.
        assert value(s, "process_cpu_seconds_total") > 0
        parent.stdin.write("mark\n")
        parent.stdin.flush()
        assert parent.stdout.readline().strip() == "marked"
        s = _scrape_url(port)
        # A dead worker's live gauge drops out; its counters stay (they are totals).
        assert value(s, "coredns_cache_entries", type="success") == 5
        assert value(s, "coredns_dns_requests_total", type="A") == 12
        parent.stdin.write("quit\n")
        parent.stdin.flush()
        assert parent.wait(timeout=30) == 0
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert not (mpdir / "counter_999999.db").exists()


def test_setup_rejects_a_file_as_directory(tmp_path: Path) -> None:
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        M.setup(str(f))
    with pytest.raises(ValueError, match="does not exist"):
        M.setup(str(tmp_path / "missing"), worker=True)
