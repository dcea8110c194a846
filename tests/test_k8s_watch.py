"""The watcher against the fake API server: paging, events, bookmarks, 410s, drops, failures."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dnsserver.k8s import ApiOptions, ClusterWatcher
from dnsserver.k8s.watch import POD_FIELD_SELECTOR

from fake_apiserver import FakeApiServer

FAST = {
    "watch_timeout": 30.0,
    "read_timeout_margin": 1.0,
    "request_timeout": 0.5,
    "backoff_base": 0.05,
    "backoff_cap": 0.2,
}


class RecordingSink:
    """Keeps the state the watcher delivers, and every call, under one condition variable."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.state: dict[str, dict[str, dict[str, Any]]] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.synced_kinds: list[str] = []
        # Names of each kind after every call: to prove nothing vanished in between.
        self.history: list[tuple[str, frozenset[str]]] = []

    @staticmethod
    def key(obj: dict[str, Any]) -> str:
        meta = obj.get("metadata") or {}
        return f"{meta.get('namespace', '')}/{meta.get('name')}"

    def replace(self, kind: str, objects: list[dict[str, Any]]) -> None:
        with self.cond:
            self.state[kind] = {self.key(o): o for o in objects}
            self.calls.append(("replace", kind, sorted(self.state[kind])))
            self.history.append((kind, frozenset(self.state[kind])))
            self.cond.notify_all()

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        with self.cond:
            objs = self.state.setdefault(kind, {})
            if event == "DELETED":
                objs.pop(self.key(obj), None)
            else:
                objs[self.key(obj)] = obj
            self.calls.append((event, kind, self.key(obj)))
            self.history.append((kind, frozenset(objs)))
            self.cond.notify_all()

    def synced(self, kind: str) -> None:
        with self.cond:
            self.synced_kinds.append(kind)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"condition not met in {timeout}s; calls: {self.calls}")
                self.cond.wait(left)

    def names(self, kind: str) -> set[str]:
        return set(self.state.get(kind, {}))

    def count(self, method: str, kind: str) -> int:
        return sum(1 for m, k, _ in self.calls if m == method and k == kind)


def svc(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80, "protocol": "TCP"}]},
    }


def ns_obj(name: str, **labels: str) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels}}


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    server = FakeApiServer([svc(f"s{i}") for i in range(7)] + [ns_obj("default")])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def run_watcher(fake: FakeApiServer) -> Iterator[Callable[..., Any]]:
    started: list[ClusterWatcher] = []

    def run(options: ApiOptions | None = None, **kw: Any) -> tuple[ClusterWatcher, RecordingSink]:
        sink = RecordingSink()
        opts = options or ApiOptions(endpoint=fake.url)
        watcher = ClusterWatcher(opts, sink, **{**FAST, **kw})
        watcher.start()
        started.append(watcher)
        sink.wait_for(lambda: len(sink.synced_kinds) == len(watcher.kinds))
        return watcher, sink

    yield run
    for w in started:
        w.stop()


def requests(fake: FakeApiServer, path: str, watch: bool | None = None) -> list[Any]:
    return [
        r
        for r in list(fake.request_log)
        if r.path == path and (watch is None or ("watch" in r.query) == watch)
    ]


def wait_watching(fake: FakeApiServer, n: int = 3) -> None:
    assert fake.wait_for(lambda: fake._open_watches >= n), "watches did not open"


def test_initial_list_is_paged_and_replaces_once(fake, run_watcher):
    watcher, sink = run_watcher(page_size=3)
    assert sink.names("Service") == {f"default/s{i}" for i in range(7)}
    assert sink.count("replace", "Service") == 1
    assert watcher.synced and watcher.stats.api_up
    lists = requests(fake, "/api/v1/services", watch=False)
    assert [r.query.get("limit") for r in lists] == ["3", "3", "3"]
    assert "continue" not in lists[0].query and all("continue" in r.query for r in lists[1:])
    assert "Pod" not in watcher.kinds  # pods only with `pods verified`


