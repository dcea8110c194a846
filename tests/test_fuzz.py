"""Structure-aware fuzzing of the parser and the whole query path, in-process.

Queries start valid (dnspython's `make_query` with random names, types, classes, flags and
EDNS options: cookies, padding, client subnet, unknown codes) and are then mutated where DNS
parsers break: label lengths, compression pointers (self-loops, forward, chains, past the
end), section counts that lie, truncation at any offset, OPT records with bad lengths, names
past 255 octets. Each case goes through `QueryEngine.resolve` of two real engines: the
kubernetes plugin alone over the demo cluster, and a Corefile with rewrite, template, hosts,
file, loadbalance and cache in front of it. The wire helpers and dnslib's parser are fuzzed
on their own too.

The suite runs a fixed, derandomized number of examples (about 500 in all, a few seconds).
`tools/fuzz_structured.py --minutes N` runs the same strategies and properties for long and
counts unique failures; every failure found becomes a case in `tests/test_hostile_wire.py`.
"""

from __future__ import annotations

import asyncio
import atexit
import ipaddress
import struct
import time
from collections.abc import Callable
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdataclass
import dns.rdatatype
from dnslib import AAAA, CNAME, QTYPE, RR, SRV, TXT, A, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnsserver import corefile, wire
from dnsserver.assembly import assemble
from dnsserver.engine import QueryEngine
from dnsserver.snapshot import load_objects
from dnsserver.store import ClusterStore

from helpers import DEMO, ROOT

CLIENT = ("127.0.0.1", 1)
# A parse that takes longer than this on any input is a finding (a pointer loop, a blow-up).
PARSE_SECONDS = 2.0

RICH_COREFILE = """
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    cache 30
    loadbalance
    rewrite name suffix .alias.cluster.local .svc.cluster.local answer auto
    rewrite name exact red.shop.svc.cluster.local web.shop.svc.cluster.local
    rewrite type MX A
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        ttl 30
    }
}
example.org:53 example:53 {
    template IN A example {
      match (^|[.])ip-127-0-0-(?P<d>[0-9]*)[.]example[.]$
      answer "{{ .Name }} 60 IN A 127.0.0.{{ .Group.d }}"
      fallthrough
    }
    hosts {
      127.0.0.42 other.example
      127.0.0.43 other.example
      ::1 other.example
      fallthrough
    }
    file ZONEFILE example.org
}
""".replace("ZONEFILE", str(ROOT / "zones" / "example.org.db"))

# Names that exist in the demo cluster or in the rich Corefile, and a few that don't.
KNOWN_NAMES = [
    "kubernetes.default.svc.cluster.local", "web.shop.svc.cluster.local",
    "_https._tcp.web.shop.svc.cluster.local", "_http._tcp.web.shop.svc.cluster.local",
    "db.data.svc.cluster.local", "db-0.db.data.svc.cluster.local",
    "search.data.svc.cluster.local", "payments.shop.svc.cluster.local",
    "www.shop.svc.cluster.local", "dual.shop.svc.cluster.local",
    "v6only.shop.svc.cluster.local", "10-244-1-10.shop.pod.cluster.local",
    "dns-version.cluster.local", "cluster.local", "svc.cluster.local", "shop.svc.cluster.local",
    "nope.shop.svc.cluster.local", "1.0.96.10.in-addr.arpa", "10.0.96.10.in-addr.arpa",
    "web.shop.alias.cluster.local", "red.shop.svc.cluster.local", "ip-127-0-0-9.example",
    "other.example", "www.example.org", "example.org", "nothing.example.org", "example.com", ".",
    "web.shop.svc.cluster.local.shop.svc.cluster.local",
]
ZONES = ["cluster.local", "svc.cluster.local", "shop.svc.cluster.local", "pod.cluster.local",
         "in-addr.arpa", "ip6.arpa", "example.org", "example", "example.com"]
COMMON_TYPES = [1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 41, 43, 46, 48, 64, 65, 99, 251, 252, 255,
                256, 257, 65535]

_LOOP: asyncio.AbstractEventLoop | None = None
_ENGINES: dict[str, QueryEngine] = {}


