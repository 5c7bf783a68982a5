"""The drain: in order, waits out transient failures, spools what it could not deliver."""

from __future__ import annotations

import threading

from pudato.background import Drain


class Flaky(Exception):
    pass


def test_delivers_in_order_and_waits_out_transient_failures():
    delivered, failures = [], iter([True, True, False])

    def deliver(batch):
        if next(failures, False):
            raise Flaky("away")
        delivered.extend(batch)

    drain = Drain("t-order", deliver, is_transient=lambda e: isinstance(e, Flaky), max_backoff_s=0.05)
    for item in range(25):
        drain.put(item)
    assert drain.flush(60)
    assert delivered == list(range(25))
    assert drain.delivered == 25
    assert drain.dropped == 0


def test_permanent_failure_drops_and_counts():
    drain = Drain("t-drop", lambda batch: (_ for _ in ()).throw(ValueError("bad")), is_transient=lambda e: False)
    drain.put("x")
    assert drain.flush(60)
    assert drain.dropped == 1


def test_undelivered_items_are_spooled_and_picked_up_by_the_next_drain(tmp_path):
    blocked = threading.Event()

    def never(batch):
        blocked.set()
        raise Flaky("database away")

    first = Drain("t-spool", never, is_transient=lambda e: True, spool_dir=tmp_path, max_backoff_s=0.05,
                  encode=lambda i: {"n": i}, decode=lambda d: d["n"])
    for item in range(3):
        first.put(item)
    assert blocked.wait(60)
    first.close(timeout=0.3)
    assert list(tmp_path.glob("t-spool-*.jsonl"))

    received = []
    second = Drain("t-spool", received.extend, is_transient=lambda e: True, spool_dir=tmp_path,
                   encode=lambda i: {"n": i}, decode=lambda d: d["n"])
    second.put(99)
    assert second.flush(60)
    assert sorted(received) == [0, 1, 2, 99]
    assert not list(tmp_path.glob("t-spool-*"))
