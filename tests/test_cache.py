"""The cache's pure part and its Corefile stanza: what is cached, for how long, under which key,
lookups with a clock we move by hand, eviction, prefetch popularity, and CoreDNS's errors."""

from __future__ import annotations

import pytest
from dnslib import EDNS0, QTYPE, RR, RRSIG, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

from dnsserver import answer_cache as ac
from dnsserver import corefile
from dnsserver.assembly import assemble
from dnsserver.plugins.cache import effective_capacity, parse_config
from dnsserver.store import ClusterStore

SOA = "example.org. {ttl} IN SOA ns.example.org. host.example.org. 1 7200 1800 86400 {minimum}"


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reply(qname: str = "example.org.", qtype: str = "A", rcode: int = 0, answer: str = "",
          authority: str = "", additional: str = "", tc: bool = False) -> DNSRecord:
    msg = DNSRecord.question(qname, qtype).reply()
    msg.header.rcode = rcode
    msg.header.tc = int(tc)
    for section, text in ((msg.rr, answer), (msg.auth, authority), (msg.ar, additional)):
        section.extend(RR.fromZone(text) if text else [])
    return msg


def a_reply(ttl: int = 300, qname: str = "example.org.") -> DNSRecord:
    return reply(qname, answer=f"{qname} {ttl} IN A 127.0.0.1")


def nx_reply(ttl: int = 300, minimum: int = 300, qname: str = "nope.example.org.") -> DNSRecord:
    return reply(qname, rcode=3, authority=SOA.format(ttl=ttl, minimum=minimum))


def key(name: str = "example.org.", qtype: int = QTYPE.A, do: bool = False,
        cd: bool = False) -> ac.Key:
    return ac.make_key(name, qtype, do, cd)


# -- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(("msg", "kind"), [
    (a_reply(), ac.Kind.NOERROR),
    (reply(authority=SOA.format(ttl=60, minimum=60)), ac.Kind.NODATA),
    (nx_reply(), ac.Kind.NXDOMAIN),
    (reply(rcode=3), ac.Kind.OTHERERROR),  # NXDOMAIN without SOA: never cached
    (reply(rcode=2), ac.Kind.SERVFAIL),
    (reply(rcode=4), ac.Kind.SERVFAIL),  # NOTIMP counts with SERVFAIL, as in CoreDNS
    (reply(rcode=5), ac.Kind.OTHERERROR),
    (reply(authority="example.org. 60 IN NS ns.example.org."), ac.Kind.DELEGATION),
    (reply(), ac.Kind.NOERROR),
    (reply(qtype="AXFR"), ac.Kind.META),
])
def test_classify(msg: DNSRecord, kind: ac.Kind) -> None:
    assert ac.classify(msg, do=False) is kind


def test_classify_opcodes() -> None:
    notify = a_reply()
    notify.header.opcode = 4
    update = a_reply()
    update.header.opcode = 5
    assert ac.classify(notify, False) is ac.Kind.META
    assert ac.classify(update, False) is ac.Kind.UPDATE


def test_an_expired_signature_is_an_error_only_for_dnssec_clients() -> None:
    msg = a_reply()
    sig = RRSIG(QTYPE.A, 13, 2, 300, sig_exp=2000, sig_inc=1000, key_tag=1,
                name="example.org.", sig=b"\x00" * 64)
    msg.rr.append(RR("example.org.", QTYPE.RRSIG, ttl=300, rdata=sig))
    assert ac.classify(msg, do=True, wall_now=1500) is ac.Kind.NOERROR
    assert ac.classify(msg, do=True, wall_now=2001) is ac.Kind.OTHERERROR
    assert ac.classify(msg, do=False, wall_now=2001) is ac.Kind.NOERROR


# -- how long --------------------------------------------------------------------------------


def test_minimal_ttl_is_the_lowest_in_every_section_but_the_opt() -> None:
    msg = reply(answer="example.org. 300 IN A 127.0.0.1\nexample.org. 200 IN A 127.0.0.2",
                authority="example.org. 150 IN NS ns.example.org.",
                additional="ns.example.org. 100 IN A 127.0.0.3")
    assert ac.minimal_ttl(msg, ac.Kind.NOERROR, 3600) == 100
    msg.ar[0].ttl = 900
    msg.ar.append(EDNS0(udp_len=1232))  # its TTL field holds flags, not a time
    assert ac.minimal_ttl(msg, ac.Kind.NOERROR, 3600) == 150
    assert ac.minimal_ttl(msg, ac.Kind.NOERROR, 60) == 60


