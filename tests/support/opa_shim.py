"""An OPA data API on loopback, for the remote-engine tests.

No `opa` binary can be installed here (no PyPI or npm package ships one), so this serves OPA's
documented data API (``POST /v1/data/<path>`` → ``{"result": ...}``, ``GET /health``) from
OPA's own Go evaluator (PyPI ``opa-golib-python-bindings``: github.com/open-policy-agent/opa/v1/
rego as a c-shared library), loaded from the bundle ``userorg policy bundle`` builds. The HTTP
layer is ours; the policy evaluation is OPA's.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def load_bundle(engine: Any, bundle: bytes) -> str:
    """Load an OPA bundle the way OPA does: modules, data.json per directory, the manifest."""
    revision = ""
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member)
            if handle is None:
                continue
            name = member.name.lstrip("/")
            content = handle.read()
            if name == ".manifest":
                revision = json.loads(content).get("revision", "")
            elif name.endswith(".rego"):
                engine.add_policy(name, content.decode())
            elif name.endswith("data.json"):
                directory = name.rsplit("/", 1)[0] if "/" in name else ""
                engine.add_data(json.loads(content), path=directory.replace("/", "."))
    return revision


class OpaShim:
    def __init__(self, bundle: bytes) -> None:
        from opa_bindings import OpaEngine

        self.engine = OpaEngine()
        self.revision = load_bundle(self.engine, bundle)
        self.requests = 0
        shim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                return None

            def _send(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._send(200, {})
                else:
                    self._send(404, {"code": "resource_not_found"})

            def do_POST(self) -> None:
                from opa_bindings import OpaError, OpaUndefinedError

                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.startswith("/v1/data/"):
                    self._send(404, {"code": "resource_not_found"})
                    return
                shim.requests += 1
                path = self.path.removeprefix("/v1/data/").strip("/").replace("/", ".")
                try:
                    result = shim.engine.eval_document(path, body.get("input"))
                except OpaUndefinedError:
                    self._send(200, {})  # OPA answers an undefined document without "result"
                    return
                except OpaError as error:
                    self._send(500, {"code": "internal_error", "message": str(error)})
                    return
                self._send(200, {"result": result})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._stopped = False

    def start(self) -> OpaShim:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()
        self.engine.close()
