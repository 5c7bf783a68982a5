"""End-to-end latency of a 3-step chain and of a 10-wide chord, on the PostgreSQL registry.

Both are ``storage.ping`` steps submitted with ``pudato.jobs`` and awaited
through the result backend; runs alternate. The chord completes through the
registry backend's atomic counter, not ``chord_unlock`` polling.

    .venv/bin/python bench/chain_vs_chord.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import bench_stack


def main(runs: int = 10) -> None:
    with bench_stack(("storage",), concurrency=2) as stack:
        from pudato import jobs

        def latency(node) -> float:  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            submitted = jobs.submit(node, settings=stack["settings"])
            submitted.async_result.get(timeout=120, propagate=True)
            return time.perf_counter() - start

        def chain():  # type: ignore[no-untyped-def]
            return jobs.chain(*[jobs.step("storage", "ping") for _ in range(3)])

        def chord():  # type: ignore[no-untyped-def]
            return jobs.chord([jobs.step("storage", "ping") for _ in range(10)], jobs.step("storage", "ping"))

        latency(chain()), latency(chord())  # warm up
        chains, chords = [], []
        for _ in range(runs):
            chains.append(latency(chain()))
            chords.append(latency(chord()))
        chain_s, chord_s = statistics.median(chains), statistics.median(chords)
        print(f"runs: {runs}, worker prefork -c 2, broker moto SQS, registry + result backend PostgreSQL")
        print(
            f"3-step chain   : median {chain_s * 1000:7.1f} ms"
            f"  (min {min(chains) * 1000:.1f}, max {max(chains) * 1000:.1f})"
        )
        print(
            f"10-wide chord  : median {chord_s * 1000:7.1f} ms"
            f"  (min {min(chords) * 1000:.1f}, max {max(chords) * 1000:.1f})"
        )
        print(f"ratio chord/chain: {chord_s / chain_s:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
