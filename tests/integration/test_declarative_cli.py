"""`userorg declarative plan DIR [--against SOURCE]`: offline plans with CI exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.gitrepo import GitRepo, members_doc, org_doc

USERORG = [sys.executable, "-m", "userorg"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "declarative"


def plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*USERORG, "declarative", "plan", *args], capture_output=True, text=True, timeout=60
    )


def test_exit_codes_no_change_changes_invalid(tmp_path: Path) -> None:
    org = tmp_path / "acme"
    shutil.copytree(EXAMPLES / "orgs" / "acme", org)
    changes = plan(str(org))
    assert changes.returncode == 2, changes.stderr
    assert "+ member ada@acme.example.com: roles=[OrgOwner]" in changes.stdout
    assert "budget policy" in changes.stdout
    same = plan(str(org), "--against", str(EXAMPLES / "orgs" / "acme"))
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no changes" in same.stdout

    (org / "members.yaml").write_text(
        "apiVersion: userorg/v1\nkind: MemberList\nmembers:\n"
        "  - email: ada@acme.example.com\n    roles: [OrgOwner]\n    admin: true\n"
    )
    invalid = plan(str(org))
    assert invalid.returncode == 1
    assert "acme/members.yaml:6: members[0].admin: unknown field" in invalid.stderr
    assert "Traceback" not in invalid.stderr


def test_plan_against_a_git_repository_with_many_orgs(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "repo")
    repo.write(
        {
            "orgs/acme/org.yaml": org_doc(name="Acme"),
            "orgs/acme/members.yaml": members_doc(
                {"a@example.com": ["OrgOwner"], "b@example.com": ["Developer"]}
            ),
            "orgs/globex/org.yaml": org_doc(name="Globex"),
        }
    )
    work = tmp_path / "checkout"
    shutil.copytree(repo.path / "orgs", work)
    assert plan(str(work), "--against", repo.url, "--path", "orgs").returncode == 0

    (work / "acme" / "members.yaml").write_text(
        "apiVersion: userorg/v1\nkind: MemberList\nmembers:\n"
        "  - {email: a@example.com, roles: [OrgOwner]}\n"
    )
    kept = plan(str(work), "--against", repo.url, "--path", "orgs")
    assert kept.returncode == 0  # a removal without --prune changes nothing
    assert "! member b@example.com: not in Git; kept because pruning is off" in kept.stdout
    pruned = plan(str(work), "--against", str(repo.path), "--path", "orgs", "--prune", "--json")
    assert pruned.returncode == 2, pruned.stderr
    assert '"target": "b@example.com"' in pruned.stdout

    missing = plan(str(work), "--against", repo.url, "--branch", "nope")
    assert missing.returncode == 1
    assert "branch 'nope' does not exist" in missing.stdout


def test_the_shipped_example_repository_is_valid() -> None:
    result = plan(str(EXAMPLES / "orgs"))
    assert result.returncode == 2, result.stderr
    assert "Plan for org acme" in result.stdout
    assert "Plan for org globex" in result.stdout
