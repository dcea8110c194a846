"""The `log` plugin: CoreDNS's query lines, for the slow path and the fast path alike.

In the chain it only marks the request; the engine calls `QueryLog.write` once the answer's
bytes are known (they are what the line describes), and again for every fast-path hit.
"""

from __future__ import annotations

from typing import Any

from dnsserver import logfmt
from dnsserver.kubernetes_zone import match_zone
from dnsserver.plugin import Plugin, Reply, Request

CLASSES = ("success", "denial", "error", "all")


class QueryLog(Plugin):
    name = "log"

    def __init__(self, rules: list[tuple[tuple[str, ...], frozenset[str]]]) -> None:
        super().__init__()
        self.rules = rules  # (zones, classes); zones () means every name

    async def serve(self, req: Request) -> Reply:
        req.meta["log"] = self
        return await self.next.serve(req)

    def write(self, client: tuple[str, int], proto: str, query: bytes, answer: bytes,
              duration_ns: int) -> None:
        try:
            line, cls = logfmt.query_log_line_from_wire(client[0], client[1], proto, query,
                                                        answer, duration_ns)
        except logfmt.WireError:
            return
        name = line.split('"', 2)[1].split(" ")[2] if '"' in line else ""
        for zones, classes in self.rules:
            if zones and match_zone(name, zones) is None:
                continue
            if logfmt.should_log(classes, cls):
                logfmt.log_query(line)
                return


def setup(d: Any, ctx: Any) -> Plugin:
    zones = tuple(z.lower() if z.endswith(".") else z.lower() + "." for z in d.args
                  if not z.startswith("{"))
    if any(a.startswith("{") for a in d.args):
        raise d.error("custom formats are not supported (see corefile-compat.md)")
    classes: set[str] = set()
    for opt in d.block:
        if opt.name != "class":
            raise opt.error(f"unknown property '{opt.name}'")
        opt.arg_count(1, None)
        for c in opt.args:
            if c not in CLASSES:
                raise opt.error(f"invalid class {c!r}")
            classes.add(c)
    zones = () if zones in ((), (".",)) else zones
    rule = (zones, frozenset(classes))
    existing = ctx.shared.get("log")
    if existing is not None:  # several `log` lines in one block: one plugin, several rules
        existing.rules.append(rule)
        return None  # type: ignore[return-value]
    plugin = ctx.shared["log"] = QueryLog([rule])
    return plugin


SETUPS = {"log": setup}