def test_a_denial_lasts_the_lower_of_soa_ttl_and_soa_minimum() -> None:
    assert ac.minimal_ttl(nx_reply(ttl=900, minimum=60), ac.Kind.NXDOMAIN, 1800) == 60
    assert ac.minimal_ttl(nx_reply(ttl=40, minimum=600), ac.Kind.NXDOMAIN, 1800) == 40


def test_a_message_without_records_and_other_kinds_get_five_seconds() -> None:
    assert ac.minimal_ttl(reply(), ac.Kind.NOERROR, 3600) == 5
    assert ac.minimal_ttl(reply(rcode=2), ac.Kind.SERVFAIL, 3600) == 5
    deleg = reply(authority="example.org. 600 IN NS ns.example.org.")
    assert ac.minimal_ttl(deleg, ac.Kind.DELEGATION, 3600) == 5


@pytest.mark.parametrize(("settings", "msg", "expected"), [
    (ac.CacheSettings(), a_reply(300), 300),
    (ac.CacheSettings(), a_reply(86400), 3600),  # capped at 1 h
    (ac.CacheSettings(), a_reply(0), 5),  # raised to the 5 s minimum
    (ac.CacheSettings(), nx_reply(86400, 86400), 1800),  # denials capped at 30 min
    (ac.CacheSettings(success_max_ttl=30, denial_max_ttl=30), a_reply(300), 30),
    (ac.CacheSettings(success_min_ttl=60), a_reply(10), 60),
    (ac.CacheSettings(success_min_ttl=60, success_max_ttl=30), a_reply(10), 30),  # max wins
    (ac.CacheSettings(success_min_ttl=0), a_reply(0), 0),  # TTL 0 then: not cached
    (ac.CacheSettings(servfail_ttl=7.0), reply(rcode=2), 7.0),
    (ac.CacheSettings(denial_min_ttl=100), nx_reply(30, 30), 100),
])
def test_duration(settings: ac.CacheSettings, msg: DNSRecord, expected: float) -> None:
    assert settings.duration(msg, ac.classify(msg, False)) == expected


@given(ttls=st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=5),
       min_ttl=st.integers(0, 7200), max_ttl=st.integers(1, 7200))
def test_success_duration_stays_within_the_bounds(ttls: list[int], min_ttl: int,
                                                  max_ttl: int) -> None:
    msg = reply(answer="\n".join(f"example.org. {t} IN A 127.0.0.1" for t in ttls))
    settings = ac.CacheSettings(success_min_ttl=min_ttl, success_max_ttl=max_ttl)
    duration = settings.duration(msg, ac.Kind.NOERROR)
    assert duration <= max_ttl
    assert duration == max_ttl or duration >= min_ttl
    assert duration in (max_ttl, min_ttl, min(ttls))


# -- the stores ------------------------------------------------------------------------------


def store(cache: ac.AnswerCache, k: ac.Key, msg: DNSRecord, now: float) -> ac.Entry | None:
    kind = ac.classify(msg, False)
    return cache.store(k, msg, kind, cache.settings.duration(msg, kind), now)


def test_ttl_counts_down_and_the_entry_expires() -> None:
    clock = Clock()
    cache = ac.AnswerCache(ac.CacheSettings(), clock)
    start = clock.now
    store(cache, key(), a_reply(30), start)
    for elapsed, left in ((0, 30), (0.99, 30), (1.0, 29), (29.5, 1)):
        clock.now = start + elapsed
        entry = cache.lookup(key(), clock.now)
        assert entry is not None and entry.ttl(clock.now) == left
    clock.now = start + 30
    assert cache.lookup(key(), clock.now) is None
    assert (cache.requests, cache.hits_success, cache.misses) == (5, 4, 1)


def test_stored_records_all_carry_the_capped_ttl_and_no_opt() -> None:
    clock = Clock()
    cache = ac.AnswerCache(ac.CacheSettings(success_max_ttl=60), clock)
    msg = reply(answer="example.org. 300 IN A 127.0.0.1\nexample.org. 90 IN A 127.0.0.2",
                additional="ns.example.org. 500 IN A 127.0.0.3")
    msg.ar.append(EDNS0(udp_len=1232))
    entry = store(cache, key(), msg, clock.now)
    assert entry is not None and entry.orig_ttl == 60
    assert {rr.ttl for rr in (*entry.answer, *entry.additional)} == {60}
    assert [rr.rtype for rr in entry.additional] == [QTYPE.A]
    assert msg.rr[0].ttl == 300  # the message it came from is left alone


