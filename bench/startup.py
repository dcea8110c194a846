"""Start-up time (issue 7, item 6): from process start to the first answered query.

Starts the server on a snapshot, sends the zone's SOA query every millisecond from the moment
of spawn, and stops the clock at the first response; repeated, with knotd and dnslib as context.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

import dns.message

from bench import procs, report, servers
from bench.run import BENCH, SERVER_CPU, ensure_dataset, free_port

TIMEOUT_S = 30.0


def first_answer(argv: list[str], port: int, log: Path) -> float | None:
    """Seconds from spawn to the first UDP response on 127.0.0.1:port, None on timeout."""
    query = dns.message.make_query(servers.ZONE, "SOA", use_edns=False)
    query.id = 4242
    wire = query.to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.001)
        t0 = time.monotonic()
        proc = procs.start(argv, SERVER_CPU, log)
        try:
            while time.monotonic() - t0 < TIMEOUT_S:
                s.sendto(wire, ("127.0.0.1", port))
                try:
                    data = s.recv(4096)
                except (TimeoutError, ConnectionRefusedError):
                    # Refused: ICMP port unreachable from a send before the server bound.
                    if proc.poll() is not None:
                        return None
                    continue
                if data[:2] == wire[:2]:
                    return time.monotonic() - t0
            return None
        finally:
            procs.stop(proc)


def measure(names: list[str], snapshot: Path | None, repeats: int, out: Path) -> str:
    ds = ensure_dataset(out, "c1000", regen=False)
    if snapshot is not None:
        ds = servers.Dataset("demo", snapshot, ds.zone)
    kinds = servers.kinds()
    rows = ["| server | cluster | median s | max s | runs |", "|---|---|---:|---:|---:|"]
    notes = []
    work = out / "startup"
    for name in names:
        kind = kinds[name]
        why = kind.available()
        if why:
            notes.append(f"- {name}: not measured: {why}")
            continue
        times = []
        for _ in range(repeats):
            port = free_port()
            t = first_answer(kind.argv(ds, port, work / name), port, work / f"{name}.log")
            if t is not None:
                times.append(t)
        source = ds.snapshot.name if name == "dnsserver" else f"{ds.zone.name} (same records)"
        if times:
            rows.append(f"| {name} | {source} | {statistics.median(times):.3f} "
                        f"| {max(times):.3f} | {len(times)}/{repeats} |")
        else:
            rows.append(f"| {name} | {source} | no answer within {TIMEOUT_S:g} s | | 0 |")
    return "\n".join([
        "## Start-up: process start to first answered query (bench/startup.py)",
        "",
        f"- command: `python -m bench.startup --repeats {repeats}`"
        + (f" --snapshot {snapshot}" if snapshot else ""),
        f"- cluster: `{ds.snapshot}`; target for dnsserver: under 1 s",
        "",
        *rows,
        *(["", *notes] if notes else []),
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default="dnsserver,knot,dnslib")
    ap.add_argument("--snapshot", type=Path,
                    help="the demo cluster (default: the bench's 1,000-service cluster)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=BENCH / "out")
    ap.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    args = ap.parse_args(argv)
    if not 1 <= args.repeats <= 50:
        ap.error("--repeats must be 1..50")
    text = measure(args.servers.split(","), args.snapshot, args.repeats, args.out)
    print(text)
    if str(args.results) not in ("", "."):
        report.replace_section(args.results, "bench-startup", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
