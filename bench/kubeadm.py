"""kubeadm's Corefile, run verbatim, against native servers (issue 11, item 5).

Owns the three kubeadm Corefiles (classic `cache 30`; kubeadm >= 1.32, whose cache skips
cluster.local; the same without `cache`), the upstream they forward to (NSD with 1,000 external
names on loopback), the query mixes (cluster, cached external names, ndots:5 pod traffic,
forwarding without cache), the dnsdist configurations that are the natives of the forwarded
mixes, and the run: answers checked first, then queries per server-CPU-second in interleaved
rounds. Usage: `bench/run.sh kubeadm [--seconds 10 --rounds 3 ...]` or
`python -m bench.kubeadm ...` from the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import dnsperf, gen_cluster, procs, report, servers, verify
from bench.run import BENCH, LOADGEN_CPU, SERVER_CPU, Budget, ensure_dataset, free_port

SECTION = "bench-kubeadm"
CLUSTER_TTL = 30  # kubeadm's `ttl 30` in the kubernetes block
CACHE_TTL = 30  # kubeadm's `cache 30`
EXTERNAL_ZONES = ("example.com", "example.net", "example.org")
EXTERNAL_NAMES = 1000
EXTERNAL_TTL = 300
EXTERNAL_V4 = ipaddress.IPv4Address("198.18.0.0")  # RFC 2544 benchmarking range
EXTERNAL_V6 = ipaddress.IPv6Address("2001:db8::")
QUERIES = 100_000
# ndots:5 pod traffic, share of lookups: an external name (8 queries: 3 search-path misses and
# the name itself, A and AAAA each), a service of the pod's own namespace by its short name
# (2 queries), a service of another namespace as `svc.ns` (4 queries: one miss first).
NDOTS_LOOKUPS = (("external", 0.7), ("same-namespace", 0.2), ("other-namespace", 0.1))

# kubeadm's template (cmd/kubeadm/app/phases/addons/dns), as kubeadm writes it: only the
# addresses differ. `bind 127.0.0.1` keeps the listener on loopback (kubeadm binds every
# address on :53), health/ready/prometheus get loopback high ports, and `forward .` names the
# upstream instead of /etc/resolv.conf.
COREFILE = """\
.:{port} {{
    bind 127.0.0.1
    errors
    health 127.0.0.1:{health} {{
       lameduck 5s
    }}
    ready 127.0.0.1:{ready}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus 127.0.0.1:{metrics}
    forward . 127.0.0.1:{upstream} {{
       max_concurrent 1000
    }}
{cache}    loop
    reload
    loadbalance
}}
"""
CACHE_CLASSIC = "    cache 30\n"
CACHE_1_32 = """\
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
"""

DNSDIST = """\
-- Native for kubeadm's Corefile: cluster zones to the server holding cluster.local, the rest
-- to the upstream, as the Corefile's kubernetes block (with fallthrough) and `forward .` do.
setSecurityPollSuffix("")  -- no security-status query leaves the machine
setLocal("127.0.0.1:{port}")
newServer({{address="127.0.0.1:{cluster}", name="cluster", pool="cluster",
           checkName="cluster.local.", checkType="SOA"}})
newServer({{address="127.0.0.1:{upstream}", name="upstream",
           checkName="{zone}.", checkType="SOA"}})