def run(coro: Any) -> Any:
    """Run a coroutine on one loop kept for the whole session (engines hold loop-bound state)."""
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
        atexit.register(_close_loop)
    return _LOOP.run_until_complete(coro)


def _close_loop() -> None:
    # The plugins' reload loops (hosts, file) would otherwise be reported as destroyed.
    assert _LOOP is not None
    tasks = asyncio.all_tasks(_LOOP)
    for task in tasks:
        task.cancel()
    _LOOP.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    _LOOP.close()


def engines() -> dict[str, QueryEngine]:
    """The engines under fuzz, built once: `kubernetes` alone and the `rich` Corefile."""
    if _ENGINES:
        return _ENGINES
    store = ClusterStore()
    store.load(load_objects(DEMO))
    plain = assemble(corefile.parse(
        "cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {\n kubernetes cluster.local in-addr.arpa"
        " ip6.arpa {\n  pods insecure\n }\n}\n"), store)
    rich = assemble(corefile.parse(RICH_COREFILE), store)
    for name, assembly in (("kubernetes", plain), ("rich", rich)):
        for plugin in assembly.plugins:
            run(plugin.start())
        blocks = [b for bs in assembly.listeners.values() for b in bs]
        engine = QueryEngine(blocks, store)
        assembly.lookups[53] = engine.lookup
        _ENGINES[name] = engine
    return _ENGINES


# --- properties ------------------------------------------------------------------------------


def advertised_size(data: bytes) -> int:
    """What the client said it accepts over UDP: its EDNS0 size (512 at least, 4096 at most,
    as the server caps it), or 512 without EDNS or when its query cannot be read."""
    try:
        msg = dns.message.from_wire(data)
    except Exception:
        return wire.MIN_UDP_SIZE
    if msg.edns < 0:
        return wire.MIN_UDP_SIZE
    return max(wire.MIN_UDP_SIZE, min(msg.payload, wire.MAX_UDP_SIZE))


def check_resolve(engine: QueryEngine, data: bytes, tcp: bool) -> bytes | None:
    """Resolve `data` and assert what every answer to any input must satisfy."""
    answer = run(engine.resolve(data, CLIENT, tcp))
    if len(data) < 12 or data[2] & 0x80:
        assert answer is None, "a response or a runt was answered"
        return None
    if answer is None:
        return None
    assert isinstance(answer, (bytes, bytearray)), type(answer)
    answer = bytes(answer)
    assert len(answer) >= 12
    assert answer[:2] == data[:2], "answer ID differs from the query's"
    assert answer[2] & 0x80, "answer without QR"
    if not tcp:
        limit = advertised_size(data)
        assert len(answer) <= limit, f"UDP answer of {len(answer)} bytes for a limit of {limit}"
    else:
        assert len(answer) <= wire.MAX_TCP_SIZE
    parsed = dns.message.from_wire(answer)
    assert parsed.id == struct.unpack("!H", data[:2])[0]
    if parsed.question:
        # The question comes back as asked: same labels byte for byte (case too), type, class.
        try:
            asked = dns.message.from_wire(data).question
        except Exception:
            asked = []
        if asked:
            got, want = parsed.question[0], asked[0]
            assert (got.name.labels, got.rdtype, got.rdclass) == (
                want.name.labels, want.rdtype, want.rdclass), (got, want)
    # Kept answers are served again byte for byte (but for the ID, and rotation by loadbalance).
    kept = engine.fast.lookup(data, tcp)
    if kept is not None:
        assert len(kept) == len(answer) and kept[:12] == answer[:12]
    return answer


def check_parse(data: bytes) -> DNSRecord | None:
    """dnslib's parser, as the engine calls it: returns or raises an Exception, quickly."""
    started = time.monotonic()
    try:
        record = DNSRecord.parse(data)
    except Exception:
        record = None
    assert time.monotonic() - started < PARSE_SECONDS, "parse took too long"
    return record


