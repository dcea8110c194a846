"""A fake Kubernetes API server on 127.0.0.1 that speaks the real list/watch protocol over HTTP/1.1.

It serves Services, EndpointSlices (discovery.k8s.io/v1), Namespaces and Pods as plain JSON:
paged lists (`limit`, `continue`, 410 on an expired continue token), label and field selectors,
chunked watch streams (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR) that honour `timeoutSeconds`
and answer a resourceVersion older than the last compaction with an ERROR 410 event, as the real
API server does. Faults on demand: compaction, dropped watch connections, HTTP errors for the
next N requests, hanging requests, stop and restart on the same port, a required bearer token.

Python API (tests): `FakeApiServer(objects=None, token=None)`, `.start() -> url`, `.stop()`,
`.upsert(obj)`, `.delete(kind, namespace, name)`, `.compact()`, `.drop_watches()`,
`.watch_error(code=410)`, `.bookmark()`, `.fail(status=500, count=None)` (status None clears),
`.hang(True/False)`, `.stall_watches(True/False)`, `.token` (assign to rotate), `.request_log`,
`.on_request` (a hook run before each API request), `.wait_for(pred)`, `.write_kubeconfig(path)`.

Command line (benchmarks): `python tests/fake_apiserver.py --snapshot FILE --port N [--token T]`
prints `listening on URL` once ready. Control endpoints, exempt from token, faults and the log:
  POST /_fake/upsert        body: one object or a JSON list of objects -> the stored objects
  POST /_fake/delete        body: {"kind": ..., "namespace": ..., "name": ...}
  POST /_fake/compact, /_fake/drop_watches, /_fake/bookmark   (no body)
  POST /_fake/fail          body: {"status": 500, "count": null}  (status null clears)
  POST /_fake/hang          body: {"hang": true}
  GET  /_fake/stats         -> {"resourceVersion": N, "objects": N, "requests": N, "watches": N}
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import copy
import json
import socket
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Resource:
    kind: str
    prefix: tuple[str, ...]  # path segments before the resource: ("api", "v1")
    plural: str
    namespaced: bool
    api_version: str


RESOURCES: dict[str, Resource] = {
    r.kind: r
    for r in (
        Resource("Service", ("api", "v1"), "services", True, "v1"),
        Resource("Pod", ("api", "v1"), "pods", True, "v1"),
        Resource("Namespace", ("api", "v1"), "namespaces", False, "v1"),
        Resource(
            "EndpointSlice",
            ("apis", "discovery.k8s.io", "v1"),
            "endpointslices",
            True,
            "discovery.k8s.io/v1",
        ),
    )
}
_BY_PATH = {(r.prefix, r.plural): r for r in RESOURCES.values()}


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    time: float  # time.monotonic() when the request line was read
    status: int | None = None  # the HTTP status answered, None for a hang or a watch stream


@dataclass
class _Event:
    rv: int
    type: str
    kind: str
    old: dict[str, Any] | None
    new: dict[str, Any]


class SelectorError(ValueError):
    pass


# --- selectors -------------------------------------------------------------------------------


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses (`a in (x,y),b`)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _parse_terms(selector: str | None, labels: bool) -> list[tuple[str, str, frozenset[str]]]:
    """Parse a selector into (op, key, values) terms; ops: in, notin, exists, absent."""
    terms: list[tuple[str, str, frozenset[str]]] = []
    for term in _split_top(selector or ""):
        words = term.split(None, 1)
        set_op = words[1].split("(", 1)[0].strip() if len(words) == 2 else ""
        if labels and set_op in ("in", "notin"):
            rest = words[1].split("(", 1)[1] if "(" in words[1] else ""
            if not rest.endswith(")"):
                raise SelectorError(f"bad set term {term!r}")
            terms.append((set_op, words[0], frozenset(v.strip() for v in rest[:-1].split(","))))
        elif "!=" in term:
            k, v = term.split("!=", 1)
            terms.append(("notin", k.strip(), frozenset([v.strip()])))
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            terms.append(("in", k.strip(), frozenset([v.strip()])))
        elif labels and term.startswith("!"):
            terms.append(("absent", term[1:].strip(), frozenset()))
        elif labels and all(c.isalnum() or c in "-_./" for c in term):
            terms.append(("exists", term, frozenset()))
        else:
            raise SelectorError(f"bad {'label' if labels else 'field'} selector term {term!r}")
        if not terms[-1][1]:
            raise SelectorError(f"selector term {term!r} has no key")
    return terms


def _matches(
    terms: list[tuple[str, str, frozenset[str]]], get: Callable[[str], str | None]
) -> bool:
    for op, key, values in terms:
        value = get(key)
        if op == "in" and value not in values:
            return False
        if op == "notin" and value in values:
            return False
        if op == "exists" and value is None:
            return False
        if op == "absent" and value is not None:
            return False
    return True


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """Compile a label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (..)`, `k notin (..)`."""
    terms = _parse_terms(selector, labels=True)
    return lambda labels: _matches(terms, labels.get)


def _field(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def field_matcher(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    """Compile a field selector: comma-separated `path=v`, `path==v`, `path!=v`."""
    terms = _parse_terms(selector, labels=False)
    return lambda obj: _matches(terms, lambda path: _field(obj, path))


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    410: "Expired",
    500: "InternalError",
    503: "ServiceUnavailable",
    429: "TooManyRequests",
}


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def _key(kind: str, obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or ("default" if RESOURCES[kind].namespaced else "")
    return (kind, ns if RESOURCES[kind].namespaced else "", meta.get("name") or "")


def _for_list(obj: dict[str, Any]) -> dict[str, Any]:
    # Items of a list response carry no kind/apiVersion on the real API server.
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeApiServer

    def __init__(self, fake: FakeApiServer, port: int, ssl_ctx: ssl.SSLContext | None) -> None:
        self.fake = fake
        self._ssl_ctx = ssl_ctx
        super().__init__(("127.0.0.1", port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self._ssl_ctx is not None:
            # Handshake in the handler thread so a slow client cannot stall the accept loop.
            sock = self._ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr


class FakeApiServer:
    """A controllable in-process Kubernetes API server for list/watch tests."""

    def __init__(
        self,
        objects: list[dict[str, Any]] | None = None,
        token: str | None = None,
        *,
        bookmark_interval: float | None = None,
        max_watch_seconds: float = 1800.0,
        tls: tuple[str, str] | None = None,
        client_ca: str | None = None,
    ) -> None:
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.max_watch_seconds = max_watch_seconds
        self.request_log: list[RequestRecord] = []
        self.port = 0
        self._tls = tls
        self._client_ca = client_ca
        self._cond = threading.Condition()
        self._rv = 1000
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._history: list[_Event] = []
        self._history_rvs: list[int] = []  # parallel to _history, for bisect
        self._compacted_rv = 0
        self._continues: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._fail_status: int | None = None
        self._fail_count: int | None = None
        self._hang = False
        self._stalled = False
        # Called with each API RequestRecord (status None) before it is answered, off the lock:
        # lets a test act at an exact point of a protocol exchange (e.g. between list pages).
        self.on_request: Callable[[RequestRecord], None] | None = None
        self._drop_gen = 0
        self._bookmark_gen = 0
        self._error_gen = 0
        self._error_code = 410
        self._stop_gen = 0
        self._sockets: set[socket.socket] = set()
        self._open_watches = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for obj in objects or ():
            self.upsert(obj)

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> str:
        """Listen (again, on the same port after a stop) and serve in a thread; return the URL."""
        ctx = None
        if self._tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self._tls)
            if self._client_ca:
                ctx.load_verify_locations(self._client_ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
        self._server = _Server(self, self.port, ctx)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop listening and cut every open connection, as a killed API server would."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._cond:
            self._stop_gen += 1
            socks = list(self._sockets)
            self._cond.notify_all()
        for s in socks:
            _shutdown(s)
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- data --------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def objects(self, kind: str) -> list[dict[str, Any]]:
        with self._cond:
            return [copy.deepcopy(o) for k, o in sorted(self._objects.items()) if k[0] == kind]

    def upsert(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (its `kind` says which); return the stored copy."""
        kind = obj.get("kind")
        if kind not in RESOURCES:
            raise ValueError(f"unsupported kind {kind!r} (want one of {sorted(RESOURCES)})")
        new = copy.deepcopy(obj)
        new.setdefault("apiVersion", RESOURCES[kind].api_version)
        meta = new.setdefault("metadata", {})
        if not meta.get("name"):
            raise ValueError(f"{kind} without metadata.name")
        if RESOURCES[kind].namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        with self._cond:
            key = _key(kind, new)
            old = self._objects.get(key)
            meta.setdefault("uid", (old or {}).get("metadata", {}).get("uid") or str(uuid.uuid4()))
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            self._objects[key] = new
            self._history.append(_Event(self._rv, "MODIFIED" if old else "ADDED", kind, old, new))
            self._history_rvs.append(self._rv)
            self._cond.notify_all()
            return copy.deepcopy(new)

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Delete an object; False if there was none."""
        with self._cond:
            key = (kind, (namespace or "") if RESOURCES[kind].namespaced else "", name)
            old = self._objects.pop(key, None)
            if old is None:
                return False
            self._rv += 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._history.append(_Event(self._rv, "DELETED", kind, old, gone))
            self._history_rvs.append(self._rv)
            self._cond.notify_all()
            return True

    # --- faults ------------------------------------------------------------------------------

    def compact(self) -> None:
        """Forget the event history: watches from an older resourceVersion and continue
        tokens issued before now get 410 Gone."""
        with self._cond:
            self._compacted_rv = self._rv
            self._history.clear()
            self._history_rvs.clear()
            self._continues.clear()

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream (no final chunk)."""
        with self._cond:
            self._drop_gen += 1
            self._cond.notify_all()

    def watch_error(self, code: int = 410) -> None:
        """Send an ERROR event with this Status code on every open watch, then end it."""
        with self._cond:
            self._error_gen += 1
            self._error_code = code
            self._cond.notify_all()

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resourceVersion on every open watch that asked."""
        with self._cond:
            self._bookmark_gen += 1
            self._cond.notify_all()

    def fail(self, status: int | None = 500, count: int | None = None) -> None:
        """Answer the next `count` API requests (all, if None) with `status`; None clears."""
        with self._cond:
            self._fail_status = status
            self._fail_count = count if status is not None else None

    def hang(self, on: bool = True) -> None:
        """Accept requests and never answer them; turning it off closes the hung ones."""
        with self._cond:
            self._hang = on
            self._cond.notify_all()

    def stall_watches(self, on: bool = True) -> None:
        """Watch streams, open and new, go silent and ignore timeoutSeconds (a half-dead link)."""
        with self._cond:
            self._stalled = on
            self._cond.notify_all()

    @property
    def open_watches(self) -> int:
        with self._cond:
            return self._open_watches

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until predicate() (evaluated under the server lock on every change) is true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def write_kubeconfig(self, path: str | Path, token: str | None = None) -> Path:
        """Write a kubeconfig whose current context points at this server."""
        token = token if token is not None else self.token
        user: dict[str, Any] = {"token": token} if token else {}
        cluster: dict[str, Any] = {"server": self.url}
        if self._tls:
            cluster["insecure-skip-tls-verify"] = True
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        p = Path(path)
        p.write_text(json.dumps(doc, indent=2), encoding="utf-8")  # JSON is valid YAML
        return p

    # --- used by the handler -----------------------------------------------------------------

    def _track(self, sock: socket.socket, on: bool) -> None:
        with self._cond:
            (self._sockets.add if on else self._sockets.discard)(sock)

    def _log(self, rec: RequestRecord) -> None:
        with self._cond:
            self.request_log.append(rec)
            self._cond.notify_all()

    def _take_failure(self) -> int | None:
        with self._cond:
            if self._fail_status is None:
                return None
            status = self._fail_status
            if self._fail_count is not None:
                self._fail_count -= 1
                if self._fail_count <= 0:
                    self._fail_status = self._fail_count = None
            return status

    def _wait_hang(self) -> bool:
        """Block while hanging; True if this request was hung (and must be cut, not answered)."""
        with self._cond:
            if not self._hang:
                return False
            gen = self._stop_gen
            while self._hang and self._stop_gen == gen:
                self._cond.wait()
            return True

    def _list(
        self, res: Resource, ns: str | None, query: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        limit = int(query.get("limit") or 0)
        cont = query.get("continue")
        with self._cond:
            if cont:
                try:
                    token_id, start = json.loads(base64.urlsafe_b64decode(cont))
                except (ValueError, TypeError):
                    return 400, _status(400, "BadRequest", "invalid continue token")
                snap = self._continues.get(token_id)
                if snap is None:
                    return 410, _status(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter.",
                    )
                rv, items = snap
            else:
                labels = label_matcher(query.get("labelSelector"))
                fields = field_matcher(query.get("fieldSelector"))
                rv = self._rv
                items = [
                    _for_list(o)
                    for k, o in sorted(self._objects.items())
                    if k[0] == res.kind
                    and (ns is None or k[1] == ns)
                    and labels(_labels(o))
                    and fields(o)
                ]
                token_id, start = uuid.uuid4().hex, 0
            page = items[start : start + limit] if limit else items[start:]
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if limit and start + limit < len(items):
                self._continues[token_id] = (rv, items)
                meta["continue"] = base64.urlsafe_b64encode(
                    json.dumps([token_id, start + limit]).encode()
                ).decode()
                meta["remainingItemCount"] = len(items) - start - limit
            else:
                self._continues.pop(token_id, None)
        return 200, {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": meta,
            "items": page,
        }


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket's: cut the TCP stream under any TLS state.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _peer_closed(sock: socket.socket) -> bool:
    try:
        # The raw socket's recv: an SSLSocket refuses flags, and we only peek for EOF here.
        return socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    # Headers and body go out in separate writes: without TCP_NODELAY each response on a
    # kept-alive connection waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (OSError, ssl.SSLError):
                self.request.close()
                raise
            self.request.settimeout(None)
        super().setup()
        self.server.fake._track(self.request, True)

    def finish(self) -> None:
        self.server.fake._track(self.request, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read request_log
        pass

    # --- plumbing ----------------------------------------------------------------------------

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if not url.path.startswith("/_fake/"):
            self._send_json(405, _status(405, "MethodNotAllowed", "read-only fake"))
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
            self._control(url.path[len("/_fake/") :], body)
        except (ValueError, KeyError, TypeError) as exc:
            self._send_json(400, _status(400, "BadRequest", f"{url.path}: {exc}"))

    def _control(self, action: str, body: Any) -> None:
        fake = self.server.fake
        if action == "upsert":
            objs = body if isinstance(body, list) else [body]
            self._send_json(200, [fake.upsert(o) for o in objs])
            return
        if action == "delete":
            ok = fake.delete(body["kind"], body.get("namespace"), body["name"])
            self._send_json(200 if ok else 404, {"deleted": ok})
            return
        simple = {
            "compact": fake.compact,
            "drop_watches": fake.drop_watches,
            "bookmark": fake.bookmark,
            "fail": lambda: fake.fail(body.get("status"), body.get("count")),
            "hang": lambda: fake.hang(bool(body.get("hang", True))),
        }
        if action not in simple:
            self._send_json(404, _status(404, "NotFound", f"no control action {action!r}"))
            return
        simple[action]()
        self._send_json(200, {"ok": True})

    # --- the API -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path == "/_fake/stats":
            with fake._cond:
                stats = {
                    "resourceVersion": fake._rv,
                    "objects": len(fake._objects),
                    "requests": len(fake.request_log),
                    "watches": fake._open_watches,
                }
            self._send_json(200, stats)
            return
        now = time.monotonic()
        if fake.on_request is not None:
            fake.on_request(RequestRecord("GET", url.path, query, now))
        if fake._wait_hang():
            fake._log(RequestRecord("GET", url.path, query, now, None))
            self.close_connection = True
            _shutdown(self.request)
            return
        status = fake._take_failure()
        if status is not None:
            fake._log(RequestRecord("GET", url.path, query, now, status))
            reason = _REASONS.get(status, "InternalError")
            self._send_json(status, _status(status, reason, f"injected failure {status}"))
            return
        if fake.token is not None and self.headers.get("Authorization") != f"Bearer {fake.token}":
            fake._log(RequestRecord("GET", url.path, query, now, 401))
            self._send_json(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        route = self._route(url.path)
        if route is None:
            fake._log(RequestRecord("GET", url.path, query, now, 404))
            self._send_json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
            return
        res, ns, name = route
        try:
            if name is not None:
                code, body = self._get_one(res, ns, name)
            elif query.get("watch", "").lower() in ("1", "true"):
                fake._log(RequestRecord("GET", url.path, query, now, None))
                self._watch(res, ns, query)
                return
            else:
                code, body = fake._list(res, ns, query)
        except SelectorError as exc:
            code, body = 400, _status(400, "BadRequest", str(exc))
        fake._log(RequestRecord("GET", url.path, query, now, code))
        self._send_json(code, body)

    def _route(self, path: str) -> tuple[Resource, str | None, str | None] | None:
        parts = tuple(p for p in path.split("/") if p)
        for n in (2, 3):
            prefix, rest = parts[:n], parts[n:]
            if len(rest) in (1, 2) and (prefix, rest[0]) in _BY_PATH:
                return _BY_PATH[(prefix, rest[0])], None, rest[1] if len(rest) == 2 else None
            if len(rest) in (3, 4) and rest[0] == "namespaces" and (prefix, rest[2]) in _BY_PATH:
                res = _BY_PATH[(prefix, rest[2])]
                if res.namespaced:
                    return res, rest[1], rest[3] if len(rest) == 4 else None
        return None

    def _get_one(self, res: Resource, ns: str | None, name: str) -> tuple[int, dict[str, Any]]:
        with self.server.fake._cond:
            obj = self.server.fake._objects.get((res.kind, ns or "", name))
            if obj is None:
                return 404, _status(404, "NotFound", f'{res.plural} "{name}" not found')
            return 200, copy.deepcopy(obj)

    def _watch(self, res: Resource, ns: str | None, query: dict[str, str]) -> None:
        fake = self.server.fake
        labels = label_matcher(query.get("labelSelector"))
        fields = field_matcher(query.get("fieldSelector"))

        def visible(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            scope_ok = ns is None or (obj.get("metadata") or {}).get("namespace") == ns
            return scope_ok and labels(_labels(obj)) and fields(obj)

        timeout = min(
            float(query.get("timeoutSeconds") or fake.max_watch_seconds), fake.max_watch_seconds
        )
        deadline = time.monotonic() + timeout
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("1", "true")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        out: list[dict[str, Any]] = []
        with fake._cond:
            fake._open_watches += 1
            gens = (fake._drop_gen, fake._error_gen, fake._stop_gen)
            seen_bookmark = fake._bookmark_gen
            rv_param = query.get("resourceVersion") or "0"
            if rv_param == "0":
                # No resourceVersion: the current state as synthetic ADDED events, then changes.
                cursor = fake._rv
                for key, obj in sorted(fake._objects.items()):
                    if key[0] == res.kind and visible(obj):
                        out.append({"type": "ADDED", "object": copy.deepcopy(obj)})
            else:
                cursor = int(rv_param)
                if cursor < fake._compacted_rv:
                    msg = f"too old resource version: {cursor} ({fake._compacted_rv})"
                    out.append({"type": "ERROR", "object": _status(410, "Expired", msg)})
        try:
            if out and out[-1]["type"] == "ERROR":
                self._chunk(json.dumps(out[0]).encode() + b"\n")
                self._chunk(b"")
                return
            next_bookmark = (
                time.monotonic() + fake.bookmark_interval
                if bookmarks and fake.bookmark_interval
                else None
            )
            while True:
                for ev in out:
                    self._chunk(json.dumps(ev).encode() + b"\n")
                out = []
                end = False
                with fake._cond:
                    while True:
                        if (fake._drop_gen, fake._stop_gen) != (gens[0], gens[2]):
                            self.close_connection = True
                            _shutdown(self.request)  # mid-stream cut: no terminating chunk
                            return
                        if fake._error_gen != gens[1]:
                            code = fake._error_code
                            out.append(
                                {
                                    "type": "ERROR",
                                    "object": _status(
                                        code,
                                        _REASONS.get(code, "InternalError"),
                                        "injected watch error",
                                    ),
                                }
                            )
                            end = True
                            break
                        if fake._stalled:
                            if _peer_closed(self.request):
                                self.close_connection = True
                                return
                            fake._cond.wait(0.25)
                            continue
                        i = bisect.bisect_right(fake._history_rvs, cursor)
                        for ev in fake._history[i:]:
                            if ev.kind != res.kind:
                                continue
                            was, now_ = visible(ev.old), visible(ev.new)
                            if ev.type == "DELETED":
                                kind = "DELETED" if was else None
                            elif was and now_:
                                kind = "MODIFIED"
                            elif now_:
                                kind = "ADDED"
                            elif was:
                                kind = "DELETED"  # left the selection: gone for this watcher
                            else:
                                kind = None
                            if kind:
                                out.append({"type": kind, "object": copy.deepcopy(ev.new)})
                        if fake._history:
                            cursor = max(cursor, fake._history[-1].rv)
                        cursor = max(cursor, fake._compacted_rv)
                        now = time.monotonic()
                        want_bookmark = bookmarks and (
                            fake._bookmark_gen != seen_bookmark
                            or (next_bookmark is not None and now >= next_bookmark)
                        )
                        if want_bookmark:
                            seen_bookmark = fake._bookmark_gen
                            if next_bookmark is not None:
                                next_bookmark = now + (fake.bookmark_interval or 0)
                            out.append(
                                {
                                    "type": "BOOKMARK",
                                    "object": {
                                        "kind": res.kind,
                                        "apiVersion": res.api_version,
                                        "metadata": {"resourceVersion": str(fake._rv)},
                                    },
                                }
                            )
                        if out:
                            break
                        if now >= deadline:
                            end = True
                            break
                        if _peer_closed(self.request):
                            self.close_connection = True
                            return
                        wake = deadline if next_bookmark is None else min(deadline, next_bookmark)
                        # Wake now and then to notice a client that went away, as a real server
                        # does through TCP, rather than holding its thread until the next event.
                        fake._cond.wait(min(0.25, max(0.0, wake - now)))
                if end:
                    for ev in out:
                        self._chunk(json.dumps(ev).encode() + b"\n")
                    self._chunk(b"")
                    return
        except OSError:
            self.close_connection = True
        finally:
            with fake._cond:
                fake._open_watches -= 1
                fake._cond.notify_all()


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--snapshot", help="objects to start with (dnsserver.snapshot formats)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token", help="require this bearer token")
    args = ap.parse_args(argv)
    objects: list[dict[str, Any]] = []
    if args.snapshot:
        from dnsserver.snapshot import SnapshotError, load_objects

        try:
            loaded = load_objects(args.snapshot)
        except SnapshotError as exc:
            print(f"fake_apiserver: {exc}", file=sys.stderr)
            return 2
        skipped = 0
        for obj in loaded:
            if obj.get("kind") in RESOURCES and (obj.get("metadata") or {}).get("name"):
                objects.append(obj)
            else:
                skipped += 1
        if skipped:
            print(f"fake_apiserver: skipped {skipped} objects of other kinds", file=sys.stderr)
    fake = FakeApiServer(objects, token=args.token)
    fake.port = args.port
    try:
        url = fake.start()
    except OSError as exc:
        print(f"fake_apiserver: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 2
    print(f"listening on {url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
