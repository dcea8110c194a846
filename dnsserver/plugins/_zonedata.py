"""Shared by the data plugins: RFC 1035 master-file text read into dnslib RRs (errors name the file
and line), domain-name checks, and the `fallthrough [ZONES...]` rule.

dnslib's own `ZoneParser` is not used for the entries: it has no line numbers, fails on an
indented comment, a TTL with units or `IN 300 A` order, and leaves a relative SRV target
unqualified. dnslib still parses every record's data (`RDMAP[type].fromZone`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

from dnslib import CLASS, QTYPE, RDMAP, RR, DNSLabel
from dnslib.dns import RD

from dnsserver.kubernetes_zone import match_zone

DEFAULT_TTL = 3600  # miekg/dns's default when neither $TTL nor an earlier TTL says otherwise
CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
# Record data fields that are domain names, by type: '@' and relative names are completed.
NAME_FIELDS: dict[str, tuple[int, ...]] = {
    "CNAME": (0,), "NS": (0,), "PTR": (0,), "DNAME": (0,), "MX": (1,), "SRV": (3,),
    "SOA": (0, 1), "NAPTR": (5,), "RP": (0, 1),
}  # fmt: skip
_TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TTL_RE = re.compile(r"(?:\d+[smhdw]?)+", re.IGNORECASE)


class ZoneFileError(ValueError):
    """Master-file text that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class _Entry:
    line: int
    tokens: tuple[str, ...]
    quoted: tuple[bool, ...]
    indented: bool  # starts with white space: the owner is the previous entry's


# -- names ------------------------------------------------------------------------------------


def fqdn(name: str) -> str:
    """Lower-case with the trailing dot: how zones and names are compared."""
    name = name.lower()
    return name if name.endswith(".") else name + "."


def name_error(name: str) -> str | None:
    """Why `name` (with trailing dot) is not a legal domain name, or None when it is."""
    if name == ".":
        return None
    if not name.endswith("."):
        return "not fully qualified"
    labels = name[:-1].split(".")
    if any(not label for label in labels):
        return "empty label"
    if any(len(label.encode()) > 63 for label in labels):
        return "label longer than 63 octets"
    if len(name.encode()) + 1 > 255:
        return "name longer than 255 octets"
    return None


def is_subdomain(name: str, zone: str) -> bool:
    return zone == "." or name == zone or name.endswith("." + zone)


# -- fallthrough --------------------------------------------------------------------------------

Fallthrough = tuple[str, ...] | None  # None: never; (): every name; else only these zones


def falls_through(fall: Fallthrough, lname: str) -> bool:
    if fall is None:
        return False
    return not fall or match_zone(lname, fall) is not None


# -- master-file text ---------------------------------------------------------------------------


def _entries(text: str, filename: str) -> Iterator[_Entry]:
    """Logical entries: comments dropped, quoted strings kept whole, parentheses joined."""
    tokens: list[str] = []
    quoted: list[bool] = []
    start = 0
    indented = False
    depth = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        i = 0
        if depth == 0:
            start = lineno
            indented = line[:1] in (" ", "\t")
        while i < len(line):
            c = line[i]
            if c in " \t\r":
                i += 1
            elif c == ";":
                break
            elif c == "(":
                depth += 1
                i += 1
            elif c == ")":
                if depth == 0:
                    raise ZoneFileError(f"{filename}:{lineno}: ')' without '('")
                depth -= 1
                i += 1
            elif c == '"':
                i += 1
                out = []
                while i < len(line) and line[i] != '"':
                    if line[i] == "\\" and i + 1 < len(line):
                        digits = line[i + 1:i + 4]
                        if len(digits) == 3 and digits.isdigit():
                            out.append(chr(int(digits)))
                            i += 4
                            continue
                        out.append(line[i + 1])
                        i += 2
                        continue
                    out.append(line[i])
                    i += 1
                if i >= len(line):
                    raise ZoneFileError(f"{filename}:{lineno}: unterminated quoted string")
                i += 1
                tokens.append("".join(out))
                quoted.append(True)
            else:
                j = i
                while j < len(line) and line[j] not in ' \t\r;()"':
                    j += 2 if line[j] == "\\" else 1
                tokens.append(line[i:j])
                quoted.append(False)
                i = j
        if depth == 0 and tokens:
            yield _Entry(start, tuple(tokens), tuple(quoted), indented)
            tokens, quoted = [], []
    if depth:
        raise ZoneFileError(f"{filename}:{start}: '(' not closed before the end of the file")
    if tokens:
        yield _Entry(start, tuple(tokens), tuple(quoted), indented)


def parse_ttl(text: str) -> int | None:
    """A TTL field: seconds, or BIND's units (`1h30m`); None if it is not one."""
    if text.isdigit():
        return int(text)
    if not _TTL_RE.fullmatch(text) or text[-1].isdigit():
        return None
    total = 0
    for number, unit in re.findall(r"(\d+)([smhdw])", text, re.IGNORECASE):
        total += int(number) * _TTL_UNITS[unit.lower()]
    return total


def _qualify(name: str, origin: str) -> str:
    if name == "@":
        return origin
    if name.endswith(".") and not name.endswith("\\."):
        return name
    return name + "." + origin if origin != "." else name + "."


