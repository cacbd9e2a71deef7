"""The decision cache: decisions keyed by their inputs (the ``AuthzRequest``), with a TTL from
the policy, dropped at once when what they rest on changes (role, membership, role definition,
org status, policy) and bounded in size.

A hit is one dict lookup and one clock read, so ``decide`` costs about a microsecond; the
lookup lives in the engines' ``decide`` (see ``rego.RegoEngine.decide``) to keep it that short.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from userorg.authz.engine import AuthzRequest, Decision

monotonic = time.monotonic
_CACHES: weakref.WeakSet[DecisionCache] = weakref.WeakSet()


class DecisionCache:
    def __init__(self, *, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.entries: dict[AuthzRequest, tuple[float, Decision]] = {}
        self._by_org: dict[str, set[AuthzRequest]] = {}
        self._by_principal: dict[str, set[AuthzRequest]] = {}
        # Bumped by every invalidation: a decision computed before one is not stored after it.
        self.generation = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        _CACHES.add(self)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, request: AuthzRequest) -> Decision | None:
        entry = self.entries.get(request)
        if entry is not None and entry[0] > monotonic():
            self.hits += 1
            return entry[1]
        self.misses += 1
        return None

    def put(self, request: AuthzRequest, decision: Decision, *, generation: int) -> None:
        if decision.ttl_seconds <= 0 or self.max_entries <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self.entries) >= self.max_entries:
                self._clear_locked()
            self.entries[request] = (monotonic() + decision.ttl_seconds, decision)
            if request.org_id is not None:
                self._by_org.setdefault(request.org_id, set()).add(request)
            self._by_principal.setdefault(request.principal_id, set()).add(request)

    def invalidate(self, *, org_id: str | None = None, principal_id: str | None = None) -> int:
        """Drop the decisions about an org and/or a principal; returns how many were dropped."""
        dropped = 0
        with self._lock:
            self.generation += 1
            keys: set[AuthzRequest] = set()
            if org_id is not None:
                keys |= self._by_org.pop(org_id, set())
            if principal_id is not None:
                keys |= self._by_principal.pop(principal_id, set())
            for key in keys:
                if self.entries.pop(key, None) is not None:
                    dropped += 1
        return dropped

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._clear_locked()

    def _clear_locked(self) -> None:
        # New objects rather than .clear(): a reader holding the old dict is never disturbed.
        self.entries = {}
        self._by_org = {}
        self._by_principal = {}


class _CacheCollector(Collector):
    """Hit and miss counts read at scrape time: counting costs the hot path nothing extra."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        caches = list(_CACHES)
        hits = CounterMetricFamily(
            "userorg_policy_cache_hits", "Decisions answered from the decision cache"
        )
        hits.add_metric([], sum(c.hits for c in caches))
        misses = CounterMetricFamily(
            "userorg_policy_cache_misses", "Decisions evaluated by the policy engine"
        )
        misses.add_metric([], sum(c.misses for c in caches))
        size = GaugeMetricFamily("userorg_policy_cache_entries", "Cached decisions")
        size.add_metric([], sum(len(c) for c in caches))
        yield hits
        yield misses
        yield size


REGISTRY.register(_CacheCollector())
