"""The worker's side of the dbt child's network: the lake's endpoints, and nothing else.

The child, in a network namespace of its own (:mod:`.isolation`), listens on
each allowed endpoint's address there and hands the listening sockets over a
Unix socket. A :class:`Relay` accepts on them from the worker, outside the
namespace, and joins each connection to the real endpoint it was opened for.
Bytes pass through untouched (TLS stays end to end). The relay's threads live
in the worker process that owns the child, and stop with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_MAX_ENDPOINTS = 32


class Relay:
    """Accepts on the child's listeners and connects each connection to its endpoint."""

    def __init__(self, listeners: list[socket.socket], endpoints: list[str], connect_timeout_s: float) -> None:
        self.endpoints = endpoints
        self.connect_timeout_s = connect_timeout_s
        self._listeners = listeners
        self._closed = threading.Event()
        for listener, endpoint in zip(listeners, endpoints, strict=True):
            threading.Thread(target=self._accept, args=(listener, endpoint), daemon=True,
                             name=f"pudato-relay {endpoint}").start()  # fmt: skip

    @classmethod
    def receive(cls, channel: socket.socket, endpoints: list[str], timeout_s: float,
                connect_timeout_s: float = 15.0) -> Relay:  # fmt: skip
        """The relay for ``endpoints``, on the listeners the child sends on ``channel``, in that order.

        OSError if the child sends nothing within ``timeout_s``, or other endpoints than it was
        given: the worker connects only where its own settings say, whatever the child claims.
        """
        channel.settimeout(timeout_s)
        message, fds, _, _ = socket.recv_fds(channel, 64 * 1024, _MAX_ENDPOINTS)
        listeners = [socket.socket(fileno=fd) for fd in fds]
        problem = None
        if not message:
            problem = "the sandboxed dbt process ended before it opened its network"
        elif json.loads(message) != endpoints or len(listeners) != len(endpoints):
            problem = f"the sandboxed dbt process opened {len(listeners)} listeners, not one for each of {endpoints}"
        if problem is not None:
            for listener in listeners:
                listener.close()
            raise OSError(problem)
        return cls(listeners, endpoints, connect_timeout_s)

    def close(self) -> None:
        self._closed.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()

    def _accept(self, listener: socket.socket, endpoint: str) -> None:
        host, _, port = endpoint.rpartition(":")
        target = (host.strip("[]"), int(port))
        while not self._closed.is_set():
            try:
                inside, _ = listener.accept()
            except OSError:
                return  # closed: the child is gone
            threading.Thread(target=self._join, args=(inside, target), daemon=True).start()

    def _join(self, inside: socket.socket, target: tuple[str, int]) -> None:
        try:
            outside = socket.create_connection(target, timeout=self.connect_timeout_s)
        except OSError as exc:
            log.warning("sandbox relay could not reach %s:%s: %s", target[0], target[1], exc)
            inside.close()
            return
        outside.settimeout(None)
        for joined in (inside, outside):  # the catalog's small messages must not wait for Nagle's algorithm
            joined.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pump, args=(outside, inside), daemon=True)
        back.start()
        _pump(inside, outside)
        back.join()
        inside.close()
        outside.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:  # a reset on either side: end both directions, so the other pump wakes
        for either in (source, sink):
            with contextlib.suppress(OSError):
                either.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)  # pass the end of file on; the other direction may still be talking
