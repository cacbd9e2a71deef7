"""Strict JSON: what ``json.loads`` accepts but the service refuses.

Python's parser (and so FastAPI's) takes duplicate keys (the last one silently wins) and the
non-standard constants ``NaN``/``Infinity``; msgspec (the gateway's hot path) takes duplicate
keys too. Two parsers disagreeing about which of two ``credential`` fields counts is how
request-smuggling-style bugs start, so a body with either is refused with 400 before any
handler sees it. So is a NUL character (``\\u0000``) in any string, which PostgreSQL text
cannot hold (the contract fuzzer found the 500 it caused). Syntax errors are left to the
normal handling (``malformed_json``).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

MAX_DEPTH = 64


class StrictJSONError(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise StrictJSONError(f"duplicate key {key!r}"[:120])
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON")


def _depth(body: bytes) -> int:
    """Nesting depth outside strings (cheap; bodies are size-limited)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def problem(body: bytes) -> str | None:
    """Why ``body`` is refused (duplicate keys, NaN/Infinity, nesting deeper than
    ``MAX_DEPTH``), or None: valid strict JSON, or not JSON at all (left to the parser)."""
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
        return f"the body is nested deeper than {MAX_DEPTH} levels"
    try:
        document = json.loads(body, object_pairs_hook=_pairs, parse_constant=_constant)
    except StrictJSONError as error:
        return str(error)
    except (ValueError, RecursionError):
        return None
    if b"\\u0000" in body and _has_nul(document):
        # PostgreSQL text cannot hold NUL; SQLite can: refused alike in both modes.
        return "a string contains a NUL character (\\u0000)"
    return None


def hot_path_problem(body: bytes) -> str | None:
    """``problem(body)``, exactly, at a fifth of the cost for the gateway's small bodies.

    Without a backslash in the body no string holds an escape, so re-encoding the parsed
    document compactly keeps every colon inside a string and one colon per key it kept: fewer
    colons than in the body means a key was repeated (a duplicate collapses on parsing). Then
    (and for bodies with escapes or deep nesting, or that msgspec cannot parse) the full check
    runs and says why."""
    if b"\\" in body or body.count(b"[") + body.count(b"{") > MAX_DEPTH:
        return problem(body)
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return problem(body)  # NaN/Infinity named, or not JSON at all
    if msgspec.json.encode(document).count(b":") != body.count(b":"):
        return problem(body)
    return None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def nul_in_target(path: str, query_string: bytes) -> bool:
    """A NUL character in the path or the query (raw or percent-encoded)."""
    return "\x00" in path or b"\x00" in query_string or b"%00" in query_string


def looks_like_json(content_type: bytes | None) -> bool:
    """Bodies FastAPI parses as JSON: no content type, or application/json or ``+json``."""
    if content_type is None:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )
