"""DNS programming latency (issue 3, item 5): from a change posted to the API to the new answer.

The fake API (tests/fake_apiserver.py, its own process) serves a generated cluster of 10,000
services; dnsserver watches it through a kubeconfig. For each of N paced changes one headless
service's EndpointSlice gets a new endpoint IP (POST /_fake/upsert), and the time is taken from
just before the POST until a dnspython query for the service returns the new address (polled
back to back, with a deadline). The figure therefore includes the fake's own handling of the
POST and of the watch stream, and up to one query round trip of polling; the POST's own round
trip is reported too.

    .venv/bin/python -m bench.programming_latency [--changes 300] [--docs]

`--docs` rewrites the section "## Measured: API to answer latency" of docs/kubernetes-api.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from bench import gen_cluster, procs, servers
from bench.run import LOADGEN_CPU, SERVER_CPU, fake_api_script, free_port, write_kubeconfig

OUT = servers.REPO / "bench" / "out" / "programming-latency"
DOCS = servers.REPO / "docs" / "kubernetes-api.md"
SECTION = "## Measured: API to answer latency"
SERVICES = 10_000
START_TIMEOUT_S = 180.0  # fake API load plus dnsserver's first sync of 10,000 services
CHANGE_TIMEOUT_S = 2.0  # a change not answered by then counts as a failure
BUDGET_S = 300.0  # the whole run, whatever --changes says
WARMUP = 20


def headless_slices(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The EndpointSlices of headless services: their endpoints are what an A query returns."""
    headless = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items
                if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"}
    return [o for o in items if o["kind"] == "EndpointSlice"
            and (o["metadata"]["namespace"],
                 o["metadata"]["labels"]["kubernetes.io/service-name"]) in headless]


def write_cluster(path: Path) -> list[dict[str, Any]]:
    """Generate the cluster (pods left out: this Corefile does not watch them); return slices."""
    cluster = gen_cluster.build_cluster(SERVICES)
    items = [o for o in gen_cluster.snapshot_items(cluster) if o["kind"] != "Pod"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items},
                               separators=(",", ":")))
    return headless_slices(items)


def a_records(port: int, name: str) -> set[str] | None:
    q = dns.message.make_query(name, "A", use_edns=False)
    try:
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
    except (dns.exception.DNSException, OSError):
        return None
    if r.rcode() != dns.rcode.NOERROR:
        return None
    return {rd.address for rrset in r.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset}


class FakeControl:
    """POSTs to the fake's control endpoints over one kept-alive connection.

    The request is sent and its response read later, so the DNS polling starts at once and
    does not wait for the fake's reply (which comes after the object is stored).
    """

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def send_upsert(self, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.conn.request("POST", "/_fake/upsert", body=body,
                          headers={"Content-Type": "application/json"})

    def finish(self) -> None:
        resp = self.conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"fake upsert answered {resp.status}")