def test_events_follow_and_watch_asks_for_bookmarks(fake, run_watcher):
    _, sink = run_watcher()
    fake.upsert(svc("new"))
    fake.upsert({**svc("s1"), "spec": {"clusterIP": "10.0.0.9"}})
    fake.delete("Service", "default", "s2")
    sink.wait_for(lambda: "default/s2" not in sink.names("Service"))
    assert "default/new" in sink.names("Service")
    assert sink.state["Service"]["default/s1"]["spec"]["clusterIP"] == "10.0.0.9"
    assert [c[0] for c in sink.calls if c[1] == "Service"][-3:] == ["ADDED", "MODIFIED", "DELETED"]
    watch = requests(fake, "/api/v1/services", watch=True)[0].query
    assert watch["allowWatchBookmarks"] == "true"
    assert watch["resourceVersion"] == requests(fake, "/api/v1/services")[0].query.get(
        "resourceVersion", watch["resourceVersion"]
    )


def test_bookmark_moves_the_resume_point(fake, run_watcher):
    watcher, _ = run_watcher()
    wait_watching(fake)
    fake.upsert(ns_obj("other"))  # moves the global resourceVersion, not the Service watch's
    fake.bookmark()
    bookmark_rv = str(fake.resource_version)
    service_watch = next(w for w in watcher._workers if w.kind == "Service")
    assert fake.wait_for(lambda: service_watch.rv == bookmark_rv), "bookmark not seen"
    before = len(requests(fake, "/api/v1/services", watch=True))
    fake.drop_watches()
    assert fake.wait_for(
        lambda: len(requests(fake, "/api/v1/services", watch=True)) > before
    ), "watch not renewed"
    resumed = requests(fake, "/api/v1/services", watch=True)[-1].query["resourceVersion"]
    assert resumed == bookmark_rv


def test_compaction_410_relists_and_replaces_in_one_step(fake, run_watcher):
    watcher, sink = run_watcher()
    wait_watching(fake)
    fake.stop()  # the watcher loses the stream; changes happen while it is away
    fake.delete("Service", "default", "s3")
    fake.upsert(svc("while-away"))
    fake.compact()
    fake.start()
    sink.wait_for(lambda: "default/while-away" in sink.names("Service"))
    assert "default/s3" not in sink.names("Service")
    assert sink.count("replace", "Service") == 2
    assert watcher.stats.relists["Service"] == 2
    # Every state the sink passed through still had the names that existed all along.
    assert all("default/s0" in names for kind, names in sink.history if kind == "Service")


def test_error_event_relists(fake, run_watcher):
    _, sink = run_watcher()
    wait_watching(fake)
    fake.watch_error(500)
    sink.wait_for(lambda: sink.count("replace", "Service") == 2)
    assert sink.names("Service") == {f"default/s{i}" for i in range(7)}
    assert sink.synced_kinds.count("Service") == 1  # synced only once


def test_http_410_on_watch_relists(fake, run_watcher):
    watcher, sink = run_watcher()
    wait_watching(fake)
    fake.fail(410, count=1)  # the first re-watch after the drop gets a plain HTTP 410
    fake.drop_watches()
    assert fake.wait_for(lambda: any(r.status == 410 for r in fake.request_log))
    gone = next(r for r in fake.request_log if r.status == 410)
    assert "watch" in gone.query
    kind = {"/api/v1/services": "Service", "/api/v1/namespaces": "Namespace"}.get(
        gone.path, "EndpointSlice"
    )
    sink.wait_for(lambda: sink.count("replace", kind) == 2)
    assert watcher.stats.relists[kind] == 2


def test_expired_continue_token_restarts_the_list(fake, run_watcher):
    compacted: list[bool] = []

    def compact_before_second_page(rec: Any) -> None:
        if rec.path == "/api/v1/services" and "continue" in rec.query and not compacted:
            compacted.append(True)
            fake.compact()

    fake.on_request = compact_before_second_page
    _, sink = run_watcher(page_size=4)
    assert compacted
    lists = [r for r in requests(fake, "/api/v1/services", watch=False)]
    assert [r.status for r in lists] == [200, 410, 200, 200]
    assert sink.count("replace", "Service") == 1
    assert len(sink.names("Service")) == 7


