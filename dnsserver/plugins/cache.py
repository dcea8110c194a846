"""The `cache` plugin: its Corefile stanza (CoreDNS's syntax and error messages) and the handler
that answers from the cache, stores what the rest of the chain answers, prefetches popular
entries and serves stale ones, in the background on the event loop.

What is cached and for how long lives in `dnsserver.answer_cache`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from dnslib import DNSRecord

from dnsserver import answer_cache as ac
from dnsserver.corefile import zone_args
from dnsserver.plugin import PASS, Lease, Plugin, Reply, Request, make_reply

log = logging.getLogger("dnsserver")

SHARD_COUNT = 256  # CoreDNS's shards: capacities are rounded as its shards would hold them
MIN_SHARD_SIZE = 4
MAX_TCP_SIZE = 65535


class CachePlugin(Plugin):
    """Answers from the cache; on a miss asks the next plugin and keeps what it says.

    Cumulative plain-int counters for the metrics module (label `zones` is `zones_label`):
    `requests` -> coredns_cache_requests_total, `hits_success` / `hits_denial` ->
    coredns_cache_hits_total{type}, `misses` -> coredns_cache_misses_total, `prefetches` ->
    coredns_cache_prefetch_total, `drops` -> coredns_cache_drops_total, `served_stale` ->
    coredns_cache_served_stale_total, `evictions_success` / `evictions_denial` ->
    coredns_cache_evictions_total{type}; gauges `entries_success` / `entries_denial` ->
    coredns_cache_entries{type} (reading them drops expired entries first).
    """

    name = "cache"

    def __init__(self, zones: tuple[str, ...], settings: ac.CacheSettings,
                 clock: Callable[[], float] = time.monotonic, store: Any = None) -> None:
        super().__init__()
        # The cluster store whose changes drop the cluster answers held here.
        self.store = store
        self.zones = zones
        self.zones_label = ",".join(zones)  # CoreDNS's `zones` metric label
        self.settings = settings
        self.clock = clock
        self.cache = ac.AnswerCache(settings, clock)
        # Counters for coredns_cache_* (requests, hits and misses live in self.cache).
        self.prefetches = 0
        self.drops = 0
        self.served_stale = 0
        self._refreshing: set[ac.Key] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Hits answered from kept bytes of this cache's answers (the fast path counts them).
        self.kept_hits = {ac.SUCCESS: [0], ac.DENIAL: [0]}

    # -- counters, named after the metrics they feed -----------------------------------------

    @property
    def requests(self) -> int:
        return self.cache.requests + self.kept_hits[ac.SUCCESS][0] + self.kept_hits[ac.DENIAL][0]

    @property
    def hits_success(self) -> int:
        return self.cache.hits_success + self.kept_hits[ac.SUCCESS][0]

    @property
    def hits_denial(self) -> int:
        return self.cache.hits_denial + self.kept_hits[ac.DENIAL][0]

    @property
    def misses(self) -> int:
        return self.cache.misses

    @property
    def evictions_success(self) -> int:
        return self.cache.evictions_success

    @property
    def evictions_denial(self) -> int:
        return self.cache.evictions_denial

    @property
    def entries_success(self) -> int:
        return self.cache.entries(ac.SUCCESS)

    @property
    def entries_denial(self) -> int:
        return self.cache.entries(ac.DENIAL)

    # -- serving ------------------------------------------------------------------------------

    def relay_step(self, lname: str, qtype: int) -> Any:
        return PASS if not ac.in_zones(lname, self.zones) else None

    async def serve(self, req: Request) -> Reply:
        lname = req.lname
        if not ac.in_zones(lname, self.zones):
            return await self.next.serve(req)
        now = self.clock()
        key = ac.make_key(lname, req.qtype, req.do, req.cd)
        entry = self.cache.lookup(key, now)
        if entry is None:
            return await self._fetch(req, key)
        if entry.ttl(now) <= 0:
            if self.settings.verify_stale:
                fresh = await self._verify(req, key)
                if fresh is not None:
                    return fresh
            else:
                self._refresh_later(req, key, entry, now)
            self.served_stale += 1
            return Reply(self._from_entry(req, entry, 0), self.name, tags=None)
        if self.cache.should_prefetch(entry, now):
            self._refresh_later(req, key, entry, now)
        return self._answer(req, entry, now)

    def _answer(self, req: Request, entry: ac.Entry, now: float) -> Reply:
        """The answer from a fresh entry, with the lease under which its bytes may be kept:
        until the entry expires (or, with prefetch, until it may be prefetched), or leaves the
        cache, or a cluster tag it depends on changes."""
        keepttl = self.settings.keepttl
        ttl = entry.orig_ttl if keepttl else entry.ttl(now)
        until = entry.stored + entry.orig_ttl
        s = self.settings
        on_expire = None
        if s.prefetch_amount > 0:
            threshold = math.ceil(s.prefetch_percentage / 100 * entry.orig_ttl)
            until -= threshold
            on_expire = self._popularity(entry)
        lease = None
        if now < until:
            revive = self._reviver(req, entry) if entry.tags else None
            lease = Lease(birth=entry.stored, ttl=entry.orig_ttl, shown=ttl, until=until,
                          clock=self.clock, source=entry, hits=self.kept_hits[entry.store],
                          countdown=not keepttl, on_expire=on_expire, revive=revive)
        tags = set(entry.tags) if entry.tags else set()
        return Reply(self._from_entry(req, entry, ttl), self.name,
                     tags=tags if lease is not None else None, lease=lease)

    def _reviver(self, req: Request, entry: ac.Entry) -> Callable[[], float | None]:
        key = ac.make_key(req.lname, req.qtype, req.do, req.cd)

        def revive() -> float | None:
            # A cluster answer evicted for room, its tags unchanged (else the kept bytes
            # would be gone): the kubernetes plugin would answer the miss the same way.
            now = self.clock()
            return now if self.cache.revive(key, entry, now) else None

        return revive

    def _popularity(self, entry: ac.Entry) -> Callable[[int, float], None]:
        window = self.settings.prefetch_window

        def credit(hits: int, last: float) -> None:
            # Hits served from kept bytes count toward prefetch as if the cache saw them.
            if last - entry.last_hit > window:
                entry.hits = 0
            entry.hits += hits
            entry.last_hit = last

        return credit

    def _from_entry(self, req: Request, entry: ac.Entry, ttl: int) -> DNSRecord:
        msg = make_reply(req, entry.rcode, ac.with_ttl(entry.answer, ttl),
                         ac.with_ttl(entry.authority, ttl), ac.with_ttl(entry.additional, ttl),
                         aa=entry.aa, ra=entry.ra)
        # AD only for clients that speak DNSSEC or asked for it (RFC 6840 5.7-5.8).
        msg.header.ad = int(entry.ad and (req.do or req.ad))
        return msg

    async def _fetch(self, req: Request, key: ac.Key) -> Reply:
        """Ask the next plugin, keep the answer when it may be kept, and pass it on."""
        reply = await self.next.serve(req)
        entry = self._keep(req, key, reply)
        if entry is not None:
            # An answer now in the cache reads as the cache will give it from now on, so its
            # kept bytes and the cache's next answers are the same.
            return self._answer(req, entry, self.clock())
        # One that is not kept stays as exactly reproducible as the plugin made it.
        return reply

    def _keep(self, req: Request, key: ac.Key, reply: Reply) -> ac.Entry | None:
        msg = reply.message
        settings = self.settings
        kind = ac.classify(msg, req.do)
        duration = settings.duration(msg, kind)
        ttl = int(duration)
        # Every record leaves with the capped TTL, so a client never sees 1799 then 8.
        if any(rr.ttl != ttl for rr in (*msg.rr, *msg.auth, *msg.ar) if rr.rtype != 41):
            msg.rr = _retimed(msg.rr, ttl)
            msg.auth = _retimed(msg.auth, ttl)
            msg.ar = _retimed(msg.ar, ttl)
        entry = None
        if msg.header.tc or kind not in ac.STORE_OF or ttl <= 0:
            pass
        elif not _matches(req, msg):
            self.drops += 1
        else:
            entry = self.cache.store(key, msg, kind, duration, self.clock(), reply.tags)
        # The entry keeps the source's AD; this client sees it only if it does DNSSEC or
        # asked for it (RFC 6840 5.7-5.8).
        if not req.do and not req.ad:
            msg.header.ad = 0
        return entry

    async def _verify(self, req: Request, key: ac.Key) -> Reply | None:
        """serve_stale verify: the source's answer if it has a usable one, else None."""
        try:
            reply = await self.next.serve(req)
        except Exception as exc:  # the source is down: serve the stale entry
            log.debug("plugin/cache: refreshing %s failed: %s", req.qname, exc)
            return None
        msg = reply.message
        kind = ac.classify(msg, req.do)
        if (msg.header.tc or not _matches(req, msg) or msg.header.rcode not in (0, 3)
                or kind in (ac.Kind.OTHERERROR, ac.Kind.META, ac.Kind.UPDATE)):
            return None
        self._keep(req, key, reply)
        return Reply(msg, reply.plugin, None)

    def _refresh_later(self, req: Request, key: ac.Key, entry: ac.Entry, now: float) -> None:
        """Refresh `key` in the background, at most once at a time per key."""
        if key in self._refreshing:
            return
        self._refreshing.add(key)
        # The refresh outlives the client's query: give it its own copy, over "tcp" so the
        # answer is never truncated for a small client buffer.
        copy = DNSRecord.parse(req.message.pack())
        refresh = req.replace(message=copy, proto="tcp", max_size=MAX_TCP_SIZE, meta={})
        task = asyncio.get_running_loop().create_task(self._refresh(refresh, key, entry, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, req: Request, key: ac.Key, old: ac.Entry, now: float) -> None:
        self.prefetches += 1
        try:
            reply = await self.next.serve(req)
            self._keep(req, key, reply)
        except Exception as exc:
            log.debug("plugin/cache: prefetching %s failed: %s", req.qname, exc)
        finally:
            self._refreshing.discard(key)
        new = self.cache.peek(key)
        if new is not None and new is not old:
            # The new entry keeps the popularity the old one had earned.
            new.hits, new.last_hit = old.hits, now

    async def drain(self) -> None:
        """Wait for the background refreshes started so far."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def start(self) -> None:
        if self.store is not None:
            self.store.add_listener(self.cache.invalidate)

    async def stop(self) -> None:
        if self.store is not None:
            self.store.remove_listener(self.cache.invalidate)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _retimed(rrs: list, ttl: int) -> list:
    opt = [rr for rr in rrs if rr.rtype == 41]
    return ac.with_ttl(rrs, ttl) + opt


def _matches(req: Request, msg: DNSRecord) -> bool:
    """The reply is to this question (CoreDNS's request.Match)."""
    if len(msg.questions) != 1 or not msg.header.qr:
        return False
    q = msg.q
    return str(q.qname).lower() == req.lname and q.qtype == req.qtype


# -- the Corefile stanza -----------------------------------------------------------------------


def setup(d: Any, ctx: Any) -> Plugin:
    zones, settings = parse_config(d, ctx.zones)
    first = next(x for x in ctx.block.directives if x.name == d.name)
    if first is not d:
        raise d.error("this plugin can only be used once per Server Block")
    return CachePlugin(zones, settings, store=ctx.assembly.store)


def effective_capacity(capacity: int) -> int:
    """What CoreDNS really holds for CAPACITY: 256 equal shards of at least 4."""
    return max(int(capacity / SHARD_COUNT), MIN_SHARD_SIZE) * SHARD_COUNT


def parse_config(d: Any, block_zones: tuple[str, ...]) -> tuple[tuple[str, ...], ac.CacheSettings]:
    """`cache [TTL] [ZONES...] { ... }` as CoreDNS reads it, with its error messages."""
    s = ac.CacheSettings()
    args = list(d.args)
    if args:
        ttl = _atoi(args[0])
        if ttl is not None:
            if ttl <= 0:
                raise d.error(f"cache TTL can not be zero or negative: {ttl}")
            s = replace(s, success_max_ttl=ttl, denial_max_ttl=ttl)
            args = args[1:]
    zones = zone_args(tuple(args)) if args else block_zones
    success_cap = denial_cap = ac.DEFAULT_CAPACITY
    for opt in d.block:
        name, oargs = opt.name, opt.args
        if name in (ac.SUCCESS, ac.DENIAL):
            if not oargs:
                raise _arg_err(opt)
            cap = _int(opt, oargs[0])
            if name == ac.SUCCESS:
                success_cap = cap
            else:
                denial_cap = cap
            if len(oargs) > 1:
                ttl = _int(opt, oargs[1])
                if ttl <= 0:
                    raise opt.error(f"cache TTL can not be zero or negative: {ttl}")
                s = replace(s, **{f"{name}_max_ttl": ttl})
                if len(oargs) > 2:
                    minttl = _int(opt, oargs[2])
                    if minttl < 0:
                        raise opt.error(f"cache min TTL can not be negative: {minttl}")
                    s = replace(s, **{f"{name}_min_ttl": minttl})
            # CoreDNS ignores anything after MINTTL; so do we.
        elif name == "prefetch":
            if not 1 <= len(oargs) <= 3:
                raise _arg_err(opt)
            amount = _int(opt, oargs[0])
            if amount < 0:
                raise opt.error(f"prefetch amount should be positive: {amount}")
            s = replace(s, prefetch_amount=amount)
            if len(oargs) > 1:
                s = replace(s, prefetch_window=go_duration(opt, oargs[1]))
            if len(oargs) > 2:
                pct = oargs[2]
                if not pct.endswith("%"):
                    raise opt.error("last character of percentage should be `%`, "
                                    f"but is: '{pct[-1]}'")
                num = _int(opt, pct[:-1])
                if not 10 <= num <= 90:
                    raise opt.error(f"percentage should fall in range [10, 90]: {num}")
                s = replace(s, prefetch_percentage=num)
        elif name == "serve_stale":
            if len(oargs) > 2:
                raise _arg_err(opt)
            up_to = 3600.0
            if oargs:
                up_to = go_duration(opt, oargs[0])
                if up_to < 0:
                    raise opt.error("invalid negative duration for serve_stale")
            verify = False
            if len(oargs) > 1:
                mode = oargs[1].lower()
                if mode not in ("immediate", "verify"):
                    raise opt.error(f"invalid value for serve_stale refresh mode: {mode}")
                verify = mode == "verify"
            s = replace(s, stale_up_to=up_to, verify_stale=verify)
        elif name == "servfail":
            if len(oargs) != 1:
                raise _arg_err(opt)
            seconds = go_duration(opt, oargs[0])
            if seconds < 0:
                raise opt.error("invalid negative ttl for servfail")
            if seconds > ac.MAX_SERVFAIL_TTL:
                raise opt.error("caching SERVFAIL responses over 5 minutes is not permitted")
            s = replace(s, servfail_ttl=seconds)
        elif name == "disable":
            if not oargs:
                raise _arg_err(opt)
            disabled = tuple(_fqdn(z) for z in oargs[1:]) or (".",)
            if oargs[0] == ac.SUCCESS:
                s = replace(s, success_disabled=disabled)
            elif oargs[0] == ac.DENIAL:
                s = replace(s, denial_disabled=disabled)
            else:
                raise opt.error('cache type for disable must be "success" or "denial"')
        elif name == "keepttl":
            if oargs:
                raise _arg_err(opt)
            s = replace(s, keepttl=True)
        else:
            raise _arg_err(opt, unknown=True)
    s = replace(s, success_capacity=effective_capacity(success_cap),
                denial_capacity=effective_capacity(denial_cap))
    return zones, s


_GO_INT = re.compile(r"[+-]?[0-9]+")
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)?")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}


def _atoi(text: str) -> int | None:
    """Go's strconv.Atoi: an int64 in decimal with an optional sign, or None."""
    if not _GO_INT.fullmatch(text):
        return None
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 63) else None


