"""DNS wire details the server handles itself: header checks, size limits with truncation as
miekg/dns does it, error replies built from the header alone, and locating the SOA serial in
encoded answers so cached bytes can be kept current. Everything else is dnslib's.
"""

from __future__ import annotations

import struct

from dnslib import EDNS0, QTYPE, DNSHeader, DNSLabel, DNSRecord

HEADER = struct.Struct("!HHHHHH")
MIN_UDP_SIZE = 512
MAX_UDP_SIZE = 4096  # CoreDNS honours a client's EDNS0 buffer size up to this
MAX_TCP_SIZE = 65535

QR = 0x8000
OPCODE_MASK = 0x7800
RD = 0x0100


def header_error(data: bytes, rcode: int) -> bytes | None:
    """A reply carrying only the header of `data` with `rcode`: for queries dnslib can't read.

    Returns None when not even a header can be read, or when `data` is itself a response (so
    that we never answer a response and two servers cannot be made to loop).
    """
    if len(data) < 12:
        return None
    ident, flags = struct.unpack_from("!HH", data)
    if flags & QR:
        return None
    out_flags = QR | (flags & OPCODE_MASK) | (flags & RD) | (rcode & 0xF)
    return HEADER.pack(ident, out_flags, 0, 0, 0, 0)


def encodable_name(name: DNSLabel) -> bool:
    """Whether dnslib can write `name` back: 255 octets at most, no label over 63.

    dnslib reads names it cannot write (over 255 octets, spelled out or through compression
    pointers; labels of 64-191 octets through the reserved 0x40 and 0x80 length types), so a
    query carrying one must be refused before its question is echoed in a reply.
    """
    labels = name.label
    return sum(len(label) + 1 for label in labels) + 1 <= 255 and all(
        len(label) <= 63 for label in labels)


def udp_size(edns: tuple[int, int, bool] | None) -> int:
    """The largest UDP answer for a client with this EDNS (size, version, DO), or none."""
    if edns is None:
        return MIN_UDP_SIZE
    return max(MIN_UDP_SIZE, min(edns[0], MAX_UDP_SIZE))


def query_opt(query: DNSRecord):
    for rr in query.ar:
        if rr.rtype == QTYPE.OPT:
            return rr
    return None


def add_opt(reply: DNSRecord, size: int, do: bool, ext_rcode: int = 0) -> None:
    """Attach our OPT record; the version is always 0."""
    reply.add_ar(EDNS0(udp_len=size, flags="do" if do else "", ext_rcode=ext_rcode))


def pack_limited(reply: DNSRecord, limit: int) -> bytes:
    """Encode `reply` in at most `limit` bytes, dropping records and setting TC as miekg/dns.

    Records are kept in order (answer, then authority, then additional) for as long as they fit;
    the OPT record is always kept; TC is set when any record had to go.
    """
    data = reply.pack()
    if len(data) <= limit:
        return data
    opt = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    sections = [list(reply.rr), list(reply.auth), [rr for rr in reply.ar if rr.rtype != QTYPE.OPT]]
    kept: list[list] = [[], [], []]

    def build() -> DNSRecord:
        header = DNSHeader(**_header_fields(reply.header))
        msg = DNSRecord(header, questions=list(reply.questions), rr=list(kept[0]),
                        auth=list(kept[1]), ar=list(kept[2]) + opt)
        return msg

    for i, section in enumerate(sections):
        # Largest prefix of this section that still fits, by bisection over whole encodings.
        lo, hi = 0, len(section)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            kept[i] = section[:mid]
            if len(build().pack()) <= limit:
                lo = mid
            else:
                hi = mid - 1
        kept[i] = section[:lo]
        if lo < len(section):
            break
    msg = build()
    msg.header.tc = 1
    return msg.pack()


def _header_fields(h: DNSHeader) -> dict[str, int]:
    return {"id": h.id, "qr": h.qr, "opcode": h.opcode, "aa": h.aa, "tc": h.tc, "rd": h.rd,
            "ra": h.ra, "z": h.z, "ad": h.ad, "cd": h.cd, "rcode": h.rcode}


