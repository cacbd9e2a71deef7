"""HTTP helpers shared by the thin route modules: ETags, If-Match, pagination parameters."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Header, Query, Response

from userorg.errors import PreconditionFailed

IfMatch = Annotated[str | None, Header(alias="If-Match", max_length=100)]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=500, description="Opaque cursor from nextCursor")]


def etag(version: int) -> str:
    return f'"{version}"'


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = etag(version)


def check_if_match(if_match: str | None, version: int) -> None:
    """Optimistic concurrency: when ``If-Match`` is given it must name the current version."""
    if if_match is None:
        return
    candidates = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if "*" in candidates or etag(version) in candidates:
        return
    raise PreconditionFailed(
        "The resource has changed since it was read",
        details={"currentVersion": version, "ifMatch": if_match},
    )


class JSONBody(Response):
    """A JSON response rendered with orjson (for bodies built outside a response model)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
