"""moto's standalone server: for a test or the demo (:func:`moto_server`), and as the
local stack's ``aws`` service (:func:`run_moto`), whose state is kept across restarts
(:mod:`pudato.devstack.moto_state`): a snapshot at a clean stop, restored at the next
start. A server killed with SIGKILL keeps the previous snapshot.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pudato.devstack.moto_state import restore, snapshot_api, snapshot_backends, summary
from pudato.devstack.processes import free_port, on_stop_signals, say, stop, wait_until


@contextmanager
def moto_server(port: int | None = None, log_path: Path | None = None) -> Iterator[str]:
    """moto's standalone server on 127.0.0.1; yields its endpoint URL."""
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=log, start_new_session=True,
    )
    try:
        wait_until(lambda: _answers(endpoint), "moto server", 60, process)
        yield endpoint
    finally:
        stop(process)


def _answers(endpoint: str) -> str | None:
    with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as response:
        return None if response.status == 200 else f"HTTP {response.status}"


def run_moto(port: int, state_path: Path) -> None:
    """Run moto's server on 127.0.0.1:``port`` until SIGINT or SIGTERM.

    At start, the snapshot at ``state_path`` (if any) is put back; at a clean stop a new
    one replaces it. See the module's docstring for what a snapshot holds.
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request (workers poll)
    os.environ.setdefault("MOTO_PORT", str(port))  # as moto.server sets it: some URLs moto makes carry it
    state_path = state_path.resolve()
    # As moto's ThreadedMotoServer does, but binding here: a port in use fails now instead of hanging.
    httpd = make_server("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=True,
                        request_handler=MotoRequestHandler)
    serving = threading.Thread(target=httpd.serve_forever, name="moto", daemon=True)
    serving.start()
    endpoint = f"http://127.0.0.1:{port}"
    stopping = threading.Event()
    on_stop_signals(lambda _signum: stopping.set())
    try:
        if state_path.exists():
            started = time.monotonic()
            try:
                counts = restore(endpoint, json.loads(state_path.read_text()))
            except Exception as exc:
                raise RuntimeError(f"could not restore moto's state from {state_path} ({exc}); "
                                   "move the file away to start with an empty moto") from exc
            say(f"restored moto's state from {state_path} in {time.monotonic() - started:.1f}s: {_counts(counts)}")
        say(f"moto ready on {endpoint}")
        while not stopping.wait(0.5):
            pass
        # Still serving while the configuration is read: workers stopping beside us can ack their last tasks.
        snapshot = snapshot_api(endpoint)
    finally:
        httpd.shutdown()
        serving.join(5)
        httpd.server_close()
    snapshot_backends(snapshot)
    _write_atomically(state_path, json.dumps(snapshot))
    say(f"saved moto's state to {state_path}: {_counts(summary(snapshot))}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{value} {name}" for name, value in counts.items())


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)