def check_header_error(data: bytes, rcode: int) -> None:
    out = wire.header_error(data, rcode)
    if len(data) < 12 or data[2] & 0x80:
        assert out is None
        return
    assert out is not None and len(out) == 12
    _ident, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", out)
    assert out[:2] == data[:2] and flags & 0x8000 and flags & 0xF == rcode & 0xF
    assert (qd, an, ns, ar) == (0, 0, 0, 0)
    assert flags & 0x7800 == struct.unpack_from("!H", data, 2)[0] & 0x7800  # opcode kept
    dns.message.from_wire(out)


def check_pack_limited(reply: DNSRecord, limit: int) -> bytes:
    full = reply.pack()
    out = bytes(wire.pack_limited(reply, limit))
    parsed = dns.message.from_wire(out)
    counts = struct.unpack("!HHHH", out[4:12])
    original = (len(reply.questions), len(reply.rr), len(reply.auth), len(reply.ar))
    if len(full) <= limit:
        assert out == bytes(full)
        return out
    assert out[2] & 0x02, "TC not set though records were dropped"
    has_opt = any(rr.rtype == QTYPE.OPT for rr in reply.ar)
    if len(out) > limit:
        # Only when not even the header, question and OPT fit: then nothing else is kept.
        assert counts[1:] == (0, 0, int(has_opt)), (len(out), limit, counts)
    assert counts[0] == original[0]
    # What is kept is a prefix: answer first, then authority, then additional.
    assert counts[1] <= original[1] and counts[2] <= original[2]
    if counts[2]:
        assert counts[1] == original[1]
    if counts[3] - int(has_opt) > 0:
        assert counts[2] == original[2]
    assert (parsed.edns >= 0) == has_opt
    return out


def check_address_run(data: bytes) -> None:
    """On an encoded response: the run found is of equal A/AAAA records, and rotating it
    keeps the same records."""
    run_ = wire.address_run(data)
    if run_ is None:
        return
    start, end, size = run_
    assert 12 <= start < end <= len(data) and (end - start) % size == 0
    assert (end - start) // size >= 2
    rotated = data[:start] + data[start + size:end] + data[start:start + size] + data[end:]
    before = dns.message.from_wire(data)
    after = dns.message.from_wire(rotated)

    def records(msg: dns.message.Message) -> list[str]:
        return sorted(f"{r.name} {r.rdtype} {rd}" for r in msg.answer for rd in r)

    assert records(before) == records(after)


# --- strategies ------------------------------------------------------------------------------

LDH = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)


def random_case(draw: Callable[..., Any], text: str) -> str:
    if not draw(st.booleans()):
        return text
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c for c, f in zip(text, flips, strict=True))


@st.composite
def names(draw: Callable[..., Any]) -> dns.name.Name:
    kind = draw(st.sampled_from(["known", "known", "zone", "reverse", "binary", "odd",
                                 "long"]))
    if kind == "known":
        text = random_case(draw, draw(st.sampled_from(KNOWN_NAMES)))
        return dns.name.from_text(text)
    if kind == "zone":
        labels = draw(st.lists(LDH, min_size=1, max_size=4))
        return dns.name.from_text(".".join([*labels, draw(st.sampled_from(ZONES))]))
    if kind == "reverse":
        if draw(st.booleans()):
            addr = ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
        else:
            addr = ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
        text = addr.reverse_pointer
        cut = draw(st.integers(0, 3))  # partial reverse names too
        return dns.name.from_text(text.split(".", cut)[-1] if cut else text)
    if kind == "odd":
        # Printable labels whose text form is ambiguous: dots, backslashes, spaces, '*', '@'.
        labels = draw(st.lists(st.text("a.\\ *@-_", min_size=1, max_size=8), min_size=1,
                               max_size=3))
        suffix = dns.name.from_text(draw(st.sampled_from(ZONES))).labels
        return dns.name.Name([label.encode() for label in labels] + list(suffix))
    if kind == "binary":
        labels = draw(st.lists(st.binary(min_size=1, max_size=63), min_size=1, max_size=4))
        suffix = dns.name.from_text(draw(st.sampled_from(ZONES))).labels
        try:
            return dns.name.Name([*labels, *suffix])
        except dns.name.NameTooLong:
            return dns.name.Name([*labels[:1], *suffix])
    # Long names: up to the 255-octet limit dnspython enforces; mutations go past it.
    labels = []
    total = 1 + len("cluster.local") + 2
    while True:
        label = b"a" * draw(st.integers(1, 63))
        if total + len(label) + 1 > 255:
            break
        labels.append(label)
        total += len(label) + 1
    return dns.name.Name([*labels, b"cluster", b"local", b""])


