"""The real command line: serve, bootstrap once, fail fast on bad configuration."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.services import free_port

USERORG = [sys.executable, "-m", "userorg"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USER_ORG_")}
    env.update(
        USER_ORG_DATA_DIR=str(tmp_path / "var"),
        USER_ORG_ARGON2_MEMORY_KIB="8192",
        USER_ORG_ARGON2_TIME_COST="1",
        USER_ORG_LOG_LEVEL="warning",
        **extra,
    )
    return env


def _wait_healthy(port: int, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited early"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become healthy")


def test_first_start_prints_generated_admin_once_and_it_can_sign_in(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path, USER_ORG_ADMIN_API_PORT=str(port))
    process = subprocess.Popen(
        [*USERORG, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_healthy(port, process)
        process.terminate()
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (exit -15).
    assert process.returncode in {0, -15}, output
    lines = [line for line in output.splitlines() if "password:" in line]
    assert len(lines) == 1, output
    password = lines[0].split("password:")[1].strip()

    # Second start: same database, no new password, and the first one signs in.
    process = subprocess.Popen(
        [*USERORG, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_healthy(port, process)
        login = httpx.post(
            f"http://127.0.0.1:{port}/v1/auth/login",
            json={"email": "admin@userorg.local", "password": password},
            timeout=10,
        )
        assert login.status_code == 200, login.text
        assert "server" not in login.headers
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.json()["checks"]["database"]["status"] == "up"
        process.terminate()
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert "password:" not in output
    assert process.returncode in {0, -15}


def test_bad_configuration_fails_with_one_line(tmp_path: Path) -> None:
    for extra, variable in (
        ({"USER_ORG_ADMIN_API_PORT": "not-a-port"}, "USER_ORG_ADMIN_API_PORT"),
        (
            {"USER_ORG_BOOTSTRAP_ADMIN_PASSWORD": "password1234"},
            "USER_ORG_BOOTSTRAP_ADMIN_PASSWORD",
        ),
        ({"USER_ORG_MODE": "production"}, "USER_ORG_DATABASE_URL"),
    ):
        result = subprocess.run(
            [*USERORG, "serve"],
            env=_env(tmp_path, **extra),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (extra, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert variable in lines[0]
        assert "Traceback" not in result.stderr + result.stdout


def test_bootstrap_command_never_overwrites(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        USER_ORG_BOOTSTRAP_ADMIN_EMAIL="ops@example.com",
        USER_ORG_BOOTSTRAP_ADMIN_PASSWORD="Sturdy-Operator-Passphrase-9",
    )
    first = subprocess.run(
        [*USERORG, "bootstrap"], env=env, capture_output=True, text=True, timeout=60
    )
    assert first.returncode == 0, first.stderr
    assert "created platform admin ops@example.com" in first.stdout
    second = subprocess.run(
        [*USERORG, "bootstrap"], env=env, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 0
    assert "already exists" in second.stdout


def test_schema_drift_command_is_clean() -> None:
    result = subprocess.run([*USERORG, "schema-drift"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "no schema drift" in result.stdout
