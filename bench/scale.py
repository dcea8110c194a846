"""Cluster scale (issue 7, item 5): time to first sync from the fake API and resident memory.

10,000 services, 10,000 EndpointSlices with 100,000 endpoints, 150,000 pods served by
tests/fake_apiserver.py; a second cluster with 10,000 more endpoints gives memory per 10k.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from bench import gen_cluster, procs, report, servers
from bench.run import BENCH, LOADGEN_CPU, SERVER_CPU, fake_api_script, free_port, write_api_config

SYNC_TIMEOUT_S = 300.0
SERVICES, ENDPOINTS, PODS = 10_000, 100_000, 150_000


def probes(cluster: gen_cluster.Cluster) -> list[tuple[str, str]]:
    """Names that resolve only once the last services and slices are in: first, last, middle."""
    svcs = cluster.services
    picks = [svcs[1], svcs[len(svcs) // 2], svcs[-1]]
    headless = [s for s in svcs if not s.cluster_ip]
    out = [(s.fqdn, "A") for s in picks]
    if headless:
        last = headless[-1]
        out.append((f"{last.endpoints[-1].dns_label}.{last.fqdn}", "A"))
    return out


def resolves(port: int, names: list[tuple[str, str]]) -> bool:
    for name, rtype in names:
        q = dns.message.make_query(name, rtype, use_edns=False)
        try:
            r = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
        except (dns.exception.DNSException, OSError):
            return False
        if r.rcode() != dns.rcode.NOERROR or not r.answer:
            return False
    return True


def one(label: str, endpoints: int, out: Path, extra_args: list[str],
        pods: str | None = None) -> dict[str, float]:
    """Generate, serve through the fake API, start dnsserver, and time it to a full answer."""
    folder = out / label
    snap = folder / "snapshot.json"
    cluster = gen_cluster.build_cluster(SERVICES, endpoints, PODS)
    if not snap.exists():
        folder.mkdir(parents=True, exist_ok=True)
        gen_cluster.write_snapshot(cluster, snap)
    api_port, dns_port = free_port(), free_port()
    api_log = folder / "fake_apiserver.log"
    api_log.unlink(missing_ok=True)
    api = procs.start([str(servers.VENV_PYTHON), str(fake_api_script()), "--snapshot", str(snap),
                       "--port", str(api_port)], LOADGEN_CPU, api_log)
    server = None
    try:
        if not procs.wait_until(lambda: b"listening on" in api_log.read_bytes(), 600, 0.2):
            raise RuntimeError(f"fake API server did not start, see {api_log}")
        _, corefile = write_api_config(folder, api_port, dns_port, pods)
        names = probes(cluster)
        t0 = time.monotonic()
        workers = [] if "--workers" in extra_args else ["--workers", "1"]
        server = procs.start([str(servers.DNSSERVER_BIN), "-conf", str(corefile), "-dns.port",
                              str(dns_port), *workers, *extra_args], SERVER_CPU,
                             folder / "dnsserver.log")
        ok = procs.wait_until(lambda: server.poll() is not None or resolves(dns_port, names),
                              SYNC_TIMEOUT_S, 0.05)
        sync_s = time.monotonic() - t0
        if not ok or server.poll() is not None:
            raise RuntimeError(f"dnsserver did not sync in {SYNC_TIMEOUT_S:g}s, see {folder}")
        time.sleep(3.0)  # let start-up garbage go before reading the resident set
        return {"sync_s": sync_s, "rss_mb": procs.rss_bytes(server.pid) / 2**20,
                "cpu_s": procs.cpu_seconds(server.pid), "endpoints": endpoints,
                "services": len(cluster.services), "pods": PODS,
                "pods_verified": pods == "verified"}
    finally:
        if server is not None:
            procs.stop(server)
        procs.stop(api)


def render(base: dict[str, float], plus: dict[str, float] | None, extra: list[str],
           verified: dict[str, float] | None = None) -> str:
    coredns = (base["pods"] + base["services"]) / 1000 + 54
    lines = [
        "## Scale: first sync and memory (bench/scale.py)",
        "",
        "- command: `python -m bench.scale`" + (f" {' '.join(extra)}" if extra else ""),
        f"- cluster: {base['services']:,.0f} services (with `default/kubernetes`), as many "
        f"EndpointSlices, {base['endpoints']:,.0f} endpoints, {base['pods']:,.0f} pods, "
        "served by tests/fake_apiserver.py (on core 1); dnsserver on core 0",
        "- first sync: from process start until the first, middle and last service and the "
        "last headless endpoint name all resolve",
        "",
        "| cluster | time to first sync s | RSS after sync MB | server CPU s |",
        "|---|---:|---:|---:|",
        f"| {base['endpoints']:,.0f} endpoints | {base['sync_s']:.2f} | {base['rss_mb']:.0f} "
        f"| {base['cpu_s']:.1f} |",
    ]
    if plus:
        lines.append(f"| {plus['endpoints']:,.0f} endpoints | {plus['sync_s']:.2f} "
                     f"| {plus['rss_mb']:.0f} | {plus['cpu_s']:.1f} |")
        lines += ["", f"- memory per additional 10,000 endpoints: "
                      f"{(plus['rss_mb'] - base['rss_mb']):.1f} MB"]
    if verified:
        lines.append(f"- with `pods verified` (the 150,000 pods watched and held too): first sync "
                     f"{verified['sync_s']:.2f} s, RSS {verified['rss_mb']:.0f} MB, server CPU "
                     f"{verified['cpu_s']:.1f} s")
    lines.append(f"- CoreDNS published estimate (pods + services)/1000 + 54 MB = "
                 f"{coredns:.0f} MB (RSS here: {base['rss_mb'] / coredns:.2f} of it"
                 + (f"; with `pods verified`: {verified['rss_mb'] / coredns:.2f}"
                    if verified else "") + ")")
    lines.append("- one worker process (`--workers 1`, pinned to one core); with N workers the "
                 "supervisor and every worker hold a copy: about (N + 1) times this")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=BENCH / "out" / "scale")
    ap.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    ap.add_argument("--no-plus", action="store_true", help="skip the +10k endpoints cluster")
    ap.add_argument("--dnsserver-arg", action="append", default=[])
    ap.add_argument("--no-verified", action="store_true",
                    help="skip the run with `pods verified` (150,000 pods held)")
    args = ap.parse_args(argv)
    why = servers.kinds()["dnsserver"].available()
    if why or not fake_api_script().exists():
        print(f"not measured: {why or 'tests/fake_apiserver.py missing'}", file=sys.stderr)
        return 2
    base = one("e100k", ENDPOINTS, args.out, args.dnsserver_arg)
    print(json.dumps(base), flush=True)
    plus = None
    if not args.no_plus:
        plus = one("e110k", ENDPOINTS + 10_000, args.out, args.dnsserver_arg)
        print(json.dumps(plus), flush=True)
    verified = None
    if not args.no_verified:
        verified = one("e100k", ENDPOINTS, args.out, args.dnsserver_arg, pods="verified")
        print(json.dumps(verified), flush=True)
    text = render(base, plus, args.dnsserver_arg, verified)
    print(text)
    if str(args.results) not in ("", "."):
        report.replace_section(args.results, "bench-scale", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