@st.composite
def edns_options(draw: Callable[..., Any]) -> list[dns.edns.Option]:
    out: list[dns.edns.Option] = []
    for kind in draw(st.lists(st.sampled_from(["cookie", "padding", "ecs", "other"]),
                              max_size=3)):
        if kind == "cookie":
            client = draw(st.binary(min_size=8, max_size=8))
            server = draw(st.one_of(st.just(b""), st.binary(min_size=8, max_size=32)))
            out.append(dns.edns.CookieOption(client, server))
        elif kind == "padding":
            out.append(dns.edns.GenericOption(12, b"\x00" * draw(st.integers(0, 468))))
        elif kind == "ecs":
            if draw(st.booleans()):
                addr = str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1))))
                bits = draw(st.integers(0, 32))
            else:
                addr = str(ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1))))
                bits = draw(st.integers(0, 128))
            out.append(dns.edns.ECSOption(addr, bits))
        else:
            code = draw(st.integers(0, 65535))
            out.append(dns.edns.GenericOption(code, draw(st.binary(max_size=40))))
    return out


@st.composite
def valid_queries(draw: Callable[..., Any]) -> bytes:
    name = draw(names())
    rdtype = draw(st.one_of(st.sampled_from(COMMON_TYPES), st.integers(0, 65535)))
    rdclass = draw(st.sampled_from([1, 1, 1, 1, 3, 254, 255, 0, 4242]))
    ident = draw(st.integers(0, 65535))
    msg = dns.message.make_query(name, rdtype, rdclass, id=ident)
    msg.flags = draw(st.sampled_from([dns.flags.RD, 0, dns.flags.RD | dns.flags.CD,
                                      dns.flags.AD, dns.flags.RD | dns.flags.AA]))
    if draw(st.integers(0, 9)) == 0:
        msg.set_opcode(draw(st.sampled_from([1, 2, 4, 5, 6, 15])))
    if draw(st.booleans()):
        version = draw(st.sampled_from([0, 0, 0, 1, 255]))
        payload = draw(st.one_of(st.sampled_from([0, 511, 512, 1232, 4096, 65535]),
                                 st.integers(0, 65535)))
        ednsflags = dns.flags.DO if draw(st.booleans()) else 0
        msg.use_edns(version, ednsflags, payload, options=draw(edns_options()))
    # dnspython would otherwise hold the query to its own advertised payload size.
    return msg.to_wire(max_size=65535)


def _question_end(data: bytes) -> int:
    """Offset just past the first question's name, on the uncompressed names we start from."""
    offset = 12
    while offset < len(data) and data[offset] != 0 and data[offset] < 64:
        offset += data[offset] + 1
    return min(offset + 1, len(data))


