"""A bounded mixed flood against the real server, sampling its memory: does RSS stay flat?

    .venv/bin/python -m bench.flood [--minutes 10] [--snapshot FILE] [--write-results]

Starts `python -m dnsserver --workers 1` on 127.0.0.1 (pinned to core 0) with the kubernetes
block and `prometheus`, then, for the given time, from core 1:

- dnsperf (Debian's, in 60-second runs) at a fixed rate: existing names in random case, names
  that do not exist (NXDOMAIN, each new), random query types;
- a Python sender: garbage datagrams (random bytes, good queries with bytes changed, runts,
  responses), queries with a unique random EDNS cookie each (every one a new fast-path entry:
  the fast path is bounded at 100,000 and starts over when full), TCP connections that
  pipeline 200 queries, and TCP connections that stall (nothing, or half a message) until the
  server's timeouts close them.

Every few seconds it samples the server's VmRSS (/proc/PID/status, whole process tree) and its
`dnsserver_limit_in_use` gauges. It reports start, peak and end RSS and the slope of a
least-squares line over the second half, as JSON in bench/out/flood/ and, with
`--write-results`, in bench/RESULTS.md between the fuzz markers. Every loop is bounded in count
and time; only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import dns.edns
import dns.message

from bench import procs

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "flood"
DEMO = ROOT / "zones" / "demo-cluster.yaml"
SERVER_CPU, LOAD_CPU = 0, 1
EXISTING = [
    "kubernetes.default.svc.cluster.local", "kube-dns.kube-system.svc.cluster.local",
    "web.shop.svc.cluster.local", "api.shop.svc.cluster.local", "frontend.shop.svc.cluster.local",
    "_https._tcp.web.shop.svc.cluster.local", "db.data.svc.cluster.local",
    "db-0.db.data.svc.cluster.local", "search.data.svc.cluster.local",
    "payments.shop.svc.cluster.local", "www.shop.svc.cluster.local",
    "dual.shop.svc.cluster.local", "v6only.shop.svc.cluster.local",
    "10-244-1-10.shop.pod.cluster.local", "dns-version.cluster.local",
    "1.0.96.10.in-addr.arpa", "10.0.96.10.in-addr.arpa",
]
QTYPES = ["A", "A", "A", "AAAA", "AAAA", "SRV", "PTR", "TXT", "MX", "SOA", "CNAME", "ANY", "NS"]

PERF_STATS = (("sent", r"Queries sent:\s+(\d+)"), ("completed", r"Queries completed:\s+(\d+)"),
              ("lost", r"Queries lost:\s+(\d+)"), ("qps", r"Queries per second:\s+([\d.]+)"))

COREFILE = """
.:{port} {{
    bind 127.0.0.1
    errors
    prometheus 127.0.0.1:{metrics}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        pods insecure
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_case(rng: random.Random, name: str) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in name)


def query_file(path: Path, rng: random.Random, lines: int = 200_000) -> Path:
    """dnsperf's input: 60% existing names in random case, 30% names that do not exist (each
    line new), 10% existing names with any query type."""
    with path.open("w") as f:
        for i in range(lines):
            r = rng.random()
            if r < 0.6:
                f.write(f"{random_case(rng, rng.choice(EXISTING))} {rng.choice(QTYPES)}\n")
            elif r < 0.9:
                f.write(f"nx{i}-{rng.getrandbits(24):x}.shop.svc.cluster.local A\n")
            else:
                f.write(f"{rng.choice(EXISTING)} TYPE{rng.randrange(1, 65535)}\n")
    return path


class Sender:
    """Garbage, unique-cookie queries and TCP pipeliners/stallers, paced, bounded in time."""

    def __init__(self, port: int, until: float, rng: random.Random) -> None:
        self.port = port
        self.until = until
        self.rng = rng
        self.stats = {"garbage_sent": 0, "garbage_replies": 0, "cookie_sent": 0,
                      "cookie_answered": 0, "tcp_pipelines": 0, "tcp_pipelined_answered": 0,
                      "tcp_pipeline_failures": 0, "stallers_opened": 0,
                      "stallers_closed_by_server": 0}
        self.good = dns.message.make_query("web.shop.svc.cluster.local", "A").to_wire()

    def garbage(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(5)
        if kind == 0:
            return rng.randbytes(rng.randrange(0, 600))
        if kind == 1:
            data = bytearray(self.good)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            return bytes(data)
        if kind == 2:
            return rng.randbytes(rng.randrange(0, 12))
        if kind == 3:  # a response: must be dropped, never answered
            return self.good[:2] + bytes([self.good[2] | 0x80]) + self.good[3:]
        return self.good[:rng.randrange(12, len(self.good))]  # cut short

    def udp_loop(self, garbage_per_s: int, cookies_per_s: int) -> None:
        addr = ("127.0.0.1", self.port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as cookie:
            junk.setblocking(False)
            cookie.setblocking(False)
            tick = 0.01
            next_at = time.monotonic()
            while time.monotonic() < self.until:
                for _ in range(max(1, int(garbage_per_s * tick))):
                    junk.sendto(self.garbage(), addr)
                    self.stats["garbage_sent"] += 1
                for _ in range(max(1, int(cookies_per_s * tick))):
                    name = random_case(self.rng, self.rng.choice(EXISTING))
                    opt = dns.edns.CookieOption(self.rng.randbytes(8), b"")
                    q = dns.message.make_query(name, "A", use_edns=0, payload=1232,
                                               options=[opt], id=self.rng.randrange(65536))
                    cookie.sendto(q.to_wire(), addr)
                    self.stats["cookie_sent"] += 1
                for sock, key in ((junk, "garbage_replies"), (cookie, "cookie_answered")):
                    for _ in range(10_000):
                        try:
                            sock.recv(65535)
                        except BlockingIOError:
                            break
                        self.stats[key] += 1
                next_at += tick
                time.sleep(max(0.0, next_at - time.monotonic()))  # pacing, not synchronisation

    def tcp_pipeline_loop(self, every: float, count: int = 200) -> None:
        while time.monotonic() < self.until:
            started = time.monotonic()
            blob = bytearray()
            for i in range(count):
                name = random_case(self.rng, self.rng.choice(EXISTING))
                wire = dns.message.make_query(name, self.rng.choice(QTYPES), id=i).to_wire()
                blob += struct.pack("!H", len(wire)) + wire
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(blob)
                    buf = b""
                    got = 0
                    while got < count:
                        chunk = s.recv(65535)
                        if not chunk:
                            break
                        buf += chunk
                        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                            buf = buf[2 + struct.unpack("!H", buf[:2])[0]:]
                            got += 1
                self.stats["tcp_pipelined_answered"] += got
                self.stats["tcp_pipelines"] += 1
                if got < count:
                    self.stats["tcp_pipeline_failures"] += 1
            except OSError:
                self.stats["tcp_pipeline_failures"] += 1
            time.sleep(max(0.0, every - (time.monotonic() - started)))  # pacing

    def staller_loop(self, keep: int) -> None:
        """Keep `keep` stalled connections open; count those the server closes."""
        open_: list[socket.socket] = []
        try:
            while time.monotonic() < self.until:
                while len(open_) < keep:
                    try:
                        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    except OSError:
                        break
                    if self.rng.random() < 0.5:
                        s.sendall(b"\x00\x40" + self.rng.randbytes(5))  # half a message
                    s.setblocking(False)
                    open_.append(s)
                    self.stats["stallers_opened"] += 1
                for s in list(open_):
                    try:
                        if s.recv(100) == b"":
                            raise ConnectionError
                    except BlockingIOError:
                        continue
                    except OSError:
                        pass
                    s.close()
                    open_.remove(s)
                    self.stats["stallers_closed_by_server"] += 1
                time.sleep(0.2)  # pacing of the poll
        finally:
            for s in open_:
                s.close()


def scrape(metrics_port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for m in re.finditer(r'^dnsserver_limit_(in_use|rejections_total)\{limit="(\w+)"\} (\S+)$',
                         text, re.M):
        out[f"{m.group(1)}:{m.group(2)}"] = float(m.group(3))
    return out


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y)."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else 0.0


def answers_udp(port: int) -> bool:
    q = dns.message.make_query("kubernetes.default.svc.cluster.local", "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        s.sendto(q.to_wire(), ("127.0.0.1", port))
        try:
            return bool(s.recv(512))
        except OSError:
            return False


def flood(minutes: float, snapshot: Path, qps: int, interval: float) -> dict[str, Any]:
    rng = random.Random(53)
    OUT.mkdir(parents=True, exist_ok=True)
    port, metrics_port = free_port(), free_port()
    conf = OUT / "Corefile"
    conf.write_text(COREFILE.format(port=port, metrics=metrics_port))
    queries = query_file(OUT / "queries.txt", rng)
    log = OUT / "server.log"
    log.write_text("")
    server = procs.start([sys.executable, "-m", "dnsserver", "--workers", "1", "-conf",
                          str(conf), "--snapshot", str(snapshot)], SERVER_CPU, log, cwd=ROOT)
    perf_runs: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    try:
        if not procs.wait_until(lambda: answers_udp(port), timeout=30):
            raise RuntimeError(f"server did not answer:\n{log.read_text()[-2000:]}")
        started = time.monotonic()
        until = started + minutes * 60
        sender = Sender(port, until, rng)
        threads = [threading.Thread(target=sender.udp_loop, args=(300, 1500), daemon=True),
                   threading.Thread(target=sender.tcp_pipeline_loop, args=(1.0,), daemon=True),
                   threading.Thread(target=sender.staller_loop, args=(20,), daemon=True)]
        for t in threads:
            t.start()

        def perf_loop() -> None:
            while (left := until - time.monotonic()) > 5:
                seconds = min(60.0, left)
                cmd = ["taskset", "-c", str(LOAD_CPU), "dnsperf", "-s", "127.0.0.1", "-p",
                       str(port), "-d", str(queries), "-l", f"{seconds:.0f}", "-Q", str(qps),
                       "-q", "500", "-t", "2", "-e"]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                      timeout=seconds + 30)
                stats = {k: float(m.group(1)) for k, rx in PERF_STATS
                         if (m := re.search(rx, proc.stdout))}
                perf_runs.append(stats)

        perf = threading.Thread(target=perf_loop, daemon=True)
        perf.start()
        while time.monotonic() < until:
            now = time.monotonic() - started
            samples.append({"t": round(now, 1), "rss": procs.rss_bytes(server.pid),
                            "cpu": procs.cpu_seconds(server.pid), **scrape(metrics_port)})
            print(f"{now:6.0f}s rss {samples[-1]['rss'] / 2**20:7.1f} MiB  "
                  f"fast path {samples[-1].get('in_use:fast_path_entries', '?')}", flush=True)
            time.sleep(max(0.0, min(interval, until - time.monotonic())))  # the sampling period
        for t in [*threads, perf]:
            t.join(timeout=90)
        still_answers = answers_udp(port)
        samples.append({"t": round(time.monotonic() - started, 1),
                        "rss": procs.rss_bytes(server.pid), "cpu": procs.cpu_seconds(server.pid),
                        **scrape(metrics_port)})
    finally:
        procs.stop(server)
    rss = [(s["t"], s["rss"] / 2**20) for s in samples]
    half = [p for p in rss if p[0] >= rss[-1][0] / 2]
    fast = [s.get("in_use:fast_path_entries", 0) for s in samples]
    result = {
        "minutes": minutes, "samples": len(samples), "interval_s": interval,
        "rss_mib": {"start": round(rss[0][1], 1), "peak": round(max(y for _, y in rss), 1),
                    "end": round(rss[-1][1], 1),
                    "second_half_slope_mib_per_min": round(slope(half) * 60, 3)},
        "fast_path_entries_max": max(fast), "fast_path_restarts_seen": sum(
            1 for a, b in itertools.pairwise(fast) if b < a),
        "server_cpu_s": round(samples[-1]["cpu"], 1), "still_answers": still_answers,
        "dnsperf": {k: sum(r.get(k, 0) for r in perf_runs) for k in ("sent", "completed", "lost")},
        "dnsperf_runs": len(perf_runs), "sender": sender.stats,
        "rejections": {k: v for k, v in samples[-1].items() if k.startswith("rejections")},
    }
    (OUT / "result.json").write_text(json.dumps({**result, "series": samples}, indent=2))
    return result


def markdown(r: dict[str, Any]) -> str:
    m = r["rss_mib"]
    d = r["dnsperf"]
    s = r["sender"]
    return (
        f"Flood (`python -m bench.flood --minutes {r['minutes']:g}`), one worker pinned to core 0, "
        f"load on core 1, RSS sampled every {r['interval_s']:g} s ({r['samples']} samples):\n\n"
        "| RSS start | peak | end | slope, second half |\n|---|---|---|---|\n"
        f"| {m['start']} MiB | {m['peak']} MiB | {m['end']} MiB | "
        f"{m['second_half_slope_mib_per_min']:+} MiB/min |\n\n"
        f"- dnsperf: {d['sent']:.0f} sent, {d['completed']:.0f} answered, {d['lost']:.0f} lost "
        f"({r['dnsperf_runs']} runs)\n"
        f"- garbage datagrams: {s['garbage_sent']} sent, {s['garbage_replies']} replies "
        "(FORMERR/NOTIMP headers; responses and runts get none)\n"
        f"- unique-cookie queries: {s['cookie_sent']} sent, {s['cookie_answered']} answered; "
        f"fast path peaked at {r['fast_path_entries_max']:.0f} entries and started over "
        f"{r['fast_path_restarts_seen']} times (seen at sampling)\n"
        f"- TCP: {s['tcp_pipelines']} pipelines of 200 ({s['tcp_pipelined_answered']} answers, "
        f"{s['tcp_pipeline_failures']} incomplete); {s['stallers_opened']} stalled connections "
        f"opened, {s['stallers_closed_by_server']} closed by the server's timeouts\n"
        f"- server CPU {r['server_cpu_s']} s; still answering at the end: {r['still_answers']}\n")


def write_results(section: str) -> None:
    """Put `section` under '### Flood' inside the fuzz markers of bench/RESULTS.md."""
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text()
    start, end = "<!-- fuzz:start -->", "<!-- fuzz:end -->"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n## Fuzzing and flood\n\n### Flood\n\n{end}\n"
    head, rest = text.split(start, 1)
    body, tail = rest.split(end, 1)
    if "### Flood" not in body:
        body = body.rstrip("\n") + "\n\n### Flood\n\n"
    before, _ = body.split("### Flood", 1)
    path.write_text(f"{head}{start}{before}### Flood\n\n{section}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--snapshot", type=Path, default=DEMO)
    p.add_argument("--qps", type=int, default=8000, help="dnsperf's fixed rate")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--write-results", action="store_true")
    args = p.parse_args(argv)
    result = flood(args.minutes, args.snapshot, args.qps, args.interval)
    print(json.dumps(result, indent=2))
    section = markdown(result)
    print(section)
    if args.write_results:
        write_results(section)
    return 0 if result["still_answers"] else 1


if __name__ == "__main__":
    sys.exit(main())
