"""Pudato's exceptions.

Every error Pudato raises on purpose derives from :class:`PudatoError`, and is
sorted at the driver boundary into one of two kinds::

    PudatoError
    ├── TerminalError              the step fails; retrying cannot help
    │   ├── InvalidCommand         malformed message, unknown action, bad payload
    │   ├── UnsafeInput            a path, identifier or URL from a message was refused
    │   ├── NotFound               a missing object, table or dataset
    │   │   └── VersionGone        a recorded version that can no longer be read
    │   │       └── SnapshotGone   a lake snapshot that no longer exists
    │   ├── QueryFailed            SQL that the engine rejected
    │   ├── LimitExceeded          a step over a limit: its time limit, the size cap of a result
    │   └── ConfigurationError     a setting is missing or wrong
    └── TransientError             the step may succeed if retried later
        └── BackendUnavailable     a service did not answer (S3, database lock, ...)

Exceptions keep their inputs as attributes and build their message from them.
They stay picklable (``__reduce__``) because they cross worker processes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

ErrorKind = Literal["terminal", "transient", "error"]


class PudatoError(Exception):
    """Root of every error Pudato raises on purpose."""

    kind: ClassVar[ErrorKind] = "error"
    # What the step did before it failed (a pudato.protocol.Outcome), if anything.
    outcome: Any = None

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": self.message, "details": self.details}


def _rebuild(cls: type[PudatoError], message: str, details: dict[str, Any]) -> PudatoError:
    error = cls.__new__(cls)
    PudatoError.__init__(error, message, **details)
    return error


class TerminalError(PudatoError):
    """The step fails, and a retry would fail the same way."""

    kind = "terminal"


class TransientError(PudatoError):
    """The step may succeed when retried: a service was busy or away."""

    kind = "transient"


class InvalidCommand(TerminalError):
    """The message is malformed, names an unknown action, or its payload is invalid."""


class UnsafeInput(TerminalError):
    """A path, identifier, URL or selector taken from a message was refused."""


class NotFound(TerminalError):
    """A named object, table or dataset does not exist."""


class VersionGone(NotFound):
    """A rerun's input version is gone: an S3 version deleted or expired, a lake snapshot expired,
    or a file changed in a backend that keeps no versions. ``dataset`` and ``version`` name it."""


class SnapshotGone(VersionGone):
    """A dataset's recorded version cannot be read: the lake snapshot expired, or the table did not exist then."""

    def __init__(self, dataset: str, snapshot: int | None, message: str | None = None) -> None:
        super().__init__(
            message
            or f"dataset {dataset} at lake snapshot {snapshot} cannot be read: the snapshot is gone "
            "(expired or never taken) or the table did not exist then",
            dataset=dataset,
            snapshot=snapshot,
            version=snapshot,
        )

    @property
    def dataset(self) -> str:
        return str(self.details.get("dataset"))

    @property
    def snapshot(self) -> int | None:
        value = self.details.get("snapshot")
        return int(value) if value is not None else None


class QueryFailed(TerminalError):
    """The SQL engine rejected a statement."""


class LimitExceeded(TerminalError):
    """The step ran past a limit of its queue: its time limit, or the size cap of a result."""


class ConfigurationError(TerminalError):
    """A setting is missing or wrong."""


class BackendUnavailable(TransientError):
    """A backend service did not answer, or a resource was locked."""
