"""What the Corefile's `kubernetes` block says about reaching and selecting from the API."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiOptions:
    """Connection and selection settings; all defaults mean "in-cluster, everything"."""

    endpoint: str | None = None  # `endpoint URL`
    tls: tuple[str, str, str] | None = None  # `tls CERT KEY CACERT` (with `endpoint`)
    kubeconfig: str | None = None  # `kubeconfig FILE [CONTEXT]`
    context: str | None = None
    labels: str | None = None  # label selector for Services, EndpointSlices and Pods
    namespace_labels: str | None = None  # label selector for Namespaces
    namespaces: tuple[str, ...] = ()  # only these namespaces (empty: all)
    watch_pods: bool = False  # `pods verified`
