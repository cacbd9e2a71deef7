"""The route table, read from the app's OpenAPI document, for generated tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from userorg.main import PUBLIC_ROUTES


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    has_body: bool

    @property
    def public(self) -> bool:
        return (self.method, self.path) in PUBLIC_ROUTES

    @property
    def org_scoped(self) -> bool:
        return "{orgId}" in self.path

    def url(self, **values: str) -> str:
        url = self.path
        defaults = {"roleName": "Developer"}
        for name in [part[1:-1] for part in self.path.split("/") if part.startswith("{")]:
            url = url.replace(
                "{" + name + "}", values.get(name) or defaults.get(name) or str(uuid.uuid4())
            )
        return url


def operations(app: FastAPI) -> list[Operation]:
    document: dict[str, Any] = app.openapi()
    result = []
    for path, item in document["paths"].items():
        for method, spec in item.items():
            result.append(Operation(method.upper(), path, "requestBody" in spec))
    return sorted(result, key=lambda op: (op.path, op.method))
