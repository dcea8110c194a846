"""The `dnsserver` command: CoreDNS's flags (`-conf`, `-dns.port`, `-version`, `-plugins`,
`-quiet`), ours (`--snapshot`), and the `env` subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from dnsserver import __version__
from dnsserver.runtime import setup_logging, use_uvloop

log = logging.getLogger("dnsserver")

# With neither -conf nor a Corefile in the working directory: the demo cluster on loopback.
DEMO_PORT = 1053
DEMO_COREFILE = """\
.:{port} {{
    bind 127.0.0.1
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        pods insecure
    }}
}}
"""


def zones_dir() -> Path:
    """The demo cluster's folder: $DNSSERVER_ZONES, `zones/` beside the package (a checkout),
    or `share/dnsserver/zones` of the installation (a wheel)."""
    env = os.environ.get("DNSSERVER_ZONES")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parent.parent / "zones"
    if beside.is_dir():
        return beside
    return Path(sys.prefix) / "share" / "dnsserver" / "zones"


def demo_snapshot() -> Path:
    return zones_dir() / "demo-cluster.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnsserver",
        description="Cluster DNS for Kubernetes that runs CoreDNS Corefiles. "
                    "`dnsserver env --help` renders service environment variables.")
    p.add_argument("-conf", "--conf", metavar="FILE",
                   help="Corefile to load (default: ./Corefile, else the demo cluster)")
    p.add_argument("-dns.port", "--dns.port", dest="dns_port", type=int, metavar="PORT",
                   help="default port for server blocks that name none (CoreDNS: 53)")
    p.add_argument("--snapshot", metavar="FILE",
                   help="serve the cluster from a file of Kubernetes objects instead of the API")
    p.add_argument("-quiet", "--quiet", action="store_true", help="do not print the start-up lines")
    p.add_argument("-version", "--version", action="store_true", help="show version and exit")
    p.add_argument("-plugins", "--plugins", action="store_true",
                   help="list the plugins this build supports and exit")
    p.add_argument("-pidfile", "--pidfile", metavar="FILE", help="write the process ID here")
    p.add_argument("--workers", type=int, metavar="N",
                   default=int(os.environ.get("DNSSERVER_WORKERS", "0")) or None,
                   help="worker processes sharing the sockets (default: the CPUs we may use; "
                        "also $DNSSERVER_WORKERS)")
    p.add_argument("--worker-backlog", type=int, metavar="N",
                   default=int(os.environ.get("DNSSERVER_WORKER_BACKLOG", "0")) or None,
                   help="messages of cluster changes a worker may leave unread before it is "
                        "replaced (default: 5000; also $DNSSERVER_WORKER_BACKLOG)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "env":
        from dnsserver import envvars_cli

        return envvars_cli.main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.worker_backlog is not None and args.worker_backlog < 1:
        parser.error("--worker-backlog must be at least 1")
    if args.version:
        print(f"dnsserver-{__version__}")
        return 0
    if args.plugins:
        from dnsserver.assembly import setups

        print("Server types:\n  dns\n\nCaddyfile loaders:\n  flag\n  default\n\nOther plugins:")
        for name in sorted(setups()):
            print(f"  dns.{name}")
        return 0
    setup_logging(args.log_level)
    from dnsserver.corefile import CorefileError
    from dnsserver.server import Server, Settings
    from dnsserver.snapshot import SnapshotError

    demo = False
    if args.conf:
        name = args.conf
        try:
            text = Path(name).read_text(encoding="utf-8")
        except OSError as exc:
            print(f"dnsserver: cannot read Corefile {name}: {exc.strerror}", file=sys.stderr)
            return 2
    elif Path("Corefile").is_file():
        name, text = "Corefile", Path("Corefile").read_text(encoding="utf-8")
    else:
        demo = True
        name, text = "<demo Corefile>", DEMO_COREFILE.format(port=args.dns_port or DEMO_PORT)
    snapshot = args.snapshot
    if snapshot is None and demo:
        snapshot = str(demo_snapshot())
    settings = Settings(text, name, args.dns_port, snapshot, args.quiet,
                        corefile_path=None if demo else name)
    if args.pidfile:
        Path(args.pidfile).write_text(f"{os.getpid()}\n")
    server = Server(settings)
    try:
        server.build()
    except CorefileError as exc:
        print(f"dnsserver: {exc}", file=sys.stderr)
        return 1
    use_uvloop()
    from dnsserver.workers import DEFAULT_BACKLOG, default_count, supervise

    workers = args.workers or default_count()
    hint = None
    if demo and not args.quiet:
        hint = (f"Demo cluster from {snapshot}; try:\n"
                f"  dig @127.0.0.1 -p {args.dns_port or DEMO_PORT} "
                "kubernetes.default.svc.cluster.local")
    try:
        if workers > 1:
            return asyncio.run(supervise(settings, workers, args.log_level, hint,
                                         args.worker_backlog or DEFAULT_BACKLOG))
        return asyncio.run(_run(server, hint))
    except SnapshotError as exc:
        print(f"dnsserver: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dnsserver: {exc}", file=sys.stderr)
        return 1


async def _run(server: object, hint: str | None) -> int:
    from dnsserver.server import Server

    assert isinstance(server, Server)
    loop = asyncio.get_running_loop()
    early_stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s: Shutting down", sig.name)
        early_stop.set()

    # SIGTERM and SIGINT count from the start, not only once the server answers: during the
    # API sync wait nothing is served yet, so there is nothing to drain and we stop at once.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    starting = loop.create_task(server.start())
    stopping = loop.create_task(early_stop.wait())
    await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        if server.listeners:
            await server.shutdown()  # it answered already: lame duck and drain as usual
        elif server.ops is not None:
            await server.ops.stop()
        return 0
    stopping.cancel()
    starting.result()  # re-raise a start-up error (cannot bind, say)
    server.install_signal_handlers()
    if early_stop.is_set():
        server.request_stop()
    if hint:
        print(hint, flush=True)
    await server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
