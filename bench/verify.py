"""Fairness check before measuring: every server must give the same answers to the same queries.

Compares rcode, the answer section as a set of (name, type, ttl, rdata) and the TC flag against
the reference (native) server; authority-section differences are reported apart as notes.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

Answer = tuple[str, bool, frozenset[tuple[str, str, int, str]], frozenset[str]]


@dataclass
class Report:
    checked: int = 0
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def sample(query_files: list[Path], count: int, seed: int = 7,
           exclude: Collection[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """Up to `count` distinct (name, type) pairs drawn from dnsperf query files.

    `exclude`: pairs already asked, e.g. of a server whose cache would now answer them aged.
    """
    lines: set[tuple[str, str]] = set()
    for qf in query_files:
        for line in qf.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                lines.add((parts[0], parts[1]))
    pool = sorted(lines.difference(exclude))
    return random.Random(seed).sample(pool, min(count, len(pool)))


def ask(port: int, name: str, rtype: str, timeout: float = 2.0) -> Answer | str:
    # No EDNS, like dnsperf without -e: the same 512-byte limit applies to every server.
    q = dns.message.make_query(name, rtype, use_edns=False)
    try:
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError) as exc:
        return f"no answer ({type(exc).__name__})"
    answer = frozenset(
        (rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype), rrset.ttl,
         rd.to_text().lower())
        for rrset in r.answer for rd in rrset
    )
    authority = frozenset(
        f"{rrset.name.to_text().lower()} {dns.rdatatype.to_text(rrset.rdtype)}"
        for rrset in r.authority
    )
    tc = bool(r.flags & dns.flags.TC)
    return dns.rcode.to_text(r.rcode()), tc, answer, authority


def compare(ports: dict[str, int], reference: str, queries: list[tuple[str, str]]) -> dict[
        str, Report]:
    """Ask every server every query; report differences from `reference` per server."""
    reports = {name: Report() for name in ports if name != reference}
    for name, rtype in queries:
        want = ask(ports[reference], name, rtype)
        for server, report in reports.items():
            got = ask(ports[server], name, rtype)
            report.checked += 1
            if isinstance(want, str) or isinstance(got, str):
                if want != got:
                    report.mismatches.append(f"{name} {rtype}: {reference} {want!r}, "
                                             f"{server} {got!r}")
                continue
            if want[:3] != got[:3]:
                report.mismatches.append(_diff(name, rtype, reference, want, server, got))
            elif want[3] != got[3]:
                report.notes.append(f"{name} {rtype}: authority {sorted(want[3])} vs "
                                    f"{sorted(got[3])}")
    return reports


def summary(label: str, reference: str, reports: dict[str, Report]) -> list[str]:
    """Lines for the results: per server, how many queries agreed, and the first mismatches."""
    lines = []
    for name, rep in reports.items():
        status = "same answers" if not rep.mismatches else f"{len(rep.mismatches)} MISMATCHES"
        lines.append(f"{label}: {name} vs {reference}: {rep.checked} queries, {status}"
                     + (f", {len(rep.notes)} authority-section differences" if rep.notes
                        else ""))
        lines += [f"    {m}" for m in rep.mismatches[:5]]
        lines += [f"    note: {m}" for m in rep.notes[:2]]
    return lines


def _diff(name: str, rtype: str, ref: str, want: Answer, server: str, got: Answer) -> str:
    parts = [f"{name} {rtype}:"]
    if want[0] != got[0]:
        parts.append(f"rcode {ref}={want[0]} {server}={got[0]}")
    if want[1] != got[1]:
        parts.append(f"TC {ref}={want[1]} {server}={got[1]}")
    missing, extra = want[2] - got[2], got[2] - want[2]
    if missing:
        parts.append(f"missing {sorted(missing)[:3]}{'...' if len(missing) > 3 else ''}")
    if extra:
        parts.append(f"extra {sorted(extra)[:3]}{'...' if len(extra) > 3 else ''}")
    return " ".join(parts)
