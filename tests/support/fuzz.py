"""Contract fuzzing: schemathesis generates requests from the committed
``contracts/openapi.yaml`` (every operation, so routes added later are fuzzed without touching
this file), the in-process app answers over the ASGI transport, and every answer is checked
against the contract: no 5xx, a documented status code, the documented content type and a body
that matches the documented schema.

Generation is separated from execution: cases are drawn with Hypothesis (derandomized from a
fixed seed, so a run is reproducible) synchronously, then sent with the suite's async client on
the event loop that owns the app's database connections.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.api import Env, bearer

CONTRACT = Path(__file__).resolve().parents[2] / "contracts" / "openapi.yaml"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operations that end the fuzzer's own session or credentials: fuzzed last, and the fuzzer
# signs in again whenever its token stops working.
SELF_DESTRUCTIVE = ("/v1/auth/logout", "/v1/auth/sessions", "/v1/auth/password")


@dataclass
class FuzzReport:
    operations: int = 0
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def load_schema() -> Any:
    return schemathesis.openapi.from_path(str(CONTRACT))


def draw_cases(
    operation: Any,
    *,
    examples: int,
    fixed_seed: int,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
) -> list[Any]:
    """Draw up to ``examples`` cases per generation mode, reproducibly."""
    drawn: list[Any] = []
    for mode in modes:
        try:
            strategy = operation.as_strategy(generation_mode=mode)
        except Exception:
            continue

        @seed(fixed_seed)
        @settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def collect(case: Any) -> None:
            drawn.append(case)

        # Unsatisfiable: nothing to negate (e.g. an operation without parameters).
        with contextlib.suppress(Unsatisfiable):
            collect()
    return drawn


def _order(operation: Any) -> tuple[int, str]:
    path = operation.path
    return (1 if path.startswith(SELF_DESTRUCTIVE) else 0, f"{path} {operation.method}")


async def run_fuzz(
    env: Env,
    *,
    examples: int,
    fixed_seed: int = 20261125,
    fill: Callable[[str], dict[str, str]] | None = None,
    login: Callable[[], Any],
) -> FuzzReport:
    """Fuzz every operation as the principal ``login`` signs in; ``fill`` gives path values."""
    schema = load_schema()
    report = FuzzReport()
    token: str = await login()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in sorted(operations, key=_order):
        report.operations += 1
        for case in draw_cases(operation, examples=examples, fixed_seed=fixed_seed):
            for name, value in (fill(operation.path) if fill else {}).items():
                if case.path_parameters and name in case.path_parameters:
                    case.path_parameters[name] = value
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            headers = dict(kwargs.get("headers") or {})
            headers.pop("Authorization", None)
            headers.pop("authorization", None)
            if (await env.client.get("/v1/auth/me", headers=bearer(token))).status_code == 401:
                token = await login()
            headers.update(bearer(token))
            request: dict[str, Any] = {
                "method": kwargs["method"],
                "url": kwargs["url"],
                "headers": headers,
                "params": kwargs.get("params"),
            }
            if "json" in kwargs:
                request["json"] = kwargs["json"]
            elif "data" in kwargs:
                request["content"] = kwargs["data"]
            response: httpx.Response = await env.client.request(**request)
            report.cases += 1
            report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
            try:
                case.validate_response(response, checks=CHECKS)
            except (AssertionError, FailureGroup) as error:
                report.failures.append(
                    f"{operation.method.upper()} {operation.path} -> {response.status_code}: "
                    f"{str(error)[:600]}"
                )
    return report
