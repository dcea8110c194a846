"""The command line: version, plugins, bad input with clear messages and exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dnsserver import __version__
from dnsserver.snapshot import load_objects

from helpers import DEMO, ROOT, ServerProcess, answers, free_port, query


def run(*args: str, cwd: Path = ROOT, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dnsserver", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_version_and_plugins() -> None:
    assert run("-version").stdout.strip() == f"dnsserver-{__version__}"
    plugins = run("-plugins").stdout.split()
    for name in ("kubernetes", "forward", "cache", "health", "ready", "prometheus", "errors",
                 "log", "loop", "reload", "loadbalance", "hosts", "file", "rewrite", "template",
                 "autopath", "bind"):
        assert f"dns.{name}" in plugins


def test_a_snapshot_that_cannot_be_parsed_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("items: [unclosed\n")
    result = run("--snapshot", str(bad), "-dns.port", str(free_port()), "--workers", "1")
    assert result.returncode == 2
    assert str(bad) in result.stderr and "cannot parse" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_snapshot_exits_2(tmp_path: Path) -> None:
    result = run("--snapshot", str(tmp_path / "nope.yaml"), "-dns.port", str(free_port()),
                 "--workers", "1")
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_a_bad_corefile_names_file_line_and_directive(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(".:53 {\n    kubernetes cluster.local {\n        ttl 4000\n    }\n}\n")
    result = run("-conf", str(conf))
    assert result.returncode == 1
    assert f"{conf}:3 - Error during parsing: kubernetes: ttl must be in range [0, 3600]: 4000" \
        in result.stderr
    conf.write_text(".:53 {\n    kubernets\n}\n")
    result = run("-conf", str(conf))
    assert result.returncode == 1 and "Unknown directive 'kubernets'" in result.stderr
    conf.write_text(".:53 {\n    dnstap /tmp/x\n}\n")
    result = run("-conf", str(conf))
    assert result.returncode == 1 and "plugin/dnstap: not supported by dnsserver" in result.stderr


def test_invalid_objects_are_skipped_by_name_and_the_rest_served(tmp_path: Path) -> None:
    objs = [*load_objects(DEMO),
            {"kind": "Service", "metadata": {"name": "broken", "namespace": "shop"},
             "spec": {"clusterIP": "10.96.300.1", "ports": [{"port": 80}]}},
            {"kind": "ConfigMap", "metadata": {"name": "ignored", "namespace": "shop"}}]
    snap = tmp_path / "cluster.yaml"
    import yaml

    snap.write_text(yaml.safe_dump_all(objs))  # multi-document YAML
    with ServerProcess(snapshot=snap) as server:
        assert answers(query("web.shop.svc.cluster.local", port=server.port)) == ["10.96.10.10"]
    assert any("shop/broken" in line and "10.96.300.1" in line for line in server.lines)


def test_json_snapshot_and_env_subcommand(tmp_path: Path) -> None:
    snap = tmp_path / "cluster.json"
    snap.write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                "items": load_objects(DEMO)}))
    with ServerProcess(snapshot=snap) as server:
        assert answers(query("api.shop.svc.cluster.local", port=server.port)) == ["10.96.10.20"]
    result = run("env", "--namespace", "shop", "--snapshot", str(snap), "--format", "dotenv")
    assert result.returncode == 0
    assert "WEB_SERVICE_HOST=10.96.10.10" in result.stdout.splitlines()
    assert "KUBERNETES_SERVICE_HOST=10.96.0.1" in result.stdout.splitlines()


def test_the_demo_prints_a_dig_line_that_works(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dnsserver", "-dns.port", str(port)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip().startswith("dig "):
                break
        dig = lines[-1].split()
        assert dig[:4] == ["dig", "@127.0.0.1", "-p", str(port)], lines
        out = subprocess.run([*dig, "+short"], capture_output=True, text=True, timeout=20)
        assert out.stdout.split() == ["10.96.0.1"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_container_demo_corefile_assembles() -> None:
    from dnsserver import corefile
    from dnsserver.assembly import assemble
    from dnsserver.store import ClusterStore

    parsed = corefile.load(ROOT / "zones" / "demo.Corefile")
    assembly = assemble(parsed, ClusterStore())
    assert list(assembly.listeners) == [("", 53)]
    assert assembly.kubernetes and assembly.health == ":8080" and assembly.ready == ":8181"