@st.composite
def mutated_queries(draw: Callable[..., Any]) -> bytes:
    """A valid query with 0-4 mutations of the kinds that break DNS parsers."""
    data = bytearray(draw(valid_queries()))
    for op in draw(st.lists(st.sampled_from(
            ["counts", "truncate", "byte", "pointer", "labellen", "append", "opt", "rr", "flags",
             "longname", "chain"]), max_size=4)):
        if op == "counts":
            at = draw(st.sampled_from([4, 6, 8, 10]))
            value = draw(st.one_of(st.integers(0, 3), st.just(65535), st.integers(0, 65535)))
            if len(data) >= at + 2:
                data[at:at + 2] = struct.pack("!H", value)
        elif op == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif op == "byte" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "pointer" and len(data) > 13:
            at = draw(st.integers(12, len(data) - 2))
            target = draw(st.sampled_from(["self", "forward", "back", "past", "header"]))
            dest = {"self": at, "forward": min(at + 2 + draw(st.integers(0, 40)), 0x3FFF),
                    "back": draw(st.integers(12, max(12, at))), "past": len(data) + 10,
                    "header": draw(st.integers(0, 11))}[target]
            data[at:at + 2] = struct.pack("!H", 0xC000 | (dest & 0x3FFF))
        elif op == "labellen" and len(data) > 12:
            # A label length that runs past the name, or one of the reserved 0x40/0x80 types.
            data[12] = draw(st.sampled_from([63, 64, 0x40, 0x41, 0x80, 0xBF, 0xFF]))
        elif op == "append":
            data += draw(st.binary(max_size=64))
        elif op == "opt" and len(data) >= 12:
            rdlen = draw(st.integers(0, 65535))
            body = draw(st.binary(max_size=16))
            data += b"\x00" + struct.pack("!HHIH", 41, draw(st.integers(0, 65535)),
                                          draw(st.integers(0, 2**32 - 1)), rdlen) + body
            ar = struct.unpack_from("!H", data, 10)[0]
            data[10:12] = struct.pack("!H", (ar + 1) & 0xFFFF)
        elif op == "rr" and len(data) >= 12:
            # An RR pointing at the question's name whose RDATA is cut short.
            rtype = draw(st.sampled_from([1, 5, 6, 28, 33, 41, 255]))
            rdlen = draw(st.integers(0, 300))
            data += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 30, rdlen)
            data += draw(st.binary(max_size=min(rdlen, 20)))
            at = draw(st.sampled_from([6, 8, 10]))
            count = struct.unpack_from("!H", data, at)[0]
            data[at:at + 2] = struct.pack("!H", (count + 1) & 0xFFFF)
        elif op == "flags" and len(data) >= 4:
            data[2:4] = struct.pack("!H", draw(st.integers(0, 65535)) & ~0x8000
                                    if draw(st.integers(0, 7)) else 0x8000)
        elif op == "longname" and len(data) >= 12:
            # A question name of 256+ octets, which dnspython would never build.
            count = draw(st.integers(4, 12))
            label = draw(st.integers(60, 63))
            name = (bytes([label]) + b"a" * label) * count + b"\x07cluster\x05local\x00"
            end = _question_end(data)
            data[12:end] = name
        elif op == "chain" and len(data) >= 12:
            # After the question, a name of many labels joined by backward pointers: the
            # labels in a NULL record's RDATA, the name on an A record after it.
            links = draw(st.integers(1, 300))
            rdata_at = len(data) + 11
            rdata = bytearray(b"\x3f" + b"a" * 63 + b"\x00")
            prev = rdata_at
            for _ in range(links):
                here = rdata_at + len(rdata)
                rdata += b"\x3f" + b"b" * 63 + struct.pack("!H", 0xC000 | (prev & 0x3FFF))
                prev = here
            data += b"\x00" + struct.pack("!HHIH", 10, 1, 0, len(rdata) & 0xFFFF) + rdata
            data += struct.pack("!HHHIH", 0xC000 | (prev & 0x3FFF), 1, 1, 30, 4) + b"\x7f\0\0\1"
            ar = struct.unpack_from("!H", data, 10)[0]
            data[10:12] = struct.pack("!H", (ar + 2) & 0xFFFF)
    return bytes(data)


