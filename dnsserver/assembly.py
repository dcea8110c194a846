"""Turning a parsed Corefile into what runs: listeners, each server block's plugin chain in
CoreDNS's order, the cluster sources, and the operational listeners (health, ready, metrics).

Each plugin's Corefile stanza is read by a `setup` function: the ones here, and those that
modules of `dnsserver.plugins` export in a `SETUPS = {"name": setup}` dict (found at first use).
A plugin CoreDNS has and we don't is a Corefile error that names the line.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dnsserver.plugins
from dnsserver import corefile
from dnsserver.engine import ServerBlockRuntime
from dnsserver.plugin import Plugin, chain
from dnsserver.plugins.kubernetes import (
    KubernetesPlugin,
    check_one_watch,
    parse_config,
    parse_duration,
)
from dnsserver.store import ClusterStore


@dataclass
class BlockContext:
    """What a plugin's setup may read or register while its server block is assembled."""

    block: Any  # corefile.ServerBlock
    zones: tuple[str, ...]
    port: int
    assembly: Assembly
    binds: list[str] = field(default_factory=list)  # `bind` addresses of this block
    shared: dict[str, Any] = field(default_factory=dict)  # plugins' per-block state


@dataclass
class Assembly:
    """Everything the Corefile asked for, built but not yet started."""

    store: ClusterStore
    # (host, port) -> blocks listening there; host "" means every address.
    listeners: dict[tuple[str, int], list[ServerBlockRuntime]] = field(default_factory=dict)
    kubernetes: list[KubernetesPlugin] = field(default_factory=list)
    plugins: list[Plugin] = field(default_factory=list)
    health: str | None = None
    lameduck: float = 0.0
    ready: str | None = None
    prometheus: str | None = None
    reload: tuple[float, float] | None = None  # (interval, jitter) of `reload`
    # Server-wide resource bounds from `limits` and `timeouts` (transport.Limits fields).
    limits: dict[str, float] = field(default_factory=dict)
    # Late-bound by the server: resolve a name through the listener's own blocks.
    lookups: dict[int, Callable[..., Any]] = field(default_factory=dict)


Setup = Callable[[Any, BlockContext], "Plugin | None"]
SETUPS: dict[str, Setup] = {}


def register(name: str) -> Callable[[Setup], Setup]:
    def wrap(fn: Setup) -> Setup:
        SETUPS[name] = fn
        return fn

    return wrap


@register("kubernetes")
def _kubernetes(d: Any, ctx: BlockContext) -> Plugin:
    config = parse_config(d, ctx.zones, ctx.binds)
    check_one_watch(ctx.assembly.kubernetes[0] if ctx.assembly.kubernetes else None, config, d)
    port = ctx.port

    async def lookup(name: str, qtype: int, depth: int) -> Any:
        resolve = ctx.assembly.lookups.get(port)
        return None if resolve is None else await resolve(name, qtype, depth)

    plugin = KubernetesPlugin(ctx.assembly.store, config, lookup, where=f"{d.file}:{d.line}")
    ctx.assembly.kubernetes.append(plugin)
    return plugin


@register("bind")
def _bind(d: Any, ctx: BlockContext) -> None:
    d.arg_count(1, None)
    ctx.binds.extend(d.args)
    return None


@register("health")
def _health(d: Any, ctx: BlockContext) -> None:
    d.arg_count(0, 1)
    ctx.assembly.health = d.args[0] if d.args else ":8080"
    for opt in d.block:
        if opt.name == "lameduck":
            opt.arg_count(1, 1)
            ctx.assembly.lameduck = parse_duration(opt, opt.args[0])
        else:
            raise opt.error(f"unknown property '{opt.name}'")
    return None


@register("ready")
def _ready(d: Any, ctx: BlockContext) -> None:
    d.arg_count(0, 1)
    ctx.assembly.ready = d.args[0] if d.args else ":8181"
    return None


@register("prometheus")
def _prometheus(d: Any, ctx: BlockContext) -> None:
    d.arg_count(0, 1)
    # CoreDNS's default for a bare `prometheus` is loopback only; kubeadm writes `:9153`.
    ctx.assembly.prometheus = d.args[0] if d.args else "localhost:9153"
    return None


