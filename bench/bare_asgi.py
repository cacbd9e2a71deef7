"""The machine's ceiling for the gateway benchmark: a bare ASGI app answering a fixed JSON
body, served by uvicorn with the same settings as `userorg serve`."""

from __future__ import annotations

from typing import Any

BODY = b'{"decision":"allow","reason":"fixed","ttlSeconds":1}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
