"""The `hosts` plugin: hosts(5) parsing, and the real server answering from a hosts file it
writes (never the machine's /etc/hosts): A/AAAA/PTR, NODATA, SERVFAIL vs fallthrough, reload."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.rcode
import pytest

from dnsserver.plugins.hosts import address_from_reverse, parse_hosts

from helpers import ServerProcess, answers, query, wait_for

HOSTS = """\
# comment line
127.0.0.1   one.example.test  alias.example.test   # trailing comment
::1         one.example.test
127.0.0.2   two.example.test
::ffff:127.0.0.3 mapped.example.test
fe80::1%eth0 zoned.example.test
127.0.0.9   outside.other.test
not-an-ip   junk.example.test
127.0.0.4
127.0.0.10  *.wild.example.test
"""


def test_parse_hosts_families_aliases_comments_and_origins() -> None:
    h = parse_hosts(HOSTS, ("example.test.",))
    assert h.name4["one.example.test."] == ["127.0.0.1"]
    assert h.name4["alias.example.test."] == ["127.0.0.1"]
    assert h.name6["one.example.test."] == ["::1"]
    assert h.name4["mapped.example.test."] == ["127.0.0.3"]  # IPv4-mapped counts as IPv4
    assert h.name6["zoned.example.test."] == ["fe80::1"]
    assert "outside.other.test." not in h.name4  # not in the plugin's zones
    assert "junk.example.test." not in h.name4
    assert h.addr["127.0.0.1"] == ["one.example.test.", "alias.example.test."]
    assert "127.0.0.10" not in h.addr  # wildcards make no PTR
    assert parse_hosts(HOSTS, ("example.test.",), reverse=False).addr == {}


def test_reverse_names() -> None:
    assert address_from_reverse("1.0.0.127.in-addr.arpa.") == "127.0.0.1"
    assert address_from_reverse("1.0.0.in-addr.arpa.") is None
    v6 = ".".join("1" + "0" * 31) + ".ip6.arpa."
    assert address_from_reverse(v6) == "::1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    folder = tmp_path_factory.mktemp("hosts")
    path = folder / "hosts"
    path.write_text(HOSTS)
    zone = folder / "fall.test.db"
    zone.write_text("@ SOA ns h 1 2 3 4 5\n* 5 A 127.0.0.66\n")
    corefile = f"""
example.test:{{PORT}} in-addr.arpa:{{PORT}} ip6.arpa:{{PORT}} {{
    bind 127.0.0.1
    hosts {path} {{
        127.0.0.5 inline.example.test
        ttl 60
        reload 100ms
    }}
}}
fall.test:{{PORT}} {{
    bind 127.0.0.1
    hosts {folder / "absent"} {{
        127.0.0.6 known.fall.test
        fallthrough
    }}
    file {zone}
}}
"""
    with ServerProcess(corefile, snapshot=None, ready_name="one.example.test",
                       ready_type="A") as s:
        yield s, path


def test_a_aaaa_and_inline_entries_are_authoritative(server) -> None:
    s, _ = server
    msg = query("ONE.example.test", "A", port=s.port)
    assert msg.flags & dns.flags.AA and answers(msg) == ["127.0.0.1"]
    assert msg.answer[0].ttl == 60
    assert answers(query("one.example.test", "AAAA", port=s.port, tcp=True)) == ["::1"]
    assert answers(query("inline.example.test", "A", port=s.port)) == ["127.0.0.5"]
    assert answers(query("x.wild.example.test", "A", port=s.port)) == ["127.0.0.10"]


def test_ptr_records_are_generated_from_entries(server) -> None:
    s, _ = server
    msg = query("1.0.0.127.in-addr.arpa", "PTR", port=s.port)
    assert answers(msg) == ["alias.example.test.", "one.example.test."]
    assert answers(query("5.0.0.127.in-addr.arpa", "PTR", port=s.port)) == ["inline.example.test."]


def test_existing_name_other_type_is_nodata_missing_name_servfail(server) -> None:
    s, _ = server
    nodata = query("two.example.test", "AAAA", port=s.port)
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
    assert nodata.flags & dns.flags.AA and nodata.authority == []
    assert query("two.example.test", "MX", port=s.port).rcode() == dns.rcode.NOERROR
    # CoreDNS answers SERVFAIL here (it has no SOA for an NXDOMAIN); so do we.
    assert query("missing.example.test", "A", port=s.port).rcode() == dns.rcode.SERVFAIL


def test_fallthrough_hands_on_only_names_it_does_not_have(server) -> None:
    s, _ = server
    assert answers(query("known.fall.test", "A", port=s.port)) == ["127.0.0.6"]
    assert answers(query("other.fall.test", "A", port=s.port)) == ["127.0.0.66"]  # from `file`
    assert query("known.fall.test", "AAAA", port=s.port).answer == []  # NODATA, no fallthrough


def test_the_file_is_reloaded_when_it_changes(server) -> None:
    s, path = server
    assert answers(query("two.example.test", "A", port=s.port)) == ["127.0.0.2"]  # now kept
    path.write_text(HOSTS.replace("127.0.0.2 ", "127.0.0.12 ") + "127.0.0.8 new.example.test\n")
    # The answer kept in the fast path before the reload must be dropped, not served on.
    wait_for(lambda: answers(query("two.example.test", "A", port=s.port)) == ["127.0.0.12"],
             what="the changed hosts entry")
    assert answers(query("new.example.test", "A", port=s.port)) == ["127.0.0.8"]
    assert answers(query("inline.example.test", "A", port=s.port)) == ["127.0.0.5"]


@pytest.mark.parametrize(("block", "line", "message"), [
    ("ttl 0", 4, "ttl provided is invalid"),
    ("ttl x", 4, "ttl needs a number of second"),
    ("reload", 4, "reload needs a duration"),
    ("fallthrough\n        127.0.0.1 late.example.test", 5, "unknown property '127.0.0.1'"),
])
def test_bad_options_are_corefile_errors_naming_the_line(tmp_path: Path, block: str, line: int,
                                                         message: str) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(f"example.test:1053 {{\n    bind 127.0.0.1\n    hosts {tmp_path / 'h'} {{\n"
                    f"        {block}\n    }}\n}}\n")
    out = subprocess.run([sys.executable, "-m", "dnsserver", "-conf", str(conf)],
                         capture_output=True, text=True, timeout=30, cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and message in text and "Traceback" not in text
    assert f"{conf}:{line} - Error during parsing: hosts:" in text
