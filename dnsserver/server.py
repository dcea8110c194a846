"""The server's lifecycle: assemble from the Corefile, load or watch the cluster, bind, serve,
and on SIGTERM/SIGINT go lame duck (keep answering), drain what is in flight, and stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from dnsserver import __version__, corefile
from dnsserver.assembly import Assembly, assemble
from dnsserver.engine import QueryEngine
from dnsserver.snapshot import load_objects
from dnsserver.store import KINDS, ClusterStore
from dnsserver.transport import InFlight, Limits, TCPConnection, UDPListener, reuseport_socket

log = logging.getLogger("dnsserver")


@dataclass
class Settings:
    """How this process was asked to run (command line), next to what the Corefile says."""

    corefile_text: str
    corefile_name: str = "Corefile"
    dns_port: int | None = None  # -dns.port: the default port of keys that name none
    snapshot: str | None = None  # serve this file instead of the Kubernetes API
    quiet: bool = False


class Server:
    def __init__(self, settings: Settings, store: ClusterStore | None = None) -> None:
        self.settings = settings
        self.store = store or ClusterStore()
        self.assembly: Assembly | None = None
        self.engines: dict[int, QueryEngine] = {}
        self.inflight = InFlight()
        self.limits = Limits()
        self.transports: list[Any] = []
        self.servers: list[asyncio.base_events.Server] = []
        self.tcp_connections: set[TCPConnection] = set()
        self.watchers: list[Any] = []
        self.bound: list[tuple[str, str, int]] = []  # (proto, host, port) actually bound
        self._stop = asyncio.Event()
        self.started_at = time.monotonic()
        self.metrics: Any = None
        self.ops: Any = None
        self._background: list[asyncio.Task[Any]] = []

    # -- start --------------------------------------------------------------------------------

    def build(self) -> Assembly:
        default_port = self.settings.dns_port or 53
        parsed = corefile.parse(self.settings.corefile_text, self.settings.corefile_name,
                                default_port=default_port)
        self.assembly = assemble(parsed, self.store)
        return self.assembly

    async def start(self) -> None:
        assembly = self.assembly or self.build()
        if assembly.prometheus is not None:
            from dnsserver import metrics

            self.metrics = metrics.setup()
            self.metrics.set_build_info()
        await self._start_ops(assembly)
        await self._start_sources(assembly)
        for (host, port), blocks in assembly.listeners.items():
            engine = self.engines.get(port)
            if engine is None:
                qc = self.metrics.new_query_counts() if self.metrics is not None else None
                engine = QueryEngine(blocks, self.store, on_error=self._plugin_error,
                                     server_label=f"dns://:{port}", query_counts=qc)
                if self.metrics is not None:
                    self.metrics.add_flush_hook(engine.flush_hits)
                    for block in blocks:
                        for zone in block.zones:
                            for plugin in block.plugins:
                                self.metrics.set_plugin_enabled(f"dns://:{port}", zone,
                                                                plugin.name)
            self.engines[port] = engine
            assembly.lookups[port] = engine.lookup
            await self._listen(host, port, engine)
        for plugin in assembly.plugins:
            await plugin.start()
        if self.metrics is not None:
            self._background.append(asyncio.get_running_loop().create_task(
                self.metrics.run_flusher(1.0)))
        if not self.settings.quiet:
            for (host, port), blocks in assembly.listeners.items():
                for block in blocks:
                    for zone in block.zones:
                        print(f"{zone}:{port}" + (f" on {host}" if host else ""), flush=True)
            print(f"dnsserver-{__version__}", flush=True)
            print(f"{sys.platform}/{_machine()}, python {sys.version.split()[0]}", flush=True)

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

    async def _listen(self, host: str, port: int, engine: QueryEngine) -> None:
        loop = asyncio.get_running_loop()
        hosts = [host] if host else ["0.0.0.0", "::"]
        for h in hosts:
            try:
                udp = reuseport_socket(h, port, socket.SOCK_DGRAM)
            except OSError as exc:
                if not host and h == "::":
                    continue  # no IPv6 on this machine: serve IPv4 only
                raise OSError(f"listen udp {h}:{port}: {exc.strerror}") from exc
            transport, _ = await loop.create_datagram_endpoint(
                lambda e=engine: UDPListener(e, self.inflight, self.limits), sock=udp)
            self.transports.append(transport)
            tcp = reuseport_socket(h, port, socket.SOCK_STREAM)
            server = await loop.create_server(
                lambda e=engine: TCPConnection(e, self.inflight, self.limits,
                                               self.tcp_connections), sock=tcp)
            self.servers.append(server)
            self.bound.append(("udp", h, udp.getsockname()[1]))
            self.bound.append(("tcp", h, tcp.getsockname()[1]))

    async def _start_sources(self, assembly: Assembly) -> None:
        if self.settings.snapshot is not None or not assembly.kubernetes:
            if self.settings.snapshot is not None:
                self.store.load(load_objects(self.settings.snapshot))
            else:
                for kind in KINDS:
                    self.store.mark_synced(kind)
            return
        from dnsserver.k8s_source import start_watchers

        self.watchers = await start_watchers(assembly, self.store, self.metrics)

    def _plugin_error(self, req: Any, exc: BaseException) -> None:
        log.error("plugin/errors: 2 %s %s: %s", req.qname,
                  _qtype_name(req.qtype), exc, exc_info=exc)

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
        for server in self.servers:
            server.close()
        await self.inflight.drain(timeout=5.0)
        for transport in self.transports:
            transport.close()
        for conn in list(self.tcp_connections):
            conn.close()
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