def test_key_is_the_lower_case_name_type_do_and_cd() -> None:
    clock = Clock()
    cache = ac.AnswerCache(ac.CacheSettings(), clock)
    store(cache, key("example.org."), a_reply(), clock.now)
    assert cache.lookup(ac.make_key("Example.ORG.".lower(), QTYPE.A, False, False), 1000)
    assert cache.lookup(key(qtype=QTYPE.AAAA), 1000) is None
    assert cache.lookup(key(do=True), 1000) is None
    assert cache.lookup(key(cd=True), 1000) is None


def test_denials_go_to_the_denial_store_and_are_found_first() -> None:
    clock = Clock()
    cache = ac.AnswerCache(ac.CacheSettings(), clock)
    k = key("nope.example.org.")
    assert store(cache, k, nx_reply(60, 60), clock.now) is not None
    assert cache.entries(ac.DENIAL) == 1 and cache.entries(ac.SUCCESS) == 0
    entry = cache.lookup(k, clock.now + 1)
    assert entry is not None and entry.rcode == 3 and cache.hits_denial == 1


def test_a_new_answer_replaces_a_denial_and_the_other_way_round() -> None:
    clock = Clock()
    cache = ac.AnswerCache(ac.CacheSettings(), clock)
    k = key("flip.example.org.")
    store(cache, k, nx_reply(60, 60, "flip.example.org."), clock.now)
    store(cache, k, a_reply(60, "flip.example.org."), clock.now)
    entry = cache.lookup(k, clock.now)
    assert entry is not None and entry.rcode == 0
    store(cache, k, nx_reply(60, 60, "flip.example.org."), clock.now)
    entry = cache.lookup(k, clock.now)
    assert entry is not None and entry.rcode == 3
    assert cache.entries(ac.SUCCESS) == 0


def test_a_cached_servfail_does_not_hide_a_good_answer() -> None:
    clock = Clock()
    cache = ac.AnswerCache(ac.CacheSettings(stale_up_to=3600), clock)
    store(cache, key(), a_reply(10), clock.now)
    clock.now += 20  # the answer is stale now, and its refresh failed
    store(cache, key(), reply(rcode=2), clock.now)
    entry = cache.lookup(key(), clock.now)
    assert entry is not None and entry.rcode == 0
    assert cache.hits_success == 1 and cache.hits_denial == 0


def test_servfail_is_kept_for_the_servfail_duration() -> None:
    clock = Clock()
    cache = ac.AnswerCache(ac.CacheSettings(), clock)
    store(cache, key(), reply(rcode=2), clock.now)
    clock.now += 4.9
    entry = cache.lookup(key(), clock.now)
    assert entry is not None and entry.rcode == 2 and cache.hits_denial == 1
    clock.now += 0.1
    assert cache.lookup(key(), clock.now) is None  # 5 s by default


def test_nothing_is_kept_for_zero_seconds_or_uncacheable_kinds() -> None:
    clock = Clock()
    cache = ac.AnswerCache(ac.CacheSettings(success_min_ttl=0, servfail_ttl=0), clock)
    assert store(cache, key(), a_reply(0), clock.now) is None
    assert store(cache, key(), reply(rcode=2), clock.now) is None
    assert store(cache, key(), reply(rcode=5), clock.now) is None
    assert store(cache, key(), reply(rcode=3), clock.now) is None


def test_disabled_zones_are_not_cached() -> None:
    clock = Clock()
    settings = ac.CacheSettings(success_disabled=("cluster.local.",),
                                denial_disabled=("svc.cluster.local.",))
    cache = ac.AnswerCache(settings, clock)
    name = "a.default.svc.cluster.local."
    assert store(cache, key(name), a_reply(30, name), clock.now) is None
    assert store(cache, key(name), reply(name, rcode=2), clock.now) is None  # denial covers it
    assert store(cache, key("example.org."), a_reply(), clock.now) is not None
    other = "x.pod.cluster.local."
    assert store(cache, key(other), nx_reply(30, 30, other), clock.now) is not None


