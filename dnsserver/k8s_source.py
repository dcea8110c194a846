"""Feeding the cluster store from the Kubernetes API: one watcher per server instance, its
events hopped onto the event loop, and CoreDNS's start-up wait for the first sync.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from dnsserver.k8s.options import ApiOptions
from dnsserver.k8s.watch import ClusterWatcher
from dnsserver.store import ClusterStore

log = logging.getLogger("dnsserver.kubernetes")


class LoopSink:
    """A ClusterSink that applies what the watcher threads see on the event loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, store: ClusterStore) -> None:
        self.loop = loop
        self.store = store

    def replace(self, kind: str, objects: list[dict[str, Any]]) -> None:
        self.loop.call_soon_threadsafe(self.store.replace, kind, objects)

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        self.loop.call_soon_threadsafe(self.store.apply, kind, event, obj)

    def synced(self, kind: str) -> None:
        self.loop.call_soon_threadsafe(self.store.mark_synced, kind)


async def start_watchers(assembly: Any, store: ClusterStore) -> list[ClusterWatcher]:
    """Start one watcher for the first `kubernetes` block's API settings; wait for the sync."""
    settings = assembly.kubernetes[0].config.api
    fields = {f.name for f in dataclasses.fields(ApiOptions)}
    options = ApiOptions(**{k: v for k, v in dataclasses.asdict(settings).items() if k in fields})
    loop = asyncio.get_running_loop()
    watcher = ClusterWatcher(options, LoopSink(loop, store))
    store.required_kinds = set(watcher.kinds)
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
