"""Connecting as CoreDNS does: in-cluster (token rotation), endpoint + tls, kubeconfig (exec)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dnsserver.k8s import ApiConfigError, ApiOptions, ClusterWatcher, connect
from dnsserver.k8s.connection import in_cluster

from fake_apiserver import FakeApiServer

FAST = {"request_timeout": 1.0, "backoff_base": 0.05, "backoff_cap": 0.2}


class Sink:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.services: dict[str, dict[str, Any]] = {}
        self.synced_kinds: set[str] = set()

    def replace(self, kind: str, objects: list[dict[str, Any]]) -> None:
        if kind == "Service":
            with self.cond:
                self.services = {o["metadata"]["name"]: o for o in objects}
                self.cond.notify_all()

    def apply(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        if kind == "Service":
            with self.cond:
                if event == "DELETED":
                    self.services.pop(obj["metadata"]["name"], None)
                else:
                    self.services[obj["metadata"]["name"]] = obj
                self.cond.notify_all()

    def synced(self, kind: str) -> None:
        with self.cond:
            self.synced_kinds.add(kind)
            self.cond.notify_all()

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                assert left > 0, f"condition not met; services: {sorted(self.services)}"
                self.cond.wait(left)


def svc(name: str) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": "default"}}


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    p = {n: str(d / n) for n in ("ca.crt", "ca.key", "srv.crt", "srv.key", "cli.crt", "cli.key")}
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=fake-ca",
             "-keyout", p["ca.key"], "-out", p["ca.crt"])
    for who, cn in (("srv", "127.0.0.1"), ("cli", "dnsserver")):
        csr = str(d / f"{who}.csr")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", p[f"{who}.key"], "-out", csr)
        ext = d / f"{who}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n" if who == "srv" else "")
        _openssl("x509", "-req", "-in", csr, "-CA", p["ca.crt"], "-CAkey", p["ca.key"],
                 "-CAcreateserial", "-days", "2", "-out", p[f"{who}.crt"], "-extfile", str(ext))
    return p


@pytest.fixture
def tls_fake(pki: dict[str, str]) -> Iterator[FakeApiServer]:
    server = FakeApiServer([svc("a")], token="token-1", tls=(pki["srv.crt"], pki["srv.key"]))
    server.start()
    yield server
    server.stop()


def _service_account(dir_: Path, token: str, ca: str) -> Path:
    dir_.mkdir(exist_ok=True)
    (dir_ / "token").write_text(token)
    shutil.copy(ca, dir_ / "ca.crt")
    (dir_ / "namespace").write_text("kube-system")
    return dir_


def test_in_cluster_needs_the_service_env(tmp_path):
    with pytest.raises(ApiConfigError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster(tmp_path, env={})


def test_in_cluster_names_a_missing_token_file(tmp_path):
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"}
    with pytest.raises(ApiConfigError, match=str(tmp_path / "token")):
        in_cluster(tmp_path, env=env)


def test_in_cluster_over_tls_rereads_a_rotated_token(tls_fake, pki, tmp_path):
    sa = _service_account(tmp_path / "sa", "token-1", pki["ca.crt"])
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(tls_fake.port)}
    conn = in_cluster(sa, env=env, token_reload_interval=0.2)
    sink = Sink()
    watcher = ClusterWatcher(ApiOptions(), sink, connection=conn, **FAST)
    watcher.start()
    try:
        sink.wait_for(lambda: "a" in sink.services)
        # kubelet rotates the token; the API stops accepting the old one.
        (sa / "token").write_text("token-2")
        tls_fake.token = "token-2"
        tls_fake.drop_watches()
        tls_fake.upsert(svc("after-rotation"))
        sink.wait_for(lambda: "after-rotation" in sink.services)
    finally:
        watcher.stop()


def test_endpoint_with_client_certificate(pki):
    server = FakeApiServer(
        [svc("a")], tls=(pki["srv.crt"], pki["srv.key"]), client_ca=pki["ca.crt"]
    )
    server.start()
    try:
        opts = ApiOptions(endpoint=server.url, tls=(pki["cli.crt"], pki["cli.key"], pki["ca.crt"]))
        sink = Sink()
        watcher = ClusterWatcher(opts, sink, **FAST)
        watcher.start()
        try:
            sink.wait_for(lambda: len(sink.synced_kinds) == 3)
            assert "a" in sink.services
        finally:
            watcher.stop()
    finally:
        server.stop()


def test_endpoint_tls_files_are_named_when_missing(tmp_path):
    missing = str(tmp_path / "nope.crt")
    with pytest.raises(ApiConfigError, match=r"nope\.crt"):
        connect(ApiOptions(endpoint="https://127.0.0.1:1", tls=(missing, missing, missing)))


def test_kubeconfig_with_context_and_token(tmp_path):
    server = FakeApiServer([svc("a")], token="kc-token")
    server.start()
    try:
        path = server.write_kubeconfig(tmp_path / "config")
        sink = Sink()
        watcher = ClusterWatcher(ApiOptions(kubeconfig=str(path), context="fake"), sink, **FAST)
        watcher.start()
        try:
            sink.wait_for(lambda: "a" in sink.services)
        finally:
            watcher.stop()
        with pytest.raises(ApiConfigError, match=str(path)):
            connect(ApiOptions(kubeconfig=str(path), context="no-such-context"))
    finally:
        server.stop()


def test_bad_kubeconfig_is_a_clear_error(tmp_path):
    bad = tmp_path / "config"
    bad.write_text("clusters: [\n")
    with pytest.raises(ApiConfigError, match="kubeconfig"):
        connect(ApiOptions(kubeconfig=str(bad)))
    with pytest.raises(ApiConfigError, match="kubeconfig"):
        connect(ApiOptions(kubeconfig=str(tmp_path / "missing")))


def test_kubeconfig_exec_plugin_token_is_refreshed_when_expired(tmp_path):
    server = FakeApiServer([svc("a")], token="exec-1")
    server.start()
    try:
        token_file = tmp_path / "current-token"
        token_file.write_text("exec-1")
        plugin = tmp_path / "plugin.py"
        # An exec credential plugin whose tokens expire at once: the loader must re-run it.
        plugin.write_text(
            "import json, pathlib, sys\n"
            f"tok = pathlib.Path({str(token_file)!r}).read_text()\n"
            "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',"
            " 'kind': 'ExecCredential', 'status': {'token': tok,"
            " 'expirationTimestamp': '2000-01-01T00:00:00Z'}}))\n"
        )
        kc = json.loads(server.write_kubeconfig(tmp_path / "config").read_text())
        kc["users"][0]["user"] = {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
            "args": [str(plugin)], "interactiveMode": "Never",
        }}
        (tmp_path / "config").write_text(json.dumps(kc))
        sink = Sink()
        watcher = ClusterWatcher(ApiOptions(kubeconfig=str(tmp_path / "config")), sink, **FAST)
        watcher.start()
        try:
            sink.wait_for(lambda: "a" in sink.services, timeout=10)
            token_file.write_text("exec-2")
            server.token = "exec-2"
            server.drop_watches()
            server.upsert(svc("after-refresh"))
            sink.wait_for(lambda: "after-refresh" in sink.services, timeout=10)
        finally:
            watcher.stop()
    finally:
        server.stop()


def test_in_cluster_path_does_not_import_the_kubernetes_client(tmp_path, pki):
    sa = _service_account(tmp_path / "sa", "t", pki["ca.crt"])
    code = (
        "import sys\n"
        "from dnsserver.k8s import ApiOptions, ClusterWatcher\n"
        "class S:\n"
        "    def replace(self, *a): pass\n"
        "    def apply(self, *a): pass\n"
        "    def synced(self, *a): pass\n"
        f"ClusterWatcher(ApiOptions(), S(), service_account_dir={str(sa)!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'urllib3')))\n"
    )
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
