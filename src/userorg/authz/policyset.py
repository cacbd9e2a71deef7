"""A policy set: the Rego modules of ``policies/`` plus the data documents they read.

Data documents are built here from the scope catalogue (``authz/catalogue.py``) and the settings,
never generated as Rego code:

- ``data.userorg.catalogue``: ``scopes`` (scope → description, level) and ``system_roles``
  (role → scopes).
- ``data.userorg.config``: ``decision_ttl_seconds``, ``mfa`` (``sensitive_scopes``,
  ``max_age_seconds``), ``budget`` (``gated_scopes``).
- ``data.userorg.index.actions``: per scope, the facts the decision needs in one lookup
  (platform level, MFA-sensitive, budget-gated, the system roles granting it, the TTL, whether
  custom policies are loaded), derived from the two documents above.

A policy set is compiled and checked before it is used: every module must parse, the decision
must exist and answer well-formed decisions for a few canary inputs. A set that fails never
replaces a working one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import regorus

from userorg.authz.catalogue import BUDGET_GATED_SCOPES, PLATFORM_SCOPES, SCOPES, SYSTEM_ROLES
from userorg.authz.engine import decision_from_document

DECISION_RULE = "data.userorg.authz.decision"
DECISION_PACKAGE = "data.userorg.authz"
CUSTOM_PACKAGE = "data.userorg.authz.custom"
MAX_MODULE_BYTES = 512 * 1024
MAX_MODULES = 500


class PolicyLoadError(Exception):
    """The policy files cannot be used; ``details`` say which file and why."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The settings the policies read (data.userorg.config)."""

    decision_ttl_seconds: int = 60
    mfa_sensitive_scopes: frozenset[str] = frozenset()
    mfa_max_age_seconds: int = 900
    budget_gated_scopes: frozenset[str] = BUDGET_GATED_SCOPES


@dataclass(frozen=True, slots=True)
class PolicySet:
    revision: str
    modules: tuple[tuple[str, str], ...]  # (path relative to the policy directory, source)
    data_json: str
    packages: tuple[str, ...]
    fingerprint: tuple[tuple[str, int, int], ...] = ()
    loaded_at: float = field(default_factory=time.time)

    def new_engine(self) -> regorus.Engine:
        """A regorus engine with this set loaded (use it only on the thread that built it)."""
        engine = regorus.Engine()
        for path, source in self.modules:
            engine.add_policy(path, source)
        engine.add_data_json(self.data_json)
        return engine


def engine_error_message(error: BaseException) -> str:
    """regorus errors carry a Rust backtrace: keep the part a person reads."""
    text = str(error).split("Stack backtrace:")[0].strip()
    return text[:2000] or type(error).__name__


def is_engine_failure(error: BaseException) -> bool:
    """An error raised by regorus, including a Rust panic (a BaseException subclass)."""
    return isinstance(error, Exception) or type(error).__name__ == "PanicException"


def build_data(config: PolicyConfig, *, custom_policies: bool) -> dict[str, Any]:
    catalogue = {
        "scopes": {
            scope: {
                "description": description,
                "level": "platform" if scope in PLATFORM_SCOPES else "org",
            }
            for scope, description in SCOPES.items()
        },
        "system_roles": {role: sorted(scopes) for role, scopes in SYSTEM_ROLES.items()},
    }
    settings = {
        "decision_ttl_seconds": config.decision_ttl_seconds,
        "mfa": {
            "sensitive_scopes": sorted(config.mfa_sensitive_scopes),
            "max_age_seconds": config.mfa_max_age_seconds,
        },
        "budget": {"gated_scopes": sorted(config.budget_gated_scopes)},
    }
    actions = {
        scope: {
            "platform": scope in PLATFORM_SCOPES,
            "sensitive": scope in config.mfa_sensitive_scopes,
            "budget_gated": scope in config.budget_gated_scopes,
            "roles": {role: True for role, scopes in SYSTEM_ROLES.items() if scope in scopes},
            "ttl_seconds": config.decision_ttl_seconds,
            "custom_policies": custom_policies,
        }
        for scope in SCOPES
    }
    return {"userorg": {"catalogue": catalogue, "config": settings, "index": {"actions": actions}}}


