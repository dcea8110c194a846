"""Several worker processes on one SO_REUSEPORT socket pair, fed by one supervisor.

The supervisor owns what must exist once per server instance: the Kubernetes API watch (one
set of watches, whatever the number of workers), the trimmed cluster state, and the health,
ready and metrics listeners (metrics summed over workers by prometheus_client's multiprocess
mode). Each worker is a spawned process with its own event loop, store replica and fast path:
it gets the whole state at start, then every trimmed change, over a socket whose supervisor end
never blocks: a worker that falls too far behind is replaced, one that crashes is restarted
with backoff, and one that cannot start stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import multiprocessing
import os
import pickle
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnsserver.corefile import CorefileError
from dnsserver.plugin import WORKER_FATAL_EXIT
from dnsserver.runtime import setup_logging, use_uvloop
from dnsserver.server import Server, Settings
from dnsserver.store import KINDS, ClusterStore
from dnsserver.transport import reuseport_socket

log = logging.getLogger("dnsserver")

# Messages a worker may leave unread before it is replaced: at 200 endpoint changes a second
# (two messages each) about 12 s of falling behind; a change is a few hundred bytes to a few KB,
# so the queue the supervisor holds for a stuck worker stays in the low MB.
DEFAULT_BACKLOG = 5000
# A worker that crashes after it served is started again after 0.1 s, 0.2 s, 0.4 s, ... up to
# 5 s; more than CRASH_LIMIT restarts within CRASH_WINDOW seconds stop the server (exit 1), so
# that the kubelet's own restart backoff takes over instead of a loop inside the pod.
RESTART_FIRST_DELAY = 0.1
RESTART_MAX_DELAY = 5.0
CRASH_LIMIT = 5
CRASH_WINDOW = 60.0

_LENGTH = struct.Struct("!Q")  # each message on a feed socket: its length, then its pickle
_READ_SIZE = 256 * 1024


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


# -- the feed: framed messages over a socket pair ---------------------------------------------


def encode(message: tuple[Any, ...]) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Bytes in, whole messages out."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def ready(self) -> bool:
        if len(self.buffer) < _LENGTH.size:
            return False
        return len(self.buffer) >= _LENGTH.size + _LENGTH.unpack_from(self.buffer)[0]

    def take(self) -> Any:
        """The next whole message; call only when `ready()`."""
        end = _LENGTH.size + _LENGTH.unpack_from(self.buffer)[0]
        with memoryview(self.buffer) as view:  # released before the buffer shrinks
            message = pickle.loads(view[_LENGTH.size:end])
        del self.buffer[:end]
        return message


class FeedReader:
    """A worker's end of its feed, as `Server` reads it (`fileno`, `poll`, `recv`), plus `send`
    for the few words a worker says to the supervisor."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.decoder = FrameDecoder()
        self.scratch = bytearray(_READ_SIZE)
        self.eof = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def _read(self) -> None:
        try:
            n = self.sock.recv_into(self.scratch)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset: the supervisor is gone
            n = 0
        if n == 0:
            self.eof = True
        else:
            self.decoder.buffer += memoryview(self.scratch)[:n]

    def poll(self) -> bool:
        """Whether a whole message is here, reading what the socket has without waiting (a
        message the supervisor has only half written must not stall the worker's queries);
        EOFError once the supervisor is gone and nothing whole is left."""
        if self.decoder.ready():
            return True
        if not self.eof:
            self._read()
        if self.decoder.ready():
            return True
        if self.eof:
            raise EOFError("the supervisor closed the feed")
        return False

    def recv(self) -> Any:
        """The next message, waiting for it (the initial state, before the worker serves)."""
        while not self.decoder.ready():
            if self.eof:
                raise EOFError("the supervisor closed the feed")
            select.select([self.sock], [], [])
            self._read()
        return self.decoder.take()

    def send(self, message: tuple[Any, ...]) -> None:
        data = memoryview(encode(message))
        while data:
            try:
                data = data[self.sock.send(data):]
            except (BlockingIOError, InterruptedError):
                select.select([], [self.sock], [])


