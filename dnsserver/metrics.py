"""Prometheus metrics under CoreDNS's names, labels and buckets, and the cheap hot-path counters
that feed them.

The fast path answers a query in a few microseconds; a prometheus_client ``labels().inc()`` costs
more than that. So queries are counted in plain dicts (`QueryCounts`, `Tally`) and `Metrics.flush`
moves the counts into prometheus_client objects about once a second and before every scrape.
With several worker processes, `setup(multiprocess_dir)` switches prometheus_client into its
multiprocess mode: every process writes its own files and the scraping process sums them.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    values,
)
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.process_collector import ProcessCollector

from dnsserver import __version__

NAMESPACE = "coredns"
# Our own metrics, for what CoreDNS has no name: the Kubernetes API source.
OWN_NAMESPACE = "dnsserver"

# CoreDNS plugin.TimeBuckets: ExponentialBuckets(0.00025, 2, 16), 0.25 ms .. 8.192 s.
TIME_BUCKETS: tuple[float, ...] = tuple(0.00025 * 2**i for i in range(16))
# CoreDNS plugin.SlimTimeBuckets: ExponentialBuckets(0.00025, 10, 5), 0.25 ms .. 2.5 s.
SLIM_TIME_BUCKETS: tuple[float, ...] = tuple(0.00025 * 10**i for i in range(5))
# plugin/metrics/vars: request and response size buckets.
SIZE_BUCKETS: tuple[float, ...] = (
    0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3,
)
# plugin/kubernetes: ExponentialBuckets(0.001, 2, 20), 1 ms .. ~17 minutes.
PROGRAMMING_BUCKETS: tuple[float, ...] = tuple(0.001 * 2**i for i in range(20))

# The query types CoreDNS labels by name (plugin/metrics/vars monitorType); all else is "other".
MONITORED_QTYPES: dict[int, str] = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
    33: "SRV", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 65: "HTTPS",
    251: "IXFR", 252: "AXFR", 255: "ANY",
}
# miekg/dns RcodeToString, which CoreDNS's rcode label uses; unknown codes read "RCODE<n>".
RCODE_NAMES: dict[int, str] = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADSIG",
    17: "BADKEY", 18: "BADTIME", 19: "BADMODE", 20: "BADNAME", 21: "BADALG", 22: "BADTRUNC",
    23: "BADCOOKIE",
}
# CoreDNS's family label, "1" for IPv4 and "2" for IPv6, from the socket's address family.
# (Only socket constants: AF_INET is 2 on Linux, so accepting CoreDNS's 1/2 too would be
# ambiguous.)
_FAMILY_LABELS: dict[int, str] = {int(socket.AF_INET): "1", int(socket.AF_INET6): "2"}
# CoreDNS's zone label for queries dropped before any server block handled them.
DROPPED_ZONE = "dropped"

_N_TIME = len(TIME_BUCKETS) + 1  # the last slot is the +Inf bucket
DURATION_SUM = _N_TIME  # index of the duration sum in a QueryCounts record


def qtype_label(qtype: int) -> str:
    """The `type` label CoreDNS gives a query type: its name if monitored, else "other"."""
    return MONITORED_QTYPES.get(qtype, "other")


def rcode_label(rcode: int) -> str:
    """The `rcode` label CoreDNS gives a response code."""
    return RCODE_NAMES.get(rcode) or f"RCODE{rcode}"


def family_label(family: int) -> str:
    """The `family` label for socket.AF_INET ("1") or socket.AF_INET6 ("2")."""
    try:
        return _FAMILY_LABELS[family]
    except KeyError:
        raise ValueError(
            f"unknown address family {family!r}; expected socket.AF_INET or AF_INET6"
        ) from None


def key(
    server: str,
    zone: str,
    proto: str,
    family: int,  # socket.AF_INET or socket.AF_INET6
    qtype: int,
    rcode: int,
    plugin: str,
    do: bool,
    req_size: int,
    resp_size: int,
) -> tuple:
    """The hot-path key for one kind of query, with every label already rendered.

    Compute it once per cached answer (and transport), not once per query: it is a plain tuple,
    so `QueryCounts.record(k, seconds)` then costs one dict lookup and two additions.
    `server` is CoreDNS's form, e.g. "dns://:53"; `zone` the server block's zone, e.g. ".";
    `plugin` the plugin that wrote the answer ("" if the server did).
    """
    return (
        server, zone, proto, family_label(family), qtype_label(qtype), rcode_label(rcode),
        plugin, bool(do), int(req_size), int(resp_size),
    )


def duration_bucket(seconds: float) -> int:
    """Index of the CoreDNS duration bucket (`le` semantics) that holds `seconds`."""
    return bisect_left(TIME_BUCKETS, seconds)


def _new_record() -> list:
    rec: list = [0] * _N_TIME
    rec.append(0.0)
    return rec


class QueryCounts:
    """Per-query counts for the coredns_dns_* metrics, kept in a plain dict until flushed.

    `data` maps a `key(...)` tuple to a record: one count per duration bucket, then the sum of
    durations. Use it from one thread only (the event loop's): `Metrics.flush` swaps the dict
    out, so a flush from another thread could lose an increment in progress.
    """

    __slots__ = ("data",)
    key = staticmethod(key)  # so the hot path needs no import of this module

    def __init__(self) -> None:
        self.data: defaultdict[tuple, list] = defaultdict(_new_record)

    def record(self, k: tuple, seconds: float) -> None:
        """Count one answered query of kind `k` that took `seconds`."""
        rec = self.data[k]
        rec[bisect_left(TIME_BUCKETS, seconds)] += 1
        rec[DURATION_SUM] += seconds

    def take(self) -> dict[tuple, list]:
        """Return the counts so far and start afresh."""
        data, self.data = self.data, defaultdict(_new_record)
        return data


class Tally:
    """Plain-int counters for any other counter metric, e.g. the cache's hits.

    Increment `tally.data[(metric, label_values)] += 1` on the hot path, where `metric` is a
    Counter of `Metrics` (say `m.cache_hits`) and `label_values` a tuple in its label order.
    """

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: defaultdict[tuple[Any, tuple[str, ...]], int] = defaultdict(int)

    def inc(self, metric: Counter, labels: tuple[str, ...] = (), amount: int = 1) -> None:
        self.data[(metric, labels)] += amount

    def take(self) -> dict[tuple[Any, tuple[str, ...]], int]:
        data, self.data = self.data, defaultdict(int)
        return data


def _observe_many(child: Histogram, bucket: int, count: int, total: float) -> None:
    """Add `count` observations that fall in `bucket` and sum to `total`, in O(1).

    prometheus_client has no batch observe; its Histogram keeps one non-cumulative value per
    bucket (`_buckets`) and a `_sum`, which is what `observe` increments. Those attributes have
    been stable for years; if they ever go, fall back to observing one by one.
    """
    buckets = getattr(child, "_buckets", None)
    sum_value = getattr(child, "_sum", None)
    if buckets is None or sum_value is None:
        mean = total / count
        for _ in range(count):
            child.observe(mean)
        return
    buckets[bucket].inc(count)
    sum_value.inc(total)


class _GroupProcessCollector:
    """process_* metrics summed over this process and its worker processes.

    prometheus_client's multiprocess mode has no process metrics; a dashboard that graphs
    process_cpu_seconds_total should see the whole pod, not only the parent.
    """

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids

    def collect(self) -> Iterator[Metric]:
        own = os.getpid()
        merged: dict[str, Metric] = {}
        for pid in [own, *self._pids()]:
            try:
                families = list(ProcessCollector(pid=lambda p=pid: p, registry=None).collect())
            except Exception:  # a worker that exited between listing and reading
                continue
            for fam in families:
                if fam.name not in merged:
                    merged[fam.name] = fam
                    continue
                if fam.name in ("process_start_time_seconds", "process_max_fds"):
                    continue  # the parent's value is the pod's
                base = merged[fam.name]
                pairs = zip(base.samples, fam.samples, strict=False)
                base.samples = [s._replace(value=s.value + o.value) for s, o in pairs]
        yield from merged.values()


class Metrics:
    """Every metric the server exports, and the registry a scrape reads.

    Build it with `setup()`. Attributes are prometheus_client objects with CoreDNS's names.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        self._worker_pids: set[int] = set()
        self._query_counts: list[QueryCounts] = []
        self._tallies: list[Tally] = []
        # (metric, label values) -> child; prometheus_client's own lookup validates and locks.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._flush_hooks: list[Callable[[], None]] = []

        if multiprocess_dir is None:
            reg: CollectorRegistry | None = self.registry
            prometheus_client.ProcessCollector(registry=reg)
            prometheus_client.PlatformCollector(registry=reg)
            prometheus_client.GCCollector(registry=reg)
        else:
            # Metric objects write files; the registry only reads them back, summed.
            reg = None
            MultiProcessCollector(self.registry, path=multiprocess_dir)
            self.registry.register(_GroupProcessCollector(lambda: sorted(self._worker_pids)))
            prometheus_client.PlatformCollector(registry=self.registry)

        ns = NAMESPACE

        def counter(
            name: str, doc: str, labels: Iterable[str] = (), namespace: str = ns,
        ) -> Counter:
            return Counter(name, doc, list(labels), namespace=namespace, registry=reg)

        def gauge(
            name: str, doc: str, labels: Iterable[str] = (), mode: str = "livesum",
            namespace: str = ns,
        ) -> Gauge:
            return Gauge(
                name, doc, list(labels), namespace=namespace, registry=reg,
                multiprocess_mode=mode,  # type: ignore[arg-type]
            )

        def histogram(
            name: str, doc: str, labels: Iterable[str], buckets: Iterable[float],
        ) -> Histogram:
            return Histogram(name, doc, list(labels), namespace=ns, registry=reg,
                             buckets=list(buckets))

        # plugin/metrics
        self.build_info = gauge(
            "build_info",
            "A metric with a constant '1' value labeled by version, revision, and goversion "
            "from which CoreDNS was built.",
            ["version", "revision", "goversion"], mode="max")
        self.panics = counter("panics", "A metrics that counts the number of panics.")
        self.requests = counter(
            "dns_requests", "Counter of DNS requests made per zone, protocol and family.",
            ["server", "zone", "view", "proto", "family", "type"])
        self.request_duration = histogram(
            "dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone.",
            ["server", "zone", "view"], TIME_BUCKETS)
        self.request_size = histogram(
            "dns_request_size_bytes",
            "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
            ["server", "zone", "view", "proto"], SIZE_BUCKETS)
        self.do_requests = counter(
            "dns_do_requests", "Counter of DNS requests with DO bit set per zone.",
            ["server", "zone", "view"])
        self.response_size = histogram(
            "dns_response_size_bytes", "Size of the returned response in bytes.",
            ["server", "zone", "view", "proto"], SIZE_BUCKETS)
        self.responses = counter(
            "dns_responses", "Counter of response status codes.",
            ["server", "zone", "view", "rcode", "plugin"])
        self.plugin_enabled = gauge(
            "plugin_enabled",
            "A metric that indicates whether a plugin is enabled on per server and zone basis.",
            ["server", "zone", "view", "name"], mode="max")

        # plugin/cache
        self.cache_entries = gauge(
            "cache_entries", "The number of elements in the cache.",
            ["server", "type", "zones", "view"], mode="livesum")
        self.cache_requests = counter(
            "cache_requests", "The count of cache requests.", ["server", "zones", "view"])
        self.cache_hits = counter(
            "cache_hits", "The count of cache hits.", ["server", "type", "zones", "view"])
        self.cache_misses = counter(
            "cache_misses",
            "The count of cache misses. Deprecated, derive misses from cache hits/requests "
            "counters.", ["server", "zones", "view"])
        self.cache_prefetches = counter(
            "cache_prefetch", "The number of times the cache has prefetched a cached item.",
            ["server", "zones", "view"])
        self.cache_drops = counter(
            "cache_drops",
            "The number responses that are not cached, because the reply is malformed.",
            ["server", "zones", "view"])
        self.cache_served_stale = counter(
            "cache_served_stale", "The number of requests served from stale cache entries.",
            ["server", "zones", "view"])
        self.cache_evictions = counter(
            "cache_evictions", "The count of cache evictions.",
            ["server", "type", "zones", "view"])

        # plugin/forward and plugin/pkg/proxy (forward's per-upstream metrics moved to proxy_*)
        self.forward_healthcheck_broken = counter(
            "forward_healthcheck_broken",
            "Counter of the number of complete failures of the healthchecks.")
        self.forward_max_concurrent_rejects = counter(
            "forward_max_concurrent_rejects",
            "Counter of the number of queries rejected because the concurrent queries were at "
            "maximum.")
        self.proxy_request_duration = histogram(
            "proxy_request_duration_seconds", "Histogram of the time each request took.",
            ["proxy_name", "to", "rcode"], TIME_BUCKETS)
        self.proxy_healthcheck_failures = counter(
            "proxy_healthcheck_failures", "Counter of the number of failed healthchecks.",
            ["proxy_name", "to"])
        self.proxy_conn_cache_hits = counter(
            "proxy_conn_cache_hits",
            "Counter of connection cache hits per upstream and protocol.",
            ["proxy_name", "to", "proto"])
        self.proxy_conn_cache_misses = counter(
            "proxy_conn_cache_misses",
            "Counter of connection cache misses per upstream and protocol.",
            ["proxy_name", "to", "proto"])

        # plugin/kubernetes
        self.dns_programming_duration = histogram(
            "kubernetes_dns_programming_duration_seconds",
            "Histogram of the time (in seconds) it took to program a dns instance.",
            ["service_kind"], PROGRAMMING_BUCKETS)

        # plugin/health
        self.health_request_duration = histogram(
            "health_request_duration_seconds",
            "Histogram of the time (in seconds) each request took.", [], SLIM_TIME_BUCKETS)
        self.health_request_failures = counter(
            "health_request_failures", "The number of times the health check failed.")

        # plugin/reload
        self.reload_failed = counter(
            "reload_failed", "Counter of the number of failed reload attempts.")
        self.reload_version_info = gauge(
            "reload_version_info",
            "A metric with a constant '1' value labeled by hash, and value which type of hash "
            "generated.", ["hash", "value"], mode="max")
        self._reload_hash: str | None = None

        # Our Kubernetes API source (watched once per pod, usually by the parent process).
        own = OWN_NAMESPACE
        self.api_watch_restarts = counter(
            "kubernetes_watch_restarts",
            "Number of times a watch on the Kubernetes API ended and was restarted, per kind.",
            ["kind"], namespace=own)
        self.api_relists = counter(
            "kubernetes_relists",
            "Number of full lists of a kind from the Kubernetes API after the first.",
            ["kind"], namespace=own)
        self.api_objects_skipped = counter(
            "kubernetes_objects_skipped",
            "Number of API objects ignored because they could not be read, per kind.",
            ["kind"], namespace=own)
        self.api_synced = gauge(
            "kubernetes_synced",
            "1 once the first full list of a kind has been loaded, else 0.",
            ["kind"], mode="livemax", namespace=own)
        # Resource bounds (the `limits` and `timeouts` directives) and how close we are to them.
        self.limit_value = gauge(
            "limit", "The configured value of each resource bound.", ["limit"],
            mode="max", namespace=own)
        self.limit_in_use = gauge(
            "limit_in_use", "How much of each resource bound is in use now (summed over workers).",
            ["limit"], mode="livesum", namespace=own)
        self.limit_rejections = counter(
            "limit_rejections",
            "Work refused or cut off because a resource bound was reached, per bound.",
            ["limit"], namespace=own)
        self.api_up = gauge(
            "kubernetes_api_up",
            "1 while the last request to the Kubernetes API succeeded, else 0.",
            mode="livemax", namespace=own)

    # -- hot-path aggregators -------------------------------------------------------------

    def new_query_counts(self) -> QueryCounts:
        """A `QueryCounts` whose counts `flush` publishes."""
        qc = QueryCounts()
        self._query_counts.append(qc)
        return qc

    def new_tally(self) -> Tally:
        """A `Tally` whose counts `flush` publishes."""
        t = Tally()
        self._tallies.append(t)
        return t

    def add_flush_hook(self, fn: Callable[[], None]) -> None:
        """Call `fn` at every flush, e.g. to set cache_entries from the cache's size."""
        self._flush_hooks.append(fn)

    def remove_flush_hook(self, fn: Callable[[], None]) -> None:
        if fn in self._flush_hooks:
            self._flush_hooks.remove(fn)

    def child(self, metric: Any, labels: tuple[str, ...] = ()) -> Any:
        """The labelled child of `metric`, remembered so the next lookup is one dict get."""
        ck = (metric, labels)
        c = self._children.get(ck)
        if c is None:
            c = metric.labels(*labels) if labels else metric
            self._children[ck] = c
        return c

    def flush(self) -> None:
        """Move every hot-path count into the prometheus metrics and clear it."""
        for fn in self._flush_hooks:
            fn()
        for qc in self._query_counts:
            self._flush_queries(qc.take())
        for t in self._tallies:
            for (metric, labels), n in t.take().items():
                self.child(metric, labels).inc(n)

    def _flush_queries(self, data: dict[tuple, list]) -> None:
        if not data:
            return
        # Aggregate per metric label set first: many keys share one series.
        requests: defaultdict[tuple, int] = defaultdict(int)
        responses: defaultdict[tuple, int] = defaultdict(int)
        dos: defaultdict[tuple, int] = defaultdict(int)
        durations: dict[tuple, list] = {}
        req_sizes: defaultdict[tuple, list] = defaultdict(lambda: [0] * (len(SIZE_BUCKETS) + 2))
        resp_sizes: defaultdict[tuple, list] = defaultdict(lambda: [0] * (len(SIZE_BUCKETS) + 2))
        n_size = len(SIZE_BUCKETS) + 1  # slot of the size sum
        for k, rec in data.items():
            server, zone, proto, fam, qtype, rcode, plugin, do, req_size, resp_size = k
            n = sum(rec[:_N_TIME])
            if not n:
                continue
            requests[(server, zone, "", proto, fam, qtype)] += n
            responses[(server, zone, "", rcode, plugin)] += n
            if do:
                dos[(server, zone, "")] += n
            dk = (server, zone, "")
            acc = durations.get(dk)
            if acc is None:
                durations[dk] = acc = [0] * _N_TIME + [0.0]
            for i in range(_N_TIME):
                if rec[i]:
                    acc[i] += rec[i]
            acc[DURATION_SUM] += rec[DURATION_SUM]
            sk = (server, zone, "", proto)
            rs = req_sizes[sk]
            rs[bisect_left(SIZE_BUCKETS, req_size)] += n
            rs[n_size] += req_size * n
            ps = resp_sizes[sk]
            ps[bisect_left(SIZE_BUCKETS, resp_size)] += n
            ps[n_size] += resp_size * n
        child = self.child
        for labels, n in requests.items():
            child(self.requests, labels).inc(n)
        for labels, n in responses.items():
            child(self.responses, labels).inc(n)
        for labels, n in dos.items():
            child(self.do_requests, labels).inc(n)
        for labels, acc in durations.items():
            c = child(self.request_duration, labels)
            first = True
            for i in range(_N_TIME):
                if acc[i]:
                    # The whole sum rides on the first bucket touched; _sum is one value.
                    _observe_many(c, i, acc[i], acc[DURATION_SUM] if first else 0.0)
                    first = False
        for metric, table in ((self.request_size, req_sizes), (self.response_size, resp_sizes)):
            for labels, acc in table.items():
                c = child(metric, labels)
                first = True
                for i in range(n_size):
                    if acc[i]:
                        _observe_many(c, i, acc[i], float(acc[n_size]) if first else 0.0)
                        first = False

    async def run_flusher(self, interval: float = 1.0) -> None:
        """Flush every `interval` seconds until cancelled (run it as a task in each worker)."""
        while True:
            await asyncio.sleep(interval)
            self.flush()

    # -- helpers for the other plugins ------------------------------------------------------

    def set_build_info(self, revision: str = "") -> None:
        self.build_info.labels(
            __version__, revision or "unknown", f"python{platform.python_version()}").set(1)

    def set_plugin_enabled(self, server: str, zone: str, name: str) -> None:
        self.plugin_enabled.labels(server, zone, "", name).set(1)

    def observe_health(self, seconds: float, ok: bool) -> None:
        """Record one self-check of /health (`OpsServer(health_observer=m.observe_health)`)."""
        self.health_request_duration.observe(seconds)
        if not ok:
            self.health_request_failures.inc()

    def set_reload_version(self, sha512_hex: str) -> None:
        """Record the running Corefile's SHA512, as the reload plugin does."""
        if self._reload_hash is not None and self._reload_hash != sha512_hex:
            old = self.reload_version_info.labels("sha512", self._reload_hash)
            if self.multiprocess_dir is None:
                self.reload_version_info.remove("sha512", self._reload_hash)
            else:
                old.set(0)  # multiprocess files cannot drop a series; zero it instead
        self.reload_version_info.labels("sha512", sha512_hex).set(1)
        self._reload_hash = sha512_hex

    # -- multiprocess bookkeeping and scraping ----------------------------------------------

    def add_worker_pid(self, pid: int) -> None:
        """Include a worker's CPU and memory in the process_* metrics."""
        self._worker_pids.add(pid)

    def mark_worker_dead(self, pid: int) -> None:
        """Forget a worker that exited: its live gauges (cache_entries) stop counting."""
        self._worker_pids.discard(pid)
        if self.multiprocess_dir is not None:
            mark_process_dead(pid, self.multiprocess_dir)

    def exposition(self) -> bytes:
        """Flush, then render the Prometheus text format (version 0.0.4)."""
        self.flush()
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_PLAIN_0_0_4


def setup(multiprocess_dir: str | None = None, *, worker: bool = False) -> Metrics:
    """Create the metrics for this process.

    Single process: pass nothing. Several workers: the parent calls
    `setup(dir)` before starting workers (the directory is emptied: stale files from an earlier
    run would be summed in), and each worker calls `setup(dir, worker=True)` (or inherits the
    parent's `Metrics` through fork; prometheus_client notices the new pid). The parent serves
    `exposition()`, which sums every process's files.
    """
    # CoreDNS exports no *_created series; keep the scrape the same shape.
    prometheus_client.disable_created_metrics()
    if multiprocess_dir is None:
        # Single process: plain in-memory values, even if PROMETHEUS_MULTIPROC_DIR is set in
        # the environment (prometheus_client would otherwise pick files at import).
        values.ValueClass = values.MutexValue
        m = Metrics(None)
    else:
        path = Path(multiprocess_dir)
        if not worker:
            if path.exists() and not path.is_dir():
                raise ValueError(f"metrics multiprocess directory {path} is not a directory")
            if path.is_dir():
                for entry in path.iterdir():
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
            path.mkdir(parents=True, exist_ok=True)
        elif not path.is_dir():
            raise ValueError(f"metrics multiprocess directory {path} does not exist")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
        # prometheus_client picks its value class at import; switch it for metrics made now.
        values.ValueClass = values.MultiProcessValue()
        m = Metrics(str(path))
    m.set_build_info()
    return m
