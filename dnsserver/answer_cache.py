"""The cache plugin's pure part: which answers are cached and for how long (CoreDNS's rules), and
the success and denial stores with counting-down TTLs, a stale window and prefetch popularity.

No sockets, no event loop: time comes from an injected clock, so TTL countdown is tested without
waiting.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cachetools import TLRUCache
from dnslib import QTYPE, RR, DNSRecord

SUCCESS = "success"
DENIAL = "denial"

NOERROR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 2, 3, 4
OPCODE_NOTIFY, OPCODE_UPDATE = 4, 5

# CoreDNS's dnsutil defaults: answers live 5 s to 1 h, denials up to half that.
MIN_TTL = 5
MAX_TTL = 3600
MAX_DENIAL_TTL = MAX_TTL // 2
DEFAULT_CAPACITY = 9984  # 256 shards of 39 in CoreDNS
MAX_SERVFAIL_TTL = 300.0  # RFC 2308 7.1

# Serial-number arithmetic window for RRSIG validity (RFC 4034 3.1.5).
_YEAR68 = 1 << 31


class Kind(enum.Enum):
    """What a response is, for caching (CoreDNS's response.Type)."""

    NOERROR = "NOERROR"
    NXDOMAIN = "NXDOMAIN"
    SERVFAIL = "SERVERERROR"  # SERVFAIL and NOTIMP
    NODATA = "NODATA"
    DELEGATION = "DELEGATION"
    META = "META"  # NOTIFY, AXFR, IXFR
    UPDATE = "UPDATE"
    OTHERERROR = "OTHERERROR"


# Where each cacheable kind is kept; the others are never kept.
STORE_OF = {Kind.NOERROR: SUCCESS, Kind.DELEGATION: SUCCESS,
            Kind.NXDOMAIN: DENIAL, Kind.NODATA: DENIAL, Kind.SERVFAIL: DENIAL}

# (lower-cased qname, qtype, DO bit, CD bit): as CoreDNS keys its cache.
Key = tuple[str, int, bool, bool]


def make_key(lname: str, qtype: int, do: bool, cd: bool) -> Key:
    return (lname, qtype, bool(do), bool(cd))


def classify(msg: DNSRecord, do: bool, wall_now: float | None = None) -> Kind:
    """The kind of response `msg` is. With `do`, an expired RRSIG makes it an error."""
    header = msg.header
    if header.opcode == OPCODE_UPDATE:
        return Kind.UPDATE
    if header.opcode == OPCODE_NOTIFY:
        return Kind.META
    if msg.questions and msg.q.qtype in (QTYPE.AXFR, QTYPE.IXFR):
        return Kind.META
    if do and _has_expired_rrsig(msg, time.time() if wall_now is None else wall_now):
        return Kind.OTHERERROR
    rcode = header.rcode
    if msg.rr and rcode == NOERROR:
        return Kind.NOERROR
    soa = any(rr.rtype == QTYPE.SOA for rr in msg.auth)
    ns = any(rr.rtype == QTYPE.NS for rr in msg.auth)
    if soa and rcode == NOERROR:
        return Kind.NODATA
    if soa and rcode == NXDOMAIN:
        return Kind.NXDOMAIN
    if rcode in (SERVFAIL, NOTIMP):
        return Kind.SERVFAIL
    if ns and rcode == NOERROR:
        return Kind.DELEGATION
    if rcode == NOERROR:
        return Kind.NOERROR
    return Kind.OTHERERROR


def _has_expired_rrsig(msg: DNSRecord, now: float) -> bool:
    utc = int(now)
    for rr in (*msg.rr, *msg.auth, *msg.ar):
        if rr.rtype != QTYPE.RRSIG:
            continue
        inception, expiration = int(rr.rdata.sig_inc), int(rr.rdata.sig_exp)
        # The 32-bit times wrap: place each in the window around now, as miekg/dns does.
        ti = inception + _wrap(inception, utc)
        te = expiration + _wrap(expiration, utc)
        if not ti <= utc <= te:
            return True
    return False


def _wrap(value: int, utc: int) -> int:
    # Go's integer division truncates towards zero; Python's // floors.
    diff = value - utc
    quotient = abs(diff) // _YEAR68
    return (quotient if diff >= 0 else -quotient) * _YEAR68


def minimal_ttl(msg: DNSRecord, kind: Kind, maximum: int) -> int:
    """The lowest TTL in the message, at most `maximum`; 5 s for kinds without a meaningful one.

    For a denial the SOA counts with the lower of its TTL and its MINIMUM field (RFC 2308 5).
    """
    if kind not in (Kind.NOERROR, Kind.NXDOMAIN, Kind.NODATA):
        return MIN_TTL
    extra = [rr for rr in msg.ar if rr.rtype != QTYPE.OPT]
    if not msg.rr and not msg.auth and not extra:
        return MIN_TTL  # nothing to take a TTL from: short, as a fail safe
    lowest = maximum
    for rr in (*msg.rr, *msg.auth, *extra):
        lowest = min(lowest, rr.ttl)
    if kind is not Kind.NOERROR:
        for rr in msg.auth:
            if rr.rtype == QTYPE.SOA:
                lowest = min(lowest, int(rr.rdata.times[-1]))
    return max(lowest, 0)


def compute_ttl(msg_ttl: float, min_ttl: float, max_ttl: float) -> float:
    """Raised to the minimum, then capped by the maximum: the maximum wins when they cross."""
    return min(max(msg_ttl, min_ttl), max_ttl)


def in_zones(lname: str, zones: Iterable[str]) -> bool:
    return any(z == "." or lname == z or lname.endswith("." + z) for z in zones)


@dataclass(frozen=True)
class CacheSettings:
    """Everything `cache` can be told in a Corefile, with CoreDNS's defaults; durations in s."""

    success_capacity: int = DEFAULT_CAPACITY
    success_max_ttl: int = MAX_TTL
    success_min_ttl: int = MIN_TTL
    denial_capacity: int = DEFAULT_CAPACITY
    denial_max_ttl: int = MAX_DENIAL_TTL
    denial_min_ttl: int = MIN_TTL
    servfail_ttl: float = float(MIN_TTL)
    prefetch_amount: int = 0
    prefetch_window: float = 60.0
    prefetch_percentage: int = 10
    stale_up_to: float = 0.0  # 0: serve_stale off
    verify_stale: bool = False
    keepttl: bool = False
    success_disabled: tuple[str, ...] = ()
    denial_disabled: tuple[str, ...] = ()

    def duration(self, msg: DNSRecord, kind: Kind) -> float:
        """How long CoreDNS keeps `msg` (and the TTL it gives its records on the way out)."""
        if kind in (Kind.NXDOMAIN, Kind.NODATA):
            return compute_ttl(minimal_ttl(msg, kind, self.denial_max_ttl),
                               self.denial_min_ttl, self.denial_max_ttl)
        if kind is Kind.SERVFAIL:
            return self.servfail_ttl
        return compute_ttl(minimal_ttl(msg, kind, self.success_max_ttl),
                           self.success_min_ttl, self.success_max_ttl)


@dataclass(eq=False, slots=True)
class Entry:
    """One cached response: its records (TTLs already set to `orig_ttl`) and bookkeeping."""

    rcode: int
    aa: bool
    ad: bool
    ra: bool
    answer: tuple[RR, ...]
    authority: tuple[RR, ...]
    additional: tuple[RR, ...]  # never the OPT: that is hop-by-hop
    orig_ttl: int
    stored: float
    store: str  # SUCCESS or DENIAL
    hits: int = 0  # prefetch popularity: hits with no gap longer than the window
    last_hit: float = field(default=-math.inf)
    # The cluster-store tags of the answer (None for answers from outside the cluster): the
    # entry goes the moment one of them changes, not when its TTL runs out.
    tags: frozenset | None = None
    # False once the entry left its store (replaced, evicted, invalidated): answers kept
    # from it elsewhere (the fast path) go with it.
    live: bool = True
    evicted: bool = False  # left its store only to make room

    def ttl(self, now: float) -> int:
        """Seconds left, truncated as CoreDNS does; 0 or less once expired."""
        return self.orig_ttl - int(now - self.stored)

    def count_hit(self, window: float, now: float) -> int:
        if now - self.last_hit > window:
            self.hits = 1
        else:
            self.hits += 1
        self.last_hit = now
        return self.hits


def make_entry(msg: DNSRecord, duration: float, now: float, store: str,
               tags: frozenset | None = None) -> Entry:
    ttl = int(duration)
    return Entry(
        rcode=msg.header.rcode, aa=bool(msg.header.aa), ad=bool(msg.header.ad),
        ra=bool(msg.header.ra),
        answer=tuple(with_ttl(msg.rr, ttl)), authority=tuple(with_ttl(msg.auth, ttl)),
        additional=tuple(with_ttl(msg.ar, ttl)), orig_ttl=ttl, stored=now, store=store,
        tags=tags)


def with_ttl(rrs: Iterable[RR], ttl: int) -> list[RR]:
    """Copies of `rrs` with every TTL set to `ttl`, OPT left out (the originals may be shared)."""
    return [RR(rr.rname, rr.rtype, rr.rclass, ttl, rr.rdata) for rr in rrs
            if rr.rtype != QTYPE.OPT]


class _Store(TLRUCache):
    """A TLRU store that counts the entries it had to evict for room (not the expired ones)."""

    def __init__(self, maxsize: int, ttu: Callable, timer: Callable[[], float]) -> None:
        super().__init__(maxsize, ttu, timer)
        self.evictions = 0

    def popitem(self) -> tuple:
        item = super().popitem()
        item[1].live = False
        item[1].evicted = True
        self.evictions += 1
        return item

    def discard(self, key: Key) -> None:
        entry = self.pop(key, None)
        if entry is not None:
            entry.live = False


class AnswerCache:
    """The success and denial stores of one `cache` plugin, with CoreDNS's lookup order.

    Entries stay in a store until their TTL and the stale window have both passed (then they
    are dropped) or room is needed (then the least recently used goes).
    """

    def __init__(self, settings: CacheSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        stale = int(settings.stale_up_to)

        def ttu(_key: Key, entry: Entry, _now: float) -> float:
            return entry.stored + entry.orig_ttl + stale

        self.success = _Store(max(settings.success_capacity, 1), ttu, clock)
        self.denial = _Store(max(settings.denial_capacity, 1), ttu, clock)
        self.requests = 0
        self.hits_success = 0
        self.hits_denial = 0
        self.misses = 0
        # Keys of entries holding cluster answers, by store tag (pruned as it grows).
        self._by_tag: dict[object, set[Key]] = {}
        self._filed = 0

    # -- reading ------------------------------------------------------------------------------

    def servable(self, entry: Entry, now: float) -> bool:
        """Fresh, or expired for less than the serve_stale window."""
        ttl = entry.ttl(now)
        stale = int(self.settings.stale_up_to)
        return ttl > 0 or (stale > 0 and -ttl < stale)

    def lookup(self, key: Key, now: float) -> Entry | None:
        """The entry to answer `key` from (fresh or stale), counting the request and hit/miss.

        The denial store is asked first, as in CoreDNS; but a cached SERVFAIL, being transient,
        does not hide a servable answer in the success store.
        """
        self.requests += 1
        denied = self.denial.get(key)
        if denied is not None and self.servable(denied, now):
            if denied.rcode == SERVFAIL:
                good = self.success.get(key)
                if good is not None and self.servable(good, now):
                    self.hits_success += 1
                    return good
            self.hits_denial += 1
            return denied
        good = self.success.get(key)
        if good is not None and self.servable(good, now):
            self.hits_success += 1
            return good
        self.misses += 1
        return None

    def peek(self, key: Key) -> Entry | None:
        """The entry under `key`, if any, without counting or aging it (CoreDNS's exists)."""
        return self.denial.get(key) or self.success.get(key)

    def should_prefetch(self, entry: Entry, now: float) -> bool:
        """Count a hit on `entry`; True when it is popular and close enough to expiring."""
        s = self.settings
        if s.prefetch_amount <= 0:
            return False
        entry.count_hit(s.prefetch_window, now)
        threshold = math.ceil(s.prefetch_percentage / 100 * entry.orig_ttl)
        return entry.hits >= s.prefetch_amount and entry.ttl(now) <= threshold

    # -- writing ------------------------------------------------------------------------------

    def store(self, key: Key, msg: DNSRecord, kind: Kind, duration: float,
              now: float, tags: set | None = None) -> Entry | None:
        """Keep `msg` under `key` if its kind is cacheable there; returns the new entry."""
        which = STORE_OF.get(kind)
        if which is None or int(duration) <= 0:
            return None
        disabled = (self.settings.success_disabled if which == SUCCESS
                    else self.settings.denial_disabled)
        if disabled and in_zones(key[0], disabled):
            return None
        entry = make_entry(msg, duration, now, which, frozenset(tags) if tags else None)
        if which == SUCCESS:
            self.success.discard(key)
            self.success[key] = entry
            # The newest word on a name wins: an old denial must not shadow a new answer.
            self.denial.discard(key)
        else:
            self.denial.discard(key)
            self.denial[key] = entry
            if kind is not Kind.SERVFAIL:
                self.success.discard(key)
        if entry.tags:
            self._file(key, entry.tags)
        return entry

    def revive(self, key: Key, entry: Entry, now: float) -> bool:
        """Store an entry evicted for room again, as new (a miss the same source would have
        answered the same way): only a cluster answer, never invalidated, with nothing newer
        under its key. Counted as a request and a miss, as that miss would be."""
        if not (entry.evicted and entry.tags):
            return False
        store = self.success if entry.store == SUCCESS else self.denial
        if key in self.success or key in self.denial:
            return False
        entry.stored = now
        entry.live = True
        entry.evicted = False
        entry.hits = 0
        store[key] = entry
        self._file(key, entry.tags)
        self.requests += 1
        self.misses += 1
        return True

    def _file(self, key: Key, tags: frozenset) -> None:
        if self._filed > 4 * (self.success.maxsize + self.denial.maxsize):
            # Entries that left by expiry or eviction are still filed: start the index over
            # from the live ones, so it stays within a few times the capacity.
            self._by_tag.clear()
            self._filed = 0
            for store in (self.success, self.denial):
                for k, e in list(store.items()):
                    if e.tags:
                        for tag in e.tags:
                            self._by_tag.setdefault(tag, set()).add(k)
                            self._filed += 1
        for tag in tags:
            self._by_tag.setdefault(tag, set()).add(key)
            self._filed += 1

    def invalidate(self, tags: set) -> None:
        """Drop the entries whose answer depends on one of `tags` (a cluster-store listener)."""
        for tag in tags:
            keys = self._by_tag.pop(tag, None)
            if not keys:
                continue
            for key in keys:
                for store in (self.success, self.denial):
                    entry = store.get(key)
                    if entry is not None and entry.tags and tag in entry.tags:
                        store.discard(key)

    # -- gauges -------------------------------------------------------------------------------

    def entries(self, which: str) -> int:
        store = self.success if which == SUCCESS else self.denial
        store.expire(self.clock())
        return len(store)

    @property
    def evictions_success(self) -> int:
        return self.success.evictions

    @property
    def evictions_denial(self) -> int:
        return self.denial.evictions
