"""Tests for dnsserver.corefile: the Corefile language as CoreDNS (Caddy v1) reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsserver.corefile import (
    PLUGIN_ORDER,
    Corefile,
    CorefileError,
    Directive,
    ServerBlock,
    ZoneKey,
    load,
    parse,
    sort_directives,
)

FIXTURES = Path(__file__).parent / "corefiles"


def only_block(text: str, **kw: object) -> ServerBlock:
    cf = parse(text, env={}, **kw)  # type: ignore[arg-type]
    assert len(cf.blocks) == 1
    return cf.blocks[0]


def shape(d: Directive) -> tuple:
    """A directive without its position, for comparing structure."""
    return (d.name, d.args, tuple(shape(s) for s in d.block))


def shapes(block: ServerBlock) -> list[tuple]:
    return [shape(d) for d in block.directives]


def error_of(text: str, **kw: object) -> str:
    kw.setdefault("env", {})
    with pytest.raises(CorefileError) as info:
        parse(text, **kw)  # type: ignore[arg-type]
    return str(info.value)


# --- the two Corefiles this project must run unchanged ---------------------------------------

KUBEADM_DIRECTIVES = [
    ("errors", (), ()),
    ("health", (), (("lameduck", ("5s",), ()),)),
    ("ready", (), ()),
    (
        "kubernetes",
        ("cluster.local", "in-addr.arpa", "ip6.arpa"),
        (
            ("pods", ("insecure",), ()),
            ("fallthrough", ("in-addr.arpa", "ip6.arpa"), ()),
            ("ttl", ("30",), ()),
        ),
    ),
    ("prometheus", (":9153",), ()),
    ("forward", (".", "/etc/resolv.conf"), (("max_concurrent", ("1000",), ()),)),
    (
        "cache",
        ("30",),
        (
            ("disable", ("success", "cluster.local"), ()),
            ("disable", ("denial", "cluster.local"), ()),
        ),
    ),
    ("loop", (), ()),
    ("reload", (), ()),
    ("loadbalance", (), ()),
]


def test_kubeadm_default_corefile():
    path = FIXTURES / "kubeadm.Corefile"
    cf = load(path, env={})
    assert len(cf.blocks) == 1
    block = cf.blocks[0]
    assert block.keys == (ZoneKey("dns", ".", 53, ".:53"),)
    assert (block.file, block.line) == (str(path), 1)
    assert shapes(block) == KUBEADM_DIRECTIVES
    kube = block.directive("kubernetes")
    assert kube is not None and (kube.file, kube.line) == (str(path), 7)
    ttl = kube.directive("ttl")
    assert ttl is not None and ttl.line == 10 and ttl.plugin == "kubernetes"
    assert cf.warnings == ()


def test_kubeadm_with_stub_domain_block():
    cf = load(FIXTURES / "stub-domain.Corefile", env={})
    assert [b.keys for b in cf.blocks] == [
        (ZoneKey("dns", ".", 53, ".:53"),),
        (ZoneKey("dns", "example.local.", 53, "example.local:53"),),
    ]
    assert shapes(cf.blocks[0]) == KUBEADM_DIRECTIVES
    assert shapes(cf.blocks[1]) == [
        ("errors", (), ()),
        ("cache", ("30",), ()),
        ("forward", (".", "127.0.0.1:5300"), ()),
    ]
    assert [d.line for d in cf.blocks[1].directives] == [25, 26, 27]


def test_plugin_order_runs_plugins_in_plugin_cfg_order():
    block = load(FIXTURES / "kubeadm.Corefile", env={}).blocks[0]
    assert [d.name for d in sort_directives(block)] == [
        "reload", "ready", "health", "prometheus", "errors",
        "loadbalance", "cache", "kubernetes", "loop", "forward",
    ]  # fmt: skip


def test_plugin_order_keeps_repeats_in_corefile_order_and_unknown_last():
    block = only_block(". {\n  forward a\n  zzz\n  log x\n  forward b\n  errors\n}", known=None)
    ordered = [(d.name, d.args) for d in sort_directives(block)]
    assert ordered == [
        ("errors", ()), ("log", ("x",)), ("forward", ("a",)), ("forward", ("b",)), ("zzz", ()),
    ]  # fmt: skip
    assert sort_directives(block.directives, order=("zzz",))[0].name == "zzz"


def test_plugin_order_is_coredns_plugin_cfg():
    assert len(PLUGIN_ORDER) == len(set(PLUGIN_ORDER))
    for earlier, later in [
        ("metadata", "cancel"), ("reload", "health"), ("prometheus", "errors"),
        ("errors", "log"), ("cache", "rewrite"), ("hosts", "kubernetes"),
        ("kubernetes", "file"), ("loop", "forward"), ("forward", "whoami"),
    ]:  # fmt: skip
        assert PLUGIN_ORDER.index(earlier) < PLUGIN_ORDER.index(later)


# --- tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "args"),
    [
        ("d a b", ("a", "b")),
        ("d a # a comment", ("a",)),
        ("d a #comment with words", ("a",)),
        ('d "a # not a comment"', ("a # not a comment",)),
        ('d "a b" c', ("a b", "c")),
        ('d "say \\"hi\\""', ('say "hi"',)),
        ('d "a\\nb"', ("a\\nb",)),  # only \" is an escape; other backslashes stay
        ('d ""', ("",)),
        ('d a"b"', ('a"b"',)),  # a quote inside a word is just a character
        ('d "a"b', ("a", "b")),  # a closing quote ends the token
        ("d a#b c", ("a", "c")),  # Caddy: '#' in a word hides only the rest of that word
        ("d\ta\t\tb", ("a", "b")),
    ],
)
def test_tokens(line: str, args: tuple[str, ...]):
    block = only_block(f". {{\n{line}\n}}", known=None)
    assert block.directives[0].args == args


def test_backslash_is_not_a_line_continuation():
    # Caddy v1 has no line continuation: the backslash is an argument, the next line a directive.
    block = only_block(". {\n  d a \\\n  b\n}", known=None)
    assert shapes(block) == [("d", ("a", "\\"), ()), ("b", (), ())]


def test_quoted_token_spanning_lines_keeps_line_numbers():
    block = only_block('. {\n  d "one\ntwo" x\n  e\n}', known=None)
    assert shapes(block) == [("d", ("one\ntwo", "x"), ()), ("e", (), ())]
    assert [d.line for d in block.directives] == [2, 4]


def test_crlf_and_byte_order_mark():
    text = "\ufeff.:53 {\r\n  errors\r\n  cache 30\r\n}\r\n"
    block = only_block(text)
    assert shapes(block) == [("errors", (), ()), ("cache", ("30",), ())]
    assert block.keys[0].zone == "."


def test_comment_only_and_empty_corefiles_have_no_blocks():
    assert parse("", env={}) == Corefile(())
    assert parse("# nothing here\n\n   # at all\n", env={}).blocks == ()


# --- environment substitution ----------------------------------------------------------------


def test_env_substitution_both_syntaxes_everywhere():
    env = {"ZONE": "cluster.local", "PORT": "1053", "PLUGIN": "cache", "TTL": "30", "W": "{%X%}"}
    text = "{$ZONE}:{%PORT%} {\n  {$PLUGIN} {$TTL}\n  log pre-{$TTL}-post {$W}\n}"
    block = parse(text, env=env).blocks[0]
    assert block.keys == (ZoneKey("dns", "cluster.local.", 1053, "cluster.local:1053"),)
    # {%...%} is substituted before {$...}, so a {$...} value's {%...%} stays literal.
    assert shapes(block) == [("cache", ("30",), ()), ("log", ("pre-30-post", "{%X%}"), ())]


def test_unset_env_variable_reads_as_empty_with_a_warning():
    cf = parse(". {\n  log a{$NOPE}b\n}", env={})
    assert cf.blocks[0].directives[0].args == ("ab",)
    assert cf.warnings == (
        "Corefile:2 - environment variable 'NOPE' is not set; it reads as an empty string",
    )


def test_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DNSSERVER_TEST_ZONE", "from-env.test")
    cf = parse("{$DNSSERVER_TEST_ZONE} {\n  whoami\n}")
    assert cf.blocks[0].keys[0].zone == "from-env.test."


@pytest.mark.parametrize("arg", ["{$}", "{%%}", "{$OPEN", "x}"])
def test_env_references_that_are_not_references_stay(arg: str):
    assert only_block(f". {{\n  log {arg}\n}}").directives[0].args == (arg,)


def test_env_expansion_that_never_ends_is_an_error():
    msg = error_of(". {\n  log {$A}\n}", env={"A": "{$A}"})
    assert msg.startswith("Corefile:2 - Error during parsing: environment variable expansion")


# --- server block keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (".", [("dns", ".", 53)]),
        (".:53", [("dns", ".", 53)]),
        ("example.org", [("dns", "example.org.", 53)]),
        ("Example.ORG.", [("dns", "example.org.", 53)]),
        ("example.org:1053", [("dns", "example.org.", 1053)]),
        ("example.org:01053", [("dns", "example.org.", 1053)]),
        ("dns://example.org", [("dns", "example.org.", 53)]),
        ("dns://.:5353", [("dns", ".", 5353)]),
        ("tls://example.org", [("tls", "example.org.", 853)]),
        ("quic://example.org", [("quic", "example.org.", 853)]),
        ("grpc://example.org", [("grpc", "example.org.", 443)]),
        ("https://example.org", [("https", "example.org.", 443)]),
        ("https3://.", [("https3", ".", 443)]),
        ("tls://.:8853", [("tls", ".", 8853)]),
        ("10.0.0.0/24", [("dns", "0.0.10.in-addr.arpa.", 53)]),
        ("10.0.0.9/24", [("dns", "0.0.10.in-addr.arpa.", 53)]),  # host bits are masked off
        ("10.0.0.0/8:1053", [("dns", "10.in-addr.arpa.", 1053)]),
        ("10.1.2.3/32", [("dns", "3.2.1.10.in-addr.arpa.", 53)]),
        ("0.0.0.0/0", [("dns", "in-addr.arpa.", 53)]),
        (
            "10.0.0.0/23",
            [("dns", "0.0.10.in-addr.arpa.", 53), ("dns", "1.0.10.in-addr.arpa.", 53)],
        ),
        (
            "192.168.4.0/15",  # /15 covers two /16s, named by the network address 192.168
            [("dns", "168.192.in-addr.arpa.", 53), ("dns", "169.192.in-addr.arpa.", 53)],
        ),
        ("fd00::/8", [("dns", "d.f.ip6.arpa.", 53)]),
        ("2001:db8::/32", [("dns", "8.b.d.0.1.0.0.2.ip6.arpa.", 53)]),
        (
            "2001:db8::/31",
            [("dns", "8.b.d.0.1.0.0.2.ip6.arpa.", 53), ("dns", "9.b.d.0.1.0.0.2.ip6.arpa.", 53)],
        ),
        ("tls://fd00::/8:8853", [("tls", "d.f.ip6.arpa.", 8853)]),
    ],
)
def test_zone_keys(key: str, expected: list[tuple[str, str, int]]):
    block = only_block(f"{key} {{\n  whoami\n}}")
    assert [(k.scheme, k.zone, k.port) for k in block.keys] == expected
    assert all(k.text == key for k in block.keys)


def test_non_octet_cidr_splits_into_every_covered_reverse_zone():
    keys = only_block("10.0.0.0/17 {\n  whoami\n}").keys
    assert [k.zone for k in keys] == [f"{i}.0.10.in-addr.arpa." for i in range(128)]
    keys = only_block("fd00::/6 {\n  whoami\n}").keys  # /6 widens to /8: four nibble zones
    assert [k.zone for k in keys] == [
        "c.f.ip6.arpa.",
        "d.f.ip6.arpa.",
        "e.f.ip6.arpa.",
        "f.f.ip6.arpa.",
    ]


def test_default_port_applies_to_dns_keys_only():
    cf = parse(
        ".:53 {\n whoami\n}\n. {\n whoami\n}\ntls://. {\n whoami\n}", env={}, default_port=1053
    )
    assert [str(k) for b in cf.blocks for k in b.keys] == [
        "dns://.:53", "dns://.:1053", "tls://.:853",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "head",
    [
        "a.example b.example {",
        "a.example, b.example {",
        "a.example,\nb.example {",
    ],
)
def test_several_keys_by_space_or_comma(head: str):
    block = only_block(f"{head}\n  whoami\n}}")
    assert block.zones == ("a.example.", "b.example.")


def test_comma_inside_a_key_does_not_split_it_as_in_coredns():
    assert only_block("a,b {\n whoami\n}").zones == ("a,b.",)


def test_brace_on_the_next_line_and_block_without_braces():
    assert shapes(only_block(".:53\n{\n  whoami\n}")) == [("whoami", (), ())]
    # Caddy lets a single server block omit its braces entirely.
    block = only_block(".:53\nwhoami\nlog")
    assert shapes(block) == [("whoami", (), ()), ("log", (), ())]
    assert only_block(".:1053").directives == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (".:99999 {\n}", "Corefile:1 - Error during parsing: invalid port in '.:99999': "
         "99999 is not in range [0, 65535]"),
        (".:-1 {\n}", "Corefile:1 - Error during parsing: invalid port in '.:-1': "
         "-1 is not in range [0, 65535]"),
        ("\n\nexample.org:dns {\n}", "Corefile:3 - Error during parsing: "
         "invalid port in 'example.org:dns': 'dns'"),
        (". example.org: {\n}", 'Corefile:1 - Error during parsing: '
         'expecting data after last colon: "example.org:"'),
        ("10.0.0.0/33 {\n}", "Corefile:1 - Error during parsing: invalid CIDR 10.0.0.0/33"),
        ("300.0.0.0/8 {\n}", "Corefile:1 - Error during parsing: invalid CIDR 300.0.0.0/8"),
        ("10.0.0/24 {\n}", "Corefile:1 - Error during parsing: invalid CIDR 10.0.0/24"),
        ("fd00::/129 {\n}", "Corefile:1 - Error during parsing: invalid CIDR fd00::/129"),
        ("::/0 {\n}", "Corefile:1 - Error during parsing: invalid CIDR ::/0"),
        ("a..b {\n}", "Corefile:1 - Error during parsing: zone is not a valid domain name: a..b"),
        (":53 {\n}", "Corefile:1 - Error during parsing: zone is not a valid domain name: "),
        ("x" * 64 + ".org {\n}", "Corefile:1 - Error during parsing: zone is not a valid "
         "domain name: " + "x" * 64 + ".org"),
        ("udp://. {\n}", "Corefile:1 - Error during parsing: unknown scheme in 'udp://.': "
         "expecting one of dns, tls, quic, grpc, https, https3"),
        ("example.org{\n}", "Corefile:1 - Error during parsing: braces in server block key "
         "'example.org{': put a space before '{'"),
    ],
)  # fmt: skip
def test_bad_keys(text: str, message: str):
    assert error_of(text) == message


def test_zone_too_long():
    name = ".".join(["a" * 60] * 5)
    assert error_of(f"{name} {{\n}}").endswith("specified zone is too long: 304 > 255")


# --- structure and syntax errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (".:53 {\n  errors\n  kubernets cluster.local\n}",
         "Corefile:3 - Error during parsing: Unknown directive 'kubernets'"),
        (". {\n  errors\n", "Corefile:2 - Error during parsing: "
         "Unexpected EOF, expecting '}' to close the server block of line 1"),
        (". {\n  forward . 1.1.1.1 {\n    max_fails 3\n  }\n",
         "Corefile:4 - Error during parsing: "
         "Unexpected EOF, expecting '}' to close the server block of line 1"),
        (". {\n  cache 30 {\n    success 10\n", "Corefile:3 - Error during parsing: "
         "Unexpected EOF"),
        (". {\n  errors\n}\n}\n", "Corefile:4 - Error during parsing: "
         "Unexpected '}' because no matching opening brace"),
        (".:53\n  errors\n}\n", "Corefile:3 - Error during parsing: "
         "Unexpected '}' because no matching opening brace"),
        (". { errors }", "Corefile:1 - Error during parsing: "
         "Unexpected '}' because no matching opening brace"),
        ("{\n  errors\n}", "Corefile:1 - Error during parsing: "
         "Server block has no keys before '{'"),
        ('"" {\n  errors\n}', "Corefile:1 - Error during parsing: "
         "Server block has no keys before '{'"),
        ("a, {\n}", "Corefile:1 - Error during parsing: "
         "Expected another address but had '{' - check for extra comma"),
        ("a,", "Corefile:1 - Error during parsing: Unexpected EOF"),
        (". {\n  cache { } {\n  }\n}", "Corefile:2 - Error during parsing: "
         "Unexpected token '{' after '}'"),
        (". {\n  cache { } 30\n}", "Corefile:2 - Error during parsing: "
         "Unexpected token '30' after '}'"),
        (". {\n  cache {\n    { }\n  }\n}", "Corefile:3 - Error during parsing: "
         "Unexpected '{' where a name was expected"),
    ],
)  # fmt: skip
def test_syntax_errors(text: str, message: str):
    assert error_of(text) == message


def test_error_names_the_file_given():
    msg = error_of(". {\n  nope\n}", filename="/etc/coredns/Corefile")
    assert msg == "/etc/coredns/Corefile:2 - Error during parsing: Unknown directive 'nope'"


def test_unknown_directive_uses_the_given_names_or_none():
    assert error_of(". {\n  errors\n}", known=("log",)).endswith("Unknown directive 'errors'")
    assert shapes(only_block(". {\n  anything goes\n}", known=None)) == [
        ("anything", ("goes",), ())
    ]
    # A directive name may come from the environment; the substituted name is checked.
    block = parse(". {\n  {$P} 30\n}", env={"P": "cache"}).blocks[0]
    assert shapes(block) == [("cache", ("30",), ())]


def test_open_brace_on_the_line_after_a_directive_opens_its_block():
    block = only_block(". {\n  forward . 127.0.0.1\n  {\n    max_fails 3\n  }\n  log\n}")
    assert shapes(block) == [
        ("forward", (".", "127.0.0.1"), (("max_fails", ("3",), ()),)),
        ("log", (), ()),
    ]


def test_nested_blocks_and_one_line_inner_blocks():
    text = ". {\n  rewrite {\n    name regex a b {\n      answer auto\n    }\n    x { y z }\n  }\n}"
    [rewrite] = only_block(text, known=None).directives
    assert shape(rewrite) == (
        "rewrite",
        (),
        (
            ("name", ("regex", "a", "b"), (("answer", ("auto",), ()),)),
            ("x", (), (("y", ("z",), ()),)),
        ),
    )
    assert [d.line for d in rewrite.block] == [3, 6]
    assert rewrite.block[0].block[0].plugin == "rewrite"


# --- duplicate zones -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("example.org {\n whoami\n}\n\nexample.org:53 {\n log\n}",
         "Corefile:5 - Error during parsing: cannot serve dns://example.org.:53 - "
         "it is already defined"),
        ("a.org A.ORG. {\n whoami\n}",
         "Corefile:1 - Error during parsing: cannot serve dns://a.org.:53 - it is already defined"),
        ("10.0.0.0/23 {\n whoami\n}\n1.0.10.in-addr.arpa {\n whoami\n}",
         "Corefile:4 - Error during parsing: cannot serve dns://1.0.10.in-addr.arpa.:53 - "
         "it is already defined"),
        (". {\n bind 127.0.0.1\n}\n. {\n whoami\n}",
         "Corefile:4 - Error during parsing: cannot serve dns://.:53 - "
         "zone overlap listener capacity with dns://.:53 on 127.0.0.1"),
        (". {\n whoami\n}\n. {\n bind 127.0.0.1\n}",
         "Corefile:4 - Error during parsing: cannot serve dns://.:53 on 127.0.0.1 - "
         "zone overlap listener capacity with dns://.:53"),
        (". {\n whoami\n}\n. {\n view v\n}",
         "Corefile:4 - Error during parsing: cannot serve dns://.:53 - it is already defined"),
    ],
)  # fmt: skip
def test_duplicate_zones(text: str, message: str):
    assert error_of(text) == message


def test_same_zone_on_other_port_scheme_address_or_view_is_allowed():
    text = (
        "example.org {\n whoami\n}\nexample.org:1053 {\n whoami\n}\n"
        "tls://example.org {\n whoami\n}\n"
        ". {\n bind 127.0.0.1\n}\n. {\n bind 127.0.0.2 ::1\n}\n"
        "v.org {\n view internal\n}\nv.org {\n whoami\n}\n"
    )
    assert len(parse(text, env={}).blocks) == 7


# --- snippets and imports --------------------------------------------------------------------


def test_snippet_import_in_block_and_in_plugin_block():
    text = (
        "(common) {\n  errors\n  cache 30\n}\n"
        "(limits) {\n  max_concurrent 10\n}\n"
        ". {\n  import common\n  forward . 127.0.0.1 {\n"
        "    import limits\n    max_fails 2\n  }\n}\n"
        "b.org {\n  import common\n  import common\n}\n"
    )
    cf = parse(text, env={})
    assert [b.zones for b in cf.blocks] == [(".",), ("b.org.",)]
    assert shapes(cf.blocks[0]) == [
        ("errors", (), ()),
        ("cache", ("30",), ()),
        (
            "forward",
            (".", "127.0.0.1"),
            (("max_concurrent", ("10",), ()), ("max_fails", ("2",), ())),
        ),
    ]
    # Two expansions of one snippet stay two separate lines each (Caddy would merge them).
    assert shapes(cf.blocks[1]) == [("errors", (), ()), ("cache", ("30",), ())] * 2
    # Imported lines keep the file and line where the snippet wrote them.
    assert [d.line for d in cf.blocks[0].directives] == [2, 3, 10]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(a) {\n log\n}\n(a) {\n log\n}", "Corefile:4 - Error during parsing: "
         "redeclaration of previously declared snippet a"),
        ("(a) {\n  import a\n}", "Corefile:2 - Error during parsing: "
         "Import cycle: snippet (a) imports itself"),
        ("(a) {\n  import b\n}\n(b) {\n  import a\n}\n. {\n  import a\n}",
         "Corefile:5 - Error during parsing: Import cycle: (a) -> (b) -> (a)"),
        ("(a)\nlog", "Corefile:2 - Syntax error: Unexpected token 'log', expecting '{'"),
        ("(a) {\n  log {\n}", "Corefile:3 - Syntax error: Unexpected token '}', expecting '}'"),
        (". {\n  import\n}", "Corefile:2 - Error during parsing: "
         "Wrong argument count or unexpected line ending after 'import'"),
        (". {\n  import a b\n}", "Corefile:2 - Error during parsing: "
         "Import takes only one argument (glob pattern or file)"),
        (". {\n  import {$EMPTY}\n}", "Corefile:2 - Error during parsing: "
         "Import requires a non-empty filepath"),
    ],
)  # fmt: skip
def test_snippet_and_import_errors(text: str, message: str):
    assert error_of(text) == message


def test_imports_of_files_globs_and_snippets_from_files():
    path = FIXTURES / "imports" / "Corefile"
    cf = load(path, env={})
    assert [b.zones for b in cf.blocks] == [(".",), ("a.example.",), ("b.example.",)]
    assert shapes(cf.blocks[0]) == [
        ("errors", (), ()),
        ("cache", ("30",), ()),
        ("kubernetes", ("cluster.local",), (("pods", ("insecure",), ()), ("ttl", ("30",), ()))),
        ("forward", (".", "127.0.0.1:5300"), ()),
    ]
    assert shapes(cf.blocks[1])[0] == ("errors", (), ())
    # Tokens from an imported file carry that file's absolute path, as Caddy reports them.
    common = str((FIXTURES / "imports" / "snippets" / "common").resolve())
    errors = cf.blocks[0].directives[0]
    assert (errors.file, errors.line) == (common, 2)
    a_server = str((FIXTURES / "imports" / "conf.d" / "a.server").resolve())
    assert (cf.blocks[1].file, cf.blocks[1].line) == (a_server, 1)
    assert cf.blocks[0].file == str(path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_import_is_relative_to_the_importing_file(tmp_path: Path):
    write(tmp_path / "sub" / "inner", "log\n")
    write(tmp_path / "sub" / "outer", "import inner\n")
    main = write(tmp_path / "Corefile", ". {\n  import sub/outer\n}\n")
    block = load(main, env={}).blocks[0]
    assert shapes(block) == [("log", (), ())]
    assert block.directives[0].file == str(tmp_path / "sub" / "inner")


def test_import_glob_matches_in_sorted_order_including_dotfiles(tmp_path: Path):
    for name in ["b.conf", "a.conf", ".c.conf", "skip.txt"]:
        write(tmp_path / "d" / name, f"log {name}\n")
    main = write(tmp_path / "Corefile", ". {\n  import d/*.conf\n}\n")
    block = load(main, env={}).blocks[0]
    assert [d.args for d in block.directives] == [(".c.conf",), ("a.conf",), ("b.conf",)]


def test_import_glob_matching_nothing_is_a_warning(tmp_path: Path):
    main = write(tmp_path / "Corefile", ". {\n  import none/*.conf\n  log\n}\n")
    cf = load(main, env={})
    assert shapes(cf.blocks[0]) == [("log", (), ())]
    assert cf.warnings == (f"{main}:2 - No files matching import glob pattern: none/*.conf",)


def test_import_errors(tmp_path: Path):
    main = tmp_path / "Corefile"

    def err(text: str) -> str:
        write(main, text)
        with pytest.raises(CorefileError) as info:
            load(main, env={})
        return str(info.value)

    assert err(". {\n  import missing.conf\n}") == (
        f"{main}:2 - Error during parsing: File to import not found: missing.conf"
    )
    assert err(". {\n  import */*.conf\n}") == (
        f"{main}:2 - Error during parsing: Glob pattern may only contain one wildcard (*), "
        f"but has others: {tmp_path}/*/*.conf"
    )
    (tmp_path / "adir").mkdir()
    assert err(". {\n  import adir\n}") == (
        f"{main}:2 - Error during parsing: Could not import {tmp_path}/adir: is a directory"
    )
    # An error inside an imported file names that file and its line.
    write(tmp_path / "bad.conf", "\nlog }\n")
    assert err(". {\n  import bad.conf\n}") == (
        f"{tmp_path}/bad.conf:2 - Error during parsing: "
        "Unexpected '}' because no matching opening brace"
    )


def test_import_cycle_between_files(tmp_path: Path):
    write(tmp_path / "a.conf", "import b.conf\n")
    write(tmp_path / "b.conf", "import a.conf\n")
    main = write(tmp_path / "Corefile", ". {\n  whoami\n}\nimport a.conf\n")
    with pytest.raises(CorefileError) as info:
        load(main, env={})
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    assert str(info.value) == f"{b}:1 - Error during parsing: Import cycle: {a} -> {b} -> {a}"


def test_import_of_the_corefile_itself_is_a_cycle(tmp_path: Path):
    main = write(tmp_path / "Corefile", ". {\n  whoami\n}\nimport *\n")
    with pytest.raises(CorefileError, match=r"Import cycle: .*Corefile -> .*Corefile"):
        load(main, env={})


def test_import_of_whole_server_blocks_and_keys(tmp_path: Path):
    write(tmp_path / "zones", "a.org b.org")
    main = write(tmp_path / "Corefile", "import zones\n{\n  whoami\n}\n")
    assert load(main, env={}).blocks[0].zones == ("a.org.", "b.org.")


def test_load_of_a_missing_file():
    with pytest.raises(CorefileError, match=r"^/nonexistent/Corefile: cannot read Corefile: "):
        load("/nonexistent/Corefile")


# --- helpers for plugin setup code -----------------------------------------------------------


def test_directive_error_and_arg_count():
    block = load(FIXTURES / "kubeadm.Corefile", env={}, known=None).blocks[0]
    kube = block.directive("kubernetes")
    assert kube is not None
    ttl = kube.directive("ttl")
    assert ttl is not None
    err = ttl.error("ttl must be in range [0, 3600]: 4000")
    assert isinstance(err, CorefileError)
    name = str(FIXTURES / "kubeadm.Corefile")
    assert str(err) == (
        f"{name}:10 - Error during parsing: kubernetes: ttl must be in range [0, 3600]: 4000"
    )
    assert (err.file, err.line) == (name, 10)
    assert ttl.arg_count(1, 1) == ("30",)
    with pytest.raises(CorefileError) as info:
        ttl.arg_count(2)
    assert str(info.value).endswith(
        "Error during parsing: kubernetes: Wrong argument count or unexpected line ending "
        "after '30'"
    )
    loop = block.directive("loop")
    assert loop is not None and loop.arg_count(0, 0) == ()
    with pytest.raises(CorefileError, match=r"unexpected line ending after 'loop'$"):
        loop.arg_count(1)
    fwd = block.directive("forward")
    assert fwd is not None
    with pytest.raises(CorefileError, match=r":13 - .*forward: .*after '/etc/resolv\.conf'$"):
        fwd.arg_count(0, 1)


def test_block_helpers():
    block = load(FIXTURES / "kubeadm.Corefile", env={}).blocks[0]
    cache = block.directive("cache")
    assert cache is not None
    assert [d.args for d in cache.directives_named("disable")] == [
        ("success", "cluster.local"),
        ("denial", "cluster.local"),
    ]
    assert block.directive("hosts") is None
    assert block.directives_named("errors") == (block.directives[0],)
    assert block.zones == (".",)


# --- round trip ------------------------------------------------------------------------------

SAFE = st.text(
    alphabet=st.characters(
        codec="utf-8",
        exclude_categories=("Cs", "Cc", "Zl", "Zp"),
        exclude_characters='\\{}"#\x85\u200b',
    ),
    min_size=1,
    max_size=12,
)
# A quoted "{" is still a brace to Caddy, so braces cannot be arguments at all.
ARG = SAFE | st.sampled_from(["a b", "#x", "", "tab\there", 'q"uote', "x}", "{y"])


def render_token(tok: str) -> str:
    bare = tok and not any(c.isspace() or c in '"#' for c in tok) and tok not in ("{", "}")
    bare = bare and "{$" not in tok and "{%" not in tok and tok != "import"
    return tok if bare else '"' + tok.replace('"', '\\"') + '"'


def render(d: tuple, depth: int) -> list[str]:
    name, args, block = d
    pad = "  " * depth
    head = " ".join(render_token(t) for t in (name, *args))
    if not block:
        return [pad + head]
    lines = [f"{pad}{head} {{"]
    for sub in block:
        lines += render(sub, depth + 1)
    return [*lines, pad + "}"]


NAME = SAFE.filter(lambda s: s != "import" and not s.startswith("(") and "{" not in s)
LINE = st.recursive(
    st.tuples(NAME, st.lists(ARG, max_size=3).map(tuple), st.just(())),
    lambda inner: st.tuples(
        NAME,
        st.lists(ARG, max_size=3).map(tuple),
        st.lists(inner, min_size=1, max_size=3).map(tuple),
    ),
    max_leaves=8,
)
PLUGIN = st.tuples(
    # bind and view change which zones may repeat; the round trip is about structure only.
    st.sampled_from([p for p in PLUGIN_ORDER if p not in ("bind", "view")]),
    st.lists(ARG, max_size=3).map(tuple),
    st.lists(LINE, max_size=3).map(tuple),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(PLUGIN, max_size=4), min_size=1, max_size=3))
def test_round_trip(blocks: list[list[tuple]]):
    lines: list[str] = []
    for i, plugins in enumerate(blocks):
        lines.append(f"z{i}.example:53 {{")
        for p in plugins:
            lines += render(p, 1)
        lines.append("}")
    cf = parse("\n".join(lines) + "\n", env={})
    assert [shapes(b) for b in cf.blocks] == [[tuple(p) for p in plugins] for plugins in blocks]
    assert [b.zones for b in cf.blocks] == [(f"z{i}.example.",) for i in range(len(blocks))]


def test_given_env_replaces_the_process_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DNSSERVER_TEST_SECRET", "leak")
    cf = parse(". {\n  log {$DNSSERVER_TEST_SECRET}\n}", env={})
    assert cf.blocks[0].directives[0].args == ("",)


def test_snippet_of_whole_server_blocks():
    text = (
        "(blocks) {\n  a.org {\n    whoami\n  }\n  b.org:1053 {\n    log\n  }\n}\nimport blocks\n"
    )
    cf = parse(text, env={})
    assert [(b.zones, shapes(b)) for b in cf.blocks] == [
        (("a.org.",), [("whoami", (), ())]),
        (("b.org.",), [("log", (), ())]),
    ]
    assert cf.blocks[1].keys[0].port == 1053


CHUNKS = st.sampled_from(
    [" ", "\n", "\t", "\r\n", "{", "}", '"', "\\", "#", ",", ":", "/", ".", "(x)", "import ",
     "x", "a.org", "10.0.0.0/9", "fd00::/7", ":53", "{$V}", "{%V%}", "log", "tls://", "é"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(CHUNKS, max_size=40).map("".join))
def test_any_text_parses_or_raises_corefile_error(text: str):
    # Bad input must give a CorefileError naming a line, never another exception.
    try:
        cf = parse(text, env={"V": "v"}, known=None)
    except CorefileError as e:
        assert str(e).startswith("Corefile:")
        assert e.line is not None
    else:
        assert all(b.keys for b in cf.blocks)


def test_zone_args_normalise_names_and_cidrs_for_plugins() -> None:
    from dnsserver.corefile import zone_args

    assert zone_args(("Cluster.Local", "10.0.0.0/24", "cluster.local.")) == (
        "cluster.local.", "0.0.10.in-addr.arpa.")
    assert len(zone_args(("10.0.0.0/22",))) == 4
    assert zone_args(("fd00::/8",)) == ("d.f.ip6.arpa.",)
