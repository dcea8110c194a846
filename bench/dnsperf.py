"""Running Debian's dnsperf 2.10 pinned to a core and reading its statistics.

dnsperf 2.10 has no latency histogram option; its `-v` mode prints one line per answered query
with the latency, which is what the percentiles are computed from (at a fixed offered load).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_STAT = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "runtime": re.compile(r"Run time \(s\):\s+([\d.]+)"),
    "qps": re.compile(r"Queries per second:\s+([\d.]+)"),
    "avg_latency": re.compile(r"Average Latency \(s\):\s+([\d.]+)"),
}
_RCODES = re.compile(r"Response codes:\s+(.*)")
# "> NOERROR name A 0.000123"; timeouts are "> T ..." and carry no latency.
_VERBOSE = re.compile(r"^> (\S+) \S+ \S+ ([\d.]+)$", re.M)


@dataclass
class PerfResult:
    sent: int = 0
    completed: int = 0
    lost: int = 0
    runtime: float = 0.0
    qps: float = 0.0
    avg_latency: float = 0.0
    rcodes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def loss(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def parse(text: str, verbose: bool = False) -> PerfResult:
    r = PerfResult()
    for key, rx in _STAT.items():
        m = rx.search(text)
        if m:
            setattr(r, key, type(getattr(r, key))(float(m.group(1))))
    m = _RCODES.search(text)
    if m:
        for part in m.group(1).split(","):
            bits = part.split()
            if len(bits) >= 2:
                r.rcodes[bits[0]] = int(bits[1])
    if verbose:
        r.latencies = [float(lat) for _, lat in _VERBOSE.findall(text)]
    return r


def command(port: int, queries: Path, seconds: float, max_qps: int | None = None,
            verbose: bool = False, outstanding: int = 200, timeout: float = 1.0,
            cpu: int | None = 1, passes: int | None = None) -> list[str]:
    cmd = ["taskset", "-c", str(cpu)] if cpu is not None else []
    cmd += ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
            "-l", f"{seconds:g}", "-t", f"{timeout:g}", "-q", str(outstanding)]
    if max_qps:
        cmd += ["-Q", str(max_qps)]
    if verbose:
        cmd.append("-v")
    if passes:
        cmd += ["-n", str(passes)]
    return cmd


def run(port: int, queries: Path, seconds: float, max_qps: int | None = None,
        verbose: bool = False, outstanding: int = 200, cpu: int | None = 1,
        log: Path | None = None, passes: int | None = None) -> PerfResult:
    """One bounded dnsperf run against 127.0.0.1:port; the subprocess is killed if it hangs."""
    cmd = command(port, queries, seconds, max_qps, verbose, outstanding, cpu=cpu, passes=passes)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                          check=False)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            # Per-query lines are kept out of the log; the parsed percentiles carry them.
            f.write("\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith(">")))
            f.write(proc.stderr[-2000:] + "\n")
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf exited {proc.returncode}: {proc.stderr[-500:]}")
    return parse(proc.stdout, verbose)
