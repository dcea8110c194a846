"""Log lines as CoreDNS writes them: `[INFO]`/`[WARNING]`/`[ERROR]` prefixes on stdout with no
timestamp, the `log` plugin's query line and response classes, and the `errors` plugin's line.

Rendering is pure (fields in, string out); `setup_logging` wires stdlib logging to stdout.
"""

from __future__ import annotations

import logging
import struct
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import IO

from dnslib import QTYPE

from dnsserver.metrics import RCODE_NAMES

PLUGIN_PREFIX = "plugin/"
QUERY_LOGGER = "dnsserver.querylog"  # the log plugin's lines: "[INFO] " and the line, no prefix
EMPTY = "-"  # CoreDNS's CommonLogEmptyValue

_LEVEL_LABELS = {
    logging.DEBUG: "[DEBUG] ",
    logging.INFO: "[INFO] ",
    logging.WARNING: "[WARNING] ",
    logging.ERROR: "[ERROR] ",
    logging.CRITICAL: "[FATAL] ",
}

# Response classes of the log plugin's `class` option.
SUCCESS, DENIAL, ERROR, ALL = "success", "denial", "error", "all"
LOG_CLASSES = frozenset((SUCCESS, DENIAL, ERROR, ALL))


# -- process log ------------------------------------------------------------------------------


class CoreDNSFormatter(logging.Formatter):
    """`[LEVEL] plugin/NAME: message` for loggers named "plugin/NAME", else `[LEVEL] message`.

    Never a multi-line traceback: an exception is appended to the line as `: Type: message`,
    since CoreDNS's logs are one event per line and log shippers parse them that way.
    """

    def format(self, record: logging.LogRecord) -> str:
        label = _LEVEL_LABELS.get(record.levelno) or f"[{record.levelname}] "
        msg = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            msg = f"{msg}: {type(exc).__name__}: {exc}" if str(exc) else (
                f"{msg}: {type(exc).__name__}")
        if record.name.startswith(PLUGIN_PREFIX):
            return f"{label}{record.name}: {msg}"
        return label + msg


class _OurHandler(logging.StreamHandler):
    """Marks the handler `setup_logging` installed, so calling it again replaces it."""


