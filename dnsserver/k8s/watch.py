"""List and watch Services, EndpointSlices, Namespaces and Pods, delivering plain API dicts.

One thread per kind runs the reflector loop: paged list -> `sink.replace`, then watches resumed
from the last resourceVersion (bookmarks keep it fresh) -> `sink.apply`. A 410 or an ERROR event
leads to a fresh list that replaces the old state in one step; failures back off with jitter
while the last known state keeps being served.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from .backoff import Backoff
from .connection import (
    SERVICE_ACCOUNT_DIR,
    TOKEN_RELOAD_INTERVAL,
    ApiConnection,
    connect,
    redact,
)
from .options import ApiOptions

log = logging.getLogger("dnsserver.kubernetes")

KINDS = ("Service", "EndpointSlice", "Namespace", "Pod")
_PATHS = {
    "Service": "/api/v1/services",
    "EndpointSlice": "/apis/discovery.k8s.io/v1/endpointslices",
    "Namespace": "/api/v1/namespaces",
    "Pod": "/api/v1/pods",
}
# CoreDNS's pod watch (plugin/kubernetes/controller.go): only pods that can still answer.
POD_FIELD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown"
PAGE_SIZE = 500
# A watch that ends this soon without delivering anything did not really work: back off.
_MIN_USEFUL_WATCH = 1.0


class ClusterSink(Protocol):
    """Receives what the watcher sees; called from the watcher's threads."""

    def replace(self, kind: str, objects: list[dict[str, Any]]) -> None:
        """The complete current set of `kind` after a (re)list; replaces the old set at once."""

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        """One change: event is "ADDED", "MODIFIED" or "DELETED"."""

    def synced(self, kind: str) -> None:
        """The first complete list of `kind` has been delivered."""


@dataclass
class WatchStats:
    """Plain counters per kind for the metrics code; each kind has exactly one writer thread."""

    relists: dict[str, int] = field(default_factory=dict)  # complete lists delivered
    watch_restarts: dict[str, int] = field(default_factory=dict)  # watches (re)opened
    errors: dict[str, int] = field(default_factory=dict)  # failed requests, broken streams
    events: dict[str, int] = field(default_factory=dict)  # ADDED/MODIFIED/DELETED delivered
    bad_objects: dict[str, int] = field(default_factory=dict)  # not even a JSON object: skipped
    synced: dict[str, bool] = field(default_factory=dict)
    api_up: bool = False  # last request of every kind succeeded


