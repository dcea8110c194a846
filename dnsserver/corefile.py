"""The Corefile language: text in, immutable server blocks out, read exactly as CoreDNS reads it.

Owns the Caddy v1 caddyfile grammar CoreDNS vendors (tokens, comments, quotes, `{$ENV}`,
snippets, `import`) and CoreDNS's rules for server-block keys (schemes, ports, reverse CIDRs,
duplicate zones). It touches the file system only to follow `import`.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "PLUGIN_ORDER",
    "Corefile",
    "CorefileError",
    "Directive",
    "ServerBlock",
    "ZoneKey",
    "load",
    "parse",
    "sort_directives",
]

# CoreDNS's plugin.cfg, in its order: the order plugins run in, whatever order a server block
# lists them in. Upstream moved `acl` in 2026 (coredns#7882, #8289); this is the order of the
# releases operators run today, with the later transport plugins (proxyproto, quic, ...).
PLUGIN_ORDER: tuple[str, ...] = (
    "root", "metadata", "geoip", "cancel", "tls", "proxyproto", "quic", "grpc_server", "https",
    "https3", "timeouts", "multisocket", "reload", "nsid", "bufsize", "bind", "debug", "trace",
    "ready", "health", "pprof", "prometheus", "errors", "log", "dnstap", "local", "dns64", "acl",
    "any", "chaos", "loadbalance", "tsig", "cache", "rewrite", "header", "dnssec", "autopath",
    "minimal", "template", "transfer", "hosts", "route53", "azure", "clouddns", "k8s_external",
    "kubernetes", "file", "auto", "secondary", "etcd", "loop", "forward", "grpc", "erratic",
    "whoami", "on", "sign", "view", "nomad",
)  # fmt: skip

# Default port of each transport scheme a key may carry; plain DNS takes `default_port`.
SCHEME_PORTS: dict[str, int | None] = {
    "dns": None, "tls": 853, "quic": 853, "grpc": 443, "https": 443, "https3": 443,
}  # fmt: skip

# Caddy caps expansions so a pathological import graph cannot run forever; same cap, same words.
MAX_EXPANSIONS = 1000


class CorefileError(ValueError):
    """A Corefile that CoreDNS would refuse; the message names the file and line."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


@dataclass(frozen=True)
class Directive:
    """One line of a server block (a plugin) or of a plugin's block (a property)."""

    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...]
    file: str
    line: int
    # The plugin this line belongs to when it sits inside a plugin's block; errors name it.
    parent: str = field(default="", compare=False, repr=False)

    @property
    def plugin(self) -> str:
        return self.parent or self.name

    def error(self, msg: str) -> CorefileError:
        """An error for plugin setup code, e.g. `Corefile:12 - Error during parsing: cache: …`."""
        return CorefileError(
            f"{self.file}:{self.line} - Error during parsing: {self.plugin}: {msg}",
            self.file,
            self.line,
        )

    def arg_count(self, min: int = 0, max: int | None = None) -> tuple[str, ...]:
        """Return the args if there are between `min` and `max` of them, else CoreDNS's error."""
        n = len(self.args)
        if n < min:
            last = self.args[-1] if self.args else self.name
        elif max is not None and n > max:
            last = self.args[max]  # CoreDNS reports the first token it did not expect
        else:
            return self.args
        raise self.error(f"Wrong argument count or unexpected line ending after '{last}'")

    def directive(self, name: str) -> Directive | None:
        return next((d for d in self.block if d.name == name), None)

    def directives_named(self, name: str) -> tuple[Directive, ...]:
        return tuple(d for d in self.block if d.name == name)


@dataclass(frozen=True)
class ZoneKey:
    """One zone a server block serves: `scheme://zone:port`, zone a lower-case FQDN."""

    scheme: str
    zone: str
    port: int
    text: str  # the key as written (after `{$ENV}`); a split CIDR gives several ZoneKeys

    def __str__(self) -> str:
        return f"{self.scheme}://{self.zone}:{self.port}"


