"""The git logic-repository backend on real repositories made in tmp_path."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
from pathlib import Path

import git
import pytest
from helpers import commit as _commit
from helpers import git as _git

from pudato.backends.logic import CheckoutCorrupted, check_ref, check_url, logic_backend
from pudato.backends.logic.git import GitLogicRepository
from pudato.errors import NotFound, UnsafeInput
from pudato.settings import LogicSettings, Settings


@pytest.fixture
def origin(tmp_path: Path) -> dict[str, str]:
    repo = tmp_path / "origin"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "analyst@example.org")
    _git(repo, "config", "user.name", "Analyst")
    a = _commit(repo, {"model.sql": "select 'A'\n"}, "A")
    _git(repo, "tag", "-a", "v1", "-m", "release 1")
    _git(repo, "tag", "light")
    _git(repo, "checkout", "-q", "-b", "feature/x")
    side = _commit(repo, {"side.sql": "select 'side'\n"}, "side")
    _git(repo, "checkout", "-q", "main")
    b = _commit(repo, {"model.sql": "select 'B'\n"}, "B")
    return {"url": str(repo), "A": a, "B": b, "side": side}


@pytest.fixture
def backend(tmp_path: Path) -> GitLogicRepository:
    return GitLogicRepository(tmp_path / "cache")


def test_resolve_branch_tag_and_sha(backend: GitLogicRepository, origin: dict[str, str]) -> None:
    url = origin["url"]
    assert backend.resolve(url, "main") == origin["B"]
    assert backend.resolve(url, "refs/heads/main") == origin["B"]
    assert backend.resolve(url, "HEAD") == origin["B"]
    assert backend.resolve(url, "v1") == origin["A"]  # annotated tag: the commit, not the tag object
    assert backend.resolve(url, "light") == origin["A"]
    assert backend.resolve(url, "feature/x") == origin["side"]
    assert backend.resolve(url, origin["A"]) == origin["A"]
    assert backend.resolve(url, origin["A"].upper()) == origin["A"]
    assert backend.resolve(f"file://{url}", "main") == origin["B"]


def test_unknown_ref_and_unknown_sha_are_not_found(backend: GitLogicRepository, origin: dict[str, str]) -> None:
    with pytest.raises(NotFound, match=r"ref 'nope' not found in "):
        backend.resolve(origin["url"], "nope")
    with pytest.raises(NotFound, match="not found"):
        backend.resolve(origin["url"], "0" * 40)
    with pytest.raises(NotFound):
        backend.resolve(str(Path(origin["url"]).parent / "missing"), "main")


def test_checkout_per_sha_is_clean_and_reused(backend: GitLogicRepository, origin: dict[str, str]) -> None:
    first = backend.checkout(origin["url"], origin["A"])
    second = backend.checkout(origin["url"], origin["B"])
    assert first.path != second.path
    assert first.path.name == origin["A"]
    assert second.path.name == origin["B"]
    assert (first.path / "model.sql").read_text() == "select 'A'\n"
    assert (second.path / "model.sql").read_text() == "select 'B'\n"
    assert git.Repo(first.path).head.commit.hexsha == origin["A"]
    assert backend.checkout(origin["url"], origin["A"]).path == first.path
    # What dbt leaves behind is tolerated; nothing else is.
    (first.path / "target").mkdir()
    (first.path / "target" / "manifest.json").write_text("{}")
    backend.checkout(origin["url"], origin["A"])
    (first.path / "model.sql").write_text("select 'tampered'\n")
    with pytest.raises(CheckoutCorrupted, match=r"model\.sql"):
        backend.checkout(origin["url"], origin["A"])
    (first.path / "model.sql").write_text("select 'A'\n")
    (first.path / "extra.sql").write_text("select 1\n")
    with pytest.raises(CheckoutCorrupted, match=r"extra\.sql"):
        backend.checkout(origin["url"], origin["A"])


def test_fetched_sha_is_never_fetched_again(
    backend: GitLogicRepository, origin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = origin["url"]
    first = backend.checkout(url, backend.resolve(url, "main"))
    # The origin goes away, and any fetch would fail loudly.
    Path(url).rename(Path(url).with_name("gone"))
    Path(url).mkdir()
    monkeypatch.setattr(backend, "_fetch", lambda *a, **k: pytest.fail("fetched a SHA already present"))
    assert backend.resolve(url, origin["B"]) == origin["B"]
    assert backend.checkout(url, origin["B"]).path == first.path
    # Even a new checkout of another SHA already in the mirror needs no fetch.
    shutil.rmtree(first.path)
    rebuilt = backend.checkout(url, origin["A"])
    assert (rebuilt.path / "model.sql").read_text() == "select 'A'\n"
    assert (backend.checkout(url, origin["B"]).path / "model.sql").read_text() == "select 'B'\n"


def test_new_commit_is_fetched_and_pinned(backend: GitLogicRepository, origin: dict[str, str]) -> None:
    url = origin["url"]
    backend.checkout(url, origin["B"])
    c = _commit(Path(url), {"model.sql": "select 'C'\n"}, "C")
    assert backend.resolve(url, "main") == c
    assert (backend.checkout(url, c).path / "model.sql").read_text() == "select 'C'\n"
    # Pinned: a force-push that drops C upstream does not drop it from the mirror.
    _git(Path(url), "reset", "-q", "--hard", origin["B"])
    assert backend.resolve(url, "main") == origin["B"]
    assert backend.has_commit(url, c)


def _checkout_in_child(cache: str, url: str, sha: str, barrier: object, results: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    found = GitLogicRepository(Path(cache)).checkout(url, sha)
    results.put((sha, str(found.path), (found.path / "model.sql").read_text()))  # type: ignore[attr-defined]


def test_concurrent_processes_get_their_own_checkouts(tmp_path: Path, origin: dict[str, str]) -> None:
    context = multiprocessing.get_context("spawn")
    shas = [origin["A"], origin["B"], origin["A"], origin["B"]]
    barrier, results = context.Barrier(len(shas)), context.Queue()
    cache = str(tmp_path / "shared-cache")
    processes = [
        context.Process(target=_checkout_in_child, args=(cache, origin["url"], sha, barrier, results)) for sha in shas
    ]
    for process in processes:
        process.start()
    found = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    by_sha = {sha: {(path, text) for s, path, text in found if s == sha} for sha in set(shas)}
    assert by_sha[origin["A"]] == {(str(tmp_path / "shared-cache" / "checkouts" / origin["A"]), "select 'A'\n")}
    assert by_sha[origin["B"]] == {(str(tmp_path / "shared-cache" / "checkouts" / origin["B"]), "select 'B'\n")}
    assert sorted(p.name for p in (tmp_path / "shared-cache" / "checkouts").iterdir()) == sorted(set(shas))


@pytest.mark.parametrize(
    "url",
    [
        "ext::sh -c touch% {marker}",
        "ext::sh%20-c%20touch%20{marker}",
        "fd::3",
        "-oProxyCommand=touch {marker}",
        "--upload-pack=touch {marker}",
        "ssh://-oProxyCommand=touch/x",
        "ssh://user@-host/x",
        "git://example.org/repo.git",
        "http://example.org/repo.git",
        "relative/path",
        "https://example.org/repo\n.git",
        "https://example.org/re po.git",
        "",
    ],
)
def test_unsafe_urls_are_refused(backend: GitLogicRepository, tmp_path: Path, url: str) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafeInput):
        backend.resolve(url.format(marker=marker), "main")
    assert not marker.exists()


def test_url_rules_follow_settings(tmp_path: Path) -> None:
    assert check_url("git@example.org:team/logic.git", ["https", "ssh"], False)
    with pytest.raises(UnsafeInput, match="ssh"):
        check_url("git@example.org:team/logic.git", ["https"], False)
    with pytest.raises(UnsafeInput, match="local repository paths are not allowed"):
        check_url(str(tmp_path), ["https", "ssh", "file"], False)
    with pytest.raises(NotFound):
        check_url(f"file://{tmp_path}/missing", ["file"], True)


def test_git_itself_refuses_ext_transport(backend: GitLogicRepository, tmp_path: Path) -> None:
    # Belt and braces: even if a URL slipped past check_url, GIT_ALLOW_PROTOCOL stops ext::.
    marker = tmp_path / "pwned"
    with pytest.raises(git.GitCommandError, match="transport 'ext' not allowed"):
        backend._git(["ls-remote", "--", f"ext::sh -c touch% {marker}"])
    assert not marker.exists()


BAD_REFS = [
    "--upload-pack=touch /tmp/x", "-b", "a..b", "a b", "a:b", "a~1", "HEAD^", "a?", "a*", "a[b", "@", "a@{1}",
    ".hidden", "dir/.hidden", "x.lock", "a//b", "/a", "a/", "a.", "a\\b", "a\x00b", "a\tb", "a\x7fb", "",
]  # fmt: skip
GOOD_REFS = ["main", "feature/x", "v1.0", "release-2024_01", "refs/heads/main", "HEAD", "a@b", "0" * 40]


@pytest.mark.parametrize("ref", BAD_REFS)
def test_bad_refs_are_refused(backend: GitLogicRepository, origin: dict[str, str], ref: str) -> None:
    with pytest.raises(UnsafeInput):
        backend.resolve(origin["url"], ref)


@pytest.mark.parametrize("ref", [r for r in BAD_REFS + GOOD_REFS if r and not r.startswith("-") and "\x00" not in r])
def test_ref_rules_agree_with_git(ref: str) -> None:
    git_says = subprocess.run(["git", "check-ref-format", "--allow-onelevel", ref], capture_output=True).returncode
    try:
        check_ref(ref)
        ours = 0
    except UnsafeInput:
        ours = 1
    assert ours == (0 if git_says == 0 else 1)


def test_factory_reads_settings(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, logic=LogicSettings(cache_dir=tmp_path / "c", allowed_schemes=["https"]))
    backend = logic_backend(settings)
    assert isinstance(backend, GitLogicRepository)
    assert backend.cache_dir == (tmp_path / "c").resolve()
    with pytest.raises(UnsafeInput, match="scheme 'file' is not allowed"):
        backend.resolve(f"file://{tmp_path}", "main")