def patch_serial(tail: bytes, offset: int, serial: int) -> bytes:
    return tail[:offset] + struct.pack("!I", serial & 0xFFFFFFFF) + tail[offset + 4 :]


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += length + 1


def address_run(data: bytes) -> tuple[int, int, int] | None:
    """(start, end, size) of the run of equally sized A or AAAA records in the answer section,
    when there are at least two: what `loadbalance` may rotate in encoded bytes."""
    qdcount, ancount = struct.unpack_from("!HH", data, 4)
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    start = end = size = 0
    for _ in range(ancount):
        rr_start = offset
        offset = _skip_name(data, offset)
        rtype, _cls, _ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
        offset += 10 + rdlength
        if rtype in (QTYPE.A, QTYPE.AAAA):
            if start and (rr_start != end or offset - rr_start != size):
                return None  # not one contiguous run of equal records: leave it alone
            if not start:
                start, size = rr_start, offset - rr_start
            end = offset
    if not start or (end - start) // size < 2:
        return None
    return start, end, size


COOKIE = 10  # EDNS0 option code of DNS cookies (RFC 7873)


def without_cookie(data: bytes) -> bytes | None:
    """`data` with its EDNS0 COOKIE option cut out, or None when it has none (or is not the
    plain shape: one question, nothing but one root OPT record after it).

    We do not implement cookies, so a server ignores the option (RFC 7873 5.1) and the answer
    is the same whatever the cookie: queries that differ only by it share one fast-path entry,
    and a flood of unique cookies cannot churn the fast path.
    """
    if len(data) < 12 or data[4:12] != b"\x00\x01\x00\x00\x00\x00\x00\x01":
        return None
    try:
        offset = _skip_name(data, 12) + 4
        if data[offset] != 0 or data[offset + 1 : offset + 3] != b"\x00\x29":
            return None
        rdlen_at = offset + 9
        rdlen = (data[rdlen_at] << 8) | data[rdlen_at + 1]
        start = rdlen_at + 2
        end = start + rdlen
        if end != len(data):
            return None
        at = start
        while at + 4 <= end:
            code = (data[at] << 8) | data[at + 1]
            length = (data[at + 2] << 8) | data[at + 3]
            if code == COOKIE:
                cut = 4 + length
                rest = data[at + cut : end]
                if at + cut > end:
                    return None
                new_rdlen = rdlen - cut
                return (data[:rdlen_at] + bytes((new_rdlen >> 8, new_rdlen & 0xFF))
                        + data[start:at] + rest)
            at += 4 + length
    except IndexError:
        return None
    return None


_TTL = struct.Struct("!I")


def ttl_offsets(data: bytes) -> tuple[int, ...] | None:
    """Offsets of the TTL field of every record in an encoded message but the OPT (whose "TTL"
    holds EDNS flags), so kept answers can be aged in place; None when `data` does not walk."""
    try:
        qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", data, 4)
        offset = 12
        for _ in range(qdcount):
            offset = _skip_name(data, offset) + 4
        out = []
        for _ in range(ancount + nscount + arcount):
            offset = _skip_name(data, offset)
            rtype, _cls, _ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
            if rtype != QTYPE.OPT:
                out.append(offset + 4)
            offset += 10 + rdlength
    except (IndexError, struct.error):
        return None
    return tuple(out) if offset == len(data) else None


def patch_ttls(data: bytes, offsets: tuple[int, ...], ttl: int) -> bytes:
    """`data` with the TTL at each of `offsets` set to `ttl`."""
    value = _TTL.pack(ttl & 0xFFFFFFFF)
    parts = []
    previous = 0
    for at in offsets:
        parts.append(data[previous:at])
        parts.append(value)
        previous = at + 4
    parts.append(data[previous:])
    return b"".join(parts)


