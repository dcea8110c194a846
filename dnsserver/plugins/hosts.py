"""The `hosts` plugin: A, AAAA and PTR answers from an /etc/hosts-style file and inline lines, as
CoreDNS's plugin/hosts gives them, with the file re-read when its mtime or size changes.

`HostsMap`/`parse_hosts` are the pure part; `HostsPlugin` is the shell: zones, fallthrough, the
reload task and the fast-path tag that a reload invalidates.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dnslib import AAAA as AAAA_RD
from dnslib import PTR as PTR_RD
from dnslib import QTYPE, RR
from dnslib import A as A_RD

from dnsserver.corefile import zone_args
from dnsserver.kubernetes_zone import match_zone
from dnsserver.plugin import SERVFAIL, Plugin, Poller, Reply, Request, make_reply
from dnsserver.plugins._zonedata import Fallthrough, falls_through, fqdn, name_error
from dnsserver.plugins.kubernetes import parse_duration

log = logging.getLogger("dnsserver.hosts")

A, AAAA, PTR = QTYPE.A, QTYPE.AAAA, QTYPE.PTR
DEFAULT_PATH = "/etc/hosts"
DEFAULT_TTL = 3600
DEFAULT_RELOAD = 5.0


@dataclass
class HostsMap:
    """Names to addresses (per family) and addresses to names; names lower-case FQDNs."""

    name4: dict[str, list[str]] = field(default_factory=dict)
    name6: dict[str, list[str]] = field(default_factory=dict)
    addr: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(v) for m in (self.name4, self.name6, self.addr) for v in m.values())


def parse_hosts(text: str, origins: tuple[str, ...], reverse: bool = True) -> HostsMap:
    """hosts(5) lines: `ADDRESS NAME [ALIASES...]`, `#` comments; lines that are not are skipped
    (as CoreDNS does), and so are names outside `origins`."""
    hosts = HostsMap()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            ip = ipaddress.ip_address(fields[0].split("%", 1)[0])  # drop an IPv6 zone
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # Go's net.IP.To4: ::ffff:a.b.c.d is an IPv4 address
        table = hosts.name4 if ip.version == 4 else hosts.name6
        address = str(ip)
        for raw in fields[1:]:
            name = fqdn(raw)
            if name_error(name) or match_zone(name, origins) is None:
                continue
            table.setdefault(name, []).append(address)
            # Wildcard owners match one label below them; they make no PTR records.
            if reverse and not name.startswith("*."):
                hosts.addr.setdefault(address, []).append(name)
    return hosts


def address_from_reverse(name: str) -> str | None:
    """The address a reverse name stands for (`4.3.2.1.in-addr.arpa.` -> 1.2.3.4), or None."""
    if name.endswith(".in-addr.arpa."):
        labels = name[: -len(".in-addr.arpa.")].split(".")
        if len(labels) == 4 and all(x.isdigit() and len(x) <= 3 for x in labels):
            try:
                return str(ipaddress.IPv4Address(".".join(reversed(labels))))
            except ValueError:
                return None
    elif name.endswith(".ip6.arpa."):
        nibbles = name[: -len(".ip6.arpa.")].split(".")
        if len(nibbles) == 32 and all(len(x) == 1 and x in "0123456789abcdef" for x in nibbles):
            return str(ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16)))
    return None


@dataclass(frozen=True)
class HostsOptions:
    path: str = DEFAULT_PATH
    origins: tuple[str, ...] = (".",)
    inline: tuple[str, ...] = ()
    ttl: int = DEFAULT_TTL
    reverse: bool = True
    reload: float = DEFAULT_RELOAD
    fall: Fallthrough = None
    fall_unsupported: bool = False


def _file_state(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class HostsPlugin(Plugin):
    name = "hosts"

    def __init__(self, options: HostsOptions, tag: tuple[str, ...],
                 notify: Callable[[set], None] | None = None) -> None:
        super().__init__()
        self.options = options
        self.tag = tag
        self.notify = notify
        self.inline = parse_hosts("\n".join(options.inline), options.origins, options.reverse)
        self.hosts = HostsMap()
        self._state: tuple[int, int] | None = None
        self._poller = Poller(options.reload, self._reload,
                              f"plugin/hosts: reloading {options.path}", log)
        self.read()

    # -- data ---------------------------------------------------------------------------------

    def read(self) -> bool:
        """Re-read the file if its mtime or size changed; keep the last data if it is gone."""
        state = _file_state(self.options.path)
        if state is None or state == self._state:
            return False
        try:
            with open(self.options.path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as exc:
            log.warning("plugin/hosts: unable to read %s: %s", self.options.path, exc.strerror)
            return False
        self.hosts = parse_hosts(text, self.options.origins, self.options.reverse)
        self._state = state
        log.debug("plugin/hosts: Parsed hosts file into %d entries", len(self.hosts))
        return True

    def _lookup(self, table: str, name: str) -> list[str]:
        found = getattr(self.hosts, table).get(name, []) + getattr(self.inline, table).get(name, [])
        if found or "." not in name[:-1]:
            return found
        star = "*." + name.split(".", 1)[1]
        return getattr(self.hosts, table).get(star, []) + getattr(self.inline, table).get(star, [])

    def exists(self, name: str) -> bool:
        return bool(self._lookup("name4", name) or self._lookup("name6", name))

    # -- serving ------------------------------------------------------------------------------

    async def serve(self, req: Request) -> Reply:
        opts = self.options
        lname = req.lname
        if match_zone(lname, opts.origins) is None and req.qtype != PTR:
            return await self.next.serve(req)
        ttl = opts.ttl
        answer: list[RR] = []
        if req.qtype == PTR:
            address = address_from_reverse(lname)
            names = (self.hosts.addr.get(address, []) + self.inline.addr.get(address, [])
                     if address else [])
            if not names:
                return await self._next(req)  # whatever `fallthrough` says, as CoreDNS
            answer = [RR(req.qname, PTR, 1, ttl, PTR_RD(n)) for n in names]
        elif req.qtype == A:
            answer = [RR(req.qname, A, 1, ttl, A_RD(ip)) for ip in self._lookup("name4", lname)]
        elif req.qtype == AAAA:
            answer = [RR(req.qname, AAAA, 1, ttl, AAAA_RD(ip))
                      for ip in self._lookup("name6", lname)]
        if not answer:
            if not self.exists(lname):
                if falls_through(opts.fall, lname):
                    return await self._next(req)
                # CoreDNS would rather say NXDOMAIN but has no SOA to put with it: SERVFAIL.
                return Reply(make_reply(req, SERVFAIL, aa=False, ra=False), self.name,
                             {self.tag})
            if (opts.fall_unsupported and req.qtype not in (A, AAAA, PTR)
                    and falls_through(opts.fall, lname)):
                return await self._next(req)
        message = make_reply(req, 0, answer, ra=False)
        return Reply(message, self.name, {self.tag})

    async def _next(self, req: Request) -> Reply:
        # The next plugin's answer holds only while our data lacks the name: tag it with ours.
        inner = await self.next.serve(req)
        tags = None if inner.tags is None else inner.tags | {self.tag}
        return Reply(inner.message, inner.plugin, tags)

    # -- reload -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()

    async def _reload(self) -> None:
        if self.read() and self.notify is not None:
            self.notify({self.tag})


def parse_config(d: Any, block_zones: tuple[str, ...]) -> HostsOptions:
    args = list(d.args)
    reverse = True
    while args and args[0] == "no-reverse":  # the old spelling, still read by CoreDNS
        reverse = False
        args.pop(0)
    path = args.pop(0) if args else DEFAULT_PATH
    origins = zone_args(tuple(args)) if args else tuple(block_zones)
    inline: list[str] = []
    ttl = DEFAULT_TTL
    reload = DEFAULT_RELOAD
    fall: Fallthrough = None
    fall_unsupported = False
    for opt in d.block:
        if opt.name == "fallthrough":
            fall = zone_args(opt.args)
        elif opt.name == "fallthrough_unsupported":
            fall_unsupported = True
        elif opt.name in ("no_reverse", "no-reverse"):
            reverse = False
        elif opt.name == "ttl":
            if not opt.args:
                raise opt.error("ttl needs a time in second")
            if not opt.args[0].isdigit():
                raise opt.error("ttl needs a number of second")
            ttl = int(opt.args[0])
            if ttl <= 0 or ttl > 65535:
                raise opt.error("ttl provided is invalid")
        elif opt.name == "reload":
            if len(opt.args) != 1:
                raise opt.error("reload needs a duration (zero seconds to disable)")
            reload = parse_duration(opt, opt.args[0])
        elif fall is None:
            # Anything else before `fallthrough` is a line of the hosts file, inlined.
            inline.append(" ".join((opt.name, *opt.args)))
        else:
            raise opt.error(f"unknown property '{opt.name}'")
    if fall_unsupported and fall is None:
        raise d.error("fallthrough_unsupported requires fallthrough")
    return HostsOptions(path, origins, tuple(inline), ttl, reverse, reload, fall,
                        fall_unsupported)


def setup(d: Any, ctx: Any) -> Plugin:
    mine = ctx.block.directives_named("hosts")
    if mine and mine[0] is not d:
        raise d.error("this plugin can only be used once per Server Block")
    options = parse_config(d, ctx.zones)
    if not os.path.exists(options.path):
        log.warning("plugin/hosts: File does not exist: %s", options.path)
    elif os.path.isdir(options.path):
        log.warning("plugin/hosts: Hosts file %r is a directory", options.path)
    tag = ("hosts", f"{d.file}:{d.line}:{ctx.port}")
    return HostsPlugin(options, tag, ctx.assembly.store.notify)


SETUPS = {"hosts": setup}
