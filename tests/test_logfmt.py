"""Log lines against CoreDNS's documented examples; query fields read from real DNS messages."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnsserver import logfmt
from dnsserver.logfmt import (
    DENIAL,
    ERROR,
    SUCCESS,
    WireError,
    classify,
    edns_bufsize,
    error_log_line,
    format_duration,
    parse_query,
    query_log_line,
    query_log_line_from_wire,
    setup_logging,
    should_log,
)

QR, AA, RD, RA, AD = 0x8000, 0x0400, 0x0100, 0x0080, 0x0020


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("INFO", stream=stream)
    yield stream
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logfmt._OurHandler):
            root.removeHandler(h)
    root.setLevel(logging.WARNING)


def test_documented_query_line(out: io.StringIO) -> None:
    # plugin/log README: [INFO] [::1]:50759 - 29008 "A IN example.org. udp 41 false 4096"
    #                    NOERROR qr,rd,ra,ad 68 0.037990251s
    line = query_log_line("::1", 50759, 29008, 1, 1, "example.org.", "udp", 41, False, 4096,
                          0, QR | RD | RA | AD, 68, 37_990_251)
    logfmt.log_query(line)
    assert out.getvalue() == (
        '[INFO] [::1]:50759 - 29008 "A IN example.org. udp 41 false 4096" '
        "NOERROR qr,rd,ra,ad 68 0.037990251s\n")


def test_documented_errors_line(out: io.StringIO) -> None:
    logfmt.log_error(2, "example.org.", 1, "unreachable backend")
    assert out.getvalue() == "[ERROR] plugin/errors: 2 example.org. A: unreachable backend\n"
    assert error_log_line(2, "Ghcr.IO.", 28, "read udp 10.244.0.81:39727->8.8.8.8:53: i/o "
                          "timeout") == ("2 ghcr.io. AAAA: read udp 10.244.0.81:39727->"
                                         "8.8.8.8:53: i/o timeout")


def test_process_log_prefixes_without_timestamps(out: io.StringIO) -> None:
    logfmt.plugin_logger("reload").info("Running configuration SHA512 = %s", "d0c1")
    logfmt.plugin_logger("kubernetes").warning("starting server with unsynced API")
    logging.getLogger("dnsserver.server").error("listen udp :53: address in use")
    logging.getLogger("dnsserver.server").debug("not shown at INFO")
    try:
        raise OSError("boom")
    except OSError:
        logfmt.plugin_logger("forward").exception("upstream failed")
    assert out.getvalue().splitlines() == [
        "[INFO] plugin/reload: Running configuration SHA512 = d0c1",
        "[WARNING] plugin/kubernetes: starting server with unsynced API",
        "[ERROR] listen udp :53: address in use",
        "[ERROR] plugin/forward: upstream failed: OSError: boom",
    ]


def test_setup_logging_defaults_to_stdout_and_replaces_itself(
        capsys: pytest.CaptureFixture[str]) -> None:
    try:
        setup_logging("debug")
        setup_logging("DEBUG")  # a second call must not double every line
        logging.getLogger("plugin/debug").debug("on")
        assert capsys.readouterr().out == "[DEBUG] plugin/debug: on\n"
        with pytest.raises(ValueError, match="unknown log level"):
            setup_logging("LOUD")
    finally:
        root = logging.getLogger()
        for h in list(root.handlers):
            if isinstance(h, logfmt._OurHandler):
                root.removeHandler(h)
        root.setLevel(logging.WARNING)


def test_duration_as_go_formats_seconds() -> None:
    assert format_duration(37_990_251) == "0.037990251s"
    assert format_duration(195_000) == "0.000195s"
    assert format_duration(10_000) == "0.00001s"  # never 1e-05s
    assert format_duration(0) == "0s"
    assert format_duration(1_500_000_000) == "1.5s"
    assert format_duration(120 * 10**9) == "120s"


@given(st.integers(min_value=0, max_value=10**13))
def test_duration_round_trips(ns: int) -> None:
    text = format_duration(ns)
    assert text.endswith("s") and "e" not in text
    assert float(text[:-1]) == ns // 10**9 + (ns % 10**9) / 1e9


def test_line_renders_names_types_and_empty_values() -> None:
    line = query_log_line("10.244.0.1", 52298, 7, 65280, 3, "Kubernetes.DEFAULT.svc.", "tcp",
                          54, True, 65535, 4000, 0, 0, 1000)
    assert line == ('10.244.0.1:52298 - 7 "TYPE65280 CH kubernetes.default.svc. tcp 54 true '
                    '65535" 4000 - 0 0.000001s')


def test_bufsize_as_coredns_normalises_it() -> None:
    assert edns_bufsize("tcp", 1232) == 65535
    assert edns_bufsize("udp", None) == 512
    assert edns_bufsize("udp", 100) == 512
    assert edns_bufsize("udp", 4096) == 4096


def test_line_from_real_messages() -> None:
    q = dns.message.make_query("Web.Default.svc.cluster.local.", "A", use_edns=0, payload=1232,
                               want_dnssec=True)
    q.id = 4242
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    r.answer.append(dns.rrset.from_text(q.question[0].name, 5, "IN", "A", "10.96.0.10"))
    qw, rw = q.to_wire(), r.to_wire()
    f = parse_query(qw)
    assert (f.qid, f.qtype, f.do, f.udp_size, f.size) == (4242, 1, True, 1232, len(qw))
    line, cls = query_log_line_from_wire("127.0.0.1", 40000, "udp", qw, rw, 250_000)
    assert line == (f'127.0.0.1:40000 - 4242 "A IN web.default.svc.cluster.local. udp {len(qw)} '
                    f'true 1232" NOERROR qr,aa,rd {len(rw)} 0.00025s')
    assert cls == SUCCESS


def soa_response(rcode: int, qtype: str = "A") -> bytes:
    q = dns.message.make_query("nope.cluster.local.", qtype)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    r.authority.append(dns.rrset.from_text(
        "cluster.local.", 5, "IN", "SOA", "ns.dns.cluster.local. hostmaster.cluster.local. "
        "1 7200 1800 86400 5"))
    return r.to_wire()


def test_classes_as_the_log_plugin_has_them() -> None:
    q = dns.message.make_query("nope.cluster.local.", "A").to_wire()
    assert query_log_line_from_wire("::1", 1, "udp", q, soa_response(3), 1)[1] == DENIAL
    assert query_log_line_from_wire("::1", 1, "udp", q, soa_response(0), 1)[1] == DENIAL
    assert classify(2, 0, False, 0) == ERROR
    assert classify(5, 0, False, 0) == ERROR  # REFUSED
    assert classify(3, 0, False, 0) == ERROR  # NXDOMAIN without SOA: CoreDNS calls it error
    assert classify(0, 0, False, 2) == SUCCESS  # referral
    assert classify(0, 1, False, 0, qtype=252) == ERROR  # AXFR is "meta"
    assert should_log(frozenset(), ERROR)
    assert should_log({"all"}, DENIAL)
    assert should_log({"denial", "error"}, DENIAL) and not should_log({"denial"}, SUCCESS)


@given(st.binary(max_size=80))
def test_garbage_never_crashes_the_wire_reader(data: bytes) -> None:
    try:
        parse_query(data)
        logfmt.parse_response(data)
    except WireError:
        pass


def test_short_messages_raise_clear_errors() -> None:
    with pytest.raises(WireError, match="shorter than a DNS header"):
        parse_query(b"\x00\x01")
    with pytest.raises(WireError, match="no question"):
        parse_query(bytes(12))
