"""Hostile input on the wire, against the real server: what fuzzing found, kept as regression
cases; what `test_server_e2e.py` does not cover yet (slow TCP clients, garbage interleaved
with good queries, responses over TCP); and secrets that must never reach the output.

Each fuzz finding is one named input, checked in-process (`QueryEngine.resolve`, the suite's
properties from `test_fuzz.py`) and on the real server over UDP and TCP.
"""

from __future__ import annotations

import base64
import random
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest
from test_fuzz import check_resolve, engines

from dnsserver.snapshot import load_objects

import helpers
from fake_apiserver import FakeApiServer
from helpers import DEMO, ServerProcess, answers, query, tcp_message, wait_for

READ_TIMEOUT = 1.0  # the Corefile's `timeouts { read 1s }`: the shortest CoreDNS allows
IDLE_TIMEOUT = 5.0

COREFILE = """
.:{PORT} {
    bind 127.0.0.1
    timeouts {
        read 1s
        idle 5s
    }
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
    }
}
"""


def header(ident: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


A_IN = b"\x00\x01\x00\x01"
CLUSTER = b"\x07cluster\x05local\x00"


def pointer_chain(links: int) -> bytes:
    """A good question, then in the additional section a name of `links` 63-octet labels,
    each joined to the one before by a compression pointer: every pointer points backwards,
    as dnslib requires, yet the name is far past 255 octets. The labels sit in the RDATA of a
    NULL record in front of it (the question comes first, so it cannot be such a name)."""
    question = header(ar=2) + b"\x03web\x04shop\x03svc" + CLUSTER + A_IN
    rdata_at = len(question) + 11  # root owner (1) + type, class, TTL, RDLENGTH (10)
    rdata = bytearray(b"\x3f" + b"a" * 63 + b"\x00")
    prev = rdata_at
    for _ in range(links):
        here = rdata_at + len(rdata)
        rdata += b"\x3f" + b"b" * 63 + struct.pack("!H", 0xC000 | prev)
        prev = here
    null_rr = b"\x00" + struct.pack("!HHIH", 10, 1, 0, len(rdata)) + rdata
    long_rr = struct.pack("!HHHIH", 0xC000 | prev, 1, 1, 30, 4) + b"\x7f\x00\x00\x01"
    return question + null_rr + long_rr


# Inputs the fuzzers found (tools/fuzz_structured.py, tests/test_fuzz.py); the expected rcode.
FOUND = {
    # dnslib reads a name of more than 255 octets but cannot write it back: resolve raised
    # DNSLabelError("Domain label too long") and the client got nothing (UDP: an unretrieved
    # task exception per packet; TCP: a connection left waiting).
    "name-over-255-octets": (header(ident=0) + b"\x3c" + b"a" * 60 + (b"\x3c" + b"a" * 60) * 3
                             + CLUSTER + A_IN, dns.rcode.FORMERR),
    # The reserved 0x40 label type, read by dnslib as a 65-octet label it cannot write.
    "label-of-65-octets": (header() + b"\x41" + b"a" * 65 + CLUSTER + A_IN, dns.rcode.FORMERR),
    # atheris: ANY (answered per RFC 8482) built its HINFO from the name's text, which does not
    # survive a re-parse: an empty label raised UnicodeError ('idna' codec) out of resolve.
    "any-with-an-empty-label-in-text": (header() + b"\x04a..b" + CLUSTER + b"\x00\xff\x00\x01",
                                        dns.rcode.NOERROR),
    # ...and a dot inside a label gave the HINFO another owner than the question's.
    "any-with-a-dot-in-a-label": (header() + b"\x03a.b" + CLUSTER + b"\x00\xff\x00\x01",
                                  dns.rcode.NOERROR),
    # Not a failure, a guard: a 576-octet name elsewhere than the question is read and ignored.
    "long-name-in-additional": (pointer_chain(8), dns.rcode.NOERROR),
    # EDNS version 1: the BADVERS reply carried two OPT records (RFC 6891 allows one), which
    # dnspython rejects outright ("An OPT record occurred somewhere other than ...").
    "edns-version-1": (header(ident=0, flags=0x0100, ar=1) + b"\x0akubernetes\x07default\x03svc"
                       + CLUSTER + A_IN + b"\x00\x00\x29\x00\x00\x00\x01\x00\x00\x00\x00",
                       dns.rcode.BADVERS),
}


def rcode_of(answer: bytes) -> int:
    msg = dns.message.from_wire(answer)
    return msg.rcode()


@pytest.mark.parametrize("name", list(FOUND))
def test_fuzz_findings_in_process(name: str) -> None:
    data, rcode = FOUND[name]
    for engine in engines().values():
        for tcp in (False, True):
            answer = check_resolve(engine, data, tcp)
            assert answer is not None and rcode_of(answer) == rcode


@pytest.mark.parametrize("name", ["any-with-an-empty-label-in-text",
                                  "any-with-a-dot-in-a-label"])
def test_any_answer_is_owned_by_the_question_name(name: str) -> None:
    answer = check_resolve(engines()["kubernetes"], FOUND[name][0], False)
    assert answer is not None
    msg = dns.message.from_wire(answer)
    assert [rrset.name for rrset in msg.answer] == [msg.question[0].name]


def test_badvers_reply_has_exactly_one_opt() -> None:
    answer = check_resolve(engines()["kubernetes"], FOUND["edns-version-1"][0], False)
    assert answer is not None
    assert struct.unpack("!H", answer[10:12])[0] == 1  # ARCOUNT: the one OPT
    msg = dns.message.from_wire(answer)
    assert msg.edns == 0 and msg.rcode() == dns.rcode.BADVERS


# --- the real server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with ServerProcess(COREFILE) as s:
        yield s


def good(server: ServerProcess, tcp: bool = False) -> None:
    assert answers(query("web.shop.svc.cluster.local", port=server.port, tcp=tcp)) == [
        "10.96.10.10"]


def udp_exchange(server: ServerProcess, payload: bytes, timeout: float = 2.0) -> bytes | None:
    return helpers.udp_exchange(server.port, payload, timeout)


def framed(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


@pytest.mark.parametrize("name", list(FOUND))
def test_fuzz_findings_on_the_wire(server: ServerProcess, name: str) -> None:
    data, rcode = FOUND[name]
    reply = udp_exchange(server, data)
    assert reply is not None and reply[:2] == data[:2] and rcode_of(reply) == rcode
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
        s.sendall(framed(data))
        assert rcode_of(tcp_message(s)) == rcode
        # The connection stays usable for the next query.
        s.sendall(framed(dns.message.make_query("web.shop.svc.cluster.local", "A").to_wire()))
        assert answers(dns.message.from_wire(tcp_message(s))) == ["10.96.10.10"]
    good(server)


def test_garbage_flood_interleaved_with_good_queries(server: ServerProcess) -> None:
    """2000 garbage datagrams in batches of 20, a good query after each batch: every good
    query is answered, and whatever the garbage gets back is a response with its ID."""
    rng = random.Random(8)
    good_wire = dns.message.make_query("api.shop.svc.cluster.local", "A").to_wire()
    garbage_sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2.0)
        junk.setblocking(False)
        for batch in range(100):
            for _ in range(20):
                kind = rng.randrange(4)
                if kind == 0:
                    payload = rng.randbytes(rng.randrange(0, 64))
                elif kind == 1:  # a valid header in front of random bytes
                    payload = header(ident=rng.randrange(65536)) + rng.randbytes(rng.randrange(40))
                elif kind == 2:  # a good query with one byte changed
                    payload = bytearray(good_wire)
                    payload[rng.randrange(len(payload))] = rng.randrange(256)
                    payload = bytes(payload)
                else:
                    payload = FOUND[rng.choice(list(FOUND))][0]
                junk.sendto(payload, ("127.0.0.1", server.port))
                garbage_sent += 1
            ident = batch
            client.sendto(struct.pack("!H", ident) + good_wire[2:], ("127.0.0.1", server.port))
            while True:  # wait (with the socket's deadline) for this batch's good answer
                reply = dns.message.from_wire(client.recv(65535))
                if reply.id == ident:
                    break
            assert answers(reply) == ["10.96.10.20"], batch
        replies = 0
        while True:
            try:
                reply_bytes = junk.recv(65535)
            except BlockingIOError:
                break
            replies += 1
            assert reply_bytes[2] & 0x80
    assert garbage_sent == 2000 and replies > 0
    good(server)


def test_garbage_and_good_queries_pipelined_on_one_tcp_connection(server: ServerProcess) -> None:
    rng = random.Random(9)
    blob = bytearray()
    good_ids = set()
    for i in range(300):
        if i % 3 == 0:
            wire = dns.message.make_query("web.shop.svc.cluster.local", "A", id=i).to_wire()
            good_ids.add(i)
        else:  # a readable header (so it is answered, FORMERR) in front of junk
            wire = header(ident=i, flags=0x0100, qd=1) + rng.randbytes(rng.randrange(1, 30))
        blob += framed(wire)
    got: dict[int, int] = {}
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(blob)
        for _ in range(300):
            raw = tcp_message(s)
            got[struct.unpack("!H", raw[:2])[0]] = raw[3] & 0xF
    assert set(got) == set(range(300))
    assert all(got[i] == dns.rcode.NOERROR for i in good_ids)


def test_a_response_over_tcp_is_not_answered_and_ends_the_connection(
        server: ServerProcess) -> None:
    msg = dns.message.make_query("web.shop.svc.cluster.local", "A")
    msg.flags |= dns.flags.QR
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
        s.sendall(framed(msg.to_wire()))
        assert s.recv(100) == b""  # closed, nothing sent
    good(server, tcp=True)


def test_a_partial_tcp_message_is_cut_off_by_the_read_timeout(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=IDLE_TIMEOUT + 3) as s:
        started = time.monotonic()
        s.sendall(b"\x00\x40abc")  # promises 64 bytes, sends 3, then nothing
        assert s.recv(100) == b""
        elapsed = time.monotonic() - started
    # Cut by the read timeout, well before the idle timeout would have done it.
    assert READ_TIMEOUT * 0.8 <= elapsed < IDLE_TIMEOUT - 1, elapsed
    good(server, tcp=True)


def trickle_until_closed(server: ServerProcess, seconds: float, step: float) -> float | None:
    """Send a 64-byte message one byte per `step` seconds; when the server closes, return
    how long after the first byte it did; None if it is still open after `seconds`."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
        s.settimeout(step)  # the pace of the trickle, and the wait for the close
        started = time.monotonic()
        s.sendall(b"\x00\x40")
        while time.monotonic() - started < seconds:
            try:
                s.sendall(b"a")
                if s.recv(100) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - started
    return None


def test_a_slow_loris_is_cut_off_by_the_read_timeout(server: ServerProcess) -> None:
    closed_after = trickle_until_closed(server, seconds=READ_TIMEOUT * 3, step=0.3)
    assert closed_after is not None and closed_after < READ_TIMEOUT * 2.5, closed_after


# --- secrets never reach the output -------------------------------------------------------------

TOKEN = "SECRET-7f3c9a1e-token-must-not-leak"


def api_corefile(kubeconfig: Path) -> str:
    return f"""
.:{{PORT}} {{
    bind 127.0.0.1
    errors
    log
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        startup_timeout 2s
    }}
}}
"""


def outage_tour(fake: FakeApiServer, server: ServerProcess) -> None:
    """401s, 500s, a token the API no longer accepts, and the API gone: each long enough for
    the watcher to fail, retry and log; answers keep coming from the last state."""
    def retried(since: int) -> bool:
        return len(fake.request_log) > since + 2

    for status in (401, 403, 500):
        since = len(fake.request_log)
        fake.fail(status)
        fake.drop_watches()  # so the watches come back and meet the failure
        wait_for(lambda since=since: retried(since), timeout=15,
                 what=f"the watcher retrying through {status}")
    fake.fail(None)
    since = len(fake.request_log)
    fake.token = "another-token"  # rotated on the API side: ours now gets 401
    fake.drop_watches()
    wait_for(lambda: retried(since), timeout=15, what="401 retries")
    fake.stop()
    wait_for(lambda: "unreachable" in server.output, timeout=15, what="the outage warning")
    good_answer = query("kubernetes.default.svc.cluster.local", port=server.port)
    assert answers(good_answer) == ["10.96.0.1"]


def test_the_bearer_token_never_appears_in_the_output(tmp_path: Path) -> None:
    fake = FakeApiServer(load_objects(DEMO), token=TOKEN)
    fake.start()
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", token=TOKEN)
    server = ServerProcess(api_corefile(kubeconfig), snapshot=None, args=["--log-level", "debug"],
                           ready_name="kubernetes.default.svc.cluster.local", ready_type="A")
    try:
        server.start()
        # The token did reach the API (else this test would prove nothing)...
        assert any(r.path.startswith("/api") for r in fake.request_log)
        outage_tour(fake, server)
    finally:
        server.stop()
        fake.stop()
    out = server.output
    assert "unreachable" in out  # the outage was logged...
    assert TOKEN not in out and TOKEN[:16] not in out  # ...without the token
    assert base64.b64encode(TOKEN.encode()).decode() not in out


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def test_the_client_key_never_appears_in_the_output(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    p = {n: tmp_path / n for n in ("ca.crt", "ca.key", "srv.crt", "srv.key", "cli.crt",
                                   "cli.key")}
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
             "-keyout", str(p["ca.key"]), "-out", str(p["ca.crt"]))
    for who, cn in (("srv", "127.0.0.1"), ("cli", "dnsserver")):
        csr = tmp_path / f"{who}.csr"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", str(p[f"{who}.key"]), "-out", str(csr))
        ext = tmp_path / f"{who}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n" if who == "srv" else "")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(p["ca.crt"]), "-CAkey",
                 str(p["ca.key"]), "-CAcreateserial", "-days", "2", "-out", str(p[f"{who}.crt"]),
                 "-extfile", str(ext))
    key_pem = p["cli.key"].read_text()
    key_lines = [line for line in key_pem.splitlines() if line and not line.startswith("-----")]
    fake = FakeApiServer(load_objects(DEMO), tls=(str(p["srv.crt"]), str(p["srv.key"])),
                         client_ca=str(p["ca.crt"]))
    fake.start()
    b64 = {n: base64.b64encode(p[n].read_bytes()).decode() for n in ("ca.crt", "cli.crt",
                                                                      "cli.key")}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {fake.url}
    certificate-authority-data: {b64["ca.crt"]}
users:
- name: fake
  user:
    client-certificate-data: {b64["cli.crt"]}
    client-key-data: {b64["cli.key"]}
contexts:
- name: fake
  context: {{cluster: fake, user: fake}}
current-context: fake
""")
    server = ServerProcess(api_corefile(kubeconfig), snapshot=None, args=["--log-level", "debug"],
                           ready_name="kubernetes.default.svc.cluster.local", ready_type="A")
    try:
        server.start()
        assert any(r.path.startswith("/api") for r in fake.request_log)
        outage_tour(fake, server)
    finally:
        server.stop()
        fake.stop()
    # A kubeconfig whose key is damaged: the start-up error must not quote it either.
    broken = tmp_path / "kubeconfig-broken"
    broken.write_text(kubeconfig.read_text().replace(b64["cli.key"], b64["cli.key"][:-40]))
    failing = ServerProcess(api_corefile(broken), snapshot=None, wait=False,
                            args=["--log-level", "debug"])
    try:
        failing.start()
        assert failing.proc is not None
        wait_for(lambda: failing.proc.poll() is not None or "rror" in failing.output,
                 timeout=20, what="the broken kubeconfig to be reported")
    finally:
        failing.stop()
    for out in (server.output, failing.output):
        for line in key_lines[1:-1]:
            assert line not in out
        assert b64["cli.key"][:40] not in out and b64["cli.key"][100:140] not in out
