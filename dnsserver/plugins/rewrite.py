"""The `rewrite` plugin: a request's name, type or class rewritten before the rest of the chain
sees it, and the reply turned back so the client sees its own question (CoreDNS's plugin/rewrite):
`answer auto|name|value` rules for names in the reply, and `ttl` and `rcode` reply rules.

Each `rewrite` line of a server block is one plugin in the chain (in Corefile order); a rule in
`stop` mode that matched tells the later ones, through the request's meta, to stand aside.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dnslib import QTYPE, RR, DNSLabel, DNSQuestion

from dnsserver.plugin import Plugin, Reply, Request
from dnsserver.plugins._zonedata import name_error

STOP = "rewrite.stopped"
MATCH_TYPES = ("exact", "prefix", "suffix", "substring", "regex")
CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
          "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10}
# Record data that holds a name an `answer value` (or `answer auto`) rule may rewrite; the same
# types as CoreDNS's.
VALUE_FIELDS = {QTYPE.CNAME: "label", QTYPE.NS: "label", QTYPE.DNAME: "label",
                QTYPE.MX: "label", QTYPE.SRV: "target", QTYPE.SOA: "mname",
                QTYPE.NAPTR: "replacement"}
OPT = 41

StringRewriter = Callable[[str], str | None]  # None: leave the string alone


class RuleError(ValueError):
    """A rewrite rule CoreDNS would refuse; the words are CoreDNS's."""


def normalize(name: str) -> str:
    """CoreDNS's plugin.Name(...).Normalize(): lower case, trailing dot."""
    name = name.lower()
    return name if name.endswith(".") else name + "."


def _expand(template: str, groups: list[str]) -> str:
    for i, value in enumerate(groups):
        template = template.replace(f"{{{i}}}", value)
    return template


def _compile(pattern: str, replacement: str) -> re.Pattern[str]:
    try:
        regex = re.compile(pattern)
    except re.error:
        raise RuleError(f"invalid regex matching pattern: {pattern}") from None
    used = sum(1 for i in range(101) if f"{{{i}}}" in replacement)
    if used > regex.groups:
        raise RuleError(f"the rewrite regex pattern ({replacement}) uses more subexpressions "
                        f"than its corresponding matching regex pattern ({pattern})")
    return regex


def regex_rewriter(regex: re.Pattern[str], replacement: str) -> StringRewriter:
    def rewrite(s: str) -> str | None:
        m = regex.search(s)
        if m is None:
            return None
        return _expand(replacement, [m.group(0)] + [g or "" for g in m.groups()])

    return rewrite


def remap_rewriter(orig: str, replacement: str) -> StringRewriter:
    return lambda s: replacement if s.lower() == orig else None


def suffix_rewriter(suffix: str, replacement: str) -> StringRewriter:
    return lambda s: s[: len(s) - len(suffix)] + replacement if s.lower().endswith(suffix) else None


# -- response rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ResponseRule:
    """What to do to each record (or the header) of the reply."""

    kind: str  # "name", "value", "ttl" or "rcode"
    rewrite: StringRewriter | None = None
    ttl: tuple[int, int] = (0, 0)
    rcode: tuple[int, int] = (0, 0)

    def apply(self, rr: RR) -> None:
        if self.kind == "name" and self.rewrite is not None:
            new = self.rewrite(str(rr.rname))
            if new is not None:
                rr.rname = DNSLabel(new)
        elif self.kind == "value" and self.rewrite is not None:
            attr = VALUE_FIELDS.get(rr.rtype)
            if attr is not None:
                new = self.rewrite(str(getattr(rr.rdata, attr)))
                if new is not None:
                    setattr(rr.rdata, attr, DNSLabel(new))
        elif self.kind == "ttl":
            rr.ttl = min(max(rr.ttl, self.ttl[0]), self.ttl[1])


# -- request rules ------------------------------------------------------------------------------


@dataclass
class Question:
    """The question as the rules see and change it; `name` lower-case as CoreDNS's state.Name()."""

    name: str
    qtype: int
    qclass: int


@dataclass(frozen=True)
class NameMatcher:
    kind: str
    pattern: str
    regex: re.Pattern[str] | None = None

    def match(self, name: str) -> re.Match[str] | bool | None:
        if self.kind == "exact":
            return name == self.pattern
        if self.kind == "prefix":
            return name.startswith(self.pattern)
        if self.kind == "suffix":
            return name.endswith(self.pattern)
        if self.kind == "substring":
            return self.pattern in name
        assert self.regex is not None
        return self.regex.search(name)


@dataclass(frozen=True)
class Rule:
    """One rewrite line: changes the question, and says how the reply is to be turned back."""

    mode: str  # "stop" or "continue"
    field: str  # "name", "type", "class", "ttl", "rcode"
    matcher: NameMatcher | None = None
    replacement: str = ""
    auto: bool = False
    responses: tuple[ResponseRule, ...] = ()
    types: tuple[int, int] = (0, 0)

    def apply(self, q: Question) -> list[ResponseRule] | None:
        """Rewrite `q` in place; the reply rules to run, or None when the rule did not match."""
        if self.field in ("type", "class"):
            current = q.qtype if self.field == "type" else q.qclass
            if current != self.types[0]:
                return None
            if self.field == "type":
                q.qtype = self.types[1]
            else:
                q.qclass = self.types[1]
            return list(self.responses)
        assert self.matcher is not None
        m = self.matcher.match(q.name)
        if not m:
            return None
        if self.field in ("ttl", "rcode"):
            return list(self.responses)
        original = q.name
        kind, pattern = self.matcher.kind, self.matcher.pattern
        if kind == "exact":
            q.name = self.replacement
        elif kind == "prefix":
            q.name = self.replacement + q.name[len(pattern):]
        elif kind == "suffix":
            q.name = q.name[: len(q.name) - len(pattern)] + self.replacement
        elif kind == "substring":
            q.name = q.name.replace(pattern, self.replacement)
        else:
            assert isinstance(m, re.Match)
            q.name = _expand(self.replacement, [m.group(0)] + [g or "" for g in m.groups()])
        if not self.auto:
            return list(self.responses)
        back = remap_rewriter(q.name, original)
        return [ResponseRule("name", back), ResponseRule("value", back), *self.responses]


def _answer_rules(match_type: str, args: list[str]) -> tuple[bool, list[ResponseRule]]:
    auto = False
    rules: list[ResponseRule] = []
    name_rules = 0
    if len(args) < 2:
        raise RuleError(f"invalid arguments for {match_type} rule")
    i = 0
    while i < len(args):
        if args[i] != "answer":
            raise RuleError("exceeded the number of arguments for a non-answer rule argument "
                            f"for {match_type} rule")
        i += 1
        if i >= len(args):
            raise RuleError(f"type missing for answer rule for {match_type} rule")
        kind = args[i]
        i += 1
        if kind == "auto":
            auto = True
            continue
        if kind not in ("name", "value"):
            raise RuleError(f"invalid type {kind!r} for answer rule for {match_type} rule")
        if len(args) - i < 2:
            raise RuleError(f"{kind} answer rule for {match_type} rule: 2 arguments required")
        try:
            regex = _compile(args[i], args[i + 1])
        except RuleError as exc:
            raise RuleError(f"{kind} answer rule for {match_type} rule: {exc}") from None
        rules.append(ResponseRule(kind, regex_rewriter(regex, normalize(args[i + 1]))))
        name_rules += kind == "name"
        i += 2
    if auto and name_rules:
        raise RuleError("auto name answer rule cannot be combined with explicit name anwer rules")
    return auto, rules


def _name_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 2:
        raise RuleError("too few arguments for a name rule")
    if len(args) == 2:
        kind, src, dst = "exact", normalize(args[0]), normalize(args[1])
    else:
        kind = args[0].lower()
        src, dst = (args[1], args[2]) if kind == "regex" else (normalize(args[1]),
                                                                normalize(args[2]))
    if kind not in MATCH_TYPES:
        raise RuleError("name rule supports only exact, prefix, suffix, substring, and regex "
                        f"name matching, received: {kind}")
    auto, answers = _answer_rules(kind, args[3:]) if len(args) > 3 else (False, [])
    if kind == "exact":
        return Rule(mode, "name", NameMatcher(kind, src), dst, True, tuple(answers))
    if kind == "suffix" and auto:
        # The reverse of a suffix rewrite is a suffix rewrite: better than remapping one name.
        back = suffix_rewriter(dst, src)
        answers = [ResponseRule("name", back), ResponseRule("value", back), *answers]
        return Rule(mode, "name", NameMatcher(kind, src), dst, False, tuple(answers))
    if kind == "regex":
        regex = _compile(src, dst)
        return Rule(mode, "name", NameMatcher(kind, src, regex), normalize(dst), auto,
                    tuple(answers))
    return Rule(mode, "name", NameMatcher(kind, src), dst, auto, tuple(answers))


def _matcher(field: str, kind: str, pattern: str) -> NameMatcher:
    kind = kind.lower()
    if kind == "regex":
        try:
            return NameMatcher(kind, pattern, re.compile(pattern))
        except re.error:
            raise RuleError(f"invalid regex pattern in a {field} rule: {pattern}") from None
    if kind not in MATCH_TYPES:
        raise RuleError(f"{field} rule supports only exact, prefix, suffix, substring, and regex "
                        "name matching")
    return NameMatcher(kind, normalize(pattern))


def _ttl_range(text: str) -> tuple[int, int] | None:
    parts = text.split("-")
    try:
        if len(parts) == 1:
            value = int(parts[0])
            low, high = value, value
        elif len(parts) == 2:
            low = int(parts[0]) if parts[0] else 0
            high = int(parts[1]) if parts[1] else 2**32 - 1
        else:
            return None
    except ValueError:
        return None
    if not (0 <= low <= high < 2**32):
        return None
    return low, high


