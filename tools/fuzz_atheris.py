#!/usr/bin/env python3
"""Byte-level, coverage-guided fuzzing of the whole query path with atheris (libFuzzer).

    .venv/bin/pip install atheris        # a manylinux wheel for CPython 3.11 on x86-64;
                                         # elsewhere it builds from source and needs clang
    .venv/bin/python tools/fuzz_atheris.py -max_total_time=600 -rss_limit_mb=4096 CORPUS_DIR

An empty CORPUS_DIR is seeded with valid queries for the demo cluster's names.
Every input goes to `QueryEngine.resolve` of the suite's two engines (`tests/test_fuzz.py`)
with the properties of `check_resolve`; the first input byte picks the engine and UDP or TCP.
dnslib, dnsserver and the plugins are instrumented for coverage. A failing property is tallied
(keyed by exception type and innermost project line) instead of stopping the run, so one run
reports every unique failure; the tally is printed and written to
bench/out/fuzz-atheris/failures.json at exit. Any other libFuzzer flag is passed through.
"""

from __future__ import annotations

import atexit
import json
import sys
import time
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tools"))

with atheris.instrument_imports(include=["dnslib", "dnsserver"]):
    # Imported here so that they are instrumented; test_fuzz imports the rest.
    import dnslib  # noqa: F401
    import test_fuzz as tf

    # Building the engines imports the plugins (assembly finds them at first use): inside.
    ENGINES = tf.engines()

from fuzz_structured import Tally  # noqa: E402

OUT = ROOT / "bench" / "out" / "fuzz-atheris"
TALLY = Tally()
STARTED = time.monotonic()


_last_report = [time.monotonic()]


def one_input(data: bytes) -> None:
    if time.monotonic() - _last_report[0] > 10:
        # libFuzzer ends the process from C when its time is up, past Python's atexit.
        _last_report[0] = time.monotonic()
        report(quiet=True)
    if not data:
        return
    selector, query = data[0], data[1:]
    name = "rich" if selector & 1 else "kubernetes"
    TALLY.run(f"resolve-{name}", lambda args: tf.check_resolve(ENGINES[name], *args),
              (query, bool(selector & 2)))


def seed_corpus(folder: Path) -> None:
    """Start an empty corpus from valid queries, so mutation begins inside the protocol."""
    import dns.message

    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        return
    n = 0
    for name in tf.KNOWN_NAMES:
        for rdtype in ("A", "AAAA", "SRV", "PTR", "TXT", "ANY"):
            for edns in (False, True):
                kw = {"use_edns": 0, "payload": 1232, "want_dnssec": True} if edns else {}
                wire = dns.message.make_query(name, rdtype, id=n % 65536, **kw).to_wire()
                (folder / f"seed-{n}").write_bytes(bytes([n % 4]) + wire)
                n += 1


def report(quiet: bool = False) -> None:
    summary = {"minutes": round((time.monotonic() - STARTED) / 60, 2), "cases": TALLY.cases,
               "total_cases": sum(TALLY.cases.values()),
               "crashes": sum(f["count"] for f in TALLY.failures.values()),
               "unique_failures": len(TALLY.failures), "failures": TALLY.failures}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "failures.json").write_text(json.dumps(summary, indent=2))
    if quiet:
        return
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=2),
          flush=True)
    for key, failure in TALLY.failures.items():
        print(f"{key} ({failure['count']}x): {failure['error']}\n  input: {failure['input']}",
              flush=True)


def main() -> None:
    atexit.register(report)
    folders = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
    for folder in folders[:1]:
        seed_corpus(folder)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
