"""The in-process policy engine: Rego evaluated by regorus, decisions cached.

regorus engines must be used only on the thread that created them (a call from another thread
panics, and the panic is a ``BaseException``), so every thread gets its own engine, built from
the current policy set on first use and rebuilt when the policy set changes. The policy set is
an immutable value swapped atomically on reload: a decision runs entirely against one revision.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import structlog

from userorg.authz.cache import DecisionCache, monotonic
from userorg.authz.engine import AuthzRequest, Decision, PolicyUnavailable, decision_from_document
from userorg.authz.policyset import (
    Evaluator,
    PolicyConfig,
    PolicyLoadError,
    PolicySet,
    engine_error_message,
    fingerprint,
    is_engine_failure,
    load_policy_set,
)
from userorg.telemetry.metrics import POLICY_DECISION_SECONDS, POLICY_RELOADS

log = structlog.get_logger("userorg.authz")


class RegoEngine:
    def __init__(
        self,
        *,
        directory: Path,
        config: PolicyConfig,
        cache_size: int = 100_000,
    ) -> None:
        self.directory = directory
        self.config = config
        self.cache = DecisionCache(max_entries=cache_size)
        self._policy: PolicySet | None = None
        self._reload_lock = threading.Lock()
        self.last_error: dict[str, Any] | None = None
        self.last_reload_at: float | None = None
        self._refused_fingerprint: tuple[tuple[str, int, int], ...] | None = None

    # -- the policy set -----------------------------------------------------------------------
    @property
    def policy(self) -> PolicySet | None:
        return self._policy

    def load(self) -> PolicySet:
        """The first load: raises ``PolicyLoadError`` when the files cannot serve."""
        policy = load_policy_set(self.directory, self.config)
        self._install(policy)
        return policy

    def _disk_fingerprint(self) -> tuple[tuple[str, int, int], ...] | None:
        try:
            return fingerprint(self.directory)
        except (OSError, PolicyLoadError):
            return None

    def changed_on_disk(self) -> bool:
        """The files differ from the serving set and from the last refused one."""
        current = self._policy
        disk = self._disk_fingerprint()
        if current is None or disk is None:
            return True
        if disk == current.fingerprint:
            return self.last_error is not None  # back to the serving files: clear the error
        return disk != self._refused_fingerprint

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the policy files. A set that fails to compile or check is refused: the
        current one keeps serving and the failure is kept in ``last_error`` (shown in /readyz).
        Returns whether a new revision was installed. Safe to call from any thread."""
        with self._reload_lock:
            current = self._policy
            disk = self._disk_fingerprint()
            if not force and current is not None and disk == current.fingerprint:
                self.last_error = None  # the files on disk are the ones serving (again)
                self._refused_fingerprint = None
                return False
            if not force and disk is not None and disk == self._refused_fingerprint:
                return False  # refused before and unchanged since: keep the error, no retry
            try:
                policy = load_policy_set(self.directory, self.config)
            except (PolicyLoadError, OSError) as error:
                message = error.message if isinstance(error, PolicyLoadError) else str(error)
                details = error.details if isinstance(error, PolicyLoadError) else {}
                self.last_error = {"message": message, **details, "at": _rfc3339(time.time())}
                self._refused_fingerprint = disk
                POLICY_RELOADS.labels("refused").inc()
                log.error("policy_reload_refused", error=message, details=details)
                return False
            self._refused_fingerprint = None
            if current is not None and current.revision == policy.revision:
                # Touched but unchanged: remember the new fingerprint only.
                self._policy = policy
                self.last_error = None
                return False
            self._install(policy)
            POLICY_RELOADS.labels("installed").inc()
            log.info(
                "policy_reloaded",
                revision=policy.revision,
                previous=current.revision if current else None,
            )
            return True

    def _install(self, policy: PolicySet) -> None:
        self._policy = policy
        self.last_error = None
        self.last_reload_at = time.time()
        self.cache.clear()

    # -- decisions ----------------------------------------------------------------------------
    def decide(self, request: AuthzRequest) -> Decision:
        cache = self.cache
        entry = cache.entries.get(request)
        if entry is not None and entry[0] > monotonic():
            cache.hits += 1
            return entry[1]
        return self._evaluate(request)

    async def decide_async(self, request: AuthzRequest) -> Decision:
        return self.decide(request)

    def evaluate_uncached(self, request: AuthzRequest) -> Decision:
        """A fresh evaluation (benchmarks, tests); the result is not cached."""
        policy = self._policy
        if policy is None:
            raise PolicyUnavailable("No policy is loaded")
        return self._run(policy, request.to_input())

    def _evaluate(self, request: AuthzRequest) -> Decision:
        cache = self.cache
        cache.misses += 1
        generation = cache.generation
        policy = self._policy
        if policy is None:
            raise PolicyUnavailable("No policy is loaded")
        started = time.perf_counter()
        decision = self._run(policy, request.to_input())
        POLICY_DECISION_SECONDS.observe(time.perf_counter() - started)
        cache.put(request, decision, generation=generation)
        return decision

    def evaluate_document(self, document: dict[str, Any]) -> Decision:
        """Evaluate a ready input document (the PDP endpoint); not cached."""
        policy = self._policy
        if policy is None:
            raise PolicyUnavailable("No policy is loaded")
        return self._run(policy, document)

    def _run(self, policy: PolicySet, document: dict[str, Any]) -> Decision:
        try:
            evaluate = thread_evaluator(policy)
            result = orjson.loads(evaluate(orjson.dumps(document).decode()))
        except BaseException as error:
            if not is_engine_failure(error):
                raise
            # The engine cannot decide this input: fail closed, and start this thread over
            # with a fresh engine in case the failure left it in a bad state.
            drop_thread_evaluator(policy)
            log.error("policy_evaluation_failed", error=engine_error_message(error))
            raise PolicyUnavailable("The policy engine failed to evaluate the request") from None
        return decision_from_document(result, revision=policy.revision)

    # -- invalidation -------------------------------------------------------------------------
    def invalidate(self, *, org_id: str | None = None, principal_id: str | None = None) -> None:
        self.cache.invalidate(org_id=org_id, principal_id=principal_id)

    def clear_cache(self) -> None:
        self.cache.clear()

    def info(self) -> dict[str, Any]:
        policy = self._policy
        return {
            "engine": "regorus",
            "evaluator": policy.evaluator_kind if policy else None,
            "revision": policy.revision if policy else None,
            "packages": list(policy.packages) if policy else [],
            "modules": [path for path, _ in policy.modules] if policy else [],
            "loadedAt": _rfc3339(policy.loaded_at) if policy else None,
            "lastReloadError": self.last_error,
            "cache": {
                "entries": len(self.cache),
                "hits": self.cache.hits,
                "misses": self.cache.misses,
            },
        }


# Evaluators live in a thread-local map keyed by policy revision (the revision covers modules
# and data, so evaluators for equal policy sets are shared). They are created, used, evicted
# and - at thread exit - dropped on their own thread: regorus refuses to be dropped anywhere
# else.
_THREAD = threading.local()
_EVALUATORS_PER_THREAD = 4


def thread_evaluator(policy: PolicySet) -> Evaluator:
    evaluators: dict[str, Evaluator] | None = getattr(_THREAD, "evaluators", None)
    if evaluators is None:
        evaluators = _THREAD.evaluators = {}
    evaluate = evaluators.get(policy.revision)
    if evaluate is None:
        evaluate = policy.new_evaluator()
        while len(evaluators) >= _EVALUATORS_PER_THREAD:
            evaluators.pop(next(iter(evaluators)))
        evaluators[policy.revision] = evaluate
    return evaluate


def drop_thread_evaluator(policy: PolicySet) -> None:
    evaluators: dict[str, Evaluator] | None = getattr(_THREAD, "evaluators", None)
    if evaluators is not None:
        evaluators.pop(policy.revision, None)


def _rfc3339(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
