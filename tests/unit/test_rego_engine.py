"""The in-process Rego engine: decision cache, hot reload (atomic, broken sets refused), failure
modes (fail closed) and thread safety."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from userorg.authz import cache as cache_module
from userorg.authz.engine import AuthzRequest, PolicyUnavailable, decision_from_document
from userorg.authz.policyset import PolicyConfig, PolicyLoadError, load_policy_set
from userorg.authz.rego import RegoEngine
from userorg.settings import Settings

POLICIES = Settings().effective_policy_dir

CUSTOM_DENY = """package userorg.authz.custom

deny contains {"reason": "keys_frozen", "policy_id": "acme.freeze"} if {
	input.action == "api_keys:write"
}

obligation contains {"type": "notify", "channel": "security"} if input.action == "audit:export"
"""

CUSTOM_BOOM = """package userorg.authz.custom

deny contains {"reason": "boom", "policy_id": "acme.boom"} if {
	to_number(input.context.value) > 1
}
"""


def member(permission: str, role: str = "OrgOwner", **overrides: object) -> AuthzRequest:
    values: dict[str, object] = {
        "permission": permission,
        "principal_id": "u1",
        "principal_type": "user",
        "org_id": "o1",
        "org_status": "active",
        "membership_status": "active",
        "roles": frozenset({role}),
        "custom_role_scopes": frozenset(),
    }
    values.update(overrides)
    return AuthzRequest(**values)  # type: ignore[arg-type]


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES, target)
    return target


def engine_for(directory: Path, **config: object) -> RegoEngine:
    engine = RegoEngine(directory=directory, config=PolicyConfig(**config))  # type: ignore[arg-type]
    engine.load()
    return engine


def test_cached_decision_is_the_same_object_until_invalidated(policy_dir: Path) -> None:
    engine = engine_for(policy_dir)
    request = member("users:write")
    first = engine.decide(request)
    assert first.allow
    assert engine.decide(member("users:write")) is first  # equal inputs hit the cache
    assert engine.cache.hits >= 1
    engine.invalidate(org_id="o2")
    assert engine.decide(request) is first
    engine.invalidate(principal_id="u1")
    assert request not in engine.cache.entries
    second = engine.decide(request)
    assert second == first
    assert second is not first
    engine.invalidate(org_id="o1")
    assert request not in engine.cache.entries


def test_cache_key_covers_every_input(policy_dir: Path) -> None:
    engine = engine_for(policy_dir)
    assert engine.decide(member("users:write")).allow
    assert not engine.decide(member("users:write", membership_status="suspended")).allow
    assert not engine.decide(member("users:write", org_status="suspended")).allow
    assert not engine.decide(member("users:write", role="OrgViewer")).allow
    assert not engine.decide(member("users:write", credential_scopes=frozenset())).allow
    assert not engine.decide(member("users:write", principal_status="suspended")).allow
    assert not engine.decide(member("inference:invoke", budget_status="block")).allow
    assert engine.decide(member("users:write")).allow


def test_decisions_expire_with_their_ttl(policy_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_for(policy_dir, decision_ttl_seconds=5)
    request = member("orgs:read")
    first = engine.decide(request)
    assert first.ttl_seconds == 5
    clock = time.monotonic() + 6
    monkeypatch.setattr("userorg.authz.rego.monotonic", lambda: clock)
    assert engine.decide(request) is not first


def test_zero_ttl_disables_the_cache(policy_dir: Path) -> None:
    engine = engine_for(policy_dir, decision_ttl_seconds=0)
    request = member("orgs:read")
    assert engine.decide(request).allow
    assert len(engine.cache) == 0


def test_mfa_freshness_bounds_the_ttl(policy_dir: Path) -> None:
    engine = engine_for(
        policy_dir, mfa_sensitive_scopes=frozenset({"orgs:delete"}), mfa_max_age_seconds=300
    )
    assert engine.decide(member("orgs:delete")).reason == "mfa_required"
    recent = engine.decide(member("orgs:delete", mfa_verified_at=time.time() - 290))
    assert recent.allow
    assert 0 < recent.ttl_seconds <= 10
    stale = engine.decide(member("orgs:delete", mfa_verified_at=time.time() - 400))
    assert stale.reason == "mfa_stale"
    assert stale.policy_id == "userorg.authz.mfa"


def test_a_decision_computed_before_an_invalidation_is_not_stored(policy_dir: Path) -> None:
    engine = engine_for(policy_dir)
    request = member("orgs:read")
    generation = engine.cache.generation
    decision = engine.evaluate_uncached(request)
    engine.invalidate(org_id="o1")
    engine.cache.put(request, decision, generation=generation)
    assert request not in engine.cache.entries


def test_cache_is_bounded(policy_dir: Path) -> None:
    engine = RegoEngine(directory=policy_dir, config=PolicyConfig(), cache_size=10)
    engine.load()
    for index in range(25):
        engine.decide(member("orgs:read", principal_id=f"u{index}"))
        assert len(engine.cache) <= 10


def test_hot_reload_installs_a_changed_policy(policy_dir: Path) -> None:
    engine = engine_for(policy_dir)
    before = engine.policy
    assert before is not None
    request = member("api_keys:write")
    assert engine.decide(request).allow
    assert not engine.reload()  # nothing changed on disk
    (policy_dir / "userorg" / "custom").mkdir()
    (policy_dir / "userorg" / "custom" / "freeze.rego").write_text(CUSTOM_DENY)
    assert engine.changed_on_disk()
    assert engine.reload()
    assert engine.policy is not None
    assert engine.policy.revision != before.revision
    assert "data.userorg.authz.custom" in engine.policy.packages
    denied = engine.decide(request)  # the cache was dropped with the old policy
    assert (denied.allow, denied.reason, denied.policy_id) == (False, "keys_frozen", "acme.freeze")
    exported = engine.decide(member("audit:export"))
    assert exported.allow
    assert exported.obligations == ({"type": "notify", "channel": "security"},)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("package userorg.authz\n\ndecision := {", "main"),
        ("package userorg.authz.custom\n\ndeny contains x if { x := }\n", "broken"),
        ('package userorg.authz\n\ndecision := "allow everything"\n', "well-formed"),
        ("package userorg.authz\n\ndecision := 1 / 0\n", "failed"),
    ],
)
def test_a_broken_policy_never_replaces_a_working_one(
    policy_dir: Path, content: str, fragment: str
) -> None:
    engine = engine_for(policy_dir)
    good = engine.policy
    assert good is not None
    cached = engine.decide(member("users:write"))
    (policy_dir / "broken.rego").write_text(content)
    assert not engine.reload()
    assert engine.policy is good
    assert engine.last_error is not None
    assert engine.last_error["message"]
    assert engine.decide(member("users:write")) is cached  # still serving, cache kept
    assert engine.decide(member("users:write", role="OrgViewer")).reason == "scope_missing"
    info = engine.info()
    assert info["revision"] == good.revision
    assert info["lastReloadError"] == engine.last_error
    (policy_dir / "broken.rego").unlink()
    engine.reload()
    assert engine.last_error is None


def test_unreadable_or_missing_policies_fail_the_first_load(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="does not exist"):
        load_policy_set(tmp_path / "nope", PolicyConfig())
    (tmp_path / "only.rego").write_text("package something.else\n\nx := 1\n")
    with pytest.raises(PolicyLoadError, match=r"userorg\.authz"):
        load_policy_set(tmp_path, PolicyConfig())
    (tmp_path / "huge.rego").write_text("package userorg.authz\n# " + "x" * 600_000)
    with pytest.raises(PolicyLoadError, match="larger than"):
        load_policy_set(tmp_path, PolicyConfig())


def test_an_evaluation_error_fails_closed(policy_dir: Path) -> None:
    (policy_dir / "boom.rego").write_text(CUSTOM_BOOM)
    engine = engine_for(policy_dir)
    assert engine.decide(member("orgs:read", context={"value": "5"})).reason == "boom"
    with pytest.raises(PolicyUnavailable):
        engine.decide(member("orgs:read", context={"value": "not a number"}))
    # The engine keeps working for everything else (a fresh thread engine after the failure).
    assert engine.decide(member("orgs:read", context={"value": "0"})).allow


def test_no_policy_means_no_decision(policy_dir: Path) -> None:
    engine = RegoEngine(directory=policy_dir, config=PolicyConfig())
    with pytest.raises(PolicyUnavailable):
        engine.decide(member("orgs:read"))
    assert engine.info()["revision"] is None


@pytest.mark.parametrize(
    "document",
    [
        None,
        "allow",
        {"allow": "true", "reason": "x", "policy_id": "p"},
        {"allow": True, "reason": 1, "policy_id": "p"},
        {"allow": True, "reason": "x", "policy_id": "p", "obligations": ["nope"]},
        {"allow": True, "reason": "x", "policy_id": "p", "ttl_seconds": True},
    ],
)
def test_malformed_decisions_deny(document: object) -> None:
    decision = decision_from_document(document, revision="r")
    assert not decision.allow
    assert decision.reason == "policy_error"


def test_concurrent_threads_and_reloads_never_crash_the_engine(policy_dir: Path) -> None:
    """regorus engines are single-threaded: each thread gets its own, rebuilt on reload."""
    engine = engine_for(policy_dir)
    roles = ["OrgOwner", "OrgAdmin", "BillingAdmin", "Developer", "OrgViewer"]
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(seed: int) -> None:
        try:
            for index in range(400):
                role = roles[(seed + index) % len(roles)]
                request = member(
                    "users:write" if index % 2 else "orgs:read",
                    role=role,
                    principal_id=f"u{seed}-{index % 50}",
                )
                decision = engine.decide(request)
                expected = request.permission == "orgs:read" or role in {"OrgOwner", "OrgAdmin"}
                assert decision.allow is expected, (request, decision)
                if index % 97 == 0:
                    engine.invalidate(principal_id=request.principal_id)
        except BaseException as error:  # a regorus panic is a BaseException
            errors.append(error)

    def reloader() -> None:
        flip = False
        while not stop.is_set():
            path = policy_dir / "extra.rego"
            if flip:
                path.unlink(missing_ok=True)
            else:
                path.write_text("package userorg.authz.extra\n\nx := 1\n")
            flip = not flip
            engine.reload()
            time.sleep(0.01)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    reload_thread = threading.Thread(target=reloader)
    reload_thread.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    reload_thread.join()
    assert not errors, errors[:3]


def test_cache_metrics_are_exported() -> None:
    from prometheus_client import generate_latest

    text = generate_latest().decode()
    assert "userorg_policy_cache_hits_total" in text
    assert "userorg_policy_cache_entries" in text
    assert cache_module.DecisionCache(max_entries=1) is not None
