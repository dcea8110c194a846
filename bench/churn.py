"""Endpoint churn for mix (d): a paced stream of EndpointSlice changes to the fake API server.

Each change is a rolling-update step: one endpoint of one slice gets a fresh pod IP (hostnames
stay), posted to `POST /_fake/upsert`. Bounded by both a duration and a count.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import ipaddress
import json
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any

# Fresh IPs come from the top of the bench pod CIDR, which gen_cluster never reaches.
CHURN_IPS = int(ipaddress.IPv4Address("10.247.0.1"))


def load_slices(snapshot: Path) -> list[dict[str, Any]]:
    data = json.loads(snapshot.read_text())
    items = data.get("items", data if isinstance(data, list) else [])
    return [o for o in items if o.get("kind") == "EndpointSlice" and o.get("endpoints")]


class Churner:
    """Mutates slices in place so successive changes to one slice build on each other."""

    def __init__(self, slices: list[dict[str, Any]], seed: int = 3) -> None:
        self.slices = [copy.deepcopy(s) for s in slices]
        self.rng = random.Random(seed)
        self.next_ip = CHURN_IPS

    def change(self) -> dict[str, Any]:
        sl = self.rng.choice(self.slices)
        ep = self.rng.choice(sl["endpoints"])
        ep["addresses"] = [str(ipaddress.IPv4Address(self.next_ip))]
        self.next_ip += 1
        if self.next_ip & 0xFF in (0, 255):
            self.next_ip += 2
        meta = sl["metadata"]
        meta.pop("resourceVersion", None)  # the fake assigns a new one
        return sl


def _quickack(conn: http.client.HTTPConnection) -> None:
    # The fake writes headers and body in two sends; with Nagle on its side and delayed ACK on
    # ours each request would stall 40 ms. Acking at once lets its second segment go out.
    if conn.sock is not None:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def run(port: int, snapshot: Path, rate: float, seconds: float, max_changes: int | None = None,
        seed: int = 3) -> dict[str, float]:
    """Post `rate` changes a second for `seconds`; return what was achieved."""
    churner = Churner(load_slices(snapshot), seed)
    limit = max_changes if max_changes is not None else int(rate * seconds) + 1
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    sent = errors = 0
    t0 = time.monotonic()
    deadline = t0 + seconds
    try:
        while sent < limit:
            # Absolute schedule: a slow request does not lower the long-run rate.
            due = t0 + sent / rate
            now = time.monotonic()
            if due >= deadline or now >= deadline:
                break
            if due > now:
                time.sleep(due - now)
            body = json.dumps(churner.change()).encode()
            try:
                conn.request("POST", "/_fake/upsert", body,
                              {"Content-Type": "application/json"})
                _quickack(conn)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors += 1
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            sent += 1
    finally:
        conn.close()
    elapsed = time.monotonic() - t0
    return {"changes": sent, "errors": errors, "seconds": elapsed,
            "rate": sent / elapsed if elapsed else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True, help="fake API server port on 127.0.0.1")
    ap.add_argument("--snapshot", type=Path, required=True, help="the snapshot the fake serves")
    ap.add_argument("--rate", type=float, default=100.0, help="changes per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-changes", type=int)
    args = ap.parse_args(argv)
    if args.seconds > 3600:
        ap.error("--seconds is capped at 3600")
    out = run(args.port, args.snapshot, args.rate, args.seconds, args.max_changes)
    print(json.dumps(out), flush=True)
    return 0 if out["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