def movable_address_run(data: bytes) -> tuple[int, int, int] | None:
    """`address_run` of a message someone else encoded, when its records can be reordered in
    place: no compression pointer anywhere in the message points into the run."""
    run = address_run(data)
    if run is None:
        return None
    start, end, _size = run
    qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", data, 4)
    offset = 12
    try:
        for _ in range(qdcount):
            offset = _skip_name(data, offset) + 4
        for _ in range(ancount + nscount + arcount):
            while True:  # the owner name, watching for pointers
                length = data[offset]
                if length & 0xC0 == 0xC0:
                    if start <= (((length & 0x3F) << 8) | data[offset + 1]) < end:
                        return None
                    offset += 2
                    break
                if length == 0:
                    offset += 1
                    break
                offset += length + 1
            rtype, _cls, _ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
            if rtype not in (QTYPE.A, QTYPE.AAAA, QTYPE.OPT):
                return None  # rdata that may hold names: leave the message alone
            offset += 10 + rdlength
    except (IndexError, struct.error):
        return None
    return run


# Label bytes whose text dnslib writes as they are: a name made only of these reads the same
# from the bytes as from dnslib's decoding, so a plain query needs no decoding at all.
_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*")
_PLAIN_HEADER = b"\x00\x01\x00\x00\x00\x00"


def question_end(data: bytes) -> int:
    """Where the one question of a plain query ends."""
    return _skip_name(data, 12) + 4


def read_plain_query(data: bytes) -> tuple[str, int, int, tuple[int, int, bool] | None] | None:
    """(qname, qtype, qclass, EDNS (size, version, DO) or None) of a plain query, read from its
    bytes: opcode QUERY, one question whose name has only letters, digits, `-`, `_` and `*`,
    and nothing after it but at most one OPT record at the root. None for anything else (the
    slow path then decodes it with dnslib and answers whatever it is)."""
    size = len(data)
    if size < 17 or data[2] & 0xF8 or data[4:10] != _PLAIN_HEADER or data[10]:
        return None  # a response, another opcode, or not exactly one question
    arcount = data[11]
    if arcount > 1:
        return None
    labels = []
    offset = 12
    plain = _PLAIN
    while True:
        length = data[offset]
        if length == 0:
            break
        end = offset + 1 + length
        if length > 63 or end >= size:
            return None
        label = data[offset + 1 : end]
        if not plain.issuperset(label):
            return None
        labels.append(label)
        offset = end
    if offset > 12 + 255 - 1:
        return None
    offset += 1
    if offset + 4 > size:
        return None
    qtype = (data[offset] << 8) | data[offset + 1]
    qclass = (data[offset + 2] << 8) | data[offset + 3]
    offset += 4
    qname = (b".".join(labels).decode("ascii") + ".") if labels else "."
    if not arcount:
        return (qname, qtype, qclass, None) if offset == size else None
    # The OPT: root owner, type 41, class = UDP size, TTL = ext-rcode, version, flags.
    if offset + 11 > size or data[offset] != 0 or data[offset + 1 : offset + 3] != b"\x00\x29":
        return None
    udp_size = (data[offset + 3] << 8) | data[offset + 4]
    version = data[offset + 6]
    do = bool(data[offset + 7] & 0x80)
    rdlength = (data[offset + 9] << 8) | data[offset + 10]
    if offset + 11 + rdlength != size:
        return None
    return qname, qtype, qclass, (udp_size, version, do)


def has_opt(data: bytes) -> bool:
    """Whether an encoded message has an OPT record (looked for in its additional section)."""
    try:
        qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", data, 4)
        if not arcount:
            return False
        offset = 12
        for _ in range(qdcount):
            offset = _skip_name(data, offset) + 4
        for i in range(ancount + nscount + arcount):
            offset = _skip_name(data, offset)
            rtype, _cls, _ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
            if i >= ancount + nscount and rtype == QTYPE.OPT:
                return True
            offset += 10 + rdlength
    except (IndexError, struct.error):
        return False
    return False
