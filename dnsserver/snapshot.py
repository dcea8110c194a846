"""Reading a cluster snapshot file: Kubernetes objects as a `v1` List, multi-document YAML or JSON.

This module only turns a file into plain API dicts; what DNS keeps of them is `objects`' job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# The kinds a snapshot may carry that DNS or the environment-variable generator read.
KINDS = ("Namespace", "Service", "EndpointSlice", "Pod")


class SnapshotError(Exception):
    """The snapshot file cannot be read or parsed at all."""


def _yaml_loader() -> type[yaml.SafeLoader]:
    # The C loader is several times faster on large dumps; fall back where libyaml is missing.
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _flatten(doc: Any) -> Iterator[dict[str, Any]]:
    """Yield the objects of one document: a List's items, or the document itself."""
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise SnapshotError(f"expected a Kubernetes object or List, got {type(doc).__name__}")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc.get("items") or []
        if not isinstance(items, list):
            raise SnapshotError(f"{kind}.items is not a list")
        # `kubectl get a,b -o yaml` items carry their own kind; a typed list (ServiceList) may not.
        item_kind = kind[: -len("List")] if kind != "List" else None
        for item in items:
            if isinstance(item, dict):
                if item_kind and "kind" not in item:
                    item = {**item, "kind": item_kind}
                yield from _flatten(item)
        return
    yield doc


def parse_objects(text: str, source: str = "<snapshot>") -> list[dict[str, Any]]:
    """Parse snapshot text into API object dicts (all kinds; callers pick what they read)."""
    stripped = text.lstrip()
    try:
        if stripped.startswith(("{", "[")):
            data = json.loads(text)
            docs = data if isinstance(data, list) else [data]
        else:
            docs = list(yaml.load_all(text, Loader=_yaml_loader()))
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SnapshotError(f"{source}: cannot parse: {exc}") from exc
    objects: list[dict[str, Any]] = []
    try:
        for doc in docs:
            objects.extend(_flatten(doc))
    except SnapshotError as exc:
        raise SnapshotError(f"{source}: {exc}") from exc
    return objects


def load_objects(path: str | Path) -> list[dict[str, Any]]:
    """Read every object of a snapshot file, or of every *.yaml/*.yml/*.json file of a folder."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml", ".json"))
    else:
        files = [p]
    objects: list[dict[str, Any]] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"{f}: cannot read: {exc}") from exc
        objects.extend(parse_objects(text, str(f)))
    return objects
