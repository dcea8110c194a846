"""The fake API server speaks the real protocol: proven with the official `kubernetes` client."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from fake_apiserver import FakeApiServer, label_matcher

TOKEN = "fake-token"


def svc(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"clusterIP": "10.0.0.1"}}


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    server = FakeApiServer([svc(f"s{i}") for i in range(5)], token=TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def core(fake: FakeApiServer, tmp_path: Path) -> client.CoreV1Api:
    cfg = client.Configuration()
    config.load_kube_config(
        str(fake.write_kubeconfig(tmp_path / "kubeconfig")), client_configuration=cfg
    )
    return client.CoreV1Api(client.ApiClient(cfg))


def get(fake: FakeApiServer, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
    req = urllib.request.Request(fake.url + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_official_client_lists_with_paging(core):
    first = core.list_service_for_all_namespaces(limit=2)
    assert [s.metadata.name for s in first.items] == ["s0", "s1"]
    assert first.metadata._continue
    rest = core.list_service_for_all_namespaces(limit=10, _continue=first.metadata._continue)
    assert [s.metadata.name for s in rest.items] == ["s2", "s3", "s4"]
    assert rest.metadata.resource_version == first.metadata.resource_version


def test_official_client_watch_sees_every_event_type(fake, core):
    rv = core.list_service_for_all_namespaces().metadata.resource_version

    def change() -> None:
        assert fake.wait_for(lambda: fake.open_watches > 0)
        fake.upsert(svc("new"))
        fake.upsert({**svc("new"), "spec": {"clusterIP": "10.0.0.2"}})
        fake.delete("Service", "default", "new")

    t = threading.Thread(target=change)
    t.start()
    events = []
    for ev in watch.Watch().stream(
        core.list_service_for_all_namespaces, resource_version=rv, timeout_seconds=5
    ):
        events.append((ev["type"], ev["object"].metadata.name))
        if len(events) == 3:
            break
    t.join()
    assert events == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "new")]


def test_official_client_gets_410_for_compacted_history(fake, core):
    rv = core.list_service_for_all_namespaces().metadata.resource_version
    fake.upsert(svc("later"))
    fake.compact()
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(
            core.list_service_for_all_namespaces, resource_version=rv, timeout_seconds=2
        ):
            pass
    assert err.value.status == 410


def test_token_is_required(fake, core):
    fake.token = "rotated"
    with pytest.raises(ApiException) as err:
        core.list_service_for_all_namespaces()
    assert err.value.status == 401


def test_expired_continue_is_410(fake):
    status, page = get(fake, "/api/v1/services?limit=2")
    assert status == 200
    fake.compact()
    status, body = get(fake, f"/api/v1/services?limit=2&continue={page['metadata']['continue']}")
    assert status == 410 and body["reason"] == "Expired"


def test_list_items_have_no_kind_and_namespaced_paths_scope(fake):
    fake.upsert(svc("x", "other"))
    _, body = get(fake, "/api/v1/namespaces/other/services")
    assert body["kind"] == "ServiceList"
    assert [i["metadata"]["name"] for i in body["items"]] == ["x"]
    assert "kind" not in body["items"][0]


def test_selectors():
    match = label_matcher("app=dns,tier!=db,env in (a,b),!legacy,team")
    assert match({"app": "dns", "env": "a", "team": "x"})
    assert not match({"app": "dns", "env": "c", "team": "x"})
    assert not match({"app": "dns", "env": "a", "team": "x", "legacy": ""})
    assert not match({"app": "dns", "env": "a"})


def test_field_selector_and_label_watch_leaving_selection(fake):
    fake.upsert({"kind": "Pod", "metadata": {"name": "run"}, "status": {"phase": "Running"}})
    fake.upsert({"kind": "Pod", "metadata": {"name": "done"}, "status": {"phase": "Succeeded"}})
    _, body = get(fake, "/api/v1/pods?fieldSelector=status.phase!%3DSucceeded")
    assert [i["metadata"]["name"] for i in body["items"]] == ["run"]
    status, _ = get(fake, "/api/v1/services?labelSelector=%3D%3Dbad")
    assert status == 400
    # A watch with a label selector sees an object that stops matching as DELETED.
    fake.upsert(svc("lab", app="dns"))
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    conn.request(
        "GET",
        f"/api/v1/services?watch=1&labelSelector=app%3Ddns&resourceVersion={fake.resource_version}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    resp = conn.getresponse()
    fake.upsert(svc("lab", app="other"))
    event = json.loads(resp.readline())
    assert (event["type"], event["object"]["metadata"]["name"]) == ("DELETED", "lab")
    conn.close()


def test_watch_honours_timeout_and_fault_injection(fake):
    rv = fake.resource_version
    t0 = time.monotonic()
    req = urllib.request.Request(
        f"{fake.url}/api/v1/services?watch=1&resourceVersion={rv}&timeoutSeconds=1",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.read() == b""
    assert 0.9 <= time.monotonic() - t0 < 3
    fake.fail(503, count=2)
    assert get(fake, "/api/v1/services")[0] == 503
    assert get(fake, "/api/v1/services")[0] == 503
    assert get(fake, "/api/v1/services")[0] == 200
    assert [r.status for r in fake.request_log[-3:]] == [503, 503, 200]


def test_command_line_and_control_endpoints(tmp_path):
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps({"kind": "List", "items": [svc("from-snapshot")]}))
    script = Path(__file__).with_name("fake_apiserver.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--snapshot", str(snap), "--port", "0"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]

        def post(action: str, body: Any) -> Any:
            req = urllib.request.Request(
                f"{url}/_fake/{action}", data=json.dumps(body).encode(), method="POST"
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())

        stored = post("upsert", [svc("pushed")])
        assert stored[0]["metadata"]["resourceVersion"]
        post("delete", {"kind": "Service", "namespace": "default", "name": "from-snapshot"})
        with urllib.request.urlopen(f"{url}/api/v1/services", timeout=5) as resp:
            names = [i["metadata"]["name"] for i in json.loads(resp.read())["items"]]
        assert names == ["pushed"]
    finally:
        proc.terminate()
        proc.wait(timeout=5)
