"""The in-process Rego engine: decision cache, hot reload (atomic, broken sets refused), failure
modes (fail closed) and thread safety."""

from __future__ import annotations

import copy
import dataclasses
import random
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from userorg.authz import cache as cache_module
from userorg.authz.engine import AuthzRequest, PolicyUnavailable, decision_from_document
from userorg.authz.policyset import (
    PolicyConfig,
    PolicyLoadError,
    is_engine_failure,
    load_policy_set,
)
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
    # Custom policies run on the interpreter: an error in a rule fails the decision (closed);
    # the compiled form would read it as "undefined", i.e. no denial.
    assert engine.info()["evaluator"] == "interpreter"
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


def test_the_compiled_decision_answers_exactly_like_the_interpreter(policy_dir: Path) -> None:
    policy = load_policy_set(
        policy_dir, PolicyConfig(mfa_sensitive_scopes=frozenset({"roles:assign"}))
    )
    assert policy.evaluator_kind == "compiled"
    compiled = policy.new_evaluator()
    interpreter = dataclasses.replace(policy, program=None).new_evaluator()
    now = time.time()
    compared = 0
    for permission in (
        "orgs:read",
        "users:write",
        "roles:assign",
        "api_keys:write",
        "inference:invoke",
        "audit:export",
        "platform:orgs:create",
        "no:such",
    ):
        for role in ("OrgOwner", "OrgAdmin", "Developer", "OrgViewer", "Nobody"):
            for overrides in (
                {},
                {"org_status": "suspended"},
                {"membership_status": None, "roles": frozenset()},
                {"mfa_verified_at": now - 60, "amr": ("pwd", "otp")},
                {"mfa_verified_at": now - 5000, "amr": ("pwd", "otp")},
                {"credential_type": "api_key", "credential_scopes": frozenset({permission})},
                {"credential_type": "api_key", "credential_scopes": frozenset()},
                {"budget_status": "warn"},
                {"budget_status": "block"},
                {"is_platform_admin": True},
            ):
                document = orjson.dumps(member(permission, role, **overrides).to_input()).decode()
                assert orjson.loads(compiled(document)) == orjson.loads(interpreter(document))
                compared += 1
    assert compared == 8 * 5 * 10


def test_a_policy_the_compiler_cannot_serve_falls_back_to_the_interpreter(
    policy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import regorus

    def refuse(*_args: object) -> object:
        raise RuntimeError("unsupported by the compiler")

    assert engine_for(policy_dir).info()["evaluator"] == "compiled"
    monkeypatch.setattr(regorus.Program, "compile_from_modules", refuse)
    engine = engine_for(policy_dir)
    assert engine.policy is not None and engine.policy.evaluator_kind == "interpreter"
    assert engine.info()["evaluator"] == "interpreter"
    assert engine.decide(member("orgs:read")).allow
    assert engine.decide(member("orgs:delete", "OrgViewer")).reason == "scope_missing"


def _malformed_inputs(count: int) -> Iterator[dict[str, Any]]:
    """Well-formed inputs with up to three parts removed or replaced by values of other types."""
    rng = random.Random(20261125)
    values: list[Any] = [
        None,
        True,
        False,
        0,
        1,
        -5,
        1.5,
        "",
        "x",
        "active",
        "suspended",
        "user",
        "warn",
        "block",
        [],
        ["OrgOwner"],
        ["inference:invoke"],
        {},
        {"a": 1},
    ]
    paths = [
        ("subject",),
        ("subject", "type"),
        ("subject", "status"),
        ("subject", "platform_admin"),
        ("subject", "roles"),
        ("subject", "custom_role_scopes"),
        ("subject", "mfa"),
        ("subject", "mfa", "verified_at"),
        ("org",),
        ("org", "id"),
        ("org", "status"),
        ("membership",),
        ("membership", "status"),
        ("credential",),
        ("credential", "scopes"),
        ("budget",),
        ("budget", "status"),
        ("resource",),
        ("resource", "org_id"),
        ("now",),
    ]
    actions = [
        "orgs:read",
        "users:write",
        "roles:assign",
        "inference:invoke",
        "platform:orgs:create",
        "no:such",
        None,
        5,
    ]
    for _ in range(count):
        document = member(
            rng.choice(actions) or "orgs:read",
            "OrgAdmin",
            credential_type="api_key",
            credential_scopes=frozenset({"inference:invoke"}),
            budget_status="ok",
            mfa_verified_at=time.time() - 10,
            resource_org_id="o1",
        ).to_input()
        document["action"] = rng.choice(actions)
        for _ in range(rng.randint(0, 3)):
            *parents, leaf = rng.choice(paths)
            target: Any = document
            for key in parents:
                target = target.get(key) if isinstance(target, dict) else None
            if not isinstance(target, dict):
                continue
            if rng.random() < 0.3:
                target.pop(leaf, None)
            else:
                target[leaf] = copy.deepcopy(rng.choice(values))
        yield document


def test_on_malformed_input_the_compiled_decision_never_allows_more(policy_dir: Path) -> None:
    """Differential check of the compiled decision against the interpreter on 3,000 inputs
    with missing or mistyped parts: the same answer, or - where the interpreter fails on a
    type error - a denial (the compiled form reads the error as OPA does: undefined)."""
    policy = load_policy_set(
        policy_dir, PolicyConfig(mfa_sensitive_scopes=frozenset({"roles:assign"}))
    )
    compiled = policy.new_evaluator()
    interpreter = dataclasses.replace(policy, program=None).new_evaluator()
    outcomes = {"same": 0, "denied_where_the_interpreter_failed": 0}
    for document in _malformed_inputs(3_000):
        input_json = orjson.dumps(document).decode()
        try:
            expected: Any = orjson.loads(interpreter(input_json))
        except BaseException as error:  # regorus raises a panic type outside Exception
            if not is_engine_failure(error):
                raise
            expected = None
        try:
            answer: Any = orjson.loads(compiled(input_json))
        except BaseException as error:
            if not is_engine_failure(error):
                raise
            answer = None
        if answer == expected:
            outcomes["same"] += 1
        else:
            assert expected is None, (document, answer, expected)
            assert decision_from_document(answer, revision="").allow is False, (document, answer)
            outcomes["denied_where_the_interpreter_failed"] += 1
    assert outcomes["same"] > 2_000
