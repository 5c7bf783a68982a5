"""No-op steps through Pudato's whole path against a bare Celery task, same broker and worker.

Pudato's path: a ``storage.ping`` step (command parsing, handler dispatch, the
signals, the registry record, the SNS Result). The baseline: ``bench.noop``, a
bare task on the same app, queue and worker (prefork, ``-c 2``). Each batch is
sent, then awaited through the result backend; batches alternate so that both
see the same moto. Prints steps per second of each and the ratio.

    .venv/bin/python bench/steps_throughput.py [N_PER_BATCH] [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import bench_stack


def main(per_batch: int = 150, rounds: int = 3) -> None:
    with bench_stack(("storage",), concurrency=2, include="bench.bare_tasks") as stack:
        from celery.result import ResultSet

        from pudato.registry.repository import Registry
        from workers.app import app
        from workers.storage import execute

        def timed(send) -> float:  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            results = ResultSet([send() for _ in range(per_batch)])
            results.join(timeout=600, propagate=False)
            return per_batch / (time.perf_counter() - start)

        def bare():  # type: ignore[no-untyped-def]
            return app.send_task("bench.noop", queue="pudato-storage")

        def pudato():  # type: ignore[no-untyped-def]
            return execute.delay(command={"action": "ping"})

        timed(bare), timed(pudato)  # warm both paths
        bare_rates, pudato_rates = [], []
        for _ in range(rounds):
            bare_rates.append(timed(bare))
            pudato_rates.append(timed(pudato))
        # Recording is off the critical path: how long until the registry caught up?
        registry = Registry(stack["settings"].registry.url)
        start = time.perf_counter()
        while registry.jobs(1)[0]["status"] != "succeeded":
            time.sleep(0.05)
        lag = time.perf_counter() - start
        bare_rate, pudato_rate = statistics.median(bare_rates), statistics.median(pudato_rates)
        print(f"batches: {rounds} x {per_batch} steps, worker prefork -c 2, broker moto SQS, registry PostgreSQL")
        print(f"bare celery task : {bare_rate:7.1f} tasks/s  (rounds: {', '.join(f'{r:.1f}' for r in bare_rates)})")
        print(f"pudato ping step : {pudato_rate:7.1f} steps/s  (rounds: {', '.join(f'{r:.1f}' for r in pudato_rates)})")
        print(f"ratio pudato/bare: {pudato_rate / bare_rate:.2f}")
        print(f"registry lag after the last result: {lag:.2f} s")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