def _int(opt: Any, text: str) -> int:
    value = _atoi(text)
    if value is None:
        reason = "value out of range" if _GO_INT.fullmatch(text) else "invalid syntax"
        raise opt.error(f'strconv.Atoi: parsing "{text}": {reason}')
    return value


def go_duration(opt: Any, text: str) -> float:
    """Go's time.ParseDuration, in seconds (negative allowed, "0" needs no unit)."""
    rest = text
    sign = 1.0
    if rest[:1] in ("+", "-"):
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise opt.error(f'time: invalid duration "{text}"')
    total = 0.0
    while rest:
        m = _DURATION_PART.match(rest)
        number, unit = (m.group(1), m.group(2)) if m else ("", None)
        if number in ("", "."):
            raise opt.error(f'time: invalid duration "{text}"')
        if unit is None:
            tail = rest[len(number):]
            if tail and not tail[0].isdigit():
                raise opt.error(f'time: unknown unit "{tail}" in duration "{text}"')
            raise opt.error(f'time: missing unit in duration "{text}"')
        total += float(number) * _UNITS[unit]
        rest = rest[len(number) + len(unit):]
    return sign * total


def _fqdn(zone: str) -> str:
    zone = zone.lower()
    return zone if zone.endswith(".") else zone + "."


def _arg_err(opt: Any, unknown: bool = False) -> Exception:
    # Caddy names the last token it read: the property itself when it did not read on.
    last = opt.args[-1] if opt.args and not unknown else opt.name
    return opt.error(f"Wrong argument count or unexpected line ending after '{last}'")


SETUPS = {"cache": setup}
