"""Git logic repositories: a bare mirror per URL, a clean checkout per commit.

Layout below the cache directory::

    mirrors/<sha256(url)[:16]>.git   bare mirror, fetched only when a commit is missing
    checkouts/<sha>                  clean working tree of exactly that commit
    locks/                           fcntl lock files, one per mirror and one per SHA

A checkout is built in a temporary directory beside its final place and renamed
into it, under a per-SHA lock, so a reader never sees half a tree and two worker
processes asking for the same SHA build it once. Every commit fetched is pinned
under ``refs/pudato/commits/`` so a force-push upstream cannot make it vanish.

Every git command line puts ``--`` before values from messages, and runs with
``GIT_ALLOW_PROTOCOL`` (git's own guard against ``ext::`` and friends) and
``GIT_TERMINAL_PROMPT=0`` (a worker must never wait for a password).

A remote must accept a TCP connection within ``connect_timeout_s`` (checked
before git talks to it; ssh also gets ``ConnectTimeout``), then keep sending at
least ``low_speed_limit_bytes`` a second (``GIT_HTTP_LOW_SPEED_LIMIT``/``_TIME``,
ssh's keep-alives), and every command ends after ``timeout_s``. A host that hangs
fails the step with :class:`~pudato.backends.logic.RemoteTimedOut`, terminal: it
is not retried, so it holds a worker once.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import git

from pudato.backends.logic import (
    Checkout,
    CheckoutCorrupted,
    LogicRepository,
    RemoteTimedOut,
    check_ref,
    check_url,
    is_sha,
)
from pudato.errors import BackendUnavailable, NotFound, UnsafeInput
from pudato.settings import Settings

log = logging.getLogger(__name__)

# What dbt may leave in a project directory; anything else untracked or modified is corruption.
DBT_LEFTOVERS = ("target", "logs", "dbt_packages", "package-lock.yml")
_NOT_FOUND_HINTS = ("repository not found", "does not appear to be a git repository", "does not exist")
_TIMEOUT_HINTS = ("operation too slow", "timed out", "timeout", "did not complete in")
_DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}


class GitLogicRepository(LogicRepository):
    """Logic repositories reached with the ``git`` command, through GitPython."""

    kind = "git"

    def __init__(
        self,
        cache_dir: Path = Path(".pudato/logic"),
        allowed_schemes: Sequence[str] = ("https", "ssh", "file"),
        allow_local_paths: bool = True,
        timeout_s: float = 300.0,
        *,
        allowed_hosts: Sequence[str] | None = None,
        connect_timeout_s: int = 15,
        low_speed_limit_bytes: int = 1000,
        low_speed_time_s: int = 30,
    ) -> None:
        self.cache_dir = Path(cache_dir).resolve()
        self.allowed_schemes = [scheme.lower() for scheme in allowed_schemes]
        self.allowed_hosts = None if allowed_hosts is None else list(allowed_hosts)
        self.allow_local_paths = allow_local_paths
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        for folder in ("mirrors", "checkouts", "locks"):
            (self.cache_dir / folder).mkdir(parents=True, exist_ok=True)
        protocols = set(self.allowed_schemes) | ({"file"} if allow_local_paths else set())
        self._env = {
            "GIT_TERMINAL_PROMPT": "0",
            # Local paths travel as git's "file" protocol, so they need it on the list too.
            "GIT_ALLOW_PROTOCOL": ":".join(sorted(protocols)),
            "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND")
            or (
                f"ssh -o BatchMode=yes -o ConnectTimeout={int(connect_timeout_s)} "
                f"-o ServerAliveInterval={max(1, low_speed_time_s // 3)} -o ServerAliveCountMax=3"
            ),
            "GIT_HTTP_LOW_SPEED_LIMIT": str(int(low_speed_limit_bytes)),
            "GIT_HTTP_LOW_SPEED_TIME": str(int(low_speed_time_s)),
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> GitLogicRepository:
        logic = settings.logic
        return cls(
            logic.cache_dir, logic.allowed_schemes, logic.allow_local_paths, logic.timeout_s,
            allowed_hosts=logic.allowed_hosts, connect_timeout_s=logic.connect_timeout_s,
            low_speed_limit_bytes=logic.low_speed_limit_bytes, low_speed_time_s=logic.low_speed_time_s,
        )  # fmt: skip

    # -- public interface -------------------------------------------------------------

    def resolve(self, url: str, ref: str) -> str:
        url = self._check_url(url)
        ref = check_ref(ref)
        sha = ref.lower() if is_sha(ref) else self._ls_remote(url, ref)
        self._ensure_commit(url, sha, ref)
        return sha

    def checkout(self, url: str, sha: str) -> Checkout:
        url = self._check_url(url)
        if not isinstance(sha, str) or not is_sha(sha):
            raise UnsafeInput(f"commit {str(sha)[:80]!r} is not a full 40-hex SHA", sha=str(sha)[:80])
        sha = sha.lower()
        final = self.cache_dir / "checkouts" / sha
        if not final.is_dir():
            with self._locked(f"sha-{sha}"):
                if not final.is_dir():
                    self._ensure_commit(url, sha, sha)
                    self._build_checkout(url, sha, final)
        self.verify(final, sha)
        return Checkout(path=final, sha=sha)

    def verify(self, path: Path, sha: str) -> None:
        """Refuse a checkout whose HEAD is not ``sha`` or whose files were changed."""
        repo = git.Repo(path)
        try:
            head = repo.head.commit.hexsha
            if head != sha:
                raise CheckoutCorrupted(
                    f"checkout {path} is at {head}, not {sha}; delete the directory to rebuild it",
                    path=str(path),
                )
            # No optional locks: concurrent workers verify the same checkout, and status would write the index.
            status = repo.git.execute(
                ["git", "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=no"],
                env={**self._env, "GIT_OPTIONAL_LOCKS": "0"},
            )
        finally:
            repo.close()
        changed = [entry[3:] for entry in status.split("\0") if entry and not self._dbt_leftover(entry)]
        if changed:
            raise CheckoutCorrupted(
                f"checkout {path} of {sha} has modified or untracked files "
                f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}); "
                "delete the directory to rebuild it",
                path=str(path),
                files=changed[:20],
            )

    # -- mirrors ----------------------------------------------------------------------

    def mirror_path(self, url: str) -> Path:
        return self.cache_dir / "mirrors" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.git"

    def has_commit(self, url: str, sha: str) -> bool:
        mirror = self.mirror_path(url)
        if not (mirror / "HEAD").is_file():
            return False
        try:
            self._git(["--git-dir", str(mirror), "cat-file", "-e", f"{sha}^{{commit}}"])
        except git.GitCommandError:
            return False
        return True

    def _ensure_commit(self, url: str, sha: str, ref: str) -> None:
        if self.has_commit(url, sha):
            return  # a commit never changes, so once fetched it is never fetched again
        mirror = self.mirror_path(url)
        with self._locked(f"mirror-{mirror.stem}"):
            if self.has_commit(url, sha):
                return
            if not (mirror / "HEAD").is_file():
                self._git(["init", "--quiet", "--bare", "--", str(mirror)])
            self._fetch(url, mirror, ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], prune=True)
            if not self.has_commit(url, sha):
                # Not on a branch or tag: ask for the commit itself (servers may refuse).
                with suppress(BackendUnavailable):
                    self._fetch(url, mirror, [f"{sha}:refs/pudato/commits/{sha}"], prune=False)
            if not self.has_commit(url, sha):
                raise NotFound(f"ref {ref!r} not found in {url}", url=url, ref=ref)
            self._git(["--git-dir", str(mirror), "update-ref", f"refs/pudato/commits/{sha}", sha])

    def _fetch(self, url: str, mirror: Path, refspecs: list[str], prune: bool) -> None:
        options = ["--quiet", "--no-tags", "--no-write-fetch-head"] + (["--prune"] if prune else [])
        log.info("fetching %s into %s", url, mirror)
        self._remote(url, ["--git-dir", str(mirror), "-c", "gc.auto=0", "fetch", *options, "--", url, *refspecs])

    def _ls_remote(self, url: str, ref: str) -> str:
        output = self._remote(url, ["ls-remote", "--", url, ref, f"{ref}^{{}}"])
        found: dict[str, str] = {}
        for line in output.splitlines():
            sha, _, name = line.partition("\t")
            found[name] = sha
        # git's own order for a short name (see gitrevisions): exact, refs/, tags, then branches.
        for candidate in (ref, f"refs/{ref}", f"refs/tags/{ref}", f"refs/heads/{ref}"):
            if candidate == ref and not (ref == "HEAD" or ref.startswith("refs/")):
                continue
            peeled = found.get(f"{candidate}^{{}}")  # an annotated tag names its commit here
            if peeled or candidate in found:
                return (peeled or found[candidate]).lower()
        raise NotFound(f"ref {ref!r} not found in {url}", url=url, ref=ref)

    # -- checkouts --------------------------------------------------------------------

    def _build_checkout(self, url: str, sha: str, final: Path) -> None:
        scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{sha[:12]}-", dir=final.parent))
        try:
            # A local clone hard-links the mirror's objects: cheap, and independent of later fetches.
            self._git(["clone", "--quiet", "--no-checkout", "--", str(self.mirror_path(url)), str(scratch)])
            self._git(["-C", str(scratch), "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", sha])
            self._git(["-C", str(scratch), "remote", "remove", "origin"])
            self.verify(scratch, sha)
            os.rename(scratch, final)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def _dbt_leftover(entry: str) -> bool:
        code, path = entry[:2], entry[3:]
        return code == "??" and path.split("/", 1)[0] in DBT_LEFTOVERS

    # -- plumbing ---------------------------------------------------------------------

    def _check_url(self, url: str) -> str:
        return check_url(url, self.allowed_schemes, self.allow_local_paths, self.allowed_hosts)

    def _git(self, args: list[str], timeout: float | None = None) -> str:
        return git.Git().execute(
            ["git", *args], env=self._env, kill_after_timeout=timeout, strip_newline_in_stdout=True
        )

    def _remote(self, url: str, args: list[str]) -> str:
        """A git command that talks to ``url``; its failures become NotFound, RemoteTimedOut or BackendUnavailable."""
        self._check_connects(url)
        try:
            return self._git(args, timeout=self.timeout_s)
        except git.GitCommandError as exc:
            stderr = _stderr(exc)
            if any(hint in stderr.lower() for hint in _NOT_FOUND_HINTS):
                raise NotFound(f"repository {url} was not found: {stderr}", url=url) from None
            if any(hint in f"{stderr} {exc}".lower() for hint in _TIMEOUT_HINTS):
                raise RemoteTimedOut(
                    f"repository {url} stopped answering (under {self._env['GIT_HTTP_LOW_SPEED_LIMIT']} bytes/s for "
                    f"{self._env['GIT_HTTP_LOW_SPEED_TIME']} s, or over {self.timeout_s:g} s in all; "
                    f"PUDATO_LOGIC__LOW_SPEED_TIME_S, PUDATO_LOGIC__TIMEOUT_S): {stderr or exc}",
                    url=url,
                ) from None
            raise BackendUnavailable(f"repository {url} did not answer: {stderr or exc}", url=url) from None

    def _check_connects(self, url: str) -> None:
        """RemoteTimedOut if a network remote does not accept a TCP connection within ``connect_timeout_s``."""
        address = _address(url)
        if address is None:
            return  # a local path
        try:
            socket.create_connection(address, timeout=self.connect_timeout_s).close()
        except TimeoutError:
            raise RemoteTimedOut(
                f"repository {url} did not accept a connection within {self.connect_timeout_s} s "
                "(PUDATO_LOGIC__CONNECT_TIMEOUT_S)",
                url=url,
            ) from None
        except OSError:
            pass  # refused or unresolvable: git says so in its own words

    @contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        # fcntl locks are per process and released by the kernel if a worker dies.
        with open(self.cache_dir / "locks" / f"{name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _address(url: str) -> tuple[str, int] | None:
    """The (host, port) a network URL connects to; None for a local path."""
    from urllib.parse import urlsplit

    if url.startswith("/") or url.lower().startswith("file:"):
        return None
    if "://" not in url:  # scp-like user@host:path
        return url.split(":", 1)[0].rpartition("@")[2], 22
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port or _DEFAULT_PORTS.get(parts.scheme.lower(), 443)


def _stderr(exc: git.GitCommandError) -> str:
    # GitPython wraps stderr as "\n  stderr: '...'"; keep git's own words.
    text = str(exc.stderr or "").strip()
    if text.startswith("stderr: '") and text.endswith("'"):
        text = text[len("stderr: '") : -1]
    return text.strip()[-500:]
