"""Optional remote decisions: an OPA server's data API, with the same policy files as a bundle.

With ``USER_ORG_OPA_URL`` set, decisions are asked of ``POST {url}/v1/data/userorg/authz/decision``
(body ``{"input": ...}``, answer ``{"result": {...}}``) instead of the in-process engine. The
policy files and the data documents are packed into an OPA bundle by ``userorg policy bundle``
(docs/authorization.md shows how to run OPA with it). Decisions are cached the same way as
in-process; an unreachable OPA, a timeout or an undefined decision fail closed (503).

``decide`` (synchronous) answers from the cache only: network I/O belongs in ``decide_async``,
which every enforcement point of this service uses.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import structlog

from userorg.authz.cache import DecisionCache, monotonic
from userorg.authz.engine import AuthzRequest, Decision, PolicyUnavailable, decision_from_document
from userorg.authz.policyset import PolicyConfig, PolicySet, load_policy_set
from userorg.ops import CheckResult
from userorg.telemetry.metrics import POLICY_DECISION_SECONDS

log = structlog.get_logger("userorg.authz")

DECISION_PATH = "/v1/data/userorg/authz/decision"


class RemoteOpaEngine:
    def __init__(
        self,
        *,
        url: str,
        timeout_seconds: float,
        directory: Path,
        config: PolicyConfig,
        cache_size: int = 100_000,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.directory = directory
        self.config = config
        self.cache = DecisionCache(max_entries=cache_size)
        self._timeout = timeout_seconds
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._policy: PolicySet | None = None
        self.reachable: bool | None = None
        self.last_error: dict[str, Any] | None = None

    @property
    def policy(self) -> PolicySet | None:
        return self._policy

    def load(self) -> PolicySet:
        """Check the local policy files (the bundle OPA should run is built from them)."""
        self._policy = load_policy_set(self.directory, self.config)
        return self._policy

    def changed_on_disk(self) -> bool:
        return False  # OPA reloads its bundle itself; nothing to watch here

    def reload(self, *, force: bool = False) -> bool:
        self.cache.clear()
        return False

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url, timeout=self._timeout, transport=self._transport
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def decide(self, request: AuthzRequest) -> Decision:
        entry = self.cache.entries.get(request)
        if entry is not None and entry[0] > monotonic():
            self.cache.hits += 1
            return entry[1]
        raise PolicyUnavailable("The remote policy engine answers through decide_async only")

    async def decide_async(self, request: AuthzRequest) -> Decision:
        cache = self.cache
        entry = cache.entries.get(request)
        if entry is not None and entry[0] > monotonic():
            cache.hits += 1
            return entry[1]
        cache.misses += 1
        generation = cache.generation
        decision = await self.evaluate_document(request.to_input())
        cache.put(request, decision, generation=generation)
        return decision

    async def evaluate_document(self, document: dict[str, Any]) -> Decision:
        started = time.perf_counter()
        try:
            response = await self._http().post(
                DECISION_PATH,
                content=orjson.dumps({"input": document}),
                headers={"Content-Type": "application/json"},
            )
        except httpx.HTTPError as error:
            self._failed(f"{type(error).__name__}: {error}")
            raise PolicyUnavailable("The OPA server cannot be reached") from None
        if response.status_code != 200:
            self._failed(f"OPA answered {response.status_code}: {response.text[:200]}")
            raise PolicyUnavailable(f"The OPA server answered {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            self._failed("OPA answered with malformed JSON")
            raise PolicyUnavailable("The OPA server answered with malformed JSON") from None
        if not isinstance(body, dict) or "result" not in body:
            # Undefined: OPA does not have the userorg bundle loaded.
            self._failed("the decision is undefined on the OPA server (bundle not loaded?)")
            raise PolicyUnavailable("The OPA server has no userorg policy loaded")
        self.reachable = True
        self.last_error = None
        POLICY_DECISION_SECONDS.observe(time.perf_counter() - started)
        return decision_from_document(body["result"], revision=self._revision())

    def _revision(self) -> str:
        return self._policy.revision if self._policy else ""

    def _failed(self, message: str) -> None:
        self.reachable = False
        self.last_error = {"message": message, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
        log.warning("opa_request_failed", url=self.url, error=message)

    async def probe(self) -> CheckResult:
        try:
            response = await self._http().get("/health")
        except httpx.HTTPError as error:
            self.reachable = False
            return CheckResult(False, {"engine": "opa", "error": type(error).__name__})
        self.reachable = response.status_code == 200
        detail = {"engine": "opa", "url": self.url, "revision": self._revision()}
        if not self.reachable:
            detail["error"] = f"health answered {response.status_code}"
        return CheckResult(self.reachable, detail)

    def invalidate(self, *, org_id: str | None = None, principal_id: str | None = None) -> None:
        self.cache.invalidate(org_id=org_id, principal_id=principal_id)

    def clear_cache(self) -> None:
        self.cache.clear()

    def info(self) -> dict[str, Any]:
        policy = self._policy
        return {
            "engine": "opa",
            "url": self.url,
            "reachable": self.reachable,
            "revision": policy.revision if policy else None,
            "packages": list(policy.packages) if policy else [],
            "modules": [path for path, _ in policy.modules] if policy else [],
            "loadedAt": None,
            "lastReloadError": self.last_error,
            "cache": {
                "entries": len(self.cache),
                "hits": self.cache.hits,
                "misses": self.cache.misses,
            },
        }


def build_bundle(policy: PolicySet) -> bytes:
    """An OPA bundle (tar.gz): the modules, ``userorg/data.json`` and a ``.manifest``.

    ``opa run --server --bundle <file>`` serves exactly the decisions the in-process engine makes.
    """
    data = orjson.loads(policy.data_json)
    files: list[tuple[str, bytes]] = [
        (
            ".manifest",
            json.dumps({"revision": policy.revision, "roots": ["userorg"]}).encode(),
        ),
        ("userorg/data.json", orjson.dumps(data["userorg"])),
    ]
    files.extend((path, source.encode()) for path, source in policy.modules)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files:
            info = tarfile.TarInfo(name="/" + name)
            info.size = len(content)
            info.mtime = int(policy.loaded_at)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
