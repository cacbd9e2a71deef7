"""Shared I/O conventions: camelCase JSON, unknown fields rejected, cursor pages, errors."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Annotated, Any, Generic, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from userorg.errors import BadRequest


class InputModel(BaseModel):
    """Request bodies: camelCase only, unknown fields are an error.

    Numbers and booleans are declared ``StrictInt``/``StrictBool`` so ``"1"`` is not an int;
    UUIDs and timestamps are parsed from their JSON strings.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=False,
        extra="forbid",
        str_strip_whitespace=False,
        frozen=True,
    )


class OutputModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


T = TypeVar("T")


class Page(OutputModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class ErrorBody(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


def _lower(value: str) -> str:
    return value.lower()


def _valid_email(value: str) -> str:
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(f"invalid email address: {error}") from None
    return result.normalized.lower()


Email = Annotated[
    str, StringConstraints(min_length=3, max_length=320), AfterValidator(_valid_email)
]
Slug = Annotated[
    str,
    StringConstraints(min_length=3, max_length=63, pattern=r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$"),
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Description = Annotated[str, StringConstraints(max_length=500)]
RoleName = Annotated[
    str, StringConstraints(min_length=2, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
]
ReasonCode = Annotated[
    str, StringConstraints(min_length=2, max_length=100, pattern=r"^[a-z][a-z0-9_]*$")
]
Justification = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


def encode_cursor(values: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except Exception:
        raise BadRequest("The cursor is not valid", code="invalid_cursor") from None
    if not isinstance(value, dict):
        raise BadRequest("The cursor is not valid", code="invalid_cursor")
    return value


def isoformat(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None