def policy_files(directory: Path, *, tests: bool = False) -> list[Path]:
    """The ``*.rego`` files (``*_test.rego`` only with ``tests``), in a stable order."""
    if not directory.is_dir():
        raise PolicyLoadError(
            f"Policy directory {directory} does not exist",
            details={"directory": str(directory)},
        )
    files = sorted(p for p in directory.rglob("*.rego") if p.is_file())
    if not tests:
        files = [p for p in files if not p.name.endswith("_test.rego")]
    return files


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detection: (path, mtime, size) of every policy file."""
    result = []
    for path in policy_files(directory):
        stat = path.stat()
        result.append((str(path.relative_to(directory)), stat.st_mtime_ns, stat.st_size))
    return tuple(result)


def read_modules(directory: Path, *, tests: bool = False) -> list[tuple[str, str]]:
    files = policy_files(directory, tests=tests)
    if len(files) > MAX_MODULES:
        raise PolicyLoadError(f"More than {MAX_MODULES} policy files in {directory}")
    modules = []
    for path in files:
        relative = str(path.relative_to(directory))
        if path.stat().st_size > MAX_MODULE_BYTES:
            raise PolicyLoadError(
                f"{relative} is larger than {MAX_MODULE_BYTES} bytes", details={"file": relative}
            )
        try:
            modules.append((relative, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as error:
            raise PolicyLoadError(
                f"{relative} cannot be read: {error}", details={"file": relative}
            ) from None
    return modules


def _canaries() -> Iterable[dict[str, Any]]:
    """Inputs the decision must answer well-formed for (allow and deny paths)."""
    base: dict[str, Any] = {
        "now": 1_700_000_000.0,
        "subject": {
            "id": "canary",
            "type": "user",
            "status": "active",
            "platform_admin": False,
            "roles": ["OrgViewer"],
            "custom_role_scopes": [],
            "mfa": {"verified_at": None, "amr": []},
        },
        "org": {"id": "canary-org", "status": "active"},
        "membership": {"status": "active"},
    }
    yield {**base, "action": "orgs:read"}
    yield {**base, "action": "orgs:delete"}
    yield {**base, "action": "not:a-scope"}
    yield {"action": "orgs:read"}
    yield {**base, "action": "inference:invoke", "budget": {"status": "warn"}}


def compile_policy_set(
    modules: list[tuple[str, str]],
    config: PolicyConfig,
    *,
    fingerprint: tuple[tuple[str, int, int], ...] = (),
) -> PolicySet:
    """Parse, load and check the modules; raise ``PolicyLoadError`` when they cannot serve."""
    engine = regorus.Engine()
    for path, source in modules:
        try:
            engine.add_policy(path, source)
        except BaseException as error:
            if not is_engine_failure(error):
                raise
            raise PolicyLoadError(
                f"{path}: {engine_error_message(error)}",
                details={"file": path, "error": engine_error_message(error)},
            ) from None
    packages = tuple(sorted(set(engine.get_packages())))
    if DECISION_PACKAGE not in packages:
        raise PolicyLoadError(
            f"No module declares package {DECISION_PACKAGE.removeprefix('data.')}",
            details={"packages": list(packages)},
        )
    data = build_data(config, custom_policies=any(p == CUSTOM_PACKAGE for p in packages))
    data_json = orjson.dumps(data).decode()
    engine.add_data_json(data_json)
    for canary in _canaries():
        try:
            engine.set_input_json(orjson.dumps(canary).decode())
            document = orjson.loads(engine.eval_rule_as_json(DECISION_RULE))
        except BaseException as error:
            if not is_engine_failure(error):
                raise
            raise PolicyLoadError(
                f"Evaluating the decision failed: {engine_error_message(error)}",
                details={"error": engine_error_message(error), "action": canary["action"]},
            ) from None
        if decision_from_document(document, revision="").reason == "policy_error":
            raise PolicyLoadError(
                "The decision is not a well-formed {allow, reason, policy_id, obligations, "
                "ttl_seconds} object",
                details={"action": canary["action"], "got": str(document)[:500]},
            )
    digest = hashlib.sha256()
    for path, source in modules:
        digest.update(path.encode() + b"\0" + source.encode() + b"\0")
    digest.update(data_json.encode())
    return PolicySet(
        revision=digest.hexdigest()[:16],
        modules=tuple(modules),
        data_json=data_json,
        packages=packages,
        fingerprint=fingerprint,
    )


def load_policy_set(directory: Path, config: PolicyConfig) -> PolicySet:
    before = fingerprint(directory)
    return compile_policy_set(read_modules(directory), config, fingerprint=before)
