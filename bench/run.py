"""The benchmark run: generate clusters, start every server pinned, check answers, measure.

Servers share core 0, dnsperf (and the fake API, churn) run on core 1. Runs are interleaved
(A, B, C, A, B, C ...) so machine noise hits every server alike; every step is time-bounded.
Usage: `python -m bench.run [--seconds 10 --rounds 3 ...]` from the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import dnsperf, gen_cluster, procs, report, servers, verify

BENCH = Path(__file__).resolve().parent
SERVER_CPU, LOADGEN_CPU = 0, 1
NATIVE = ("knot", "nsd")
API_VARIANT = "dnsserver-api"
# Issue 7 targets: queries per server-CPU-second of dnsserver relative to the native server.
TARGETS = {"a": {"dnsserver": 0.6}, "b": {"dnsserver": 0.6}, "c": {"dnsserver": 0.6},
           "d": {API_VARIANT: 0.5}}


@dataclass
class Mix:
    name: str
    title: str
    dataset: str
    queries: str  # file name inside the dataset folder
    churn: bool = False


MIXES = {
    "a": Mix("a", "one hot ClusterIP name", "c1000", "mix-hot.txt"),
    "b": Mix("b", "realistic mix, 1,000 services", "c1000", "mix-real.txt"),
    "c": Mix("c", "realistic mix, 10,000 services", "c10000", "mix-real.txt"),
    "d": Mix("d", "(b) with 100 endpoint changes/s through the API", "c1000", "mix-real.txt",
             churn=True),
}
DATASET_SERVICES = {"c1000": 1000, "c10000": 10000}


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (servers listen on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def fake_api_script() -> Path:
    return servers.REPO / "tests" / "fake_apiserver.py"


def start_api_variant(ds: servers.Dataset, work: Path, dnsserver_args: list[str]) -> tuple[
        servers.Running, subprocess.Popen[bytes], int]:
    """The fake API (core 1) serving the snapshot, and dnsserver watching it (core 0)."""
    api_port, dns_port = free_port(), free_port()
    api = procs.start([str(servers.VENV_PYTHON), str(fake_api_script()), "--snapshot",
                       str(ds.snapshot), "--port", str(api_port)], LOADGEN_CPU,
                      work / "fake_apiserver.log")
    try:
        if not procs.wait_until(lambda: b"listening on" in (work / "fake_apiserver.log")
                                .read_bytes(), 120):
            raise RuntimeError("fake API server did not start")
        _, corefile = write_api_config(work, api_port, dns_port)
        kind = servers.DnsServerCorefile(API_VARIANT, "our dnsserver fed by the fake API",
                                         corefile, dnsserver_args)
        running = servers.launch(kind, ds, dns_port, work, SERVER_CPU)
    except BaseException:
        procs.stop(api)
        raise
    return running, api, api_port


def write_kubeconfig(path: Path, api_port: int) -> Path:
    """A kubeconfig for the fake API server on 127.0.0.1:api_port (plain HTTP, no auth)."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{api_port}"}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake"}))
    return path


def write_api_config(work: Path, api_port: int, dns_port: int,
                     pods: str | None = None) -> tuple[Path, Path]:
    kubeconfig = write_kubeconfig(work / "kubeconfig", api_port)
    corefile = work / "Corefile"
    pods_line = f"        pods {pods}\n" if pods else ""
    corefile.write_text(f".:{dns_port} {{\n    kubernetes cluster.local {{\n"
                        f"        kubeconfig {kubeconfig}\n{pods_line}    }}\n}}\n")
    return kubeconfig, corefile


