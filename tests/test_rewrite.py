"""The `rewrite` plugin: rule parsing as CoreDNS words it, and the real server rewriting names,
types and TTLs while the client always sees its own question (and, with `answer`, its names)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import dns.rdatatype
import pytest

from dnsserver.plugins.rewrite import Question, RuleError, new_rule

from helpers import ServerProcess, answers, query, wait_for


def test_rules_rewrite_the_question_as_coredns_matches_them() -> None:
    q = Question("www.example.test.", 1, 1)
    assert new_rule(["name", "prefix", "www", "web"]).apply(q) is not None
    assert q.name == "web.example.test."  # CoreDNS normalises the prefix to "www."
    q = Question("ftp-us.example.test.", 1, 1)
    new_rule(["name", "regex", r"(.*)-(us)\.example\.test", "{1}.{2}.svc.test"]).apply(q)
    assert q.name == "ftp.us.svc.test."
    q = Question("a.example.test.", 255, 1)
    assert new_rule(["continue", "type", "ANY", "HINFO"]).apply(q) == []
    assert q.qtype == 13
    assert new_rule(["name", "exact", "other.test", "x.test"]).apply(q) is None


@pytest.mark.parametrize(("args", "message"), [
    ([], "no rule type specified for rewrite"),
    (["answer", "name", "a", "b"], "response rewrites must begin with a name rule"),
    (["name", "a"], "too few arguments for a name rule"),
    (["name", "fuzzy", "a", "b"], "received: fuzzy"),
    (["name", "regex", "(", "b"], "invalid regex matching pattern: ("),
    (["name", "regex", "a", "{1}"], "uses more subexpressions"),
    (["name", "regex", "(a)", "b", "answer", "bogus", "x", "y"], "invalid type 'bogus'"),
    (["name", "exact", "a", "b", "answer", "name"], "2 arguments required"),
    (["type", "A"], "type rules must have exactly two arguments"),
    (["type", "A", "NOPE"], "invalid type 'NOPE'"),
    (["ttl", "a", "x"], "invalid TTL 'x' for a ttl rule"),
    (["edns0", "local", "set", "0xffee", "abcd"], "edns0 rules are not supported"),
    (["frobnicate", "a", "b"], "invalid rule type 'frobnicate'"),
])
def test_bad_rules_are_refused_in_coredns_words(args: list[str], message: str) -> None:
    with pytest.raises(RuleError, match=message.replace("(", r"\(").replace("{", r"\{")):
        new_rule(args)


ZONE = """\
$ORIGIN cn.rw.test.
@      SOA ns h 1 2 3 4 5
alias  CNAME target
target A 127.0.0.16
"""

COREFILE = r"""
rw.test:{PORT} {
    bind 127.0.0.1
    rewrite name exact red.rw.test blue.rw.test
    rewrite name prefix www2 web answer auto
    rewrite name suffix .alias.rw.test .real.rw.test answer auto
    rewrite name suffix .cnalias.rw.test .cn.rw.test answer auto
    rewrite name suffix .plain.rw.test .real.rw.test
    rewrite stop {
        name regex (.*)-(us)\.rx\.rw\.test {1}.svc.{2}.real.rw.test
        answer name (.*)\.svc\.(us)\.real\.rw\.test {1}-{2}.rx.rw.test
    }
    rewrite name regex ^bad\.rw\.test\.$ a..b.rw.test
    rewrite ttl exact short.rw.test 7
    rewrite type MX A
    hosts HOSTS rw.test {
        127.0.0.11 blue.rw.test
        127.0.0.12 web.rw.test
        127.0.0.13 host.real.rw.test
        127.0.0.14 ftp.svc.us.real.rw.test
        127.0.0.15 short.rw.test
        fallthrough
    }
    file ZONE cn.rw.test
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("rw")
    (folder / "cn.db").write_text(ZONE)
    corefile = COREFILE.replace("HOSTS", str(folder / "none.hosts")).replace(
        "ZONE", str(folder / "cn.db"))
    with ServerProcess(corefile, snapshot=None, ready_name="blue.rw.test",
                       ready_type="A") as s:
        yield s


def owners(msg) -> list[str]:
    return [rrset.name.to_text() for rrset in msg.answer]


def test_exact_rewrite_answers_with_the_clients_name(server: ServerProcess) -> None:
    msg = query("red.rw.test", "A", port=server.port)
    assert msg.question[0].name.to_text() == "red.rw.test."
    assert owners(msg) == ["red.rw.test."] and answers(msg) == ["127.0.0.11"]


def test_prefix_and_suffix_with_answer_auto(server: ServerProcess) -> None:
    msg = query("www2.rw.test", "A", port=server.port, tcp=True)
    assert owners(msg) == ["www2.rw.test."] and answers(msg) == ["127.0.0.12"]
    msg = query("host.alias.rw.test", "A", port=server.port)
    assert owners(msg) == ["host.alias.rw.test."] and answers(msg) == ["127.0.0.13"]


def test_answer_auto_rewrites_cname_targets_back_too(server: ServerProcess) -> None:
    msg = query("alias.cnalias.rw.test", "A", port=server.port)
    assert owners(msg) == ["alias.cnalias.rw.test.", "target.cnalias.rw.test."]
    assert answers(msg, "CNAME") == ["target.cnalias.rw.test."]
    assert answers(msg, "A") == ["127.0.0.16"]


def test_without_answer_rules_only_the_question_is_restored(server: ServerProcess) -> None:
    msg = query("host.plain.rw.test", "A", port=server.port)
    assert msg.question[0].name.to_text() == "host.plain.rw.test."
    assert owners(msg) == ["host.real.rw.test."]


def test_regex_with_answer_name_block_form(server: ServerProcess) -> None:
    msg = query("ftp-us.rx.rw.test", "A", port=server.port)
    assert owners(msg) == ["ftp-us.rx.rw.test."] and answers(msg) == ["127.0.0.14"]


def test_ttl_and_type_rewrites(server: ServerProcess) -> None:
    assert query("short.rw.test", "A", port=server.port).answer[0].ttl == 7
    assert query("blue.rw.test", "A", port=server.port).answer[0].ttl == 3600
    msg = query("blue.rw.test", "MX", port=server.port)
    assert msg.question[0].rdtype == dns.rdatatype.MX
    assert answers(msg, "A") == ["127.0.0.11"]


def test_an_invalid_name_after_rewrite_is_servfail(server: ServerProcess) -> None:
    assert query("bad.rw.test", "A", port=server.port).rcode() == dns.rcode.SERVFAIL
    # The log line is read from the server's stderr by another thread: wait for it.
    wait_for(lambda: "invalid name after rewrite: a..b.rw.test." in server.output, timeout=5,
             what="the rewrite error logged")


def test_a_bad_rule_stops_start_up_naming_the_line(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text("rw.test:1053 {\n    bind 127.0.0.1\n    rewrite name regex ( x\n}\n")
    out = subprocess.run([sys.executable, "-m", "dnsserver", "-conf", str(conf)],
                         capture_output=True, text=True, timeout=30, cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "Traceback" not in text
    assert f"{conf}:3 - Error during parsing: rewrite: invalid regex matching pattern: (" in text