class FeedChannel:
    """The supervisor's end of one worker's feed. Messages go out as the socket takes them and
    queue here (never blocking the supervisor) while the worker does not read; `backlog` says
    how many wait. Messages from the worker go to `on_message`."""

    def __init__(self, sock: socket.socket, on_message: Callable[[Any], None]) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.on_message = on_message
        self.queue: deque[bytes] = deque()
        self.sent = 0  # bytes of queue[0] already written
        self.writing = False
        self.closed = False
        self.decoder = FrameDecoder()
        self.loop.add_reader(sock.fileno(), self._readable)

    @property
    def backlog(self) -> int:
        return len(self.queue)

    def put(self, frame: bytes) -> None:
        if self.closed:
            return
        self.queue.append(frame)
        if not self.writing:
            self._write()

    def _write(self) -> None:
        try:
            while self.queue:
                head = self.queue[0]
                self.sent += self.sock.send(memoryview(head)[self.sent:])
                if self.sent == len(head):
                    self.queue.popleft()
                    self.sent = 0
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            # The worker is gone; its process sentinel reports the exit.
            self.close()
            return
        if self.queue and not self.writing:
            self.loop.add_writer(self.sock.fileno(), self._write)
            self.writing = True
        elif not self.queue and self.writing:
            self.loop.remove_writer(self.sock.fileno())
            self.writing = False

    def _readable(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            # The worker closed its end (it is exiting); stop watching the socket.
            self.loop.remove_reader(self.sock.fileno())
            return
        self.decoder.buffer += data
        while not self.closed and self.decoder.ready():
            self.on_message(self.decoder.take())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.sock.fileno())
        if self.writing:
            self.loop.remove_writer(self.sock.fileno())
            self.writing = False
        self.queue.clear()
        self.sock.close()


# -- a worker process ---------------------------------------------------------------------------


def worker_main(settings: Settings, sock: socket.socket, metrics_dir: str | None,
                log_level: str) -> None:
    """Entry point of a worker process."""
    setup_logging(log_level)
    os.environ["DNSSERVER_WORKER"] = "1"
    if metrics_dir is not None:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    use_uvloop()
    try:
        code = asyncio.run(_worker(settings, FeedReader(sock), metrics_dir))
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the supervisor stops
        code = 0
    sys.exit(code)


async def _worker(settings: Settings, feed: FeedReader, metrics_dir: str | None) -> int:
    server = Server(dataclasses.replace(settings, snapshot=None, quiet=True), feed=feed,
                    metrics_dir=metrics_dir)
    # A stop asked for while starting takes effect once the sockets are open, through the lame
    # duck: the kernel may have given this worker queries already, and they get answers.
    stop_asked: list[signal.Signals] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_asked.append, sig)
    try:
        server.build()
        await server.start()
    except Exception as exc:
        # The supervisor stops the whole server with this message, as one process would.
        if not isinstance(exc, (OSError, EOFError, CorefileError)):
            log.exception("worker: start-up failed")
        with contextlib.suppress(OSError):
            feed.send(("failed", str(exc) or type(exc).__name__))
        return 1
    server.install_signal_handlers()
    if stop_asked:
        log.info("%s: Shutting down", stop_asked[0].name)
        server.request_stop()
    feed.send(("started", os.getpid()))
    await server.serve()
    return 0


# -- the supervisor's side ----------------------------------------------------------------------


def check_dns_addresses(listeners: Any) -> None:
    """Bind each DNS address once, as every worker will, and let go: a port that another
    program holds fails here in milliseconds, with the message one process would give, rather
    than after N workers were spawned to find it out. (A worker's own bind error still stops
    the server: this only makes the common case quick.)"""
    for host, port in listeners:
        if port == 0:
            continue  # each worker gets a port of its own: nothing to check
        for h in [host] if host else ["0.0.0.0", "::"]:
            for kind, proto in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
                try:
                    reuseport_socket(h, port, kind).close()
                except OSError as exc:
                    if not host and h == "::":
                        break  # no IPv6 on this machine: the workers serve IPv4 only
                    raise OSError(f"listen {proto} {h}:{port}: {exc.strerror}") from exc


def exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


@dataclasses.dataclass
class Worker:
    index: int
    process: Any = None
    channel: FeedChannel | None = None
    serving: bool = False  # said "started": its sockets are bound and it answers
    failure: str | None = None  # why its start-up failed, in its own words
    replacing: bool = False  # killed for falling behind: start the next one at once
    restart: asyncio.TimerHandle | None = None  # a restart waiting out its backoff