def setup_logging(level: int | str = logging.INFO, stream: IO[str] | None = None) -> None:
    """Send every log record to stdout (or `stream`) in CoreDNS's format.

    `level`: "DEBUG" is what CoreDNS's `debug` plugin turns on; INFO otherwise.
    """
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
        level = resolved
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _OurHandler):
            root.removeHandler(h)
    handler = _OurHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(CoreDNSFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def plugin_logger(name: str) -> logging.Logger:
    """The logger whose lines read `[LEVEL] plugin/<name>: ...`, e.g. plugin_logger("reload")."""
    return logging.getLogger(PLUGIN_PREFIX + name)


# -- the log plugin's query line ------------------------------------------------------------

# Header flag bits, in the order CoreDNS prints them.
_FLAGS = (
    (0x8000, "qr"), (0x0400, "aa"), (0x0200, "tc"), (0x0100, "rd"), (0x0080, "ra"),
    (0x0040, "z"), (0x0020, "ad"), (0x0010, "cd"),
)


def flags_string(flags: int) -> str:
    """The `{>rflags}` value: set header flags, comma-separated ("qr,aa,rd")."""
    return ",".join(name for bit, name in _FLAGS if flags & bit)


def type_name(qtype: int) -> str:
    """miekg/dns's name for a type: "A", "SRV", or "TYPE65280" when unknown."""
    name = QTYPE.forward.get(qtype)
    return name if name is not None else f"TYPE{qtype}"


# miekg/dns ClassToString (dnslib spells some of these differently).
_CLASS_NAMES = {1: "IN", 2: "CS", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}


def class_name(qclass: int) -> str:
    """miekg/dns's name for a class: "IN", "CH", or "CLASS<n>" when unknown."""
    return _CLASS_NAMES.get(qclass) or f"CLASS{qclass}"


def format_duration(nanoseconds: int) -> str:
    """`{duration}` as CoreDNS prints it: seconds, shortest exact form, no exponent, "s".

    Mirrors Go's Duration.Seconds() and strconv.FormatFloat(secs, 'f', -1, 64).
    """
    secs, nsec = divmod(int(nanoseconds), 1_000_000_000)
    value = float(secs) + float(nsec) / 1e9
    # repr is the shortest round-tripping form; Decimal turns 1e-05 into 0.00001.
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "s"


def _or_empty(value: str) -> str:
    return value if value else EMPTY


def query_log_line(
    remote: str,
    port: int,
    qid: int,
    qtype: int,
    qclass: int,
    name: str,
    proto: str,
    size: int,
    do: bool,
    bufsize: int,
    rcode: int,
    rflags: int,
    rsize: int,
    duration_ns: int,
) -> str:
    """The log plugin's common format, the line after "[INFO] ":

    `{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode}
    {>rflags} {rsize} {duration}`. `rflags` are the response's header flags (16 bits);
    `bufsize` is the query's EDNS0 size as CoreDNS normalises it (`edns_bufsize`).
    """
    host = f"[{remote}]" if ":" in remote else remote
    rcode_text = RCODE_NAMES.get(rcode) or str(rcode)
    return (
        f'{_or_empty(host)}:{port} - {qid} "{type_name(qtype)} {class_name(qclass)} '
        f'{_or_empty(name.lower())} {proto} {size} {"true" if do else "false"} {bufsize}" '
        f"{rcode_text} {_or_empty(flags_string(rflags))} {rsize} {format_duration(duration_ns)}"
    )


def edns_bufsize(proto: str, udp_size: int | None) -> int:
    """CoreDNS's `{>bufsize}`: 65535 on TCP, else the EDNS0 size but at least 512."""
    if proto == "tcp":
        return 65535
    return max(512, udp_size or 0)


# -- response classes -------------------------------------------------------------------------

_META_QTYPES = (251, 252)  # IXFR, AXFR


def classify(
    rcode: int,
    answer_count: int,
    authority_has_soa: bool,
    authority_ns_count: int,
    *,
    opcode: int = 0,
    qtype: int = 0,
) -> str:
    """The log plugin's class of a response: "success", "denial" or "error".

    As CoreDNS's response.Typify then Classify: NXDOMAIN or NODATA with an SOA is denial;
    answers or referrals are success; SERVFAIL, NOTIMP, REFUSED, transfers and updates are
    errors.
    """
    if opcode in (4, 5) or qtype in _META_QTYPES:  # NOTIFY, UPDATE, AXFR/IXFR: not plain
        return ERROR
    if answer_count and rcode == 0:
        return SUCCESS
    if authority_has_soa and rcode in (0, 3):
        return DENIAL
    if rcode in (2, 4):
        return ERROR
    if rcode == 0:
        return SUCCESS  # a referral, or an empty NOERROR without SOA
    return ERROR


def should_log(classes: frozenset[str] | set[str], response_class: str) -> bool:
    """Whether a `log` rule with these `class` values logs a response of this class."""
    return not classes or ALL in classes or response_class in classes


# -- reading what a line needs from the wire ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryFields:
    qid: int
    opcode: int
    name: str
    qtype: int
    qclass: int
    do: bool
    udp_size: int | None  # EDNS0 size, None without OPT
    size: int


@dataclass(frozen=True, slots=True)
class ResponseFields:
    rcode: int
    flags: int
    answer_count: int
    authority_has_soa: bool
    authority_ns_count: int
    size: int


class WireError(ValueError):
    """A DNS message too short or malformed to read the fields a log line needs."""


def _skip_name(msg: bytes, off: int) -> int:
    while True:
        if off >= len(msg):
            raise WireError("name runs past the end of the message")
        n = msg[off]
        if n == 0:
            return off + 1
        if n & 0xC0 == 0xC0:
            return off + 2
        off += 1 + n


def _read_name(msg: bytes, off: int) -> str:
    labels: list[str] = []
    jumps = 0
    while True:
        if off >= len(msg):
            raise WireError("name runs past the end of the message")
        n = msg[off]
        if n == 0:
            break
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg) or jumps > 16:
                raise WireError("bad compression pointer")
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            continue
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "backslashreplace"))
        off += 1 + n
    return ".".join(labels) + "." if labels else "."


