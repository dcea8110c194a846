"""Watching the Kubernetes API: how to connect (`connection`) and list/watch into a sink (`watch`).

Importing this package stays light: the `kubernetes` client is imported only for `kubeconfig`.
"""

from .connection import ApiConfigError, ApiConnection, connect
from .options import ApiOptions
from .watch import KINDS, ClusterSink, ClusterWatcher, WatchStats

__all__ = [
    "KINDS",
    "ApiConfigError",
    "ApiConnection",
    "ApiOptions",
    "ClusterSink",
    "ClusterWatcher",
    "WatchStats",
    "connect",
]