class WorkerMetrics:
    """dnsserver_worker_restarts_total{reason} and dnsserver_workers_serving, written by the
    supervisor into the multiprocess directory that its /metrics sums."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self.restarts = Counter(
            "worker_restarts", "Worker processes started again, by why: crashed (exited after "
            "it served) or fell_behind (replaced: too many unread changes).", ["reason"],
            namespace="dnsserver", registry=None)
        self.serving = Gauge("workers_serving", "Worker processes answering DNS now.",
                             namespace="dnsserver", registry=None, multiprocess_mode="livesum")


class WorkerPool:
    """Starts the workers, replays the state to each, broadcasts changes, restarts the dead."""

    def __init__(self, settings: Settings, count: int, store: ClusterStore,
                 metrics_dir: str | None, log_level: str, metrics: Any = None,
                 backlog: int = DEFAULT_BACKLOG) -> None:
        self.settings = settings
        self.store = store
        self.metrics_dir = metrics_dir
        self.log_level = log_level
        self.metrics = metrics
        self.worker_metrics = WorkerMetrics() if metrics is not None else None
        self.backlog = backlog
        self.context = multiprocessing.get_context("spawn")
        self.workers = [Worker(i) for i in range(count)]
        self.stopping = False
        self.up = asyncio.Event()  # every worker has served: the server is up
        self.failed = asyncio.Event()  # the server must stop with status 1
        self.failure: str | None = None  # why, unless the worker already logged it
        self.exited = asyncio.Event()  # while stopping: every worker process has gone
        self.restarts: deque[float] = deque()  # when workers were started again, recent first
        self.on_none_serving: Callable[[], None] | None = None
        store.record_listeners.append(self.broadcast)
        store.add_listener(self._serial_moved)

    @property
    def serving(self) -> int:
        return sum(w.serving for w in self.workers)

    def answering(self) -> bool:
        """Some worker answers DNS (the kernel gives a dead worker's share to the others)."""
        return self.serving > 0

    def start_all(self) -> None:
        for worker in self.workers:
            self._start(worker)

    def _start(self, worker: Worker) -> None:
        worker.restart = None
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        supervisor_end, worker_end = socket.socketpair()
        try:
            process = self.context.Process(
                target=worker_main, name=f"dnsserver-worker-{worker.index}",
                args=(self.settings, worker_end, self.metrics_dir, self.log_level), daemon=False)
            process.start()
        except OSError as exc:
            supervisor_end.close()
            self._fail(f"cannot start worker {worker.index}: {exc}")
            return
        finally:
            worker_end.close()
        worker.process = process
        worker.serving = False
        worker.failure = None
        worker.replacing = False
        worker.channel = FeedChannel(supervisor_end,
                                     lambda message: self._on_message(worker, message))
        loop.add_reader(process.sentinel, self._on_exit, worker)
        self._replay(worker)
        if self.metrics is not None:
            self.metrics.add_worker_pid(process.pid)

    def _replay(self, worker: Worker) -> None:
        store = self.store
        assert worker.channel is not None
        send = worker.channel.put
        send(encode(("required", sorted(store.required_kinds))))
        send(encode(("replace", "Namespace", list(store.namespaces.values()))))
        send(encode(("replace", "Service", list(store.services.values()))))
        send(encode(("replace", "EndpointSlice", list(store.slices.values()))))
        send(encode(("replace", "Pod", list(store.pods.values()))))
        for kind in KINDS:
            if kind in store.synced_kinds:
                send(encode(("synced", kind)))
        send(encode(("serial", store.serial)))
        send(encode(("state-complete",)))

    def broadcast(self, *message: Any) -> None:
        frame = encode(message)  # once, whatever the number of workers
        for worker in self.workers:
            channel = worker.channel
            if channel is None:
                continue  # not running: it gets the whole state when it starts
            channel.put(frame)
            if channel.backlog > self.backlog:
                self._replace(worker)

    def _serial_moved(self, _tags: object) -> None:
        self.broadcast("serial", self.store.serial)

    def _replace(self, worker: Worker) -> None:
        """A worker that does not read its feed (stopped, wedged) would hold an ever longer
        queue and answer from an ever older cluster: kill it, start a fresh one."""
        assert worker.channel is not None
        log.error("worker %d (pid %d) fell %d messages behind the cluster state; replacing it",
                  worker.index, worker.process.pid, worker.channel.backlog)
        if self.worker_metrics is not None:
            self.worker_metrics.restarts.labels("fell_behind").inc()
        worker.replacing = True
        worker.channel.close()  # drop its queue now; the replacement gets the whole state
        worker.channel = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.process.pid, signal.SIGKILL)

    def _on_message(self, worker: Worker, message: Any) -> None:
        if message[0] == "started":
            worker.serving = True
            if self.up.is_set():
                log.info("worker %d (pid %d) is serving again", worker.index, worker.process.pid)
            self._serving_changed()
            if all(w.serving for w in self.workers):
                self.up.set()
        elif message[0] == "failed":
            worker.failure = message[1]

    def _serving_changed(self) -> None:
        if self.worker_metrics is not None:
            self.worker_metrics.serving.set(self.serving)
        if self.serving == 0 and self.on_none_serving is not None:
            self.on_none_serving()

    def _on_exit(self, worker: Worker) -> None:
        process = worker.process
        asyncio.get_running_loop().remove_reader(process.sentinel)
        process.join()  # the sentinel says it has exited: this only reaps it
        if worker.channel is not None:
            worker.channel.close()
            worker.channel = None
        served = worker.serving
        worker.serving = False
        if self.metrics is not None:
            self.metrics.mark_worker_dead(process.pid)
        self._serving_changed()
        if self.stopping:
            if all(w.process is None or w.process.exitcode is not None for w in self.workers):
                self.exited.set()
            return
        code = process.exitcode
        if code == WORKER_FATAL_EXIT:
            self._fail(None)  # the worker logged why (a forwarding loop)
        elif worker.failure is not None:
            self._fail(worker.failure)
        elif worker.replacing:
            self._count_restart(f"worker {worker.index} fell behind")
            self._start(worker)
        elif not served:
            self._fail(f"worker {worker.index} (pid {process.pid}) exited with "
                       f"{exit_text(code)} before it served")
        else:
            self._crashed(worker, code)

    def _count_restart(self, what: str) -> bool:
        """Note a restart; False (and the server stops) when there were too many lately."""
        now = asyncio.get_running_loop().time()
        self.restarts.append(now)
        while self.restarts and self.restarts[0] < now - CRASH_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) > CRASH_LIMIT:
            self._fail(f"{what}: {len(self.restarts)} worker restarts within "
                       f"{CRASH_WINDOW:g}s, stopping")
            return False
        return True

    def _crashed(self, worker: Worker, code: int | None) -> None:
        what = f"worker {worker.index} (pid {worker.process.pid}) exited with {exit_text(code)}"
        if not self._count_restart(what):
            return
        delay = min(RESTART_MAX_DELAY, RESTART_FIRST_DELAY * 2 ** (len(self.restarts) - 1))
        log.error("%s; starting it again in %gs", what, delay)
        if self.worker_metrics is not None:
            self.worker_metrics.restarts.labels("crashed").inc()
        worker.restart = asyncio.get_running_loop().call_later(delay, self._start, worker)

    def _fail(self, message: str | None) -> None:
        if not self.failed.is_set():
            self.failure = message
            self.failed.set()

    def stop(self, sig: int) -> None:
        """No more restarts; send `sig` to every worker still running."""
        self.stopping = True
        for worker in self.workers:
            if worker.restart is not None:
                worker.restart.cancel()
                worker.restart = None
        running = [w.process for w in self.workers
                   if w.process is not None and w.process.exitcode is None]
        if not running:
            self.exited.set()
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)

    async def wait_exited(self, timeout: float) -> None:
        """Wait for the workers `stop` signalled; kill those still there after `timeout`."""
        try:
            await asyncio.wait_for(self.exited.wait(), timeout)
        except TimeoutError:
            self.kill_all()

    def kill_all(self) -> None:
        self.stopping = True
        for worker in self.workers:
            if worker.restart is not None:
                worker.restart.cancel()
            process = worker.process
            if process is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.join(timeout=5)  # SIGKILL is not refused, not even by a stopped process


