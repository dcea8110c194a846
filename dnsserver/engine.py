"""The query path of one listener: the fast path of ready answer bytes, and the slow path that
decodes a query with dnslib, picks the server block by zone, runs its plugin chain and encodes.

A query that is byte-identical to an earlier one but for its ID gets the earlier answer's bytes
with the ID patched (and the SOA serial, when it moved). Those bytes are dropped as soon as one
of the cluster-store tags the answer depends on changes, and only then.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dnslib import QTYPE, RR, TXT, DNSRecord

from dnsserver import wire
from dnsserver.plugin import (
    END,
    FORMERR,
    NOTIMP,
    PASS,
    REFUSED,
    SERVFAIL,
    Lease,
    Plugin,
    Reply,
    Request,
    make_reply,
)
from dnsserver.store import ClusterStore, Tag

log = logging.getLogger("dnsserver")

BADVERS = 16
# Never relayed without the slow path: RFC 8482's ANY, and zone transfers (refused).
_NOT_RELAYED = frozenset((QTYPE.ANY, QTYPE.AXFR, QTYPE.IXFR))
DEFAULT_FAST_PATH_ENTRIES = 100_000
_SOA_TIMERS = struct.pack("!III", 7200, 1800, 86400)
# Fast-path answers are not timed one by one (the clock would cost a tenth of the answer); they
# are counted in the first duration bucket with this typical time, measured in bench/.
FAST_PATH_SECONDS = 3e-6
# A fast-path entry: [answer without ID, whether it needs work before each send (records to
# rotate, or a lease to check and age), the hit counter of its metrics key (a one-int list
# shared by every entry with that key), query logger or None, rotation [start, end, size,
# count, turn] or None, lease (see `_lease`) or None, its place (tcp, key), its tags,
# SOA serial offset or 0].
TAIL, SPECIAL, HITS, LOGGER, ROTATION, LEASE, PLACE, TAGS, SERIAL_AT = range(9)
# A lease as kept: [clock, source, until, next re-patch, birth, ttl, TTL offsets, countdown,
# plugin hit counter, hits here, last hit, on_expire, revive].
(L_CLOCK, L_SOURCE, L_UNTIL, L_NEXT, L_BIRTH, L_TTL, L_OFFSETS, L_COUNTDOWN, L_PLUGIN_HITS,
 L_HITS, L_LAST, L_ON_EXPIRE, L_REVIVE) = range(13)


@dataclass
class ServerBlockRuntime:
    """A server block as it runs: the zones it serves on this listener and its first plugin."""

    zones: tuple[str, ...]
    first: Plugin
    plugins: tuple[Plugin, ...] = ()


class FastPath:
    """Encoded answers keyed on the query without its ID, per transport: one layer of kept
    answers for every plugin. An entry goes when a cluster-store tag it depends on changes,
    when its lease runs out (answers that age), or when the table is cleared for room; each
    way forgets it under every tag it was filed under, so the index never outgrows the table.
    """

    def __init__(self, store: ClusterStore | None, max_entries: int = DEFAULT_FAST_PATH_ENTRIES):
        self.store = store
        self.max_entries = max_entries
        self.udp: dict[bytes, list] = {}
        self.tcp: dict[bytes, list] = {}
        self._by_tag: dict[Tag, set[tuple[bool, bytes]]] = {}
        # Entries holding the store's SOA serial, re-patched when the serial moves (at most
        # once a second: it is the time of the last change), so their hits pay nothing for it.
        self._with_serial: dict[tuple[bool, bytes], list] = {}
        self._serial = store.serial & 0xFFFFFFFF if store is not None else 0
        self.evictions = 0
        # Hit counters per metrics key; the flush reads these, never the entries.
        self._hits: dict[Any, list[int]] = {}
        if store is not None:
            store.add_listener(self.invalidate)

    def __len__(self) -> int:
        return len(self.udp) + len(self.tcp)

    def tag_index_size(self) -> int:
        """(tag, entry) pairs in the invalidation index: never more than the entries' tags."""
        return sum(len(places) for places in self._by_tag.values())

    def close(self) -> None:
        """Stop following the store (the engine is being replaced) and drop every entry."""
        if self.store is not None:
            self.store.remove_listener(self.invalidate)
        self.clear()

    def remember(self, query: bytes, answer: bytes, tags: set[Tag], tcp: bool,
                 stat_key: Any = None, logger: Any = None, rotate: bool = False,
                 lease: Lease | None = None) -> None:
        if len(self) >= self.max_entries:
            # Bounded memory: start over rather than track recency on the hot path.
            self.clear()
            self.evictions += 1
        # Queries that differ only by an EDNS cookie share one entry (see wire.without_cookie).
        key = (wire.without_cookie(query) or query)[2:]
        place = (tcp, key)
        self._drop(place)
        tail = answer[2:]
        kept_lease = None
        if lease is not None:
            offsets = wire.ttl_offsets(answer)
            if offsets is None:
                return
            kept_lease = [lease.clock, lease.source, lease.until, lease.birth + 1, lease.birth,
                          lease.ttl, tuple(at - 2 for at in offsets), lease.countdown,
                          lease.hits, 0, 0.0, lease.on_expire, lease.revive]
            # The next re-patch is due when the age of the records in these bytes next ticks.
            kept_lease[L_NEXT] = lease.birth + (lease.ttl - lease.shown) + 1
        serial_at = 0
        if self.store is not None and lease is None:
            # Answers that age hold the serial of when they were cached, as CoreDNS's cache.
            serial = self.store.serial & 0xFFFFFFFF
            at = tail.rfind(struct.pack("!I", serial) + _SOA_TIMERS)
            serial_at = at if at > 0 else 0
        rotation = None
        if rotate:
            run = wire.address_run(answer)
            if run is not None:
                start, end, size = run
                rotation = [start - 2, end - 2, size, (end - start) // size, 0]
        hits = self._hits.get(stat_key)
        if hits is None:
            hits = self._hits[stat_key] = [0]
        frozen = tuple(tags)
        entry = [tail, bool(rotation or kept_lease), hits, logger, rotation, kept_lease, place,
                 frozen, serial_at]
        (self.tcp if tcp else self.udp)[key] = entry
        for tag in frozen:
            places = self._by_tag.get(tag)
            if places is None:
                self._by_tag[tag] = {place}
            else:
                places.add(place)
        if serial_at:
            self._with_serial[place] = entry

    def lookup(self, query: bytes, tcp: bool) -> bytes | None:
        """The answer bytes for `query` (ID patched), or None. The transports inline this."""
        entry = self.find(query, tcp)
        if entry is None:
            return None
        tail = entry[TAIL] if not entry[SPECIAL] else self.current(entry)
        if tail is None:
            return None
        entry[HITS][0] += 1
        return query[:2] + tail

    def find(self, query: bytes, tcp: bool) -> list | None:
        """The entry for `query`: by its bytes, else by its bytes without an EDNS cookie (a
        miss costs a short scan of the OPT record; the hit path never gets here)."""
        table = self.tcp if tcp else self.udp
        entry = table.get(query[2:])
        if entry is None and len(query) > 12 and query[11]:
            bare = wire.without_cookie(query)
            if bare is not None:
                entry = table.get(bare[2:])
        return entry

    def current(self, entry: list) -> bytes | None:
        """The bytes to send for an entry that needs work, or None when its lease ran out (the
        entry is gone then, and the slow path answers): TTLs aged to the current second, and
        address records rotated one step per answer (`loadbalance`)."""
        lease = entry[LEASE]
        if lease is not None:
            now = lease[L_CLOCK]()
            source = lease[L_SOURCE]
            if not source.live:
                revive = lease[L_REVIVE]
                if revive is None or revive() is None:
                    self._drop(entry[PLACE])
                    return None
            born = source.stored
            if born != lease[L_BIRTH]:
                # Stored again as new (revived): the countdown starts over from the full TTL.
                lease[L_UNTIL] += born - lease[L_BIRTH]
                lease[L_BIRTH] = lease[L_NEXT] = born
                lease[L_HITS] = 0
            if now >= lease[L_UNTIL]:
                self._drop(entry[PLACE])
                return None
            lease[L_PLUGIN_HITS][0] += 1
            lease[L_HITS] += 1
            lease[L_LAST] = now
            if now >= lease[L_NEXT]:
                age = int(now - lease[L_BIRTH])
                lease[L_NEXT] = lease[L_BIRTH] + age + 1
                if lease[L_COUNTDOWN]:
                    entry[TAIL] = wire.patch_ttls(entry[TAIL], lease[L_OFFSETS],
                                                  lease[L_TTL] - age)
        tail = entry[TAIL]
        rotation = entry[ROTATION]
        if rotation is None:
            return tail
        start, end, size, count, turn = rotation
        turn = rotation[4] = (turn + 1) % count
        cut = start + turn * size
        return tail[:start] + tail[cut:end] + tail[start:cut] + tail[end:]

    def _drop(self, place: tuple[bool, bytes]) -> None:
        tcp, key = place
        entry = (self.tcp if tcp else self.udp).pop(key, None)
        if entry is None:
            return
        by_tag = self._by_tag
        for tag in entry[TAGS]:
            places = by_tag.get(tag)
            if places is not None:
                places.discard(place)
                if not places:
                    del by_tag[tag]
        if entry[SERIAL_AT]:
            self._with_serial.pop(place, None)
        lease = entry[LEASE]
        if lease is not None and lease[L_HITS] and lease[L_ON_EXPIRE] is not None:
            lease[L_ON_EXPIRE](lease[L_HITS], lease[L_LAST])

    def invalidate(self, tags: set[Tag]) -> None:
        """A store listener: drop the entries filed under `tags`; re-patch kept serials."""
        by_tag = self._by_tag
        for tag in tags:
            places = by_tag.get(tag)
            if places:
                for place in list(places):
                    self._drop(place)
        store = self.store
        if store is not None and (store.serial & 0xFFFFFFFF) != self._serial:
            serial = self._serial = store.serial & 0xFFFFFFFF
            for entry in self._with_serial.values():
                entry[TAIL] = wire.patch_serial(entry[TAIL], entry[SERIAL_AT], serial)

    def take_hits(self) -> dict[Any, int]:
        """Fast-path hits per metrics key since the last call (for the metrics flush): one
        pass over the metrics keys, however many entries there are."""
        hits: dict[Any, int] = {}
        for key, cell in self._hits.items():
            if cell[0]:
                if key is not None:
                    hits[key] = cell[0]
                cell[0] = 0
        return hits

    def clear(self) -> None:
        for table in (self.udp, self.tcp):
            for entry in table.values():
                lease = entry[LEASE]
                if lease is not None and lease[L_HITS] and lease[L_ON_EXPIRE] is not None:
                    lease[L_ON_EXPIRE](lease[L_HITS], lease[L_LAST])
            table.clear()
        self._by_tag.clear()
        self._with_serial.clear()


def _with_opt(answer: bytes, edns: tuple[int, int, bool], limit: int) -> bytes | None:
    """`answer` with our OPT added (an upstream that wrote none), or None."""
    try:
        message = DNSRecord.parse(answer)
        wire.add_opt(message, wire.udp_size(edns), edns[2])
        return bytes(wire.pack_limited(message, limit))
    except Exception:  # dnslib cannot read or write it back
        return None


def _truncated(answer: bytes, limit: int) -> bytes | None:
    """`answer` cut to `limit` bytes as the slow path would (TC set), or None."""
    try:
        return wire.pack_limited(DNSRecord.parse(answer), limit)
    except Exception:  # dnslib cannot read or write it back
        return None


class QueryEngine:
    """Everything between the bytes of a query and the bytes of its answer, for one listener."""

    def __init__(self, blocks: list[ServerBlockRuntime], store: ClusterStore | None,
                 fast_path_entries: int = DEFAULT_FAST_PATH_ENTRIES,
                 on_error: Callable[[Request, BaseException], None] | None = None,
                 server_label: str = "dns://:53", query_counts: Any = None) -> None:
        self.blocks = blocks
        self.fast = FastPath(store, fast_path_entries)
        self.on_error = on_error
        self.server_label = server_label
        # metrics.QueryCounts when metrics are on: slow-path answers are recorded as they go,
        # fast-path hits are collected by `flush_hits` at each metrics flush.
        self.query_counts = query_counts
        # Whether any block has a plugin that relays queries (`relay`).
        self.relays = any(type(p).relay_step is not Plugin.relay_step and hasattr(p, "relay")
                          for block in blocks for p in block.plugins)
        # Zones sorted longest first, so the first match is the longest match.
        self._zone_index = sorted(
            ((zone, block) for block in blocks for zone in block.zones),
            key=lambda item: len(item[0]), reverse=True)

    def select_block(self, lname: str) -> tuple[str, ServerBlockRuntime] | None:
        for zone, block in self._zone_index:
            if zone == "." or lname == zone or lname.endswith("." + zone):
                return zone, block
        return None

    def relay(self, data: bytes, client: tuple[str, int],
              send: Callable[[bytes, tuple[str, int]], None],
              fallback: Callable[[bytes, tuple[str, int], float], None]) -> bool:
        """Answer a plain UDP query that `forward` relays, without the slow path: True when
        it went upstream (the answer is sent with `send`, or the query handed to `fallback`
        with its deadline when the answer is anything but plain), False when the slow path
        must answer it. A query qualifies when every plugin before the `forward` that takes
        it only hands it on or only reorders the answer's bytes (Plugin.relay_step)."""
        plain = wire.read_plain_query(data)
        if plain is None:
            return False
        qname, qtype, qclass, edns = plain
        if qclass != 1 or qtype in _NOT_RELAYED or (edns is not None and edns[1] != 0):
            return False
        lname = qname.lower()
        selected = self.select_block(lname)
        if selected is None:
            return False
        zone, block = selected
        plugin = block.first
        transforms = []
        while plugin is not END:
            step = plugin.relay_step(lname, qtype)
            if step is None:
                return False
            if step is plugin:
                break
            if step is not PASS:
                transforms.append(step)
            plugin = plugin.next
        else:
            return False
        started = time.perf_counter()
        limit = wire.udp_size(edns)
        qc = self.query_counts

        def deliver(reply: bytes, _upstream: str) -> None:
            for transform in transforms:
                reply = transform(reply)
            answer = data[:2] + reply[2:]
            if edns is not None and not wire.has_opt(answer):
                # The client speaks EDNS: its answer carries an OPT, as the slow path's.
                answer = _with_opt(answer, edns, limit) or wire.header_error(data, SERVFAIL)
            if len(answer) > limit:  # an upstream that ignored the client's size
                answer = _truncated(answer, limit) or wire.header_error(data, SERVFAIL)
            send(answer, client)
            if qc is not None:
                family = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
                stat_key = qc.key(self.server_label, zone, "udp", family, qtype,
                                       answer[3] & 0xF, plugin.name,
                                       edns is not None and edns[2], len(data), len(answer))
                qc.record(stat_key, time.perf_counter() - started)

        def hand_over(deadline: float) -> None:
            fallback(data, client, deadline)

        return plugin.relay(data, wire.question_end(data), deliver, hand_over)

    async def resolve(self, data: bytes, client: tuple[str, int], tcp: bool,
                      remember: bool = True, meta: dict[str, Any] | None = None) -> bytes | None:
        """The slow path: the answer bytes for a query, or None to drop it."""
        started = time.perf_counter()
        if len(data) < 12 or data[2] & 0x80:
            # Too short to answer, or a response: never answer a response (no reflection loops).
            return None
        proto = "tcp" if tcp else "udp"
        plain = wire.read_plain_query(data)
        if plain is not None:
            qname, qtype, qclass, edns = plain
            req = Request(None, qname, qtype, proto, client, "", 0, meta=meta, wire=data,
                          qclass=qclass)
        else:
            try:
                query = DNSRecord.parse(data)
            except Exception:  # dnslib raises several types on malformed input
                return wire.header_error(data, FORMERR)
            if query.header.opcode != 0:
                return wire.header_error(data, NOTIMP)
            if len(query.questions) != 1 or not wire.encodable_name(query.q.qname):
                return wire.header_error(data, FORMERR)
            opt = wire.query_opt(query)
            edns = None if opt is None else (opt.rclass, (opt.ttl >> 16) & 0xFF,
                                             bool(opt.ttl & 0x8000))
            q = query.q
            req = Request(query, str(q.qname), q.qtype, proto, client, "", 0, meta=meta, wire=data,
                          qclass=q.qclass)
        do = req.do = edns is not None and edns[2]
        limit = req.max_size = wire.MAX_TCP_SIZE if tcp else wire.udp_size(edns)
        reply = await self._dispatch(req, edns)
        relayed = reply.wire
        if relayed is not None and len(relayed) <= limit and (
                edns is None or wire.has_opt(relayed)):
            # An upstream's bytes, checked when they arrived: relayed with the client's ID.
            answer = data[:2] + relayed[2:]
            rcode = relayed[3] & 0xF
        else:
            answer = self._encode(req, reply, data, edns, limit)
            rcode = answer[3] & 0xF
        stat_key = None
        qc = self.query_counts
        if qc is not None:
            from dnsserver import metrics

            family = socket.AF_INET6 if ":" in client[0] else socket.AF_INET
            stat_key = metrics.key(self.server_label, req.server_zone or metrics.DROPPED_ZONE,
                                   req.proto, family, req.qtype, rcode,
                                   reply.plugin, do, len(data), len(answer))
            qc.record(stat_key, time.perf_counter() - started)
        logger = req.meta.get("log")
        if logger is not None:
            logger.write(client, req.proto, data, answer,
                         int((time.perf_counter() - started) * 1e9))
        if remember and reply.tags is not None:
            self.fast.remember(data, answer, reply.tags, tcp, stat_key, logger,
                               rotate=bool(req.meta.get("loadbalance")), lease=reply.lease)
        return answer

    def _encode(self, req: Request, reply: Reply, data: bytes,
                edns: tuple[int, int, bool] | None, limit: int) -> bytes:
        ident = (data[0] << 8) | data[1]
        try:
            message = reply.message
        except Exception as exc:  # relayed bytes that walked but that dnslib cannot read
            log.error("plugin/errors: 2 %s: cannot decode the answer: %s", req.lname, exc)
            reply.message = make_reply(req, SERVFAIL, aa=False)
            reply.plugin, reply.tags, reply.lease = "server", None, None
            message = reply.message
        message.header.id = ident
        if edns is not None and wire.query_opt(message) is None:
            # One OPT at most (RFC 6891 6.1.1): BADVERS replies come with their own.
            wire.add_opt(message, wire.udp_size(edns), req.do)
        try:
            return bytes(wire.pack_limited(message, limit))
        except Exception as exc:  # a record dnslib cannot encode: the client still gets an answer
            log.error("plugin/errors: 2 %s: cannot encode the answer: %s", req.lname, exc)
            reply.message = make_reply(req, SERVFAIL, aa=False)
            reply.plugin, reply.tags, reply.lease = "server", None, None
            message = reply.message
            message.header.id = ident
            return bytes(wire.pack_limited(message, limit))

    def flush_hits(self) -> None:
        """Move fast-path hit counts into the metrics' query counts (a metrics flush hook)."""
        qc = self.query_counts
        if qc is None:
            return
        for k, n in self.fast.take_hits().items():
            rec = qc.data[k]
            rec[0] += n  # the first duration bucket
            rec[-1] += n * FAST_PATH_SECONDS

    async def _dispatch(self, req: Request, edns: tuple[int, int, bool] | None) -> Reply:
        if edns is not None and edns[1] != 0:
            # EDNS version we don't speak: BADVERS (RFC 6891 6.1.3); the high bits go in the OPT.
            message = make_reply(req, BADVERS & 0xF, aa=False, ra=False)
            wire.add_opt(message, wire.MAX_UDP_SIZE, req.do, ext_rcode=BADVERS >> 4)
            return Reply(message, "edns")
        if req.qclass != 1 or req.qtype in (QTYPE.AXFR, QTYPE.IXFR):
            # Not class IN, or a zone transfer nobody allowed: refuse (CoreDNS's `transfer`
            # plugin is what would allow AXFR; without it CoreDNS refuses too).
            return Reply(make_reply(req, REFUSED, aa=False, ra=False), "server", tags=set())
        selected = self.select_block(req.lname)
        if selected is None:
            return Reply(make_reply(req, REFUSED, aa=False, ra=False), "server", tags=set())
        req.server_zone, block = selected
        if req.qtype == QTYPE.ANY:
            # RFC 8482: one small synthesized record instead of everything we have, so ANY
            # can't be used for amplification (CoreDNS's `any` plugin; always on here).
            # HINFO's data is two character-strings: the wire form of a two-string TXT.
            # The owner is the parsed name: its text form does not survive a re-parse when a
            # label holds a dot or is empty.
            hinfo = RR(req.message.q.qname, QTYPE.HINFO, ttl=8482,
                       rdata=TXT([b"ANY obsoleted", b"See RFC 8482"]))
            return Reply(make_reply(req, 0, [hinfo]), "any", tags=set())
        try:
            return await block.first.serve(req)
        except Exception as exc:
            if self.on_error is not None:
                self.on_error(req, exc)
            else:
                log.exception("plugin/errors: 2 %s: plugin chain failed", req.qname)
            return Reply(make_reply(req, SERVFAIL, aa=False), "server")

    async def lookup(self, name: str, qtype: int, depth: int = 0) -> DNSRecord | None:
        """Resolve a name through this listener's own blocks (CoreDNS's `upstream` lookups)."""
        if depth > 4:
            return None
        query = DNSRecord.question(name, QTYPE.get(qtype))
        req = Request(query, name, qtype, "udp", ("127.0.0.1", 0), "", wire.MAX_TCP_SIZE)
        req.meta["depth"] = depth + 1
        reply = await self._dispatch(req, None)
        return reply.message
