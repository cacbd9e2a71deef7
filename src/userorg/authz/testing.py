"""``make opa-test``: run the ``test_*`` rules of ``*_test.rego`` on regorus, with coverage.

Every module of the directory (policies and tests) is loaded with the data documents the service
builds (``policyset.build_data``), using the recommended MFA step-up scopes so the MFA policy is
exercised. A test passes when its rule evaluates to ``true``; ``false``, undefined or an error
fail it. Output: one line per test, the prints of failed tests, line coverage per policy file
(test files excluded), and a closing ``N passed, M failed`` line. Exit status 1 on any failure.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import regorus

from userorg.authz.catalogue import RECOMMENDED_MFA_STEP_UP_SCOPES
from userorg.authz.policyset import (
    CUSTOM_PACKAGE,
    PolicyConfig,
    build_data,
    engine_error_message,
    is_engine_failure,
    read_modules,
)

TEST_CONFIG = PolicyConfig(
    decision_ttl_seconds=60,
    mfa_sensitive_scopes=RECOMMENDED_MFA_STEP_UP_SCOPES,
    mfa_max_age_seconds=900,
)
_PACKAGE = re.compile(r"^package\s+([A-Za-z0-9_.]+)", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]*)\b", re.MULTILINE)


@dataclass
class TestResult:
    name: str
    passed: bool
    seconds: float
    error: str | None = None
    prints: list[str] = field(default_factory=list)


@dataclass
class FileCoverage:
    path: str
    covered: int
    not_covered: list[int]

    @property
    def percent(self) -> float:
        total = self.covered + len(self.not_covered)
        return 100.0 if total == 0 else 100.0 * self.covered / total


@dataclass
class Report:
    results: list[TestResult]
    coverage: list[FileCoverage]
    load_error: str | None = None

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed) + (1 if self.load_error else 0)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and bool(self.results)

    @property
    def coverage_percent(self) -> float:
        covered = sum(f.covered for f in self.coverage)
        total = covered + sum(len(f.not_covered) for f in self.coverage)
        return 100.0 if total == 0 else 100.0 * covered / total


def discover(modules: list[tuple[str, str]]) -> list[str]:
    """``data.<package>.<test_rule>`` for every test rule of the ``*_test.rego`` modules."""
    names: list[str] = []
    for path, source in modules:
        if not path.endswith("_test.rego"):
            continue
        package = _PACKAGE.search(source)
        if package is None:
            continue
        for rule in _TEST_RULE.findall(source):
            name = f"data.{package.group(1)}.{rule}"
            if name not in names:
                names.append(name)
    return names


def run(
    directory: Path,
    *,
    pattern: str | None = None,
    config: PolicyConfig = TEST_CONFIG,
    engine_name: str = "regorus",
) -> Report:
    if engine_name == "opa":
        return run_on_opa(directory, pattern=pattern, config=config)
    try:
        modules = read_modules(directory, tests=True)
        engine = regorus.Engine()
        for path, source in modules:
            engine.add_policy(path, source)
        data = build_data(config, custom_policies=CUSTOM_PACKAGE in set(engine.get_packages()))
        engine.add_data_json(orjson.dumps(data).decode())
    except BaseException as error:
        if not is_engine_failure(error):
            raise
        message = getattr(error, "message", None) or engine_error_message(error)
        return Report([], [], load_error=message)
    engine.set_gather_prints(True)
    engine.set_enable_coverage(True)
    results = []
    for name in discover(modules):
        if pattern and not re.search(pattern, name):
            continue
        started = time.perf_counter()
        engine.take_prints()
        failure_text = None
        try:
            value = orjson.loads(engine.eval_rule_as_json(name))
            passed = value is True
        except BaseException as failure:
            if not is_engine_failure(failure):
                raise
            passed, failure_text = False, engine_error_message(failure)
        prints = [str(p) for p in engine.take_prints()]
        results.append(
            TestResult(name, passed, time.perf_counter() - started, failure_text, prints)
        )
    return Report(results, _coverage(engine))


def run_on_opa(
    directory: Path, *, pattern: str | None = None, config: PolicyConfig = TEST_CONFIG
) -> Report:
    """The same tests on OPA's own Go engine (PyPI ``opa-golib-python-bindings``, a c-shared
    build of github.com/open-policy-agent/opa/v1/rego): the policies must mean the same on both
    engines, since remote deployments run them on OPA."""
    from opa_bindings import OpaEngine, OpaError

    modules = read_modules(directory, tests=True)
    prints: list[str] = []
    with OpaEngine() as engine:
        engine.print_handler = lambda message, _location: prints.append(str(message))
        try:
            for path, source in modules:
                engine.add_policy(path, source)
            packages = {f"data.{p}" for p in (_PACKAGE.findall(s)[0] for _, s in modules)}
            engine.add_data(build_data(config, custom_policies=CUSTOM_PACKAGE in packages))
        except OpaError as error:
            return Report([], [], load_error=str(error))
        results = []
        for name in discover(modules):
            if pattern and not re.search(pattern, name):
                continue
            prints.clear()
            started = time.perf_counter()
            error_text = None
            try:
                passed = engine.eval_document(name.removeprefix("data.")) is True
            except OpaError as error:
                passed = False
                error_text = None if error.code == "undefined" else str(error)
            results.append(
                TestResult(name, passed, time.perf_counter() - started, error_text, list(prints))
            )
    return Report(results, [])


def _coverage(engine: Any) -> list[FileCoverage]:
    report = orjson.loads(engine.get_coverage_report_as_json())
    files = []
    for entry in report.get("files", []):
        path = entry.get("path", "")
        if path.endswith("_test.rego"):
            continue
        files.append(
            FileCoverage(path, len(entry.get("covered", [])), list(entry.get("not_covered", [])))
        )
    return sorted(files, key=lambda f: f.path)


def render(report: Report, *, verbose: bool = True) -> str:
    lines = []
    if report.load_error:
        lines.append(f"ERROR loading policies: {report.load_error}")
    for result in report.results:
        if result.passed and not verbose:
            continue
        status = "PASS" if result.passed else "FAIL"
        lines.append(f"{status} {result.name} ({result.seconds * 1000:.1f} ms)")
        if not result.passed:
            if result.error:
                lines.append(f"    error: {result.error}")
            lines.extend(f"    print: {p}" for p in result.prints)
    if report.coverage:
        lines.append("")
        lines.append("coverage (lines of policy files evaluated by the tests):")
        for item in report.coverage:
            missing = ""
            if item.not_covered:
                missing = "  not covered: " + ", ".join(str(n) for n in item.not_covered)
            lines.append(f"  {item.path:<40} {item.percent:5.1f}%{missing}")
        lines.append(f"  {'total':<40} {report.coverage_percent:5.1f}%")
    lines.append("")
    lines.append(f"{report.passed} passed, {report.failed} failed")
    return "\n".join(lines)
