"""Starting, waiting for and stopping the local stack's processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], str | None],
    what: str,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until it returns None (ready); otherwise it returns what is still missing.

    An OSError from ``check`` means "not yet" (a port that does not answer). A ``process``
    that exits first ends the wait at once: nothing will become ready after that.
    """
    deadline = time.monotonic() + timeout
    problem = "no answer yet"
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready")
        try:
            answer = check()
        except OSError as exc:
            answer = str(exc)
        if answer is None:
            return
        problem = answer
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout:.0f}s: {problem}")
        time.sleep(interval)


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group (a worker and its pool children), then SIGKILL if needed."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def say(message: str) -> None:
    print(message, flush=True)  # honcho reads a pipe: without flush, lines arrive at exit


def on_stop_signals(handler: Callable[[int], None]) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: handler(number))


def later(delay: float, action: Callable[[], object]) -> None:
    timer = threading.Timer(delay, action)
    timer.daemon = True  # never keeps this process alive once its child has gone
    timer.start()


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill_group_if_alive(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)


def run_bounded(command: list[str], grace: float) -> int:
    """Run ``command``; on SIGINT or SIGTERM pass SIGTERM on, and SIGKILL it if it is still there after ``grace``.

    For a process with nothing to save whose own shutdown can hang (Flower stopping in
    the middle of its first inspection of the workers, once moto has gone, retries the
    broker for ever): it goes within ``grace`` instead of holding up the whole stack.
    """
    # In a process group of its own, so that a signal to ours (honcho signals the group) reaches it
    # once, from here; on Linux it is killed if this wrapper dies first.
    # No other thread runs yet, so preexec_fn is safe here.
    child = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)
    stopping = threading.Event()

    def stop_child(_signum: int) -> None:
        if stopping.is_set():
            return
        stopping.set()
        if child.poll() is None:
            child.terminate()
            later(grace, lambda: _kill_group_if_alive(child))

    on_stop_signals(stop_child)
    code = child.wait()
    return 0 if stopping.is_set() else code


def run_procfile(stop_wait: float) -> int:
    """``honcho start`` on the Procfile here, with ``stop_wait`` in place of honcho's fixed 5 s.

    PostgreSQL's shutdown checkpoint and moto's state file need longer than 5 s on a
    busy machine; killed earlier, they would recover, but not stop cleanly.
    """
    from honcho import command, manager

    manager.KILL_WAIT = stop_wait
    try:
        command.main(["start"])
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0
