"""Turning bench samples into medians, spreads, ratios to the native server, and Markdown.

Also owns the marked sections of bench/RESULTS.md, so each measurement refreshes only its own.
"""

from __future__ import annotations

import platform
import statistics
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass
class Sample:
    """One bounded dnsperf run against one server."""

    mix: str
    server: str
    round: int
    qps: float
    completed: int
    sent: int
    cpu_s: float

    @property
    def q_per_cpu(self) -> float:
        return self.completed / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def loss(self) -> float:
        return 1 - self.completed / self.sent if self.sent else 0.0


@dataclass
class Latency:
    mix: str
    server: str
    offered_qps: int
    p50_ms: float | None
    p99_ms: float | None
    loss: float


def _spread(xs: list[float]) -> str:
    """min-max range as +-% of the median: the run-to-run swing the reader should discount."""
    if len(xs) < 2:
        return "n/a"
    m = statistics.median(xs)
    return f"{(max(xs) - min(xs)) / 2 / m * 100:.0f}%" if m else "n/a"


def table(samples: list[Sample], latencies: list[Latency], native: str,
          targets: dict[str, dict[str, float]]) -> str:
    """Markdown table per mix and server, with ratios of queries/CPU-s to the native server.

    The ratio is the median of per-round ratios: rounds are interleaved, so a round's servers
    saw the same machine noise.
    """
    lat = {(x.mix, x.server): x for x in latencies}
    rows = ["| mix | server | qps (median) | qps spread | queries/CPU-s | q/CPU-s spread | loss "
            "| p50 ms | p99 ms | @ qps | q/CPU-s vs native | target |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    mixes = list(dict.fromkeys(s.mix for s in samples))
    for mix in mixes:
        by_server: dict[str, list[Sample]] = {}
        for s in samples:
            if s.mix == mix:
                by_server.setdefault(s.server, []).append(s)
        ref = {s.round: s.q_per_cpu for s in by_server.get(native, [])}
        for server, ss in by_server.items():
            qps = [s.qps for s in ss]
            qpc = [s.q_per_cpu for s in ss]
            ratios = [s.q_per_cpu / ref[s.round] for s in ss if ref.get(s.round)]
            ratio = f"{statistics.median(ratios):.2f}" if ratios else "n/a"
            if len(ratios) > 1:
                ratio += f" ({min(ratios):.2f}-{max(ratios):.2f})"
            target = ""
            if server != native and ratios and server in targets.get(mix, {}):
                want = targets[mix][server]
                target = f"{'met' if statistics.median(ratios) >= want else 'MISSED'} (>= {want})"
            lt = lat.get((mix, server))
            rows.append(
                f"| {mix} | {server} | {statistics.median(qps):,.0f} | {_spread(qps)} "
                f"| {statistics.median(qpc):,.0f} | {_spread(qpc)} "
                f"| {statistics.median([s.loss for s in ss]) * 100:.2f}% "
                f"| {_ms(lt.p50_ms if lt else None)} | {_ms(lt.p99_ms if lt else None)} "
                f"| {lt.offered_qps if lt else ''} | {ratio} | {target} |")
    return "\n".join(rows)


def _ms(x: float | None) -> str:
    return f"{x:.3f}" if x is not None else "n/a"


def _cmd(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def environment(python: Path, packages: tuple[str, ...] = ("dnsperf", "knot", "nsd",
                                                         "bind9-dnsutils")) -> str:
    """Versions and machine (and of the Debian `packages`), as Markdown bullet lines."""
    pkgs = _cmd(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *packages])
    pyver = _cmd([str(python), "-c",
                  "import sys,dnslib,uvloop,dns.version;print(sys.version.split()[0],"
                  "'dnslib',dnslib.version,'uvloop',uvloop.__version__,"
                  "'dnspython',dns.version.version)"])
    lscpu = _cmd(["lscpu"])
    keep = ("Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor", "L2 cache",
            "L3 cache")
    cpu = "; ".join(" ".join(ln.split()) for ln in lscpu.splitlines()
                    if ln.split(":")[0].strip() in keep)
    rev = _cmd(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"])
    return "\n".join([
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; git {rev}",
        f"- machine: {cpu}; kernel {platform.release()}",
        f"- Debian packages: {', '.join(pkgs.splitlines())}",
        f"- Python {pyver}",
    ])


def replace_section(path: Path, name: str, body: str) -> None:
    """Replace the text between `<!-- name:start -->` and `<!-- name:end -->`, or append it."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
