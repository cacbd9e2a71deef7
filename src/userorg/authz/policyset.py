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

Decisions run on regorus's compiled form (an RVM program, about twice as fast as its
interpreter) when the decision compiles and answers every canary exactly as the interpreter
does, and no custom policy is loaded; otherwise on the interpreter. The compiled form treats
an error inside a rule as "undefined" (like OPA), the interpreter fails the whole decision
(closed). The built-in policies are written so that a malformed input is denied either way
(an undefined decision is handed to the interpreter, which raises: fail closed, 503), but a
custom ``deny`` rule that errors would silently not deny on the compiled form, hence the
interpreter whenever custom policies are loaded. Which one serves is in ``/v1/policy/info``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import regorus
import structlog

from userorg.authz.catalogue import BUDGET_GATED_SCOPES, PLATFORM_SCOPES, SCOPES, SYSTEM_ROLES
from userorg.authz.engine import decision_from_document

DECISION_RULE = "data.userorg.authz.decision"
DECISION_PACKAGE = "data.userorg.authz"
CUSTOM_PACKAGE = "data.userorg.authz.custom"
MAX_MODULE_BYTES = 512 * 1024
MAX_MODULES = 500

log = structlog.get_logger("userorg.authz")

# Evaluates the decision for one input document (JSON text in, JSON text out).
Evaluator = Callable[[str], str]
# What the compiled decision answers when the rule is undefined for the input.
UNDEFINED = '"<undefined>"'


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
    # The decision compiled to an RVM program (serialized), when it behaves like the interpreter.
    program: bytes | None = None

    @property
    def evaluator_kind(self) -> str:
        return "compiled" if self.program is not None else "interpreter"

    def new_engine(self) -> regorus.Engine:
        """A regorus engine with this set loaded (use it only on the thread that built it)."""
        engine = regorus.Engine()
        for path, source in self.modules:
            engine.add_policy(path, source)
        engine.add_data_json(self.data_json)
        return engine

    def new_evaluator(self) -> Evaluator:
        """The decision for this set, for the calling thread only (regorus objects are bound
        to the thread that made them)."""
        if self.program is None:
            return _interpreter_evaluator(self.new_engine())
        compiled = _program_evaluator(self.program, self.data_json)
        interpreter: Evaluator | None = None

        def evaluate(input_json: str) -> str:
            nonlocal interpreter
            answer = compiled(input_json)
            if answer != UNDEFINED:
                return answer
            # An input the decision has no answer for (malformed): the interpreter says why
            # (it raises on the error the compiled form read as "undefined").
            if interpreter is None:
                interpreter = _interpreter_evaluator(self.new_engine())
            return interpreter(input_json)

        return evaluate


def _interpreter_evaluator(engine: regorus.Engine) -> Evaluator:
    def evaluate(input_json: str) -> str:
        engine.set_input_json(input_json)
        return str(engine.eval_rule_as_json(DECISION_RULE))

    return evaluate


def _program_evaluator(program: bytes, data_json: str) -> Evaluator:
    vm = regorus.Rvm()
    vm.load_program(regorus.Program.deserialize_binary(program)[0])
    vm.set_data_json(data_json)

    def evaluate(input_json: str) -> str:
        vm.set_input_json(input_json)
        return str(vm.execute_entry_point(DECISION_RULE))

    return evaluate


def _compile_program(
    modules: list[tuple[str, str]], data_json: str, expected: list[tuple[str, Any]]
) -> bytes | None:
    """The decision as a serialized RVM program, or None when it does not compile or does not
    answer the canaries exactly as the interpreter did (then the interpreter serves)."""
    try:
        program = regorus.Program.compile_from_modules(data_json, modules, [DECISION_RULE])
        binary = bytes(program.serialize_binary())
        evaluate = _program_evaluator(binary, data_json)
        for input_json, document in expected:
            if orjson.loads(evaluate(input_json)) != document:
                log.warning("policy_program_differs", input=input_json[:200])
                return None
    except BaseException as error:
        if not is_engine_failure(error):
            raise
        log.warning("policy_program_unavailable", error=engine_error_message(error))
        return None
    return binary


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
    custom_policies = any(p == CUSTOM_PACKAGE for p in packages)
    data = build_data(config, custom_policies=custom_policies)
    data_json = orjson.dumps(data).decode()
    engine.add_data_json(data_json)
    answers: list[tuple[str, Any]] = []
    for canary in _canaries():
        try:
            canary_json = orjson.dumps(canary).decode()
            engine.set_input_json(canary_json)
            document = orjson.loads(engine.eval_rule_as_json(DECISION_RULE))
            answers.append((canary_json, document))
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
        program=None if custom_policies else _compile_program(modules, data_json, answers),
    )


def load_policy_set(directory: Path, config: PolicyConfig) -> PolicySet:
    before = fingerprint(directory)
    return compile_policy_set(read_modules(directory), config, fingerprint=before)