def test_dropped_stream_reconnects_and_resumes_without_relist(fake, run_watcher):
    _, sink = run_watcher()
    wait_watching(fake)
    fake.upsert(svc("before-drop"))
    sink.wait_for(lambda: "default/before-drop" in sink.names("Service"))
    last_rv = sink.state["Service"]["default/before-drop"]["metadata"]["resourceVersion"]
    fake.drop_watches()
    fake.upsert(svc("after-drop"))
    sink.wait_for(lambda: "default/after-drop" in sink.names("Service"))
    assert sink.count("replace", "Service") == 1
    resumed = requests(fake, "/api/v1/services", watch=True)[-1].query["resourceVersion"]
    assert resumed == last_rv


def test_watch_renewed_before_server_timeout(fake, run_watcher):
    watcher, sink = run_watcher(watch_timeout=1.0)
    assert fake.wait_for(lambda: len(requests(fake, "/api/v1/services", watch=True)) >= 3, 6)
    watches = requests(fake, "/api/v1/services", watch=True)
    assert all(1 <= int(r.query["timeoutSeconds"]) <= 2 for r in watches)
    assert sink.count("replace", "Service") == 1
    assert watcher.stats.api_up


def test_500s_back_off_at_a_bounded_rate_and_state_is_kept(fake, run_watcher, caplog):
    caplog.set_level(logging.INFO, logger="dnsserver.kubernetes")
    watcher, sink = run_watcher(backoff_base=0.1, backoff_cap=0.4)
    wait_watching(fake)
    fake.fail(500)
    fake.drop_watches()
    t0 = time.monotonic()
    fake.upsert(svc("during-outage"))
    assert fake.wait_for(lambda: not watcher.stats.api_up)
    window = 1.5
    assert not fake.wait_for(lambda: False, timeout=window)  # let the retries run
    failed = [r for r in fake.request_log if r.status == 500 and r.time >= t0]
    for kind_path in ("/api/v1/services", "/api/v1/namespaces"):
        times = [r.time for r in failed if r.path == kind_path]
        assert len(times) >= 2, "it does retry"
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.1 * 0.7, f"retried faster than the backoff floor: {gaps}"
    # 3 kinds, each at most one request per 0.1 s (fewer as the window widens), plus the first.
    assert len(failed) <= 3 * (window / 0.1 + 2)
    assert len(sink.names("Service")) == 7  # last known state still served
    fake.fail(None)
    sink.wait_for(lambda: "default/during-outage" in sink.names("Service"))
    assert fake.wait_for(lambda: watcher.stats.api_up)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    assert "HTTP 500" in warnings[0].getMessage()
    assert len(infos) == 1


def test_hanging_api_times_out_and_recovers(fake, run_watcher, caplog):
    caplog.set_level(logging.INFO, logger="dnsserver.kubernetes")
    watcher, sink = run_watcher(request_timeout=0.3)
    wait_watching(fake)
    fake.hang(True)
    fake.drop_watches()
    fake.upsert(svc("during-hang"))
    assert fake.wait_for(lambda: not watcher.stats.api_up, 3)
    assert fake.wait_for(lambda: "timed out" in caplog.text, 3)
    fake.hang(False)
    sink.wait_for(lambda: "default/during-hang" in sink.names("Service"))
    assert fake.wait_for(lambda: watcher.stats.api_up)


def test_silent_watch_stream_hits_the_read_timeout(fake, run_watcher):
    watcher, sink = run_watcher(watch_timeout=1.0, read_timeout_margin=0.3)
    wait_watching(fake)
    fake.stall_watches(True)
    fake.upsert(svc("after-stall"))
    before = len(requests(fake, "/api/v1/services", watch=True))
    t0 = time.monotonic()
    # timeoutSeconds is 1 or 2 and the fake ignores it: the client's read timeout must fire.
    assert fake.wait_for(
        lambda: watcher.stats.errors["Service"] >= 1, 4
    ), "read timeout did not fire"
    assert time.monotonic() - t0 < 3.5
    fake.stall_watches(False)
    sink.wait_for(lambda: "default/after-stall" in sink.names("Service"))
    assert len(requests(fake, "/api/v1/services", watch=True)) > before


