"""The sandbox's child process: ``python -m pudato.backends.transform.child``.

It reads one JSON request a line on stdin and answers one JSON line on the
descriptor stdout had when it started; anything dbt prints goes to stderr. A
request is ``{"invocation": DbtInvocation}``; an answer is
``{"result": DbtResult}`` or ``{"error": {"type", "message", "details"}}``.
``{"ping": true}`` is answered ``{"pong": true}``. The
process ends when stdin closes (the worker stopped, or recycled it).

Its arguments are the network it may use (:mod:`.network`): ``--network
host:port`` for each endpoint, or ``--any-network`` when package downloads are
allowed. With ``--channel-fd N`` it runs in namespaces of its own
(:mod:`.isolation`) and first hands the worker its endpoints' listeners on
descriptor N, with each ``--hide PATH`` hidden. Both go in before dbt is imported.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import sys
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pudato.backends.transform import SANDBOX_PREFIX, DbtInvocation
from pudato.backends.transform.engine import DbtEngine
from pudato.backends.transform.isolation import hide, open_endpoints
from pudato.backends.transform.network import install_guard
from pudato.errors import PudatoError


def serve(argv: list[str]) -> None:
    options = dict(itertools.pairwise(argv))
    endpoints = [value for flag, value in itertools.pairwise(argv) if flag == "--network"]
    if "--channel-fd" in options:
        hide([value for flag, value in itertools.pairwise(argv) if flag == "--hide"])
        open_endpoints(endpoints, int(options["--channel-fd"]), Path(tempfile.gettempdir()))
    if "--any-network" not in argv:
        install_guard(endpoints)
    busy = threading.Event()
    threading.Thread(target=_exit_when_orphaned, args=(busy,), daemon=True).start()
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # dbt (and anything a model prints) must never write into the answers
    sys.stdout = sys.stderr
    engine = DbtEngine(temp_root=Path(tempfile.gettempdir()))  # the private folder the worker made
    try:
        for line in sys.stdin:
            busy.set()
            answers.write(json.dumps(_answer(engine, line), default=str) + "\n")
            answers.flush()
            busy.clear()
    finally:
        engine.close()


def _exit_when_orphaned(busy: threading.Event) -> None:
    """End at once if the worker is gone (SIGKILLed by a hard time limit, say), even mid-query.

    The worker holds the only writing end of stdin, so its end is a hang-up there; the
    parent's pid cannot tell, as in a pid namespace of its own the child has none. An
    idle child is left to end its loop and close the engine itself.
    """
    _worker_gone(wait=True)
    if not busy.is_set():
        return
    _remove_private_folder()
    os._exit(1)


def _remove_private_folder() -> None:
    """The worker made the folder and removes it; once the worker is gone, nobody else will."""
    if _worker_gone(wait=False):
        folder = Path(tempfile.gettempdir())
        if folder.name.startswith(SANDBOX_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)


def _worker_gone(wait: bool) -> bool:
    """Whether stdin has hung up (with ``wait``, once it has)."""
    hangup = select.poll()
    hangup.register(sys.stdin.fileno(), 0)  # no events asked: only a hang-up or an error wakes it
    return bool(hangup.poll(None if wait else 0))


def _answer(engine: DbtEngine, line: str) -> dict[str, Any]:
    try:
        request = json.loads(line)
        if request.get("ping"):
            return {"pong": True}
        invocation = DbtInvocation.from_json(request["invocation"])
        return {"result": asdict(engine.invoke(invocation))}
    except PudatoError as exc:
        return {"error": {"type": type(exc).__name__, "message": exc.message, "details": exc.details}}
    except Exception as exc:  # the worker gets it as a failed step; the child lives on
        return {"error": {"type": "TransformFailed", "message": f"dbt failed: {type(exc).__name__}: {exc}",
                          "details": {}}}  # fmt: skip


if __name__ == "__main__":
    try:
        serve(sys.argv[1:])
    finally:  # at the end of stdin, and after a failure at any point, the worker's death included
        _remove_private_folder()
