"""A real local HTTP server that receives the webhook notifier's POSTs and checks signatures."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from userorg.notifications.dispatcher import SIGNATURE_HEADER, verify_webhook_signature


class WebhookReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.messages: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.fail_next = 0  # answer 500 to this many requests (retry tests)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    ok = verify_webhook_signature(
                        receiver.secret,
                        self.headers.get("X-UserOrg-Timestamp", ""),
                        body,
                        self.headers.get(SIGNATURE_HEADER, ""),
                    )
                    if not ok:
                        receiver.bad_signatures += 1
                        self.send_response(401)
                        self.end_headers()
                        return
                    receiver.messages.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/userorg"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def find(self, **match: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if all(m.get(k) == v for k, v in match.items())]

    async def wait_for(self, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(**match)
            if found:
                return found[-1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no webhook message matching {match} within {timeout}s")
