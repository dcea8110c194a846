"""The `file` plugin: master-file parsing, the zone's lookup rules, and the real server answering
from a zone file (authoritative answers, referrals, wildcards, CNAMEs, reload on a new serial)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.rcode
import pytest
from dnslib import QTYPE

from dnsserver.plugins._zonedata import ZoneFileError, parse_records
from dnsserver.plugins.file import FilePlugin, Zone, load_zone

from helpers import ROOT, ServerProcess, answers, query, wait_for

EXAMPLE = ROOT / "zones" / "example.org.db"

ZONE = """\
$ORIGIN example.test.
$TTL 1h
@       IN SOA ns1 hostmaster ( {serial} 7200 3600 1209600 300 )
        IN NS  ns1
ns1     IN A   127.0.0.53
www     IN A   {www}
away    IN CNAME target.other.test.
"""


def write_zone(path: Path, serial: int, www: str) -> None:
    # Write then rename, as editors and config maps do: the reload never sees half a file.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(ZONE.format(serial=serial, www=www))
    tmp.replace(path)


# -- parsing ------------------------------------------------------------------------------------


def test_master_file_syntax_origin_ttl_relative_names_and_parentheses() -> None:
    text = """$ORIGIN example.test.
$TTL 2h
@ IN SOA ns1 hostmaster.example.test. (
      7 ; serial
      7200 3600 1209600 300 )
    ; an indented comment line
  IN NS ns1
www 1m IN A 127.0.0.1
    IN 30 AAAA ::1
srv IN SRV 0 5 80 www
txt TXT "two words" "a \\"quote\\""
$ORIGIN sub
x A 127.0.0.3
"""
    rrs = parse_records(text, "ignored.test.", "db")
    got = [(str(rr.rname), QTYPE.get(rr.rtype), rr.ttl) for rr in rrs]
    assert got == [
        ("example.test.", "SOA", 7200), ("example.test.", "NS", 7200),
        ("www.example.test.", "A", 60), ("www.example.test.", "AAAA", 30),
        ("srv.example.test.", "SRV", 7200), ("txt.example.test.", "TXT", 7200),
        ("x.sub.example.test.", "A", 7200),
    ]
    assert str(rrs[0].rdata.mname) == "ns1.example.test."
    assert rrs[0].rdata.times[0] == 7
    assert str(rrs[4].rdata.target) == "www.example.test."  # dnslib alone leaves it relative
    assert [bytes(x) for x in rrs[5].rdata.data] == [b"two words", b'a "quote"']


@pytest.mark.parametrize(("text", "message"), [
    ("www IN A 300.0.0.1", "db:2: bad A data"),
    ("www IN BOGUS 1", "db:2: unknown record type 'BOGUS'"),
    ("www IN MX 10", "db:2: bad MX data"),
    ("www IN A", "db:2: A record has no data"),
    ("www ( IN A 127.0.0.1", "db:2: '(' not closed"),
    ('www TXT "open', "db:2: unterminated quoted string"),
    ("$INCLUDE other.db", "db:2: $INCLUDE is not supported"),
])
def test_bad_master_file_names_the_line(text: str, message: str) -> None:
    with pytest.raises(ZoneFileError, match=re.escape(message)):
        parse_records("; first line\n" + text + "\n", "example.test.", "db")


def test_zone_needs_a_soa_and_only_in_zone_data() -> None:
    with pytest.raises(ZoneFileError, match=re.escape("no SOA record for origin example.test.")):
        Zone("example.test.", parse_records("www IN A 127.0.0.1", "example.test.", "db"), "db")
    lines: list[int] = []
    rrs = parse_records("@ SOA ns h 1 2 3 4 5\nwww.other. A 127.0.0.1", "example.test.", "db",
                        lines=lines)
    with pytest.raises(ZoneFileError, match=re.escape("db:2: out of zone data: www.other.")):
        Zone("example.test.", rrs, "db", lines)


# -- lookups ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zone() -> Zone:
    return load_zone(str(EXAMPLE), "example.org.")


def test_lookup_positive_answer_has_apex_ns_in_authority_and_addresses_for_mx(zone: Zone) -> None:
    ans = zone.lookup("example.org.", QTYPE.MX)
    assert (ans.rcode, ans.aa) == (0, True)
    assert [str(rr.rdata) for rr in ans.answer] == ["10 mail.example.org."]
    assert sorted(str(rr.rdata) for rr in ans.authority) == ["ns1.example.org.", "ns2.example.org."]
    assert [str(rr.rdata) for rr in ans.additional] == ["127.0.0.25"]


def test_lookup_empty_non_terminal_is_nodata_and_missing_name_nxdomain(zone: Zone) -> None:
    ent = zone.lookup("empty.example.org.", QTYPE.A)
    missing = zone.lookup("missing.example.org.", QTYPE.A)
    assert (ent.rcode, ent.answer, QTYPE.get(ent.authority[0].rtype)) == (0, [], "SOA")
    assert (missing.rcode, QTYPE.get(missing.authority[0].rtype)) == (3, "SOA")


def test_lookup_delegation_below_a_cut_is_a_referral_with_glue(zone: Zone) -> None:
    ans = zone.lookup("host.deeper.sub.example.org.", QTYPE.AAAA)
    assert (ans.rcode, ans.aa, ans.answer) == (0, False, [])
    assert [str(rr.rdata) for rr in ans.authority] == ["ns.sub.example.org."]
    assert [str(rr.rdata) for rr in ans.additional] == ["127.0.0.99"]


def test_lookup_cname_to_a_name_outside_the_zone_asks_to_chase(zone: Zone) -> None:
    records = parse_records("@ SOA ns h 1 2 3 4 5\nout CNAME elsewhere.test.", "ex.test.", "db")
    ans = Zone("ex.test.", records, "db").lookup("out.ex.test.", QTYPE.A)
    assert ans.chase == "elsewhere.test."
    assert [QTYPE.get(rr.rtype) for rr in ans.answer] == ["CNAME"]


def test_same_serial_is_not_reloaded_new_serial_is(tmp_path: Path) -> None:
    path = tmp_path / "db"
    write_zone(path, 1, "127.0.0.1")
    plugin = FilePlugin(str(path), ("example.test.",),
                        {"example.test.": load_zone(str(path), "example.test.")})
    write_zone(path, 1, "127.0.0.2")
    assert asyncio.run(plugin.check()) is False
    assert str(plugin.zones["example.test."].nodes["www.example.test."][1][0].rdata) == "127.0.0.1"
    write_zone(path, 2, "127.0.0.3")
    assert asyncio.run(plugin.check()) is True
    assert str(plugin.zones["example.test."].nodes["www.example.test."][1][0].rdata) == "127.0.0.3"


# -- the real server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    folder = tmp_path_factory.mktemp("zones")
    path = folder / "example.test.db"
    write_zone(path, 1, "127.0.0.1")
    corefile = f"""