@dataclass(frozen=True)
class ServerBlock:
    keys: tuple[ZoneKey, ...]
    directives: tuple[Directive, ...]
    file: str
    line: int

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(k.zone for k in self.keys)

    def directive(self, name: str) -> Directive | None:
        return next((d for d in self.directives if d.name == name), None)

    def directives_named(self, name: str) -> tuple[Directive, ...]:
        return tuple(d for d in self.directives if d.name == name)


@dataclass(frozen=True)
class Corefile:
    blocks: tuple[ServerBlock, ...]
    # What CoreDNS only logs (an import glob matching nothing, an unset `{$VAR}`).
    warnings: tuple[str, ...] = field(default=(), compare=False)


def sort_directives(
    block: ServerBlock | Iterable[Directive], order: Iterable[str] = PLUGIN_ORDER
) -> tuple[Directive, ...]:
    """A block's directives in plugin-chain order; repeats keep their Corefile order."""
    directives = block.directives if isinstance(block, ServerBlock) else tuple(block)
    rank = {name: i for i, name in enumerate(order)}
    return tuple(sorted(directives, key=lambda d: rank.get(d.name, len(rank))))


def parse(
    text: str,
    filename: str = "Corefile",
    *,
    env: Mapping[str, str] | None = None,
    default_port: int = 53,
    known: Collection[str] | None = PLUGIN_ORDER,
) -> Corefile:
    """Parse Corefile text. `known=None` accepts any directive name."""
    if not 0 <= default_port <= 65535:
        raise CorefileError(f"default port {default_port} is not in range [0, 65535]")
    reader = _Reader(
        filename,
        os.environ if env is None else env,
        None if known is None else frozenset(known),
    )
    root = os.path.abspath(filename)
    raw_blocks = reader.read(_lex(text, filename, (root,), 0))
    blocks = tuple(_server_block(raw, default_port) for raw in raw_blocks)
    _check_duplicates(blocks)
    return Corefile(blocks, tuple(dict.fromkeys(reader.warnings)))


def load(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    default_port: int = 53,
    known: Collection[str] | None = PLUGIN_ORDER,
) -> Corefile:
    """Read and parse a Corefile file; errors name the path as given."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CorefileError(f"{name}: cannot read Corefile: {e.strerror or e}", name) from None
    text = data.decode("utf-8", errors="replace")  # as Go does with invalid UTF-8
    return parse(text, name, env=env, default_port=default_port, known=known)


# --- lexing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    file: str
    line: int
    breaks: int  # newlines inside a quoted token: the next token's line is counted past them
    origin: tuple[str, ...]  # files and snippets this token was imported through, outermost first
    splice: int  # which expansion produced it; tokens of two expansions never share a line


def _is_space(ch: str) -> bool:
    # Go's unicode.IsSpace, which unlike str.isspace does not count the ASCII separators 0x1c-0x1f.
    return ch.isspace() and ch not in "\x1c\x1d\x1e\x1f"


def _lex(text: str, file: str, origin: tuple[str, ...], splice: int) -> list[_Token]:
    """Split text into tokens the way Caddy v1's lexer does, quirks included."""
    tokens: list[_Token] = []
    if text.startswith("\ufeff"):
        text = text[1:]
    i, n, line = 0, len(text), 1
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif _is_space(ch):
            i += 1
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif ch == '"':
            start, buf, escaped, closed = line, [], False, False
            i += 1
            while i < n:
                c = text[i]
                i += 1
                if not escaped and c == "\\":
                    escaped = True
                    continue
                if not escaped and c == '"':
                    closed = True
                    break
                if c == "\n":
                    line += 1
                if escaped and c != '"':
                    buf.append("\\")  # only \" is an escape; any other backslash stays
                buf.append(c)
                escaped = False
            value = "".join(buf)
            if closed or value:  # Caddy drops an unterminated, empty quote at EOF
                tokens.append(_Token(value, file, start, value.count("\n"), origin, splice))
        else:
            buf = []
            while i < n:
                c = text[i]
                if c == "\r":  # Caddy skips CR without ending the word
                    i += 1
                    continue
                if _is_space(c):
                    break
                if c == "#":
                    # A '#' inside a word ends the word and hides only the rest of that word,
                    # not the rest of the line: Caddy's comment flag dies with the token.
                    while i < n and (text[i] == "\r" or not _is_space(text[i])):
                        i += 1
                    break
                buf.append(c)
                i += 1
            if buf:
                tokens.append(_Token("".join(buf), file, line, 0, origin, splice))
    return tokens


def _same_line(a: _Token, b: _Token) -> bool:
    return a.file == b.file and a.splice == b.splice and a.line + a.breaks == b.line


# --- grouping tokens into server blocks -----------------------------------------------------

_WORD, _OPEN, _CLOSE = 0, 1, 2


@dataclass(slots=True)
class _Piece:
    """A directive token after `{$ENV}`; braces are known by their text before substitution."""

    tok: _Token
    text: str
    kind: int


@dataclass(slots=True)
class _RawBlock:
    keys: list[tuple[_Token, str]]
    directives: list[list[_Piece]]


def _err(tok: _Token, msg: str) -> CorefileError:
    return CorefileError(f"{tok.file}:{tok.line} - Error during parsing: {msg}", tok.file, tok.line)


def _syntax_err(tok: _Token, expected: str) -> CorefileError:
    return CorefileError(
        f"{tok.file}:{tok.line} - Syntax error: Unexpected token '{tok.text}', "
        f"expecting '{expected}'",
        tok.file,
        tok.line,
    )


class _Reader:
    """Caddy's parser: a cursor over tokens into which `import` splices more tokens."""

    def __init__(self, filename: str, env: Mapping[str, str], known: frozenset[str] | None):
        self.filename = filename
        self.env = env
        self.known = known
        self.toks: list[_Token] = []
        self.pos = -1
        self.snippets: dict[str, list[_Token]] = {}
        self.snippet_expansions = 0
        self.file_expansions = 0
        self.splices = 0
        self.warnings: list[str] = []

    # cursor

    @property
    def cur(self) -> _Token:
        return self.toks[self.pos]

    def next(self) -> bool:
        if self.pos < len(self.toks) - 1:
            self.pos += 1
            return True
        return False

    def next_arg(self) -> bool:
        if self.pos < len(self.toks) - 1 and _same_line(self.cur, self.toks[self.pos + 1]):
            self.pos += 1
            return True
        return False

    def at_line_start(self) -> bool:
        return self.pos < 1 or not _same_line(self.toks[self.pos - 1], self.cur)

    def expand(self, tok: _Token, text: str | None = None) -> str:
        """Substitute `{%VAR%}` then `{$VAR}`; an unset variable becomes "" as in CoreDNS."""
        s = tok.text if text is None else text
        if "{" not in s:
            return s

        def unset(name: str) -> None:
            self.warnings.append(
                f"{tok.file}:{tok.line} - environment variable '{name}' is not set; "
                "it reads as an empty string"
            )

        s = _expand_refs(s, "{%", "%}", self.env, unset, tok)
        return _expand_refs(s, "{$", "}", self.env, unset, tok)

    # grammar

    def read(self, tokens: list[_Token]) -> list[_RawBlock]:
        self.toks, self.pos = tokens, -1
        blocks: list[_RawBlock] = []
        while self.next():
            block = self.server_block()
            if block is not None:
                blocks.append(block)
        return blocks

    def server_block(self) -> _RawBlock | None:
        keys, eof = self.keys()
        if eof:
            # Keys and nothing else after them: a block without directives, as in Caddy.
            return _RawBlock(keys, []) if keys else None
        if len(keys) == 1 and keys[0][1].startswith("(") and keys[0][1].endswith(")"):
            self.snippet(keys[0][1][1:].removesuffix(")"))
            return None
        if not keys:
            # Caddy silently drops such a block; an operator would never find out why.
            raise _err(self.cur, f"Server block has no keys before '{self.cur.text}'")
        opened = self.cur.text == "{"
        if not opened:
            self.pos -= 1  # Caddy allows a single block without braces
        directives: list[list[_Piece]] = []
        closed = False
        while self.next():
            tok = self.cur
            if tok.text == "}":
                closed = True
                break
            if tok.text == "import":
                self.do_import()
                self.pos -= 1
                continue
            directives.append(self.directive())
        if closed and not opened:
            # Caddy ends a brace-less block at a stray '}' and carries on without a word.
            raise _err(self.cur, "Unexpected '}' because no matching opening brace")
        if opened and not closed:
            # Caddy would accept the brace of the last plugin's block as this one's.
            opened_at = keys[0][0].line
            raise _err(
                self.cur,
                f"Unexpected EOF, expecting '}}' to close the server block of line {opened_at}",
            )
        return _RawBlock(keys, directives)

    def keys(self) -> tuple[list[tuple[_Token, str]], bool]:
        keys: list[tuple[_Token, str]] = []
        expecting = False
        while True:
            if self.pos >= len(self.toks):
                return keys, True
            tok = self.cur
            text = self.expand(tok)
            if text == "import" and self.at_line_start():
                self.do_import()
                continue
            if text == "{":
                if expecting:
                    raise _err(tok, "Expected another address but had '{' - check for extra comma")
                return keys, False
            if text == "}":
                raise _err(tok, "Unexpected '}' because no matching opening brace")
            if "{" in text or "}" in text:
                # Caddy would serve a zone named "example.org{." and read what follows as a
                # block without braces.
                raise _err(tok, f"braces in server block key '{text}': put a space before '{{'")
            if text:
                expecting = text.endswith(",")
                keys.append((tok, text.removesuffix(",") if expecting else text))
            if not self.next():
                if expecting:
                    raise _err(tok, "Unexpected EOF")
                return keys, True
            if not expecting and self.at_line_start():
                return keys, False

    def snippet(self, name: str) -> None:
        if name in self.snippets:
            raise _err(self.cur, f"redeclaration of previously declared snippet {name}")
        if self.cur.text != "{":
            raise _syntax_err(self.cur, "{")
        depth, body = 1, []
        while self.next():
            tok = self.cur
            if tok.text == "}":
                depth -= 1
                if depth == 0:
                    break
            elif tok.text == "{":
                depth += 1
            body.append(tok)
        if depth != 0:
            raise _syntax_err(self.cur, "}")
        for i, tok in enumerate(body[:-1]):
            starts = i == 0 or not _same_line(body[i - 1], tok)
            if tok.text == "import" and starts and self.expand(body[i + 1]) == name:
                raise _err(tok, f"Import cycle: snippet ({name}) imports itself")
        self.snippets[name] = body

    def directive(self) -> list[_Piece]:
        head = self.cur
        name = self.expand(head)
        if self.known is not None and name not in self.known:
            raise _err(head, f"Unknown directive '{name}'")
        pieces = [_Piece(head, name, _WORD)]
        nesting = 0
        while self.next():
            tok = self.cur
            new_line = not _same_line(self.toks[self.pos - 1], tok)
            if tok.text == "{":
                # Checked before the line break, so a '{' alone on the next line still opens
                # this directive's block, as in Caddy.
                nesting += 1
                pieces.append(_Piece(tok, "{", _OPEN))
            elif new_line and nesting == 0:
                self.pos -= 1
                break
            elif tok.text == "}" and nesting > 0:
                nesting -= 1
                pieces.append(_Piece(tok, "}", _CLOSE))
            elif tok.text == "}":
                raise _err(tok, "Unexpected '}' because no matching opening brace")
            elif tok.text == "import" and new_line:
                self.do_import()
                self.pos -= 1
            else:
                pieces.append(_Piece(tok, self.expand(tok), _WORD))
        if nesting > 0:
            raise _err(self.cur, "Unexpected EOF")
        return pieces

    # import

    def do_import(self) -> None:
        """Replace `import ARG` (at self.pos) by the tokens it names; pos lands on the first."""
        keyword = self.cur
        if not self.next_arg():
            raise _err(keyword, "Wrong argument count or unexpected line ending after 'import'")
        arg = self.cur
        pattern = self.expand(arg)
        if not pattern:
            raise _err(arg, "Import requires a non-empty filepath")
        if self.next_arg():
            raise _err(self.cur, "Import takes only one argument (glob pattern or file)")
        if pattern in self.snippets:
            imported = self.import_snippet(arg, pattern)
        else:
            imported = self.import_files(arg, pattern)
        at = self.pos - 1
        self.toks[at : self.pos + 1] = imported
        self.pos = at

    def import_snippet(self, arg: _Token, name: str) -> list[_Token]:
        label = f"({name})"
        if label in arg.origin:
            raise _err(arg, "Import cycle: " + " -> ".join((*arg.origin[1:], label)))
        if self.snippet_expansions >= MAX_EXPANSIONS:
            raise _err(arg, f"maximum snippet import depth ({MAX_EXPANSIONS}) exceeded")
        self.snippet_expansions += 1
        self.splices += 1
        origin = (*arg.origin, label)
        return [
            _Token(t.text, t.file, t.line, t.breaks, origin, self.splices)
            for t in self.snippets[name]
        ]

    def import_files(self, arg: _Token, pattern: str) -> list[_Token]:
        if self.file_expansions >= MAX_EXPANSIONS:
            raise _err(arg, f"maximum file import depth ({MAX_EXPANSIONS}) exceeded")
        self.file_expansions += 1
        # Relative to the file holding the `import`, not to the working directory.
        base = os.path.dirname(os.path.abspath(arg.file))
        glob = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        if glob.count("*") > 1 or glob.count("?") > 1 or ("[" in glob and "]" in glob):
            raise _err(
                arg, f"Glob pattern may only contain one wildcard (*), but has others: {glob}"
            )
        if "[" in glob:
            raise _err(arg, f"Failed to use import pattern {pattern}: syntax error in pattern")
        matches = _glob(glob)
        if not matches:
            if any(c in glob for c in "*?[]"):
                self.warnings.append(
                    f"{arg.file}:{arg.line} - No files matching import glob pattern: {pattern}"
                )
                return []
            raise _err(arg, f"File to import not found: {pattern}")
        tokens: list[_Token] = []
        for path in matches:
            full = os.path.abspath(path)
            if full in arg.origin:
                chain = [*arg.origin, full]
                raise _err(arg, "Import cycle: " + " -> ".join(chain[chain.index(full) :]))
            if os.path.isdir(path):
                raise _err(arg, f"Could not import {path}: is a directory")
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", errors="replace")
            except OSError as e:
                raise _err(arg, f"Could not import {path}: {e.strerror or e}") from None
            self.splices += 1
            tokens += _lex(text, full, (*arg.origin, full), self.splices)
        return tokens


def _expand_refs(
    s: str,
    start: str,
    end: str,
    env: Mapping[str, str],
    unset: Callable[[str], None],
    tok: _Token,
) -> str:
    # Caddy rescans from the start after each substitution, so a value may name another
    # variable; a value naming itself would loop forever there, hence the cap here.
    rounds = 0
    idx = s.find(start)
    while idx != -1:
        stop = s.find(end, idx)
        if stop == -1:
            break
        if stop <= idx + len(start):
            return s  # `{$}`: Caddy gives up on the whole token
        ref = s[idx : stop + len(end)]
        name = ref[len(start) : -len(end)]
        value = env.get(name)
        if value is None:
            unset(name)
            value = ""
        s = s.replace(ref, value)
        rounds += 1
        if rounds > MAX_EXPANSIONS:
            raise _err(tok, f"environment variable expansion does not terminate in '{tok.text}'")
        idx = s.find(start)
    return s


def _glob(pattern: str) -> list[str]:
    """Go's filepath.Glob: sorted matches, `*` matches dot-files, no `**`."""
    if not any(c in pattern for c in "*?["):
        return [pattern] if os.path.lexists(pattern) else []
    head, tail = os.path.split(pattern)
    dirs = _glob(head) if any(c in head for c in "*?[") else [head]
    out: list[str] = []
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        out += [os.path.join(d, n) for n in names if fnmatch.fnmatchcase(n, tail)]
    return out


# --- structuring directives -----------------------------------------------------------------


def _build(pieces: list[_Piece]) -> Directive:
    directive, end = _build_line(pieces, 0, "")
    if end != len(pieces):
        tok = pieces[end].tok
        raise _err(tok, f"Unexpected token '{pieces[end].text}' after '}}'")
    return directive


def _build_line(pieces: list[_Piece], i: int, parent: str) -> tuple[Directive, int]:
    head = pieces[i]
    if head.kind == _OPEN:
        raise _err(head.tok, "Unexpected '{' where a name was expected")
    args: list[str] = []
    i += 1
    while (
        i < len(pieces) and pieces[i].kind == _WORD and _same_line(pieces[i - 1].tok, pieces[i].tok)
    ):
        args.append(pieces[i].text)
        i += 1
    block: list[Directive] = []
    if i < len(pieces) and pieces[i].kind == _OPEN:
        i += 1
        inner = parent or head.text
        while i < len(pieces) and pieces[i].kind != _CLOSE:
            sub, i = _build_line(pieces, i, inner)
            block.append(sub)
        # The collector checked the nesting, so a closing brace is there.
        close = pieces[i]
        i += 1
        if i < len(pieces) and pieces[i].kind == _WORD and _same_line(close.tok, pieces[i].tok):
            raise _err(pieces[i].tok, f"Unexpected token '{pieces[i].text}' after '}}'")
    tok = head.tok
    return Directive(head.text, tuple(args), tuple(block), tok.file, tok.line, parent), i


# --- server block keys ----------------------------------------------------------------------

_PORT = re.compile(r"[+-]?[0-9]+")


def _server_block(raw: _RawBlock, default_port: int) -> ServerBlock:
    keys: list[ZoneKey] = []
    for tok, text in raw.keys:
        keys += _zone_keys(tok, text, default_port)
    first = raw.keys[0][0]
    return ServerBlock(
        tuple(keys), tuple(_build(p) for p in raw.directives), first.file, first.line
    )


def _zone_keys(tok: _Token, text: str, default_port: int) -> list[ZoneKey]:
    """CoreDNS's reading of one key: `[scheme://]zone[:port]`, a CIDR giving reverse zones."""
    scheme, rest = "dns", text
    for name in SCHEME_PORTS:
        if text.startswith(name + "://"):
            scheme, rest = name, text[len(name) + 3 :]
            break
    else:
        if "://" in text:
            known = ", ".join(SCHEME_PORTS)
            raise _err(tok, f"unknown scheme in '{text}': expecting one of {known}")
    host, port = rest, SCHEME_PORTS[scheme]
    if port is None:
        port = default_port
    colon = rest.rfind(":")
    if colon == len(rest) - 1:
        raise _err(tok, f'expecting data after last colon: "{rest}"')
    if colon != -1 and _PORT.fullmatch(rest[colon + 1 :]):
        port = int(rest[colon + 1 :])
        host = rest[:colon]
        if not 0 <= port <= 65535:
            raise _err(tok, f"invalid port in '{text}': {port} is not in range [0, 65535]")
    if len(host) > 255:
        raise _err(tok, f"specified zone is too long: {len(host)} > 255")
    if not _is_domain_name(host):
        raise _err(tok, f"zone is not a valid domain name: {host}")
    zones = _reverse_zones(tok, host)
    if zones is None:
        if ":" in host:
            # CoreDNS would serve a zone named like "example.org:dns." here; nobody means that.
            raise _err(tok, f"invalid port in '{text}': '{host[host.rfind(':') + 1 :]}'")
        zones = [_fqdn(host).lower()]
    return [ZoneKey(scheme, zone, port, text) for zone in zones]


def _reverse_zones(tok: _Token, host: str) -> list[str] | None:
    """The reverse zones of a CIDR key, or None if host is a plain domain name."""
    addr, slash, prefix = host.rpartition("/")
    if not slash:
        return None
    looks_ip = ":" in addr or bool(re.fullmatch(r"[0-9.]+", addr))
    try:
        if "%" in addr or not prefix.isdigit() or not prefix.isascii():
            raise ValueError(host)
        net = ipaddress.ip_network(f"{addr}/{int(prefix)}", strict=False)
    except ValueError:
        if looks_ip:
            raise _err(tok, f"invalid CIDR {host}") from None
        return None  # a zone name with a '/' in it, which CoreDNS accepts
    if host[0] == ":" or (host[0] == "0" and ":" in host):
        raise _err(tok, f"invalid CIDR {host}")  # CoreDNS's own rule, e.g. "::/0"
    return cidr_zones(net)


def cidr_zones(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
    """The reverse zones of a network: a prefix off the label boundary is served as all the
    boundary-aligned subnets it covers (CoreDNS's plugin/pkg/cidr)."""
    digit = 8 if net.version == 4 else 4
    aligned = -(-net.prefixlen // digit) * digit
    subnets = [net] if aligned == net.prefixlen else list(net.subnets(new_prefix=aligned))
    return [_reverse_name(n, digit) for n in subnets]


def zone_args(args: Iterable[str]) -> tuple[str, ...]:
    """Zones given as a plugin's arguments, normalised as CoreDNS's plugin.Host does:
    lower-case FQDNs, and a CIDR becomes the reverse zones it covers."""
    zones: list[str] = []
    for text in args:
        _, slash, prefix = text.rpartition("/")
        if slash and prefix.isdigit():
            try:
                zones.extend(cidr_zones(ipaddress.ip_network(text, strict=False)))
                continue
            except ValueError:
                pass
        zones.append(_fqdn(text.lower()))
    return tuple(dict.fromkeys(zones))


def _reverse_name(net: ipaddress.IPv4Network | ipaddress.IPv6Network, digit: int) -> str:
    if digit == 8:
        labels = [str(b) for b in net.network_address.packed]
        suffix = "in-addr.arpa."
    else:
        labels = list(net.network_address.packed.hex())
        suffix = "ip6.arpa."
    kept = labels[: net.prefixlen // digit]
    return "".join(f"{label}." for label in reversed(kept)) + suffix


def _labels(name: str) -> list[str]:
    """Split a presentation-format name into labels (as octet strings), honouring escapes."""
    labels, cur, i = [], [], 0
    while i < len(name):
        c = name[i]
        if c == "\\":
            if name[i + 1 : i + 4].isdigit() and len(name[i + 1 : i + 4]) == 3:
                cur.append(chr(int(name[i + 1 : i + 4]) & 0xFF))
                i += 4
                continue
            cur.append(name[i + 1 : i + 2])
            i += 2
            continue
        if c == ".":
            labels.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if cur:
        labels.append("".join(cur))
    return labels


def _is_domain_name(name: str) -> bool:
    """miekg/dns IsDomainName: no empty labels, labels under 64 octets, at most 255 in all."""
    if not name:
        return False
    if name == ".":
        return True
    labels = _labels(name)
    if any(not label for label in labels):
        return False
    wire = [len(label.encode("utf-8", errors="surrogateescape")) for label in labels]
    return all(n < 64 for n in wire) and sum(n + 1 for n in wire) <= 256


def _fqdn(name: str) -> str:
    if name.endswith(".") and not name.endswith("\\."):
        return name
    return name + "."


# --- zones served twice ---------------------------------------------------------------------


def _check_duplicates(blocks: Iterable[ServerBlock]) -> None:
    """CoreDNS's check that no zone is served twice on one listener.

    A block with `bind` listens only on its addresses, so it may share a zone with a block
    bound elsewhere; a block with `view` filters its queries, so it may share a zone with a
    later block (CoreDNS checks it against earlier ones without reserving the zone).
    """
    registered: set[tuple[str, str, str, int]] = set()
    unbound: dict[tuple[str, str, str, int], tuple[str, str, str, int]] = {}

    def show(k: tuple[str, str, str, int]) -> str:
        s = f"{k[0]}://{k[1]}:{k[3]}"
        return f"{s} on {k[2]}" if k[2] else s

    for block in blocks:
        binds = (a for d in block.directives_named("bind") for a in d.args if a)
        hosts = list(dict.fromkeys(binds)) or [""]
        filtered = block.directive("view") is not None
        tok = _Token("", block.file, block.line, 0, (), 0)
        for key in block.keys:
            for host in hosts:
                k = (key.scheme, key.zone, host, key.port)
                if k in registered:
                    raise _err(tok, f"cannot serve {show(k)} - it is already defined")
                u = (key.scheme, key.zone, "", key.port)
                if u in unbound and (host == "" or u in registered):
                    other = unbound[u] if host == "" else u
                    raise _err(
                        tok,
                        f"cannot serve {show(k)} - zone overlap listener capacity with "
                        f"{show(other)}",
                    )
                if not filtered:
                    registered.add(k)
                    unbound[u] = k
