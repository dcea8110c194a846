"""The `template` plugin: answers built from the query name by regex and a record template, as
CoreDNS's plugin/template builds them.

CoreDNS's records are Go `text/template`s; this module compiles the subset that CoreDNS's own
README examples use (`{{ .Name }}`, `{{ .Group.x }}`, `{{ index .Match 1 }}`, ...) into a list of
literal strings and field getters, and refuses anything else at start-up, naming the line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RR, DNSRecord

from dnsserver.kubernetes_zone import match_zone
from dnsserver.plugin import NXDOMAIN, SERVFAIL, Plugin, Reply, Request, make_reply
from dnsserver.plugins._zonedata import Fallthrough, ZoneFileError, falls_through, parse_record
from dnsserver.plugins.kubernetes import zone_args

log = logging.getLogger("dnsserver.template")

Lookup = Callable[[str, int, int], Awaitable[DNSRecord | None]]

# miekg/dns's names, which CoreDNS matches case-sensitively.
CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
          "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10}
ANY_TYPE = 255
SUPPORTED = ("{{ .Name }}, {{ .Zone }}, {{ .Class }}, {{ .Type }}, {{ .Regex }}, "
             "{{ .Group.NAME }}, {{ index .Group \"NAME\" }}, {{ index .Match N }}, "
             "{{ .Question.Name }}, {{ .Question.Qtype }}, {{ .Question.Qclass }}, "
             "{{ .Meta \"NAME\" }}")
_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_FIELDS = {".Name": "name", ".Zone": "zone", ".Class": "cls", ".Type": "type",
           ".Regex": "regex", ".Question.Name": "qname", ".Question.Qtype": "qtype",
           ".Question.Qclass": "qclass"}


class TemplateError(ValueError):
    """A template CoreDNS would run but this translator cannot, or that Go would not parse."""


@dataclass
class TemplateData:
    """What a record template may use, from the query and the regex that matched it."""

    zone: str
    name: str
    regex: str
    match: list[str]
    group: dict[str, str]
    cls: str
    type: str
    qname: str
    qtype: str
    qclass: str


Part = str | Callable[[TemplateData], str]


def _index_match(n: int) -> Callable[[TemplateData], str]:
    def get(data: TemplateData) -> str:
        if n >= len(data.match):
            # Go fails the execution; CoreDNS answers SERVFAIL and logs it.
            raise TemplateError(f"error calling index: index out of range: {n}")
        return data.match[n]

    return get


def _group(key: str) -> Callable[[TemplateData], str]:
    return lambda data: data.group.get(key, "<no value>")  # Go prints a missing key so


def _action(text: str) -> Part:
    """One `{{ ... }}` pipeline of the supported subset, as a getter (or literal)."""
    if text.startswith("/*") and text.endswith("*/"):
        return ""
    if text in _FIELDS:
        attr = _FIELDS[text]
        return lambda data: getattr(data, attr)
    m = re.fullmatch(r"\.Group\.(\w+)", text)
    if m:
        return _group(m.group(1))
    m = re.fullmatch(r"index\s+\.Match\s+(\d+)", text)
    if m:
        return _index_match(int(m.group(1)))
    m = re.fullmatch(r'index\s+\.Group\s+"([^"]*)"', text)
    if m:
        return _group(m.group(1))
    if re.fullmatch(r'\.Meta\s+"[^"]*"', text):
        return ""  # no metadata plugin here: Go's Meta gives "" for unknown names too
    raise TemplateError(f"{{{{ {text} }}}} is not supported by dnsserver (supported: "
                        f"{SUPPORTED})")


def compile_template(source: str) -> list[Part]:
    """Literal text and getters; TemplateError for what is not in the supported subset."""
    parts: list[Part] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(source):
        literal = source[pos:m.start()]
        body = m.group(1)
        # `{{- ` and ` -}}` trim the white space next to the action, as in Go.
        trim_left = body.startswith("- ") or body.startswith("-\t") or body == "-"
        trim_right = body.endswith(" -") or body.endswith("\t-")
        if trim_next:
            literal = literal.lstrip()
        if trim_left:
            literal = literal.rstrip()
            body = body[1:]
        if trim_right:
            body = body[:-1]
        trim_next = trim_right
        parts.append(literal)
        parts.append(_action(body.strip()))
        pos = m.end()
    rest = source[pos:]
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"unbalanced braces in {source!r}")
    parts.append(rest.lstrip() if trim_next else rest)
    return [p for p in parts if p != ""]


def render(parts: list[Part], data: TemplateData) -> str:
    return "".join(p if isinstance(p, str) else p(data) for p in parts)


@dataclass
class Template:
    """One `template CLASS TYPE [ZONE...] { ... }` stanza."""

    qclass: int
    qtype: int
    zones: tuple[str, ...]
    regex: list[re.Pattern[str]] = field(default_factory=list)
    answer: list[tuple[str, list[Part]]] = field(default_factory=list)
    additional: list[tuple[str, list[Part]]] = field(default_factory=list)
    authority: list[tuple[str, list[Part]]] = field(default_factory=list)
    rcode: int = 0
    fall: Fallthrough = None
    upstream: bool = False
    where: str = ""

    def match(self, req: Request) -> tuple[TemplateData | None, bool]:
        """(data, fall): data when this template answers; else whether to try the next."""
        lname = req.lname
        zone = match_zone(lname, self.zones)
        if zone is None:
            return None, True
        q = req.message.q
        if self.qclass != 255 and q.qclass != 255 and q.qclass != self.qclass:
            return None, True
        if self.qtype != ANY_TYPE and q.qtype != ANY_TYPE and q.qtype != self.qtype:
            return None, True
        for regex in self.regex:
            m = regex.search(lname)
            if m is None:
                continue
            groups = [m.group(0)] + [g or "" for g in m.groups()]
            group = {str(i): g for i, g in enumerate(groups)}
            group.update({k: v or "" for k, v in m.groupdict().items()})
            cls = q.qclass if q.qclass != 255 else self.qclass
            qtype = q.qtype if q.qtype != ANY_TYPE else self.qtype
            data = TemplateData(zone, lname, regex.pattern, groups, group,
                                _class_name(cls), QTYPE.get(qtype), str(q.qname),
                                str(q.qtype), str(q.qclass))
            return data, False
        return None, falls_through(self.fall, lname)


def _class_name(value: int) -> str:
    return next((k for k, v in CLASSES.items() if v == value), f"CLASS{value}")


class TemplatePlugin(Plugin):
    name = "template"

    def __init__(self, template: Template, lookup: Lookup | None = None) -> None:
        super().__init__()
        self.template = template
        self.lookup = lookup

    async def serve(self, req: Request) -> Reply:
        t = self.template
        data, fall = t.match(req)
        if data is None:
            if fall:
                return await self.next.serve(req)
            # CoreDNS returns NXDOMAIN here without writing a reply (the client times out);
            # we send the NXDOMAIN.
            return Reply(make_reply(req, NXDOMAIN, ra=False), self.name, set())
        if t.rcode == SERVFAIL:
            return Reply(make_reply(req, SERVFAIL, aa=False, ra=False), self.name, set())
        # The reply is a pure function of the query bytes: keep it, unless upstream data is in it.
        tags: set | None = set()
        answer: list[RR] = []
        for where, parts in t.answer:
            rr = _record(parts, data, where)
            answer.append(rr)
            if (t.upstream and req.qtype in (QTYPE.A, QTYPE.AAAA) and rr.rtype == QTYPE.CNAME
                    and self.lookup is not None):
                tags = None
                found = await self.lookup(str(rr.rdata.label), req.qtype,
                                          int(req.meta.get("depth", 0)))
                if found is not None:
                    answer.extend(found.rr)
        additional = [_record(parts, data, where) for where, parts in t.additional]
        authority = [_record(parts, data, where) for where, parts in t.authority]
        message = make_reply(req, t.rcode, answer, authority, additional, ra=False)
        return Reply(message, self.name, tags)


def _record(parts: list[Part], data: TemplateData, where: str) -> RR:
    text = render(parts, data)
    try:
        return parse_record(text, where)
    except ZoneFileError as exc:
        # The engine logs this as plugin/errors and answers SERVFAIL, as CoreDNS does.
        raise TemplateError(f"plugin/template: {where}: invalid resource record {text!r}: "
                            f"{exc}") from None


def parse_template(d: Any, block_zones: tuple[str, ...]) -> Template:
    d.arg_count(2, None)
    cls_text, type_text, *zone_texts = d.args
    if cls_text not in CLASSES:
        raise d.error(f"invalid query class {cls_text}")
    qtype = QTYPE.reverse.get(type_text) if type_text == type_text.upper() else None
    if not isinstance(qtype, int):
        raise d.error(f"invalid RR class {type_text}")  # sic: CoreDNS's words
    zones: list[str] = []
    for text in zone_texts:
        zones.extend(text.strip("'\"").split())
    t = Template(CLASSES[cls_text], qtype, zone_args(tuple(zones)) if zones else block_zones,
                 where=f"{d.file}:{d.line}")
    sections = {"answer": t.answer, "additional": t.additional, "authority": t.authority}
    for opt in d.block:
        if opt.name == "match":
            opt.arg_count(1, None)
            for pattern in opt.args:
                try:
                    t.regex.append(re.compile(pattern))
                except re.error as exc:
                    raise opt.error(f"could not parse regex: {pattern}, {exc}") from None
        elif opt.name in sections:
            opt.arg_count(1, None)
            for source in opt.args:
                try:
                    sections[opt.name].append((f"{opt.file}:{opt.line}", compile_template(source)))
                except TemplateError as exc:
                    raise opt.error(f"could not compile template: {opt.name}, {exc}") from None
        elif opt.name == "rcode":
            opt.arg_count(1, 1)
            if opt.args[0] not in RCODES:
                raise opt.error(f"unknown rcode {opt.args[0]}")
            t.rcode = RCODES[opt.args[0]]
        elif opt.name == "fallthrough":
            t.fall = zone_args(opt.args)
        elif opt.name == "upstream":
            t.upstream = True
        elif opt.name == "edns":
            raise opt.error("edns local is not supported by dnsserver")
        else:
            raise opt.error(f"Wrong argument count or unexpected line ending after '{opt.name}'")
    if not t.regex:
        t.regex.append(re.compile(".*"))
    if not t.answer and not t.authority and t.rcode == 0:
        raise d.error("no answer section for template found")
    return t


def setup(d: Any, ctx: Any) -> Plugin:
    template = parse_template(d, ctx.zones)
    port = ctx.port

    async def lookup(name: str, qtype: int, depth: int) -> DNSRecord | None:
        resolve = ctx.assembly.lookups.get(port)
        return None if resolve is None else await resolve(name, qtype, depth)

    return TemplatePlugin(template, lookup)


SETUPS = {"template": setup}
