"""The server's lifecycle: assemble from the Corefile, load or watch the cluster, bind, serve,
swap in a changed Corefile (`reload`) without dropping a query, and on SIGTERM/SIGINT go lame
duck (keep answering), drain what is in flight, and stop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnsserver import __version__, corefile
from dnsserver.assembly import Assembly, assemble
from dnsserver.engine import DEFAULT_FAST_PATH_ENTRIES, QueryEngine
from dnsserver.snapshot import load_objects
from dnsserver.store import KINDS, ClusterStore
from dnsserver.transport import InFlight, Limits, TCPConnection, UDPListener, reuseport_socket

# Directives of ours that CoreDNS does not have (see corefile-compat.md).
EXTENSIONS = ("limits",)

log = logging.getLogger("dnsserver")
reload_log = logging.getLogger("dnsserver.reload")


@dataclass
class Settings:
    """How this process was asked to run (command line), next to what the Corefile says."""

    corefile_text: str
    corefile_name: str = "Corefile"
    dns_port: int | None = None  # -dns.port: the default port of keys that name none
    snapshot: str | None = None  # serve this file instead of the Kubernetes API
    quiet: bool = False
    corefile_path: str | None = None  # re-read by `reload`; None for the built-in Corefile


@dataclass
class Listener:
    """One address the server answers on: its engine and the sockets that feed it."""

    host: str
    port: int
    engine: QueryEngine
    udp: list[UDPListener] = field(default_factory=list)
    transports: list[Any] = field(default_factory=list)
    servers: list[Any] = field(default_factory=list)


class Server:
    """One server instance; or, with `feed`, one worker process fed by its supervisor
    (`dnsserver.workers`), which then owns the API watch and the ops listeners."""

    def __init__(self, settings: Settings, store: ClusterStore | None = None,
                 feed: Any = None, metrics_dir: str | None = None) -> None:
        self.settings = settings
        self.feed = feed
        self.metrics_dir = metrics_dir
        self.store = store or ClusterStore()
        self.assembly: Assembly | None = None
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.inflight = InFlight()
        self.limits = Limits()
        self.tcp_connections: set[TCPConnection] = set()
        self.watchers: list[Any] = []
        self.bound: list[tuple[str, str, int]] = []  # (proto, host, port) actually bound
        self._stop = asyncio.Event()
        self.metrics: Any = None
        self.ops: Any = None
        self._background: list[asyncio.Task[Any]] = []
        self._plugin_metrics: Any = None
        self.assembly_limits: dict[str, float] = {}
        self._published_rejections: dict[str, int] = {}
        self.corefile_sha512 = hashlib.sha512(settings.corefile_text.encode()).hexdigest()

    # -- build and start ----------------------------------------------------------------------

    def _assemble(self, text: str) -> Assembly:
        default_port = self.settings.dns_port or 53
        parsed = corefile.parse(text, self.settings.corefile_name, default_port=default_port,
                                known=(*corefile.PLUGIN_ORDER, *EXTENSIONS))
        for warning in parsed.warnings:
            log.warning("%s", warning)
        return assemble(parsed, self.store)

    def build(self) -> Assembly:
        self.assembly = self._assemble(self.settings.corefile_text)
        return self.assembly

    async def start(self) -> None:
        assembly = self.assembly or self.build()
        if assembly.prometheus is not None:
            from dnsserver import metrics

            if self.feed is not None:
                self.metrics = metrics.setup(self.metrics_dir, worker=True)
            else:
                self.metrics = metrics.setup()
                self.metrics.set_build_info()
                self.metrics.set_reload_version(self.corefile_sha512)
        if self.feed is None:
            await self._start_ops(assembly)
        await self._start_sources(assembly)
        await self._apply(assembly)
        if self.metrics is not None:
            self.metrics.add_flush_hook(self._publish_limits)
            self._spawn(self.metrics.run_flusher(1.0))
        if assembly.reload is not None and self.settings.corefile_path is not None:
            self._spawn(self._reload_loop(*assembly.reload))
        if not self.settings.quiet:
            self._print_banner(assembly)

    def _print_banner(self, assembly: Assembly) -> None:
        for (host, port), blocks in assembly.listeners.items():
            for block in blocks:
                for zone in block.zones:
                    print(f"{zone}:{port}" + (f" on {host}" if host else ""), flush=True)
        print(f"dnsserver-{__version__}", flush=True)
        print(f"{sys.platform}/{_machine()}, python {sys.version.split()[0]}", flush=True)

    def _spawn(self, coro: Any) -> None:
        self._background.append(asyncio.get_running_loop().create_task(coro))

    def _new_engine(self, host: str, port: int, blocks: list[Any]) -> QueryEngine:
        m = self.metrics
        qc = m.new_query_counts() if m is not None else None
        label = f"dns://{host}:{port}"
        entries = int(self.assembly_limits.get("fast_path_entries", DEFAULT_FAST_PATH_ENTRIES))
        engine = QueryEngine(blocks, self.store, fast_path_entries=entries,
                             on_error=self._plugin_error, server_label=label, query_counts=qc)
        if m is not None:
            m.add_flush_hook(engine.flush_hits)
            if self._plugin_metrics is None:
                from dnsserver.plugin_metrics import PluginMetrics

                self._plugin_metrics = PluginMetrics(m)
                m.add_flush_hook(self._plugin_metrics)
            for block in blocks:
                for plugin in block.plugins:
                    self._plugin_metrics.add(label, plugin)
                    for zone in block.zones:
                        m.set_plugin_enabled(label, zone, plugin.name)
        return engine

    def _retire(self, engine: QueryEngine) -> None:
        """Leave no trace of an engine a reload replaced: its hits counted, its kept answers
        and its store listener gone."""
        if self.metrics is not None:
            engine.flush_hits()
            self.metrics.remove_flush_hook(engine.flush_hits)
        engine.fast.close()

    async def _apply(self, assembly: Assembly) -> None:
        """Make the listeners serve `assembly`: new engines swapped into open sockets, new
        addresses bound, addresses no longer configured closed. Plugins of the new assembly
        start before it serves."""
        for plugin in assembly.plugins:
            await plugin.start()
        self.assembly_limits = assembly.limits
        for name, value in assembly.limits.items():
            if hasattr(self.limits, name):
                setattr(self.limits, name, value)
        wanted = set(assembly.listeners)
        for key, blocks in assembly.listeners.items():
            host, port = key
            engine = self._new_engine(host, port, blocks)
            assembly.lookups[port] = engine.lookup
            current = self.listeners.get(key)
            if current is None:
                self.listeners[key] = await self._listen(host, port, engine)
                continue
            self._retire(current.engine)
            current.engine = engine
            for proto in current.udp:
                proto.set_engine(engine)
            for conn in self.tcp_connections:
                if conn.listener is current:
                    conn.engine = engine
        for key in [k for k in self.listeners if k not in wanted]:
            self._close_listener(self.listeners.pop(key))
        self.assembly = assembly

    def _publish_limits(self) -> None:
        m = self.metrics
        limits = self.limits
        in_use = {
            "tcp_connections": len(self.tcp_connections),
            "udp_in_flight": len(self.inflight.tasks),
            "fast_path_entries": sum(len(ls.engine.fast) for ls in self.listeners.values()),
        }
        fast_max = self.assembly_limits.get("fast_path_entries", DEFAULT_FAST_PATH_ENTRIES)
        values = {"tcp_connections": limits.tcp_connections,
                  "tcp_queries_in_flight": limits.tcp_queries_in_flight,
                  "udp_in_flight": limits.udp_in_flight, "fast_path_entries": fast_max,
                  "tcp_idle_timeout": limits.tcp_idle_timeout,
                  "tcp_read_timeout": limits.tcp_read_timeout}
        for name, value in values.items():
            m.child(m.limit_value, (name,)).set(value)
        for name, value in in_use.items():
            m.child(m.limit_in_use, (name,)).set(value)
        seen = self._published_rejections
        for name, count in limits.rejections.items():
            if count > seen.get(name, 0):
                m.child(m.limit_rejections, (name,)).inc(count - seen.get(name, 0))
                seen[name] = count

    async def _start_ops(self, assembly: Assembly) -> None:
        if assembly.health is None and assembly.ready is None and assembly.prometheus is None:
            return
        from dnsserver.opshttp import OpsServer

        m = self.metrics
        self.ops = OpsServer(assembly.health, assembly.ready, assembly.prometheus,
                             registry=m.registry if m is not None else None,
                             health_observer=m.observe_health if m is not None else None)
        if m is not None:
            self.ops.add_flush_hook(m.flush)
        if assembly.kubernetes:
            self.ops.register_readiness("kubernetes", lambda: self.store.synced)
        await self.ops.start()

    async def _listen(self, host: str, port: int, engine: QueryEngine) -> Listener:
        loop = asyncio.get_running_loop()
        listener = Listener(host, port, engine)
        hosts = [host] if host else ["0.0.0.0", "::"]
        for h in hosts:
            try:
                udp = reuseport_socket(h, port, socket.SOCK_DGRAM)
            except OSError as exc:
                if not host and h == "::":
                    continue  # no IPv6 on this machine: serve IPv4 only
                raise OSError(f"listen udp {h}:{port}: {exc.strerror}") from exc
            transport, proto = await loop.create_datagram_endpoint(
                lambda: UDPListener(listener.engine, self.inflight, self.limits), sock=udp)
            listener.udp.append(proto)
            listener.transports.append(transport)
            try:
                tcp = reuseport_socket(h, port, socket.SOCK_STREAM)
            except OSError as exc:
                raise OSError(f"listen tcp {h}:{port}: {exc.strerror}") from exc
            server = await loop.create_server(
                lambda: TCPConnection(listener.engine, self.inflight, self.limits,
                                      self.tcp_connections, listener), sock=tcp)
            listener.servers.append(server)
            self.bound.append(("udp", h, udp.getsockname()[1]))
            self.bound.append(("tcp", h, tcp.getsockname()[1]))
        return listener

    def _close_listener(self, listener: Listener) -> None:
        for server in listener.servers:
            server.close()
        for transport in listener.transports:
            transport.close()
        for conn in [c for c in self.tcp_connections if c.listener is listener]:
            conn.close()

    async def _start_sources(self, assembly: Assembly) -> None:
        if self.feed is not None:
            self._start_feed()
            return
        if self.settings.snapshot is not None or not assembly.kubernetes:
            if self.settings.snapshot is not None:
                self.store.load(load_objects(self.settings.snapshot))
            else:
                for kind in KINDS:
                    self.store.mark_synced(kind)
            return
        from dnsserver.k8s_source import start_watchers

        self.watchers = await start_watchers(assembly, self.store, self.metrics)

    def _start_feed(self) -> None:
        """A worker's cluster state: what the supervisor replays, then every change it sees."""
        feed = self.feed
        while True:  # the initial state, up to the marker, before the sockets open
            message = feed.recv()
            if message[0] == "state-complete":
                break
            self._apply_feed(message)
        asyncio.get_running_loop().add_reader(feed.fileno(), self._on_feed)

    def _on_feed(self) -> None:
        try:
            while self.feed.poll():
                self._apply_feed(self.feed.recv())
        except (EOFError, OSError):
            # The supervisor is gone: nobody will tell us about changes any more.
            asyncio.get_running_loop().remove_reader(self.feed.fileno())
            log.error("worker: lost the supervisor, stopping")
            self.request_stop()

    def _apply_feed(self, message: tuple[Any, ...]) -> None:
        op = message[0]
        store = self.store
        if op == "apply":
            store.apply_record(message[1], message[2], message[3])
        elif op == "replace":
            store.replace_records(message[1], message[2])
        elif op == "synced":
            store.mark_synced(message[1])
        elif op == "required":
            store.required_kinds = set(message[1])
        elif op == "serial":
            store.follow(message[1])

    def _plugin_error(self, req: Any, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.panics.inc()
        log.error("plugin/errors: 2 %s %s: %s", req.qname.lower(),
                  _qtype_name(req.qtype), exc, exc_info=exc)

    # -- reload -------------------------------------------------------------------------------

    async def _reload_loop(self, interval: float, jitter: float) -> None:
        path = Path(self.settings.corefile_path or "")
        reload_log.info("plugin/reload: Running configuration SHA512 = %s", self.corefile_sha512)
        while True:
            await asyncio.sleep(interval + random.uniform(-jitter, jitter))
            await self.reload_from(path)

    async def reload_from(self, path: Path) -> bool:
        """Swap in the Corefile at `path` if it changed; keep the running one if it is bad."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            self._reload_failed(f"cannot read {path}: {exc.strerror}")
            return False
        digest = hashlib.sha512(text.encode()).hexdigest()
        if digest == self.corefile_sha512:
            return False
        try:
            assembly = self._assemble(text)
            if self._needs_restart(assembly):
                raise corefile.CorefileError(
                    "the new Corefile changes the Kubernetes API connection or the health, "
                    "ready or prometheus listeners: restart the server to apply it")
        except corefile.CorefileError as exc:
            self._reload_failed(str(exc))
            self.corefile_sha512 = digest  # don't log the same failure every interval
            return False
        log.info("Reloading")
        old = self.assembly
        await self._apply(assembly)
        if old is not None:
            for plugin in old.plugins:
                await plugin.stop()
        self.corefile_sha512 = digest
        if self.metrics is not None:
            self.metrics.set_reload_version(digest)
        reload_log.info("plugin/reload: Running configuration SHA512 = %s", digest)
        log.info("Reloading complete")
        return True

    def _reload_failed(self, reason: str) -> None:
        reload_log.error("plugin/reload: Corefile changed but reload failed: %s", reason)
        if self.metrics is not None:
            self.metrics.reload_failed.inc()

    def _needs_restart(self, new: Assembly) -> bool:
        old = self.assembly
        if old is None:
            return False
        ops = (old.health, old.ready, old.prometheus) != (new.health, new.ready, new.prometheus)
        old_api = old.kubernetes[0].config.api if old.kubernetes else None
        new_api = new.kubernetes[0].config.api if new.kubernetes else None
        api = self.settings.snapshot is None and old_api != new_api
        return ops or api

    # -- run and stop -------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s: Shutting down", sig.name)
        self.request_stop()

    async def serve(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        assembly = self.assembly
        lameduck = assembly.lameduck if assembly is not None else 0.0
        if self.ops is not None:
            self.ops.set_lameduck(True)
        if lameduck > 0:
            # Lame duck: keep answering while the endpoints controller takes us out of rotation.
            log.info("plugin/health: Going into lameduck mode for %ss", lameduck)
            await asyncio.sleep(lameduck)
        for listener in self.listeners.values():
            for server in listener.servers:
                server.close()
        await self.inflight.drain(timeout=5.0)
        for listener in self.listeners.values():
            self._close_listener(listener)
        for watcher in self.watchers:
            await asyncio.to_thread(watcher.stop)
        if assembly is not None:
            for plugin in assembly.plugins:
                await plugin.stop()
        for task in self._background:
            task.cancel()
        if self.ops is not None:
            await self.ops.stop()


def _machine() -> str:
    import platform

    return platform.machine()


def _qtype_name(qtype: int) -> str:
    from dnslib import QTYPE

    return str(QTYPE.get(qtype, qtype))
