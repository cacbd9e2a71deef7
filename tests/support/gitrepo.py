"""Real Git repositories for declarative tests, written with dulwich (no git binary)."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from dulwich import porcelain
from dulwich.repo import Repo

AUTHOR = b"Config Bot <config-bot@example.com>"


class GitRepo:
    """A non-bare repository in a temp dir; ``url`` is its ``file://`` URL."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = path
        self.branch = branch
        path.mkdir(parents=True, exist_ok=True)
        self.repo = Repo.init(str(path))
        self.repo.refs.set_symbolic_ref(b"HEAD", f"refs/heads/{branch}".encode())
        self._tick = 0

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    @property
    def head(self) -> str:
        return self.repo.refs[f"refs/heads/{self.branch}".encode()].decode()

    def write(self, files: dict[str, str | dict | list | None], message: str = "change") -> str:
        """Write (or with None, delete) files, commit everything; returns the commit id."""
        for name, content in files.items():
            target = self.path / name
            if content is None:
                if target.exists():
                    porcelain.remove(self.repo, [str(target)])
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
            target.write_text(text)
            porcelain.add(self.repo, [str(target)])
        self._tick += 1
        sha = porcelain.commit(
            self.repo,
            message=message.encode(),
            author=AUTHOR,
            committer=AUTHOR,
            commit_timestamp=int(time.time()) + self._tick,
            author_timestamp=int(time.time()) + self._tick,
        )
        return sha.decode() if isinstance(sha, bytes) else str(sha)

    def force_branch(self, commit_id: str) -> None:
        """What a force-push does to the branch: point it at another commit."""
        self.repo.refs[f"refs/heads/{self.branch}".encode()] = commit_id.encode()


def org_doc(**fields: object) -> dict:
    return {"apiVersion": "userorg/v1", "kind": "Organization", **fields}


def roles_doc(roles: list[dict]) -> dict:
    return {"apiVersion": "userorg/v1", "kind": "RoleList", "roles": roles}


def members_doc(members: dict[str, list[str]]) -> dict:
    return {
        "apiVersion": "userorg/v1",
        "kind": "MemberList",
        "members": [{"email": email, "roles": roles} for email, roles in members.items()],
    }


def accounts_doc(accounts: list[dict]) -> dict:
    return {"apiVersion": "userorg/v1", "kind": "ServiceAccountList", "serviceAccounts": accounts}


def budget_doc(**fields: object) -> dict:
    return {"apiVersion": "userorg/v1", "kind": "BudgetPolicy", **fields}
