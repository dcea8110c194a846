"""The `loadbalance` plugin: address records in a changing order, as CoreDNS's round_robin.

On the slow path the A/AAAA (and MX) records of each section are shuffled, with CNAMEs first
and other records before the addresses, as CoreDNS orders them. Answers the fast path keeps are
rotated one step per answer from the kept bytes (engine), so the order keeps changing there too.
An upstream's answer that is one run of address records is shuffled in its bytes, unparsed.
"""

from __future__ import annotations

import random
from typing import Any

from dnslib import QTYPE, RR, DNSRecord

from dnsserver import wire
from dnsserver.plugin import Plugin, Reply, Request


def reorder(records: list[RR], rng: random.Random) -> list[RR]:
    cnames = [r for r in records if r.rtype == QTYPE.CNAME]
    addresses = [r for r in records if r.rtype in (QTYPE.A, QTYPE.AAAA)]
    mx = [r for r in records if r.rtype == QTYPE.MX]
    rest = [r for r in records if r.rtype not in (QTYPE.CNAME, QTYPE.A, QTYPE.AAAA, QTYPE.MX)]
    rng.shuffle(addresses)
    rng.shuffle(mx)
    return cnames + rest + addresses + mx


class LoadBalance(Plugin):
    name = "loadbalance"

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__()
        self.rng = rng or random.Random()

    def relay_step(self, lname: str, qtype: int) -> Any:
        return self.shuffle_bytes

    def shuffle_bytes(self, data: bytes) -> bytes:
        """An upstream's answer with its records reordered: in its bytes when it is one run
        of addresses, else decoded and encoded again (as the slow path would)."""
        if data[3] & 0xF or not _has_addresses(data):
            return data
        run = wire.movable_address_run(data)
        if run is not None:
            start, end, size = run
            records = [data[at : at + size] for at in range(start, end, size)]
            self.rng.shuffle(records)
            return data[:start] + b"".join(records) + data[end:]
        try:
            msg = DNSRecord.parse(data)
            self._reorder(msg)
            return msg.pack()
        except Exception:  # dnslib cannot read or write it back: relay it as it came
            return data

    async def serve(self, req: Request) -> Reply:
        req.meta["loadbalance"] = True
        reply = await self.next.serve(req)
        relayed = reply.wire
        if relayed is not None and (relayed[3] & 0xF or not _has_addresses(relayed)
                                    or wire.movable_address_run(relayed) is not None):
            reply.wire = self.shuffle_bytes(relayed)
            return reply
        msg = reply.message
        if msg.header.rcode == 0:
            self._reorder(msg)
        return reply

    def _reorder(self, msg: DNSRecord) -> None:
        msg.rr = reorder(msg.rr, self.rng)
        msg.auth = reorder(msg.auth, self.rng)
        opt = [r for r in msg.ar if r.rtype == QTYPE.OPT]
        msg.ar = reorder([r for r in msg.ar if r.rtype != QTYPE.OPT], self.rng) + opt


def _has_addresses(data: bytes) -> bool:
    """Whether an encoded answer has a section with two records to reorder (else there is
    nothing to do: a second record in the additional section may be the OPT)."""
    ancount, nscount, arcount = data[6] << 8 | data[7], data[8] << 8 | data[9], (
        data[10] << 8 | data[11])
    return ancount > 1 or nscount > 1 or arcount > 2


def setup(d: Any, ctx: Any) -> Plugin:
    d.arg_count(0, 1)
    if d.args and d.args[0] != "round_robin":
        raise d.error(f"unknown policy: {d.args[0]}")
    if d.block:
        raise d.block[0].error(f"unknown property '{d.block[0].name}'")
    return LoadBalance()


SETUPS = {"loadbalance": setup}
