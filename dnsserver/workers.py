"""Several worker processes on one SO_REUSEPORT socket pair, fed by one supervisor.

The supervisor owns what must exist once per server instance: the Kubernetes API watch (one
set of watches, whatever the number of workers), the trimmed cluster state, and the health,
ready and metrics listeners (metrics summed over workers by prometheus_client's multiprocess
mode). Each worker is a spawned process with its own event loop, store replica and fast path:
it gets the whole state at start, then every trimmed change, over a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from multiprocessing.connection import Connection
from typing import Any

from dnsserver.plugin import WORKER_FATAL_EXIT
from dnsserver.server import Server, Settings
from dnsserver.store import KINDS, ClusterStore

log = logging.getLogger("dnsserver")


def default_count() -> int:
    """The CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota (a pod's
    CPU limit), so a pod limited to 2 CPUs on a 64-CPU node runs 2 workers, not 64."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, cpus)


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> int | None:
    """CPUs allowed by the cgroup (v2 `cpu.max`, else v1 `cpu.cfs_quota_us`), rounded up."""
    import math
    from pathlib import Path

    base = Path(root)
    try:
        quota, period = (base / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((base / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((base / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return max(1, math.ceil(quota_us / period_us)) if quota_us > 0 else None


def worker_main(settings: Settings, conn: Connection, metrics_dir: str | None,
                log_level: str) -> None:
    """Entry point of a worker process."""
    from dnsserver.cli import _setup_logging, _use_uvloop

    _setup_logging(log_level)
    os.environ["DNSSERVER_WORKER"] = "1"
    if metrics_dir is not None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    _use_uvloop()
    asyncio.run(_worker(settings, conn, metrics_dir))


async def _worker(settings: Settings, conn: Connection, metrics_dir: str | None) -> None:
    server = Server(dataclasses.replace(settings, snapshot=None, quiet=True), feed=conn,
                    metrics_dir=metrics_dir)
    server.build()
    await server.start()
    server.install_signal_handlers()
    conn.send(("started", os.getpid()))
    await server.serve()


class Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: Any = None
        self.conn: Connection | None = None
        self.started = False


class WorkerPool:
    """Starts the workers, replays the state to each, broadcasts changes, restarts the dead."""

    def __init__(self, settings: Settings, count: int, store: ClusterStore,
                 metrics_dir: str | None, log_level: str, metrics: Any = None) -> None:
        self.settings = settings
        self.store = store
        self.metrics_dir = metrics_dir
        self.log_level = log_level
        self.metrics = metrics
        self.context = multiprocessing.get_context("spawn")
        self.workers = [Worker(i) for i in range(count)]
        self.stopping = False
        self.fatal = asyncio.Event()  # a worker hit a fatal error: stop the server, exit 1
        store.record_listeners.append(self.broadcast)
        store.add_listener(self._serial_moved)

    @property
    def all_started(self) -> bool:
        return all(w.started for w in self.workers)

    def start_all(self) -> None:
        for worker in self.workers:
            self._start(worker)

    def _start(self, worker: Worker) -> None:
        parent_end, child_end = self.context.Pipe()
        worker.process = self.context.Process(
            target=worker_main, name=f"dnsserver-worker-{worker.index}",
            args=(self.settings, child_end, self.metrics_dir, self.log_level), daemon=False)
        worker.process.start()
        child_end.close()
        worker.conn = parent_end
        worker.started = False
        self._replay(worker)
        loop = asyncio.get_running_loop()
        loop.add_reader(parent_end.fileno(), self._on_message, worker)
        if self.metrics is not None:
            self.metrics.add_worker_pid(worker.process.pid)

    def _replay(self, worker: Worker) -> None:
        store = self.store
        send = worker.conn.send  # type: ignore[union-attr]
        send(("required", sorted(store.required_kinds)))
        send(("replace", "Namespace", list(store.namespaces.values())))
        send(("replace", "Service", list(store.services.values())))
        send(("replace", "EndpointSlice", list(store.slices.values())))
        send(("replace", "Pod", list(store.pods.values())))
        for kind in KINDS:
            if kind in store.synced_kinds:
                send(("synced", kind))
        send(("serial", store.serial))
        send(("state-complete",))

    def broadcast(self, *message: Any) -> None:
        for worker in self.workers:
            if worker.conn is not None:
                # A dying worker can't take it; its exit is handled by _on_message.
                with contextlib.suppress(BrokenPipeError, OSError):
                    worker.conn.send(message)

    def _serial_moved(self, _tags: object) -> None:
        self.broadcast("serial", self.store.serial)

    def _on_message(self, worker: Worker) -> None:
        conn = worker.conn
        assert conn is not None
        try:
            while conn.poll():
                message = conn.recv()
                if message[0] == "started":
                    worker.started = True
        except (EOFError, OSError):
            self._exited(worker)

    def _exited(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        if worker.conn is not None:
            loop.remove_reader(worker.conn.fileno())
            worker.conn.close()
            worker.conn = None
        worker.started = False
        process = worker.process
        process.join(timeout=5)
        if self.metrics is not None:
            self.metrics.mark_worker_dead(process.pid)
        if process.exitcode == WORKER_FATAL_EXIT:
            self.fatal.set()
        elif not self.stopping:
            log.error("worker %d (pid %d) exited with %s; starting it again", worker.index,
                      process.pid, process.exitcode)
            self._start(worker)

    def signal_all(self, sig: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, sig)

    async def wait(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        for worker in self.workers:
            while worker.process is not None and worker.process.is_alive():
                if asyncio.get_running_loop().time() > deadline:
                    worker.process.kill()
                    break
                await asyncio.sleep(0.05)


async def supervise(settings: Settings, count: int, log_level: str,
                    hint: str | None = None) -> int:
    """Run `count` workers and everything that exists once per server; return the exit code."""
    # The supervisor answers no query: its copy of the cluster needs the tables, not the indexes.
    server = Server(settings, store=ClusterStore(indexed=False))
    assembly = server.build()
    metrics_dir = None
    if assembly.prometheus is not None:
        from dnsserver import metrics

        metrics_dir = tempfile.mkdtemp(prefix="dnsserver-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        server.metrics = metrics.setup(metrics_dir)
        server.metrics.set_build_info()
        server.metrics.set_reload_version(server.corefile_sha512)
    pool = WorkerPool(settings, count, server.store, metrics_dir, log_level, server.metrics)
    try:
        await server._start_ops(assembly)
        if server.ops is not None:
            server.ops.register_readiness("workers", lambda: pool.all_started)
        await server._start_sources(assembly)
        pool.start_all()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if server.metrics is not None:
            flusher = loop.create_task(server.metrics.run_flusher(1.0))
        # The banner says the server answers: wait (boundedly) until every worker does.
        deadline = loop.time() + 30.0
        while not pool.all_started and not pool.fatal.is_set() and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if not settings.quiet:
            server._print_banner(assembly)
            print(f"workers: {count}", flush=True)
            if hint:
                print(hint, flush=True)
        stopped = loop.create_task(stop.wait())
        fatal = loop.create_task(pool.fatal.wait())
        await asyncio.wait([stopped, fatal], return_when=asyncio.FIRST_COMPLETED)
        if pool.fatal.is_set():
            pool.stopping = True
            pool.signal_all(signal.SIGKILL)
            return 1
        log.info("SIGTERM: Shutting down")
        pool.stopping = True
        if server.ops is not None:
            server.ops.set_lameduck(True)
        pool.signal_all(signal.SIGTERM)  # each worker goes lame duck, drains and stops
        await pool.wait(timeout=assembly.lameduck + 10.0)
        if server.metrics is not None:
            flusher.cancel()
        for watcher in server.watchers:
            await asyncio.to_thread(watcher.stop)
        if server.ops is not None:
            await server.ops.stop()
        return 0
    finally:
        pool.stopping = True
        pool.signal_all(signal.SIGKILL)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
