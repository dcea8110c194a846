"""Feeding the cluster store from the Kubernetes API: one watcher per server instance, its
events hopped onto the event loop, and CoreDNS's start-up wait for the first sync.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from typing import Any

from dnsserver.k8s.options import ApiOptions
from dnsserver.k8s.watch import ClusterWatcher
from dnsserver.store import ClusterStore

log = logging.getLogger("dnsserver.kubernetes")


TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"


def programming_delay(obj: dict[str, Any], now: float) -> float | None:
    """Seconds from the change that triggered this EndpointSlice update (the endpoints
    controller's annotation) to now: CoreDNS's DNS programming latency."""
    meta = obj.get("metadata") or {}
    stamp = (meta.get("annotations") or {}).get(TRIGGER_TIME)
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, now - when.timestamp())


class LoopSink:
    """A ClusterSink that applies what the watcher threads see on the event loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, store: ClusterStore,
                 metrics: Any = None) -> None:
        self.loop = loop
        self.store = store
        self.metrics = metrics

    def replace(self, kind: str, objects: list[Any]) -> None:
        # The watcher trimmed the list page by page (ClusterWatcher's `trim`): records here.
        self.loop.call_soon_threadsafe(self.store.replace_records, kind, objects)

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self._apply, kind, event, obj)

    def _apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        self.store.apply(kind, event, obj)
        if self.metrics is not None and kind == "EndpointSlice" and event != "DELETED":
            delay = programming_delay(obj, time.time())
            if delay is not None:
                self.metrics.dns_programming_duration.labels(self._service_kind(obj)).observe(
                    delay)

    def _service_kind(self, obj: dict[str, Any]) -> str:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        service = self.store.services.get(
            ((obj.get("metadata") or {}).get("namespace", ""),
             str(labels.get("kubernetes.io/service-name", "")).lower()))
        if service is None or not service.headless:
            return "cluster_ip"
        # The endpoints controller manages the slices of services with a selector.
        with_selector = labels.get(MANAGED_BY) == "endpointslice-controller.k8s.io"
        return "headless_with_selector" if with_selector else "headless_without_selector"

    def synced(self, kind: str) -> None:
        self.loop.call_soon_threadsafe(self.store.mark_synced, kind)


class SourceMetrics:
    """Publishes the watcher's and the store's plain counters at each metrics flush."""

    def __init__(self, metrics: Any, watcher: ClusterWatcher, store: ClusterStore) -> None:
        self.m = metrics
        self.watcher = watcher
        self.store = store
        self.seen: dict[tuple[str, str], int] = {}

    def _delta(self, counter: Any, name: str, kind: str, value: int) -> None:
        last = self.seen.get((name, kind), 0)
        if value > last:
            counter.labels(kind).inc(value - last)
        self.seen[(name, kind)] = value

    def __call__(self) -> None:
        stats = self.watcher.stats
        m = self.m
        for kind in self.watcher.kinds:
            # The watcher counts every watch it opens; the first one is no restart.
            opened = stats.watch_restarts.get(kind, 0)
            self._delta(m.api_watch_restarts, "restarts", kind, max(0, opened - 1))
            self._delta(m.api_relists, "relists", kind, max(0, stats.relists.get(kind, 0) - 1))
            skipped = self.store.skipped.get(kind, 0) + stats.bad_objects.get(kind, 0)
            self._delta(m.api_objects_skipped, "skipped", kind, skipped)
            m.api_synced.labels(kind).set(1 if kind in self.store.synced_kinds else 0)
        m.api_up.set(1 if stats.api_up else 0)


async def start_watchers(assembly: Any, store: ClusterStore,
                         metrics: Any = None) -> list[ClusterWatcher]:
    """Start one watcher for the first `kubernetes` block's API settings; wait for the sync."""
    settings = assembly.kubernetes[0].config.api
    fields = {f.name for f in dataclasses.fields(ApiOptions)}
    options = ApiOptions(**{k: v for k, v in dataclasses.asdict(settings).items() if k in fields})
    loop = asyncio.get_running_loop()
    watcher = ClusterWatcher(options, LoopSink(loop, store, metrics), trim=store.trim)
    store.required_kinds = set(watcher.kinds)
    if metrics is not None:
        metrics.add_flush_hook(SourceMetrics(metrics, watcher, store))
    watcher.start()
    deadline = time.monotonic() + settings.startup_timeout
    next_log = time.monotonic() + 0.5
    while not store.synced:
        now = time.monotonic()
        if now >= deadline:
            log.warning("plugin/kubernetes: starting server with unsynced Kubernetes API")
            break
        if now >= next_log:
            log.info("plugin/kubernetes: waiting for Kubernetes API before starting server")
            next_log = now + 0.5
        await asyncio.sleep(0.02)
    return [watcher]