def _rtype(text: str) -> int | None:
    upper = text.upper()
    if upper.startswith("TYPE") and upper[4:].isdigit():
        return int(upper[4:])
    value = QTYPE.reverse.get(upper)
    return value if isinstance(value, int) else None


def _rdata(rtype: int, tokens: list[str], origin: str) -> RD:
    name = QTYPE.get(rtype)
    for index in NAME_FIELDS.get(name, ()):
        if index < len(tokens):
            tokens[index] = _qualify(tokens[index], origin)
    if name == "A":
        if len(tokens) != 1:
            raise ValueError("an A record has one address")
        ipaddress.IPv4Address(tokens[0])
    elif name == "AAAA":
        if len(tokens) != 1:
            raise ValueError("an AAAA record has one address")
        tokens[0] = str(ipaddress.IPv6Address(tokens[0]))
    elif name in NAME_FIELDS and len(tokens) < max(NAME_FIELDS[name]) + 1:
        raise ValueError(f"too few fields for {name}")
    if tokens[:1] == ["\\#"]:  # RFC 3597 generic data: \# LENGTH HEX...
        data = bytes.fromhex("".join(tokens[2:]))
        if len(tokens) < 2 or int(tokens[1]) != len(data):
            raise ValueError("generic data length does not match")
        return RD(data)
    return RDMAP.get(name, RD).fromZone(tokens, DNSLabel(origin))


def parse_records(text: str, origin: str, filename: str, default_ttl: int | None = None,
                  lines: list[int] | None = None) -> list[RR]:
    """Every record of a master file, names absolute; ZoneFileError names file:line.

    When `lines` is given, the line of each record is appended to it (for later errors)."""
    origin = fqdn(origin)
    owner: str | None = None
    dir_ttl = default_ttl  # from $TTL
    last_ttl: int | None = None  # the previous explicit TTL (RFC 1035) when there is no $TTL
    records: list[RR] = []
    for entry in _entries(text, filename):
        where = f"{filename}:{entry.line}"
        tokens = list(entry.tokens)
        keyword = tokens[0].upper()
        if keyword == "$ORIGIN":
            if len(tokens) != 2:
                raise ZoneFileError(f"{where}: $ORIGIN takes one domain name")
            origin = fqdn(_qualify(tokens[1], origin))
            continue
        if keyword == "$TTL":
            ttl = parse_ttl(tokens[1]) if len(tokens) == 2 else None
            if ttl is None:
                raise ZoneFileError(f"{where}: $TTL takes one TTL, got {' '.join(tokens[1:])!r}")
            dir_ttl = ttl
            continue
        if keyword.startswith("$"):
            raise ZoneFileError(f"{where}: {tokens[0]} is not supported by dnsserver")
        if not entry.indented:
            owner = _qualify(tokens.pop(0), origin)
        elif owner is None:
            raise ZoneFileError(f"{where}: the first record has no owner name")
        ttl = None
        rclass = 1
        for _ in range(2):  # TTL and class, in either order
            if tokens and ttl is None and parse_ttl(tokens[0]) is not None:
                ttl = parse_ttl(tokens.pop(0))
            elif tokens and tokens[0].upper() in CLASSES:
                rclass = CLASSES[tokens.pop(0).upper()]
        if not tokens:
            raise ZoneFileError(f"{where}: no record type")
        rtype = _rtype(tokens[0])
        if rtype is None:
            raise ZoneFileError(f"{where}: unknown record type {tokens[0]!r}")
        tokens.pop(0)
        if not tokens:
            raise ZoneFileError(f"{where}: {QTYPE.get(rtype)} record has no data")
        if ttl is not None and dir_ttl is None:
            last_ttl = ttl
        if ttl is None:
            ttl = dir_ttl if dir_ttl is not None else last_ttl if last_ttl is not None \
                else DEFAULT_TTL
        problem = name_error(owner)
        if problem:
            raise ZoneFileError(f"{where}: bad owner name {owner!r}: {problem}")
        try:
            rdata = _rdata(rtype, tokens, origin)
        except ZoneFileError:
            raise
        except Exception as exc:  # dnslib raises many types for bad data
            raise ZoneFileError(f"{where}: bad {QTYPE.get(rtype)} data "
                                f"{' '.join(entry.tokens)!r}: {exc}") from None
        records.append(RR(owner, rtype, rclass, ttl, rdata))
        if lines is not None:
            lines.append(entry.line)
    return records


def parse_record(text: str, where: str) -> RR:
    """One record in master-file form, relative names completed with '.' (as miekg's NewRR)."""
    records = parse_records(text, ".", where)
    if len(records) != 1:
        raise ZoneFileError(f"{where}: expected one resource record, got {len(records)}")
    return records[0]


def rdata_name(rr: RR) -> str | None:
    """The domain name a record points at (CNAME, NS, MX, SRV, PTR, ...), lower-case, or None."""
    rd = rr.rdata
    for attr in ("label", "target", "mname", "replacement"):
        value = getattr(rd, attr, None)
        if isinstance(value, DNSLabel):
            return str(value).lower()
    return None


__all__ = [
    "CLASS", "DEFAULT_TTL", "Fallthrough", "ZoneFileError", "falls_through", "fqdn",
    "is_subdomain", "name_error", "parse_record", "parse_records", "parse_ttl", "rdata_name",
]  # fmt: skip
