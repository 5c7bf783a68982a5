"""The journal: an item is on disk before put() returns, and survives a SIGKILL of its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from helpers import wait_for

from pudato.background import Drain
from pudato.journal import Journal

CHILD = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from pudato.background import Drain
    from pudato.journal import Journal

    folder = Path(sys.argv[1])
    stuck = threading.Event()
    journal = Journal(folder, "t-journal", lambda i: {"n": i}, lambda d: d["n"])
    drain = Drain("t-journal", lambda batch: stuck.wait(), is_transient=lambda e: True, journal=journal)
    for item in range(5):
        drain.put(item)
    print("queued", flush=True)
    stuck.wait()
""")


def _journal(folder):
    return Journal(folder, "t-journal", lambda i: {"n": i}, lambda d: d["n"])


def test_items_of_a_killed_process_are_delivered_by_the_next_one_in_order(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "queued"
    assert len(list(tmp_path.glob("t-journal.*.json"))) == 5
    assert _journal(tmp_path).orphans() == [], "a live process's entries were claimed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    received: list[int] = []
    drain = Drain("t-journal", received.extend, is_transient=lambda e: True, journal=_journal(tmp_path))
    drain.start()
    wait_for(lambda: len(received) >= 5, 60, "the orphaned entries were not delivered", interval=0.05)
    assert received == [0, 1, 2, 3, 4]
    assert drain.flush(60)
    assert list(tmp_path.glob("t-journal.*.json")) == []


def test_a_delivered_item_leaves_no_file(tmp_path):
    received: list[int] = []
    drain = Drain("t-journal", received.extend, is_transient=lambda e: True, journal=_journal(tmp_path))
    drain.put(1)
    assert drain.flush(60)
    assert received == [1]
    assert list(tmp_path.glob("t-journal.*.json")) == []


def test_an_item_that_can_never_be_delivered_is_not_offered_again(tmp_path):
    drain = Drain("t-journal", lambda batch: (_ for _ in ()).throw(ValueError("bad")), is_transient=lambda e: False,
                  journal=_journal(tmp_path))
    drain.put(1)
    assert drain.flush(60)
    assert drain.dropped == 1
    assert list(tmp_path.glob("t-journal.*.json")) == []
