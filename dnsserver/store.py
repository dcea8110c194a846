"""The cluster store: trimmed Services, EndpointSlices, Namespaces and Pods, indexed for DNS.

It is fed API dicts (from a snapshot or the watcher), keeps only what `objects` trims, indexes
by name, by IP (for PTR) and by namespace, and tells its listeners exactly which *tags* changed so
that cached answers are dropped narrowly: ("svc", ns, name) for a service and its endpoints,
("ns", ns) for a namespace, ("ip", ip) for reverse lookups, ("pod", ip) for verified pod records.
It does no I/O and is only ever touched from one thread (the server's event loop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from dnsserver import objects
from dnsserver.objects import EndpointSlice, InvalidObject, Namespace, Pod, Service

log = logging.getLogger("dnsserver.kubernetes")

Tag = tuple[str, ...]
Listener = Callable[[set[Tag]], None]
KINDS = ("Service", "EndpointSlice", "Namespace", "Pod")


class ClusterStore:
    """Everything DNS knows about the cluster, with indexes and change notification."""

    def __init__(self, clock: Callable[[], float] = time.time, indexed: bool = True) -> None:
        """`indexed=False` keeps the tables only (no lookups by IP or service): what a
        supervisor of worker processes needs to replay the state, at a fraction of the memory."""
        self._clock = clock
        self.services: dict[tuple[str, str], Service] = {}
        self.slices: dict[tuple[str, str], EndpointSlice] = {}
        # (namespace, service) -> {slice name: slice}
        self.slices_by_service: dict[tuple[str, str], dict[str, EndpointSlice]] = (
            {} if indexed else _Unindexed())
        self.namespaces: dict[str, Namespace] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        # IP -> the key of the one object with that IP, or a set of keys when there are
        # several: most IPs belong to one object, and a set per IP would cost 200 bytes each.
        index = dict if indexed else _Unindexed
        self.services_by_ip: dict[str, Any] = index()
        self.slices_by_ip: dict[str, Any] = index()
        self.pods_by_ip: dict[str, Any] = index()
        self.serial = int(clock())
        self.synced_kinds: set[str] = set()
        self.required_kinds: set[str] = set()
        self.skipped: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._listeners: list[Listener] = []
        # Called with every trimmed change, to replay it elsewhere (worker processes):
        # ("apply", kind, event, record or key), ("replace", kind, records), ("synced", kind).
        self.record_listeners: list[Callable[..., None]] = []
        # A worker's store takes its serial from the supervisor's, so that every worker of a
        # server answers with the same SOA serial.
        self.follow_serial = False

    # -- notification -------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def follow(self, serial: int) -> None:
        """Take the supervisor's SOA serial (a worker's store) and tell the listeners, so kept
        answers carrying the serial follow it."""
        self.follow_serial = True
        self.serial = serial
        for listener in self._listeners:
            listener(set())

    def notify(self, tags: set[Tag]) -> None:
        """Tell listeners that answers tagged so are stale, without touching cluster state.

        Plugins serving other data (files, hosts) tag their answers with e.g. ("file", path)
        and call this when that data changes, so the fast path drops exactly those answers.
        """
        for listener in self._listeners:
            listener(tags)

    def _changed(self, tags: set[Tag]) -> None:
        if not tags:
            return
        now = self._clock()
        # The SOA serial is the time of the last change, in seconds, as CoreDNS has it; it never
        # goes backwards, even when the clock does.
        if not self.follow_serial:
            self.serial = max(self.serial, int(now))
        for listener in self._listeners:
            listener(tags)

    # -- sync state ---------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self.required_kinds <= self.synced_kinds

    def mark_synced(self, kind: str) -> None:
        self.synced_kinds.add(kind)
        for fn in self.record_listeners:
            fn("synced", kind)

    # -- feeding ------------------------------------------------------------------------------

    def trim(self, kind: str, obj: Any) -> Any:
        """An API dict trimmed to its record; None when invalid (logged, counted) or ignored.

        Safe to call from a watcher thread: it reads nothing of the store's state."""
        record = self._convert(kind, obj)
        return None if record is InvalidObject else record

    def _convert(self, kind: str, obj: Any) -> Any:
        try:
            return objects.CONVERTERS[kind](obj)
        except InvalidObject as exc:
            self.skipped[kind] += 1
            log.warning("plugin/kubernetes: skipping invalid %s: %s", kind, exc)
            return InvalidObject

    def apply(self, kind: str, event: str, obj: Any) -> None:
        """One watch event: ADDED, MODIFIED or DELETED, with the object as the API sent it."""
        if kind not in objects.CONVERTERS:
            return
        if event == "DELETED":
            try:
                key = objects.key_of(kind, obj)
            except InvalidObject as exc:
                self.skipped[kind] += 1
                log.warning("plugin/kubernetes: skipping invalid %s deletion: %s", kind, exc)
                return
            self.apply_record(kind, "DELETED", key)
            return
        record = self._convert(kind, obj)
        if record is InvalidObject:
            return
        if record is None:  # a kind of object DNS ignores now (finished pod, FQDN slice)
            self.apply_record(kind, "DELETED", objects.key_of(kind, obj))
        else:
            self.apply_record(kind, event, record)

    def apply_record(self, kind: str, event: str, payload: Any) -> None:
        """A trimmed change: the record, or for DELETED its key."""
        for fn in self.record_listeners:
            fn("apply", kind, event, payload)
        tags: set[Tag] = set()
        if event == "DELETED":
            self._remove(kind, payload, tags)
        else:
            self._put(kind, payload, tags)
        self._changed(tags)

    def replace(self, kind: str, objs: Iterable[Any]) -> None:
        """The complete set of one kind, after a (re)list: swapped in one step, diffed narrowly."""
        if kind not in objects.CONVERTERS:
            return
        records = []
        for obj in objs:
            record = self._convert(kind, obj)
            if record is InvalidObject or record is None:
                continue
            records.append(record)
        self.replace_records(kind, records)

    def replace_records(self, kind: str, records: list[Any]) -> None:
        """The complete set of one kind, already trimmed."""
        for fn in self.record_listeners:
            fn("replace", kind, records)
        fresh = {_key(kind, record): record for record in records}
        tags: set[Tag] = set()
        current = self._table(kind)
        for key in [k for k in current if k not in fresh]:
            self._remove(kind, key, tags)
        for key, record in fresh.items():
            if current.get(key) != record:
                self._put(kind, record, tags)
        self._changed(tags)

    def load(self, objs: Iterable[Any]) -> None:
        """Load a snapshot: every known kind replaced at once, all kinds marked synced."""
        by_kind: dict[str, list[Any]] = {k: [] for k in KINDS}
        for obj in objs:
            kind = obj.get("kind") if isinstance(obj, dict) else None
            if kind in by_kind:
                by_kind[kind].append(obj)
        for kind in KINDS:
            self.replace(kind, by_kind[kind])
            self.mark_synced(kind)

    # -- internals ----------------------------------------------------------------------------

    def _table(self, kind: str) -> dict[Any, Any]:
        if kind == "Service":
            return self.services
        if kind == "EndpointSlice":
            return self.slices
        if kind == "Namespace":
            return self.namespaces
        return self.pods

    def _put(self, kind: str, record: Any, tags: set[Tag]) -> None:
        key = _key(kind, record)
        old = self._table(kind).get(key)
        if old == record:
            return
        if old is not None:
            self._remove(kind, key, tags)
        if kind == "Service":
            self.services[key] = record
            tags.add(("svc", record.namespace, record.name))
            for ip in record.cluster_ips:
                _index_add(self.services_by_ip, ip, key)
                tags.add(("ip", ip))
        elif kind == "EndpointSlice":
            self.slices[key] = record
            svc_key = (record.namespace, record.service)
            self.slices_by_service.setdefault(svc_key, {})[record.name] = record
            tags.add(("svc", *svc_key))
            for addr in record.addresses:
                _index_add(self.slices_by_ip, addr.ip, key)
                tags.add(("ip", addr.ip))
        elif kind == "Namespace":
            self.namespaces[key] = record
            tags.add(("ns", record.name))
        else:
            self.pods[key] = record
            for ip in record.ips:
                _index_add(self.pods_by_ip, ip, key)
                tags.add(("pod", ip))

    def _remove(self, kind: str, key: Any, tags: set[Tag]) -> None:
        old = self._table(kind).pop(key, None)
        if old is None:
            return
        if kind == "Service":
            tags.add(("svc", old.namespace, old.name))
            for ip in old.cluster_ips:
                _discard(self.services_by_ip, ip, key)
                tags.add(("ip", ip))
        elif kind == "EndpointSlice":
            svc_key = (old.namespace, old.service)
            group = self.slices_by_service.get(svc_key)
            if group is not None:
                group.pop(old.name, None)
                if not group:
                    del self.slices_by_service[svc_key]
            tags.add(("svc", *svc_key))
            for addr in old.addresses:
                _discard(self.slices_by_ip, addr.ip, key)
                tags.add(("ip", addr.ip))
        elif kind == "Namespace":
            tags.add(("ns", old.name))
        else:
            for ip in old.ips:
                _discard(self.pods_by_ip, ip, key)
                tags.add(("pod", ip))

    # -- reads used by the record logic ---------------------------------------------------------

    @staticmethod
    def keys_for(index: dict[str, Any], ip: str) -> tuple[Any, ...]:
        """The keys an IP index holds for `ip`, sorted."""
        value = index.get(ip)
        if value is None:
            return ()
        if isinstance(value, tuple):
            return (value,)
        return tuple(sorted(value))

    def endpoint_slices(self, namespace: str, service: str) -> Iterable[EndpointSlice]:
        group = self.slices_by_service.get((namespace, service))
        return group.values() if group else ()


def _key(kind: str, record: Any) -> Any:
    return record.name if kind == "Namespace" else (record.namespace, record.name)


class _Unindexed(dict):  # type: ignore[type-arg]
    """An index that keeps nothing: every write is dropped, every read finds nothing."""

    def get(self, key: Any, default: Any = None) -> Any:
        return default

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return default


def _index_add(index: dict[str, Any], ip: str, key: tuple[str, str]) -> None:
    value = index.get(ip)
    if value is None:
        index[ip] = key
    elif isinstance(value, tuple):
        if value != key:
            index[ip] = {value, key}
    else:
        value.add(key)


def _discard(index: dict[str, Any], ip: str, key: tuple[str, str]) -> None:
    value = index.get(ip)
    if value is None:
        return
    if isinstance(value, tuple):
        if value == key:
            del index[ip]
        return
    value.discard(key)
    if len(value) == 1:
        index[ip] = next(iter(value))
    elif not value:
        del index[ip]
