"""`make opa-test` inside `make test`: the Rego test suite on regorus (and on OPA's own Go
engine), and the runner's own behaviour on failing and broken policies."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import services
from userorg.authz import testing
from userorg.settings import Settings

POLICIES = Settings().effective_policy_dir
USERORG = [sys.executable, "-m", "userorg"]


def require_opa_bindings() -> None:
    try:
        import opa_bindings  # noqa: F401
    except ImportError:
        message = "opa-golib-python-bindings is not installed (the Makefile installs it)"
        if services.CI:
            pytest.fail(message)
        pytest.skip(message)


def test_policy_suite_passes_on_regorus_with_full_coverage() -> None:
    report = testing.run(POLICIES)
    failed = [r.name for r in report.results if not r.passed]
    assert not failed, testing.render(report, verbose=False)
    assert report.ok
    assert len(report.results) >= 50
    names = {r.name.rsplit(".", 1)[1] for r in report.results}
    assert {
        "test_every_org_role_against_every_scope",
        "test_platform_admin_allows_every_scope_in_any_org",
        "test_outsider_is_not_a_member",
        "test_cross_tenant_resource_is_denied",
        "test_suspended_principal_is_denied",
        "test_suspended_org_denies_its_members",
    } <= names
    assert {c.path for c in report.coverage} >= {"userorg/authz/main.rego"}
    assert report.coverage_percent == 100.0


def test_policy_suite_means_the_same_on_opa() -> None:
    require_opa_bindings()
    report = testing.run(POLICIES, engine_name="opa")
    failed = [r.name for r in report.results if not r.passed]
    assert not failed, testing.render(report, verbose=False)
    assert len(report.results) == len(testing.run(POLICIES).results)


def test_runner_reports_failures_and_exits_non_zero(tmp_path: Path) -> None:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    (target / "extra_test.rego").write_text(
        "package userorg.extra_test\n\n"
        "test_passes if true\n\n"
        'test_fails if {\n\tprint("looking at", input)\n\tdata.userorg.authz.decision.allow\n}\n'
    )
    result = subprocess.run(
        [*USERORG, "policy", "test", str(target)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PASS data.userorg.extra_test.test_passes" in result.stdout
    assert "FAIL data.userorg.extra_test.test_fails" in result.stdout
    assert "print: " in result.stdout
    assert "looking at" in result.stdout
    assert "coverage (lines of policy files evaluated by the tests):" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].endswith("passed, 1 failed")


def test_runner_reports_a_syntax_error(tmp_path: Path) -> None:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    (target / "broken.rego").write_text("package userorg.authz\n\ndecision := {\n")
    result = subprocess.run(
        [*USERORG, "policy", "test", str(target), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "ERROR loading policies" in result.stdout
    assert "broken.rego" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1] == "0 passed, 1 failed"


def test_runner_selects_tests_and_enforces_coverage() -> None:
    result = subprocess.run(
        [*USERORG, "policy", "test", str(POLICIES), "--run", "mfa", "--min-coverage", "100"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1  # only the MFA tests: the rest of the policy is not covered
    assert "below 100.0%" in result.stderr
    assert "test_stale_mfa_is_denied" in result.stdout
    assert "test_every_org_role" not in result.stdout


def test_the_documented_custom_policy_and_its_test_work(tmp_path: Path) -> None:
    """docs/authorization.md's custom-policy recipe, verbatim, on both engines."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "authorization.md").read_text()
    policy, test = re.findall(r"```rego\n(.*?)```", doc, re.S)[:2]
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    (target / "acme").mkdir()
    (target / "acme" / "office_hours.rego").write_text(policy)
    (target / "acme" / "office_hours_test.rego").write_text(test)
    report = testing.run(target, pattern="office_hours")
    assert [r.passed for r in report.results] == [True], testing.render(report)
    try:
        import opa_bindings  # noqa: F401
    except ImportError:
        return
    on_opa = testing.run(target, pattern="office_hours", engine_name="opa")
    assert [r.passed for r in on_opa.results] == [True], testing.render(on_opa)
