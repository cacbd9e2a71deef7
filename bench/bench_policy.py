"""Policy decision latency in-process: the Rego engine (regorus) uncached, and the decision
cache. Targets (docs/performance.md): p99 <= 100 µs uncached; a cache hit about 1-2 µs, since
the gateway asks on every request."""

from __future__ import annotations

import dataclasses
import gc
import time

from userorg.authz.catalogue import RECOMMENDED_MFA_STEP_UP_SCOPES
from userorg.authz.engine import AuthzRequest
from userorg.authz.policyset import PolicyConfig
from userorg.authz.rego import RegoEngine
from userorg.settings import Settings


def _percentiles(samples: list[float]) -> tuple[float, float]:
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def _time_each(func, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        func()
        out.append((time.perf_counter_ns() - start) / 1000)
    return out


def _row(label: str, samples: list[float]) -> None:
    p50, p99 = _percentiles(samples)
    print(f"| {label} | p50 {p50:.2f} µs | p99 {p99:.2f} µs |", flush=True)


def main() -> None:
    engine = RegoEngine(
        directory=Settings().effective_policy_dir,
        config=PolicyConfig(mfa_sensitive_scopes=RECOMMENDED_MFA_STEP_UP_SCOPES),
    )
    engine.load()
    base = AuthzRequest(
        permission="users:write",
        principal_id="0193a0e8-8a51-7f59-9c39-2f6f1f0f8a11",
        principal_type="user",
        org_id="0193a0e8-8a51-7f59-9c39-2f6f1f0f8a22",
        org_status="active",
        membership_status="active",
        roles=frozenset({"OrgAdmin"}),
        custom_role_scopes=frozenset(),
        credential_type="session",
        mfa_verified_at=time.time() - 60,
        amr=("pwd", "otp"),
    )
    cases = {
        "allow by role (users:write, OrgAdmin)": base,
        "deny scope_missing (OrgViewer)": dataclasses.replace(base, roles=frozenset({"OrgViewer"})),
        "allow, MFA-sensitive (roles:assign)": dataclasses.replace(base, permission="roles:assign"),
        "allow, API key + budget warn (inference:invoke)": dataclasses.replace(
            base,
            permission="inference:invoke",
            principal_type="service_account",
            roles=frozenset({"Developer"}),
            credential_type="api_key",
            credential_scopes=frozenset({"inference:invoke"}),
            budget_status="warn",
        ),
        "deny not_a_member": dataclasses.replace(base, membership_status=None, roles=frozenset()),
    }
    gc.collect()
    print("| in-process decision (regorus 0.13) | p50 | p99 |")
    print("|---|---|---|")
    everything: list[float] = []
    for label, request in cases.items():
        for _ in range(500):  # warm up the thread's engine
            engine.evaluate_uncached(request)
        samples = _time_each(lambda r=request: engine.evaluate_uncached(r), 20_000)  # type: ignore[misc]
        everything.extend(samples)
        _row(f"uncached: {label}", samples)
    _row("uncached: all of the above", everything)

    engine.decide(base)
    _row("cached hit (same request object)", _time_each(lambda: engine.decide(base), 200_000))
    twin = dataclasses.replace(base)
    _row("cached hit (an equal request object)", _time_each(lambda: engine.decide(twin), 200_000))
    _row(
        "building the AuthzRequest (caller's side)",
        _time_each(lambda: dataclasses.replace(base, resource_id="x"), 50_000),
    )

    try:
        from opa_bindings import OpaEngine
    except ImportError:
        return
    policy = engine.policy
    assert policy is not None
    opa = OpaEngine()
    import orjson

    for path, source in policy.modules:
        opa.add_policy(path, source)
    opa.add_data(orjson.loads(policy.data_json))
    document = base.to_input()
    for _ in range(200):
        opa.eval_document("userorg.authz.decision", document)
    _row(
        "for comparison: OPA's Go evaluator in-process (ctypes), same policy",
        _time_each(lambda: opa.eval_document("userorg.authz.decision", document), 3_000),
    )
    opa.close()


if __name__ == "__main__":
    main()