example.org:{{PORT}} {{
    bind 127.0.0.1
    file {EXAMPLE}
}}
example.test:{{PORT}} {{
    bind 127.0.0.1
    file {path} {{
        reload 100ms
    }}
}}
other.test:{{PORT}} {{
    bind 127.0.0.1
    hosts {folder / "none.hosts"} {{
        127.0.0.7 target.other.test
    }}
}}
"""
    with ServerProcess(corefile, snapshot=None, ready_name="www.example.org",
                       ready_type="A") as s:
        yield s, path


def test_server_answers_authoritatively_without_recursion(server) -> None:
    s, _ = server
    msg = query("www.example.org", "A", port=s.port)
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA and not msg.flags & dns.flags.RA
    assert answers(msg) == ["127.0.0.1"]
    assert msg.answer[0].ttl == 300


def test_server_nxdomain_and_nodata_carry_the_soa(server) -> None:
    s, _ = server
    nx = query("nope.example.org", "A", port=s.port)
    nodata = query("www.example.org", "TXT", port=s.port, tcp=True)
    assert nx.rcode() == dns.rcode.NXDOMAIN and nodata.rcode() == dns.rcode.NOERROR
    for msg in (nx, nodata):
        assert msg.flags & dns.flags.AA and msg.answer == []
        assert [rr.to_text().split()[0] for rr in msg.authority[0]] == ["ns1.example.org."]


def test_server_chases_cnames_and_expands_wildcards(server) -> None:
    s, _ = server
    chain = query("alias.example.org", "A", port=s.port)
    assert [rrset.name.to_text() for rrset in chain.answer] == [
        "alias.example.org.", "web.example.org.", "www.example.org."]
    assert answers(chain, "A") == ["127.0.0.1"]
    wild = query("anything.apps.example.org", "A", port=s.port)
    assert wild.answer[0].name.to_text() == "anything.apps.example.org."
    assert answers(wild) == ["127.0.0.80"]


def test_server_refers_delegated_names_with_glue(server) -> None:
    s, _ = server
    msg = query("www.sub.example.org", "A", port=s.port)
    assert msg.rcode() == dns.rcode.NOERROR and not msg.flags & dns.flags.AA
    assert msg.answer == []
    assert [rr.to_text() for rr in msg.authority[0]] == ["ns.sub.example.org."]
    assert answers_of(msg.additional) == ["127.0.0.99"]


def answers_of(section: list) -> list[str]:
    return sorted(rd.to_text() for rrset in section for rd in rrset)


def test_server_resolves_an_out_of_zone_cname_target_through_its_other_blocks(server) -> None:
    s, _ = server
    msg = query("away.example.test", "A", port=s.port)
    assert answers(msg, "CNAME") == ["target.other.test."]
    assert answers(msg, "A") == ["127.0.0.7"]


def test_server_reloads_the_zone_when_the_serial_changes(server) -> None:
    s, path = server
    assert answers(query("www.example.test", "A", port=s.port)) == ["127.0.0.1"]
    write_zone(path, 2, "127.0.0.2")
    wait_for(lambda: answers(query("www.example.test", "A", port=s.port)) == ["127.0.0.2"],
             what="the reloaded zone's answer")
    assert "Successfully reloaded zone" in s.output


def test_a_bad_zone_file_stops_start_up_with_its_file_and_line(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    db.write_text("@ SOA ns h 1 2 3 4 5\nwww IN A 127.0.0.300\n")
    conf = tmp_path / "Corefile"
    conf.write_text(f"example.test:1053 {{\n    bind 127.0.0.1\n    file {db}\n}}\n")
    out = subprocess.run([sys.executable, "-m", "dnsserver", "-conf", str(conf)],
                         capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert f"{db}:2: bad A data" in text and "Traceback" not in text
