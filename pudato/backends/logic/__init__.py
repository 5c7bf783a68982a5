"""Logic repositories: the analysts' dbt projects, pinned to one commit per job.

Every backend implements :class:`LogicRepository`: :meth:`~LogicRepository.resolve`
turns a branch, tag or SHA into a full commit SHA, and
:meth:`~LogicRepository.checkout` gives a clean working tree of exactly that
commit, one directory per SHA, so jobs on different commits never share files.
To add a backend, write a module here with a subclass and add it to ``BACKENDS``.

Repository URLs and refs come from messages, so this module holds the rules for
them: :func:`check_url` and :func:`check_ref` refuse anything a git command line
could mistake for an option or a remote-helper transport.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pudato.backends import load_backend
from pudato.errors import NotFound, TerminalError, UnsafeInput

if TYPE_CHECKING:
    from pudato.settings import Settings

BACKENDS = {
    "git": "pudato.backends.logic.git:GitLogicRepository",
}

SHA = re.compile(r"^[0-9a-fA-F]{40}$")
_URL_MAX = 2048
_REF_MAX = 255
_BAD_URL_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
# git's "<transport>::<address>" remote-helper syntax (ext::, fd::, ...) runs programs.
_TRANSPORT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+.\-]*::")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", re.DOTALL)
_SCP_LIKE = re.compile(r"^(?:([^@/:]+)@)?([^@/:]+):(.*)$")
# Characters check-ref-format forbids anywhere in a ref (besides control characters).
_REF_FORBIDDEN = set(" ~^:?*[\\")


class CheckoutCorrupted(TerminalError):
    """A cached checkout is not at its commit or has changed files: it must be deleted and rebuilt."""


class RemoteTimedOut(TerminalError):
    """A repository host that connected too slowly, or stopped sending: terminal, so it holds a worker once."""


@dataclass(frozen=True)
class Checkout:
    """A clean working tree of one commit; ``path`` is never shared with another SHA."""

    path: Path
    sha: str


def is_sha(text: str) -> bool:
    return bool(SHA.match(text))


def check_url(
    url: str, allowed_schemes: list[str], allow_local_paths: bool, allowed_hosts: list[str] | None = None
) -> str:
    """A repository URL from a message, or UnsafeInput / NotFound (missing local path).

    ``allowed_hosts`` (None: any) lists the hosts a remote URL may name; ``*.example.org``
    allows that domain and its subdomains. ``file://`` counts as a local path.
    """
    if not isinstance(url, str) or not url or len(url) > _URL_MAX:
        raise UnsafeInput(f"repository URL must be 1 to {_URL_MAX} characters", url=str(url)[:80])
    if url.startswith("-"):
        raise UnsafeInput(f"repository URL {url[:80]!r} must not start with '-'", url=url[:80])
    if _TRANSPORT.match(url):
        raise UnsafeInput(
            f"repository URL {url[:80]!r} uses git's '<transport>::' syntax, which is never allowed",
            url=url[:80],
        )
    if _BAD_URL_CHARS.search(url):
        raise UnsafeInput("repository URL contains whitespace or a control character", url=url[:80])
    allowed = {scheme.lower() for scheme in allowed_schemes}
    scheme = _SCHEME.match(url)
    if scheme:
        name, rest = scheme.group(1).lower(), scheme.group(2)
        if name not in allowed:
            raise UnsafeInput(
                f"repository URL scheme {name!r} is not allowed; allowed: {', '.join(sorted(allowed)) or 'none'}",
                url=url[:80],
            )
        authority = rest.split("/", 1)[0].rpartition("@")
        # ssh://-oProxyCommand=... (CVE-2017-1000117) and friends: a host or user that is an option.
        if authority[2].startswith("-") or authority[0].startswith("-"):
            raise UnsafeInput(f"repository URL {url[:80]!r} has a host or user starting with '-'", url=url[:80])
        if name == "file":
            if not allow_local_paths:
                raise UnsafeInput(f"local repository paths are not allowed: {url[:80]!r}", url=url[:80])
            _existing_dir(Path(rest), url)
            return url
        _check_host(_host(authority[2]), allowed_hosts, url)
        return url
    if url.startswith("/"):
        if not allow_local_paths:
            raise UnsafeInput(f"local repository paths are not allowed: {url[:80]!r}", url=url[:80])
        _existing_dir(Path(url), url)
        return url
    scp = _SCP_LIKE.match(url)
    if scp:
        if "ssh" not in allowed:
            raise UnsafeInput(f"scp-like repository URL {url[:80]!r} needs the ssh scheme allowed", url=url[:80])
        user, host, path = scp.group(1) or "", scp.group(2), scp.group(3)
        if user.startswith("-") or host.startswith("-") or path.startswith("-"):
            raise UnsafeInput(f"repository URL {url[:80]!r} has a part starting with '-'", url=url[:80])
        _check_host(host.lower(), allowed_hosts, url)
        return url
    raise UnsafeInput(
        f"repository URL {url[:80]!r} is not an allowed URL (schemes: {', '.join(sorted(allowed))})"
        + (" or an absolute local path" if allow_local_paths else ""),
        url=url[:80],
    )


def _host(authority: str) -> str:
    """The host of ``host``, ``host:port`` or ``[v6]:port``, lower case."""
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0].lower()
    return authority.rsplit(":", 1)[0].lower() if ":" in authority else authority.lower()


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    for pattern in (p.lower() for p in allowed_hosts):
        if pattern.startswith("*."):
            if host == pattern[2:] or host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def _check_host(host: str, allowed_hosts: list[str] | None, url: str) -> None:
    if allowed_hosts is None:
        return
    if not host or not host_allowed(host, allowed_hosts):
        raise UnsafeInput(
            f"repository host {host[:80]!r} is not allowed; allowed hosts: "
            f"{', '.join(sorted(allowed_hosts)) or 'none'} (PUDATO_LOGIC__ALLOWED_HOSTS)",
            url=url[:80],
            host=host[:80],
        )


def _existing_dir(path: Path, url: str) -> None:
    if not path.is_absolute():
        raise UnsafeInput(f"local repository path {url[:80]!r} must be absolute", url=url[:80])
    if not path.is_dir():
        raise NotFound(f"repository {url!r} does not exist", url=url[:200])


def check_ref(ref: str) -> str:
    """A branch, tag or SHA from a message, by ``git check-ref-format --allow-onelevel`` rules."""
    if not isinstance(ref, str) or not ref or len(ref) > _REF_MAX:
        raise UnsafeInput(f"ref must be 1 to {_REF_MAX} characters", ref=str(ref)[:80])
    problem = _ref_problem(ref)
    if problem:
        raise UnsafeInput(f"ref {ref[:80]!r} is not allowed: {problem}", ref=ref[:80])
    return ref


def _ref_problem(ref: str) -> str | None:
    if ref.startswith("-"):
        return "it starts with '-'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in ref):
        return "it contains a control character"
    bad = sorted(set(ref) & _REF_FORBIDDEN)
    if bad:
        return f"it contains {''.join(bad)!r}"
    if ref == "@":
        return "it is '@'"
    for sequence in ("..", "@{", "//"):
        if sequence in ref:
            return f"it contains {sequence!r}"
    if ref.startswith("/") or ref.endswith(("/", ".")):
        return "it starts or ends with '/' or ends with '.'"
    for component in ref.split("/"):
        if component.startswith(".") or component.endswith(".lock"):
            return "a component starts with '.' or ends with '.lock'"
    return None


class LogicRepository:
    """The interface every logic-repository backend implements."""

    kind: ClassVar[str]

    def resolve(self, url: str, ref: str) -> str:
        """The full 40-hex SHA that ``ref`` (branch, tag or SHA) names in ``url``."""
        raise NotImplementedError

    def checkout(self, url: str, sha: str) -> Checkout:
        """A clean working tree of commit ``sha``, verified and never shared with another SHA."""
        raise NotImplementedError


def logic_backend(settings: Settings) -> LogicRepository:
    # One backend (git) today; a settings field can pick another once there is one.
    name = getattr(settings.logic, "backend", "git")
    cls = load_backend("logic", BACKENDS, name)
    backend: LogicRepository = cls.from_settings(settings)
    return backend