def _records(msg: bytes, off: int, count: int) -> tuple[int, list[tuple[int, int, int]]]:
    """Walk `count` resource records from `off`: their (type, class, ttl) and the end offset."""
    out = []
    for _ in range(count):
        off = _skip_name(msg, off)
        if off + 10 > len(msg):
            raise WireError("record header runs past the end of the message")
        rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", msg, off)
        off += 10 + rdlen
        if off > len(msg):
            raise WireError("record data runs past the end of the message")
        out.append((rtype, rclass, ttl))
    return off, out


def parse_query(wire: bytes) -> QueryFields:
    """The fields of a query that the log line shows: id, question, DO bit, EDNS0 size."""
    if len(wire) < 12:
        raise WireError("shorter than a DNS header")
    qid, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", wire)
    if qd < 1:
        raise WireError("no question")
    name = _read_name(wire, 12)
    off = _skip_name(wire, 12)
    if off + 4 > len(wire):
        raise WireError("question runs past the end of the message")
    qtype, qclass = struct.unpack_from("!HH", wire, off)
    off += 4
    do, udp_size = False, None
    try:
        for _ in range(qd - 1):  # more than one question is not legal; step over them
            off = _skip_name(wire, off) + 4
        off, _ = _records(wire, off, an + ns)
        _, additional = _records(wire, off, ar)
        for rtype, rclass, ttl in additional:
            if rtype == 41:  # OPT: class is the UDP size, the TTL carries the DO bit
                udp_size, do = rclass, bool(ttl & 0x8000)
                break
    except WireError:
        pass  # a damaged tail still leaves the question readable
    return QueryFields(qid, (flags >> 11) & 0xF, name, qtype, qclass, do, udp_size, len(wire))


def parse_response(wire: bytes) -> ResponseFields:
    """The fields of a response that the log line and classifier need."""
    if len(wire) < 12:
        raise WireError("shorter than a DNS header")
    _, flags, qd, an, ns, _ar = struct.unpack_from("!HHHHHH", wire)
    off = 12
    for _ in range(qd):
        off = _skip_name(wire, off) + 4
    off, _ = _records(wire, off, an)
    _, auth = _records(wire, off, ns)
    return ResponseFields(
        rcode=flags & 0xF,
        flags=flags,
        answer_count=an,
        authority_has_soa=any(t == 6 for t, _, _ in auth),
        authority_ns_count=sum(1 for t, _, _ in auth if t == 2),
        size=len(wire),
    )


def query_log_line_from_wire(
    remote: str, port: int, proto: str, query: bytes, response: bytes, duration_ns: int,
) -> tuple[str, str]:
    """(line, class) for a query and its response as sent: what the `log` plugin needs."""
    q = parse_query(query)
    r = parse_response(response)
    line = query_log_line(
        remote, port, q.qid, q.qtype, q.qclass, q.name, proto, q.size, q.do,
        edns_bufsize(proto, q.udp_size), r.rcode, r.flags, r.size, duration_ns)
    cls = classify(r.rcode, r.answer_count, r.authority_has_soa, r.authority_ns_count,
                   opcode=q.opcode, qtype=q.qtype)
    return line, cls


# -- the errors plugin ------------------------------------------------------------------------


def error_log_line(rcode: int, name: str, qtype: int, err: object) -> str:
    """The errors plugin's message, which appears as `[ERROR] plugin/errors: <this>`:
    `2 example.org. A: read udp ...: i/o timeout` (rcode as a number, as CoreDNS prints it).
    """
    return f"{rcode} {name.lower()} {type_name(qtype)}: {err}"


def log_error(rcode: int, name: str, qtype: int, err: object) -> None:
    """Write an errors-plugin line through the "plugin/errors" logger."""
    plugin_logger("errors").error("%s", error_log_line(rcode, name, qtype, err))


def log_query(line: str) -> None:
    """Write a query line; it appears as `[INFO] <line>`."""
    logging.getLogger(QUERY_LOGGER).info("%s", line)