class _ApiError(Exception):
    """A request failed; `status` is the HTTP status (None for transport errors)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Gone(Exception):
    """The resourceVersion or continue token is too old (410): list again."""


class _Health:
    """Whether the API answers, logged once per change of state, never once per retry."""

    def __init__(self, stats: WatchStats, describe: str) -> None:
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {}
        self._warned = False
        self._stats = stats
        self._describe = describe

    def failed(self, kind: str, reason: str) -> None:
        with self._lock:
            self._failing[kind] = reason
            if not self._warned:
                self._warned = True
                log.warning(
                    "plugin/kubernetes: Kubernetes API %s unreachable (%s: %s); "
                    "serving the last known state until it is back",
                    self._describe, kind, reason,
                )
            # After the log line, so whoever sees the flag down also finds the line.
            self._stats.api_up = False

    def ok(self, kind: str) -> None:
        with self._lock:
            self._failing.pop(kind, None)
            if self._failing:
                return
            if self._warned:
                self._warned = False
                log.info("plugin/kubernetes: Kubernetes API %s is reachable again", self._describe)
            self._stats.api_up = True


@dataclass(frozen=True)
class _Timing:
    watch_timeout: float
    read_timeout_margin: float
    request_timeout: float
    page_size: int


class _KindWatcher:
    """The list/watch loop of one kind, on its own thread."""

    def __init__(self, kind: str, owner: ClusterWatcher) -> None:
        self.kind = kind
        self.path = owner.connection.path_prefix + _PATHS[kind]
        self._owner = owner
        self._conn_lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._synced = False
        self.rv = ""  # last resourceVersion seen on the current watch
        self.delivered = False  # whether the current watch delivered any event
        params: dict[str, str] = {}
        opts = owner.options
        if kind in ("Service", "EndpointSlice", "Pod") and opts.labels:
            params["labelSelector"] = opts.labels  # CoreDNS applies `labels` to pods too
        if kind == "Namespace" and opts.namespace_labels:
            params["labelSelector"] = opts.namespace_labels
        if kind == "Pod":
            params["fieldSelector"] = POD_FIELD_SELECTOR
        self._selectors = params
        self.thread = threading.Thread(
            target=self._run, name=f"k8s-watch-{kind}", daemon=True
        )

    # --- connection handling ---------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        with self._conn_lock:
            timeout = self._owner.timing.request_timeout
            if self._conn is None:
                self._conn = self._owner.connection.open(timeout)
            elif self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)  # a finished watch left its longer timeout
            return self._conn

    def _discard(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def interrupt(self) -> None:
        """Wake the thread from any blocking read (used by stop)."""
        with self._conn_lock:
            sock = self._conn.sock if self._conn is not None else None
        if sock is not None:
            # socket.socket.shutdown, not SSLSocket's: it wakes a blocked recv in any TLS state.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _request(self, params: dict[str, str]) -> http.client.HTTPResponse:
        """GET self.path?params; raises _ApiError (or _Gone on 410) unless the answer is 200."""
        url = f"{self.path}?{urlencode(params)}"
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request("GET", url, headers=self._owner.connection.headers())
                resp = conn.getresponse()
                break
            except (OSError, http.client.HTTPException) as exc:
                self._discard()
                # A kept-alive connection the server has since closed is not an API failure:
                # try once more on a fresh one before calling it that.
                if not reused or attempt == 2 or isinstance(exc, TimeoutError):
                    raise _ApiError(_describe_exc(exc)) from None
        if resp.status == 200:
            return resp
        try:
            body = resp.read(64 * 1024)
        except (OSError, http.client.HTTPException):
            body = b""
        self._discard()
        message = _status_message(body) or resp.reason
        if resp.status == 410:
            raise _Gone(message)
        if resp.status == 401:
            self._owner.connection.unauthorized()
        raise _ApiError(f"HTTP {resp.status}: {message}", resp.status)

    # --- list --------------------------------------------------------------------------------

    def _list(self) -> tuple[list[dict[str, Any]], str]:
        """All objects in pages; a 410 on an expired continue token restarts the list."""
        while True:
            items: list[dict[str, Any]] = []
            cont = ""
            try:
                while True:
                    params = dict(self._selectors, limit=str(self._owner.timing.page_size))
                    if cont:
                        params["continue"] = cont
                    resp = self._request(params)
                    try:
                        body = json.loads(resp.read())
                    except (OSError, http.client.HTTPException) as exc:
                        self._discard()
                        raise _ApiError(f"reading list: {_describe_exc(exc)}") from None
                    except ValueError as exc:
                        self._discard()
                        raise _ApiError(f"list response is not JSON: {exc}") from None
                    if not isinstance(body, dict):
                        raise _ApiError("list response is not a JSON object")
                    meta = body.get("metadata") or {}
                    trim = self._owner.trim
                    for i, obj in enumerate(body.get("items") or ()):
                        if not isinstance(obj, dict):
                            self._bad(f"list item {len(items) + i}", obj)
                        elif trim is None:
                            items.append(obj)
                        elif self._owner.wanted(self.kind, obj):
                            kept = trim(self.kind, obj)
                            if kept is not None:
                                items.append(kept)
                    del body  # the page's dicts go now, not after the whole list
                    cont = meta.get("continue") or ""
                    if not cont:
                        return items, str(meta.get("resourceVersion") or "")
            except _Gone:
                if not cont:
                    raise _ApiError("410 Gone for a list without a continue token") from None
                log.info(
                    "plugin/kubernetes: %s list: continue token expired; listing again",
                    self.kind,
                )

    # --- watch -------------------------------------------------------------------------------

    def _watch(self, rv: str) -> str:
        """One watch from rv; returns the last resourceVersion seen (self.rv tracks it too).

        Raises _Gone (relist), _ApiError (request failed) or _Broken (stream cut: re-watch).
        Sets self.delivered when any event arrived.
        """
        timing = self._owner.timing
        # Server-side timeout jittered over [t, 2t) like client-go, so pods do not renew in step.
        timeout_s = max(1, int(timing.watch_timeout * (1 + self._owner.rand())))
        params = dict(
            self._selectors,
            watch="1",
            allowWatchBookmarks="true",
            resourceVersion=rv,
            timeoutSeconds=str(timeout_s),
        )
        resp = self._request(params)
        self._owner.health.ok(self.kind)
        conn = self._conn
        if conn is not None and conn.sock is not None:
            conn.sock.settimeout(timeout_s + timing.read_timeout_margin)
        self.delivered = False
        self.rv = rv
        try:
            while not self._owner.stopping.is_set():
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as exc:
                    raise _Broken(_describe_exc(exc)) from None
                if not line:
                    return rv  # the final chunk: the server's timeoutSeconds ran out
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise _Broken("watch stream sent a line that is not JSON") from None
                if not isinstance(event, dict):
                    raise _Broken("watch stream sent an event that is not a JSON object")
                etype, obj = event.get("type"), event.get("object")
                if etype == "ERROR":
                    raise _Gone(_status_text(obj))
                if not isinstance(obj, dict):
                    self._bad(f"{etype} event", obj)
                    continue
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if isinstance(new_rv, str) and new_rv:
                    rv = self.rv = new_rv
                self.delivered = True
                if etype in ("ADDED", "MODIFIED", "DELETED"):
                    if self._owner.wanted(self.kind, obj):
                        self._owner.deliver(self.kind, "apply", etype, obj)
                        _bump(self._owner.stats.events, self.kind)
                elif etype != "BOOKMARK":
                    log.warning(
                        "plugin/kubernetes: %s watch: unknown event type %r ignored",
                        self.kind, etype,
                    )
            return rv
        finally:
            if not resp.isclosed():
                # Stopped mid-stream or raised: the connection cannot be reused.
                self._discard()

    def _bad(self, where: str, obj: object) -> None:
        _bump(self._owner.stats.bad_objects, self.kind)
        log.warning(
            "plugin/kubernetes: %s %s skipped: expected a JSON object, got %s",
            self.kind, where, type(obj).__name__,
        )

    # --- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        owner = self._owner
        stats = owner.stats
        backoff = owner.new_backoff()
        rv: str | None = None
        while not owner.stopping.is_set():
            try:
                if rv is None:
                    objects, rv = self._list()
                    owner.health.ok(self.kind)
                    if owner.trim is None:  # trimmed lists were filtered page by page
                        objects = [o for o in objects if owner.wanted(self.kind, o)]
                    if owner.stopping.is_set():
                        break
                    owner.deliver(self.kind, "replace", objects)
                    _bump(stats.relists, self.kind)
                    if not self._synced:
                        self._synced = True
                        stats.synced[self.kind] = True
                        owner.deliver(self.kind, "synced")
                    backoff.reset()
                    if not rv:
                        # No resourceVersion to resume from: nothing safe to watch; relist later.
                        rv = None
                        owner.stopping.wait(backoff.next())
                        continue
                started = time.monotonic()
                _bump(stats.watch_restarts, self.kind)
                try:
                    rv = self._watch(rv)
                except _Broken as exc:
                    rv = self.rv  # resume after the last event that did arrive
                    _bump(stats.errors, self.kind)
                    log.debug("plugin/kubernetes: %s watch broken: %s", self.kind, exc)
                if self.delivered or time.monotonic() - started >= _MIN_USEFUL_WATCH:
                    backoff.reset()  # a watch that worked: renew or resume at once
                else:
                    owner.stopping.wait(backoff.next())
            except _Gone as exc:
                # History compacted or the server said ERROR: list again and replace in one step.
                log.info(
                    "plugin/kubernetes: %s watch: %s; listing again", self.kind,
                    redact(str(exc)),
                )
                rv = None
            except _ApiError as exc:
                _bump(stats.errors, self.kind)
                owner.health.failed(self.kind, redact(str(exc)))
                owner.stopping.wait(backoff.next())
            except Exception as exc:  # never let one kind's thread die: log, back off, retry
                _bump(stats.errors, self.kind)
                log.error(
                    "plugin/kubernetes: %s watcher: unexpected %s: %s",
                    self.kind, type(exc).__name__, redact(str(exc)),
                )
                self._discard()
                owner.stopping.wait(backoff.next())
        self._discard()


class _Broken(Exception):
    """The watch stream was cut or garbled: resume from the last resourceVersion."""


def _bump(counter: dict[str, int], kind: str) -> None:
    counter[kind] = counter.get(kind, 0) + 1


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}" if str(exc) else text)


def _status_message(body: bytes) -> str:
    try:
        status = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    return _status_text(status)


def _status_text(status: object) -> str:
    if isinstance(status, dict):
        code, reason, msg = status.get("code"), status.get("reason"), status.get("message")
        return " ".join(str(p) for p in (code, reason, msg) if p) or "error"
    return "error"


class ClusterWatcher:
    """Keeps a ClusterSink in step with the API: one list/watch thread per kind."""

    def __init__(
        self,
        options: ApiOptions,
        sink: ClusterSink,
        *,
        connection: ApiConnection | None = None,
        service_account_dir: str | Path = SERVICE_ACCOUNT_DIR,
        watch_timeout: float = 300.0,
        read_timeout_margin: float = 30.0,
        request_timeout: float = 30.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        token_reload_interval: float = TOKEN_RELOAD_INTERVAL,
        page_size: int = PAGE_SIZE,
        rand: Callable[[], float] = random.random,
        trim: Callable[[str, dict[str, Any]], Any] | None = None,
    ) -> None:
        """Resolve the connection now, so a bad kubeconfig/token/CA fails at startup with a
        clear ApiConfigError; nothing talks to the API until start().

        `trim(kind, obj)`, when given, is applied to every listed object as its page arrives,
        so a list of 10,000 objects never holds 10,000 full API dicts at once; `replace` then
        gets what it returns (None drops the object). Watch events are delivered untrimmed.
        """
        self.options = options
        self.sink = sink
        self.trim = trim
        self.connection = connection or connect(
            options,
            service_account_dir=service_account_dir,
            token_reload_interval=token_reload_interval,
        )
        self.timing = _Timing(watch_timeout, read_timeout_margin, request_timeout, page_size)
        self.rand = rand
        self._backoff = (backoff_base, backoff_cap)
        Backoff(backoff_base, backoff_cap)  # validate now rather than in a thread
        self.kinds: tuple[str, ...] = ("Service", "EndpointSlice", "Namespace") + (
            ("Pod",) if options.watch_pods else ()
        )
        self.stats = WatchStats(
            relists={k: 0 for k in self.kinds},
            watch_restarts={k: 0 for k in self.kinds},
            errors={k: 0 for k in self.kinds},
            events={k: 0 for k in self.kinds},
            bad_objects={k: 0 for k in self.kinds},
            synced={k: False for k in self.kinds},
        )
        self.health = _Health(self.stats, self.connection.describe)
        self.stopping = threading.Event()
        self._namespaces = frozenset(options.namespaces)
        self._workers = [_KindWatcher(k, self) for k in self.kinds]

    def new_backoff(self) -> Backoff:
        return Backoff(*self._backoff, rand=self.rand)

    def wanted(self, kind: str, obj: dict[str, Any]) -> bool:
        """The `namespaces` option, applied client-side on one cluster-wide watch per kind."""
        if not self._namespaces:
            return True
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            return True  # a malformed object is the store's to reject, with its name
        ns = meta.get("name") if kind == "Namespace" else meta.get("namespace")
        return ns in self._namespaces

    def deliver(self, kind: str, method: str, *args: Any) -> None:
        """Call the sink; a failing sink is logged, never fatal to the watch."""
        if self.stopping.is_set():
            return
        try:
            getattr(self.sink, method)(kind, *args)
        except Exception as exc:
            log.error(
                "plugin/kubernetes: sink.%s(%s) failed: %s: %s",
                method, kind, type(exc).__name__, exc,
            )

    def start(self) -> None:
        """Start one background thread per kind; returns at once."""
        for w in self._workers:
            w.thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop every thread: wake blocked reads, then join (each within `timeout`)."""
        self.stopping.set()
        for w in self._workers:
            w.interrupt()
        deadline = time.monotonic() + timeout
        for w in self._workers:
            if w.thread.is_alive():
                w.thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def synced(self) -> bool:
        return all(self.stats.synced.values())
