"""`dnsserver env` end to end: snapshot files, a real HTTP API on loopback, a real shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from dnsserver.envvars import expand, for_pod
from dnsserver.envvars_cli import main

MASTER = {
    "kind": "Service",
    "metadata": {"name": "kubernetes", "namespace": "default"},
    "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]},
}
DB = {
    "kind": "Service",
    "metadata": {"name": "db", "namespace": "app"},
    "spec": {"clusterIP": "fd00::7", "clusterIPs": ["fd00::7", "10.96.0.7"],
             "ports": [{"port": 5432}]},
}
CACHE = {
    "kind": "Service",
    "metadata": {"name": "cache", "namespace": "app"},
    "spec": {"clusterIP": "10.96.0.8", "ports": [{"name": "redis", "port": 6379}]},
}
HEADLESS = {
    "kind": "Service",
    "metadata": {"name": "peers", "namespace": "app"},
    "spec": {"clusterIP": "None"},
}
SERVICES = [MASTER, DB, CACHE, HEADLESS]
# Values a shell must take literally: quotes, spaces, command substitution, newlines, globs.
NASTY = "it's \"$(touch /tmp/pwned)\" `id` ; * \\ \n$HOME"


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "app"}}
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                                    "items": [*SERVICES, pod]}))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_matches_the_library(capsys: pytest.CaptureFixture[str], snapshot: Path) -> None:
    code, out, err = run_cli(capsys, "--snapshot", str(snapshot), "-n", "app", "--format", "json")
    assert (code, err) == (0, "")
    assert list(json.loads(out).items()) == for_pod(SERVICES, "app")
    assert json.loads(out)["DB_PORT"] == "tcp://[fd00::7]:5432"


def test_no_service_links(capsys: pytest.CaptureFixture[str], snapshot: Path) -> None:
    code, out, _ = run_cli(capsys, "--snapshot", str(snapshot), "-n", "app", "-o", "json",
                           "--no-service-links")
    assert code == 0
    assert {k.split("_", 1)[0] for k in json.loads(out)} == {"KUBERNETES"}


def test_shell_output_is_safe_to_source(
    capsys: pytest.CaptureFixture[str], snapshot: Path, tmp_path: Path
) -> None:
    code, out, err = run_cli(capsys, "--snapshot", str(snapshot), "-n", "app",
                             "-e", f"NASTY={NASTY}", "-e", "URL=$(DB_PORT)/x",
                             "-e", "bad.name=1")
    assert code == 0
    assert "left out 'bad.name'" in err
    script = tmp_path / "env.sh"
    script.write_text(out)
    marker = tmp_path / "pwned"
    # Source the exports in a real shell and read the variables back NUL-separated.
    shown = subprocess.run(
        ["sh", "-c", '. "$1"; printf "%s\\0" "$NASTY" "$URL" "$CACHE_SERVICE_PORT_REDIS"',
         "sh", str(script)],
        capture_output=True, text=True, check=True, timeout=10, cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(marker)},
    )
    assert shown.stdout.split("\0")[:3] == [NASTY, "tcp://[fd00::7]:5432/x", "6379"]
    assert not marker.exists()


def test_dotenv_output(capsys: pytest.CaptureFixture[str], snapshot: Path) -> None:
    code, out, _ = run_cli(capsys, "--snapshot", str(snapshot), "-n", "app", "-o", "dotenv",
                           "-e", "A=two words", "-e", "B=it's", "-e", "C=a\nb")
    assert code == 0
    lines = out.splitlines()
    assert lines[:3] == ["A='two words'", "B=\"it's\"", 'C="a\\nb"']
    assert "DB_PORT=tcp://[fd00::7]:5432" in lines
    assert "KUBERNETES_SERVICE_PORT_HTTPS=443" in lines
    assert len(lines) == 3 + len(for_pod(SERVICES, "app"))


def test_yaml_is_a_pasteable_env_list(capsys: pytest.CaptureFixture[str], snapshot: Path) -> None:
    code, out, _ = run_cli(capsys, "--snapshot", str(snapshot), "-n", "app", "-o", "yaml",
                           "-e", "LIT=$$(DB_SERVICE_HOST) costs $5")
    assert code == 0
    env = yaml.safe_load(out)["env"]
    assert env[0] == {"name": "LIT", "value": "$$(DB_SERVICE_HOST) costs $$5"}
    assert all(isinstance(e["value"], str) for e in env)  # ports quoted, not YAML integers
    # Pasted into a pod, the kubelet's expansion gives back exactly the printed values.
    pasted = [(e["name"], expand(e["value"], lambda _ref: "WRONG")) for e in env]
    declared = [("LIT", "$$(DB_SERVICE_HOST) costs $5")]
    assert pasted == for_pod(SERVICES, "app", container_env=declared)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--snapshot", "/nonexistent/cluster.yaml"], "/nonexistent/cluster.yaml: cannot read"),
        (["--kubeconfig", "/nonexistent/kubeconfig"], "/nonexistent/kubeconfig"),
        (["--context", "x"], "--context needs --kubeconfig"),
        (["--snapshot", "{bad}", "-n", "app"],
         "Service app/oops: spec.ports[0].port 70000 is outside 1-65535"),
        (["--snapshot", "{bad}", "-n", "app", "-e", "noequals"], "expected NAME=VALUE"),
        (["--snapshot", "x", "--kubeconfig", "y"], "not allowed with argument"),
        (["--format", "toml"], "invalid choice"),
    ],
)
def test_errors_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "List", "items": [
        {"kind": "Service", "metadata": {"name": "oops", "namespace": "app"},
         "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 70000}]}},
    ]}))
    argv = [str(bad) if a == "{bad}" else a for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_not_in_a_cluster(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    code, _, err = run_cli(capsys, "-n", "app")
    assert code == 2
    assert "in-cluster config (give --snapshot or --kubeconfig)" in err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert "--no-service-links" in out


# --- the live API: a real HTTP server on loopback -----------------------------------------


class FakeAPI(ThreadingHTTPServer):
    """Serves GET /api/v1/services in pages of two, records each request's auth and query."""

    daemon_threads = True

    def __init__(self, services: list[dict[str, Any]], status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.services = services
        self.status = status
        self.requests: list[tuple[str, dict[str, list[str]]]] = []


class Handler(BaseHTTPRequestHandler):
    server: FakeAPI

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.server.requests.append((self.headers.get("Authorization", ""), query))
        if url.path != "/api/v1/services" or self.server.status != 200:
            code = self.server.status if self.server.status != 200 else 404
            self._send(code, {"kind": "Status", "code": code, "message": "no"})
            return
        start = int(query.get("continue", ["0"])[0])
        page = self.server.services[start : start + 2]
        more = start + 2 < len(self.server.services)
        self._send(200, {"kind": "ServiceList", "apiVersion": "v1",
                         "metadata": {"continue": str(start + 2)} if more else {},
                         "items": [{k: v for k, v in s.items() if k != "kind"} for s in page]})

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_api(services: list[dict[str, Any]], status: int = 200) -> FakeAPI:
    server = FakeAPI(services, status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    server = start_api(SERVICES)
    yield server
    server.shutdown()
    server.server_close()


def write_kubeconfig(path: Path, servers: dict[str, str]) -> Path:
    """One cluster, user and context per name; each user's token is `tok-<name>`."""
    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": s}} for n, s in servers.items()],
        "users": [{"name": n, "user": {"token": f"tok-{n}"}} for n in servers],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in servers],
        "current-context": next(iter(servers)),
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_live_api_pages_and_context(
    capsys: pytest.CaptureFixture[str], api: FakeAPI, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{api.server_address[1]}"
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"a": url, "b": url})
    code, out, err = run_cli(capsys, "--kubeconfig", str(kubeconfig), "--context", "b",
                             "-n", "app", "-o", "json")
    assert (code, err) == (0, "")
    assert list(json.loads(out).items()) == for_pod(SERVICES, "app")
    # Two pages of two, each with the token of context b.
    assert [auth for auth, _ in api.requests] == ["Bearer tok-b", "Bearer tok-b"]
    assert [q.get("continue") for _, q in api.requests] == [None, ["2"]]
    assert api.requests[0][1]["limit"] == ["500"]


def test_live_api_refusal_is_reported(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    server = start_api(SERVICES, status=403)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"a": url})
        code, out, err = run_cli(capsys, "--kubeconfig", str(kubeconfig))
    finally:
        server.shutdown()
        server.server_close()
    assert (code, out) == (2, "")
    assert "listing Services: API answered 403" in err


def test_live_api_unreachable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # A port that was just free on loopback: connections are refused at once.
    server = FakeAPI([])
    port = server.server_address[1]
    server.server_close()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"a": f"http://127.0.0.1:{port}"})
    code, _, err = run_cli(capsys, "--kubeconfig", str(kubeconfig))
    assert code == 2
    assert "listing Services:" in err
    assert "Traceback" not in err


def test_runs_as_a_module(snapshot: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "dnsserver.envvars_cli", "--snapshot", str(snapshot),
         "-n", "default", "-o", "dotenv"],
        capture_output=True, text=True, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == "KUBERNETES_SERVICE_HOST=10.96.0.1"
    bad = subprocess.run(
        [sys.executable, "-m", "dnsserver.envvars_cli", "--snapshot", "/nonexistent"],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("dnsserver env: error: /nonexistent")
