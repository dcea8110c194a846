#!/usr/bin/env python3
"""Long structure-aware fuzzing run: the strategies and properties of `tests/test_fuzz.py`,
for as many minutes as asked, counting cases and unique failures instead of stopping at one.

    .venv/bin/python tools/fuzz_structured.py --minutes 10 [--out bench/out/fuzz-structured]

Each target runs in rounds of `--round` examples with a fresh random seed; a failure is keyed
by its exception type and the innermost project line it came from, and the shortest input seen
for each key is written to OUT/failures.json (with its traceback) so it can become a case in
`tests/test_hostile_wire.py`. Exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_fuzz as tf  # noqa: E402  (the suite's strategies and properties, run long)
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _resolve(name: str) -> Callable[[tuple[bytes, bool]], Any]:
    def check(args: tuple[bytes, bool]) -> Any:
        return tf.check_resolve(tf.engines()[name], *args)

    return check


TARGETS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], Any]]] = {
    "resolve-kubernetes": (st.tuples(tf.mutated_queries(), st.booleans()), _resolve("kubernetes")),
    "resolve-rich": (st.tuples(tf.mutated_queries(), st.booleans()), _resolve("rich")),
    "resolve-raw-bytes": (st.tuples(st.binary(max_size=700), st.booleans()), _resolve("rich")),
    "dnslib-parse": (tf.hostile_bytes(), tf.check_parse),
    "header_error": (st.tuples(tf.hostile_bytes(), st.integers(0, 15)),
                     lambda a: tf.check_header_error(*a)),
    "pack_limited": (st.tuples(tf.replies(), st.integers(12, 65535)),
                     lambda a: tf.check_pack_limited(*a)),
    "address_run": (tf.responses(), tf.check_address_run),
}


class Tally:
    """Cases run and unique failures, with the shortest input seen for each."""

    def __init__(self) -> None:
        self.cases: dict[str, int] = {}
        self.failures: dict[str, dict[str, Any]] = {}

    def run(self, target: str, check: Callable[[Any], Any], args: Any) -> None:
        self.cases[target] = self.cases.get(target, 0) + 1
        try:
            check(args)
        except Exception as exc:
            self.record(target, exc, args)

    def record(self, target: str, exc: BaseException, args: Any) -> None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if str(ROOT) in f.filename and "/.venv/" not in f.filename]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        key = f"{target} {type(exc).__name__} at {where}"
        text = repr(args)
        seen = self.failures.get(key)
        if seen is None or len(text) < len(seen["input"]):
            self.failures[key] = {
                "count": (seen or {}).get("count", 0), "input": text,
                "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                "traceback": "".join(traceback.format_exception(exc))[-3000:]}
        self.failures[key]["count"] += 1


def run_round(tally: Tally, target: str, examples: int, rng: random.Random) -> None:
    strategy, check = TARGETS[target]

    # Failures are tallied inside, so hypothesis never stops to shrink: the run keeps going.
    @seed(rng.getrandbits(64))
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(args=strategy)
    def round_(args: Any) -> None:
        tally.run(target, check, args)

    round_()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--round", type=int, default=500, help="examples per round and target")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "fuzz-structured")
    args = p.parse_args(argv)
    targets = args.targets.split(",")
    rng = random.Random(args.seed)
    tally = Tally()
    tf.engines()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    rounds = 0
    while time.monotonic() < deadline:
        for target in targets:
            if time.monotonic() >= deadline:
                break
            run_round(tally, target, args.round, rng)
        rounds += 1
        total = sum(tally.cases.values())
        print(f"{time.monotonic() - started:7.0f}s  rounds {rounds}  cases {total}  "
              f"unique failures {len(tally.failures)}", flush=True)
    elapsed = time.monotonic() - started
    summary = {"minutes": round(elapsed / 60, 2), "cases": tally.cases,
               "total_cases": sum(tally.cases.values()),
               "crashes": sum(f["count"] for f in tally.failures.values()),
               "unique_failures": len(tally.failures), "failures": tally.failures}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "failures.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=2))
    for key, failure in tally.failures.items():
        print(f"\n{key} ({failure['count']}x): {failure['error']}\n  input: {failure['input']}")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
