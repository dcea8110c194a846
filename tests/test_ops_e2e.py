"""Health, readiness, metrics, query logs and lame duck on the real server process."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from helpers import ServerProcess, answers, free_port, query, wait_for


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out.append((s.labels, s.value))
    return out


def corefile(health: int, ready: int, metrics: int, extra: str = "") -> str:
    return f"""
.:{{PORT}} {{
    bind 127.0.0.1
    errors
    log
    health 127.0.0.1:{health} {{
        lameduck 1s
    }}
    ready 127.0.0.1:{ready}
    prometheus 127.0.0.1:{metrics}
    kubernetes cluster.local in-addr.arpa ip6.arpa
    {extra}
}}
"""


def test_health_ready_metrics_and_logs() -> None:
    h, r, m = free_port(), free_port(), free_port()
    with ServerProcess(corefile(h, r, m)) as server:
        assert get(f"http://127.0.0.1:{h}/health") == (200, "OK")
        assert get(f"http://127.0.0.1:{r}/ready") == (200, "OK")
        for _ in range(5):
            assert answers(query("web.shop.svc.cluster.local", port=server.port)) == [
                "10.96.10.10"]
        query("nope.shop.svc.cluster.local", port=server.port)

        def scraped() -> str | None:
            status, text = get(f"http://127.0.0.1:{m}/metrics")
            total = sum(v for labels, v in samples(text, "coredns_dns_requests_total")
                        if labels.get("type") == "A")
            return text if status == 200 and total >= 6 else None

        text = wait_for(scraped, what="requests counted on /metrics")
        responses = {(lb["rcode"], lb["plugin"]): v
                     for lb, v in samples(text, "coredns_dns_responses_total")}
        # Four of the five lookups of web were fast-path hits; all five are counted.
        assert responses[("NOERROR", "kubernetes")] >= 5
        assert responses[("NXDOMAIN", "kubernetes")] >= 1
        for name in ("coredns_build_info", "coredns_plugin_enabled",
                     "coredns_dns_request_duration_seconds_bucket",
                     "coredns_dns_request_size_bytes_bucket",
                     "coredns_dns_response_size_bytes_bucket"):
            assert samples(text, name), name
        enabled = {lb["name"] for lb, _ in samples(text, "coredns_plugin_enabled")}
        assert {"kubernetes", "log"} <= enabled
        # The log plugin writes CoreDNS's line for slow and fast answers alike.
        logged = wait_for(lambda: [ln for ln in server.lines
                                   if '"A IN web.shop.svc.cluster.local. udp' in ln],
                          what="query log lines")
        assert len(logged) >= 5
        assert logged[0].startswith("[INFO] 127.0.0.1:")
        assert " NOERROR qr,aa,rd " in logged[0]  # no RA on our own answers, as CoreDNS


def test_lame_duck_keeps_answering_then_stops_cleanly() -> None:
    h, r, m = free_port(), free_port(), free_port()
    server = ServerProcess(corefile(h, r, m)).start()
    try:
        server.signal(signal.SIGTERM)
        wait_for(lambda: get(f"http://127.0.0.1:{r}/ready")[0] == 503, what="ready 503")
        # During lame duck: health stays OK and DNS keeps answering.
        assert get(f"http://127.0.0.1:{h}/health") == (200, "OK")
        assert answers(query("api.shop.svc.cluster.local", port=server.port)) == ["10.96.10.20"]
        started = time.monotonic()
        assert server.proc is not None
        assert server.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert any("lameduck" in line for line in server.lines)
    finally:
        server.stop()
