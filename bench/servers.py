"""The servers under test: how each one is configured, started pinned, and known to be ready.

Knot DNS and NSD serve the generated zone file, dnslib's `DNSServer` the same file, and our
`dnsserver` the snapshot the zone was generated from.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from bench import procs

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
DNSSERVER_BIN = REPO / ".venv" / "bin" / "dnsserver"
ZONE = "cluster.local."


@dataclass
class Dataset:
    """One generated cluster: the snapshot and the zone file holding the same records."""

    name: str
    snapshot: Path
    zone: Path


@dataclass
class Running:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    startup_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid


def answers_soa(port: int, timeout: float = 0.5) -> bool:
    """True once the server on 127.0.0.1:port answers the zone's SOA at all."""
    q = dns.message.make_query(ZONE, "SOA")
    try:
        dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError):
        return False
    return True


def _knot_conf(ds: Dataset, port: int, work: Path) -> Path:
    (work / "db").mkdir(parents=True, exist_ok=True)
    conf = work / "knot.conf"
    # One UDP worker: the bench compares one server core, and knotd is pinned to one CPU.
    conf.write_text(f"""\
server:
    rundir: "{work}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "{work / 'db'}"
template:
  - id: default
    storage: "{ds.zone.parent}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
  - domain: {ZONE[:-1]}
    file: "{ds.zone.name}"
""")
    return conf


def _nsd_conf(ds: Dataset, port: int, work: Path, zones: dict[str, str] | None = None,
              minimal_responses: bool = False) -> Path:
    """NSD serving ds.zone as cluster.local, or `zones` (name -> file beside ds.zone)."""
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "nsd.conf"
    zone_blocks = "".join(f'zone:\n    name: {name}\n    zonefile: "{file}"\n'
                          for name, file in (zones or {ZONE[:-1]: ds.zone.name}).items())
    # server-count 1 for one serving process; xfrd still forks but stays idle.
    conf.write_text(f"""\
server:
    ip-address: 127.0.0.1@{port}
    port: {port}
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{ds.zone.parent}"
    database: ""
    zonelistfile: "{work / 'zone.list'}"
    xfrdfile: "{work / 'xfrd.state'}"
    xfrdir: "{work}"
    pidfile: "{work / 'nsd.pid'}"
    logfile: "{work / 'nsd.log'}"
    verbosity: 0
    hide-version: yes
    minimal-responses: {"yes" if minimal_responses else "no"}
    # Response rate limiting (on in Debian's build: 200 qps per source) drops NXDOMAINs of a
    # zone beyond that from one source; dnsperf is one source.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
{zone_blocks}""")
    return conf


@dataclass
class ServerKind:
    name: str
    description: str

    def available(self) -> str | None:
        """None when the server can run here, else why not."""
        raise NotImplementedError

    def argv(self, ds: Dataset, port: int, work: Path) -> list[str]:
        raise NotImplementedError


class Knot(ServerKind):
    def available(self) -> str | None:
        return None if shutil.which("knotd") else "knotd not installed (apt-get install knot)"

    def argv(self, ds: Dataset, port: int, work: Path) -> list[str]:
        return ["knotd", "-c", str(_knot_conf(ds, port, work))]


@dataclass
class Nsd(ServerKind):
    """NSD serving the dataset's zone, or `zones` (name -> file beside ds.zone) instead."""

    zones: dict[str, str] = field(default_factory=dict)
    minimal_responses: bool = False

    def available(self) -> str | None:
        return None if shutil.which("nsd") else "nsd not installed (apt-get install nsd)"

    def argv(self, ds: Dataset, port: int, work: Path) -> list[str]:
        conf = _nsd_conf(ds, port, work, self.zones or None, self.minimal_responses)
        return ["nsd", "-d", "-c", str(conf)]


class DnslibBaseline(ServerKind):
    def available(self) -> str | None:
        return None

    def argv(self, ds: Dataset, port: int, work: Path) -> list[str]:
        return [str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable),
                str(REPO / "bench" / "dnslib_baseline.py"), "--zone", str(ds.zone),
                "--port", str(port)]


class DnsServer(ServerKind):
    """Our server. `extra` carries flags such as a single-worker switch once it has one."""

    def __init__(self, name: str, description: str, extra: list[str] | None = None) -> None:
        super().__init__(name, description)
        self.extra = extra or []

    def available(self) -> str | None:
        if not DNSSERVER_BIN.exists():
            return f"{DNSSERVER_BIN} missing (reinstall the project into the venv)"
        if not (REPO / "dnsserver" / "cli.py").exists():
            return "PENDING: dnsserver.cli (the lead's server) does not exist yet"
        return None

    def argv(self, ds: Dataset, port: int, work: Path) -> list[str]:
        return [str(DNSSERVER_BIN), "--snapshot", str(ds.snapshot), "-dns.port", str(port),
                *self._workers(), *self.extra]

    def _workers(self) -> list[str]:
        # One process pinned to one core, unless the run asks for more (`--dnsserver-arg`).
        return [] if "--workers" in self.extra else ["--workers", "1"]


class DnsServerCorefile(DnsServer):
    """Our server configured by a Corefile (for the fake API's `kubernetes` stanza)."""

    def __init__(self, name: str, description: str, corefile: Path,
                 extra: list[str] | None = None) -> None:
        super().__init__(name, description, extra)
        self.corefile = corefile

    def argv(self, ds: Dataset, port: int, work: Path) -> list[str]:
        return [str(DNSSERVER_BIN), "-conf", str(self.corefile), "-dns.port", str(port),
                *self._workers(), *self.extra]


def kinds(dnsserver_args: list[str] | None = None) -> dict[str, ServerKind]:
    return {
        "knot": Knot("knot", "Knot DNS knotd, 1 UDP worker, zone file"),
        "nsd": Nsd("nsd", "NSD, server-count 1, zone file"),
        "dnslib": DnslibBaseline("dnslib", "dnslib.server.DNSServer (threaded UDP), zone file"),
        "dnsserver": DnsServer("dnsserver", "our dnsserver, --snapshot", dnsserver_args),
    }


def launch(kind: ServerKind, ds: Dataset, port: int, work: Path, cpu: int,
           ready_timeout: float = 120.0) -> Running:
    """Start a server pinned to `cpu` and wait until it answers; raises if it never does."""
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    proc = procs.start(kind.argv(ds, port, work), cpu, work / f"{kind.name}.log", cwd=work)
    ok = procs.wait_until(lambda: proc.poll() is not None or answers_soa(port), ready_timeout)
    if not ok or proc.poll() is not None:
        procs.stop(proc)
        log = (work / f"{kind.name}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{kind.name} did not become ready on port {port}:\n{log}")
    return Running(kind.name, port, proc, time.monotonic() - t0)