def test_serve_stale_window() -> None:
    clock = Clock()
    cache = ac.AnswerCache(ac.CacheSettings(stale_up_to=60), clock)
    store(cache, key(), a_reply(10), clock.now)
    clock.now += 69
    entry = cache.lookup(key(), clock.now)
    assert entry is not None and entry.ttl(clock.now) == -59
    clock.now += 1
    assert cache.lookup(key(), clock.now) is None
    assert cache.entries(ac.SUCCESS) == 0  # gone from memory too, not just hidden


def test_capacity_evicts_the_least_recently_used_and_counts_it() -> None:
    clock = Clock()
    cache = ac.AnswerCache(ac.CacheSettings(success_capacity=3), clock)
    names = [f"n{i}.example.org." for i in range(4)]
    for name in names[:3]:
        store(cache, key(name), a_reply(60, name), clock.now)
    assert cache.lookup(key(names[0]), clock.now) is not None  # n0 is now the most recent
    store(cache, key(names[3]), a_reply(60, names[3]), clock.now)
    assert cache.lookup(key(names[1]), clock.now) is None
    assert cache.lookup(key(names[0]), clock.now) is not None
    assert cache.evictions_success == 1 and cache.evictions_denial == 0
    assert cache.entries(ac.SUCCESS) == 3


def test_expired_entries_make_room_without_counting_as_evictions() -> None:
    clock = Clock()
    cache = ac.AnswerCache(ac.CacheSettings(success_capacity=2), clock)
    store(cache, key("a.example.org."), a_reply(10, "a.example.org."), clock.now)
    store(cache, key("b.example.org."), a_reply(10, "b.example.org."), clock.now)
    clock.now += 11
    store(cache, key("c.example.org."), a_reply(10, "c.example.org."), clock.now)
    assert cache.evictions_success == 0 and cache.entries(ac.SUCCESS) == 1


def test_prefetch_threshold_and_gap() -> None:
    clock = Clock()
    settings = ac.CacheSettings(prefetch_amount=2, prefetch_window=10, prefetch_percentage=20)
    cache = ac.AnswerCache(settings, clock)
    entry = store(cache, key(), a_reply(100), clock.now)
    assert entry is not None
    t = clock.now
    assert not cache.should_prefetch(entry, t + 70)  # 1 hit
    assert not cache.should_prefetch(entry, t + 79)  # 2 hits, 21 s left > 20
    assert cache.should_prefetch(entry, t + 80)  # 3 hits, 20 s left
    assert not cache.should_prefetch(entry, t + 91)  # an 11 s gap: popularity starts over
    assert entry.hits == 1


def test_prefetch_off_counts_nothing() -> None:
    cache = ac.AnswerCache(ac.CacheSettings(), Clock())
    entry = store(cache, key(), a_reply(10), 1000.0)
    assert entry is not None
    assert not cache.should_prefetch(entry, 1009.5)
    assert entry.hits == 0


# -- the Corefile stanza ---------------------------------------------------------------------


def directive(text: str) -> corefile.Directive:
    parsed = corefile.parse(".:53 {\n" + text + "\n}\n")
    found = parsed.blocks[0].directive("cache")
    assert found is not None
    return found


ZONES = (".",)


@pytest.mark.parametrize(("text", "zones", "expected"), [
    ("cache", ZONES, ac.CacheSettings()),
    ("cache 30", ZONES, ac.CacheSettings(success_max_ttl=30, denial_max_ttl=30)),
    ("cache example.org Example.NET.", ("example.org.", "example.net."), ac.CacheSettings()),
    ("cache 10 127.0.0.0/8", ("127.in-addr.arpa.",),
     ac.CacheSettings(success_max_ttl=10, denial_max_ttl=10)),
    ("cache 30 {\n disable success cluster.local\n disable denial cluster.local\n}", ZONES,
     ac.CacheSettings(success_max_ttl=30, denial_max_ttl=30,
                      success_disabled=("cluster.local.",), denial_disabled=("cluster.local.",))),
    ("cache {\n disable denial\n}", ZONES, ac.CacheSettings(denial_disabled=(".",))),
    ("cache {\n success 5000 300 10\n denial 2500 60\n}", ZONES,
     ac.CacheSettings(success_capacity=4864, success_max_ttl=300, success_min_ttl=10,
                      denial_capacity=2304, denial_max_ttl=60)),
    ("cache {\n prefetch 10\n}", ZONES, ac.CacheSettings(prefetch_amount=10)),
    ("cache {\n prefetch 2 5m 50%\n}", ZONES,
     ac.CacheSettings(prefetch_amount=2, prefetch_window=300, prefetch_percentage=50)),
    ("cache {\n serve_stale\n}", ZONES, ac.CacheSettings(stale_up_to=3600)),
    ("cache {\n serve_stale 90s VERIFY\n}", ZONES,
     ac.CacheSettings(stale_up_to=90, verify_stale=True)),
    ("cache {\n servfail 0\n keepttl\n}", ZONES, ac.CacheSettings(servfail_ttl=0, keepttl=True)),
    ("cache {\n servfail 1m30s\n}", ZONES, ac.CacheSettings(servfail_ttl=90)),
])
def test_parse(text: str, zones: tuple[str, ...], expected: ac.CacheSettings) -> None:
    assert parse_config(directive(text), ZONES) == (zones, expected)