class Budget:
    """The whole run's time bound: steps that would overrun it are skipped, not started."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def allows(self, seconds: float) -> bool:
        return time.monotonic() + seconds < self.deadline


def ensure_dataset(out: Path, name: str, regen: bool) -> servers.Dataset:
    folder = out / name
    ds = servers.Dataset(name, folder / "snapshot.json", folder / "cluster.local.zone")
    if regen or not (ds.snapshot.exists() and ds.zone.exists()):
        print(f"generating {name} ...", flush=True)
        gen_cluster.generate(folder, DATASET_SERVICES[name])
    return ds


def measure(args: argparse.Namespace) -> int:
    out: Path = args.out
    run_dir = out / time.strftime("run-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget)
    kinds = servers.kinds(args.dnsserver_arg)
    wanted = [s for s in args.servers.split(",") if s]
    skipped: dict[str, str] = {}
    for name in wanted:
        why = kinds[name].available() if name in kinds else "unknown server"
        if why:
            skipped[name] = why
    native = next((s for s in wanted if s in NATIVE and s not in skipped), None)
    if native is None:
        print("no native server available; nothing to compare against", file=sys.stderr)
        return 2
    mixes = [MIXES[m] for m in args.mixes.split(",") if m]
    api_ok = "dnsserver" in wanted and "dnsserver" not in skipped and fake_api_script().exists()
    if any(m.churn for m in mixes) and not api_ok:
        skipped[API_VARIANT] = (
            "PENDING: needs dnsserver (its cli) and tests/fake_apiserver.py"
            if "dnsserver" in wanted else "dnsserver not selected")
    samples: list[report.Sample] = []
    latencies: list[report.Latency] = []
    checks: list[str] = []
    log = run_dir / "dnsperf.log"
    for dataset in dict.fromkeys(m.dataset for m in mixes):
        ds = ensure_dataset(out, dataset, args.regen)
        ds_mixes = [m for m in mixes if m.dataset == dataset]
        running: dict[str, servers.Running] = {}
        api: subprocess.Popen[bytes] | None = None
        api_port = 0
        try:
            for name in wanted:
                if name in skipped:
                    continue
                try:
                    running[name] = servers.launch(kinds[name], ds, free_port(),
                                                   run_dir / dataset / name, SERVER_CPU)
                except RuntimeError as exc:
                    skipped[name] = f"failed to start: {str(exc).splitlines()[0]}"
                    print(skipped[name], file=sys.stderr)
            if any(m.churn for m in ds_mixes) and api_ok:
                try:
                    r, api, api_port = start_api_variant(ds, run_dir / dataset / API_VARIANT,
                                                         args.dnsserver_arg)
                    running[API_VARIANT] = r
                except RuntimeError as exc:
                    skipped[API_VARIANT] = f"failed to start: {str(exc).splitlines()[0]}"
            for name, r in running.items():
                print(f"{dataset}: {name} ready on 127.0.0.1:{r.port} in {r.startup_s:.2f}s",
                      flush=True)
            if native not in running:
                print(f"{native} is not running; skipping {dataset}", file=sys.stderr)
                continue
            checks += check_answers(ds, ds_mixes, running, native, args.verify_sample)
            # Unrecorded pass per server and mix: answer caches fill on first sight of a name,
            # and the rounds compare steady state (cold cost is not what this table reports).
            for mix in ds_mixes:
                for name in mix_servers(mix, running, native):
                    if args.warmup > 0 and budget.allows(args.warmup + 40):
                        dnsperf.run(running[name].port, ds.snapshot.parent / mix.queries,
                                    args.warmup, outstanding=args.outstanding, log=log,
                                    passes=1)
            for rnd in range(args.rounds):
                for mix in ds_mixes:
                    for name in mix_servers(mix, running, native):
                        if not budget.allows(args.seconds + 40):
                            print("time budget reached; skipping the remaining runs",
                                  file=sys.stderr)
                            break
                        s = throughput(mix, ds, running[name], rnd, args, log,
                                       api_port if name == API_VARIANT else 0)
                        samples.append(s)
                        print(f"  round {rnd + 1} mix {mix.name} {name:14} {s.qps:>10,.0f} qps "
                              f"{s.q_per_cpu:>10,.0f} q/CPU-s  loss {s.loss * 100:.2f}%",
                              flush=True)
            for mix in ds_mixes:
                for name in mix_servers(mix, running, native):
                    if budget.allows(args.latency_seconds + 40):
                        latencies.append(latency(mix, ds, running[name], args, log,
                                                 api_port if name == API_VARIANT else 0))
        finally:
            for r in running.values():
                procs.stop(r.proc)
            if api is not None:
                procs.stop(api)
    (run_dir / "samples.json").write_text(json.dumps(
        {"samples": [asdict(s) for s in samples], "latencies": [asdict(x) for x in latencies],
         "skipped": skipped, "checks": checks}, indent=1))
    text = render(args, mixes, samples, latencies, native, skipped, checks, run_dir)
    print(text)
    if args.results:
        report.replace_section(args.results, "bench-run", text)
        print(f"wrote {args.results}")
    return 0


def mix_servers(mix: Mix, running: dict[str, servers.Running], native: str) -> list[str]:
    if mix.churn:
        # dnslib has no API source; the native server serves (b) statically as the yardstick.
        return [n for n in (native, API_VARIANT) if n in running]
    return [n for n in running if n != API_VARIANT]


def throughput(mix: Mix, ds: servers.Dataset, r: servers.Running, rnd: int,
               args: argparse.Namespace, log: Path, api_port: int) -> report.Sample:
    seconds = args.seconds
    churn = None
    if mix.churn and api_port:
        churn = procs.start([str(servers.VENV_PYTHON), str(BENCH / "churn.py"), "--port",
                             str(api_port), "--snapshot", str(ds.snapshot), "--rate", "100",
                             "--seconds", f"{seconds + 1:g}"], LOADGEN_CPU,
                            log.parent / "churn.log")
    try:
        cpu0 = procs.cpu_seconds(r.pid)
        res = dnsperf.run(r.port, ds.snapshot.parent / mix.queries, seconds,
                          outstanding=args.outstanding, log=log)
        cpu1 = procs.cpu_seconds(r.pid)
    finally:
        if churn is not None:
            procs.stop(churn)
    return report.Sample(mix.name, r.name, rnd, res.qps, res.completed, res.sent, cpu1 - cpu0)


def latency(mix: Mix, ds: servers.Dataset, r: servers.Running, args: argparse.Namespace,
            log: Path, api_port: int) -> report.Latency:
    churn = None
    if mix.churn and api_port:
        churn = procs.start([str(servers.VENV_PYTHON), str(BENCH / "churn.py"), "--port",
                             str(api_port), "--snapshot", str(ds.snapshot), "--seconds",
                             f"{args.latency_seconds + 1:g}"], LOADGEN_CPU,
                            log.parent / "churn.log")
    try:
        res = dnsperf.run(r.port, ds.snapshot.parent / mix.queries, args.latency_seconds,
                          max_qps=args.latency_qps, verbose=True, log=log)
    finally:
        if churn is not None:
            procs.stop(churn)
    p50, p99 = res.percentile(50), res.percentile(99)
    return report.Latency(mix.name, r.name, args.latency_qps,
                          p50 * 1000 if p50 is not None else None,
                          p99 * 1000 if p99 is not None else None, res.loss)


def check_answers(ds: servers.Dataset, mixes: list[Mix], running: dict[str, servers.Running],
                  native: str, count: int) -> list[str]:
    files = sorted({ds.snapshot.parent / m.queries for m in mixes})
    queries = verify.sample(files, count)
    reports = verify.compare({n: r.port for n, r in running.items()}, native, queries)
    lines = verify.summary(ds.name, native, reports)
    for ln in lines:
        print(ln, flush=True)
    return lines


def render(args: argparse.Namespace, mixes: list[Mix], samples: list[report.Sample],
           latencies: list[report.Latency], native: str, skipped: dict[str, str],
           checks: list[str], run_dir: Path) -> str:
    py = servers.VENV_PYTHON
    perf = dnsperf.command(0, Path("QUERIES"), args.seconds, outstanding=args.outstanding)
    lines = [
        "## Throughput and latency (bench/run.py)",
        "",
        report.environment(py),
        f"- command: `bench/run.sh` = `python -m bench.run --seconds {args.seconds:g} "
        f"--rounds {args.rounds} --outstanding {args.outstanding} "
        f"--latency-qps {args.latency_qps} --servers {args.servers} --mixes {args.mixes}`",
        f"- one dnsperf run: `{' '.join(perf)}`"
        " (port per server); latency runs add `-Q RATE -v`",
        f"- servers on core {SERVER_CPU}, dnsperf/fake API/churn on core {LOADGEN_CPU}; "
        f"raw data in `{run_dir.relative_to(BENCH.parent)}`",
        "",
        "Mixes: " + "; ".join(f"({m.name}) {m.title}" for m in mixes) + ".",
        "",
        report.table(samples, latencies, native, TARGETS),
        "",
        "Spread is (max-min)/2 over the rounds as % of the median. The ratio column is the "
        "median of per-round ratios of queries per server-CPU-second (range in brackets).",
    ]
    if any(m.churn for m in mixes):
        lines.append(f"- mix (d): {native} serves the (b) queries from its static zone as the "
                     f"yardstick; only {API_VARIANT} (fed by tests/fake_apiserver.py) gets "
                     "100 EndpointSlice changes/s from bench/churn.py during its runs.")
    for mix in mixes:
        r = _ratio(samples, mix.name, "dnsserver", "dnslib")
        if r is not None:
            lines.append(f"- mix ({mix.name}): dnsserver / dnslib queries per CPU-s = {r:.1f}x "
                         f"(target >= 10x: {'met' if r >= 10 else 'MISSED'})")
    if skipped:
        lines += ["", "Not measured:"] + [f"- {k}: {v}" for k, v in skipped.items()]
    lines += ["", "Answer check before measuring (dnspython, no EDNS):", "```", *checks, "```"]
    return "\n".join(lines)


def _ratio(samples: list[report.Sample], mix: str, a: str, b: str) -> float | None:
    by = {(s.server, s.round): s.q_per_cpu for s in samples if s.mix == mix}
    rs = [by[(a, rnd)] / by[(b, rnd)] for (srv, rnd) in by if srv == a
          and by.get((b, rnd))]
    return statistics.median(rs) if rs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default="knot,dnslib,dnsserver",
                    help="comma list from knot,nsd,dnslib,dnsserver; the first native one is "
                         "the reference")
    ap.add_argument("--mixes", default="a,b,c,d")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each dnsperf run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--outstanding", type=int, default=200,
                    help="dnsperf -q: queries in flight in the throughput runs")
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="cap in s of the unrecorded pass over each query file per server")
    ap.add_argument("--latency-qps", type=int, default=1000,
                    help="fixed offered load for the latency runs (below every capacity)")
    ap.add_argument("--latency-seconds", type=float, default=5.0)
    ap.add_argument("--verify-sample", type=int, default=300)
    ap.add_argument("--budget", type=float, default=1500.0, help="whole-run time bound, s")
    ap.add_argument("--dnsserver-arg", action="append", default=[],
                    help="extra argument for dnsserver (repeat), e.g. a single-worker flag")
    ap.add_argument("--out", type=Path, default=BENCH / "out")
    ap.add_argument("--results", type=Path, default=BENCH / "RESULTS.md",
                    help="Markdown file whose bench-run section is refreshed ('' to skip)")
    ap.add_argument("--regen", action="store_true", help="regenerate the clusters")
    args = ap.parse_args(argv)
    if args.seconds > 120 or args.rounds > 20:
        ap.error("runs are capped at 120 s and 20 rounds")
    if str(args.results) in ("", "."):
        args.results = None
    with contextlib.suppress(KeyboardInterrupt):
        return measure(args)
    return 130


if __name__ == "__main__":
    sys.exit(main())