@register("reload")
def _reload(d: Any, ctx: BlockContext) -> None:
    d.arg_count(0, 2)
    interval = parse_duration(d, d.args[0]) if d.args else 30.0
    jitter = parse_duration(d, d.args[1]) if len(d.args) > 1 else interval / 2
    if interval < 2.0:
        raise d.error(f"interval value must be greater or equal to 2s: {d.args[0]}")
    if jitter < 1.0:
        raise d.error(f"jitter value must be greater or equal to 1s: {d.args[1]}")
    if jitter > interval / 2:
        jitter = interval / 2  # CoreDNS caps the jitter at half the interval
    ctx.assembly.reload = (interval, jitter)
    return None


# Our `limits` directive (not a CoreDNS plugin): server-wide resource bounds.
LIMITS = {
    "tcp_connections": (int, 1, 1_000_000),
    "tcp_queries_in_flight": (int, 1, 65535),
    "udp_in_flight": (int, 1, 1_000_000),
    "fast_path_entries": (int, 0, 10_000_000),
}


@register("limits")
def _limits(d: Any, ctx: BlockContext) -> None:
    d.arg_count(0, 0)
    for opt in d.block:
        spec = LIMITS.get(opt.name)
        if spec is None:
            raise opt.error(f"unknown property '{opt.name}'")
        opt.arg_count(1, 1)
        kind, low, high = spec
        try:
            value = kind(opt.args[0])
        except ValueError:
            raise opt.error(f"{opt.name} must be a whole number: {opt.args[0]}") from None
        if not low <= value <= high:
            raise opt.error(f"{opt.name} must be in [{low}, {high}]: {value}")
        ctx.assembly.limits[opt.name] = value
    return None


@register("timeouts")
def _timeouts(d: Any, ctx: BlockContext) -> None:
    # CoreDNS's `timeouts { read; write; idle }` (DoT/DoH/TCP); `write` has no effect here.
    d.arg_count(0, 0)
    if not d.block:
        raise d.error("timeouts block with no timeouts specified")
    for opt in d.block:
        opt.arg_count(1, 1)
        seconds = parse_duration(opt, opt.args[0])
        if not 1 <= seconds <= 86400:
            raise opt.error(f"{opt.name} timeout must be between 1s and 24h")
        if opt.name == "read":
            ctx.assembly.limits["tcp_read_timeout"] = seconds
        elif opt.name == "idle":
            ctx.assembly.limits["tcp_idle_timeout"] = seconds
        elif opt.name != "write":
            raise opt.error(f"unknown option: {opt.name}")
    return None


@register("any")
def _any(d: Any, ctx: BlockContext) -> None:
    # RFC 8482 answers to ANY are always on (engine); the directive is accepted as is.
    d.arg_count(0, 0)
    return None


@register("errors")
def _errors(d: Any, ctx: BlockContext) -> None:
    # Plugin failures are always logged as `[ERROR] plugin/errors: …` by the engine.
    return None


_discovered = False


def setups() -> dict[str, Setup]:
    """Every known setup, including those exported by the modules of `dnsserver.plugins`."""
    global _discovered
    if not _discovered:
        for info in pkgutil.iter_modules(dnsserver.plugins.__path__):
            module = importlib.import_module(f"dnsserver.plugins.{info.name}")
            SETUPS.update(getattr(module, "SETUPS", {}))
        _discovered = True
    return SETUPS


def assemble(parsed: Any, store: ClusterStore) -> Assembly:
    """Build every server block of a parsed Corefile; raises CorefileError naming the line."""
    assembly = Assembly(store=store)
    for block in parsed.blocks:
        ports = {key.port for key in block.keys}
        for port in sorted(ports):
            zones = tuple(key.zone for key in block.keys if key.port == port)
            ctx = BlockContext(block, zones, port, assembly)
            plugins: list[Plugin] = []
            for d in corefile.sort_directives(block):
                setup = setups().get(d.name)
                if setup is None:
                    raise d.error(f"plugin/{d.name}: not supported by dnsserver "
                                  "(see corefile-compat.md)")
                plugin = setup(d, ctx)
                if plugin is not None:
                    plugins.append(plugin)
            assembly.plugins.extend(plugins)
            runtime = ServerBlockRuntime(zones, chain(plugins), tuple(plugins))
            for host in ctx.binds or [""]:
                assembly.listeners.setdefault((host, port), []).append(runtime)
    return assembly
