"""Reading declared configuration from Git with dulwich (no git binary needed).

Local paths and ``file://`` URLs are opened in place; ``https://`` (and ``http://``)
repositories are mirrored into a bare repository under the cache directory and fetched
incrementally, with a token from the settings sent as HTTP basic auth. Orgs that share a
repository share its mirror and its fetches: a fetch that started after a caller's
``not_before`` time answers that caller too.

Everything here is synchronous (dulwich is); the reconciler calls it in a worker thread and
never while it holds a database transaction.
"""

from __future__ import annotations

import hashlib
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from dulwich.client import HTTPUnauthorized, default_urllib3_manager, get_transport_and_path
from dulwich.config import ConfigDict
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository
from dulwich.objects import Blob, Commit, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo

from userorg.declarative.schema import is_config_file

MAX_ANCESTRY_WALK = 200_000


def _has(repo: Repo, commit_id: str) -> bool:
    try:
        repo[commit_id.encode()]
    except KeyError:
        return False
    return True


class SourceError(Exception):
    """The repository could not be read. ``code`` is stable; the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Head:
    commit_id: str
    fetched_at: float


def normalize_url(url: str) -> str:
    """The form used to match a webhook's repository to orgs' repo URLs."""
    value = url.strip()
    if "://" not in value and not value.startswith("/"):
        return value.rstrip("/").removesuffix(".git").lower()
    parsed = urlparse(value)
    if parsed.scheme in {"http", "https"}:
        host = (parsed.hostname or "").lower()
        if parsed.port and parsed.port not in {80, 443}:
            host += f":{parsed.port}"
        return f"{host}{parsed.path.rstrip('/').removesuffix('.git')}".lower()
    if parsed.scheme == "file" or not parsed.scheme:
        return "file://" + str(PurePosixPath(unquote(parsed.path))).rstrip("/").removesuffix(".git")
    return value.rstrip("/").removesuffix(".git").lower()


def local_path(url: str) -> Path | None:
    """The filesystem path of a local repository URL, or None for a remote one."""
    if url.startswith("file://"):
        return Path(unquote(urlparse(url).path))
    if "://" not in url:
        return Path(url)
    return None


def safe_subpath(path: str) -> str:
    """A repository-relative folder; '' for the root. Refuses absolute paths and '..'."""
    parts = [p for p in PurePosixPath(path.strip()).parts if p not in {"", "."}]
    if any(p == ".." for p in parts) or path.strip().startswith("/"):
        raise SourceError("invalid_path", f"path {path!r} must stay inside the repository")
    return "/".join(parts)


class GitSource:
    def __init__(
        self,
        *,
        cache_dir: Path,
        token: str | None = None,
        username: str = "x-access-token",
        ca_bundle: Path | None = None,
        timeout: float = 30.0,
        allow_local: bool = True,
        max_files: int = 50,
        max_file_bytes: int = 1_048_576,
    ) -> None:
        self.cache_dir = cache_dir
        self._token = token
        self._username = username
        self._ca_bundle = ca_bundle
        self._timeout = timeout
        self.allow_local = allow_local
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._heads: dict[tuple[str, str], tuple[float, Head]] = {}
        self._repos: dict[str, Repo] = {}
        self._trees: dict[bytes, dict[bytes, tuple[int, bytes]]] = {}

    # -- repositories -------------------------------------------------------------------
    def _lock(self, url: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(url, threading.Lock())

    def _open(self, url: str) -> Repo:
        """The repository, kept open between calls (callers hold the URL's lock)."""
        repo = self._repos.get(url)
        if repo is None:
            repo = self._repos[url] = self._open_new(url)
        return repo

    def _reopen(self, url: str) -> Repo:
        stale = self._repos.pop(url, None)
        if stale is not None:
            stale.close()
        return self._open(url)

    def close(self) -> None:
        for repo in self._repos.values():
            repo.close()
        self._repos.clear()

    def _open_new(self, url: str) -> Repo:
        path = local_path(url)
        if path is not None:
            if not self.allow_local:
                raise SourceError(
                    "local_repo_not_allowed",
                    "local and file:// repositories are disabled here "
                    "(USER_ORG_DECLARATIVE_ALLOW_LOCAL_REPOS)",
                )
            try:
                return Repo(str(path))
            except (NotGitRepository, OSError):
                raise SourceError("repo_unreachable", f"no Git repository at {url}") from None
        mirror = self.cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".git")
        if not mirror.exists():
            mirror.parent.mkdir(parents=True, exist_ok=True)
            return Repo.init_bare(str(mirror), mkdir=True)
        return Repo(str(mirror))

    def _fetch_remote(self, url: str, repo: Repo, branch: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme not in {"https", "http"}:
            raise SourceError("unsupported_url", f"unsupported repository URL scheme in {url}")
        config = ConfigDict()
        if self._ca_bundle is not None:
            config.set((b"http",), b"sslCAInfo", str(self._ca_bundle).encode())
        pool = default_urllib3_manager(config, base_url=url, timeout=self._timeout)
        client, path = get_transport_and_path(
            url,
            config=config,
            username=self._username if self._token else None,
            password=self._token,
            pool_manager=pool,  # type: ignore[arg-type]
        )
        ref = Ref(f"refs/heads/{branch}".encode())
        found: dict[str, Any] = {}

        def wants(refs: object, depth: int | None = None) -> list[bytes]:
            assert isinstance(refs, dict)
            sha = refs.get(ref)
            if sha is None:
                return []
            found["sha"] = sha
            return [] if sha in repo.object_store else [sha]

        try:
            client.fetch(path, repo, determine_wants=wants)  # type: ignore[arg-type]
        except HTTPUnauthorized:
            raise SourceError(
                "auth_failed", f"{url} refused the credentials (USER_ORG_DECLARATIVE_GIT_TOKEN)"
            ) from None
        except (GitProtocolError, HangupException, NotGitRepository, OSError) as error:
            raise SourceError("repo_unreachable", f"cannot fetch {url}: {error}") from None
        except Exception as error:  # urllib3 and TLS errors have many shapes
            raise SourceError(
                "repo_unreachable", f"cannot fetch {url}: {type(error).__name__}: {error}"
            ) from None
        if "sha" not in found:
            raise SourceError("branch_not_found", f"branch {branch!r} does not exist in {url}")
        sha: bytes = found["sha"]
        repo.refs[ref] = sha  # type: ignore[assignment]
        return sha.decode()

    def head(self, url: str, branch: str, *, not_before: float = 0.0) -> Head:
        """The branch's current commit. Reuses a fetch that started at or after ``not_before``."""
        key = (url, branch)
        with self._lock(url):
            cached = self._heads.get(key)
            if cached is not None and cached[0] >= not_before:
                return cached[1]
            started = time.time()
            repo = self._reopen(url)  # a fresh view of the refs and packs
            if local_path(url) is not None:
                try:
                    sha = repo.refs[Ref(f"refs/heads/{branch}".encode())].decode()
                except KeyError:
                    raise SourceError(
                        "branch_not_found", f"branch {branch!r} does not exist in {url}"
                    ) from None
            else:
                sha = self._fetch_remote(url, repo, branch)
            head = Head(sha, started)
            self._heads[key] = (started, head)
            return head

    def _tree(self, repo: Repo, sha: bytes) -> dict[bytes, tuple[int, bytes]] | None:
        """A tree's entries by name (cached by id: trees never change, big ones are costly)."""
        cached = self._trees.get(sha)
        if cached is None:
            obj = repo[sha]
            if not isinstance(obj, Tree):
                return None
            cached = {entry.path: (entry.mode, entry.sha) for entry in obj.items()}
            if len(self._trees) >= 256:
                self._trees.pop(next(iter(self._trees)))
            self._trees[sha] = cached
        return cached

    def forget(self, url: str, branch: str) -> None:
        self._heads.pop((url, branch), None)

    # -- content ------------------------------------------------------------------------
    def read_folder(self, url: str, commit_id: str, path: str) -> dict[str, bytes]:
        """The YAML files directly inside ``path`` at ``commit_id`` (name -> bytes)."""
        folder = safe_subpath(path)
        with self._lock(url):
            repo = self._open(url)
            if not _has(repo, commit_id):
                repo = self._reopen(url)  # written since we opened it
            try:
                commit = repo[commit_id.encode()]
                if not isinstance(commit, Commit):
                    raise SourceError("bad_commit", f"{commit_id} is not a commit")
                tree = self._tree(repo, commit.tree)
                for part in folder.split("/") if folder else []:
                    entry = tree.get(part.encode()) if tree is not None else None
                    tree = self._tree(repo, entry[1]) if entry is not None else None
                    if tree is None:
                        raise SourceError(
                            "path_not_found",
                            f"{folder}/ does not exist at commit {commit_id[:12]}",
                        )
                assert tree is not None
                names = [
                    (name.decode("utf-8", "replace"), sha)
                    for name, (mode, sha) in tree.items()
                    if not stat.S_ISDIR(mode) and is_config_file(name.decode("utf-8", "replace"))
                ]
                if len(names) > self.max_files:
                    raise SourceError(
                        "too_many_files",
                        f"{folder or '/'} has {len(names)} YAML files; the limit is "
                        f"{self.max_files}",
                    )
                files: dict[str, bytes] = {}
                for name, sha in names:
                    obj = repo[sha]
                    if not isinstance(obj, Blob):
                        continue
                    data = obj.as_raw_string()
                    if len(data) > self.max_file_bytes:
                        raise SourceError(
                            "file_too_large",
                            f"{name} is {len(data)} bytes; the limit is {self.max_file_bytes}",
                        )
                    files[name] = data
                return files
            except KeyError:
                raise SourceError(
                    "bad_commit", f"commit {commit_id[:12]} is not in the repository"
                ) from None

    def is_ancestor(self, url: str, ancestor: str, commit_id: str) -> bool:
        """True when ``ancestor`` is ``commit_id`` or one of its ancestors."""
        if ancestor == commit_id:
            return True
        with self._lock(url):
            repo = self._open(url)
            if not _has(repo, commit_id):
                repo = self._reopen(url)
            target = ancestor.encode()
            queue = deque([commit_id.encode()])
            seen: set[bytes] = set()
            while queue and len(seen) < MAX_ANCESTRY_WALK:
                sha = queue.popleft()
                if sha in seen:
                    continue
                seen.add(sha)
                if sha == target:
                    return True
                try:
                    commit = repo[sha]
                except KeyError:
                    continue
                if isinstance(commit, Commit):
                    queue.extend(commit.parents)
            return False
