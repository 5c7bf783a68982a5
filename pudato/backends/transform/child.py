"""The sandbox's child process: ``python -m pudato.backends.transform.child``.

It reads one JSON request a line on stdin and answers one JSON line on the
descriptor stdout had when it started; anything dbt prints goes to stderr. A
request is ``{"invocation": DbtInvocation}``; an answer is
``{"result": DbtResult}`` or ``{"error": {"type", "message", "details"}}``.
``{"ping": true}`` is answered ``{"pong": true}``. The
process ends when stdin closes (the worker stopped, or recycled it).

Its arguments are the network it may use (:mod:`.network`): ``--network
host:port`` for each endpoint, or ``--any-network`` when package downloads are
allowed. The guard goes in before dbt is imported.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pudato.backends.transform import SANDBOX_PREFIX, DbtInvocation
from pudato.backends.transform.engine import DbtEngine
from pudato.backends.transform.network import install_guard
from pudato.errors import PudatoError


def serve(argv: list[str]) -> None:
    if "--any-network" not in argv:
        install_guard([value for flag, value in itertools.pairwise(argv) if flag == "--network"])
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # dbt (and anything a model prints) must never write into the answers
    sys.stdout = sys.stderr
    engine = DbtEngine(temp_root=Path(tempfile.gettempdir()))  # the private folder the worker made
    try:
        for line in sys.stdin:
            answers.write(json.dumps(_answer(engine, line), default=str) + "\n")
            answers.flush()
    finally:
        engine.close()
        folder = Path(tempfile.gettempdir())
        if folder.name.startswith(SANDBOX_PREFIX):  # the worker is gone: nobody else will remove it
            shutil.rmtree(folder, ignore_errors=True)


def _exit_when_orphaned(parent: int) -> None:
    """End at once if the worker is gone (SIGKILLed by a hard time limit, say), even mid-query."""
    while os.getppid() == parent:
        time.sleep(1.0)
    folder = Path(tempfile.gettempdir())
    if folder.name.startswith(SANDBOX_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)
    os._exit(1)


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
    serve(sys.argv[1:])