def _ttl_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 2:
        raise RuleError("too few arguments for a ttl rule")
    if len(args) > 3:
        raise RuleError("many few arguments for a ttl rule")  # sic: CoreDNS's words
    text = args[-1]
    span = _ttl_range(text)
    if span is None:
        raise RuleError(f"invalid TTL '{text}' for a ttl rule")
    matcher = _matcher("ttl", args[0], args[1]) if len(args) == 3 else \
        NameMatcher("exact", normalize(args[0]))
    return Rule(mode, "ttl", matcher, responses=(ResponseRule("ttl", ttl=span),))


def _rcode(text: str) -> int:
    if text.isdigit() and int(text) <= 15:
        return int(text)
    if text.upper() in RCODES:
        return RCODES[text.upper()]
    raise RuleError(f"invalid rcode {text!r}")


def _rcode_rule(mode: str, args: list[str]) -> Rule:
    if len(args) not in (3, 4):
        raise RuleError("rcode rules must have a name, an rcode to match and one to set")
    matcher = _matcher("rcode", args[0], args[1]) if len(args) == 4 else \
        NameMatcher("exact", normalize(args[0]))
    codes = (_rcode(args[-2]), _rcode(args[-1]))
    return Rule(mode, "rcode", matcher, responses=(ResponseRule("rcode", rcode=codes),))


def new_rule(args: list[str]) -> Rule:
    """A rule from a rewrite line's arguments (block lines appended), as CoreDNS's newRule."""
    if not args:
        raise RuleError("no rule type specified for rewrite")
    mode = "stop"
    rest = list(args)
    if rest[0].lower() in ("stop", "continue"):
        mode = rest.pop(0).lower()
        if not rest:
            raise RuleError("no rule type specified for rewrite")
    field = rest[0].lower()
    rest = rest[1:]
    if field == "answer":
        raise RuleError("response rewrites must begin with a name rule")
    if field == "name":
        return _name_rule(mode, rest)
    if field in ("type", "class"):
        if len(rest) != 2:
            raise RuleError(f"{field} rules must have exactly two arguments")
        table = CLASSES if field == "class" else QTYPE.reverse
        values = []
        for text in rest:
            value = table.get(text.upper())
            if not isinstance(value, int):
                raise RuleError(f"invalid {field} {text.upper()!r}")
            values.append(value)
        return Rule(mode, field, types=(values[0], values[1]))
    if field == "ttl":
        return _ttl_rule(mode, rest)
    if field == "rcode":
        return _rcode_rule(mode, rest)
    if field in ("edns0", "cname"):
        raise RuleError(f"{field} rules are not supported by dnsserver (see corefile-compat.md)")
    raise RuleError(f"invalid rule type {args[0]!r}")


# -- the plugin ---------------------------------------------------------------------------------


class RewritePlugin(Plugin):
    name = "rewrite"

    def __init__(self, rule: Rule) -> None:
        super().__init__()
        self.rule = rule

    async def serve(self, req: Request) -> Reply:
        if req.meta.get(STOP):
            return await self.next.serve(req)
        original = req.message.q
        q = Question(req.lname, req.qtype, original.qclass)
        responses = self.rule.apply(q)
        if responses is None:
            return await self.next.serve(req)
        problem = name_error(q.name)
        if problem:
            # The engine answers SERVFAIL and logs it, as CoreDNS's errors plugin would.
            raise ValueError(f"plugin/rewrite: invalid name after rewrite: {q.name}")
        if self.rule.mode == "stop":
            req.meta[STOP] = True
        message = copy.copy(req.message)
        message.questions = [DNSQuestion(q.name, q.qtype, q.qclass)]
        inner = await self.next.serve(req.replace(message=message, qname=q.name,
                                                  qtype=q.qtype, qclass=q.qclass))
        # A copy: the inner plugin's message may be shared (a cache, a zone's records).
        reply = copy.deepcopy(inner.message)
        reply.questions = [original]
        for rule in responses:
            if rule.kind == "rcode":
                if reply.header.rcode == rule.rcode[0]:
                    reply.header.rcode = rule.rcode[1]
                continue
            for rr in (*reply.auth, *reply.rr, *reply.ar):
                if rr.rtype != OPT:
                    rule.apply(rr)
        # The rewrite is a pure function of the query, so the inner answer's tags still hold.
        return Reply(reply, inner.plugin, inner.tags)


def setup(d: Any, ctx: Any) -> Plugin:
    args = list(d.args)
    if len(args) < 2:
        # The block form: `rewrite [stop|continue] { name ...; answer ... }`, lines joined.
        for line in d.block:
            args.extend((line.name, *line.args))
    try:
        return RewritePlugin(new_rule(args))
    except RuleError as exc:
        raise d.error(str(exc)) from None


SETUPS = {"rewrite": setup}
