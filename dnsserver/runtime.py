"""Process set-up shared by the command and the worker processes: the log format and the event
loop implementation, each chosen in one place.
"""

from __future__ import annotations

import asyncio


def use_uvloop() -> None:
    """uvloop when present: stock asyncio costs several extra syscalls per datagram."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def setup_logging(level: str) -> None:
    """CoreDNS's log format on stdout at `level` ("debug", "info", "warning", "error")."""
    from dnsserver.logfmt import setup_logging as setup_coredns_logging

    setup_coredns_logging(level.upper())