def test_api_killed_and_restarted_catches_up(fake, run_watcher, caplog):
    caplog.set_level(logging.INFO, logger="dnsserver.kubernetes")
    watcher, sink = run_watcher()
    wait_watching(fake)
    fake.stop()
    assert fake.wait_for(lambda: not watcher.stats.api_up, 3)
    fake.upsert(svc("while-down"))
    fake.delete("Service", "default", "s0")
    assert sink.names("Service") == {f"default/s{i}" for i in range(7)}  # still served
    fake.start()
    sink.wait_for(lambda: "default/while-down" in sink.names("Service"))
    sink.wait_for(lambda: "default/s0" not in sink.names("Service"))
    assert fake.wait_for(lambda: watcher.stats.api_up)
    assert sink.count("replace", "Service") == 1  # resumed from its resourceVersion
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert sum("reachable again" in r.getMessage() for r in caplog.records) == 1


def test_bad_objects_are_delivered_as_is(fake, run_watcher):
    odd = {"kind": "Service", "metadata": {"name": "odd", "namespace": "x"}, "spec": "nonsense"}
    fake.upsert(odd)
    _, sink = run_watcher()
    assert sink.state["Service"]["x/odd"]["spec"] == "nonsense"
    fake.upsert({**odd, "spec": {"clusterIP": 42}})
    sink.wait_for(lambda: sink.state["Service"]["x/odd"]["spec"] == {"clusterIP": 42})


def test_namespaces_option_filters_client_side(fake, run_watcher):
    fake.upsert(svc("a1", "a"))
    fake.upsert(ns_obj("a"))
    _, sink = run_watcher(ApiOptions(endpoint=fake.url, namespaces=("a",)))
    assert sink.names("Service") == {"a/a1"}
    assert sink.names("Namespace") == {"/a"}
    fake.upsert(svc("a2", "a"))
    fake.upsert(svc("b1", "b"))
    sink.wait_for(lambda: "a/a2" in sink.names("Service"))
    fake.upsert(svc("a3", "a"))  # events arrive in order: once a3 is here, b1 was skipped
    sink.wait_for(lambda: "a/a3" in sink.names("Service"))
    assert sink.names("Service") == {"a/a1", "a/a2", "a/a3"}


def test_selectors_are_sent_and_pods_watched_only_when_verified(fake, run_watcher):
    fake.upsert(svc("labelled", app="dns"))
    fake.upsert(ns_obj("team", team="x"))
    for name, phase in (("p1", "Running"), ("p2", "Succeeded")):
        meta = {"name": name, "namespace": "default", "labels": {"app": "dns"}}
        fake.upsert({"kind": "Pod", "metadata": meta, "status": {"phase": phase}})
    opts = ApiOptions(endpoint=fake.url, labels="app=dns", namespace_labels="team", watch_pods=True)
    watcher, sink = run_watcher(opts)
    assert "Pod" in watcher.kinds
    assert sink.names("Service") == {"default/labelled"}
    assert sink.names("Namespace") == {"/team"}
    assert sink.names("Pod") == {"default/p1"}
    pods = requests(fake, "/api/v1/pods")
    assert all(r.query["fieldSelector"] == POD_FIELD_SELECTOR for r in pods)
    assert requests(fake, "/apis/discovery.k8s.io/v1/endpointslices")[0].query[
        "labelSelector"
    ] == "app=dns"
    assert requests(fake, "/api/v1/namespaces")[0].query["labelSelector"] == "team"


def test_unauthorized_is_logged_without_the_token(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="dnsserver.kubernetes")
    server = FakeApiServer([svc("x")], token="right-token")
    server.start()
    try:
        path = server.write_kubeconfig(tmp_path / "kubeconfig", token="wrong-secret-token")
        sink = RecordingSink()
        watcher = ClusterWatcher(ApiOptions(kubeconfig=str(path)), sink, **FAST)
        watcher.start()
        try:
            assert server.wait_for(lambda: not watcher.stats.api_up and any(
                r.status == 401 for r in server.request_log))
            assert server.wait_for(lambda: "unreachable" in caplog.text)
            assert "wrong-secret-token" not in caplog.text
            assert "401" in caplog.text
            assert not sink.synced_kinds
        finally:
            watcher.stop()
    finally:
        server.stop()


def test_stop_is_prompt_with_open_watches(fake, run_watcher):
    watcher, _ = run_watcher(watch_timeout=300.0, read_timeout_margin=30.0)
    wait_watching(fake)
    t0 = time.monotonic()
    watcher.stop()
    assert time.monotonic() - t0 < 1.0
    assert not any(w.thread.is_alive() for w in watcher._workers)
    assert fake.wait_for(lambda: fake._open_watches == 0)
