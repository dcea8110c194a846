"""Test helpers: free loopback ports, the real server started as a user starts it, queries.

`ServerProcess` runs `python -m dnsserver` with a Corefile in a temporary folder and waits, with a
deadline, until it answers; its output is collected for assertions.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "zones" / "demo-cluster.yaml"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> Any:
    """Poll `predicate` until it returns something true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def udp_exchange(port: int, payload: bytes, timeout: float = 2.0,
                 host: str = "127.0.0.1") -> bytes | None:
    """Send raw bytes in one datagram; the reply, or None if none comes within `timeout`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, (host, port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def recv_exactly(s: socket.socket, n: int) -> bytes:
    """Exactly n bytes from a stream socket, or ConnectionError when it closes first."""
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def tcp_message(s: socket.socket) -> bytes:
    """One length-prefixed DNS message from a TCP connection."""
    return recv_exactly(s, struct.unpack("!H", recv_exactly(s, 2))[0])


def query(name: str, rdtype: str = "A", port: int = 53, host: str = "127.0.0.1",
          tcp: bool = False, timeout: float = 2.0, **make_kw: Any) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **make_kw)
    if tcp:
        return dns.query.tcp(q, host, port=port, timeout=timeout)
    return dns.query.udp(q, host, port=port, timeout=timeout, ignore_trailing=False)


def answers(msg: dns.message.Message, rdtype: str | None = None) -> list[str]:
    """The answer section's rdata as text, sorted; only of `rdtype` when given."""
    out = []
    for rrset in msg.answer:
        if rdtype is None or dns.rdatatype.to_text(rrset.rdtype) == rdtype:
            out.extend(rd.to_text() for rd in rrset)
    return sorted(out)


class ServerProcess:
    """`python -m dnsserver` on loopback with the given Corefile, stopped on exit."""

    def __init__(self, corefile: str | None = None, *, snapshot: str | Path | None = DEMO,
                 args: list[str] | None = None, env: dict[str, str] | None = None,
                 port: int | None = None, ready_name: str = "dns-version.cluster.local",
                 ready_type: str = "TXT", wait: bool = True) -> None:
        self.port = port or free_port()
        self.corefile = corefile
        self.snapshot = snapshot
        self.args = args or []
        self.env = env
        self.ready_name = ready_name
        self.ready_type = ready_type
        self.wait = wait
        self.dir = Path(tempfile.mkdtemp(prefix="dnsserver-test-"))
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def start(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "dnsserver", "-dns.port", str(self.port)]
        if self.corefile is not None:
            conf = self.dir / "Corefile"
            conf.write_text(self.corefile.replace("{PORT}", str(self.port)))
            cmd += ["-conf", str(conf)]
        if self.snapshot is not None:
            cmd += ["--snapshot", str(self.snapshot)]
        cmd += self.args
        if "--workers" not in self.args:
            cmd += ["--workers", "1"]  # one process unless a test is about workers
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if self.wait:
            wait_for(self._answers, timeout=20.0, what=f"dnsserver on port {self.port}:\n"
                     + self.output)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"dnsserver exited with {self.proc.returncode}:\n{self.output}")
        try:
            query(self.ready_name, self.ready_type, port=self.port, timeout=0.2)
        except Exception:
            return False
        return True

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
