"""The naive Python baseline: dnslib's stock threaded `DNSServer` answering from a zone file.

Parses the zone with dnslib's own parser and answers authoritatively, nothing more.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections import defaultdict

from dnslib import QTYPE, RCODE, RR, DNSLabel, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSServer


class ZoneResolver(BaseResolver):
    """Exact-match authoritative answers with NXDOMAIN/NODATA and the SOA for negatives."""

    def __init__(self, zone_text: str) -> None:
        self.rrsets: dict[tuple[DNSLabel, int], list[RR]] = defaultdict(list)
        self.names: set[DNSLabel] = set()
        self.soa: RR | None = None
        for rr in RR.fromZone(zone_text):
            self.rrsets[(rr.rname, rr.rtype)].append(rr)
            if rr.rtype == QTYPE.SOA:
                self.soa = rr
            # Empty non-terminals (ns.svc.cluster.local) exist: NODATA there, not NXDOMAIN.
            label = rr.rname
            while label.label and label not in self.names:
                self.names.add(label)
                label = DNSLabel(label.label[1:])
        if self.soa is None:
            raise ValueError("zone has no SOA")
        self.origin = self.soa.rname

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()  # sets QR, AA and RD like an authoritative server
        q = request.q
        if not q.qname.matchSuffix(self.origin):
            reply.header.rcode = RCODE.REFUSED
            reply.header.aa = 0
            return reply
        rrs = self.rrsets.get((q.qname, q.qtype))
        if rrs:
            reply.rr.extend(rrs)
        else:
            if q.qname not in self.names:
                reply.header.rcode = RCODE.NXDOMAIN
            reply.auth.append(self.soa)
        return reply


class QuietLogger:
    """dnslib's default logger prints every query; printing would dominate the CPU cost."""

    def __getattr__(self, name: str):  # log_request, log_reply, log_error, ...
        return lambda *args, **kwargs: None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--zone", required=True)
    ap.add_argument("--port", type=int, default=5353)
    ap.add_argument("--address", default="127.0.0.1")
    args = ap.parse_args(argv)
    with open(args.zone, encoding="utf-8") as f:
        resolver = ZoneResolver(f.read())
    server = DNSServer(resolver, port=args.port, address=args.address, logger=QuietLogger())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start_thread()
    print(f"dnslib baseline ready on {args.address}:{args.port}", flush=True)
    while not stop.wait(1.0):  # a timed wait keeps signal delivery prompt
        pass
    server.stop()


if __name__ == "__main__":
    main()
