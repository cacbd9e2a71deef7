"""Per-request facts that every layer may read: request id, client address, user agent."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestInfo:
    request_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None


_current: ContextVar[RequestInfo] = ContextVar("userorg_request", default=RequestInfo())  # noqa: B039 (frozen)


def current_request() -> RequestInfo:
    return _current.get()


def set_current_request(info: RequestInfo) -> None:
    _current.set(info)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did something, as the audit trail records it."""

    type: str
    id: str | None = None

    @classmethod
    def system(cls, name: str = "userorg") -> Actor:
        return cls(type="system", id=name)


ANONYMOUS = Actor(type="anonymous")
