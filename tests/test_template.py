"""The `template` plugin: the Go-template subset it translates, and the real server answering
CoreDNS's README examples (named groups, PTR from regex, NXDOMAIN with a SOA, fallthrough)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.rcode
import pytest

from dnsserver.plugins.template import TemplateData, TemplateError, compile_template, render

from helpers import ServerProcess, answers, query

DATA = TemplateData(zone="example.", name="ip-127-0-0-1.example.", regex=".*",
                    match=["ip-127-0-0-1.example.", "127"], group={"0": "x", "a": "127"},
                    cls="IN", type="A", qname="IP-127-0-0-1.example.", qtype="1", qclass="1")


@pytest.mark.parametrize(("source", "text"), [
    ("{{ .Name }} 60 IN A 127.0.0.1", "ip-127-0-0-1.example. 60 IN A 127.0.0.1"),
    ("{{.Zone}} {{ .Class }} {{ .Type }}", "example. IN A"),
    ("{{ .Group.a }}.{{ index .Group \"a\" }}.{{ index .Match 1 }}", "127.127.127"),
    ("x {{- .Type -}} y", "xAy"),
    ("{{ .Question.Name }}{{ /* comment */ }}", "IP-127-0-0-1.example."),
    ("{{ .Group.missing }}", "<no value>"),
])
def test_supported_template_subset(source: str, text: str) -> None:
    assert render(compile_template(source), DATA) == text


@pytest.mark.parametrize("source", ["{{ .Message }}", "{{ range .Match }}x{{ end }}",
                                    "{{ printf \"%s\" .Name }}", "{{ .Name }"])
def test_unsupported_templates_are_refused(source: str) -> None:
    with pytest.raises(TemplateError):
        compile_template(source)


def test_index_out_of_range_fails_at_execution_like_go() -> None:
    with pytest.raises(TemplateError, match="index out of range"):
        render(compile_template("{{ index .Match 5 }}"), DATA)


COREFILE = r"""
example:{PORT} in-addr.arpa:{PORT} invalid:{PORT} {
    bind 127.0.0.1
    template IN A example {
      match (^|[.])ip-(?P<a>[0-9]*)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{ .Name }} 60 IN A {{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
      fallthrough
    }
    template IN MX example {
      match ^ip-127-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{ .Name }} 60 IN MX 10 {{ .Name }}"
      additional "{{ .Name }} 60 IN A 127.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
    }
    template IN PTR in-addr.arpa {
      match ^(?P<d>[0-9]*)[.](?P<c>[0-9]*)[.](?P<b>[0-9]*)[.](?P<a>[0-9]*)[.]in-addr[.]arpa[.]$
      answer "{{ .Name }} 60 IN PTR ip-{{.Group.a}}-{{.Group.b}}-{{.Group.c}}-{{.Group.d}}.example."
    }
    template ANY ANY invalid {
      rcode NXDOMAIN
      authority "invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"
    }
    template IN TXT example {
      match ^broken[.]
      answer "{{ .Name }} 60 IN A not-an-address"
    }
    hosts HOSTS {
      127.0.0.42 other.example
    }
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    hosts = tmp_path_factory.mktemp("tpl") / "none.hosts"
    with ServerProcess(COREFILE.replace("HOSTS", str(hosts)), snapshot=None,
                       ready_name="ip-127-0-0-1.example", ready_type="A") as s:
        yield s


def test_a_record_from_named_groups(server: ServerProcess) -> None:
    msg = query("ip-127-1-2-3.example", "A", port=server.port)
    assert msg.flags & dns.flags.AA and answers(msg) == ["127.1.2.3"]
    assert msg.answer[0].ttl == 60
    sub = query("www.ip-127-0-0-9.example", "A", port=server.port, tcp=True)
    assert answers(sub) == ["127.0.0.9"]  # the README's regex makes this a wildcard


def test_mx_with_additional_record(server: ServerProcess) -> None:
    msg = query("ip-127-0-0-5.example", "MX", port=server.port)
    assert answers(msg) == ["10 ip-127-0-0-5.example."]
    assert [rd.to_text() for rrset in msg.additional for rd in rrset] == ["127.0.0.5"]


def test_ptr_from_reverse_name(server: ServerProcess) -> None:
    msg = query("4.3.2.127.in-addr.arpa", "PTR", port=server.port)
    assert answers(msg) == ["ip-127-2-3-4.example."]


def test_rcode_with_soa_in_authority(server: ServerProcess) -> None:
    msg = query("anything.invalid", "AAAA", port=server.port)
    assert msg.rcode() == dns.rcode.NXDOMAIN and msg.answer == []
    assert msg.authority[0].to_text().split()[:5] == ["invalid.", "60", "IN", "SOA", "ns.invalid."]


def test_no_match_is_nxdomain_unless_fallthrough(server: ServerProcess) -> None:
    # A template: no match, but `fallthrough`: the hosts plugin after it answers.
    assert answers(query("other.example", "A", port=server.port)) == ["127.0.0.42"]
    # MX template: no match and no fallthrough: NXDOMAIN (CoreDNS would send nothing).
    msg = query("other.example", "MX", port=server.port)
    assert msg.rcode() == dns.rcode.NXDOMAIN


def test_a_template_that_renders_a_bad_record_is_servfail_and_logged(server: ServerProcess
                                                                    ) -> None:
    msg = query("broken.example", "TXT", port=server.port)
    assert msg.rcode() == dns.rcode.SERVFAIL
    assert "invalid resource record" in server.output


@pytest.mark.parametrize(("stanza", "message"), [
    ("template in A", "invalid query class in"),
    ("template IN BOGUS", "invalid RR class BOGUS"),
    ("template IN A {\n  match ([\n}", "could not parse regex: (["),
    ("template IN A {\n  answer \"{{ .Message }}\"\n}", "is not supported by dnsserver"),
    ("template IN A {\n  rcode NOPE\n}", "unknown rcode NOPE"),
    ("template IN A {\n  match x\n}", "no answer section for template found"),
])
def test_bad_stanzas_are_corefile_errors(tmp_path: Path, stanza: str, message: str) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(f"example:1053 {{\n    bind 127.0.0.1\n    {stanza}\n}}\n")
    out = subprocess.run([sys.executable, "-m", "dnsserver", "-conf", str(conf)],
                         capture_output=True, text=True, timeout=30, cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and message in text and "Traceback" not in text
    assert f"{conf}:" in text and "Error during parsing: template:" in text