class Supervisor:
    """The process that runs the workers: start-up, serving, and stopping on a signal or when
    the workers cannot go on. Signals count from the first moment: SIGTERM while the API sync
    is awaited stops the server at once (no worker runs yet), and once workers run, after
    their lame duck; a restart waiting out its backoff is called off."""

    def __init__(self, settings: Settings, count: int, log_level: str, hint: str | None,
                 backlog: int) -> None:
        self.settings = settings
        self.count = count
        self.hint = hint
        self.stop = asyncio.Event()
        # The supervisor answers no query: its copy of the cluster needs the tables, not the
        # indexes.
        self.server = server = Server(settings, store=ClusterStore(indexed=False))
        self.assembly = server.build()
        self.metrics_dir: str | None = None
        if self.assembly.prometheus is not None:
            from dnsserver import metrics

            self.metrics_dir = tempfile.mkdtemp(prefix="dnsserver-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
            server.metrics = metrics.setup(self.metrics_dir)
            server.metrics.set_build_info()
            server.metrics.set_reload_version(server.corefile_sha512)
        self.pool = WorkerPool(settings, count, server.store, self.metrics_dir, log_level,
                               server.metrics, backlog)
        self.flusher: asyncio.Task[None] | None = None

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s: Shutting down", sig.name)
        self.stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        pool = self.pool
        try:
            starting = loop.create_task(self._start_up())
            await _first(starting, self.stop.wait(), pool.failed.wait())
            if starting.done():
                starting.result()  # re-raise a start-up error: an ops address in use, say
                await _first(self.stop.wait(), pool.failed.wait())
            else:
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
            if pool.failed.is_set() and not self.stop.is_set():
                if pool.failure is not None:
                    print(f"dnsserver: {pool.failure}", file=sys.stderr, flush=True)
                pool.kill_all()
                await self._stop_rest()
                return 1
            await self._shut_down(self.assembly.lameduck)
            return 0
        finally:
            pool.kill_all()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def _start_up(self) -> None:
        server, pool, assembly = self.server, self.pool, self.assembly
        check_dns_addresses(assembly.listeners)
        await server._start_sources(assembly)  # the API watch, and CoreDNS's wait for its sync
        pool.start_all()
        await pool.up.wait()
        # Health, ready and metrics listen once every worker answers: before that the server
        # does not answer DNS, and /health must not say it does.
        await server._start_ops(assembly)
        ops = server.ops
        if ops is not None:
            ops.register_readiness("workers", pool.answering)
            ops.register_health("workers", pool.answering)

            def unlatch() -> None:
                # /ready stops asking a check once it passed; ask again after every worker died.
                ops.register_readiness("workers", pool.answering)

            pool.on_none_serving = unlatch
        if server.metrics is not None:
            self.flusher = asyncio.get_running_loop().create_task(
                server.metrics.run_flusher(1.0))
        if not self.settings.quiet:
            server._print_banner(assembly)
            print(f"workers: {self.count}", flush=True)
            if self.hint:
                print(self.hint, flush=True)

    async def _shut_down(self, lameduck: float) -> None:
        if self.server.ops is not None:
            self.server.ops.set_lameduck(True)
        # Each worker goes lame duck, drains and stops (one still starting once it has started).
        self.pool.stop(signal.SIGTERM)
        await self.pool.wait_exited(timeout=lameduck + 10.0)
        await self._stop_rest()

    async def _stop_rest(self) -> None:
        server = self.server
        if self.flusher is not None:
            self.flusher.cancel()
        for watcher in server.watchers:
            await asyncio.to_thread(watcher.stop)
        if server.ops is not None:
            await server.ops.stop()


async def _first(*waitables: Any) -> None:
    """Wait until one of `waitables` finishes; cancel the others (not tasks the caller owns)."""
    loop = asyncio.get_running_loop()
    tasks = [w if isinstance(w, asyncio.Task) else loop.create_task(w) for w in waitables]
    own = [t for t, w in zip(tasks, waitables, strict=True) if t is not w]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in own:
            task.cancel()


async def supervise(settings: Settings, count: int, log_level: str,
                    hint: str | None = None, backlog: int = DEFAULT_BACKLOG) -> int:
    """Run `count` workers and everything that exists once per server; return the exit code."""
    return await Supervisor(settings, count, log_level, hint, backlog).run()