addAction({{"cluster.local.", "in-addr.arpa.", "ip6.arpa."}}, PoolAction("cluster"))
{cache}"""
# `cache 30` caps every TTL at 30 s, so answers must too to compare equal; the rule runs on
# the responses from a backend (cache misses), before they are stored, not on cache hits.
DNSDIST_CACHE = f"""\
pc = newPacketCache(100000, {{maxTTL=86400, minTTL=0, temporaryFailureTTL=60, staleTTL=60}})
getPool(""):setCache(pc)
getPool("cluster"):setCache(pc)
addResponseAction(AllRule(), LuaResponseAction(function(dr)
  dr:editTTLs(function(section, qclass, qtype, ttl) return math.min(ttl, {CACHE_TTL}) end)
  return DNSResponseAction.None, ""
end))
"""


@dataclass(frozen=True)
class Variant:
    """One dnsserver configuration; `cache` is None for the kubernetes-only Corefile."""

    key: str
    title: str
    cache: str | None

    @property
    def server(self) -> str:
        return f"dnsserver-{self.key}"


VARIANTS = {v.key: v for v in (
    Variant("kubernetes", "kubernetes only (bench/run.py (b), `--snapshot`)", None),
    Variant("classic", "kubeadm classic, `cache 30`", CACHE_CLASSIC),
    Variant("1.32", "kubeadm >= 1.32, cache skips cluster.local", CACHE_1_32),
    Variant("nocache", "kubeadm without `cache`", ""),
)}


@dataclass(frozen=True)
class Mix:
    key: str
    title: str
    queries: str  # key of Data.queries
    native: str
    variants: tuple[str, ...]
    warm: bool = True  # an unrecorded pass first, to fill caches


MIXES = {m.key: m for m in (
    Mix("cluster", "1 cluster mix (b)", "cluster", "nsd", ("kubernetes", "classic", "1.32")),
    Mix("cached", "2 cached external names", "external", "dnsdist-cache", ("classic", "1.32")),
    Mix("ndots", "3 ndots:5 pod traffic", "ndots", "dnsdist-cache", ("classic", "1.32")),
    Mix("forward", "4 forwarding, no cache", "external", "dnsdist-nocache", ("nocache",),
        warm=False),
)}
# The kubernetes-only Corefile keeps CoreDNS's default TTL 5: it is checked against the zone
# bench/run.py serves (TTL 5) and measured against the same NSD as the other rows (its CPU per
# query does not depend on the TTL).
CHECK_REFERENCE = {"kubernetes": "nsd-ttl5"}


@dataclass
class Data:
    cluster: servers.Dataset  # the bench's 1,000-service snapshot, zone with kubeadm's TTL 30
    cluster_ttl5: servers.Dataset  # bench/run.py's dataset c1000 as it is
    upstream: servers.Dataset  # zone = the first external zone; the others beside it
    queries: dict[str, Path]


# --- data -----------------------------------------------------------------------------------


def external_names() -> list[str]:
    return [f"name{i}.{EXTERNAL_ZONES[i % len(EXTERNAL_ZONES)]}" for i in range(EXTERNAL_NAMES)]


def upstream_zone_lines(zone: str) -> Iterator[str]:
    yield f"$ORIGIN {zone}."
    yield f"$TTL {EXTERNAL_TTL}"
    yield f"@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 7200 1800 86400 {EXTERNAL_TTL}"
    yield f"@ IN NS ns1.{zone}."
    yield "ns1 IN A 192.0.2.53"
    for i, name in enumerate(external_names()):
        label, _, parent = name.partition(".")
        if parent == zone:
            yield f"{label} IN A {EXTERNAL_V4 + i + 1}"
            yield f"{label} IN AAAA {EXTERNAL_V6 + i + 1}"


def external_queries(count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    names = external_names()
    return [f"{rng.choice(names)} A" for _ in range(count)]


def ndots_queries(cluster: gen_cluster.Cluster, count: int, seed: int = 12) -> list[str]:
    """What ClusterFirst pods (search NS.svc.cluster.local svc.cluster.local cluster.local,
    ndots:5) send: each candidate name A and AAAA, until one has an answer (glibc)."""
    rng = random.Random(seed)
    names = external_names()
    cip = [s for s in cluster.services[1:] if s.cluster_ip]
    namespaces = sorted({s.namespace for s in cip})
    kinds, weights = zip(*NDOTS_LOOKUPS, strict=True)
    lines: list[str] = []
    while len(lines) < count:
        kind = rng.choices(kinds, weights)[0]
        if kind == "external":
            ns, name = rng.choice(namespaces), rng.choice(names)
            tries = [*(f"{name}.{s}" for s in search_path(ns)), name]
        elif kind == "same-namespace":
            svc = rng.choice(cip)
            tries = [f"{svc.name}.{svc.namespace}.svc.{gen_cluster.ZONE}"]
        else:
            svc, ns = rng.choice(cip), rng.choice(namespaces)
            tries = [f"{svc.name}.{svc.namespace}.{ns}.svc.{gen_cluster.ZONE}",
                     f"{svc.name}.{svc.namespace}.svc.{gen_cluster.ZONE}"]
        lines += [f"{t} {rtype}" for t in tries for rtype in ("A", "AAAA")]
    return lines


def search_path(ns: str) -> tuple[str, ...]:
    zone = gen_cluster.ZONE
    return (f"{ns}.svc.{zone}", f"svc.{zone}", zone)


def ensure_data(out: Path, regen: bool) -> Data:
    """The bench's c1000 dataset (generated once), and this bench's own files (always
    rewritten: deterministic and quick)."""
    base = ensure_dataset(out, "c1000", regen)
    folder = out / "kubeadm"
    (folder / "upstream").mkdir(parents=True, exist_ok=True)
    cluster = gen_cluster.build_cluster(1000)
    zone = folder / f"{gen_cluster.ZONE}.zone"
    gen_cluster.write_zone(cluster, zone, CLUSTER_TTL)
    for z in EXTERNAL_ZONES:
        (folder / "upstream" / f"{z}.zone").write_text("\n".join(upstream_zone_lines(z)) + "\n")
    queries = {"cluster": base.snapshot.parent / "mix-real.txt",
               "external": folder / "mix-external.txt", "ndots": folder / "mix-ndots.txt"}
    gen_cluster.write_queries(external_queries(QUERIES), queries["external"])
    gen_cluster.write_queries(ndots_queries(cluster, QUERIES), queries["ndots"])
    upstream = servers.Dataset("upstream", base.snapshot,
                               folder / "upstream" / f"{EXTERNAL_ZONES[0]}.zone")
    return Data(servers.Dataset("c1000-ttl30", base.snapshot, zone), base, upstream, queries)


# --- servers --------------------------------------------------------------------------------


@dataclass
class Dnsdist(servers.ServerKind):
    cluster_port: int = 0
    upstream_port: int = 0
    packet_cache: bool = True

    def available(self) -> str | None:
        if shutil.which("dnsdist"):
            return None
        return "dnsdist not installed (apt-get install dnsdist)"

    def argv(self, ds: servers.Dataset, port: int, work: Path) -> list[str]:
        conf = work / "dnsdist.conf"
        conf.write_text(DNSDIST.format(port=port, cluster=self.cluster_port,
                                       upstream=self.upstream_port, zone=EXTERNAL_ZONES[0],
                                       cache=DNSDIST_CACHE if self.packet_cache else ""))
        return ["dnsdist", "--supervised", "--disable-syslog", "-C", str(conf)]


class KubeadmDnsServer(servers.DnsServer):
    """dnsserver with one of the Corefiles above, answering the cluster from the snapshot;
    `source`: a tree to import dnsserver from instead of the installed one (PYTHONPATH)."""

    def __init__(self, variant: Variant, upstream_port: int, source: Path | None,
                 extra: list[str]) -> None:
        super().__init__(variant.server, variant.title, extra)
        self.variant, self.upstream_port, self.source = variant, upstream_port, source

    def argv(self, ds: servers.Dataset, port: int, work: Path) -> list[str]:
        env = ["env", f"PYTHONPATH={self.source}"] if self.source else []
        if self.variant.cache is None:
            return env + super().argv(ds, port, work)
        corefile = work / "Corefile"
        corefile.write_text(corefile_text(self.variant, port, self.upstream_port))
        return env + [str(servers.DNSSERVER_BIN), "-conf", str(corefile), "--snapshot",
                      str(ds.snapshot), *self._workers(), *self.extra]


def corefile_text(variant: Variant, port: int, upstream_port: int) -> str:
    return COREFILE.format(port=port, health=free_port(), ready=free_port(),
                           metrics=free_port(), upstream=upstream_port, cache=variant.cache)


def dnsserver_source(out: Path, rev: str | None) -> tuple[Path | None, str]:
    """(tree for PYTHONPATH or None, what the results say the measured code was)."""
    repo = servers.REPO
    git = ["git", "-C", str(repo)]
    if rev is None:
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "dnsserver"],
                               capture_output=True, text=True, timeout=30, check=False)
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30, check=False).stdout.strip()
        n = len(dirty.stdout.splitlines())
        return None, (f"the working tree (HEAD {head}"
                      + (f", {n} uncommitted files in dnsserver/)" if n else ", clean)"))
    full = subprocess.run([*git, "rev-parse", "--verify", f"{rev}^{{commit}}"],
                          capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    tree = out / "src" / full[:12]
    if not (tree / "dnsserver" / "cli.py").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run([*git, "archive", full, "dnsserver", "zones"],
                                 capture_output=True, timeout=60, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, timeout=60, check=True)
    return tree, f"git {full[:12]} (`--dnsserver-rev {rev}`, imported from `{tree}`)"


def start_servers(mixes: list[Mix], data: Data, run_dir: Path, source: Path | None,
                  extra: list[str]) -> dict[str, servers.Running]:
    """Every server the mixes need, the measured ones on SERVER_CPU, the upstream beside
    dnsperf on LOADGEN_CPU. The caller stops them (also when this raises half-way)."""
    running: dict[str, servers.Running] = {}
    wanted = {m.native for m in mixes} | {VARIANTS[v].server for m in mixes for v in m.variants}
    wanted |= {CHECK_REFERENCE[v] for m in mixes for v in m.variants if v in CHECK_REFERENCE}

    def launch(kind: servers.ServerKind, ds: servers.Dataset, cpu: int = SERVER_CPU) -> int:
        why = kind.available()
        if why:
            raise RuntimeError(f"{kind.name}: {why}")
        r = servers.launch(kind, ds, free_port(), run_dir / kind.name, cpu)
        running[kind.name] = r
        print(f"{kind.name} ready on 127.0.0.1:{r.port} in {r.startup_s:.2f}s", flush=True)
        return r.port

    cluster = launch(servers.Nsd("nsd", "NSD, cluster.local (TTL 30)"), data.cluster)
    if "nsd-ttl5" in wanted:
        launch(servers.Nsd("nsd-ttl5", "NSD, bench/run.py's zone (TTL 5)"), data.cluster_ttl5)
    zones = {z: f"{z}.zone" for z in EXTERNAL_ZONES}
    # minimal-responses: a recursive resolver's answers carry no authority/additional records.
    upstream = launch(servers.Nsd("nsd-upstream", "NSD, the external names", zones, True),
                      data.upstream, LOADGEN_CPU)
    for name, cache in (("dnsdist-cache", True), ("dnsdist-nocache", False)):
        if name in wanted:
            launch(Dnsdist(name, "dnsdist", cluster, upstream, cache), data.cluster)
    for variant in VARIANTS.values():
        if variant.server in wanted:
            launch(KubeadmDnsServer(variant, upstream, source, extra), data.cluster)
    return running


# --- the run --------------------------------------------------------------------------------


def check(mix: Mix, data: Data, running: dict[str, servers.Running], count: int,
          asked: set[tuple[str, str]]) -> list[str]:
    """Answers of every variant against the native, on queries no server was asked before
    (a cache would answer those with an aged TTL)."""
    queries = verify.sample([data.queries[mix.queries]], count, exclude=asked)
    asked.update(queries)
    by_reference: dict[str, list[str]] = {}
    for v in mix.variants:
        by_reference.setdefault(CHECK_REFERENCE.get(v, mix.native), []).append(
            VARIANTS[v].server)
    lines = []
    for ref, names in by_reference.items():
        reports = verify.compare({n: running[n].port for n in (ref, *names)}, ref, queries)
        lines += verify.summary(mix.key, ref, reports)
    for ln in lines:
        print(ln, flush=True)
    return lines


def one_run(mix: Mix, name: str, rnd: int, r: servers.Running, queries: Path,
            args: argparse.Namespace, log: Path) -> report.Sample:
    cpu0 = procs.cpu_seconds(r.pid)
    res = dnsperf.run(r.port, queries, args.seconds, outstanding=args.outstanding, log=log)
    cpu = procs.cpu_seconds(r.pid) - cpu0
    return report.Sample(mix.key, name, rnd, res.qps, res.completed, res.sent, cpu)


def measure(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    budget = Budget(args.budget)
    run_dir = args.out / time.strftime("kubeadm-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    mixes = [MIXES[m] for m in args.mixes.split(",") if m]
    source, source_note = dnsserver_source(args.out, args.dnsserver_rev)
    data = ensure_data(args.out, args.regen)
    log = run_dir / "dnsperf.log"
    samples: list[report.Sample] = []
    checks: list[str] = []
    loads = [os.getloadavg()[0]]  # 2 here means both cores busy: others' jobs show up in it
    running: dict[str, servers.Running] = {}
    try:
        running = start_servers(mixes, data, run_dir, source, args.dnsserver_arg)
        asked: set[tuple[str, str]] = set()
        for mix in mixes:
            checks += check(mix, data, running, args.verify_sample, asked)
        for mix in mixes:
            for name in (mix.native, *(VARIANTS[v].server for v in mix.variants)):
                if mix.warm and args.warmup > 0 and budget.allows(args.warmup + 40):
                    dnsperf.run(running[name].port, data.queries[mix.queries], args.warmup,
                                outstanding=args.outstanding, log=log, passes=1)
        for rnd in range(args.rounds):
            for mix in mixes:
                # Interleaved: the native, then each variant, so a round's runs share the
                # machine's state; the ratio is taken within a round.
                for name in (mix.native, *(VARIANTS[v].server for v in mix.variants)):
                    if not budget.allows(args.seconds + 40):
                        print("time budget reached; skipping the remaining runs",
                              file=sys.stderr)
                        break
                    s = one_run(mix, name, rnd, running[name], data.queries[mix.queries],
                                args, log)
                    samples.append(s)
                    loads.append(os.getloadavg()[0])
                    print(f"  round {rnd + 1} {mix.key:8} {name:18} {s.qps:>10,.0f} qps "
                          f"{s.q_per_cpu:>10,.0f} q/CPU-s  loss {s.loss * 100:.2f}%",
                          flush=True)
    finally:
        # In parallel: each dnsserver first waits out its lame duck (`health { lameduck 5s }`).
        with ThreadPoolExecutor(max(1, len(running))) as pool:
            list(pool.map(procs.stop, [r.proc for r in running.values()]))
    (run_dir / "samples.json").write_text(json.dumps(
        {"samples": [asdict(s) for s in samples], "checks": checks,
         "dnsserver": source_note, "loadavg_1min": loads}, indent=1))
    (run_dir / "Corefile.example").write_text(
        corefile_text(VARIANTS["1.32"], 1053, 5300))
    elapsed = time.monotonic() - t0
    text = render(args, mixes, samples, checks, source_note, run_dir, elapsed, loads)
    print(text)
    if args.results:
        report.replace_section(args.results, args.section, text)
        print(f"wrote {args.results} (section {args.section})")
    print(f"run took {elapsed:.0f} s")
    return 0


def table(mixes: list[Mix], samples: list[report.Sample]) -> str:
    rows = ["| mix | variant | native (name) q/CPU-s | dnsserver q/CPU-s | ratio "
            "| loss native / dnsserver |",
            "|---|---|---:|---:|---:|---:|"]
    for mix in mixes:
        by: dict[str, dict[int, report.Sample]] = {}
        for s in samples:
            if s.mix == mix.key:
                by.setdefault(s.server, {})[s.round] = s
        native = by.get(mix.native, {})
        for v in mix.variants:
            ours = by.get(VARIANTS[v].server, {})
            ratios = [s.q_per_cpu / native[r].q_per_cpu for r, s in ours.items()
                      if r in native and native[r].q_per_cpu]
            ratio = f"{statistics.median(ratios):.3f}" if ratios else "n/a"
            if len(ratios) > 1:
                ratio += f" ({min(ratios):.3f}-{max(ratios):.3f})"
            rows.append(f"| {mix.title} | {VARIANTS[v].title} "
                        f"| {_median_qpc(native)} ({mix.native}) | {_median_qpc(ours)} "
                        f"| {ratio} | {_median_loss(native)} / {_median_loss(ours)} |")
    return "\n".join(rows)


def _median_qpc(runs: dict[int, report.Sample]) -> str:
    return f"{statistics.median(s.q_per_cpu for s in runs.values()):,.0f}" if runs else "n/a"


def _median_loss(runs: dict[int, report.Sample]) -> str:
    if not runs:
        return "n/a"
    return f"{statistics.median(s.loss for s in runs.values()) * 100:.2f}%"


def render(args: argparse.Namespace, mixes: list[Mix], samples: list[report.Sample],
           checks: list[str], source_note: str, run_dir: Path, elapsed: float,
           loads: list[float]) -> str:
    perf = dnsperf.command(0, Path("QUERIES"), args.seconds, outstanding=args.outstanding)
    command = shlex.join(["python", "-m", "bench.kubeadm", *args.argv])
    mismatched = "; ".join(ln.split(",")[0] + ": MISMATCHES (listed below)" for ln in checks
                           if "MISMATCHES" in ln)
    return "\n".join([
        f"### {args.label}",
        "",
        report.environment(servers.VENV_PYTHON,
                           ("dnsperf", "nsd", "dnsdist", "bind9-dnsutils")),
        f"- command: `{command}` ({elapsed / 60:.0f} min); dnsserver measured: {source_note}",
        f"- one run: `{' '.join(perf)}` (port per server); `--rounds {args.rounds}` "
        "interleaved rounds, medians; ratio = median of per-round ratios (range)",
        f"- measured servers on core {SERVER_CPU}, dnsperf and the upstream NSD on core "
        f"{LOADGEN_CPU}; raw data in `{run_dir.relative_to(BENCH.parent)}`",
        f"- load average (1 min) before the run {loads[0]:.2f}, after each run median "
        f"{statistics.median(loads[1:] or loads):.2f}, max {max(loads):.2f} (the bench "
        "itself keeps it near 2; more means other jobs shared the cores)",
        "",
        table(mixes, samples),
        "",
        f"- answer check: {mismatched or 'every variant gave the same answers as its native'}",
        "",
        "Answer check before measuring (dnspython, no EDNS; distinct queries, none asked "
        "twice):",
        "```",
        *checks,
        "```",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mixes", default=",".join(MIXES), help=f"comma list from {','.join(MIXES)}")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each dnsperf run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--outstanding", type=int, default=200, help="dnsperf -q")
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="cap in s of the unrecorded pass per server and cached mix")
    ap.add_argument("--verify-sample", type=int, default=300, help="queries checked per mix")
    ap.add_argument("--budget", type=float, default=1200.0, help="whole-run time bound, s")
    ap.add_argument("--dnsserver-rev", help="measure this git revision of dnsserver/ "
                    "(git archive, PYTHONPATH) instead of the working tree")
    ap.add_argument("--dnsserver-arg", action="append", default=[],
                    help="extra argument for dnsserver (repeat)")
    ap.add_argument("--out", type=Path, default=BENCH / "out")
    ap.add_argument("--results", type=Path, help="also write the section into this Markdown "
                    "file (e.g. bench/RESULTS.md)")
    ap.add_argument("--section", default=SECTION, help="marker name of that section")
    ap.add_argument("--label", default="latest run", help="heading of the section")
    ap.add_argument("--regen", action="store_true", help="regenerate the c1000 dataset")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    unknown = [m for m in args.mixes.split(",") if m and m not in MIXES]
    if unknown:
        ap.error(f"unknown mixes: {unknown}")
    if args.seconds > 120 or args.rounds > 20:
        ap.error("runs are capped at 120 s and 20 rounds")
    with contextlib.suppress(KeyboardInterrupt):
        return measure(args)
    return 130


if __name__ == "__main__":
    sys.exit(main())
