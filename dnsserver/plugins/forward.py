"""The `forward` plugin: send queries for a zone to upstream resolvers and relay their answers,
with CoreDNS's upstream selection, in-band health checks, deadlines and limits.

Behaviour follows CoreDNS's plugin/forward and plugin/pkg/proxy; the differences are listed in
docs/compat/forward.md. The counters on `ForwardPlugin` and `Proxy` feed the coredns_forward_*
and coredns_proxy_* metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from dnslib import DNSRecord

from dnsserver import upstream
from dnsserver.logfmt import log_error
from dnsserver.metrics import RCODE_NAMES, TIME_BUCKETS, duration_bucket, rcode_label
from dnsserver.plugin import (
    FORMERR,
    PASS,
    REFUSED,
    SERVFAIL,
    Plugin,
    Reply,
    Request,
    make_reply,
)
from dnsserver.plugins.kubernetes import parse_duration, zone_args

log = logging.getLogger("plugin/forward")

# CoreDNS's constants (plugin/forward, plugin/pkg/proxy). Tests build plugins with smaller ones.
DEFAULT_TIMEOUT = 5.0  # forward.go defaultTimeout: all tries of one query together
READ_TIMEOUT = 2.0  # proxy readTimeout: one try
HC_TIMEOUT = 1.0  # health.go: read (and write) timeout of a health check
HC_INTERVAL = 0.5  # forward.go hcInterval: between failed health checks
DEFAULT_EXPIRE = 10.0  # forward.go defaultExpire: how long upstream sockets are kept
MIN_DIAL_TIMEOUT, MAX_DIAL_TIMEOUT = 1.0, 30.0  # proxy minDialTimeout / maxDialTimeout
MAX_FAILS = 2
MAX_UPSTREAMS = 15  # setup.go max
# Ours: after a pass over every upstream that failed faster than this, wait this long before
# the next pass, instead of retrying a refusing upstream in a tight loop until the deadline.
PASS_PAUSE = 0.05
HC_MIN_INTERVAL = 0.01  # `health_check 0s` must not spin

N_BUCKETS = len(TIME_BUCKETS) + 1  # the last slot is +Inf
# Request.meta key: the deadline of a query the relay handed to the slow path.
DEADLINE = "forward/deadline"


class Proxy:
    """One upstream: its address, its health, and its counters.

    Counters (cumulative, read by the metrics module; label `to` is `label`):
    `requests` (exchanges started), `rcodes` {rcode: answers}, `durations`
    {rcode label: counts per metrics.TIME_BUCKETS bucket, +Inf last} with `duration_sums`
    {rcode label: seconds} -> coredns_proxy_request_duration_seconds{proxy_name="forward"};
    `healthcheck_failures` -> coredns_proxy_healthcheck_failures_total;
    `conn_cache_hits` / `conn_cache_misses` {proto: n} -> coredns_proxy_conn_cache_hits_total /
    coredns_proxy_conn_cache_misses_total (an exchange on a kept socket, or on a new one).
    """

    def __init__(self, addr: tuple[str, int], *, hc_interval: float = HC_INTERVAL,
                 hc_timeout: float = HC_TIMEOUT, hc_proto: str = "udp",
                 hc_recursion_desired: bool = True, hc_domain: str = ".",
                 expire: float = DEFAULT_EXPIRE) -> None:
        self.addr = addr
        # The sockets kept to this upstream; `expire` is CoreDNS's option.
        self.connections = upstream.Connections(addr, expire)
        self.label = upstream.hostport(addr)
        self.fails = 0
        self.hc_interval = hc_interval
        self.hc_timeout = hc_timeout
        self.hc_proto = hc_proto
        self.hc_recursion_desired = hc_recursion_desired
        self.hc_domain = hc_domain
        self._probe: asyncio.Task[None] | None = None
        self._stopped = False
        self.requests = 0
        self.rcodes: dict[int, int] = {}
        self.durations: dict[str, list[int]] = {}
        self.duration_sums: dict[str, float] = {}
        self.healthcheck_failures = 0

    def down(self, max_fails: int) -> bool:
        """Down once more health checks failed in a row than `max_fails` (0: never down)."""
        return max_fails != 0 and self.fails > max_fails

    async def exchange(self, query: DNSRecord | bytes, proto: str, timeout: float,
                       dial_timeout: float, tcp_on_tc: bool) -> upstream.Answer:
        self.requests += 1
        start = time.monotonic()
        answer = await upstream.exchange(query, self.addr, proto, timeout=timeout,
                                         dial_timeout=dial_timeout, tcp_on_tc=tcp_on_tc,
                                         connections=self.connections)
        self.record(answer.rcode, time.monotonic() - start)
        return answer

    def record(self, rcode: int, took: float) -> None:
        """Count one answer from this upstream and how long it took."""
        self.rcodes[rcode] = self.rcodes.get(rcode, 0) + 1
        label = rcode_label(rcode)
        counts = self.durations.get(label)
        if counts is None:
            counts = self.durations[label] = [0] * N_BUCKETS
            self.duration_sums[label] = 0.0
        counts[duration_bucket(took)] += 1
        self.duration_sums[label] += took

    # -- health checking ----------------------------------------------------------------------

    def healthcheck(self) -> None:
        """Start probing unless a probe already runs: until a check passes, every interval."""
        if self._probe is None and not self._stopped:
            self._probe = asyncio.get_running_loop().create_task(self._run_probe())

    async def _run_probe(self) -> None:
        try:
            while not self._stopped:
                if await self.check():
                    self.fails = 0
                    return
                self.fails += 1
                self.healthcheck_failures += 1
                await asyncio.sleep(max(self.hc_interval, HC_MIN_INTERVAL))
        finally:
            self._probe = None

    async def check(self) -> bool:
        """One `<domain> IN NS` query: any DNS answer means healthy, I/O errors do not."""
        ping = DNSRecord.question(self.hc_domain, "NS")
        ping.header.rd = int(self.hc_recursion_desired)
        try:
            await upstream.exchange(ping, self.addr, self.hc_proto, timeout=self.hc_timeout)
        except upstream.QuestionMismatch:
            return True  # it answered; only transport failures count
        except upstream.UpstreamError:
            return False
        return True

    @property
    def conn_cache_hits(self) -> dict[str, int]:
        return self.connections.hits

    @property
    def conn_cache_misses(self) -> dict[str, int]:
        return self.connections.misses

    async def stop(self) -> None:
        self._stopped = True
        self.connections.close()
        task = self._probe
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- policies ---------------------------------------------------------------------------------


class RandomPolicy:
    name = "random"

    def order(self, proxies: Sequence[Proxy]) -> list[Proxy]:
        out = list(proxies)
        random.shuffle(out)
        return out


class RoundRobinPolicy:
    name = "round_robin"

    def __init__(self) -> None:
        self._next = itertools.count()

    def order(self, proxies: Sequence[Proxy]) -> list[Proxy]:
        start = next(self._next) % len(proxies)
        return [*proxies[start:], *proxies[:start]]


class SequentialPolicy:
    name = "sequential"

    def order(self, proxies: Sequence[Proxy]) -> list[Proxy]:
        return list(proxies)


POLICIES = {"random": RandomPolicy, "round_robin": RoundRobinPolicy,
            "sequential": SequentialPolicy}


# -- the plugin -------------------------------------------------------------------------------


class ForwardPlugin(Plugin):
    """Forward queries under `from_zone` (but not under `ignored`) to `proxies`.

    Counters: `healthcheck_broken` -> coredns_forward_healthcheck_broken_total,
    `max_concurrent_rejects` -> coredns_forward_max_concurrent_rejects_total, and `inflight`,
    the queries now waiting on an upstream (bounded by `max_concurrent` when set).
    """

    name = "forward"

    def __init__(self, from_zone: str, proxies: list[Proxy], *, ignored: Sequence[str] = (),
                 policy: Any = None, max_fails: int = MAX_FAILS, force_tcp: bool = False,
                 prefer_udp: bool = False, max_concurrent: int = 0,
                 next_rcodes: Sequence[int] = (), failover_rcodes: Sequence[int] = (),
                 failfast: bool = False, max_connect_attempts: int = 0,
                 timeout: float = DEFAULT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 dial_timeout: float = MIN_DIAL_TIMEOUT, expire: float = DEFAULT_EXPIRE) -> None:
        super().__init__()
        self.from_zone = from_zone
        self.proxies = proxies
        self.ignored = tuple(ignored)
        self.policy = policy or RandomPolicy()
        self.max_fails = max_fails
        self.force_tcp = force_tcp
        self.prefer_udp = prefer_udp
        self.max_concurrent = max_concurrent
        self.next_rcodes = frozenset(next_rcodes)
        self.failover_rcodes = frozenset(failover_rcodes)
        self.failfast = failfast
        self.max_connect_attempts = max_connect_attempts
        self.timeout = timeout
        self.read_timeout = read_timeout
        self.dial_timeout = dial_timeout
        self.expire = expire
        self.inflight = 0
        self.healthcheck_broken = 0
        self.max_concurrent_rejects = 0

    def matches(self, lname: str) -> bool:
        """FROM covers the name and no `except` zone does (FROM itself is never excepted)."""
        if not _in_zone(lname, self.from_zone):
            return False
        if lname == self.from_zone or not self.ignored:
            return True
        return not any(_in_zone(lname, zone) for zone in self.ignored)

    def relay_step(self, lname: str, qtype: int) -> Any:
        return self if self.matches(lname) else PASS

    def relay(self, query: bytes, question_end: int,
              deliver: Callable[[bytes, str], None], fallback: Callable[[float], None]) -> bool:
        """Send a plain UDP query upstream from its bytes, without the slow path: the first
        healthy upstream in policy order, a pooled socket, a fresh ID. A checked answer goes
        to `deliver(answer, upstream)`; anything else (no answer within the read timeout, an
        answer that does not check, TC, an rcode for `next` or `failover`) goes to
        `fallback(deadline)`, the slow path, which tries the upstreams in turn as it always
        does until `deadline`. False when the slow path must take the query from the start
        (force_tcp, max_concurrent reached, every upstream down, no socket open yet)."""
        if self.force_tcp or (self.max_concurrent and self.inflight >= self.max_concurrent):
            return False
        max_fails = self.max_fails
        proxies = self.proxies
        if len(proxies) == 1:
            proxy = proxies[0]
            if proxy.down(max_fails):
                return False
        else:
            for proxy in self.policy.order(proxies):
                if not proxy.down(max_fails):
                    break
            else:
                return False
        start = time.monotonic()
        relayed = _Relayed(self, proxy, query, question_end, deliver, fallback, start)
        # Everything is in place before the send: an error can be reported during it.
        relayed.timer = asyncio.get_running_loop().call_later(self.read_timeout,
                                                              relayed.timed_out)
        proxy.requests += 1
        self.inflight += 1
        try:
            sent = proxy.connections.send_udp(query, relayed)
        except OSError:
            sent = None
        if relayed.finished:
            return True  # answered or failed (and handed over) already
        if sent is None:
            relayed._finish()
            proxy.requests -= 1
            return False
        relayed.sent = sent
        return True

    async def serve(self, req: Request) -> Reply:
        if not self.matches(req.lname):
            return await self.next.serve(req)
        if self.max_concurrent and self.inflight >= self.max_concurrent:
            self.max_concurrent_rejects += 1
            log_error(REFUSED, req.qname, req.qtype,
                      f"concurrent queries exceeded maximum {self.max_concurrent}")
            return Reply(make_reply(req, REFUSED, aa=False, ra=False), self.name)
        self.inflight += 1
        try:
            return await self._forward(req)
        finally:
            self.inflight -= 1

    async def _forward(self, req: Request) -> Reply:
        proxies = self.proxies
        order = self.policy.order(proxies)
        now = time.monotonic()
        # A query the relay handed over keeps the deadline it started with.
        deadline = req.meta.get(DEADLINE) or now + self.timeout
        pass_start = now
        i = skipped = attempts = 0
        error: Exception | None = None
        proto = "tcp" if self.force_tcp else "udp" if self.prefer_udp else req.proto
        tcp_on_tc = self.prefer_udp and not self.force_tcp
        # The client's bytes go upstream as they came (with a fresh ID) unless a plugin
        # changed the question on the way.
        query: DNSRecord | bytes = req.received_wire() or req.message
        while (now := time.monotonic()) < deadline:
            if self.max_connect_attempts and attempts >= self.max_connect_attempts:
                break
            if i >= len(order):
                i = skipped = 0
                if error is not None and now - pass_start < PASS_PAUSE:
                    await asyncio.sleep(min(PASS_PAUSE, deadline - now))
                pass_start = time.monotonic()
            proxy = order[i]
            i += 1
            if proxy.down(self.max_fails):
                skipped += 1
                if skipped < len(proxies):
                    continue
                # Every upstream is down: assume health checking itself is broken.
                self.healthcheck_broken += 1
                if self.failfast:
                    break
                proxy = random.choice(proxies)
            req.meta["forward/upstream"] = proxy.label
            try:
                answer = await proxy.exchange(query, proto,
                                              min(self.read_timeout, deadline - now),
                                              self.dial_timeout, tcp_on_tc)
            except upstream.QuestionMismatch:
                # An answer that is not for our question is not trusted: FORMERR, as CoreDNS.
                return Reply(make_reply(req, FORMERR, aa=False, ra=False), self.name)
            except upstream.UpstreamError as exc:
                error = exc
                attempts += 1
                if self.max_fails != 0:
                    proxy.healthcheck()
                if skipped < len(proxies):
                    continue
                break
            rcode = answer.rcode
            if rcode in self.failover_rcodes and skipped < len(proxies):
                skipped += 1
                continue
            if rcode in self.next_rcodes and isinstance(self.next, ForwardPlugin):
                return await self.next.serve(req)
            # Relayed as the upstream wrote it, OPT included, as CoreDNS does.
            return Reply(None, self.name, tags=None, wire=answer.wire)
        log_error(SERVFAIL, req.qname, req.qtype, error or "no healthy proxies")
        return Reply(make_reply(req, SERVFAIL, aa=False, ra=False), self.name)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for proxy in self.proxies:
            await proxy.stop()


class _Relayed(upstream.Waiter):
    """One query the relay sent upstream, waiting for its answer."""

    __slots__ = ("deliver", "fallback", "finished", "plugin", "proxy", "query", "question_end",
                 "sent", "start", "timer")

    def __init__(self, plugin: ForwardPlugin, proxy: Proxy, query: bytes, question_end: int,
                 deliver: Callable[[bytes, str], None], fallback: Callable[[float], None],
                 start: float) -> None:
        self.plugin = plugin
        self.proxy = proxy
        self.query = query
        self.question_end = question_end
        self.deliver = deliver
        self.fallback = fallback
        self.start = start
        self.sent: Any = None
        self.timer: Any = None
        self.finished = False

    def _finish(self) -> bool:
        """Leave flight once (False if already out): the timer and the in-flight count."""
        if self.finished:
            return False
        self.finished = True
        self.timer.cancel()
        self.plugin.inflight -= 1
        return True

    def answered(self, data: bytes) -> None:
        if not self._finish():
            return
        plugin = self.plugin
        deadline = self.start + plugin.timeout
        if upstream.check_reply(self.query, self.question_end, data) is not None:
            self.fallback(deadline)  # the slow path asks again and says what went wrong
            return
        rcode = data[3] & 0xF
        self.proxy.record(rcode, time.monotonic() - self.start)
        if (data[2] & 0x02 and plugin.prefer_udp) or rcode in plugin.failover_rcodes or (
                rcode in plugin.next_rcodes):
            self.fallback(deadline)
            return
        self.deliver(data, self.proxy.label)

    def failed(self, exc: BaseException) -> None:
        if not self._finish():
            return
        plugin = self.plugin
        if plugin.max_fails != 0:
            self.proxy.healthcheck()
        self.fallback(self.start + plugin.timeout)

    def timed_out(self) -> None:
        if self.sent is not None:
            sock, ident = self.sent
            sock.done_with(ident)
        self.failed(TimeoutError())


def _in_zone(lname: str, zone: str) -> bool:
    return zone == "." or lname == zone or lname.endswith("." + zone)


# -- Corefile setup ---------------------------------------------------------------------------

_TRANSPORTS = ("dns://", "tls://", "grpc://", "https://", "quic://", "unix://")


def parse_to(d: Any, targets: Sequence[str]) -> list[tuple[str, int]]:
    """TO arguments as (host, port): `IP`, `IP:port`, `[IPv6]:port`, `dns://…`, or a
    resolv.conf-style file whose `nameserver` lines are used (port 53)."""
    out: list[tuple[str, int]] = []
    for text in targets:
        scheme, _, rest = text.rpartition("://")
        if scheme and scheme != "dns":
            if scheme == "tls":
                raise d.error(f"'{text}': DNS-over-TLS upstreams are not supported by "
                              "dnsserver (see corefile-compat.md)")
            raise d.error(f"'{scheme}' is not supported as a destination protocol in "
                          f"forward: {rest}")
        if not rest:
            raise d.error(f"invalid address: {text!r}")
        addr = _host_port(rest)
        if addr is not None:
            out.append(addr)
            continue
        out.extend(_resolv_conf(d, rest))
    if not out:
        raise d.error("no nameservers found")
    return out


def _host_port(text: str) -> tuple[str, int] | None:
    """(host, port) for an address, or None when `text` is not one (then it may be a file)."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if match:
        host, port_text = (match.group(1), match.group(2)) if match.group(1) else (
            match.group(3), match.group(4))
        port = int(port_text)
    else:
        host, port = text, 53
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if not 0 < port < 65536:
        return None
    return (str(ip), port)


