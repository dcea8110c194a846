"""How to reach the Kubernetes API: in-cluster service account, `kubeconfig`, or `endpoint`+`tls`.

Turns `ApiOptions` into an `ApiConnection`: a base URL, a TLS context and a source of the current
Authorization header (a rotated service-account token is re-read; expiring kubeconfig exec
credentials are refreshed through the `kubernetes` package's loader, imported only on that path).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .options import ApiOptions

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# client-go re-reads a projected token about once a minute; kubelet rotates it well before expiry.
TOKEN_RELOAD_INTERVAL = 60.0

_BEARER = re.compile(r"(?i)(bearer\s+)\S+")


def redact(text: str) -> str:
    """Text safe to log: any `Bearer <token>` replaced."""
    return _BEARER.sub(r"\1<redacted>", text)


class ApiConfigError(Exception):
    """The API connection cannot be set up from the given options (names the file or setting)."""


class _TokenFile:
    """A bearer token file, re-read at most every `interval` seconds or when told it is stale."""

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self._lock = threading.Lock()
        self._token = self._read()  # fail at startup, with the file named, if it is unreadable
        self._next_read = time.monotonic() + interval

    def _read(self) -> str:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ApiConfigError(f"cannot read service account token {self.path}: {exc}") from None
        if not token:
            raise ApiConfigError(f"service account token {self.path} is empty")
        return token

    def get(self) -> str:
        with self._lock:
            if time.monotonic() >= self._next_read:
                self._next_read = time.monotonic() + self.interval
                # Mid-rotation or briefly missing: keep using the last good token.
                with contextlib.suppress(ApiConfigError):
                    self._token = self._read()
            return self._token

    def stale(self) -> None:
        with self._lock:
            self._next_read = 0.0


class ApiConnection:
    """Where the API is and how to authenticate; opens plain `http.client` connections."""

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        authorization: Callable[[], str | None] | None = None,
        on_unauthorized: Callable[[], None] | None = None,
        describe: str = "",
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ApiConfigError(f"API URL {base_url!r} is not an http(s)://host[:port] URL")
        self.base_url = base_url.rstrip("/")
        self.scheme = url.scheme
        self.host = url.hostname
        try:
            self.port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            raise ApiConfigError(f"API URL {base_url!r} has a bad port") from None
        self.path_prefix = url.path.rstrip("/")  # e.g. a Rancher proxy: https://r/k8s/clusters/c
        if url.scheme == "https" and ssl_context is None:
            ssl_context = ssl.create_default_context()
        self.ssl_context = ssl_context
        self._authorization = authorization or (lambda: None)
        self._on_unauthorized = on_unauthorized or (lambda: None)
        self.describe = describe or self.base_url

    def open(self, timeout: float) -> http.client.HTTPConnection:
        """A new, not yet connected HTTP(S) connection; `timeout` covers connect and each read."""
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.ssl_context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "dnsserver"}
        auth = self._authorization()
        if auth:
            headers["Authorization"] = auth
        return headers

    def unauthorized(self) -> None:
        """The API said 401: make the next request re-read credentials first."""
        self._on_unauthorized()



def in_cluster(
    service_account_dir: str | Path = SERVICE_ACCOUNT_DIR,
    env: Mapping[str, str] | None = None,
    token_reload_interval: float = TOKEN_RELOAD_INTERVAL,
) -> ApiConnection:
    """The API as a pod sees it: KUBERNETES_SERVICE_HOST/PORT, the service account token and CA."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ApiConfigError(
            "not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST and "
            "KUBERNETES_SERVICE_PORT are not set): give `endpoint` or `kubeconfig` in the "
            "kubernetes block"
        )
    sa = Path(service_account_dir)
    token = _TokenFile(sa / "token", token_reload_interval)
    ca = sa / "ca.crt"
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ApiConfigError(f"cannot load the cluster CA {ca}: {exc}") from None
    netloc = f"[{host}]" if ":" in host else host
    return ApiConnection(
        f"https://{netloc}:{port}",
        ssl_context=ctx,
        authorization=lambda: f"Bearer {token.get()}",
        on_unauthorized=token.stale,
        describe=f"https://{netloc}:{port} (in-cluster)",
    )


def from_endpoint(url: str, tls: tuple[str, str, str] | None = None) -> ApiConnection:
    """`endpoint URL` with optional `tls CERT KEY CACERT` (client certificate authentication)."""
    ctx = None
    if tls is not None:
        cert, key, ca = tls
        try:
            ctx = ssl.create_default_context(cafile=ca)
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ApiConfigError(f"tls {cert} {key} {ca}: cannot load: {exc}") from None
    return ApiConnection(url, ssl_context=ctx)


def from_kubeconfig(
    path: str, context: str | None = None, endpoint: str | None = None
) -> ApiConnection:
    """A kubeconfig file and context, read by the `kubernetes` package's loader (exec plugins,
    client certificates, tokens); `endpoint` overrides the server it names, as in CoreDNS."""
    # Imported here: the loader pulls in the whole client (tens of MB); in-cluster never needs it.
    import yaml
    from kubernetes.client import Configuration
    from kubernetes.config import ConfigException
    from kubernetes.config.kube_config import load_kube_config

    cfg = Configuration()
    try:
        load_kube_config(
            config_file=path, context=context, client_configuration=cfg, persist_config=False
        )
    except ConfigException as exc:
        raise ApiConfigError(f"kubeconfig {path}: {redact(str(exc))}") from None
    except (yaml.YAMLError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        msg = redact(f"{type(exc).__name__}: {exc}")
        raise ApiConfigError(f"kubeconfig {path}: cannot load: {msg}") from None
    ctx = _kubeconfig_ssl(cfg, path)
    lock = threading.Lock()

    def authorization() -> str | None:
        # auth_settings() runs the loader's refresh hook, which re-runs an exec plugin or
        # refreshes a token whose expiry has passed, exactly as the client does per request.
        with lock:
            try:
                settings: dict[str, Any] = cfg.auth_settings()
            except Exception as exc:  # an exec plugin can fail in many ways; keep serving
                msg = redact(str(exc))
                raise ConnectionError(f"refreshing kubeconfig credentials failed: {msg}") from None
            bearer = settings.get("BearerToken")
            if bearer and bearer.get("value"):
                return str(bearer["value"])
            basic = cfg.get_basic_auth_token() if cfg.username or cfg.password else None
            return str(basic) if basic else None

    return ApiConnection(
        endpoint or cfg.host,
        ssl_context=ctx,
        authorization=authorization,
        describe=f"{endpoint or cfg.host} (kubeconfig {path})",
    )


def _kubeconfig_ssl(cfg: Any, path: str) -> ssl.SSLContext | None:
    if not str(cfg.host).startswith("https"):
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if not cfg.verify_ssl:  # insecure-skip-tls-verify: the kubeconfig's explicit choice
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ApiConfigError(f"kubeconfig {path}: cannot load TLS material: {exc}") from None
    return ctx


def connect(
    options: ApiOptions,
    *,
    service_account_dir: str | Path = SERVICE_ACCOUNT_DIR,
    env: Mapping[str, str] | None = None,
    token_reload_interval: float = TOKEN_RELOAD_INTERVAL,
) -> ApiConnection:
    """Choose the connection the options describe: kubeconfig, endpoint, or in-cluster."""
    if options.kubeconfig:
        return from_kubeconfig(options.kubeconfig, options.context, options.endpoint)
    if options.endpoint:
        return from_endpoint(options.endpoint, options.tls)
    return in_cluster(service_account_dir, env, token_reload_interval)
