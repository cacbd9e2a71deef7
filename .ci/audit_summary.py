"""Summarise pip-audit's JSON report (stdin) in a few lines: vulnerabilities found (each with
its id and fix versions), and how many distributions were audited or could not be. Exits 1
when a vulnerability is found. A run where nothing could be audited (no advisory data
reachable, as on a mirror without PyPI's JSON API) says so loudly instead of reporting a
clean bill of health."""

from __future__ import annotations

import json
import sys


def main() -> int:
    report = json.load(sys.stdin)
    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if d.get("skip_reason")]
    audited = [d for d in dependencies if not d.get("skip_reason")]
    found = [(d, v) for d in audited for v in d.get("vulns", [])]
    for dependency, vuln in found:
        fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix released"
        print(f"VULNERABLE {dependency['name']} {dependency.get('version')}: {vuln['id']} ({fixes})")
    print(
        f"dependency audit: {len(audited)} distributions audited, {len(found)} known "
        f"vulnerabilities (accepted ones excluded), {len(skipped)} could not be audited"
    )
    if dependencies and not audited:
        print(
            "dependency audit: WARNING: no advisory data was reachable (the package index does "
            "not serve PyPI's JSON API); nothing was checked - see docs/security.md"
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