def _resolv_conf(d: Any, path: str) -> list[tuple[str, int]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise d.error(f"not an IP address or file: {path!r}") from None
    except OSError as exc:
        raise d.error(f"failed to open file {path!r}: {exc.strerror}") from None
    servers: list[tuple[str, int]] = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            ip = ipaddress.ip_address(fields[1].split("%", 1)[0])
        except ValueError:
            log.warning("%s:%d: ignoring nameserver %r: not an IP address", path, number,
                        fields[1])
            continue
        servers.append((str(ip), 53))
    return servers


def _uint(opt: Any, text: str) -> int:
    if not text.isdigit():
        raise opt.error(f"{opt.name}: invalid number {text!r}")
    return int(text)


def _rcodes(opt: Any, names: Sequence[str]) -> list[int]:
    out = []
    for name in names:
        code = _RCODE_NUMBERS.get(name.upper())
        if code is None:
            raise opt.error(f"{name} is not a valid rcode")
        out.append(code)
    return out


# miekg/dns StringToRcode: the names CoreDNS accepts for `next` and `failover`.
_RCODE_NUMBERS = {name: code for code, name in RCODE_NAMES.items()}


def setup(d: Any, ctx: Any) -> ForwardPlugin:
    """`forward FROM TO... { options }` -> a ForwardPlugin; errors name the Corefile line."""
    args = d.arg_count(2, None)
    zones = zone_args((args[0],))
    from_zone = zones[0]
    if len(zones) > 1:
        log.warning("Unsupported CIDR notation: '%s' expands to multiple zones. Using only '%s'.",
                    args[0], from_zone)
    addrs = parse_to(d, args[1:])
    kw: dict[str, Any] = {}
    ignored: list[str] = []
    hc = {"interval": HC_INTERVAL, "rd": True, "domain": "."}
    for opt in d.block:
        name = opt.name
        if name == "except":
            opt.arg_count(1, None)
            for zone in opt.args:
                ignored.extend(zone_args((zone,)))
        elif name in ("max_fails", "max_concurrent", "max_connect_attempts", "max_idle_conns"):
            opt.arg_count(1, 1)
            value = _uint(opt, opt.args[0])
            if name != "max_idle_conns":  # no connection pool, nothing to bound
                kw[name] = value
        elif name == "health_check":
            opt.arg_count(1, None)
            hc["interval"] = parse_duration(opt, opt.args[0])
            rest = list(opt.args[1:])
            while rest:
                word = rest.pop(0)
                if word == "no_rec":
                    hc["rd"] = False
                elif word == "domain":
                    if not rest:
                        raise opt.error("health_check: domain needs a name")
                    hc["domain"] = zone_args((rest.pop(0),))[0]
                else:
                    raise opt.error(f"health_check: unknown option {word}")
        elif name in ("force_tcp", "prefer_udp", "failfast_all_unhealthy_upstreams"):
            opt.arg_count(0, 0)
            kw["failfast" if name == "failfast_all_unhealthy_upstreams" else name] = True
        elif name == "tls":
            # Only DNS-over-TLS upstreams use it, and those are refused above.
            opt.arg_count(0, 3)
        elif name == "tls_servername":
            opt.arg_count(1, 1)
        elif name == "expire":
            opt.arg_count(1, 1)
            kw["expire"] = parse_duration(opt, opt.args[0])
        elif name == "policy":
            opt.arg_count(1, 1)
            policy = POLICIES.get(opt.args[0])
            if policy is None:
                raise opt.error(f"unknown policy '{opt.args[0]}'")
            kw["policy"] = policy()
        elif name in ("next", "failover"):
            opt.arg_count(1, None)
            codes = _rcodes(opt, opt.args)
            if name == "failover" and 0 in codes:
                raise opt.error("NoError cannot be used in failover")
            kw["next_rcodes" if name == "next" else "failover_rcodes"] = codes
        elif name == "min_max_dial_timeout":
            opt.arg_count(2, 2)
            low, high = (parse_duration(opt, a) for a in opt.args)
            if low > high:
                raise opt.error("min_max_dial_timeout: min is larger than max")
            kw["dial_timeout"] = low
        else:
            raise opt.error(f"unknown property '{name}'")
    if len(addrs) > MAX_UPSTREAMS:
        raise d.error(f"more than {MAX_UPSTREAMS} TOs configured: {len(addrs)}")
    hc_proto = "tcp" if kw.get("force_tcp") else "udp"
    proxies = [Proxy(addr, hc_interval=hc["interval"], hc_proto=hc_proto,
                     hc_recursion_desired=hc["rd"], hc_domain=hc["domain"],
                     expire=kw.get("expire", DEFAULT_EXPIRE)) for addr in addrs]
    return ForwardPlugin(from_zone, proxies, ignored=ignored, **kw)


SETUPS = {"forward": setup}
