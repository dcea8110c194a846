"""`dnsserver env`: print the service variables a pod's container would get, for debugging.

Reads Services from a snapshot file or the live API, renders them with `dnsserver.envvars`,
and prints them as shell exports, a dotenv file, JSON, or a container `env:` list in YAML.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections.abc import Callable
from typing import Any, TextIO

import yaml

from dnsserver.envvars import EnvVarsError, for_pod
from dnsserver.snapshot import SnapshotError, load_objects

EXIT_ERROR = 2
# Page size for the live list: big clusters answer in pieces instead of one huge response.
LIST_PAGE = 500
REQUEST_TIMEOUT_S = 30.0

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DOTENV_PLAIN = re.compile(r"[A-Za-z0-9_./:@%+,\[\]-]*\Z")

Pairs = list[tuple[str, str]]


class CliError(Exception):
    """A problem the operator can fix; printed on stderr, exit status 2."""


# --- output formats -------------------------------------------------------------------------


def format_shell(env: Pairs, warn: Callable[[str], None]) -> str:
    """`export NAME='value'` lines that any POSIX shell can `eval` or source safely."""
    lines = []
    for name, value in env:
        if not _SHELL_NAME.match(name):
            # A container may declare names no shell can hold (dots, dashes); say so, don't break.
            warn(f"left out {name!r}: not a valid shell variable name")
            continue
        lines.append(f"export {name}={shlex.quote(value)}")
    return "".join(line + "\n" for line in lines)


def _dotenv_value(value: str) -> str:
    if _DOTENV_PLAIN.match(value):
        return value  # every service value (IPs, ports, URLs) is plain, as `--env-file` wants
    if not any(c in value for c in "'\\\n\r"):
        return f"'{value}'"  # single quotes: no escapes and no ${} interpolation in dotenv
    # Double quotes for the rest; a `${` in such a value may still be interpolated by readers.
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def format_dotenv(env: Pairs, warn: Callable[[str], None]) -> str:
    """`NAME=value` lines, quoted only where a value needs it (the docker compose .env syntax)."""
    lines = []
    for name, value in env:
        if "=" in name or "\n" in name or name.startswith("#"):
            warn(f"left out {name!r}: cannot be written as a dotenv name")
            continue
        lines.append(f"{name}={_dotenv_value(value)}")
    return "".join(line + "\n" for line in lines)


def format_json(env: Pairs, warn: Callable[[str], None]) -> str:
    """One JSON object, names in output order."""
    return json.dumps(dict(env), indent=2) + "\n"


def format_yaml(env: Pairs, warn: Callable[[str], None]) -> str:
    """A container `env:` list to paste into a pod spec.

    Every `$` is written as `$$`: the kubelet expands `$(VAR)` in pasted values, and doubling
    makes it give back exactly the values printed here.
    """
    entries = [{"name": name, "value": value.replace("$", "$$")} for name, value in env]
    return yaml.safe_dump({"env": entries}, sort_keys=False, default_flow_style=False)


FORMATS: dict[str, Callable[[Pairs, Callable[[str], None]], str]] = {
    "shell": format_shell,
    "dotenv": format_dotenv,
    "json": format_json,
    "yaml": format_yaml,
}


# --- reading Services -----------------------------------------------------------------------


def services_from_snapshot(path: str) -> list[dict[str, Any]]:
    try:
        objects = load_objects(path)
    except SnapshotError as exc:
        raise CliError(str(exc)) from None
    return [o for o in objects if o.get("kind") == "Service"]


def services_from_api(kubeconfig: str | None, context: str | None) -> list[dict[str, Any]]:
    """Every Service of the cluster, as plain API dicts (no client model objects)."""
    # Imported here: the client costs ~2 s and ~60 MB, and only this path needs it.
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    try:
        if kubeconfig is not None:
            api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        else:
            config.load_incluster_config()
            api_client = client.ApiClient()
    except ConfigException as exc:
        where = kubeconfig or "in-cluster config (give --snapshot or --kubeconfig)"
        raise CliError(f"{where}: {exc}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"{kubeconfig}: cannot read kubeconfig: {exc}") from None
    api = client.CoreV1Api(api_client)
    services: list[dict[str, Any]] = []
    token: str | None = None
    try:
        while True:
            response = api.list_service_for_all_namespaces(
                limit=LIST_PAGE,
                _continue=token,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
            body = json.loads(response.data)
            items = body.get("items") or []
            services += [{**item, "kind": "Service"} for item in items if isinstance(item, dict)]
            token = (body.get("metadata") or {}).get("continue") or None
            if token is None:
                return services
    except ApiException as exc:
        raise CliError(f"listing Services: API answered {exc.status} {exc.reason}") from None
    except (HTTPError, OSError) as exc:
        raise CliError(f"listing Services: {exc}") from None
    except (ValueError, AttributeError) as exc:
        raise CliError(f"listing Services: unexpected answer from the API: {exc}") from None
    finally:
        api_client.close()


# --- command line ---------------------------------------------------------------------------


def _container_var(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnsserver env",
        description="Print the service environment variables the kubelet gives a container "
        "in NAMESPACE.",
    )
    parser.add_argument("--namespace", "-n", default="default", help="the pod's namespace")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--snapshot", metavar="FILE", help="read Services from a snapshot file "
                        "or folder instead of the API")
    source.add_argument("--kubeconfig", metavar="FILE", help="API credentials; without this "
                        "or --snapshot, the in-cluster service account is used")
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    parser.add_argument("--format", "-o", choices=sorted(FORMATS), default="shell")
    parser.add_argument("--no-service-links", action="store_true",
                        help="as enableServiceLinks: false (only default/kubernetes)")
    parser.add_argument("--env", "-e", metavar="NAME=VALUE", type=_container_var, action="append",
                        default=[], help="a container variable; $(VAR) is expanded as the "
                        "kubelet does (repeatable)")
    return parser


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.context is not None and args.kubeconfig is None:
        raise CliError("--context needs --kubeconfig")
    if args.snapshot is not None:
        services = services_from_snapshot(args.snapshot)
    else:
        services = services_from_api(args.kubeconfig, args.context)
    try:
        env = for_pod(services, args.namespace, not args.no_service_links, args.env)
    except EnvVarsError as exc:
        raise CliError(str(exc)) from None
    out.write(FORMATS[args.format](env, lambda msg: print(f"dnsserver env: {msg}", file=err)))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `dnsserver env` with `argv` (without the program name); returns the exit status."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse has printed usage or help already
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR if exc.code else 0
    try:
        return run(args, sys.stdout, sys.stderr)
    except CliError as exc:
        print(f"dnsserver env: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # `dnsserver env | head`: the reader left; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