@pytest.mark.parametrize(("text", "message"), [
    ("cache 0", "cache TTL can not be zero or negative: 0"),
    ("cache -5", "cache TTL can not be zero or negative: -5"),
    ("cache {\n success\n}", "Wrong argument count or unexpected line ending after 'success'"),
    ("cache {\n success many\n}", 'strconv.Atoi: parsing "many": invalid syntax'),
    ("cache {\n denial 10 0\n}", "cache TTL can not be zero or negative: 0"),
    ("cache {\n success 10 10 -1\n}", "cache min TTL can not be negative: -1"),
    ("cache {\n prefetch\n}", "Wrong argument count or unexpected line ending after 'prefetch'"),
    ("cache {\n prefetch 1 1m 10% x\n}",
     "Wrong argument count or unexpected line ending after 'x'"),
    ("cache {\n prefetch -1\n}", "prefetch amount should be positive: -1"),
    ("cache {\n prefetch 1 soon\n}", 'time: invalid duration "soon"'),
    ("cache {\n prefetch 1 10\n}", 'time: missing unit in duration "10"'),
    ("cache {\n prefetch 1 10d\n}", 'time: unknown unit "d" in duration "10d"'),
    ("cache {\n prefetch 1 1m 50\n}",
     "last character of percentage should be `%`, but is: '0'"),
    ("cache {\n prefetch 1 1m 95%\n}", "percentage should fall in range [10, 90]: 95"),
    ("cache {\n serve_stale -1s\n}", "invalid negative duration for serve_stale"),
    ("cache {\n serve_stale 1h later\n}", "invalid value for serve_stale refresh mode: later"),
    ("cache {\n serve_stale 1h verify x\n}",
     "Wrong argument count or unexpected line ending after 'x'"),
    ("cache {\n servfail\n}", "Wrong argument count or unexpected line ending after 'servfail'"),
    ("cache {\n servfail 6m\n}", "caching SERVFAIL responses over 5 minutes is not permitted"),
    ("cache {\n servfail -1s\n}", "invalid negative ttl for servfail"),
    ("cache {\n disable\n}", "Wrong argument count or unexpected line ending after 'disable'"),
    ("cache {\n disable positive\n}", 'cache type for disable must be "success" or "denial"'),
    ("cache {\n keepttl please\n}",
     "Wrong argument count or unexpected line ending after 'please'"),
    ("cache {\n expire 10\n}", "Wrong argument count or unexpected line ending after 'expire'"),
])
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    d = directive(text)
    with pytest.raises(corefile.CorefileError) as err:
        parse_config(d, ZONES)
    line = 2 if "\n" not in text else 3
    assert str(err.value) == f"Corefile:{line} - Error during parsing: cache: {message}"


def test_cache_only_once_per_server_block() -> None:
    parsed = corefile.parse(".:53 {\n cache 10\n cache 20\n}\n")
    with pytest.raises(corefile.CorefileError) as err:
        assemble(parsed, ClusterStore())
    assert str(err.value) == ("Corefile:3 - Error during parsing: cache: this plugin can only "
                              "be used once per Server Block")


@pytest.mark.parametrize(("asked", "held"), [
    (9984, 9984), (5000, 4864), (1, 1024), (0, 1024), (-3, 1024), (1024, 1024), (100000, 99840),
])
def test_capacity_is_what_coredns_shards_would_hold(asked: int, held: int) -> None:
    assert effective_capacity(asked) == held