@st.composite
def replies(draw: Callable[..., Any]) -> DNSRecord:
    """A dnslib reply of random records, as the plugins build them, for pack_limited."""
    qname = draw(st.sampled_from(["web.shop.svc.cluster.local", "x.example", "."]))
    msg = DNSRecord(DNSHeader(id=draw(st.integers(0, 65535)), qr=1, aa=1, rd=1),
                    questions=[DNSQuestion(qname, QTYPE.A)])

    def record() -> RR:
        owner = draw(st.sampled_from([qname, "a." + qname.lstrip("."), "other.example"]))
        kind = draw(st.sampled_from(["A", "AAAA", "TXT", "CNAME", "SRV"]))
        ttl = draw(st.integers(0, 2**31 - 1))
        if kind == "A":
            data: Any = A(str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))))
        elif kind == "AAAA":
            data = AAAA(str(ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))))
        elif kind == "TXT":
            data = TXT(draw(st.text("abcxyz", max_size=draw(st.integers(0, 250)))))
        elif kind == "CNAME":
            data = CNAME("target." + draw(st.sampled_from(ZONES)))
        else:
            data = SRV(draw(st.integers(0, 65535)), draw(st.integers(0, 65535)),
                       draw(st.integers(0, 65535)), "srv." + qname.lstrip("."))
        return RR(owner, getattr(QTYPE, kind), rdata=data, ttl=ttl)

    for section in (msg.rr, msg.auth, msg.ar):
        section.extend(record() for _ in range(draw(st.integers(0, 40))))
    if draw(st.booleans()):
        wire.add_opt(msg, draw(st.sampled_from([512, 1232, 4096])), draw(st.booleans()))
    return msg


@st.composite
def responses(draw: Callable[..., Any]) -> bytes:
    """Responses encoded by dnslib, as the server encodes them, with runs of A/AAAA records
    among others, for address_run."""
    qname = draw(st.sampled_from(KNOWN_NAMES[:12]))
    msg = DNSRecord(DNSHeader(id=draw(st.integers(0, 65535)), qr=1, aa=1),
                    questions=[DNSQuestion(qname, QTYPE.A)])
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["A", "A", "AAAA", "CNAME", "TXT"]))
        owner = qname if draw(st.booleans()) else "other.example"
        for _ in range(draw(st.integers(1, 6))):
            if kind == "A":
                rdata: Any = A(str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))))
            elif kind == "AAAA":
                rdata = AAAA(str(ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))))
            elif kind == "CNAME":
                rdata = CNAME("t.example")
            else:
                rdata = TXT("x" * draw(st.integers(0, 30)))
            msg.add_answer(RR(owner, getattr(QTYPE, kind), rdata=rdata, ttl=30))
    return bytes(msg.pack())


def hostile_bytes() -> st.SearchStrategy[bytes]:
    return st.one_of(mutated_queries(), st.binary(max_size=600))


# --- the suite: a fixed, derandomized number of examples --------------------------------------

SUITE = settings(derandomize=True, deadline=None, database=None, print_blob=True,
                 suppress_health_check=list(HealthCheck))


@settings(SUITE, max_examples=150)
@given(data=mutated_queries(), tcp=st.booleans())
def test_resolve_kubernetes_engine(data: bytes, tcp: bool) -> None:
    check_resolve(engines()["kubernetes"], data, tcp)


@settings(SUITE, max_examples=150)
@given(data=mutated_queries(), tcp=st.booleans())
def test_resolve_rich_engine(data: bytes, tcp: bool) -> None:
    check_resolve(engines()["rich"], data, tcp)


@settings(SUITE, max_examples=60)
@given(data=valid_queries(), tcp=st.booleans())
def test_valid_queries_get_an_answer(data: bytes, tcp: bool) -> None:
    answer = check_resolve(engines()["kubernetes"], data, tcp)
    # A query dnspython built without mutation is always readable: it must get an answer.
    assert answer is not None


@settings(SUITE, max_examples=60)
@given(data=hostile_bytes())
def test_dnslib_parse(data: bytes) -> None:
    check_parse(data)


@settings(SUITE, max_examples=30)
@given(data=hostile_bytes(), rcode=st.integers(0, 15))
def test_header_error(data: bytes, rcode: int) -> None:
    check_header_error(data, rcode)


@settings(SUITE, max_examples=30)
@given(reply=replies(), limit=st.one_of(st.sampled_from([12, 100, 512, 1232, 4096]),
                                        st.integers(12, 65535)))
def test_pack_limited(reply: DNSRecord, limit: int) -> None:
    check_pack_limited(reply, limit)


@settings(SUITE, max_examples=30)
@given(data=responses())
def test_address_run(data: bytes) -> None:
    check_address_run(data)
