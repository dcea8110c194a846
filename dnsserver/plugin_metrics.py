"""Publishing the plugins' plain counters (cache, forward) as CoreDNS's metrics at each flush.

Plugins count in plain integers on their hot paths; this flush hook turns the growth since the
last flush into prometheus increments, and sets the gauges.
"""

from __future__ import annotations

from typing import Any

from dnsserver.metrics import TIME_BUCKETS, Metrics, _observe_many


class PluginMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        self.plugins: list[tuple[str, Any]] = []  # (server label, plugin)
        self._last: dict[tuple[Any, ...], float] = {}

    def add(self, server: str, plugin: Any) -> None:
        self.plugins.append((server, plugin))

    def _delta(self, counter: Any, labels: tuple[str, ...], key: tuple[Any, ...],
               value: float) -> None:
        last = self._last.get(key, 0)
        if value > last:
            self.m.child(counter, labels).inc(value - last)
        self._last[key] = value

    def __call__(self) -> None:
        for server, plugin in self.plugins:
            if plugin.name == "cache":
                self._cache(server, plugin)
            elif plugin.name == "forward":
                self._forward(plugin)

    def _cache(self, server: str, p: Any) -> None:
        m = self.m
        zones = p.zones_label
        ident = id(p)
        for kind, entries, hits, evictions in (
                ("success", p.entries_success, p.hits_success, p.evictions_success),
                ("denial", p.entries_denial, p.hits_denial, p.evictions_denial)):
            m.child(m.cache_entries, (server, kind, zones, "")).set(entries)
            self._delta(m.cache_hits, (server, kind, zones, ""), (ident, "hits", kind), hits)
            self._delta(m.cache_evictions, (server, kind, zones, ""),
                        (ident, "evictions", kind), evictions)
        for counter, attr in ((m.cache_requests, "requests"), (m.cache_misses, "misses"),
                              (m.cache_prefetches, "prefetches"), (m.cache_drops, "drops"),
                              (m.cache_served_stale, "served_stale")):
            self._delta(counter, (server, zones, ""), (ident, attr), getattr(p, attr))

    def _forward(self, p: Any) -> None:
        m = self.m
        ident = id(p)
        self._delta(m.forward_healthcheck_broken, (), (ident, "broken"), p.healthcheck_broken)
        self._delta(m.forward_max_concurrent_rejects, (), (ident, "rejects"),
                    p.max_concurrent_rejects)
        for proxy in p.proxies:
            pid = id(proxy)
            self._delta(m.proxy_healthcheck_failures, ("forward", proxy.label),
                        (pid, "hc"), proxy.healthcheck_failures)
            for proto, n in proxy.conn_cache_hits.items():
                self._delta(m.proxy_conn_cache_hits, ("forward", proxy.label, proto),
                            (pid, "hit", proto), n)
            for proto, n in proxy.conn_cache_misses.items():
                self._delta(m.proxy_conn_cache_misses, ("forward", proxy.label, proto),
                            (pid, "miss", proto), n)
            for rcode, buckets in proxy.durations.items():
                child = m.child(m.proxy_request_duration, ("forward", proxy.label, rcode))
                total = proxy.duration_sums.get(rcode, 0.0)
                first = True
                for i in range(len(TIME_BUCKETS) + 1):
                    key = (pid, "dur", rcode, i)
                    last = self._last.get(key, 0)
                    grown = buckets[i] - last
                    if grown > 0:
                        sum_key = (pid, "sum", rcode)
                        sum_grown = total - self._last.get(sum_key, 0.0) if first else 0.0
                        _observe_many(child, i, int(grown), sum_grown)
                        if first:
                            self._last[sum_key] = total
                        first = False
                    self._last[key] = buckets[i]