def observe(port: int, rv: str) -> None:
    """A second, independent watcher of EndpointSlices (run as its own process): prints
    `<perf_counter> <first endpoint IP>` the moment each event line arrives, so the fake's share
    of the latency can be told apart from the server's."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/apis/discovery.k8s.io/v1/endpointslices?watch=1&resourceVersion="
                 f"{rv}&timeoutSeconds=3600")
    resp = conn.getresponse()
    print("watching", flush=True)
    while line := resp.readline():
        now = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes on Linux
        if not line.strip():
            continue
        endpoints = json.loads(line)["object"].get("endpoints") or []
        if endpoints:
            print(f"{now:.6f} {endpoints[0]['addresses'][0]}", flush=True)


def measure(changes: int, pace_s: float, poll_gap_s: float) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    snap = OUT / "snapshot.json"
    slices = write_cluster(snap)
    api_port, dns_port = free_port(), free_port()
    api_log, dns_log = OUT / "fake_apiserver.log", OUT / "dnsserver.log"
    for log in (api_log, dns_log):
        log.unlink(missing_ok=True)
    kubeconfig = write_kubeconfig(OUT / "kubeconfig", api_port)
    corefile = OUT / "Corefile"
    corefile.write_text(f".:{dns_port} {{\n    bind 127.0.0.1\n"
                        f"    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n"
                        f"        kubeconfig {kubeconfig}\n        startup_timeout 60s\n"
                        f"    }}\n}}\n")
    python = str(servers.VENV_PYTHON if servers.VENV_PYTHON.exists() else sys.executable)
    started = time.monotonic()
    api = procs.start([python, str(fake_api_script()), "--snapshot", str(snap), "--port",
                       str(api_port)], LOADGEN_CPU, api_log)
    server = None
    observer: subprocess.Popen[str] | None = None
    try:
        if not procs.wait_until(lambda: b"listening on" in api_log.read_bytes(),
                                START_TIMEOUT_S, 0.1):
            raise RuntimeError(f"fake API server did not start, see {api_log}")
        server = procs.start([python, "-m", "dnsserver", "-conf", str(corefile)], SERVER_CPU,
                             dns_log, cwd=OUT)
        last = slices[-1]["metadata"]
        probe = f"{last['labels']['kubernetes.io/service-name']}.{last['namespace']}" \
                ".svc.cluster.local"
        if not procs.wait_until(lambda: server.poll() is None and bool(a_records(dns_port, probe)),
                                START_TIMEOUT_S, 0.1):
            raise RuntimeError(f"dnsserver did not sync, see {dns_log}")
        sync_s = time.monotonic() - started
        stats = http.client.HTTPConnection("127.0.0.1", api_port, timeout=10)
        stats.request("GET", "/_fake/stats")
        rv = str(json.loads(stats.getresponse().read())["resourceVersion"])
        stats.close()
        observer = subprocess.Popen(
            ["taskset", "-c", str(LOADGEN_CPU), python, "-m", "bench.programming_latency",
             "--observe", str(api_port), rv], stdout=subprocess.PIPE, text=True,
            cwd=servers.REPO, start_new_session=True)
        assert observer.stdout is not None
        if observer.stdout.readline().strip() != "watching":
            raise RuntimeError("the observing watcher did not start")
        observed: dict[str, float] = {}

        def read_observer() -> None:
            assert observer.stdout is not None
            for line in observer.stdout:
                t, ip = line.split()
                observed[ip] = float(t)

        threading.Thread(target=read_observer, daemon=True).start()
        control = FakeControl(api_port)
        deadline = time.monotonic() + BUDGET_S
        latencies: list[float] = []
        posts: list[float] = []
        fake_part: list[float] = []
        server_part: list[float] = []
        failures = 0
        for i in range(WARMUP + changes):
            if time.monotonic() > deadline:
                break
            obj = copy.deepcopy(slices[i % len(slices)])
            meta = obj["metadata"]
            name = f"{meta['labels']['kubernetes.io/service-name']}.{meta['namespace']}" \
                   ".svc.cluster.local"
            new_ip = f"10.250.{i // 250}.{i % 250 + 1}"
            obj["endpoints"][0]["addresses"] = [new_ip]
            for key in ("resourceVersion", "uid"):
                meta.pop(key, None)
            t0 = time.perf_counter()
            control.send_upsert(obj)
            seen = None
            while time.perf_counter() - t0 < CHANGE_TIMEOUT_S:
                got = a_records(dns_port, name)
                if got is not None and new_ip in got:
                    seen = time.perf_counter()
                    break
                if poll_gap_s:
                    time.sleep(poll_gap_s)  # the polling interval: leaves the fake its CPU
            control.finish()
            t_post = time.perf_counter()
            if i < WARMUP:
                continue
            if seen is None:
                failures += 1
            else:
                latencies.append(seen - t0)
                posts.append(t_post - t0)
                # The observer's line can trail the answer by a little: wait for it briefly.
                procs.wait_until(lambda ip=new_ip: ip in observed, 1.0, 0.001)
                if new_ip in observed:
                    fake_part.append(observed[new_ip] - t0)
                    server_part.append(seen - observed[new_ip])
            time.sleep(pace_s)  # pacing between changes, not synchronisation
        if server.poll() is not None:
            raise RuntimeError(f"dnsserver exited, see {dns_log}")
    finally:
        if observer is not None:
            procs.stop(observer)  # type: ignore[arg-type]
        if server is not None:
            procs.stop(server)
        procs.stop(api)
    return {"latencies": latencies, "posts": posts, "fake_part": fake_part,
            "server_part": server_part, "failures": failures, "sync_s": sync_s,
            "services": SERVICES + 1, "headless": len(slices), "pace_s": pace_s,
            "poll_gap_s": poll_gap_s}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def render(res: dict[str, Any], argv: list[str]) -> str:
    lat = res["latencies"]
    ms = lambda v: f"{v * 1000:.2f}"  # noqa: E731
    cmd = " ".join([".venv/bin/python -m bench.programming_latency", *argv])
    rows = [
        "| | n | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
        f"| POST to new answer | {len(lat)} | {ms(pct(lat, 50))} | {ms(pct(lat, 90))} | "
        f"{ms(pct(lat, 99))} | {ms(max(lat))} |",
    ]
    for label, key in (("POST to the event at an independent watcher (fake)", "fake_part"),
                       ("that event to the new answer (dnsserver + polling)", "server_part"),
                       ("POST round trip (not on the measured path)", "posts")):
        v = res[key]
        if v:
            rows.append(f"| {label} | {len(v)} | {ms(pct(v, 50))} | {ms(pct(v, 90))} | "
                        f"{ms(pct(v, 99))} | {ms(max(v))} |")
    return "\n".join([
        SECTION,
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.machine()}, "
        f"{_cpus()} CPUs, Python {platform.python_version()}, with `{cmd}`: "
        f"{res['services']:,} services ({res['headless']:,} headless, 20 endpoints each) "
        "served by `tests/fake_apiserver.py` in its own process (core 1, shared with the "
        "measuring client), dnsserver on core 0 watching it through a kubeconfig. Each change "
        "gives one headless service's EndpointSlice a new endpoint IP through "
        "`POST /_fake/upsert`; the time runs from just before the POST until a dnspython "
        f"query for the service answers with the new address. {WARMUP} unrecorded changes "
        f"first, then changes {res['pace_s'] * 1000:g} ms apart; "
        f"{res['failures']} not answered within {CHANGE_TIMEOUT_S:g} s. First sync took "
        f"{res['sync_s']:.1f} s. Load average (1 min) {res['load'][0]:.1f} before and "
        f"{res['load'][1]:.1f} after: other work shared the 2 cores, so the tails are noisy.",
        "",
        *rows,
        "",
        "What the first row includes besides dnsserver: the fake's handling of the POST and "
        "its writing of the watch event (a threaded `http.server` in Python, one thread per "
        "watch, woken together and serialised on one lock), and the polling: a query, then "
        f"{res['poll_gap_s'] * 1000:g} ms pause, and so on, so the answer is seen up to one "
        "pause plus one query round trip (about 0.3 ms with dnspython here) after it changed. "
        "The second and third rows split it at the moment an independent watcher process "
        "(`--observe`, on the fake's core) reads the same event: the third row is dnsserver's "
        "share plus polling, and also holds whatever time the fake takes between writing the "
        "event to the observer and to dnsserver's watch (other threads, GIL). Polling back to "
        "back with no pause raised the tails (p99 13-16 ms in trial runs): the polling client "
        "then takes CPU from the fake. The POST's response is read only afterwards, so the "
        "answer is polled while it is still outstanding. Target (issue 3): under 10 ms at the "
        "99th percentile for the server's part.",
        "",
    ])


def _cpus() -> int:
    return os.cpu_count() or 0


def write_docs(section: str) -> None:
    text = DOCS.read_text(encoding="utf-8")
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        rest = text[nxt + 1:] if nxt >= 0 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    DOCS.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--changes", type=int, default=300)
    ap.add_argument("--pace-ms", type=float, default=20.0, help="pause between changes")
    ap.add_argument("--poll-gap-ms", type=float, default=0.5,
                    help="pause between two polling queries")
    ap.add_argument("--docs", action="store_true", help=f"write the result into {DOCS.name}")
    ap.add_argument("--observe", nargs=2, metavar=("PORT", "RV"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.observe:
        observe(int(args.observe[0]), args.observe[1])
        return 0
    load_before = os.getloadavg()[0]
    res = measure(args.changes, args.pace_ms / 1000, args.poll_gap_ms / 1000)
    res["load"] = (load_before, os.getloadavg()[0])
    if not res["latencies"]:
        print(f"no change was answered in time ({res['failures']} failures)", file=sys.stderr)
        return 1
    section = render(res, [a for a in argv if a != "--docs"])
    print(section)
    if args.docs:
        write_docs(section)
        print(f"written to {DOCS}")
    return 0 if res["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
